//! Showrunner's workers: the consume runtime, one consumer module per queue, and the role
//! entry points the binaries call.

pub mod consumers;
pub mod jobs;
mod observe;
pub mod ops;
pub mod partitions;
pub mod retention;
pub mod runtime;
pub mod session;
pub mod shipper;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use lapin::options::{BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use showrunner_shared::broker::{ack_through, bounded};
use showrunner_shared::broker::{process_label, topology};
use showrunner_shared::config::Settings;
use showrunner_shared::metrics;
use tokio_stream::StreamMap;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::consumers::{commands::Commands, notification::Notifications};
use crate::runtime::{BatchHandler, Context, Source, consume, process_batch};

/// Runs the episode worker until `cancel`: applies commands from the partitions it owns.
pub async fn run_episode_worker(
    settings: Arc<Settings>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    const ROLE: &str = "episode-worker";
    let ops = ops::serving(&settings, ROLE, &cancel).await;
    let Some(db) = session::database(&settings, ROLE, &cancel).await? else { return Ok(()) };
    let probe = ops.probe(ROLE, &db);
    let me = Uuid::now_v7();
    // The worker id in the label tells apart two workers of one process (tests, `showrunner up`).
    let label = format!("{}/{me}", process_label(ROLE));
    tracing::info!(worker_id = %me, %label, "episode worker starting");
    let mut pacer = session::Pacer::default();
    while let Some((conn, ctx)) = pacer.connect(&settings, &db, ROLE, &cancel).await {
        probe.connected(&conn);
        probe.consuming(true);
        supervise_partitions(&ctx, &conn, me, &label, &cancel).await;
        probe.consuming(false);
        let _ = bounded(conn.close(200, "shutting down".into())).await;
        if cancel.is_cancelled() {
            break;
        }
    }
    if let Err(error) = partitions::leave(&db, me).await {
        tracing::warn!(%error, "could not remove the heartbeat row; it expires by itself");
    }
    tracing::info!("episode worker stopped");
    Ok(())
}

/// The partitions this worker consumes: one channel each (closing it hands the partition's
/// unacked deliveries back in order, and single active consumer over to the next owner), all
/// read by one loop, so one transaction applies a batch taken from every partition at once.
struct Partitions {
    streams: StreamMap<u16, lapin::Consumer>,
    channels: HashMap<u16, lapin::Channel>,
}

impl Partitions {
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

/// Heartbeats, follows partition ownership, sweeps, and applies commands, until shutdown or a
/// lost connection.
async fn supervise_partitions(
    ctx: &Context,
    conn: &lapin::Connection,
    me: Uuid,
    label: &str,
    cancel: &CancellationToken,
) {
    let workers = &ctx.settings.workers;
    let mut held = Partitions { streams: StreamMap::new(), channels: HashMap::new() };
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
                session::sweep(ctx).await;
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
        for (p, d) in &last {
            let n = from.iter().filter(|q| *q == p).count() as u64;
            if let Ok(false) | Err(_) = ack_through(d).await {
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
    held: &mut Partitions,
) {
    let workers = &ctx.settings.workers;
    let live = match partitions::heartbeat(&ctx.db, me, label).await {
        Ok(()) => partitions::live_workers(&ctx.db, workers.heartbeat_ttl_secs).await,
        Err(e) => Err(e),
    };
    let wanted = match live {
        Ok(mut live) => {
            if !live.contains(&me) {
                live.push(me);
            }
            partitions::owned(me, &live, ctx.settings.amqp.partitions)
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

/// Runs the activity worker until `cancel`: the log shipper (one active at a time, the others
/// stand by) and the importer of events published to the events exchange from outside.
pub async fn run_activity_worker(
    settings: Arc<Settings>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    const ROLE: &str = "activity-worker";
    let importer = run_queue_worker(
        settings.clone(),
        cancel.clone(),
        ROLE,
        topology::EVENT_LOG_QUEUE,
        crate::consumers::event_log::Importer,
    );
    let (imported, shipped) = tokio::join!(importer, shipper::run(settings, ROLE, cancel));
    imported.and(shipped)
}

/// Runs the notification worker until `cancel`.
pub async fn run_notification_worker(
    settings: Arc<Settings>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    run_queue_worker(
        settings,
        cancel,
        "notification-worker",
        topology::NOTIFICATIONS_QUEUE,
        Notifications,
    )
    .await
}

/// Runs the job worker with the built-in job types until `cancel`.
pub async fn run_job_worker(
    settings: Arc<Settings>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    run_job_worker_with(settings, jobs::Registry::builtin(), cancel).await
}

/// Runs a job worker with the job types of `registry` until `cancel` (competing consumers on
/// the jobs queue: run as many as needed).
pub async fn run_job_worker_with(
    settings: Arc<Settings>,
    registry: jobs::Registry,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    const ROLE: &str = "job-worker";
    let ops = ops::serving(&settings, ROLE, &cancel).await;
    // No ping per acquire: it would double the round trips of the short job statements; a
    // connection broken by a restart fails one request, which comes back through a delay tier.
    let Some(db) = session::database_with(&settings, ROLE, false, &cancel).await? else {
        return Ok(());
    };
    let probe = ops.probe(ROLE, &db);
    let tag = format!("{}/{}", process_label(ROLE), Uuid::now_v7());
    let http = jobs::webhook::client()?;
    let storage = showrunner_shared::storage::Storage::open(&settings.storage)?;
    tracing::info!(types = ?registry.types(), ?storage, "job worker starting");
    let mut pacer = session::Pacer::default();
    while let Some((conn, ctx)) = pacer.connect(&settings, &db, ROLE, &cancel).await {
        let Some(channel) = session::open_channel(&conn).await else { continue };
        announce(&ctx, &tag).await;
        let sweeper = tokio::spawn(sweep_jobs_forever(ctx.clone(), cancel.child_token()));
        let orphans = tokio::spawn(jobs::files::sweep_orphans_forever(
            ctx.clone(),
            storage.clone(),
            cancel.child_token(),
        ));
        let runner =
            jobs::consumer::Runner::new(ctx, registry.clone(), http.clone(), storage.clone());
        probe.connected(&conn);
        probe.consuming(true);
        let result = jobs::consumer::consume(&runner, &channel, &tag, &cancel).await;
        probe.consuming(false);
        // What the finished jobs handed the committer is written before the connection closes.
        runner.committer.flush(Duration::from_secs(5)).await;
        sweeper.abort();
        orphans.abort();
        let _ = bounded(channel.close(200, "stopping".into())).await;
        let _ = bounded(conn.close(200, "stopping".into())).await;
        match result {
            Ok(()) => break,
            Err(error) => tracing::warn!(%error, "job consumer stopped, reconnecting"),
        }
    }
    tracing::info!("job worker stopped");
    Ok(())
}

/// The job worker's sweeper: what an older version left in the outbox and pending commands like
/// every worker, plus job
/// requests that seem lost (see `jobs::store::stranded`), every second.
async fn sweep_jobs_forever(ctx: Context, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        session::sweep(&ctx).await;
        retention::tick(&ctx);
        match republish_stranded(&ctx).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(count = n, "sweeper republished stranded job requests"),
            Err(error) => tracing::warn!(%error, "job sweep failed"),
        }
    }
}

async fn republish_stranded(ctx: &Context) -> anyhow::Result<usize> {
    let after = Duration::from_secs(ctx.settings.workers.command_republish_after_secs);
    let (txn, requests) = jobs::store::stranded(&ctx.db, after, 100).await?;
    let now = chrono::Utc::now();
    for request in &requests {
        showrunner_shared::jobs::publish(&ctx.publisher, request, now).await?;
    }
    txn.commit().await?;
    Ok(requests.len())
}

/// `job_processor_started`, through the event log like every event.
async fn announce(ctx: &Context, instance: &str) {
    use showrunner_shared::contracts::{JobProcessorStarted, OutgoingEvent};
    use showrunner_shared::event_log::{self, StoredEvent};
    let jobs = &ctx.settings.jobs;
    let event = OutgoingEvent::new(
        &(),
        &JobProcessorStarted {
            instance: instance.to_string(),
            prefetch: jobs.prefetch,
            max_concurrent: jobs.max_in_flight,
        },
        None,
        None,
        chrono::Utc::now(),
    );
    let events = [StoredEvent::from_outgoing(&event, None)];
    if let Err(error) = event_log::record(&ctx.db, &events).await {
        tracing::warn!(%error, "could not announce the job worker");
    }
}

/// A role that consumes one queue (competing consumers: run as many as needed).
async fn run_queue_worker<H: BatchHandler>(
    settings: Arc<Settings>,
    cancel: CancellationToken,
    role: &str,
    queue: &str,
    handler: H,
) -> anyhow::Result<()> {
    let ops = ops::serving(&settings, role, &cancel).await;
    let Some(db) = session::database(&settings, role, &cancel).await? else { return Ok(()) };
    let probe = ops.probe(format!("{role}/{queue}"), &db);
    // The queue in the tag tells the consumer's role and queue in the management UI.
    let tag = format!("{}/{queue}", process_label(role));
    let mut pacer = session::Pacer::default();
    while let Some((conn, ctx)) = pacer.connect(&settings, &db, role, &cancel).await {
        let Some(channel) = session::open_channel(&conn).await else { continue };
        let sweeper = tokio::spawn(sweep_forever(ctx.clone(), cancel.child_token()));
        probe.connected(&conn);
        probe.consuming(true);
        let result = consume(&ctx, &channel, queue, &tag, &handler, &cancel).await;
        probe.consuming(false);
        sweeper.abort();
        let _ = bounded(channel.close(200, "stopping".into())).await;
        let _ = bounded(conn.close(200, "stopping".into())).await;
        match result {
            Ok(()) => break,
            Err(error) => tracing::warn!(queue, %error, "consumer stopped, reconnecting"),
        }
    }
    tracing::info!(role, "stopped");
    Ok(())
}

async fn sweep_forever(ctx: Context, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = tick.tick() => {
                session::sweep(&ctx).await;
                retention::tick(&ctx);
            }
        }
    }
}
