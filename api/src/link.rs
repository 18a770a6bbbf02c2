//! The api's link to RabbitMQ, kept alive in the background: it connects (with exponential
//! backoff), declares the topology, opens a confirm-mode publisher, and consumes the events
//! exchange through an exclusive queue to wake `Prefer: wait` requests. While it is down,
//! writes answer 503 and `/ready` says so.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use showrunner_shared::broker::{self, Publisher, topology};
use showrunner_shared::config::Settings;
use showrunner_shared::contracts::EventEnvelope;
use showrunner_shared::inbound::{self, Rules};
use tokio_util::sync::CancellationToken;

use crate::relay::frame_of;
use crate::relay::hub::{Audience, Frame, FrameData, Hub};
use crate::waiters::Waiters;

#[derive(Default)]
pub struct BrokerLink {
    publisher: RwLock<Option<Publisher>>,
    /// Sequenced events dropped as hostile or broken (this consumer cannot park: its queue is
    /// its own and auto-deleted, and a relay must not stop for one bad message).
    dropped: AtomicU64,
}

impl BrokerLink {
    /// The publisher, if the broker is reachable now.
    pub fn publisher(&self) -> Option<Publisher> {
        let guard = self.publisher.read().unwrap_or_else(|p| p.into_inner());
        guard.as_ref().filter(|p| p.is_open()).cloned()
    }

    /// How many sequenced events this link dropped as hostile or broken since it started.
    pub fn dropped_events(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn set(&self, publisher: Option<Publisher>) {
        *self.publisher.write().unwrap_or_else(|p| p.into_inner()) = publisher;
    }

    /// Keeps the link up until `cancel`.
    pub async fn maintain(
        self: Arc<Self>,
        settings: Arc<Settings>,
        waiters: Arc<Waiters>,
        hub: Arc<Hub>,
        cancel: CancellationToken,
    ) {
        let mut delays = backoff();
        loop {
            let started = std::time::Instant::now();
            match self.session(&settings, &waiters, &hub, &cancel).await {
                Ok(()) => return,
                Err(error) => {
                    self.set(None);
                    if started.elapsed() > Duration::from_secs(30) {
                        // It had been up a while: a new outage starts from the short delays.
                        delays = backoff();
                    }
                    let delay = delays.next().unwrap_or(Duration::from_secs(10));
                    tracing::warn!(%error, ?delay, "RabbitMQ link down, reconnecting");
                    tokio::select! {
                        () = cancel.cancelled() => return,
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    /// One connection's life: `Ok` on shutdown, `Err` when the connection is lost.
    async fn session(
        &self,
        settings: &Settings,
        waiters: &Waiters,
        hub: &Hub,
        cancel: &CancellationToken,
    ) -> anyhow::Result<()> {
        let conn = broker::connect(&settings.amqp.url, "api").await?;
        let channel = conn.create_channel().await?;
        topology::declare(&channel, &settings.amqp).await?;
        let publisher =
            Publisher::open(&conn, Duration::from_secs(settings.amqp.confirm_timeout_secs)).await?;
        // One exclusive, auto-deleted queue of this instance's own: the sequenced events feed
        // the WebSocket relay, and their `correlationId` wakes requests waiting on a command.
        let mut live = own_queue(
            &channel,
            &format!("showrunner.relay.{}", uuid::Uuid::now_v7()),
            topology::LIVE_EXCHANGE,
            &["#"],
        )
        .await?;
        self.set(Some(publisher.clone()));
        tracing::info!("RabbitMQ link up");
        let rules = Rules::from_settings(settings);
        showrunner_shared::metrics::BROKER_RECONNECTS.inc(&["api"]);
        let mut health = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = health.tick() => {
                    // A channel the broker closed leaves the connection up: start over.
                    if !publisher.is_open() || !conn.status().connected() {
                        anyhow::bail!("publisher channel or connection closed");
                    }
                }
                () = cancel.cancelled() => {
                    self.set(None);
                    let _ = conn.close(200, "api shutting down".into()).await;
                    return Ok(());
                }
                delivery = live.next() => {
                    let delivery = ended(delivery)?;
                    match live_frame(&delivery, &rules) {
                        Ok((event, frame)) => {
                            if let Some(command_id) = event.correlation_id {
                                waiters.wake(command_id);
                            }
                            hub.dispatch(&frame);
                        }
                        Err(reason) => {
                            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                            tracing::warn!(%reason, dropped, topic = %delivery.routing_key, "sequenced event dropped");
                        }
                    }
                }
            }
        }
    }
}

fn ended(
    delivery: Option<lapin::Result<lapin::message::Delivery>>,
) -> anyhow::Result<lapin::message::Delivery> {
    match delivery {
        Some(Ok(d)) => Ok(d),
        Some(Err(error)) => Err(error.into()),
        None => anyhow::bail!("event consumer ended"),
    }
}

async fn own_queue(
    channel: &lapin::Channel,
    queue: &str,
    exchange: &str,
    keys: &[&str],
) -> anyhow::Result<lapin::Consumer> {
    // Consumer tags are unique per channel: role, host, pid and which queue.
    let purpose = queue.split('.').nth(1).unwrap_or("queue");
    let tag = format!("{}/{purpose}", broker::process_label("api"));
    let options = QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() };
    channel.queue_declare(queue.into(), options, FieldTable::default()).await?;
    for key in keys {
        channel
            .queue_bind(
                queue.into(),
                exchange.into(),
                (*key).into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    let options = BasicConsumeOptions { no_ack: true, ..Default::default() };
    Ok(channel
        .basic_consume(queue.into(), tag.as_str().into(), options, FieldTable::default())
        .await?)
}

/// A sequenced event, and its frame as the relay hands it out; or why it is dropped. The event
/// passes the checks every worker applies (`inbound`), so a forged one reaches no client.
fn live_frame(
    delivery: &lapin::message::Delivery,
    rules: &Rules,
) -> Result<(EventEnvelope, Frame), String> {
    let headers = delivery.properties.headers().as_ref();
    let seq = match headers.and_then(|h| h.inner().get("x-seq")) {
        Some(AMQPValue::LongLongInt(n)) if *n > 0 => *n,
        Some(AMQPValue::LongInt(n)) if *n > 0 => i64::from(*n),
        _ => return Err("no positive x-seq header".into()),
    };
    let traceparent = match headers.and_then(|h| h.inner().get("traceparent")) {
        Some(AMQPValue::LongString(s)) => std::str::from_utf8(s.as_bytes()).ok(),
        _ => None,
    };
    let topic = delivery.routing_key.as_str();
    let envelope: EventEnvelope = inbound::decode(&delivery.data, topic, rules, chrono::Utc::now())
        .map_err(|r| r.to_string())?;
    let text = frame_of(&envelope, topic, traceparent);
    let audience = Audience::of(topic, envelope.actor.as_ref().map(|a| a.id));
    let frame = FrameData { seq, topic: topic.to_string(), audience, text: text.into() };
    Ok((envelope, Arc::new(frame)))
}

fn backoff() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(10))
        .with_jitter()
        .without_max_times()
        .build()
}
