//! One hop per event (issue 14): producers write the event log in their own transaction, and the
//! log shipper numbers what has committed and publishes it. These tests take the producers'
//! place with `event_log::record` in transactions they control, to commit in the orders that
//! matter.

use std::time::Duration;

use reqwest::StatusCode;
use sea_orm::{ConnectionTrait, DatabaseTransaction, FromQueryResult, TransactionTrait};
use serde_json::{Value, json};
use showrunner_shared::auth::Role;
use showrunner_shared::db::sql;
use showrunner_shared::event_log::{self, StoredEvent};
use showrunner_tests::{TestApp, wait_for, wait_until};
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

/// The event's place in the log once the shipper numbered it.
async fn seq_of(app: &TestApp, id: Uuid) -> i64 {
    wait_for("the event shipped", DEADLINE, || async {
        number(&app.db, "SELECT seq AS n FROM event_log WHERE id = $1", id).await
    })
    .await
}

async fn next_event(socket: &mut Socket) -> Value {
    next_where(socket, |f| f["op"] == "event").await.0
}

#[tokio::test]
async fn two_producers_committing_out_of_order_are_shipped_in_commit_order_and_resumed_without_a_gap()
 {
    let app = TestApp::spawn().await;
    let bob = app.token("bob", Role::Member);
    let mut live = connect(&app, 0, &bob).await;
    subscribe(&mut live, &["episode.*.created"]).await;
    // A first event so that the resume below starts from a place the client really saw.
    let (seen, first, second) = (creation(), creation(), creation());
    event_log::record(&app.db, std::slice::from_ref(&seen)).await.expect("record");
    assert_eq!(next_event(&mut live).await["id"], seen.id.to_string());

    // `first` takes its place among the producers (`ord`) before `second`, and commits after it.
    let early = app.db.begin().await.expect("begin");
    event_log::record(&early, std::slice::from_ref(&first)).await.expect("record");
    let late = app.db.begin().await.expect("begin");
    event_log::record(&late, std::slice::from_ref(&second)).await.expect("record");
    let ord = "SELECT ord AS n FROM event_log WHERE id = $1";
    assert!(number(&early, ord, first.id).await < number(&late, ord, second.id).await);
    late.commit().await.expect("commit");
    assert_eq!(next_event(&mut live).await["id"], second.id.to_string());

    // A client that saw `second` disconnects; `first` commits meanwhile.
    drop(live);
    early.commit().await.expect("commit");
    assert!(seq_of(&app, second.id).await < seq_of(&app, first.id).await, "commit order");

    // Resuming from `second` replays `first`, then nothing else: no gap, no duplicate.
    let mut resumed = connect(&app, 0, &bob).await;
    say(
        &mut resumed,
        json!({"op": "resume", "lastEventId": second.id, "topics": ["episode.*.created"]}),
    )
    .await;
    let (reply, replayed) = next_where(&mut resumed, |f| f["op"] == "resumed").await;
    let replayed: Vec<&Value> =
        replayed.iter().filter(|f| f["op"] == "event").map(|f| &f["id"]).collect();
    assert_eq!(replayed, [&json!(first.id.to_string())], "{reply}");
    let after = creation();
    event_log::record(&app.db, std::slice::from_ref(&after)).await.expect("record");
    assert_eq!(next_event(&mut resumed).await["id"], after.id.to_string(), "nothing in between");
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
    // Watched for three times the standby's poll: nobody else numbers it.
    let watch = tokio::time::Instant::now();
    while watch.elapsed() < Duration::from_millis(1500) {
        let seq = number(&app.db, "SELECT seq AS n FROM event_log WHERE id = $1", held_back.id);
        assert_eq!(seq.await, None, "numbered without the lease");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
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
    // The notifications of those creations are still being shipped; then the numbers run from
    // 1 to the number of rows.
    wait_until("every event shipped, numbered without a gap", DEADLINE, || async {
        app.count("SELECT count(*) FROM event_log WHERE seq IS NULL").await == 0
            && app.count("SELECT count(*) FROM event_log").await
                == app.count("SELECT COALESCE(max(seq), 0) FROM event_log").await
    })
    .await;
    cancel.cancel();
    for shipper in extra {
        shipper.await.expect("joined").expect("shipper");
    }
    app.stop().await;
}
