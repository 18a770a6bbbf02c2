//! `dos`: hostile clients against one api process on loopback, bounded in count and time, with
//! a normal client measured meanwhile. Run through tests/dos/run.sh, which sets the limits.
//!
//! It starts a stack's database and vhost (`TestApp`, no workers), then the api as a separate
//! process (`sr-role api`, the shipped entry point, its edge settings at their defaults unless
//! the environment says otherwise), and runs one phase at a time:
//!
//! - `slowloris`: connections from 20 loopback addresses send part of a request's headers and
//!   then one byte a second;
//! - `slow-body`: complete headers of a `POST`, then a body of one byte a second;
//! - `flood`: as many connections as it can open from one address, silent;
//! - `ws-burst`: WebSocket upgrades from one address, each a different user, that never send
//!   a frame (and never answer the server's ping).
//!
//! For each: how many bad connections the api held (accepted, not refused), how many it
//! refused with a 503 and how fast, how long it held the others before it closed them (or
//! answered 408), and the normal client's latency (an authenticated list of episodes from
//! another address, 50 a second) during the phase, beside its baseline without an attack.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hdrhistogram::Histogram;
use showrunner_shared::auth::Role;
use showrunner_tests::{Options, TestApp, wait_until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;
use tokio::process::Command;

/// Longest a phase runs; connections still open then count as held to the end.
const PHASE: Duration = Duration::from_secs(25);
/// The normal client's pace: well under the per-user rate limit.
const NORMAL_EVERY: Duration = Duration::from_millis(20);

#[derive(Debug, Default)]
struct Outcome {
    connected: bool,
    /// The first line the server sent, if any.
    status: Option<String>,
    /// When the status line came, from the connection's opening.
    answered: Option<Duration>,
    /// When the server closed the connection, from its opening; `None`: still open at the end.
    closed: Option<Duration>,
}

/// One bad connection from `from`: sends `first`, then `trickle` one byte a second until the
/// server closes it or `until`.
async fn bad(
    from: Ipv4Addr,
    addr: SocketAddr,
    first: Vec<u8>,
    trickle: bool,
    until: Instant,
) -> Outcome {
    let mut outcome = Outcome::default();
    let Ok(socket) = TcpSocket::new_v4() else { return outcome };
    if socket.bind(SocketAddr::from((from, 0))).is_err() {
        return outcome;
    }
    let opened = Instant::now();
    let Ok(Ok(mut stream)) = tokio::time::timeout_at(until.into(), socket.connect(addr)).await
    else {
        return outcome;
    };
    outcome.connected = true;
    if stream.write_all(&first).await.is_err() {
        outcome.closed = Some(opened.elapsed());
        return outcome;
    }
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let mut buf = [0u8; 2048];
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(until.into()) => return outcome,
            read = stream.read(&mut buf) => match read {
                Ok(0) | Err(_) => {
                    outcome.closed = Some(opened.elapsed());
                    return outcome;
                }
                Ok(n) => {
                    if outcome.status.is_none() {
                        let text = String::from_utf8_lossy(&buf[..n]);
                        outcome.status = Some(text.lines().next().unwrap_or_default().to_string());
                        outcome.answered = Some(opened.elapsed());
                    }
                }
            },
            _ = tick.tick(), if trickle => {
                if stream.write_all(b"x").await.is_err() {
                    outcome.closed = Some(opened.elapsed());
                    return outcome;
                }
            }
        }
    }
}

/// The normal client until `until`: latencies in microseconds and the failures.
async fn normal(app: &TestApp, addr: SocketAddr, until: Instant) -> (Histogram<u64>, usize) {
    let mut latencies = Histogram::<u64>::new(3).unwrap_or_else(|_| unreachable!());
    let mut failures = 0;
    let http = showrunner_shared::tls::client_builder()
        .local_address(Some(Ipv4Addr::new(127, 0, 0, 200).into()))
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap_or_default();
    let token = app.token("normal-client", Role::Member);
    let url = format!("http://{addr}/api/v1/episodes?limit=10");
    let mut tick = tokio::time::interval(NORMAL_EVERY);
    while Instant::now() < until {
        tick.tick().await;
        let started = Instant::now();
        let ok = match http.get(&url).bearer_auth(&token).send().await {
            Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
            Err(_) => false,
        };
        if ok {
            let _ = latencies.record(started.elapsed().as_micros() as u64);
        } else {
            failures += 1;
        }
    }
    (latencies, failures)
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

fn spread(mut values: Vec<Duration>) -> String {
    if values.is_empty() {
        return "-".into();
    }
    values.sort();
    let at = |q: f64| values[((values.len() - 1) as f64 * q) as usize];
    format!("p50 {} / max {}", ms(at(0.5)), ms(at(1.0)))
}

fn latency(h: &Histogram<u64>, failures: usize) -> String {
    let q = |q: f64| Duration::from_micros(h.value_at_quantile(q));
    format!(
        "{} requests, p50 {} / p99 {} / max {}, {} failed",
        h.len(),
        ms(q(0.5)),
        ms(q(0.99)),
        ms(Duration::from_micros(h.max())),
        failures
    )
}

async fn phase(
    name: &str,
    app: &TestApp,
    addr: SocketAddr,
    attackers: Vec<(Ipv4Addr, Vec<u8>, bool)>,
) {
    let until = Instant::now() + PHASE;
    let count = attackers.len();
    let attack = futures_util::future::join_all(
        attackers.into_iter().map(|(from, first, trickle)| bad(from, addr, first, trickle, until)),
    );
    let (outcomes, (latencies, failures)) = tokio::join!(attack, normal(app, addr, until));
    let connected = outcomes.iter().filter(|o| o.connected).count();
    let refusals: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| o.status.as_deref().is_some_and(|s| s.starts_with("HTTP/1.1 503")))
        .collect();
    let held: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| o.connected && !refusals.iter().any(|r| std::ptr::eq(*r, *o)))
        .collect();
    let mut statuses: Vec<String> =
        held.iter().filter_map(|o| o.status.clone()).collect::<Vec<_>>();
    statuses.sort();
    statuses.dedup();
    println!("## {name}");
    println!("bad connections: {count} tried, {connected} connected");
    println!(
        "refused (503): {}, answered after {}",
        refusals.len(),
        spread(refusals.iter().filter_map(|o| o.answered).collect())
    );
    println!(
        "held: {}, closed by the server after {}; still open at {}s: {}; answers seen: {:?}",
        held.len(),
        spread(held.iter().filter_map(|o| o.closed).collect()),
        PHASE.as_secs(),
        held.iter().filter(|o| o.closed.is_none()).count(),
        statuses
    );
    println!("normal client: {}", latency(&latencies, failures));
    println!();
}

fn from(block: u8, n: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, block, (n % 250 + 1) as u8)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let scale: usize = std::env::var("DOS_SCALE").ok().and_then(|s| s.parse().ok()).unwrap_or(1000);
    let app = TestApp::spawn_with(Options::no_workers()).await;
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0")?;
        probe.local_addr()?.port()
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let sr_role = std::env::current_exe()?.with_file_name("sr-role");
    let mut api = Command::new(&sr_role)
        .arg("api")
        .envs(app.env())
        .env("SHOWRUNNER__HTTP__ADDR", addr.to_string())
        .env("SHOWRUNNER__LOG__FILTER", "warn")
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("start {}", sr_role.display()))?;
    let ready = format!("http://{addr}/ready");
    wait_until("the api is ready", Duration::from_secs(30), || {
        let (http, ready) = (app.http.clone(), ready.clone());
        async move { http.get(&ready).send().await.is_ok_and(|r| r.status().is_success()) }
    })
    .await;
    println!("api pid {:?} on {addr}; {scale} bad connections a phase\n", api.id());

    let (baseline, failures) = normal(&app, addr, Instant::now() + Duration::from_secs(5)).await;
    println!("## baseline (no attack, 5 s)\nnormal client: {}\n", latency(&baseline, failures));

    let slowloris = (0..scale)
        .map(|n| {
            (from(1, n % 20), b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\nX-A: ".to_vec(), true)
        })
        .collect();
    phase("slowloris (20 addresses, one header byte a second)", &app, addr, slowloris).await;

    let token = app.token("slow-body", Role::Member);
    let head = format!(
        "POST /api/v1/episodes HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{"
    );
    let slow_body =
        (0..scale / 2).map(|n| (from(2, n % 20), head.clone().into_bytes(), true)).collect();
    phase("slow body (20 addresses, one body byte a second)", &app, addr, slow_body).await;

    let flood = (0..scale).map(|_| (Ipv4Addr::new(127, 0, 3, 1), Vec::new(), false)).collect();
    phase("connection flood (one address, silent)", &app, addr, flood).await;

    let burst = (0..scale / 2)
        .map(|n| {
            let token = app.token(&format!("ws-{n}"), Role::Member);
            let upgrade = format!(
                "GET /api/v1/ws?token={token} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
                 Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
            );
            (Ipv4Addr::new(127, 0, 4, 1), upgrade.into_bytes(), false)
        })
        .collect();
    phase("WebSocket burst (one address, silent after the handshake)", &app, addr, burst).await;

    let _ = api.start_kill();
    let _ = api.wait().await;
    app.stop().await;
    Ok(())
}
