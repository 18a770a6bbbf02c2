//! Taking deliveries in batches: wait for one, then take whatever else is already there, so a
//! busy queue is applied many messages per transaction and an idle one with no added latency.

use futures_util::{FutureExt, StreamExt};
use lapin::Consumer;
use lapin::message::Delivery;
use lapin::options::BasicAckOptions;
use lapin::types::AMQPValue;

use super::PARKED_ROUTING_KEY;

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

/// The last delivery of `deliveries` that is still to be settled: one parked by rejecting it
/// (its acker used) cannot end a multiple ack, since the broker answers an ack of a delivery
/// tag it no longer holds by closing the channel (and lapin does not send it at all).
pub fn last_unsettled<'a, I>(deliveries: I) -> Option<&'a Delivery>
where
    I: IntoIterator<Item = &'a Delivery>,
    I::IntoIter: DoubleEndedIterator,
{
    deliveries.into_iter().rev().find(|d| d.acker.usable())
}

/// The routing key a delivery's checks go by. A message that came through the default exchange
/// (the management UI's "Publish message" on a queue, or an operator moving a parked message
/// back by hand) has the queue's name as its key, which says nothing about the message: the key
/// it was parked with is used then, or else `fallback`, what the queue's own binding implies.
pub fn checked_routing_key(delivery: &Delivery, fallback: Option<&str>) -> String {
    if !delivery.exchange.as_str().is_empty() {
        return delivery.routing_key.to_string();
    }
    let parked = delivery.properties.headers().as_ref().and_then(|h| {
        match h.inner().get(PARKED_ROUTING_KEY)? {
            AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok().map(str::to_string),
            AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
            _ => None,
        }
    });
    parked
        .or_else(|| fallback.map(str::to_string))
        .unwrap_or_else(|| delivery.routing_key.to_string())
}
