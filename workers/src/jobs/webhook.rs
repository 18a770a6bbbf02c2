//! `webhook`: POSTs a JSON payload to a URL. 2xx succeeds; 5xx, 408, 429 and network errors are
//! retried; any other status fails the job at once. The URL comes from a user, so a webhook
//! reaches only what `shared::egress::Policy` admits: each hop's host is resolved here, every
//! address it resolves to is checked, and the request connects to exactly those addresses
//! (pinned, so a second DNS answer cannot rebind it). Redirects are followed by hand, each hop
//! checked like the first, at most `jobs.webhook_max_redirects`. The whole exchange has
//! `jobs.webhook_timeout_secs`; the response body is read up to
//! `jobs.webhook_max_response_bytes`. A refused destination fails the job for good. Plain
//! `http://` only: this build has no TLS stack (an `https` webhook needs reqwest's `rustls`).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::anyhow;
use reqwest::header::{CONTENT_LENGTH, LOCATION};
use reqwest::{StatusCode, Url};
use showrunner_shared::egress::Policy;
use showrunner_shared::jobs::types::{self, WebhookPayload};

use super::{JobContext, JobError, JobHandler};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Webhook;

impl JobHandler for Webhook {
    type Job = types::Webhook;

    async fn run(
        &self,
        ctx: &JobContext,
        payload: WebhookPayload,
    ) -> Result<serde_json::Value, JobError> {
        let jobs = &ctx.settings.jobs;
        let policy = Policy::from_settings(jobs).map_err(JobError::permanent)?;
        let timeout = Duration::from_secs(jobs.webhook_timeout_secs);
        match tokio::time::timeout(timeout, deliver(ctx, &policy, &payload)).await {
            Ok(result) => result,
            Err(_) => Err(JobError::retryable(anyhow!("webhook timed out after {timeout:?}"))),
        }
    }
}

/// Sends the request, following redirects by hand.
async fn deliver(
    ctx: &JobContext,
    policy: &Policy,
    payload: &WebhookPayload,
) -> Result<serde_json::Value, JobError> {
    let jobs = &ctx.settings.jobs;
    let mut url = allowed_url(&payload.url).map_err(JobError::Permanent)?;
    let mut post = true;
    let mut hops = 0;
    loop {
        let addrs = resolve(policy, &url).await?;
        let client = pinned_client(&url, &addrs, Duration::from_secs(jobs.webhook_timeout_secs))
            .map_err(|e| JobError::retryable(anyhow!("webhook client: {e}")))?;
        let request = if post {
            client.post(url.clone()).json(&payload.body)
        } else {
            client.get(url.clone())
        };
        let response = request
            .header("Idempotency-Key", ctx.job_id.to_string())
            .send()
            .await
            .map_err(|e| JobError::retryable(anyhow!("webhook request failed: {e}")))?;
        let status = response.status();
        if status.is_redirection()
            && let Some(location) = response.headers().get(LOCATION)
        {
            if hops >= jobs.webhook_max_redirects {
                return Err(JobError::permanent(anyhow!(
                    "webhook redirected more than {} times",
                    jobs.webhook_max_redirects
                )));
            }
            hops += 1;
            let location = location.to_str().map_err(|_| {
                JobError::permanent(anyhow!("webhook redirect: Location is not text"))
            })?;
            let next = url.join(location).map_err(|e| {
                JobError::permanent(anyhow!("webhook redirect to an invalid url: {e}"))
            })?;
            url = allowed_url(next.as_str())
                .map_err(|e| JobError::Permanent(anyhow!("webhook redirect refused: {e:#}")))?;
            // As browsers and reqwest do: 307/308 repeat the POST, the others become a GET.
            post = post
                && matches!(
                    status,
                    StatusCode::TEMPORARY_REDIRECT | StatusCode::PERMANENT_REDIRECT
                );
            continue;
        }
        // Read (and capped) though only the status counts: a hostile body must not hold the
        // worker's memory, and an endless one runs into the timeout.
        read_capped(response, jobs.webhook_max_response_bytes).await?;
        if status.is_success() {
            return Ok(serde_json::json!({ "status": status.as_u16() }));
        }
        let error = anyhow!("webhook answered {status}");
        return if retryable(status) {
            Err(JobError::Retryable(error))
        } else {
            Err(JobError::Permanent(error))
        };
    }
}

/// The addresses of the URL's host that the policy admits: all of them, or a permanent refusal.
/// A failed lookup may be temporary and is retried.
async fn resolve(policy: &Policy, url: &Url) -> Result<Vec<SocketAddr>, JobError> {
    let port = url.port_or_known_default().unwrap_or(80);
    let Some(host) = url.host_str() else {
        return Err(JobError::permanent(anyhow!("webhook url has no host")));
    };
    let addrs: Vec<IpAddr> = match literal(url) {
        Some(ip) => vec![ip],
        None => tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| JobError::retryable(anyhow!("webhook host {host} does not resolve: {e}")))?
            .map(|a| a.ip())
            .collect(),
    };
    if addrs.is_empty() {
        return Err(JobError::retryable(anyhow!("webhook host {host} has no address")));
    }
    policy
        .admit(host, &addrs)
        .map_err(|refusal| JobError::permanent(anyhow!("webhook refused: {refusal}")))?;
    Ok(addrs.into_iter().map(|ip| SocketAddr::new(ip, port)).collect())
}

/// The URL's host if it is an address (the URL parser already turned `0x7f.1` and the like
/// into dotted form; IPv6 comes in brackets).
fn literal(url: &Url) -> Option<IpAddr> {
    url.host_str()?.trim_start_matches('[').trim_end_matches(']').parse().ok()
}

/// A client that connects to `addrs` for the URL's host and nowhere else: no proxy from the
/// environment (it would connect on our behalf, unchecked), no redirects of its own.
fn pinned_client(
    url: &Url,
    addrs: &[SocketAddr],
    timeout: Duration,
) -> reqwest::Result<reqwest::Client> {
    let mut builder = showrunner_shared::tls::client_builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(timeout);
    if let (None, Some(name)) = (literal(url), url.host_str()) {
        builder = builder.resolve_to_addrs(name, addrs);
    }
    builder.build()
}

/// Reads the body up to `max` bytes; a longer one fails the job.
async fn read_capped(mut response: reqwest::Response, max: usize) -> Result<(), JobError> {
    let too_large = || JobError::permanent(anyhow!("webhook response is larger than {max} bytes"));
    let declared = response
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    let mut size = 0usize;
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| JobError::retryable(anyhow!("webhook response failed: {e}")))?
    {
        size += chunk.len();
        if size > max {
            return Err(too_large());
        }
    }
    Ok(())
}

fn retryable(status: StatusCode) -> bool {
    status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
}

/// A parsed `http://` URL with a host, or why not. Where it may go is the policy's business.
fn allowed_url(raw: &str) -> anyhow::Result<Url> {
    types::webhook_url(raw).map_err(|message| anyhow!(message))
}

/// The HTTP client other job types share: bounded connect time, no proxy, no redirects.
pub fn client() -> reqwest::Result<reqwest::Client> {
    showrunner_shared::tls::client_builder()
        .no_proxy()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_http_urls_with_a_host_are_taken() {
        for (url, ok) in [
            ("http://127.0.0.1:8080/hook", true),
            ("http://localhost/hook", true),
            ("http://[::1]:9000/", true),
            ("http://example.com/", true),
            ("https://127.0.0.1/", false),
            ("ftp://127.0.0.1/", false),
            ("http://user:pw@example.com/", false),
            ("not a url", false),
            ("file:///etc/passwd", false),
        ] {
            assert_eq!(allowed_url(url).is_ok(), ok, "{url}");
        }
    }

    #[tokio::test]
    async fn address_tricks_resolve_to_what_they_mean_and_are_refused() {
        let policy = Policy::default();
        for url in [
            "http://127.0.0.1/",
            "http://2130706433/",
            "http://0x7f.1/",
            "http://0177.0.0.1/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:7f00:1]/",
            "http://169.254.169.254/latest/meta-data/",
            "http://0.0.0.0/",
            "http://[::]/",
            "http://localhost/",
        ] {
            let parsed = allowed_url(url).unwrap_or_else(|e| panic!("{url}: {e}"));
            match resolve(&policy, &parsed).await {
                Err(JobError::Permanent(e)) => {
                    assert!(e.to_string().contains("webhook refused"), "{url}: {e}")
                }
                other => panic!("{url} was not refused: {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn a_listed_loopback_address_is_admitted_and_pinned() {
        let policy = Policy::new(&["127.0.0.1".to_string()], false).unwrap_or_default();
        let url = allowed_url("http://127.0.0.1:9/x").unwrap_or_else(|e| panic!("{e}"));
        let addrs = resolve(&policy, &url).await.map_err(|e| e.to_string());
        assert_eq!(addrs, Ok(vec![SocketAddr::from(([127, 0, 0, 1], 9))]));
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
