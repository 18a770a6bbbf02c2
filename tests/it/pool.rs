//! The connection budget: what a request and a worker do when their role's PostgreSQL pool has
//! no free connection. A request waits up to `database.acquire_timeout_secs`, then answers 503
//! problem+json with `Retry-After`; the workers wait; nothing accepted is lost.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use sea_orm::{ConnectionTrait, TransactionTrait};
use serde_json::{Value, json};
use showrunner_shared::auth::Role;
use showrunner_tests::{Options, TestApp, wait_until};

use crate::support::{DEADLINE, problem};

#[tokio::test]
async fn an_exhausted_pool_answers_503_after_the_bound_and_loses_nothing() {
    let app = TestApp::spawn_with(Options {
        extra: vec![
            // Every role's pool: two connections, and one second of waiting for one.
            ("database.max_connections".into(), "2".into()),
            ("database.acquire_timeout_secs".into(), "1".into()),
        ],
        ..Options::default()
    })
    .await;
    let alice = app.token("alice", Role::Member);

    // Hold the episodes table: the episode worker's batch and every episode read now wait
    // inside PostgreSQL, each on a pooled connection.
    let lock = app.db.begin().await.expect("begin");
    lock.execute_unprepared("LOCK TABLE episodes IN ACCESS EXCLUSIVE MODE").await.expect("lock");

    // Writes are still accepted (their rows go to `commands`); their worker waits.
    let mut accepted = Vec::new();
    for i in 0..10 {
        let response = app
            .http
            .post(app.api("/episodes"))
            .bearer_auth(&alice)
            .json(&json!({"title": format!("Under pressure {i}")}))
            .send()
            .await
            .expect("POST");
        assert_eq!(response.status(), StatusCode::ACCEPTED);
        let body: Value = response.json().await.expect("JSON");
        accepted.push(body["data"]["id"].as_str().expect("an id").to_string());
    }

    // Two reads take the api's two connections and wait on the lock.
    let mut readers = Vec::new();
    for _ in 0..2 {
        let request = app.http.get(app.api("/episodes")).bearer_auth(&alice);
        readers.push(tokio::spawn(async move { request.send().await.map(|r| r.status()) }));
    }
    let waiting = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = '{}' \
         AND application_name = 'showrunner-api' AND wait_event_type = 'Lock'",
        app.name
    );
    wait_until("both api connections to wait on the lock", DEADLINE, || async {
        app.count(&waiting).await == 2
    })
    .await;

    // The pool is exhausted: a request that touches no locked table waits for a connection up
    // to the bound, then answers 503 problem+json with Retry-After.
    for request in [
        app.http.get(app.api("/notifications")).bearer_auth(&alice),
        app.http.post(app.api("/episodes")).bearer_auth(&alice).json(&json!({"title": "Refused"})),
    ] {
        let started = Instant::now();
        let probe = request.try_clone().expect("a cloneable request");
        let retry_after = probe.send().await.expect("answer").headers().get("retry-after").cloned();
        let waited = started.elapsed();
        assert!(retry_after.is_some(), "a 503 says when to retry");
        assert!(
            waited >= Duration::from_millis(900) && waited < Duration::from_secs(10),
            "waited {waited:?} for a connection, the bound is 1 s"
        );
        let (status, body) = problem(request).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    }

    // Released: the waiting reads answer, every accepted write is applied once, and the
    // refused ones were never recorded.
    lock.rollback().await.expect("release the lock");
    for reader in readers {
        assert_eq!(reader.await.expect("join").expect("answer"), StatusCode::OK);
    }
    wait_until("every accepted write to be applied", DEADLINE, || async {
        app.count("SELECT count(*) FROM commands WHERE status = 'applied'").await == 10
    })
    .await;
    assert_eq!(app.count("SELECT count(*) FROM commands").await, 10, "a refused write was kept");
    let ids = accepted.iter().map(|id| format!("'{id}'")).collect::<Vec<_>>().join(",");
    assert_eq!(app.count(&format!("SELECT count(*) FROM episodes WHERE id IN ({ids})")).await, 10);
    wait_until("one activity row per write", DEADLINE, || async {
        app.count("SELECT count(*) FROM activity_log WHERE event = 'episode_created'").await == 10
    })
    .await;
    let status =
        app.http.get(app.api("/notifications")).bearer_auth(&alice).send().await.expect("GET");
    assert_eq!(status.status(), StatusCode::OK);
    app.stop().await;
}
