//! The job consume loop. Each delivery is one job request, held (at most
//! `jobs.max_in_flight` at once, `jobs.prefetch` fetched) until what comes next is durable:
//! the deliveries that arrived together are claimed in one transaction, each claimed job runs
//! in its own task under `jobs.timeout_secs`, its success or its retry goes to the committer
//! (which acks once the row is committed, a retry's request confirmed by the broker first), a
//! failure for good is committed and its parked copy confirmed before the ack. A request that
//! came back a few milliseconds early waits them out and is claimed with the next batch. The
//! delivery is held while the job runs, so a worker that dies loses nothing: the broker hands
//! the job to another worker, which waits out the dead worker's lease and runs it.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures_util::{FutureExt, StreamExt};
use lapin::Channel;
use lapin::options::{BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use showrunner_shared::broker::bounded;
use showrunner_shared::broker::checked_routing_key;
use showrunner_shared::broker::topology::{JOBS_KEY, JOBS_QUEUE, job_delay_tier};
use showrunner_shared::contracts::JobRequest;
use showrunner_shared::inbound::{self, Rules};
use showrunner_shared::{jobs, metrics, trace};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use super::committer::Committer;
use super::schedule::{RetryPolicy, retries_left};
use super::settle::{Acks, Held};
use super::store::{self, Claim, ClaimedJob};
use super::tracker::{Stop, Tracker};
use super::{JobContext, JobError, Registry};
use crate::runtime::{ConsumeError, Context};

/// How long past its longest run a claimed attempt stays reserved when the lease is not
/// renewed: a redelivered copy waits this out before it may run the job again.
pub const LEASE_GRACE: Duration = Duration::from_secs(2);
/// Most requests claimed in one transaction.
const CLAIM_MAX: usize = 256;

/// What every job task shares, through one `Arc` (`jobs/worker.rs`).
pub struct Runner {
    pub ctx: Context,
    pub registry: Registry,
    pub http: reqwest::Client,
    pub storage: showrunner_shared::storage::Storage,
    pub committer: Committer,
    pub tracker: Tracker,
    /// How long a claim reserves an attempt (renewed by the tracker while it runs).
    pub lease: Duration,
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
        let committer = Committer::start(ctx.db.clone(), ctx.publisher.clone());
        let tracker = Tracker::start(
            ctx.db.clone(),
            lease,
            renew_every,
            Duration::from_millis(jobs.progress_interval_ms),
        );
        Self { ctx, registry, http, storage, committer, tracker, lease }
    }
}

/// A request ready to be claimed, and its delivery.
struct Due {
    request: JobRequest,
    traceparent: Option<String>,
    held: Held,
}

/// Consumes the jobs queue until `cancel` (then lets in-flight jobs finish) or until the
/// consumer ends (the caller reconnects).
pub async fn consume(
    runner: &Arc<Runner>,
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
    let acks = Acks::new(jobs.prefetch);
    // Finished deliveries held up behind a long job are acked alone after a while.
    let overdue = tokio::spawn({
        let acks = acks.clone();
        async move {
            loop {
                tokio::time::sleep(super::settle::HOLD).await;
                acks.ack_overdue().await;
            }
        }
    });
    // Requests that waited out their last milliseconds here (`admit`): claimed with the next
    // batch instead of one transaction each.
    let (ripe_tx, mut ripe_rx) = mpsc::unbounded_channel::<Due>();
    let result = loop {
        // Wait for one delivery (with a free slot) or one ripe request, then take whatever else
        // is there (a delivery with a free slot each; a ripe request has its slot already): what
        // arrived while the last batch was claimed is claimed together.
        let mut due: Vec<Due> = Vec::new();
        let mut taken = Vec::new();
        let next = async {
            let permit = slots.clone().acquire_owned().await;
            (permit, consumer.next().await)
        };
        tokio::select! {
            biased;
            () = cancel.cancelled() => break Ok(()),
            Some(ripe) = ripe_rx.recv() => due.push(ripe),
            (permit, next) = next => match (permit, next) {
                (Err(_), _) => break Ok(()),
                (_, None) => break Err(ConsumeError::Ended),
                (_, Some(Err(error))) => break Err(error.into()),
                (Ok(permit), Some(Ok(delivery))) => taken.push(acks.hold(delivery, permit)),
            },
        }
        while taken.len() < CLAIM_MAX {
            let Ok(permit) = slots.clone().try_acquire_owned() else { break };
            match consumer.next().now_or_never() {
                Some(Some(Ok(delivery))) => taken.push(acks.hold(delivery, permit)),
                // An error or the end shows again on the next call, after this batch.
                _ => break,
            }
        }
        while due.len() < CLAIM_MAX {
            let Ok(ripe) = ripe_rx.try_recv() else { break };
            due.push(ripe);
        }
        metrics::MESSAGES_CONSUMED.inc_by(&[JOBS_QUEUE], taken.len() as u64);
        due.extend(taken.into_iter().filter_map(|held| admit(runner, held, &ripe_tx)));
        claim(runner, due).await;
    };
    // Ripe requests still to come are claimed by their own tasks from here on; those already
    // sent are claimed now (each holds a slot, which the drain below waits for).
    ripe_rx.close();
    let mut left = Vec::new();
    while let Ok(ripe) = ripe_rx.try_recv() {
        left.push(ripe);
    }
    claim(runner, left).await;
    // Drain: jobs already running finish and are acked (each holds its slot until then);
    // unstarted deliveries go back on close.
    let all = u32::try_from(jobs.max_in_flight).unwrap_or(u32::MAX);
    let _ = slots.acquire_many(all).await;
    acks.ack_overdue().await;
    overdue.abort();
    result
}

/// Decodes the request of `held`: `Some` when it is due now; otherwise it is dealt with in a
/// task of its own (parked when refused, sent on through the delay tiers, or, once its last
/// few milliseconds have passed, sent to `ripe` to be claimed with the consume loop's next
/// batch; claimed alone if the loop has ended).
fn admit(runner: &Arc<Runner>, held: Held, ripe: &mpsc::UnboundedSender<Due>) -> Option<Due> {
    let ctx = &runner.ctx;
    let now = Utc::now();
    let rules = Rules::from_settings(&ctx.settings);
    // The jobs queue has one binding, so one that came through the default exchange is checked
    // as if it had come through it.
    let routing_key = checked_routing_key(&held.delivery, Some(JOBS_KEY));
    let request: JobRequest = match inbound::decode(&held.delivery.data, &routing_key, &rules, now)
    {
        Ok(r) => r,
        Err(refused) => {
            let ctx = ctx.clone();
            tokio::spawn(async move {
                // Hostile or broken: parked with its reason; the worker goes on with the next.
                let reason = format!("job request refused: {refused}");
                tracing::warn!(queue = JOBS_QUEUE, %reason, "refused message parked");
                match crate::runtime::park(&ctx, JOBS_QUEUE, &held.delivery, &reason).await {
                    Ok(()) => held.done().await,
                    Err(error) => {
                        tracing::warn!(%error, "job request failed, trying again later");
                        held.later(&ctx.publisher).await
                    }
                }
            });
            return None;
        }
    };
    // The request's trace travels with every copy of it, and the job's events continue it.
    let traceparent = trace::from_amqp(&held.delivery.properties);
    let remaining = jobs::remaining_ms(&request, now);
    if remaining == 0 {
        return Some(Due { request, traceparent, held });
    }
    let runner = runner.clone();
    let ripe = ripe.clone();
    let span = crate::observe::job_span(&held.delivery);
    tokio::spawn(
        async move {
            if job_delay_tier(remaining).is_some() {
                // A delayed retry on its way: send it through the next tier.
                let tp = traceparent.as_deref();
                match jobs::publish_traced(&runner.ctx.publisher, &request, now, tp).await {
                    Ok(()) => held.ack().await,
                    Err(error) => {
                        tracing::warn!(%error, "job request failed, trying again later");
                        held.later(&runner.ctx.publisher).await
                    }
                }
                return;
            }
            // Less than `JOB_WAIT_IN_WORKER_MS` remains: waited out here (the slot stays
            // taken meanwhile), so a scheduled job or a retry never starts before its time.
            tokio::time::sleep(Duration::from_millis(remaining)).await;
            if let Err(mpsc::error::SendError(due)) = ripe.send(Due { request, traceparent, held })
            {
                claim(&runner, vec![due]).await;
            }
        }
        .instrument(span),
    );
    None
}

/// Claims the attempts of `due` in one transaction; each claimed job runs in a task of its
/// own, the rest are settled.
async fn claim(runner: &Arc<Runner>, due: Vec<Due>) {
    if due.is_empty() {
        return;
    }
    let traced: Vec<(JobRequest, Option<String>)> =
        due.iter().map(|d| (d.request.clone(), d.traceparent.clone())).collect();
    let claims = match store::claim_many(&runner.ctx.db, &traced, runner.lease).await {
        Ok((claims, _recorded)) => claims,
        Err(error) => {
            tracing::warn!(%error, count = due.len(), "job claims failed, trying again later");
            for d in due {
                let publisher = runner.ctx.publisher.clone();
                tokio::spawn(async move { d.held.later(&publisher).await });
            }
            return;
        }
    };
    let mut skipped = Vec::new();
    for (d, claim) in due.into_iter().zip(claims) {
        match claim {
            Claim::Run(job) => {
                let span = crate::observe::job_span(&d.held.delivery);
                tokio::spawn(run_job(runner.clone(), d.held, job).instrument(span));
            }
            Claim::Held(until) => {
                let runner = runner.clone();
                tokio::spawn(async move {
                    let mut later = d.request.clone();
                    later.not_before = Some(until + chrono::Duration::milliseconds(50));
                    tracing::info!(job_id = %d.request.job_id, %until, "job held by another worker, looking again after its lease");
                    let tp = d.traceparent.as_deref();
                    match jobs::publish_traced(&runner.ctx.publisher, &later, Utc::now(), tp).await
                    {
                        Ok(()) => d.held.ack().await,
                        Err(error) => {
                            tracing::warn!(%error, "job request failed, trying again later");
                            d.held.later(&runner.ctx.publisher).await
                        }
                    }
                });
            }
            Claim::Park(reason) => {
                let ctx = runner.ctx.clone();
                tokio::spawn(async move {
                    let (job_id, dispatch_id) = (d.request.job_id, d.request.dispatch_id);
                    match park_failed(&ctx, job_id, dispatch_id, &d.held, &reason).await {
                        Ok(parked) => {
                            if parked {
                                tracing::warn!(%job_id, %reason, "failed job's copy parked late");
                            }
                            d.held.done().await
                        }
                        Err(error) => {
                            tracing::warn!(%error, "job request failed, trying again later");
                            d.held.later(&ctx.publisher).await
                        }
                    }
                });
            }
            Claim::Skip(reason) => {
                tracing::debug!(job_id = %d.request.job_id, %reason, "job request skipped");
                skipped.push(d.held);
            }
        }
    }
    if let Some(acks) = skipped.first().map(|h| h.acks().clone()) {
        acks.ack(skipped).await;
    }
}

/// Runs a claimed job and settles its delivery: a success through the committer (acked once
/// committed), anything else here.
async fn run_job(runner: Arc<Runner>, held: Held, job: ClaimedJob) {
    let ctx = &runner.ctx;
    let started = std::time::Instant::now();
    let (ran, stopped) = run(&runner, &job).await;
    metrics::HANDLER_SECONDS.observe_duration(&[JOBS_QUEUE], started.elapsed());
    match stopped {
        Some(Stop::Cancelled) => {
            match store::cancel_running(&ctx.db, &job).await {
                Ok(Some(_recorded)) => {
                    tracing::info!(job_id = %job.id, attempt = job.attempts, "running job cancelled");
                }
                Ok(None) => {
                    tracing::warn!(job_id = %job.id, "cancelled attempt was no longer ours")
                }
                Err(error) => {
                    tracing::warn!(%error, "job request failed, trying again later");
                    return held.later(&ctx.publisher).await;
                }
            }
            return held.ack().await;
        }
        Some(Stop::Lost) => {
            tracing::warn!(job_id = %job.id, "attempt lost its lease; its outcome is dropped");
            return held.ack().await;
        }
        None => {}
    }
    let error = match ran {
        Ok(result) => return runner.committer.succeed(job, result, held),
        Err(error) if error.is_retryable() && retries_left(job.attempts, job.max_attempts) => {
            let policy = RetryPolicy::from_settings(&ctx.settings.jobs);
            let delay = policy.delay_after(job.attempts.max(1) as u32, fastrand::f64());
            let next = JobRequest {
                job_id: job.id,
                dispatch_id: Uuid::now_v7(),
                not_before: Some(Utc::now() + delay),
            };
            let retry = store::Retry { job, next, delay, error: error.to_string() };
            return runner.committer.retry(retry, held);
        }
        Err(error) => error.to_string(),
    };
    match fail(&runner, &job, &error, &held).await {
        Ok(()) => held.done().await,
        Err(error) => {
            tracing::warn!(%error, "job request failed, trying again later");
            held.later(&ctx.publisher).await
        }
    }
}

/// Runs the handler (a panic fails the attempt, not the worker) under the configured timeout,
/// its lease renewed by the tracker meanwhile. If the attempt is told to stop (a cancel
/// request: the handler gets `jobs.cancel_grace_secs` to return; a lost lease: at once), the
/// handler is abandoned and its result discarded; the second value says why. The handler runs
/// in the job's task: dropping it is what aborting a task of its own did, without a task and a
/// wake-up more per job.
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
    let mut handler =
        AssertUnwindSafe(runner.registry.run(&job.job_type, ctx, job.payload.clone()))
            .catch_unwind();
    let result = tokio::select! {
        ran = tokio::time::timeout(timeout, &mut handler) => match ran {
            Ok(Ok(result)) => result,
            Ok(Err(panic)) => {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                Err(JobError::permanent(anyhow::anyhow!("the handler panicked: {message}")))
            }
            Err(_) => Err(JobError::retryable(anyhow::anyhow!("timed out after {timeout:?}"))),
        },
        () = signals.cancel.cancelled() => {
            let grace = match signals.stopped() {
                Some(Stop::Cancelled) => Duration::from_secs(jobs.cancel_grace_secs),
                _ => Duration::ZERO,
            };
            if tokio::time::timeout(grace, &mut handler).await.is_err() {
                tracing::warn!(job_id = %job.id, ?grace, "handler did not stop in time: abandoned");
            }
            Err(JobError::permanent(anyhow::anyhow!("stopped")))
        }
    };
    drop(handler);
    runner.tracker.leave(job);
    (result, signals.stopped())
}

/// Records an attempt that failed for good: committed first, its copy parked after (see
/// [`park_failed`]); the delivery is acked only once both are done. (A failed attempt that is
/// retried goes to the committer, `Committer::retry`.)
async fn fail(runner: &Runner, job: &ClaimedJob, error: &str, held: &Held) -> anyhow::Result<()> {
    let ctx = &runner.ctx;
    let Some((txn, _recorded)) = store::fail(&ctx.db, job, error).await? else {
        tracing::warn!(job_id = %job.id, "attempt outlived its lease; its outcome is dropped");
        return Ok(());
    };
    txn.commit().await?;
    // Nothing owed (false): another copy of the request parked it, or the job was replayed
    // meanwhile; either way nothing is left to park.
    park_failed(ctx, job.id, job.dispatch_id, held, &format!("job failed: {error}")).await?;
    tracing::warn!(job_id = %job.id, attempt = job.attempts, %error, "job failed for good, parked");
    Ok(())
}

/// The log line of a failed job's copy whose publish ended without the broker's answer.
pub const PARKED_COPY_UNCONFIRMED: &str =
    "failed job's parked copy unconfirmed: if it landed, a second copy follows";

/// Parks the copy of a job whose failure is committed (with `park_pending`), then records that
/// it is parked. The copy goes after the commit, never before: a copy confirmed before a commit
/// that then failed (PostgreSQL stopped, the worker was killed) left the job running, and it
/// ran, failed and was parked again after its lease. Now what goes wrong in between leaves
/// `park_pending` set and the delivery unacked, and the copy that comes back parks it
/// ([`store::Claim::Park`]). The row is locked from the check to the flag's update, so two
/// copies never park the same job; a second copy is left only if the worker dies between the
/// broker's confirmation and that commit. False: nothing was owed (another copy parked it).
async fn park_failed(
    ctx: &Context,
    job_id: Uuid,
    dispatch_id: Uuid,
    held: &Held,
    reason: &str,
) -> anyhow::Result<bool> {
    let Some(txn) = store::owed_park(&ctx.db, job_id, dispatch_id).await? else {
        tracing::debug!(%job_id, "failed job's copy parked already");
        return Ok(false);
    };
    if let Err(error) = crate::runtime::park(ctx, JOBS_QUEUE, &held.delivery, reason).await {
        // Its channel died, or the broker never answered: the copy may have landed all the
        // same. The request comes back and parks the job again, so the parking lot may then
        // hold it twice (never not at all). Said with the job id, for the operator and for the
        // fault suite, which tells such a copy from one that should not be there.
        tracing::warn!(%job_id, %error, "{PARKED_COPY_UNCONFIRMED}");
        return Err(error.into());
    }
    // Parked: from here on, the delivery is acked whatever happens. The flag is what keeps a
    // copy of the request coming back from parking the job again, so its update is tried for
    // as long as a parking attempt would be (PostgreSQL restarting).
    let mut txn = Some(txn);
    let deadline = tokio::time::Instant::now() + crate::runtime::PARK_PATIENCE;
    let mut delays = showrunner_shared::retry::park_delays();
    loop {
        match store::parked(&ctx.db, txn.take(), job_id, dispatch_id).await {
            Ok(()) => return Ok(true),
            Err(error) => {
                let delay = delays.next().unwrap_or(Duration::from_secs(5));
                if tokio::time::Instant::now() + delay > deadline {
                    tracing::warn!(%job_id, %error, "parked, but could not record it");
                    return Ok(true);
                }
                tracing::warn!(%job_id, %error, ?delay, "parked; recording it failed, trying again");
                tokio::time::sleep(delay).await;
            }
        }
    }
}
