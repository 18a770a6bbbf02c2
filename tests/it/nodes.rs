//! Broker nodes: a list of nodes (`amqp.urls`) whose first refuses still gets every role
//! connected, and `amqp.quorum_initial_group_size` sizes new quorum queues without making an
//! existing deployment's declarations fail. The failover between the nodes of a real cluster
//! is the fault suite's cluster mode (`bash tests/faults/run.sh --cluster`).

use std::sync::Arc;

use reqwest::StatusCode;
use serde_json::json;
use showrunner_shared::auth::Role;
use showrunner_shared::broker::topology::{self, command_queue};
use showrunner_tests::{Options, TestApp, queue_info, wait_until};
use tokio_util::sync::CancellationToken;

use crate::support::{DEADLINE, create_episode, send};

/// A loopback port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

#[tokio::test]
async fn an_api_and_a_worker_connect_past_a_first_node_that_refuses() {
    let app = TestApp::spawn().await;
    // This api and this episode worker get a list whose first node refuses connections; the
    // stack's own episode worker steps aside so that the write below must go through both.
    app.stop_episode_worker(0);
    let dead = format!("amqp://guest:guest@127.0.0.1:{}/{}", closed_port(), app.name);
    let mut settings = (*app.settings).clone();
    settings.amqp.urls = vec![dead, app.settings.amqp.url.clone()];
    let settings = Arc::new(settings);
    let cancel = CancellationToken::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let base = format!("http://{}", listener.local_addr().expect("its address"));
    let api = tokio::spawn(showrunner_api::run(settings.clone(), listener, cancel.clone()));
    let worker =
        tokio::spawn(showrunner_workers::Role::Episode.run(settings.clone(), cancel.clone()));
    wait_until("the api to be ready", DEADLINE, || async {
        app.http.get(format!("{base}/ready")).send().await.is_ok_and(|r| r.status().is_success())
    })
    .await;

    let token = app.token("alice", Role::Member);
    let request = app
        .http
        .post(format!("{base}/api/v1/episodes"))
        .bearer_auth(&token)
        .header("Prefer", "wait=15")
        .json(&json!({"title": "Through the second node"}));
    let (status, body) = send(request).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    cancel.cancel();
    for role in [api, worker] {
        role.await.expect("joins").expect("the role ends cleanly");
    }
    app.stop().await;
}

#[tokio::test]
async fn the_group_size_sizes_new_queues_and_an_existing_queue_of_another_size_is_kept() {
    let app = TestApp::spawn_with(Options {
        extra: vec![("amqp.quorum_initial_group_size".into(), "2".into())],
        ..Options::default()
    })
    .await;
    let queue = command_queue(0);
    let info = queue_info(&app.name, &queue).await.expect("the queue's details");
    assert_eq!(info["arguments"]["x-quorum-initial-group-size"], 2, "{info}");

    // The same deployment restarted without the setting, then with another size: the broker
    // compares the argument with the existing queue's and would refuse both declarations.
    let conn = app.amqp().await;
    let mut settings = (*app.settings).clone();
    for size in [None, Some(3), Some(2)] {
        settings.amqp.quorum_initial_group_size = size;
        topology::declare(&conn, &settings.amqp)
            .await
            .unwrap_or_else(|e| panic!("declare with group size {size:?}: {e}"));
    }
    let info = queue_info(&app.name, &queue).await.expect("the queue's details");
    assert_eq!(info["arguments"]["x-quorum-initial-group-size"], 2, "{info}");
    let _ = conn.close(200, "done".into()).await;

    let token = app.token("alice", Role::Member);
    let (status, body) =
        create_episode(&app, &token, json!({"title": "Still applied"}), true).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    app.stop().await;
}
