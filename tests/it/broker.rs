//! What arrives on the broker directly: duplicates, poison, and per-episode order with two
//! episode workers sharing the partitions.

use std::collections::HashMap;

use futures_util::future::join_all;
use lapin::BasicProperties;
use lapin::options::{BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions};
use reqwest::StatusCode;
use serde_json::json;
use showrunner_shared::auth::Role;
use showrunner_shared::broker::topology::{
    COMMANDS_EXCHANGE, command_queue, parked_queue, partition_of,
};
use showrunner_shared::contracts::{
    Actor, COMMAND_VERSION, Command, CommandEnvelope, EpisodeChanges,
};
use showrunner_tests::{MANAGEMENT, Options, TestApp, wait_until};
use uuid::Uuid;

use crate::support::{DEADLINE, send, str_of};

async fn publish_raw(app: &TestApp, channel: &lapin::Channel, partition: u16, body: &[u8]) {
    let _ = app;
    let confirm = channel
        .basic_publish(
            COMMANDS_EXCHANGE.into(),
            partition.to_string().into(),
            BasicPublishOptions { mandatory: true, ..Default::default() },
            body,
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .expect("publish");
    assert!(confirm.await.expect("confirm").is_ack());
}

fn command(id: Uuid, command: Command) -> CommandEnvelope {
    CommandEnvelope {
        id,
        version: COMMAND_VERSION,
        actor: Actor { id: TestApp::user_id("alice"), name: "alice".into() },
        accepted_at: chrono::Utc::now(),
        command,
    }
}

fn create(episode_id: Uuid) -> Command {
    Command::CreateEpisode {
        episode_id,
        title: "From the broker".to_string().try_into().unwrap_or_else(|_| unreachable!()),
        description: Default::default(),
        status: showrunner_shared::domain::EpisodeStatus::Draft,
        categories: Default::default(),
    }
}

#[tokio::test]
async fn a_duplicate_delivery_changes_nothing() {
    let app = TestApp::spawn().await;
    let conn = app.amqp().await;
    let channel = conn.create_channel().await.expect("channel");
    channel.confirm_select(ConfirmSelectOptions::default()).await.expect("confirms");
    let episode = Uuid::now_v7();
    let partition = partition_of(episode, app.settings.amqp.partitions);
    let created = serde_json::to_vec(&command(Uuid::now_v7(), create(episode))).expect("json");
    publish_raw(&app, &channel, partition, &created).await;
    publish_raw(&app, &channel, partition, &created).await;
    // A later command on the same partition: once it is applied, both copies were handled.
    let marker = Command::UpdateEpisode {
        episode_id: episode,
        changes: EpisodeChanges {
            title: Some("Marked".to_string().try_into().unwrap_or_else(|_| unreachable!())),
            ..Default::default()
        },
    };
    publish_raw(
        &app,
        &channel,
        partition,
        &serde_json::to_vec(&command(Uuid::now_v7(), marker)).expect("json"),
    )
    .await;

    wait_until("the marker update", DEADLINE, || async {
        app.count(&format!(
            "SELECT count(*) FROM episodes WHERE id = '{episode}' AND title = 'Marked'"
        ))
        .await
            == 1
    })
    .await;
    assert_eq!(app.count(&format!("SELECT version FROM episodes WHERE id = '{episode}'")).await, 2);
    wait_until("two activity rows", DEADLINE, || async {
        app.count("SELECT count(*) FROM activity_log").await == 2
    })
    .await;
    assert_eq!(app.count("SELECT count(*) FROM commands WHERE status = 'applied'").await, 2);
    assert_eq!(
        app.count("SELECT count(*) FROM activity_log WHERE event = 'episode_created'").await,
        1
    );
    wait_until("one creation notification", DEADLINE, || async {
        app.count("SELECT count(*) FROM notifications").await == 1
    })
    .await;
    drop(channel);
    let _ = conn.close(200, "done".into()).await;
    app.stop().await;
}

#[tokio::test]
async fn undecodable_commands_are_parked_with_their_reason_and_the_worker_goes_on() {
    let app = TestApp::spawn().await;
    let conn = app.amqp().await;
    let channel = conn.create_channel().await.expect("channel");
    channel.confirm_select(ConfirmSelectOptions::default()).await.expect("confirms");
    let partitions = app.settings.amqp.partitions;
    let episode = std::iter::repeat_with(Uuid::now_v7)
        .find(|id| partition_of(*id, partitions) == 0)
        .unwrap_or_default();

    publish_raw(&app, &channel, 0, br#"{"id":"x","command":{"type":"launch_rocket"}}"#).await;
    publish_raw(&app, &channel, 0, &[0xff, 0xfe, 0x00]).await;
    let mut unknown = serde_json::to_value(command(Uuid::now_v7(), create(episode))).expect("json");
    unknown["command"]["type"] = json!("launch_rocket");
    publish_raw(&app, &channel, 0, &serde_json::to_vec(&unknown).expect("json")).await;
    publish_raw(
        &app,
        &channel,
        0,
        &serde_json::to_vec(&command(Uuid::now_v7(), create(episode))).expect("json"),
    )
    .await;

    wait_until("the valid command behind the poison", DEADLINE, || async {
        app.count(&format!("SELECT count(*) FROM episodes WHERE id = '{episode}'")).await == 1
    })
    .await;
    let parked = parked_queue(&command_queue(0));
    let mut reasons = Vec::new();
    for _ in 0..3 {
        let message = channel
            .basic_get(parked.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .expect("get")
            .expect("a parked message");
        let reason = message.delivery.properties.headers().as_ref().and_then(|h| {
            match h.inner().get("x-parked-reason") {
                Some(lapin::types::AMQPValue::LongString(s)) => {
                    Some(String::from_utf8_lossy(s.as_bytes()).into_owned())
                }
                _ => None,
            }
        });
        reasons.push(reason.unwrap_or_default());
    }
    assert!(reasons[0].starts_with("undecodable"), "{reasons:?}");
    assert!(reasons[1].starts_with("invalid UTF-8"), "{reasons:?}");
    assert!(reasons[2].starts_with("undecodable"), "{reasons:?}");
    assert!(
        channel
            .basic_get(parked.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .expect("get")
            .is_none()
    );
    assert_eq!(app.count("SELECT count(*) FROM commands").await, 1);
    drop(channel);
    let _ = conn.close(200, "done".into()).await;
    app.stop().await;
}

/// The worker id inside each partition's active consumer tag, by partition queue.
pub(crate) async fn active_consumers(vhost: &str) -> HashMap<String, String> {
    let consumers: serde_json::Value = match showrunner_shared::tls::client()
        .get(format!("{MANAGEMENT}/api/consumers/{vhost}"))
        .basic_auth("guest", Some("guest"))
        .send()
        .await
    {
        Ok(r) => r.json().await.unwrap_or_default(),
        Err(_) => return HashMap::new(),
    };
    consumers
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| {
            c["active"] == true
                && c["queue"]["name"].as_str().is_some_and(|q| q.starts_with(COMMANDS_EXCHANGE))
        })
        .filter_map(|c| {
            let tag = c["consumer_tag"].as_str()?;
            let worker = tag.rsplit('/').nth(1)?.to_string();
            Some((c["queue"]["name"].as_str()?.to_string(), worker))
        })
        .collect()
}

#[tokio::test]
async fn order_holds_per_episode_with_two_workers_each_taking_half() {
    let app =
        TestApp::spawn_with(Options { partitions: 16, episode_workers: 2, ..Default::default() })
            .await;
    wait_until("both workers to own 8 partitions each", DEADLINE, || async {
        let owners = active_consumers(&app.name).await;
        let mut per_worker: HashMap<&String, usize> = HashMap::new();
        for worker in owners.values() {
            *per_worker.entry(worker).or_default() += 1;
        }
        owners.len() == 16 && per_worker.len() == 2 && per_worker.values().all(|n| *n == 8)
    })
    .await;

    let alice = app.token("alice", Role::Member);
    let episodes = 40;
    let runs = (0..episodes).map(|i| {
        let (app, alice) = (&app, &alice);
        async move {
            let (status, body) = send(
                app.http
                    .post(app.api("/episodes"))
                    .bearer_auth(alice)
                    .json(&json!({"title": format!("E{i} v1")})),
            )
            .await;
            assert_eq!(status, StatusCode::ACCEPTED);
            let id = str_of(&body["data"], "id").to_string();
            for version in ["v2", "v3"] {
                let (status, _) = send(
                    app.http
                        .patch(app.api(&format!("/episodes/{id}")))
                        .bearer_auth(alice)
                        .json(&json!({"title": format!("E{i} {version}")})),
                )
                .await;
                assert_eq!(status, StatusCode::ACCEPTED);
            }
            let (status, _) =
                send(app.http.delete(app.api(&format!("/episodes/{id}"))).bearer_auth(alice)).await;
            assert_eq!(status, StatusCode::ACCEPTED);
            id
        }
    });
    let ids = join_all(runs).await;
    wait_until("every command applied", DEADLINE, || async {
        app.count("SELECT count(*) FROM commands WHERE status <> 'pending'").await == 4 * episodes
    })
    .await;
    assert_eq!(app.count("SELECT count(*) FROM commands WHERE status = 'rejected'").await, 0);
    assert_eq!(app.count("SELECT count(*) FROM episodes WHERE deleted_at IS NOT NULL AND version = 4 AND title LIKE '% v3'").await, episodes);
    wait_until("every event in the activity log", DEADLINE, || async {
        app.count("SELECT count(*) FROM activity_log").await == 4 * episodes
    })
    .await;
    for id in &ids {
        // Event ids are UUIDv7 made when applied: their order is the order of application.
        let wrong = app
            .count(&format!(
                "SELECT count(*) FROM (SELECT string_agg(event, ',' ORDER BY id) AS seq FROM activity_log WHERE resource_id = '{id}') s \
                 WHERE seq <> 'episode_created,episode_updated,episode_updated,episode_deleted'"
            ))
            .await;
        assert_eq!(wrong, 0, "events of {id} out of order");
    }
    app.stop().await;
}

#[tokio::test]
async fn the_retired_activity_queue_is_deleted_at_declare() {
    use lapin::options::QueueDeclareOptions;
    use lapin::types::{AMQPValue, FieldTable};
    use showrunner_shared::broker::topology::{self, RETIRED_ACTIVITY_QUEUE};

    let app = TestApp::spawn().await;
    let conn = app.amqp().await;
    // As a broker from before the sequencer wrote the activity log has it: a quorum queue.
    let channel = conn.create_channel().await.expect("channel");
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    let durable = QueueDeclareOptions { durable: true, ..Default::default() };
    channel.queue_declare(RETIRED_ACTIVITY_QUEUE.into(), durable, args).await.expect("declare");

    topology::declare(&conn, &app.settings.amqp).await.expect("topology");
    topology::declare(&conn, &app.settings.amqp).await.expect("topology, again");

    let probe = conn.create_channel().await.expect("channel");
    let passive = QueueDeclareOptions { passive: true, ..Default::default() };
    let found = probe.queue_declare(RETIRED_ACTIVITY_QUEUE.into(), passive, FieldTable::default());
    assert!(found.await.is_err(), "{RETIRED_ACTIVITY_QUEUE} still exists");
    let _ = conn.close(200, "done".into()).await;
    app.stop().await;
}
