//! What a process does when what it needs is missing.

use reqwest::StatusCode;
use serde_json::json;
use showrunner_shared::auth::Role;
use showrunner_shared::config::Settings;
use showrunner_tests::{MANAGEMENT, PG_SERVER, TestApp, wait_until};

use crate::support::{DEADLINE, send};

#[tokio::test]
async fn a_process_refuses_a_database_without_the_current_schema() {
    let name = format!("sr_test_{}", uuid::Uuid::now_v7().simple());
    let admin = sea_orm::Database::connect(format!("{PG_SERVER}/postgres")).await.expect("connect");
    use sea_orm::ConnectionTrait;
    admin.execute_unprepared(&format!("CREATE DATABASE \"{name}\"")).await.expect("create");
    let url = format!("{PG_SERVER}/{name}");
    let settings =
        std::sync::Arc::new(Settings::with_overrides(&[("database.url", &url)]).expect("settings"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let result =
        showrunner_api::run(settings.clone(), listener, tokio_util::sync::CancellationToken::new())
            .await;
    let worker = showrunner_workers::Role::Episode
        .run(settings, tokio_util::sync::CancellationToken::new())
        .await;
    admin
        .execute_unprepared(&format!("DROP DATABASE \"{name}\" WITH (FORCE)"))
        .await
        .expect("drop");
    for outcome in [result, worker] {
        let message = format!("{:#}", outcome.expect_err("must refuse to start"));
        assert!(message.contains("showrunner-migrate"), "{message}");
    }
}

#[tokio::test]
async fn without_the_broker_writes_answer_503_and_nothing_is_recorded() {
    let app = TestApp::spawn().await;
    let alice = app.token("alice", Role::Member);
    // Deleting the vhost closes every connection to it and refuses new ones.
    showrunner_shared::tls::client()
        .delete(format!("{MANAGEMENT}/api/vhosts/{}", app.name))
        .basic_auth("guest", Some("guest"))
        .send()
        .await
        .expect("delete vhost");
    wait_until("the api to report not ready", DEADLINE, || async {
        app.http
            .get(app.url("/ready"))
            .send()
            .await
            .is_ok_and(|r| r.status() == StatusCode::SERVICE_UNAVAILABLE)
    })
    .await;
    let response = app
        .http
        .post(app.api("/episodes"))
        .bearer_auth(&alice)
        .json(&json!({"title": "Lost?"}))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(app.count("SELECT count(*) FROM commands").await, 0);
    let (status, _) = send(app.http.get(app.api("/episodes")).bearer_auth(&alice)).await;
    assert_eq!(status, StatusCode::OK, "reads still work from PostgreSQL");
    app.stop().await;
}

#[tokio::test]
async fn a_process_started_before_its_database_waits_for_it() {
    // Nothing listens on port 1: the api and a worker wait (no exit, no error) until stopped.
    let settings = std::sync::Arc::new(
        Settings::with_overrides(&[("database.url", "postgres://postgres@127.0.0.1:1/showrunner")])
            .expect("settings"),
    );
    let cancel = tokio_util::sync::CancellationToken::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let api = tokio::spawn(showrunner_api::run(settings.clone(), listener, cancel.clone()));
    let worker = tokio::spawn(showrunner_workers::Role::Episode.run(settings, cancel.clone()));
    // Still waiting after several attempts (the first delays are 0.2, 0.4, 0.8 s).
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert!(!api.is_finished() && !worker.is_finished(), "a process gave up on its database");
    cancel.cancel();
    for task in [api, worker] {
        let outcome = tokio::time::timeout(DEADLINE, task).await.expect("stops").expect("joins");
        outcome.expect("a stop while waiting is a clean exit");
    }

    // A database that does not exist is a mistake, not an outage: that fails at once.
    let missing = format!("{PG_SERVER}/sr_test_missing_{}", uuid::Uuid::now_v7().simple());
    let settings = Settings::with_overrides(&[("database.url", &missing)]).expect("settings");
    let never = tokio_util::sync::CancellationToken::new();
    let error = showrunner_shared::db::connect_waiting(
        &settings.database,
        "test",
        showrunner_shared::db::PoolMode::API,
        &never,
    );
    let error = tokio::time::timeout(DEADLINE, error).await.expect("fails fast");
    assert!(error.is_err(), "a missing database must not be waited for");
}
