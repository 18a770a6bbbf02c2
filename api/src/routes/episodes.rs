//! `/episodes`: writes become commands (see `accept`), reads come from PostgreSQL.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, SubsecRound, Utc};
use sea_orm::{FromQueryResult, Value};
use serde::Deserialize;
use showrunner_shared::contracts::{Actor, Command, Episode, EpisodeChanges};
use showrunner_shared::db::{EpisodeRow, sql};
use showrunner_shared::domain::{Categories, Description, EpisodeStatus, Title};
use uuid::Uuid;

use crate::accept::{self, Outcome, WriteOptions};
use crate::error::ApiError;
use crate::extract::{JsonBody, PathId, QueryParams, User};
use crate::relay::presence;
use crate::routes::{Page, page_limit};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/episodes", get(list).post(create))
        .route("/episodes/{id}", get(read).patch(update).delete(delete))
        .route("/episodes/{id}/viewers", get(viewers))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateBody {
    title: Title,
    #[serde(default)]
    description: Description,
    #[serde(default = "draft")]
    status: EpisodeStatus,
    #[serde(default)]
    categories: Categories,
}

fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
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
    let now = now();
    let episode_id = Uuid::now_v7();
    let episode = Episode {
        id: episode_id,
        title: body.title.as_str().to_string(),
        description: body.description.as_str().to_string(),
        status: body.status,
        categories: body.categories.as_slice().to_vec(),
        created_by: user.id(),
        updated_by: user.id(),
        created_at: now,
        updated_at: now,
        deleted_at: None,
        version: 1,
    };
    let command = Command::CreateEpisode {
        episode_id,
        title: body.title,
        description: body.description,
        status: body.status,
        categories: body.categories,
    };
    let data = serde_json::to_value(&episode).map_err(anyhow::Error::from)?;
    let outcome =
        accept::submit(&state, &user, command, data, now, fingerprint.as_bytes(), &options).await?;
    wait_applied(finish(&state, outcome, StatusCode::CREATED).await, &options)
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
    // The resource as it will be, if the episode is already there (a PATCH may follow a
    // create that is not applied yet: then only the changes are known).
    let data = match find(&state, id, false).await? {
        Some(mut e) => {
            apply_preview(&mut e, &changes);
            serde_json::to_value(e).map_err(anyhow::Error::from)?
        }
        None => {
            let mut v = serde_json::to_value(&changes).map_err(anyhow::Error::from)?;
            v["id"] = serde_json::json!(id);
            v
        }
    };
    let command = Command::UpdateEpisode { episode_id: id, changes };
    let outcome =
        accept::submit(&state, &user, command, data, now(), fingerprint.as_bytes(), &options)
            .await?;
    wait_applied(finish(&state, outcome, StatusCode::OK).await, &options)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteQuery {
    #[serde(default)]
    permanent: bool,
}

async fn delete(
    State(state): State<AppState>,
    user: User,
    PathId(id): PathId,
    headers: HeaderMap,
    QueryParams(query): QueryParams<DeleteQuery>,
) -> Result<Response, ApiError> {
    if query.permanent && !user.is_admin() {
        return Err(ApiError::Forbidden("only admins delete permanently".into()));
    }
    let options = write_options(&state, &headers)?;
    let fingerprint = format!("DELETE /episodes/{id}?permanent={}", query.permanent);
    let data = serde_json::json!({ "id": id, "deleteType": if query.permanent { "permanent" } else { "soft" } });
    let command = Command::DeleteEpisode { episode_id: id, permanent: query.permanent };
    let outcome =
        accept::submit(&state, &user, command, data, now(), fingerprint.as_bytes(), &options)
            .await?;
    let result = match outcome {
        Outcome::Applied { command_id, body } if query.permanent => {
            match check_applied(&state, command_id).await {
                Err(ApiError::Unavailable { .. }) => Ok(accept::accepted(command_id, body)),
                other => other.map(|_| StatusCode::NO_CONTENT.into_response()),
            }
        }
        other => finish(&state, other, StatusCode::OK).await,
    };
    wait_applied(result, &options)
}

/// A request that waited says how long it was willing to (RFC 7240 `Preference-Applied`):
/// `Prefer: wait` above `http.max_wait_secs` is cut to it.
fn wait_applied(
    result: Result<Response, ApiError>,
    options: &WriteOptions,
) -> Result<Response, ApiError> {
    let mut response = result.unwrap_or_else(IntoResponse::into_response);
    if let Some(wait) = options.wait
        && let Ok(value) = HeaderValue::from_str(&format!("wait={}", wait.as_secs()))
    {
        response.headers_mut().insert("preference-applied", value);
    }
    Ok(response)
}

/// Renders the outcome: 202 with the first answer, or the applied resource (or the problem
/// that rejected it).
async fn finish(
    state: &AppState,
    outcome: Outcome,
    applied_status: StatusCode,
) -> Result<Response, ApiError> {
    match outcome {
        Outcome::Accepted { command_id, body } => Ok(accept::accepted(command_id, body)),
        Outcome::Applied { command_id, body: accepted } => {
            // The command is accepted (and applied): a database too busy to read the result
            // now must not answer 503, which says "not accepted"; the 202 stays true.
            let read = async {
                let resource_id = check_applied(state, command_id).await?;
                Ok::<_, ApiError>((resource_id, find(state, resource_id, true).await?))
            };
            let (resource_id, episode) = match read.await {
                Err(ApiError::Unavailable { .. }) => {
                    return Ok(accept::accepted(command_id, accepted));
                }
                other => other?,
            };
            let episode = episode.ok_or_else(|| {
                ApiError::NotFound(format!("episode {resource_id} does not exist"))
            })?;
            let body = serde_json::json!({ "data": episode, "commandId": command_id });
            let mut response = (applied_status, axum::Json(body)).into_response();
            if applied_status == StatusCode::CREATED
                && let Ok(location) =
                    HeaderValue::from_str(&format!("/api/v1/episodes/{resource_id}"))
            {
                response.headers_mut().insert(header::LOCATION, location);
            }
            Ok(response)
        }
    }
}

/// The command's resource id if it was applied; its problem if it was rejected.
async fn check_applied(state: &AppState, command_id: Uuid) -> Result<Uuid, ApiError> {
    #[derive(FromQueryResult)]
    struct Row {
        status: String,
        error: Option<String>,
        error_code: Option<String>,
        resource_id: Uuid,
    }
    let row = Row::find_by_statement(sql(
        "SELECT status, error, error_code, resource_id FROM commands WHERE id = $1",
        [command_id.into()],
    ))
    .one(&state.db)
    .await?
    .ok_or_else(|| anyhow::anyhow!("command {command_id} vanished"))?;
    if row.status == "rejected" {
        return Err(accept::rejection(&accept::CommandState {
            status: row.status,
            error: row.error,
            error_code: row.error_code,
        }));
    }
    Ok(row.resource_id)
}

fn write_options(state: &AppState, headers: &HeaderMap) -> Result<WriteOptions, ApiError> {
    WriteOptions::from_headers(
        headers,
        std::time::Duration::from_secs(state.settings.http.max_wait_secs),
    )
}

fn typed<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Result<T, ApiError> {
    // serde would also read a struct from an array of its fields; the API speaks objects only.
    if !value.is_object() {
        return Err(ApiError::field("body", "must be a JSON object"));
    }
    crate::extract::parse_json(value.to_string().as_bytes())
}

fn apply_preview(e: &mut Episode, c: &EpisodeChanges) {
    if let Some(t) = &c.title {
        e.title = t.as_str().to_string();
    }
    if let Some(d) = &c.description {
        e.description = d.as_str().to_string();
    }
    if let Some(s) = c.status {
        e.status = s;
    }
    if let Some(cs) = &c.categories {
        e.categories = cs.as_slice().to_vec();
    }
}

/// The episode; soft-deleted ones only when `include_deleted`.
async fn find(
    state: &AppState,
    id: Uuid,
    include_deleted: bool,
) -> Result<Option<Episode>, ApiError> {
    let row = EpisodeRow::find_by_statement(sql(
        "SELECT * FROM episodes WHERE id = $1 AND ($2 OR deleted_at IS NULL)",
        [id.into(), include_deleted.into()],
    ))
    .one(&state.db)
    .await?;
    Ok(row.map(Episode::try_from).transpose()?)
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
    Ok(axum::Json(serde_json::json!({ "data": episode, "viewers": viewers })).into_response())
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
    Ok(axum::Json(serde_json::json!({ "data": viewers })).into_response())
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
    let rows = EpisodeRow::find_by_statement(sql(
        "SELECT * FROM episodes WHERE deleted_at IS NULL \
         AND ($1::text IS NULL OR status = $1) \
         AND ($2::text IS NULL OR categories @> ARRAY[$2::text]) \
         AND ($3::text IS NULL OR title ILIKE $3) \
         AND ($4::uuid IS NULL OR id < $4) \
         ORDER BY id DESC LIMIT $5",
        [
            status.map(|s| s.as_str().to_string()).into(),
            query.category.into(),
            pattern.into(),
            cursor.into(),
            Value::from(i64::from(limit) + 1),
        ],
    ))
    .all(&state.db)
    .await?;
    let page = Page::from_rows(
        rows.into_iter().map(Episode::try_from).collect::<Result<_, _>>()?,
        limit,
        |e| e.id,
    );
    Ok(axum::Json(page).into_response())
}
