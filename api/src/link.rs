//! The api's link to RabbitMQ, kept alive in the background: it connects (with exponential
//! backoff), declares the topology, opens a confirm-mode publisher, and consumes the live
//! exchange (what the log shipper publishes, numbered) through an exclusive queue, to feed the
//! WebSocket relay and wake `Prefer: wait` requests. While it is down, writes answer 503 and
//! `/ready` says so.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use sea_orm::{ConnectionTrait, DatabaseConnection, FromQueryResult};
use showrunner_shared::broker::{self, Nodes, Publisher, topology};
use showrunner_shared::config::Settings;
use showrunner_shared::contracts::EventEnvelope;
use showrunner_shared::db::sql;
use showrunner_shared::inbound::{self, Rules};
use showrunner_shared::live;
use showrunner_shared::retry::reconnect_delays;
use tokio_util::sync::CancellationToken;

use crate::relay::frame_of;
use crate::relay::hub::{Audience, Frame, FrameData, Hub};
use crate::waiters::Waiters;

/// Longest connect, topology declaration, publisher and relay queue opening, together.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long after its queue is bound the link reads the event log once more (see `session`): more
/// than the shipper takes from a publish to recording it.
const RECHECK_AFTER_BIND: Duration = Duration::from_secs(2);

#[derive(Default)]
pub struct BrokerLink {
    publisher: RwLock<Option<Publisher>>,
    /// Sequenced events dropped as hostile or broken (this consumer cannot park: its queue is
    /// its own and auto-deleted, and a relay must not stop for one bad message).
    dropped: AtomicU64,
    /// The highest `seq` handed to the hub: after a reconnect the link reads what it missed
    /// while its queue did not exist from the event log, so live clients see no gap.
    last_seq: AtomicI64,
    /// Whether a session has noted where the log ended (only the first one does).
    positioned: AtomicBool,
}

impl BrokerLink {
    /// The publisher, if the broker is reachable now.
    pub fn publisher(&self) -> Option<Publisher> {
        let guard = self.publisher.read().unwrap_or_else(|p| p.into_inner());
        guard.as_ref().filter(|p| p.is_open()).cloned()
    }

    /// The highest number this link handed to the hub: every number up to it is final (the
    /// shipper published it, or something after it).
    pub fn last_seq(&self) -> i64 {
        self.last_seq.load(Ordering::Relaxed)
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
        db: DatabaseConnection,
        waiters: Arc<Waiters>,
        hub: Arc<Hub>,
        cancel: CancellationToken,
    ) {
        let mut delays = reconnect_delays();
        // Which node the next session tries first: after losing one, another (failover).
        let nodes = Nodes::new(&settings.amqp);
        loop {
            let started = std::time::Instant::now();
            match self.session(&settings, &nodes, &db, &waiters, &hub, &cancel).await {
                Ok(()) => return,
                Err(error) => {
                    self.set(None);
                    if started.elapsed() > Duration::from_secs(30) {
                        // It had been up a while: a new outage starts from the short delays.
                        delays = reconnect_delays();
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
        nodes: &Nodes,
        db: &DatabaseConnection,
        waiters: &Waiters,
        hub: &Hub,
        cancel: &CancellationToken,
    ) -> anyhow::Result<()> {
        // Bounded as a whole: a node that is still starting may accept and then not answer.
        let setup = async {
            if !self.positioned.load(Ordering::Relaxed) {
                // Where the log ends *before* this instance's queue exists: what is sequenced
                // after it arrives live or through the catch-up below, so nothing falls in
                // between (positioning after the queue existed dropped the events sequenced
                // in between as already seen).
                self.position(db).await?;
            }
            let (conn, node) = nodes.connect("api").await?;
            topology::declare_or_verify(&conn, &settings.amqp).await?;
            let channel = conn.create_channel().await?;
            let publisher =
                Publisher::open(&conn, Duration::from_secs(settings.amqp.confirm_timeout_secs))
                    .await?;
            // One exclusive, auto-deleted queue of this instance's own: the shipped events feed
            // the WebSocket relay, and their `correlationId` wakes requests waiting on a
            // command.
            let live = own_queue(
                &channel,
                &format!("showrunner.relay.{}", uuid::Uuid::now_v7()),
                topology::LIVE_EXCHANGE,
                &["#"],
            )
            .await?;
            Ok::<_, anyhow::Error>((conn, node, channel, publisher, live))
        };
        // `_channel` lives as long as the session: dropping the last handle closes a channel.
        let (conn, node, _channel, publisher, mut live) =
            tokio::time::timeout(SETUP_TIMEOUT, setup).await.map_err(|_| {
                anyhow::anyhow!("RabbitMQ did not answer within {SETUP_TIMEOUT:?}")
            })??;
        // The queue is bound: everything sequenced from now on arrives on it. What was
        // sequenced while this instance had no queue comes from the event log.
        self.catch_up(db, waiters, hub, None).await?;
        self.set(Some(publisher.clone()));
        tracing::info!(%node, "RabbitMQ link up");
        let rules = Rules::from_settings(settings);
        showrunner_shared::metrics::BROKER_RECONNECTS.inc(&["api"]);
        let mut health = tokio::time::interval(Duration::from_secs(1));
        // An event published just before the queue was bound, whose number the shipper had not
        // recorded as published when the catch-up above read, reached neither: it would come
        // only with the next event's `x-prev-seq`, however long that takes. The shipper records
        // after each batch, so one more catch-up a moment later finds it.
        let recheck = tokio::time::sleep(RECHECK_AFTER_BIND);
        tokio::pin!(recheck);
        let mut rechecked = false;
        loop {
            tokio::select! {
                () = &mut recheck, if !rechecked => {
                    // The link stays up without it (PostgreSQL away): only this read waits.
                    match self.catch_up(db, waiters, hub, None).await {
                        Ok(()) => rechecked = true,
                        Err(error) => {
                            tracing::warn!(%error, "relay's catch-up after the bind failed, trying again");
                            let again = tokio::time::Instant::now() + RECHECK_AFTER_BIND;
                            recheck.as_mut().reset(again);
                        }
                    }
                }
                _ = health.tick() => {
                    // A channel the broker closed leaves the connection up: start over.
                    if !publisher.is_open() || !conn.status().connected() {
                        anyhow::bail!("publisher channel or connection closed");
                    }
                }
                () = cancel.cancelled() => {
                    self.set(None);
                    let _ = broker::bounded(conn.close(200, "api shutting down".into())).await;
                    return Ok(());
                }
                delivery = live.next() => {
                    let delivery = ended(delivery)?;
                    // No socket connected: nobody to frame the events for (a socket that
                    // connects now gets what it missed by `resume`, as any new socket does).
                    let framed = hub.connections() > 0;
                    for shipped in live_frames(&delivery, &rules, framed) {
                        match shipped {
                            Ok(shipped) => self.hand_out(db, waiters, hub, &shipped).await?,
                            Err(reason) => {
                                let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                                tracing::warn!(%reason, dropped, key = %delivery.routing_key, "sequenced event dropped");
                            }
                        }
                    }
                }
            }
        }
    }

    /// Hands one shipped event to the hub, after what its `prev` says this link missed.
    async fn hand_out(
        &self,
        db: &DatabaseConnection,
        waiters: &Waiters,
        hub: &Hub,
        shipped: &Shipped,
    ) -> anyhow::Result<()> {
        let Shipped { envelope: event, seq, prev, frame } = shipped;
        let (seq, prev) = (*seq, *prev);
        // Each event names the number published before it: one above what this link has means
        // something was not heard (a publish that failed and comes again later, a shipper that
        // took over and publishes again, the time before this queue existed): it is read from
        // the log first, so clients get every event in order.
        if prev > self.last_seq.load(Ordering::Relaxed) {
            // An event that is not in the log was not published by the shipper: its numbers
            // must not move this link.
            if !logged(db, seq, event.id).await? {
                let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::warn!(
                    seq,
                    dropped,
                    event = event.event.name(),
                    "event beyond the event log dropped"
                );
                return Ok(());
            }
            self.catch_up(db, waiters, hub, Some(prev)).await?;
            // Everything up to `prev` is handed out now: what is missing below it are holes.
            self.last_seq.fetch_max(prev, Ordering::Relaxed);
        }
        if let Some(command_id) = event.correlation_id {
            waiters.wake(command_id);
        }
        // At or below `last_seq`: the catch-up sent it already.
        if self.last_seq.fetch_max(seq, Ordering::Relaxed) < seq
            && let Some(frame) = frame
        {
            hub.dispatch(frame).await;
        }
        Ok(())
    }
}

impl BrokerLink {
    /// Notes where the event log ends (the first session only): this instance's clients
    /// resume by themselves from what they saw before it started.
    async fn position(&self, db: &DatabaseConnection) -> anyhow::Result<()> {
        #[derive(FromQueryResult)]
        struct Max {
            seq: Option<i64>,
        }
        // As far as the shipper published: numbers above may still be preceded by one that
        // has not committed yet.
        let max = Max::find_by_statement(sql(
            "SELECT published_seq AS seq FROM event_log_shipper WHERE id = 1",
            [],
        ))
        .one(db)
        .await?;
        self.last_seq.fetch_max(max.and_then(|m| m.seq).unwrap_or(0), Ordering::Relaxed);
        self.positioned.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Hands the hub, in order, the events sequenced after `last_seq`, up to `through` (a
    /// number the shipper published, so nothing below it is still to come) or as far as the
    /// shipper recorded publishing, whichever is further.
    async fn catch_up(
        &self,
        db: &DatabaseConnection,
        waiters: &Waiters,
        hub: &Hub,
        through: Option<i64>,
    ) -> anyhow::Result<()> {
        const PAGE: i64 = 1000;
        let mut from = self.last_seq.load(Ordering::Relaxed);
        let mut sent = 0usize;
        loop {
            let rows =
                crate::relay::logged_between(db, from, through.unwrap_or(from), true, PAGE).await?;
            let n = rows.len();
            for row in rows {
                from = row.seq;
                let Ok(envelope) = serde_json::from_str::<EventEnvelope>(&row.body) else {
                    continue;
                };
                if let Some(command_id) = envelope.correlation_id {
                    waiters.wake(command_id);
                }
                let text = frame_of(&envelope, &row.routing_key, row.traceparent.as_deref());
                let audience =
                    Audience::of(&row.routing_key, envelope.actor.as_ref().map(|a| a.id));
                let frame = Arc::new(FrameData::new(
                    row.seq,
                    row.routing_key,
                    audience,
                    &text,
                    Instant::now(),
                ));
                if self.last_seq.fetch_max(row.seq, Ordering::Relaxed) < row.seq {
                    hub.dispatch(&frame).await;
                    sent += 1;
                }
            }
            if n < PAGE as usize {
                break;
            }
        }
        if sent > 0 {
            tracing::info!(events = sent, "relay caught up from the event log after a reconnect");
        }
        Ok(())
    }
}

/// Whether the event log holds the event `id` at `seq`.
async fn logged(db: &DatabaseConnection, seq: i64, id: uuid::Uuid) -> anyhow::Result<bool> {
    let row = db
        .query_one_raw(sql(
            "SELECT 1 FROM event_log WHERE seq = $1 AND id = $2",
            [seq.into(), id.into()],
        ))
        .await?;
    Ok(row.is_some())
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

/// A shipped event, checked: its envelope, its number, the number published before it, and
/// its frame as the relay hands it out (`None` when it was not framed: no socket connected).
struct Shipped {
    envelope: EventEnvelope,
    seq: i64,
    prev: i64,
    frame: Option<Frame>,
}

/// The frame of `envelope` if `framed`.
fn framing(
    framed: bool,
    envelope: &EventEnvelope,
    seq: i64,
    topic: &str,
    traceparent: Option<&str>,
    arrived: Instant,
) -> Option<Frame> {
    framed.then(|| {
        let text = frame_of(envelope, topic, traceparent);
        let audience = Audience::of(topic, envelope.actor.as_ref().map(|a| a.id));
        Arc::new(FrameData::new(seq, topic.to_string(), audience, &text, arrived))
    })
}

/// The events of a delivery from the shipper, in order (a batch, `showrunner_shared::live`, or
/// one event as shippers before it published them); or why one, or the whole message, is
/// dropped. Every event passes the checks every worker applies (`inbound`), so a forged one
/// reaches no client; one dropped from the middle of a batch still counts as published before
/// the next, whose catch-up then reads it from the log if the log has it.
fn live_frames(
    delivery: &lapin::message::Delivery,
    rules: &Rules,
    framed: bool,
) -> Vec<Result<Shipped, String>> {
    // The fan-out is timed from here: the event's arrival at the relay.
    let arrived = Instant::now();
    let headers = delivery.properties.headers().as_ref();
    let number = |name: &str| match headers.and_then(|h| h.inner().get(name)) {
        Some(AMQPValue::LongLongInt(n)) => Some(*n),
        Some(AMQPValue::LongInt(n)) => Some(i64::from(*n)),
        _ => None,
    };
    let kind = delivery.properties.kind().as_ref().map(|k| k.as_str());
    if kind != Some(live::BATCH_TYPE) {
        let (seq, prev) = (number("x-seq"), number("x-prev-seq"));
        return vec![live_frame(delivery, rules, seq, prev, framed, arrived)];
    }
    if delivery.data.len() > rules.max_bytes {
        return vec![Err(format!(
            "a batch of {} bytes (at most {})",
            delivery.data.len(),
            rules.max_bytes
        ))];
    }
    let items = match live::decode(&delivery.data) {
        Ok(items) => items,
        Err(reason) => return vec![Err(format!("not a batch of events: {reason}"))],
    };
    let Some(mut prev) = number("x-prev-seq").filter(|p| (0..items[0].seq).contains(p)) else {
        return vec![Err("no x-prev-seq header below the batch's first number".into())];
    };
    let now = chrono::Utc::now();
    items
        .into_iter()
        .map(|item| {
            let before = std::mem::replace(&mut prev, item.seq);
            let topic = item.topic.as_ref();
            let envelope: EventEnvelope =
                inbound::decode(item.event.get().as_bytes(), topic, rules, now)
                    .map_err(|r| format!("{topic} #{}: {r}", item.seq))?;
            let tp = item.traceparent.as_deref();
            let frame = framing(framed, &envelope, item.seq, topic, tp, arrived);
            Ok(Shipped { envelope, seq: item.seq, prev: before, frame })
        })
        .collect()
}

/// One event as its own message (type `event`, routing key its topic, headers `x-seq` and
/// `x-prev-seq`), as shippers before batches published it.
fn live_frame(
    delivery: &lapin::message::Delivery,
    rules: &Rules,
    seq: Option<i64>,
    prev: Option<i64>,
    framed: bool,
    arrived: Instant,
) -> Result<Shipped, String> {
    let Some(seq) = seq.filter(|n| *n > 0) else {
        return Err("no positive x-seq header".into());
    };
    let Some(prev) = prev.filter(|n| (0..seq).contains(n)) else {
        return Err("no x-prev-seq header below its x-seq".into());
    };
    let headers = delivery.properties.headers().as_ref();
    let traceparent = match headers.and_then(|h| h.inner().get("traceparent")) {
        Some(AMQPValue::LongString(s)) => std::str::from_utf8(s.as_bytes()).ok(),
        _ => None,
    };
    let topic = delivery.routing_key.as_str();
    let envelope: EventEnvelope = inbound::decode(&delivery.data, topic, rules, chrono::Utc::now())
        .map_err(|r| r.to_string())?;
    let frame = framing(framed, &envelope, seq, topic, traceparent, arrived);
    Ok(Shipped { envelope, seq, prev, frame })
}
