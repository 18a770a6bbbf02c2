//! `bench-jobs`: Showrunner's side of the job benchmark, mirroring `../shared/peers/jobs/`
//! (Dramatiq and Celery): N jobs (20,000) are enqueued while no job worker runs, then 2 job
//! worker processes start; each job is one committed `INSERT INTO peer_done ... ON CONFLICT DO
//! NOTHING`. Scenario `retry`: every tenth job fails its first attempt and succeeds on its retry
//! (delays 100 ms to 1 s, like Dramatiq's). Unlike the peers, every job also keeps its row's
//! status, its events (into the event log, which the shipper publishes) and its activity log rows,
//! as in production: the activity and notification workers run in this process.
//!
//! `wall_jobs_s` = N / (worker start -> last peer_done row), the peers' figure. Also printed:
//! when 25, 50, 75, 90 and 99 % of the jobs were done (`done_by_s`, from the workers' start);
//! when every job row said `succeeded` and when the activity log held every job event, and
//! the CPU seconds each party used (job workers, RabbitMQ, PostgreSQL, this process), in all
//! and per job, and PostgreSQL's commits, rows inserted and rows updated per job in the
//! benchmark's database (`pg_stat_database`), and the WAL records and bytes per job (`pg_stat_wal`).
//!
//!     cargo run --release -p showrunner-tests --bin bench-jobs
//!
//! Environment: `BENCH_N` (20000), `BENCH_RUNS` (3), `BENCH_SCENARIOS` (`plain,retry`),
//! `BENCH_WORKERS` (2), `BENCH_IN_FLIGHT` (512), `BENCH_PREFETCH` (1024), `BENCH_DB_POOL` (12),
//! `BENCH_POLL_MS` (50, how often the driver counts what is done; the peers' harness: 50);
//! to see what costs what: `BENCH_ACTIVITY_WORKERS=0` (events published, no activity log
//! written) and `BENCH_QUEUE_TYPE=classic` (classic instead of quorum queues);
//! `BENCH_WORKER_LOG` (`warn`): the job workers' log filter (their logs are in
//! `$TMPDIR/showrunner-bench-logs/`; `info` shows when each started, connected and consumed).
//! `bench-jobs --worker` is one job worker process with the benchmark job type (the driver
//! starts it; configured like any worker through `SHOWRUNNER__*`).

use std::collections::HashMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use sea_orm::{ConnectionTrait, DbBackend, FromQueryResult, Statement};
use serde::Deserialize;
use showrunner_shared::broker::Publisher;
use showrunner_shared::contracts::{Actor, JobQueued, OutgoingEvent};
use showrunner_shared::db::sql;
use showrunner_shared::event_log::{self, StoredEvent};
use showrunner_shared::jobs::types::JobType;
use showrunner_tests::{Options, TestApp};
use showrunner_workers::jobs::{JobContext, JobError, JobHandler, Registry};
use uuid::Uuid;

/// `bench.insert`: the peers' job body.
struct BenchInsert;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BenchPayload {
    run_id: Uuid,
    job_id: i32,
    fail_once: bool,
}

impl JobType for BenchInsert {
    const NAME: &'static str = "bench.insert";
    const SUMMARY: &'static str = "The peers' job body: one committed INSERT.";
    type Payload = BenchPayload;
    fn payload_schema() -> serde_json::Value {
        serde_json::json!({"type": "object", "required": ["runId", "jobId", "failOnce"]})
    }
}

impl JobHandler for BenchInsert {
    type Job = Self;

    async fn run(&self, ctx: &JobContext, p: BenchPayload) -> Result<serde_json::Value, JobError> {
        let attempt = ctx.attempt - 1; // the peers count retries from 0
        if p.fail_once && attempt == 0 && p.job_id % 10 == 0 {
            return Err(JobError::retryable(anyhow::anyhow!("job {} fails once", p.job_id)));
        }
        ctx.db
            .execute_raw(sql(
                "INSERT INTO peer_done (run_id, job_id, attempt) VALUES ($1, $2, $3) \
                 ON CONFLICT DO NOTHING",
                [p.run_id.into(), p.job_id.into(), attempt.into()],
            ))
            .await
            .map_err(JobError::retryable)?;
        Ok(serde_json::Value::Null)
    }
}

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS peer_done (
  run_id  uuid NOT NULL,
  job_id  int  NOT NULL,
  attempt int  NOT NULL,
  done_at timestamptz NOT NULL DEFAULT clock_timestamp(),
  PRIMARY KEY (run_id, job_id)
)";

/// The shares of the jobs whose time of completion `bench-jobs` prints.
const DONE_BY: [f64; 5] = [0.25, 0.5, 0.75, 0.9, 0.99];

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() -> ExitCode {
    if std::env::args().any(|a| a == "--worker") {
        let registry = Registry::builtin().with(BenchInsert);
        showrunner_shared::process::main("bench-jobs --worker", move |settings, cancel| {
            showrunner_workers::Role::Job.run_with(settings, registry, cancel)
        });
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(error) => {
            eprintln!("bench-jobs: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(drive()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("bench-jobs: {error:#}");
            ExitCode::FAILURE
        }
    }
}

struct RunResult {
    enqueue: Duration,
    wall: Duration,
    /// Worker start -> first peer_done row (by the database's clock).
    first_done: Duration,
    /// First -> last peer_done row (the peers' `drain`).
    drain: Duration,
    /// When each share of [`DONE_BY`] of the jobs was done (worker start -> that `done_at`).
    done_by: Vec<Duration>,
    status: Duration,
    activity: Duration,
    retried: i64,
    cpu: HashMap<&'static str, f64>,
    /// PostgreSQL per job: commits, rows inserted, rows updated, WAL records and bytes
    /// (`PgCounters::since`).
    pg: [f64; 5],
}

async fn drive() -> anyhow::Result<()> {
    let n: usize = env_or("BENCH_N", 20_000);
    let runs: usize = env_or("BENCH_RUNS", 3);
    let workers: usize = env_or("BENCH_WORKERS", 2);
    let scenarios = std::env::var("BENCH_SCENARIOS").unwrap_or_else(|_| "plain,retry".into());
    let queue_type = std::env::var("BENCH_QUEUE_TYPE").unwrap_or_else(|_| "quorum".into());
    let activity_workers: usize = env_or("BENCH_ACTIVITY_WORKERS", 1);
    let app = TestApp::spawn_with(Options {
        episode_workers: 0,
        job_workers: 0,
        activity_workers,
        extra: vec![("amqp.queue_type".into(), queue_type)],
        ..Options::default()
    })
    .await;
    app.db.execute_unprepared(SCHEMA).await?;
    let conn = app.amqp().await;
    let publisher = Publisher::open(&conn, Duration::from_secs(30)).await?;
    for scenario in scenarios.split(',') {
        let fail_once = scenario == "retry";
        let mut results = Vec::new();
        for run in 1..=runs {
            let r = one_run(&app, &publisher, n, workers, fail_once).await?;
            println!(
                "showrunner procs={workers} scenario={scenario} run={run} n={n} enqueue_jobs_s={:.0} \
                 wall_jobs_s={:.0} (wall {:.2}s from worker start) drain_jobs_s={:.0} \
                 (first->last DB write {:.2}s, first {:.2}s after worker start) done_by_s: {} \
                 status_jobs_s={:.0} \
                 activity_jobs_s={:.0} retried={} cpu_s: {} cpu_us_per_job: {} \
                 pg_per_job: commits={:.2} inserted={:.2} updated={:.2} wal_records={:.1} \
                 wal_bytes={:.0}",
                n as f64 / r.enqueue.as_secs_f64(),
                n as f64 / r.wall.as_secs_f64(),
                r.wall.as_secs_f64(),
                n as f64 / r.drain.as_secs_f64(),
                r.drain.as_secs_f64(),
                r.first_done.as_secs_f64(),
                DONE_BY
                    .iter()
                    .zip(&r.done_by)
                    .map(|(share, at)| format!("{:.0}%={:.2}", share * 100.0, at.as_secs_f64()))
                    .collect::<Vec<_>>()
                    .join(" "),
                n as f64 / r.status.as_secs_f64(),
                n as f64 / r.activity.as_secs_f64(),
                r.retried,
                cpu_line(&r.cpu, r.activity),
                per_job_line(&r.cpu, n),
                r.pg[0],
                r.pg[1],
                r.pg[2],
                r.pg[3],
                r.pg[4],
            );
            results.push(r);
        }
        let median = |f: &dyn Fn(&RunResult) -> Duration| {
            let mut v: Vec<f64> = results.iter().map(|r| f(r).as_secs_f64()).collect();
            v.sort_by(f64::total_cmp);
            (v[v.len() / 2], v[0], v[v.len() - 1])
        };
        let (wall, wall_min, wall_max) = median(&|r| r.wall);
        let (status, _, _) = median(&|r| r.status);
        let (activity, _, _) = median(&|r| r.activity);
        println!(
            "MEDIAN showrunner procs={workers} scenario={scenario} runs={runs} n={n} \
             wall_jobs_s={:.0} [min {:.0} max {:.0}] status_jobs_s={:.0} activity_jobs_s={:.0}",
            n as f64 / wall,
            n as f64 / wall_max,
            n as f64 / wall_min,
            n as f64 / status,
            n as f64 / activity,
        );
    }
    let _ = conn.close(200, "done".into()).await;
    app.stop().await;
    Ok(())
}

async fn one_run(
    app: &TestApp,
    publisher: &Publisher,
    n: usize,
    workers: usize,
    fail_once: bool,
) -> anyhow::Result<RunResult> {
    app.db
        .execute_unprepared("TRUNCATE peer_done, jobs, activity_log, notifications, outbox")
        .await?;
    let run_id = Uuid::now_v7();
    let start = Instant::now();
    enqueue(app, publisher, run_id, n, fail_once).await?;
    let enqueue = start.elapsed();

    let logs = std::env::temp_dir().join("showrunner-bench-logs");
    std::fs::create_dir_all(&logs)?;
    let exe = std::env::current_exe()?;
    let mut children = Workers(Vec::new());
    let cpu_before = cpu_snapshot(&[]);
    let pg_before = pg_counters(app).await?;
    // The database's clock at the workers' start: the first and last `done_at` are read against
    // it (the peers print the same drain, first -> last write).
    let db_t0 = app.count("(extract(epoch FROM clock_timestamp()) * 1e6)::bigint").await;
    let t0 = Instant::now();
    for i in 0..workers {
        let log = std::fs::File::create(logs.join(format!("job-worker-{i}.log")))?;
        let child = std::process::Command::new(&exe)
            .arg("--worker")
            .envs(app.env())
            .env("SHOWRUNNER__JOBS__INITIAL_DELAY_MS", "100")
            .env("SHOWRUNNER__JOBS__MAX_DELAY_MS", "1000")
            .env("SHOWRUNNER__JOBS__MAX_IN_FLIGHT", env_or("BENCH_IN_FLIGHT", 512).to_string())
            .env("SHOWRUNNER__JOBS__PREFETCH", env_or("BENCH_PREFETCH", 1024).to_string())
            // 12 connections: fewer than 12 starve the handlers, more add backends to warm up
            // and switch between (session 23: 12 beat 24 in four alternating pairs, and 8 in three).
            .env("SHOWRUNNER__DATABASE__MAX_CONNECTIONS", env_or("BENCH_DB_POOL", 12).to_string())
            .env(
                "SHOWRUNNER__LOG__FILTER",
                std::env::var("BENCH_WORKER_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("start a job worker process")?;
        children.0.push(child);
    }
    let pids: Vec<u32> = children.0.iter().map(std::process::Child::id).collect();
    let n64 = n as i64;
    let run = run_id.to_string();
    let wall =
        wait_count(app, &format!("SELECT count(*) FROM peer_done WHERE run_id = '{run}'"), n64, t0)
            .await?;
    let status =
        wait_count(app, "SELECT count(*) FROM jobs WHERE status = 'succeeded'", n64, t0).await?;
    // The jobs that fail once: every tenth, by the peers' numbering from 0.
    let failing = if fail_once { (n64 + 9) / 10 } else { 0 };
    let per_job = if queued_events() { 3 } else { 2 };
    let events = per_job * n64 + 2 * failing;
    let activity = if records_activity() {
        wait_count(app, "SELECT count(*) FROM activity_log WHERE resource_type = 'job'", events, t0)
            .await?
    } else {
        status
    };
    let cpu_after = cpu_snapshot(&pids);
    let cpu = cpu_used(&cpu_before, &cpu_after, &pids);
    children.stop();
    // The statistics collector publishes a backend's counts up to a second late.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let pg = pg_counters(app).await?.since(&pg_before, n);
    // `done_at` by an aggregate over the run's rows, in µs since the epoch.
    let micros = |aggregate: &str| {
        format!(
            "SELECT (extract(epoch FROM {aggregate}) * 1e6)::bigint FROM peer_done WHERE run_id = '{run}'"
        )
    };
    let since_start = |at: i64| Duration::from_micros(u64::try_from(at - db_t0).unwrap_or(0));
    let first = app.count(&micros("min(done_at)")).await;
    let last = app.count(&micros("max(done_at)")).await;
    // When each share of the jobs was done, from the workers' start: a slow start or a long
    // tail (one worker still busy while the other has nothing left) shows here.
    let mut done_by = Vec::new();
    for share in DONE_BY {
        let at = micros(&format!("percentile_disc({share}) WITHIN GROUP (ORDER BY done_at)"));
        done_by.push(since_start(app.count(&at).await));
    }
    let first_done = since_start(first);
    let drain = Duration::from_micros(u64::try_from(last - first).unwrap_or(0));
    let retried = app
        .count(&format!("SELECT count(*) FROM peer_done WHERE run_id = '{run}' AND attempt > 0"))
        .await;
    // Exact counts, not "at least": a job run twice or an event recorded twice must show.
    let mut wrong = Vec::new();
    let mut expect = |what: &str, got: i64, want: i64| {
        if got != want {
            wrong.push(format!("{what}: {got}, expected {want}"));
        }
    };
    expect("jobs retried (peer_done attempt > 0)", retried, failing);
    let attempts = app.count("SELECT sum(attempts) FROM jobs WHERE status = 'succeeded'").await;
    expect("attempts of the succeeded jobs", attempts, n64 + failing);
    let done = app.count(&format!("SELECT count(*) FROM peer_done WHERE run_id = '{run}'")).await;
    expect("peer_done rows", done, n64);
    expect(
        "jobs not succeeded",
        app.count("SELECT count(*) FROM jobs WHERE status <> 'succeeded'").await,
        0,
    );
    if records_activity() {
        let queued = if queued_events() { n64 } else { 0 };
        for (event, want) in [
            ("job_queued", queued),
            ("job_started", n64 + failing),
            ("job_retry", failing),
            ("job_completed", n64),
            ("job_failed", 0),
        ] {
            let query = format!(
                "SELECT count(*) FROM activity_log WHERE resource_type = 'job' AND event = '{event}'"
            );
            expect(&format!("{event} activity rows"), settled_count(app, &query).await, want);
        }
        // Nothing else either: every job activity row is one of the above.
        let all = "SELECT count(*) FROM activity_log WHERE resource_type = 'job'";
        expect("job activity rows in all", settled_count(app, all).await, events);
    }
    anyhow::ensure!(wrong.is_empty(), "the run's counts are wrong: {}", wrong.join("; "));
    Ok(RunResult { enqueue, wall, first_done, drain, done_by, status, activity, retried, cpu, pg })
}

/// PostgreSQL's counters of the benchmark's database (`pg_stat_database`): everyone's
/// transactions and rows there, the job workers' and the driver's (shipper, polling) alike;
/// and the WAL written by the whole server (`pg_stat_wal`: whatever else runs on it counts).
#[derive(FromQueryResult)]
struct PgCounters {
    commits: i64,
    inserted: i64,
    updated: i64,
    wal_records: i64,
    wal_bytes: i64,
}

impl PgCounters {
    /// Per job since `before`: commits, rows inserted, rows updated, WAL records and bytes.
    fn since(&self, before: &Self, n: usize) -> [f64; 5] {
        let per = |a: i64, b: i64| (a - b) as f64 / n as f64;
        [
            per(self.commits, before.commits),
            per(self.inserted, before.inserted),
            per(self.updated, before.updated),
            per(self.wal_records, before.wal_records),
            per(self.wal_bytes, before.wal_bytes),
        ]
    }
}

async fn pg_counters(app: &TestApp) -> anyhow::Result<PgCounters> {
    PgCounters::find_by_statement(Statement::from_string(
        DbBackend::Postgres,
        "SELECT xact_commit AS commits, tup_inserted AS inserted, tup_updated AS updated, \
         (SELECT wal_records FROM pg_stat_wal) AS wal_records, \
         (SELECT wal_bytes::bigint FROM pg_stat_wal) AS wal_bytes \
         FROM pg_stat_database WHERE datname = current_database()",
    ))
    .one(&app.db)
    .await?
    .context("no pg_stat_database row")
}

/// Whether this run records activity (`BENCH_ACTIVITY_WORKERS=0` measures without it).
fn records_activity() -> bool {
    env_or("BENCH_ACTIVITY_WORKERS", 1usize) > 0
}

/// Records the job rows and publishes their requests with confirms, 1,000 at a time: what
/// `POST /jobs` does per job, without HTTP (the peers enqueue from Python the same way).
async fn enqueue(
    app: &TestApp,
    publisher: &Publisher,
    run_id: Uuid,
    n: usize,
    fail_once: bool,
) -> anyhow::Result<()> {
    let creator = TestApp::user_id("bench");
    for chunk in (0..n).collect::<Vec<_>>().chunks(1_000) {
        let payloads: Vec<String> = chunk
            .iter()
            .map(|i| {
                serde_json::json!({"runId": run_id, "jobId": i, "failOnce": fail_once}).to_string()
            })
            .collect();
        let ids =
            showrunner_tests::queue_jobs(&app.db, publisher, "bench.insert", 3, "bench", payloads)
                .await?;
        if queued_events() {
            // `job_queued`, as `POST /jobs` writes it: into the event log (the shipper
            // publishes it).
            let events: Vec<StoredEvent> = ids
                .iter()
                .map(|id| {
                    let data = JobQueued {
                        job_id: *id,
                        job_type: "bench.insert".into(),
                        max_attempts: 3,
                        episode_id: None,
                        run_at: None,
                        timestamp: chrono::Utc::now(),
                    };
                    let actor = Actor { id: creator, name: "bench".into() };
                    let event =
                        OutgoingEvent::new(id, &data, Some(actor), Some(*id), chrono::Utc::now());
                    StoredEvent::from_outgoing(&event, None)
                })
                .collect();
            event_log::record_new(&app.db, &events).await?;
        }
    }
    Ok(())
}

/// Whether the enqueue writes `job_queued` as `POST /jobs` does (`BENCH_QUEUED_EVENTS=0`: as
/// before that event existed).
fn queued_events() -> bool {
    env_or("BENCH_QUEUED_EVENTS", 1usize) > 0
}

/// The job worker processes of one run; stopped (SIGTERM, then wait) when dropped, so a
/// failing run leaves none behind.
struct Workers(Vec<std::process::Child>);

impl Workers {
    fn stop(&mut self) {
        for child in &self.0 {
            // SIGTERM: the worker drains and exits 0.
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
        }
        for mut child in self.0.drain(..) {
            let _ = child.wait();
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop();
    }
}

#[derive(FromQueryResult)]
struct Count {
    n: i64,
}

/// `query`'s count once it held still for a second (what comes late is counted too).
async fn settled_count(app: &TestApp, query: &str) -> i64 {
    let since = Instant::now();
    let mut last = app.count(query).await;
    let mut still_since = Instant::now();
    while since.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = app.count(query).await;
        if now != last {
            (last, still_since) = (now, Instant::now());
        } else if still_since.elapsed() >= Duration::from_secs(1) {
            break;
        }
    }
    last
}

async fn wait_count(
    app: &TestApp,
    query: &str,
    want: i64,
    since: Instant,
) -> anyhow::Result<Duration> {
    let deadline = Duration::from_secs(600);
    let statement = format!("SELECT ({query})::bigint AS n");
    loop {
        let n = Count::find_by_statement(Statement::from_string(
            DbBackend::Postgres,
            statement.clone(),
        ))
        .one(&app.db)
        .await?
        .map_or(0, |c| c.n);
        if n >= want {
            return Ok(since.elapsed());
        }
        anyhow::ensure!(since.elapsed() < deadline, "only {n}/{want} after {deadline:?}: {query}");
        // The peers' harness looks every 50 ms (`common.py`, `wait_done`): so does this one, so
        // that both pay the same for being watched (a count over the run's rows costs
        // PostgreSQL a few milliseconds of the CPU the jobs share).
        tokio::time::sleep(Duration::from_millis(env_or("BENCH_POLL_MS", 50))).await;
    }
}

/// CPU seconds (user + system) of every process, grouped: the job workers, RabbitMQ (`beam.smp`),
/// PostgreSQL (`postgres`), and this process (api, activity and notification workers).
fn cpu_snapshot(workers: &[u32]) -> HashMap<u32, (&'static str, f64)> {
    let me = std::process::id();
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let comm = head.split_once('(').map_or("", |(_, c)| c);
        let group = if workers.contains(&pid) {
            "job_workers"
        } else if pid == me {
            "bench_process"
        } else if comm == "beam.smp" {
            "rabbitmq"
        } else if comm == "postgres" {
            "postgres"
        } else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // After the command: state is field 0, utime 11, stime 12 (in clock ticks, 100 per second).
        let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        out.insert(pid, (group, (ticks(11) + ticks(12)) / 100.0));
    }
    out
}

fn cpu_used(
    before: &HashMap<u32, (&'static str, f64)>,
    after: &HashMap<u32, (&'static str, f64)>,
    _workers: &[u32],
) -> HashMap<&'static str, f64> {
    let mut used = HashMap::new();
    for (pid, (group, seconds)) in after {
        let earlier = before.get(pid).map_or(0.0, |(_, s)| *s);
        *used.entry(*group).or_insert(0.0) += seconds - earlier;
    }
    used
}

/// Each party's CPU per job, in microseconds.
fn per_job_line(cpu: &HashMap<&'static str, f64>, n: usize) -> String {
    let mut groups: Vec<_> = cpu.iter().collect();
    groups.sort_by(|a, b| b.1.total_cmp(a.1));
    let mut parts: Vec<String> =
        groups.iter().map(|(g, s)| format!("{g}={:.0}", *s * 1e6 / n as f64)).collect();
    let total: f64 = cpu.values().sum();
    parts.push(format!("total={:.0}", total * 1e6 / n as f64));
    parts.join(" ")
}

fn cpu_line(cpu: &HashMap<&'static str, f64>, over: Duration) -> String {
    let capacity = 2.0 * over.as_secs_f64();
    let mut groups: Vec<_> = cpu.iter().collect();
    groups.sort_by(|a, b| b.1.total_cmp(a.1));
    let mut parts: Vec<String> = groups.iter().map(|(g, s)| format!("{g}={s:.1}")).collect();
    let total: f64 = cpu.values().sum();
    parts.push(format!("total={total:.1} of {capacity:.1} (2 cores x {:.1}s)", over.as_secs_f64()));
    parts.join(" ")
}
