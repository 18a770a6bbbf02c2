//! Operations: the ops endpoints of the workers (`/ready` following the broker and the
//! database, `/metrics`), the api's `/metrics`, and one W3C trace id from the HTTP request to
//! the worker's log lines, the events, the event log and the WebSocket frame.
//!
//! The worker roles under test run inside `ops::scoped` with an ops server of this test's own
//! (the stack's other roles have ops disabled, as many stacks share the test process).

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use sea_orm::ConnectionTrait;
use serde_json::{Value, json};
use showrunner_shared::auth::Role;
use showrunner_tests::{MANAGEMENT, Options, PG_SERVER, TestApp, wait_for, wait_until};
use showrunner_workers::ops::{Ops, scoped};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::fmt::MakeWriter;

use crate::support::{DEADLINE, send, settled_command, str_of};

/// Worker roles of this test, reporting to one ops server on a free port.
struct Roles {
    addr: SocketAddr,
    cancel: CancellationToken,
    tasks: tokio::task::JoinSet<anyhow::Result<()>>,
}

#[derive(Clone, Copy)]
enum Worker {
    Episode,
    Activity,
    Notification,
    Job,
}

impl Roles {
    async fn start(app: &TestApp, roles: &[Worker]) -> Self {
        let ops = Ops::new();
        let cancel = CancellationToken::new();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(ops.clone().serve(listener, cancel.clone()));
        let mut tasks = tokio::task::JoinSet::new();
        for role in roles {
            let (s, c) = (app.settings.clone(), cancel.child_token());
            match role {
                Worker::Episode => {
                    tasks.spawn(scoped(ops.clone(), showrunner_workers::run_episode_worker(s, c)))
                }
                Worker::Activity => {
                    tasks.spawn(scoped(ops.clone(), showrunner_workers::run_activity_worker(s, c)))
                }
                Worker::Notification => tasks
                    .spawn(scoped(ops.clone(), showrunner_workers::run_notification_worker(s, c))),
                Worker::Job => {
                    tasks.spawn(scoped(ops.clone(), showrunner_workers::run_job_worker(s, c)))
                }
            };
        }
        let roles = Self { addr, cancel, tasks };
        roles.wait_ready(StatusCode::OK).await;
        roles
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn ready(&self) -> (StatusCode, Value) {
        send(reqwest::Client::new().get(self.url("/ready"))).await
    }

    async fn wait_ready(&self, wanted: StatusCode) -> Value {
        wait_for(&format!("the workers' /ready to answer {wanted}"), DEADLINE, || async {
            let (status, body) = self.ready().await;
            (status == wanted).then_some(body)
        })
        .await
    }

    async fn stop(mut self) {
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
async fn stack(episode: bool, activity: bool, notification: bool) -> TestApp {
    TestApp::spawn_with(Options {
        episode_workers: usize::from(episode),
        activity_workers: usize::from(activity),
        notification_workers: usize::from(notification),
        ..Options::default()
    })
    .await
}

/// The value of the sample `series` (name and labels exactly as printed), 0 when absent.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn metrics_of(url: &str) -> String {
    let response = reqwest::Client::new().get(url).send().await.expect("scrape");
    assert_eq!(response.status(), StatusCode::OK);
    let content_type =
        response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default();
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
    response.text().await.expect("text")
}

/// Log lines captured in memory (JSON, one per line).
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

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
    fn install(&self) -> tracing::subscriber::DefaultGuard {
        let subscriber = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_env_filter("info,showrunner_workers=debug,showrunner_api=debug")
            .with_writer(self.clone())
            .finish();
        tracing::subscriber::set_default(subscriber)
    }

    fn lines(&self) -> Vec<String> {
        let bytes = self.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        String::from_utf8_lossy(&bytes).lines().map(str::to_string).collect()
    }
}

const TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";

fn traceparent(span: &str) -> String {
    format!("00-{TRACE_ID}-{span}-01")
}

#[tokio::test]
async fn metrics_are_prometheus_text_and_move_when_a_command_is_applied() {
    let app = stack(false, true, true).await;
    let roles = Roles::start(&app, &[Worker::Episode]).await;
    let alice = app.token("alice", Role::Member);
    let worker_url = roles.url("/metrics");
    let api_url = app.url("/metrics");
    let acked = "showrunner_messages_acked_total{queue=\"showrunner.commands\"}";
    let consumed = "showrunner_messages_consumed_total{queue=\"showrunner.commands\"}";
    let latency = "showrunner_handler_duration_seconds_count{queue=\"showrunner.commands\"}";
    let posts =
        "showrunner_http_requests_total{method=\"POST\",route=\"/api/v1/episodes\",status=\"201\"}";
    let before = metrics_of(&worker_url).await;
    let api_before = metrics_of(&api_url).await;

    let (status, created) = send(
        app.http
            .post(app.api("/episodes"))
            .bearer_auth(&alice)
            .header("Prefer", "wait=10")
            .json(&json!({"title": "Counted"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");

    // The registry is the process's, shared with the tests running beside this one: counters
    // only grow, so "at least one more" is what this test can claim.
    let after = wait_for("the worker's counters to move", DEADLINE, || {
        let url = worker_url.clone();
        let before = before.clone();
        async move {
            let text = metrics_of(&url).await;
            (sample(&text, acked) >= sample(&before, acked) + 1.0).then_some(text)
        }
    })
    .await;
    assert!(sample(&after, consumed) >= sample(&before, consumed) + 1.0);
    assert!(sample(&after, latency) >= sample(&before, latency) + 1.0);
    for family in [
        "# TYPE showrunner_messages_consumed_total counter",
        "# TYPE showrunner_messages_parked_total counter",
        "# TYPE showrunner_messages_retried_total counter",
        "# TYPE showrunner_messages_rejected_total counter",
        "# TYPE showrunner_handler_duration_seconds histogram",
        "# TYPE showrunner_outbox_backlog gauge",
        "# TYPE showrunner_jobs gauge",
        "showrunner_jobs{status=\"failed\"} ",
    ] {
        assert!(after.contains(family), "{family} missing from the worker's metrics");
    }

    let api_after = metrics_of(&api_url).await;
    assert!(sample(&api_after, posts) >= sample(&api_before, posts) + 1.0, "{api_after}");
    let timed = "showrunner_http_request_duration_seconds_count{method=\"POST\",route=\"/api/v1/episodes\"}";
    assert!(sample(&api_after, timed) >= 1.0);
    // Routes are templates, never raw paths: one episode id must not become a label.
    let id = str_of(&created["data"], "id");
    let (status, _) =
        send(app.http.get(app.api(&format!("/episodes/{id}"))).bearer_auth(&alice)).await;
    assert_eq!(status, StatusCode::OK);
    let text = metrics_of(&api_url).await;
    assert!(text.contains("route=\"/api/v1/episodes/{id}\""), "no templated route");
    assert!(!text.contains(id), "a raw path leaked into a label");
    assert!(text.contains("# TYPE showrunner_websocket_connections gauge"));

    // The management UI tells who is who: every connection and consumer of this vhost names
    // its role, host and pid.
    let pid = format!("#{}", std::process::id());
    // The management API's lists are statistics, refreshed every few seconds: wait for them.
    let list = |path: String, field: fn(&Value) -> String| async move {
        let items: Value =
            management(reqwest::Method::GET, &path, None).await.json().await.unwrap_or(Value::Null);
        items.as_array().map(|c| c.iter().map(field).collect::<Vec<String>>()).unwrap_or_default()
    };
    let roles_named = ["api", "episode-worker", "activity-worker", "notification-worker"];
    let names = wait_for("every role's connection in the management API", DEADLINE, || async {
        let names = list(format!("vhosts/{}/connections", app.name), |c| {
            c["client_properties"]["connection_name"].as_str().unwrap_or("").to_string()
        })
        .await;
        roles_named
            .iter()
            .all(|role| names.iter().any(|n| n.starts_with(&format!("showrunner-{role}@"))))
            .then_some(names)
    })
    .await;
    for name in &names {
        assert!(name.starts_with("showrunner-") && name.ends_with(&pid), "{name}");
    }
    let suffixes = ["/relay", "/showrunner.eventlog", "/showrunner.notifications", "/p000"];
    let tags = wait_for("every consumer in the management API", DEADLINE, || async {
        let tags = list(format!("consumers/{}", app.name), |c| {
            c["consumer_tag"].as_str().unwrap_or("").to_string()
        })
        .await;
        suffixes.iter().all(|s| tags.iter().any(|t| t.ends_with(s))).then_some(tags)
    })
    .await;
    for tag in &tags {
        assert!(tag.starts_with("showrunner-") && tag.contains(&format!("{pid}/")), "{tag}");
    }
    roles.stop().await;
    app.stop().await;
}

/// Management API call on this test's own vhost.
async fn management(method: reqwest::Method, path: &str, body: Option<Value>) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .request(method, format!("{MANAGEMENT}/api/{path}"))
        .basic_auth("guest", Some("guest"));
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.expect("management API")
}

fn encode(s: &str) -> String {
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
async fn close_connections(vhost: &str, roles: &[&str]) -> Option<usize> {
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
        assert!(response.status().is_success(), "close {name}: {}", response.status());
    }
    Some(connections.len())
}

#[tokio::test]
async fn a_worker_is_not_ready_while_its_broker_is_away_waits_idle_and_resumes() {
    let capture = Capture::default();
    let _logs = capture.install();
    let app = stack(false, true, true).await;
    let roles = Roles::start(&app, &[Worker::Episode]).await;
    let alice = app.token("alice", Role::Member);
    let permissions = format!("permissions/{}/guest", app.name);

    // The broker turns guest away and drops every connection of this vhost: nobody can
    // reconnect until the permissions come back.
    let response = management(reqwest::Method::DELETE, &permissions, None).await;
    assert!(response.status().is_success());
    let roles_named = ["api", "episode-worker", "activity-worker", "notification-worker"];
    let closed = wait_for("the workers' and api's connections to close", DEADLINE, || {
        close_connections(&app.name, &roles_named)
    })
    .await;
    assert!(closed >= roles_named.len(), "closed {closed}");
    let body = roles.wait_ready(StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(body["down"].to_string().contains("episode-worker: broker"), "{body}");
    assert_eq!(body["roles"][0]["database"], true, "{body}");
    wait_until("the api to report not ready", DEADLINE, || async {
        app.http.get(app.url("/ready")).send().await.is_ok_and(|r| r.status() == 503)
    })
    .await;
    let response = app
        .http
        .post(app.api("/episodes"))
        .bearer_auth(&alice)
        .json(&json!({"title": "Refused"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().contains_key("retry-after"));

    // Waiting is idle: reconnect attempts back off exponentially, so over 4 seconds the five
    // reconnect loops of this stack (api, episode, activity + sequencer, notification) try a
    // few times each; a loop without backoff would try thousands of times.
    let attempts = |lines: &[String]| {
        lines
            .iter()
            .filter(|l| {
                l.contains("RabbitMQ unavailable, retrying")
                    || l.contains("RabbitMQ link down, reconnecting")
            })
            .count()
    };
    let start = attempts(&capture.lines());
    tokio::time::sleep(Duration::from_secs(4)).await;
    let during = attempts(&capture.lines()) - start;
    assert!(during <= 5 * 8, "{during} reconnect attempts in 4 s: no backoff");
    assert!(during >= 1, "nobody tried to reconnect");

    let response = management(
        reqwest::Method::PUT,
        &permissions,
        Some(json!({"configure": ".*", "write": ".*", "read": ".*"})),
    )
    .await;
    assert!(response.status().is_success());
    let reconnected = Instant::now();
    roles.wait_ready(StatusCode::OK).await;
    wait_until("the api to be ready again", DEADLINE, || async {
        app.http.get(app.url("/ready")).send().await.is_ok_and(|r| r.status().is_success())
    })
    .await;
    eprintln!("ready again {:?} after the broker came back", reconnected.elapsed());
    let (status, body) = send(
        app.http.post(app.api("/episodes")).bearer_auth(&alice).json(&json!({"title": "After"})),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let command = settled_command(&app, &alice, str_of(&body, "commandId")).await;
    assert_eq!(command["status"], "applied", "{command}");
    roles.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn a_worker_is_not_ready_while_its_database_is_away_and_resumes() {
    let app = stack(false, true, true).await;
    let roles = Roles::start(&app, &[Worker::Episode]).await;
    let alice = app.token("alice", Role::Member);
    let admin = sea_orm::Database::connect(format!("{PG_SERVER}/postgres")).await.expect("admin");
    // Only this test's database: refuse new sessions, then end the open ones.
    admin
        .execute_unprepared(&format!("ALTER DATABASE \"{}\" ALLOW_CONNECTIONS false", app.name))
        .await
        .expect("refuse connections");
    admin
        .execute_unprepared(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = '{}' AND pid <> pg_backend_pid()",
            app.name
        ))
        .await
        .expect("terminate");
    let body = roles.wait_ready(StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(body["down"].to_string().contains("episode-worker: database"), "{body}");
    wait_until("the api to report not ready", DEADLINE, || async {
        app.http.get(app.url("/ready")).send().await.is_ok_and(|r| r.status() == 503)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    admin
        .execute_unprepared(&format!("ALTER DATABASE \"{}\" ALLOW_CONNECTIONS true", app.name))
        .await
        .expect("allow connections");
    let _ = admin.close().await;
    roles.wait_ready(StatusCode::OK).await;
    let (status, body) = wait_for("a write to be applied after the outage", DEADLINE, || async {
        let (status, body) = send(
            app.http
                .post(app.api("/episodes"))
                .bearer_auth(&alice)
                .header("Prefer", "wait=10")
                .json(&json!({"title": "After the database came back"})),
        )
        .await;
        // The api's pool may hand out one connection the outage broke before it reconnects.
        (status != StatusCode::INTERNAL_SERVER_ERROR).then_some((status, body))
    })
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    roles.stop().await;
    app.stop().await;
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn frame_where(socket: &mut Socket, wanted: impl Fn(&Value) -> bool) -> Value {
    loop {
        let message = tokio::time::timeout(DEADLINE, socket.next()).await.expect("a frame in time");
        if let Some(Ok(Message::Text(text))) = message {
            let frame: Value = serde_json::from_str(&text).expect("JSON frame");
            if wanted(&frame) {
                return frame;
            }
        } else if !matches!(message, Some(Ok(Message::Ping(_) | Message::Pong(_)))) {
            panic!("socket ended: {message:?}");
        }
    }
}

#[tokio::test]
async fn one_trace_id_runs_from_the_request_to_the_logs_events_and_frames() {
    let capture = Capture::default();
    let _logs = capture.install();
    let app = stack(false, false, false).await;
    let roles =
        Roles::start(&app, &[Worker::Episode, Worker::Activity, Worker::Notification, Worker::Job])
            .await;
    let alice = app.token("alice", Role::Member);
    let (mut socket, _) =
        tokio_tungstenite::connect_async(app.ws_url(0, &alice)).await.expect("websocket");
    socket
        .send(Message::Text(
            json!({"op": "subscribe", "topics": ["episode.*.created", "job.#"]}).to_string().into(),
        ))
        .await
        .expect("subscribe");
    frame_where(&mut socket, |f| f["op"] == "subscribed").await;

    // A command: the response continues the caller's trace with a span of the api's own.
    let sent = traceparent("b7ad6b7169203331");
    let response = app
        .http
        .post(app.api("/episodes"))
        .bearer_auth(&alice)
        .header("traceparent", &sent)
        .json(&json!({"title": "Traced"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let answered = response.headers()["traceparent"].to_str().expect("ascii").to_string();
    assert!(answered.starts_with(&format!("00-{TRACE_ID}-")), "{answered}");
    assert_ne!(answered, sent, "the api's span is a new one");
    let body: Value = response.json().await.expect("json");
    let episode = str_of(&body["data"], "id").to_string();

    let frame = frame_where(&mut socket, |f| f["event"] == "episode_created").await;
    assert_eq!(frame["traceId"], TRACE_ID, "{frame}");
    // The event and the notification it caused keep the trace, each with a span of its own.
    let rows = |pattern: String| {
        let app = &app;
        async move {
            app.count(&format!(
                "SELECT count(*) FROM event_log WHERE routing_key LIKE '{pattern}' \
                 AND traceparent LIKE '00-{TRACE_ID}-%'"
            ))
            .await
        }
    };
    wait_until("the traced events in the event log", DEADLINE, || async {
        rows(format!("episode.{episode}.created")).await == 1
            && rows("user.%.notification".into()).await >= 1
    })
    .await;
    assert_eq!(
        app.count(&format!(
            "SELECT count(DISTINCT traceparent) FROM event_log WHERE traceparent LIKE '00-{TRACE_ID}-%'"
        ))
        .await,
        app.count(&format!(
            "SELECT count(*) FROM event_log WHERE traceparent LIKE '00-{TRACE_ID}-%'"
        ))
        .await,
        "every hop has a span id of its own"
    );

    // A job: same trace through the job request, the worker and the job's events.
    let job_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let response = app
        .http
        .post(app.api("/jobs"))
        .bearer_auth(&alice)
        .header("traceparent", format!("00-{job_trace}-00f067aa0ba902b7-01"))
        .json(&json!({"type": "webhook", "payload": {"url": "http://127.0.0.1:1/"}, "maxAttempts": 1}))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let job: Value = response.json().await.expect("json");
    let job_id = str_of(&job["data"], "id").to_string();
    let frame = frame_where(&mut socket, |f| f["event"] == "job_failed").await;
    assert_eq!(frame["traceId"], job_trace, "{frame}");
    wait_until("the job's traced events in the event log", DEADLINE, || async {
        app.count(&format!(
            "SELECT count(*) FROM event_log WHERE routing_key LIKE 'job.{job_id}.%' \
             AND traceparent LIKE '00-{job_trace}-%'"
        ))
        .await
            == 3 // queued (by the api), started, failed
    })
    .await;

    // The logs: the api's request span and the workers' batch and job spans name the trace.
    let lines = wait_for("log lines of both traces", DEADLINE, || {
        let lines = capture.lines();
        let has =
            |needle: &str, also: &str| lines.iter().any(|l| l.contains(needle) && l.contains(also));
        let found = has(TRACE_ID, "showrunner.commands")
            && has(TRACE_ID, "showrunner.eventlog")
            && has(TRACE_ID, "\"route\":\"/api/v1/episodes\"")
            && has(job_trace, "job failed for good");
        std::future::ready(found.then_some(lines))
    })
    .await;
    for line in lines.iter().filter(|l| l.contains(TRACE_ID)) {
        serde_json::from_str::<Value>(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    }
    roles.stop().await;
    app.stop().await;
}
