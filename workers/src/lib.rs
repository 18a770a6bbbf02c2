//! Showrunner's workers: the consume runtime, one consumer module per queue, and the role
//! entry points the binaries call.

pub mod consumers;
pub mod jobs;
pub mod partitions;
pub mod runtime;
pub mod session;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use showrunner_shared::broker::{process_label, topology};
use showrunner_shared::config::Settings;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::consumers::{
    activity::ActivityLog, episode::EpisodeCommands, notification::Notifications,
};
use crate::runtime::{BatchHandler, ConsumeError, Context, consume};

/// Runs the episode worker until `cancel`: applies commands from the partitions it owns.
pub async fn run_episode_worker(
    settings: Arc<Settings>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    const ROLE: &str = "episode-worker";
    let db = session::database(&settings, ROLE).await?;
    let me = Uuid::now_v7();
    // The worker id in the label tells apart two workers of one process (tests, `showrunner up`).
    let label = format!("{}/{me}", process_label(ROLE));
    tracing::info!(worker_id = %me, %label, "episode worker starting");
    while let Some((conn, ctx)) = session::connect(&settings, &db, ROLE, &cancel).await {
        let conn = Arc::new(conn);
        supervise_partitions(&ctx, &conn, me, &label, &cancel).await;
        let _ = conn.close(200, "shutting down".into()).await;
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

type PartitionTask = (CancellationToken, JoinHandle<Result<(), ConsumeError>>);

/// Heartbeats, follows partition ownership and sweeps, until shutdown or a lost connection.
async fn supervise_partitions(
    ctx: &Context,
    conn: &Arc<lapin::Connection>,
    me: Uuid,
    label: &str,
    cancel: &CancellationToken,
) {
    let workers = &ctx.settings.workers;
    let mut running: HashMap<u16, PartitionTask> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs(workers.heartbeat_secs));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        if !conn.status().connected() {
            tracing::warn!("RabbitMQ connection lost, reconnecting");
            break;
        }
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
                running.keys().copied().collect()
            }
        };
        running.retain(|p, (token, handle)| {
            let keep = wanted.contains(p) && !handle.is_finished();
            if !keep {
                token.cancel();
            }
            keep
        });
        for p in wanted {
            if running.contains_key(&p) {
                continue;
            }
            let token = cancel.child_token();
            let handle = tokio::spawn(run_partition(
                ctx.clone(),
                conn.clone(),
                p,
                label.to_string(),
                token.clone(),
            ));
            running.insert(p, (token, handle));
        }
        session::sweep(ctx).await;
    }
    for (_, (token, handle)) in running.drain() {
        token.cancel();
        let _ = handle.await;
    }
}

async fn run_partition(
    ctx: Context,
    conn: Arc<lapin::Connection>,
    partition: u16,
    label: String,
    cancel: CancellationToken,
) -> Result<(), ConsumeError> {
    let queue = topology::command_queue(partition);
    let channel = conn.create_channel().await?;
    tracing::info!(partition, "consuming partition");
    let result = consume(
        &ctx,
        &channel,
        &queue,
        &format!("{label}/p{partition:03}"),
        &EpisodeCommands,
        &cancel,
    )
    .await;
    if let Err(error) = &result {
        tracing::warn!(partition, %error, "partition consumer stopped");
    }
    // Closing the channel hands unacked deliveries back, and single active consumer over to
    // the partition's next owner.
    let _ = channel.close(200, "partition released".into()).await;
    tracing::info!(partition, "released partition");
    result
}

/// Runs the activity worker until `cancel`.
pub async fn run_activity_worker(
    settings: Arc<Settings>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    run_queue_worker(
        settings,
        cancel,
        "activity-worker",
        topology::ACTIVITY_QUEUE,
        ActivityLog,
    )
    .await
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
    // No ping per acquire: it would double the round trips of the short job statements; a
    // connection broken by a restart fails one request, which comes back through a delay tier.
    let db = session::database_with(&settings, ROLE, false).await?;
    let tag = format!("{}/{}", process_label(ROLE), Uuid::now_v7());
    let http = jobs::webhook::client()?;
    tracing::info!(types = ?registry.types(), "job worker starting");
    while let Some((conn, ctx)) = session::connect(&settings, &db, ROLE, &cancel).await {
        let channel = match conn.create_channel().await {
            Ok(c) => c,
            Err(error) => {
                tracing::warn!(%error, "cannot open a channel, reconnecting");
                continue;
            }
        };
        announce(&ctx, &tag).await;
        let sweeper = tokio::spawn(sweep_jobs_forever(ctx.clone(), cancel.child_token()));
        let runner = jobs::consumer::Runner::new(ctx, registry.clone(), http.clone());
        let result = jobs::consumer::consume(&runner, &channel, &tag, &cancel).await;
        sweeper.abort();
        let _ = channel.close(200, "stopping".into()).await;
        let _ = conn.close(200, "stopping".into()).await;
        match result {
            Ok(()) => break,
            Err(error) => tracing::warn!(%error, "job consumer stopped, reconnecting"),
        }
    }
    tracing::info!("job worker stopped");
    Ok(())
}

/// The job worker's sweeper: the outbox and pending commands like every worker, plus job
/// requests that seem lost (see `jobs::store::stranded`), every second.
async fn sweep_jobs_forever(ctx: Context, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        session::sweep(&ctx).await;
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

/// `job_processor_started`, through the outbox like every event.
async fn announce(ctx: &Context, instance: &str) {
    use showrunner_shared::contracts::{JobProcessorStarted, OutgoingEvent};
    use showrunner_shared::outbox::{self, StoredEvent};
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
    let result = match outbox::insert(&ctx.db, &events).await {
        Ok(()) => outbox::publish(&ctx.db, &ctx.publisher, &events)
            .await
            .map_err(anyhow::Error::from),
        Err(e) => Err(e.into()),
    };
    if let Err(error) = result {
        tracing::warn!(%error, "could not announce the job worker; the sweeper may publish it later");
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
    let db = session::database(&settings, role).await?;
    let tag = process_label(role);
    while let Some((conn, ctx)) = session::connect(&settings, &db, role, &cancel).await {
        let channel = match conn.create_channel().await {
            Ok(c) => c,
            Err(error) => {
                tracing::warn!(%error, "cannot open a channel, reconnecting");
                continue;
            }
        };
        let sweeper = tokio::spawn(sweep_forever(ctx.clone(), cancel.child_token()));
        let result = consume(&ctx, &channel, queue, &tag, &handler, &cancel).await;
        sweeper.abort();
        let _ = channel.close(200, "stopping".into()).await;
        let _ = conn.close(200, "stopping".into()).await;
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
            _ = tick.tick() => session::sweep(&ctx).await,
        }
    }
}

/// The whole `main` of a worker binary: configuration (one clear line and exit 2 when it is
/// wrong), logging, the runtime, and shutdown on SIGTERM or SIGINT.
pub fn main_for<F, Fut>(role: &str, run: F) -> anyhow::Result<()>
where
    F: FnOnce(Arc<Settings>, CancellationToken) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let settings = match Settings::load(showrunner_shared::config::path_from_args()) {
        Ok(s) => Arc::new(s),
        Err(error) => {
            eprintln!("showrunner-{role}: {error}");
            std::process::exit(2);
        }
    };
    showrunner_shared::telemetry::init(&settings.log);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let cancel = showrunner_shared::shutdown::on_signal();
        if let Err(error) = run(settings, cancel).await {
            eprintln!("showrunner-{role}: {error:#}");
            std::process::exit(1);
        }
        Ok(())
    })
}
