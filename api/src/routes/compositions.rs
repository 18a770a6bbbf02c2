//! `/episodes/{id}/compositions`: an episode's cuts. Writes are commands on the episode's
//! partition (see `accept`), so they apply in order with the episode's own; the rules are
//! `showrunner_shared::resource::composition`. Reads come from PostgreSQL.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use showrunner_shared::contracts::Command;
use showrunner_shared::resource;
use showrunner_shared::resource::composition::{
    self, Composition, CompositionChanges, CompositionName, Track, Tracks,
};
use uuid::Uuid;

use crate::accept::{self, Applied, DeleteQuery, ItemIds, Known, typed, write_options};
use crate::error::ApiError;
use crate::extract::{JsonBody, PathId, PathIds, QueryParams, User};
use crate::routes::{Data, PageQuery, applied_of_episode, episode_page, of_episode};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/episodes/{id}/compositions", get(list).post(create))
        .route("/episodes/{id}/compositions/{cid}", get(read).patch(update).delete(delete))
}

#[cfg_attr(test, derive(schemars::JsonSchema))]
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct CreateBody {
    name: CompositionName,
    #[serde(default)]
    tracks: Vec<Track>,
}

#[cfg_attr(test, derive(schemars::JsonSchema))]
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct UpdateBody {
    #[serde(default)]
    name: Option<CompositionName>,
    #[serde(default)]
    tracks: Option<Vec<Track>>,
}

/// The timeline's rules, each broken one named by its field (`tracks[1].clips[3].durationUs`).
fn tracks(raw: Vec<Track>) -> Result<Tracks, ApiError> {
    Tracks::validate(raw).map_err(|errors| ApiError::Validation {
        detail: errors
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect::<Vec<_>>()
            .join("; "),
        errors,
    })
}

async fn create(
    State(state): State<AppState>,
    user: User,
    PathId(episode_id): PathId,
    headers: HeaderMap,
    JsonBody(body): JsonBody<serde_json::Value>,
) -> Result<Response, ApiError> {
    let options = write_options(&state, &headers)?;
    let fingerprint = format!("POST /episodes/{episode_id}/compositions {body}");
    let body: CreateBody = typed(body)?;
    let command = Command::CreateComposition {
        episode_id,
        composition_id: Uuid::now_v7(),
        name: body.name,
        tracks: tracks(body.tracks)?,
    };
    let now = accept::now();
    let data = preview(&user, None, &command, now)?.unwrap_or_default();
    let read = |id, left| read_applied(&state, episode_id, id, left);
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
    PathIds(episode_id, id): PathIds,
    headers: HeaderMap,
    JsonBody(body): JsonBody<serde_json::Value>,
) -> Result<Response, ApiError> {
    let options = write_options(&state, &headers)?;
    let if_version = if_match(&headers)?;
    let fingerprint =
        format!("PATCH /episodes/{episode_id}/compositions/{id} {if_version:?} {body}");
    let body: UpdateBody = typed(body)?;
    let changes =
        CompositionChanges { name: body.name, tracks: body.tracks.map(tracks).transpose()? };
    if changes.is_empty() {
        return Err(ApiError::field("body", "at least one of name, tracks is required"));
    }
    let ids = ItemIds { id, episode_id };
    let known =
        serde_json::to_value(Known { ids, changes: &changes }).map_err(anyhow::Error::from)?;
    let command =
        Command::UpdateComposition { episode_id, composition_id: id, changes, if_version };
    let now = accept::now();
    // As it will be if it is there already and its rules take the change as things stand;
    // otherwise only the changes are known, and the worker decides.
    let data = match resource::find::<Composition>(&state.db, episode_id, id, false).await? {
        Some(current) => preview(&user, Some(current), &command, now)?.unwrap_or(known),
        None => known,
    };
    let read = |id, left| read_applied(&state, episode_id, id, left);
    accept::answer(&state, &user, command, data, now, &fingerprint, &options, StatusCode::OK, read)
        .await
}

async fn delete(
    State(state): State<AppState>,
    user: User,
    PathIds(episode_id, id): PathIds,
    headers: HeaderMap,
    QueryParams(query): QueryParams<DeleteQuery>,
) -> Result<Response, ApiError> {
    let permanent = query.permanent;
    let fingerprint =
        format!("DELETE /episodes/{episode_id}/compositions/{id}?permanent={permanent}");
    let command = Command::DeleteComposition { episode_id, composition_id: id, permanent };
    let ids = ItemIds { id, episode_id };
    let read = |id, left| read_applied(&state, episode_id, id, left);
    accept::delete(&state, &user, &headers, (command, permanent), ids, &fingerprint, read).await
}

/// `If-Match: "<version>"`: the version the update is conditional on; `*` (or no header) is
/// unconditional.
fn if_match(headers: &HeaderMap) -> Result<Option<i64>, ApiError> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let bad = || ApiError::bad_param("If-Match", "must be \"<version>\" or *");
    let value = value.to_str().map_err(|_| bad())?.trim();
    if value == "*" {
        return Ok(None);
    }
    let version = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(value);
    version.parse::<i64>().ok().filter(|v| *v >= 1).map(Some).ok_or_else(bad)
}

/// The composition as `command` leaves it, by the same rules the worker runs: the 202 body.
/// `None` if the rules refuse it as things stand.
fn preview(
    user: &User,
    current: Option<Composition>,
    command: &Command,
    now: DateTime<Utc>,
) -> Result<Option<serde_json::Value>, ApiError> {
    accept::preview(user, current, now, |state, at| composition::change(state, command, at))
}

/// How a write that waited reads the applied composition.
async fn read_applied(
    state: &AppState,
    episode_id: Uuid,
    id: Uuid,
    left: Option<serde_json::Value>,
) -> Result<Applied, ApiError> {
    applied_of_episode::<Composition>(state, episode_id, id, "compositions", left).await
}

async fn read(
    State(state): State<AppState>,
    _user: User,
    PathIds(episode_id, id): PathIds,
) -> Result<Response, ApiError> {
    let found: Composition = of_episode(&state, episode_id, id, false).await?;
    let etag = HeaderValue::from_str(&format!("\"{}\"", found.version)).ok();
    let mut response = axum::Json(Data { data: found }).into_response();
    if let Some(etag) = etag {
        response.headers_mut().insert(header::ETAG, etag);
    }
    Ok(response)
}

async fn list(
    State(state): State<AppState>,
    _user: User,
    PathId(episode_id): PathId,
    QueryParams(query): QueryParams<PageQuery>,
) -> Result<Response, ApiError> {
    episode_page::<Composition>(&state, episode_id, query).await
}
