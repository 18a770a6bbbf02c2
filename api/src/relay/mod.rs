//! The WebSocket relay: `GET /api/v1/ws`. Every api instance consumes the live exchange through
//! one exclusive queue bound to everything (`#`) and fans the events out to its own clients;
//! binding per subscription was not worth it here, since the relay needs every episode and user
//! event anyway and one queue keeps the broker's work constant as clients come and go.

pub mod hub;
pub mod outlet;
pub mod presence;
pub mod socket;
pub mod wire;

use axum::Router;
use axum::body::Body;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::routing::any;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use sea_orm::{DatabaseConnection, DbErr, FromQueryResult};
use serde::Deserialize;
use showrunner_shared::contracts::EventEnvelope;
use showrunner_shared::db::sql;

use crate::error::ApiError;
use crate::extract::{QueryParams, authenticate, bearer};
use crate::relay::hub::Audience;
use crate::state::AppState;

/// One event as the event log keeps it, for those who read the log instead of the live queue
/// (a resuming client, a relay that reconnected).
#[derive(FromQueryResult)]
pub struct Logged {
    pub seq: i64,
    pub routing_key: String,
    pub body: String,
    pub traceparent: Option<String>,
}

/// Up to `limit` events sequenced after `after`, in order, up to `through` (a number the caller
/// knows to be final) or, with `or_published`, up to where the shipper recorded publishing if
/// that is further. Every number up to there is final; beyond it a number may still be
/// preceded by one that has not committed: the live stream brings those.
pub async fn logged_between(
    db: &DatabaseConnection,
    after: i64,
    through: i64,
    or_published: bool,
    limit: i64,
) -> Result<Vec<Logged>, DbErr> {
    Logged::find_by_statement(sql(
        "SELECT seq, routing_key, body, traceparent FROM event_log \
         WHERE seq > $1 AND seq <= CASE WHEN $3 THEN GREATEST($2, \
           (SELECT published_seq FROM event_log_shipper WHERE id = 1)) ELSE $2 END \
         ORDER BY seq LIMIT $4",
        [after.into(), through.into(), or_published.into(), limit.into()],
    ))
    .all(db)
    .await
}

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
    // Not axum's `Query`: its rejection (`?token=a&token=b`) is text/plain.
    QueryParams(query): QueryParams<TokenQuery>,
    // Taken before axum's extractor moves it: the relay owns the upgraded socket itself.
    on_upgrade: Option<Extension<OnUpgrade>>,
    // Only for its checks of the handshake (and their rejections).
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let token = bearer(&headers).map(str::to_string).or(query.token).ok_or_else(|| {
        ApiError::Unauthorized("a bearer token is required (header or ?token=)".into())
    })?;
    let user = authenticate(&state, &token).await?;
    // Who asks comes first; then whether it is a WebSocket handshake at all.
    let ws = ws.map_err(|rejection| {
        if rejection.status() == axum::http::StatusCode::METHOD_NOT_ALLOWED {
            ApiError::MethodNotAllowed(rejection.body_text())
        } else {
            ApiError::bad_param("upgrade", rejection.body_text())
        }
    })?;
    let per_user = state.settings.limits.max_connections_per_user;
    // Taken before the upgrade, so a user over the limit gets an HTTP answer it can read.
    let slot = state.hub.reserve(user.id(), per_user).ok_or_else(|| ApiError::TooManyRequests {
        detail: format!(
            "at most {per_user} WebSocket connections per user: close one before opening another"
        ),
        retry_after_secs: None,
    })?;
    drop(ws);
    let key = headers.get(header::SEC_WEBSOCKET_KEY).map(|k| k.as_bytes().to_vec());
    let (Some(Extension(on_upgrade)), Some(key)) = (on_upgrade, key) else {
        return Err(ApiError::bad_param("upgrade", "an HTTP/1.1 WebSocket handshake is required"));
    };
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(error) => {
                tracing::debug!(%error, "WebSocket upgrade failed");
                return;
            }
        };
        // The edge serves every connection on its own stream type: the socket comes back whole.
        let Ok(parts) = upgraded.downcast::<TokioIo<crate::edge::Counted>>() else {
            tracing::error!("upgraded connection is not the edge's TCP stream");
            return;
        };
        let (stream, keep) = parts.io.into_inner().into_parts();
        let _open = crate::observe::OpenSocket::open();
        socket::run(stream, keep, parts.read_buf, state, user, slot).await;
    });
    let accept = tungstenite::handshake::derive_accept_key(&key);
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    let accept = HeaderValue::from_str(&accept)
        .map_err(|_| ApiError::bad_param("upgrade", "Sec-WebSocket-Key"))?;
    headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    Ok(response)
}

/// The client frame of a logged event, and who may receive it.
pub fn frame_text(
    topic: &str,
    body: &[u8],
    traceparent: Option<&str>,
) -> Option<(String, Audience)> {
    let envelope: EventEnvelope = serde_json::from_slice(body).ok()?;
    let audience = Audience::of(topic, envelope.actor.as_ref().map(|a| a.id));
    Some((frame_of(&envelope, topic, traceparent), audience))
}

pub fn frame_of(envelope: &EventEnvelope, topic: &str, traceparent: Option<&str>) -> String {
    // traceparent = version-traceid-spanid-flags
    let trace_id = traceparent.and_then(|t| t.split('-').nth(1));
    serde_json::json!({
        "op": "event",
        "id": envelope.id,
        "topic": topic,
        "event": envelope.event.name(),
        "data": envelope.event.data_value(),
        "traceId": trace_id,
    })
    .to_string()
}
