//! `GET /activity`: the activity log, newest first, filtered by resource or actor. Episodes and
//! their compositions and files are the team's: every member reads their history. Everything else (jobs,
//! a user's own topics, the system) is its actor's: a member sees only their own rows and may
//! not ask for another user's (`actorId`), admins see all.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use sea_orm::{ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde::{Deserialize, Serialize};
use showrunner_shared::entity::activity::{self, Column};
use showrunner_shared::resource::ResourceType;
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

#[cfg_attr(test, derive(schemars::JsonSchema))]
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ActivityView {
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

impl From<activity::Model> for ActivityView {
    fn from(r: activity::Model) -> Self {
        Self {
            id: r.id,
            event: r.event,
            resource_type: r.resource_type,
            resource_id: r.resource_id,
            actor_id: r.actor_id,
            actor_name: r.actor_name,
            correlation_id: r.correlation_id,
            data: r.data,
            occurred_at: r.occurred_at,
        }
    }
}

/// Resource types whose history the whole team reads.
const TEAM_RESOURCES: [ResourceType; 3] =
    [ResourceType::Episode, ResourceType::Composition, ResourceType::File];

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
    let mut select = activity::Entity::find();
    if let Some(resource_type) = query.resource_type {
        select = select.filter(Column::ResourceType.eq(resource_type));
    }
    if let Some(resource_id) = query.resource_id {
        select = select.filter(Column::ResourceId.eq(resource_id));
    }
    if let Some(actor_id) = query.actor_id {
        select = select.filter(Column::ActorId.eq(actor_id));
    }
    if let Some(cursor) = cursor {
        select = select.filter(Column::Id.lt(cursor));
    }
    if !user.is_admin() {
        let team = TEAM_RESOURCES.map(ResourceType::as_str);
        select = select.filter(
            Condition::any()
                .add(Column::ResourceType.is_in(team))
                .add(Column::ActorId.eq(user.id())),
        );
    }
    let rows = select
        .order_by_desc(Column::Id)
        .limit(u64::from(limit) + 1)
        .all(&state.db)
        .await?
        .into_iter()
        .map(ActivityView::from)
        .collect();
    Ok(Json(Page::from_rows(rows, limit, |r| r.id)))
}
