//! `/episodes/{id}/files`: media and documents of an episode. An upload streams its body into
//! object storage (bounded buffers, SHA-256 and size counted on the way, `files.max_bytes`
//! enforced as the bytes arrive), then records the file with a `record_file` command on the
//! episode's partition (see `accept`). A download streams the object back, with `Range`,
//! `ETag` and `If-None-Match`. The rules are `showrunner_shared::resource::file`.

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use object_store::path::Path;
use object_store::{GetOptions, GetRange};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use showrunner_shared::contracts::Command;
use showrunner_shared::resource::episode;
use showrunner_shared::resource::file::{self, File, FileName, MediaType, Sha256Hex};
use showrunner_shared::storage::{self, Storage};
use tokio::io::AsyncWriteExt;
use uuid::Uuid;

use crate::accept::{
    self, Applied, DeleteQuery, ItemIds, Outcome, finish, wait_applied, write_options,
};
use crate::error::ApiError;
use crate::extract::{PathId, PathIds, QueryParams, User};
use crate::routes::{Data, PageQuery, applied_of_episode, episode_page, of_episode};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/episodes/{id}/files",
            // The body is streamed to storage and bounded by `files.max_bytes`, not by the
            // JSON body limit.
            get(list).post(upload).layer(DefaultBodyLimit::disable()),
        )
        .route("/episodes/{id}/files/{fid}", get(read).delete(delete))
        .route("/episodes/{id}/files/{fid}/content", get(content))
}

/// Is this request an upload (whose body may take longer than `http.body_timeout_secs` in all,
/// as long as it keeps arriving)? `edge::body_deadline` asks.
pub fn is_upload(method: &axum::http::Method, path: &str) -> bool {
    method == axum::http::Method::POST
        && path
            .strip_prefix("/api/v1/episodes/")
            .and_then(|rest| rest.strip_suffix("/files"))
            .is_some_and(|id| !id.contains('/'))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UploadQuery {
    name: Option<String>,
}

/// Removes an object unless disarmed: an upload that stops midway (an error, the client gone,
/// the request dropped) leaves nothing behind.
struct Cleanup {
    storage: Storage,
    key: Option<Path>,
}

impl Cleanup {
    fn disarm(&mut self) {
        self.key = None;
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        // No runtime (the process is ending): the orphan sweeper removes it later.
        if let (Some(key), Ok(runtime)) = (self.key.take(), tokio::runtime::Handle::try_current()) {
            let storage = self.storage.clone();
            runtime.spawn(async move {
                if let Err(error) = storage.delete(&key).await {
                    // The orphan sweeper removes it after `files.orphan_after_secs`.
                    tracing::warn!(%error, %key, "could not remove an unfinished upload");
                }
            });
        }
    }
}

async fn upload(
    State(state): State<AppState>,
    user: User,
    PathId(episode_id): PathId,
    headers: HeaderMap,
    QueryParams(query): QueryParams<UploadQuery>,
    body: Body,
) -> Result<Response, ApiError> {
    let options = write_options(&state, &headers)?;
    let files = &state.settings.files;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::UnsupportedMediaType("Content-Type is required".into()))
        .and_then(|v| MediaType::from_header(v).map_err(ApiError::UnsupportedMediaType))?;
    if !content_type.allowed_by(&files.allowed_types) {
        return Err(ApiError::UnsupportedMediaType(format!(
            "{} is not one of files.allowed_types ({})",
            content_type.as_str(),
            files.allowed_types.join(", ")
        )));
    }
    let raw_name = match query.name {
        Some(name) => name,
        None => disposition_name(&headers).ok_or_else(|| {
            ApiError::field("name", "required: Content-Disposition filename or ?name=")
        })?,
    };
    let name = FileName::try_from(raw_name).map_err(|m| ApiError::field("name", m))?;
    let too_large =
        || ApiError::PayloadTooLarge(format!("a file may have at most {} bytes", files.max_bytes));
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > files.max_bytes) {
        return Err(too_large());
    }
    match episode::find(&state.db, episode_id, true).await? {
        None => return Err(ApiError::NotFound(format!("episode {episode_id} does not exist"))),
        Some(e) if e.deleted_at.is_some() => {
            return Err(ApiError::Gone(format!("episode {episode_id} is deleted")));
        }
        Some(_) => {}
    }

    let file_id = Uuid::now_v7();
    let key = storage::file_key(episode_id, file_id);
    let mut cleanup = Cleanup { storage: state.storage.clone(), key: Some(key.clone()) };
    let mut writer = state.storage.writer(&key);
    let mut hasher = Sha256::new();
    let mut size: u64 = 0;
    let mut stream = body.into_data_stream();
    let streamed: Result<(), ApiError> = async {
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|error| {
                tracing::info!(%error, "upload body ended early");
                ApiError::field("body", "the upload was cut off before its end")
            })?;
            size += chunk.len() as u64;
            if size > files.max_bytes {
                return Err(too_large());
            }
            hasher.update(&chunk);
            writer.put(chunk).await.map_err(store_failed)?;
        }
        Ok(())
    }
    .await;
    if let Err(error) = streamed {
        if let Err(e) = writer.abort().await {
            tracing::warn!(error = %e, "aborting an upload failed");
        }
        return Err(error);
    }
    writer.shutdown().await.map_err(|e| {
        store_failed(object_store::Error::Generic { store: "upload", source: Box::new(e) })
    })?;

    let sha256 = hex(&hasher.finalize());
    let fingerprint = format!(
        "POST /episodes/{episode_id}/files {} {} {sha256} {size}",
        name.as_str(),
        content_type.as_str()
    );
    let command = Command::RecordFile {
        episode_id,
        file_id,
        name,
        content_type,
        size: i64::try_from(size).unwrap_or(i64::MAX),
        sha256: Sha256Hex::try_from(sha256).map_err(|m| anyhow::anyhow!(m))?,
    };
    let now = accept::now();
    let data = preview(&user, None, &command, now)?.unwrap_or_default();
    let outcome =
        match accept::submit(&state, &user, command, data, now, fingerprint.as_bytes(), &options)
            .await
        {
            Ok(outcome) => outcome,
            Err(error) => {
                // A keyed command whose publish was not confirmed stays recorded (its retry
                // publishes it again): its object must stay too. A pending command keeps the
                // orphan sweeper away; a database that cannot say leaves it to the sweeper.
                let named = file::existing(&state.db, vec![file_id]).await;
                if named.map(|n| n.contains(&file_id)).unwrap_or(true) {
                    cleanup.disarm();
                }
                return Err(error);
            }
        };
    let (Outcome::Accepted { body, .. } | Outcome::Applied { body, .. }) = &outcome;
    if body["data"]["id"] == serde_json::json!(file_id) {
        // Recorded: from here the command worker owns the object (a refused record purges it).
        cleanup.disarm();
    }
    // Otherwise a retry with the same Idempotency-Key got the first upload's answer: this
    // upload's bytes are not needed, and the cleanup removes them.
    drop(cleanup);
    let read = |id, left| read_applied(&state, episode_id, id, left);
    wait_applied(finish(&state, outcome, StatusCode::CREATED, read).await, &options)
}

fn store_failed(error: object_store::Error) -> ApiError {
    tracing::warn!(%error, "storing an upload failed");
    ApiError::Unavailable {
        detail: "the file storage is unavailable; nothing was stored, retry later".into(),
        retry_after_secs: 5,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `filename="..."` (or `filename*=UTF-8''...`) of `Content-Disposition: attachment`.
fn disposition_name(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::CONTENT_DISPOSITION)?;
    let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
    let mut plain = None;
    for param in value.split(';').skip(1) {
        let (key, raw) = param.trim().split_once('=')?;
        match key.trim().to_ascii_lowercase().as_str() {
            "filename*" => {
                let encoded = raw.trim().strip_prefix("UTF-8''").or(raw.strip_prefix("utf-8''"))?;
                return percent_decode(encoded);
            }
            "filename" => {
                let raw = raw.trim();
                let unquoted = raw
                    .strip_prefix('"')
                    .and_then(|r| r.strip_suffix('"'))
                    .map(|r| r.replace("\\\"", "\"").replace("\\\\", "\\"))
                    .unwrap_or_else(|| raw.to_string());
                plain = Some(unquoted);
            }
            _ => {}
        }
    }
    plain
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// `attachment; filename="<ASCII stand-in>"; filename*=UTF-8''<percent-encoded>` (RFC 6266):
/// the quoted form never holds a quote, a backslash or a control character.
pub fn content_disposition(name: &str) -> String {
    let fallback: String = name
        .chars()
        .map(|c| if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' { c } else { '_' })
        .collect();
    let encoded: String = name
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    format!("attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}")
}

/// What a `Range` header asks of an object of `size` bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum Wanted {
    Whole,
    /// First and last byte, inclusive.
    Part(u64, u64),
    Unsatisfiable,
}

/// One range (`bytes=a-b`, `bytes=a-`, `bytes=-n`); several ranges or another unit are answered
/// with the whole object (RFC 9110 lets a server ignore `Range`), as is a malformed header.
pub fn wanted(range: Option<&str>, size: u64) -> Wanted {
    let Some(spec) = range.and_then(|r| r.trim().strip_prefix("bytes=")) else {
        return Wanted::Whole;
    };
    if spec.contains(',') {
        return Wanted::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else { return Wanted::Whole };
    let (first, last) = (first.trim(), last.trim());
    match (first.parse::<u64>(), last.parse::<u64>()) {
        (Ok(a), Ok(b)) if a <= b => {
            if a >= size {
                Wanted::Unsatisfiable
            } else {
                Wanted::Part(a, b.min(size - 1))
            }
        }
        (Ok(a), Err(_)) if last.is_empty() => {
            if a >= size {
                Wanted::Unsatisfiable
            } else {
                Wanted::Part(a, size - 1)
            }
        }
        (Err(_), Ok(n)) if first.is_empty() => {
            if n == 0 || size == 0 {
                Wanted::Unsatisfiable
            } else {
                Wanted::Part(size - n.min(size), size - 1)
            }
        }
        _ => Wanted::Whole,
    }
}

/// Does an `If-None-Match` (or `If-Range`) list name this ETag? Weak comparison, `*` matches.
fn names_etag(value: Option<&HeaderValue>, etag: &str) -> bool {
    value.and_then(|v| v.to_str().ok()).is_some_and(|v| {
        v.split(',').map(str::trim).any(|t| t == "*" || t.trim_start_matches("W/") == etag)
    })
}

async fn content(
    State(state): State<AppState>,
    _user: User,
    PathIds(episode_id, id): PathIds,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let found: File = of_episode(&state, episode_id, id, false).await?;
    let etag = format!("\"{}\"", found.sha256);
    let mut common = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        common.insert(header::ETAG, v);
    }
    common.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    common.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    if names_etag(headers.get(header::IF_NONE_MATCH), &etag) {
        return Ok((StatusCode::NOT_MODIFIED, common).into_response());
    }
    let size = u64::try_from(found.size).unwrap_or(0);
    // `If-Range` with another ETag: the representation changed, send it whole.
    let range_header = match headers.get(header::IF_RANGE) {
        Some(_) if !names_etag(headers.get(header::IF_RANGE), &etag) => None,
        _ => headers.get(header::RANGE).and_then(|v| v.to_str().ok()),
    };
    let (status, range) = match wanted(range_header, size) {
        Wanted::Whole => (StatusCode::OK, None),
        Wanted::Part(a, b) => (StatusCode::PARTIAL_CONTENT, Some((a, b))),
        Wanted::Unsatisfiable => {
            return Err(ApiError::RangeNotSatisfiable {
                detail: format!("the file has {size} bytes"),
                size,
            });
        }
    };
    let key = storage::file_key(episode_id, id);
    let options = GetOptions {
        range: range.map(|(a, b)| GetRange::Bounded(a..b + 1)),
        ..GetOptions::default()
    };
    let stream = if size == 0 {
        // Some stores refuse a read of nothing; there is nothing to send.
        None
    } else {
        let got = state.storage.store().get_opts(&key, options).await.map_err(|e| {
            ApiError::Internal(anyhow::anyhow!("file {id}: reading its object failed: {e}"))
        })?;
        Some(storage::into_stream(got))
    };
    let length = range.map(|(a, b)| b - a + 1).unwrap_or(size);
    if let Ok(v) = HeaderValue::from_str(&found.content_type) {
        common.insert(header::CONTENT_TYPE, v);
    }
    common.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    if let Ok(v) = HeaderValue::from_str(&content_disposition(&found.name)) {
        common.insert(header::CONTENT_DISPOSITION, v);
    }
    if let Some((a, b)) = range
        && let Ok(v) = HeaderValue::from_str(&format!("bytes {a}-{b}/{size}"))
    {
        common.insert(header::CONTENT_RANGE, v);
    }
    let body = match stream {
        Some(stream) => Body::from_stream(stream),
        None => Body::empty(),
    };
    Ok((status, common, body).into_response())
}

async fn delete(
    State(state): State<AppState>,
    user: User,
    PathIds(episode_id, id): PathIds,
    headers: HeaderMap,
    QueryParams(query): QueryParams<DeleteQuery>,
) -> Result<Response, ApiError> {
    let permanent = query.permanent;
    let fingerprint = format!("DELETE /episodes/{episode_id}/files/{id}?permanent={permanent}");
    let command = Command::DeleteFile { episode_id, file_id: id, permanent };
    let ids = ItemIds { id, episode_id };
    let read = |id, left| read_applied(&state, episode_id, id, left);
    accept::delete(&state, &user, &headers, (command, permanent), ids, &fingerprint, read).await
}

/// The file as `command` leaves it, by the rules the worker runs: the 202 body.
fn preview(
    user: &User,
    current: Option<File>,
    command: &Command,
    now: DateTime<Utc>,
) -> Result<Option<serde_json::Value>, ApiError> {
    accept::preview(user, current, now, |state, at| file::change(state, None, command, at))
}

/// How a write that waited reads the applied file.
async fn read_applied(
    state: &AppState,
    episode_id: Uuid,
    id: Uuid,
    left: Option<serde_json::Value>,
) -> Result<Applied, ApiError> {
    applied_of_episode::<File>(state, episode_id, id, "files", left).await
}

async fn read(
    State(state): State<AppState>,
    _user: User,
    PathIds(episode_id, id): PathIds,
) -> Result<Response, ApiError> {
    let found: File = of_episode(&state, episode_id, id, false).await?;
    Ok(axum::Json(Data { data: found }).into_response())
}

async fn list(
    State(state): State<AppState>,
    _user: User,
    PathId(episode_id): PathId,
    QueryParams(query): QueryParams<PageQuery>,
) -> Result<Response, ApiError> {
    episode_page::<File>(&state, episode_id, query).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        for (header, size, expect) in [
            (None, 10, Wanted::Whole),
            (Some("bytes=0-4"), 10, Wanted::Part(0, 4)),
            (Some("bytes=5-"), 10, Wanted::Part(5, 9)),
            (Some("bytes=-3"), 10, Wanted::Part(7, 9)),
            (Some("bytes=-30"), 10, Wanted::Part(0, 9)),
            (Some("bytes=8-100"), 10, Wanted::Part(8, 9)),
            (Some("bytes=10-"), 10, Wanted::Unsatisfiable),
            (Some("bytes=10-20"), 10, Wanted::Unsatisfiable),
            (Some("bytes=-0"), 10, Wanted::Unsatisfiable),
            (Some("bytes=0-0"), 0, Wanted::Unsatisfiable),
            (Some("bytes=0-1,4-5"), 10, Wanted::Whole),
            (Some("bytes=5-2"), 10, Wanted::Whole),
            (Some("items=0-1"), 10, Wanted::Whole),
            (Some("bytes=x-1"), 10, Wanted::Whole),
        ] {
            assert_eq!(wanted(header, size), expect, "{header:?} of {size}");
        }
    }

    #[test]
    fn dispositions_are_quoted_safely() {
        assert_eq!(
            content_disposition("take 1.wav"),
            "attachment; filename=\"take 1.wav\"; filename*=UTF-8''take%201.wav"
        );
        assert_eq!(
            content_disposition("a\"b\\c é.txt"),
            "attachment; filename=\"a_b_c _.txt\"; filename*=UTF-8''a%22b%5Cc%20%C3%A9.txt"
        );
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_DISPOSITION,
            HeaderValue::from_static("attachment; filename=\"x.wav\"; filename*=UTF-8''%C3%A9.wav"),
        );
        assert_eq!(disposition_name(&headers).as_deref(), Some("é.wav"));
        headers.insert(
            header::CONTENT_DISPOSITION,
            HeaderValue::from_static("attachment; filename=\"say \\\"hi\\\".txt\""),
        );
        assert_eq!(disposition_name(&headers).as_deref(), Some("say \"hi\".txt"));
        assert!(is_upload(&axum::http::Method::POST, "/api/v1/episodes/abc/files"));
        assert!(!is_upload(&axum::http::Method::POST, "/api/v1/episodes/abc/files/x"));
        assert!(!is_upload(&axum::http::Method::GET, "/api/v1/episodes/abc/files"));
    }
}
