//! One hop per event (issue 14): producers write the event log in their own transaction, each
//! insert numbered from the counter whose lock it holds until its commit, and the log shipper
//! publishes what has committed, in that order. These tests take the producers' place with
//! `event_log::record` in transactions they control, to commit in the orders that matter.

use std::time::Duration;

use reqwest::StatusCode;
use sea_orm::{ConnectionTrait, DatabaseTransaction, FromQueryResult, TransactionTrait};
use serde_json::{Value, json};
use showrunner_shared::auth::Role;
use showrunner_shared::db::sql;
use showrunner_shared::event_log::{self, StoredEvent};
use showrunner_tests::{Options, TestApp, wait_for, wait_until};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::hostile::created_event;
use crate::realtime::{Socket, connect, next, next_where, say, subscribe};
use crate::support::DEADLINE;

fn creation() -> StoredEvent {
    StoredEvent::from_outgoing(&created_event(Uuid::now_v7()), None)
}

#[derive(FromQueryResult)]
struct Number {
    n: Option<i64>,
}

async fn number(conn: &impl ConnectionTrait, query: &str, id: Uuid) -> Option<i64> {
    Number::find_by_statement(sql(query, [id.into()]))
        .one(conn)
        .await
        .expect("query")
        .and_then(|row| row.n)
}

/// The event's place in the log once its producer committed it.
async fn seq_of(app: &TestApp, id: Uuid) -> i64 {
    wait_for("the event shipped", DEADLINE, || async {
        number(&app.db, "SELECT seq AS n FROM event_log WHERE id = $1", id).await
    })
    .await
}

async fn next_event(socket: &mut Socket) -> Value {
    next_where(socket, |f| f["op"] == "event").await.0
}

/// Two producers whose transactions began in one order (transaction ids) and record in the other:
/// the second to record waits for the first one's commit and is numbered after it, and a client
/// that saw the first and reconnects resumes with the second: no gap, no duplicate at the seam.
#[tokio::test]
async fn two_producers_are_numbered_in_commit_order_and_resumed_without_a_gap() {
    let app = TestApp::spawn().await;
    let bob = app.token("bob", Role::Member);
    let mut live = connect(&app, 0, &bob).await;
    subscribe(&mut live, &["episode.*.created"]).await;
    // A first event so that the resume below starts from a place the client really saw.
    let (seen, first, second) = (creation(), creation(), creation());
    event_log::record(&app.db, std::slice::from_ref(&seen)).await.expect("record");
    assert_eq!(next_event(&mut live).await["id"], seen.id.to_string());

    // `late` has the older transaction id; `early` records first and holds the counter.
    let late = app.db.begin().await.expect("begin");
    let early = app.db.begin().await.expect("begin");
    assert!(xid(&late).await < xid(&early).await);
    event_log::record(&early, std::slice::from_ref(&first)).await.expect("record");
    let recording = async {
        event_log::record(&late, std::slice::from_ref(&second)).await.expect("record");
        late
    };
    let committing = async {
        // (At least: the notification worker may be waiting to record too.)
        wait_until("the second producer waiting for the first", DEADLINE, || async {
            lock_waiters(&app).await >= 1
        })
        .await;
        // Nothing of either is visible yet.
        let visible =
            format!("SELECT count(*) FROM event_log WHERE id IN ('{}', '{}')", first.id, second.id);
        assert_eq!(app.count(&visible).await, 0, "an uncommitted event is visible");
        early.commit().await.expect("commit");
    };
    let (late, ()) = tokio::join!(recording, committing);
    assert_eq!(next_event(&mut live).await["id"], first.id.to_string());

    // The client that saw `first` disconnects; `second` commits meanwhile.
    drop(live);
    late.commit().await.expect("commit");
    assert!(seq_of(&app, first.id).await < seq_of(&app, second.id).await, "commit order");

    // Resuming from `first` replays `second`, then nothing else: no gap, no duplicate.
    let mut resumed = connect(&app, 0, &bob).await;
    say(
        &mut resumed,
        json!({"op": "resume", "lastEventId": first.id, "topics": ["episode.*.created"]}),
    )
    .await;
    let (reply, replayed) = next_where(&mut resumed, |f| f["op"] == "resumed").await;
    let replayed: Vec<&Value> =
        replayed.iter().filter(|f| f["op"] == "event").map(|f| &f["id"]).collect();
    assert_eq!(replayed, [&json!(second.id.to_string())], "{reply}");
    let after = creation();
    event_log::record(&app.db, std::slice::from_ref(&after)).await.expect("record");
    assert_eq!(next_event(&mut resumed).await["id"], after.id.to_string(), "nothing in between");
    app.stop().await;
}

/// A producer that rolls back gives its numbers back: the next one takes them, and the log
/// stays dense.
#[tokio::test]
async fn a_rolled_back_producer_leaves_no_gap() {
    // No worker: nothing else records while the two producers take their turns.
    let app = TestApp::spawn_with(Options {
        episode_workers: 0,
        activity_workers: 0,
        notification_workers: 0,
        job_workers: 0,
        ..Default::default()
    })
    .await;
    let (lost, kept) = (creation(), creation());
    let txn = app.db.begin().await.expect("begin");
    event_log::record(&txn, std::slice::from_ref(&lost)).await.expect("record");
    let taken = number(&txn, "SELECT seq AS n FROM event_log WHERE id = $1", lost.id).await;
    // The next producer is already waiting when the first rolls back (first in the lock's
    // queue, ahead of anything the stack records in the background).
    let next_producer = async {
        let txn = app.db.begin().await.expect("begin");
        event_log::record(&txn, std::slice::from_ref(&kept)).await.expect("record");
        txn.commit().await.expect("commit");
    };
    let rolling_back = async {
        wait_until("the next producer waiting", DEADLINE, || async {
            lock_waiters(&app).await == 1
        })
        .await;
        txn.rollback().await.expect("rollback");
    };
    tokio::join!(next_producer, rolling_back);
    assert_eq!(seq_of(&app, kept.id).await, taken.expect("numbered at the insert"));
    // An event recorded again (same id) takes no number.
    event_log::record(&app.db, std::slice::from_ref(&kept)).await.expect("record again");
    assert_eq!(
        app.count("SELECT count(*) FROM event_log").await,
        app.count("SELECT COALESCE(max(seq), 0) FROM event_log").await,
        "numbers dense"
    );
    app.stop().await;
}

/// A row an older version's producer inserted unnumbered (during a rolling upgrade) is numbered
/// by the shipper's next renewal, after what committed before it, and published.
#[tokio::test]
async fn a_row_an_older_version_left_unnumbered_is_numbered_and_shipped() {
    let app = TestApp::spawn().await;
    let bob = app.token("bob", Role::Member);
    let mut live = connect(&app, 0, &bob).await;
    subscribe(&mut live, &["episode.*.created"]).await;
    let (before, stray) = (creation(), creation());
    event_log::record(&app.db, std::slice::from_ref(&before)).await.expect("record");
    app.db
        .execute_raw(sql(
            "INSERT INTO event_log (id, routing_key, body) VALUES ($1, $2, $3)",
            [stray.id.into(), stray.routing_key.clone().into(), stray.body.clone().into()],
        ))
        .await
        .expect("an older version's insert");
    assert_eq!(next_event(&mut live).await["id"], before.id.to_string());
    assert_eq!(next_event(&mut live).await["id"], stray.id.to_string());
    assert!(seq_of(&app, before.id).await < seq_of(&app, stray.id).await);
    app.stop().await;
}

async fn lock_waiters(app: &TestApp) -> i64 {
    app.count(&format!(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = '{}' AND wait_event_type = 'Lock'",
        app.name
    ))
    .await
}

async fn xid(txn: &DatabaseTransaction) -> i64 {
    Number::find_by_statement(sql("SELECT pg_current_xact_id()::text::bigint AS n", []))
        .one(txn)
        .await
        .expect("xid")
        .and_then(|r| r.n)
        .expect("an xid")
}

/// Of two transactions that change the same row, the one that waited for the other is shipped
/// after it, even when it began first: ordering by transaction id would invert them.
#[tokio::test]
async fn a_transaction_that_waited_for_a_row_is_shipped_after_the_one_it_waited_for() {
    let app = TestApp::spawn().await;
    app.db
        .execute_unprepared("CREATE TABLE probe (id int PRIMARY KEY); INSERT INTO probe VALUES (1)")
        .await
        .expect("probe table");
    let (held, waited) = (creation(), creation());
    let waiter = app.db.begin().await.expect("begin");
    let waiter_xid = xid(&waiter).await;
    let holder = app.db.begin().await.expect("begin");
    let holder_xid = xid(&holder).await;
    assert!(waiter_xid < holder_xid);
    holder.execute_unprepared("UPDATE probe SET id = 1 WHERE id = 1").await.expect("lock");
    event_log::record(&holder, std::slice::from_ref(&held)).await.expect("record");
    let second = async {
        // Waits for `holder`, then records its event and commits.
        waiter.execute_unprepared("UPDATE probe SET id = 1 WHERE id = 1").await.expect("lock");
        event_log::record(&waiter, std::slice::from_ref(&waited)).await.expect("record");
        waiter.commit().await.expect("commit");
    };
    let first = async {
        wait_until("the older transaction waiting", DEADLINE, || async {
            lock_waiters(&app).await == 1
        })
        .await;
        holder.commit().await.expect("commit");
    };
    tokio::join!(first, second);
    assert!(seq_of(&app, held.id).await < seq_of(&app, waited.id).await, "lock order");
    app.stop().await;
}

/// Only the holder of an unexpired lease numbers rows; when it gives the lease up a standby
/// shipper takes over. With three shippers contending, every event reaches a client once, in
/// the log's order, and the numbers have no gap.
#[tokio::test]
async fn only_the_lease_holder_ships_and_contending_shippers_keep_one_gapless_order() {
    let app = TestApp::spawn().await;
    let alice = app.token("alice", Role::Member);
    // Bob watches Alice's creations (a client also gets its own notifications).
    let mut live = connect(&app, 0, &app.token("bob", Role::Member)).await;
    subscribe(&mut live, &["episode.*.created"]).await;

    // Another shipper holds the lease, as if it were active elsewhere.
    let other = Uuid::now_v7();
    app.db
        .execute_raw(sql(
            "UPDATE event_log_shipper SET holder = $1, lease_until = now() + interval '1 hour'",
            [other.into()],
        ))
        .await
        .expect("lease taken");
    let held_back = creation();
    event_log::record(&app.db, std::slice::from_ref(&held_back)).await.expect("record");
    // Watched for three times the standby's poll: nobody else publishes it.
    let watched = tokio::time::timeout(Duration::from_millis(1500), next(&mut live)).await;
    assert!(watched.is_err(), "published without the lease: {watched:?}");
    app.db
        .execute_unprepared("UPDATE event_log_shipper SET lease_until = '-infinity'")
        .await
        .expect("lease given up");
    assert_eq!(next_event(&mut live).await["id"], held_back.id.to_string());

    // Two more shippers beside the activity worker's.
    let cancel = CancellationToken::new();
    let extra: Vec<_> = (0..2)
        .map(|_| {
            let (settings, cancel) = (app.settings.clone(), cancel.clone());
            tokio::spawn(async move {
                use showrunner_workers::{Role, role, shipper::Shipper};
                role::serve(&settings, Role::Activity, Shipper::new(), None, &cancel).await
            })
        })
        .collect();
    let total = 120;
    let mut writes = Vec::new();
    for i in 0..total {
        let (http, url, token) = (app.http.clone(), app.api("/episodes"), alice.clone());
        writes.push(tokio::spawn(async move {
            let response = http
                .post(&url)
                .bearer_auth(&token)
                .json(&json!({"title": format!("Contended {i}")}))
                .send()
                .await
                .expect("sent");
            assert_eq!(response.status(), StatusCode::ACCEPTED);
        }));
        if i == total / 2 {
            // Half way, the lease is taken from whoever holds it: a standby takes over.
            app.db
                .execute_unprepared("UPDATE event_log_shipper SET lease_until = '-infinity'")
                .await
                .expect("lease expired");
        }
    }
    for write in writes {
        write.await.expect("write");
    }
    let mut seen = Vec::new();
    while seen.len() < total {
        let frame = next(&mut live).await;
        assert_eq!(frame["op"], "event", "{frame}");
        seen.push(frame["id"].as_str().unwrap_or_default().to_string());
    }
    #[derive(FromQueryResult)]
    struct Logged {
        id: Uuid,
    }
    let logged: Vec<String> = Logged::find_by_statement(sql(
        "SELECT id FROM event_log WHERE routing_key LIKE 'episode.%.created' ORDER BY seq",
        [],
    ))
    .all(&app.db)
    .await
    .expect("log")
    .into_iter()
    .map(|r| r.id.to_string())
    .collect();
    assert_eq!(seen, logged[1..], "every event once, in the log's order");
    // The numbers run from 1 to the number of rows, and what the shipper recorded as published
    // reaches the last one (it records that once a second).
    assert_eq!(
        app.count("SELECT count(*) FROM event_log").await,
        app.count("SELECT COALESCE(max(seq), 0) FROM event_log").await,
        "numbers dense"
    );
    wait_until("every event published", DEADLINE, || async {
        app.count("SELECT published_seq FROM event_log_shipper").await
            >= app.count("SELECT COALESCE(max(seq), 0) FROM event_log").await
    })
    .await;
    cancel.cancel();
    for shipper in extra {
        shipper.await.expect("joined").expect("shipper");
    }
    app.stop().await;
}
