//! `bench-pipeline`: throughput and latency of Showrunner's whole write path on this machine.
//!
//! One in-process stack (api, one episode worker on 16 partitions, one activity and one
//! notification worker, with their own database and vhost) takes `POST /api/v1/episodes`:
//! - full speed: N posts from `--concurrency` clients back to back. accepted/s = N / (first send
//!   -> last 202); applied/s = N / (first send -> last `episode.*.created` event, seen by a
//!   consumer of our own on `showrunner.events`); latency = event received - 202 received;
//! - fixed rate: N more posts at `--rate`/s on an open-loop schedule, same figures;
//! - raw lapin ceiling: N bare persistent round trips through a quorum queue on the same broker
//!   (confirms with 1,000 in flight, prefetch 500, one `multiple` ack per 50).
//!
//! It then checks that 2N episodes and 2N activity rows exist: nothing was lost. Exits non-zero
//! if something failed (not for a missed target). Run it with:
//!
//!     cargo run --release -p showrunner-tests --bin bench-pipeline -- [--n 20000] [--rate 1000] [--concurrency 64]

use std::collections::{HashMap, VecDeque};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Confirmation, ExchangeKind};
use serde::Deserialize;
use showrunner_shared::auth::Role;
use showrunner_shared::broker::topology::EVENTS_EXCHANGE;
use showrunner_tests::{Options, TestApp};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use uuid::Uuid;

const DEADLINE: Duration = Duration::from_secs(120);
const MAX_IN_FLIGHT: usize = 2000;
const RAW_QUEUE: &str = "bench.raw";

/// When each `episode.*.created` event arrived, by its `correlationId` (the command id).
type Seen = Arc<Mutex<HashMap<Uuid, Instant>>>;

struct Args {
    n: usize,
    rate: usize,
    concurrency: usize,
}

/// One accepted command: when its POST left, when the 202 came back, and its command id.
struct Sent {
    sent: Instant,
    answered: Instant,
    command_id: Uuid,
}

struct Phase {
    name: String,
    accepted_s: f64,
    applied_s: f64,
    latency_us: Histogram<u64>,
    post_us: Histogram<u64>,
}

#[derive(Clone)]
struct Poster {
    http: reqwest::Client,
    url: Arc<str>,
    token: Arc<str>,
}

impl Poster {
    async fn post(&self, i: usize) -> anyhow::Result<Sent> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Accepted {
            command_id: Uuid,
        }
        let body = serde_json::json!({ "title": format!("Bench {i}"), "categories": ["bench"] });
        let sent = Instant::now();
        let response = self
            .http
            .post(&*self.url)
            .bearer_auth(&*self.token)
            .json(&body)
            .send()
            .await?;
        let answered = Instant::now();
        let status = response.status();
        if status != reqwest::StatusCode::ACCEPTED {
            bail!(
                "POST /episodes answered {status}: {}",
                response.text().await.unwrap_or_default()
            );
        }
        let accepted: Accepted = response.json().await.context("the 202 body")?;
        Ok(Sent {
            sent,
            answered,
            command_id: accepted.command_id,
        })
    }
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(error) => {
            eprintln!("bench-pipeline: {error:#}");
            return ExitCode::from(2);
        }
    };
    // RUST_LOG wins when set; otherwise warnings only (the stack logs at info per command).
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).try_init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(error) => {
            eprintln!("bench-pipeline: cannot start tokio: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let app = TestApp::spawn_with(Options {
            partitions: 16,
            ..Default::default()
        })
        .await;
        let mut failures = Vec::new();
        if let Err(error) = run(&app, &args, &mut failures).await {
            failures.push(format!("{error:#}"));
        }
        app.stop().await;
        for failure in &failures {
            eprintln!("FAILED: {failure}");
        }
        if failures.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    })
}

fn parse_args() -> anyhow::Result<Args> {
    let usage = "usage: bench-pipeline [--n 20000] [--rate 1000] [--concurrency 64]";
    let mut args = Args {
        n: 20_000,
        rate: 1000,
        concurrency: 64,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let (name, value) = match flag.split_once('=') {
            Some((name, value)) => (name.to_string(), value.to_string()),
            None => {
                let value = it
                    .next()
                    .with_context(|| format!("{flag} needs a value; {usage}"))?;
                (flag, value)
            }
        };
        let number: usize = value
            .parse()
            .with_context(|| format!("{name} {value}: not a number"))?;
        match name.as_str() {
            "--n" => args.n = number,
            "--rate" => args.rate = number,
            "--concurrency" => args.concurrency = number,
            _ => bail!("unknown option {name}; {usage}"),
        }
    }
    if args.n == 0 || args.rate == 0 || args.concurrency == 0 {
        bail!("--n, --rate and --concurrency must be positive");
    }
    Ok(args)
}

async fn run(app: &TestApp, args: &Args, failures: &mut Vec<String>) -> anyhow::Result<()> {
    let n = args.n;
    let seen: Seen = Arc::default();
    let _events = watch_events(app, seen.clone())
        .await
        .context("the event consumer")?;
    let poster = Poster {
        http: reqwest::Client::new(),
        url: app.api("/episodes").into(),
        token: app.token("bench", Role::Member).into(),
    };

    // Full speed: `concurrency` clients, each posting as soon as its previous answer came.
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut clients = JoinSet::new();
    for _ in 0..args.concurrency {
        let (next, poster) = (next.clone(), poster.clone());
        clients.spawn(async move {
            let mut results = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return results;
                }
                results.push(poster.post(i).await);
            }
        });
    }
    let mut results = Vec::with_capacity(n);
    while let Some(r) = clients.join_next().await {
        results.extend(r?);
    }
    let full = settle(
        format!("full speed (c={})", args.concurrency),
        start,
        results,
        &seen,
        failures,
    )
    .await;

    // Fixed rate, open loop: request i leaves at start + i/rate, whatever the earlier ones do.
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let start = Instant::now();
    let mut requests = Vec::with_capacity(n);
    for i in 0..n {
        let due = start + Duration::from_secs_f64(i as f64 / args.rate as f64);
        tokio::time::sleep_until(due.into()).await;
        let permit = in_flight.clone().acquire_owned().await?;
        let poster = poster.clone();
        requests.push(tokio::spawn(async move {
            let result = poster.post(n + i).await;
            drop(permit);
            result
        }));
    }
    let mut results = Vec::with_capacity(n);
    for request in requests {
        results.push(request.await?);
    }
    let fixed = settle(
        format!("fixed {}/s", args.rate),
        start,
        results,
        &seen,
        failures,
    )
    .await;

    // Nothing lost: every command applied once and recorded once by the activity worker.
    let expected = i64::try_from(2 * n)?;
    let episodes = app.count("SELECT count(*) FROM episodes").await;
    let deadline = Instant::now() + DEADLINE;
    let mut activity = app.count("SELECT count(*) FROM activity_log").await;
    while activity < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        activity = app.count("SELECT count(*) FROM activity_log").await;
    }
    for (what, count) in [("episodes", episodes), ("activity_log rows", activity)] {
        if count != expected {
            failures.push(format!("{what}: {count}, expected {expected}"));
        }
    }

    // The bare broker round trip, measured once the pipeline is idle.
    let (raw_round_trip, raw_publish) = raw_ceiling(app, n).await.context("the raw lapin phase")?;

    let cores = std::thread::available_parallelism().map_or(0, |c| c.get());
    let date = chrono::Local::now().format("%Y-%m-%d");
    println!("\nShowrunner pipeline benchmark  (N={n}, {date}, {cores} cores)");
    println!(
        "{:<20}{:>11}{:>11}{:>9}{:>9}{:>9}{:>13}{:>13}",
        "phase",
        "accepted/s",
        "applied/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "POST p50 ms",
        "POST p99 ms"
    );
    for p in [&full, &fixed] {
        let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        println!(
            "{:<20}{:>11.0}{:>11.0}{:>9.1}{:>9.1}{:>9.1}{:>13.1}{:>13.1}",
            p.name,
            p.accepted_s,
            p.applied_s,
            ms(&p.latency_us, 0.5),
            ms(&p.latency_us, 0.99),
            p.latency_us.max() as f64 / 1000.0,
            ms(&p.post_us, 0.5),
            ms(&p.post_us, 0.99),
        );
    }
    println!(
        "{:<20}{raw_round_trip:>11.0}   msg/s round trip (publish with confirms {raw_publish:.0} msg/s)",
        "raw lapin ceiling"
    );
    println!("(latency = event received - 202 received; POST = request sent -> 202 received)");
    let mark = |ok: bool| if ok { "PASS" } else { "MISS" };
    let share = full.applied_s / raw_round_trip;
    let p99 = fixed.latency_us.value_at_quantile(0.99) as f64 / 1000.0;
    println!("targets:");
    println!(
        "  applied >= 2500/s                 {:>6.0}/s            {}",
        full.applied_s,
        mark(full.applied_s >= 2500.0)
    );
    println!(
        "  applied >= 1/3 of raw ceiling     {:.0}/{:.0} = {:.1}%   {}",
        full.applied_s,
        raw_round_trip,
        share * 100.0,
        mark(share >= 1.0 / 3.0)
    );
    println!(
        "  p99 <= 100 ms at {}/s            {p99:>6.1} ms           {}",
        args.rate,
        mark(p99 <= 100.0)
    );
    let check = |count: i64| if count == expected { "OK" } else { "WRONG" };
    println!(
        "verification: episodes {episodes}/{expected} {}; activity_log {activity}/{expected} {}",
        check(episodes),
        check(activity)
    );
    Ok(())
}

/// Binds an exclusive queue to `episode.*.created` and records when each event arrives.
/// The connection must stay alive as long as the recording should go on.
async fn watch_events(app: &TestApp, seen: Seen) -> anyhow::Result<lapin::Connection> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Envelope {
        correlation_id: Option<Uuid>,
    }
    let conn = app.amqp().await;
    let ch = conn.create_channel().await?;
    let topic = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.exchange_declare(
        EVENTS_EXCHANGE.into(),
        ExchangeKind::Topic,
        topic,
        FieldTable::default(),
    )
    .await?;
    let private = QueueDeclareOptions {
        exclusive: true,
        auto_delete: true,
        ..Default::default()
    };
    let queue = ch
        .queue_declare("".into(), private, FieldTable::default())
        .await?;
    let name = queue.name().clone();
    ch.queue_bind(
        name.clone(),
        EVENTS_EXCHANGE.into(),
        "episode.*.created".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    let no_ack = BasicConsumeOptions {
        no_ack: true,
        ..Default::default()
    };
    let mut consumer = ch
        .basic_consume(name, "bench-events".into(), no_ack, FieldTable::default())
        .await?;
    tokio::spawn(async move {
        while let Some(Ok(delivery)) = consumer.next().await {
            let at = Instant::now();
            if let Ok(Envelope {
                correlation_id: Some(id),
            }) = serde_json::from_slice(&delivery.data)
                && let Ok(mut seen) = seen.lock()
            {
                seen.entry(id).or_insert(at);
            }
        }
    });
    Ok(conn)
}

/// Waits (with a deadline) for the events of a phase's accepted commands and computes its figures.
async fn settle(
    name: String,
    start: Instant,
    results: Vec<anyhow::Result<Sent>>,
    seen: &Seen,
    failures: &mut Vec<String>,
) -> Phase {
    let total = results.len();
    let mut sent = Vec::with_capacity(total);
    let mut errors = Vec::new();
    for result in results {
        match result {
            Ok(s) => sent.push(s),
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    if let Some(first) = errors.first() {
        failures.push(format!(
            "{name}: {} of {total} posts failed, first: {first}",
            errors.len()
        ));
    }
    let mut waiting: Vec<Uuid> = sent.iter().map(|s| s.command_id).collect();
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Ok(seen) = seen.lock() {
            waiting.retain(|id| !seen.contains_key(id));
        }
        if waiting.is_empty() || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if !waiting.is_empty() {
        failures.push(format!(
            "{name}: {} events missing after {DEADLINE:?}",
            waiting.len()
        ));
    }
    let new_hist =
        || Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds");
    let (mut latency_us, mut post_us) = (new_hist(), new_hist());
    let (mut last_answer, mut last_event, mut applied) = (start, start, 0usize);
    let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
    for s in &sent {
        last_answer = last_answer.max(s.answered);
        post_us.saturating_record(s.answered.duration_since(s.sent).as_micros() as u64);
        if let Some(&event) = seen.get(&s.command_id) {
            applied += 1;
            last_event = last_event.max(event);
            latency_us
                .saturating_record(event.saturating_duration_since(s.answered).as_micros() as u64);
        }
    }
    let rate = |count: usize, end: Instant| {
        count as f64 / end.duration_since(start).as_secs_f64().max(1e-9)
    };
    Phase {
        name,
        accepted_s: rate(sent.len(), last_answer),
        applied_s: rate(applied, last_event),
        latency_us,
        post_us,
    }
}

/// N persistent 200-byte messages through a quorum queue: msg/s of the round trip (first
/// publish -> last delivery) and of publishing alone (first publish -> last confirm).
async fn raw_ceiling(app: &TestApp, n: usize) -> anyhow::Result<(f64, f64)> {
    let conn = app.amqp().await;
    let publisher = conn.create_channel().await?;
    let receiver = conn.create_channel().await?;
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    publisher
        .queue_declare(RAW_QUEUE.into(), QueueDeclareOptions::durable(), args)
        .await?;
    publisher
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    receiver.basic_qos(500, BasicQosOptions::default()).await?;
    let mut consumer = receiver
        .basic_consume(
            RAW_QUEUE.into(),
            "bench-raw".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let consume = tokio::spawn(async move {
        let mut got = 0;
        while let Some(delivery) = consumer.next().await {
            let delivery = delivery?;
            got += 1;
            if got == n {
                let last = Instant::now();
                delivery
                    .acker
                    .ack(BasicAckOptions { multiple: true })
                    .await?;
                return Ok(last);
            }
            if got % 50 == 0 {
                delivery
                    .acker
                    .ack(BasicAckOptions { multiple: true })
                    .await?;
            }
        }
        bail!("the raw consumer ended after {got} of {n} messages")
    });

    let payload = [b'x'; 200];
    let properties = BasicProperties::default().with_delivery_mode(2);
    let confirmed = |c: Confirmation| match c {
        Confirmation::Ack(None) => Ok(()),
        other => Err(anyhow::anyhow!("raw publish not confirmed: {other:?}")),
    };
    let start = Instant::now();
    let mut pending = VecDeque::with_capacity(1000);
    for _ in 0..n {
        if pending.len() >= 1000
            && let Some(oldest) = pending.pop_front()
        {
            confirmed(oldest.await?)?;
        }
        let options = BasicPublishOptions::default();
        pending.push_back(
            publisher
                .basic_publish(
                    "".into(),
                    RAW_QUEUE.into(),
                    options,
                    &payload,
                    properties.clone(),
                )
                .await?,
        );
    }
    while let Some(oldest) = pending.pop_front() {
        confirmed(oldest.await?)?;
    }
    let published = start.elapsed();
    let last = tokio::time::timeout(DEADLINE, consume)
        .await
        .context("the raw consumer timed out")???;
    publisher
        .queue_delete(RAW_QUEUE.into(), QueueDeleteOptions::default())
        .await?;
    let _ = conn.close(200, "bench done".into()).await;
    let secs = |d: Duration| d.as_secs_f64().max(1e-9);
    Ok((
        n as f64 / secs(last.duration_since(start)),
        n as f64 / secs(published),
    ))
}
