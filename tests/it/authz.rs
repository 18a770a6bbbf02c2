//! Authorization: every forbidden (role, action) pair of the README's table gets 403 (or 404
//! where existence itself is private), and the database shows that nothing changed.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use sea_orm::{ConnectionTrait, DbBackend, FromQueryResult, Statement};
use serde_json::{Value, json};
use showrunner_shared::auth::Role;
use showrunner_shared::broker::topology::EVENTS_EXCHANGE;
use showrunner_shared::broker::{Outgoing, Publisher, publisher_json_properties};
use showrunner_shared::contracts::{
    Actor, JobCompleted, JobProcessorStarted, OutgoingEvent, Presence, ViewerJoined,
};
use showrunner_tests::{TestApp, wait_until};
use uuid::Uuid;

use crate::support::{
    DEADLINE, Socket, create_episode, expect_problem, send, str_of, ws_next, ws_say,
};

/// The rows `query` returns, as one JSON text: compared before and after a refused request.
async fn snapshot(app: &TestApp, query: &str) -> String {
    #[derive(FromQueryResult)]
    struct Snapshot {
        s: Option<String>,
    }
    let sql = format!("SELECT json_agg(t ORDER BY t::text)::text AS s FROM ({query}) t");
    Snapshot::find_by_statement(Statement::from_string(DbBackend::Postgres, sql))
        .one(&app.db)
        .await
        .unwrap_or_else(|e| panic!("{query}: {e}"))
        .and_then(|s| s.s)
        .unwrap_or_default()
}

/// Everything a refused request could have touched.
async fn everything(app: &TestApp) -> String {
    let mut all = String::new();
    for table in ["episodes", "commands", "jobs", "notifications"] {
        all.push_str(&snapshot(app, &format!("SELECT * FROM {table}")).await);
    }
    all
}

/// A job of `owner` recorded straight in the table, in `status`.
async fn insert_job(app: &TestApp, owner: &str, status: &str) -> Uuid {
    let id = Uuid::now_v7();
    let sql = format!(
        "INSERT INTO jobs (id, type, payload, status, attempts, max_attempts, created_by, \
         created_by_name, dispatch_id, last_error) VALUES ('{id}', 'webhook', '{{}}', '{status}', \
         3, 3, '{}', '{owner}', '{}', 'boom')",
        TestApp::user_id(owner),
        Uuid::now_v7()
    );
    app.db.execute_unprepared(&sql).await.unwrap_or_else(|e| panic!("insert job: {e}"));
    id
}

#[tokio::test]
async fn members_are_refused_what_only_admins_may_do_and_nothing_changes() {
    let app = TestApp::spawn().await;
    let alice = app.token("alice", Role::Member);
    let bob = app.token("bob", Role::Member);
    let root = app.token("root", Role::Admin);
    let (status, created) = create_episode(&app, &alice, json!({"title": "Pilot"}), true).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let episode = str_of(&created["data"], "id").to_string();
    let failed = insert_job(&app, "alice", "failed").await;
    // `Prefer: wait` answers once the episode is committed; its notification follows from the
    // event log, and must be in before the snapshot that refused requests may not change.
    wait_until("the creation notification", DEADLINE, || async {
        app.count("SELECT count(*) FROM notifications WHERE kind = 'episode_created'").await == 1
    })
    .await;
    let before = everything(&app).await;

    // Hard delete: admins only, whoever created the episode.
    for member in [&alice, &bob] {
        let url = app.api(&format!("/episodes/{episode}?permanent=true"));
        expect_problem(app.http.delete(&url).bearer_auth(member), StatusCode::FORBIDDEN).await;
    }
    // Retrying (replaying) a failed, parked job: admins only, its creator included.
    for member in [&alice, &bob] {
        let url = app.api(&format!("/jobs/{failed}/retry"));
        expect_problem(app.http.post(&url).bearer_auth(member), StatusCode::FORBIDDEN).await;
    }
    // Another user's activity across resources.
    let alice_id = TestApp::user_id("alice");
    let url = app.api(&format!("/activity?actorId={alice_id}"));
    expect_problem(app.http.get(&url).bearer_auth(&bob), StatusCode::FORBIDDEN).await;
    assert_eq!(everything(&app).await, before, "a refused request changed something");

    // What members may do: their own activity, soft delete.
    let url = app.api(&format!("/activity?actorId={}", TestApp::user_id("bob")));
    assert_eq!(send(app.http.get(&url).bearer_auth(&bob)).await.0, StatusCode::OK);
    // The admin may do all of it.
    let url = app.api(&format!("/activity?actorId={alice_id}"));
    let (status, rows) = send(app.http.get(&url).bearer_auth(&root)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(rows["data"].as_array().is_some_and(|r| !r.is_empty()), "{rows}");
    let url = app.api(&format!("/jobs/{failed}/retry"));
    assert_eq!(send(app.http.post(&url).bearer_auth(&root)).await.0, StatusCode::ACCEPTED);
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM jobs WHERE id = '{failed}' AND status = 'queued'"
        ))
        .await,
        1
    );
    let url = app.api(&format!("/episodes/{episode}?permanent=true"));
    let (status, body) =
        send(app.http.delete(&url).bearer_auth(&root).header("Prefer", "wait=10")).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert_eq!(
        app.count(&format!("SELECT count(*) FROM episodes WHERE id = '{episode}'")).await,
        0
    );
    app.stop().await;
}

#[tokio::test]
async fn another_users_commands_jobs_and_notifications_do_not_exist() {
    let app = TestApp::spawn().await;
    let alice = app.token("alice", Role::Member);
    let bob = app.token("bob", Role::Member);
    let root = app.token("root", Role::Admin);
    let alice_id = TestApp::user_id("alice");
    let (status, created) = create_episode(&app, &alice, json!({"title": "Pilot"}), false).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let command = str_of(&created, "commandId").to_string();
    let (status, job) = send(
        app.http
            .post(app.api("/jobs"))
            .bearer_auth(&alice)
            // A webhook to a port nobody serves (refused as loopback where a worker runs it).
            .json(&json!({"type": "webhook", "payload": {"url": "http://127.0.0.1:1/"}})),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    let job = str_of(&job["data"], "id").to_string();
    // The pipeline settles first (the creation notification; the job that cannot succeed), so the snapshots below can only differ by what a refused request did.
    wait_until("the episode and the job settled", DEADLINE, || async {
        app.count("SELECT count(*) FROM commands WHERE status = 'pending'").await == 0
            && app.count("SELECT count(*) FROM notifications WHERE kind = 'episode_created'").await
                == 1
            // A stack with a job worker fails the job and tells Alice; one without leaves it
            // queued. Either way it must not be moving.
            && app.count("SELECT count(*) FROM jobs WHERE status IN ('running', 'retrying')").await
                == 0
            && app.count("SELECT count(*) FROM jobs WHERE status = 'failed'").await
                == app.count("SELECT count(*) FROM notifications WHERE kind = 'job_failed'").await
    })
    .await;
    let note = Uuid::now_v7();
    app.db
        .execute_unprepared(&format!(
            "INSERT INTO notifications (id, user_id, event_id, kind, title, message) \
             VALUES ('{note}', '{alice_id}', '{}', 'test', 'For Alice', 'private')",
            Uuid::now_v7()
        ))
        .await
        .unwrap_or_else(|e| panic!("insert notification: {e}"));
    // Rows of Alice's that are not an episode's: only she and admins list them.
    let private_row = Uuid::now_v7();
    app.db
        .execute_unprepared(&format!(
            "INSERT INTO activity_log (id, event, resource_type, resource_id, actor_id, actor_name, \
             data, occurred_at) VALUES ('{private_row}', 'job_completed', 'job', '{job}', \
             '{alice_id}', 'alice', '{{}}', now())"
        ))
        .await
        .unwrap_or_else(|e| panic!("insert activity: {e}"));
    let before = everything(&app).await;

    // Existence is private: 404 for Bob, the same as an id that never existed.
    let get = |path: String, token: &str| app.http.get(app.api(&path)).bearer_auth(token);
    let post = |path: String, token: &str| app.http.post(app.api(&path)).bearer_auth(token);
    expect_problem(get(format!("/commands/{command}"), &bob), StatusCode::NOT_FOUND).await;
    expect_problem(get(format!("/jobs/{job}"), &bob), StatusCode::NOT_FOUND).await;
    expect_problem(post(format!("/jobs/{job}/cancel"), &bob), StatusCode::NOT_FOUND).await;
    expect_problem(post(format!("/notifications/{note}/read"), &bob), StatusCode::NOT_FOUND).await;
    // Notifications are their owner's alone, admins included.
    expect_problem(post(format!("/notifications/{note}/read"), &root), StatusCode::NOT_FOUND).await;
    let (_, all) = send(post("/notifications/read-all".into(), &bob)).await;
    assert_eq!(all["count"], 0);
    for (path, token) in [("/jobs", &bob), ("/notifications", &bob), ("/notifications", &root)] {
        let (status, page) = send(get(path.into(), token)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(page["data"], json!([]), "{path}: {page}");
    }
    assert_eq!(send(get("/notifications/unread-count".into(), &bob)).await.1["count"], 0);
    let (_, activity) = send(get("/activity?limit=100".into(), &bob)).await;
    let ids: Vec<&str> = activity["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["id"].as_str())
        .collect();
    assert!(!ids.contains(&private_row.to_string().as_str()), "{activity}");
    assert_eq!(everything(&app).await, before, "a refused request changed something");

    // The owner and the admins see them.
    for token in [&alice, &root] {
        assert_eq!(send(get(format!("/commands/{command}"), token)).await.0, StatusCode::OK);
        assert_eq!(send(get(format!("/jobs/{job}"), token)).await.0, StatusCode::OK);
        let (_, activity) = send(get("/activity?resourceType=job".into(), token)).await;
        assert_eq!(activity["data"][0]["id"], private_row.to_string(), "{activity}");
    }
    let (_, jobs) = send(get("/jobs".into(), &root)).await;
    assert_eq!(jobs["data"][0]["id"], job.as_str());
    assert_eq!(
        send(post(format!("/notifications/{note}/read"), &alice)).await.0,
        StatusCode::NO_CONTENT
    );
    app.stop().await;
}

#[tokio::test]
async fn every_route_but_health_needs_a_token() {
    let app = TestApp::spawn().await;
    let id = Uuid::now_v7();
    let routes = [
        (Method::GET, "/episodes".to_string()),
        (Method::POST, "/episodes".into()),
        (Method::GET, format!("/episodes/{id}")),
        (Method::PATCH, format!("/episodes/{id}")),
        (Method::DELETE, format!("/episodes/{id}")),
        (Method::GET, format!("/episodes/{id}/viewers")),
        (Method::GET, format!("/commands/{id}")),
        (Method::GET, "/jobs".into()),
        (Method::POST, "/jobs".into()),
        (Method::GET, format!("/jobs/{id}")),
        (Method::POST, format!("/jobs/{id}/retry")),
        (Method::POST, format!("/jobs/{id}/cancel")),
        (Method::GET, "/activity".into()),
        (Method::GET, "/notifications".into()),
        (Method::GET, "/notifications/unread-count".into()),
        (Method::POST, "/notifications/read-all".into()),
        (Method::POST, format!("/notifications/{id}/read")),
        (Method::GET, "/ws".into()),
    ];
    for (method, path) in routes {
        let request = app.http.request(method.clone(), app.api(&path)).json(&json!({"title": "x"}));
        let body = expect_problem(request, StatusCode::UNAUTHORIZED).await;
        assert!(body["detail"].is_string(), "{method} {path}: {body}");
    }
    for path in ["/health", "/ready", "/api/v1/health", "/api/v1/openapi.json"] {
        assert_eq!(send(app.http.get(app.url(path))).await.0, StatusCode::OK, "{path}");
    }
    assert_eq!(app.count("SELECT count(*) FROM commands").await, 0);
    app.stop().await;
}

async fn connect(app: &TestApp, token: &str) -> Socket {
    let (socket, _) = tokio_tungstenite::connect_async(app.ws_url(0, token))
        .await
        .unwrap_or_else(|e| panic!("websocket: {e}"));
    socket
}

/// Subscribes and waits for the acknowledgement (skipping events that arrive first).
async fn subscribe(socket: &mut Socket, topics: &[&str]) -> Value {
    ws_say(socket, json!({"op": "subscribe", "topics": topics})).await;
    loop {
        let frame = ws_next(socket).await;
        if frame["op"] != "event" {
            return frame;
        }
    }
}

/// Frames up to and including the event whose topic is `topic`.
async fn frames_until(socket: &mut Socket, topic: &str) -> Vec<Value> {
    let mut frames = Vec::new();
    loop {
        let frame = ws_next(socket).await;
        let done = frame["topic"] == topic || frame["op"] == "resumed";
        frames.push(frame);
        if done {
            return frames;
        }
    }
}

fn topics(frames: &[Value]) -> Vec<String> {
    frames.iter().filter_map(|f| f["topic"].as_str().map(str::to_string)).collect()
}

#[tokio::test]
async fn job_system_and_user_topics_reach_only_their_audience_live_and_on_resume() {
    let app = TestApp::spawn().await;
    let alice_id = TestApp::user_id("alice");
    let mut alices = connect(&app, &app.token("alice", Role::Member)).await;
    let mut bobs = connect(&app, &app.token("bob", Role::Member)).await;
    let mut roots = connect(&app, &app.token("root", Role::Admin)).await;
    for socket in [&mut alices, &mut bobs, &mut roots] {
        assert_eq!(subscribe(socket, &["#"]).await["op"], "subscribed");
    }
    // Not even an admin may subscribe to another user's topics.
    let refused = subscribe(&mut roots, &[&format!("user.{alice_id}.#")]).await;
    assert_eq!(refused["code"], "forbidden", "{refused}");

    // Events straight onto the exchange, as workers publish them; the marker comes last.
    let conn = app.amqp().await;
    let publisher = Publisher::open(&conn, Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("publisher: {e}"));
    let now = chrono::Utc::now();
    let alice = Actor { id: alice_id, name: "alice".into() };
    let job = Uuid::now_v7();
    let marker_episode = Uuid::now_v7();
    let first_episode = Uuid::now_v7();
    let presence = |episode_id: Uuid| {
        ViewerJoined(Presence {
            episode_id,
            user_id: alice_id,
            user_name: "alice".into(),
            viewers: Vec::new(),
        })
    };
    let events = [
        // Presence events carry their viewer as the actor (the inbound checks require it).
        OutgoingEvent::new(
            &first_episode,
            &presence(first_episode),
            Some(alice.clone()),
            None,
            now,
        ),
        OutgoingEvent::new(
            &job,
            &JobCompleted { job_id: job, results: json!({"secret": 1}), timestamp: now },
            Some(alice.clone()),
            None,
            now,
        ),
        OutgoingEvent::new(
            &(),
            &JobProcessorStarted { instance: "w1".into(), prefetch: 1, max_concurrent: 1 },
            None,
            None,
            now,
        ),
        OutgoingEvent::new(
            &marker_episode,
            &presence(marker_episode),
            Some(alice.clone()),
            None,
            now,
        ),
    ];
    for event in &events {
        let body = serde_json::to_vec(&event.envelope).unwrap_or_default();
        let id = event.envelope.id.to_string();
        publisher
            .publish(Outgoing {
                exchange: EVENTS_EXCHANGE,
                routing_key: &event.routing_key,
                body: &body,
                properties: publisher_json_properties(&id, "event", Default::default()),
                mandatory: true,
            })
            .await
            .unwrap_or_else(|e| panic!("publish: {e}"));
    }
    let job_topic = events[1].routing_key.clone();
    let system_topic = events[2].routing_key.clone();
    let marker = events[3].routing_key.clone();

    let seen = |frames: &[Value], topic: &str| topics(frames).iter().any(|t| t == topic);
    let bob_saw = frames_until(&mut bobs, &marker).await;
    assert!(!seen(&bob_saw, &job_topic) && !seen(&bob_saw, &system_topic), "{bob_saw:?}");
    let alice_saw = frames_until(&mut alices, &marker).await;
    assert!(seen(&alice_saw, &job_topic) && !seen(&alice_saw, &system_topic), "{alice_saw:?}");
    let root_saw = frames_until(&mut roots, &marker).await;
    assert!(seen(&root_saw, &job_topic) && seen(&root_saw, &system_topic), "{root_saw:?}");

    // Resume replays from the event log with the same filter.
    let first_id = events[0].envelope.id;
    let mut again = connect(&app, &app.token("bob", Role::Member)).await;
    ws_say(&mut again, json!({"op": "resume", "lastEventId": first_id, "topics": ["#"]})).await;
    let replayed = frames_until(&mut again, "never").await;
    assert_eq!(replayed.last().map(|f| f["op"].clone()), Some(json!("resumed")), "{replayed:?}");
    assert!(seen(&replayed, &marker), "{replayed:?}");
    assert!(!seen(&replayed, &job_topic) && !seen(&replayed, &system_topic), "{replayed:?}");
    app.stop().await;
}
