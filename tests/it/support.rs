//! Small helpers shared by the tests.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::{RequestBuilder, StatusCode};
use serde_json::Value;
use showrunner_tests::{MANAGEMENT, Options, TestApp, wait_for};
use showrunner_workers::ops::{Ops, scoped};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::fmt::MakeWriter;

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

/// One request a [`serve`] server received.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    /// Header names in lower case, in the order sent.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The body as JSON (`Value::Null` when it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// What a [`serve`] server saw: connections accepted (counted before anything is read, so a
/// connection that never sends counts too) and the requests read on them, in order.
#[derive(Clone, Default)]
pub struct Hits {
    connections: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<Received>>>,
}

impl Hits {
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> Vec<Received> {
        self.requests.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// A loopback HTTP server on `addr` answering connection `n` with `answer(n)` (a whole
/// response; each answer closes its connection) and keeping every request it read.
pub async fn serve(
    addr: &str,
    answer: impl Fn(usize) -> String + Send + Sync + 'static,
) -> (std::net::SocketAddr, Hits) {
    let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
    let local = listener.local_addr().expect("addr");
    let hits = Hits::default();
    let seen = hits.clone();
    let answer = Arc::new(answer);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let n = seen.connections.fetch_add(1, Ordering::SeqCst);
            let response = answer(n);
            let requests = seen.requests.clone();
            tokio::spawn(async move {
                let Some(request) = read_request(&mut socket).await else { return };
                requests.lock().unwrap_or_else(|p| p.into_inner()).push(request);
                let _ = socket.write_all(response.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    (local, hits)
}

/// One HTTP/1.1 request with a `content-length` body (what the webhook client sends).
async fn read_request(socket: &mut tokio::net::TcpStream) -> Option<Received> {
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match socket.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
        }
        let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
        let head = String::from_utf8_lossy(&bytes[..end]).to_string();
        let mut lines = head.split("\r\n");
        let mut first = lines.next().unwrap_or_default().split(' ');
        let method = first.next().unwrap_or_default().to_string();
        let path = first.next().unwrap_or_default().to_string();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let length = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .and_then(|(_, v)| v.parse::<usize>().ok())
            .unwrap_or(0);
        if bytes.len() >= end + 4 + length {
            let body = bytes[end + 4..end + 4 + length].to_vec();
            return Some(Received { method, path, headers, body });
        }
    }
}

/// Log lines captured in memory (JSON, one per line).
#[derive(Clone, Default)]
pub struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Capture {
    type Writer = Capture;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Capture {
    /// Captures what this thread logs (a `#[tokio::test]` runs the whole stack on its thread).
    pub fn install(&self) -> tracing::subscriber::DefaultGuard {
        let subscriber = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_env_filter("info,showrunner_workers=debug,showrunner_api=debug")
            .with_writer(self.clone())
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    pub fn lines(&self) -> Vec<String> {
        let bytes = self.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        String::from_utf8_lossy(&bytes).lines().map(str::to_string).collect()
    }
}

/// Management API call on this test's own vhost.
pub async fn management(
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> reqwest::Response {
    let mut request = showrunner_shared::tls::client()
        .request(method, format!("{MANAGEMENT}/api/{path}"))
        .basic_auth("guest", Some("guest"));
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.expect("management API")
}

pub fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Closes every Showrunner connection of the vhost once the management API (whose lists are
/// statistics, refreshed every few seconds) lists one of each of `roles`; how many it closed.
pub async fn close_connections(vhost: &str, roles: &[&str]) -> Option<usize> {
    let list: Value =
        management(reqwest::Method::GET, &format!("vhosts/{vhost}/connections"), None)
            .await
            .json()
            .await
            .ok()?;
    let connections: Vec<(String, String)> = list
        .as_array()?
        .iter()
        .map(|c| {
            let label = c["client_properties"]["connection_name"].as_str().unwrap_or("");
            (label.to_string(), c["name"].as_str().unwrap_or("").to_string())
        })
        .filter(|(label, _)| label.starts_with("showrunner-"))
        .collect();
    let listed = |role: &&str| {
        connections.iter().any(|(label, _)| label.starts_with(&format!("showrunner-{role}@")))
    };
    if !roles.iter().all(listed) {
        return None;
    }
    for (_, name) in &connections {
        let response =
            management(reqwest::Method::DELETE, &format!("connections/{}", encode(name)), None)
                .await;
        // 404: it closed on its own between the listing and now (a reconnecting role).
        let status = response.status();
        assert!(status.is_success() || status == 404, "close {name}: {status}");
    }
    Some(connections.len())
}

/// Worker roles of this test, reporting to one ops server on a free port.
pub struct Roles {
    pub addr: SocketAddr,
    cancel: CancellationToken,
    tasks: tokio::task::JoinSet<anyhow::Result<()>>,
}

/// A worker role, as the tests start it.
pub use showrunner_workers::Role as Worker;

impl Roles {
    pub async fn start(app: &TestApp, roles: &[Worker]) -> Self {
        let ops = Ops::new();
        let cancel = CancellationToken::new();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(ops.clone().serve(listener, cancel.clone()));
        let mut tasks = tokio::task::JoinSet::new();
        for role in roles {
            let (s, c) = (app.settings.clone(), cancel.child_token());
            tasks.spawn(scoped(ops.clone(), role.run(s, c)));
        }
        let roles = Self { addr, cancel, tasks };
        roles.wait_ready(StatusCode::OK).await;
        roles
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn ready(&self) -> (StatusCode, Value) {
        send(showrunner_shared::tls::client().get(self.url("/ready"))).await
    }

    pub async fn wait_ready(&self, wanted: StatusCode) -> Value {
        wait_for(&format!("the workers' /ready to answer {wanted}"), DEADLINE, || async {
            let (status, body) = self.ready().await;
            (status == wanted).then_some(body)
        })
        .await
    }

    pub async fn stop(mut self) {
        self.cancel.cancel();
        while let Some(result) = self.tasks.join_next().await {
            if let Ok(Err(error)) = result {
                panic!("a worker role failed: {error:#}");
            }
        }
    }
}

/// A stack whose api and (unless `keep`) workers come from `TestApp`, without the roles the
/// test runs itself.
pub async fn stack(episode: bool, activity: bool, notification: bool) -> TestApp {
    TestApp::spawn_with(Options {
        episode_workers: usize::from(episode),
        activity_workers: usize::from(activity),
        notification_workers: usize::from(notification),
        ..Options::default()
    })
    .await
}

/// Uploads `bytes` as an audio file of the episode, waiting for it to be recorded; its id.
pub async fn upload(app: &TestApp, token: &str, episode: &str, name: &str, bytes: &[u8]) -> String {
    let (status, body) = send(
        app.http
            .post(app.api(&format!("/episodes/{episode}/files?name={name}")))
            .bearer_auth(token)
            .header("Content-Type", "audio/wav")
            .header("Prefer", "wait=10")
            .body(bytes.to_vec()),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    str_of(&body["data"], "id").to_string()
}
