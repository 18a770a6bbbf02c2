//! One hop per event (issue 14): producers write the event log, numbered, in their own
//! transaction, and the log shipper publishes each number once nothing below it can still
//! commit. These tests take the producers'
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

/// The time of the shipper's lease, which it renews once a second while active: once it has
/// moved twice after some moment, the shipper has looked at the log since.
async fn shipper_looked_since(app: &TestApp) {
    let at = || async {
        Number::find_by_statement(sql(
            "SELECT (extract(epoch FROM lease_until) * 1000000)::bigint AS n \
             FROM event_log_shipper WHERE id = 1",
            [],
        ))
        .one(&app.db)
        .await
        .expect("lease")
        .and_then(|r| r.n)
        .unwrap_or_default()
    };
    let start = at().await;
    wait_until("the shipper renewing its lease", DEADLINE, || async { at().await > start }).await;
    let next = at().await;
    wait_until("the shipper renewing its lease again", DEADLINE, || async { at().await > next })
        .await;
}

/// Producers take their numbers when they record, and commit in another order: a number is
/// shipped only once nothing below it can still commit, so clients get the events in number
/// order, whatever the commit order, and a resume replays them with no gap and no duplicate.
#[tokio::test]
async fn two_producers_committing_out_of_order_are_shipped_in_number_order_and_resumed_without_a_gap()
 {
    let app = TestApp::spawn().await;
    let bob = app.token("bob", Role::Member);
    let mut live = connect(&app, 0, &bob).await;
    subscribe(&mut live, &["episode.*.created"]).await;
    // A first event so that the resume below starts from a place the client really saw.
    let (seen, first, second) = (creation(), creation(), creation());
    event_log::record(&app.db, std::slice::from_ref(&seen)).await.expect("record");
    assert_eq!(next_event(&mut live).await["id"], seen.id.to_string());
    let mut resumed = connect(&app, 0, &bob).await;

    // `first` takes its number before `second`, and commits after it.
    let early = app.db.begin().await.expect("begin");
    event_log::record(&early, std::slice::from_ref(&first)).await.expect("record");
    let late = app.db.begin().await.expect("begin");
    event_log::record(&late, std::slice::from_ref(&second)).await.expect("record");
    let seq = "SELECT seq AS n FROM event_log WHERE id = $1";
    assert!(number(&early, seq, first.id).await < number(&late, seq, second.id).await);
    late.commit().await.expect("commit");
    // The shipper looks at the log (twice) while `first` is still open: `second` waits.
    shipper_looked_since(&app).await;
    let published = app.count("SELECT published_seq FROM event_log_shipper WHERE id = 1").await;
    assert!(published < seq_of(&app, second.id).await, "shipped past an open producer");
    early.commit().await.expect("commit");
    assert_eq!(next_event(&mut live).await["id"], first.id.to_string(), "number order");
    assert_eq!(next_event(&mut live).await["id"], second.id.to_string(), "number order");

    // A client that saw only `seen` resumes: `first`, then `second`, then nothing else.
    say(
        &mut resumed,
        json!({"op": "resume", "lastEventId": seen.id, "topics": ["episode.*.created"]}),
    )
    .await;
    let (reply, replayed) = next_where(&mut resumed, |f| f["op"] == "resumed").await;
    let replayed: Vec<&Value> =
        replayed.iter().filter(|f| f["op"] == "event").map(|f| &f["id"]).collect();
    assert_eq!(replayed, [&json!(first.id.to_string()), &json!(second.id.to_string())], "{reply}");
    let after = creation();
    event_log::record(&app.db, std::slice::from_ref(&after)).await.expect("record");
    assert_eq!(next_event(&mut resumed).await["id"], after.id.to_string(), "nothing in between");
    app.stop().await;
}

/// A producer that rolls back leaves a hole in the numbers: the shipper passes it once the
/// producer has ended, and the events after it reach clients.
#[tokio::test]
async fn a_rolled_back_producer_leaves_a_hole_that_holds_nothing_up() {
    let app = TestApp::spawn().await;
    let mut live = connect(&app, 0, &app.token("bob", Role::Member)).await;
    subscribe(&mut live, &["episode.*.created"]).await;
    let (lost, kept) = (creation(), creation());
    let gone = app.db.begin().await.expect("begin");
    event_log::record(&gone, std::slice::from_ref(&lost)).await.expect("record");
    let hole = number(&gone, "SELECT seq AS n FROM event_log WHERE id = $1", lost.id).await;
    event_log::record(&app.db, std::slice::from_ref(&kept)).await.expect("record");
    gone.rollback().await.expect("rollback");
    assert_eq!(next_event(&mut live).await["id"], kept.id.to_string());
    assert!(hole.expect("a number") < seq_of(&app, kept.id).await);
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

/// Only the holder of an unexpired lease ships; when it gives the lease up a standby shipper
/// takes over. With three shippers contending, every event reaches a client once, in the log's
/// order.
#[tokio::test]
async fn only_the_lease_holder_ships_and_contending_shippers_keep_one_order() {
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
    let quiet = tokio::time::timeout(Duration::from_millis(1500), next_event(&mut live)).await;
    assert!(quiet.is_err(), "shipped without the lease: {quiet:?}");
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
    // The notifications of those creations are still being shipped; then all of it is.
    wait_until("every event shipped", DEADLINE, || async {
        app.count(
            "SELECT count(*) FROM event_log \
             WHERE seq > (SELECT published_seq FROM event_log_shipper WHERE id = 1)",
        )
        .await
            == 0
    })
    .await;
    cancel.cancel();
    for shipper in extra {
        shipper.await.expect("joined").expect("shipper");
    }
    app.stop().await;
}
