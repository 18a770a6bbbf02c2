//! `GET /activity`: the activity log, newest first, filtered by resource or actor. Episodes and
//! their compositions and files are the team's: every member reads their history. Everything else (jobs,
//! a user's own topics, the system) is its actor's: a member sees only their own rows and may
//! not ask for another user's (`actorId`), admins see all.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use sea_orm::{FromQueryResult, Value};
use serde::{Deserialize, Serialize};
use showrunner_shared::db::sql;
use uuid::Uuid;

use crate::error::ApiError;
use crate::extract::{QueryParams, User};
use crate::routes::{Page, page_limit, parse_cursor};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/activity", get(list))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ActivityQuery {
    resource_type: Option<String>,
    resource_id: Option<Uuid>,
    actor_id: Option<Uuid>,
    limit: Option<u32>,
    cursor: Option<String>,
}

#[derive(FromQueryResult, Serialize)]
#[serde(rename_all = "camelCase")]
struct ActivityView {
    id: Uuid,
    event: String,
    resource_type: String,
    resource_id: Option<Uuid>,
    actor_id: Option<Uuid>,
    actor_name: Option<String>,
    correlation_id: Option<Uuid>,
    data: serde_json::Value,
    occurred_at: DateTime<Utc>,
}

async fn list(
    State(state): State<AppState>,
    user: User,
    QueryParams(query): QueryParams<ActivityQuery>,
) -> Result<Json<Page<ActivityView>>, ApiError> {
    if query.actor_id.is_some_and(|a| a != user.id()) && !user.is_admin() {
        return Err(ApiError::Forbidden("only admins list another user's activity".into()));
    }
    let limit = page_limit(query.limit, state.settings.limits.max_page_size)?;
    let cursor = parse_cursor(query.cursor.as_deref())?;
    let rows = ActivityView::find_by_statement(sql(
        "SELECT id, event, resource_type, resource_id, actor_id, actor_name, correlation_id, data, occurred_at \
         FROM activity_log WHERE ($1::text IS NULL OR resource_type = $1) \
         AND ($2::uuid IS NULL OR resource_id = $2) AND ($3::uuid IS NULL OR actor_id = $3) \
         AND ($4::uuid IS NULL OR id < $4) \
         AND ($6 OR resource_type IN ('episode', 'composition', 'file') OR actor_id = $7) ORDER BY id DESC LIMIT $5",
        [
            query.resource_type.into(),
            query.resource_id.into(),
            query.actor_id.into(),
            cursor.into(),
            Value::from(i64::from(limit) + 1),
            user.is_admin().into(),
            user.id().into(),
        ],
    ))
    .all(&state.db)
    .await?;
    Ok(Json(Page::from_rows(rows, limit, |r| r.id)))
}
