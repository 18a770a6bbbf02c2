//! Job rows that one worker updates many at a time from two places, its success batch and its
//! lease renewal: the two never deadlock. Once step by step with the real statements, holding
//! a row so that each has locked what the other needs next (deterministic); once under load,
//! thousands of short jobs on two workers renewing their leases back to back, each job run
//! exactly once (probabilistic: without the fix it went red in about four runs of ten).
//!
//! The bug they guard against (found by the job benchmark's exact counts): each statement is an
//! `UPDATE ... FROM UNNEST` that locks rows in the order its join yields them; a batch and a
//! renewal over the same rows in different orders deadlocked, PostgreSQL failed the batch, and
//! its jobs ran again once their leases ran out. Now the renewal never waits: it takes only
//! the rows no other transaction holds (`store::lock_free`, `FOR UPDATE SKIP LOCKED`) and tries
//! the others at its next beat.

use std::time::Duration;

use sea_orm::{ConnectionTrait, TransactionTrait};
use serde_json::json;
use showrunner_shared::broker::Publisher;
use showrunner_shared::db::sql;
use showrunner_tests::job_handlers::{self, Count, Switch};
use showrunner_tests::{Options, TestApp, wait_until};
use showrunner_workers::jobs::store::{self, ClaimedJob};
use showrunner_workers::jobs::tracker::{self, Signals};
use uuid::Uuid;

use crate::support::{Capture, DEADLINE};

/// Backends of this test's database waiting for a lock.
async fn waiting_for_locks(app: &TestApp) -> i64 {
    app.count(
        "SELECT count(*) FROM pg_stat_activity \
         WHERE datname = current_database() AND wait_event_type = 'Lock'",
    )
    .await
}

fn running(id: Uuid, dispatch_id: Uuid, creator: Uuid) -> ClaimedJob {
    ClaimedJob {
        id,
        job_type: "test.count".into(),
        payload: json!({"ms": 0}),
        attempts: 1,
        max_attempts: 5,
        dispatch_id,
        created_by: creator,
        created_by_name: "alice".into(),
        traceparent: None,
    }
}

#[tokio::test]
async fn a_success_batch_and_a_lease_renewal_locking_the_same_rows_both_commit() {
    let app = TestApp::spawn_with(Options::no_workers()).await;
    let creator = TestApp::user_id("alice");
    // A busy worker's table: many running jobs, and statistics that say so. The planner then
    // joins an `UNNEST` to `jobs` row by row in the arrays' order (a nested loop over an index),
    // which is the order an `UPDATE ... FROM UNNEST` locks in, as in the benchmark that found
    // the deadlock. (Over a few rows it would scan the table in one order for every statement,
    // and no two statements could deadlock, with or without the fix.)
    app.db
        .execute_raw(sql(
            "INSERT INTO jobs (id, type, payload, status, attempts, max_attempts, created_by, \
             dispatch_id, locked_until) \
             SELECT gen_random_uuid(), 'test.count', '{}', 'running', 1, 5, $1, \
             gen_random_uuid(), now() + interval '1 hour' FROM generate_series(1, 2000)",
            [creator.into()],
        ))
        .await
        .expect("insert the busy worker's other jobs");
    // Three jobs of this worker, `a < gate < b` by id.
    let mut ids: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
    ids.sort();
    let jobs: Vec<ClaimedJob> =
        ids.iter().map(|id| running(*id, Uuid::now_v7(), creator)).collect();
    app.db
        .execute_raw(sql(
            "INSERT INTO jobs (id, type, payload, status, attempts, max_attempts, created_by, \
             created_by_name, dispatch_id, locked_until) \
             SELECT id, 'test.count', '{\"ms\": 0}', 'running', 1, 5, $3, 'alice', dispatch, \
             now() + interval '1 hour' FROM UNNEST($1::uuid[], $2::uuid[]) AS t(id, dispatch)",
            [
                ids.clone().into(),
                jobs.iter().map(|j| j.dispatch_id).collect::<Vec<_>>().into(),
                creator.into(),
            ],
        ))
        .await
        .expect("insert the jobs");
    app.db.execute_unprepared("ANALYZE jobs").await.expect("analyze");
    let (a, gate, b) = (jobs[0].clone(), jobs[1].clone(), jobs[2].clone());

    // Another transaction holds `gate`: the success batch over [b, gate, a] takes its rows in
    // id order, so it locks `a` and waits there (`b` is still free).
    let blocker = app.db.begin().await.expect("begin");
    blocker
        .execute_raw(sql("SELECT id FROM jobs WHERE id = $1 FOR UPDATE", [gate.id.into()]))
        .await
        .expect("lock the gate");
    let db = app.db.clone();
    let done: Vec<(ClaimedJob, serde_json::Value)> =
        [&b, &gate, &a].into_iter().map(|j| (j.clone(), json!({"attempt": 1}))).collect();
    let batch = tokio::spawn(async move { store::succeed_many(&db, &done).await });
    wait_until("the success batch to wait for the gate", DEADLINE, || async {
        waiting_for_locks(&app).await == 1
    })
    .await;
    // The renewal over [b, a] (a heartbeat's snapshot comes in any order) ends at once: it
    // takes the free row `b` and leaves `a`, which the batch holds, for its next beat. (When it
    // waited for `a` holding `b`, the batch, once through the gate, waited for `b`: deadlock.)
    let held: Vec<(ClaimedJob, Signals)> =
        [&b, &a].into_iter().map(|j| (j.clone(), Signals::default())).collect();
    let beat = tokio::time::timeout(
        DEADLINE,
        tracker::renew_leases(&app.db, &held, Duration::from_secs(10)),
    )
    .await
    .expect("the renewal does not wait for the batch's rows")
    .expect("the renewal commits");
    let renewed: Vec<Uuid> = beat.renewed.iter().map(|r| r.id).collect();
    assert_eq!(renewed, vec![b.id], "the free row is renewed");
    assert_eq!(beat.busy, vec![a.id], "the held row is busy, not lost");
    assert_eq!(waiting_for_locks(&app).await, 1, "the batch still waits for the gate");
    // The gate opens: the batch takes it and goes on to `b`.
    blocker.rollback().await.expect("release the gate");
    let batch = tokio::time::timeout(DEADLINE, batch)
        .await
        .expect("the success batch ends")
        .expect("the success batch's task");
    let (flags, events) = batch.expect("the success batch commits (no deadlock)");
    assert_eq!(flags, vec![true, true, true]);
    assert_eq!(events.len(), 3, "one job_completed each");
    let succeeded = app
        .count(&format!(
            "SELECT count(*) FROM jobs WHERE status = 'succeeded' AND attempts = 1 \
             AND id IN ('{}', '{}', '{}')",
            a.id, gate.id, b.id
        ))
        .await;
    assert_eq!(succeeded, 3);
    app.stop().await;
}

/// The load test's jobs, each sleeping `LOAD_JOB_MS` (jobs claimed together end together,
/// which makes large success batches), on `LOAD_WORKERS` workers of `LOAD_IN_FLIGHT` jobs each.
const LOAD_JOBS: usize = 8_000;
const LOAD_JOB_MS: u64 = 50;
const LOAD_WORKERS: usize = 2;
const LOAD_IN_FLIGHT: &str = "512";

#[tokio::test]
async fn many_short_jobs_beside_a_fast_lease_renewal_each_run_exactly_once() {
    let count = Count::default();
    let settings = [
        ("jobs.max_in_flight", LOAD_IN_FLIGHT),
        ("jobs.prefetch", LOAD_IN_FLIGHT),
        ("jobs.lease_secs", "3"),
        // The renewal back to back instead of once a second: each one is a chance to meet a
        // success batch over the same rows. When the renewal and the batch each locked in
        // their join's order this test went red in about four runs of ten (README "Jobs"); the
        // step-by-step test above always does.
        ("jobs.lease_renew_ms", "1"),
    ];
    // The workers' warnings, where a write that PostgreSQL failed is logged.
    let warnings = Capture::default();
    let _logs = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .json()
            .with_env_filter("warn")
            .with_writer(warnings.clone())
            .finish(),
    );
    let mut app = TestApp::spawn_with(Options {
        job_registry: job_handlers::registry(&Switch::default()).with(count.clone()),
        extra: settings.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        ..Options::no_workers()
    })
    .await;
    // Every job queued before a worker runs, as the job benchmark does: the workers start with
    // a full queue and keep `LOAD_IN_FLIGHT` jobs each in flight from the first moment.
    let payloads = (0..LOAD_JOBS).map(|_| json!({"ms": LOAD_JOB_MS}).to_string()).collect();
    let conn = app.amqp().await;
    let publisher =
        Publisher::open(&conn, Duration::from_secs(30)).await.expect("a publisher with confirms");
    showrunner_tests::queue_jobs(&app.db, &publisher, "test.count", 5, "alice", payloads)
        .await
        .expect("the jobs queued");
    for _ in 0..LOAD_WORKERS {
        app.start_job_worker();
    }

    let deadline = Duration::from_secs(45);
    wait_until(&format!("{LOAD_JOBS} jobs to succeed"), deadline, || async {
        app.count("SELECT count(*) FROM jobs WHERE status = 'succeeded'").await == LOAD_JOBS as i64
    })
    .await;
    // No job ran twice: no second attempt in the rows, no second job_started in the log, no
    // second run in the handler.
    let again = app.count("SELECT count(*) FROM jobs WHERE attempts <> 1").await;
    assert_eq!(again, 0, "jobs with more than one attempt");
    let started = app.count("SELECT count(*) FROM activity_log WHERE event = 'job_started'").await;
    assert_eq!(started, LOAD_JOBS as i64, "job_started events");
    // Nor did either statement fail: a deadlock may abort the renewal instead of the batch,
    // which runs nothing twice but is the same fault.
    let deadlocks: Vec<String> =
        warnings.lines().into_iter().filter(|l| l.contains("deadlock")).collect();
    assert_eq!(deadlocks, Vec::<String>::new(), "job writes that deadlocked");
    let runs = count.runs();
    let twice: Vec<(&Uuid, &u32)> = runs.iter().filter(|(_, n)| **n != 1).collect();
    assert_eq!(twice, Vec::new(), "jobs whose handler ran more than once");
    assert_eq!(runs.len(), LOAD_JOBS, "jobs whose handler ran");
    app.stop().await;
}
