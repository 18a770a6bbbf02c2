//! WebSocket fan-out load generator (one process, many connections).
//!
//!   loadgen run --proto eio|json|json-sub --url WSURL --ingest HOST:PORT --server-pid PID [options]
//!   loadgen publish --ingest HOST:PORT --rate R --secs S [--rooms 100 --size 64 --prefix t]
//!
//! The wire protocol of the *clients* is the only thing that differs between relays (`--proto`):
//!   eio : Socket.IO / engine.io v4 over raw WebSocket text frames
//!         server `0{..}` -> client `40` -> server `40{..}` -> client `420["sub",["t17","all"]]`
//!         -> server `430[..]` (ack); events `42["event",{"topic":..,"seq":..,"ts":..,"data":..}]`;
//!         engine.io ping `2` is answered with `3`.
//!   json: Showrunner's frames (adapted from the peer kit's plain `{"op":"sub"}` JSON): client
//!         `{"op":"subscribe","topics":["t17","all"]}` -> server `{"op":"subscribed",...}`; events
//!         `{"op":"event","id":..,"topic":..,"event":..,"data":{"topic":..,"seq":..,"ts":..,"data":..},"traceId":..}`;
//!         optional app-level `{"op":"ping"}` answered with `{"op":"pong"}` (WS-level pings are answered
//!         by tungstenite).
//!   json-sub: the peer kit's original plain JSON (`ws-relay.js`): the same as `json` but the client
//!         subscribes with `{"op":"sub",...}`; events `{"op":"event","topic":..,"seq":..,"ts":..,"data":..}`.
//! The *ingest* side (broker stand-in) is the same for every relay: TCP, newline-delimited JSON
//! `{"op":"pub","topic":..,"seq":..,"ts":..,"data":..}` and `{"op":"rate",...}` (internal timer).
//! `ts` is CLOCK_MONOTONIC in microseconds (shared by all processes on the host).
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::time::sleep;
use tokio_tungstenite::tungstenite::{protocol::WebSocketConfig, Message};

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn now_us() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000
}

// ---------------- log-linear histogram (µs), exact < 256 µs, <0.8 % error above ----------------
const NB: usize = 256 + 33 * 128;
struct Hist {
    b: Vec<AtomicU64>,
}
impl Hist {
    fn new() -> Self {
        Hist { b: (0..NB).map(|_| AtomicU64::new(0)).collect() }
    }
    fn idx(v: u64) -> usize {
        if v < 256 {
            return v as usize;
        }
        let e = (63 - v.leading_zeros() as usize).min(40);
        let m = ((v >> (e - 7)) & 127) as usize;
        256 + (e - 8) * 128 + m
    }
    fn val(i: usize) -> u64 {
        if i < 256 {
            return i as u64;
        }
        let e = (i - 256) / 128 + 8;
        let m = ((i - 256) % 128) as u64;
        (128 + m) << (e - 7)
    }
    fn record(&self, v: u64) {
        self.b[Self::idx(v)].fetch_add(1, Relaxed);
    }
    fn reset(&self) {
        for x in &self.b {
            x.store(0, Relaxed)
        }
    }
    fn snap(&self) -> Vec<u64> {
        self.b.iter().map(|x| x.load(Relaxed)).collect()
    }
}
fn pct(s: &[u64], p: f64) -> u64 {
    let n: u64 = s.iter().sum();
    if n == 0 {
        return 0;
    }
    let target = ((p / 100.0) * n as f64).ceil().max(1.0) as u64;
    let mut c = 0;
    for (i, &x) in s.iter().enumerate() {
        c += x;
        if c >= target {
            return Hist::val(i);
        }
    }
    0
}
/// GET `url` (plain `http://host:port/path`) and return the body; empty if it fails. Used to
/// read the relay's own histograms (`--metrics`), so a failure only leaves them out.
async fn scrape(url: &str) -> String {
    use tokio::io::AsyncReadExt;
    let Some(rest) = url.strip_prefix("http://") else { return String::new() };
    let (host, path) = rest.split_once('/').map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
    let fetch = async {
        let mut s = TcpStream::connect(host).await.ok()?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes()).await.ok()?;
        let mut body = Vec::new();
        s.read_to_end(&mut body).await.ok()?;
        let text = String::from_utf8_lossy(&body).into_owned();
        text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
    };
    tokio::time::timeout(Duration::from_secs(5), fetch).await.ok().flatten().unwrap_or_default()
}

/// The cumulative buckets `(upper bound in s, count)` of histogram `name` in a Prometheus text
/// scrape, +Inf last.
fn buckets_of(text: &str, name: &str) -> Vec<(f64, u64)> {
    let prefix = format!("{name}_bucket{{le=\"");
    text.lines()
        .filter_map(|l| l.strip_prefix(prefix.as_str()))
        .filter_map(|rest| {
            let (le, count) = rest.split_once("\"} ")?;
            let le = if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? };
            Some((le, count.trim().parse().ok()?))
        })
        .collect()
}

/// The `p`th percentile in ms of the observations between two scrapes of one histogram,
/// interpolated inside its bucket as Prometheus' `histogram_quantile` does; `None` if no
/// observation. Past the last finite bound it is that bound (read: "more than").
fn bucket_pct(before: &[(f64, u64)], after: &[(f64, u64)], p: f64) -> Option<f64> {
    let diff: Vec<(f64, u64)> = after
        .iter()
        .map(|&(le, n)| (le, n - before.iter().find(|b| b.0 == le).map_or(0, |b| b.1)))
        .collect();
    let total = diff.last()?.1;
    if total == 0 {
        return None;
    }
    let rank = p / 100.0 * total as f64;
    let (mut low, mut below) = (0.0, 0u64);
    for &(le, n) in &diff {
        if n as f64 >= rank {
            if le.is_infinite() {
                return Some(low * 1e3);
            }
            let inside = (n - below) as f64;
            let at = if inside > 0.0 { (rank - below as f64) / inside } else { 1.0 };
            return Some((low + (le - low) * at) * 1e3);
        }
        (low, below) = (le, n);
    }
    None
}

/// The relay's own fan-out between two scrapes: per event to the last socket, and per socket.
struct RelaySide {
    events: u64,
    last_p50: Option<f64>,
    last_p99: Option<f64>,
    socket_p50: Option<f64>,
    socket_p99: Option<f64>,
}

const FANOUT: &str = "showrunner_relay_fanout_seconds";
const PER_SOCKET: &str = "showrunner_relay_socket_seconds";

fn relay_side(before: &str, after: &str) -> RelaySide {
    let (lb, la) = (buckets_of(before, FANOUT), buckets_of(after, FANOUT));
    let (sb, sa) = (buckets_of(before, PER_SOCKET), buckets_of(after, PER_SOCKET));
    let events = la.last().map_or(0, |l| l.1) - lb.last().map_or(0, |l| l.1);
    RelaySide {
        events,
        last_p50: bucket_pct(&lb, &la, 50.0),
        last_p99: bucket_pct(&lb, &la, 99.0),
        socket_p50: bucket_pct(&sb, &sa, 50.0),
        socket_p99: bucket_pct(&sb, &sa, 99.0),
    }
}

impl RelaySide {
    fn text(&self) -> String {
        let f = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
        format!(
            "relay fan-out ms (to the last socket) p50={} p99={} per socket p50={} p99={} ({} events)",
            f(self.last_p50), f(self.last_p99), f(self.socket_p50), f(self.socket_p99), self.events
        )
    }

    fn json(&self) -> serde_json::Value {
        json!({"relay_events": self.events, "relay_last_p50_ms": self.last_p50, "relay_last_p99_ms": self.last_p99,
            "relay_socket_p50_ms": self.socket_p50, "relay_socket_p99_ms": self.socket_p99})
    }
}

fn pct_sorted(v: &[u64], p: f64) -> u64 {
    if v.is_empty() {
        return 0;
    }
    let k = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
    v[k.min(v.len()) - 1]
}

// ---------------- protocol layer (the swappable part) ----------------
#[derive(Clone, Copy, PartialEq, Debug)]
enum Proto {
    Eio,
    Json,
    /// The peer kit's unadapted `json` (`{"op":"sub"}`), for its bare `ws-relay.js`.
    JsonSub,
}
enum In<'a> {
    Event(&'a str),
    Reply(&'static str),
    SubAck,
    Other,
}
impl Proto {
    fn sub_msg(self, topics: &[String]) -> String {
        let list = topics.iter().map(|t| format!("\"{t}\"")).collect::<Vec<_>>().join(",");
        match self {
            Proto::Eio => format!("420[\"sub\",[{list}]]"),
            Proto::Json => format!("{{\"op\":\"subscribe\",\"topics\":[{list}]}}"),
            Proto::JsonSub => format!("{{\"op\":\"sub\",\"topics\":[{list}]}}"),
        }
    }
    fn classify(self, t: &str) -> In<'_> {
        match self {
            Proto::Eio => {
                let b = t.as_bytes();
                if b.len() > 2 && b[0] == b'4' && b[1] == b'2' {
                    In::Event(t)
                } else if t == "2" {
                    In::Reply("3")
                } else if t.starts_with("430") {
                    In::SubAck
                } else {
                    In::Other
                }
            }
            Proto::Json | Proto::JsonSub => {
                // Showrunner: `{"op":"event","id":..,"topic":..,"event":..,"data":{topic,seq,ts,data},
                // "traceId":..}`; key order is the server's (serde_json may sort keys), so find `op`.
                let op = t.find("\"op\":\"").map(|i| &t[i + 6..]).unwrap_or("");
                if op.starts_with("event\"") {
                    In::Event(t)
                } else if op.starts_with("subscribed\"") {
                    In::SubAck
                } else if op.starts_with("ping\"") {
                    In::Reply("{\"op\":\"pong\"}")
                } else {
                    if op.starts_with("error\"") {
                        eprintln!("server error frame: {t}");
                    }
                    In::Other
                }
            }
        }
    }
}

// ---------------- shared counters ----------------
struct St {
    /// Bumped before each fan-out phase whose events the relay numbers itself (`internal`: from
    /// 0 again). The external publisher numbers each phase's events from where the last one
    /// ended (`--seq0`), so every client's sequence only ever rises and a late frame of an
    /// earlier phase counts as out of order.
    phase: AtomicU64,
    /// Frames a client got a second time (or out of order): by topic and sequence, per client.
    duplicates: AtomicU64,
    /// Frames on a topic the client did not subscribe to.
    misrouted: AtomicU64,
    connected: AtomicUsize,
    subscribed: AtomicUsize,
    closed: AtomicUsize,
    errors: AtomicUsize,
    events: AtomicU64,
    max: AtomicU64,
    hist: Hist,
    last_rx: AtomicU64,
    b_count: AtomicU64,
    b_max: AtomicU64,
    b_hist: Hist,
}

fn num_after(s: &str, key: &str) -> u64 {
    match s.find(key) {
        Some(i) => {
            let mut v = 0u64;
            for &c in s.as_bytes()[i + key.len()..].iter() {
                if c.is_ascii_digit() {
                    v = v * 10 + (c - b'0') as u64
                } else {
                    break;
                }
            }
            v
        }
        None => 0,
    }
}

/// What one client has seen: the last sequence number per topic (its room's in the current
/// phase, and the broadcasts'), so a duplicate or a misrouted frame is told, not counted.
struct Seen {
    room: String,
    phase: u64,
    room_seq: Option<u64>,
    all_seq: Option<u64>,
}

/// Every `"topic":"..."` of a frame: the relay's own (Showrunner's frame names the topic it
/// was routed by) and the one the publisher put in the event's data. A frame is on the right
/// topic only if all of them are, so a frame routed to the wrong client is told whichever of
/// the two the relay got wrong.
fn topics_of(s: &str) -> impl Iterator<Item = &str> {
    s.match_indices("\"topic\":\"").map(move |(i, key)| {
        let rest = &s[i + key.len()..];
        rest.find('"').map(|end| &rest[..end]).unwrap_or("")
    })
}

#[inline]
fn on_event(st: &St, seen: &mut Seen, s: &str) {
    let now = now_us();
    let lat = now.saturating_sub(num_after(s, "\"ts\":"));
    st.last_rx.store(now, Relaxed);
    let seq = num_after(s, "\"seq\":");
    let mut topics = topics_of(s).peekable();
    let is_all = topics.peek() == Some(&"all");
    let expected = if is_all { "all" } else { seen.room.as_str() };
    let mut any = false;
    for topic in topics {
        any = true;
        if topic != expected {
            st.misrouted.fetch_add(1, Relaxed);
            return;
        }
    }
    if !any {
        st.misrouted.fetch_add(1, Relaxed);
        return;
    }
    let phase = st.phase.load(Relaxed);
    if phase != seen.phase {
        seen.phase = phase;
        seen.room_seq = None;
    }
    let last = if is_all { &mut seen.all_seq } else { &mut seen.room_seq };
    if last.is_some_and(|l| seq <= l) {
        st.duplicates.fetch_add(1, Relaxed);
        return;
    }
    *last = Some(seq);
    if is_all {
        st.b_count.fetch_add(1, Relaxed);
        st.b_max.fetch_max(lat, Relaxed);
        st.b_hist.record(lat);
    } else {
        st.events.fetch_add(1, Relaxed);
        st.max.fetch_max(lat, Relaxed);
        st.hist.record(lat);
    }
}

struct Cfg {
    proto: Proto,
    url: String,
    addr: String,
    rooms: usize,
    prefix: String,
}

async fn conn_task(id: usize, cfg: Arc<Cfg>, st: Arc<St>, sem: Arc<Semaphore>) {
    let mut permit = Some(sem.acquire_owned().await.unwrap());
    let room = format!("{}{}", cfg.prefix, id % cfg.rooms);
    let topics = vec![room.clone(), "all".to_string()];
    let mut seen = Seen { room, phase: 0, room_seq: None, all_seq: None };
    let r: Res<_> = async {
        let tcp = TcpStream::connect(cfg.addr.as_str()).await?;
        tcp.set_nodelay(true)?;
        let wscfg = WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0);
        let (mut ws, _) = tokio_tungstenite::client_async_with_config(cfg.url.as_str(), tcp, Some(wscfg)).await?;
        st.connected.fetch_add(1, Relaxed);
        if cfg.proto == Proto::Eio {
            // engine.io open packet, then Socket.IO namespace connect
            let mut stage = 0;
            while stage < 2 {
                match ws.next().await {
                    Some(Ok(Message::Text(t))) => {
                        let t = t.as_str();
                        if stage == 0 && t.starts_with('0') {
                            ws.send(Message::text("40")).await?;
                            stage = 1;
                        } else if stage == 1 && t.starts_with("40") {
                            stage = 2;
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(e.into()),
                    None => return Err("closed during handshake".into()),
                }
            }
        }
        ws.send(Message::text(cfg.proto.sub_msg(&topics))).await?;
        Ok(ws)
    }
    .await;
    let mut ws = match r {
        Ok(ws) => ws,
        Err(e) => {
            if st.errors.fetch_add(1, Relaxed) < 5 {
                eprintln!("conn {id}: {e}");
            }
            return;
        }
    };
    while let Some(m) = ws.next().await {
        match m {
            Ok(Message::Text(t)) => match cfg.proto.classify(t.as_str()) {
                In::Event(s) => on_event(&st, &mut seen, s),
                In::Reply(r) => {
                    if ws.send(Message::text(r)).await.is_err() {
                        break;
                    }
                }
                In::SubAck => {
                    st.subscribed.fetch_add(1, Relaxed);
                    permit.take();
                }
                In::Other => {}
            },
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => {}
        }
    }
    st.closed.fetch_add(1, Relaxed);
}

// ---------------- /proc helpers ----------------
fn cpu_ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let Some(r) = s.rfind(')') else { return 0 };
    let f: Vec<&str> = s[r + 2..].split_whitespace().collect();
    if f.len() < 13 {
        return 0;
    }
    f[11].parse::<u64>().unwrap_or(0) + f[12].parse::<u64>().unwrap_or(0)
}
fn rss_kb(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}
fn ticks_hz() -> f64 {
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) as f64 }
}

// ---------------- args ----------------
struct Args(Vec<String>);
impl Args {
    fn get(&self, name: &str, def: &str) -> String {
        let k = format!("--{name}");
        self.0.iter().position(|a| *a == k).and_then(|i| self.0.get(i + 1)).cloned().unwrap_or(def.to_string())
    }
    fn num<T: std::str::FromStr>(&self, name: &str, def: &str) -> T
    where
        T::Err: std::fmt::Debug,
    {
        self.get(name, def).parse().expect(name)
    }
}

fn main() {
    let a = Args(std::env::args().collect());
    let cmd = a.0.get(1).cloned().unwrap_or_default();
    let threads: usize = a.num("threads", "1");
    let rt = if threads <= 1 || cmd == "publish" {
        tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build().unwrap()
    };
    match cmd.as_str() {
        "run" => rt.block_on(run(a)).unwrap(),
        "publish" => rt.block_on(publish(a)).unwrap(),
        _ => {
            eprintln!("usage: loadgen run|publish [--options]  (see README.md)");
            std::process::exit(2)
        }
    }
}

// ---------------- publisher process (external-ingest variant) ----------------
async fn publish(a: Args) -> Res<()> {
    let rate: f64 = a.num("rate", "1000");
    let secs: f64 = a.num("secs", "10");
    let rooms: u64 = a.num("rooms", "100");
    let size: usize = a.num("size", "64");
    let prefix = a.get("prefix", "t");
    // The first event's sequence number (the run numbers phases on from each other).
    let seq0: u64 = a.num("seq0", "0");
    let data = "x".repeat(size);
    let mut s = TcpStream::connect(a.get("ingest", "127.0.0.1:3001")).await?;
    s.set_nodelay(true)?;
    let total = (rate * secs) as u64;
    let t0 = now_us();
    let mut sent = 0u64;
    let mut buf = String::with_capacity(1 << 16);
    let mut iv = tokio::time::interval(Duration::from_millis(1));
    iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    while sent < total {
        iv.tick().await;
        let now = now_us();
        let due = (((now - t0) as f64 * rate / 1e6) as u64).min(total);
        buf.clear();
        while sent < due {
            use std::fmt::Write;
            let _ = writeln!(
                buf,
                "{{\"op\":\"pub\",\"topic\":\"{prefix}{}\",\"seq\":{},\"ts\":{now},\"data\":\"{data}\"}}",
                sent % rooms,
                seq0 + sent
            );
            sent += 1;
        }
        if !buf.is_empty() {
            s.write_all(buf.as_bytes()).await?;
        }
    }
    s.flush().await?;
    eprintln!("publisher: sent {sent} events in {:.2}s", (now_us() - t0) as f64 / 1e6);
    Ok(())
}

// ---------------- orchestrator ----------------
async fn run(a: Args) -> Res<()> {
    let proto = match a.get("proto", "eio").as_str() {
        "eio" => Proto::Eio,
        "json" => Proto::Json,
        "json-sub" => Proto::JsonSub,
        p => panic!("unknown proto {p}"),
    };
    let url = a.get("url", "ws://127.0.0.1:3000/socket.io/?EIO=4&transport=websocket");
    let addr = url.trim_start_matches("ws://").split('/').next().unwrap().to_string();
    let ingest = a.get("ingest", "127.0.0.1:3001");
    let pid: u32 = a.num("server-pid", "0");
    let conns: usize = a.num("conns", "10000");
    let rooms: usize = a.num("rooms", "100");
    let prefix = a.get("prefix", "t");
    let size: usize = a.num("size", "64");
    let inflight: usize = a.num("inflight", "256");
    let warm: u64 = a.num("warmup", "2");
    let secs: u64 = a.num("secs", "10");
    let bcast: usize = a.num("bcast", "30");
    let label = a.get("label", "");
    // The relay's /metrics, if it has the fan-out histograms (Showrunner): read at each
    // window's edges and printed beside what the clients saw.
    let metrics = a.get("metrics", "");
    // A step whose client-side p99 passes this ends the ramp, as a saturated one does.
    let stop_p99_ms: f64 = a.num("stop-p99-ms", "1000");
    let out = a.get("out", "");
    let rates: Vec<f64> = a.get("rates", "100,500,1000,2000").split(',').filter(|s| !s.is_empty()).map(|s| s.parse().unwrap()).collect();
    let sources: Vec<String> = a.get("sources", "internal,external").split(',').filter(|s| !s.is_empty()).map(String::from).collect();
    let hz = ticks_hz();
    let me = std::process::id();
    let mut outf = if out.is_empty() { None } else { Some(std::fs::OpenOptions::new().create(true).append(true).open(&out)?) };
    let mut emit = |v: serde_json::Value| {
        if let Some(f) = outf.as_mut() {
            let _ = writeln!(f, "{v}");
        }
    };

    let cfg = Arc::new(Cfg { proto, url, addr, rooms, prefix: prefix.clone() });
    let st = Arc::new(St {
        phase: AtomicU64::new(0),
        duplicates: AtomicU64::new(0),
        misrouted: AtomicU64::new(0),
        connected: AtomicUsize::new(0),
        subscribed: AtomicUsize::new(0),
        closed: AtomicUsize::new(0),
        errors: AtomicUsize::new(0),
        events: AtomicU64::new(0),
        max: AtomicU64::new(0),
        hist: Hist::new(),
        last_rx: AtomicU64::new(0),
        b_count: AtomicU64::new(0),
        b_max: AtomicU64::new(0),
        b_hist: Hist::new(),
    });

    // ---- a. connection capacity ----
    let rss0 = rss_kb(pid);
    let (s_cpu0, g_cpu0) = (cpu_ticks(pid), cpu_ticks(me));
    let t0 = now_us();
    let sem = Arc::new(Semaphore::new(inflight));
    for i in 0..conns {
        tokio::spawn(conn_task(i, cfg.clone(), st.clone(), sem.clone()));
    }
    let mut t_conn = 0u64;
    let mut last_print = t0;
    loop {
        sleep(Duration::from_millis(10)).await;
        let now = now_us();
        let (c, s) = (st.connected.load(Relaxed), st.subscribed.load(Relaxed));
        if t_conn == 0 && c >= conns {
            t_conn = now - t0;
        }
        if s >= conns {
            break;
        }
        if st.errors.load(Relaxed) + st.closed.load(Relaxed) > 0 && c + st.errors.load(Relaxed) >= conns && now - t0 > 5_000_000 && s + st.errors.load(Relaxed) >= conns {
            break;
        }
        if now - last_print > 2_000_000 {
            eprintln!("  connecting: {c} connected, {s} subscribed, {} errors", st.errors.load(Relaxed));
            last_print = now;
        }
        if now - t0 > 300_000_000 {
            return Err("connect phase timed out".into());
        }
    }
    let t_sub = now_us() - t0;
    let (s_cpu1, g_cpu1) = (cpu_ticks(pid), cpu_ticks(me));
    sleep(Duration::from_secs(3)).await;
    let rss1 = rss_kb(pid);
    let n_ok = st.subscribed.load(Relaxed);
    let per_conn = (rss1 as f64 - rss0 as f64) / n_ok.max(1) as f64;
    println!(
        "[{label}] capacity: {n_ok}/{conns} subscribed, errors {}; all connected in {:.2}s, all subscribed in {:.2}s; server RSS {:.1} -> {:.1} MiB = {:.1} KiB/conn; server CPU {:.2}s, gen CPU {:.2}s, gen RSS {:.1} MiB",
        st.errors.load(Relaxed),
        t_conn as f64 / 1e6,
        t_sub as f64 / 1e6,
        rss0 as f64 / 1024.0,
        rss1 as f64 / 1024.0,
        per_conn,
        (s_cpu1 - s_cpu0) as f64 / hz,
        (g_cpu1 - g_cpu0) as f64 / hz,
        rss_kb(me) as f64 / 1024.0
    );
    emit(json!({"label": label, "phase": "capacity", "conns": conns, "subscribed": n_ok, "errors": st.errors.load(Relaxed),
        "connect_all_s": t_conn as f64 / 1e6, "subscribe_all_s": t_sub as f64 / 1e6, "rss0_kb": rss0, "rss1_kb": rss1,
        "kb_per_conn": per_conn, "server_cpu_s": (s_cpu1 - s_cpu0) as f64 / hz, "gen_cpu_s": (g_cpu1 - g_cpu0) as f64 / hz, "gen_rss_kb": rss_kb(me)}));

    let mut ing = TcpStream::connect(ingest.as_str()).await?;
    ing.set_nodelay(true)?;
    let per_room = (n_ok / rooms) as f64;
    let exe = std::env::current_exe()?;

    // ---- b. fan-out at rising rates ----
    let mut next_seq = 0u64;
    let mut after_internal = false;
    for src in &sources {
        for &rate in &rates {
            let total_secs = warm + secs + 1;
            st.events.store(0, Relaxed);
            let mut child = None;
            if src == "internal" || after_internal {
                // The relay's own numbering starts again at 0 (and after it, the publisher's).
                st.phase.fetch_add(1, Relaxed);
            }
            after_internal = src == "internal";
            if src == "internal" {
                ing.write_all(
                    format!("{{\"op\":\"rate\",\"rate\":{rate},\"secs\":{total_secs},\"rooms\":{rooms},\"size\":{size},\"prefix\":\"{prefix}\"}}\n").as_bytes(),
                )
                .await?;
            } else {
                child = Some(
                    tokio::process::Command::new(&exe)
                        .args(["publish", "--ingest", &ingest, "--rate", &rate.to_string(), "--secs", &total_secs.to_string()])
                        .args(["--rooms", &rooms.to_string(), "--size", &size.to_string(), "--prefix", &prefix])
                        .args(["--seq0", &next_seq.to_string()])
                        .spawn()?,
                );
                next_seq += (rate * total_secs as f64) as u64;
            }
            let pub_start = now_us();
            let cpid = child.as_ref().and_then(|c| c.id()).unwrap_or(0);
            sleep(Duration::from_secs(warm)).await;
            st.hist.reset();
            st.max.store(0, Relaxed);
            let e0 = st.events.load(Relaxed);
            let (s0, g0, p0) = (cpu_ticks(pid), cpu_ticks(me), if cpid > 0 { cpu_ticks(cpid) } else { 0 });
            let m0 = if metrics.is_empty() { String::new() } else { scrape(&metrics).await };
            let w0 = now_us();
            sleep(Duration::from_secs(secs)).await;
            let w1 = now_us();
            let e1 = st.events.load(Relaxed);
            let (s1, g1, p1) = (cpu_ticks(pid), cpu_ticks(me), if cpid > 0 { cpu_ticks(cpid) } else { 0 });
            let relay = if metrics.is_empty() { None } else { Some(relay_side(&m0, &scrape(&metrics).await)) };
            let snap = st.hist.snap();
            let mx = st.max.load(Relaxed);
            if let Some(mut c) = child {
                c.wait().await?;
            } else {
                let end = pub_start + total_secs * 1_000_000;
                let now = now_us();
                if end > now {
                    sleep(Duration::from_micros(end - now)).await;
                }
            }
            let pub_end = now_us();
            loop {
                sleep(Duration::from_millis(100)).await;
                let now = now_us();
                if now.saturating_sub(st.last_rx.load(Relaxed)) > 1_000_000 || now - pub_end > 120_000_000 {
                    break;
                }
            }
            let drain_ms = (st.last_rx.load(Relaxed) as f64 - pub_end as f64) / 1e3;
            let total_rx = st.events.load(Relaxed);
            let expected = ((rate * total_secs as f64) as u64) * per_room as u64;
            let win = (w1 - w0) as f64 / 1e6;
            let dps = (e1 - e0) as f64 / win;
            let target = rate * per_room;
            let (p50, p90, p99, p999) = (pct(&snap, 50.0), pct(&snap, 90.0), pct(&snap, 99.0), pct(&snap, 99.9));
            let scpu = (s1 - s0) as f64 / hz / win * 100.0;
            let gcpu = (g1 - g0) as f64 / hz / win * 100.0;
            let pcpu = (p1 - p0) as f64 / hz / win * 100.0;
            // Fresh frames only (duplicates and misrouted ones are not counted), so more than
            // expected cannot happen (with every room the same size); it would be a bug here.
            if n_ok == conns && conns % rooms == 0 {
                assert!(total_rx <= expected, "counted {total_rx} deliveries, only {expected} possible");
            }
            let saturated = p99 > 1_000_000 || dps < 0.95 * target || drain_ms > 1000.0 || total_rx < expected;
            println!(
                "[{label}] fanout src={src:8} rate={rate:6} ev/s target={target:8.0}/s delivered={dps:9.0}/s lat ms p50={:.2} p90={:.2} p99={:.2} p99.9={:.2} max={:.2} | server CPU {scpu:5.1}% gen CPU {gcpu:5.1}% pub CPU {pcpu:4.1}% gen/server {:.2} | drain {drain_ms:.0} ms, rx {total_rx}/{expected}{}",
                p50 as f64 / 1e3, p90 as f64 / 1e3, p99 as f64 / 1e3, p999 as f64 / 1e3, mx as f64 / 1e3,
                gcpu / scpu.max(0.01),
                if saturated { "  SATURATED" } else { "" }
            );
            if let Some(relay) = &relay {
                println!("[{label}]   {}", relay.text());
            }
            let mut line = json!({"label": label, "phase": "fanout", "source": src, "rate": rate, "target_dps": target, "delivered_dps": dps,
                "p50_ms": p50 as f64 / 1e3, "p90_ms": p90 as f64 / 1e3, "p99_ms": p99 as f64 / 1e3, "p999_ms": p999 as f64 / 1e3, "max_ms": mx as f64 / 1e3,
                "server_cpu_pct": scpu, "gen_cpu_pct": gcpu, "pub_cpu_pct": pcpu, "drain_ms": drain_ms, "rx": total_rx, "expected": expected,
                "saturated": saturated, "server_rss_kb": rss_kb(pid), "w0_us": w0, "w1_us": w1});
            if let (Some(relay), Some(obj)) = (&relay, line.as_object_mut()) {
                obj.extend(relay.json().as_object().cloned().unwrap_or_default());
            }
            emit(line);
            if saturated || p99 as f64 / 1e3 > stop_p99_ms {
                break;
            }
            sleep(Duration::from_secs(2)).await;
        }
    }

    // ---- c. broadcast to all ----
    let data = "x".repeat(size);
    let mut lasts = Vec::new();
    st.b_hist.reset();
    let m0 = if metrics.is_empty() { String::new() } else { scrape(&metrics).await };
    let (s0, g0) = (cpu_ticks(pid), cpu_ticks(me));
    let mut incomplete = 0;
    for k in 0..bcast {
        st.b_count.store(0, Relaxed);
        st.b_max.store(0, Relaxed);
        let ts = now_us();
        ing.write_all(format!("{{\"op\":\"pub\",\"topic\":\"all\",\"seq\":{k},\"ts\":{ts},\"data\":\"{data}\"}}\n").as_bytes()).await?;
        loop {
            sleep(Duration::from_millis(2)).await;
            if st.b_count.load(Relaxed) as usize >= n_ok {
                break;
            }
            if now_us() - ts > 10_000_000 {
                incomplete += 1;
                break;
            }
        }
        lasts.push(st.b_max.load(Relaxed));
        sleep(Duration::from_millis(250)).await;
    }
    let (s1, g1) = (cpu_ticks(pid), cpu_ticks(me));
    let relay = if metrics.is_empty() { None } else { Some(relay_side(&m0, &scrape(&metrics).await)) };
    lasts.sort();
    let bs = st.b_hist.snap();
    if bcast > 0 {
        println!(
            "[{label}] broadcast x{bcast} to {n_ok}: last client ms p50={:.1} p99={:.1} max={:.1}; per-client latency ms p50={:.1} p99={:.1}; incomplete {incomplete}; server CPU {:.2}s gen CPU {:.2}s",
            pct_sorted(&lasts, 50.0) as f64 / 1e3, pct_sorted(&lasts, 99.0) as f64 / 1e3, *lasts.last().unwrap() as f64 / 1e3,
            pct(&bs, 50.0) as f64 / 1e3, pct(&bs, 99.0) as f64 / 1e3,
            (s1 - s0) as f64 / hz, (g1 - g0) as f64 / hz
        );
        if let Some(relay) = &relay {
            println!("[{label}]   {}", relay.text());
        }
        let mut line = json!({"label": label, "phase": "broadcast", "reps": bcast, "clients": n_ok,
            "last_p50_ms": pct_sorted(&lasts, 50.0) as f64 / 1e3, "last_p99_ms": pct_sorted(&lasts, 99.0) as f64 / 1e3, "last_max_ms": *lasts.last().unwrap() as f64 / 1e3,
            "client_p50_ms": pct(&bs, 50.0) as f64 / 1e3, "client_p99_ms": pct(&bs, 99.0) as f64 / 1e3, "incomplete": incomplete,
            "server_cpu_s": (s1 - s0) as f64 / hz, "gen_cpu_s": (g1 - g0) as f64 / hz});
        if let (Some(relay), Some(obj)) = (&relay, line.as_object_mut()) {
            obj.extend(relay.json().as_object().cloned().unwrap_or_default());
        }
        emit(line);
    }
    let (dupes, misrouted) = (st.duplicates.load(Relaxed), st.misrouted.load(Relaxed));
    println!("[{label}] end: server RSS {:.1} MiB, gen RSS {:.1} MiB, closed {}; frames seen twice or out of order {dupes}, misrouted {misrouted}", rss_kb(pid) as f64 / 1024.0, rss_kb(me) as f64 / 1024.0, st.closed.load(Relaxed));
    emit(json!({"label": label, "phase": "end", "server_rss_kb": rss_kb(pid), "gen_rss_kb": rss_kb(me), "closed": st.closed.load(Relaxed),
        "duplicates": dupes, "misrouted": misrouted}));
    if dupes + misrouted > 0 {
        return Err(format!("{dupes} frames seen twice or out of order, {misrouted} on a topic not subscribed").into());
    }
    Ok(())
}
