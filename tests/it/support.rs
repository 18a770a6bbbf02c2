//! Small helpers shared by the tests.

use std::time::Duration;

use reqwest::{RequestBuilder, StatusCode};
use serde_json::Value;
use showrunner_tests::TestApp;

pub const DEADLINE: Duration = Duration::from_secs(20);

/// Sends a request and returns status and JSON body (`Value::Null` when there is none).
pub async fn send(request: RequestBuilder) -> (StatusCode, Value) {
    let response = request.send().await.unwrap_or_else(|e| panic!("request failed: {e}"));
    let status = response.status();
    let bytes = response.bytes().await.unwrap_or_default();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, body)
}

pub async fn create_episode(
    app: &TestApp,
    token: &str,
    body: Value,
    wait: bool,
) -> (StatusCode, Value) {
    let mut request = app.http.post(app.api("/episodes")).bearer_auth(token).json(&body);
    if wait {
        request = request.header("Prefer", "wait=10");
    }
    send(request).await
}

/// The command's status once it is no longer pending.
pub async fn settled_command(app: &TestApp, token: &str, command_id: &str) -> Value {
    showrunner_tests::wait_for("the command to settle", DEADLINE, || {
        let request = app.http.get(app.api(&format!("/commands/{command_id}"))).bearer_auth(token);
        async move {
            let (status, body) = send(request).await;
            (status == StatusCode::OK && body["status"] != "pending").then_some(body)
        }
    })
    .await
}

pub fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_else(|| panic!("{key} missing in {v}"))
}

/// A WebSocket client of the relay.
pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next JSON text frame of `socket`, or the close frame's code and reason as
/// `{"close": code, "reason": ...}`; panics at the deadline or when the socket just ends.
pub async fn ws_next(socket: &mut Socket) -> Value {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    // One deadline for the call: the server's pings must not keep extending it.
    let give_up = tokio::time::Instant::now() + DEADLINE;
    loop {
        let message = tokio::time::timeout_at(give_up, socket.next())
            .await
            .unwrap_or_else(|_| panic!("no frame within {DEADLINE:?}"));
        match message {
            Some(Ok(Message::Text(text))) => {
                return serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
            }
            Some(Ok(Message::Close(frame))) => {
                return frame.map_or(serde_json::json!({"close": null}), |f| {
                    serde_json::json!({"close": u16::from(f.code), "reason": f.reason.as_str()})
                });
            }
            Some(Ok(_)) => continue,
            other => panic!("socket ended: {other:?}"),
        }
    }
}

/// Sends one JSON text frame.
pub async fn ws_say(socket: &mut Socket, frame: Value) {
    use futures_util::SinkExt;
    socket
        .send(tokio_tungstenite::tungstenite::Message::Text(frame.to_string().into()))
        .await
        .unwrap_or_else(|e| panic!("send: {e}"));
}
