//! The consume loop, written once for every consumer: take a batch, decode it (parking what does
//! not decode), apply it in one transaction through a [`BatchHandler`] (which writes its events
//! into the event log in that transaction: the log shipper publishes them), then ack the batch
//! with one frame.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use lapin::Channel;
use lapin::message::Delivery;
use lapin::options::{BasicConsumeOptions, BasicQosOptions, BasicRejectOptions};
use lapin::types::{AMQPValue, FieldTable};
use sea_orm::{DatabaseConnection, DbErr};
use showrunner_shared::broker::{
    Publisher, ack_through, checked_routing_key, last_unsettled, next_batch,
};
use showrunner_shared::config::Settings;
use showrunner_shared::inbound::{self, Inbound, Rules};
use showrunner_shared::metrics;
use tokio_util::sync::CancellationToken;

/// What a handler needs: the database, a confirm-mode publisher and the configuration.
#[derive(Clone)]
pub struct Context {
    pub db: DatabaseConnection,
    pub publisher: Publisher,
    pub settings: Arc<Settings>,
}

/// A decoded message with what the handler may need from its delivery.
#[derive(Debug)]
pub struct Incoming<T> {
    pub routing_key: String,
    pub traceparent: Option<String>,
    pub body: T,
}

/// A consumer: applies a batch of messages in one transaction, its events recorded in the event
/// log by that transaction (`showrunner_shared::event_log::record`).
pub trait BatchHandler: Send + Sync + 'static {
    /// Decoded and checked by [`inbound::decode`]: what fails is parked, never handled.
    type Message: Inbound + Send + Sync;

    fn handle(
        &self,
        ctx: &Context,
        batch: &[&Incoming<Self::Message>],
    ) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// Why a consume loop stopped other than by shutdown: the caller reconnects.
#[derive(Debug, thiserror::Error)]
pub enum ConsumeError {
    #[error("consumer ended: its channel or connection closed")]
    Ended,
    #[error("broker error: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("cannot park a message: {0}")]
    Park(#[from] showrunner_shared::broker::PublishError),
}

/// Attempts on a whole batch before it is split into single messages, and attempts on a
/// single message before it is parked. Connection errors are retried without limit.
const BATCH_ATTEMPTS: usize = 5;
const SINGLE_ATTEMPTS: usize = 5;

/// Consumes `queue` on `channel` until `cancel` fires (then returns `Ok`) or the consumer
/// ends (then returns the error, for the caller to reconnect).
pub async fn consume<H: BatchHandler>(
    ctx: &Context,
    channel: &Channel,
    queue: &str,
    consumer_tag: &str,
    handler: &H,
    cancel: &CancellationToken,
) -> Result<(), ConsumeError> {
    let amqp = &ctx.settings.amqp;
    let start = async {
        channel.basic_qos(amqp.prefetch, BasicQosOptions::default()).await?;
        channel
            .basic_consume(
                queue.into(),
                consumer_tag.into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
    };
    let mut consumer =
        showrunner_shared::broker::bounded(start).await.ok_or(ConsumeError::Ended)??;
    loop {
        let batch = tokio::select! {
            biased;
            () = cancel.cancelled() => return Ok(()),
            batch = next_batch(&mut consumer, amqp.batch_size) => batch,
        };
        let batch = match batch {
            None => return Err(ConsumeError::Ended),
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(batch)) => batch,
        };
        let sources: Vec<Source> =
            batch.iter().map(|d| Source::new(queue, checked_routing_key(d, None))).collect();
        let handling = process_batch(ctx, queue, &sources, handler, &batch, cancel);
        crate::observe::traced(queue, &batch, handling).await?;
        // A delivery parked by rejecting it is settled already: ack through the last one left.
        if let Some(last) = last_unsettled(&batch) {
            match ack_through(last).await {
                Ok(true) => metrics::MESSAGES_ACKED.inc_by(&[queue], batch.len() as u64),
                Ok(false) => {
                    metrics::MESSAGES_REJECTED.inc_by(&[queue], batch.len() as u64);
                    tracing::warn!(
                        queue,
                        "ack not sent, channel closed: the batch will be redelivered"
                    )
                }
                Err(error) => return Err(error.into()),
            }
        }
    }
}

/// Where a delivery was consumed from (its parking lot is that queue's, whatever its routing
/// key or the exchange it came through) and the routing key its checks go by.
#[derive(Debug, Clone)]
pub struct Source {
    pub queue: String,
    pub routing_key: String,
}

impl Source {
    pub fn new(queue: &str, routing_key: String) -> Self {
        Self { queue: queue.to_string(), routing_key }
    }
}

/// Decodes a batch (parking what does not decode) and applies it.
/// `queue` names the batch in logs; `sources[i]` says where `batch[i]` came from.
pub async fn process_batch<H: BatchHandler>(
    ctx: &Context,
    queue: &str,
    sources: &[Source],
    handler: &H,
    batch: &[Delivery],
    cancel: &CancellationToken,
) -> Result<(), ConsumeError> {
    metrics::MESSAGES_CONSUMED.inc_by(&[queue], batch.len() as u64);
    let mut decoded = Vec::with_capacity(batch.len());
    let rules = Rules::from_settings(&ctx.settings);
    for (delivery, source) in batch.iter().zip(sources) {
        match decode::<H::Message>(delivery, &source.routing_key, &rules) {
            Ok(message) => decoded.push((delivery, source, message)),
            Err(refused) => {
                // Hostile or broken input: parked with its reason, and the batch goes on.
                let reason = refused.to_string();
                tracing::warn!(queue = %source.queue, %reason, "refused message parked");
                park(ctx, &source.queue, delivery, &reason).await?;
            }
        }
    }
    if decoded.is_empty() {
        return Ok(());
    }
    let messages: Vec<_> = decoded.iter().map(|(_, _, m)| m).collect();
    let started = std::time::Instant::now();
    match apply_with_retry(ctx, queue, handler, &messages, BATCH_ATTEMPTS, cancel).await {
        Some(Ok(())) => {}
        Some(Err(error)) if messages.len() > 1 => {
            tracing::warn!(queue, %error, "batch keeps failing, applying its messages one by one");
            for (delivery, source, message) in &decoded {
                match apply_with_retry(ctx, queue, handler, &[message], SINGLE_ATTEMPTS, cancel)
                    .await
                {
                    Some(Ok(())) => {}
                    Some(Err(error)) => {
                        tracing::error!(queue, %error, "message keeps failing, parked");
                        park(ctx, &source.queue, delivery, &format!("handler failed: {error}"))
                            .await?;
                    }
                    None => return Err(ConsumeError::Ended),
                }
            }
        }
        Some(Err(error)) => {
            tracing::error!(queue, %error, "message keeps failing, parked");
            let (delivery, source, _) = &decoded[0];
            park(ctx, &source.queue, delivery, &format!("handler failed: {error}")).await?;
        }
        // Shut down mid-retry, or the broker went away: nothing is acked, the broker
        // redelivers the batch.
        None => return Err(ConsumeError::Ended),
    }
    metrics::HANDLER_SECONDS.observe_duration(&[queue], started.elapsed());
    Ok(())
}

/// How long [`park`] keeps trying a parking lot that does not confirm (a quorum queue electing
/// a new leader after a node stopped takes seconds) before it gives the delivery back.
pub const PARK_PATIENCE: Duration = Duration::from_secs(60);

/// Parks `delivery` in the parking lot of `queue`, the queue it was consumed from.
///
/// A copy the broker refused (a nack, a publish error on a channel that is still open) is the
/// broker's trouble, not the parking lot's: the publish is tried again with backoff for up to
/// [`PARK_PATIENCE`], and if it still fails the error goes up, nothing is acked and the broker
/// redelivers. A confirm is waited for as long as that patience lasts, never given up on and
/// published again: a late confirm is not a lost copy. The queue's own dead-letter exchange is not used for that:
/// at-least-once dead-lettering resends what its target did not confirm only minutes later, so a
/// message handed to it during a node failure reached the parking lot late or, as seen on 3.10,
/// not at all (the cluster fault suite, "failed jobs missing").
///
/// Only when the copy is returned unroutable (the parking queue deleted or unbound) is the
/// delivery rejected without requeue instead: the dead-letter exchange is then the one way left,
/// and the rest of the batch goes on rather than the whole batch failing and coming back for ever.
pub async fn park(
    ctx: &Context,
    queue: &str,
    delivery: &Delivery,
    reason: &str,
) -> Result<(), ConsumeError> {
    use showrunner_shared::broker::PublishError;
    let deadline = tokio::time::Instant::now() + PARK_PATIENCE;
    let mut delays = showrunner_shared::retry::park_delays();
    let error = loop {
        // Each try waits for its confirm as long as patience lasts: after a confirm timeout the
        // copy may still land (the parking queue was electing a leader), and a second try
        // would land beside it (the cluster fault suite found a failed job parked twice).
        // Only a definite refusal (a nack) is tried again.
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        let publisher = ctx.publisher.patient(remaining.max(Duration::from_secs(1)));
        match publisher.park(queue, delivery, reason).await {
            Ok(()) => return Ok(()),
            Err(error @ PublishError::Unroutable { .. }) => break error,
            Err(error) => {
                let delay = delays.next().unwrap_or(Duration::from_secs(5));
                if !ctx.publisher.is_open() || tokio::time::Instant::now() + delay > deadline {
                    tracing::error!(queue, %error, "cannot park a message: it goes back to the broker for redelivery");
                    return Err(error.into());
                }
                tracing::warn!(queue, %error, ?delay, "parking not confirmed, trying again");
                tokio::time::sleep(delay).await;
            }
        }
    };
    tracing::error!(queue, %error, "parking lot unroutable, handing the message to the queue's dead-letter exchange");
    let options = BasicRejectOptions { requeue: false };
    match showrunner_shared::broker::bounded(delivery.acker.reject(options)).await {
        Some(Ok(true)) => {
            metrics::MESSAGES_PARKED.inc(&[queue]);
            Ok(())
        }
        Some(Ok(false)) | None => Err(ConsumeError::Ended),
        Some(Err(error)) => Err(error.into()),
    }
}

/// Runs the handler until it succeeds, retrying with exponential backoff. Connection errors
/// are retried for as long as it takes; other errors `attempts` times. `None` on shutdown or
/// when the broker channel closed (nothing is acked then: the broker redelivers).
async fn apply_with_retry<H: BatchHandler>(
    ctx: &Context,
    queue: &str,
    handler: &H,
    messages: &[&Incoming<H::Message>],
    attempts: usize,
    cancel: &CancellationToken,
) -> Option<anyhow::Result<()>> {
    let mut delays = showrunner_shared::retry::apply_delays();
    let mut failures = 0;
    loop {
        match handler.handle(ctx, messages).await {
            Ok(()) => return Some(Ok(())),
            Err(error) => {
                if !ctx.publisher.is_open() {
                    // The broker connection is gone: the message is not at fault and retrying
                    // on a dead channel cannot succeed. Stop; the caller reconnects and the
                    // broker redelivers the batch (parking it would lose an event the handler
                    // may already have committed, such as an event log row).
                    tracing::warn!(%error, "applying failed with the broker channel closed, reconnecting");
                    return None;
                }
                let transient = is_connection_error(&error) || is_broker_error(&error);
                failures += usize::from(!transient);
                if failures >= attempts {
                    return Some(Err(error));
                }
                let delay = delays.next().unwrap_or(Duration::from_secs(5));
                metrics::MESSAGES_RETRIED.inc_by(&[queue], messages.len() as u64);
                tracing::warn!(%error, transient, ?delay, "applying failed, retrying");
                tokio::select! {
                    () = cancel.cancelled() => return None,
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

fn decode<T: Inbound>(
    delivery: &Delivery,
    routing_key: &str,
    rules: &Rules,
) -> Result<Incoming<T>, inbound::Refused> {
    let body = inbound::decode(&delivery.data, routing_key, rules, chrono::Utc::now())?;
    let traceparent = delivery.properties.headers().as_ref().and_then(|h| {
        match h.inner().get("traceparent")? {
            AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok().map(str::to_string),
            AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
            _ => None,
        }
    });
    Ok(Incoming { routing_key: routing_key.to_string(), traceparent, body })
}

/// A publish the broker did not confirm (but not one it could not route): the broker's trouble,
/// not the message's, so it never counts towards parking.
fn is_broker_error(error: &anyhow::Error) -> bool {
    use showrunner_shared::broker::PublishError;
    error.chain().any(|cause| {
        cause
            .downcast_ref::<PublishError>()
            .is_some_and(|e| !matches!(e, PublishError::Unroutable { .. }))
    })
}

/// Lost or unreachable database: worth retrying for as long as it takes.
fn is_connection_error(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        matches!(cause.downcast_ref::<DbErr>(), Some(DbErr::ConnectionAcquire(_) | DbErr::Conn(_)))
    })
}
