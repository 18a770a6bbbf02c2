//! What every request goes through: its W3C trace context and its metrics.
//!
//! An incoming `traceparent` is validated and continued (a new span id in the same trace);
//! a missing or invalid one starts a new trace. The request's `traceparent` is answered in the
//! response header, set on the log span of the request (`trace_id`), and available to the
//! handlers through [`current_traceparent`] for the command or job they publish. Requests are
//! counted by method, route template (never the raw path: bounded labels) and status.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use showrunner_shared::metrics;
use showrunner_shared::trace::TraceParent;
use tracing::Instrument;

tokio::task_local! {
    static TRACE: TraceParent;
}

/// The trace context of the request being handled (`None` outside a request).
pub fn current_traceparent() -> Option<String> {
    TRACE.try_with(|t| t.to_string()).ok()
}

/// The middleware (`axum::middleware::from_fn(observe::track)`).
pub async fn track(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let trace = request
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(TraceParent::parse)
        .map_or_else(TraceParent::new_root, |parent| parent.child());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = request.method().as_str().to_string();
    let span = tracing::info_span!(
        "http",
        method = %method,
        route = %route,
        trace_id = %trace.trace_id()
    );
    let mut response = TRACE.scope(trace, next.run(request)).instrument(span.clone()).await;
    if let Ok(value) = HeaderValue::from_str(&trace.to_string()) {
        response.headers_mut().insert("traceparent", value);
    }
    let status = response.status().as_u16().to_string();
    metrics::HTTP_REQUESTS.inc(&[&method, &route, &status]);
    let elapsed = started.elapsed();
    metrics::HTTP_SECONDS.observe_duration(&[&method, &route], elapsed);
    span.in_scope(
        || tracing::debug!(status = %status, elapsed_ms = elapsed.as_millis() as u64, "answered"),
    );
    response
}

/// Counts one open WebSocket for as long as it lives.
pub struct OpenSocket(());

impl OpenSocket {
    pub fn open() -> Self {
        metrics::WEBSOCKETS.add(&[], 1);
        Self(())
    }
}

impl Drop for OpenSocket {
    fn drop(&mut self) {
        metrics::WEBSOCKETS.add(&[], -1);
    }
}
