//! The plan of the job claim: it reads the rows it claims, not the queue. Written as a join of
//! `jobs` with the batch and a `status` condition, the claim let the planner pick every queued
//! row from the status indexes whenever `jobs` had no statistics (never analyzed, as with
//! autovacuum off) or stale ones (a burst queued since the last analyze): each claim of a few
//! jobs then read the whole queue, and claiming a backlog cost its length squared (found with
//! `pg_stat_statements` in the job benchmark: a third of PostgreSQL's time went to the claim).

use sea_orm::{ConnectionTrait, FromQueryResult, TransactionTrait};
use serde_json::Value;
use showrunner_shared::db::sql;
use showrunner_tests::{Options, TestApp};
use showrunner_workers::jobs::store::CLAIM_SQL;
use uuid::Uuid;

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
    let app = TestApp::spawn_with(Options {
        episode_workers: 0,
        activity_workers: 0,
        notification_workers: 0,
        ..Options::default()
    })
    .await;
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
