//! The plan of the job claim: it reads the rows it claims, not the queue. Written as a join of
//! `jobs` with the batch and a `status` condition, the claim let the planner pick every queued
//! row from the status indexes whenever `jobs` had no statistics (never analyzed, as with
//! autovacuum off) or stale ones (a burst queued since the last analyze): each claim of a few
//! jobs then read the whole queue, and claiming a backlog cost its length squared (found with
//! `pg_stat_statements` in the job benchmark: a third of PostgreSQL's time went to the claim).
//! The claim now updates each row it found by its place (`ctid`), which leaves alone a row
//! another transaction changed meanwhile: the second test shows such a row is claimed all the
//! same, by the claim's second step.

use std::time::Duration;

use sea_orm::{ConnectionTrait, FromQueryResult, TransactionTrait};
use serde_json::Value;
use showrunner_shared::contracts::JobRequest;
use showrunner_shared::db::sql;
use showrunner_tests::{Options, TestApp, wait_until};
use showrunner_workers::jobs::store::{self, CLAIM_SQL, Claim};
use uuid::Uuid;

use crate::support::DEADLINE;

/// Rows the scans of `jobs` in an `EXPLAIN (ANALYZE, FORMAT JSON)` plan returned, summed over
/// their loops (the update node itself, which returns what it updated, left out).
fn rows_read_from_jobs(plan: &Value) -> f64 {
    let own = match (plan["Relation Name"].as_str(), plan["Node Type"].as_str()) {
        (Some("jobs"), Some(node)) if node != "ModifyTable" => {
            plan["Actual Rows"].as_f64().unwrap_or(0.0)
                * plan["Actual Loops"].as_f64().unwrap_or(1.0)
        }
        _ => 0.0,
    };
    let children = plan["Plans"]
        .as_array()
        .map_or(0.0, |plans| plans.iter().map(rows_read_from_jobs).sum::<f64>());
    own + children
}

#[tokio::test]
async fn a_claim_reads_the_rows_it_claims_not_the_queue_without_statistics() {
    let app = TestApp::spawn_with(Options::no_workers()).await;
    let queued: i32 = 20_000;
    let batch: i32 = 50;
    app.db
        .execute_raw(sql(
            "INSERT INTO jobs (id, type, payload, status, max_attempts, created_by, dispatch_id) \
             SELECT gen_random_uuid(), 'test.count', '{}', 'queued', 5, $1, gen_random_uuid() \
             FROM generate_series(1, $2)",
            [TestApp::user_id("alice").into(), i64::from(queued).into()],
        ))
        .await
        .expect("queue the backlog");
    // No statistics, whatever autovacuum did meanwhile: the planner knows only the table's size.
    app.db
        .execute_unprepared("DELETE FROM pg_statistic WHERE starelid = 'jobs'::regclass")
        .await
        .expect("forget the statistics of jobs");
    #[derive(FromQueryResult)]
    struct Pick {
        id: Uuid,
        dispatch_id: Uuid,
    }
    let picked = Pick::find_by_statement(sql(
        "SELECT id, dispatch_id FROM jobs ORDER BY random() LIMIT $1",
        [i64::from(batch).into()],
    ))
    .all(&app.db)
    .await
    .expect("pick a batch");
    let mut pairs: Vec<(Uuid, Uuid)> = picked.iter().map(|p| (p.id, p.dispatch_id)).collect();
    pairs.sort_unstable();

    let txn = app.db.begin().await.expect("begin");
    let explained = txn
        .query_one_raw(sql(
            &format!("EXPLAIN (ANALYZE, FORMAT JSON) {CLAIM_SQL}"),
            [
                pairs.iter().map(|(id, _)| *id).collect::<Vec<_>>().into(),
                pairs.iter().map(|(_, dispatch)| *dispatch).collect::<Vec<_>>().into(),
                30.0_f64.into(),
            ],
        ))
        .await
        .expect("explain the claim")
        .expect("a plan");
    let plan: Value = explained.try_get_by_index(0).expect("the plan as JSON");
    txn.rollback().await.expect("rollback");

    let top = &plan[0]["Plan"];
    let claimed = top["Actual Rows"].as_f64().unwrap_or(0.0);
    assert_eq!(claimed, batch as f64, "the claim claims the batch: {plan:#}");
    let read = rows_read_from_jobs(top);
    assert!(
        read <= 2.0 * batch as f64,
        "the claim of {batch} jobs read {read} rows of jobs (the queue holds {queued}): {plan:#}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_queued_row_changed_while_the_claim_waits_for_it_is_claimed_once() {
    let app = TestApp::spawn_with(Options::no_workers()).await;
    let (job_id, dispatch_id) = (Uuid::now_v7(), Uuid::now_v7());
    app.db
        .execute_raw(sql(
            "INSERT INTO jobs (id, type, payload, status, max_attempts, created_by, dispatch_id) \
             VALUES ($1, 'test.count', '{}', 'queued', 5, $2, $3)",
            [job_id.into(), TestApp::user_id("alice").into(), dispatch_id.into()],
        ))
        .await
        .expect("queue the job");
    // Another transaction changes the row (still queued, same dispatch) and holds it.
    let blocker = app.db.begin().await.expect("begin");
    blocker
        .execute_raw(sql("UPDATE jobs SET updated_at = now() WHERE id = $1", [job_id.into()]))
        .await
        .expect("change the row");
    let db = app.db.clone();
    let request = JobRequest { job_id, dispatch_id, not_before: None };
    let claim = tokio::spawn(async move {
        store::claim_many(&db, &[(request, None)], Duration::from_secs(30)).await
    });
    wait_until("the claim to wait for the changed row", DEADLINE, || async {
        app.count(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .await
            == 1
    })
    .await;
    blocker.commit().await.expect("commit the change");
    let (claims, events) = tokio::time::timeout(DEADLINE, claim)
        .await
        .expect("the claim ends")
        .expect("the claim's task")
        .expect("the claim commits");
    assert_eq!(claims.len(), 1);
    match &claims[0] {
        Claim::Run(job) => assert_eq!((job.id, job.attempts), (job_id, 1)),
        other => panic!("the job is claimed, not {other:?}"),
    }
    assert_eq!(events.len(), 1, "one job_started");
    let running = app
        .count(&format!(
            "SELECT count(*) FROM jobs WHERE id = '{job_id}' AND status = 'running' AND attempts = 1"
        ))
        .await;
    assert_eq!(running, 1, "claimed once");
    app.stop().await;
}
