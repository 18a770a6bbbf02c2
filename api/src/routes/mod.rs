//! One module per resource, each with its `router()`; shared paging helpers.

pub mod activity;
pub mod commands;
pub mod compositions;
pub mod episodes;
pub mod files;
pub mod health;
pub mod jobs;
pub mod notifications;

use serde::Serialize;
use uuid::Uuid;

use crate::error::ApiError;

pub const PAGE_DEFAULT: u32 = 20;

/// A page of a list, newest first; `nextCursor` is null on the last page.
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
