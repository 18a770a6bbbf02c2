//! `bench-soak`: a long steady write load against a whole stack on a PostgreSQL with
//! autovacuum on, as production runs, to show that storage per command, throughput and
//! latency stay where they are (issue 20). `tests/bench/soak/run.sh` starts the private
//! PostgreSQL and the RabbitMQ vhost this runs against, and removes them afterwards.
//!
//! The stack runs in this process (api, one episode worker, one activity worker with the log
//! shipper, one notification worker, one job worker for the retention sweep's share), against
//! `--database-url` and `--amqp-url`. The load is `POST /api/v1/episodes` from `--users`
//! users at `--rate` per second on an open-loop schedule (request i leaves at i/rate, whatever
//! the earlier ones do; at most 2,000 in flight) until `--n` were sent. Every `--report-secs`
//! it prints the interval's accepted and applied commands per second, the POST latency
//! (sent -> 202) p50/p99/max, the database's size and the dead tuples of the churn tables. At
//! the end: bytes per command by table at steady state (each table's growth over the second
//! half of the run divided by the commands applied in it: what one more command costs once
//! the sweeps keep pace), rows, dead tuples and autovacuum runs per table, and the targets:
//! - the last interval's applied/s within 10% of the first's;
//! - p99 stable, read two ways: no drift (the second half's median p99 at most 1.5 x the first
//!   half's) and spikes that do not grow (the second half's worst p99 at most the first half's
//!   worst, with 20 % to spare). The strictest reading (no interval of the second half above
//!   twice the first half's median) is printed beside them: one spike of any cause fails it,
//!   so `run.sh` also prints PostgreSQL's checkpoints and long autovacuums by wall-clock time,
//!   which each interval's row carries (`at`), to tell what a spike coincided with;
//! - under 2,048 bytes per command at steady state, the event log excluded (its size is its
//!   retention window, `realtime.event_log_retention_secs`, times the event rate).
//!
//! Exits non-zero when something failed (posts refused, commands not applied), not for a
//! missed target.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use hdrhistogram::Histogram;
use sea_orm::{Database, DatabaseConnection, FromQueryResult};
use showrunner_shared::auth::{self, Claims, Role};
use showrunner_shared::config::Settings;
use showrunner_shared::db::sql;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::{EnvFilter, fmt};
use uuid::Uuid;

const USAGE: &str = "usage: bench-soak --database-url URL --amqp-url URL [--n 1000000] \
                     [--rate 500] [--users 64] [--report-secs 60] [--set section.key=value]...";
const MAX_IN_FLIGHT: usize = 2000;
const SECRET: &str = "soak-benchmark-secret-0123456789";
/// Tables whose dead tuples are printed every interval.
const CHURN: [&str; 5] = ["commands", "event_log", "notifications", "jobs", "user_presence"];

struct Args {
    database_url: String,
    amqp_url: String,
    n: u64,
    rate: u64,
    users: usize,
    report: Duration,
    settings: Vec<(String, String)>,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        database_url: String::new(),
        amqp_url: String::new(),
        n: 1_000_000,
        rate: 500,
        users: 64,
        report: Duration::from_secs(60),
        settings: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let Some(value) = it.next() else { bail!("{flag} needs a value") };
        let number = || value.parse::<u64>().ok().filter(|v| *v > 0);
        match flag.as_str() {
            "--database-url" => args.database_url = value.clone(),
            "--amqp-url" => args.amqp_url = value.clone(),
            "--n" => args.n = number().context("--n needs a positive number")?,
            "--rate" => args.rate = number().context("--rate needs a positive number")?,
            "--users" => {
                args.users = usize::try_from(number().context("--users needs a positive number")?)?;
            }
            "--report-secs" => {
                args.report = Duration::from_secs(number().context("--report-secs")?);
            }
            "--set" => {
                let Some((k, v)) = value.split_once('=') else {
                    bail!("--set needs section.key=value")
                };
                args.settings.push((k.to_string(), v.to_string()));
            }
            _ => bail!("unknown option {flag}"),
        }
    }
    if args.database_url.is_empty() || args.amqp_url.is_empty() {
        bail!("--database-url and --amqp-url are required");
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(error) => {
            eprintln!("bench-soak: {error:#}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let filter = EnvFilter::new(std::env::var("RUST_LOG").as_deref().unwrap_or("warn"));
    let _ = fmt().with_env_filter(filter).try_init();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build();
    runtime.expect("a tokio runtime").block_on(async move {
        match run(args).await {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::from(1),
            Err(error) => {
                eprintln!("bench-soak failed: {error:#}");
                ExitCode::from(1)
            }
        }
    })
}

/// One interval's POST latencies (microseconds) and counts.
struct Interval {
    latency: Histogram<u64>,
    accepted: u64,
    failed: u64,
    /// Why posts failed: the status, or the client's error kind, and how often.
    failures: BTreeMap<String, u64>,
}

impl Interval {
    fn new() -> Self {
        Self {
            latency: Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds"),
            accepted: 0,
            failed: 0,
            failures: BTreeMap::new(),
        }
    }
}

/// A row of the per-interval report.
struct Row {
    accepted_s: f64,
    applied_s: f64,
    p99_ms: f64,
}

async fn run(args: Args) -> anyhow::Result<bool> {
    let addr = "127.0.0.1:0";
    let mut pairs: Vec<(&str, &str)> = vec![
        ("database.url", &args.database_url),
        ("amqp.url", &args.amqp_url),
        ("http.addr", addr),
        ("auth.jwt_secret", SECRET),
        ("ops.enabled", "false"),
        ("limits.requests_per_sec", "1000000"),
        ("limits.request_burst", "1000000"),
        ("log.filter", "warn"),
        // Every request comes from 127.0.0.1: the api's per-address cap (256 connections, a
        // defence against one client) would refuse the load with 503 whenever latency puts
        // more than 256 requests in flight. The first run (README) had it on.
        ("http.max_connections_per_address", "0"),
    ];
    pairs.extend(args.settings.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let settings = Arc::new(Settings::with_overrides(&pairs)?);
    showrunner_migrations::migrate(&settings.database.url).await?;
    let db = Database::connect(&settings.database.url).await?;

    let cancel = CancellationToken::new();
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let api = format!("http://{}/api/v1/episodes", listener.local_addr()?);
    let registry = showrunner_workers::jobs::Registry::builtin();
    let mut roles = tokio::task::JoinSet::new();
    roles.spawn(showrunner_api::run_with(
        settings.clone(),
        registry.job_types(),
        listener,
        cancel.child_token(),
    ));
    use showrunner_workers::Role as Worker;
    for role in [Worker::Episode, Worker::Activity, Worker::Notification, Worker::Job] {
        roles.spawn(role.run_with(settings.clone(), registry.clone(), cancel.child_token()));
    }
    let http = showrunner_shared::tls::client();
    let ready = api.replace("/api/v1/episodes", "/ready");
    let started = Instant::now();
    while !http.get(&ready).send().await.is_ok_and(|r| r.status().is_success()) {
        if started.elapsed() > Duration::from_secs(60) {
            bail!("the stack did not get ready in 60 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let tokens: Arc<Vec<String>> = Arc::new(
        (0..args.users)
            .map(|i| {
                let name = format!("soak-{i}");
                let claims = Claims {
                    sub: Uuid::new_v5(&Uuid::NAMESPACE_OID, name.as_bytes()),
                    email: format!("{name}@example.com"),
                    name,
                    role: Role::Member,
                    exp: chrono::Utc::now().timestamp() + 86_400,
                };
                auth::encode(&claims, SECRET.as_bytes())
            })
            .collect(),
    );
    let cores = std::thread::available_parallelism().map_or(0, |c| c.get());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "Showrunner soak: {} commands at {}/s, {} users, {} cores, {} UTC, load average at start {}",
        args.n,
        args.rate,
        args.users,
        cores,
        chrono::Utc::now().format("%Y-%m-%d %H:%M"),
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    println!(
        "{:>4} {:>8} {:>10} {:>10} {:>8} {:>8} {:>8} {:>9}  dead tuples ({})",
        "min",
        "at (UTC)",
        "accepted/s",
        "applied/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "db MB",
        CHURN.join(", ")
    );

    let current = Arc::new(Mutex::new(Interval::new()));
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let start = Instant::now();
    let mut rows: Vec<Row> = Vec::new();
    let mut snapshots: Vec<(u64, BTreeMap<String, i64>)> = Vec::new();
    let mut applied_before = applied(&db).await?;
    snapshots.push((applied_before, sizes(&db).await?));
    let mut next_report = start + args.report;
    let mut failed_total = 0;
    for i in 0..args.n {
        let due = start + Duration::from_secs_f64(i as f64 / args.rate as f64);
        while Instant::now() >= next_report || due >= next_report {
            if Instant::now() < next_report {
                tokio::time::sleep_until(next_report.into()).await;
            }
            let interval = std::mem::replace(
                &mut *current.lock().map_err(|_| anyhow::anyhow!("poisoned"))?,
                Interval::new(),
            );
            failed_total += interval.failed;
            let now_applied = applied(&db).await?;
            let row =
                report(&db, rows.len() + 1, args.report, &interval, now_applied - applied_before)
                    .await?;
            applied_before = now_applied;
            rows.push(row);
            snapshots.push((now_applied, sizes(&db).await?));
            next_report += args.report;
        }
        tokio::time::sleep_until(due.into()).await;
        let permit = in_flight.clone().acquire_owned().await?;
        let (http, url, tokens, current) =
            (http.clone(), api.clone(), tokens.clone(), current.clone());
        tokio::spawn(async move {
            let token = &tokens[usize::try_from(i).unwrap_or(0) % tokens.len()];
            let body = serde_json::json!({ "title": format!("Soak {i}"), "categories": ["soak"] });
            let sent = Instant::now();
            let result = http.post(&url).bearer_auth(token).json(&body).send().await;
            let micros = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
            let failure = match &result {
                Ok(r) if r.status() == reqwest::StatusCode::ACCEPTED => None,
                Ok(r) => Some(r.status().to_string()),
                Err(e) if e.is_timeout() => Some("timeout".to_string()),
                Err(e) if e.is_connect() => Some("connect".to_string()),
                Err(_) => Some("request error".to_string()),
            };
            if let Ok(mut interval) = current.lock() {
                match failure {
                    None => {
                        interval.accepted += 1;
                        interval.latency.saturating_record(micros);
                    }
                    Some(why) => {
                        interval.failed += 1;
                        *interval.failures.entry(why).or_default() += 1;
                    }
                }
            }
            drop(permit);
        });
    }
    // The last posts' answers, then the workers' backlog.
    let _ = in_flight.acquire_many(u32::try_from(MAX_IN_FLIGHT)?).await?;
    let sent_all = start.elapsed();
    let deadline = Instant::now() + Duration::from_secs(300);
    let expected = args.n - failed_total - current.lock().map(|c| c.failed).unwrap_or(0);
    while applied(&db).await? < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let total_applied = applied(&db).await?;
    let last = std::mem::replace(
        &mut *current.lock().map_err(|_| anyhow::anyhow!("poisoned"))?,
        Interval::new(),
    );
    failed_total += last.failed;
    if last.accepted > 0 {
        let secs =
            (start.elapsed() - args.report * u32::try_from(rows.len())?).max(args.report / 60);
        let row = report(&db, rows.len() + 1, secs, &last, total_applied - applied_before).await?;
        println!(
            "(the last row is a partial interval of {:.0} s and the drain)",
            secs.as_secs_f64()
        );
        let _ = row; // partial: not compared against the targets
    }
    snapshots.push((total_applied, sizes(&db).await?));

    let ok = summary(&db, &args, &rows, &snapshots, sent_all, total_applied, failed_total).await?;
    if let Err(error) = plans(&db).await {
        eprintln!("could not explain the activity queries: {error:#}");
    }
    cancel.cancel();
    while roles.join_next().await.is_some() {}
    Ok(ok)
}

#[derive(FromQueryResult)]
struct Count {
    n: i64,
}

/// Commands applied so far: episodes inserted (pg_stat's counter: no scan of a table that
/// grows by a million rows).
async fn applied(db: &DatabaseConnection) -> anyhow::Result<u64> {
    let n = Count::find_by_statement(sql(
        "SELECT COALESCE(sum(n_tup_ins), 0)::bigint AS n FROM pg_stat_user_tables \
         WHERE relname = 'episodes'",
        [],
    ))
    .one(db)
    .await?
    .map_or(0, |c| c.n);
    Ok(u64::try_from(n).unwrap_or(0))
}

#[derive(FromQueryResult)]
struct TableSize {
    name: String,
    bytes: i64,
}

/// Bytes per table (heap, TOAST and indexes); the partitions of `activity_log` add up under
/// its name.
async fn sizes(db: &DatabaseConnection) -> anyhow::Result<BTreeMap<String, i64>> {
    let rows = TableSize::find_by_statement(sql(
        "SELECT CASE WHEN c.relname LIKE 'activity\\_log\\_%' THEN 'activity_log' ELSE c.relname END \
         AS name, sum(pg_total_relation_size(c.oid))::bigint AS bytes \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = 'public' AND c.relkind = 'r' GROUP BY 1",
        [],
    ))
    .all(db)
    .await?;
    Ok(rows.into_iter().map(|r| (r.name, r.bytes)).collect())
}

#[derive(FromQueryResult)]
struct Stat {
    name: String,
    live: i64,
    dead: i64,
    autovacuums: i64,
}

async fn stats(db: &DatabaseConnection) -> anyhow::Result<BTreeMap<String, Stat>> {
    let rows = Stat::find_by_statement(sql(
        "SELECT CASE WHEN relname LIKE 'activity\\_log\\_%' THEN 'activity_log' ELSE relname END \
         AS name, sum(n_live_tup)::bigint AS live, sum(n_dead_tup)::bigint AS dead, \
         sum(autovacuum_count)::bigint AS autovacuums FROM pg_stat_user_tables GROUP BY 1",
        [],
    ))
    .all(db)
    .await?;
    Ok(rows.into_iter().map(|r| (r.name.clone(), r)).collect())
}

async fn report(
    db: &DatabaseConnection,
    index: usize,
    length: Duration,
    interval: &Interval,
    applied: u64,
) -> anyhow::Result<Row> {
    let secs = length.as_secs_f64();
    let ms = |q: f64| interval.latency.value_at_quantile(q) as f64 / 1000.0;
    let row = Row {
        accepted_s: interval.accepted as f64 / secs,
        applied_s: applied as f64 / secs,
        p99_ms: ms(0.99),
    };
    let total: i64 = sizes(db).await?.values().sum();
    let stats = stats(db).await?;
    let dead: Vec<String> =
        CHURN.iter().map(|t| stats.get(*t).map_or("-".into(), |s| s.dead.to_string())).collect();
    println!(
        "{index:>4} {} {:>10.0} {:>10.0} {:>8.1} {:>8.1} {:>8.1} {:>9.1}  {}{}",
        chrono::Utc::now().format("%H:%M:%S"),
        row.accepted_s,
        row.applied_s,
        ms(0.5),
        row.p99_ms,
        ms(1.0),
        total as f64 / 1_048_576.0,
        dead.join(" / "),
        if interval.failed > 0 {
            format!("  ({} posts failed: {:?})", interval.failed, interval.failures)
        } else {
            String::new()
        }
    );
    Ok(row)
}

async fn summary(
    db: &DatabaseConnection,
    args: &Args,
    rows: &[Row],
    snapshots: &[(u64, BTreeMap<String, i64>)],
    sent_all: Duration,
    total_applied: u64,
    failed: u64,
) -> anyhow::Result<bool> {
    // Steady state: from the middle snapshot to the last.
    let (mid_applied, mid) = &snapshots[snapshots.len() / 2];
    let (end_applied, end) = &snapshots[snapshots.len() - 1];
    let commands = end_applied.saturating_sub(*mid_applied).max(1) as f64;
    let stats = stats(db).await?;
    println!(
        "\nsent {} in {:.0} s ({:.0}/s), applied {total_applied}, {failed} posts failed",
        args.n,
        sent_all.as_secs_f64(),
        args.n as f64 / sent_all.as_secs_f64()
    );
    println!(
        "bytes per command at steady state (growth over the second half / {commands:.0} commands applied in it):"
    );
    println!(
        "{:<22} {:>10} {:>11} {:>12} {:>10} {:>11}",
        "table", "B/command", "size MB", "live rows", "dead rows", "autovacuums"
    );
    let mut per_command: Vec<(String, f64)> = end
        .iter()
        .map(|(t, b)| (t.clone(), (b - mid.get(t).copied().unwrap_or(0)) as f64 / commands))
        .collect();
    per_command.sort_by(|a, b| b.1.total_cmp(&a.1));
    let mut without_log = 0.0;
    for (table, bytes) in &per_command {
        if table != "event_log" {
            without_log += bytes;
        }
        let s = stats.get(table);
        if bytes.abs() < 0.5 && s.is_none_or(|s| s.live == 0 && s.dead == 0) {
            continue;
        }
        println!(
            "{table:<22} {bytes:>10.0} {:>11.1} {:>12} {:>10} {:>11}",
            end.get(table).copied().unwrap_or(0) as f64 / 1_048_576.0,
            s.map_or(0, |s| s.live),
            s.map_or(0, |s| s.dead),
            s.map_or(0, |s| s.autovacuums)
        );
    }
    let total: i64 = end.values().sum();
    println!(
        "database {:.0} MB in all, {:.0} B per applied command overall",
        total as f64 / 1_048_576.0,
        total as f64 / total_applied.max(1) as f64
    );

    let mark = |ok: bool| if ok { "PASS" } else { "MISS" };
    println!("targets:");
    if let (Some(first), Some(last)) = (rows.first(), rows.last()) {
        let ratio = last.applied_s / first.applied_s.max(1.0);
        println!(
            "  last interval's applied/s within 10% of the first's: {:.0} vs {:.0} ({:+.1}%)  {}",
            last.applied_s,
            first.applied_s,
            (ratio - 1.0) * 100.0,
            mark((0.9..=1.1).contains(&ratio))
        );
        let half = rows.len() / 2;
        let median = |rows: &[Row]| {
            let mut p99: Vec<f64> = rows.iter().map(|r| r.p99_ms).collect();
            p99.sort_by(f64::total_cmp);
            p99.get(p99.len() / 2).copied().unwrap_or(0.0)
        };
        let worst = |rows: &[Row]| rows.iter().map(|r| r.p99_ms).fold(0.0, f64::max);
        let (early, late) = rows.split_at(half.max(1).min(rows.len()));
        let (early_median, late_median) = (median(early), median(late));
        let (early_worst, late_worst) = (worst(early), worst(late));
        println!(
            "  p99 stable, no drift (second half's median <= 1.5 x first half's): {late_median:.1} vs {early_median:.1} ms  {}",
            mark(late_median <= 1.5 * early_median)
        );
        println!(
            "  p99 stable, spikes not growing (second half's worst <= 1.2 x first half's worst): {late_worst:.1} vs {early_worst:.1} ms  {}",
            mark(late_worst <= 1.2 * early_worst)
        );
        let above = late.iter().filter(|r| r.p99_ms > 2.0 * early_median).count();
        println!(
            "  (strictest reading, every second-half interval <= 2 x first half's median: worst {late_worst:.1} vs {early_median:.1} ms, {above} of {} intervals above  {})",
            late.len(),
            mark(above == 0)
        );
        let accepted: f64 = rows.iter().map(|r| r.accepted_s).sum::<f64>() / rows.len() as f64;
        println!("  (accepted/s averaged over the intervals: {accepted:.0})");
    }
    println!(
        "  < 2048 B per command at steady state, event log excluded: {without_log:.0} B  {}",
        mark(without_log < 2048.0)
    );
    let ok = failed == 0 && total_applied + failed >= args.n;
    if !ok {
        eprintln!("FAILED: {failed} posts failed, {total_applied} of {} applied", args.n);
    }
    Ok(ok)
}

#[derive(FromQueryResult)]
struct Sample {
    resource: Uuid,
    actor: Uuid,
    cursor: Uuid,
}

/// The plans of the API's activity queries (by resource, by actor, with a cursor) on the data
/// the run left: every partition by its index, the months above the cursor pruned.
async fn plans(db: &DatabaseConnection) -> anyhow::Result<()> {
    use sea_orm::ConnectionTrait;
    let sample = Sample::find_by_statement(sql(
        "SELECT resource_id AS resource, actor_id AS actor, id AS cursor FROM activity_log \
         WHERE resource_id IS NOT NULL AND actor_id IS NOT NULL ORDER BY id DESC OFFSET 1000 LIMIT 1",
        [],
    ))
    .one(db)
    .await?
    .context("no activity rows")?;
    let (resource, actor, cursor) = (sample.resource, sample.actor, sample.cursor);
    for query in [
        format!(
            "SELECT * FROM activity_log WHERE resource_type = 'episode' AND resource_id = '{resource}' \
             AND id < '{cursor}' ORDER BY id DESC LIMIT 21"
        ),
        format!(
            "SELECT * FROM activity_log WHERE actor_id = '{actor}' AND id < '{cursor}' \
             ORDER BY id DESC LIMIT 21"
        ),
        format!("SELECT * FROM activity_log WHERE id < '{cursor}' ORDER BY id DESC LIMIT 21"),
    ] {
        println!("\nEXPLAIN (ANALYZE, COSTS OFF) {query}");
        let rows = db
            .query_all_raw(sql(&format!("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) {query}"), []))
            .await?;
        for row in rows {
            println!("  {}", row.try_get::<String>("", "QUERY PLAN")?);
        }
    }
    Ok(())
}
