//! The episode worker's part of the role skeleton (`crate::role`): it heartbeats, follows
//! partition ownership (`crate::partitions`), and applies commands from the partitions it owns
//! in one loop over all of them.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use lapin::options::{BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use sea_orm::DatabaseConnection;
use showrunner_shared::broker::{ack_through, bounded, process_label, topology};
use showrunner_shared::metrics;
use tokio_stream::StreamMap;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::consumers::commands::Commands;
use crate::observe;
use crate::partitions::{heartbeat, leave, live_workers, owned};
use crate::role::{Part, Role, Session};
use crate::runtime::{Context, Source, process_batch};

/// The episode worker's part: heartbeats, follows partition ownership, and applies commands
/// from the partitions it owns. One channel a partition (closing it hands the partition's
/// unacked deliveries back in order, and single active consumer over to the next owner), all
/// read by one loop, so one transaction applies a batch taken from every partition at once:
/// this is why it does not use `runtime::consume` (one queue, one channel) but its batch step,
/// `runtime::process_batch`.
pub struct Supervisor {
    me: Uuid,
    /// The worker id in the label tells apart two workers of one process (tests, `showrunner
    /// up`).
    label: String,
}

impl Supervisor {
    pub fn new() -> Self {
        let me = Uuid::now_v7();
        Self { me, label: format!("{}/{me}", process_label(Role::Episode.name())) }
    }
}

impl Default for Supervisor {
    fn default() -> Self {
        Self::new()
    }
}

impl Part for Supervisor {
    fn label(&self) -> String {
        Role::Episode.name().to_string()
    }

    async fn session(&mut self, s: Session<'_>) -> anyhow::Result<()> {
        tracing::info!(worker_id = %self.me, label = %self.label, "episode worker consuming");
        supervise(&s.ctx, s.conn, self.me, &self.label, s.cancel).await;
        if s.cancel.is_cancelled() { Ok(()) } else { anyhow::bail!("the session ended") }
    }

    async fn leave(&mut self, db: &DatabaseConnection) {
        if let Err(error) = leave(db, self.me).await {
            tracing::warn!(%error, "could not remove the heartbeat row; it expires by itself");
        }
    }
}

/// The partitions this worker consumes: one channel each, their consumers read as one stream.
struct Held {
    streams: StreamMap<u16, lapin::Consumer>,
    channels: HashMap<u16, lapin::Channel>,
}

impl Held {
    async fn take(
        &mut self,
        ctx: &Context,
        conn: &lapin::Connection,
        p: u16,
        label: &str,
    ) -> anyhow::Result<()> {
        let open = async {
            let channel = conn.create_channel().await?;
            channel.basic_qos(ctx.settings.amqp.prefetch, BasicQosOptions::default()).await?;
            let consumer = channel
                .basic_consume(
                    topology::command_queue(p).as_str().into(),
                    format!("{label}/p{p:03}").as_str().into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            Ok::<_, lapin::Error>((channel, consumer))
        };
        let (channel, consumer) =
            bounded(open).await.ok_or_else(|| anyhow::anyhow!("the broker did not answer"))??;
        self.streams.insert(p, consumer);
        self.channels.insert(p, channel);
        tracing::info!(partition = p, "consuming partition");
        Ok(())
    }

    async fn release(&mut self, p: u16) {
        self.streams.remove(&p);
        if let Some(channel) = self.channels.remove(&p) {
            let _ = bounded(channel.close(200, "partition released".into())).await;
            tracing::info!(partition = p, "released partition");
        }
    }
}

/// Heartbeats, follows partition ownership, and applies commands, until shutdown or a lost
/// connection.
async fn supervise(
    ctx: &Context,
    conn: &lapin::Connection,
    me: Uuid,
    label: &str,
    cancel: &CancellationToken,
) {
    let workers = &ctx.settings.workers;
    let mut held = Held { streams: StreamMap::new(), channels: HashMap::new() };
    let mut tick = tokio::time::interval(Duration::from_secs(workers.heartbeat_secs));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let first = tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            _ = tick.tick() => {
                if !conn.status().connected() {
                    tracing::warn!("RabbitMQ connection lost, reconnecting");
                    break;
                }
                follow_ownership(ctx, conn, me, label, &mut held).await;
                continue;
            }
            Some(first) = held.streams.next(), if !held.streams.is_empty() => first,
        };
        let (mut batch, mut from) = (Vec::new(), Vec::new());
        match first {
            (p, Ok(d)) => {
                batch.push(d);
                from.push(p);
            }
            (_, Err(error)) => {
                tracing::warn!(%error, "partition consumer failed, reconnecting");
                break;
            }
        }
        while batch.len() < ctx.settings.amqp.batch_size {
            match held.streams.next().now_or_never() {
                Some(Some((p, Ok(d)))) => {
                    batch.push(d);
                    from.push(p);
                }
                _ => break,
            }
        }
        // A delivery belongs to the partition whose queue it came from, whatever its routing key
        // (one that came through the default exchange has the queue's name as its key): it is
        // parked there, and its command must be of an episode of that partition.
        let sources: Vec<Source> =
            from.iter().map(|p| Source::new(&topology::command_queue(*p), p.to_string())).collect();
        let queue = topology::COMMANDS_EXCHANGE;
        let handling = process_batch(ctx, queue, &sources, &Commands, &batch, cancel);
        if let Err(error) = observe::traced(queue, &batch, handling).await {
            tracing::warn!(%error, "applying a batch failed, reconnecting");
            break;
        }
        // Per channel, the batch holds its deliveries in order: ack each through its last one
        // not parked by rejecting it.
        let mut last: HashMap<u16, &lapin::message::Delivery> = HashMap::new();
        for (p, d) in from.iter().zip(&batch) {
            if d.acker.usable() {
                last.insert(*p, d);
            }
        }
        // The channels' acks are independent: sent together, the batch waits for the slowest
        // one rather than for each in turn (a hand-off to lapin's I/O thread apiece).
        let from = &from;
        let acks = last.iter().map(|(p, d)| async move {
            (from.iter().filter(|q| *q == p).count() as u64, ack_through(d).await)
        });
        for (n, acked) in futures_util::future::join_all(acks).await {
            if let Ok(false) | Err(_) = acked {
                metrics::MESSAGES_REJECTED.inc_by(&[queue], n);
                tracing::warn!("ack not sent, channel closed: those commands will be redelivered");
            } else {
                metrics::MESSAGES_ACKED.inc_by(&[queue], n);
            }
        }
    }
    let partitions: Vec<u16> = held.channels.keys().copied().collect();
    for p in partitions {
        held.release(p).await;
    }
}

async fn follow_ownership(
    ctx: &Context,
    conn: &lapin::Connection,
    me: Uuid,
    label: &str,
    held: &mut Held,
) {
    let workers = &ctx.settings.workers;
    let live = match heartbeat(&ctx.db, me, label).await {
        Ok(()) => live_workers(&ctx.db, workers.heartbeat_ttl_secs).await,
        Err(e) => Err(e),
    };
    let wanted = match live {
        Ok(mut live) => {
            if !live.contains(&me) {
                live.push(me);
            }
            owned(me, &live, ctx.settings.amqp.partitions)
        }
        Err(error) => {
            // Without the database nothing can be applied anyway; keep what we hold.
            tracing::warn!(%error, "heartbeat failed");
            return;
        }
    };
    // A consumer the broker cancelled has left the stream map: let its channel go too, so the
    // partition is taken again below if it is still ours.
    let lost: Vec<u16> = held
        .channels
        .keys()
        .copied()
        .filter(|p| !wanted.contains(p) || !held.streams.contains_key(p))
        .collect();
    for p in lost {
        held.release(p).await;
    }
    for p in wanted {
        if !held.channels.contains_key(&p)
            && let Err(error) = held.take(ctx, conn, p, label).await
        {
            tracing::warn!(partition = p, %error, "cannot consume partition");
        }
    }
}
