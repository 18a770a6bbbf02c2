//! The connection budget: what a request and a worker do when their role's PostgreSQL pool has
//! no free connection. A request waits up to `database.acquire_timeout_secs`, then answers 503
//! problem+json with `Retry-After`; the workers wait; nothing accepted is lost. And what the
//! patched pool (`vendor/README.md`) must still do when it takes a connection back.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use sea_orm::{ConnectionTrait, TransactionTrait};
use serde_json::{Value, json};
use showrunner_shared::auth::Role;
use showrunner_tests::{Options, TestApp, wait_until};

use crate::support::{DEADLINE, problem};

/// A stack whose every role's pool has two connections and waits one second for one, and a
/// transaction that holds the episodes table locked until it is dropped.
async fn a_small_pool_and_a_locked_episodes_table()
-> (TestApp, String, sea_orm::DatabaseTransaction) {
    let app = TestApp::spawn_with(Options {
        extra: vec![
            ("database.max_connections".into(), "2".into()),
            ("database.acquire_timeout_secs".into(), "1".into()),
        ],
        ..Options::default()
    })
    .await;
    let alice = app.token("alice", Role::Member);
    let lock = app.db.begin().await.expect("begin");
    lock.execute_unprepared("LOCK TABLE episodes IN ACCESS EXCLUSIVE MODE").await.expect("lock");
    (app, alice, lock)
}

#[tokio::test]
async fn an_exhausted_pool_answers_503_after_the_bound_and_loses_nothing() {
    // Hold the episodes table: the episode worker's batch and every episode read now wait
    // inside PostgreSQL, each on a pooled connection.
    let (app, alice, lock) = a_small_pool_and_a_locked_episodes_table().await;

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

/// A write accepted and applied within its `Prefer: wait`, whose result the api cannot read
/// because its pool is exhausted, answers 202 (true: it is accepted), never 503 (which says it
/// was not, and invites a retry that would create it twice).
#[tokio::test]
async fn an_applied_write_whose_result_cannot_be_read_answers_202_not_503() {
    // The worker waits on the episodes table while the write is recorded and published.
    let (app, alice, episodes) = a_small_pool_and_a_locked_episodes_table().await;
    // Too large for the worker's notification to carry (PostgreSQL's 8,000 bytes), so the
    // request has to read it; a smaller one is answered 201 from the notification alone.
    let description = "é".repeat(5_000);
    let request = app
        .http
        .post(app.api("/episodes"))
        .bearer_auth(&alice)
        .header("Prefer", "wait=20")
        .json(&json!({"title": "Applied, unreadable", "description": description}));
    let write = tokio::spawn(async move { request.send().await });
    wait_until("the command to be recorded", DEADLINE, || async {
        app.count("SELECT count(*) FROM commands").await == 1
    })
    .await;

    // Two reads of the notifications take the api's two connections and wait on a lock.
    let notifications = app.db.begin().await.expect("begin");
    notifications
        .execute_unprepared("LOCK TABLE notifications IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("lock");
    let mut readers = Vec::new();
    for _ in 0..2 {
        let request = app.http.get(app.api("/notifications")).bearer_auth(&alice);
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

    // The worker applies; the waiting request wakes and finds no connection to read with.
    episodes.rollback().await.expect("release the episodes");
    let response = write.await.expect("join").expect("an answer");
    let status = response.status();
    let location = response.headers().get("location").cloned();
    let body: Value = response.json().await.unwrap_or_default();
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let command = body["commandId"].as_str().expect("a command id").to_string();
    assert_eq!(
        location.and_then(|l| l.to_str().ok().map(String::from)),
        Some(format!("/api/v1/commands/{command}"))
    );
    assert_eq!(app.count("SELECT count(*) FROM commands WHERE status = 'applied'").await, 1);

    notifications.rollback().await.expect("release the notifications");
    for reader in readers {
        assert_eq!(reader.await.expect("join").expect("answer"), StatusCode::OK);
    }
    app.stop().await;
}

/// Every pool takes a connection back without sqlx's ping unless something waits in its write
/// buffer (the patched `sqlx-core`, `vendor/README.md`). A transaction dropped without its commit
/// leaves its `ROLLBACK` there: it must still reach PostgreSQL as the connection goes back, so
/// its locks go at once and not whenever the connection is next used.
#[tokio::test]
async fn a_transaction_dropped_uncommitted_lets_go_of_its_locks_at_once() {
    let app = TestApp::spawn().await;
    // A pool of its own, which nothing uses after the drop: only taking the connection back can
    // send the `ROLLBACK`.
    let pool = sea_orm::Database::connect(&app.settings.database.url).await.expect("pool");
    let txn = pool.begin().await.expect("begin");
    txn.execute_unprepared("LOCK TABLE episodes IN ACCESS EXCLUSIVE MODE").await.expect("lock");
    drop(txn);
    wait_until("the dropped transaction's lock gone", DEADLINE, || async {
        let Ok(probe) = app.db.begin().await else { return false };
        let read = probe
            .execute_unprepared("SET LOCAL lock_timeout = '200ms'; SELECT count(*) FROM episodes")
            .await;
        let _ = probe.rollback().await;
        read.is_ok()
    })
    .await;
    pool.close().await.expect("close");
    app.stop().await;
}
