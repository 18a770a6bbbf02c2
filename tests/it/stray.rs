//! What an operator or a moving partition does to the queues: messages that arrive through the
//! default exchange or with routing keys that mean nothing are parked under the queue they were
//! consumed from without holding anything up, a message that cannot be parked does not hold up
//! its batch, and two workers applying one batch at once apply it once.

use std::time::Duration;

use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeleteOptions,
};
use lapin::types::AMQPValue;
use lapin::{BasicProperties, Channel};
use reqwest::StatusCode;
use sea_orm::{ConnectionTrait, TransactionTrait};
use serde_json::json;
use showrunner_shared::auth::Role;
use showrunner_shared::broker::Publisher;
use showrunner_shared::broker::topology::{
    COMMANDS_EXCHANGE, EVENT_LOG_QUEUE, EVENTS_EXCHANGE, JOBS_QUEUE, command_queue, parked_queue,
    partition_of,
};
use showrunner_shared::contracts::{
    Actor, COMMAND_VERSION, Command, CommandEnvelope, EpisodeChanges,
};
use showrunner_shared::db::sql;
use showrunner_tests::{Options, TestApp, wait_until};
use showrunner_workers::consumers::commands::Commands as EpisodeCommands;
use showrunner_workers::runtime::{BatchHandler, Context, Incoming};
use uuid::Uuid;

use crate::support::{DEADLINE, create_episode, str_of};

/// Publishes and waits for the confirm; `false` when the broker returned it unroutable.
async fn publish(channel: &Channel, exchange: &str, key: &str, body: &[u8]) -> bool {
    let confirm = channel
        .basic_publish(
            exchange.into(),
            key.into(),
            BasicPublishOptions { mandatory: true, ..Default::default() },
            body,
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .expect("publish")
        .await
        .expect("confirm");
    assert!(confirm.is_ack(), "{exchange}/{key} not confirmed");
    confirm.take_message().is_none()
}

fn envelope(command: Command) -> CommandEnvelope {
    CommandEnvelope {
        id: Uuid::now_v7(),
        version: COMMAND_VERSION,
        actor: Actor { id: TestApp::user_id("alice"), name: "alice".into() },
        accepted_at: chrono::Utc::now(),
        command,
    }
}

fn create(episode_id: Uuid, title: &str) -> Command {
    Command::CreateEpisode {
        episode_id,
        title: title.to_string().try_into().unwrap_or_else(|_| unreachable!()),
        description: Default::default(),
        status: showrunner_shared::domain::EpisodeStatus::Draft,
        categories: Default::default(),
    }
}

fn retitle(episode_id: Uuid, title: &str) -> Command {
    Command::UpdateEpisode {
        episode_id,
        changes: EpisodeChanges {
            title: Some(title.to_string().try_into().unwrap_or_else(|_| unreachable!())),
            ..Default::default()
        },
    }
}

fn episode_in(partition: u16, partitions: u16) -> Uuid {
    std::iter::repeat_with(Uuid::now_v7)
        .find(|id| partition_of(*id, partitions) == partition)
        .unwrap_or_default()
}

fn header(message: &lapin::message::BasicGetMessage, name: &str) -> String {
    let headers = message.delivery.properties.headers().clone().unwrap_or_default();
    match headers.inner().get(name) {
        Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        _ => String::new(),
    }
}

/// Takes everything parked from `queue`: each copy's `x-parked-from` and reason.
async fn drain_parked(channel: &Channel, queue: &str) -> Vec<(String, String)> {
    let mut parked = Vec::new();
    while let Some(message) = channel
        .basic_get(parked_queue(queue).as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .expect("get")
    {
        parked.push((header(&message, "x-parked-from"), header(&message, "x-parked-reason")));
    }
    parked
}

#[tokio::test]
async fn stray_messages_are_parked_under_the_queue_they_came_from_and_nothing_waits() {
    let app =
        TestApp::spawn_with(Options { partitions: 4, job_workers: 1, ..Default::default() }).await;
    let conn = app.amqp().await;
    let channel = conn.create_channel().await.expect("channel");
    channel.confirm_select(ConfirmSelectOptions::default()).await.expect("confirms");
    let partitions = app.settings.amqp.partitions;
    let p0 = command_queue(0);

    // Through the default exchange (the management UI's "Publish message" on a queue): one
    // message that does not decode on every consumer's queue.
    for queue in [p0.as_str(), EVENT_LOG_QUEUE, JOBS_QUEUE] {
        assert!(publish(&channel, "", queue, b"{\"not\": \"a message\"}").await, "{queue}");
    }
    // Through the events exchange with a routing key that means nothing to any event: it
    // reaches the event log's queue (bound to everything) and nobody else.
    assert!(publish(&channel, EVENTS_EXCHANGE, "zz.nothing.here", b"[1,2,3]").await);
    // A well-formed command of another partition's episode, put in partition 0 by hand: its
    // order there would mean nothing, so it is refused.
    let elsewhere = envelope(create(episode_in(1, partitions), "Wrong partition"));
    assert!(publish(&channel, "", &p0, &serde_json::to_vec(&elsewhere).expect("json")).await);
    // A well-formed command put in its own partition's queue by hand is applied.
    let by_hand = episode_in(0, partitions);
    let moved = envelope(create(by_hand, "Moved back by hand"));
    assert!(publish(&channel, "", &p0, &serde_json::to_vec(&moved).expect("json")).await);
    // A command key that names no partition is not routed at all (nothing to park).
    assert!(!publish(&channel, COMMANDS_EXCHANGE, "p0", b"{}").await);

    // Everything behind the strays goes on: a write through the api, its events, notification.
    let alice = app.token("alice", Role::Member);
    let (status, body) =
        create_episode(&app, &alice, json!({"title": "Behind the strays"}), true).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = str_of(&body["data"], "id").to_string();
    wait_until("the hand-moved command applied", DEADLINE, || async {
        app.count(&format!("SELECT count(*) FROM episodes WHERE id = '{by_hand}'")).await == 1
    })
    .await;
    wait_until("both creations in the activity log and notified", DEADLINE, || async {
        app.count(&format!(
            "SELECT count(*) FROM activity_log WHERE resource_id IN ('{id}', '{by_hand}')"
        ))
        .await
            == 2
            && app.count("SELECT count(*) FROM notifications").await == 2
    })
    .await;

    wait_until("the strays parked", DEADLINE, || async {
        let queues = [p0.as_str(), EVENT_LOG_QUEUE, JOBS_QUEUE];
        let mut counts = Vec::new();
        for queue in queues {
            let info = showrunner_tests::queue_info(&app.name, &parked_queue(queue)).await;
            counts.push(info.and_then(|i| i["messages"].as_i64()).unwrap_or(-1));
        }
        counts == [2, 2, 1]
    })
    .await;
    let commands = drain_parked(&channel, &p0).await;
    assert!(commands.iter().all(|(from, _)| *from == p0), "{commands:?}");
    assert!(commands[0].1.contains("envelope"), "{commands:?}");
    assert!(commands[1].1.contains("partition"), "{commands:?}");
    for queue in [EVENT_LOG_QUEUE, JOBS_QUEUE] {
        let parked = drain_parked(&channel, queue).await;
        assert!(parked.iter().all(|(from, _)| from == queue), "{queue}: {parked:?}");
        assert!(!parked.is_empty(), "{queue}");
    }
    // Nothing left unacked or waiting in the consumers' own queues.
    for queue in [p0.as_str(), EVENT_LOG_QUEUE, JOBS_QUEUE] {
        wait_until(&format!("{queue} empty"), DEADLINE, || async {
            showrunner_tests::queue_info(&app.name, queue)
                .await
                .and_then(|i| i["messages"].as_i64())
                == Some(0)
        })
        .await;
    }
    drop(channel);
    let _ = conn.close(200, "done".into()).await;
    app.stop().await;
}

#[tokio::test]
async fn a_message_that_cannot_be_parked_does_not_hold_up_its_batch() {
    let app = TestApp::spawn_with(Options { partitions: 1, ..Default::default() }).await;
    let conn = app.amqp().await;
    let channel = conn.create_channel().await.expect("channel");
    channel.confirm_select(ConfirmSelectOptions::default()).await.expect("confirms");
    let queue = command_queue(0);
    // An operator deleted the parking lot: a park publish is unroutable now.
    channel
        .queue_delete(parked_queue(&queue).as_str().into(), QueueDeleteOptions::default())
        .await
        .expect("delete the parking queue");

    assert!(publish(&channel, "", &queue, b"not json").await);
    let episodes: Vec<Uuid> = (0..20).map(|_| Uuid::now_v7()).collect();
    for (i, episode) in episodes.iter().enumerate() {
        let command = envelope(create(*episode, &format!("After the poison {i}")));
        assert!(
            publish(&channel, COMMANDS_EXCHANGE, "0", &serde_json::to_vec(&command).expect("json"))
                .await
        );
    }
    // Without the fallback the batch fails, the worker reconnects and gets the same batch, and
    // the commands wait for the broker's delivery limit (minutes): ten seconds is plenty.
    wait_until("the commands behind the poison", Duration::from_secs(10), || async {
        app.count("SELECT count(*) FROM episodes").await == 20
    })
    .await;
    // The poison was handed to the queue's dead-letter exchange, not requeued.
    wait_until("the poison gone from the queue", DEADLINE, || async {
        showrunner_tests::queue_info(&app.name, &queue)
            .await
            .and_then(|i| i["messages_ready"].as_i64().zip(i["messages_unacknowledged"].as_i64()))
            == Some((0, 0))
    })
    .await;
    drop(channel);
    let _ = conn.close(200, "done".into()).await;
    app.stop().await;
}

/// Backends of this database waiting for a row lock.
async fn lock_waiters(app: &TestApp) -> i64 {
    app.count(&format!(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = '{}' AND wait_event_type = 'Lock'",
        app.name
    ))
    .await
}

/// Two workers that briefly hold one partition (it is moving, or one's connection dropped
/// mid-batch and its deliveries went to the other) apply the same batch at the same time. The
/// test holds the episode's row lock until both transactions are waiting behind it, so both
/// have read the command's status before either commits: the interleaving where the status
/// check used to let both through.
async fn race_one_batch(app: &TestApp, recorded: bool) {
    let alice = app.token("alice", Role::Member);
    let (status, body) = create_episode(app, &alice, json!({"title": "Raced"}), true).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let episode: Uuid = str_of(&body["data"], "id").parse().expect("uuid");
    let update = envelope(retitle(episode, "Raced once"));
    if recorded {
        // As the api records a command before it publishes it.
        app.db
            .execute_raw(sql(
                "INSERT INTO commands (id, user_id, kind, resource_type, resource_id, status) \
                 VALUES ($1, $2, 'update_episode', 'episode', $3, 'pending')",
                [update.id.into(), update.actor.id.into(), episode.into()],
            ))
            .await
            .expect("record the command");
    }

    let conn = app.amqp().await;
    let publisher = Publisher::open(&conn, Duration::from_secs(5)).await.expect("publisher");
    let ctx = Context { db: app.db.clone(), publisher, settings: app.settings.clone() };
    let incoming = Incoming { routing_key: "0".into(), traceparent: None, body: update.clone() };
    let batch = [&incoming];

    let holder = app.db.begin().await.expect("begin");
    holder
        .execute_raw(sql("SELECT 1 FROM episodes WHERE id = $1 FOR UPDATE", [episode.into()]))
        .await
        .expect("hold the episode");
    let first = EpisodeCommands.handle(&ctx, &batch);
    let second = EpisodeCommands.handle(&ctx, &batch);
    let release = async {
        wait_until("both workers waiting on a lock", DEADLINE, || async {
            lock_waiters(app).await == 2
        })
        .await;
        holder.commit().await.expect("release");
    };
    let (first, second, ()) = tokio::join!(first, second, release);
    first.expect("first worker");
    second.expect("second worker");

    assert_eq!(
        app.count(&format!("SELECT version FROM episodes WHERE id = '{episode}'")).await,
        2,
        "the update applied once"
    );
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM commands WHERE id = '{}' AND status = 'applied'",
            update.id
        ))
        .await,
        1
    );
    // One event for one command, recorded in the log by the transaction that applied it.
    wait_until("the update in the activity log", DEADLINE, || async {
        app.count(&format!(
            "SELECT count(*) FROM activity_log WHERE resource_id = '{episode}' \
             AND event = 'episode_updated'"
        ))
        .await
            >= 1
    })
    .await;
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM event_log WHERE body::jsonb ->> 'correlationId' = '{}'",
            update.id
        ))
        .await,
        1
    );
    let _ = conn.close(200, "done".into()).await;
}

#[tokio::test]
async fn two_workers_applying_one_recorded_command_at_once_apply_it_once() {
    let app = TestApp::spawn().await;
    race_one_batch(&app, true).await;
    app.stop().await;
}

#[tokio::test]
async fn two_workers_applying_one_unrecorded_command_at_once_apply_it_once() {
    let app = TestApp::spawn().await;
    race_one_batch(&app, false).await;
    app.stop().await;
}

/// Distinct workers among the partitions' active consumers, and how many partitions have one.
async fn owners(app: &TestApp) -> (usize, usize) {
    let active = crate::broker::active_consumers(&app.name).await;
    let workers: std::collections::HashSet<&String> = active.values().collect();
    (workers.len(), active.len())
}

#[tokio::test]
async fn partitions_moving_under_load_apply_every_command_once_and_in_order() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    let lifted = [("limits.requests_per_sec", "100000"), ("limits.request_burst", "100000")];
    let extra = lifted.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let app = Arc::new(TestApp::spawn_with(Options { extra, ..Default::default() }).await);
    let partitions = usize::from(app.settings.amqp.partitions);
    let alice = app.token("alice", Role::Member);
    let mut episodes = Vec::new();
    for i in 0..12 {
        let (status, body) =
            create_episode(&app, &alice, json!({"title": format!("E{i} r0")}), true).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        episodes.push(str_of(&body["data"], "id").to_string());
    }

    // Rounds of one update per episode: within an episode each is accepted after the last.
    // Rounds start at most every ROUND_PACE and run until the test stops them: how many
    // rounds the partition moves take depends on the machine, so the load has no round cap
    // (a cap of 400 ran out on a fast machine while the second worker took over, and the
    // test timed out on "more rounds accepted"), and the pace bounds the backlog the workers
    // apply at the end.
    const ROUND_PACE: Duration = Duration::from_millis(40);
    let rounds = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    // The first update the api did not accept, with its answer: the waits below fail with it at
    // once, rather than after their deadline with only "more rounds accepted" to go on.
    let refused = Arc::new(std::sync::Mutex::new(None::<String>));
    let load = {
        let (app, alice, episodes) = (app.clone(), alice.clone(), episodes.clone());
        let (rounds, stop, refused) = (rounds.clone(), stop.clone(), refused.clone());
        tokio::spawn(async move {
            let mut round = 0;
            let mut pace = tokio::time::interval(ROUND_PACE);
            pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !stop.load(Ordering::SeqCst) {
                pace.tick().await;
                round += 1;
                let updates = episodes.iter().enumerate().map(|(i, id)| {
                    let (app, alice) = (&app, &alice);
                    async move {
                        let sent = app
                            .http
                            .patch(app.api(&format!("/episodes/{id}")))
                            .bearer_auth(alice)
                            .json(&json!({"title": format!("E{i} r{round}")}))
                            // An update that hangs is reported before the waits run out.
                            .timeout(DEADLINE / 2)
                            .send()
                            .await;
                        match sent {
                            Ok(r) if r.status() == StatusCode::ACCEPTED => None,
                            Ok(r) => Some(format!(
                                "{}: {}",
                                r.status(),
                                r.text().await.unwrap_or_default()
                            )),
                            Err(error) => Some(format!("no answer: {error}")),
                        }
                        .map(|answer| format!("update of episode {i} in round {round}: {answer}"))
                    }
                });
                let failed = futures_util::future::join_all(updates).await.into_iter().flatten();
                if let Some(first) = failed.into_iter().next() {
                    *refused.lock().unwrap_or_else(|e| e.into_inner()) = Some(first);
                    break;
                }
                rounds.store(round, Ordering::SeqCst);
            }
            round
        })
    };
    let after_more_rounds = |n: usize| {
        let (rounds, refused) = (rounds.clone(), refused.clone());
        let target = rounds.load(Ordering::SeqCst) + n;
        async move {
            wait_until("more rounds accepted", DEADLINE, || async {
                if let Some(answer) = refused.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
                    panic!("the load stopped: {answer}");
                }
                rounds.load(Ordering::SeqCst) >= target
            })
            .await;
        }
    };

    after_more_rounds(3).await;
    // A second worker joins: half the partitions move to it while commands are in flight.
    let second = tokio_util::sync::CancellationToken::new();
    let joined =
        tokio::spawn(showrunner_workers::Role::Episode.run(app.settings.clone(), second.clone()));
    wait_until("two workers sharing the partitions", DEADLINE, || async {
        owners(&app).await == (2, partitions)
    })
    .await;
    after_more_rounds(5).await;
    // The first leaves: every partition moves to the second.
    app.stop_episode_worker(0);
    wait_until("the second worker holding every partition", DEADLINE, || async {
        owners(&app).await == (1, partitions)
    })
    .await;
    after_more_rounds(5).await;
    stop.store(true, Ordering::SeqCst);
    let last = load.await.expect("load");
    if let Some(answer) = refused.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
        panic!("the load stopped: {answer}");
    }

    let total = i64::try_from(episodes.len() * (last + 1)).unwrap_or(i64::MAX);
    wait_until("every command applied", DEADLINE, || async {
        app.count("SELECT count(*) FROM commands WHERE status = 'applied'").await == total
    })
    .await;
    assert_eq!(app.count("SELECT count(*) FROM commands WHERE status <> 'applied'").await, 0);
    wait_until("every event in the log", DEADLINE, || async {
        app.count("SELECT count(*) FROM event_log WHERE routing_key LIKE 'episode.%'").await
            == total
    })
    .await;
    for (i, id) in episodes.iter().enumerate() {
        // Applied once each: one version per update; in order: the last accepted title won,
        // and the log holds the titles in the order they were accepted.
        assert_eq!(
            app.count(&format!(
                "SELECT count(*) FROM episodes WHERE id = '{id}' AND version = {} \
                 AND title = 'E{i} r{last}'",
                last + 1
            ))
            .await,
            1,
            "episode {i}"
        );
        let out_of_order = app
            .count(&format!(
                "SELECT count(*) FROM (SELECT body::jsonb -> 'data' -> 'episode' ->> 'title' AS t, \
                 row_number() OVER (ORDER BY seq) - 1 AS n FROM event_log \
                 WHERE routing_key LIKE 'episode.{id}.%') s WHERE t <> 'E{i} r' || n"
            ))
            .await;
        assert_eq!(out_of_order, 0, "episode {i}: events out of acceptance order");
    }
    second.cancel();
    let _ = joined.await;
    match Arc::try_unwrap(app) {
        Ok(app) => app.stop().await,
        Err(_) => panic!("the load task still holds the app"),
    }
}
