//! Every limit of `[limits]` (and the three that live beside their feature), triggered, with
//! its clear error; the limits are lowered so the tests run fast.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use showrunner_shared::auth::Role;
use showrunner_tests::{Options, TestApp, wait_for};

use crate::support::{DEADLINE, Socket, expect_problem, send, ws_next, ws_say};

async fn spawn(extra: &[(&str, &str)], episode_workers: usize) -> TestApp {
    TestApp::spawn_with(Options {
        episode_workers,
        extra: extra.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        ..Options::default()
    })
    .await
}

fn field(problem: &Value) -> &str {
    problem["errors"][0]["field"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn bodies_queries_and_pages_beyond_the_limits_are_refused_naming_the_field() {
    let app = spawn(
        &[
            ("limits.max_body_bytes", "2048"),
            ("limits.max_json_depth", "8"),
            ("limits.max_string_chars", "300"),
            ("limits.max_list_items", "10"),
            ("limits.max_page_size", "5"),
        ],
        1,
    )
    .await;
    let alice = app.token("alice", Role::Member);
    let job = |payload: Value| {
        app.http
            .post(app.api("/jobs"))
            .bearer_auth(&alice)
            .json(&json!({"type": "webhook", "payload": payload}))
    };

    let p =
        expect_problem(job(json!({"pad": "x".repeat(3000)})), StatusCode::PAYLOAD_TOO_LARGE).await;
    assert!(p["detail"].as_str().is_some_and(|d| d.contains("2048")), "{p}");

    let mut deep = json!(1);
    for _ in 0..8 {
        deep = json!([deep]);
    }
    // The body object and eight arrays: nine levels.
    let p = expect_problem(job(deep), StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(field(&p), "body", "{p}");
    assert!(p["detail"].as_str().is_some_and(|d| d.contains("deeper than 8")), "{p}");
    // Depth is measured on the raw bytes: a deeply nested body far over the limit is refused
    // the same way, without being built.
    let raw =
        format!("{{\"type\":\"webhook\",\"payload\":{}1{}}}", "[".repeat(900), "]".repeat(900));
    let p = expect_problem(
        app.http
            .post(app.api("/jobs"))
            .bearer_auth(&alice)
            .header("content-type", "application/json")
            .body(raw),
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(field(&p), "body", "{p}");

    let p =
        expect_problem(job(json!({"a": {"b": "x".repeat(301)}})), StatusCode::UNPROCESSABLE_ENTITY)
            .await;
    assert_eq!(field(&p), "payload.a.b", "{p}");
    let p = expect_problem(
        job(json!({"items": (0..11).collect::<Vec<_>>()})),
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(field(&p), "payload.items", "{p}");
    let categories: Vec<String> = (0..11).map(|i| format!("c{i}")).collect();
    let p = expect_problem(
        app.http
            .post(app.api("/episodes"))
            .bearer_auth(&alice)
            .json(&json!({"title": "Pilot", "categories": categories})),
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(field(&p), "categories", "{p}");

    let q = "x".repeat(301);
    let p = expect_problem(
        app.http.get(app.api(&format!("/episodes?q={q}"))).bearer_auth(&alice),
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(field(&p), "q", "{p}");
    let p = expect_problem(
        app.http.get(app.api("/episodes?limit=6")).bearer_auth(&alice),
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(field(&p), "limit", "{p}");
    assert!(p["detail"].as_str().is_some_and(|d| d.contains("between 1 and 5")), "{p}");
    assert_eq!(app.count("SELECT count(*) FROM jobs").await, 0);
    assert_eq!(app.count("SELECT count(*) FROM commands").await, 0);

    // Just inside every limit: accepted (as a webhook's `body`, so the payload fits its type).
    // The body, the payload, the webhook's body and five arrays: eight levels.
    let mut deep = json!(1);
    for _ in 0..5 {
        deep = json!([deep]);
    }
    let body =
        json!({"a": {"b": "x".repeat(300)}, "items": (0..10).collect::<Vec<_>>(), "deep": deep});
    let payload = json!({"url": "http://127.0.0.1:1/", "body": body});
    assert_eq!(send(job(payload)).await.0, StatusCode::ACCEPTED);
    let (status, page) = send(app.http.get(app.api("/jobs?limit=5")).bearer_auth(&alice)).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    app.stop().await;
}

#[tokio::test]
async fn prefer_wait_is_cut_to_the_maximum_and_says_so() {
    // No episode worker: the command is never applied, so the request waits the whole time.
    let app = spawn(&[("http.max_wait_secs", "1")], 0).await;
    let alice = app.token("alice", Role::Member);
    let started = Instant::now();
    let response = app
        .http
        .post(app.api("/episodes"))
        .bearer_auth(&alice)
        .header("Prefer", "wait=100")
        .json(&json!({"title": "Pilot"}))
        .send()
        .await
        .unwrap_or_else(|e| panic!("request failed: {e}"));
    let waited = started.elapsed();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(
        response.headers().get("preference-applied").and_then(|v| v.to_str().ok()),
        Some("wait=1")
    );
    assert!(waited >= Duration::from_millis(900) && waited < Duration::from_secs(10), "{waited:?}");
    app.stop().await;
}

#[tokio::test]
async fn requests_over_the_rate_get_429_with_retry_after_per_user() {
    let app = spawn(&[("limits.requests_per_sec", "1"), ("limits.request_burst", "3")], 1).await;
    let alice = app.token("alice", Role::Member);
    let bob = app.token("bob", Role::Member);
    let count =
        |token: &str| app.http.get(app.api("/notifications/unread-count")).bearer_auth(token);
    for _ in 0..3 {
        assert_eq!(send(count(&alice)).await.0, StatusCode::OK);
    }
    let response = count(&alice).send().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("Retry-After missing"));
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    let content_type = response.headers().get("content-type").cloned();
    let body: Value = response.json().await.unwrap_or_default();
    assert_eq!(
        content_type.as_ref().and_then(|v| v.to_str().ok()),
        Some("application/problem+json")
    );
    assert_eq!(body["status"], 429, "{body}");
    // A write over the rate is refused before anything is recorded.
    expect_problem(
        app.http.post(app.api("/episodes")).bearer_auth(&alice).json(&json!({"title": "x"})),
        StatusCode::TOO_MANY_REQUESTS,
    )
    .await;
    assert_eq!(app.count("SELECT count(*) FROM commands").await, 0);
    // Buckets are per user; health, readiness and the document are not counted at all;
    // a request without a valid token gets its 401, not a 429.
    assert_eq!(send(count(&bob)).await.0, StatusCode::OK);
    for path in ["/health", "/ready", "/api/v1/health", "/api/v1/openapi.json"] {
        for _ in 0..5 {
            assert_eq!(send(app.http.get(app.url(path))).await.0, StatusCode::OK, "{path}");
        }
    }
    assert_eq!(
        send(app.http.get(app.api("/notifications/unread-count"))).await.0,
        StatusCode::UNAUTHORIZED
    );
    // After Retry-After, Alice may go on.
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    assert_eq!(send(count(&alice)).await.0, StatusCode::OK);
    app.stop().await;
}

async fn try_connect(app: &TestApp, token: &str) -> Result<Socket, StatusCode> {
    match tokio_tungstenite::connect_async(app.ws_url(0, token)).await {
        Ok((socket, _)) => Ok(socket),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Err(StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::IM_A_TEAPOT))
        }
        Err(other) => panic!("websocket: {other}"),
    }
}

#[tokio::test]
async fn websocket_frames_subscriptions_and_connections_are_limited() {
    let app = spawn(
        &[
            ("realtime.max_frame_bytes", "1024"),
            ("realtime.max_subscriptions", "3"),
            ("limits.max_connections_per_user", "2"),
        ],
        1,
    )
    .await;
    let alice = app.token("alice", Role::Member);
    let mut first = try_connect(&app, &alice).await.unwrap_or_else(|s| panic!("{s}"));
    let mut second = try_connect(&app, &alice).await.unwrap_or_else(|s| panic!("{s}"));
    assert_eq!(try_connect(&app, &alice).await.err(), Some(StatusCode::TOO_MANY_REQUESTS));
    // Another user has slots of their own.
    assert!(try_connect(&app, &app.token("bob", Role::Member)).await.is_ok());

    // `user.<own id>.#` is one of the three patterns: two more fit, a third does not.
    ws_say(
        &mut first,
        json!({"op": "subscribe", "topics": ["episode.*.created", "job.#", "system.#"]}),
    )
    .await;
    let reply = ws_next(&mut first).await;
    assert_eq!(
        (reply["op"].as_str(), reply["code"].as_str()),
        (Some("error"), Some("too_many_subscriptions")),
        "{reply}"
    );
    ws_say(&mut first, json!({"op": "subscribe", "topics": ["episode.*.created", "job.#"]})).await;
    assert_eq!(ws_next(&mut first).await["op"], "subscribed");
    ws_say(&mut first, json!({"op": "subscribe", "topics": ["system.#"]})).await;
    assert_eq!(ws_next(&mut first).await["code"], "too_many_subscriptions");

    // A frame over the limit closes the connection with 1009 and a reason.
    ws_say(&mut second, json!({"op": "ping", "pad": "x".repeat(2000)})).await;
    let closed = ws_next(&mut second).await;
    assert_eq!(closed["close"], 1009, "{closed}");
    assert!(closed["reason"].as_str().is_some_and(|r| r.contains("1024")), "{closed}");

    // The closed connection's slot is free again.
    let third = wait_for("a free connection slot", DEADLINE, || async {
        try_connect(&app, &alice).await.ok()
    })
    .await;
    drop((first, third));
    app.stop().await;
}
