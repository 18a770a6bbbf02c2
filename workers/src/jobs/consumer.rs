//! The job consume loop. Each delivery is one job request, handled in its own task (at most
//! `jobs.max_in_flight` at once, `jobs.prefetch` held): claim the attempt in PostgreSQL, run the
//! handler under `jobs.timeout_secs`, record the outcome, and ack only once what comes next
//! is durable: the retry confirmed in a delay tier, or the job confirmed in the parking lot.
//! The delivery is held while the job runs, so a worker that dies loses nothing: the broker
//! hands the job to another worker, which waits out the dead worker's lease and runs it.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures_util::StreamExt;
use lapin::Channel;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::FieldTable;
use showrunner_shared::broker::bounded;
use showrunner_shared::broker::checked_routing_key;
use showrunner_shared::broker::topology::{JOBS_KEY, JOBS_QUEUE};
use showrunner_shared::contracts::JobRequest;
use showrunner_shared::inbound::{self, Rules};
use showrunner_shared::{jobs, metrics, trace};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use super::committer::Committer;
use super::schedule::{RetryPolicy, retries_left};
use super::store::{self, Claim, ClaimedJob, Outcome};
use super::tracker::{Stop, Tracker};
use super::{JobContext, JobError, Registry};
use crate::runtime::{ConsumeError, Context};

/// How long past its longest run a claimed attempt stays reserved when the lease is not
/// renewed: a redelivered copy waits this out before it may run the job again.
pub const LEASE_GRACE: Duration = Duration::from_secs(2);
/// When the database or the broker fails mid-way, the request comes back after this long.
const RECHECK: Duration = Duration::from_millis(1_600);

/// What every job task shares.
#[derive(Clone)]
pub struct Runner {
    pub ctx: Context,
    pub registry: Registry,
    pub http: reqwest::Client,
    pub storage: showrunner_shared::storage::Storage,
    pub committer: Committer,
    pub tracker: Tracker,
}

impl Runner {
    pub fn new(
        ctx: Context,
        registry: Registry,
        http: reqwest::Client,
        storage: showrunner_shared::storage::Storage,
    ) -> Self {
        let jobs = &ctx.settings.jobs;
        // Renewed every `jobs.lease_renew_ms` while the attempt runs (at least three times per
        // lease); never longer than an attempt can last (its timeout, or a cancel's grace), so
        // even without renewals it ends in time.
        let lease = Duration::from_secs(jobs.lease_secs)
            .min(Duration::from_secs(jobs.timeout_secs + jobs.cancel_grace_secs) + LEASE_GRACE);
        let renew_every = Duration::from_millis(jobs.lease_renew_ms).min(lease / 3);
        let committer = Committer::start(ctx.db.clone(), lease);
        let tracker = Tracker::start(
            ctx.db.clone(),
            lease,
            renew_every,
            Duration::from_millis(jobs.progress_interval_ms),
        );
        Self { ctx, registry, http, storage, committer, tracker }
    }
}

/// Consumes the jobs queue until `cancel` (then lets in-flight jobs finish) or until the
/// consumer ends (the caller reconnects).
pub async fn consume(
    runner: &Runner,
    channel: &Channel,
    consumer_tag: &str,
    cancel: &CancellationToken,
) -> Result<(), ConsumeError> {
    let jobs = &runner.ctx.settings.jobs;
    let start = async {
        channel.basic_qos(jobs.prefetch, BasicQosOptions::default()).await?;
        channel
            .basic_consume(
                JOBS_QUEUE.into(),
                consumer_tag.into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
    };
    let mut consumer = bounded(start).await.ok_or(ConsumeError::Ended)??;
    let slots = Arc::new(Semaphore::new(jobs.max_in_flight));
    let mut tasks = JoinSet::new();
    let result = loop {
        while tasks.try_join_next().is_some() {}
        let permit = tokio::select! {
            biased;
            () = cancel.cancelled() => break Ok(()),
            permit = slots.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break Ok(()),
            },
        };
        let delivery = tokio::select! {
            biased;
            () = cancel.cancelled() => break Ok(()),
            next = consumer.next() => next,
        };
        match delivery {
            None => break Err(ConsumeError::Ended),
            Some(Err(error)) => break Err(error.into()),
            Some(Ok(delivery)) => {
                let runner = runner.clone();
                tasks.spawn(async move {
                    handle(&runner, delivery).await;
                    drop(permit);
                });
            }
        }
    };
    // Drain: jobs already running finish and ack; unstarted deliveries go back on close.
    while tasks.join_next().await.is_some() {}
    result
}

async fn handle(runner: &Runner, delivery: Delivery) {
    let span = crate::observe::job_span(&delivery);
    handle_traced(runner, delivery).instrument(span).await;
}

async fn handle_traced(runner: &Runner, delivery: Delivery) {
    metrics::MESSAGES_CONSUMED.inc(&[JOBS_QUEUE]);
    let ack = || bounded(delivery.ack(BasicAckOptions::default()));
    let acked = match process(runner, &delivery).await {
        // Parked by rejecting it (its parking queue refused the copy): settled already.
        Ok(()) if !delivery.acker.usable() && !delivery.acker.poisoned() => return,
        Ok(()) => ack().await,
        Err(error) => {
            tracing::warn!(%error, "job request failed, trying again later");
            match requeue_later(runner, &delivery).await {
                Ok(()) => ack().await,
                // Neither the database nor the broker took it: hand it back.
                Err(_) => {
                    metrics::MESSAGES_REJECTED.inc(&[JOBS_QUEUE]);
                    bounded(delivery.nack(BasicNackOptions { requeue: true, multiple: false }))
                        .await
                }
            }
        }
    };
    match acked {
        Some(Ok(true)) => metrics::MESSAGES_ACKED.inc(&[JOBS_QUEUE]),
        Some(Ok(false)) | None => {
            metrics::MESSAGES_REJECTED.inc(&[JOBS_QUEUE]);
            tracing::warn!("ack not sent, channel closed: the request will be redelivered")
        }
        Some(Err(error)) => {
            metrics::MESSAGES_REJECTED.inc(&[JOBS_QUEUE]);
            tracing::warn!(%error, "ack failed: the request will be redelivered")
        }
    }
}

/// Sends the same request through the delay tiers, to be looked at again in a moment.
async fn requeue_later(runner: &Runner, delivery: &Delivery) -> anyhow::Result<()> {
    let mut request: JobRequest = serde_json::from_slice(&delivery.data)?;
    request.not_before = Some(Utc::now() + RECHECK);
    let traceparent = trace::from_amqp(&delivery.properties);
    jobs::publish_traced(&runner.ctx.publisher, &request, Utc::now(), traceparent.as_deref())
        .await?;
    Ok(())
}

/// Everything but the ack. `Ok`: the delivery may be acked.
async fn process(runner: &Runner, delivery: &Delivery) -> anyhow::Result<()> {
    let ctx = &runner.ctx;
    let now = Utc::now();
    let rules = Rules::from_settings(&ctx.settings);
    // The jobs queue has one binding, so one that came through the default exchange is checked
    // as if it had come through it.
    let routing_key = checked_routing_key(delivery, Some(JOBS_KEY));
    let request: JobRequest = match inbound::decode(&delivery.data, &routing_key, &rules, now) {
        Ok(r) => r,
        Err(refused) => {
            // Hostile or broken: parked with its reason; the worker goes on with the next.
            let reason = format!("job request refused: {refused}");
            tracing::warn!(queue = JOBS_QUEUE, %reason, "refused message parked");
            crate::runtime::park(ctx, JOBS_QUEUE, delivery, &reason).await?;
            return Ok(());
        }
    };
    // The request's trace travels with every copy of it, and the job's events continue it.
    let traceparent = trace::from_amqp(&delivery.properties);
    let tp = traceparent.as_deref();
    if showrunner_shared::broker::topology::job_delay_tier(jobs::remaining_ms(&request, now))
        .is_some()
    {
        // A delayed retry on its way: send it through the next tier.
        jobs::publish_traced(&ctx.publisher, &request, now, tp).await?;
        return Ok(());
    }
    // Less than the shortest tier remains: waited out here (at most 25 ms), so a scheduled job
    // or a retry never starts before its time.
    let early = jobs::remaining_ms(&request, Utc::now());
    if early > 0 {
        tokio::time::sleep(Duration::from_millis(early)).await;
    }
    let job = match runner.committer.claim(request.clone(), traceparent.clone()).await? {
        Claim::Run(job) => job,
        Claim::Held(until) => {
            let mut later = request.clone();
            later.not_before = Some(until + chrono::Duration::milliseconds(50));
            tracing::info!(job_id = %request.job_id, %until, "job held by another worker, looking again after its lease");
            jobs::publish_traced(&ctx.publisher, &later, Utc::now(), tp).await?;
            return Ok(());
        }
        Claim::Skip(reason) => {
            tracing::debug!(job_id = %request.job_id, %reason, "job request skipped");
            return Ok(());
        }
    };
    let started = std::time::Instant::now();
    let (ran, stopped) = run(runner, &job).await;
    metrics::HANDLER_SECONDS.observe_duration(&[JOBS_QUEUE], started.elapsed());
    match stopped {
        Some(Stop::Cancelled) => {
            match store::cancel_running(&ctx.db, &job).await? {
                Some(_recorded) => {
                    tracing::info!(job_id = %job.id, attempt = job.attempts, "running job cancelled");
                }
                None => tracing::warn!(job_id = %job.id, "cancelled attempt was no longer ours"),
            }
            return Ok(());
        }
        Some(Stop::Lost) => {
            tracing::warn!(job_id = %job.id, "attempt lost its lease; its outcome is dropped");
            return Ok(());
        }
        None => {}
    }
    let outcome = match ran {
        Ok(result) => {
            if runner.committer.succeed(job.clone(), result).await? {
                tracing::debug!(job_id = %job.id, job_type = %job.job_type, attempt = job.attempts, "job succeeded");
            } else {
                tracing::warn!(job_id = %job.id, "attempt outlived its lease; its outcome is dropped");
            }
            return Ok(());
        }
        Err(error) if error.is_retryable() && retries_left(job.attempts, job.max_attempts) => {
            let policy = RetryPolicy::from_settings(&ctx.settings.jobs);
            let delay = policy.delay_after(job.attempts.max(1) as u32, fastrand::f64());
            let next = JobRequest {
                job_id: job.id,
                dispatch_id: Uuid::now_v7(),
                not_before: Some(Utc::now() + delay),
            };
            Outcome::Retrying { next, delay, error: error.to_string() }
        }
        Err(error) => Outcome::Failed(error.to_string()),
    };
    record(runner, &job, &outcome, delivery).await
}

/// Runs the handler in a task of its own (a panic fails the attempt, not the worker) under
/// the configured timeout, its lease renewed by the tracker meanwhile. If the attempt is told
/// to stop (a cancel request: the handler gets `jobs.cancel_grace_secs` to return; a lost
/// lease: at once), the handler is abandoned and its result discarded; the second value says
/// why.
async fn run(
    runner: &Runner,
    job: &ClaimedJob,
) -> (Result<serde_json::Value, JobError>, Option<Stop>) {
    let jobs = &runner.ctx.settings.jobs;
    let signals = runner.tracker.enter(job);
    let ctx = JobContext {
        job_id: job.id,
        attempt: job.attempts,
        db: runner.ctx.db.clone(),
        settings: runner.ctx.settings.clone(),
        http: runner.http.clone(),
        storage: runner.storage.clone(),
        signals: signals.clone(),
    };
    let timeout = Duration::from_secs(jobs.timeout_secs);
    let mut task = tokio::spawn(runner.registry.run(&job.job_type, ctx, job.payload.clone()));
    let result = tokio::select! {
        joined = tokio::time::timeout(timeout, &mut task) => match joined {
            Ok(Ok(result)) => result,
            Ok(Err(join_error)) => {
                Err(JobError::permanent(anyhow::anyhow!("the handler panicked: {join_error}")))
            }
            Err(_) => {
                task.abort();
                Err(JobError::retryable(anyhow::anyhow!("timed out after {timeout:?}")))
            }
        },
        () = signals.cancel.cancelled() => {
            let grace = match signals.stopped() {
                Some(Stop::Cancelled) => Duration::from_secs(jobs.cancel_grace_secs),
                _ => Duration::ZERO,
            };
            if tokio::time::timeout(grace, &mut task).await.is_err() {
                task.abort();
                tracing::warn!(job_id = %job.id, ?grace, "handler did not stop in time: abandoned");
            }
            Err(JobError::permanent(anyhow::anyhow!("stopped")))
        }
    };
    runner.tracker.leave(job);
    (result, signals.stopped())
}

/// Records a failed attempt; the retry or the parked copy is confirmed by the broker before the
/// row's transaction commits (and so before the ack).
async fn record(
    runner: &Runner,
    job: &ClaimedJob,
    outcome: &Outcome,
    delivery: &Delivery,
) -> anyhow::Result<()> {
    let ctx = &runner.ctx;
    let Some((txn, _recorded)) = store::finish(&ctx.db, job, outcome).await? else {
        tracing::warn!(job_id = %job.id, "attempt outlived its lease; its outcome is dropped");
        return Ok(());
    };
    match outcome {
        Outcome::Retrying { next, delay, error } => {
            // The row stays locked by `txn` until the retry is confirmed, so a retry that comes
            // back at once waits for the commit and finds the new dispatch id.
            jobs::publish_traced(&ctx.publisher, next, Utc::now(), job.traceparent.as_deref())
                .await?;
            metrics::MESSAGES_RETRIED.inc(&[JOBS_QUEUE]);
            tracing::info!(job_id = %job.id, attempt = job.attempts, ?delay, %error, "job failed, retry scheduled");
        }
        Outcome::Failed(error) => {
            crate::runtime::park(ctx, JOBS_QUEUE, delivery, &format!("job failed: {error}"))
                .await?;
            tracing::warn!(job_id = %job.id, attempt = job.attempts, %error, "job failed for good, parked");
        }
    }
    txn.commit().await?;
    Ok(())
}
