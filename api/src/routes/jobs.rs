//! `/jobs`: a job request is recorded (`queued`) and published with a publisher confirm before
//! the 202; the job worker runs it. Members see and cancel their own jobs; admins see all and
//! replay failed ones.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, FromQueryResult, TransactionTrait, Value};
use serde::{Deserialize, Serialize};
use showrunner_shared::config::MAX_JOB_ATTEMPTS;
use showrunner_shared::contracts::JobRequest;
use showrunner_shared::db::sql;
use uuid::Uuid;

use crate::error::ApiError;
use crate::extract::{JsonBody, PathId, QueryParams, User};
use crate::routes::{Page, page_limit, parse_cursor};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/jobs", get(list).post(create))
        .route("/jobs/{id}", get(read))
        .route("/jobs/{id}/retry", post(retry))
        .route("/jobs/{id}/cancel", post(cancel))
}

const STATUSES: [&str; 6] = ["queued", "running", "retrying", "succeeded", "failed", "cancelled"];
const TYPE_MAX: usize = 100;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateBody {
    #[serde(rename = "type")]
    job_type: String,
    payload: serde_json::Value,
    max_attempts: Option<i32>,
    episode_id: Option<Uuid>,
}

/// The job as REST shows it.
#[derive(Debug, FromQueryResult, Serialize)]
#[serde(rename_all = "camelCase")]
struct JobView {
    id: Uuid,
    #[serde(rename = "type")]
    job_type: String,
    payload: serde_json::Value,
    status: String,
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
}

const COLUMNS: &str = "id, type AS job_type, payload, status, attempts, max_attempts, last_error, \
    result, next_attempt_at, episode_id, created_by, created_at, updated_at, completed_at";

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

async fn create(
    State(state): State<AppState>,
    user: User,
    JsonBody(body): JsonBody<CreateBody>,
) -> Result<Response, ApiError> {
    if !valid_type(&body.job_type) {
        return Err(ApiError::field(
            "type",
            format!("must be 1 to {TYPE_MAX} characters of a-z, 0-9, '.', '_' and '-'"),
        ));
    }
    if has_nul(&body.payload) {
        return Err(ApiError::field("payload", "must not contain the NUL character"));
    }
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
    let publisher = state.broker.publisher().ok_or_else(unavailable)?;
    let request =
        JobRequest { job_id: Uuid::now_v7(), dispatch_id: Uuid::now_v7(), not_before: None };
    let job = JobView::find_by_statement(sql(
        &format!(
            "INSERT INTO jobs (id, type, payload, status, max_attempts, episode_id, created_by, \
             created_by_name, dispatch_id) VALUES ($1, $2, $3, 'queued', $4, $5, $6, $7, $8) \
             RETURNING {COLUMNS}"
        ),
        [
            request.job_id.into(),
            body.job_type.into(),
            body.payload.into(),
            max_attempts.into(),
            body.episode_id.into(),
            user.id().into(),
            user.0.name.clone().into(),
            request.dispatch_id.into(),
        ],
    ))
    .one(&state.db)
    .await?
    .ok_or_else(|| anyhow::anyhow!("the job insert returned no row"))?;
    // The row is committed before the publish: a worker that gets the request at once finds it.
    let traceparent = crate::observe::current_traceparent();
    if let Err(error) = showrunner_shared::jobs::publish_traced(
        &publisher,
        &request,
        Utc::now(),
        traceparent.as_deref(),
    )
    .await
    {
        tracing::warn!(%error, job_id = %job.id, "job publish failed");
        // Not confirmed, so not accepted: forget it, the client may retry.
        state
            .db
            .execute_raw(sql(
                "DELETE FROM jobs WHERE id = $1 AND status = 'queued'",
                [job.id.into()],
            ))
            .await?;
        return Err(unavailable());
    }
    let mut response =
        (StatusCode::ACCEPTED, Json(serde_json::json!({ "data": job }))).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/api/v1/jobs/{}", job.id)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// The job, if the caller may see it (its creator or an admin); otherwise it does not exist.
async fn visible(state: &AppState, user: &User, id: Uuid) -> Result<JobView, ApiError> {
    JobView::find_by_statement(sql(
        &format!("SELECT {COLUMNS} FROM jobs WHERE id = $1"),
        [id.into()],
    ))
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
    Ok(Json(serde_json::json!({ "data": job })).into_response())
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
    if let Some(s) = &query.status
        && !STATUSES.contains(&s.as_str())
    {
        return Err(ApiError::bad_param(
            "status",
            format!("must be one of {}", STATUSES.join(", ")),
        ));
    }
    let cursor = parse_cursor(query.cursor.as_deref())?;
    // Members list their own jobs; admins everyone's.
    let owner = (!user.is_admin()).then(|| user.id());
    let rows = JobView::find_by_statement(sql(
        &format!(
            "SELECT {COLUMNS} FROM jobs WHERE ($1::text IS NULL OR status = $1) \
             AND ($2::text IS NULL OR type = $2) AND ($3::uuid IS NULL OR id < $3) \
             AND ($4::uuid IS NULL OR created_by = $4) ORDER BY id DESC LIMIT $5"
        ),
        [
            query.status.into(),
            query.job_type.into(),
            cursor.into(),
            owner.into(),
            Value::from(i64::from(limit) + 1),
        ],
    ))
    .all(&state.db)
    .await?;
    Ok(Json(Page::from_rows(rows, limit, |j| j.id)).into_response())
}

/// A failed job runs again from attempt 1 (admins only).
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
    let job = JobView::find_by_statement(sql(
        &format!(
            "UPDATE jobs SET status = 'queued', attempts = 0, dispatch_id = $2, last_error = NULL, \
             result = NULL, next_attempt_at = NULL, locked_until = NULL, completed_at = NULL, \
             updated_at = now() WHERE id = $1 AND status = 'failed' RETURNING {COLUMNS}"
        ),
        [id.into(), request.dispatch_id.into()],
    ))
    .one(&txn)
    .await?;
    let Some(job) = job else {
        drop(txn);
        let current = visible(&state, &user, id).await?;
        return Err(ApiError::Conflict(format!(
            "only a failed job can be retried; this one is {}",
            current.status
        )));
    };
    // The row stays locked until the publish is confirmed: a worker that gets the request
    // first waits for the commit and then finds the new dispatch id.
    let traceparent = crate::observe::current_traceparent();
    if let Err(error) = showrunner_shared::jobs::publish_traced(
        &publisher,
        &request,
        Utc::now(),
        traceparent.as_deref(),
    )
    .await
    {
        tracing::warn!(%error, job_id = %id, "job retry publish failed");
        return Err(unavailable());
    }
    txn.commit().await?;
    Ok((StatusCode::ACCEPTED, Json(serde_json::json!({ "data": job }))).into_response())
}

/// A queued or retrying job will not run again (a delayed copy that comes back is skipped).
async fn cancel(
    State(state): State<AppState>,
    user: User,
    PathId(id): PathId,
) -> Result<Response, ApiError> {
    let current = visible(&state, &user, id).await?;
    let job = JobView::find_by_statement(sql(
        &format!(
            "UPDATE jobs SET status = 'cancelled', next_attempt_at = NULL, completed_at = now(), \
             updated_at = now() WHERE id = $1 AND status IN ('queued', 'retrying') \
             RETURNING {COLUMNS}"
        ),
        [id.into()],
    ))
    .one(&state.db)
    .await?;
    match job {
        Some(job) => Ok(Json(serde_json::json!({ "data": job })).into_response()),
        None => Err(ApiError::Conflict(format!(
            "only a queued or retrying job can be cancelled; this one is {}",
            visible(&state, &user, id).await.map_or(current.status, |j| j.status)
        ))),
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
    use super::valid_type;

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
}
