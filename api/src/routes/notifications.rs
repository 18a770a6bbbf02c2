//! `/notifications`: the caller's own notifications. Marking read is a direct write, not a
//! command: it touches only the caller's own row, is idempotent, and nothing consumes it.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, FromQueryResult, Value};
use serde::{Deserialize, Serialize};
use showrunner_shared::db::sql;
use uuid::Uuid;

use crate::error::ApiError;
use crate::extract::{PathId, QueryParams, User};
use crate::routes::{Page, page_limit, parse_cursor};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/notifications", get(list))
        .route("/notifications/unread-count", get(unread_count))
        .route("/notifications/read-all", post(read_all))
        .route("/notifications/{id}/read", post(read_one))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NotificationQuery {
    #[serde(default)]
    unread: bool,
    limit: Option<u32>,
    cursor: Option<String>,
}

#[derive(FromQueryResult, Serialize)]
#[serde(rename_all = "camelCase")]
struct NotificationView {
    id: Uuid,
    kind: String,
    title: String,
    message: String,
    resource_type: Option<String>,
    resource_id: Option<Uuid>,
    event_id: Uuid,
    read_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
}

async fn list(
    State(state): State<AppState>,
    user: User,
    QueryParams(query): QueryParams<NotificationQuery>,
) -> Result<Json<Page<NotificationView>>, ApiError> {
    let limit = page_limit(query.limit, state.settings.limits.max_page_size)?;
    let cursor = parse_cursor(query.cursor.as_deref())?;
    let rows = NotificationView::find_by_statement(sql(
        "SELECT id, kind, title, message, resource_type, resource_id, event_id, read_at, created_at \
         FROM notifications WHERE user_id = $1 AND (NOT $2 OR read_at IS NULL) \
         AND ($3::uuid IS NULL OR id < $3) ORDER BY id DESC LIMIT $4",
        [user.id().into(), query.unread.into(), cursor.into(), Value::from(i64::from(limit) + 1)],
    ))
    .all(&state.db)
    .await?;
    Ok(Json(Page::from_rows(rows, limit, |r| r.id)))
}

#[derive(FromQueryResult, Serialize)]
struct Count {
    count: i64,
}

async fn unread_count(State(state): State<AppState>, user: User) -> Result<Json<Count>, ApiError> {
    let count = Count::find_by_statement(sql(
        "SELECT count(*) AS count FROM notifications WHERE user_id = $1 AND read_at IS NULL",
        [user.id().into()],
    ))
    .one(&state.db)
    .await?
    .map_or(0, |c| c.count);
    Ok(Json(Count { count }))
}

async fn read_one(
    State(state): State<AppState>,
    user: User,
    PathId(id): PathId,
) -> Result<StatusCode, ApiError> {
    let found = state
        .db
        .execute_raw(sql(
            "UPDATE notifications SET read_at = COALESCE(read_at, now()) WHERE id = $1 AND user_id = $2",
            [id.into(), user.id().into()],
        ))
        .await?
        .rows_affected();
    if found == 0 {
        return Err(ApiError::NotFound(format!("notification {id} does not exist")));
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn read_all(State(state): State<AppState>, user: User) -> Result<Json<Count>, ApiError> {
    let updated = state
        .db
        .execute_raw(sql(
            "UPDATE notifications SET read_at = now() WHERE user_id = $1 AND read_at IS NULL",
            [user.id().into()],
        ))
        .await?
        .rows_affected();
    Ok(Json(Count { count: updated as i64 }))
}
