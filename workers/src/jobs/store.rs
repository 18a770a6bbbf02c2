//! The job row's transitions. Each one is a guarded `UPDATE` (the job id, the dispatch id of
//! the message being handled, the status it must have) plus the event it causes, written to
//! the event log in the same transaction: the row and the events never disagree. They stay raw
//! statements, not the `jobs` entity (`showrunner_shared::entity::job`, which the api's reads
//! use): each guard, update and `RETURNING` of what the event needs is one round trip, and the
//! claims and sweeps work on many rows (`FOR UPDATE SKIP LOCKED`, `UNNEST`) in one statement.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbErr, FromQueryResult,
    TransactionTrait,
};
use showrunner_shared::broker::topology::JOB_DELAY_TIERS_MS;
use showrunner_shared::contracts::{
    Actor, EventData, JobCancelled, JobCompleted, JobFailed, JobRequest, JobRetry, JobStarted,
    OutgoingEvent,
};
use showrunner_shared::db::sql;
use showrunner_shared::event_log::{self, StoredEvent};
use showrunner_shared::jobs::JobStatus;
use uuid::Uuid;

/// A job whose attempt this worker now holds.
#[derive(Debug, Clone, FromQueryResult)]
pub struct ClaimedJob {
    pub id: Uuid,
    pub job_type: String,
    pub payload: serde_json::Value,
    /// The attempt being run (1 for the first).
    pub attempts: i32,
    pub max_attempts: i32,
    pub dispatch_id: Uuid,
    pub created_by: Uuid,
    pub created_by_name: String,
    /// The trace of the request being run (from its AMQP header, not the row): the job's
    /// events continue it.
    pub traceparent: Option<String>,
}

impl ClaimedJob {
    pub(crate) fn event<D: EventData<Subject = Uuid>>(&self, data: &D) -> StoredEvent {
        let actor = Actor { id: self.created_by, name: self.created_by_name.clone() };
        let event = OutgoingEvent::new(&self.id, data, Some(actor), Some(self.id), Utc::now());
        let traceparent = showrunner_shared::trace::child_or_new(self.traceparent.as_deref());
        StoredEvent::from_outgoing(&event, Some(traceparent))
    }
}

/// Locks, in `txn` and in id order, the rows of `ids` no other transaction holds, and returns
/// their ids: the lease heartbeat and the progress writes take their rows this way, so they
/// never wait for a lock. A success or retry batch updates its rows without locking them first
/// (sorted by id, so its join takes them in that order) and may wait for them; a heartbeat that
/// waited too, holding rows the batch needed next, deadlocked with it under load once
/// (PostgreSQL failed the batch and its jobs ran again after their leases; the job benchmark's
/// exact counts caught it, `it/jobs_locks.rs` replays it). A row skipped here is busy, not
/// lost: the next beat tries it again.
pub(crate) async fn lock_free(
    txn: &DatabaseTransaction,
    ids: Vec<Uuid>,
) -> Result<Vec<Uuid>, DbErr> {
    #[derive(FromQueryResult)]
    struct Locked {
        id: Uuid,
    }
    let locked = Locked::find_by_statement(sql(
        "SELECT id FROM jobs WHERE id = ANY($1) ORDER BY id FOR UPDATE SKIP LOCKED",
        [ids.into()],
    ))
    .all(txn)
    .await?;
    Ok(locked.into_iter().map(|l| l.id).collect())
}

/// The claim's first step ([`claim_many`]): `$1` the job ids (sorted), `$2` their requests'
/// dispatch ids, `$3` the lease in seconds. Public for the test of its plan (`it/jobs_plans.rs`).
///
/// Each id is looked up by itself in the primary key (the `LATERAL` subquery, which `LIMIT 1`
/// keeps from being merged into a join), and the row found is updated by its place (`ctid`).
/// Written as a join of `jobs` with the batch and a `status` condition, the planner chose by
/// its estimate of how many rows have that status; with none (a table never analyzed:
/// autovacuum off, a fresh deployment) or a stale one (a burst of jobs queued since the last
/// analyze) it took every queued row from `jobs_status` and `jobs_unsettled` and hashed them,
/// so each claim read the whole queue: 20,000 rows to claim 150 in the job benchmark. The
/// price: a row that another transaction changed after the statement's snapshot is not
/// updated at all (the update waits for that transaction, then finds a newer version at
/// another place), and [`claim_rest`] judges it again.
pub const CLAIM_SQL: &str = "WITH target AS MATERIALIZED ( \
    SELECT r.tid, r.status, t.dispatch \
    FROM UNNEST($1::uuid[], $2::uuid[]) AS t(id, dispatch) \
    CROSS JOIN LATERAL (SELECT ctid AS tid, status, dispatch_id FROM jobs \
      WHERE id = t.id LIMIT 1) AS r \
    WHERE r.dispatch_id = t.dispatch AND r.status IN ('queued', 'scheduled', 'retrying')) \
  UPDATE jobs AS j SET status = 'running', attempts = j.attempts + 1, \
  locked_until = now() + make_interval(secs => $3), next_attempt_at = NULL, updated_at = now() \
  FROM target \
  WHERE j.ctid = target.tid AND j.status = target.status AND j.dispatch_id = target.dispatch \
  RETURNING j.id, j.type AS job_type, j.payload, j.attempts, j.max_attempts, j.dispatch_id, \
  j.created_by, j.created_by_name, NULL::text AS traceparent";

/// What a job request found.
#[derive(Debug)]
pub enum Claim {
    /// Run it (its `job_started` is committed in the event log).
    Run(ClaimedJob),
    /// Another worker holds the attempt until then (this copy is a redelivery): look again later.
    Held(DateTime<Utc>),
    /// The job failed for good with this copy's dispatch, and its copy has not reached the
    /// parking lot yet (the worker that failed it stopped before): park it, with this reason.
    Park(String),
    /// Nothing to do: the job finished, was cancelled, or this copy is stale.
    Skip(String),
}

#[derive(FromQueryResult)]
struct RowState {
    id: Uuid,
    status: JobStatus,
    dispatch_id: Option<Uuid>,
    locked_until: Option<DateTime<Utc>>,
    lease_expired: bool,
    cancel_requested: bool,
    park_pending: bool,
    last_error: Option<String>,
}

/// Claims the attempts `requests` stand for, in one transaction (the job worker groups the
/// requests of its concurrent jobs). A running job whose lease expired (its worker died) may
/// be claimed again by the same copy, redelivered. One answer per request, in order. Each
/// request comes with its `traceparent`, which the claimed job keeps.
///
/// Two steps. First one guarded `UPDATE` claims every request whose job waits for exactly
/// that dispatch: the usual case, one statement and no row lock of its own (a `FOR UPDATE`
/// before the update cost a WAL record and a visit of each row more). What it did not claim
/// (a redelivered copy, a stale one, a job whose new dispatch is not committed yet, a row
/// another transaction changed meanwhile) is looked at row by row under `FOR UPDATE`
/// ([`claim_rest`]).
pub async fn claim_many(
    db: &DatabaseConnection,
    traced: &[(JobRequest, Option<String>)],
    lease: Duration,
) -> Result<(Vec<Claim>, Vec<StoredEvent>), DbErr> {
    let txn = db.begin().await?;
    // In id order: the update takes rows, and so their locks, in the arrays' order.
    let mut wanted: Vec<(Uuid, Uuid)> =
        traced.iter().map(|(r, _)| (r.job_id, r.dispatch_id)).collect();
    wanted.sort_unstable();
    wanted.dedup();
    // The guard is judged on the committed row: a job whose new dispatch (a retry, a replay)
    // is not committed yet does not match here and waits for that commit in `claim_rest`; so
    // does a row that another transaction changed meanwhile (see [`CLAIM_SQL`]).
    let mut claimed = ClaimedJob::find_by_statement(sql(
        CLAIM_SQL,
        [
            wanted.iter().map(|(id, _)| *id).collect::<Vec<_>>().into(),
            wanted.iter().map(|(_, dispatch)| *dispatch).collect::<Vec<_>>().into(),
            lease.as_secs_f64().into(),
        ],
    ))
    .all(&txn)
    .await?;
    let (answers, abandoned) = if claimed.len() == traced.len() {
        (std::iter::repeat_with(|| None).take(traced.len()).collect(), Vec::new())
    } else {
        claim_rest(&txn, traced, &mut claimed, lease).await?
    };
    for job in &mut claimed {
        job.traceparent =
            traced.iter().find(|(r, _)| r.job_id == job.id).and_then(|(_, t)| t.clone());
    }
    let now = Utc::now();
    let mut events: Vec<StoredEvent> = claimed
        .iter()
        .map(|job| job.event(&JobStarted { job_id: job.id, attempt: job.attempts, timestamp: now }))
        .collect();
    if !abandoned.is_empty() {
        events.extend(cancel_abandoned(&txn, &abandoned).await?);
    }
    event_log::record_new(&txn, &events).await?;
    txn.commit().await?;
    // A request answered by the first step (or a second copy of it) runs once: the first
    // request of each claimed job runs it, any other copy is skipped.
    let mut started: Vec<Uuid> = Vec::with_capacity(claimed.len());
    let claims = traced
        .iter()
        .zip(answers)
        .map(|((request, _), answer)| {
            answer.unwrap_or_else(|| {
                let job = claimed
                    .iter()
                    .find(|j| j.id == request.job_id && j.dispatch_id == request.dispatch_id);
                match job {
                    Some(_) if started.contains(&request.job_id) => {
                        Claim::Skip("duplicate copy".into())
                    }
                    Some(job) => {
                        started.push(job.id);
                        Claim::Run(job.clone())
                    }
                    None => Claim::Skip("vanished".into()),
                }
            })
        })
        .collect();
    Ok((claims, events))
}

/// The second step of [`claim_many`]: the requests the guarded update left, judged on their
/// rows locked by id (in id order, so two workers never deadlock). Whoever publishes a new
/// dispatch (a retry, a replay) holds the row locked until its publish is confirmed and
/// committed; this waits for that commit and sees it. Claims what is runnable (adding to
/// `claimed`); returns an answer for each request (`None`: see `claimed`) and the running jobs
/// whose worker died after someone asked them to stop (they end here).
async fn claim_rest(
    txn: &DatabaseTransaction,
    traced: &[(JobRequest, Option<String>)],
    claimed: &mut Vec<ClaimedJob>,
    lease: Duration,
) -> Result<(Vec<Option<Claim>>, Vec<Uuid>), DbErr> {
    let first: Vec<Uuid> = claimed.iter().map(|j| j.id).collect();
    let rest: Vec<Uuid> =
        traced.iter().map(|(r, _)| r.job_id).filter(|id| !first.contains(id)).collect();
    let states = if rest.is_empty() {
        Vec::new()
    } else {
        RowState::find_by_statement(sql(
            "SELECT id, status, dispatch_id, locked_until, \
             COALESCE(locked_until < now(), true) AS lease_expired, \
             cancel_requested_at IS NOT NULL AS cancel_requested, park_pending, last_error \
             FROM jobs WHERE id = ANY($1) ORDER BY id FOR UPDATE",
            [rest.into()],
        ))
        .all(txn)
        .await?
    };
    let mut answers: Vec<Option<Claim>> = Vec::with_capacity(traced.len());
    let mut runnable: Vec<Uuid> = Vec::new();
    let mut abandoned: Vec<Uuid> = Vec::new();
    // Failed jobs whose copy this batch parks (one copy each).
    let mut parking: Vec<Uuid> = Vec::new();
    for (request, _) in traced {
        if first.contains(&request.job_id) {
            // Claimed by the guarded update (this copy, or another one, which is skipped).
            let same = |j: &ClaimedJob| j.dispatch_id == request.dispatch_id;
            answers.push(match claimed.iter().find(|j| j.id == request.job_id) {
                Some(j) if same(j) => None,
                _ => Some(Claim::Skip("stale copy (job is running)".into())),
            });
            continue;
        }
        let state = states.iter().find(|s| s.id == request.job_id);
        let answer = match state {
            None => Some(Claim::Skip("no such job".into())),
            Some(s) if s.dispatch_id != Some(request.dispatch_id) => {
                Some(Claim::Skip(format!("stale copy (job is {})", s.status)))
            }
            // A duplicate of a request already claimed in this batch.
            Some(_)
                if runnable.contains(&request.job_id)
                    || abandoned.contains(&request.job_id)
                    || parking.contains(&request.job_id) =>
            {
                Some(Claim::Skip("duplicate copy".into()))
            }
            Some(s) if s.status == JobStatus::Failed && s.park_pending => {
                parking.push(request.job_id);
                let error = s.last_error.as_deref().unwrap_or_default();
                Some(Claim::Park(format!("job failed: {error}")))
            }
            Some(s) if s.status == JobStatus::Running && s.lease_expired && s.cancel_requested => {
                abandoned.push(request.job_id);
                Some(Claim::Skip("cancelled while its worker was gone".into()))
            }
            Some(s)
                if s.status.is_waiting() || (s.status == JobStatus::Running && s.lease_expired) =>
            {
                runnable.push(request.job_id);
                None
            }
            Some(s) => Some(match (s.status, s.locked_until) {
                (JobStatus::Running, Some(until)) => Claim::Held(until),
                (status, _) => Claim::Skip(format!("job is {status}")),
            }),
        };
        answers.push(answer);
    }
    if !runnable.is_empty() {
        claimed.extend(
            ClaimedJob::find_by_statement(sql(
                "UPDATE jobs SET status = 'running', attempts = attempts + 1, \
                 locked_until = now() + make_interval(secs => $2), next_attempt_at = NULL, \
                 updated_at = now() WHERE id = ANY($1) \
                 RETURNING id, type AS job_type, payload, attempts, max_attempts, dispatch_id, \
                 created_by, created_by_name, NULL::text AS traceparent",
                [runnable.into(), lease.as_secs_f64().into()],
            ))
            .all(txn)
            .await?,
        );
    }
    Ok((answers, abandoned))
}

/// Ends `cancelled` the running jobs of `ids` (asked to stop, their worker gone), with their
/// `job_cancelled` events, in the caller's transaction.
async fn cancel_abandoned(
    txn: &DatabaseTransaction,
    ids: &[Uuid],
) -> Result<Vec<StoredEvent>, DbErr> {
    #[derive(FromQueryResult)]
    struct Ended {
        id: Uuid,
        created_by: Uuid,
        created_by_name: String,
        cancel_requested_by: Option<Uuid>,
        cancel_requested_by_name: Option<String>,
    }
    let ended = Ended::find_by_statement(sql(
        "UPDATE jobs SET status = 'cancelled', locked_until = NULL, next_attempt_at = NULL, \
         last_error = 'cancelled while running', completed_at = now(), updated_at = now() \
         WHERE id = ANY($1) AND status = 'running' \
         RETURNING id, created_by, created_by_name, cancel_requested_by, cancel_requested_by_name",
        [ids.to_vec().into()],
    ))
    .all(txn)
    .await?;
    let now = Utc::now();
    Ok(ended
        .into_iter()
        .map(|e| {
            let creator = Actor { id: e.created_by, name: e.created_by_name };
            let cancelled_by = match e.cancel_requested_by {
                Some(id) => Actor { id, name: e.cancel_requested_by_name.unwrap_or_default() },
                None => creator.clone(),
            };
            let data = JobCancelled {
                job_id: e.id,
                cancelled_by,
                previous_status: JobStatus::Running,
                timestamp: now,
            };
            let event = OutgoingEvent::new(&e.id, &data, Some(creator), Some(e.id), now);
            StoredEvent::from_outgoing(&event, Some(showrunner_shared::trace::child_or_new(None)))
        })
        .collect())
}

/// Records the success of several attempts in one transaction, with their `job_completed`
/// events. One flag per job: false when the attempt was no longer this worker's.
pub async fn succeed_many(
    db: &DatabaseConnection,
    done: &[(ClaimedJob, serde_json::Value)],
) -> Result<(Vec<bool>, Vec<StoredEvent>), DbErr> {
    #[derive(FromQueryResult)]
    struct Updated {
        id: Uuid,
    }
    // In id order: the join takes the rows, and so their locks, in the arrays' order (see
    // [`lock_free`]).
    let mut order: Vec<&(ClaimedJob, serde_json::Value)> = done.iter().collect();
    order.sort_unstable_by_key(|(j, _)| j.id);
    let txn = db.begin().await?;
    let updated = Updated::find_by_statement(sql(
        "UPDATE jobs AS j SET status = 'succeeded', result = t.result::jsonb, last_error = NULL, \
         locked_until = NULL, completed_at = now(), updated_at = now() \
         FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::int[]) \
           AS t(id, dispatch, result, attempt) \
         WHERE j.id = t.id AND j.dispatch_id = t.dispatch AND j.attempts = t.attempt \
         AND j.status = 'running' RETURNING j.id",
        [
            order.iter().map(|(j, _)| j.id).collect::<Vec<_>>().into(),
            order.iter().map(|(j, _)| j.dispatch_id).collect::<Vec<_>>().into(),
            order.iter().map(|(_, r)| r.to_string()).collect::<Vec<_>>().into(),
            order.iter().map(|(j, _)| j.attempts).collect::<Vec<_>>().into(),
        ],
    ))
    .all(&txn)
    .await?;
    let now = Utc::now();
    let mut flags = Vec::with_capacity(done.len());
    let mut events = Vec::new();
    for (job, result) in done {
        let ok = updated.iter().any(|u| u.id == job.id);
        if ok {
            events.push(job.event(&JobCompleted {
                job_id: job.id,
                results: result.clone(),
                timestamp: now,
            }));
        }
        flags.push(ok);
    }
    event_log::record_new(&txn, &events).await?;
    txn.commit().await?;
    Ok((flags, events))
}

/// A failed attempt that runs again: its next request and why.
#[derive(Debug)]
pub struct Retry {
    pub job: ClaimedJob,
    /// The next attempt's request (a new dispatch id, `notBefore` after the delay).
    pub next: JobRequest,
    pub delay: Duration,
    pub error: String,
}

/// Records several failed attempts as `retrying` (each with its next request's dispatch id and
/// time) and their `job_retry` events, in a transaction left open: the caller publishes the
/// retries and then commits, so a retry that comes back at once waits for the commit (the rows
/// stay locked) and finds its new dispatch id. One flag per attempt: false when it was no
/// longer this worker's (nothing recorded, nothing to publish).
pub async fn retry_many(
    db: &DatabaseConnection,
    retries: &[Retry],
) -> Result<(DatabaseTransaction, Vec<bool>, Vec<StoredEvent>), DbErr> {
    #[derive(FromQueryResult)]
    struct Updated {
        id: Uuid,
    }
    // In id order, like the success batch.
    let mut order: Vec<&Retry> = retries.iter().collect();
    order.sort_unstable_by_key(|r| r.job.id);
    let txn = db.begin().await?;
    let updated = Updated::find_by_statement(sql(
        "UPDATE jobs AS j SET status = 'retrying', dispatch_id = t.next, last_error = t.error, \
         next_attempt_at = t.due, locked_until = NULL, updated_at = now() \
         FROM UNNEST($1::uuid[], $2::uuid[], $3::int[], $4::uuid[], $5::text[], \
           $6::timestamptz[]) AS t(id, dispatch, attempt, next, error, due) \
         WHERE j.id = t.id AND j.dispatch_id = t.dispatch AND j.attempts = t.attempt \
         AND j.status = 'running' RETURNING j.id",
        [
            order.iter().map(|r| r.job.id).collect::<Vec<_>>().into(),
            order.iter().map(|r| r.job.dispatch_id).collect::<Vec<_>>().into(),
            order.iter().map(|r| r.job.attempts).collect::<Vec<_>>().into(),
            order.iter().map(|r| r.next.dispatch_id).collect::<Vec<_>>().into(),
            order.iter().map(|r| r.error.clone()).collect::<Vec<_>>().into(),
            order
                .iter()
                .map(|r| r.next.not_before.unwrap_or_else(Utc::now))
                .collect::<Vec<_>>()
                .into(),
        ],
    ))
    .all(&txn)
    .await?;
    let now = Utc::now();
    let mut flags = Vec::with_capacity(retries.len());
    let mut events = Vec::new();
    for Retry { job, delay, error, .. } in retries {
        let ok = updated.iter().any(|u| u.id == job.id);
        if ok {
            events.push(job.event(&JobRetry {
                job_id: job.id,
                retry_count: job.attempts,
                delay: delay.as_millis() as u64,
                error: error.clone(),
                timestamp: now,
            }));
        }
        flags.push(ok);
    }
    event_log::record_new(&txn, &events).await?;
    Ok((txn, flags, events))
}

/// Records that `job`'s attempt failed for good, in an open transaction, with its `job_failed`
/// in the event log: the caller commits it first, with `park_pending`, and parks its copy after
/// (see [`parked`]). `None`: the attempt is no longer this worker's (its lease expired and
/// another worker took the job), so nothing is recorded.
pub async fn fail(
    db: &DatabaseConnection,
    job: &ClaimedJob,
    error: &str,
) -> Result<Option<(DatabaseTransaction, Vec<StoredEvent>)>, DbErr> {
    let txn = db.begin().await?;
    let statement = sql(
        "UPDATE jobs SET status = 'failed', last_error = $3, locked_until = NULL, \
         park_pending = true, completed_at = now(), updated_at = now() \
         WHERE id = $1 AND dispatch_id = $2 AND attempts = $4 AND status = 'running'",
        [job.id.into(), job.dispatch_id.into(), error.into(), job.attempts.into()],
    );
    if txn.execute_raw(statement).await?.rows_affected() == 0 {
        return Ok(None);
    }
    let events = vec![job.event(&JobFailed {
        job_id: job.id,
        error: error.to_string(),
        retries_exhausted: true,
        timestamp: Utc::now(),
    })];
    event_log::record_new(&txn, &events).await?;
    Ok(Some((txn, events)))
}

/// Takes the park of the failed job `id` (failed with `dispatch_id`) while its copy is still
/// owed (`park_pending`): `Some` holds the row locked until [`parked`] commits, so two copies of
/// the request that come back at once (a redelivery and the sweeper's copy) never both park it:
/// the second waits here and finds nothing owed. `None`: nothing owed (parked already, or the
/// job was replayed since).
pub async fn owed_park(
    db: &DatabaseConnection,
    id: Uuid,
    dispatch_id: Uuid,
) -> Result<Option<DatabaseTransaction>, DbErr> {
    let txn = db.begin().await?;
    let owed = txn
        .query_one_raw(sql(
            "SELECT 1 FROM jobs WHERE id = $1 AND dispatch_id = $2 AND status = 'failed' \
             AND park_pending FOR UPDATE",
            [id.into(), dispatch_id.into()],
        ))
        .await?
        .is_some();
    Ok(owed.then_some(txn))
}

/// The copy the caller parked is confirmed: nothing is owed any more. `txn`: the one
/// [`owed_park`] returned; without it (its commit failed, the caller tries again), on its own.
pub async fn parked(
    db: &DatabaseConnection,
    txn: Option<DatabaseTransaction>,
    id: Uuid,
    dispatch_id: Uuid,
) -> Result<(), DbErr> {
    let statement = sql(
        "UPDATE jobs SET park_pending = false \
         WHERE id = $1 AND dispatch_id = $2 AND status = 'failed' AND park_pending",
        [id.into(), dispatch_id.into()],
    );
    match txn {
        Some(txn) => {
            txn.execute_raw(statement).await?;
            txn.commit().await
        }
        None => db.execute_raw(statement).await.map(drop),
    }
}

/// Ends a running attempt that was asked to stop: `cancelled`, with `job_cancelled` naming who
/// asked. `None`: the attempt is no longer this worker's (nothing recorded).
pub async fn cancel_running(
    db: &DatabaseConnection,
    job: &ClaimedJob,
) -> Result<Option<Vec<StoredEvent>>, DbErr> {
    #[derive(FromQueryResult)]
    struct Cancelled {
        cancel_requested_by: Option<Uuid>,
        cancel_requested_by_name: Option<String>,
    }
    let txn = db.begin().await?;
    let row = Cancelled::find_by_statement(sql(
        "UPDATE jobs SET status = 'cancelled', locked_until = NULL, next_attempt_at = NULL, \
         last_error = 'cancelled while running', completed_at = now(), updated_at = now() \
         WHERE id = $1 AND dispatch_id = $2 AND attempts = $3 AND status = 'running' \
         RETURNING cancel_requested_by, cancel_requested_by_name",
        [job.id.into(), job.dispatch_id.into(), job.attempts.into()],
    ))
    .one(&txn)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let creator = Actor { id: job.created_by, name: job.created_by_name.clone() };
    let cancelled_by = match (row.cancel_requested_by, row.cancel_requested_by_name) {
        (Some(id), name) => Actor { id, name: name.unwrap_or_default() },
        (None, _) => creator,
    };
    let events = vec![job.event(&JobCancelled {
        job_id: job.id,
        cancelled_by,
        previous_status: JobStatus::Running,
        timestamp: Utc::now(),
    })];
    event_log::record_new(&txn, &events).await?;
    txn.commit().await?;
    Ok(Some(events))
}

/// Jobs whose request seems lost: `queued` or `retrying` and due for longer than `after`, or
/// `running` with a lease expired that long ago. Their requests are published again (with the
/// row's dispatch id, so a copy that was not lost after all is skipped as a duplicate) and
/// their `updated_at` is touched, so each is republished at most once per `after`.
/// The api dying between recording a job and publishing it is what leaves such a row.
///
/// Also the scheduled jobs whose `runAt` is further ahead than the longest delay tier: the api
/// leaves them without a request (`dispatch_id` NULL); once their time is within that tier
/// they get a dispatch id here and their request (`notBefore` = `runAt`) goes to the tiers.
pub async fn stranded(
    db: &DatabaseConnection,
    after: Duration,
    limit: u64,
) -> Result<(DatabaseTransaction, Vec<JobRequest>), DbErr> {
    #[derive(FromQueryResult)]
    struct Row {
        id: Uuid,
        dispatch_id: Uuid,
    }
    let txn = db.begin().await?;
    let rows = Row::find_by_statement(sql(
        "SELECT id, dispatch_id FROM jobs \
         WHERE dispatch_id IS NOT NULL AND updated_at < now() - make_interval(secs => $1) AND ( \
           (status = 'queued') \
           OR (status = 'scheduled' AND run_at < now() - make_interval(secs => $1)) \
           OR (status = 'retrying' AND next_attempt_at < now() - make_interval(secs => $1)) \
           OR (status = 'running' AND locked_until < now() - make_interval(secs => $1))) \
         ORDER BY updated_at LIMIT $2 FOR UPDATE SKIP LOCKED",
        [after.as_secs_f64().into(), (limit as i64).into()],
    ))
    .all(&txn)
    .await?;
    if !rows.is_empty() {
        txn.execute_raw(sql(
            "UPDATE jobs SET updated_at = now() WHERE id = ANY($1)",
            [rows.iter().map(|r| r.id).collect::<Vec<_>>().into()],
        ))
        .await?;
    }
    let mut requests: Vec<JobRequest> = rows
        .into_iter()
        .map(|r| JobRequest { job_id: r.id, dispatch_id: r.dispatch_id, not_before: None })
        .collect();
    requests.extend(release_scheduled(&txn, limit).await?);
    Ok((txn, requests))
}

/// Scheduled jobs held by their row whose `runAt` is now within the longest delay tier: each
/// gets its dispatch id (in `txn`, which the caller commits once the requests are confirmed).
async fn release_scheduled(
    txn: &DatabaseTransaction,
    limit: u64,
) -> Result<Vec<JobRequest>, DbErr> {
    #[derive(FromQueryResult)]
    struct Due {
        id: Uuid,
        run_at: DateTime<Utc>,
    }
    let longest = JOB_DELAY_TIERS_MS[JOB_DELAY_TIERS_MS.len() - 1];
    let due = Due::find_by_statement(sql(
        "SELECT id, run_at FROM jobs WHERE status = 'scheduled' AND dispatch_id IS NULL \
         AND run_at < now() + make_interval(secs => $1) \
         ORDER BY run_at LIMIT $2 FOR UPDATE SKIP LOCKED",
        [(longest as f64 / 1000.0).into(), (limit as i64).into()],
    ))
    .all(txn)
    .await?;
    if due.is_empty() {
        return Ok(Vec::new());
    }
    let requests: Vec<JobRequest> = due
        .iter()
        .map(|d| JobRequest {
            job_id: d.id,
            dispatch_id: Uuid::now_v7(),
            not_before: Some(d.run_at),
        })
        .collect();
    txn.execute_raw(sql(
        "UPDATE jobs AS j SET dispatch_id = t.dispatch, updated_at = now() \
         FROM UNNEST($1::uuid[], $2::uuid[]) AS t(id, dispatch) WHERE j.id = t.id",
        [
            requests.iter().map(|r| r.job_id).collect::<Vec<_>>().into(),
            requests.iter().map(|r| r.dispatch_id).collect::<Vec<_>>().into(),
        ],
    ))
    .await?;
    Ok(requests)
}
