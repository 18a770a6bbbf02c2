//! The process's metrics: Prometheus text from the worker roles' ops server and the api, and
//! counters that move by exactly one when one command is applied. The registry belongs to the
//! process (every stack of a test binary shares it), so this test has a binary of its own:
//! beside other tests, "exactly one more" could not be told from another test's increments.

// The helpers are shared with the `it` binary, which uses the rest of them.
#[allow(dead_code)]
#[path = "../it/support.rs"]
mod support;

use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{Value, json};
use showrunner_shared::auth::Role;
use showrunner_tests::wait_for;
use tokio_tungstenite::tungstenite::Message;

use crate::support::{DEADLINE, Roles, Worker, management, send, stack, str_of};

/// The value of the sample `series` (name and labels exactly as printed), 0 when absent.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn metrics_of(url: &str) -> String {
    let response = showrunner_shared::tls::client().get(url).send().await.expect("scrape");
    assert_eq!(response.status(), StatusCode::OK);
    let content_type =
        response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default();
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
    response.text().await.expect("text")
}

/// The next text frame of `socket`, as JSON.
async fn next_text(
    socket: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) -> Value {
    loop {
        let message = tokio::time::timeout(DEADLINE, socket.next())
            .await
            .expect("a frame before the deadline");
        match message {
            Some(Ok(Message::Text(text))) => return serde_json::from_str(&text).expect("JSON"),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("socket ended: {other:?}"),
        }
    }
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
    // A WebSocket client of another user, subscribed to creations only: the one event it gets
    // is the one fan-out of this test (alice's own `user.` topics are not bob's).
    let bob = app.token("bob", Role::Member);
    let (mut socket, _) =
        tokio_tungstenite::connect_async(app.ws_url(0, &bob)).await.expect("websocket");
    let subscribe = json!({"op": "subscribe", "topics": ["episode.*.created"]});
    socket.send(Message::Text(subscribe.to_string().into())).await.expect("send");
    assert_eq!(next_text(&mut socket).await["op"], "subscribed");
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

    // The registry is the process's, and this binary runs this one test: nothing else moves
    // these counters, so they must move by exactly one.
    let after = wait_for("the worker's counters to move", DEADLINE, || {
        let url = worker_url.clone();
        let before = before.clone();
        async move {
            let text = metrics_of(&url).await;
            (sample(&text, acked) > sample(&before, acked)).then_some(text)
        }
    })
    .await;
    for series in [acked, consumed, latency] {
        assert_eq!(sample(&after, series), sample(&before, series) + 1.0, "{series}\n{after}");
    }
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

    assert_eq!(next_text(&mut socket).await["event"], "episode_created");
    let fanouts = "showrunner_relay_fanout_seconds_count";
    let writes = "showrunner_relay_socket_seconds_count";
    // Observed once the write returns, which may be just after the client read the frame.
    let api_after = wait_for("the relay's fan-out histograms to move", DEADLINE, || {
        let url = api_url.clone();
        let before = api_before.clone();
        async move {
            let text = metrics_of(&url).await;
            (sample(&text, fanouts) > sample(&before, fanouts)
                && sample(&text, writes) > sample(&before, writes))
            .then_some(text)
        }
    })
    .await;
    for series in [fanouts, writes] {
        assert_eq!(sample(&api_after, series), sample(&api_before, series) + 1.0, "{series}");
    }
    assert!(api_after.contains("# TYPE showrunner_relay_fanout_seconds histogram"));
    assert!(api_after.contains("showrunner_relay_fanout_seconds_bucket{le=\"0.02\"} "));
    let timed = "showrunner_http_request_duration_seconds_count{method=\"POST\",route=\"/api/v1/episodes\"}";
    for series in [posts, timed] {
        assert_eq!(sample(&api_after, series), sample(&api_before, series) + 1.0, "{series}");
    }
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
    let suffixes = ["/relay", "/showrunner.eventlog", "/p000"];
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
