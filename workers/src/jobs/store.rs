//! The job row's transitions. Each one is a guarded `UPDATE` (the job id, the dispatch id of
//! the message being handled, the status it must have) plus the event it causes, written to
//! the outbox in the same transaction: the row and the events never disagree.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbErr, FromQueryResult,
    TransactionTrait,
};
use showrunner_shared::contracts::{
    Actor, EventData, JobCompleted, JobFailed, JobRequest, JobRetry, JobStarted, OutgoingEvent,
};
use showrunner_shared::db::sql;
use showrunner_shared::outbox::{self, StoredEvent};
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
}

impl ClaimedJob {
    fn event<D: EventData<Subject = Uuid>>(&self, data: &D) -> StoredEvent {
        let actor = Actor {
            id: self.created_by,
            name: self.created_by_name.clone(),
        };
        let event = OutgoingEvent::new(&self.id, data, Some(actor), Some(self.id), Utc::now());
        StoredEvent::from_outgoing(&event, None)
    }
}

/// What a job request found.
#[derive(Debug)]
pub enum Claim {
    /// Run it; `events` (job_started) are committed and wait to be published.
    Run(ClaimedJob, Vec<StoredEvent>),
    /// Another worker holds the attempt until then (this copy is a redelivery): look again later.
    Held(DateTime<Utc>),
    /// Nothing to do: the job finished, was cancelled, or this copy is stale.
    Skip(String),
}

#[derive(FromQueryResult)]
struct RowState {
    status: String,
    dispatch_id: Option<Uuid>,
    locked_until: Option<DateTime<Utc>>,
    lease_expired: bool,
}

/// Claims the attempt `request` stands for. A running job whose lease expired (its worker
/// died) may be claimed again by the same copy, redelivered.
pub async fn claim(
    db: &DatabaseConnection,
    request: &JobRequest,
    lease: Duration,
) -> Result<Claim, DbErr> {
    let txn = db.begin().await?;
    // Lock by id alone first. Whoever publishes a new dispatch (a retry, a replay) holds the
    // row locked until its publish is confirmed and committed; a guarded UPDATE would judge
    // the old row version and skip the new request, this waits for the commit and sees it.
    let state = RowState::find_by_statement(sql(
        "SELECT status, dispatch_id, locked_until, \
         COALESCE(locked_until < now(), true) AS lease_expired \
         FROM jobs WHERE id = $1 FOR UPDATE",
        [request.job_id.into()],
    ))
    .one(&txn)
    .await?;
    let state = match state {
        None => return Ok(Claim::Skip("no such job".into())),
        Some(s) if s.dispatch_id != Some(request.dispatch_id) => {
            return Ok(Claim::Skip(format!("stale copy (job is {})", s.status)));
        }
        Some(s) => s,
    };
    let runnable = matches!(state.status.as_str(), "queued" | "retrying")
        || (state.status == "running" && state.lease_expired);
    if !runnable {
        return Ok(match (state.status.as_str(), state.locked_until) {
            ("running", Some(until)) => Claim::Held(until),
            (status, _) => Claim::Skip(format!("job is {status}")),
        });
    }
    let job = ClaimedJob::find_by_statement(sql(
        "UPDATE jobs SET status = 'running', attempts = attempts + 1, \
         locked_until = now() + make_interval(secs => $2), next_attempt_at = NULL, updated_at = now() \
         WHERE id = $1 \
         RETURNING id, type AS job_type, payload, attempts, max_attempts, dispatch_id, created_by, created_by_name",
        [request.job_id.into(), lease.as_secs_f64().into()],
    ))
    .one(&txn)
    .await?
    .ok_or_else(|| DbErr::RecordNotFound(format!("job {} vanished", request.job_id)))?;
    let events = vec![job.event(&JobStarted {
        job_id: job.id,
        attempt: job.attempts,
        timestamp: Utc::now(),
    })];
    outbox::insert(&txn, &events).await?;
    txn.commit().await?;
    Ok(Claim::Run(job, events))
}

/// Where an attempt leads.
#[derive(Debug)]
pub enum Outcome {
    Succeeded(serde_json::Value),
    Retrying {
        next: JobRequest,
        delay: Duration,
        error: String,
    },
    Failed(String),
}

/// Records the outcome of `job`'s attempt in an open transaction, with its event in the
/// outbox. The caller publishes what must be durable first (the delayed retry, the parked
/// copy), then commits. `None`: the attempt is no longer this worker's (its lease expired and
/// another worker took the job), so nothing is recorded.
pub async fn finish(
    db: &DatabaseConnection,
    job: &ClaimedJob,
    outcome: &Outcome,
) -> Result<Option<(DatabaseTransaction, Vec<StoredEvent>)>, DbErr> {
    let txn = db.begin().await?;
    let now = Utc::now();
    let (statement, event) = match outcome {
        Outcome::Succeeded(result) => (
            sql(
                "UPDATE jobs SET status = 'succeeded', result = $3, last_error = NULL, \
                 locked_until = NULL, completed_at = now(), updated_at = now() \
                 WHERE id = $1 AND dispatch_id = $2 AND status = 'running'",
                [job.id.into(), job.dispatch_id.into(), result.clone().into()],
            ),
            job.event(&JobCompleted {
                job_id: job.id,
                results: result.clone(),
                timestamp: now,
            }),
        ),
        Outcome::Retrying { next, delay, error } => (
            sql(
                "UPDATE jobs SET status = 'retrying', dispatch_id = $3, last_error = $4, \
                 next_attempt_at = $5, locked_until = NULL, updated_at = now() \
                 WHERE id = $1 AND dispatch_id = $2 AND status = 'running'",
                [
                    job.id.into(),
                    job.dispatch_id.into(),
                    next.dispatch_id.into(),
                    error.clone().into(),
                    next.not_before.into(),
                ],
            ),
            job.event(&JobRetry {
                job_id: job.id,
                retry_count: job.attempts,
                delay: delay.as_millis() as u64,
                error: error.clone(),
                timestamp: now,
            }),
        ),
        Outcome::Failed(error) => (
            sql(
                "UPDATE jobs SET status = 'failed', last_error = $3, locked_until = NULL, \
                 completed_at = now(), updated_at = now() \
                 WHERE id = $1 AND dispatch_id = $2 AND status = 'running'",
                [job.id.into(), job.dispatch_id.into(), error.clone().into()],
            ),
            job.event(&JobFailed {
                job_id: job.id,
                error: error.clone(),
                retries_exhausted: true,
                timestamp: now,
            }),
        ),
    };
    if txn.execute_raw(statement).await?.rows_affected() == 0 {
        return Ok(None);
    }
    let events = vec![event];
    outbox::insert(&txn, &events).await?;
    Ok(Some((txn, events)))
}
