//! The fault-injection suite: `cargo run -p showrunner-tests --bin faults -- --duration 120`
//! (or `bash tests/faults/run.sh`).
//!
//! It starts a private PostgreSQL cluster and a private RabbitMQ node (temporary directory,
//! ports of their own: the machine's shared services are never touched), runs every role as a
//! process (`sr-role`, several episode and job workers), and drives a load of episode writes,
//! jobs and a resuming WebSocket client, while it kills workers with SIGKILL and starts new
//! ones, kills and restarts RabbitMQ and PostgreSQL, and restarts the api. Then it waits until
//! the system is quiet and checks that every accepted command was applied exactly once and in
//! the order accepted (each episode's title is its last accepted write's, its activity rows in
//! event log order are its commands in acceptance order), every event reached the activity log
//! once, the notifications are exactly the expected ones, every job finished and the parking
//! lot holds exactly the failed ones, and the WebSocket client saw every event once, in order.
//! The faults' order and victims and the load's choices come from a seed it prints (`--seed N`
//! repeats them). It prints what it did and what it counted, and exits 1 on any violation.
//! Everything it started is stopped and removed, also on failure.

mod cluster;
mod load;
mod services;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use sea_orm::{DatabaseConnection, FromQueryResult};
use showrunner_shared::auth::Role;
use showrunner_shared::db::sql;
use tokio::process::{Child, Command};
use uuid::Uuid;

use crate::load::{Api, JobEnd};
use crate::services::{Postgres, Rabbit};

const SECRET: &str = "faults-secret-faults-secret-faults";

struct Args {
    duration: Duration,
    clients: usize,
    keep: bool,
    /// Chooses the order of the faults, their victims and the load's choices; printed at the
    /// start, so a run can be repeated with `--seed N` (the timing still differs).
    seed: u64,
    /// A three-node RabbitMQ cluster and node faults (`cluster.rs`) instead of one node.
    cluster: bool,
}

fn args() -> anyhow::Result<Args> {
    let mut out = Args {
        duration: Duration::from_secs(120),
        clients: 6,
        keep: false,
        seed: fastrand::u64(..),
        cluster: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--duration" => {
                out.duration = Duration::from_secs(it.next().context("--duration N")?.parse()?)
            }
            "--clients" => out.clients = it.next().context("--clients N")?.parse()?,
            "--keep" => out.keep = true,
            "--seed" => out.seed = it.next().context("--seed N")?.parse()?,
            "--cluster" => out.cluster = true,
            other => anyhow::bail!(
                "unknown argument {other}; usage: faults [--duration SECS] [--clients N] [--seed N] [--keep] [--cluster]"
            ),
        }
    }
    Ok(out)
}

fn main() {
    let args = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("faults: {e:#}");
            std::process::exit(2);
        }
    };
    let dir = std::env::temp_dir().join(format!("srfaults-{}", std::process::id()));
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("faults: {e}");
            std::process::exit(1);
        }
    };
    let mut stack =
        Stack { dir: dir.clone(), pg: None, rabbit: None, cluster: None, procs: Vec::new() };
    // Interrupted (Ctrl-C, SIGTERM): the teardown below still stops the private services.
    let result = runtime.block_on(async {
        let interrupted = showrunner_shared::shutdown::on_signal();
        tokio::select! {
            result = suite(&args, &mut stack) => result,
            () = interrupted.cancelled() => Err(anyhow::anyhow!("interrupted")),
        }
    });
    runtime.block_on(stack.teardown());
    if args.keep {
        println!("kept {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    match result {
        Ok(0) => println!("faults: PASS"),
        Ok(n) => {
            println!("faults: FAIL ({n} violations)");
            std::process::exit(1);
        }
        Err(error) => {
            eprintln!("faults: {error:#}");
            std::process::exit(1);
        }
    }
}

struct Proc {
    role: &'static str,
    n: usize,
    child: Child,
}

struct Stack {
    dir: PathBuf,
    pg: Option<Postgres>,
    rabbit: Option<Rabbit>,
    cluster: Option<cluster::Cluster>,
    procs: Vec<Proc>,
}

impl Stack {
    async fn teardown(&mut self) {
        for p in &mut self.procs {
            let _ = p.child.start_kill();
        }
        for p in &mut self.procs {
            let _ = p.child.wait().await;
        }
        self.procs.clear();
        if let Some(mut rabbit) = self.rabbit.take() {
            tokio::task::spawn_blocking(move || rabbit.stop()).await.ok();
        }
        if let Some(mut cluster) = self.cluster.take() {
            cluster.stop_all();
        }
        if let Some(pg) = self.pg.take() {
            tokio::task::spawn_blocking(move || pg.stop("immediate")).await.ok();
        }
    }
}

/// The process environment of every role.
struct Env {
    vars: Vec<(String, String)>,
    bin: PathBuf,
    logs: PathBuf,
    counter: usize,
}

impl Env {
    fn spawn(&mut self, role: &'static str) -> anyhow::Result<Proc> {
        self.counter += 1;
        let log = std::fs::File::create(self.logs.join(format!("{role}-{}.log", self.counter)))?;
        let child = Command::new(&self.bin)
            .arg(role)
            .envs(self.vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("start {}", self.bin.display()))?;
        Ok(Proc { role, n: self.counter, child })
    }
}

fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let path = exe.with_file_name(name);
    anyhow::ensure!(
        path.exists(),
        "{} is missing: build it first (`cargo build -p showrunner-tests --bins`)",
        path.display()
    );
    Ok(path)
}

fn token(name: &str, role: Role) -> String {
    let claims = showrunner_shared::auth::Claims {
        sub: Uuid::new_v5(&Uuid::NAMESPACE_OID, format!("faults-user:{name}").as_bytes()),
        name: name.to_string(),
        email: format!("{name}@example.com"),
        role,
        exp: chrono::Utc::now().timestamp() + 24 * 3600,
    };
    showrunner_shared::auth::encode(&claims, SECRET.as_bytes())
}

/// What the suite did, in order.
struct Log {
    start: Instant,
    actions: Vec<(Duration, String)>,
}

impl Log {
    fn act(&mut self, what: String) {
        let at = self.start.elapsed();
        println!("[{:>6.1}s] {what}", at.as_secs_f64());
        self.actions.push((at, what));
    }
}

async fn suite(args: &Args, stack: &mut Stack) -> anyhow::Result<usize> {
    let bin = sibling("sr-role")?;
    std::fs::create_dir_all(&stack.dir)?;
    // PostgreSQL runs as `postgres` and must reach its directories.
    let _ = std::process::Command::new("chmod").arg("755").arg(&stack.dir).status();
    let logs = stack.dir.join("logs");
    std::fs::create_dir_all(&logs)?;
    let mut log = Log { start: Instant::now(), actions: Vec::new() };
    log.act(format!("seed {} (repeat this run's choices with --seed {})", args.seed, args.seed));
    let mut rng = fastrand::Rng::with_seed(args.seed);

    let dir = stack.dir.clone();
    let pg = tokio::task::spawn_blocking(move || Postgres::create(&dir)).await??;
    log.act(format!("private PostgreSQL up on 127.0.0.1:{}", pg.port));
    let database_url = pg.url("showrunner");
    stack.pg = Some(pg);
    // One node (`amqp.url`), or a cluster's nodes (`amqp.urls`, comma-separated).
    let (amqp_key, amqp_url) = if args.cluster {
        let cluster = cluster::Cluster::create(&stack.dir).await?;
        log.act(format!("private RabbitMQ cluster up: {}", cluster.describe()));
        let urls = cluster.urls();
        stack.cluster = Some(cluster);
        ("AMQP__URLS", urls)
    } else {
        let dir = stack.dir.clone();
        let rabbit = tokio::task::spawn_blocking(move || Rabbit::create(&dir)).await??;
        log.act(format!("private RabbitMQ node up on 127.0.0.1:{}", rabbit.port));
        let url = rabbit.url();
        stack.rabbit = Some(rabbit);
        ("AMQP__URL", url)
    };
    showrunner_migrations::migrate(&database_url).await?;
    log.act("migrations applied".into());

    let api_port = services::free_port()?;
    let vars: Vec<(String, String)> = [
        ("DATABASE__URL", database_url.as_str()),
        ("DATABASE__MAX_CONNECTIONS", "6"),
        (amqp_key, amqp_url.as_str()),
        ("AMQP__PARTITIONS", "8"),
        ("HTTP__ADDR", &format!("127.0.0.1:{api_port}")),
        ("AUTH__JWT_SECRET", SECRET),
        ("WORKERS__HEARTBEAT_SECS", "1"),
        ("WORKERS__HEARTBEAT_TTL_SECS", "4"),
        ("WORKERS__OUTBOX_SWEEP_AFTER_SECS", "2"),
        ("WORKERS__COMMAND_REPUBLISH_AFTER_SECS", "5"),
        ("JOBS__TIMEOUT_SECS", "5"),
        ("JOBS__INITIAL_DELAY_MS", "200"),
        ("JOBS__MAX_DELAY_MS", "2000"),
        ("SHUTDOWN__GRACE_SECS", "10"),
        ("LOG__FILTER", "warn,showrunner_workers=info"),
    ]
    .iter()
    .map(|(k, v)| (format!("SHOWRUNNER__{k}"), v.to_string()))
    .collect();
    let mut env = Env { vars, bin, logs: logs.clone(), counter: 0 };
    stack.procs.push(env.spawn("api")?);
    for role in ["episode-worker", "episode-worker", "activity-worker", "activity-worker"] {
        stack.procs.push(env.spawn(role)?);
    }
    for role in ["notification-worker", "job-worker", "job-worker"] {
        stack.procs.push(env.spawn(role)?);
    }
    let base = format!("http://127.0.0.1:{api_port}/api/v1");
    let api = Arc::new(Api::new(base.clone()));
    wait_ready(&api, Duration::from_secs(60)).await?;
    log.act(format!("api and 7 workers up ({} processes)", stack.procs.len()));

    // The load.
    let stop = Arc::new(AtomicBool::new(false));
    let give_up = Arc::new(AtomicBool::new(false));
    let mut clients = tokio::task::JoinSet::new();
    for i in 0..args.clients {
        clients.spawn(load::episode_client(
            api.clone(),
            token(&format!("writer{i}"), Role::Member),
            stop.clone(),
            give_up.clone(),
            rng.u64(..),
        ));
    }
    let jobs = tokio::spawn(load::job_client(
        api.clone(),
        token("jobber", Role::Member),
        stop.clone(),
        rng.u64(..),
    ));
    let ws_base = format!("ws://127.0.0.1:{api_port}/api/v1/ws");
    let watcher = token("watcher", Role::Admin);
    let ws =
        tokio::spawn(load::ws_client(ws_base.clone(), watcher.clone(), stop.clone(), rng.u64(..)));
    log.act(format!(
        "load started: {} episode writers, 1 job submitter, 1 WebSocket watcher",
        args.clients
    ));

    // The faults until the duration is spent: every six rounds each kind once (a worker kill
    // twice, the api's SIGTERM and SIGKILL once each), in an order the seed chooses.
    let mut faults: HashMap<&str, u32> = HashMap::new();
    let mut api_sigterm_exits = Vec::new();
    let end = Instant::now() + args.duration;
    let mut round = 0usize;
    let cluster_run = match stack.cluster.as_mut() {
        Some(cluster) => {
            let probe = token("prober", Role::Member);
            let (stop, give_up) = (stop.clone(), give_up.clone());
            let run = cluster::inject(
                cluster,
                api.clone(),
                probe,
                stop,
                give_up,
                &mut log,
                &mut faults,
                end,
            );
            Some(run.await?)
        }
        None => None,
    };
    let mut schedule = [0usize, 1, 2, 3, 4, 5];
    while cluster_run.is_none() && Instant::now() < end {
        tokio::time::sleep(Duration::from_secs(4)).await;
        if Instant::now() >= end {
            break;
        }
        if round.is_multiple_of(6) {
            rng.shuffle(&mut schedule);
        }
        let slot = schedule[round % 6];
        match slot {
            0 | 3 => {
                // SIGKILL a random worker, start a new one of its role.
                let workers: Vec<usize> =
                    (0..stack.procs.len()).filter(|&i| stack.procs[i].role != "api").collect();
                let victim = workers[rng.usize(0..workers.len())];
                let mut proc = stack.procs.swap_remove(victim);
                let _ = proc.child.start_kill();
                let _ = proc.child.wait().await;
                let role = proc.role;
                stack.procs.push(env.spawn(role)?);
                *faults.entry("kill -9 a worker, start a new one").or_default() += 1;
                log.act(format!("kill -9 {role} #{}; started a new {role}", proc.n));
            }
            1 => {
                let rabbit = stack.rabbit.take().context("no broker")?;
                let rabbit = tokio::task::spawn_blocking(move || -> anyhow::Result<Rabbit> {
                    let mut rabbit = rabbit;
                    rabbit.kill()?;
                    std::thread::sleep(Duration::from_secs(2));
                    rabbit.start()?;
                    Ok(rabbit)
                })
                .await??;
                stack.rabbit = Some(rabbit);
                *faults.entry("kill -9 RabbitMQ, restart it").or_default() += 1;
                log.act("kill -9 RabbitMQ; restarted it".into());
            }
            2 | 5 => {
                // The api: SIGTERM (a drain, which must exit 0) and SIGKILL in turn.
                let i = stack.procs.iter().position(|p| p.role == "api").context("no api")?;
                let mut proc = stack.procs.swap_remove(i);
                if slot == 2 {
                    let started = Instant::now();
                    let pid = proc.child.id().context("api pid")?;
                    let _ = std::process::Command::new("kill")
                        .args(["-TERM", &pid.to_string()])
                        .status();
                    let status =
                        tokio::time::timeout(Duration::from_secs(15), proc.child.wait()).await;
                    let took = started.elapsed();
                    let code = match status {
                        Ok(Ok(s)) => s.code(),
                        _ => {
                            let _ = proc.child.start_kill();
                            None
                        }
                    };
                    api_sigterm_exits.push((code, took));
                    *faults.entry("SIGTERM the api, start a new one").or_default() += 1;
                    log.act(format!(
                        "SIGTERM api: exit {code:?} after {:.1}s; started a new api",
                        took.as_secs_f64()
                    ));
                } else {
                    let _ = proc.child.start_kill();
                    let _ = proc.child.wait().await;
                    *faults.entry("kill -9 the api, start a new one").or_default() += 1;
                    log.act("kill -9 api; started a new api".into());
                }
                stack.procs.push(env.spawn("api")?);
            }
            _ => {
                let pg = stack.pg.take().context("no database")?;
                let pg = tokio::task::spawn_blocking(move || -> anyhow::Result<Postgres> {
                    pg.stop("immediate")?;
                    std::thread::sleep(Duration::from_secs(2));
                    pg.start()?;
                    Ok(pg)
                })
                .await??;
                stack.pg = Some(pg);
                *faults.entry("stop PostgreSQL (immediate), restart it").or_default() += 1;
                log.act("PostgreSQL stopped (-m immediate); restarted it".into());
            }
        }
        round += 1;
    }

    // Stop the load; writes in hand get 60 s more to be accepted.
    stop.store(true, Ordering::Relaxed);
    log.act("load stopped; finishing the writes in hand".into());
    let giver = {
        let give_up = give_up.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(60)).await;
            give_up.store(true, Ordering::Relaxed);
        })
    };
    let mut reports = Vec::new();
    while let Some(r) = clients.join_next().await {
        reports.push(r?);
    }
    let mut cluster_violations = Vec::new();
    if let Some(run) = cluster_run {
        let (probe, findings) = run.finish().await?;
        reports.push(probe);
        cluster_violations = findings;
    }
    giver.abort();
    let jobs = jobs.await?;
    let mut ws = ws.await?;
    // Every role still has a live process (a crash of one would be a finding too).
    let mut crashed = Vec::new();
    for p in &mut stack.procs {
        if let Ok(Some(status)) = p.child.try_wait() {
            crashed.push(format!("{} #{} exited on its own: {status}", p.role, p.n));
        }
    }
    let db = sea_orm::Database::connect(&database_url).await?;
    let quiet = wait_quiet(&db, &jobs, Duration::from_secs(120)).await;
    log.act(format!("system quiet: {quiet}"));
    load::ws_catch_up(ws_base, watcher, &mut ws, Duration::from_secs(3)).await;

    // SIGTERM every process: each must drain and exit 0 within the grace.
    let mut drain_failures = Vec::new();
    for p in &mut stack.procs {
        if let Some(pid) = p.child.id() {
            let _ = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
        }
    }
    for p in &mut stack.procs {
        let failure = match tokio::time::timeout(Duration::from_secs(15), p.child.wait()).await {
            Ok(Ok(s)) if s.success() => None,
            Ok(Ok(s)) => Some(format!("{s}")),
            _ => Some("still running 15 s after SIGTERM".to_string()),
        };
        if let Some(failure) = failure {
            let file = logs.join(format!("{}-{}.log", p.role, p.n));
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(12).collect();
            println!("== {} #{} did not drain ({failure}); the end of its log:", p.role, p.n);
            for line in tail.iter().rev() {
                println!("  {line}");
            }
            drain_failures.push(format!("{} #{}: {failure}", p.role, p.n));
        }
    }
    log.act(format!("SIGTERM to all {} processes", stack.procs.len()));
    stack.procs.clear();

    let parked = parked_jobs(amqp_url.split(',').next().unwrap_or_default()).await;
    let unconfirmed = unconfirmed_parks(&logs);
    log.act(format!("seed was {}", args.seed));
    let violations = check(
        &db,
        &reports,
        &jobs,
        &ws,
        &crashed,
        &drain_failures,
        &api_sigterm_exits,
        &log,
        &faults,
        quiet,
        parked,
        &unconfirmed,
    )
    .await?;
    if !cluster_violations.is_empty() {
        println!("\n== cluster violations: {}", cluster_violations.len());
        for v in &cluster_violations {
            println!("  - {v}");
        }
    }
    let violations = violations + cluster_violations.len();
    if violations > 0 {
        print_log_tails(&logs);
    }
    Ok(violations)
}

/// The job id of every copy in `showrunner.jobs.parked`, read off the queue (the broker is the
/// suite's own, and this is the end of the run). `None` when the queue cannot be read.
async fn parked_jobs(amqp_url: &str) -> Option<Vec<Uuid>> {
    use lapin::options::BasicGetOptions;
    let queue = showrunner_shared::broker::topology::parked_queue(
        showrunner_shared::broker::topology::JOBS_QUEUE,
    );
    let conn = showrunner_shared::broker::connect(amqp_url, "faults").await.ok()?;
    let channel = conn.create_channel().await.ok()?;
    let mut ids = Vec::new();
    while let Some(message) =
        channel.basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true }).await.ok()?
    {
        let request: serde_json::Value =
            serde_json::from_slice(&message.delivery.data).unwrap_or_default();
        let id = request["jobId"].as_str().and_then(|s| Uuid::parse_str(s).ok());
        ids.push(id.unwrap_or_default());
    }
    let _ = conn.close(200, "counted".into()).await;
    Some(ids)
}

async fn wait_ready(api: &Api, limit: Duration) -> anyhow::Result<()> {
    let url = api.base.replace("/api/v1", "/ready");
    let start = Instant::now();
    loop {
        if api.http.get(&url).send().await.is_ok_and(|r| r.status().is_success()) {
            return Ok(());
        }
        anyhow::ensure!(start.elapsed() < limit, "the api was not ready within {limit:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[derive(FromQueryResult)]
struct N {
    n: i64,
}

async fn count(db: &DatabaseConnection, query: &str) -> i64 {
    N::find_by_statement(sql(&format!("SELECT ({query})::bigint AS n"), []))
        .one(db)
        .await
        .ok()
        .flatten()
        .map_or(-1, |r| r.n)
}

/// Waits until nothing is pending: no pending command, every event shipped (and none left in
/// an older version's outbox), every job finished, and the activity log and event log no
/// longer growing. `true` if it got there.
async fn wait_quiet(db: &DatabaseConnection, jobs: &load::JobReport, limit: Duration) -> bool {
    let start = Instant::now();
    let mut last = (-1, -1);
    let mut stable_since = Instant::now();
    let _ = jobs;
    while start.elapsed() < limit {
        let pending = count(db, "SELECT count(*) FROM commands WHERE status = 'pending'").await;
        let outbox = count(db, "SELECT count(*) FROM outbox").await
            + count(db, "SELECT count(*) FROM event_log WHERE seq > (SELECT published_seq FROM event_log_shipper WHERE id = 1)").await;
        let unfinished = count(
            db,
            "SELECT count(*) FROM jobs WHERE status NOT IN ('succeeded', 'failed', 'cancelled')",
        )
        .await;
        let sizes = (
            count(db, "SELECT count(*) FROM activity_log").await,
            count(db, "SELECT count(*) FROM event_log").await,
        );
        if sizes != last {
            last = sizes;
            stable_since = Instant::now();
        }
        if pending == 0
            && outbox == 0
            && unfinished == 0
            && stable_since.elapsed() > Duration::from_secs(4)
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    false
}

#[derive(FromQueryResult)]
struct CommandRow {
    id: Uuid,
    status: String,
    kind: String,
}

#[derive(FromQueryResult)]
struct EpisodeRow {
    id: Uuid,
    version: i64,
    deleted: bool,
    title: String,
}

/// An episode's activity row: which command made it, in event log order.
#[derive(FromQueryResult)]
struct Applied {
    episode: Uuid,
    command: Uuid,
}

#[derive(FromQueryResult)]
struct IdCount {
    id: Option<Uuid>,
    label: String,
    n: i64,
}

#[derive(FromQueryResult)]
struct JobRow {
    id: Uuid,
    status: String,
}

#[derive(FromQueryResult)]
struct Seq {
    id: Uuid,
    routing_key: String,
}

#[allow(clippy::too_many_arguments)]
async fn check(
    db: &DatabaseConnection,
    reports: &[load::ClientReport],
    jobs: &load::JobReport,
    ws: &load::WsReport,
    crashed: &[String],
    drain_failures: &[String],
    api_sigterm: &[(Option<i32>, Duration)],
    log: &Log,
    faults: &HashMap<&str, u32>,
    quiet: bool,
    parked: Option<Vec<Uuid>>,
    unconfirmed: &HashSet<Uuid>,
) -> anyhow::Result<usize> {
    let mut violations: Vec<String> = Vec::new();
    let mut counts: Vec<(String, String)> = Vec::new();
    let mut note = |k: &str, v: String| counts.push((k.to_string(), v));

    if !quiet {
        violations.push("the system did not become quiet within 120 s".into());
    }
    violations.extend(crashed.iter().cloned());
    violations.extend(drain_failures.iter().map(|d| format!("drain at the end: {d}")));
    for (code, took) in api_sigterm {
        if *code != Some(0) {
            violations.push(format!("api drain during the load: exit {code:?} after {took:?}"));
        }
    }

    // Commands.
    let accepted: Vec<&load::Accepted> = reports.iter().flat_map(|r| &r.accepted).collect();
    for r in reports {
        violations.extend(r.unexpected.iter().map(|u| format!("unexpected answer: {u}")));
    }
    let attempts: u64 = reports.iter().map(|r| r.attempts).sum();
    let retries: u64 = reports.iter().map(|r| r.retries).sum();
    let abandoned: u64 = reports.iter().map(|r| r.abandoned).sum();
    note("episode writes sent (with retries)", attempts.to_string());
    note("retries with the same Idempotency-Key", retries.to_string());
    note("writes accepted (2xx)", accepted.len().to_string());
    note("writes never accepted (gave up)", abandoned.to_string());
    let command_rows = CommandRow::find_by_statement(sql(
        "SELECT id, status, kind FROM commands WHERE resource_type = 'episode'",
        [],
    ))
    .all(db)
    .await?;
    let rows: HashMap<Uuid, String> =
        command_rows.iter().map(|r| (r.id, r.status.clone())).collect();
    let accepted_ids: HashSet<Uuid> = accepted.iter().map(|a| a.command_id).collect();
    if accepted_ids.len() != accepted.len() {
        violations.push(format!(
            "{} accepted writes share a command id",
            accepted.len() - accepted_ids.len()
        ));
    }
    let mut by_status: HashMap<&str, usize> = HashMap::new();
    for a in &accepted {
        let status = rows.get(&a.command_id).map_or("missing", String::as_str);
        *by_status.entry(status).or_default() += 1;
        if status != "applied" {
            violations.push(format!("accepted {} {} is {status}", a.kind, a.command_id));
        }
    }
    note("accepted commands by status", format!("{by_status:?}"));
    let extra = rows.keys().filter(|id| !accepted_ids.contains(id)).count();
    note("commands recorded but never accepted (a write the client gave up on)", extra.to_string());
    if extra as u64 > abandoned {
        violations.push(format!(
            "{extra} commands exist that no client was told were accepted (only {abandoned} writes were given up)"
        ));
    }

    // Episodes: version = 1 + accepted updates (each changes the title) + 1 if deleted, and
    // the title is the last accepted write's (one client writes an episode, one write at a
    // time: its list is the acceptance order).
    let mut expected: HashMap<Uuid, (i64, bool)> = HashMap::new();
    let mut titles: HashMap<Uuid, &str> = HashMap::new();
    for a in &accepted {
        if let Some(title) = &a.title {
            titles.insert(a.episode_id, title);
        }
        let e = expected.entry(a.episode_id).or_insert((0, false));
        match a.kind {
            "create" => e.0 += 1,
            "update" => e.0 += 1,
            _ => {
                // A soft delete is a change too: it bumps the version.
                e.0 += 1;
                e.1 = true;
            }
        }
    }
    let episode_rows = EpisodeRow::find_by_statement(sql(
        "SELECT id, version, deleted_at IS NOT NULL AS deleted, title FROM episodes",
        [],
    ))
    .all(db)
    .await?;
    let episodes: HashMap<Uuid, (i64, bool)> =
        episode_rows.iter().map(|r| (r.id, (r.version, r.deleted))).collect();
    let mut wrong_titles = 0;
    for row in &episode_rows {
        if let Some(want) = titles.get(&row.id)
            && row.title != *want
        {
            wrong_titles += 1;
            if wrong_titles <= 10 {
                violations.push(format!(
                    "episode {}: title {:?}, but the last accepted write set {want:?}",
                    row.id, row.title
                ));
            }
        }
    }
    if wrong_titles > 10 {
        violations.push(format!("... {} more episodes with the wrong title", wrong_titles - 10));
    }
    note("episodes whose title is not the last accepted write's", wrong_titles.to_string());
    let mut wrong = 0;
    for (id, want) in &expected {
        match episodes.get(id) {
            Some(got) if got == want => {}
            got => {
                wrong += 1;
                if wrong <= 10 {
                    violations.push(format!(
                        "episode {id}: want (version, deleted) {want:?}, got {got:?}"
                    ));
                }
            }
        }
    }
    if wrong > 10 {
        violations.push(format!("... {} more episodes in the wrong state", wrong - 10));
    }
    let strays = episodes.keys().filter(|id| !expected.contains_key(id)).count();
    note(
        "episodes (expected / stored / stray)",
        format!("{} / {} / {strays}", expected.len(), episodes.len()),
    );
    if strays as u64 > abandoned {
        violations.push(format!("{strays} episodes exist that no accepted create made"));
    }

    // Events: one per applied command, each in the activity log exactly once.
    let per_command = IdCount::find_by_statement(sql(
        "SELECT correlation_id AS id, 'x' AS label, count(*) AS n FROM activity_log \
         WHERE resource_type = 'episode' AND correlation_id IS NOT NULL GROUP BY correlation_id",
        [],
    ))
    .all(db)
    .await?;
    let per_command: HashMap<Uuid, i64> =
        per_command.into_iter().filter_map(|r| Some((r.id?, r.n))).collect();
    let mut missing_activity = 0;
    for a in &accepted {
        match per_command.get(&a.command_id).copied().unwrap_or(0) {
            1 => {}
            0 => missing_activity += 1,
            n => violations.push(format!("command {} has {n} activity rows", a.command_id)),
        }
    }
    if missing_activity > 0 {
        violations.push(format!("{missing_activity} accepted commands have no activity row"));
    }
    // Order: each episode's activity rows, by event log sequence, are its accepted commands in
    // the order they were accepted.
    let applied = Applied::find_by_statement(sql(
        "SELECT a.resource_id AS episode, a.correlation_id AS command FROM activity_log a \
         JOIN event_log e ON e.id = a.id \
         WHERE a.resource_type = 'episode' AND a.correlation_id IS NOT NULL ORDER BY e.seq",
        [],
    ))
    .all(db)
    .await?;
    let mut logged_order: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
    for row in &applied {
        logged_order.entry(row.episode).or_default().push(row.command);
    }
    let mut accepted_order: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
    for a in &accepted {
        accepted_order.entry(a.episode_id).or_default().push(a.command_id);
    }
    let mut misordered = 0;
    for (episode, want) in &accepted_order {
        let got = logged_order.get(episode).cloned().unwrap_or_default();
        if got != *want {
            misordered += 1;
            if misordered <= 10 {
                violations.push(format!(
                    "episode {episode}: activity in log order {got:?}, accepted in order {want:?}"
                ));
            }
        }
    }
    note(
        "episodes whose activity (by event log seq) is not in acceptance order",
        misordered.to_string(),
    );
    let logged: Vec<Seq> =
        Seq::find_by_statement(sql("SELECT id, routing_key FROM event_log ORDER BY seq", []))
            .all(db)
            .await?;
    let activity_ids: HashSet<Uuid> = IdCount::find_by_statement(sql(
        "SELECT id, event AS label, 1::bigint AS n FROM activity_log",
        [],
    ))
    .all(db)
    .await?
    .into_iter()
    .filter_map(|r| r.id)
    .collect();
    let recordable = logged
        .iter()
        .filter(|s| s.routing_key.starts_with("episode.") && !s.routing_key.ends_with(".presence"))
        .collect::<Vec<_>>();
    let not_recorded = recordable.iter().filter(|s| !activity_ids.contains(&s.id)).count();
    note(
        "episode events in the event log / in the activity log",
        format!("{} / {}", recordable.len(), recordable.len() - not_recorded),
    );
    if not_recorded > 0 {
        violations.push(format!("{not_recorded} episode events never reached the activity log"));
    }

    // Notifications: one per created and per deleted episode, one per failed job.
    let notified = IdCount::find_by_statement(sql(
        "SELECT resource_id AS id, kind AS label, count(*) AS n FROM notifications GROUP BY resource_id, kind",
        [],
    ))
    .all(db)
    .await?;
    let notified: HashMap<(Uuid, String), i64> =
        notified.into_iter().filter_map(|r| Some(((r.id?, r.label), r.n))).collect();
    let mut want_notes: Vec<(Uuid, &str)> = Vec::new();
    for a in &accepted {
        match a.kind {
            "create" => want_notes.push((a.episode_id, "episode_created")),
            "delete" => want_notes.push((a.episode_id, "episode_deleted")),
            _ => {}
        }
    }

    // Jobs.
    let job_rows: HashMap<Uuid, String> =
        JobRow::find_by_statement(sql("SELECT id, status FROM jobs", []))
            .all(db)
            .await?
            .into_iter()
            .map(|r| (r.id, r.status))
            .collect();
    let mut job_status: HashMap<String, usize> = HashMap::new();
    for status in job_rows.values() {
        *job_status.entry(status.clone()).or_default() += 1;
    }
    note(
        "jobs accepted / not accepted (answer lost)",
        format!("{} / {}", jobs.accepted.len(), jobs.not_accepted),
    );
    note("jobs by status (all rows)", format!("{job_status:?}"));
    // A job whose POST was answered 503 (its request not confirmed) is forgotten by the api: its
    // row is deleted, or, when its `job_queued` was shipped already, it ends `cancelled` so
    // that whoever heard it queued hears it end. Only a job that was not accepted may end so.
    let mut refused_and_cancelled = 0;
    for (id, status) in &job_rows {
        if status == "cancelled" && !jobs.accepted.contains_key(id) {
            refused_and_cancelled += 1;
        } else if status != "succeeded" && status != "failed" {
            violations.push(format!("job {id} is still {status}"));
        }
        if status == "failed" {
            want_notes.push((*id, "job_failed"));
        }
    }
    note(
        "jobs refused with 503 and ended cancelled by the api",
        format!("{refused_and_cancelled}"),
    );
    for (id, end) in &jobs.accepted {
        let want = match end {
            JobEnd::Succeeded => "succeeded",
            JobEnd::Failed => "failed",
        };
        match job_rows.get(id) {
            Some(s) if s == want => {}
            other => violations.push(format!("job {id}: want {want}, got {other:?}")),
        }
    }
    // Every failed job is in the parking lot once, and nothing else is.
    let failed: HashSet<Uuid> =
        job_rows.iter().filter(|(_, s)| *s == "failed").map(|(id, _)| *id).collect();
    match &parked {
        Some(copies) => {
            let distinct: HashSet<Uuid> = copies.iter().copied().collect();
            note(
                "failed jobs / copies in showrunner.jobs.parked (distinct)",
                format!("{} / {} ({})", failed.len(), copies.len(), distinct.len()),
            );
            let unparked = failed.difference(&distinct).count();
            let stray = distinct.difference(&failed).count();
            // A second copy is expected of a job whose first copy's publish ended without the
            // broker's answer (its channel died with its node): the worker said so with the
            // job's id. Any other second copy is a violation.
            let mut seen = HashSet::new();
            let (explained, again): (Vec<Uuid>, Vec<Uuid>) = copies
                .iter()
                .filter(|id| !seen.insert(**id))
                .partition(|id| unconfirmed.contains(*id));
            note(
                "second copies after a publish left unconfirmed (the worker logged it)",
                format!("{}", explained.len()),
            );
            let twice = again.len();
            if unparked + stray + twice > 0 {
                // The jobs themselves, to look for in the kept logs (`--keep`).
                let again: Vec<String> = again.iter().map(Uuid::to_string).collect();
                let missing: Vec<String> =
                    failed.difference(&distinct).map(Uuid::to_string).collect();
                violations.push(format!(
                    "parking lot: {unparked} failed jobs missing {missing:?}, {stray} jobs that \
                     did not fail, {twice} copies more than once {again:?}"
                ));
            }
        }
        None => violations.push("showrunner.jobs.parked could not be read".into()),
    }
    let completions = IdCount::find_by_statement(sql(
        "SELECT resource_id AS id, event AS label, count(*) AS n FROM activity_log \
         WHERE event IN ('job_completed', 'job_failed', 'job_cancelled') \
         GROUP BY resource_id, event",
        [],
    ))
    .all(db)
    .await?;
    let completions: HashMap<(Uuid, String), i64> =
        completions.into_iter().filter_map(|r| Some(((r.id?, r.label), r.n))).collect();
    for (id, status) in &job_rows {
        let event = match status.as_str() {
            "succeeded" => "job_completed",
            "cancelled" => "job_cancelled",
            _ => "job_failed",
        };
        let n = completions.get(&(*id, event.to_string())).copied().unwrap_or(0);
        if n != 1 {
            violations.push(format!("job {id} ({status}) has {n} {event} activity rows"));
        }
    }
    let mut bad_notes = 0;
    for (id, kind) in &want_notes {
        let n = notified.get(&(*id, kind.to_string())).copied().unwrap_or(0);
        if n != 1 {
            bad_notes += 1;
            if bad_notes <= 10 {
                violations.push(format!("{kind} notification for {id}: {n} rows, want 1"));
            }
        }
    }
    // Exactly these and nothing else: plus what the commands no client was told about made
    // (a write given up on whose command was applied after all), and a rejection's notice.
    let unaccepted: Vec<&CommandRow> =
        command_rows.iter().filter(|r| !accepted_ids.contains(&r.id)).collect();
    let more = unaccepted
        .iter()
        .filter(|r| {
            (r.status == "applied" && (r.kind == "create_episode" || r.kind == "delete_episode"))
                || r.status == "rejected"
        })
        .count()
        + command_rows
            .iter()
            .filter(|r| accepted_ids.contains(&r.id) && r.status == "rejected")
            .count();
    let stored = count(db, "SELECT count(*) FROM notifications").await;
    let expected_notes = (want_notes.len() + more) as i64;
    note("notifications expected / stored", format!("{expected_notes} / {stored}"));
    if stored != expected_notes {
        violations.push(format!("{stored} notifications stored, {expected_notes} expected"));
    }

    // The WebSocket client: every episode event after its first one, each once, in log order.
    let received: HashMap<Uuid, usize> = ws.received.iter().fold(HashMap::new(), |mut m, id| {
        *m.entry(*id).or_default() += 1;
        m
    });
    let dupes = received.values().filter(|&&n| n > 1).count();
    let watched: Vec<Uuid> = logged
        .iter()
        .filter(|s| {
            s.routing_key.starts_with("episode.")
                && (s.routing_key.ends_with(".created")
                    || s.routing_key.ends_with(".updated")
                    || s.routing_key.ends_with(".deleted"))
        })
        .map(|s| s.id)
        .collect();
    let first = ws.received.first().and_then(|id| watched.iter().position(|w| w == id));
    let missed = match first {
        Some(i) => watched[i..].iter().filter(|id| !received.contains_key(id)).count(),
        None => watched.len(),
    };
    // Each watched event's place in the log; a pair received in another order (or an event
    // the log does not hold) is out of order.
    let pos: HashMap<Uuid, usize> = watched.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    let disordered = || ws.received.windows(2).filter(|w| pos.get(&w[0]) >= pos.get(&w[1]));
    let out_of_order = disordered().count();
    note(
        "WebSocket: connections / resumes (retried: log unreadable) / events seen / missed / twice / out of order",
        format!(
            "{} / {} ({}) / {} / {missed} / {dupes} / {out_of_order}",
            ws.connects,
            ws.resumes,
            ws.retried,
            ws.received.len()
        ),
    );
    if missed > 0 {
        let first = first.unwrap_or(0);
        let examples: Vec<String> = watched[first..]
            .iter()
            .filter(|id| !received.contains_key(id))
            .take(5)
            .map(|id| id.to_string())
            .collect();
        violations.push(format!("the WebSocket client missed {missed} events, e.g. {examples:?}"));
    }
    if dupes > 0 {
        violations.push(format!("the WebSocket client saw {dupes} events more than once"));
    }
    if out_of_order > 0 {
        // The pairs, with their places in the log (None: not an event the log holds).
        let pairs: Vec<String> = disordered()
            .take(5)
            .map(|w| {
                format!("{} ({:?}) then {} ({:?})", w[0], pos.get(&w[0]), w[1], pos.get(&w[1]))
            })
            .collect();
        violations.push(format!(
            "the WebSocket client saw {out_of_order} events out of order: {pairs:?}"
        ));
    }
    violations.extend(ws.errors.iter().map(|e| format!("WebSocket: {e}")));

    // Nothing poisoned on the way.
    note("outbox rows left", count(db, "SELECT count(*) FROM outbox").await.to_string());
    let unshipped = count(db, "SELECT count(*) FROM event_log WHERE seq > (SELECT published_seq FROM event_log_shipper WHERE id = 1)").await;
    note("event log rows not shipped", unshipped.to_string());
    if unshipped != 0 {
        violations.push(format!("{unshipped} events in the event log were never shipped"));
    }
    // Numbers have holes where a producer rolled back (a batch the database failed under, say):
    // counted, not a violation; the WebSocket client's missed, twice and out-of-order counts
    // above say whether the shipper passed them correctly.
    let holes =
        count(db, "SELECT COALESCE(max(seq) - min(seq) + 1 - count(seq), 0) FROM event_log").await;
    note("holes in the event log's numbers (producers that rolled back)", holes.to_string());

    println!("\n== what the suite did ({:.0} s)", log.start.elapsed().as_secs_f64());
    let mut kinds: Vec<_> = faults.iter().collect();
    kinds.sort();
    for (what, n) in kinds {
        println!("  {n:>3} × {what}");
    }
    let _ = &log.actions;
    println!("\n== what it counted");
    for (k, v) in &counts {
        println!("  {k:<75} {v}");
    }
    println!("\n== violations: {}", violations.len());
    for v in violations.iter().take(50) {
        println!("  - {v}");
    }
    Ok(violations.len())
}

/// The jobs whose parked copy a job worker published without the broker's answer (see
/// `showrunner_workers::jobs::consumer::PARKED_COPY_UNCONFIRMED`), from the processes' logs.
fn unconfirmed_parks(logs: &Path) -> HashSet<Uuid> {
    use showrunner_workers::jobs::consumer::PARKED_COPY_UNCONFIRMED;
    let mut jobs = HashSet::new();
    let Ok(entries) = std::fs::read_dir(logs) else { return jobs };
    for entry in entries.flatten() {
        let Ok(text) = std::fs::read_to_string(entry.path()) else { continue };
        for line in text.lines().filter(|l| l.contains(PARKED_COPY_UNCONFIRMED)) {
            // The first id after the `job_id` field's name (a span's trace id comes before it).
            let Some((_, after)) = line.split_once("job_id") else { continue };
            let id = after
                .split(|c: char| !(c.is_ascii_hexdigit() || c == '-'))
                .find_map(|word| Uuid::try_parse(word).ok().filter(|_| word.len() == 36));
            jobs.extend(id);
        }
    }
    jobs
}

fn print_log_tails(logs: &Path) {
    let Ok(entries) = std::fs::read_dir(logs) else { return };
    let mut errors = 0;
    for entry in entries.flatten() {
        let Ok(text) = std::fs::read_to_string(entry.path()) else { continue };
        for line in text.lines().filter(|l| l.contains("ERROR") || l.contains("panicked")) {
            if errors < 30 {
                println!("  {}: {line}", entry.file_name().to_string_lossy());
            }
            errors += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unconfirmed_park_is_read_by_its_job_id_not_the_span_before_it() {
        use showrunner_workers::jobs::consumer::PARKED_COPY_UNCONFIRMED;
        let dir = std::env::temp_dir().join(format!("srfaults-parse-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let job = "01a24122-2a52-71e3-a710-6507bae2cab7";
        let other = "01a24122-2a52-71e3-a710-6507bae2cab8";
        let text = format!(
            "2026-12-04T12:57:01Z \u{1b}[33m WARN\u{1b}[0m job{{trace_id=20068b1461e87c4a491c60f79b5aea05}}: \
             showrunner_workers::jobs::consumer: {PARKED_COPY_UNCONFIRMED} \u{1b}[3mjob_id\u{1b}[0m\u{1b}[2m=\u{1b}[0m{job} \
             \u{1b}[3merror\u{1b}[0m=consumer ended\n\
             {{\"level\":\"WARN\",\"message\":\"job failed for good, parked\",\"job_id\":\"{other}\"}}\n"
        );
        std::fs::write(dir.join("job-worker-7.log"), text).expect("write");
        let found = unconfirmed_parks(&dir);
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(found, HashSet::from([Uuid::parse_str(job).expect("uuid")]));
    }
}
