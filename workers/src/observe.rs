//! Log spans of message handling: every line logged while a batch (or a job) is handled
//! carries the W3C trace ids of its messages, so grepping one id finds the worker's lines of
//! that user action beside the api's.

use std::future::Future;

use lapin::message::Delivery;
use showrunner_shared::trace;
use tracing::Instrument;

/// Most trace ids one batch span lists (a batch of a busy queue holds many user actions).
const MAX_IDS: usize = 64;

/// The span of one batch: its queue, its size and the distinct trace ids of its messages
/// (comma-separated in `trace_id`, so a search for one id matches).
pub fn batch_span(queue: &str, batch: &[Delivery]) -> tracing::Span {
    let traces = batch.iter().filter_map(|d| trace::from_amqp(&d.properties));
    span_of(queue, batch.len(), traces)
}

/// [`batch_span`] of a batch read from somewhere else than a queue (`source`: the event log),
/// given its messages' `traceparent`s.
pub fn span_of(
    source: &str,
    size: usize,
    traceparents: impl IntoIterator<Item = impl AsRef<str>>,
) -> tracing::Span {
    let mut ids: Vec<String> = Vec::new();
    for id in traceparents.into_iter().filter_map(|t| trace::trace_id_of(t.as_ref())) {
        if !ids.contains(&id) && ids.len() < MAX_IDS {
            ids.push(id);
        }
    }
    tracing::info_span!("batch", queue = source, size, trace_id = %ids.join(","))
}

/// Runs `handling` (of `batch`, from `queue`) inside its batch span, and logs at debug level
/// that it ended, in the span too: with `showrunner_workers=debug` every batch has a line.
pub async fn traced<T>(queue: &str, batch: &[Delivery], handling: impl Future<Output = T>) -> T {
    in_span(batch_span(queue, batch), handling).await
}

/// Runs `handling` inside `span`, and logs at debug level that it ended, in the span too.
pub async fn in_span<T>(span: tracing::Span, handling: impl Future<Output = T>) -> T {
    let started = std::time::Instant::now();
    let result = handling.instrument(span.clone()).await;
    span.in_scope(|| {
        tracing::debug!(elapsed_ms = started.elapsed().as_millis() as u64, "batch handled")
    });
    result
}

/// The span of one job request.
pub fn job_span(delivery: &Delivery) -> tracing::Span {
    let trace_id = trace::from_amqp(&delivery.properties)
        .and_then(|t| trace::trace_id_of(&t))
        .unwrap_or_default();
    tracing::info_span!("job", trace_id = %trace_id)
}
