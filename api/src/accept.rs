//! Accepting a write: the command is recorded (`pending`, with its Idempotency-Key), published
//! with a publisher confirm, and only then answered 202. With `Prefer: wait=N` the request
//! stays open until the worker applied or rejected the command, or N seconds ran out.
//!
//! Idempotency: a keyed command's id is UUIDv5 of (user, key), so a retry finds the first
//! command's row and gets the first answer; the same key with another body gets 422.

use std::future::Future;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, FromQueryResult};
use sha2::{Digest, Sha256};
use showrunner_shared::contracts::{
    Actor, COMMAND_VERSION, Command, CommandEnvelope, DeleteType, OutgoingEvent,
};
use showrunner_shared::db::sql;
use showrunner_shared::resource::{At, CommandStatus, Rejection, RejectionCode};
use showrunner_shared::settled::Settled;
use uuid::Uuid;

use crate::error::ApiError;
use crate::extract::User;
use crate::recorder::{NewCommand, RecordError};
use crate::state::AppState;
use crate::waiters::Wait;

/// Namespace of keyed command ids.
const IDEMPOTENCY_NAMESPACE: Uuid = Uuid::from_u128(0x6b1f_3c8e_4d2a_4f5b_9e7c_1a2b_3c4d_5e6f);
const IDEMPOTENCY_KEY_MAX: usize = 200;

/// `{data, commandId}`: a write's answer, 202 (`data` as the command will leave the resource)
/// or 200/201 after `Prefer: wait` (`data` as the command left it).
#[derive(serde::Serialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct Written<T> {
    pub data: T,
    pub command_id: Uuid,
}

/// What an update's 202 says when the resource cannot be previewed (not readable yet, or its
/// rules refuse the change as things stand): its ids and the changes asked for.
#[derive(serde::Serialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct Known<I, C> {
    #[serde(flatten)]
    pub ids: I,
    #[serde(flatten)]
    pub changes: C,
}

/// What a delete's 202 says: the resource's ids and how it is deleted.
#[derive(serde::Serialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct Deleting<I> {
    #[serde(flatten)]
    pub ids: I,
    pub delete_type: DeleteType,
}

/// An episode's id, as its 202 bodies name it.
#[derive(serde::Serialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct EpisodeIds {
    pub id: Uuid,
}

/// A composition's or file's ids, as their 202 bodies name them.
#[derive(serde::Serialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ItemIds {
    pub id: Uuid,
    pub episode_id: Uuid,
}

/// What the caller asked for beside the body.
pub struct WriteOptions {
    pub idempotency_key: Option<String>,
    pub wait: Option<Duration>,
}

impl WriteOptions {
    pub fn from_headers(headers: &HeaderMap, max_wait: Duration) -> Result<Self, ApiError> {
        let idempotency_key = match headers.get("idempotency-key") {
            None => None,
            Some(v) => {
                let key = v
                    .to_str()
                    .map_err(|_| ApiError::bad_param("Idempotency-Key", "must be visible ASCII"))?;
                if key.is_empty() || key.len() > IDEMPOTENCY_KEY_MAX {
                    return Err(ApiError::bad_param(
                        "Idempotency-Key",
                        format!("must be 1 to {IDEMPOTENCY_KEY_MAX} characters"),
                    ));
                }
                Some(key.to_string())
            }
        };
        Ok(Self { idempotency_key, wait: prefer_wait(headers, max_wait) })
    }
}

/// `Prefer: wait=N` (RFC 7240), capped at `max`.
fn prefer_wait(headers: &HeaderMap, max: Duration) -> Option<Duration> {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split([',', ';']))
        .filter_map(|p| p.trim().strip_prefix("wait="))
        .filter_map(|n| n.trim().parse::<u64>().ok())
        .next()
        .map(|secs| Duration::from_secs(secs).min(max))
}

/// How a write ended, for the route to render.
pub enum Outcome {
    /// Accepted, not (yet) applied: 202 with the stored first answer.
    Accepted { command_id: Uuid, body: serde_json::Value },
    /// Settled within the wait; `body` is the 202 to answer if the result cannot be read.
    Applied { command_id: Uuid, body: serde_json::Value, heard: Heard },
}

/// What a request that waited heard of its settled command, so what it still has to read.
pub enum Heard {
    /// Settled: the command's row says whether it was applied, then the resource is read.
    Settled,
    /// Applied: only the resource (this id) is read.
    Applied(Uuid),
    /// Applied, and the resource as the command left it: nothing is read.
    AppliedAs(Uuid, std::sync::Arc<str>),
}

#[derive(FromQueryResult)]
struct Existing {
    request_hash: Option<String>,
    response: Option<serde_json::Value>,
    status: CommandStatus,
    message: Option<serde_json::Value>,
}

#[derive(FromQueryResult)]
pub struct CommandState {
    pub status: CommandStatus,
    pub error: Option<String>,
    pub error_code: Option<RejectionCode>,
}

/// Records, publishes and (optionally) waits for one command. `data` is the resource as it
/// will be, for the 202 body.
pub async fn submit(
    state: &AppState,
    user: &User,
    command: Command,
    data: serde_json::Value,
    accepted_at: DateTime<Utc>,
    request_fingerprint: &[u8],
    options: &WriteOptions,
) -> Result<Outcome, ApiError> {
    let hash = fingerprint(command.kind(), request_fingerprint);
    let command_id = match &options.idempotency_key {
        Some(key) => {
            Uuid::new_v5(&IDEMPOTENCY_NAMESPACE, format!("{}:{key}", user.id()).as_bytes())
        }
        None => Uuid::now_v7(),
    };
    if options.idempotency_key.is_some()
        && let Some(outcome) = replay(state, command_id, &hash, options).await?
    {
        return Ok(outcome);
    }

    let publisher = state.broker.publisher().ok_or_else(unavailable)?;
    let envelope = CommandEnvelope {
        id: command_id,
        version: COMMAND_VERSION,
        actor: Actor { id: user.id(), name: user.0.name.clone() },
        accepted_at,
        command,
    };
    let body = serde_json::to_value(Written { data, command_id }).map_err(anyhow::Error::from)?;
    let bytes = serde_json::to_vec(&envelope).map_err(anyhow::Error::from)?;
    let mut message = serde_json::to_value(&envelope).map_err(anyhow::Error::from)?;
    // Kept beside the envelope so that a sweeper's republish continues the same trace.
    let traceparent = crate::observe::current_traceparent();
    if let (Some(tp), Some(fields)) = (&traceparent, message.as_object_mut()) {
        fields.insert("traceparent".into(), tp.as_str().into());
    }
    let row = NewCommand {
        id: command_id,
        user_id: user.id(),
        kind: envelope.command.kind(),
        resource_type: envelope.command.resource().0,
        resource_id: envelope.command.resource().1,
        idempotency_key: options.idempotency_key.clone(),
        request_hash: hash.clone(),
        message: message.to_string(),
        // Only a keyed command is ever answered again from its row.
        response: options.idempotency_key.as_ref().map(|_| body.to_string()),
        accepted_at: envelope.accepted_at,
    };
    let inserted = state.recorder.insert(row).await.map_err(|e| match e {
        RecordError::Db(e) => ApiError::from(e),
        RecordError::Stopped => unavailable(),
    })?;
    if !inserted {
        // A concurrent request with the same key won the insert: answer as its retry.
        return replay(state, command_id, &hash, options).await?.ok_or_else(|| {
            ApiError::Conflict("a request with this Idempotency-Key is in flight".into())
        });
    }

    let mut wait = options.wait.map(|_| state.waiters.register(command_id));
    if let Err(error) = showrunner_shared::commands::publish(
        &publisher,
        state.settings.amqp.partitions,
        &envelope,
        &bytes,
        traceparent.as_deref(),
    )
    .await
    {
        tracing::warn!(%error, %command_id, "command publish failed");
        // Not confirmed, so not accepted. Without a key, forget it. With one, keep the row: an
        // unconfirmed publish may still have reached the queue, and the client's retry with the
        // same key must then find this command (and publish this same message again), not
        // start a second one with another episode id.
        if options.idempotency_key.is_none() {
            state
                .db
                .execute_raw(sql(
                    "DELETE FROM commands WHERE id = $1 AND status = 'pending'",
                    [command_id.into()],
                ))
                .await?;
            return Err(unavailable());
        }
        return Err(ApiError::Unavailable {
            detail: "the message broker did not confirm the command; retry with the same \
                     Idempotency-Key: the command is applied at most once"
                .into(),
            retry_after_secs: 5,
        });
    }
    if let (Some(wait), Some(limit)) = (wait.as_mut(), options.wait)
        && let Some(settled) = wait_for(state, limit, wait).await
    {
        let resource_id = envelope.command.resource().1;
        let heard = match settled {
            Settled::AppliedAs(json) => Heard::AppliedAs(resource_id, json),
            Settled::Applied => Heard::Applied(resource_id),
            Settled::Settled => Heard::Settled,
        };
        return Ok(Outcome::Applied { command_id, body, heard });
    }
    Ok(Outcome::Accepted { command_id, body })
}

/// Waits for the command to settle, and says what was heard of it; `None` when `limit` ran
/// out first, or when the api began to shut down (the drain must not wait out a long
/// `Prefer: wait`: 202 is still true).
async fn wait_for(state: &AppState, limit: Duration, wait: &mut Wait) -> Option<Settled> {
    tokio::select! {
        done = tokio::time::timeout(limit, wait.done()) => done.ok(),
        () = state.shutdown.cancelled() => None,
    }
}

/// The first answer of a keyed command, if there is one.
async fn replay(
    state: &AppState,
    command_id: Uuid,
    hash: &str,
    options: &WriteOptions,
) -> Result<Option<Outcome>, ApiError> {
    let existing = Existing::find_by_statement(sql(
        "SELECT request_hash, response, status, message FROM commands WHERE id = $1",
        [command_id.into()],
    ))
    .one(&state.db)
    .await?;
    let Some(existing) = existing else {
        return Ok(None);
    };
    if existing.request_hash.as_deref() != Some(hash) {
        return Err(ApiError::Validation {
            detail: "this Idempotency-Key was used with a different request".into(),
            errors: vec![showrunner_shared::domain::FieldError::new(
                "Idempotency-Key",
                "reused with a different request",
            )],
        });
    }
    if existing.status == CommandStatus::Pending
        && let Some(message) = existing.message
    {
        // Still pending: its first publish may not have been confirmed (503). Publish the
        // stored message again, so a 202 now means confirmed; a copy that did arrive is a
        // duplicate the worker skips.
        republish(state, message).await?;
    }
    let body = existing.response.unwrap_or_else(|| serde_json::json!({ "commandId": command_id }));
    if let Some(limit) = options.wait {
        let mut wait = state.waiters.register(command_id);
        if command_state(state, command_id)
            .await?
            .is_some_and(|s| s.status != CommandStatus::Pending)
            || wait_for(state, limit, &mut wait).await.is_some()
        {
            // A retry: the command's row is read for its outcome, as it always was.
            return Ok(Some(Outcome::Applied { command_id, body, heard: Heard::Settled }));
        }
    }
    Ok(Some(Outcome::Accepted { command_id, body }))
}

async fn republish(state: &AppState, mut message: serde_json::Value) -> Result<(), ApiError> {
    let publisher = state.broker.publisher().ok_or_else(unavailable)?;
    // The stored message carries the first request's trace beside the envelope: the copy
    // continues that trace.
    let traceparent = message
        .as_object_mut()
        .and_then(|fields| fields.remove("traceparent"))
        .and_then(|tp| tp.as_str().map(str::to_string));
    let envelope: CommandEnvelope = serde_json::from_value(message).map_err(anyhow::Error::from)?;
    let bytes = serde_json::to_vec(&envelope).map_err(anyhow::Error::from)?;
    showrunner_shared::commands::publish(
        &publisher,
        state.settings.amqp.partitions,
        &envelope,
        &bytes,
        traceparent.as_deref(),
    )
    .await
    .map_err(|error| {
        tracing::warn!(%error, command_id = %envelope.id, "command republish failed");
        unavailable()
    })
}

pub async fn command_state(
    state: &AppState,
    command_id: Uuid,
) -> Result<Option<CommandState>, ApiError> {
    Ok(CommandState::find_by_statement(sql(
        "SELECT status, error, error_code FROM commands WHERE id = $1",
        [command_id.into()],
    ))
    .one(&state.db)
    .await?)
}

/// The problem a rejected command answers with when the caller waited for it.
pub fn rejection(state: &CommandState) -> ApiError {
    let reason = state.error.clone().unwrap_or_else(|| "the command was rejected".into());
    match state.error_code {
        Some(RejectionCode::NotFound) => ApiError::NotFound(reason),
        Some(RejectionCode::Gone) => ApiError::Gone(reason),
        Some(RejectionCode::PreconditionFailed) => ApiError::PreconditionFailed(reason),
        Some(RejectionCode::Conflict) | None => ApiError::Conflict(reason),
    }
}

/// The 202 answer: the stored body, `Location` of the command's status.
pub fn accepted(command_id: Uuid, body: serde_json::Value) -> axum::response::Response {
    use axum::response::IntoResponse;
    let mut response = (StatusCode::ACCEPTED, axum::Json(body)).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/api/v1/commands/{command_id}")) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

fn fingerprint(kind: &str, request: &[u8]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(kind.as_bytes());
    hasher.update([0]);
    hasher.update(request);
    hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn unavailable() -> ApiError {
    ApiError::Unavailable {
        detail: "the message broker is unavailable; nothing was accepted, retry later".into(),
        retry_after_secs: 5,
    }
}

/// The options of a write request, `Prefer: wait` capped at `http.max_wait_secs`.
pub fn write_options(state: &AppState, headers: &HeaderMap) -> Result<WriteOptions, ApiError> {
    WriteOptions::from_headers(headers, Duration::from_secs(state.settings.http.max_wait_secs))
}

/// A request that waited says how long it was willing to (RFC 7240 `Preference-Applied`):
/// `Prefer: wait` above `http.max_wait_secs` is cut to it.
pub fn wait_applied(
    result: Result<axum::response::Response, ApiError>,
    options: &WriteOptions,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let mut response = result.unwrap_or_else(IntoResponse::into_response);
    if let Some(wait) = options.wait
        && let Ok(value) = HeaderValue::from_str(&format!("wait={}", wait.as_secs()))
    {
        response.headers_mut().insert("preference-applied", value);
    }
    Ok(response)
}

/// Renders the outcome: 202 with the first answer, or the applied resource that `read` gives
/// for the command's resource id (and the resource as the worker left it, when its
/// notification carried it: then `read` reads nothing), with its `Location` on 201 (or the
/// problem that rejected it).
pub async fn finish<F, Fut>(
    state: &AppState,
    outcome: Outcome,
    applied_status: StatusCode,
    read: F,
) -> Result<axum::response::Response, ApiError>
where
    F: FnOnce(Uuid, Option<serde_json::Value>) -> Fut,
    Fut: Future<Output = Result<Applied, ApiError>>,
{
    use axum::response::IntoResponse;
    match outcome {
        Outcome::Accepted { command_id, body } => Ok(accepted(command_id, body)),
        Outcome::Applied { command_id, body: accepted_body, heard } => {
            // The command is accepted (and settled): a database too busy to read the result
            // now must not answer 503, which says "not accepted"; the 202 stays true.
            let found = async {
                match heard {
                    // Our own worker's JSON; were it unreadable, the resource is read instead.
                    Heard::AppliedAs(id, json) => read(id, serde_json::from_str(&json).ok()).await,
                    Heard::Applied(id) => read(id, None).await,
                    Heard::Settled => read(check_applied(state, command_id).await?, None).await,
                }
            };
            let applied = match found.await {
                Err(ApiError::Unavailable { .. }) => {
                    return Ok(accepted(command_id, accepted_body));
                }
                other => other?,
            };
            let body = Written { data: applied.data, command_id };
            let mut response = (applied_status, axum::Json(body)).into_response();
            if applied_status == StatusCode::CREATED
                && let Ok(location) = HeaderValue::from_str(&applied.location)
            {
                response.headers_mut().insert(header::LOCATION, location);
            }
            Ok(response)
        }
    }
}

/// The answer to a permanent delete that was applied: 204, its problem if it was rejected, or
/// the 202 of the accepted command when its outcome cannot be read now.
pub async fn finish_permanent_delete(
    state: &AppState,
    command_id: Uuid,
    accepted_body: serde_json::Value,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    match check_applied(state, command_id).await {
        Err(ApiError::Unavailable { .. }) => Ok(accepted(command_id, accepted_body)),
        other => other.map(|_| StatusCode::NO_CONTENT.into_response()),
    }
}

/// An applied resource as a write answers with it: its JSON and where it lives.
pub struct Applied {
    pub data: serde_json::Value,
    pub location: String,
}

/// The command's resource id if it was applied; its problem if it was rejected.
pub async fn check_applied(state: &AppState, command_id: Uuid) -> Result<Uuid, ApiError> {
    #[derive(FromQueryResult)]
    struct Row {
        status: CommandStatus,
        error: Option<String>,
        error_code: Option<RejectionCode>,
        resource_id: Uuid,
    }
    let row = Row::find_by_statement(sql(
        "SELECT status, error, error_code, resource_id FROM commands WHERE id = $1",
        [command_id.into()],
    ))
    .one(&state.db)
    .await?
    .ok_or_else(|| anyhow::anyhow!("command {command_id} vanished"))?;
    if row.status == CommandStatus::Rejected {
        return Err(rejection(&CommandState {
            status: row.status,
            error: row.error,
            error_code: row.error_code,
        }));
    }
    Ok(row.resource_id)
}

/// The moment a write is accepted, at the database's precision (microseconds), so the 202
/// preview and the stored row agree.
pub fn now() -> DateTime<Utc> {
    use chrono::SubsecRound;
    Utc::now().trunc_subsecs(6)
}

/// The resource as `command` leaves it by its resource's own rule (`rule`: the same pure
/// function the worker runs): the 202 body. `None` if the rule refuses it as things stand (the
/// worker decides; it may see otherwise).
pub fn preview<R: serde::Serialize>(
    user: &User,
    mut current: Option<R>,
    now: DateTime<Utc>,
    rule: impl FnOnce(&mut Option<R>, &At<'_>) -> Result<OutgoingEvent, Rejection>,
) -> Result<Option<serde_json::Value>, ApiError> {
    let actor = Actor { id: user.id(), name: user.0.name.clone() };
    // The command id is not known yet; it only names the event, which a preview drops.
    let at = At { command_id: Uuid::nil(), actor: &actor, accepted_at: now, now };
    if rule(&mut current, &at).is_err() {
        return Ok(None);
    }
    Ok(Some(serde_json::to_value(current).map_err(anyhow::Error::from)?))
}

/// Submits a create's or an update's command and answers it: 202, or after `Prefer: wait` the
/// resource as the command left it (`read`) with `applied_status`.
#[allow(clippy::too_many_arguments)]
pub async fn answer<F, Fut>(
    state: &AppState,
    user: &User,
    command: Command,
    data: serde_json::Value,
    now: DateTime<Utc>,
    fingerprint: &str,
    options: &WriteOptions,
    applied_status: StatusCode,
    read: F,
) -> Result<axum::response::Response, ApiError>
where
    F: FnOnce(Uuid, Option<serde_json::Value>) -> Fut,
    Fut: Future<Output = Result<Applied, ApiError>>,
{
    let outcome = submit(state, user, command, data, now, fingerprint.as_bytes(), options).await?;
    wait_applied(finish(state, outcome, applied_status, read).await, options)
}

/// `?permanent=` of a DELETE.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteQuery {
    #[serde(default)]
    pub permanent: bool,
}

/// A DELETE's command submitted and answered. Only admins delete permanently; a permanent
/// delete that waited answers from its command (the row is gone), a soft one with the
/// resource as it was left (`read`). `ids` is the 202 body without its `deleteType`.
pub async fn delete<F, Fut>(
    state: &AppState,
    user: &User,
    headers: &HeaderMap,
    (command, permanent): (Command, bool),
    ids: impl serde::Serialize,
    fingerprint: &str,
    read: F,
) -> Result<axum::response::Response, ApiError>
where
    F: FnOnce(Uuid, Option<serde_json::Value>) -> Fut,
    Fut: Future<Output = Result<Applied, ApiError>>,
{
    if permanent && !user.is_admin() {
        return Err(ApiError::Forbidden("only admins delete permanently".into()));
    }
    let options = write_options(state, headers)?;
    let data = serde_json::to_value(Deleting { ids, delete_type: DeleteType::of(permanent) })
        .map_err(anyhow::Error::from)?;
    use axum::response::IntoResponse;
    let outcome =
        submit(state, user, command, data, now(), fingerprint.as_bytes(), &options).await?;
    let result = match outcome {
        Outcome::Applied { command_id, body, heard: Heard::Settled } if permanent => {
            finish_permanent_delete(state, command_id, body).await
        }
        // Known applied: the row is gone, nothing to read.
        Outcome::Applied { .. } if permanent => Ok(StatusCode::NO_CONTENT.into_response()),
        other => finish(state, other, StatusCode::OK, read).await,
    };
    wait_applied(result, &options)
}

/// A request body as `T`, naming the field that fails. serde would also read a struct from an
/// array of its fields; the API speaks objects only.
pub fn typed<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Result<T, ApiError> {
    if !value.is_object() {
        return Err(ApiError::field("body", "must be a JSON object"));
    }
    crate::extract::parse_json(value.to_string().as_bytes())
}
