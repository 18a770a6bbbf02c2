//! `GET /commands/{id}`: what became of an accepted command. Only its creator (or an admin)
//! sees it; to anyone else it does not exist.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use sea_orm::FromQueryResult;
use serde::Serialize;
use showrunner_shared::db::sql;
use uuid::Uuid;

use crate::error::ApiError;
use crate::extract::{PathId, User};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/commands/{id}", get(read))
}

#[derive(FromQueryResult, Serialize)]
#[serde(rename_all = "camelCase")]
struct CommandView {
    id: Uuid,
    kind: String,
    status: showrunner_shared::resource::CommandStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    resource_type: showrunner_shared::resource::ResourceType,
    resource_id: Uuid,
    accepted_at: DateTime<Utc>,
    completed_at: Option<DateTime<Utc>>,
    #[serde(skip)]
    user_id: Uuid,
}

async fn read(
    State(state): State<AppState>,
    user: User,
    PathId(id): PathId,
) -> Result<Json<CommandView>, ApiError> {
    let view = CommandView::find_by_statement(sql(
        "SELECT id, kind, status, error, resource_type, resource_id, accepted_at, completed_at, user_id \
         FROM commands WHERE id = $1",
        [id.into()],
    ))
    .one(&state.db)
    .await?
    .filter(|c| c.user_id == user.id() || user.is_admin())
    .ok_or_else(|| ApiError::NotFound(format!("command {id} does not exist")))?;
    Ok(Json(view))
}
