//! `/notifications`: the caller's own notifications. Marking read is a direct write, not a
//! command: it touches only the caller's own row, is idempotent, and nothing consumes it.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect};
use serde::{Deserialize, Serialize};
use showrunner_shared::entity::notification::{self, Column};
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

#[cfg_attr(test, derive(schemars::JsonSchema))]
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct NotificationView {
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

impl From<notification::Model> for NotificationView {
    fn from(r: notification::Model) -> Self {
        Self {
            id: r.id,
            kind: r.kind,
            title: r.title,
            message: r.message,
            resource_type: r.resource_type,
            resource_id: r.resource_id,
            event_id: r.event_id,
            read_at: r.read_at,
            created_at: r.created_at,
        }
    }
}

/// The caller's notifications.
fn own(user: &User) -> sea_orm::Select<notification::Entity> {
    notification::Entity::find().filter(Column::UserId.eq(user.id()))
}

async fn list(
    State(state): State<AppState>,
    user: User,
    QueryParams(query): QueryParams<NotificationQuery>,
) -> Result<Json<Page<NotificationView>>, ApiError> {
    let limit = page_limit(query.limit, state.settings.limits.max_page_size)?;
    let cursor = parse_cursor(query.cursor.as_deref())?;
    let mut select = own(&user);
    if query.unread {
        select = select.filter(Column::ReadAt.is_null());
    }
    if let Some(cursor) = cursor {
        select = select.filter(Column::Id.lt(cursor));
    }
    let rows = select
        .order_by_desc(Column::Id)
        .limit(u64::from(limit) + 1)
        .all(&state.db)
        .await?
        .into_iter()
        .map(NotificationView::from)
        .collect();
    Ok(Json(Page::from_rows(rows, limit, |r| r.id)))
}

#[cfg_attr(test, derive(schemars::JsonSchema))]
#[derive(Serialize)]
pub(crate) struct Count {
    count: u64,
}

async fn unread_count(State(state): State<AppState>, user: User) -> Result<Json<Count>, ApiError> {
    let count = own(&user).filter(Column::ReadAt.is_null()).count(&state.db).await?;
    Ok(Json(Count { count }))
}

async fn read_one(
    State(state): State<AppState>,
    user: User,
    PathId(id): PathId,
) -> Result<StatusCode, ApiError> {
    // Reading it again keeps the first time: the row is found (204), nothing changes.
    let found = notification::Entity::update_many()
        .col_expr(Column::ReadAt, Expr::cust("COALESCE(read_at, now())"))
        .filter(Column::Id.eq(id))
        .filter(Column::UserId.eq(user.id()))
        .exec(&state.db)
        .await?
        .rows_affected;
    if found == 0 {
        return Err(ApiError::NotFound(format!("notification {id} does not exist")));
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn read_all(State(state): State<AppState>, user: User) -> Result<Json<Count>, ApiError> {
    let count = notification::Entity::update_many()
        .col_expr(Column::ReadAt, Expr::current_timestamp())
        .filter(Column::UserId.eq(user.id()))
        .filter(Column::ReadAt.is_null())
        .exec(&state.db)
        .await?
        .rows_affected;
    Ok(Json(Count { count }))
}
