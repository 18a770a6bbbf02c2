//! Publishing a command: to the partition queue of its episode, persistent, with a confirm.

use lapin::types::{AMQPValue, FieldTable};

use crate::broker::topology::{COMMANDS_EXCHANGE, partition_of};
use crate::broker::{Outgoing, PublishError, Publisher, publisher_json_properties};
use crate::contracts::CommandEnvelope;

/// Publishes `body` (the JSON of `envelope`) and waits for the broker's confirm.
pub async fn publish(
    publisher: &Publisher,
    partitions: u16,
    envelope: &CommandEnvelope,
    body: &[u8],
    traceparent: Option<&str>,
) -> Result<(), PublishError> {
    let mut headers = FieldTable::default();
    if let Some(tp) = traceparent {
        headers.insert("traceparent".into(), AMQPValue::LongString(tp.into()));
    }
    let routing_key = partition_of(envelope.command.episode_id(), partitions).to_string();
    publisher
        .publish(Outgoing {
            exchange: COMMANDS_EXCHANGE,
            routing_key: &routing_key,
            body,
            properties: publisher_json_properties(&envelope.id.to_string(), "command", headers),
            mandatory: true,
        })
        .await
}
