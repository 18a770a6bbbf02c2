//! `GET /commands/{id}`: what became of an accepted command. Only its creator (or an admin)
//! sees it; to anyone else it does not exist. A finished command's record is kept
//! `retention.commands_secs` (two days by default, never less than the 24 h of idempotency)
//! and then deleted by the workers' retention sweep: it answers 404 from then on, saying it
//! expired when its id (a UUIDv7, unless the command was keyed) tells it is that old.

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

#[cfg_attr(test, derive(schemars::JsonSchema))]
#[derive(FromQueryResult, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CommandView {
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
    .ok_or_else(|| not_found(&state, id))?;
    Ok(Json(view))
}

fn not_found(state: &AppState, id: Uuid) -> ApiError {
    let kept = state.settings.retention.commands_secs;
    let issued = id.get_timestamp().map(|t| t.to_unix().0);
    let now = u64::try_from(Utc::now().timestamp()).unwrap_or(0);
    if issued.is_some_and(|issued| issued.saturating_add(kept) < now) {
        return ApiError::NotFound(format!(
            "command {id} has expired: command records are kept {} hours after acceptance",
            kept / 3600
        ));
    }
    ApiError::NotFound(format!(
        "command {id} does not exist (or its record expired: command records are kept {} hours)",
        kept / 3600
    ))
}
