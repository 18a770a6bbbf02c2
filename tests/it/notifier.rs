//! The notification worker reads the event log (issue 14): one active at a time behind a lease,
//! each event's notification made once, and an event the database refuses passed over without
//! holding up the ones after it.

use std::time::Duration;

use sea_orm::ConnectionTrait;
use showrunner_shared::contracts::{Actor, CommandRejected, OutgoingEvent};
use showrunner_shared::db::sql;
use showrunner_shared::event_log::{self, StoredEvent};
use showrunner_tests::{TestApp, wait_until};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::hostile::created_event;
use crate::support::DEADLINE;

fn creation() -> StoredEvent {
    StoredEvent::from_outgoing(&created_event(Uuid::now_v7()), None)
}

/// A rejection of one of `user`'s commands, which notifies `user` with `reason` as its text.
fn rejection(user: Uuid, reason: &str) -> StoredEvent {
    let data = CommandRejected { command_id: Uuid::now_v7(), reason: reason.into() };
    let actor = Actor { id: user, name: "Alice".into() };
    let event = OutgoingEvent::new(&user, &data, Some(actor), None, chrono::Utc::now());
    StoredEvent::from_outgoing(&event, None)
}

async fn notified(app: &TestApp, event: Uuid) -> i64 {
    app.count(&format!("SELECT count(*) FROM notifications WHERE event_id = '{event}'")).await
}

/// Where the notification worker is once it has read every shipped event.
async fn caught_up(app: &TestApp) -> bool {
    app.count("SELECT count(*) FROM event_log WHERE seq > (SELECT published_seq FROM event_log_shipper WHERE id = 1)").await == 0
        && app.count("SELECT position AS n FROM notification_cursor").await
            == app.count("SELECT COALESCE(max(seq), 0) AS n FROM event_log").await
}

/// Only the holder of an unexpired lease notifies; when it gives the lease up a standby takes
/// over from where the log was read. With three workers contending and the lease taken away
/// half way, every creation is notified exactly once and the position reaches the log's end.
/// The unique (event, user) key would hide a second application of a batch, so a trigger
/// counts every committed insert of a notification, conflicting or not: that count must be
/// one per event too.
#[tokio::test]
async fn only_the_lease_holder_notifies_and_contending_workers_notify_each_event_once() {
    let app = TestApp::spawn().await;
    // A BEFORE INSERT row trigger runs for every row an INSERT ... ON CONFLICT DO NOTHING
    // proposes, before the conflict check; its row commits only with the batch's transaction.
    app.db
        .execute_unprepared(
            "CREATE TABLE notify_attempts (event_id uuid NOT NULL); \
             CREATE FUNCTION count_attempt() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN INSERT INTO notify_attempts VALUES (NEW.event_id); RETURN NEW; END $$; \
             CREATE TRIGGER count_attempt BEFORE INSERT ON notifications \
             FOR EACH ROW EXECUTE FUNCTION count_attempt();",
        )
        .await
        .expect("attempts counted");
    // Another worker holds the lease, as if it were active elsewhere.
    app.db
        .execute_raw(sql(
            "UPDATE notification_cursor SET holder = $1, lease_until = now() + interval '1 hour'",
            [Uuid::now_v7().into()],
        ))
        .await
        .expect("lease taken");
    let held_back = creation();
    event_log::record(&app.db, std::slice::from_ref(&held_back)).await.expect("record");
    // Shipped, then watched for three times the standby's poll: nobody notifies it.
    wait_until("the event shipped", DEADLINE, || async {
        app.count("SELECT count(*) FROM event_log WHERE seq > (SELECT published_seq FROM event_log_shipper WHERE id = 1)").await == 0
    })
    .await;
    let watch = tokio::time::Instant::now();
    while watch.elapsed() < Duration::from_millis(1500) {
        assert_eq!(notified(&app, held_back.id).await, 0, "notified without the lease");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.db
        .execute_unprepared("UPDATE notification_cursor SET lease_until = '-infinity'")
        .await
        .expect("lease given up");
    wait_until("the held-back event notified", DEADLINE, || async {
        notified(&app, held_back.id).await == 1
    })
    .await;

    // Two more notification workers beside the role's own.
    let cancel = CancellationToken::new();
    let extra: Vec<_> = (0..2)
        .map(|_| {
            let (settings, cancel) = (app.settings.clone(), cancel.clone());
            tokio::spawn(async move {
                use showrunner_workers::{Role, notifier::Notifier, role};
                role::serve(&settings, Role::Notification, Notifier::new(), None, &cancel).await
            })
        })
        .collect();
    let events: Vec<StoredEvent> = (0..120).map(|_| creation()).collect();
    for (i, chunk) in events.chunks(10).enumerate() {
        event_log::record(&app.db, chunk).await.expect("record");
        if i == 6 {
            // Half way, the lease is taken from whoever holds it: a standby takes over.
            app.db
                .execute_unprepared("UPDATE notification_cursor SET lease_until = '-infinity'")
                .await
                .expect("lease expired");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait_until("every creation notified and the log read to its end", DEADLINE, || async {
        caught_up(&app).await
    })
    .await;
    for event in &events {
        assert_eq!(notified(&app, event.id).await, 1, "event {} notified once", event.id);
    }
    let applied_twice = app
        .count(
            "SELECT count(*) FROM (SELECT event_id FROM notify_attempts GROUP BY event_id \
             HAVING count(*) > 1) AS twice",
        )
        .await;
    assert_eq!(applied_twice, 0, "events whose notification was inserted by two committed batches");
    assert_eq!(app.count("SELECT count(*) FROM notify_attempts").await, 121);
    // Each notification's own event is in the log once.
    let created =
        "SELECT count(*) FROM event_log WHERE body::jsonb->>'event' = 'notification_created'";
    assert_eq!(app.count(created).await, 121);
    cancel.cancel();
    for worker in extra {
        worker.await.expect("joined").expect("notification worker");
    }
    app.stop().await;
}

/// A text PostgreSQL refuses (a NUL character) makes the notification's insert fail whatever
/// is tried: after its attempts the event is passed over, it stays in the log, and the events
/// after it are notified.
#[tokio::test]
async fn an_event_the_database_refuses_is_passed_over_and_the_next_ones_are_notified() {
    let app = TestApp::spawn().await;
    let alice = TestApp::user_id("alice");
    let (bad, good) = (rejection(alice, "a \u{0} in the reason"), rejection(alice, "too long"));
    event_log::record(&app.db, &[bad.clone(), good.clone()]).await.expect("record");
    wait_until("the good rejection notified", DEADLINE, || async {
        notified(&app, good.id).await == 1
    })
    .await;
    assert_eq!(notified(&app, bad.id).await, 0);
    wait_until("the log read past both", DEADLINE, || async { caught_up(&app).await }).await;
    let kept = format!("SELECT count(*) FROM event_log WHERE id = '{}'", bad.id);
    assert_eq!(app.count(&kept).await, 1, "the refused event stays in the log");
    app.stop().await;
}
