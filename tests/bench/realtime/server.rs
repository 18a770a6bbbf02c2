//! `bench-realtime`: the Showrunner side of the realtime benchmark (`tests/bench/realtime/run.sh`).
//!
//! Starts one Showrunner stack in this process (`TestApp`: its own database and vhost; one api
//! instance and one activity worker, whose sequencer writes `event_log` and republishes on
//! `showrunner.live`; no episode or notification workers), then runs the ingest bridge of the
//! peer kit's load generator: a TCP port taking newline-delimited JSON
//! `{"op":"pub","topic":..,"seq":..,"ts":..,"data":..}` and publishing each line as an
//! `EventEnvelope` (event `bench.tick`, data = `{topic, seq, ts, data}`) on `showrunner.events`
//! with routing key = topic, persistent, on a confirm-mode channel. Confirms are pipelined: a
//! separate task awaits them in order, up to `--max-unconfirmed` outstanding.
//!
//! `{"op":"rate",...}` (the peer relays' own timer) is not implemented: run the generator with
//! `--sources external` (its separate publisher process feeds this port).
//!
//! Prints `WS_URL=...`, `METRICS_URL=...` (the api's, with the relay's fan-out histograms),
//! `PID=...` and `READY` on stdout (and into `--info FILE` if given), then
//! runs until SIGINT/SIGTERM, when it stops the stack
//! (dropping its database and vhost).
//!
//!     bench-realtime [--ingest-port 5101] [--info FILE] [--max-unconfirmed 20000]

use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use anyhow::{Context as _, bail};
use lapin::PublisherConfirm;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::ShortString;
use lapin::{BasicProperties, Channel, Confirmation};
use serde_json::Value;
use showrunner_shared::auth::Role;
use showrunner_shared::broker::topology::EVENTS_EXCHANGE;
use showrunner_shared::contracts::{Event, EventEnvelope};
use showrunner_shared::event::Foreign;
use showrunner_tests::{Options, TestApp};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tracing_subscriber::{EnvFilter, fmt};
use uuid::Uuid;

#[derive(Default)]
struct Counters {
    published: AtomicU64,
    acked: AtomicU64,
    failed: AtomicU64,
    bad_lines: AtomicU64,
}

struct Bridge {
    channel: Channel,
    confirms: mpsc::Sender<PublisherConfirm>,
    counters: Arc<Counters>,
}

impl Bridge {
    async fn publish(&self, topic: &str, data: Value) -> anyhow::Result<()> {
        let envelope = EventEnvelope {
            id: Uuid::now_v7(),
            version: 1,
            occurred_at: chrono::Utc::now(),
            actor: None,
            correlation_id: None,
            causation_id: None,
            event: Event::Other(Foreign { event: "bench.tick".into(), data }),
        };
        let body = serde_json::to_vec(&envelope)?;
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            .with_message_id(envelope.id.to_string().as_str().into())
            .with_type("event".into());
        let confirm = self
            .channel
            .basic_publish(
                ShortString::from(EVENTS_EXCHANGE),
                ShortString::from(topic),
                BasicPublishOptions::default(),
                &body,
                properties,
            )
            .await?;
        self.counters.published.fetch_add(1, Relaxed);
        // Bounded: when too many confirms are outstanding, the feed waits (TCP backpressure).
        self.confirms.send(confirm).await.map_err(|_| anyhow::anyhow!("confirm task ended"))?;
        Ok(())
    }
}

async fn await_confirms(mut rx: mpsc::Receiver<PublisherConfirm>, counters: Arc<Counters>) {
    while let Some(confirm) = rx.recv().await {
        match confirm.await {
            Ok(Confirmation::Ack(_)) => {
                counters.acked.fetch_add(1, Relaxed);
            }
            Ok(other) => {
                if counters.failed.fetch_add(1, Relaxed) < 5 {
                    eprintln!("bench-realtime: publish not confirmed: {other:?}");
                }
            }
            Err(e) => {
                if counters.failed.fetch_add(1, Relaxed) < 5 {
                    eprintln!("bench-realtime: confirm failed: {e}");
                }
            }
        }
    }
}

async fn feed(stream: TcpStream, bridge: Arc<Bridge>) -> anyhow::Result<()> {
    stream.set_nodelay(true)?;
    let mut lines = BufReader::with_capacity(1 << 16, stream).lines();
    while let Some(line) = lines.next_line().await? {
        if line.is_empty() {
            continue;
        }
        let Ok(Value::Object(mut obj)) = serde_json::from_str::<Value>(&line) else {
            bridge.counters.bad_lines.fetch_add(1, Relaxed);
            continue;
        };
        match obj.get("op").and_then(Value::as_str) {
            Some("pub") => {
                obj.remove("op");
                let Some(topic) = obj.get("topic").and_then(Value::as_str).map(str::to_owned)
                else {
                    bridge.counters.bad_lines.fetch_add(1, Relaxed);
                    continue;
                };
                bridge.publish(&topic, Value::Object(obj)).await?;
            }
            Some("rate") => eprintln!(
                "bench-realtime: {{\"op\":\"rate\"}} (internal timer) is not supported: \
                 run the generator with --sources external"
            ),
            _ => {
                bridge.counters.bad_lines.fetch_add(1, Relaxed);
            }
        }
    }
    Ok(())
}

fn arg(args: &[String], name: &str, default: &str) -> String {
    let key = format!("--{name}");
    args.iter()
        .position(|a| *a == key)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| default.to_string())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!(
            "usage: bench-realtime [--ingest-port 5101] [--info FILE] [--max-unconfirmed 20000]"
        );
        return Ok(());
    }
    let ingest_port: u16 = arg(&args, "ingest-port", "5101").parse().context("--ingest-port")?;
    let info = arg(&args, "info", "");
    let max_unconfirmed: usize =
        arg(&args, "max-unconfirmed", "20000").parse().context("--max-unconfirmed")?;
    fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();

    let listener = TcpListener::bind(("127.0.0.1", ingest_port))
        .await
        .with_context(|| format!("bind the ingest port 127.0.0.1:{ingest_port}"))?;
    let app = TestApp::spawn_with(Options {
        partitions: 4,
        api_instances: 1,
        episode_workers: 0,
        activity_workers: 1,
        notification_workers: 0,
        // Every client is the one bench user: lift its connection and request limits.
        extra: [
            ("limits.max_connections_per_user", "1000000"),
            ("limits.requests_per_sec", "1000000"),
            ("limits.request_burst", "1000000"),
            // 10,000 clients from one loopback address: lift the edge's connection caps too.
            ("http.max_connections", "1000000"),
            ("http.max_connections_per_address", "0"),
            // Clients that connect all 10,000 before the first subscribes.
            ("http.ws_first_frame_secs", "600"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .to_vec(),
        ..Default::default()
    })
    .await;
    let token = app.token("bench-realtime", Role::Member);
    let ws_url = app.ws_url(0, &token);

    let conn = app.amqp().await;
    let channel = conn.create_channel().await?;
    channel.confirm_select(ConfirmSelectOptions::default()).await?;
    let counters = Arc::new(Counters::default());
    let (confirms, rx) = mpsc::channel(max_unconfirmed.max(1));
    tokio::spawn(await_confirms(rx, counters.clone()));
    let bridge = Arc::new(Bridge { channel, confirms, counters: counters.clone() });

    // Sanity: one event must come back through the relay before we say READY.
    check_relay(&ws_url, &bridge).await.context("relay self-check")?;

    // Per-connection footprint hint: every WebSocket session is one task holding this future.
    eprintln!(
        "bench-realtime: size of one session future (relay::socket::run): {} bytes",
        returned_size(showrunner_api::relay::socket::run)
    );
    let pid = std::process::id();
    let text = format!(
        "WS_URL={ws_url}\nMETRICS_URL={}\nINGEST=127.0.0.1:{ingest_port}\nPID={pid}\nDB_VHOST={}\nREADY\n",
        app.url("/metrics"),
        app.name
    );
    print!("{text}");
    std::io::stdout().flush()?;
    if !info.is_empty() {
        std::fs::write(&info, &text).with_context(|| format!("write {info}"))?;
    }

    let accept = {
        let bridge = bridge.clone();
        async move {
            loop {
                let (stream, _) = listener.accept().await?;
                let bridge = bridge.clone();
                tokio::spawn(async move {
                    if let Err(e) = feed(stream, bridge).await {
                        eprintln!("bench-realtime: ingest connection: {e:#}");
                    }
                });
            }
            #[allow(unreachable_code)]
            Ok::<(), anyhow::Error>(())
        }
    };
    let report = async {
        let mut last = 0;
        loop {
            tokio::time::sleep(Duration::from_secs(10)).await;
            let p = counters.published.load(Relaxed);
            if p != last {
                eprintln!(
                    "bench-realtime: published {p}, confirmed {}, failed {}, bad lines {}",
                    counters.acked.load(Relaxed),
                    counters.failed.load(Relaxed),
                    counters.bad_lines.load(Relaxed)
                );
                last = p;
            }
        }
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = accept => r?,
        () = report => {}
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    eprintln!(
        "bench-realtime: stopping; published {}, confirmed {}, failed {}",
        counters.published.load(Relaxed),
        counters.acked.load(Relaxed),
        counters.failed.load(Relaxed)
    );
    let _ = conn.close(200, "bench done".into()).await;
    app.stop().await;
    Ok(())
}

/// `size_of` the value `f` returns (for an async fn: its future), without calling it.
fn returned_size<F, A, B, C, D, E, G, R>(_: F) -> usize
where
    F: FnOnce(A, B, C, D, E, G) -> R,
{
    std::mem::size_of::<R>()
}

/// Subscribes one client to `selfcheck`, publishes one event through the bridge, and waits for
/// its frame (the path: events exchange -> sequencer -> event_log -> live exchange -> relay).
async fn check_relay(ws_url: &str, bridge: &Bridge) -> anyhow::Result<()> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url).await?;
    ws.send(Message::text(r#"{"op":"subscribe","topics":["selfcheck"]}"#)).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut published = false;
    loop {
        let next = tokio::time::timeout_at(deadline, ws.next()).await;
        let Ok(Some(Ok(message))) = next else { bail!("no event frame within 30 s") };
        let Message::Text(text) = message else { continue };
        let frame: Value = serde_json::from_str(text.as_str())?;
        match frame["op"].as_str() {
            Some("subscribed") if !published => {
                let data =
                    serde_json::json!({"topic": "selfcheck", "seq": 0, "ts": 0, "data": "x"});
                bridge.publish("selfcheck", data).await?;
                published = true;
            }
            Some("event") => {
                eprintln!("bench-realtime: relay self-check frame: {text}");
                break;
            }
            _ => {}
        }
    }
    let _ = ws.close(None).await;
    Ok(())
}
