//! What the system does after a crash or a lost confirm: a keyed write whose publish the
//! broker did not confirm keeps its command, is published again by the retry and applied once;
//! the outbox sweeper publishes events a worker committed but never published; the command
//! sweeper publishes commands the api recorded but never published.

use reqwest::StatusCode;
use sea_orm::{ConnectionTrait, FromQueryResult};
use serde_json::{Value, json};
use showrunner_shared::auth::Role;
use showrunner_shared::broker::topology::{COMMANDS_EXCHANGE, command_queue, partition_of};
use showrunner_shared::contracts::CommandEnvelope;
use showrunner_shared::db::sql;
use showrunner_shared::event_log::StoredEvent;
use showrunner_tests::{Options, TestApp, wait_for, wait_until};
use uuid::Uuid;

use crate::episodes::queued_commands;
use crate::hostile::{create, created_event};
use crate::support::{Capture, DEADLINE, management, send, settled_command, str_of};

/// Binds (or unbinds) every command partition queue to the commands exchange.
async fn bind_partitions(app: &TestApp, bound: bool) {
    for partition in 0..app.settings.amqp.partitions {
        let queue = command_queue(partition);
        let response = if bound {
            management(
                reqwest::Method::POST,
                &format!("bindings/{}/e/{COMMANDS_EXCHANGE}/q/{queue}", app.name),
                Some(json!({"routing_key": partition.to_string()})),
            )
            .await
        } else {
            management(
                reqwest::Method::DELETE,
                &format!("bindings/{}/e/{COMMANDS_EXCHANGE}/q/{queue}/{partition}", app.name),
                None,
            )
            .await
        };
        assert!(response.status().is_success(), "{queue}: {}", response.status());
    }
}

#[derive(FromQueryResult)]
struct Stored {
    status: String,
    message: Option<Value>,
}

#[tokio::test]
async fn a_keyed_write_whose_publish_failed_is_kept_republished_by_its_retry_and_applied_once() {
    let capture = Capture::default();
    let _logs = capture.install();
    // No episode worker yet: what reaches the partition queues stays there to be counted.
    let mut app = TestApp::spawn_with(Options { episode_workers: 0, ..Options::default() }).await;
    let alice = app.token("alice", Role::Member);
    let post = || {
        send(
            app.http
                .post(app.api("/episodes"))
                .bearer_auth(&alice)
                .header("Idempotency-Key", "lost-confirm")
                .json(&json!({"title": "Kept"})),
        )
    };

    // With the partition queues unbound, the mandatory publish comes back unroutable: the
    // confirm the api waits for is a failure, as when the broker dies mid-publish.
    bind_partitions(&app, false).await;
    let (status, problem) = post().await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{problem}");
    assert!(str_of(&problem, "detail").contains("Idempotency-Key"), "{problem}");
    // The keyed command is kept, pending, with the message to publish again.
    let rows = Stored::find_by_statement(sql("SELECT status, message FROM commands", []))
        .all(&app.db)
        .await
        .expect("commands");
    assert_eq!(rows.len(), 1, "the keyed command's row is kept");
    assert_eq!(rows[0].status, "pending");
    let mut message = rows[0].message.clone().expect("the stored message");
    if let Some(fields) = message.as_object_mut() {
        fields.remove("traceparent");
    }
    let envelope: CommandEnvelope = serde_json::from_value(message).expect("an envelope");
    bind_partitions(&app, true).await;

    // Had the broker died after the message reached the queue, that copy would be there: put
    // it there. Then the client retries with the same key.
    let conn = app.amqp().await;
    let channel = conn.create_channel().await.expect("channel");
    channel.confirm_select(Default::default()).await.expect("confirms");
    let partition = partition_of(envelope.command.episode_id(), app.settings.amqp.partitions);
    let body = serde_json::to_vec(&envelope).expect("json");
    let confirm = channel
        .basic_publish(
            COMMANDS_EXCHANGE.into(),
            partition.to_string().as_str().into(),
            Default::default(),
            &body,
            lapin::BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .expect("publish");
    assert!(confirm.await.expect("confirm").is_ack());
    let _ = conn.close(200, "done".into()).await;
    let (status, accepted) = post().await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    assert_eq!(accepted["commandId"], envelope.id.to_string(), "the same command, not a new one");
    assert_eq!(accepted["data"]["id"], envelope.command.episode_id().to_string());
    assert_eq!(queued_commands(&app).await, 2, "the retry published the same command again");

    // Both copies reach the worker: the first applies, the second is a duplicate.
    app.start_episode_worker();
    let command_id = envelope.id.to_string();
    assert_eq!(settled_command(&app, &alice, &command_id).await["status"], "applied");
    wait_for("the second copy to be skipped", DEADLINE, || {
        let found = capture
            .lines()
            .iter()
            .any(|l| l.contains("duplicate command skipped") && l.contains(&command_id));
        std::future::ready(found.then_some(()))
    })
    .await;
    let episode = envelope.command.episode_id();
    assert_eq!(
        app.count(&format!("SELECT count(*) FROM episodes WHERE id = '{episode}' AND version = 1"))
            .await,
        1
    );
    assert_eq!(app.count("SELECT count(*) FROM episodes").await, 1);
    wait_until("the creation's activity row and notification", DEADLINE, || async {
        app.count("SELECT count(*) FROM activity_log").await == 1
            && app.count("SELECT count(*) FROM notifications").await == 1
    })
    .await;
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM activity_log WHERE correlation_id = '{command_id}'"
        ))
        .await,
        1
    );
    app.stop().await;
}

#[tokio::test]
async fn the_outbox_sweeper_publishes_what_an_older_version_left_behind() {
    let app = TestApp::spawn_with(Options {
        extra: vec![("workers.outbox_sweep_after_secs".into(), "1".into())],
        ..Options::default()
    })
    .await;
    // What a worker of a version before the event log was written in its transaction left when
    // it died between its commit and the publish of its outbox: the sweeper publishes it, the
    // importer records it, the shipper ships it to the notification worker.
    let event = StoredEvent::from_outgoing(&created_event(Uuid::now_v7()), None);
    let id = event.id;
    app.db
        .execute_raw(sql(
            "INSERT INTO outbox (id, routing_key, body) VALUES ($1, $2, $3)",
            [id.into(), event.routing_key.into(), event.body.into()],
        ))
        .await
        .expect("insert");
    wait_until("the sweeper to publish and delete the row", DEADLINE, || async {
        app.count("SELECT count(*) FROM outbox").await == 0
    })
    .await;
    wait_until("the event in the event log, the activity log and a notification", DEADLINE, || {
        let app = &app;
        async move {
            app.count(&format!("SELECT count(*) FROM event_log WHERE id = '{id}'")).await == 1
                && app.count(&format!("SELECT count(*) FROM activity_log WHERE id = '{id}'")).await
                    == 1
                && app
                    .count(&format!("SELECT count(*) FROM notifications WHERE event_id = '{id}'"))
                    .await
                    == 1
        }
    })
    .await;
    app.stop().await;
}

#[tokio::test]
async fn the_command_sweeper_publishes_a_command_the_api_recorded_but_never_published() {
    let app = TestApp::spawn_with(Options {
        extra: vec![("workers.command_republish_after_secs".into(), "1".into())],
        ..Options::default()
    })
    .await;
    let alice = app.token("alice", Role::Member);
    // What the api leaves when it dies between recording a command and publishing it.
    let episode = Uuid::now_v7();
    let envelope = create(episode);
    let message = serde_json::to_string(&envelope).expect("json");
    app.db
        .execute_raw(sql(
            "INSERT INTO commands (id, user_id, kind, resource_type, resource_id, status, message, \
             accepted_at) VALUES ($1, $2, $3, 'episode', $4, 'pending', $5::jsonb, now())",
            [
                envelope.id.into(),
                envelope.actor.id.into(),
                envelope.command.kind().into(),
                episode.into(),
                message.into(),
            ],
        ))
        .await
        .expect("insert");
    let command_id = envelope.id.to_string();
    assert_eq!(settled_command(&app, &alice, &command_id).await["status"], "applied");
    assert_eq!(
        app.count(&format!("SELECT count(*) FROM episodes WHERE id = '{episode}'")).await,
        1
    );
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM commands WHERE id = '{command_id}' AND republished_at IS NOT NULL"
        ))
        .await,
        1,
        "the sweeper published it"
    );
    wait_until("its activity row", DEADLINE, || async {
        app.count(&format!(
            "SELECT count(*) FROM activity_log WHERE correlation_id = '{command_id}'"
        ))
        .await
            == 1
    })
    .await;
    app.stop().await;
}
