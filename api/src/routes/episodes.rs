//! `/episodes`: writes become commands (see `accept`), reads come from PostgreSQL.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, Utc};
use sea_orm::sea_query::extension::postgres::PgBinOper;
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde::Deserialize;
use showrunner_shared::contracts::{Actor, Command, Episode, EpisodeChanges, Viewer};
use showrunner_shared::domain::{Categories, Description, EpisodeStatus, Title};
use showrunner_shared::entity::episode::{self as entity, Column};
use showrunner_shared::resource::episode;
use uuid::Uuid;

use crate::accept::{self, Applied, DeleteQuery, EpisodeIds, Known, typed, write_options};
use crate::error::ApiError;
use crate::extract::{JsonBody, PathId, QueryParams, User};
use crate::relay::presence;
use crate::routes::{Data, Page, page_limit};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/episodes", get(list).post(create))
        .route("/episodes/{id}", get(read).patch(update).delete(delete))
        .route("/episodes/{id}/viewers", get(viewers))
}

#[cfg_attr(test, derive(schemars::JsonSchema))]
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct CreateBody {
    title: Title,
    #[serde(default)]
    description: Description,
    #[serde(default = "draft")]
    status: EpisodeStatus,
    #[serde(default)]
    categories: Categories,
}

fn draft() -> EpisodeStatus {
    EpisodeStatus::Draft
}

async fn create(
    State(state): State<AppState>,
    user: User,
    headers: HeaderMap,
    JsonBody(body): JsonBody<serde_json::Value>,
) -> Result<Response, ApiError> {
    let options = write_options(&state, &headers)?;
    let fingerprint = format!("POST /episodes {body}");
    let body: CreateBody = typed(body)?;
    let episode_id = Uuid::now_v7();
    let command = Command::CreateEpisode {
        episode_id,
        title: body.title,
        description: body.description,
        status: body.status,
        categories: body.categories,
    };
    let now = accept::now();
    let data = preview(&user, None, &command, now)?.unwrap_or_default();
    let read = |id, left| read_applied(&state, id, left);
    accept::answer(
        &state,
        &user,
        command,
        data,
        now,
        &fingerprint,
        &options,
        StatusCode::CREATED,
        read,
    )
    .await
}

async fn update(
    State(state): State<AppState>,
    user: User,
    PathId(id): PathId,
    headers: HeaderMap,
    JsonBody(body): JsonBody<serde_json::Value>,
) -> Result<Response, ApiError> {
    let options = write_options(&state, &headers)?;
    let fingerprint = format!("PATCH /episodes/{id} {body}");
    let changes: EpisodeChanges = typed(body)?;
    if changes.is_empty() {
        return Err(ApiError::field(
            "body",
            "at least one of title, description, status, categories is required",
        ));
    }
    let known = serde_json::to_value(Known { ids: EpisodeIds { id }, changes: &changes })
        .map_err(anyhow::Error::from)?;
    let command = Command::UpdateEpisode { episode_id: id, changes };
    let now = accept::now();
    // The resource as it will be, if the episode is already there (a PATCH may follow a
    // create that is not applied yet, or the episode's rules may refuse it: then only the
    // changes are known, and the worker decides).
    let data = match find(&state, id, false).await? {
        Some(current) => preview(&user, Some(current), &command, now)?.unwrap_or(known),
        None => known,
    };
    let read = |id, left| read_applied(&state, id, left);
    accept::answer(&state, &user, command, data, now, &fingerprint, &options, StatusCode::OK, read)
        .await
}

/// The episode as `command` leaves it, by the same `apply` the worker runs: the 202 body.
/// `None` if the rules refuse it as things stand (the worker decides; it may see otherwise).
fn preview(
    user: &User,
    current: Option<Episode>,
    command: &Command,
    now: DateTime<Utc>,
) -> Result<Option<serde_json::Value>, ApiError> {
    accept::preview(user, current, now, |state, at| episode::apply(state, command, at))
}

/// How a write that waited answers with the applied episode: as the worker's notification
/// carried it (`left`), or read.
async fn read_applied(
    state: &AppState,
    id: Uuid,
    left: Option<serde_json::Value>,
) -> Result<Applied, ApiError> {
    let data = match left {
        Some(data) => data,
        None => {
            let episode = find(state, id, true)
                .await?
                .ok_or_else(|| ApiError::NotFound(format!("episode {id} does not exist")))?;
            serde_json::to_value(episode).map_err(anyhow::Error::from)?
        }
    };
    Ok(Applied { data, location: format!("/api/v1/episodes/{id}") })
}

async fn delete(
    State(state): State<AppState>,
    user: User,
    PathId(id): PathId,
    headers: HeaderMap,
    QueryParams(query): QueryParams<DeleteQuery>,
) -> Result<Response, ApiError> {
    let permanent = query.permanent;
    let fingerprint = format!("DELETE /episodes/{id}?permanent={permanent}");
    let command = Command::DeleteEpisode { episode_id: id, permanent };
    let ids = EpisodeIds { id };
    let read = |id, left| read_applied(&state, id, left);
    accept::delete(&state, &user, &headers, (command, permanent), ids, &fingerprint, read).await
}

async fn find(
    state: &AppState,
    id: Uuid,
    include_deleted: bool,
) -> Result<Option<Episode>, ApiError> {
    Ok(episode::find(&state.db, id, include_deleted).await?)
}

async fn read(
    State(state): State<AppState>,
    user: User,
    PathId(id): PathId,
) -> Result<Response, ApiError> {
    let episode = find(&state, id, false)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("episode {id} does not exist")))?;
    let actor = Actor { id: user.id(), name: user.0.name.clone() };
    presence::join(&state, id, &actor, presence::HTTP_SESSION).await?;
    let viewers = presence::viewers(&state, id).await?;
    Ok(axum::Json(WithViewers { data: episode, viewers }).into_response())
}

/// `GET /episodes/{id}`: the episode and who is looking at it.
#[derive(serde::Serialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub(crate) struct WithViewers {
    data: Episode,
    viewers: Vec<Viewer>,
}

async fn viewers(
    State(state): State<AppState>,
    _user: User,
    PathId(id): PathId,
) -> Result<Response, ApiError> {
    if find(&state, id, false).await?.is_none() {
        return Err(ApiError::NotFound(format!("episode {id} does not exist")));
    }
    let viewers = presence::viewers(&state, id).await?;
    Ok(axum::Json(Data { data: viewers }).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    status: Option<String>,
    category: Option<String>,
    q: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

async fn list(
    State(state): State<AppState>,
    _user: User,
    QueryParams(query): QueryParams<ListQuery>,
) -> Result<Response, ApiError> {
    let limit = page_limit(query.limit, state.settings.limits.max_page_size)?;
    let status = match query.status.as_deref() {
        None => None,
        Some(s) => Some(EpisodeStatus::parse(s).ok_or_else(|| {
            ApiError::bad_param(
                "status",
                "must be one of draft, in_production, published, archived",
            )
        })?),
    };
    let cursor = crate::routes::parse_cursor(query.cursor.as_deref())?;
    let pattern = query
        .q
        .as_deref()
        .map(|q| format!("%{}%", q.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")));
    let mut select = entity::Entity::find().filter(Column::DeletedAt.is_null());
    if let Some(status) = status {
        select = select.filter(Column::Status.eq(status.as_str()));
    }
    if let Some(category) = query.category {
        // `@>` keeps the GIN index on `categories` in use.
        select = select.filter(
            Expr::col(Column::Categories).binary(PgBinOper::Contains, Expr::val(vec![category])),
        );
    }
    if let Some(pattern) = pattern {
        select = select.filter(Expr::cust_with_values("title ILIKE $1", [pattern]));
    }
    if let Some(cursor) = cursor {
        select = select.filter(Column::Id.lt(cursor));
    }
    let rows = select.order_by_desc(Column::Id).limit(u64::from(limit) + 1).all(&state.db).await?;
    let page = Page::from_rows(
        rows.into_iter().map(Episode::try_from).collect::<Result<_, _>>()?,
        limit,
        |e| e.id,
    );
    Ok(axum::Json(page).into_response())
}
