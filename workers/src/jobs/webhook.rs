//! `webhook`: POSTs a JSON payload to a URL. 2xx succeeds; 5xx, 408, 429 and network errors are
//! retried; any other status fails the job at once. Plain `http://` to loopback addresses only:
//! this build has no TLS stack (an `https` webhook needs reqwest's `rustls` feature) and the
//! deployments it serves may reach nothing but their own machine.

use std::net::IpAddr;
use std::time::Duration;

use anyhow::anyhow;
use reqwest::{StatusCode, Url};
use serde::Deserialize;

use super::{JobContext, JobError, JobHandler};

/// Longest wait for one request, whatever the job timeout.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Webhook;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebhookPayload {
    pub url: String,
    #[serde(default)]
    pub body: serde_json::Value,
}

impl JobHandler for Webhook {
    const TYPE: &'static str = "webhook";
    type Payload = WebhookPayload;

    async fn run(
        &self,
        ctx: &JobContext,
        payload: WebhookPayload,
    ) -> Result<serde_json::Value, JobError> {
        let url = allowed_url(&payload.url).map_err(JobError::Permanent)?;
        let response = ctx
            .http
            .post(url)
            .timeout(REQUEST_TIMEOUT)
            .header("Idempotency-Key", ctx.job_id.to_string())
            .json(&payload.body)
            .send()
            .await
            .map_err(|e| JobError::retryable(anyhow!("webhook request failed: {e}")))?;
        let status = response.status();
        if status.is_success() {
            return Ok(serde_json::json!({ "status": status.as_u16() }));
        }
        let error = anyhow!("webhook answered {status}");
        if retryable(status) {
            Err(JobError::Retryable(error))
        } else {
            Err(JobError::Permanent(error))
        }
    }
}

fn retryable(status: StatusCode) -> bool {
    status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
}

/// `http://` to a loopback host, or why not.
fn allowed_url(raw: &str) -> anyhow::Result<Url> {
    let url = Url::parse(raw).map_err(|e| anyhow!("invalid webhook url: {e}"))?;
    if url.scheme() != "http" {
        return Err(anyhow!("webhook url must be http:// (this build has no TLS support)"));
    }
    let loopback = match url.host_str() {
        Some("localhost") => true,
        Some(host) => host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    };
    if !loopback {
        return Err(anyhow!("webhook url must point at a loopback address"));
    }
    Ok(url)
}

/// The HTTP client of the job worker: bounded connect time, no redirects (a redirect could
/// leave loopback).
pub fn client() -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(REQUEST_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_http_to_loopback_is_allowed() {
        for (url, ok) in [
            ("http://127.0.0.1:8080/hook", true),
            ("http://localhost/hook", true),
            ("http://[::1]:9000/", true),
            ("http://127.0.0.2/", true),
            ("https://127.0.0.1/", false),
            ("http://example.com/", false),
            ("http://10.0.0.1/", false),
            ("ftp://127.0.0.1/", false),
            ("not a url", false),
        ] {
            assert_eq!(allowed_url(url).is_ok(), ok, "{url}");
        }
    }

    #[test]
    fn server_errors_are_retried_and_client_errors_are_not() {
        for (status, expected) in [
            (500, true),
            (503, true),
            (429, true),
            (408, true),
            (400, false),
            (404, false),
            (410, false),
        ] {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
            assert_eq!(retryable(status), expected, "{status}");
        }
    }
}
