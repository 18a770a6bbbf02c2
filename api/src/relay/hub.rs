//! The fan-out: which connected client wants which topic. One broker consumer per api instance
//! feeds [`Hub::dispatch`], which finds the subscribers through a topic trie and hands each a
//! shared, already-serialized frame through its bounded queue. A full queue closes that client;
//! nobody else waits for it. Each frame counts the queues it is still in, so the time from its
//! arrival to its write into the last matching socket is measured where it happens
//! (`showrunner_relay_fanout_seconds`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use axum::extract::ws::Utf8Bytes;
use showrunner_shared::metrics;
use showrunner_shared::topics::TopicIndex;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub type ClientId = u64;

/// One event on its way to clients: its place in the event log and its frame, serialized once
/// and shared (the queues carry a pointer, the socket sends the same bytes to everyone).
#[derive(Debug)]
pub struct FrameData {
    pub seq: i64,
    pub topic: String,
    /// Who may receive it, decided once per event.
    pub audience: Audience,
    pub text: Utf8Bytes,
    /// When the relay took the event (from the broker, or from the log on a catch-up).
    pub arrived: Instant,
    /// Deliveries of this frame not yet released, plus [`UNCOUNTED`] until the dispatch knows
    /// how many it made: whoever brings it to zero saw the last socket get the frame.
    outstanding: AtomicUsize,
}

/// Far more than any dispatch makes; see [`FrameData::outstanding`].
const UNCOUNTED: usize = usize::MAX / 2;

impl FrameData {
    pub fn new(
        seq: i64,
        topic: String,
        audience: Audience,
        text: Utf8Bytes,
        arrived: Instant,
    ) -> Self {
        Self { seq, topic, audience, text, arrived, outstanding: AtomicUsize::new(UNCOUNTED) }
    }

    fn release(&self, n: usize) {
        if self.outstanding.fetch_sub(n, Ordering::AcqRel) == n {
            metrics::RELAY_FANOUT_SECONDS.observe(self.arrived.elapsed());
        }
    }
}

/// A frame in one client's queue. Dropping it (written to the socket, skipped as already sent,
/// or left in the queue of a client that went away) releases that client's share of the frame.
#[derive(Debug)]
pub struct Delivery(Frame);

impl std::ops::Deref for Delivery {
    type Target = FrameData;
    fn deref(&self) -> &FrameData {
        &self.0
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        self.0.release(1);
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

pub type Frame = Arc<FrameData>;

struct Client {
    user: Viewer,
    patterns: Vec<String>,
    queue: mpsc::Sender<Delivery>,
    /// Cancelled when the client fell behind: its session closes it.
    overflow: CancellationToken,
}

#[derive(Default)]
struct Inner {
    index: TopicIndex<ClientId>,
    clients: HashMap<ClientId, Client>,
}

#[derive(Default)]
pub struct Hub {
    inner: RwLock<Inner>,
    next: AtomicU64,
    pub delivered: AtomicU64,
    pub overflowed: AtomicU64,
    connections: AtomicUsize,
    /// Open connections per user, for `limits.max_connections_per_user`.
    per_user: Mutex<HashMap<Uuid, usize>>,
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

/// What a session gets when it registers.
pub struct Registration {
    pub id: ClientId,
    pub frames: mpsc::Receiver<Delivery>,
    pub overflow: CancellationToken,
}

impl Hub {
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

    pub fn register(&self, user: Viewer, buffer: usize) -> Registration {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (queue, frames) = mpsc::channel(buffer);
        let overflow = CancellationToken::new();
        let client = Client { user, patterns: Vec::new(), queue, overflow: overflow.clone() };
        self.write().clients.insert(id, client);
        self.connections.fetch_add(1, Ordering::Relaxed);
        Registration { id, frames, overflow }
    }

    pub fn unregister(&self, id: ClientId) {
        let mut inner = self.write();
        if let Some(client) = inner.clients.remove(&id) {
            for pattern in &client.patterns {
                inner.index.remove(pattern, id);
            }
            self.connections.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Adds a pattern; `false` if the client already has it.
    pub fn subscribe(&self, id: ClientId, pattern: &str) -> bool {
        let mut inner = self.write();
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
        let mut inner = self.write();
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
        self.read().clients.get(&id).map(|c| c.patterns.clone()).unwrap_or_default()
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// Hands `frame` to every client whose patterns match and who may see it.
    pub fn dispatch(&self, frame: &Frame) {
        // Every `Delivery` made is released once, whether queued or refused.
        let mut made = 0;
        let inner = self.read();
        for id in inner.index.matching(&frame.topic) {
            let Some(client) = inner.clients.get(&id) else {
                continue;
            };
            if !frame.audience.includes(client.user) {
                continue;
            }
            made += 1;
            match client.queue.try_send(Delivery(frame.clone())) {
                Ok(()) => {
                    self.delivered.fetch_add(1, Ordering::Relaxed);
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    if !client.overflow.is_cancelled() {
                        self.overflowed.fetch_add(1, Ordering::Relaxed);
                        client.overflow.cancel();
                    }
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
        drop(inner);
        // No recipient, no fan-out to time.
        if made > 0 {
            frame.release(UNCOUNTED - made);
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
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
    use super::*;

    fn frame(topic: &str, seq: i64) -> Frame {
        framed(topic, seq, None)
    }

    fn framed(topic: &str, seq: i64, actor: Option<Uuid>) -> Frame {
        Arc::new(FrameData::new(
            seq,
            topic.into(),
            Audience::of(topic, actor),
            format!("{{\"seq\":{seq}}}").into(),
            Instant::now(),
        ))
    }

    fn member(id: Uuid) -> Viewer {
        Viewer { id, admin: false }
    }

    #[tokio::test]
    async fn events_reach_matching_clients_only() {
        let hub = Hub::default();
        let (alice, bob) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let mut a = hub.register(member(alice), 8);
        let mut b = hub.register(member(bob), 8);
        hub.subscribe(a.id, "episode.*.created");
        hub.subscribe(b.id, "job.#");
        hub.subscribe(b.id, "#");
        hub.dispatch(&frame("episode.9.created", 1));
        hub.dispatch(&frame(&format!("user.{alice}.notification"), 2));
        assert_eq!(a.frames.try_recv().map(|f| f.seq).ok(), Some(1));
        assert!(a.frames.try_recv().is_err());
        // Bob's `#` reaches the episode but not Alice's own topic.
        assert_eq!(b.frames.try_recv().map(|f| f.seq).ok(), Some(1));
        assert!(b.frames.try_recv().is_err());
        hub.unregister(a.id);
        hub.unregister(b.id);
        assert_eq!(hub.connections(), 0);
    }

    #[tokio::test]
    async fn a_full_queue_marks_only_that_client() {
        let hub = Hub::default();
        let slow = hub.register(member(Uuid::from_u128(1)), 2);
        let mut fast = hub.register(member(Uuid::from_u128(2)), 2);
        hub.subscribe(slow.id, "#");
        hub.subscribe(fast.id, "#");
        for seq in 0..3 {
            hub.dispatch(&frame("episode.1.updated", seq));
            while fast.frames.try_recv().is_ok() {}
        }
        assert!(slow.overflow.is_cancelled());
        assert!(!fast.overflow.is_cancelled());
    }

    #[tokio::test]
    async fn a_frame_counts_the_queues_it_is_still_in() {
        let hub = Hub::default();
        let mut a = hub.register(member(Uuid::from_u128(1)), 8);
        let b = hub.register(member(Uuid::from_u128(2)), 8);
        let _idle = hub.register(member(Uuid::from_u128(3)), 8);
        hub.subscribe(a.id, "#");
        hub.subscribe(b.id, "episode.#");
        let sent = frame("episode.1.updated", 1);
        hub.dispatch(&sent);
        assert_eq!(sent.outstanding.load(Ordering::Relaxed), 2);
        drop(a.frames.try_recv());
        assert_eq!(sent.outstanding.load(Ordering::Relaxed), 1);
        // A client that goes away releases what its queue held.
        drop(b);
        assert_eq!(sent.outstanding.load(Ordering::Relaxed), 0);
        // An event nobody matches is not a fan-out: it stays uncounted.
        let unheard = frame("user.x.notification", 2);
        hub.dispatch(&unheard);
        assert_eq!(unheard.outstanding.load(Ordering::Relaxed), UNCOUNTED);
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

    #[test]
    fn job_events_reach_their_creator_and_admins_system_events_admins() {
        let (alice, bob) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let admin = Viewer { id: Uuid::from_u128(3), admin: true };
        let job = Audience::of("job.5.completed", Some(alice));
        assert!(job.includes(member(alice)) && job.includes(admin));
        assert!(!job.includes(member(bob)));
        let system = Audience::of("system.jobs.started", None);
        assert!(system.includes(admin) && !system.includes(member(alice)));

        let hub = Hub::default();
        let mut b = hub.register(member(bob), 8);
        hub.subscribe(b.id, "#");
        hub.dispatch(&framed("job.5.completed", 1, Some(alice)));
        hub.dispatch(&framed("job.6.completed", 2, Some(bob)));
        assert_eq!(b.frames.try_recv().map(|f| f.seq).ok(), Some(2));
        assert!(b.frames.try_recv().is_err());
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
