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
}

/// Claims the attempt `request` stands for. A running job whose lease expired (its worker
/// died) may be claimed again by the same copy, redelivered.
pub async fn claim(
    db: &DatabaseConnection,
    request: &JobRequest,
    lease: Duration,
) -> Result<Claim, DbErr> {
    let txn = db.begin().await?;
    let claimed = ClaimedJob::find_by_statement(sql(
        "UPDATE jobs SET status = 'running', attempts = attempts + 1, \
         locked_until = now() + make_interval(secs => $3), next_attempt_at = NULL, updated_at = now() \
         WHERE id = $1 AND dispatch_id = $2 \
         AND (status IN ('queued', 'retrying') OR (status = 'running' AND locked_until < now())) \
         RETURNING id, type AS job_type, payload, attempts, max_attempts, dispatch_id, created_by, created_by_name",
        [
            request.job_id.into(),
            request.dispatch_id.into(),
            lease.as_secs_f64().into(),
        ],
    ))
    .one(&txn)
    .await?;
    if let Some(job) = claimed {
        let events = vec![job.event(&JobStarted {
            job_id: job.id,
            attempt: job.attempts,
            timestamp: Utc::now(),
        })];
        outbox::insert(&txn, &events).await?;
        txn.commit().await?;
        return Ok(Claim::Run(job, events));
    }
    let state = RowState::find_by_statement(sql(
        "SELECT status, dispatch_id, locked_until FROM jobs WHERE id = $1",
        [request.job_id.into()],
    ))
    .one(&txn)
    .await?;
    txn.commit().await?;
    Ok(match state {
        None => Claim::Skip("no such job".into()),
        Some(s) if s.dispatch_id != Some(request.dispatch_id) => {
            Claim::Skip(format!("stale copy (job is {})", s.status))
        }
        Some(RowState {
            status,
            locked_until: Some(until),
            ..
        }) if status == "running" => Claim::Held(until),
        Some(s) => Claim::Skip(format!("job is {}", s.status)),
    })
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
