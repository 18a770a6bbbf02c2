//! `/jobs`: a job request is checked against the declared job types, recorded (`queued`, or
//! `scheduled` with `runAt`) with its `job_queued` event in the event log, and published with a
//! publisher confirm before the 202; the job worker runs it. Members see and cancel their own
//! jobs; admins see all and replay failed ones. Every queue operation (queue, cancel, replay)
//! writes its event in the transaction that changes the row, so the activity log and the
//! WebSocket hear of it exactly when it became true.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait, FromQueryResult, QueryFilter,
    QueryOrder, QuerySelect, TransactionTrait,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use showrunner_shared::broker::topology::JOB_DELAY_TIERS_MS;
use showrunner_shared::config::MAX_JOB_ATTEMPTS;
use showrunner_shared::contracts::{
    Actor, EventData, JobCancelled, JobQueued, JobRequest, JobRequeued, OutgoingEvent,
};
use showrunner_shared::db::sql;
use showrunner_shared::domain::FieldError;
// The job row as the routes read it: its entity's model.
use showrunner_shared::entity::job::{self as entity, Model as JobRow};
use showrunner_shared::event_log::{self, StoredEvent};
use showrunner_shared::jobs::JobStatus;
use showrunner_shared::jobs::types::{JobTypes, Refusal};
use uuid::Uuid;

use crate::accept::WriteOptions;
use crate::error::ApiError;
use crate::extract::{JsonBody, PathId, QueryParams, User};
use crate::routes::{Data, Page, page_limit, parse_cursor};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/jobs", get(list).post(create))
        .route("/jobs/{id}", get(read))
        .route("/jobs/{id}/retry", post(retry))
        .route("/jobs/{id}/cancel", post(cancel))
}

const TYPE_MAX: usize = 100;
/// Namespace of the `idempotency_id` of keyed jobs (UUIDv5 of creator and key).
const IDEMPOTENCY_NAMESPACE: Uuid = Uuid::from_u128(0x0b5e_77a1_92c4_4d0e_8f3a_6c1d_2e4f_7a9b);

#[cfg_attr(test, derive(schemars::JsonSchema))]
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct CreateBody {
    #[serde(rename = "type")]
    job_type: String,
    payload: serde_json::Value,
    max_attempts: Option<i32>,
    episode_id: Option<Uuid>,
    run_at: Option<DateTime<Utc>>,
}

/// The columns of [`JobRow`], for the statements that write a row and return it in one
/// (`RETURNING`).
const COLUMNS: &str = "id, type, payload, status, attempts, max_attempts, last_error, result, \
    next_attempt_at, episode_id, created_by, created_by_name, created_at, updated_at, \
    completed_at, run_at, progress_percent, progress_message, progress_at, cancel_requested_at, \
    dispatch_id, idempotency_id, request_hash";

/// The job as REST shows it.
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct JobView {
    id: Uuid,
    #[serde(rename = "type")]
    job_type: String,
    payload: serde_json::Value,
    status: JobStatus,
    attempts: i32,
    max_attempts: i32,
    last_error: Option<String>,
    result: Option<serde_json::Value>,
    next_attempt_at: Option<DateTime<Utc>>,
    episode_id: Option<Uuid>,
    created_by: Uuid,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    completed_at: Option<DateTime<Utc>>,
    run_at: Option<DateTime<Utc>>,
    progress: Option<Progress>,
    cancel_requested_at: Option<DateTime<Utc>>,
}

#[cfg_attr(test, derive(schemars::JsonSchema))]
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Progress {
    percent: i16,
    message: String,
    at: DateTime<Utc>,
}

/// Who created the job.
fn creator(job: &JobRow) -> Actor {
    Actor { id: job.created_by, name: job.created_by_name.clone() }
}

impl From<JobRow> for JobView {
    fn from(job: JobRow) -> Self {
        let progress = match (job.progress_percent, job.progress_at) {
            (Some(percent), Some(at)) => {
                Some(Progress { percent, message: job.progress_message.unwrap_or_default(), at })
            }
            _ => None,
        };
        JobView {
            id: job.id,
            job_type: job.job_type,
            payload: job.payload,
            status: job.status,
            attempts: job.attempts,
            max_attempts: job.max_attempts,
            last_error: job.last_error,
            result: job.result,
            next_attempt_at: job.next_attempt_at,
            episode_id: job.episode_id,
            created_by: job.created_by,
            created_at: job.created_at,
            updated_at: job.updated_at,
            completed_at: job.completed_at,
            run_at: job.run_at,
            progress,
            cancel_requested_at: job.cancel_requested_at,
        }
    }
}

fn valid_type(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= TYPE_MAX
        && t.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        })
}

/// PostgreSQL's `jsonb` cannot hold U+0000 (in a string or a key); found by the API fuzzer,
/// which got a 500 for it.
fn has_nul(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::String(s) => s.contains('\0'),
        serde_json::Value::Array(items) => items.iter().any(has_nul),
        serde_json::Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

/// The type and payload against the declared job types: 422 naming `type` (with the known
/// ones) or the payload's field.
fn check_declared(
    types: &JobTypes,
    job_type: &str,
    payload: &serde_json::Value,
) -> Result<(), ApiError> {
    types.check(job_type, payload).map_err(|refusal| match refusal {
        Refusal::UnknownType { known, .. } => ApiError::field(
            "type",
            format!("unknown job type {job_type:?}; known types: {}", known.join(", ")),
        ),
        Refusal::Payload(error) => ApiError::field(&error.qualified(), error.message),
    })
}

/// The event of a job, as every job event is: its actor is the job's creator (who the
/// WebSocket delivers a job's events to, beside admins), its correlation id the job's.
fn job_event<D: EventData<Subject = Uuid>>(job: &JobRow, data: &D) -> StoredEvent {
    let event = OutgoingEvent::new(&job.id, data, Some(creator(job)), Some(job.id), Utc::now());
    let traceparent = crate::observe::current_traceparent();
    StoredEvent::from_outgoing(
        &event,
        Some(showrunner_shared::trace::child_or_new(traceparent.as_deref())),
    )
}

/// The longest delay the broker's tiers hold in one hop: a job scheduled further ahead is held
/// by its row until the job workers' sweeper publishes it (`dispatch_id` stays NULL till then).
fn longest_tier() -> chrono::Duration {
    chrono::Duration::milliseconds(JOB_DELAY_TIERS_MS[JOB_DELAY_TIERS_MS.len() - 1] as i64)
}

async fn create(
    State(state): State<AppState>,
    user: User,
    headers: HeaderMap,
    JsonBody(raw): JsonBody<serde_json::Value>,
) -> Result<Response, ApiError> {
    let options = WriteOptions::from_headers(
        &headers,
        std::time::Duration::from_secs(state.settings.http.max_wait_secs),
    )?;
    if !raw.is_object() {
        return Err(ApiError::field("body", "must be a JSON object"));
    }
    let fingerprint = request_hash(&raw);
    let body: CreateBody = crate::extract::parse_json(raw.to_string().as_bytes())?;
    if !valid_type(&body.job_type) {
        return Err(ApiError::field(
            "type",
            format!("must be 1 to {TYPE_MAX} characters of a-z, 0-9, '.', '_' and '-'"),
        ));
    }
    if has_nul(&body.payload) {
        return Err(ApiError::field("payload", "must not contain the NUL character"));
    }
    check_declared(&state.job_types, &body.job_type, &body.payload)?;
    let max_attempts = match body.max_attempts {
        None => state.settings.jobs.max_attempts as i32,
        Some(n) if (1..=MAX_JOB_ATTEMPTS as i32).contains(&n) => n,
        Some(_) => {
            return Err(ApiError::field(
                "maxAttempts",
                format!("must be between 1 and {MAX_JOB_ATTEMPTS}"),
            ));
        }
    };
    let now = Utc::now();
    let horizon = chrono::Duration::days(i64::from(state.settings.jobs.max_schedule_days));
    if body.run_at.is_some_and(|at| at > now + horizon) {
        return Err(ApiError::field(
            "runAt",
            format!("must be at most {} days ahead", state.settings.jobs.max_schedule_days),
        ));
    }
    // A `runAt` already past runs now.
    let run_at = body.run_at.filter(|at| *at > now);
    let held_by_row = run_at.is_some_and(|at| at - now > longest_tier());
    let idempotency_id = options
        .idempotency_key
        .as_ref()
        .map(|key| Uuid::new_v5(&IDEMPOTENCY_NAMESPACE, format!("{}:{key}", user.id()).as_bytes()));
    if let Some(id) = idempotency_id
        && let Some(answer) = replay(&state, id, &fingerprint).await?
    {
        return Ok(answer);
    }
    let publisher = state.broker.publisher().ok_or_else(unavailable)?;
    let request =
        JobRequest { job_id: Uuid::now_v7(), dispatch_id: Uuid::now_v7(), not_before: run_at };
    let txn = state.db.begin().await?;
    // Raw: the insert, its idempotency conflict and the row written are one statement.
    let inserted = JobRow::find_by_statement(sql(
        &format!(
            "INSERT INTO jobs (id, type, payload, status, max_attempts, episode_id, created_by, \
             created_by_name, dispatch_id, run_at, idempotency_id, request_hash) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
             ON CONFLICT (idempotency_id) WHERE idempotency_id IS NOT NULL DO NOTHING \
             RETURNING {COLUMNS}"
        ),
        [
            request.job_id.into(),
            body.job_type.clone().into(),
            body.payload.into(),
            if run_at.is_some() { JobStatus::Scheduled } else { JobStatus::Queued }.into(),
            max_attempts.into(),
            body.episode_id.into(),
            user.id().into(),
            user.0.name.clone().into(),
            (!held_by_row).then_some(request.dispatch_id).into(),
            run_at.into(),
            idempotency_id.into(),
            idempotency_id.map(|_| fingerprint.clone()).into(),
        ],
    ))
    .one(&txn)
    .await?;
    let Some(job) = inserted else {
        // The same key, in a request that committed first: answer as it did.
        drop(txn);
        let id = idempotency_id.ok_or_else(|| anyhow::anyhow!("the job insert returned no row"))?;
        return replay(&state, id, &fingerprint)
            .await?
            .ok_or_else(|| anyhow::anyhow!("the keyed job vanished").into());
    };
    let events = vec![job_event(
        &job,
        &JobQueued {
            job_id: job.id,
            job_type: body.job_type,
            max_attempts,
            episode_id: body.episode_id,
            run_at,
            timestamp: now,
        },
    )];
    event_log::record_new(&txn, &events).await?;
    // Committed before the publish: a worker that gets the request at once finds the row.
    txn.commit().await?;
    if !held_by_row && let Err(error) = publish_request(&publisher, &request).await {
        tracing::warn!(%error, job_id = %job.id, "job publish failed");
        if idempotency_id.is_none() {
            // Not confirmed, so not accepted: forget it, the client may retry.
            forget(&state, &job).await?;
        }
        // A keyed job stays: the client's retry with the key publishes it again (and, if
        // nobody retries, the job workers' sweeper does), as keyed commands do.
        return Err(unavailable());
    }
    Ok(accepted(job))
}

/// Forgets a job whose request was not confirmed: it is cancelled, with `job_cancelled`. Its
/// `job_queued` was committed with the row and the shipper may be publishing it right now (it
/// writes nothing that would tell), so whoever heard it queued hears it end.
async fn forget(state: &AppState, job: &JobRow) -> Result<(), ApiError> {
    let txn = state.db.begin().await?;
    let cancelled = txn
        .execute_raw(sql(
            "UPDATE jobs SET status = 'cancelled', completed_at = now(), updated_at = now() \
             WHERE id = $1 AND status IN ('queued', 'scheduled')",
            [job.id.into()],
        ))
        .await?;
    if cancelled.rows_affected() > 0 {
        let data = JobCancelled {
            job_id: job.id,
            cancelled_by: creator(job),
            previous_status: job.status,
            timestamp: Utc::now(),
        };
        event_log::record_new(&txn, &[job_event(job, &data)]).await?;
    }
    txn.commit().await?;
    Ok(())
}

async fn publish_request(
    publisher: &showrunner_shared::broker::Publisher,
    request: &JobRequest,
) -> Result<(), showrunner_shared::broker::PublishError> {
    let traceparent = crate::observe::current_traceparent();
    showrunner_shared::jobs::publish_traced(publisher, request, Utc::now(), traceparent.as_deref())
        .await
}

/// The answer to a keyed `POST /jobs` whose key was used before: the job (one job per key),
/// or 422 when the key came with another request. A job still `queued` (or `scheduled` with
/// its request in the broker) has its request published again, so the 202 means confirmed
/// even when the first publish was not; a copy that did arrive is a duplicate the worker skips.
async fn replay(
    state: &AppState,
    idempotency_id: Uuid,
    fingerprint: &str,
) -> Result<Option<Response>, ApiError> {
    let found = entity::Entity::find()
        .filter(entity::Column::IdempotencyId.eq(idempotency_id))
        .one(&state.db)
        .await?;
    let Some(job) = found else { return Ok(None) };
    if job.request_hash.as_deref() != Some(fingerprint) {
        return Err(ApiError::Validation {
            detail: "this Idempotency-Key was used with a different request".into(),
            errors: vec![FieldError::new("Idempotency-Key", "reused with a different request")],
        });
    }
    if matches!(job.status, JobStatus::Queued | JobStatus::Scheduled)
        && let Some(dispatch_id) = job.dispatch_id
    {
        let publisher = state.broker.publisher().ok_or_else(unavailable)?;
        let request = JobRequest { job_id: job.id, dispatch_id, not_before: job.run_at };
        publish_request(&publisher, &request).await.map_err(|error| {
            tracing::warn!(%error, job_id = %job.id, "job republish failed");
            unavailable()
        })?;
    }
    Ok(Some(accepted(job)))
}

fn accepted(job: JobRow) -> Response {
    let location = HeaderValue::from_str(&format!("/api/v1/jobs/{}", job.id));
    let mut response =
        (StatusCode::ACCEPTED, Json(Data { data: JobView::from(job) })).into_response();
    if let Ok(location) = location {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

/// The method, path and body (canonical: object keys sorted) of a `POST /jobs`, hashed.
fn request_hash(body: &serde_json::Value) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"POST /jobs\0");
    hasher.update(body.to_string().as_bytes());
    hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The job, if the caller may see it (its creator or an admin); otherwise it does not exist.
async fn visible(state: &AppState, user: &User, id: Uuid) -> Result<JobRow, ApiError> {
    entity::Entity::find_by_id(id)
        .one(&state.db)
        .await?
        .filter(|j| j.created_by == user.id() || user.is_admin())
        .ok_or_else(|| ApiError::NotFound(format!("job {id} does not exist")))
}

async fn read(
    State(state): State<AppState>,
    user: User,
    PathId(id): PathId,
) -> Result<Response, ApiError> {
    let job = visible(&state, &user, id).await?;
    Ok(Json(Data { data: JobView::from(job) }).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    status: Option<String>,
    #[serde(rename = "type")]
    job_type: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

async fn list(
    State(state): State<AppState>,
    user: User,
    QueryParams(query): QueryParams<ListQuery>,
) -> Result<Response, ApiError> {
    let limit = page_limit(query.limit, state.settings.limits.max_page_size)?;
    let status = match query.status.as_deref().map(|s| (s, JobStatus::parse(s))) {
        None => None,
        Some((_, Some(status))) => Some(status),
        Some((_, None)) => {
            let names: Vec<&str> = JobStatus::ALL.iter().map(|s| s.as_str()).collect();
            return Err(ApiError::bad_param(
                "status",
                format!("must be one of {}", names.join(", ")),
            ));
        }
    };
    let cursor = parse_cursor(query.cursor.as_deref())?;
    // Members list their own jobs; admins everyone's.
    let owner = (!user.is_admin()).then(|| user.id());
    let mut select = entity::Entity::find();
    if let Some(status) = status {
        select = select.filter(entity::Column::Status.eq(status));
    }
    if let Some(job_type) = query.job_type {
        select = select.filter(entity::Column::JobType.eq(job_type));
    }
    if let Some(cursor) = cursor {
        select = select.filter(entity::Column::Id.lt(cursor));
    }
    if let Some(owner) = owner {
        select = select.filter(entity::Column::CreatedBy.eq(owner));
    }
    let rows =
        select.order_by_desc(entity::Column::Id).limit(u64::from(limit) + 1).all(&state.db).await?;
    let views: Vec<JobView> = rows.into_iter().map(JobView::from).collect();
    Ok(Json(Page::from_rows(views, limit, |j| j.id)).into_response())
}

/// A failed job runs again from attempt 1 (admins only), with `job_requeued`.
async fn retry(
    State(state): State<AppState>,
    user: User,
    PathId(id): PathId,
) -> Result<Response, ApiError> {
    if !user.is_admin() {
        return Err(ApiError::Forbidden("only admins retry jobs".into()));
    }
    let publisher = state.broker.publisher().ok_or_else(unavailable)?;
    let request = JobRequest { job_id: id, dispatch_id: Uuid::now_v7(), not_before: None };
    let txn = state.db.begin().await?;
    #[derive(FromQueryResult)]
    struct Before {
        attempts: i32,
    }
    let before = Before::find_by_statement(sql(
        "SELECT attempts FROM jobs WHERE id = $1 AND status = 'failed' FOR UPDATE",
        [id.into()],
    ))
    .one(&txn)
    .await?;
    let job = match before {
        None => None,
        // Raw: the reset of many columns and the row it leaves, in one statement.
        Some(before) => JobRow::find_by_statement(sql(
            &format!(
                "UPDATE jobs SET status = 'queued', attempts = 0, dispatch_id = $2, \
                 last_error = NULL, result = NULL, next_attempt_at = NULL, locked_until = NULL, \
                 completed_at = NULL, run_at = NULL, progress_percent = NULL, \
                 progress_message = NULL, progress_at = NULL, cancel_requested_at = NULL, \
                 cancel_requested_by = NULL, cancel_requested_by_name = NULL, updated_at = now() \
                 WHERE id = $1 AND status = 'failed' RETURNING {COLUMNS}"
            ),
            [id.into(), request.dispatch_id.into()],
        ))
        .one(&txn)
        .await?
        .map(|job| (job, before.attempts)),
    };
    let Some((job, previous_attempts)) = job else {
        drop(txn);
        let current = visible(&state, &user, id).await?;
        return Err(ApiError::Conflict(format!(
            "only a failed job can be retried; this one is {}",
            current.status
        )));
    };
    let events = vec![job_event(
        &job,
        &JobRequeued {
            job_id: id,
            requeued_by: Actor { id: user.id(), name: user.0.name.clone() },
            previous_attempts,
            timestamp: Utc::now(),
        },
    )];
    event_log::record_new(&txn, &events).await?;
    // The row stays locked until the publish is confirmed: a worker that gets the request
    // first waits for the commit and then finds the new dispatch id.
    if let Err(error) = publish_request(&publisher, &request).await {
        tracing::warn!(%error, job_id = %id, "job retry publish failed");
        return Err(unavailable());
    }
    txn.commit().await?;
    Ok((StatusCode::ACCEPTED, Json(Data { data: JobView::from(job) })).into_response())
}

/// A queued, scheduled or retrying job is cancelled at once (200; a copy of its request that
/// comes back later is skipped). A running one is asked to stop (202): its worker sees the
/// request within a lease renewal, cancels the handler's token, and ends the job `cancelled`
/// (abandoning a handler that does not stop within `jobs.cancel_grace_secs`). Either way
/// `job_cancelled` tells who cancelled it.
async fn cancel(
    State(state): State<AppState>,
    user: User,
    PathId(id): PathId,
) -> Result<Response, ApiError> {
    visible(&state, &user, id).await?;
    let by = Actor { id: user.id(), name: user.0.name.clone() };
    let txn = state.db.begin().await?;
    let Some(previous) = lock_status(&txn, id).await? else {
        return Err(ApiError::NotFound(format!("job {id} does not exist")));
    };
    match previous {
        JobStatus::Queued | JobStatus::Scheduled | JobStatus::Retrying => {
            // Raw: the update and the row it leaves, in one statement.
            let job = JobRow::find_by_statement(sql(
                &format!(
                    "UPDATE jobs SET status = 'cancelled', next_attempt_at = NULL, \
                     completed_at = now(), updated_at = now(), \
                     cancel_requested_at = now(), cancel_requested_by = $2, \
                     cancel_requested_by_name = $3 WHERE id = $1 RETURNING {COLUMNS}"
                ),
                [id.into(), by.id.into(), by.name.clone().into()],
            ))
            .one(&txn)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("job {id} does not exist")))?;
            let events = vec![job_event(
                &job,
                &JobCancelled {
                    job_id: id,
                    cancelled_by: by,
                    previous_status: previous,
                    timestamp: Utc::now(),
                },
            )];
            event_log::record_new(&txn, &events).await?;
            txn.commit().await?;
            Ok(Json(Data { data: JobView::from(job) }).into_response())
        }
        JobStatus::Running => {
            // The first request to stop counts; asking again changes nothing. Raw: set from the
            // row's own values (COALESCE) and returned, in one statement.
            let job = JobRow::find_by_statement(sql(
                &format!(
                    "UPDATE jobs SET cancel_requested_at = COALESCE(cancel_requested_at, now()), \
                     cancel_requested_by = COALESCE(cancel_requested_by, $2), \
                     cancel_requested_by_name = COALESCE(cancel_requested_by_name, $3), \
                     updated_at = now() WHERE id = $1 RETURNING {COLUMNS}"
                ),
                [id.into(), by.id.into(), by.name.into()],
            ))
            .one(&txn)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("job {id} does not exist")))?;
            txn.commit().await?;
            Ok((StatusCode::ACCEPTED, Json(Data { data: JobView::from(job) })).into_response())
        }
        status => {
            drop(txn);
            Err(ApiError::Conflict(format!(
                "only a queued, scheduled, retrying or running job can be cancelled; this one \
                 is {status}"
            )))
        }
    }
}

/// The job's status, its row locked for the rest of `txn`.
async fn lock_status(txn: &DatabaseTransaction, id: Uuid) -> Result<Option<JobStatus>, ApiError> {
    #[derive(FromQueryResult)]
    struct Status {
        status: JobStatus,
    }
    Ok(Status::find_by_statement(sql(
        "SELECT status FROM jobs WHERE id = $1 FOR UPDATE",
        [id.into()],
    ))
    .one(txn)
    .await?
    .map(|s| s.status))
}

/// The OpenAPI document with `POST /jobs`'s body generated from the declared job types (the
/// file beside the code shows the built-in ones).
pub fn openapi(document: &str, types: &JobTypes) -> String {
    match serde_json::from_str::<serde_json::Value>(document) {
        Ok(mut doc) => {
            doc["components"]["schemas"]["JobCreate"] = types.create_schema();
            serde_json::to_string_pretty(&doc).unwrap_or_else(|_| document.to_string())
        }
        Err(_) => document.to_string(),
    }
}

fn unavailable() -> ApiError {
    ApiError::Unavailable {
        detail: "the message broker is unavailable; nothing was accepted, retry later".into(),
        retry_after_secs: 5,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_types_are_short_lowercase_names() {
        for (t, ok) in [
            ("webhook", true),
            ("episode.export", true),
            ("bench_insert-2", true),
            ("", false),
            ("Webhook", false),
            ("a b", false),
            (&"x".repeat(101), false),
        ] {
            assert_eq!(valid_type(t), ok, "{t:?}");
        }
    }

    #[test]
    fn the_openapi_file_shows_the_builtin_job_types() {
        // The document served is generated from the deployment's job types; the file must
        // say the same for the built-in ones, or readers of the file are misled.
        let file: serde_json::Value =
            serde_json::from_str(crate::routes::health::OPENAPI).expect("the file is JSON");
        assert_eq!(
            file["components"]["schemas"]["JobCreate"],
            JobTypes::builtin().create_schema(),
            "regenerate api/openapi.json's JobCreate from JobTypes::builtin().create_schema()"
        );
    }
}
