//! Floor relay: the leanest WebSocket relay we could write, to measure what this machine can do
//! at best with the same generator and method as Showrunner's relay (no broker, no database, no
//! auth, no resume). It speaks the peer kit's bare relay protocol (`ws-relay.js`):
//!
//!   node-compatible:  client `{"op":"sub","topics":[..]}` (or Showrunner's `"subscribe"`, so
//!                     `loadgen --proto json` works unchanged) -> `{"op":"subscribed","topics":[..]}`;
//!                     events `{"op":"event","topic":..,"seq":..,"ts":..,"data":..}`.
//!   ingest (TCP NDJSON): `{"op":"pub","topic":..,"seq":..,"ts":..,"data":..}` and
//!                     `{"op":"rate","rate":..,"secs":..,"rooms":..,"size":..,"prefix":..}`.
//!
//!   floor [--port 4000] [--ingest-port 4001] [--threads 2] [--shards 2]
//!
//! Where the CPU goes is one loopback `send` per frame per client, so everything else is cut:
//! - each event is serialised once, *including its WebSocket header* (server frames are not
//!   masked), and the same bytes go to every subscriber;
//! - the fan-out writes straight into each socket (`try_write`) from the shard task that walks
//!   the topic's subscriber list: no per-delivery task wake-up, channel or copy. Only a socket
//!   whose kernel buffer is full gets a flush task, which drains its queue with `writev`;
//! - subscribers are split into `--shards` lists, each walked by its own task, so a fan-out can
//!   use both cores of the multi-thread runtime.
//!
//! The handshake and the client-frame parser are hand-written (only `derive_accept_key` comes
//! from tungstenite): the relay then owns the raw `TcpStream` and its write path.
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::io::{self, IoSlice};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;
/// A complete server->client WebSocket frame (header + payload), shared by every recipient.
type Frame = Arc<[u8]>;

/// Frames queued for one client whose socket buffer is full; past this the client is too slow
/// to keep up and is dropped (the generator never is, unless the machine is saturated).
const MAX_PENDING: usize = 4096;
/// Largest client frame accepted (the generator sends subscribes of a few dozen bytes).
const MAX_CLIENT_FRAME: usize = 64 * 1024;

fn now_us() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // CLOCK_MONOTONIC like the generator, which computes latency as its receipt time minus `ts`.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000
}

fn ws_frame(opcode: u8, payload: &[u8]) -> Frame {
    let mut f = Vec::with_capacity(payload.len() + 10);
    f.push(0x80 | opcode);
    match payload.len() {
        n if n < 126 => f.push(n as u8),
        n if n <= 0xffff => {
            f.push(126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(payload);
    f.into()
}

// ---------------- one client's write side ----------------
struct Conn {
    sock: TcpStream,
    shard: usize,
    out: Mutex<Out>,
}
#[derive(Default)]
struct Out {
    /// Frames the kernel did not take yet; non-empty only while a flush task runs.
    pending: VecDeque<Frame>,
    /// Bytes of `pending.front()` already written.
    off: usize,
    flushing: bool,
    dead: bool,
}

impl Conn {
    /// Writes `f` now if nothing is queued (the common case: one `send`), else queues it behind
    /// the frames a flush task is already draining, so the order holds.
    fn send(self: &Arc<Self>, f: &Frame) {
        let Ok(mut o) = self.out.lock() else { return };
        if o.dead {
            return;
        }
        if !o.pending.is_empty() {
            if o.pending.len() >= MAX_PENDING {
                self.kill(&mut o);
            } else {
                o.pending.push_back(f.clone());
            }
            return;
        }
        match self.sock.try_write(f) {
            Ok(n) if n == f.len() => return,
            Ok(n) => o.off = n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => o.off = 0,
            Err(_) => return self.kill(&mut o),
        }
        o.pending.push_back(f.clone());
        o.flushing = true;
        tokio::spawn(flush(self.clone()));
    }

    fn kill(&self, o: &mut Out) {
        o.dead = true;
        o.pending.clear();
        // Wakes the reader task (it sees EOF) so the client leaves its topics.
        unsafe { libc::shutdown(std::os::fd::AsRawFd::as_raw_fd(&self.sock), libc::SHUT_RDWR) };
    }
}

/// Drains a client's queue once its socket is writable again, many frames per `writev`.
async fn flush(c: Arc<Conn>) {
    loop {
        if c.sock.writable().await.is_err() {
            if let Ok(mut o) = c.out.lock() {
                c.kill(&mut o);
                o.flushing = false;
            }
            return;
        }
        let Ok(mut o) = c.out.lock() else { return };
        loop {
            if o.dead || o.pending.is_empty() {
                o.flushing = false;
                return;
            }
            let off = o.off;
            let bufs: Vec<IoSlice> = o
                .pending
                .iter()
                .take(64)
                .enumerate()
                .map(|(i, f)| IoSlice::new(if i == 0 { &f[off..] } else { &f[..] }))
                .collect();
            match c.sock.try_write_vectored(&bufs) {
                Ok(mut n) => {
                    drop(bufs);
                    n += o.off;
                    while let Some(front) = o.pending.front() {
                        if n >= front.len() {
                            n -= front.len();
                            o.pending.pop_front();
                        } else {
                            break;
                        }
                    }
                    o.off = n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    c.kill(&mut o);
                    o.flushing = false;
                    return;
                }
            }
        }
    }
}

// ---------------- subscriber lists ----------------
/// topic -> subscribers of one shard.
type Topics = HashMap<Arc<str>, Vec<Arc<Conn>>>;
/// An event on its way to a shard: its topic and its frame.
type Event = (Arc<str>, Frame);

/// One subscriber map per shard; a shard task reads only its own map.
struct Hub {
    shards: Vec<RwLock<Topics>>,
    tx: Vec<mpsc::UnboundedSender<Event>>,
}

impl Hub {
    fn subscribe(&self, c: &Arc<Conn>, topics: &[Arc<str>]) {
        let Ok(mut m) = self.shards[c.shard].write() else { return };
        for t in topics {
            m.entry(t.clone()).or_default().push(c.clone());
        }
    }
    fn unsubscribe(&self, c: &Arc<Conn>, topics: &[Arc<str>]) {
        let Ok(mut m) = self.shards[c.shard].write() else { return };
        for t in topics {
            if let Some(list) = m.get_mut(t) {
                list.retain(|x| !Arc::ptr_eq(x, c));
            }
        }
    }
    fn publish(&self, topic: &str, seq: &Value, ts: &Value, data: &Value) {
        // Serialised once: the same bytes (header included) go to every subscriber on every shard.
        let mut p = Vec::with_capacity(96 + data.as_str().map_or(16, str::len));
        p.extend_from_slice(b"{\"op\":\"event\",\"topic\":");
        let _ = serde_json::to_writer(&mut p, topic);
        p.extend_from_slice(b",\"seq\":");
        let _ = serde_json::to_writer(&mut p, seq);
        p.extend_from_slice(b",\"ts\":");
        let _ = serde_json::to_writer(&mut p, ts);
        p.extend_from_slice(b",\"data\":");
        let _ = serde_json::to_writer(&mut p, data);
        p.push(b'}');
        let frame = ws_frame(0x1, &p);
        let topic: Arc<str> = topic.into();
        for tx in &self.tx {
            let _ = tx.send((topic.clone(), frame.clone()));
        }
    }
}

async fn shard_task(hub: Arc<Hub>, i: usize, mut rx: mpsc::UnboundedReceiver<Event>) {
    while let Some((topic, frame)) = rx.recv().await {
        let Ok(m) = hub.shards[i].read() else { return };
        if let Some(list) = m.get(&topic) {
            for c in list {
                c.send(&frame);
            }
        }
    }
}

// ---------------- client connections ----------------
/// Reads the HTTP upgrade request and answers 101; returns bytes read past the request.
async fn handshake(sock: &mut TcpStream) -> Res<Vec<u8>> {
    let mut buf = Vec::with_capacity(1024);
    let end = loop {
        sock.readable().await?;
        let mut chunk = [0u8; 2048];
        match sock.try_read(&mut chunk) {
            Ok(0) => return Err("closed during handshake".into()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e.into()),
        }
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 16 * 1024 {
            return Err("request head too large".into());
        }
    };
    let head = std::str::from_utf8(&buf[..end])?;
    let key = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case("sec-websocket-key").then(|| v.trim())
        })
        .ok_or("no Sec-WebSocket-Key")?;
    let resp = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
        derive_accept_key(key.as_bytes())
    );
    sock.write_all(resp.as_bytes()).await?;
    Ok(buf.split_off(end))
}

/// One complete client frame at the start of `buf`: (opcode, unmasked payload, bytes used).
fn parse_frame(buf: &mut [u8]) -> Res<Option<(u8, Vec<u8>, usize)>> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let opcode = buf[0] & 0x0f;
    let masked = buf[1] & 0x80 != 0;
    let (len, mut at) = match buf[1] & 0x7f {
        126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
        127 if buf.len() >= 10 => (u64::from_be_bytes(buf[2..10].try_into()?) as usize, 10),
        126 | 127 => return Ok(None),
        n => (n as usize, 2),
    };
    if len > MAX_CLIENT_FRAME {
        return Err("client frame too large".into());
    }
    let mask = if masked {
        if buf.len() < at + 4 {
            return Ok(None);
        }
        at += 4;
        Some([buf[at - 4], buf[at - 3], buf[at - 2], buf[at - 1]])
    } else {
        None
    };
    if buf.len() < at + len {
        return Ok(None);
    }
    let mut payload = buf[at..at + len].to_vec();
    if let Some(m) = mask {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= m[i & 3];
        }
    }
    Ok(Some((opcode, payload, at + len)))
}

async fn client(mut sock: TcpStream, hub: Arc<Hub>, shard: usize) -> Res<()> {
    sock.set_nodelay(true)?;
    let mut buf = handshake(&mut sock).await?;
    let c = Arc::new(Conn { sock, shard, out: Mutex::new(Out::default()) });
    let mut mine: Vec<Arc<str>> = Vec::new();
    let r: Res<()> = async {
        let mut chunk = vec![0u8; 1024];
        loop {
            while let Some((op, payload, used)) = parse_frame(&mut buf)? {
                buf.drain(..used);
                match op {
                    0x1 => {
                        let Ok(m) = serde_json::from_slice::<Value>(&payload) else { continue };
                        if matches!(m["op"].as_str(), Some("sub" | "subscribe")) {
                            let topics: Vec<Arc<str>> = m["topics"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .filter_map(|t| t.as_str())
                                .map(Arc::from)
                                .collect();
                            hub.subscribe(&c, &topics);
                            mine.extend(topics);
                            let ack =
                                serde_json::json!({"op": "subscribed", "topics": m["topics"]})
                                    .to_string();
                            c.send(&ws_frame(0x1, ack.as_bytes()));
                        }
                    }
                    0x8 => {
                        c.send(&ws_frame(0x8, &payload[..payload.len().min(2)]));
                        return Ok(());
                    }
                    0x9 => c.send(&ws_frame(0xA, &payload)),
                    _ => {}
                }
            }
            c.sock.readable().await?;
            match c.sock.try_read(&mut chunk) {
                Ok(0) => return Ok(()),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    .await;
    hub.unsubscribe(&c, &mine);
    if let Ok(mut o) = c.out.lock() {
        o.dead = true;
        o.pending.clear();
    }
    r
}

// ---------------- ingest (broker stand-in) ----------------
async fn ingest(sock: TcpStream, hub: Arc<Hub>) -> Res<()> {
    sock.set_nodelay(true)?;
    let mut lines = BufReader::with_capacity(64 * 1024, sock).lines();
    let mut timer: Option<tokio::task::JoinHandle<()>> = None;
    while let Some(line) = lines.next_line().await? {
        if line.is_empty() {
            continue;
        }
        let Ok(m) = serde_json::from_str::<Value>(&line) else {
            eprintln!("ingest: bad line: {line}");
            continue;
        };
        match m["op"].as_str() {
            Some("pub") => {
                if let Some(topic) = m["topic"].as_str() {
                    hub.publish(topic, &m["seq"], &m["ts"], &m["data"]);
                }
            }
            Some("rate") => {
                if let Some(t) = timer.take() {
                    t.abort();
                }
                timer = Some(tokio::spawn(rate(hub.clone(), m)));
            }
            _ => {}
        }
    }
    Ok(())
}

/// The relay-internal event source of ws-relay.js (`{"op":"rate"}`): every millisecond, publish
/// the events due so far, each stamped with the time it is published.
async fn rate(hub: Arc<Hub>, c: Value) {
    let r = c["rate"].as_f64().unwrap_or(1000.0);
    let secs = c["secs"].as_f64().unwrap_or(10.0);
    let n = c["rooms"].as_u64().unwrap_or(100).max(1);
    let prefix = c["prefix"].as_str().unwrap_or("t").to_string();
    let data = Value::from("x".repeat(c["size"].as_u64().unwrap_or(64) as usize));
    let total = (r * secs) as u64;
    let t0 = now_us();
    let mut sent = 0u64;
    let mut iv = tokio::time::interval(Duration::from_millis(1));
    iv.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    while sent < total {
        iv.tick().await;
        let due = ((((now_us() - t0) as f64) * r / 1e6) as u64).min(total);
        while sent < due {
            let topic = format!("{prefix}{}", sent % n);
            hub.publish(&topic, &Value::from(sent), &Value::from(now_us()), &data);
            sent += 1;
        }
    }
}

fn arg(args: &[String], name: &str, def: usize) -> usize {
    let k = format!("--{name}");
    args.iter()
        .position(|a| *a == k)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(def)
}

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().collect();
    let (port, ingest_port) = (arg(&args, "port", 4000), arg(&args, "ingest-port", 4001));
    let threads = arg(&args, "threads", 2).max(1);
    let nshards = arg(&args, "shards", 2).max(1);
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build()?;
    rt.block_on(async move {
        let mut tx = Vec::new();
        let mut rxs = Vec::new();
        for _ in 0..nshards {
            let (t, r) = mpsc::unbounded_channel();
            tx.push(t);
            rxs.push(r);
        }
        let hub = Arc::new(Hub { shards: (0..nshards).map(|_| RwLock::new(HashMap::new())).collect(), tx });
        for (i, r) in rxs.into_iter().enumerate() {
            tokio::spawn(shard_task(hub.clone(), i, r));
        }
        let ws = TcpListener::bind(("127.0.0.1", port as u16)).await?;
        let ing = TcpListener::bind(("127.0.0.1", ingest_port as u16)).await?;
        println!(
            "floor relay ws=127.0.0.1:{port} ingest=127.0.0.1:{ingest_port} pid={} threads={threads} shards={nshards}",
            std::process::id()
        );
        let h = hub.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = ing.accept().await {
                let h = h.clone();
                tokio::spawn(async move {
                    if let Err(e) = ingest(s, h).await {
                        eprintln!("ingest: {e}");
                    }
                });
            }
        });
        let mut n = 0usize;
        loop {
            let (s, _) = match ws.accept().await {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and the like: keep serving the clients already connected.
                    eprintln!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            tokio::spawn(client(s, hub.clone(), n % nshards));
            n += 1;
        }
    })
}
