//! The api's link to RabbitMQ, kept alive in the background: it connects (with exponential
//! backoff), declares the topology, opens a confirm-mode publisher, and consumes the events
//! exchange through an exclusive queue to wake `Prefer: wait` requests. While it is down,
//! writes answer 503 and `/ready` says so.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use showrunner_shared::broker::{self, Publisher, topology};
use showrunner_shared::config::Settings;
use showrunner_shared::contracts::EventEnvelope;
use tokio_util::sync::CancellationToken;

use crate::waiters::Waiters;

#[derive(Default)]
pub struct BrokerLink {
    publisher: RwLock<Option<Publisher>>,
}

impl BrokerLink {
    /// The publisher, if the broker is reachable now.
    pub fn publisher(&self) -> Option<Publisher> {
        let guard = self.publisher.read().unwrap_or_else(|p| p.into_inner());
        guard.as_ref().filter(|p| p.is_open()).cloned()
    }

    fn set(&self, publisher: Option<Publisher>) {
        *self.publisher.write().unwrap_or_else(|p| p.into_inner()) = publisher;
    }

    /// Keeps the link up until `cancel`.
    pub async fn maintain(
        self: Arc<Self>,
        settings: Arc<Settings>,
        waiters: Arc<Waiters>,
        cancel: CancellationToken,
    ) {
        let mut delays = backoff();
        loop {
            match self.session(&settings, &waiters, &cancel).await {
                Ok(()) => return,
                Err(error) => {
                    self.set(None);
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
        cancel: &CancellationToken,
    ) -> anyhow::Result<()> {
        let conn = broker::connect(&settings.amqp.url, "api").await?;
        let channel = conn.create_channel().await?;
        topology::declare(&channel, &settings.amqp).await?;
        let publisher = Publisher::open(
            &conn,
            Duration::from_secs(settings.amqp.confirm_timeout_secs),
        )
        .await?;

        // An exclusive, auto-deleted queue of this instance's own, so every api instance
        // sees every event it needs.
        let queue = format!("showrunner.api.{}", uuid::Uuid::now_v7());
        channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        for key in ["episode.#", "user.*.command"] {
            channel
                .queue_bind(
                    queue.as_str().into(),
                    topology::EVENTS_EXCHANGE.into(),
                    key.into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        let mut consumer = channel
            .basic_consume(
                queue.as_str().into(),
                broker::process_label("api").into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        self.set(Some(publisher));
        tracing::info!("RabbitMQ link up");
        loop {
            let delivery = tokio::select! {
                () = cancel.cancelled() => {
                    self.set(None);
                    let _ = conn.close(200, "api shutting down".into()).await;
                    return Ok(());
                }
                delivery = consumer.next() => delivery,
            };
            match delivery {
                Some(Ok(delivery)) => {
                    if let Ok(event) = serde_json::from_slice::<EventEnvelope>(&delivery.data)
                        && let Some(command_id) = event.correlation_id
                    {
                        waiters.wake(command_id);
                    }
                }
                Some(Err(error)) => return Err(error.into()),
                None => anyhow::bail!("event consumer ended"),
            }
        }
    }
}

fn backoff() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(10))
        .with_jitter()
        .without_max_times()
        .build()
}
