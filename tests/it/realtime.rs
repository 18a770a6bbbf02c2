//! The WebSocket relay with a real client against running api instances and workers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use reqwest::StatusCode;
use sea_orm::{DbBackend, FromQueryResult, Statement};
use serde_json::{Value, json};
use showrunner_shared::auth::Role;
use showrunner_tests::{Options, TestApp, wait_for, wait_until};
use tokio::io::AsyncReadExt;
use tokio_tungstenite::tungstenite::Message;

use crate::support::{DEADLINE, create_episode, send, str_of};

pub(crate) type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub(crate) async fn connect(app: &TestApp, instance: usize, token: &str) -> Socket {
    let (socket, _) =
        tokio_tungstenite::connect_async(app.ws_url(instance, token)).await.expect("websocket");
    socket
}

pub(crate) async fn say(socket: &mut Socket, frame: Value) {
    socket.send(Message::Text(frame.to_string().into())).await.expect("send");
}

/// The next JSON text frame; panics at the deadline or when the socket ends.
pub(crate) async fn next(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(DEADLINE, socket.next())
            .await
            .expect("a frame before the deadline");
        match message {
            Some(Ok(Message::Text(text))) => {
                return serde_json::from_str(&text).expect("JSON frame");
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("socket ended: {other:?}"),
        }
    }
}

/// The next frame that satisfies `wanted`, returning the frames skipped on the way.
pub(crate) async fn next_where(
    socket: &mut Socket,
    wanted: impl Fn(&Value) -> bool,
) -> (Value, Vec<Value>) {
    let mut skipped = Vec::new();
    loop {
        let frame = next(socket).await;
        if wanted(&frame) {
            return (frame, skipped);
        }
        skipped.push(frame);
    }
}

pub(crate) async fn subscribe(socket: &mut Socket, topics: &[&str]) {
    say(socket, json!({"op": "subscribe", "topics": topics})).await;
    let (reply, _) = next_where(socket, |f| f["op"] != "event").await;
    assert_eq!(reply["op"], "subscribed", "{reply}");
}

/// A stack whose per-user request rate does not slow a test's burst, with `extra` settings.
fn unlimited(extra: &[(&str, &str)]) -> Options {
    let lifted = [("limits.requests_per_sec", "100000"), ("limits.request_burst", "100000")];
    Options {
        extra: extra.iter().chain(&lifted).map(|(k, v)| ((*k).into(), (*v).into())).collect(),
        ..Default::default()
    }
}

/// A WebSocket with a 4 KiB receive buffer, so the network holds little of what the server
/// sends a client that does not read.
async fn connect_unread(app: &TestApp, token: &str) -> Socket {
    let tcp = tokio::net::TcpSocket::new_v4().expect("socket");
    tcp.set_recv_buffer_size(4096).expect("rcvbuf");
    let stream = tcp.connect(app.addr).await.expect("connect");
    let (socket, _) = tokio_tungstenite::client_async(
        app.ws_url(0, token),
        tokio_tungstenite::MaybeTlsStream::Plain(stream),
    )
    .await
    .expect("websocket");
    socket
}

/// Reads everything up to the close frame: how many text frames came first, and the close's
/// code and reason. The wait is bounded as a whole (a server that pings would keep a per-frame
/// timeout from ever firing).
async fn read_to_close(socket: &mut Socket) -> (usize, Option<(u16, String)>) {
    let mut received = 0;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        match tokio::time::timeout_at(deadline, socket.next()).await {
            Ok(Some(Ok(Message::Text(_)))) => received += 1,
            Ok(Some(Ok(Message::Close(frame)))) => {
                return (received, frame.map(|f| (u16::from(f.code), f.reason.to_string())));
            }
            Ok(Some(Ok(_))) => {}
            other => {
                panic!("no close frame within {DEADLINE:?} after {received} frames: {other:?}")
            }
        }
    }
}

/// The id of the next event, past the replies to `subscribe` and `resume`.
async fn next_event_id(socket: &mut Socket) -> String {
    loop {
        let frame = next(socket).await;
        match frame["op"].as_str() {
            Some("event") => return str_of(&frame, "id").to_string(),
            Some("subscribed" | "resumed") => {}
            _ => panic!("unexpected frame {frame}"),
        }
    }
}

/// Alice creates `n` episodes with 10,000-character descriptions, 8 at a time (`wait`: each
/// applied before its answer).
async fn create_big_episodes(app: &TestApp, token: &str, n: usize, wait: bool) {
    let description = "x".repeat(10_000);
    let expected = if wait { StatusCode::CREATED } else { StatusCode::ACCEPTED };
    let creates = (0..n).map(|i| {
        let description = &description;
        async move {
            let body = json!({"title": format!("Big {i}"), "description": description});
            let (status, body) = create_episode(app, token, body, wait).await;
            assert_eq!(status, expected, "{body}");
        }
    });
    futures_util::stream::iter(creates).buffer_unordered(8).collect::<Vec<()>>().await;
}

fn is_event(name: &str) -> impl Fn(&Value) -> bool + '_ {
    move |f: &Value| f["op"] == "event" && f["event"] == name
}

#[tokio::test]
async fn a_created_episode_reaches_its_subscribers_and_no_one_else() {
    let app = TestApp::spawn().await;
    let alice = app.token("alice", Role::Member);
    let mut creations = connect(&app, 0, &alice).await;
    let mut jobs = connect(&app, 0, &app.token("bob", Role::Member)).await;
    subscribe(&mut creations, &["episode.*.created"]).await;
    subscribe(&mut jobs, &["job.#", "episode.*.updated"]).await;

    let (_, created) = create_episode(&app, &alice, json!({"title": "Live"}), true).await;
    let id = str_of(&created["data"], "id").to_string();
    let frame = next(&mut creations).await;
    assert_eq!(frame["event"], "episode_created");
    assert_eq!(frame["topic"], format!("episode.{id}.created"));
    assert_eq!(frame["data"]["episode"]["title"], "Live");
    assert!(frame["id"].is_string());

    // Bob's first event is the update: the creation, which came first, never reached him.
    let (status, _) = send(
        app.http
            .patch(app.api(&format!("/episodes/{id}")))
            .bearer_auth(&alice)
            .json(&json!({"title": "Live 2"})),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (update, skipped) = next_where(&mut jobs, |f| f["op"] == "event").await;
    assert_eq!(update["event"], "episode_updated", "{skipped:?}");
    app.stop().await;
}

#[tokio::test]
async fn notifications_are_their_owners_alone() {
    let app = TestApp::spawn().await;
    let (alice, bob) = (app.token("alice", Role::Member), app.token("bob", Role::Member));
    let mut alices = connect(&app, 0, &alice).await;
    let mut bobs = connect(&app, 0, &bob).await;
    let alice_id = TestApp::user_id("alice");
    say(&mut bobs, json!({"op": "subscribe", "topics": [format!("user.{alice_id}.#")]})).await;
    let refused = next(&mut bobs).await;
    assert_eq!(
        (refused["op"].as_str(), refused["code"].as_str()),
        (Some("error"), Some("forbidden"))
    );
    subscribe(&mut bobs, &["#"]).await;

    create_episode(&app, &alice, json!({"title": "Mine"}), true).await;
    // Alice is subscribed to her own topics without asking.
    let (note, _) = next_where(&mut alices, is_event("notification_created")).await;
    assert_eq!(note["topic"], format!("user.{alice_id}.notification"));
    // A later event: had Bob been sent Alice's notification, it would come before this one.
    let (_, marker) = create_episode(&app, &bob, json!({"title": "Marker"}), true).await;
    let marker_id = str_of(&marker["data"], "id").to_string();
    let (_, before) = next_where(&mut bobs, |f| {
        f["event"] == "episode_created" && f["data"]["episode"]["id"] == marker_id.as_str()
    })
    .await;
    assert!(
        before.iter().all(|f| !f["topic"]
            .as_str()
            .unwrap_or_default()
            .starts_with(&format!("user.{alice_id}"))),
        "{before:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn presence_joins_leaves_and_expires() {
    let app = TestApp::spawn_with(Options {
        extra: vec![
            ("http.presence_ttl_secs".into(), "3".into()),
            ("realtime.heartbeat_secs".into(), "1".into()),
        ],
        ..Default::default()
    })
    .await;
    let alice = app.token("alice", Role::Member);
    let (_, created) = create_episode(&app, &alice, json!({"title": "Watched"}), true).await;
    let id = str_of(&created["data"], "id").to_string();
    let watch = format!("episode.{id}.#");
    let mut alices = connect(&app, 0, &alice).await;
    subscribe(&mut alices, &[&watch]).await;

    let mut bobs = connect(&app, 0, &app.token("bob", Role::Member)).await;
    subscribe(&mut bobs, &[&watch]).await;
    let (joined, _) = next_where(&mut alices, |f| {
        f["event"] == "viewer_joined" && f["data"]["userName"] == "bob"
    })
    .await;
    let names: Vec<&str> = joined["data"]["viewers"]
        .as_array()
        .map(|v| v.iter().filter_map(|v| v["userName"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(names, ["alice", "bob"]);
    let (_, read) =
        send(app.http.get(app.api(&format!("/episodes/{id}/viewers"))).bearer_auth(&alice)).await;
    assert_eq!(read["data"].as_array().map(Vec::len), Some(2));

    drop(bobs);
    let (left, _) =
        next_where(&mut alices, |f| f["event"] == "viewer_left" && f["data"]["userName"] == "bob")
            .await;
    assert_eq!(left["data"]["viewers"].as_array().map(Vec::len), Some(1));

    // A reader of GET /episodes/{id} is a viewer until the TTL passes without a new read.
    let carol = app.token("carol", Role::Member);
    let (_, read) =
        send(app.http.get(app.api(&format!("/episodes/{id}"))).bearer_auth(&carol)).await;
    assert_eq!(read["viewers"].as_array().map(Vec::len), Some(2));
    next_where(&mut alices, |f| f["event"] == "viewer_joined" && f["data"]["userName"] == "carol")
        .await;
    next_where(&mut alices, |f| f["event"] == "viewer_left" && f["data"]["userName"] == "carol")
        .await;
    // Alice, whose socket keeps refreshing, is still there.
    let (_, read) =
        send(app.http.get(app.api(&format!("/episodes/{id}/viewers"))).bearer_auth(&alice)).await;
    assert_eq!(read["data"], json!([{"userId": TestApp::user_id("alice"), "userName": "alice"}]));
    app.stop().await;
}

#[tokio::test]
async fn two_api_instances_both_deliver() {
    let app = TestApp::spawn_with(Options { api_instances: 2, ..Default::default() }).await;
    let alice = app.token("alice", Role::Member);
    let mut first = connect(&app, 0, &alice).await;
    let mut second = connect(&app, 1, &alice).await;
    subscribe(&mut first, &["episode.*.created"]).await;
    subscribe(&mut second, &["episode.*.created"]).await;
    let (_, created) = create_episode(&app, &alice, json!({"title": "Everywhere"}), false).await;
    let id = str_of(&created["data"], "id");
    for socket in [&mut first, &mut second] {
        let frame = next(socket).await;
        assert_eq!(frame["data"]["episode"]["id"], id);
    }

    // Presence spans instances: Bob watches through the second, Alice through the first.
    let watch = format!("episode.{id}.#");
    subscribe(&mut first, &[&watch]).await;
    let mut bobs = connect(&app, 1, &app.token("bob", Role::Member)).await;
    subscribe(&mut bobs, &[&watch]).await;
    let (joined, _) =
        next_where(&mut first, |f| f["event"] == "viewer_joined" && f["data"]["userName"] == "bob")
            .await;
    assert_eq!(joined["data"]["viewers"].as_array().map(Vec::len), Some(2));
    drop(bobs);
    let (left, _) =
        next_where(&mut first, |f| f["event"] == "viewer_left" && f["data"]["userName"] == "bob")
            .await;
    assert_eq!(left["data"]["viewers"].as_array().map(Vec::len), Some(1));
    app.stop().await;
}

#[derive(FromQueryResult)]
struct LoggedId {
    id: uuid::Uuid,
}

/// The ids of the events on `episode.*.created`, in event log order.
async fn logged_creations(app: &TestApp) -> Vec<String> {
    LoggedId::find_by_statement(Statement::from_string(
        DbBackend::Postgres,
        "SELECT id FROM event_log WHERE routing_key LIKE 'episode.%.created' ORDER BY seq",
    ))
    .all(&app.db)
    .await
    .unwrap_or_default()
    .into_iter()
    .map(|r| r.id.to_string())
    .collect()
}

#[tokio::test]
async fn resume_after_a_disconnect_during_a_burst_loses_nothing_and_repeats_nothing() {
    let app = TestApp::spawn().await;
    let alice = app.token("alice", Role::Member);
    // Bob watches Alice's burst: his own topics stay quiet, so every frame is a creation.
    let bob = app.token("bob", Role::Member);
    let mut socket = connect(&app, 0, &bob).await;
    subscribe(&mut socket, &["episode.*.created"]).await;
    let total = 60;
    let burst = {
        let (app_http, url, token) = (app.http.clone(), app.api("/episodes"), alice.clone());
        tokio::spawn(async move {
            for i in 0..total {
                let response = app_http
                    .post(&url)
                    .bearer_auth(&token)
                    .json(&json!({"title": format!("Burst {i}")}))
                    .send()
                    .await
                    .expect("sent");
                assert_eq!(response.status(), StatusCode::ACCEPTED);
            }
        })
    };
    // Event ids in the order they arrived, live and replayed.
    let mut seen: Vec<String> = Vec::new();
    while seen.len() < 10 {
        let (frame, _) = next_where(&mut socket, |f| f["op"] == "event").await;
        seen.push(str_of(&frame, "id").to_string());
    }
    drop(socket); // mid-burst

    let mut socket = connect(&app, 0, &bob).await;
    let last = seen.last().cloned().unwrap_or_default();
    say(&mut socket, json!({"op": "resume", "lastEventId": last, "topics": ["episode.*.created"]}))
        .await;
    burst.await.expect("burst");
    // Exactly `total` events: a duplicate at the seam would take the place of the last one.
    while seen.len() < total {
        seen.push(next_event_id(&mut socket).await);
    }
    // One more event proves nothing else was queued behind: no duplicate arrives first.
    let (_, marker) = create_episode(&app, &alice, json!({"title": "After"}), false).await;
    let (after, _) = next_where(&mut socket, |f| f["op"] == "event").await;
    assert_eq!(
        after["data"]["episode"]["id"], marker["data"]["id"],
        "a frame came before the next event: {after}"
    );
    // Every creation once, in the event log's order (its `seq` is the one total order).
    let logged = logged_creations(&app).await;
    assert_eq!(logged.len(), total + 1, "{logged:?}");
    assert_eq!(seen, logged[..total], "what the client saw, against the event log");
    assert_eq!(after["id"], logged[total].as_str());

    // An unknown id is refused with a reason.
    say(&mut socket, json!({"op": "resume", "lastEventId": uuid::Uuid::now_v7()})).await;
    let refused = next(&mut socket).await;
    assert_eq!(refused["code"], "resume_unavailable", "{refused}");
    app.stop().await;
}

/// Live events that come while a resume replays are held back; past `realtime.send_buffer` of
/// them (here 2) the relay lets them go and sends them from the event log after the replay. A
/// client that reads, resuming again and again from 200 events back during a burst, gets every
/// creation once, in order, and is never closed as too slow.
#[tokio::test]
async fn a_burst_during_replays_reaches_a_reading_client_from_the_log_once_and_in_order() {
    let app = TestApp::spawn_with(unlimited(&[("realtime.send_buffer", "2")])).await;
    let alice = app.token("alice", Role::Member);
    let bob = app.token("bob", Role::Member);
    let caught_up = || showrunner_shared::metrics::RELAY_CAUGHT_UP.get(&[]);
    let before = caught_up();
    let topics = ["episode.*.created"];
    let mut socket = connect(&app, 0, &bob).await;
    subscribe(&mut socket, &topics).await;
    let stop = Arc::new(AtomicBool::new(false));
    let burst = {
        let (http, url, token, stop) =
            (app.http.clone(), app.api("/episodes"), alice.clone(), stop.clone());
        tokio::spawn(async move {
            let created = AtomicUsize::new(0);
            let writer = || async {
                while !stop.load(Ordering::Relaxed) {
                    let n = created.fetch_add(1, Ordering::Relaxed);
                    let request = http
                        .post(&url)
                        .bearer_auth(&token)
                        .json(&json!({"title": format!("B{n}")}));
                    let (status, body) = send(request).await;
                    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
                }
            };
            futures_util::future::join_all((0..4).map(|_| writer())).await;
            created.into_inner()
        })
    };
    let mut seen: Vec<String> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut resumes = 0;
    // Until the relay has sent some socket events from the log, and a few resumes more.
    while resumes < 5 || caught_up() == before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no hold outgrew the buffer in {resumes} resumes during the burst"
        );
        let read_until = tokio::time::Instant::now() + Duration::from_millis(300);
        while tokio::time::Instant::now() < read_until || seen.is_empty() {
            seen.push(next_event_id(&mut socket).await);
        }
        // A client that lost what it had of the last 200 events: its replay is long, and the
        // burst goes on meanwhile.
        seen.truncate(seen.len().saturating_sub(200).max(1));
        let from = seen.last().cloned().unwrap_or_default();
        socket = connect(&app, 0, &bob).await;
        say(&mut socket, json!({"op": "resume", "lastEventId": from, "topics": topics})).await;
        resumes += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let created = burst.await.expect("burst");
    wait_until("every creation logged", DEADLINE, || async {
        logged_creations(&app).await.len() == created
    })
    .await;
    while seen.len() < created {
        seen.push(next_event_id(&mut socket).await);
    }
    // Every creation once, in the event log's order.
    assert_eq!(seen, logged_creations(&app).await, "what the client saw, against the event log");
    app.stop().await;
}

#[tokio::test]
async fn a_resume_beyond_max_replay_is_refused_and_one_within_it_replays() {
    // Every creation logs two events (the creation, and its creator's notification).
    let app = TestApp::spawn_with(Options {
        extra: vec![("realtime.max_replay".into(), "4".into())],
        ..Default::default()
    })
    .await;
    let alice = app.token("alice", Role::Member);
    let bob = app.token("bob", Role::Member);
    // Shipped, not only logged: `resume` reads no further than the shipper has published
    // (a client resumes from an event it saw), so counting unshipped rows raced it.
    let logged = |n: i64| {
        let app = &app;
        async move {
            wait_until(&format!("{n} events in the event log, shipped"), DEADLINE, || async {
                app.count(
                    "SELECT count(*) FROM event_log \
                     WHERE seq <= (SELECT published_seq FROM event_log_shipper WHERE id = 1)",
                )
                .await
                    == n
                    && app.count("SELECT count(*) FROM event_log").await == n
            })
            .await
        }
    };
    create_episode(&app, &alice, json!({"title": "First"}), true).await;
    logged(2).await;
    let first = logged_creations(&app).await.remove(0);
    let after_first = format!(
        "SELECT count(*) FROM event_log WHERE seq > (SELECT seq FROM event_log WHERE id = '{first}')"
    );
    create_episode(&app, &alice, json!({"title": "Second"}), true).await;
    logged(4).await;
    // Two or three events after the first (its notification may be sequenced before it).
    assert!(app.count(&after_first).await <= 4);

    // Within the limit of four: replayed.
    let mut socket = connect(&app, 0, &bob).await;
    say(
        &mut socket,
        json!({"op": "resume", "lastEventId": first, "topics": ["episode.*.created"]}),
    )
    .await;
    let (replayed, _) = next_where(&mut socket, |f| f["op"] == "event").await;
    assert_eq!(replayed["data"]["episode"]["title"], "Second", "{replayed}");
    let (done, skipped) = next_where(&mut socket, |f| f["op"] != "subscribed").await;
    assert_eq!(done["op"], "resumed", "{done} after {skipped:?}");

    // More than four events after it: more than the relay replays.
    let mut n = 4;
    while app.count(&after_first).await <= 4 {
        create_episode(&app, &alice, json!({"title": format!("More {n}")}), true).await;
        n += 2;
        logged(n).await;
    }
    let mut socket = connect(&app, 0, &bob).await;
    say(
        &mut socket,
        json!({"op": "resume", "lastEventId": first, "topics": ["episode.*.created"]}),
    )
    .await;
    let (refused, skipped) = next_where(&mut socket, |f| f["op"] != "subscribed").await;
    assert_eq!(refused["op"], "error", "{refused} after {skipped:?}");
    assert_eq!(refused["code"], "resume_too_far", "{refused}");
    app.stop().await;
}

#[tokio::test]
async fn an_event_past_the_retention_cannot_be_resumed_from() {
    let app = TestApp::spawn_with(Options {
        extra: vec![
            ("realtime.event_log_retention_secs".into(), "1".into()),
            ("retention.interval_secs".into(), "1".into()),
        ],
        ..Default::default()
    })
    .await;
    let alice = app.token("alice", Role::Member);
    let (_, created) = create_episode(&app, &alice, json!({"title": "Old"}), true).await;
    let id = str_of(&created["data"], "id").to_string();
    let event = wait_for("the creation in the event log", DEADLINE, || async {
        logged_creations(&app).await.into_iter().next()
    })
    .await;
    // The workers' retention sweep deletes what is older than the retention.
    wait_until("the event to leave the event log", DEADLINE, || async {
        app.count(&format!("SELECT count(*) FROM event_log WHERE id = '{event}'")).await == 0
    })
    .await;
    // The activity log keeps its own copy: retention is the event log's alone.
    assert_eq!(
        app.count(&format!("SELECT count(*) FROM activity_log WHERE resource_id = '{id}'")).await,
        1
    );
    let mut socket = connect(&app, 0, &alice).await;
    say(&mut socket, json!({"op": "resume", "lastEventId": event, "topics": ["episode.#"]})).await;
    let (refused, skipped) = next_where(&mut socket, |f| f["op"] != "subscribed").await;
    assert_eq!(refused["code"], "resume_unavailable", "{refused} after {skipped:?}");
    app.stop().await;
}

#[tokio::test]
async fn a_client_silent_for_three_heartbeats_is_closed_and_a_reading_one_is_not() {
    let app = TestApp::spawn_with(Options {
        extra: vec![("realtime.heartbeat_secs".into(), "1".into())],
        ..Default::default()
    })
    .await;
    let alice = app.token("alice", Role::Member);
    let (_, created) = create_episode(&app, &alice, json!({"title": "Watched"}), true).await;
    let watch = format!("episode.{}.#", str_of(&created["data"], "id"));
    let mut alices = connect(&app, 0, &alice).await;
    subscribe(&mut alices, &[&watch]).await;
    let mut bobs = connect(&app, 0, &app.token("bob", Role::Member)).await;
    subscribe(&mut bobs, &[&watch]).await;

    // Bob's client now neither reads nor writes, so it never answers a ping; Alice's reads,
    // and tungstenite answers the server's pings as it does. Bob's close shows as his leave.
    let reader = tokio::spawn(async move {
        next_where(&mut alices, |f| f["event"] == "viewer_left" && f["data"]["userName"] == "bob")
            .await;
        alices
    });
    let mut alices = tokio::time::timeout(Duration::from_secs(15), reader)
        .await
        .expect("bob's silent connection closed within three heartbeats and a few seconds")
        .expect("reader");
    // What Bob's socket holds, read raw: tungstenite would answer the pings queued before the
    // close, and that write fails on the closed connection before the close frame shows.
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(DEADLINE, bobs.get_mut().read_to_end(&mut raw)).await;
    let reason = b"no pong: connection presumed dead";
    let mut close = vec![0x88, u8::try_from(2 + reason.len()).unwrap_or(0), 0x03, 0xe9];
    close.extend_from_slice(reason);
    assert!(
        raw.windows(close.len()).any(|w| w == close.as_slice()),
        "no close 1001 \"no pong\" in what the server sent: {}",
        String::from_utf8_lossy(&raw)
    );
    // Alice's connection, answering pings all along, lives.
    say(&mut alices, json!({"op": "ping"})).await;
    let (pong, _) = next_where(&mut alices, |f| f["op"] != "event").await;
    assert_eq!(pong["op"], "pong", "{pong}");
    app.stop().await;
}

#[tokio::test]
async fn a_client_that_reads_too_slowly_is_closed_with_4008_while_a_fast_one_keeps_up() {
    // No pings: the slow client's answer to one could meet the closed connection. Writes as fast
    // as the api takes them: over the default per-user rate.
    let app = TestApp::spawn_with(unlimited(&[
        ("realtime.send_buffer", "64"),
        ("realtime.heartbeat_secs", "3600"),
    ]))
    .await;
    let alice = app.token("alice", Role::Member);
    let bob = app.token("bob", Role::Member);
    let mut slow = connect_unread(&app, &bob).await;
    let mut fast = connect(&app, 0, &bob).await;
    subscribe(&mut slow, &["episode.*.created"]).await;
    subscribe(&mut fast, &["episode.*.created"]).await;
    let total = 400;
    let reader = tokio::spawn(async move {
        for _ in 0..total {
            let frame = next(&mut fast).await;
            assert_eq!(frame["event"], "episode_created");
        }
    });
    create_big_episodes(&app, &alice, total, false).await;
    tokio::time::timeout(Duration::from_secs(120), reader)
        .await
        .expect("the fast client kept up")
        .expect("reader");
    // The slow client reads only now, at full speed: what the network held for it (a few hundred
    // of these frames, not all 400: its queue overflowed), then the close frame, which the server
    // waits ten seconds for it to take.
    let (received, close) = read_to_close(&mut slow).await;
    assert!(received < total, "the slow client got everything ({received})");
    let (code, reason) = close.expect("a close frame with a code");
    assert_eq!(code, 4008, "{reason}");
    assert!(reason.contains("send buffer overflow"), "{reason}");
    app.stop().await;
}

/// A client that stops reading in the middle of a replay holds no session forever: with no
/// live event to fill its queue, taking nothing for three heartbeats closes it with 4008.
#[tokio::test]
async fn a_client_that_stops_reading_during_a_replay_is_closed_with_4008() {
    let app = TestApp::spawn_with(unlimited(&[("realtime.heartbeat_secs", "1")])).await;
    let alice = app.token("alice", Role::Member);
    let bob = app.token("bob", Role::Member);
    // The first creation is where the client resumes from; the 600 after it are its replay.
    let (status, first) = create_episode(&app, &alice, json!({"title": "First"}), true).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    create_big_episodes(&app, &alice, 600, true).await;
    // All of it shipped before Bob connects: none of it comes live.
    wait_until("every event shipped", DEADLINE, || async {
        app.count(
            "SELECT count(*) FROM event_log \
             WHERE seq <= (SELECT published_seq FROM event_log_shipper WHERE id = 1)",
        )
        .await
            == app.count("SELECT count(*) FROM event_log").await
    })
    .await;
    let first_event = wait_for("the first creation logged", DEADLINE, || async {
        logged_creations(&app).await.into_iter().next()
    })
    .await;
    // 6 MB to replay: more than the kernel holds for the socket (4 MB at most for the server's
    // send buffer on Linux, 4 KiB for this client's receive buffer, which nobody reads).
    let mut stuck = connect_unread(&app, &bob).await;
    say(
        &mut stuck,
        json!({"op": "resume", "lastEventId": first_event, "topics": ["episode.*.created"]}),
    )
    .await;
    // Three heartbeats without taking a byte, then the close; read only after that (the server
    // waits ten seconds for a slow client to take its close frame).
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (received, close) = read_to_close(&mut stuck).await;
    assert!(received < 600, "the stuck client got the whole replay ({received})");
    let (code, reason) = close.expect("a close frame with a code");
    assert_eq!(code, 4008, "{reason}");
    app.stop().await;
}

#[tokio::test]
async fn malformed_frames_get_error_frames_and_the_connection_lives() {
    let app = TestApp::spawn().await;
    let mut socket = connect(&app, 0, &app.token("alice", Role::Member)).await;
    for bad in [
        json!("nonsense"),
        json!({"op": "dance"}),
        json!({"op": "subscribe", "topics": ["a..b"]}),
        json!({"op": "resume", "lastEventId": "x"}),
    ] {
        say(&mut socket, bad.clone()).await;
        let reply = next(&mut socket).await;
        assert_eq!(reply["op"], "error", "{bad} -> {reply}");
    }
    socket.send(Message::Text("{not json".into())).await.expect("send");
    assert_eq!(next(&mut socket).await["op"], "error");
    socket.send(Message::Binary(vec![1, 2, 3].into())).await.expect("send");
    assert_eq!(next(&mut socket).await["code"], "unsupported");
    say(&mut socket, json!({"op": "ping"})).await;
    assert_eq!(next(&mut socket).await["op"], "pong");

    // No token, or a forged one: no socket.
    assert!(
        tokio_tungstenite::connect_async(format!("ws://{}/api/v1/ws", app.addr)).await.is_err()
    );
    assert!(tokio_tungstenite::connect_async(app.ws_url(0, "forged.token.here")).await.is_err());
    app.stop().await;
}
