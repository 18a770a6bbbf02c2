//! The fan-out: which connected client wants which topic. One broker consumer per api instance
//! feeds [`Hub::dispatch`]; the clients are split into shards, each with a task that finds its
//! subscribers through a topic trie and writes the event's frame, encoded once, straight into
//! each one's socket ([`Outlet`]). A client whose socket does not keep up is closed; nobody else
//! waits for it. Each frame counts the shards and the sockets it still waits for, so the time
//! from its arrival to its write into the last matching socket is measured where it happens
//! (`showrunner_relay_fanout_seconds`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Instant;

use bytes::Bytes;
use showrunner_shared::metrics;
use showrunner_shared::topics::TopicIndex;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::outlet::Outlet;
use super::wire;

pub type ClientId = u64;

/// Events a shard's queue holds before the broker consumer waits for it.
const SHARD_QUEUE: usize = 1024;

/// One event on its way to clients: its place in the event log and its WebSocket frame,
/// encoded once and shared (every socket gets the same bytes).
#[derive(Debug)]
pub struct FrameData {
    pub seq: i64,
    pub topic: String,
    /// Who may receive it, decided once per event.
    pub audience: Audience,
    /// The whole WebSocket frame, header included.
    pub wire: Bytes,
    /// When the relay took the event (from the broker, or from the log on a catch-up).
    pub arrived: Instant,
    /// Shards still walking their clients for it, plus its frames waiting in sockets' queues:
    /// whoever brings it to zero saw the last socket get the frame.
    outstanding: AtomicUsize,
    /// Whether any socket matched (an event nobody wants is not a fan-out to time).
    reached: AtomicBool,
}

impl FrameData {
    /// The event's frame from its client text (`{"op":"event",...}`).
    pub fn new(seq: i64, topic: String, audience: Audience, text: &str, arrived: Instant) -> Self {
        Self {
            seq,
            topic,
            audience,
            wire: wire::frame(wire::TEXT, text.as_bytes()),
            arrived,
            outstanding: AtomicUsize::new(0),
            reached: AtomicBool::new(false),
        }
    }

    fn release(&self) {
        if self.outstanding.fetch_sub(1, Ordering::AcqRel) == 1
            && self.reached.load(Ordering::Relaxed)
        {
            metrics::RELAY_FANOUT_SECONDS.observe(self.arrived.elapsed());
        }
    }
}

pub type Frame = Arc<FrameData>;

/// A frame waiting in one socket's queue; dropping it (written, or dropped with the queue)
/// releases it from its fan-out count.
pub struct Delivery(Frame);

impl Delivery {
    /// Only while a shard still counts `frame` (it walks its clients): the count cannot reach
    /// zero in between.
    pub(super) fn new(frame: &Frame) -> Self {
        frame.outstanding.fetch_add(1, Ordering::AcqRel);
        Self(frame.clone())
    }
}

impl std::ops::Deref for Delivery {
    type Target = FrameData;
    fn deref(&self) -> &FrameData {
        &self.0
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        self.0.release();
    }
}

/// Who may receive an event. `user.<id>.…` topics are their owner's alone (not even admins see
/// another user's notifications); a job's events are its creator's (the event's actor) and the
/// admins', like `GET /jobs/{id}`; `system.…` events are for admins; everything else (episodes)
/// is for every member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    Everyone,
    Owner(Uuid),
    OwnerAndAdmins(Uuid),
    Admins,
}

impl Audience {
    /// The audience of an event on `topic` whose actor is `actor`.
    pub fn of(topic: &str, actor: Option<Uuid>) -> Self {
        let mut words = topic.split('.');
        match (words.next(), words.next()) {
            (Some("user"), Some(owner)) => Uuid::parse_str(owner).map_or(Self::Admins, Self::Owner),
            (Some("job"), _) => actor.map_or(Self::Admins, Self::OwnerAndAdmins),
            (Some("system"), _) => Self::Admins,
            _ => Self::Everyone,
        }
    }

    pub fn includes(self, viewer: Viewer) -> bool {
        match self {
            Self::Everyone => true,
            Self::Owner(owner) => viewer.id == owner,
            Self::OwnerAndAdmins(owner) => viewer.admin || viewer.id == owner,
            Self::Admins => viewer.admin,
        }
    }
}

/// A connected user, as far as delivery needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Viewer {
    pub id: Uuid,
    pub admin: bool,
}

struct Client {
    user: Viewer,
    patterns: Vec<String>,
    outlet: Arc<Outlet>,
}

#[derive(Default)]
struct Inner {
    index: TopicIndex<ClientId>,
    clients: HashMap<ClientId, Client>,
}

/// Some of the clients, walked by one task.
#[derive(Default)]
struct Shard {
    inner: RwLock<Inner>,
}

impl Shard {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes `frame` into every socket of this shard whose patterns match and who may see it.
    fn deliver(&self, frame: &Frame) {
        let inner = self.read();
        let mut reached = false;
        for id in inner.index.matching(&frame.topic) {
            let Some(client) = inner.clients.get(&id) else {
                continue;
            };
            if frame.audience.includes(client.user) {
                reached |= client.outlet.live(frame);
            }
        }
        drop(inner);
        if reached {
            frame.reached.store(true, Ordering::Relaxed);
        }
        frame.release();
    }
}

async fn shard_task(shard: Arc<Shard>, mut frames: mpsc::Receiver<Frame>) {
    while let Some(frame) = frames.recv().await {
        shard.deliver(&frame);
    }
}

pub struct Hub {
    shards: Vec<Arc<Shard>>,
    /// The shards' queues, their tasks started by the first dispatch (on the runtime).
    queues: OnceLock<Vec<mpsc::Sender<Frame>>>,
    next: AtomicU64,
    connections: AtomicUsize,
    /// Open connections per user, for `limits.max_connections_per_user`.
    per_user: Mutex<HashMap<Uuid, usize>>,
}

impl Default for Hub {
    /// One shard per core: each writes into its sockets on its own thread.
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 16);
        Self::with_shards(cores)
    }
}

/// One of a user's connection slots, held for the life of the connection.
pub struct Slot {
    hub: Arc<Hub>,
    user: Uuid,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut per_user = self.hub.per_user.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = per_user.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                per_user.remove(&self.user);
            }
        }
    }
}

impl Hub {
    pub fn with_shards(n: usize) -> Self {
        Self {
            shards: (0..n.max(1)).map(|_| Arc::default()).collect(),
            queues: OnceLock::new(),
            next: AtomicU64::new(0),
            connections: AtomicUsize::new(0),
            per_user: Mutex::default(),
        }
    }

    /// Takes one of `user`'s `max` connection slots; `None` when all are taken.
    pub fn reserve(self: &Arc<Self>, user: Uuid, max: usize) -> Option<Slot> {
        let mut per_user = self.per_user.lock().unwrap_or_else(|p| p.into_inner());
        let open = per_user.entry(user).or_default();
        if *open >= max {
            return None;
        }
        *open += 1;
        Some(Slot { hub: self.clone(), user })
    }

    fn shard(&self, id: ClientId) -> &Shard {
        let n = self.shards.len() as u64;
        &self.shards[usize::try_from(id % n).unwrap_or(0)]
    }

    pub fn register(&self, user: Viewer, outlet: Arc<Outlet>) -> ClientId {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let client = Client { user, patterns: Vec::new(), outlet };
        self.shard(id).write().clients.insert(id, client);
        self.connections.fetch_add(1, Ordering::Relaxed);
        id
    }

    pub fn unregister(&self, id: ClientId) {
        let mut inner = self.shard(id).write();
        if let Some(client) = inner.clients.remove(&id) {
            for pattern in &client.patterns {
                inner.index.remove(pattern, id);
            }
            self.connections.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Adds a pattern; `false` if the client already has it.
    pub fn subscribe(&self, id: ClientId, pattern: &str) -> bool {
        let mut inner = self.shard(id).write();
        let Some(client) = inner.clients.get_mut(&id) else {
            return false;
        };
        if client.patterns.iter().any(|p| p == pattern) {
            return false;
        }
        client.patterns.push(pattern.to_string());
        inner.index.insert(pattern, id);
        true
    }

    /// Removes a pattern; `false` if the client did not have it.
    pub fn unsubscribe(&self, id: ClientId, pattern: &str) -> bool {
        let mut inner = self.shard(id).write();
        let Some(client) = inner.clients.get_mut(&id) else {
            return false;
        };
        let before = client.patterns.len();
        client.patterns.retain(|p| p != pattern);
        if client.patterns.len() == before {
            return false;
        }
        inner.index.remove(pattern, id);
        true
    }

    pub fn patterns(&self, id: ClientId) -> Vec<String> {
        self.shard(id).read().clients.get(&id).map(|c| c.patterns.clone()).unwrap_or_default()
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// Hands `frame` to every shard, in order: each writes it into its matching sockets. Waits
    /// only when a shard is more than [`SHARD_QUEUE`] events behind.
    pub async fn dispatch(&self, frame: &Frame) {
        let queues = self.queues.get_or_init(|| {
            self.shards
                .iter()
                .map(|shard| {
                    let (queue, frames) = mpsc::channel(SHARD_QUEUE);
                    tokio::spawn(shard_task(shard.clone(), frames));
                    queue
                })
                .collect()
        });
        frame.outstanding.store(queues.len(), Ordering::Release);
        for queue in queues {
            if queue.send(frame.clone()).await.is_err() {
                frame.release();
            }
        }
    }
}

/// May this user subscribe to `pattern`? Only a `user.` pattern naming someone else is refused;
/// wildcards that could reach other users' topics are filtered at delivery by [`may_see`].
pub fn may_subscribe(user: Uuid, pattern: &str) -> bool {
    let mut words = pattern.split('.');
    match (words.next(), words.next()) {
        (Some("user"), Some(owner)) => Uuid::parse_str(owner).is_ok_and(|o| o == user),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    fn frame(topic: &str, seq: i64) -> Frame {
        framed(topic, seq, None, "")
    }

    fn framed(topic: &str, seq: i64, actor: Option<Uuid>, pad: &str) -> Frame {
        let text = format!("{{\"seq\":{seq},\"pad\":\"{pad}\"}}");
        Arc::new(FrameData::new(
            seq,
            topic.into(),
            Audience::of(topic, actor),
            &text,
            Instant::now(),
        ))
    }

    fn member(id: Uuid) -> Viewer {
        Viewer { id, admin: false }
    }

    /// A connected socket pair: the relay's end in an outlet queueing at most `limit` frames,
    /// and the client's end.
    async fn socket(limit: usize) -> (Arc<Outlet>, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let server = accepted.expect("accept").0;
        (Arc::new(Outlet::new(server, Box::new(()), limit)), client.expect("connect"))
    }

    /// Waits until the shards are done with `frames` (and no socket's queue holds them).
    async fn settled(frames: &[&Frame]) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while frames.iter().any(|f| f.outstanding.load(Ordering::Acquire) > 0) {
            assert!(Instant::now() < deadline, "frames not delivered");
            tokio::task::yield_now().await;
        }
    }

    /// Dispatches `frames` in order and waits until the shards are done with them.
    async fn deliver(hub: &Hub, frames: &[&Frame]) {
        for frame in frames {
            hub.dispatch(frame).await;
        }
        settled(frames).await;
    }

    /// The seqs of the event frames the client has received.
    async fn seqs(client: &mut TcpStream) -> Vec<i64> {
        let mut bytes = Vec::new();
        let mut buf = [0u8; 4096];
        let wait = Duration::from_millis(100);
        while let Ok(Ok(n @ 1..)) = tokio::time::timeout(wait, client.read(&mut buf)).await {
            bytes.extend_from_slice(&buf[..n]);
        }
        let mut seqs = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            assert_eq!(bytes[at], 0x81, "a final text frame");
            let len = usize::from(bytes[at + 1]);
            let event: serde_json::Value =
                serde_json::from_slice(&bytes[at + 2..at + 2 + len]).expect("JSON");
            seqs.push(event["seq"].as_i64().expect("seq"));
            at += 2 + len;
        }
        seqs
    }

    #[tokio::test]
    async fn events_reach_matching_clients_only() {
        let hub = Hub::with_shards(2);
        let (alice, bob) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let ((a_out, mut a), (b_out, mut b)) = (socket(8).await, socket(8).await);
        let a_id = hub.register(member(alice), a_out);
        let b_id = hub.register(member(bob), b_out);
        hub.subscribe(a_id, "episode.*.created");
        hub.subscribe(b_id, "job.#");
        hub.subscribe(b_id, "#");
        let (created, private) =
            (frame("episode.9.created", 1), frame(&format!("user.{alice}.notification"), 2));
        deliver(&hub, &[&created, &private]).await;
        assert_eq!(seqs(&mut a).await, [1]);
        // Bob's `#` reaches the episode but not Alice's own topic.
        assert_eq!(seqs(&mut b).await, [1]);
        hub.unregister(a_id);
        hub.unregister(b_id);
        assert_eq!(hub.connections(), 0);
    }

    #[tokio::test]
    async fn a_socket_that_does_not_keep_up_closes_only_that_client() {
        let hub = Hub::with_shards(2);
        let ((slow, _slow_client), (roomy, _roomy_client)) = (socket(2).await, socket(64).await);
        let slow_id = hub.register(member(Uuid::from_u128(1)), slow.clone());
        let roomy_id = hub.register(member(Uuid::from_u128(2)), roomy.clone());
        hub.subscribe(slow_id, "#");
        hub.subscribe(roomy_id, "#");
        // Nobody reads: 20 MiB is more than the kernel holds for a loopback socket.
        let pad = "x".repeat(1 << 20);
        let frames: Vec<Frame> =
            (1..=20).map(|seq| framed("episode.1.updated", seq, None, &pad)).collect();
        for frame in &frames {
            hub.dispatch(frame).await;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while !slow.overflow.is_cancelled() {
            assert!(Instant::now() < deadline, "the slow client was not marked");
            tokio::task::yield_now().await;
        }
        assert!(!roomy.overflow.is_cancelled());
    }

    #[tokio::test]
    async fn a_frame_counts_the_shards_and_the_queues_it_waits_in() {
        let hub = Hub::with_shards(2);
        let (waiting, _client) = socket(64).await;
        let id = hub.register(member(Uuid::from_u128(1)), waiting.clone());
        hub.subscribe(id, "#");
        let pad = "x".repeat(1 << 20);
        let frames: Vec<Frame> =
            (1..=20).map(|seq| framed("episode.1.updated", seq, None, &pad)).collect();
        for frame in &frames {
            hub.dispatch(frame).await;
        }
        // The last ones wait in the socket's queue (nobody reads); they hold their count.
        let last = frames.last().expect("frames");
        let deadline = Instant::now() + Duration::from_secs(10);
        while last.outstanding.load(Ordering::Acquire) != 1 {
            assert!(Instant::now() < deadline, "the last frame was not queued");
            tokio::task::yield_now().await;
        }
        assert!(last.reached.load(Ordering::Relaxed));
        // A client that goes away releases what its queue held.
        hub.unregister(id);
        drop(waiting);
        settled(&frames.iter().collect::<Vec<_>>()).await;
        // An event nobody matches reaches no one.
        let unheard = frame("user.x.notification", 21);
        deliver(&hub, &[&unheard]).await;
        assert!(!unheard.reached.load(Ordering::Relaxed));
    }

    #[tokio::test]
    async fn a_resume_holds_live_frames_and_lets_through_only_those_it_did_not_replay() {
        let hub = Hub::with_shards(1);
        let (outlet, mut client) = socket(8).await;
        let id = hub.register(member(Uuid::from_u128(1)), outlet.clone());
        hub.subscribe(id, "#");
        let first = frame("episode.1.updated", 1);
        deliver(&hub, &[&first]).await;
        assert_eq!(outlet.hold(), Some(1));
        let held: Vec<Frame> = (2..=4).map(|seq| frame("episode.1.updated", seq)).collect();
        for frame in &held {
            hub.dispatch(frame).await;
        }
        assert_eq!(seqs(&mut client).await, [1]);
        // The replay covered 2 and 3: only 4 follows.
        assert_eq!(outlet.release(3), None);
        assert_eq!(seqs(&mut client).await, [4]);
        let again = frame("episode.1.updated", 4);
        deliver(&hub, &[&again]).await;
        assert_eq!(seqs(&mut client).await, Vec::<i64>::new());
    }

    /// A resume with topics: the subscribe holds live frames and leaves them held, the resume
    /// holds on (keeping them), replays the older events, and only then the held one follows.
    #[tokio::test]
    async fn a_frame_held_by_a_resumes_subscribe_follows_the_replay() {
        let hub = Hub::with_shards(1);
        let (outlet, mut client) = socket(8).await;
        let id = hub.register(member(Uuid::from_u128(1)), outlet.clone());
        assert_eq!(outlet.hold(), None);
        hub.subscribe(id, "#");
        let live = frame("episode.1.updated", 5);
        deliver(&hub, &[&live]).await;
        // The resume's own hold: nothing was sent live, so the replay is not cut short.
        assert_eq!(outlet.hold(), None);
        for seq in [3, 4] {
            outlet.push(frame("episode.1.updated", seq).wire.clone());
        }
        assert_eq!(outlet.release(4), None);
        assert_eq!(seqs(&mut client).await, [3, 4, 5]);
    }

    /// A burst while a replay runs is the server's wait, not a slow client: past the buffer,
    /// the hold lets the frames go and hands their range to the replay, and the connection lives.
    #[tokio::test]
    async fn a_hold_that_outgrows_the_buffer_hands_its_frames_to_the_log() {
        let hub = Hub::with_shards(1);
        let (outlet, mut client) = socket(4).await;
        let id = hub.register(member(Uuid::from_u128(1)), outlet.clone());
        hub.subscribe(id, "#");
        assert_eq!(outlet.hold(), None);
        // Four fit; the fifth lets them all go, the sixth is held again.
        let burst: Vec<Frame> = (11..=16).map(|seq| frame("episode.1.updated", seq)).collect();
        deliver(&hub, &burst.iter().collect::<Vec<_>>()).await;
        assert!(!outlet.overflow.is_cancelled(), "a held burst closed the client");
        assert_eq!(seqs(&mut client).await, Vec::<i64>::new());
        // The replay went through 12: the log must replay 13..=15 next, still held meanwhile.
        assert_eq!(outlet.release(12), Some((12, 15)));
        // Another burst during that replay lets go again, from the held 16 on.
        let more: Vec<Frame> = (17..=21).map(|seq| frame("episode.1.updated", seq)).collect();
        deliver(&hub, &more.iter().collect::<Vec<_>>()).await;
        assert_eq!(outlet.release(15), Some((15, 20)));
        for seq in 13..=20 {
            outlet.push(frame("episode.1.updated", seq).wire.clone());
        }
        // Caught up: the one still held follows, once.
        assert_eq!(outlet.release(20), None);
        assert_eq!(seqs(&mut client).await, (13..=21).collect::<Vec<_>>());
        assert!(!outlet.overflow.is_cancelled());
    }

    #[test]
    fn user_topics_belong_to_their_owner() {
        let me = Uuid::from_u128(7);
        assert!(may_subscribe(me, &format!("user.{me}.#")));
        assert!(!may_subscribe(me, &format!("user.{}.#", Uuid::from_u128(8))));
        assert!(!may_subscribe(me, "user.*.notification"));
        assert!(may_subscribe(me, "*.*.notification"));
        let (me_member, admin) = (member(me), Viewer { id: Uuid::from_u128(9), admin: true });
        let other = Audience::of(&format!("user.{}.notification", Uuid::from_u128(8)), None);
        assert!(!other.includes(me_member) && !other.includes(admin));
        assert!(Audience::of(&format!("user.{me}.command"), None).includes(me_member));
        assert!(Audience::of("episode.1.created", None).includes(me_member));
    }

    #[tokio::test]
    async fn job_events_reach_their_creator_and_admins_system_events_admins() {
        let (alice, bob) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let admin = Viewer { id: Uuid::from_u128(3), admin: true };
        let job = Audience::of("job.5.completed", Some(alice));
        assert!(job.includes(member(alice)) && job.includes(admin));
        assert!(!job.includes(member(bob)));
        let system = Audience::of("system.jobs.started", None);
        assert!(system.includes(admin) && !system.includes(member(alice)));

        let hub = Hub::with_shards(2);
        let (outlet, mut client) = socket(8).await;
        let b = hub.register(member(bob), outlet);
        hub.subscribe(b, "#");
        let (alices, bobs) = (
            framed("job.5.completed", 1, Some(alice), ""),
            framed("job.6.completed", 2, Some(bob), ""),
        );
        deliver(&hub, &[&alices, &bobs]).await;
        assert_eq!(seqs(&mut client).await, [2]);
    }

    #[test]
    fn connection_slots_are_counted_per_user() {
        let hub = Arc::new(Hub::default());
        let (alice, bob) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let first = hub.reserve(alice, 2);
        let second = hub.reserve(alice, 2);
        assert!(first.is_some() && second.is_some());
        assert!(hub.reserve(alice, 2).is_none());
        assert!(hub.reserve(bob, 2).is_some());
        drop(first);
        assert!(hub.reserve(alice, 2).is_some());
    }
}
