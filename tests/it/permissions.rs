//! Least-privilege broker users: every role runs with a RabbitMQ user that holds exactly its
//! permission set from `deploy/rabbitmq/permissions.json`, and the whole system works; a role's
//! user cannot do another role's work (the api's user cannot consume the command queues).

use std::sync::Arc;
use std::time::Duration;

use lapin::options::{BasicConsumeOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use reqwest::StatusCode;
use serde_json::{Value, json};
use showrunner_shared::auth::Role;
use showrunner_shared::broker::{self, Outgoing, publisher_json_properties, topology};
use showrunner_shared::config::Settings;
use showrunner_tests::{MANAGEMENT, Options, TEST_SECRET, TestApp, wait_for, wait_until};
use tokio_util::sync::CancellationToken;

use crate::support::{DEADLINE, send};

/// The permission sets the kit creates users with; the test uses the same file.
const PERMISSIONS: &str = include_str!("../../deploy/rabbitmq/permissions.json");

const ROLES: [&str; 5] =
    ["api", "episode-worker", "activity-worker", "notification-worker", "job-worker"];

/// RabbitMQ users of one test, deleted when it ends (users are global, not per vhost).
struct Users {
    vhost: String,
    names: Vec<String>,
}

impl Users {
    fn name(&self, role: &str) -> String {
        format!("{}_{role}", self.vhost)
    }

    /// Creates `role`'s user with its permissions in the vhost; returns its AMQP URL.
    async fn create(&mut self, role: &str, sets: &Value) -> String {
        let user = self.name(role);
        let password = uuid::Uuid::now_v7().simple().to_string();
        let http = showrunner_shared::tls::client();
        let put = |path: String, body: Value| {
            http.put(format!("{MANAGEMENT}/api/{path}"))
                .basic_auth("guest", Some("guest"))
                .timeout(Duration::from_secs(30))
                .json(&body)
                .send()
        };
        self.names.push(user.clone());
        put(format!("users/{user}"), json!({"password": password, "tags": ""}))
            .await
            .and_then(|r| r.error_for_status())
            .unwrap_or_else(|e| panic!("create user {user}: {e}"));
        let set = &sets[role];
        assert!(set["configure"].is_string(), "permissions.json has no set for {role}");
        put(format!("permissions/{}/{user}", self.vhost), set.clone())
            .await
            .and_then(|r| r.error_for_status())
            .unwrap_or_else(|e| panic!("set the permissions of {user}: {e}"));
        format!("amqp://{user}:{password}@127.0.0.1:5672/{}", self.vhost)
    }
}

impl Drop for Users {
    fn drop(&mut self) {
        let names = std::mem::take(&mut self.names);
        // Drop cannot await; a thread of its own with its own runtime deletes them.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            rt.block_on(async {
                let http = showrunner_shared::tls::client();
                for user in names {
                    let _ = http
                        .delete(format!("{MANAGEMENT}/api/users/{user}"))
                        .basic_auth("guest", Some("guest"))
                        .timeout(Duration::from_secs(30))
                        .send()
                        .await;
                }
            });
        })
        .join();
    }
}

fn refused(result: Result<impl std::fmt::Debug, lapin::Error>) -> bool {
    match result {
        Err(error) => {
            error.to_string().contains("ACCESS_REFUSED")
                || format!("{error:?}").contains("ACCESSREFUSED")
        }
        Ok(_) => false,
    }
}

#[tokio::test]
async fn every_role_works_with_only_its_permissions_and_no_more() {
    // The stack's own api (user guest) declares the topology, as a first deploy would; no
    // worker runs as guest: every worker below runs with its role's user.
    let app = TestApp::spawn_with(Options::no_workers()).await;
    let sets: Value = serde_json::from_str(PERMISSIONS).expect("permissions.json is JSON");
    let mut users = Users { vhost: app.name.clone(), names: Vec::new() };

    // The deploy user may declare everything (again: declarations are idempotent).
    let deploy_url = users.create("deploy", &sets).await;
    let deploy = broker::connect(&deploy_url, "deploy").await.expect("deploy user connects");
    topology::declare(&deploy, &app.settings.amqp).await.expect("the deploy user declares");
    let _ = deploy.close(200, "done".into()).await;

    let mut urls = std::collections::HashMap::new();
    for role in ROLES {
        urls.insert(role, users.create(role, &sets).await);
    }
    let settings_for = |role: &str| {
        let partitions = app.settings.amqp.partitions.to_string();
        let storage = app.settings.storage.url.clone();
        Arc::new(
            Settings::with_overrides(&[
                ("database.url", &app.settings.database.url),
                ("database.max_connections", "4"),
                ("amqp.url", &urls[role]),
                ("amqp.partitions", &partitions),
                ("http.addr", "127.0.0.1:0"),
                ("auth.jwt_secret", TEST_SECRET),
                ("workers.heartbeat_secs", "1"),
                ("workers.heartbeat_ttl_secs", "4"),
                ("ops.enabled", "false"),
                ("jobs.webhook_allow_hosts", "127.0.0.1"),
                ("jobs.initial_delay_ms", "100"),
                ("storage.url", &storage),
            ])
            .expect("settings"),
        )
    };
    let cancel = CancellationToken::new();
    let mut roles = tokio::task::JoinSet::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let api = format!("http://{}", listener.local_addr().expect("addr"));
    roles.spawn(showrunner_api::run(settings_for("api"), listener, cancel.child_token()));
    for role in showrunner_workers::Role::ALL {
        roles.spawn(role.run(settings_for(role.name()), cancel.child_token()));
    }
    wait_until("the least-privilege api to be ready", DEADLINE, || async {
        app.http.get(format!("{api}/ready")).send().await.is_ok_and(|r| r.status().is_success())
    })
    .await;
    // Each role is connected as its own user.
    wait_until("every role user to hold a connection", DEADLINE, || async {
        let Ok(response) = showrunner_shared::tls::client()
            .get(format!("{MANAGEMENT}/api/vhosts/{}/connections", app.name))
            .basic_auth("guest", Some("guest"))
            .timeout(Duration::from_secs(30))
            .send()
            .await
        else {
            return false;
        };
        let connections: Value = response.json().await.unwrap_or_default();
        let connected: Vec<&str> = connections
            .as_array()
            .map(|all| all.iter().filter_map(|c| c["user"].as_str()).collect())
            .unwrap_or_default();
        ROLES.iter().all(|role| connected.contains(&users.name(role).as_str()))
    })
    .await;

    // A write through every role: the api publishes, the episode worker applies, the sequencer
    // logs and republishes live, the api's relay wakes the waiting request.
    let alice = app.token("alice", Role::Member);
    let (status, body) = send(
        app.http
            .post(format!("{api}/api/v1/episodes"))
            .bearer_auth(&alice)
            .header("Prefer", "wait=15")
            .json(&json!({"title": "Least privilege"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let episode = body["data"]["id"].as_str().expect("an id").to_string();
    wait_until("the notification worker to notify alice", DEADLINE, || async {
        app.count("SELECT count(*) FROM notifications WHERE kind = 'episode_created'").await >= 1
    })
    .await;

    // The job worker: an export succeeds; a webhook that cannot connect retries through a delay
    // tier, then fails for good and is parked.
    let submit = |body: Value| {
        let request = app.http.post(format!("{api}/api/v1/jobs")).bearer_auth(&alice).json(&body);
        async move {
            let (status, body) = send(request).await;
            assert_eq!(status, StatusCode::ACCEPTED, "{body}");
            body["data"]["id"].as_str().expect("a job id").to_string()
        }
    };
    let export = submit(json!({"type": "episode.export", "payload": {"episodeId": episode}})).await;
    let webhook = submit(json!({"type": "webhook", "maxAttempts": 2,
        "payload": {"url": "http://127.0.0.1:1/", "body": {}}}))
    .await;
    for (job, wanted) in [(&export, "succeeded"), (&webhook, "failed")] {
        let status = wait_for(&format!("job {job} to be {wanted}"), DEADLINE, || async {
            let (_, body) =
                send(app.http.get(format!("{api}/api/v1/jobs/{job}")).bearer_auth(&alice)).await;
            let status = body["data"]["status"].as_str().unwrap_or_default().to_string();
            matches!(status.as_str(), "succeeded" | "failed").then_some(status)
        })
        .await;
        assert_eq!(status, wanted, "job {job}");
    }
    assert_eq!(app.count(&format!("SELECT attempts FROM jobs WHERE id = '{webhook}'")).await, 2);

    // The episode worker parks what it cannot decode (write on showrunner.parked).
    let guest = app.amqp().await;
    let publisher = broker::Publisher::open(&guest, Duration::from_secs(10)).await.expect("pub");
    publisher
        .publish(Outgoing {
            exchange: topology::COMMANDS_EXCHANGE,
            routing_key: "0",
            body: b"not a command",
            properties: publisher_json_properties("stray", "stray", FieldTable::default()),
            mandatory: true,
        })
        .await
        .expect("publish a stray command");
    let parked = topology::parked_queue(&topology::command_queue(0));
    wait_until("the stray command to be parked", DEADLINE, || async {
        showrunner_tests::queue_info(&app.name, &parked)
            .await
            .is_some_and(|q| q["messages"].as_u64() == Some(1))
    })
    .await;
    let _ = guest.close(200, "done".into()).await;

    // What a role's user may not do. The api's user cannot consume a command queue, delete one,
    // or declare a shared queue; the episode worker's cannot consume the jobs.
    let api_user = broker::connect(&urls["api"], "test").await.expect("api user connects");
    let command_queue = topology::command_queue(0);
    let channel = api_user.create_channel().await.expect("channel");
    let consume = channel
        .basic_consume(
            command_queue.as_str().into(),
            "intruder".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await;
    assert!(refused(consume.map(|_| ())), "the api's user consumed {command_queue}");
    let channel = api_user.create_channel().await.expect("channel");
    let delete =
        channel.queue_delete(command_queue.as_str().into(), QueueDeleteOptions::default()).await;
    assert!(refused(delete), "the api's user deleted {command_queue}");
    let channel = api_user.create_channel().await.expect("channel");
    let declare = channel
        .queue_declare(
            "showrunner.sneaky".into(),
            QueueDeclareOptions { durable: true, ..Default::default() },
            FieldTable::default(),
        )
        .await;
    assert!(refused(declare.map(|_| ())), "the api's user declared a shared queue");
    let _ = api_user.close(200, "done".into()).await;
    let worker_user =
        broker::connect(&urls["episode-worker"], "test").await.expect("worker user connects");
    let channel = worker_user.create_channel().await.expect("channel");
    let consume = channel
        .basic_consume(
            topology::JOBS_QUEUE.into(),
            "intruder".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await;
    assert!(refused(consume.map(|_| ())), "the episode worker's user consumed the jobs");
    let _ = worker_user.close(200, "done".into()).await;
    assert!(
        showrunner_tests::queue_info(&app.name, &command_queue).await.is_some(),
        "the command queue is still there"
    );

    cancel.cancel();
    while let Some(result) = roles.join_next().await {
        assert!(matches!(result, Ok(Ok(()))), "a role ended with {result:?}");
    }
    drop(users);
    app.stop().await;
}
