//! Publishing with publisher confirms: a publish counts only once the broker confirmed it, it
//! was routed (mandatory), and it happened within the confirm timeout.

use std::time::Duration;

use futures_util::future::join_all;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection};

use super::BrokerError;
use super::topology::PARKED_EXCHANGE;

/// Header of a parked copy: the routing key the message arrived with.
pub const PARKED_ROUTING_KEY: &str = "x-parked-routing-key";

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("publish failed: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("the broker refused the message (nack)")]
    Nacked,
    #[error("no queue is bound for {exchange}/{routing_key}")]
    Unroutable { exchange: String, routing_key: String },
    #[error("no publisher confirm within {0:?}")]
    Timeout(Duration),
    #[error("publisher confirms are off on this channel")]
    NotConfirmed,
}

/// One message to publish.
#[derive(Debug, Clone)]
pub struct Outgoing<'a> {
    pub exchange: &'a str,
    pub routing_key: &'a str,
    pub body: &'a [u8],
    pub properties: BasicProperties,
    /// Return the message (and fail) if nothing is bound for it.
    pub mandatory: bool,
}

/// Persistent JSON properties with a message id and a type (`command` or `event`).
pub fn json_properties(message_id: &str, kind: &str, headers: FieldTable) -> BasicProperties {
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
        .with_message_id(message_id.into())
        .with_type(kind.into())
        .with_headers(headers)
}

/// A confirm-mode channel. Cheap to share: lapin channels take concurrent publishes.
#[derive(Clone)]
pub struct Publisher {
    channel: Channel,
    confirm_timeout: Duration,
}

impl Publisher {
    pub async fn open(conn: &Connection, confirm_timeout: Duration) -> Result<Self, BrokerError> {
        let channel = conn.create_channel().await?;
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        Ok(Self { channel, confirm_timeout })
    }

    /// The same channel, waiting up to `confirm_timeout` for each confirm. For a publish that
    /// must not be sent twice: a confirm that comes late (a quorum queue electing a leader) is
    /// not a lost one, and publishing again after a timeout would leave two copies.
    pub fn patient(&self, confirm_timeout: Duration) -> Self {
        Self { channel: self.channel.clone(), confirm_timeout }
    }

    pub fn is_open(&self) -> bool {
        self.channel.status().connected()
    }

    pub async fn publish(&self, msg: Outgoing<'_>) -> Result<(), PublishError> {
        self.publish_all(vec![msg]).await
    }

    /// Sends every message, then waits for all their confirms: one round trip for the lot.
    /// On the channel the broker keeps them in the order given.
    pub async fn publish_all(&self, msgs: Vec<Outgoing<'_>>) -> Result<(), PublishError> {
        let timeout = self.confirm_timeout;
        let work = async {
            let mut pending = Vec::new();
            for msg in msgs {
                let confirm = self
                    .channel
                    .basic_publish(
                        ShortString::from(msg.exchange),
                        ShortString::from(msg.routing_key),
                        BasicPublishOptions { mandatory: msg.mandatory, ..Default::default() },
                        msg.body,
                        msg.properties,
                    )
                    .await?;
                pending.push((msg.exchange, msg.routing_key, confirm));
            }
            let (targets, confirms): (Vec<_>, Vec<_>) =
                pending.into_iter().map(|(e, r, c)| ((e, r), c)).unzip();
            // Every confirm is awaited, even after a failure, so none piles up in lapin.
            let mut result = Ok(());
            for ((exchange, routing_key), confirmation) in
                targets.into_iter().zip(join_all(confirms).await)
            {
                let outcome = match confirmation? {
                    Confirmation::Ack(None) => Ok(()),
                    Confirmation::Ack(Some(_)) => Err(PublishError::Unroutable {
                        exchange: exchange.to_string(),
                        routing_key: routing_key.to_string(),
                    }),
                    Confirmation::Nack(_) => Err(PublishError::Nacked),
                    Confirmation::NotRequested => Err(PublishError::NotConfirmed),
                };
                if result.is_ok() {
                    result = outcome;
                }
            }
            result
        };
        tokio::time::timeout(timeout, work).await.map_err(|_| PublishError::Timeout(timeout))?
    }

    /// Moves a message that cannot be processed to the parking lot of `source_queue`, with the
    /// reason in its headers. The caller acks the original only after this returned `Ok`.
    pub async fn park(
        &self,
        source_queue: &str,
        original: &lapin::message::Delivery,
        reason: &str,
    ) -> Result<(), PublishError> {
        let mut headers = original.properties.headers().clone().unwrap_or_default();
        headers.insert("x-parked-reason".into(), AMQPValue::LongString(reason.into()));
        headers.insert("x-parked-from".into(), AMQPValue::LongString(source_queue.into()));
        // Kept so that a copy moved back by hand through the default exchange (whose routing key
        // is only the queue's name) is still checked against the key it was first sent with.
        if !original.exchange.as_str().is_empty() {
            headers.insert(
                PARKED_ROUTING_KEY.into(),
                AMQPValue::LongString(original.routing_key.as_str().into()),
            );
        }
        let properties = original.properties.clone().with_headers(headers).with_delivery_mode(2);
        self.publish(Outgoing {
            exchange: PARKED_EXCHANGE,
            routing_key: source_queue,
            body: &original.data,
            properties,
            mandatory: true,
        })
        .await?;
        crate::metrics::MESSAGES_PARKED.inc(&[source_queue]);
        Ok(())
    }
}
