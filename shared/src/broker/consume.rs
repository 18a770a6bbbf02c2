//! Taking deliveries in batches: wait for one, then take whatever else is already there, so a
//! busy queue is applied many messages per transaction and an idle one with no added latency.

use futures_util::{FutureExt, StreamExt};
use lapin::Consumer;
use lapin::message::Delivery;
use lapin::options::BasicAckOptions;

pub type Batch = Vec<Delivery>;

/// `None` when the consumer ended (cancelled, or its channel closed).
pub async fn next_batch(
    consumer: &mut Consumer,
    max: usize,
) -> Option<Result<Batch, lapin::Error>> {
    let first = match consumer.next().await? {
        Ok(d) => d,
        Err(e) => return Some(Err(e)),
    };
    let mut batch = vec![first];
    while batch.len() < max {
        match consumer.next().now_or_never() {
            Some(Some(Ok(d))) => batch.push(d),
            // An error or the end shows again on the next call, after this batch is done.
            _ => break,
        }
    }
    Some(Ok(batch))
}

/// Acks every delivery of the channel up to and including `last` with one frame.
/// `Ok(false)`: the channel was closed or recovered, the ack was not sent and the broker will
/// redeliver (the consumer's idempotency makes that harmless).
/// An ack with no answer within [`super::OP_TIMEOUT`] counts as not sent.
pub async fn ack_through(last: &Delivery) -> Result<bool, lapin::Error> {
    match super::bounded(last.acker.ack(BasicAckOptions { multiple: true })).await {
        Some(result) => result,
        None => {
            tracing::warn!("ack got no answer, the connection is likely gone");
            Ok(false)
        }
    }
}
