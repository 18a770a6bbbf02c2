//! Jobs through RabbitMQ: success with its events in order, retries with growing delays,
//! parking and replay, permanent failures, cancellation during a retry, poison on the jobs
//! queue, and a worker killed with SIGKILL in the middle of a job.

use std::sync::atomic::Ordering;
use std::time::Duration;

use lapin::BasicProperties;
use lapin::options::{BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions};
use reqwest::StatusCode;
use sea_orm::{ConnectionTrait, DbBackend, FromQueryResult, Statement, TransactionTrait};
use serde_json::{Value, json};
use showrunner_shared::auth::Role;
use showrunner_shared::broker::topology::{JOBS_EXCHANGE, JOBS_KEY, JOBS_QUEUE, parked_queue};
use showrunner_tests::job_handlers::{self, Switch};
use showrunner_tests::{Options, TestApp, wait_for, wait_until};

use crate::support::{
    Capture, DEADLINE, Hits, close_connections, encode, management, send, serve, str_of,
};

/// A stack with one job worker running the test job types, and short retry delays.
async fn spawn(switch: &Switch) -> TestApp {
    spawn_with(switch, 1, &[]).await
}

async fn spawn_with(switch: &Switch, job_workers: usize, extra: &[(&str, &str)]) -> TestApp {
    let mut pairs = vec![
        ("jobs.initial_delay_ms", "150"),
        ("jobs.backoff_factor", "2"),
        ("jobs.max_delay_ms", "2000"),
        ("jobs.timeout_secs", "10"),
        // The hook servers of these tests listen on loopback, which webhooks may not reach
        // unless the configuration says so.
        ("jobs.webhook_allow_hosts", "127.0.0.1"),
    ];
    pairs.extend_from_slice(extra);
    TestApp::spawn_with(Options {
        job_workers,
        job_registry: job_handlers::registry(switch),
        extra: pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        ..Options::default()
    })
    .await
}

async fn submit(app: &TestApp, token: &str, body: Value) -> Value {
    let (status, body) = send(app.http.post(app.api("/jobs")).bearer_auth(token).json(&body)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["data"]["status"], "queued", "{body}");
    body["data"].clone()
}

async fn job(app: &TestApp, token: &str, id: &str) -> Value {
    let (status, body) =
        send(app.http.get(app.api(&format!("/jobs/{id}"))).bearer_auth(token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["data"].clone()
}

/// The job once its status is `status`; on timeout the panic shows the job as it last was.
async fn job_with_status(app: &TestApp, token: &str, id: &str, status: &str) -> Value {
    let start = std::time::Instant::now();
    loop {
        let j = job(app, token, id).await;
        if j["status"] == status {
            return j;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "job {id} did not become {status} within {DEADLINE:?}: {j}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[derive(FromQueryResult)]
struct Logged {
    event: String,
    data: Value,
}

/// The job's events as the activity log recorded them, in the order they happened.
async fn events_of(app: &TestApp, id: &str) -> Vec<(String, Value)> {
    Logged::find_by_statement(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT event, data FROM activity_log WHERE resource_type = 'job' AND resource_id = $1::uuid ORDER BY id",
        [id.into()],
    ))
    .all(&app.db)
    .await
    .unwrap_or_default()
    .into_iter()
    .map(|l| (l.event, l.data))
    .collect()
}

async fn wait_events(app: &TestApp, id: &str, last: &str, count: usize) -> Vec<(String, Value)> {
    wait_for(&format!("{count} events ending with {last}"), DEADLINE, || async {
        let events = events_of(app, id).await;
        (events.len() >= count && events.last().is_some_and(|(e, _)| e == last)).then_some(events)
    })
    .await
}

fn names(events: &[(String, Value)]) -> Vec<&str> {
    events.iter().map(|(e, _)| e.as_str()).collect()
}

/// A loopback HTTP server answering each request with the next status of `script` (the last
/// one repeats).
async fn hook_server(script: Vec<u16>) -> (String, Hits) {
    let (addr, hits) = serve("127.0.0.1:0", move |n| {
        let status = script.get(n).or(script.last()).copied().unwrap_or(200);
        format!("HTTP/1.1 {status} Scripted\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
    })
    .await;
    (format!("http://{addr}/hook"), hits)
}

#[tokio::test]
async fn a_webhook_job_succeeds_with_its_events_in_order() {
    let app = spawn(&Switch::default()).await;
    let alice = app.token("alice", Role::Member);
    let (url, hits) = hook_server(vec![200]).await;

    let created = submit(
        &app,
        &alice,
        json!({"type": "webhook", "payload": {"url": url, "body": {"hello": "world"}}}),
    )
    .await;
    let id = str_of(&created, "id").to_string();
    assert_eq!(created["maxAttempts"], 5);
    let done = job_with_status(&app, &alice, &id, "succeeded").await;
    assert_eq!(done["attempts"], 1);
    assert_eq!(done["result"], json!({"status": 200}));
    assert_eq!(done["lastError"], Value::Null);
    // What the hook received: one POST of the payload's body as JSON, keyed by the job.
    let requests = hits.requests();
    assert_eq!(requests.len(), 1, "{requests:?}");
    let request = &requests[0];
    assert_eq!((request.method.as_str(), request.path.as_str()), ("POST", "/hook"));
    assert_eq!(request.header("content-type"), Some("application/json"), "{request:?}");
    assert_eq!(request.json(), json!({"hello": "world"}), "{request:?}");
    assert_eq!(request.header("idempotency-key"), Some(id.as_str()), "{request:?}");

    let events = wait_events(&app, &id, "job_completed", 3).await;
    assert_eq!(names(&events), ["job_queued", "job_started", "job_completed"]);
    assert_eq!(events[0].1["type"], "webhook");
    assert_eq!(events[1].1["attempt"], 1);
    assert_eq!(events[1].1["jobId"], id.as_str());
    assert_eq!(events[2].1["results"], json!({"status": 200}));
    let actor = app
        .count(&format!(
            "SELECT count(*) FROM activity_log WHERE resource_id = '{id}' AND actor_id = '{}'",
            TestApp::user_id("alice")
        ))
        .await;
    assert_eq!(actor, 3, "the creator is the actor of the job's events");
    wait_until("job_processor_started in the activity log", DEADLINE, || async {
        app.count("SELECT count(*) FROM activity_log WHERE event = 'job_processor_started'").await
            == 1
    })
    .await;

    // Another member does not see it; the list shows it to its creator.
    let bob = app.token("bob", Role::Member);
    let (status, _) = send(app.http.get(app.api(&format!("/jobs/{id}"))).bearer_auth(&bob)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, list) =
        send(app.http.get(app.api("/jobs?status=succeeded&type=webhook")).bearer_auth(&alice))
            .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["data"][0]["id"], id.as_str());
    let (_, empty) = send(app.http.get(app.api("/jobs")).bearer_auth(&bob)).await;
    assert_eq!(empty["data"], json!([]));
    app.stop().await;
}

#[tokio::test]
async fn a_job_failing_twice_retries_with_growing_delays_then_completes() {
    let app = spawn(&Switch::default()).await;
    let alice = app.token("alice", Role::Member);
    let created =
        submit(&app, &alice, json!({"type": "test.flaky", "payload": {"failures": 2}})).await;
    let id = str_of(&created, "id").to_string();

    let done = job_with_status(&app, &alice, &id, "succeeded").await;
    assert_eq!(done["attempts"], 3);
    assert_eq!(done["result"], json!({"attempt": 3}));
    let events = wait_events(&app, &id, "job_completed", 7).await;
    assert_eq!(
        names(&events),
        [
            "job_queued",
            "job_started",
            "job_retry",
            "job_started",
            "job_retry",
            "job_started",
            "job_completed"
        ]
    );
    let (first, second) = (&events[2].1, &events[4].1);
    assert_eq!((first["retryCount"].clone(), second["retryCount"].clone()), (json!(1), json!(2)));
    let (d1, d2) = (first["delay"].as_u64().unwrap_or(0), second["delay"].as_u64().unwrap_or(0));
    // 150 ms and 300 ms, each +-20 %.
    assert!((120..=180).contains(&d1) && (240..=360).contains(&d2), "{d1} {d2}");
    assert_eq!(first["error"], "attempt 1 fails");
    assert_eq!(events[5].1["attempt"], 3);
    app.stop().await;
}

/// Jobs that fail together are retried together: their failed attempts are written by the
/// committer in few transactions (the `job_retry` activity rows share their inserting
/// transaction), and each job still runs exactly twice with one of each event.
#[tokio::test]
async fn jobs_failing_together_are_retried_in_few_transactions_each_once() {
    const JOBS: usize = 40;
    let mut app = spawn_with(&Switch::default(), 0, &[]).await;
    let conn = app.amqp().await;
    let publisher = showrunner_shared::broker::Publisher::open(&conn, Duration::from_secs(30))
        .await
        .expect("a publisher with confirms");
    // Queued before a worker runs, so that the worker claims them together and they fail at
    // once.
    let payloads = (0..JOBS).map(|_| json!({"failures": 1}).to_string()).collect();
    showrunner_tests::queue_jobs(&app.db, &publisher, "test.flaky", 3, "alice", payloads)
        .await
        .expect("the jobs queued");
    app.start_job_worker();
    wait_until(&format!("{JOBS} jobs to succeed"), DEADLINE, || async {
        app.count("SELECT count(*) FROM jobs WHERE status = 'succeeded'").await == JOBS as i64
    })
    .await;
    assert_eq!(app.count("SELECT count(*) FROM jobs WHERE attempts <> 2").await, 0);
    let activity = |event: &str| {
        format!(
            "SELECT count(*) FROM activity_log WHERE resource_type = 'job' AND event = '{event}'"
        )
    };
    wait_until("every job's job_completed", DEADLINE, || async {
        app.count(&activity("job_completed")).await == JOBS as i64
    })
    .await;
    assert_eq!(app.count(&activity("job_retry")).await, JOBS as i64);
    assert_eq!(app.count(&activity("job_started")).await, 2 * JOBS as i64);
    // One retry per job, each with its own attempt's error.
    let distinct = "SELECT count(DISTINCT resource_id) FROM activity_log \
         WHERE event = 'job_retry' AND data->>'error' = 'attempt 1 fails'";
    assert_eq!(app.count(distinct).await, JOBS as i64);
    // Written in batches, not one transaction per failed attempt (two, typically): the jobs
    // were claimed in a batch or two and failed at once, so their retries wait for the
    // committer together.
    let transactions = app
        .count("SELECT count(DISTINCT xmin::text) FROM activity_log WHERE event = 'job_retry'")
        .await;
    assert!((1..=JOBS as i64 / 2).contains(&transactions), "{transactions} retry transactions");
    app.stop().await;
}

#[tokio::test]
async fn a_webhook_retries_a_5xx_and_fails_at_once_on_a_4xx() {
    let app = spawn(&Switch::default()).await;
    let alice = app.token("alice", Role::Member);
    let (flaky_url, flaky_hits) = hook_server(vec![500, 200]).await;
    let (bad_url, bad_hits) = hook_server(vec![400]).await;

    let flaky =
        submit(&app, &alice, json!({"type": "webhook", "payload": {"url": flaky_url}})).await;
    let bad = submit(&app, &alice, json!({"type": "webhook", "payload": {"url": bad_url}})).await;
    let flaky = job_with_status(&app, &alice, str_of(&flaky, "id"), "succeeded").await;
    assert_eq!(flaky["attempts"], 2);
    assert_eq!(flaky_hits.requests().len(), 2);
    let bad = job_with_status(&app, &alice, str_of(&bad, "id"), "failed").await;
    assert_eq!(bad["attempts"], 1);
    assert!(str_of(&bad, "lastError").contains("400"), "{bad}");
    assert_eq!(bad_hits.requests().len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn a_job_that_keeps_failing_is_parked_notified_and_replayed() {
    let switch = Switch::default();
    switch.0.store(true, Ordering::SeqCst);
    let app = spawn(&switch).await;
    let alice = app.token("alice", Role::Member);
    let admin = app.token("root", Role::Admin);
    let created =
        submit(&app, &alice, json!({"type": "test.switch", "payload": {}, "maxAttempts": 3})).await;
    let id = str_of(&created, "id").to_string();

    let failed = job_with_status(&app, &alice, &id, "failed").await;
    assert_eq!(failed["attempts"], 3);
    assert_eq!(failed["lastError"], "switched to fail");
    let events = wait_events(&app, &id, "job_failed", 7).await;
    assert_eq!(
        names(&events),
        [
            "job_queued",
            "job_started",
            "job_retry",
            "job_started",
            "job_retry",
            "job_started",
            "job_failed"
        ]
    );
    assert_eq!(events[6].1["retriesExhausted"], true);
    assert_eq!(events[6].1["error"], "switched to fail");

    // The creator is told.
    let notification = wait_for("the failure notification", DEADLINE, || async {
        let (_, body) = send(app.http.get(app.api("/notifications")).bearer_auth(&alice)).await;
        body["data"].as_array().and_then(|n| n.iter().find(|n| n["kind"] == "job_failed").cloned())
    })
    .await;
    assert_eq!(notification["resourceId"], id.as_str());

    // The job is in the parking lot, with its reason.
    let conn = app.amqp().await;
    let channel = conn.create_channel().await.expect("channel");
    let parked = channel
        .basic_get(parked_queue(JOBS_QUEUE).as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .expect("get")
        .expect("the failed job is parked");
    let request: Value = serde_json::from_slice(&parked.delivery.data).expect("json");
    assert_eq!(request["jobId"], id.as_str());

    // Members may not replay; an admin may, and it runs again from attempt 1.
    let (status, _) =
        send(app.http.post(app.api(&format!("/jobs/{id}/retry"))).bearer_auth(&alice)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    switch.0.store(false, Ordering::SeqCst);
    let (status, body) =
        send(app.http.post(app.api(&format!("/jobs/{id}/retry"))).bearer_auth(&admin)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["data"]["attempts"], 0);
    let replayed = job_with_status(&app, &alice, &id, "succeeded").await;
    assert_eq!(replayed["attempts"], 1);
    assert_eq!(replayed["lastError"], Value::Null);
    // Only a failed job can be replayed.
    let (status, _) =
        send(app.http.post(app.api(&format!("/jobs/{id}/retry"))).bearer_auth(&admin)).await;
    assert_eq!(status, StatusCode::CONFLICT);
    drop(channel);
    let _ = conn.close(200, "done".into()).await;
    app.stop().await;
}

#[tokio::test]
async fn a_permanent_error_fails_the_job_at_once() {
    let app = spawn(&Switch::default()).await;
    let alice = app.token("alice", Role::Member);
    let created =
        submit(&app, &alice, json!({"type": "test.permanent", "payload": null, "maxAttempts": 5}))
            .await;
    let id = str_of(&created, "id").to_string();
    let failed = job_with_status(&app, &alice, &id, "failed").await;
    assert_eq!(failed["attempts"], 1);
    let events = wait_events(&app, &id, "job_failed", 3).await;
    assert_eq!(names(&events), ["job_queued", "job_started", "job_failed"]);
    app.stop().await;
}

const PLACEHOLDER: &[u8] = b"{\"placeholder\": true}";

/// A parking lot that does not confirm (the broker nacks every copy here; in a cluster, a quorum
/// queue electing a new leader after its node stopped) holds the failed job's delivery until it
/// does: the copy lands there once, soon after, and is never handed to the jobs queue's
/// dead-letter exchange, whose at-least-once resend comes minutes late if at all (the cluster
/// fault suite found failed jobs missing from the parking lot that way).
#[tokio::test]
async fn a_failed_job_waits_for_a_parking_lot_that_refuses_copies_then_lands_there_once() {
    let capture = Capture::default();
    let _logs = capture.install();
    let app = spawn(&Switch::default()).await;
    let alice = app.token("alice", Role::Member);
    let parking = parked_queue(JOBS_QUEUE);
    let policy = format!("policies/{}/refuse-parking", encode(&app.name));
    let refuse = json!({
        "pattern": format!("^{}$", parking.replace('.', "\\.")),
        "definition": {"max-length": 1, "overflow": "reject-publish"},
        "apply-to": "queues",
        "priority": 100,
    });
    let put = management(reqwest::Method::PUT, &policy, Some(refuse)).await;
    assert!(put.status().is_success(), "{}", put.status());
    wait_until("the refusing policy applied", DEADLINE, || async {
        showrunner_tests::queue_info(&app.name, &parking)
            .await
            .is_some_and(|i| i["effective_policy_definition"]["max-length"] == 1)
    })
    .await;

    // A quorum queue refuses a message once it holds more than its limit: two placeholders
    // fill it.
    let conn = app.amqp().await;
    let channel = conn.create_channel().await.expect("channel");
    channel.confirm_select(ConfirmSelectOptions::default()).await.expect("confirms");
    for _ in 0..2 {
        let placeholder = channel
            .basic_publish(
                "".into(),
                parking.as_str().into(),
                BasicPublishOptions::default(),
                PLACEHOLDER,
                BasicProperties::default(),
            )
            .await
            .expect("publish")
            .await
            .expect("confirm");
        assert!(placeholder.is_ack(), "{placeholder:?}");
    }

    let created =
        submit(&app, &alice, json!({"type": "test.permanent", "payload": null, "maxAttempts": 1}))
            .await;
    let id = str_of(&created, "id").to_string();
    wait_until("the worker retrying the refused copy", DEADLINE, || {
        let lines = capture.lines();
        async move { lines.iter().any(|l| l.contains("parking not confirmed, trying again")) }
    })
    .await;
    // The failure is committed first, with its copy still owed; the delivery is held by the
    // worker until the copy is in.
    let failed = job(&app, &alice, &id).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    assert!(park_pending(&app, &id).await, "the copy is owed");
    wait_until("the delivery held unacked", DEADLINE, || async {
        showrunner_tests::queue_info(&app.name, JOBS_QUEUE)
            .await
            .is_some_and(|i| i["messages_unacknowledged"] == 1)
    })
    .await;

    // It takes messages again once under its limit (3.10 never says so when the policy is
    // removed instead): taking the placeholders out ends the refusal.
    for _ in 0..2 {
        let taken = channel
            .basic_get(parking.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .expect("basic.get")
            .expect("a placeholder");
        assert_eq!(taken.delivery.data, PLACEHOLDER);
    }
    let failed = job_with_status(&app, &alice, &id, "failed").await;
    assert_eq!(failed["attempts"], 1, "{failed}");
    // Well within the dead-letter exchange's resend interval: the copy is the worker's own.
    wait_until("the copy in the parking lot", Duration::from_secs(20), || async {
        showrunner_tests::queue_info(&app.name, &parking).await.and_then(|i| i["messages"].as_i64())
            == Some(1)
    })
    .await;
    messages_in(&app, JOBS_QUEUE, 0).await;
    let deleted = management(reqwest::Method::DELETE, &policy, None).await;
    assert!(deleted.status().is_success(), "{}", deleted.status());
    let copies = take_all(&channel, &parking).await;
    assert_eq!(copies.len(), 1, "{copies:?}");
    assert_eq!(copies[0]["jobId"], id.as_str(), "{copies:?}");
    wait_until("the copy recorded as parked", DEADLINE, || async {
        !park_pending(&app, &id).await
    })
    .await;
    let lines = capture.lines();
    assert!(
        !lines.iter().any(|l| l.contains("handing the message to the queue's dead-letter")),
        "DLX used"
    );
    let _ = conn.close(200, "done".into()).await;
    app.stop().await;
}

/// Whether the failed job `id` still owes its copy to the parking lot.
async fn park_pending(app: &TestApp, id: &str) -> bool {
    let row = app
        .db
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT park_pending FROM jobs WHERE id = $1::uuid",
            [id.into()],
        ))
        .await
        .expect("query")
        .expect("the job's row");
    row.try_get("", "park_pending").expect("park_pending")
}

/// Takes every message `queue` holds, as JSON.
async fn take_all(channel: &lapin::Channel, queue: &str) -> Vec<Value> {
    let mut bodies = Vec::new();
    while let Some(message) =
        channel.basic_get(queue.into(), BasicGetOptions { no_ack: true }).await.expect("basic.get")
    {
        bodies.push(serde_json::from_slice::<Value>(&message.delivery.data).expect("json"));
    }
    bodies
}

/// Waits until the management API has seen `want` messages in `queue`.
async fn messages_in(app: &TestApp, queue: &str, want: i64) {
    wait_until(&format!("{want} messages in {queue}"), DEADLINE, || async {
        showrunner_tests::queue_info(&app.name, queue).await.and_then(|i| i["messages"].as_i64())
            == Some(want)
    })
    .await;
}

/// A worker that committed a job's failure and stopped before its copy reached the parking lot
/// (killed, or PostgreSQL answered the commit no more) leaves the request unacked; when it comes
/// back, it is parked then, and only that once: a copy of the same request after that is
/// skipped. (Before, the copy went first and the commit after; when the commit did not happen,
/// the job ran again after its lease and was parked a second time.)
#[tokio::test]
async fn a_failed_job_owed_to_the_parking_lot_is_parked_by_its_request_coming_back_once() {
    // The job worker's log shows what it did with each copy.
    let capture = Capture::default();
    let _logs = capture.install();
    let app = spawn(&Switch::default()).await;
    let alice = app.token("alice", Role::Member);
    let parking = parked_queue(JOBS_QUEUE);
    let created =
        submit(&app, &alice, json!({"type": "test.permanent", "payload": null, "maxAttempts": 1}))
            .await;
    let id = str_of(&created, "id").to_string();
    job_with_status(&app, &alice, &id, "failed").await;
    messages_in(&app, &parking, 1).await;
    wait_until("the copy recorded as parked", DEADLINE, || async {
        !park_pending(&app, &id).await
    })
    .await;

    // As the worker that stopped would have left it: failed, its copy owed and not there.
    let conn = app.amqp().await;
    let channel = conn.create_channel().await.expect("channel");
    channel.confirm_select(ConfirmSelectOptions::default()).await.expect("confirms");
    let first = channel
        .basic_get(parking.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .expect("basic.get")
        .expect("the first copy");
    let request: Value = serde_json::from_slice(&first.delivery.data).expect("json");
    assert_eq!(request["jobId"], id.as_str());
    app.db
        .execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "UPDATE jobs SET park_pending = true WHERE id = $1::uuid",
            [id.clone().into()],
        ))
        .await
        .expect("owe the copy");
    let publish = |body: Vec<u8>| {
        let channel = channel.clone();
        async move {
            let confirm = channel
                .basic_publish(
                    JOBS_EXCHANGE.into(),
                    JOBS_KEY.into(),
                    BasicPublishOptions { mandatory: true, ..Default::default() },
                    &body,
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await
                .expect("publish");
            assert!(confirm.await.expect("confirm").is_ack());
        }
    };
    // How many copies of the request the worker has dealt with, by its log.
    let handled = || {
        capture
            .lines()
            .iter()
            .filter(|l| l.contains(&id))
            .filter(|l| {
                ["parked late", "parked already", "job request skipped"]
                    .iter()
                    .any(|what| l.contains(what))
            })
            .count()
    };
    // The request comes back twice at once (a redelivery and the sweeper's copy): parked once,
    // and recorded.
    publish(first.delivery.data.clone()).await;
    publish(first.delivery.data.clone()).await;
    wait_until("both copies dealt with", DEADLINE, || async { handled() == 2 }).await;
    assert!(!park_pending(&app, &id).await, "recorded as parked");
    messages_in(&app, &parking, 1).await;
    // Another copy of it later: skipped, nothing more goes to the parking lot.
    publish(first.delivery.data.clone()).await;
    wait_until("the last copy dealt with", DEADLINE, || async { handled() == 3 }).await;
    let copies = take_all(&channel, &parking).await;
    assert_eq!(copies.len(), 1, "{copies:?}");
    assert_eq!(copies[0]["jobId"], id.as_str());
    let still = job(&app, &alice, &id).await;
    assert_eq!(still["status"], "failed", "{still}");
    assert_eq!(still["attempts"], 1, "{still}");
    let _ = conn.close(200, "done".into()).await;
    app.stop().await;
}

#[tokio::test]
async fn a_job_cancelled_during_its_retry_never_runs_again() {
    // The job worker's log shows when the delayed copy comes back and what it does with it.
    let capture = Capture::default();
    let _logs = capture.install();
    let app = spawn_with(&Switch::default(), 1, &[("jobs.initial_delay_ms", "800")]).await;
    let alice = app.token("alice", Role::Member);
    let created =
        submit(&app, &alice, json!({"type": "test.flaky", "payload": {"failures": 5}})).await;
    let id = str_of(&created, "id").to_string();
    let retrying = job_with_status(&app, &alice, &id, "retrying").await;
    assert!(retrying["nextAttemptAt"].is_string(), "{retrying}");

    let (status, body) =
        send(app.http.post(app.api(&format!("/jobs/{id}/cancel"))).bearer_auth(&alice)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["status"], "cancelled");

    // The delayed copy itself comes back (after about 0.8 s) and is skipped.
    let skipped =
        wait_for("the delayed copy to come back and be skipped", DEADLINE, || {
            let lines = capture.lines();
            let id = id.clone();
            async move {
                lines.into_iter().find(|l| l.contains("job request skipped") && l.contains(&id))
            }
        })
        .await;
    let cancelled = job(&app, &alice, &id).await;
    assert_eq!(cancelled["status"], "cancelled", "{skipped}");
    assert_eq!(cancelled["attempts"], 1);
    assert_eq!(
        names(&events_of(&app, &id).await),
        ["job_queued", "job_started", "job_retry", "job_cancelled"]
    );

    let (status, _) =
        send(app.http.post(app.api(&format!("/jobs/{id}/cancel"))).bearer_auth(&alice)).await;
    assert_eq!(status, StatusCode::CONFLICT);
    app.stop().await;
}

#[tokio::test]
async fn an_attempt_longer_than_the_timeout_is_cut_off_and_retried() {
    let app = spawn_with(&Switch::default(), 1, &[("jobs.timeout_secs", "1")]).await;
    let alice = app.token("alice", Role::Member);
    // The first attempt would sleep 30 s; the second returns at once.
    let created =
        submit(&app, &alice, json!({"type": "test.sleep", "payload": {"firstAttemptMs": 30000}}))
            .await;
    let id = str_of(&created, "id").to_string();
    let started = std::time::Instant::now();
    let done = job_with_status(&app, &alice, &id, "succeeded").await;
    assert!(started.elapsed() < std::time::Duration::from_secs(15), "{:?}", started.elapsed());
    assert_eq!(done["attempts"], 2, "{done}");
    assert_eq!(done["result"], json!({"attempt": 2}));
    let events = wait_events(&app, &id, "job_completed", 5).await;
    assert_eq!(
        names(&events),
        ["job_queued", "job_started", "job_retry", "job_started", "job_completed"]
    );
    let error = events[2].1["error"].as_str().unwrap_or_default();
    assert!(error.contains("timed out after 1s"), "{error}");
    app.stop().await;
}

#[tokio::test]
async fn a_job_is_refused_with_503_while_the_broker_is_away_and_nothing_is_recorded() {
    let app = spawn_with(&Switch::default(), 1, &[]).await;
    let alice = app.token("alice", Role::Member);
    let permissions = format!("permissions/{}/guest", app.name);
    // The broker turns guest away and drops this vhost's connections: the api's link is down
    // until the permissions come back.
    let response = management(reqwest::Method::DELETE, &permissions, None).await;
    assert!(response.status().is_success());
    wait_for("the connections to close", DEADLINE, || close_connections(&app.name, &["api"])).await;
    wait_until("the api to report not ready", DEADLINE, || async {
        app.http.get(app.url("/ready")).send().await.is_ok_and(|r| r.status() == 503)
    })
    .await;
    let request = json!({"type": "test.flaky", "payload": {"failures": 0}});
    let response = app
        .http
        .post(app.api("/jobs"))
        .bearer_auth(&alice)
        .json(&request)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(app.count("SELECT count(*) FROM jobs").await, 0, "a refused job was recorded");

    let response = management(
        reqwest::Method::PUT,
        &permissions,
        Some(json!({"configure": ".*", "write": ".*", "read": ".*"})),
    )
    .await;
    assert!(response.status().is_success());
    wait_until("the api to be ready again", DEADLINE, || async {
        app.http.get(app.url("/ready")).send().await.is_ok_and(|r| r.status().is_success())
    })
    .await;
    let created = submit(&app, &alice, request).await;
    job_with_status(&app, &alice, str_of(&created, "id"), "succeeded").await;
    assert_eq!(app.count("SELECT count(*) FROM jobs").await, 1);
    app.stop().await;
}

#[tokio::test]
async fn a_poison_job_request_is_parked_and_the_worker_goes_on() {
    let app = spawn(&Switch::default()).await;
    let alice = app.token("alice", Role::Member);
    let conn = app.amqp().await;
    let channel = conn.create_channel().await.expect("channel");
    channel.confirm_select(ConfirmSelectOptions::default()).await.expect("confirms");
    let confirm = channel
        .basic_publish(
            JOBS_EXCHANGE.into(),
            JOBS_KEY.into(),
            BasicPublishOptions { mandatory: true, ..Default::default() },
            b"{\"jobId\": 42}",
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .expect("publish");
    assert!(confirm.await.expect("confirm").is_ack());

    let created =
        submit(&app, &alice, json!({"type": "test.flaky", "payload": {"failures": 0}})).await;
    job_with_status(&app, &alice, str_of(&created, "id"), "succeeded").await;
    let parked = wait_for("the poison in the parking lot", DEADLINE, || async {
        channel
            .basic_get(parked_queue(JOBS_QUEUE).as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .ok()
            .flatten()
    })
    .await;
    assert_eq!(parked.delivery.data, b"{\"jobId\": 42}");
    drop(channel);
    let _ = conn.close(200, "done".into()).await;
    app.stop().await;
}

#[tokio::test]
async fn bad_job_requests_are_refused() {
    let app = spawn_with(&Switch::default(), 0, &[]).await;
    let alice = app.token("alice", Role::Member);
    for (body, field) in [
        (json!({"type": "", "payload": {}}), "type"),
        (json!({"type": "Bad Type", "payload": {}}), "type"),
        (
            json!({"type": "webhook", "payload": {"url": "http://example.com/"}, "maxAttempts": 0}),
            "maxAttempts",
        ),
        (json!({"type": "webhook"}), "payload"),
        // jsonb cannot store U+0000: a 500 before the fuzzer found it.
        (json!({"type": "webhook", "payload": {"body": ["a\u{0}b"]}}), "payload"),
        (json!({"type": "webhook", "payload": {"\u{0}": 1}}), "payload"),
    ] {
        let (status, problem) =
            send(app.http.post(app.api("/jobs")).bearer_auth(&alice).json(&body)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body} -> {problem}");
        assert_eq!(problem["errors"][0]["field"], field, "{problem}");
    }
    let (status, _) = send(app.http.get(app.api("/jobs?status=done")).bearer_auth(&alice)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(app.count("SELECT count(*) FROM jobs").await, 0);
    app.stop().await;
}

#[tokio::test]
async fn a_payload_at_the_edge_of_f64_reads_back() {
    // jsonb keeps -1.7976931348623157e308 as 309 plain digits; before serde_json parsed them
    // exactly, the insert's RETURNING and every later GET /jobs answered 500.
    let app = spawn_with(&Switch::default(), 0, &[]).await;
    let alice = app.token("alice", Role::Member);
    let payload = json!({"low": f64::MIN, "high": f64::MAX, "tiny": 5e-324});
    let created = submit(&app, &alice, json!({"type": "test.switch", "payload": payload})).await;
    assert_eq!(created["payload"], payload);
    let (status, page) = send(app.http.get(app.api("/jobs")).bearer_auth(&alice)).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["data"][0]["payload"], payload);
    app.stop().await;
}

#[tokio::test]
async fn a_worker_killed_mid_job_loses_nothing() {
    // No in-process job worker: a separate process takes the job and is killed with SIGKILL.
    let mut app = spawn_with(&Switch::default(), 0, &[("jobs.timeout_secs", "3")]).await;
    let alice = app.token("alice", Role::Member);
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_it-job-worker"))
        .envs(app.env())
        .env("SHOWRUNNER__LOG__FILTER", "warn")
        .kill_on_drop(true)
        .spawn()
        .expect("start the job worker process");

    let created =
        submit(&app, &alice, json!({"type": "test.sleep", "payload": {"firstAttemptMs": 60000}}))
            .await;
    let id = str_of(&created, "id").to_string();
    job_with_status(&app, &alice, &id, "running").await;
    child.start_kill().expect("SIGKILL");
    let status = child.wait().await.expect("the worker exits");
    assert!(!status.success(), "killed, not exited: {status:?}");

    // A new worker gets the redelivered request, waits out the dead worker's lease, and runs it.
    app.start_job_worker();
    let done = job_with_status(&app, &alice, &id, "succeeded").await;
    assert_eq!(done["attempts"], 2);
    assert_eq!(done["result"], json!({"attempt": 2}));
    let events = wait_events(&app, &id, "job_completed", 4).await;
    assert_eq!(events.iter().filter(|(e, _)| e == "job_completed").count(), 1);
    app.stop().await;
}

#[tokio::test]
async fn a_request_that_arrives_before_its_row_commits_waits_for_the_commit() {
    // What a replay or a retry does: lock the row, give it a new dispatch id, publish the
    // request, commit. The worker may get the request before the commit; it must wait for it.
    let app = spawn(&Switch::default()).await;
    let job_id = uuid::Uuid::now_v7();
    let (old, new) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    app.db
        .execute_unprepared(&format!(
            "INSERT INTO jobs (id, type, payload, status, attempts, max_attempts, created_by, dispatch_id) \
             VALUES ('{job_id}', 'test.flaky', '{{\"failures\": 0}}', 'failed', 1, 1, '{}', '{old}')",
            TestApp::user_id("alice")
        ))
        .await
        .expect("insert");
    let txn = app.db.begin().await.expect("begin");
    txn.execute_unprepared(&format!(
        "UPDATE jobs SET status = 'queued', attempts = 0, dispatch_id = '{new}' WHERE id = '{job_id}'"
    ))
    .await
    .expect("update");
    let conn = app.amqp().await;
    let channel = conn.create_channel().await.expect("channel");
    channel.confirm_select(ConfirmSelectOptions::default()).await.expect("confirms");
    let request = json!({"jobId": job_id, "dispatchId": new, "notBefore": null});
    let confirm = channel
        .basic_publish(
            JOBS_EXCHANGE.into(),
            JOBS_KEY.into(),
            BasicPublishOptions { mandatory: true, ..Default::default() },
            &serde_json::to_vec(&request).expect("json"),
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .expect("publish");
    assert!(confirm.await.expect("confirm").is_ack());
    wait_until("the worker to wait for the row lock", DEADLINE, || async {
        app.count(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .await
            >= 1
    })
    .await;
    txn.commit().await.expect("commit");
    let alice = app.token("alice", Role::Member);
    let done = job_with_status(&app, &alice, &job_id.to_string(), "succeeded").await;
    assert_eq!(done["attempts"], 1);
    drop(channel);
    let _ = conn.close(200, "done".into()).await;
    app.stop().await;
}

#[tokio::test]
async fn an_episode_export_writes_the_episode_and_its_history() {
    let app = spawn_with(&Switch::default(), 1, &[]).await;
    let alice = app.token("alice", Role::Member);
    let (status, created) = crate::support::create_episode(
        &app,
        &alice,
        json!({"title": "Pilot", "categories": ["drama"]}),
        true,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let episode_id = str_of(&created["data"], "id").to_string();
    wait_until("the creation in the activity log", DEADLINE, || async {
        app.count(&format!("SELECT count(*) FROM activity_log WHERE resource_id = '{episode_id}'"))
            .await
            == 1
    })
    .await;

    let job_row = submit(
        &app,
        &alice,
        json!({"type": "episode.export", "payload": {"episodeId": episode_id}, "episodeId": episode_id}),
    )
    .await;
    let done = job_with_status(&app, &alice, str_of(&job_row, "id"), "succeeded").await;
    assert_eq!(done["result"]["activityCount"], 1);
    // The export is a file of the episode, downloadable like any file.
    let file_id = str_of(&done["result"], "fileId").to_string();
    let url = str_of(&done["result"], "url").to_string();
    assert_eq!(url, format!("/api/v1/episodes/{episode_id}/files/{file_id}/content"));
    let response = app
        .http
        .get(format!("http://{}{url}", app.addr))
        .bearer_auth(&alice)
        .send()
        .await
        .expect("download");
    assert_eq!(response.status(), StatusCode::OK);
    let document: Value = response.json().await.expect("json");
    assert_eq!(document["episode"]["title"], "Pilot");
    let (status, file) = crate::support::send(
        app.http
            .get(app.api(&format!("/episodes/{episode_id}/files/{file_id}")))
            .bearer_auth(&alice),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{file}");
    assert_eq!(file["data"]["name"], format!("episode-{episode_id}.json"));
    assert_eq!(file["data"]["contentType"], "application/json");
    assert_eq!(document["activity"][0]["event"], "episode_created");

    // A missing episode fails at once: no retry can make it exist.
    let missing = submit(
        &app,
        &alice,
        json!({"type": "episode.export", "payload": {"episodeId": uuid::Uuid::now_v7()}}),
    )
    .await;
    let failed = job_with_status(&app, &alice, str_of(&missing, "id"), "failed").await;
    assert_eq!(failed["attempts"], 1);
    app.stop().await;
}

#[tokio::test]
async fn a_job_whose_request_was_never_published_is_swept_and_runs() {
    // What the api leaves behind if it dies between recording a job and publishing it.
    let app =
        spawn_with(&Switch::default(), 1, &[("workers.command_republish_after_secs", "1")]).await;
    let job_id = uuid::Uuid::now_v7();
    app.db
        .execute_unprepared(&format!(
            "INSERT INTO jobs (id, type, payload, status, max_attempts, created_by, dispatch_id) \
             VALUES ('{job_id}', 'test.flaky', '{{\"failures\": 0}}', 'queued', 3, '{}', '{}')",
            TestApp::user_id("alice"),
            uuid::Uuid::now_v7()
        ))
        .await
        .expect("insert");
    let alice = app.token("alice", Role::Member);
    let done = job_with_status(&app, &alice, &job_id.to_string(), "succeeded").await;
    assert_eq!(done["attempts"], 1);
    app.stop().await;
}
