//! Small helpers shared by the tests.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use reqwest::{RequestBuilder, StatusCode};
use serde_json::Value;
use showrunner_tests::TestApp;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const DEADLINE: Duration = Duration::from_secs(20);

/// Sends a request and checks that the answer is a problem+json document whose `status` is the
/// response's and which has a `type`, `title` and `detail`; returns the status and the document.
pub async fn problem(request: RequestBuilder) -> (StatusCode, Value) {
    let response = request.send().await.unwrap_or_else(|e| panic!("request failed: {e}"));
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body: Value = response.json().await.unwrap_or_default();
    assert_eq!(content_type, "application/problem+json", "{status} {body}");
    assert_eq!(body["status"], status.as_u16(), "{body}");
    assert!(
        body["type"].is_string() && body["title"].is_string() && body["detail"].is_string(),
        "{body}"
    );
    (status, body)
}

/// [`problem`], answered with `status`; returns the document.
pub async fn expect_problem(request: RequestBuilder, status: StatusCode) -> Value {
    let (got, body) = problem(request).await;
    assert_eq!(got, status, "{body}");
    body
}

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

/// A loopback HTTP server on `addr` answering request `n` with `answer(n)` (a whole response).
pub async fn serve(
    addr: &str,
    answer: impl Fn(usize) -> String + Send + Sync + 'static,
) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
    let local = listener.local_addr().expect("addr");
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let answer = Arc::new(answer);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            let response = answer(n);
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                    let text = String::from_utf8_lossy(&request).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length = text
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .and_then(|v| v.trim().parse::<usize>().ok())
                            })
                            .unwrap_or(0);
                        if request.len() >= end + 4 + length {
                            break;
                        }
                    }
                }
                let _ = socket.write_all(response.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    (local, hits)
}
