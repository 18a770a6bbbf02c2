//! The WebSocket relay: `GET /api/v1/ws`. Every api instance consumes the live exchange through
//! one exclusive queue bound to everything (`#`) and fans the events out to its own clients;
//! binding per subscription was not worth it here, since the relay needs every episode and user
//! event anyway and one queue keeps the broker's work constant as clients come and go.

pub mod hub;
pub mod presence;
pub mod socket;

use axum::Router;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use serde::Deserialize;
use showrunner_shared::contracts::EventEnvelope;

use crate::error::ApiError;
use crate::extract::{authenticate, bearer};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/ws", any(upgrade))
}

#[derive(Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

async fn upgrade(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<TokenQuery>,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let token = bearer(&headers).map(str::to_string).or(query.token).ok_or_else(|| {
        ApiError::Unauthorized("a bearer token is required (header or ?token=)".into())
    })?;
    let user = authenticate(&state, &token)?;
    let max = state.settings.realtime.max_frame_bytes;
    // Small per-socket buffers: tungstenite's defaults (128 KiB to read) would make ten
    // thousand idle connections cost a gigabyte; a client's frames are small (a larger one
    // still arrives, the buffer is only the read chunk).
    Ok(ws
        .read_buffer_size(1024)
        .write_buffer_size(0)
        .max_write_buffer_size(max.max(1 << 20))
        .max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| async move {
            let _open = crate::observe::OpenSocket::open();
            socket::run(socket, state, user).await
        })
        .into_response())
}

/// The client frame of an event, built once per event for all its recipients.
pub fn frame_text(topic: &str, body: &[u8], traceparent: Option<&str>) -> Option<String> {
    let envelope: EventEnvelope = serde_json::from_slice(body).ok()?;
    Some(frame_of(&envelope, topic, traceparent))
}

pub fn frame_of(envelope: &EventEnvelope, topic: &str, traceparent: Option<&str>) -> String {
    // traceparent = version-traceid-spanid-flags
    let trace_id = traceparent.and_then(|t| t.split('-').nth(1));
    serde_json::json!({
        "op": "event",
        "id": envelope.id,
        "topic": topic,
        "event": envelope.event,
        "data": envelope.data,
        "traceId": trace_id,
    })
    .to_string()
}
