//! `bench-pipeline`: throughput and latency of Showrunner's whole write path on this machine.
//!
//! One in-process stack (api, one episode worker on 16 partitions, one activity and one
//! notification worker, with their own database and vhost), in three phases:
//! - raw lapin ceiling, first, while the broker is quiet: N bare persistent round trips through a
//!   quorum queue in the app's vhost (confirms with 1,000 in flight, prefetch 500, one `multiple`
//!   ack per 50);
//! - full speed: N `POST /api/v1/episodes` from `--concurrency` clients back to back. accepted/s =
//!   N / (first send -> last 202); applied/s = N / (first send -> last `episode.*.created` event,
//!   seen by a consumer of our own on `showrunner.live`, as the log shipper publishes it);
//!   latency = event received - 202;
//! - fixed rate: N more posts at `--rate`/s on an open-loop schedule, same figures.
//!
//! It then checks that exactly 2N episodes, 2N activity rows, 2N notifications and 4N event log
//! rows exist: nothing was lost or doubled. Exits non-zero
//! if something failed (not for a missed target). Run it with:
//!
//!     cargo run --release -p showrunner-tests --bin bench-pipeline -- [--n 20000] [--rate 1000] [--concurrency 64]

use std::collections::{HashMap, VecDeque};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Confirmation};
use serde_json::Value;
use showrunner_shared::auth::Role;
use showrunner_shared::broker::topology::LIVE_EXCHANGE;
use showrunner_tests::{Options, TestApp};
use tokio::runtime::Builder;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing_subscriber::{EnvFilter, fmt};
use uuid::Uuid;

const USAGE: &str = "usage: bench-pipeline [--n 20000] [--rate 1000] [--concurrency 64] \
                     [--partitions 16] [--set section.key=value]...";
const DEADLINE: Duration = Duration::from_secs(120);
const MAX_IN_FLIGHT: usize = 2000;
const RAW_QUEUE: &str = "bench.raw";

/// When each `episode.*.created` event arrived, by its `correlationId` (the command id).
type Seen = Arc<Mutex<HashMap<Uuid, Instant>>>;
/// One accepted command: (POST sent, 202 received, command id).
type Sent = (Instant, Instant, Uuid);
type Posts = Vec<anyhow::Result<Sent>>;

/// What went wrong (not a missed target).
static FAILURES: Mutex<Vec<String>> = Mutex::new(Vec::new());

#[derive(Clone)]
struct Poster {
    http: reqwest::Client,
    url: Arc<str>,
    token: Arc<str>,
}

impl Poster {
    async fn post(&self, i: usize) -> anyhow::Result<Sent> {
        let body = serde_json::json!({ "title": format!("Bench {i}"), "categories": ["bench"] });
        let sent = Instant::now();
        let request = self.http.post(&*self.url).bearer_auth(&*self.token);
        let response = request.json(&body).send().await?;
        let answered = Instant::now();
        let status = response.status();
        if status != reqwest::StatusCode::ACCEPTED {
            let text = response.text().await.unwrap_or_default();
            bail!("POST answered {status}: {text}");
        }
        let body: Value = response.json().await?;
        let id = body["commandId"].as_str().and_then(|s| s.parse().ok());
        Ok((sent, answered, id.context("no commandId in the 202 body")?))
    }
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(error) => {
            eprintln!("bench-pipeline: {error:#}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    // RUST_LOG wins when set; otherwise warnings only (the stack logs at info per command).
    let filter = EnvFilter::new(std::env::var("RUST_LOG").as_deref().unwrap_or("warn"));
    let _ = fmt().with_env_filter(filter).try_init();
    let runtime = Builder::new_multi_thread().enable_all().build();
    runtime.expect("a tokio runtime").block_on(async move {
        // One bench user sends thousands of requests per second: lift its rate limit. Every
        // request comes from 127.0.0.1, and the fixed-rate phase keeps more than the api's 256
        // connections per address open once latency grows: lift that cap too (0 = none).
        let lifted = [
            ("limits.requests_per_sec", "1000000"),
            ("limits.request_burst", "1000000"),
            ("http.max_connections_per_address", "0"),
        ];
        let mut extra = lifted.map(|(k, v)| (k.to_string(), v.to_string())).to_vec();
        extra.extend(args.settings.iter().cloned());
        let options = Options { partitions: args.partitions, extra, ..Default::default() };
        let app = TestApp::spawn_with(options).await;
        if let Err(error) = run(&app, args.load).await {
            fail(format!("{error:#}"));
        }
        app.stop().await;
        let failures = FAILURES.lock().map(|f| f.clone()).unwrap_or_default();
        for failure in &failures {
            eprintln!("FAILED: {failure}");
        }
        ExitCode::from(u8::from(!failures.is_empty()))
    })
}

struct Args {
    /// `[n, rate, concurrency]`.
    load: [usize; 3],
    partitions: u16,
    /// Settings of the stack under test (`--set amqp.queue_type=classic`), to compare choices.
    settings: Vec<(String, String)>,
}

/// The options, from `--name value` pairs.
fn parse_args() -> anyhow::Result<Args> {
    let mut parsed = Args { load: [20_000, 1000, 64], partitions: 16, settings: Vec::new() };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let Some(value) = args.next() else { bail!("{flag} needs a value") };
        let names = ["--n", "--rate", "--concurrency"];
        if let Some(slot) = names.iter().position(|f| *f == flag) {
            match value.parse() {
                Ok(v) if v > 0 => parsed.load[slot] = v,
                _ => bail!("{flag} needs a positive number"),
            }
        } else if flag == "--partitions" {
            match value.parse() {
                Ok(v) if v > 0 => parsed.partitions = v,
                _ => bail!("--partitions needs a positive number"),
            }
        } else if flag == "--set" {
            let Some((key, value)) = value.split_once('=') else {
                bail!("--set needs section.key=value");
            };
            parsed.settings.push((key.to_string(), value.to_string()));
        } else {
            bail!("unknown option {flag}");
        }
    }
    Ok(parsed)
}

async fn run(app: &TestApp, [n, rate, concurrency]: [usize; 3]) -> anyhow::Result<()> {
    // The bare broker round trip first, while the broker has nothing else to do.
    let raw_start = CpuSplit::now();
    let (raw, raw_publish) = raw_ceiling(app, n).await.context("the raw lapin phase")?;
    let raw_cpu = raw_start.since(n);
    let seen: Seen = Arc::default();
    let events = watch_events(app, seen.clone()).await?;
    let (url, http) = (app.api("/episodes").into(), showrunner_shared::tls::client());
    let token = app.token("bench", Role::Member).into();
    let poster = Poster { http, url, token };

    // Full speed: `concurrency` clients, each posting as soon as its previous answer came.
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut cpu = CpuSplit::now();
    let mut clients = JoinSet::new();
    for _ in 0..concurrency {
        let (next, poster) = (next.clone(), poster.clone());
        clients.spawn(async move {
            let ids = std::iter::repeat_with(|| next.fetch_add(1, Ordering::Relaxed));
            let mut results = Vec::new();
            for i in ids.take_while(|i| *i < n) {
                results.push(poster.post(i).await);
            }
            results
        });
    }
    let results = clients.join_all().await.into_iter().flatten().collect();
    let name = format!("full speed (c={concurrency})");
    let (full_row, applied, _) = settle(name, start, results, &seen).await;
    let full_cpu = cpu.since(n);
    // The full-speed phase leaves the shipper and the notification worker behind: let them
    // finish, or the fixed-rate phase would measure their backlog rather than its own load.
    let drained = Instant::now();
    drain(app, n).await;
    let drained = drained.elapsed();

    // Fixed rate, open loop: request i leaves at start + i/rate, whatever the earlier ones do.
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let start = Instant::now();
    cpu = CpuSplit::now();
    let mut requests = Vec::with_capacity(n);
    for i in 0..n {
        let due = start + Duration::from_secs_f64(i as f64 / rate as f64);
        tokio::time::sleep_until(due.into()).await;
        let (permit, poster) = (in_flight.clone().acquire_owned().await?, poster.clone());
        requests.push(tokio::spawn(async move {
            let result = poster.post(n + i).await;
            drop(permit);
            result
        }));
    }
    let results = futures_util::future::try_join_all(requests).await?;
    let name = format!("fixed {rate}/s");
    let (fixed_row, _, p99) = settle(name, start, results, &seen).await;
    let fixed_cpu = cpu.since(n);
    let _ = events.close(200, "bench done".into()).await;

    // Nothing lost: every command applied once and recorded once by the activity worker.
    let expected = i64::try_from(2 * n)?;
    let episodes = app.count("SELECT count(*) FROM episodes").await;
    let deadline = Instant::now() + DEADLINE;
    let mut activity = app.count("SELECT count(*) FROM activity_log").await;
    while activity < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        activity = app.count("SELECT count(*) FROM activity_log").await;
    }
    // Every creation notifies its creator once, and that notification's event is logged too.
    let notifications = settled_count(app, "SELECT count(*) FROM notifications", expected).await;
    let shipped = "SELECT count(*) FROM event_log WHERE seq <= (SELECT published_seq FROM event_log_shipper WHERE id = 1)";
    let logged = settled_count(app, shipped, 2 * expected).await;
    let activity = settled_count(app, "SELECT count(*) FROM activity_log", activity).await;
    for (what, count, want) in [
        ("episodes", episodes, expected),
        ("activity_log rows", activity, expected),
        ("notifications", notifications, expected),
        ("event_log rows (creations and their notifications)", logged, 2 * expected),
    ] {
        if count != want {
            fail(format!("{what}: {count}, expected {want}"));
        }
    }

    let cores = std::thread::available_parallelism().map_or(0, |c| c.get());
    let date = chrono::Local::now().format("%Y-%m-%d");
    let (phase, acc, app_s, post) = ("phase", "accepted/s", "applied/s", "POST p50/p99");
    println!("\nShowrunner pipeline benchmark  (N={n}, {date}, {cores} cores)");
    println!("{phase:<19}{acc:>11}{app_s:>11}   p50 ms   p99 ms   max ms  {post}");
    println!("{full_row}\n{fixed_row}");
    let raw_row = format!("{raw:>11.0}   msg/s round trip ({raw_publish:.0} msg/s publishing)");
    println!("{:<19}{raw_row}", "raw lapin ceiling");
    println!("latency = event received - 202 received; POST = request sent -> 202 received");
    println!("after full speed, the event log and notifications caught up in {drained:.1?}");
    println!("CPU per command, ms (from /proc, phase start -> its last event):");
    println!("  full speed: {full_cpu}\n  fixed rate: {fixed_cpu}");
    println!("  raw round trip (per message): {raw_cpu}");
    let mark = |ok: bool| if ok { "PASS" } else { "MISS" };
    let (share, fast) = (applied / raw * 100.0, mark(applied >= 2500.0));
    let (third, prompt) = (mark(share >= 100.0 / 3.0), mark(p99 <= 100.0));
    println!("targets: applied >= 2500/s: {applied:.0}/s  {fast}");
    println!("  applied >= 1/3 of raw ceiling: {applied:.0}/{raw:.0} = {share:.1}%  {third}");
    println!("  p99 <= 100 ms at {rate}/s: {p99:.1} ms  {prompt}");
    let check = |count: i64, want: i64| if count == want { "OK" } else { "WRONG" };
    let (e, a) = (check(episodes, expected), check(activity, expected));
    let (o, l) = (check(notifications, expected), check(logged, 2 * expected));
    print!("verification: episodes {episodes}/{expected} {e}; ");
    print!(
        "activity_log {activity}/{expected} {a}; notifications {notifications}/{expected} {o}; "
    );
    println!("event_log {logged}/{} {l}", 2 * expected);
    Ok(())
}

/// Binds an exclusive queue to what the log shipper publishes and records when each
/// `episode.*.created` event arrives (in the shipper's batches, `showrunner_shared::live`), for as
/// long as the returned connection is open.
async fn watch_events(app: &TestApp, seen: Seen) -> anyhow::Result<lapin::Connection> {
    let conn = app.amqp().await;
    let ch = conn.create_channel().await?;
    let none = FieldTable::default;
    let private = QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() };
    let name = ch.queue_declare("".into(), private, none()).await?.name().clone();
    let key = showrunner_shared::live::BATCH_ROUTING_KEY.into();
    let (exchange, options) = (LIVE_EXCHANGE.into(), Default::default());
    let bind = ch.queue_bind(name.clone(), exchange, key, options, none());
    bind.await?;
    let no_ack = BasicConsumeOptions { no_ack: true, ..Default::default() };
    let tag = "bench-events".into();
    let mut consumer = ch.basic_consume(name, tag, no_ack, none()).await?;
    tokio::spawn(async move {
        while let Some(Ok(delivery)) = consumer.next().await {
            let at = Instant::now();
            let Ok(items) = showrunner_shared::live::decode(&delivery.data) else { continue };
            let Ok(mut seen) = seen.lock() else { continue };
            for item in items.iter().filter(|i| {
                i.topic.starts_with("episode.")
                    && i.topic.matches('.').count() == 2
                    && i.topic.ends_with(".created")
            }) {
                let event: Value = serde_json::from_str(item.event.get()).unwrap_or_default();
                if let Some(id) = event["correlationId"].as_str().and_then(|s| s.parse().ok()) {
                    seen.entry(id).or_insert(at);
                }
            }
        }
    });
    Ok(conn)
}

/// Waits (with a deadline) for the events of a phase's accepted commands; returns its row of the
/// table, applied/s and p99 latency in ms.
async fn settle(name: String, start: Instant, posts: Posts, seen: &Seen) -> (String, f64, f64) {
    let total = posts.len();
    let (sent, errors): (Vec<_>, Vec<_>) = posts.into_iter().partition(Result::is_ok);
    let sent: Vec<Sent> = sent.into_iter().flatten().collect();
    if let Some(Err(first)) = errors.first() {
        fail(format!("{name}: {} of {total} posts failed: {first:#}", errors.len()));
    }
    let mut waiting: Vec<Uuid> = sent.iter().map(|s| s.2).collect();
    let deadline = Instant::now() + DEADLINE;
    while !waiting.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if let Ok(seen) = seen.lock() {
            waiting.retain(|id| !seen.contains_key(id));
        }
    }
    if !waiting.is_empty() {
        fail(format!("{name}: {} events missing after {DEADLINE:?}", waiting.len()));
    }
    // Microseconds, 3 significant digits.
    let hist = || Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds");
    let (mut latency, mut post) = (hist(), hist());
    let (mut last_answer, mut last_event, mut applied) = (start, start, 0);
    let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
    for &(sent, answered, id) in &sent {
        last_answer = last_answer.max(answered);
        post.saturating_record(answered.duration_since(sent).as_micros() as u64);
        if let Some(&event) = seen.get(&id) {
            (applied, last_event) = (applied + 1, last_event.max(event));
            // Zero when the event beat the 202.
            let micros = event.saturating_duration_since(answered).as_micros();
            latency.saturating_record(micros as u64);
        }
    }
    let per_s = |count: usize, end: Instant| count as f64 / (end - start).as_secs_f64();
    let (accepted_s, applied_s) = (per_s(sent.len(), last_answer), per_s(applied, last_event));
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let (p50, p99, max) = (ms(&latency, 0.5), ms(&latency, 0.99), ms(&latency, 1.0));
    let (post50, post99) = (ms(&post, 0.5), ms(&post, 0.99));
    let figures = format!("{p50:>9.1}{p99:>9.1}{max:>9.1}{post50:>8.1}/{post99:.1}");
    let row = format!("{name:<19}{accepted_s:>11.0}{applied_s:>11.0}{figures}");
    (row, applied_s, p99)
}

/// Waits (with a deadline) until the first `n` commands' events and their notifications' events
/// are in the event log (with their activity rows): the downstream consumers have caught up.
async fn drain(app: &TestApp, n: usize) {
    let expected = i64::try_from(2 * n).unwrap_or(i64::MAX);
    let deadline = Instant::now() + DEADLINE;
    while app.count("SELECT count(*) FROM event_log WHERE seq <= (SELECT published_seq FROM event_log_shipper WHERE id = 1)").await < expected {
        if Instant::now() > deadline {
            fail(format!("downstream consumers still behind after {DEADLINE:?}"));
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `query`'s count once it reached `at_least` and then held still for a second (so what comes
/// late, a duplicate included, is counted), or as it is at the deadline.
async fn settled_count(app: &TestApp, query: &str, at_least: i64) -> i64 {
    let deadline = Instant::now() + DEADLINE;
    let mut last = app.count(query).await;
    let mut still_since = Instant::now();
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = app.count(query).await;
        if now != last {
            (last, still_since) = (now, Instant::now());
        } else if now >= at_least && still_since.elapsed() >= Duration::from_secs(1) {
            break;
        }
    }
    last
}

/// Records a failure: the run goes on, and exits non-zero at the end.
fn fail(failure: String) {
    if let Ok(mut failures) = FAILURES.lock() {
        failures.push(failure);
    }
}

/// N persistent 200-byte messages through a quorum queue: msg/s of the round trip (first
/// publish -> last delivery) and of publishing alone (first publish -> last confirm).
async fn raw_ceiling(app: &TestApp, n: usize) -> anyhow::Result<(f64, f64)> {
    let conn = app.amqp().await;
    let (tx, rx) = (conn.create_channel().await?, conn.create_channel().await?);
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    let (queue, durable): (ShortString, _) = (RAW_QUEUE.into(), QueueDeclareOptions::durable());
    tx.queue_declare(queue.clone(), durable, args).await?;
    tx.confirm_select(Default::default()).await?;
    rx.basic_qos(500, Default::default()).await?;
    let (tag, none): (ShortString, _) = ("bench-raw".into(), FieldTable::default());
    let mut consumer =
        rx.basic_consume(queue.clone(), tag.clone(), Default::default(), none).await?;
    let consume = tokio::spawn(async move {
        let (mut got, multiple) = (0, BasicAckOptions { multiple: true });
        while let Some(delivery) = consumer.next().await {
            let (delivery, last) = (delivery?, Instant::now());
            got += 1;
            if got % 50 == 0 || got == n {
                delivery.acker.ack(multiple).await?;
            }
            if got == n {
                return Ok((last, consumer));
            }
        }
        bail!("the raw consumer ended after {got} of {n} messages")
    });

    let payload = [b'x'; 200];
    let props = BasicProperties::default().with_delivery_mode(2);
    let acked = Confirmation::Ack(None);
    let start = Instant::now();
    let mut pending = VecDeque::with_capacity(1000);
    for _ in 0..n {
        if pending.len() >= 1000
            && let Some(oldest) = pending.pop_front()
        {
            ensure!(oldest.await? == acked, "a raw publish was not confirmed");
        }
        let publish =
            tx.basic_publish("".into(), queue.clone(), Default::default(), &payload, props.clone());
        pending.push_back(publish.await?);
    }
    while let Some(oldest) = pending.pop_front() {
        ensure!(oldest.await? == acked, "a raw publish was not confirmed");
    }
    let published = start.elapsed();
    let consumed = tokio::time::timeout(DEADLINE, consume).await;
    let (last, consumer) = consumed.context("raw consumer timed out")???;
    // Cancelled and awaited before the queue goes: lapin fails the connection if a cancel it
    // sent on drop crosses the broker's cancel notification of the deleted queue.
    rx.basic_cancel(tag, Default::default()).await?;
    drop(consumer);
    tx.queue_delete(queue, Default::default()).await?;
    let _ = conn.close(200, "bench done".into()).await;
    Ok((n as f64 / (last - start).as_secs_f64(), n as f64 / published.as_secs_f64()))
}

/// CPU time used so far, in clock ticks (USER_HZ, 100 per second on Linux), by this process (the
/// HTTP clients, the api and the workers), RabbitMQ, PostgreSQL and everything else, and the
/// machine's busy and total ticks. Where a phase's CPU went, to know what to make cheaper.
#[derive(Clone, Copy, Default)]
struct CpuSplit {
    bench: u64,
    rabbitmq: u64,
    postgres: u64,
    other: u64,
    busy: u64,
    total: u64,
}

impl CpuSplit {
    fn now() -> Self {
        let mut split = CpuSplit::default();
        let me = std::process::id().to_string();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let name = entry.file_name();
            let Some(pid) = name.to_str().filter(|n| n.bytes().all(|b| b.is_ascii_digit())) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            // The command sits in parentheses and may itself hold spaces or parentheses.
            let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
                continue;
            };
            let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
            let tick = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
            let ticks = tick(11) + tick(12);
            match &stat[open + 1..close] {
                _ if pid == me => split.bench += ticks,
                "beam.smp" => split.rabbitmq += ticks,
                comm if comm.starts_with("postgres") => split.postgres += ticks,
                _ => split.other += ticks,
            }
        }
        // The machine: every core's user..steal, and idle + iowait on top for the total.
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        if let Some(line) = stat.lines().next() {
            let f: Vec<u64> =
                line.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
            let sum = |range: std::ops::Range<usize>| f.get(range).map_or(0, |s| s.iter().sum());
            split.busy = sum(0..3) + sum(5..8);
            split.total = sum(0..8);
        }
        split
    }

    /// What was used since `self` for `commands` commands, as a printable line.
    fn since(&self, commands: usize) -> String {
        let now = Self::now();
        let per = |a: u64, b: u64| a.saturating_sub(b) as f64 * 10.0 / commands.max(1) as f64;
        let busy = now.busy.saturating_sub(self.busy) as f64;
        let share = busy / now.total.saturating_sub(self.total).max(1) as f64 * 100.0;
        format!(
            "bench process (clients, api, workers) {:.2}, RabbitMQ {:.2}, PostgreSQL {:.2}, \
             other {:.2}; machine {:.2} ({share:.0}% busy)",
            per(now.bench, self.bench),
            per(now.rabbitmq, self.rabbitmq),
            per(now.postgres, self.postgres),
            per(now.other, self.other),
            busy * 10.0 / commands.max(1) as f64,
        )
    }
}
