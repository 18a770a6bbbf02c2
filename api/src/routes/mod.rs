//! One module per resource, each with its `router()`; shared paging helpers.

pub mod activity;
pub mod commands;
pub mod compositions;
pub mod episodes;
pub mod files;
pub mod health;
pub mod jobs;
pub mod notifications;

use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use showrunner_shared::resource::{self, Stored, Tracked, episode};
use uuid::Uuid;

use crate::accept::Applied;
use crate::error::ApiError;
use crate::state::AppState;

pub const PAGE_DEFAULT: u32 = 20;

/// A page of a list, newest first; `nextCursor` is null on the last page.
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Page<T> {
    pub data: Vec<T>,
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// `rows` were fetched with `limit + 1` to learn whether another page exists.
    pub fn from_rows(mut rows: Vec<T>, limit: u32, id: impl Fn(&T) -> Uuid) -> Self {
        let more = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        let next_cursor = if more { rows.last().map(|r| id(r).to_string()) } else { None };
        Self { data: rows, next_cursor }
    }
}

/// `{data}`: what a read of one resource (or of a short list) answers.
#[derive(Serialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct Data<T> {
    pub data: T,
}

/// The page size: `limit`, which must be 1 to `max` (`limits.max_page_size`); a larger one is
/// an error rather than quietly cut, so a client never mistakes a short page for the end.
pub fn page_limit(limit: Option<u32>, max: u32) -> Result<u32, ApiError> {
    match limit {
        None => Ok(PAGE_DEFAULT.min(max)),
        Some(n) if (1..=max).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::bad_param("limit", format!("must be between 1 and {max}"))),
    }
}

/// Cursors are the last id of the previous page (ids are time-ordered UUIDv7).
pub fn parse_cursor(cursor: Option<&str>) -> Result<Option<Uuid>, ApiError> {
    cursor
        .map(|c| {
            Uuid::parse_str(c)
                .map_err(|_| ApiError::bad_param("cursor", "is not a cursor this API issued"))
        })
        .transpose()
}

/// `?limit=&cursor=` of a list without other filters.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// A page of an episode's live `R` (compositions, files), newest first; 404 if the episode is
/// not there.
pub async fn episode_page<R: Stored + Serialize>(
    state: &AppState,
    episode_id: Uuid,
    query: PageQuery,
) -> Result<Response, ApiError> {
    let limit = page_limit(query.limit, state.settings.limits.max_page_size)?;
    let cursor = parse_cursor(query.cursor.as_deref())?;
    if episode::find(&state.db, episode_id, false).await?.is_none() {
        return Err(ApiError::NotFound(format!("episode {episode_id} does not exist")));
    }
    let rows: Vec<R> =
        resource::list_of_episode(&state.db, episode_id, cursor, u64::from(limit) + 1).await?;
    Ok(axum::Json(Page::from_rows(rows, limit, R::id)).into_response())
}

/// An episode's `R` (composition, file), or 404 naming it; soft-deleted ones only when
/// `include_deleted`.
pub async fn of_episode<R: Stored + Tracked>(
    state: &AppState,
    episode_id: Uuid,
    id: Uuid,
    include_deleted: bool,
) -> Result<R, ApiError> {
    resource::find(&state.db, episode_id, id, include_deleted)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("{} {id} does not exist", R::KIND.as_str())))
}

/// How a write that waited answers with the applied `R` of an episode, which lives at
/// `/api/v1/episodes/<episode_id>/<collection>/<id>`: as the worker's notification carried it
/// (`left`), or read.
pub async fn applied_of_episode<R: Stored + Tracked + Serialize>(
    state: &AppState,
    episode_id: Uuid,
    id: Uuid,
    collection: &str,
    left: Option<serde_json::Value>,
) -> Result<Applied, ApiError> {
    let data = match left {
        Some(data) => data,
        None => {
            let found: R = of_episode(state, episode_id, id, true).await?;
            serde_json::to_value(found).map_err(anyhow::Error::from)?
        }
    };
    Ok(Applied { data, location: format!("/api/v1/episodes/{episode_id}/{collection}/{id}") })
}
