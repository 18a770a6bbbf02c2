//! Operations: the ops endpoints of the workers (`/ready` following the broker and the
//! database), and one W3C trace id from the HTTP request to
//! the worker's log lines, the events, the event log and the WebSocket frame.
//!
//! The worker roles under test run inside `ops::scoped` with an ops server of this test's own
//! (the stack's other roles have ops disabled, as many stacks share the test process). The
//! metrics test, whose counters must move by exactly one, has a binary of its own
//! (`tests/metrics/main.rs`): the registry is the process's.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use sea_orm::ConnectionTrait;
use serde_json::{Value, json};
use showrunner_shared::auth::Role;
use showrunner_tests::{PG_SERVER, wait_for, wait_until};
use tokio_tungstenite::tungstenite::Message;

use crate::support::{
    Capture, DEADLINE, Roles, Worker, close_connections, management, send, settled_command, stack,
    str_of,
};

const TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";

fn traceparent(span: &str) -> String {
    format!("00-{TRACE_ID}-{span}-01")
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
    // Several requests at once, so the api's pool holds several connections for the outage
    // to break.
    let reads = futures_util::future::join_all(
        (0..8).map(|_| send(app.http.get(app.api("/episodes?limit=1")).bearer_auth(&alice))),
    )
    .await;
    assert!(reads.iter().all(|(status, _)| *status == StatusCode::OK), "{reads:?}");
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
    // Every request after the database is back must succeed, the first ones included: the
    // api's pool held several connections, all broken by the outage, and must not hand one out
    // (no 500 is let pass). The api's /ready is not waited for: its pings would use up the
    // broken connections first and hide exactly that.
    let reads = futures_util::future::join_all(
        (0..8).map(|_| send(app.http.get(app.api("/episodes?limit=1")).bearer_auth(&alice))),
    )
    .await;
    for (n, (status, body)) in reads.iter().enumerate() {
        assert_eq!(*status, StatusCode::OK, "read {n} after the outage: {body}");
    }
    let (status, body) = send(
        app.http
            .post(app.api("/episodes"))
            .bearer_auth(&alice)
            .header("Prefer", "wait=10")
            .json(&json!({"title": "After the database came back"})),
    )
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
            && has(TRACE_ID, "\"queue\":\"event_log\"")
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
