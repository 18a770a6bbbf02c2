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
    let mut ids: Vec<String> = Vec::new();
    for delivery in batch {
        if let Some(id) =
            trace::from_amqp(&delivery.properties).and_then(|t| trace::trace_id_of(&t))
            && !ids.contains(&id)
            && ids.len() < MAX_IDS
        {
            ids.push(id);
        }
    }
    tracing::info_span!("batch", queue, size = batch.len(), trace_id = %ids.join(","))
}

/// Runs `handling` (of `batch`, from `queue`) inside its batch span, and logs at debug level
/// that it ended, in the span too: with `showrunner_workers=debug` every batch has a line.
pub async fn traced<T>(queue: &str, batch: &[Delivery], handling: impl Future<Output = T>) -> T {
    let span = batch_span(queue, batch);
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
