//! Hostile input from the broker and hostile webhook targets. Messages published straight on the
//! test's vhost (too large, invalid UTF-8, no envelope, an unsupported version, forged) are
//! parked by every consumer with their reason, nothing is written for them, and the consumer
//! applies the good message published after them. The api's relay drops them (it cannot park)
//! and keeps serving. Webhooks reach loopback only when the configuration allows it, also
//! through a redirect, and a response over the cap fails the job.

use futures_util::{SinkExt, StreamExt};
use lapin::BasicProperties;
use lapin::options::{BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable};
use reqwest::StatusCode;
use serde_json::{Value, json};
use showrunner_shared::auth::Role;
use showrunner_shared::broker::topology::{
    COMMANDS_EXCHANGE, EVENT_LOG_QUEUE, EVENTS_EXCHANGE, JOBS_EXCHANGE, JOBS_KEY, JOBS_QUEUE,
    LIVE_EXCHANGE, command_queue, parked_queue, partition_of,
};
use showrunner_shared::contracts::{
    Actor, COMMAND_VERSION, Command, CommandEnvelope, Episode, EpisodeCreated, OutgoingEvent,
};
use showrunner_shared::domain::EpisodeStatus;
use showrunner_shared::event_log::{self, StoredEvent};
use showrunner_shared::live;
use showrunner_tests::job_handlers::{self, Switch};
use showrunner_tests::{Options, TestApp, wait_for, wait_until};
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

use crate::support::{DEADLINE, Received, send, serve, str_of};

/// Small enough that a test need not push megabytes through the broker.
const MAX_BYTES: &str = "16384";

async fn channel(app: &TestApp) -> (lapin::Connection, lapin::Channel) {
    let conn = app.amqp().await;
    let channel = conn.create_channel().await.expect("channel");
    channel.confirm_select(ConfirmSelectOptions::default()).await.expect("confirms");
    (conn, channel)
}

async fn publish(
    channel: &lapin::Channel,
    exchange: &str,
    key: &str,
    body: &[u8],
    headers: FieldTable,
) {
    let confirm = channel
        .basic_publish(
            exchange.into(),
            key.into(),
            BasicPublishOptions::default(),
            body,
            BasicProperties::default().with_delivery_mode(2).with_headers(headers),
        )
        .await
        .expect("publish");
    assert!(confirm.await.expect("confirm").is_ack());
}

/// A batch as the log shipper publishes it (`showrunner_shared::live`), with `x-prev-seq` if given.
async fn publish_batch(channel: &lapin::Channel, body: &[u8], prev: Option<i64>) {
    let mut headers = FieldTable::default();
    if let Some(prev) = prev {
        headers.insert("x-prev-seq".into(), AMQPValue::LongLongInt(prev));
    }
    let properties = BasicProperties::default()
        .with_delivery_mode(2)
        .with_type(live::BATCH_TYPE.into())
        .with_headers(headers);
    let confirm = channel
        .basic_publish(
            LIVE_EXCHANGE.into(),
            live::BATCH_ROUTING_KEY.into(),
            BasicPublishOptions::default(),
            body,
            properties,
        )
        .await
        .expect("publish");
    assert!(confirm.await.expect("confirm").is_ack());
}

/// The reasons of everything parked from `queue`, in order, once there are `count`.
async fn parked_reasons(channel: &lapin::Channel, queue: &str, count: usize) -> Vec<String> {
    let parked = parked_queue(queue);
    let mut reasons = Vec::new();
    while reasons.len() < count {
        let message =
            wait_for(&format!("{count} messages parked from {queue}"), DEADLINE, || async {
                channel
                    .basic_get(parked.as_str().into(), BasicGetOptions { no_ack: true })
                    .await
                    .ok()
                    .flatten()
            })
            .await;
        let reason = message.delivery.properties.headers().as_ref().and_then(|h| {
            match h.inner().get("x-parked-reason") {
                Some(AMQPValue::LongString(s)) => {
                    Some(String::from_utf8_lossy(s.as_bytes()).into_owned())
                }
                _ => None,
            }
        });
        reasons.push(reason.unwrap_or_default());
    }
    let extra = channel
        .basic_get(parked.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .expect("get");
    assert!(extra.is_none(), "more than {count} parked from {queue}: {reasons:?}");
    reasons
}

fn assert_reasons(reasons: &[String], expected: &[&str]) {
    assert_eq!(reasons.len(), expected.len(), "{reasons:?}");
    for (reason, prefix) in reasons.iter().zip(expected) {
        assert!(reason.contains(prefix), "expected {prefix:?} in {reason:?} (all: {reasons:?})");
    }
}

pub(crate) fn alice() -> Actor {
    Actor { id: TestApp::user_id("alice"), name: "alice".into() }
}

pub(crate) fn create(episode_id: Uuid) -> CommandEnvelope {
    CommandEnvelope {
        id: Uuid::now_v7(),
        version: COMMAND_VERSION,
        actor: alice(),
        accepted_at: chrono::Utc::now(),
        command: Command::CreateEpisode {
            episode_id,
            title: "From the broker".to_string().try_into().unwrap_or_else(|_| unreachable!()),
            description: Default::default(),
            status: EpisodeStatus::Draft,
            categories: Default::default(),
        },
    }
}

fn episode_on(partition: u16, partitions: u16) -> Uuid {
    std::iter::repeat_with(Uuid::now_v7)
        .find(|id| partition_of(*id, partitions) == partition)
        .unwrap_or_default()
}

fn json_bytes(value: &impl serde::Serialize) -> Vec<u8> {
    serde_json::to_vec(value).expect("json")
}

/// A body over the limit that is otherwise a fine JSON document.
fn huge() -> Vec<u8> {
    format!("{{\"padding\": \"{}\"}}", "x".repeat(20_000)).into_bytes()
}

async fn spawn(extra: &[(&str, &str)], job_workers: usize) -> TestApp {
    let mut pairs = vec![("amqp.max_message_bytes", MAX_BYTES), ("jobs.timeout_secs", "10")];
    pairs.extend_from_slice(extra);
    TestApp::spawn_with(Options {
        job_workers,
        job_registry: job_handlers::registry(&Switch::default()),
        extra: pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        ..Options::default()
    })
    .await
}

#[tokio::test]
async fn hostile_commands_are_parked_with_their_reason_and_the_worker_goes_on() {
    let app = spawn(&[], 0).await;
    let (conn, channel) = channel(&app).await;
    let partitions = app.settings.amqp.partitions;
    let here = episode_on(0, partitions);
    let elsewhere = episode_on(1, partitions);
    let send_p0 = |body: Vec<u8>| {
        let channel = channel.clone();
        async move { publish(&channel, COMMANDS_EXCHANGE, "0", &body, FieldTable::default()).await }
    };

    send_p0(huge()).await;
    send_p0(b"{\"id\": \"\xc3\x28\"}".to_vec()).await;
    send_p0(br#"{"title": "a bare body, no envelope"}"#.to_vec()).await;
    let mut v2 = serde_json::to_value(create(here)).expect("json");
    v2["version"] = json!(2);
    v2["command"]["type"] = json!("archive_episode");
    send_p0(json_bytes(&v2)).await;
    // Well formed, but its episode hashes to partition 1.
    send_p0(json_bytes(&create(elsewhere))).await;
    let mut nobody = create(here);
    nobody.actor.id = Uuid::nil();
    send_p0(json_bytes(&nobody)).await;
    let mut ancient = create(here);
    ancient.accepted_at = chrono::DateTime::from_timestamp(0, 0).unwrap_or_default();
    send_p0(json_bytes(&ancient)).await;
    send_p0(json_bytes(&create(here))).await;

    wait_until("the good command behind the hostile ones", DEADLINE, || async {
        app.count(&format!("SELECT count(*) FROM episodes WHERE id = '{here}'")).await == 1
    })
    .await;
    let reasons = parked_reasons(&channel, &command_queue(0), 7).await;
    assert_reasons(
        &reasons,
        &[
            "too large: 20015 bytes, more than the 16384 allowed",
            "invalid UTF-8 at byte 8",
            "missing envelope",
            "unsupported version 2",
            "forged envelope: episode",
            "forged envelope: actor.id",
            "forged envelope: acceptedAt",
        ],
    );
    assert_eq!(app.count("SELECT count(*) FROM episodes").await, 1);
    assert_eq!(app.count("SELECT count(*) FROM commands").await, 1);
    drop(channel);
    let _ = conn.close(200, "done".into()).await;
    app.stop().await;
}

pub(crate) fn created_event(episode_id: Uuid) -> OutgoingEvent {
    let now = chrono::Utc::now();
    let episode = Episode {
        id: episode_id,
        title: "Pilot".into(),
        description: String::new(),
        status: EpisodeStatus::Draft,
        categories: Vec::new(),
        created_by: alice().id,
        updated_by: alice().id,
        created_at: now,
        updated_at: now,
        deleted_at: None,
        version: 1,
    };
    let data = EpisodeCreated { episode, created_by: alice().id, timestamp: now };
    OutgoingEvent::new(&episode_id, &data, Some(alice()), None, now)
}

#[tokio::test]
async fn hostile_events_are_parked_by_every_event_consumer_which_goes_on() {
    let app = spawn(&[], 0).await;
    let (conn, channel) = channel(&app).await;
    let good = created_event(Uuid::now_v7());
    let key = good.routing_key.clone();
    let send_event = |body: Vec<u8>| {
        let (channel, key) = (channel.clone(), key.clone());
        async move { publish(&channel, EVENTS_EXCHANGE, &key, &body, FieldTable::default()).await }
    };

    let mut v9 = serde_json::to_value(&good.envelope).expect("json");
    v9["version"] = json!(9);
    // Another episode's creation on this episode's topic.
    let mut misrouted = created_event(Uuid::now_v7()).envelope;
    misrouted.id = Uuid::now_v7();
    let mut anonymous = good.envelope.clone();
    anonymous.id = Uuid::now_v7();
    anonymous.actor = None;
    let hostile = [
        huge(),
        vec![b'{', 0xff, b'}'],
        json_bytes(&good.envelope.event.data()),
        json_bytes(&v9),
        json_bytes(&misrouted),
        json_bytes(&anonymous),
    ];
    for body in &hostile {
        send_event(body.clone()).await;
    }
    send_event(json_bytes(&good.envelope)).await;

    let id = good.envelope.id;
    wait_until(
        "the good event in the activity log, the event log and a notification",
        DEADLINE,
        || async {
            app.count(&format!("SELECT count(*) FROM activity_log WHERE id = '{id}'")).await == 1
                && app.count(&format!("SELECT count(*) FROM event_log WHERE id = '{id}'")).await
                    == 1
                && app
                    .count(&format!("SELECT count(*) FROM notifications WHERE event_id = '{id}'"))
                    .await
                    == 1
        },
    )
    .await;
    let expected = [
        "too large",
        "invalid UTF-8 at byte 1",
        "missing envelope",
        "unsupported version 9",
        "forged envelope: episode_created of",
        "forged envelope: episode_created without an actor",
    ];
    // The importer is the one consumer of events from outside; the notification worker reads
    // what it recorded in the event log, so nothing it refused reaches notifications.
    let reasons = parked_reasons(&channel, EVENT_LOG_QUEUE, expected.len()).await;
    assert_reasons(&reasons, &expected);
    assert_eq!(app.count("SELECT count(*) FROM activity_log").await, 1);
    // The good event, and the `notification_created` its notification published.
    let logged =
        "SELECT count(*) FROM event_log WHERE body::jsonb->>'event' <> 'notification_created'";
    assert_eq!(app.count(logged).await, 1);
    assert_eq!(app.count("SELECT count(*) FROM notifications").await, 1);
    drop(channel);
    let _ = conn.close(200, "done".into()).await;
    app.stop().await;
}

#[tokio::test]
async fn hostile_job_requests_are_parked_and_the_worker_goes_on() {
    let app = spawn(&[], 1).await;
    let (conn, channel) = channel(&app).await;
    let send_job = |body: Vec<u8>| {
        let channel = channel.clone();
        async move { publish(&channel, JOBS_EXCHANGE, JOBS_KEY, &body, FieldTable::default()).await }
    };
    send_job(huge()).await;
    send_job(vec![0xfe, 0xfe]).await;
    send_job(b"[\"run\"]".to_vec()).await;
    let nil = json!({"jobId": Uuid::nil(), "dispatchId": Uuid::now_v7(), "notBefore": null});
    send_job(json_bytes(&nil)).await;
    // It would ride the delay tiers for eight thousand years.
    let forever = json!({"jobId": Uuid::now_v7(), "dispatchId": Uuid::now_v7(), "notBefore": "9999-01-01T00:00:00Z"});
    send_job(json_bytes(&forever)).await;

    let alice = app.token("alice", Role::Member);
    let (status, body) = send(
        app.http
            .post(app.api("/jobs"))
            .bearer_auth(&alice)
            .json(&json!({"type": "test.flaky", "payload": {"failures": 0}})),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let id = str_of(&body["data"], "id").to_string();
    wait_until("the good job to succeed", DEADLINE, || async {
        app.count(&format!("SELECT count(*) FROM jobs WHERE id = '{id}' AND status = 'succeeded'"))
            .await
            == 1
    })
    .await;
    let reasons = parked_reasons(&channel, JOBS_QUEUE, 5).await;
    assert_reasons(
        &reasons,
        &[
            "job request refused: too large",
            "job request refused: invalid UTF-8 at byte 0",
            "job request refused: missing envelope",
            "job request refused: forged envelope: jobId is the nil uuid",
            "job request refused: forged envelope: notBefore",
        ],
    );
    assert_eq!(app.count("SELECT count(*) FROM jobs").await, 1);
    drop(channel);
    let _ = conn.close(200, "done".into()).await;
    app.stop().await;
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next event frame, skipping control frames.
async fn next_event(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(DEADLINE, socket.next()).await.expect("a frame in time");
        if let Some(Ok(Message::Text(text))) = message {
            let frame: Value = serde_json::from_str(&text).expect("JSON frame");
            if frame["op"] == "event" {
                return frame;
            }
        } else if !matches!(message, Some(Ok(Message::Ping(_) | Message::Pong(_)))) {
            panic!("socket ended: {message:?}");
        }
    }
}

/// The shipper's headers: the event's number and the one published before it.
fn seq(n: i64) -> FieldTable {
    let mut headers = FieldTable::default();
    headers.insert("x-seq".into(), AMQPValue::LongLongInt(n));
    headers.insert("x-prev-seq".into(), AMQPValue::LongLongInt(n - 1));
    headers
}

#[tokio::test]
async fn hostile_sequenced_events_are_dropped_and_the_relay_goes_on() {
    let app = spawn(&[], 0).await;
    let alice_id = TestApp::user_id("alice");
    let (mut socket, _) =
        tokio_tungstenite::connect_async(app.ws_url(0, &app.token("alice", Role::Member)))
            .await
            .expect("websocket");
    socket
        .send(Message::Text(json!({"op": "subscribe", "topics": ["t.#"]}).to_string().into()))
        .await
        .expect("subscribe");
    let (conn, channel) = channel(&app).await;
    let envelope = |event: &str| {
        json!({"id": Uuid::now_v7(), "event": event, "version": 1,
               "occurredAt": chrono::Utc::now(), "actor": null, "correlationId": null,
               "causationId": null, "data": {}})
    };
    // Alice gets her own user topics without asking: a forged one must not reach her.
    let forged = envelope("notification_created");
    let own = format!("user.{alice_id}.notification");
    publish(&channel, LIVE_EXCHANGE, &own, &json_bytes(&forged), seq(1_000_001)).await;
    let unsequenced = envelope("test_ping");
    publish(&channel, LIVE_EXCHANGE, "t.hostile", &json_bytes(&unsequenced), FieldTable::default())
        .await;
    publish(&channel, LIVE_EXCHANGE, "t.hostile", &[0xff, 0x00], seq(1_000_002)).await;
    publish(&channel, LIVE_EXCHANGE, "t.hostile", &huge(), seq(1_000_003)).await;
    // A well-formed frame whose number the event log does not hold is not the shipper's, and
    // one without the number published before it is not either.
    let beyond = envelope("test_ping");
    publish(&channel, LIVE_EXCHANGE, "t.hostile", &json_bytes(&beyond), seq(1_000_004)).await;
    let mut unchained = FieldTable::default();
    unchained.insert("x-seq".into(), AMQPValue::LongLongInt(1_000_005));
    let unchained_event = envelope("test_ping");
    publish(&channel, LIVE_EXCHANGE, "t.hostile", &json_bytes(&unchained_event), unchained).await;
    // Batches: one whose events are not in the log (a forged notification among them, after
    // an item that is no envelope), one that is no batch, one out of order, one without the
    // number before it, one too large.
    let item =
        |seq: i64, topic: &str, event: &Value| json!({"seq": seq, "topic": topic, "event": event});
    let forged_batch = json!([
        item(1_000_010, "t.hostile", &json!({"not": "an envelope"})),
        item(1_000_011, &own, &envelope("notification_created")),
        item(1_000_012, "t.hostile", &envelope("test_ping")),
    ]);
    publish_batch(&channel, &json_bytes(&forged_batch), Some(1_000_009)).await;
    publish_batch(&channel, &json_bytes(&envelope("test_ping")), Some(1_000_012)).await;
    let descending = json!([
        item(1_000_014, "t.hostile", &envelope("test_ping")),
        item(1_000_013, "t.hostile", &envelope("test_ping")),
    ]);
    publish_batch(&channel, &json_bytes(&descending), Some(1_000_012)).await;
    let unchained_batch = json!([item(1_000_015, "t.hostile", &envelope("test_ping"))]);
    publish_batch(&channel, &json_bytes(&unchained_batch), None).await;
    publish_batch(&channel, &huge(), Some(1_000_015)).await;
    // What the shipper publishes gets through.
    let good = envelope("test_ping");
    let event = StoredEvent {
        id: good["id"].as_str().and_then(|id| id.parse().ok()).expect("id"),
        routing_key: "t.hostile".into(),
        body: good.to_string(),
        traceparent: None,
        activity: None,
    };
    event_log::record(&app.db, &[event]).await.expect("recorded");

    let frame = next_event(&mut socket).await;
    assert_eq!(frame["id"], good["id"], "the first event delivered is the good one: {frame}");
    let (status, _) = send(app.http.get(app.url("/api/v1/health"))).await;
    assert_eq!(status, StatusCode::OK);
    drop(channel);
    let _ = conn.close(200, "done".into()).await;
    app.stop().await;
}

fn ok(body: &str) -> String {
    format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len())
}

fn redirect(status: u16, location: &str) -> String {
    format!(
        "HTTP/1.1 {status} Moved\r\nlocation: {location}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    )
}

/// Submits a webhook job and waits until it is `succeeded` or `failed`.
async fn webhook(app: &TestApp, url: &str) -> Value {
    let alice = app.token("alice", Role::Member);
    let (status, body) = send(
        app.http
            .post(app.api("/jobs"))
            .bearer_auth(&alice)
            .json(&json!({"type": "webhook", "payload": {"url": url, "body": {"n": 1}}})),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let id = str_of(&body["data"], "id").to_string();
    wait_for("the webhook job to end", DEADLINE, || {
        let request = app.http.get(app.api(&format!("/jobs/{id}"))).bearer_auth(&alice);
        async move {
            let (_, body) = send(request).await;
            let job = body["data"].clone();
            (job["status"] == "succeeded" || job["status"] == "failed").then_some(job)
        }
    })
    .await
}

#[tokio::test]
async fn a_webhook_to_loopback_is_refused_by_default() {
    let app = spawn(&[], 1).await;
    let (addr, hits) = serve("127.0.0.1:0", |_| ok("")).await;
    for url in [format!("http://{addr}/hook"), format!("http://localhost:{}/hook", addr.port())] {
        let job = webhook(&app, &url).await;
        assert_eq!(job["status"], "failed", "{job}");
        assert_eq!(job["attempts"], 1, "refused for good, not retried: {job}");
        let error = job["lastError"].as_str().unwrap_or_default();
        assert!(error.contains("webhook refused") && error.contains("loopback"), "{error}");
    }
    assert_eq!(hits.connections(), 0, "nothing reached the server");
    app.stop().await;
}

/// The request the webhook job sent: a POST of its body as JSON.
fn assert_posted(request: &Received) {
    assert_eq!(request.method, "POST", "{request:?}");
    assert_eq!(request.header("content-type"), Some("application/json"), "{request:?}");
    assert_eq!(request.json(), json!({"n": 1}), "{request:?}");
}

#[tokio::test]
async fn a_webhook_to_an_allowed_address_runs_and_a_redirect_out_of_it_is_refused() {
    let app =
        spawn(&[("jobs.webhook_allow_hosts", "127.0.0.1"), ("jobs.webhook_max_redirects", "2")], 1)
            .await;
    // The forbidden target: loopback, but not the address the configuration allows.
    let (forbidden, forbidden_hits) = serve("127.0.0.2:0", |_| ok("secret")).await;
    // One answer per connection, and every hop is a connection of its own (`connection: close`).
    let (addr, hits) = serve("127.0.0.1:0", move |n| match n {
        0 => ok("fine"),
        1 => redirect(307, &format!("http://{forbidden}/internal")),
        2 => redirect(307, "/after-307"),
        4 => redirect(302, "/after-302"),
        6 => redirect(302, "/hop1"),
        7 => redirect(302, "/hop2"),
        9 => redirect(302, "/hop1"),
        10 => redirect(302, "/hop2"),
        11 => redirect(302, "/hop3"),
        _ => ok("landed"),
    })
    .await;
    let url = format!("http://{addr}/hook");

    let direct = webhook(&app, &url).await;
    assert_eq!(direct["status"], "succeeded", "{direct}");
    assert_eq!(direct["result"], json!({"status": 200}));
    assert_posted(&hits.requests()[0]);

    let redirected = webhook(&app, &url).await;
    assert_eq!(redirected["status"], "failed", "{redirected}");
    assert_eq!(redirected["attempts"], 1, "{redirected}");
    let error = redirected["lastError"].as_str().unwrap_or_default();
    assert!(error.contains("webhook refused: 127.0.0.2"), "{error}");
    assert_eq!(forbidden_hits.connections(), 0, "the redirect was not followed");

    // A 307 repeats the POST with its body; a 302 becomes a GET without one.
    let after_307 = webhook(&app, &url).await;
    assert_eq!(after_307["status"], "succeeded", "{after_307}");
    let after_302 = webhook(&app, &url).await;
    assert_eq!(after_302["status"], "succeeded", "{after_302}");
    let requests = hits.requests();
    assert_eq!(requests.len(), 6, "{requests:?}");
    assert_eq!(requests[3].path, "/after-307");
    assert_posted(&requests[3]);
    assert_eq!((requests[5].method.as_str(), requests[5].path.as_str()), ("GET", "/after-302"));
    assert!(requests[5].body.is_empty(), "{:?}", requests[5]);
    assert_eq!(requests[5].header("content-type"), None, "{:?}", requests[5]);

    // `jobs.webhook_max_redirects` (2 here): two redirects are followed, a third is not.
    let two = webhook(&app, &url).await;
    assert_eq!(two["status"], "succeeded", "{two}");
    let three = webhook(&app, &url).await;
    assert_eq!(three["status"], "failed", "{three}");
    assert_eq!(three["attempts"], 1, "{three}");
    let error = three["lastError"].as_str().unwrap_or_default();
    assert!(error.contains("redirected more than 2 times"), "{error}");
    let paths: Vec<String> = hits.requests().iter().skip(6).map(|r| r.path.clone()).collect();
    assert_eq!(paths, ["/hook", "/hop1", "/hop2", "/hook", "/hop1", "/hop2"], "no fourth hop");
    assert_eq!(hits.connections(), 12);
    app.stop().await;
}

#[tokio::test]
async fn a_webhook_may_reach_loopback_with_allow_private_and_its_response_is_capped() {
    let app = spawn(
        &[("jobs.webhook_allow_private", "true"), ("jobs.webhook_max_response_bytes", "1024")],
        1,
    )
    .await;
    let big = "y".repeat(5_000);
    let (addr, hits) =
        serve("127.0.0.1:0", move |n| if n == 0 { ok("small") } else { ok(&big) }).await;
    let small = webhook(&app, &format!("http://{addr}/hook")).await;
    assert_eq!(small["status"], "succeeded", "{small}");
    let large = webhook(&app, &format!("http://{addr}/hook")).await;
    assert_eq!(large["status"], "failed", "{large}");
    // Failed for good on its first attempt: a retry would only read the same body again.
    assert_eq!(large["attempts"], 1, "{large}");
    assert_eq!(hits.connections(), 2);
    let error = large["lastError"].as_str().unwrap_or_default();
    assert!(error.contains("larger than 1024 bytes"), "{error}");
    // Even then, an unspecified address (which reaches this machine) is never a destination.
    let zero = webhook(&app, &format!("http://0.0.0.0:{}/hook", addr.port())).await;
    assert_eq!(zero["status"], "failed", "{zero}");
    assert!(zero["lastError"].as_str().unwrap_or_default().contains("never a destination"));
    assert_eq!(hits.connections(), 2, "0.0.0.0 was not connected to");
    app.stop().await;
}
