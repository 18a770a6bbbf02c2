//! Jobs for production teams (issue 15): declared job types refused at the door, queue
//! operations in the activity log and on the WebSocket, `Idempotency-Key` on `POST /jobs`,
//! progress, cancelling a running job on one of two workers, the lease heartbeat.

use std::sync::atomic::Ordering;

use reqwest::StatusCode;
use sea_orm::ConnectionTrait;
use serde_json::{Value, json};
use showrunner_shared::auth::Role;
use showrunner_tests::job_handlers::{self, Switch};
use showrunner_tests::{Options, TestApp, wait_for, wait_until};

use crate::support::{
    DEADLINE, Socket, create_episode, expect_problem, send, str_of, ws_next, ws_say,
};

async fn spawn_with(switch: &Switch, job_workers: usize, extra: &[(&str, &str)]) -> TestApp {
    let mut pairs = vec![
        ("jobs.initial_delay_ms", "150"),
        ("jobs.backoff_factor", "2"),
        ("jobs.max_delay_ms", "2000"),
        ("jobs.timeout_secs", "10"),
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

fn post_job(app: &TestApp, token: &str, body: &Value) -> reqwest::RequestBuilder {
    app.http.post(app.api("/jobs")).bearer_auth(token).json(body)
}

async fn submit(app: &TestApp, token: &str, body: Value) -> Value {
    let (status, body) = send(post_job(app, token, &body)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    body["data"].clone()
}

async fn job_with_status(app: &TestApp, token: &str, id: &str, status: &str) -> Value {
    wait_for(&format!("job {id} to be {status}"), DEADLINE, || {
        let request = app.http.get(app.api(&format!("/jobs/{id}"))).bearer_auth(token);
        async move {
            let (_, body) = send(request).await;
            (body["data"]["status"] == status).then(|| body["data"].clone())
        }
    })
    .await
}

async fn connect(app: &TestApp, token: &str) -> Socket {
    let (socket, _) =
        tokio_tungstenite::connect_async(app.ws_url(0, token)).await.expect("websocket");
    socket
}

async fn subscribe(socket: &mut Socket, topics: &[&str]) {
    ws_say(socket, json!({"op": "subscribe", "topics": topics})).await;
    loop {
        let frame = ws_next(socket).await;
        if frame["op"] != "event" {
            assert_eq!(frame["op"], "subscribed", "{frame}");
            return;
        }
    }
}

/// The next event frame named `name`, and the event frames skipped on the way.
async fn event(socket: &mut Socket, name: &str) -> (Value, Vec<Value>) {
    let mut skipped = Vec::new();
    loop {
        let frame = ws_next(socket).await;
        assert!(frame.get("close").is_none(), "closed: {frame}");
        if frame["op"] != "event" {
            continue;
        }
        if frame["event"] == name {
            return (frame, skipped);
        }
        skipped.push(frame);
    }
}

#[tokio::test]
async fn undeclared_types_and_misfit_payloads_are_refused_naming_the_field() {
    let app = spawn_with(&Switch::default(), 0, &[]).await;
    let alice = app.token("alice", Role::Member);
    let p = expect_problem(
        post_job(&app, &alice, &json!({"type": "teleport", "payload": {}})),
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(p["errors"][0]["field"], "type", "{p}");
    let message = p["errors"][0]["message"].as_str().unwrap_or_default();
    for known in ["episode.export", "webhook", "test.flaky", "test.sleep"] {
        assert!(message.contains(known), "{known} is not listed: {message}");
    }
    for (body, field) in [
        (json!({"type": "webhook", "payload": {}}), "payload.url"),
        (json!({"type": "webhook", "payload": {"url": 42}}), "payload.url"),
        (json!({"type": "webhook", "payload": {"url": "ftp://example.com/x"}}), "payload.url"),
        (json!({"type": "webhook", "payload": {"url": "http://e.com/", "to": 1}}), "payload.to"),
        (json!({"type": "webhook", "payload": ["http://e.com/"]}), "payload"),
        (json!({"type": "episode.export", "payload": {"episodeId": "x"}}), "payload.episodeId"),
        (json!({"type": "test.flaky", "payload": {"failures": "two"}}), "payload.failures"),
    ] {
        let p =
            expect_problem(post_job(&app, &alice, &body), StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(p["errors"][0]["field"], field, "{body} -> {p}");
    }
    assert_eq!(app.count("SELECT count(*) FROM jobs").await, 0, "nothing refused was recorded");

    // The document describes POST /jobs as a union tagged by `type`: this stack's types, each
    // with its payload's schema.
    let (status, doc) = send(app.http.get(app.api("/openapi.json"))).await;
    assert_eq!(status, StatusCode::OK);
    let create = &doc["components"]["schemas"]["JobCreate"];
    assert_eq!(create["discriminator"]["propertyName"], "type", "{create}");
    let variants = create["oneOf"].as_array().cloned().unwrap_or_default();
    let tags: Vec<&str> =
        variants.iter().filter_map(|v| v["properties"]["type"]["const"].as_str()).collect();
    assert_eq!(
        tags,
        [
            "composition.export",
            "episode.export",
            "file.purge",
            "test.flaky",
            "test.permanent",
            "test.sleep",
            "test.steps",
            "test.switch",
            "webhook"
        ]
    );
    let webhook = variants.iter().find(|v| v["properties"]["type"]["const"] == "webhook");
    assert_eq!(
        webhook.map(|v| v["properties"]["payload"]["required"].clone()),
        Some(json!(["url"]))
    );
    app.stop().await;
}

#[tokio::test]
async fn queue_operations_reach_the_activity_log_and_the_jobs_audience() {
    let switch = Switch::default();
    switch.0.store(true, Ordering::SeqCst);
    let app = spawn_with(&switch, 1, &[("jobs.initial_delay_ms", "1500")]).await;
    let alice = app.token("alice", Role::Member);
    let bob = app.token("bob", Role::Member);
    let root = app.token("root", Role::Admin);
    let alice_id = TestApp::user_id("alice");
    let root_id = TestApp::user_id("root");
    let mut alices = connect(&app, &alice).await;
    let mut bobs = connect(&app, &bob).await;
    let mut roots = connect(&app, &root).await;
    subscribe(&mut alices, &["job.#"]).await;
    subscribe(&mut bobs, &["#"]).await;
    subscribe(&mut roots, &["job.#"]).await;

    // Queued: `job_queued` on job.<id>.queued, to the creator and the admins.
    let failing =
        submit(&app, &alice, json!({"type": "test.switch", "payload": {}, "maxAttempts": 1})).await;
    let failing_id = str_of(&failing, "id").to_string();
    let (queued, _) = event(&mut alices, "job_queued").await;
    assert_eq!(queued["topic"], format!("job.{failing_id}.queued"), "{queued}");
    assert_eq!(queued["data"]["type"], "test.switch", "{queued}");
    let (queued, _) = event(&mut roots, "job_queued").await;
    assert_eq!(queued["data"]["jobId"], failing_id.as_str());
    job_with_status(&app, &alice, &failing_id, "failed").await;

    // Requeued by an admin: `job_requeued` names the admin; the creator hears of it.
    switch.0.store(false, Ordering::SeqCst);
    let (status, body) =
        send(app.http.post(app.api(&format!("/jobs/{failing_id}/retry"))).bearer_auth(&root)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let (requeued, _) = event(&mut alices, "job_requeued").await;
    assert_eq!(requeued["topic"], format!("job.{failing_id}.requeued"), "{requeued}");
    assert_eq!(requeued["data"]["requeuedBy"]["id"], root_id.to_string(), "{requeued}");
    assert_eq!(requeued["data"]["previousAttempts"], 1, "{requeued}");
    job_with_status(&app, &alice, &failing_id, "succeeded").await;

    // Cancelled while it waits for its retry: `job_cancelled` with the status it left.
    let flaky =
        submit(&app, &alice, json!({"type": "test.flaky", "payload": {"failures": 5}})).await;
    let flaky_id = str_of(&flaky, "id").to_string();
    job_with_status(&app, &alice, &flaky_id, "retrying").await;
    let (status, body) =
        send(app.http.post(app.api(&format!("/jobs/{flaky_id}/cancel"))).bearer_auth(&root)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (cancelled, _) = event(&mut alices, "job_cancelled").await;
    assert_eq!(cancelled["topic"], format!("job.{flaky_id}.cancelled"), "{cancelled}");
    assert_eq!(cancelled["data"]["cancelledBy"]["id"], root_id.to_string(), "{cancelled}");
    assert_eq!(cancelled["data"]["previousStatus"], "retrying", "{cancelled}");

    // Each has its activity row, which the creator reads.
    for (id, event) in
        [(&failing_id, "job_queued"), (&failing_id, "job_requeued"), (&flaky_id, "job_cancelled")]
    {
        wait_until(&format!("the {event} row of {id}"), DEADLINE, || async {
            app.count(&format!(
                "SELECT count(*) FROM activity_log WHERE resource_type = 'job' \
                 AND resource_id = '{id}' AND event = '{event}' AND actor_id = '{alice_id}'"
            ))
            .await
                == 1
        })
        .await;
    }
    let (status, page) = send(
        app.http
            .get(app.api(&format!("/activity?resourceType=job&resourceId={flaky_id}")))
            .bearer_auth(&alice),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let events: Vec<&str> = page["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|row| row["event"].as_str())
        .collect();
    assert!(events.contains(&"job_queued") && events.contains(&"job_cancelled"), "{page}");

    // Bob, subscribed to everything, heard none of Alice's job events: the episode created
    // last reaches him, and nothing from `job.` came before it.
    let (status, _) = create_episode(&app, &bob, json!({"title": "Marker"}), false).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (_, before) = event(&mut bobs, "episode_created").await;
    assert!(
        before.iter().all(|f| !f["topic"].as_str().unwrap_or_default().starts_with("job.")),
        "{before:?}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_retried_post_with_its_key_makes_one_job() {
    let app = spawn_with(&Switch::default(), 1, &[]).await;
    let alice = app.token("alice", Role::Member);
    let bob = app.token("bob", Role::Member);
    let body = json!({"type": "test.flaky", "payload": {"failures": 0}, "maxAttempts": 2});
    let keyed = |token: &str, key: &str, body: &Value| {
        post_job(&app, token, body).header("Idempotency-Key", key)
    };
    let (status, first) = send(keyed(&alice, "export-42", &body)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    let id = str_of(&first["data"], "id").to_string();
    // The same key and body, before and after the job ran: the same job, no second one.
    let (status, again) = send(keyed(&alice, "export-42", &body)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{again}");
    assert_eq!(again["data"]["id"], id.as_str());
    job_with_status(&app, &alice, &id, "succeeded").await;
    let (status, late) = send(keyed(&alice, "export-42", &body)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{late}");
    assert_eq!(late["data"]["id"], id.as_str());
    assert_eq!(late["data"]["status"], "succeeded", "{late}");
    // Keys in another order are the same body.
    let reordered = json!({"maxAttempts": 2, "payload": {"failures": 0}, "type": "test.flaky"});
    let (status, same) = send(keyed(&alice, "export-42", &reordered)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{same}");
    assert_eq!(same["data"]["id"], id.as_str());

    // The same key with another body: 422 naming the key.
    let other = json!({"type": "test.flaky", "payload": {"failures": 1}});
    let p =
        expect_problem(keyed(&alice, "export-42", &other), StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(p["errors"][0]["field"], "Idempotency-Key", "{p}");
    // Keys are per user: Bob's same key is his own job.
    let (status, bobs) = send(keyed(&bob, "export-42", &body)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{bobs}");
    assert_ne!(bobs["data"]["id"], id.as_str());

    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM jobs WHERE created_by = '{}'",
            TestApp::user_id("alice")
        ))
        .await,
        1
    );
    wait_until("the job's events", DEADLINE, || async {
        app.count(&format!(
            "SELECT count(*) FROM activity_log WHERE resource_id = '{id}' AND event = 'job_completed'"
        ))
        .await
            == 1
    })
    .await;
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM activity_log WHERE resource_id = '{id}' AND event IN ('job_queued', 'job_started')"
        ))
        .await,
        2,
        "one job_queued, one job_started: the retries made nothing"
    );
    app.stop().await;
}

#[derive(sea_orm::FromQueryResult)]
struct Logged {
    event: String,
    data: Value,
    occurred_at: chrono::DateTime<chrono::Utc>,
}

async fn logged(app: &TestApp, id: &str) -> Vec<Logged> {
    use sea_orm::{DbBackend, FromQueryResult, Statement};
    Logged::find_by_statement(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT event, data, occurred_at FROM activity_log WHERE resource_type = 'job' \
         AND resource_id = $1::uuid ORDER BY id",
        [id.into()],
    ))
    .all(&app.db)
    .await
    .unwrap_or_default()
}

#[tokio::test]
async fn a_running_job_reports_progress_at_a_bounded_rate() {
    // Twenty steps of 100 ms, each reporting: about 2 s of reports, 200 ms apart at most 5/s.
    let app = spawn_with(&Switch::default(), 1, &[("jobs.progress_interval_ms", "400")]).await;
    let alice = app.token("alice", Role::Member);
    let created = submit(
        &app,
        &alice,
        json!({"type": "test.steps", "payload": {"steps": 20, "stepMs": 100}}),
    )
    .await;
    let id = str_of(&created, "id").to_string();
    // GET shows it while it runs.
    let midway = wait_for("progress while running", DEADLINE, || {
        let request = app.http.get(app.api(&format!("/jobs/{id}"))).bearer_auth(&alice);
        async move {
            let (_, body) = send(request).await;
            let job = body["data"].clone();
            (job["status"] == "running" && job["progress"]["percent"].as_i64().is_some())
                .then_some(job)
        }
    })
    .await;
    let percent = midway["progress"]["percent"].as_i64().unwrap_or(-1);
    assert!((1..=100).contains(&percent), "{midway}");
    assert!(str_of(&midway["progress"], "message").starts_with("step "), "{midway}");
    job_with_status(&app, &alice, &id, "succeeded").await;

    let events = logged_until(&app, &id, "job_completed").await;
    let progress: Vec<&Logged> = events.iter().filter(|e| e.event == "job_progress").collect();
    assert!(progress.len() >= 2, "{} progress events", progress.len());
    // At most one per interval (400 ms): twenty reports became a handful of events.
    assert!(progress.len() <= 8, "{} progress events for 20 reports", progress.len());
    for pair in progress.windows(2) {
        let gap = pair[1].occurred_at - pair[0].occurred_at;
        assert!(gap >= chrono::Duration::milliseconds(300), "events {gap} apart");
        assert!(pair[1].data["percent"].as_i64() >= pair[0].data["percent"].as_i64());
    }
    assert_eq!(progress[0].data["jobId"], id.as_str());
    app.stop().await;
}

#[tokio::test]
async fn a_running_job_is_cancelled_on_whichever_of_two_workers_runs_it() {
    let app = spawn_with(&Switch::default(), 2, &[("jobs.cancel_grace_secs", "1")]).await;
    let alice = app.token("alice", Role::Member);
    let root = app.token("root", Role::Admin);
    // Two jobs, one of which each worker is likely to take; both are cancelled while running.
    // One handler watches its token, the other ignores it and is abandoned after the grace.
    let honours = submit(
        &app,
        &alice,
        json!({"type": "test.steps", "payload": {"steps": 400, "stepMs": 50, "honorCancel": true}}),
    )
    .await;
    let ignores = submit(
        &app,
        &alice,
        json!({"type": "test.steps", "payload": {"steps": 40, "stepMs": 100, "honorCancel": false}}),
    )
    .await;
    let (honours, ignores) =
        (str_of(&honours, "id").to_string(), str_of(&ignores, "id").to_string());
    for id in [&honours, &ignores] {
        job_with_status(&app, &alice, id, "running").await;
    }
    let started = std::time::Instant::now();
    for (id, token) in [(&honours, &alice), (&ignores, &root)] {
        let (status, body) =
            send(app.http.post(app.api(&format!("/jobs/{id}/cancel"))).bearer_auth(token)).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        assert_eq!(body["data"]["status"], "running", "{body}");
        assert!(body["data"]["cancelRequestedAt"].is_string(), "{body}");
    }
    for id in [&honours, &ignores] {
        let cancelled = job_with_status(&app, &alice, id, "cancelled").await;
        assert_eq!(cancelled["result"], Value::Null, "{cancelled}");
    }
    // Seen within a heartbeat (1 s) plus, for the one that ignores it, the grace (1 s).
    assert!(started.elapsed() < std::time::Duration::from_secs(6), "{:?}", started.elapsed());
    // The ignoring handler would have finished after 4 s: wait past that, its result stays
    // discarded.
    tokio::time::sleep_until(
        tokio::time::Instant::from_std(started) + std::time::Duration::from_secs(5),
    )
    .await;
    for (id, by) in [(&honours, "alice"), (&ignores, "root")] {
        let job = job_with_status(&app, &alice, id, "cancelled").await;
        assert_eq!(job["result"], Value::Null, "{job}");
        let events = logged_until(&app, id, "job_cancelled").await;
        let names: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
        assert!(!names.contains(&"job_completed"), "{names:?}");
        let cancelled = events.iter().find(|e| e.event == "job_cancelled").map(|e| e.data.clone());
        let cancelled = cancelled.unwrap_or_default();
        assert_eq!(cancelled["previousStatus"], "running", "{cancelled}");
        assert_eq!(cancelled["cancelledBy"]["id"], TestApp::user_id(by).to_string());
    }
    // A finished job cannot be cancelled.
    let (status, _) =
        send(app.http.post(app.api(&format!("/jobs/{honours}/cancel"))).bearer_auth(&alice)).await;
    assert_eq!(status, StatusCode::CONFLICT);
    app.stop().await;
}

/// A stack without job worker, a job worker in a process of its own (to be killed), and a job
/// running there that would sleep ten minutes. The timeout is two minutes; the lease (renewed
/// every second while the job runs) is 3 s.
async fn a_job_running_in_a_worker_process() -> (TestApp, String, tokio::process::Child, String) {
    let app = spawn_with(
        &Switch::default(),
        0,
        &[("jobs.timeout_secs", "120"), ("jobs.lease_secs", "3")],
    )
    .await;
    let alice = app.token("alice", Role::Member);
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_it-job-worker"))
        .envs(app.env())
        .env("SHOWRUNNER__JOBS__LEASE_SECS", "3")
        .env("SHOWRUNNER__LOG__FILTER", "warn")
        .kill_on_drop(true)
        .spawn()
        .expect("start the job worker process");
    let created =
        submit(&app, &alice, json!({"type": "test.sleep", "payload": {"firstAttemptMs": 600000}}))
            .await;
    let id = str_of(&created, "id").to_string();
    job_with_status(&app, &alice, &id, "running").await;
    (app, alice, child, id)
}

/// The job's logged events once `name` is among them.
async fn logged_until(app: &TestApp, id: &str, name: &str) -> Vec<Logged> {
    wait_for(name, DEADLINE, || async {
        let events = logged(app, id).await;
        events.iter().any(|e| e.event == name).then_some(events)
    })
    .await
}

#[tokio::test]
async fn a_killed_workers_job_is_taken_over_after_its_lease_not_its_timeout() {
    let (mut app, alice, mut child, id) = a_job_running_in_a_worker_process().await;
    // Past a few renewals: the lease is alive only because it is renewed.
    let renewed = wait_for("a renewed lease", DEADLINE, || async {
        (app.count(&format!(
            "SELECT count(*) FROM jobs WHERE id = '{id}' AND status = 'running' \
             AND locked_until > now() + interval '2 seconds' AND updated_at < now() - interval '4 seconds'"
        ))
        .await
            == 1)
            .then_some(())
    })
    .await;
    let () = renewed;
    child.start_kill().expect("SIGKILL");
    let killed = std::time::Instant::now();
    let status = child.wait().await.expect("the worker exits");
    assert!(!status.success(), "killed, not exited: {status:?}");

    app.start_job_worker();
    let done = job_with_status(&app, &alice, &id, "succeeded").await;
    assert_eq!(done["attempts"], 2, "{done}");
    let took = killed.elapsed();
    // The lease (3 s), a heartbeat, the delay tier the redelivered copy waits in: seconds,
    // where the timeout would have been 122 s.
    assert!(took < std::time::Duration::from_secs(12), "taken over after {took:?}");
    app.stop().await;
}

#[tokio::test]
async fn scheduled_jobs_run_not_before_their_time_and_can_be_cancelled() {
    let app = spawn_with(&Switch::default(), 1, &[("jobs.max_schedule_days", "3")]).await;
    let alice = app.token("alice", Role::Member);
    let body = |run_at: chrono::DateTime<chrono::Utc>| json!({"type": "test.flaky", "payload": {"failures": 0}, "runAt": run_at.to_rfc3339()});
    let now = chrono::Utc::now;
    let p = expect_problem(
        post_job(&app, &alice, &body(now() + chrono::Duration::days(4))),
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(p["errors"][0]["field"], "runAt", "{p}");

    // Soon: held by the broker's delay tiers, listed as scheduled meanwhile.
    let soon_at = now() + chrono::Duration::seconds(3);
    let soon = submit(&app, &alice, body(soon_at)).await;
    let soon_id = str_of(&soon, "id").to_string();
    assert_eq!(soon["status"], "scheduled", "{soon}");
    // Later (a minute): cancelled while it waits. Far (two days, beyond the longest delay
    // tier): held by its row, without a request in the broker.
    let later = submit(&app, &alice, body(now() + chrono::Duration::seconds(60))).await;
    let later_id = str_of(&later, "id").to_string();
    let far = submit(&app, &alice, body(now() + chrono::Duration::days(2))).await;
    let far_id = str_of(&far, "id").to_string();
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM jobs WHERE id = '{far_id}' AND dispatch_id IS NULL"
        ))
        .await,
        1
    );
    let (status, page) =
        send(app.http.get(app.api("/jobs?status=scheduled")).bearer_auth(&alice)).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let listed: Vec<&str> =
        page["data"].as_array().into_iter().flatten().filter_map(|j| j["id"].as_str()).collect();
    for id in [&soon_id, &later_id, &far_id] {
        assert!(listed.contains(&id.as_str()), "{id} not in {listed:?}");
    }

    let (status, body_) =
        send(app.http.post(app.api(&format!("/jobs/{later_id}/cancel"))).bearer_auth(&alice)).await;
    assert_eq!(status, StatusCode::OK, "{body_}");
    assert_eq!(body_["data"]["status"], "cancelled");

    let done = job_with_status(&app, &alice, &soon_id, "succeeded").await;
    let started = wait_for("job_started of the soon job", DEADLINE, || async {
        logged(&app, &soon_id).await.into_iter().find(|e| e.event == "job_started")
    })
    .await;
    assert!(started.occurred_at >= soon_at, "started {} before {soon_at}", started.occurred_at);
    assert_eq!(done["attempts"], 1);

    // The far job's time comes (moved here, as if two days had passed): the job workers'
    // sweeper gives it its request, and it runs not before its time.
    let due_at = now() + chrono::Duration::seconds(2);
    app.db
        .execute_unprepared(&format!(
            "UPDATE jobs SET run_at = '{}' WHERE id = '{far_id}'",
            due_at.to_rfc3339()
        ))
        .await
        .expect("move the far job's time");
    job_with_status(&app, &alice, &far_id, "succeeded").await;
    let started = wait_for("job_started of the far job", DEADLINE, || async {
        logged(&app, &far_id).await.into_iter().find(|e| e.event == "job_started")
    })
    .await;
    assert!(started.occurred_at >= due_at, "started {} before {due_at}", started.occurred_at);
    let cancelled = job_with_status(&app, &alice, &later_id, "cancelled").await;
    assert_eq!(cancelled["attempts"], 0, "{cancelled}");
    let events: Vec<String> = logged(&app, &later_id).await.into_iter().map(|e| e.event).collect();
    assert_eq!(events, ["job_queued", "job_cancelled"]);
    app.stop().await;
}

#[tokio::test]
async fn a_job_cancelled_after_its_worker_died_is_not_run_again() {
    let (mut app, alice, mut child, id) = a_job_running_in_a_worker_process().await;
    child.start_kill().expect("SIGKILL");
    let _ = child.wait().await;
    // Asked to stop once nobody runs it: the row keeps the request.
    let (status, body) =
        send(app.http.post(app.api(&format!("/jobs/{id}/cancel"))).bearer_auth(&alice)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");

    // The redelivered request finds the lease over and the request to stop: it ends the job
    // instead of running it again.
    app.start_job_worker();
    let cancelled = job_with_status(&app, &alice, &id, "cancelled").await;
    assert_eq!(cancelled["attempts"], 1, "not run again: {cancelled}");
    let events = logged_until(&app, &id, "job_cancelled").await;
    let names: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(names, ["job_queued", "job_started", "job_cancelled"]);
    app.stop().await;
}
