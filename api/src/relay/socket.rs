//! One WebSocket connection: its subscriptions, its heartbeat, resume from the event log, and
//! presence for the episodes it watches. Frames are JSON text: see the contract's WebSocket
//! section. The session reads the socket; events are written into it by the hub's shards
//! ([`Outlet`]), and the session writes what the kernel did not take at once.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sea_orm::FromQueryResult;
use serde::Deserialize;
use showrunner_shared::contracts::Actor;
use showrunner_shared::db::sql;
use showrunner_shared::metrics;
use showrunner_shared::topics;
use tokio::net::TcpStream;
use uuid::Uuid;

use super::hub::{ClientId, Slot, Viewer, may_subscribe};
use super::outlet::Outlet;
use super::wire::{self, Incoming, WireError};
use super::{frame_text, presence};
use crate::extract::User;
use crate::state::AppState;

/// Close code sent to a client whose send buffer overflowed.
pub const CLOSE_TOO_SLOW: u16 = 4008;
const CLOSE_GOING_AWAY: u16 = 1001;
/// RFC 6455 "message too big": a frame over `realtime.max_frame_bytes`.
pub const CLOSE_TOO_BIG: u16 = 1009;
/// RFC 6455 "policy violation": no frame within `http.ws_first_frame_secs` of the handshake.
pub const CLOSE_SILENT: u16 = 1008;
const CLOSE_NORMAL: u16 = 1000;
/// RFC 6455 "try again later": the server could not go on with this connection for now.
const CLOSE_TRY_AGAIN: u16 = 1013;

/// Replayed frames written with one flush at most.
const REPLAY_BATCH: usize = 64;

#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
enum Request {
    Subscribe {
        topics: Vec<String>,
    },
    Unsubscribe {
        topics: Vec<String>,
    },
    Resume {
        #[serde(rename = "lastEventId")]
        last_event_id: Uuid,
        #[serde(default)]
        topics: Vec<String>,
    },
    Ping,
}

struct Session {
    state: AppState,
    id: ClientId,
    user: Actor,
    viewer: Viewer,
    /// The socket's presence session key.
    session: String,
    outlet: Arc<Outlet>,
    watching: BTreeSet<Uuid>,
    /// Set when a request ended the connection (a catch-up from the log that failed).
    ending: Option<End>,
}

/// How a connection ends: with a close frame of ours, or without (the client left, or broke
/// the framing, which ends the connection without a word as tungstenite did).
enum End {
    Close(u16, String),
    /// The client sent a close frame: answer it with its status code.
    Answer(Vec<u8>),
    Gone,
}

/// Serves one connection on the socket the handshake left (`early`: bytes the client sent right
/// after it); `keep` and `_slot` are its places in the edge's and the user's connection limits,
/// given back when the connection ends.
pub async fn run(
    stream: TcpStream,
    keep: Box<dyn std::any::Any + Send + Sync>,
    early: Bytes,
    state: AppState,
    user: User,
    _slot: Slot,
) {
    let settings = state.settings.realtime.clone();
    let viewer = Viewer { id: user.id(), admin: user.is_admin() };
    let _ = stream.set_nodelay(true);
    let outlet = Arc::new(Outlet::new(stream, keep, settings.send_buffer));
    let id = state.hub.register(viewer, outlet.clone());
    let mut session = Session {
        id,
        user: Actor { id: user.id(), name: user.0.name.clone() },
        viewer,
        session: Uuid::now_v7().to_string(),
        outlet: outlet.clone(),
        watching: BTreeSet::new(),
        ending: None,
        state: state.clone(),
    };
    state.hub.subscribe(session.id, &format!("user.{}.#", user.id()));
    let mut reader = wire::Reader::default();
    reader.push(&early);
    // A slice of hyper's read buffer: kept, it would keep that whole buffer for the session.
    drop(early);
    let heartbeat = Duration::from_secs(settings.heartbeat_secs);
    let mut tick = tokio::time::interval(heartbeat);
    tick.tick().await;
    let mut last_heard = Instant::now();
    let shutdown = state.shutdown.clone();
    // A client that completed the handshake must show it is there soon: any frame counts,
    // the pong to this opening ping included (browsers answer it on their own). Boxed and
    // dropped after the first frame, so idle connections do not carry the timer.
    let first_frame_secs = state.settings.http.ws_first_frame_secs;
    let mut first_frame = Some(Box::pin(tokio::time::sleep(Duration::from_secs(first_frame_secs))));
    outlet.push(wire::frame(wire::PING, b""));
    let max = settings.max_frame_bytes;
    let too_slow =
        || End::Close(CLOSE_TOO_SLOW, "send buffer overflow: the client reads too slowly".into());

    let end = 'session: loop {
        // What the client sent already, message by message.
        loop {
            let message = match reader.next(max) {
                Ok(Some(message)) => message,
                Ok(None) => break,
                Err(WireError::TooBig) => {
                    break 'session End::Close(CLOSE_TOO_BIG, too_big_reason(max));
                }
                Err(WireError::Protocol(what)) => {
                    tracing::debug!(reason = what, "WebSocket client broke the framing");
                    break 'session End::Gone;
                }
            };
            last_heard = Instant::now();
            first_frame = None;
            let reply = match message {
                // Boxed: the rare, large request futures (resume, presence) stay out of every
                // idle connection's task.
                Incoming::Text(text) => Box::pin(session.handle(&text)).await,
                Incoming::Binary => Some(error("unsupported", "frames are JSON text")),
                Incoming::Ping(payload) => {
                    outlet.push(wire::frame(wire::PONG, &payload));
                    None
                }
                Incoming::Pong => None,
                Incoming::Close(code) => break 'session End::Answer(code),
            };
            if let Some(reply) = reply {
                outlet.push(text_frame(&reply));
            }
            if let Some(end) = session.ending.take() {
                break 'session end;
            }
        }
        tokio::select! {
            biased;
            () = outlet.overflow.cancelled() => break too_slow(),
            () = shutdown.cancelled() => break End::Close(CLOSE_GOING_AWAY, "server shutting down".into()),
            () = outlet.ready.notified() => {
                // A client that does not read blocks this write: its overflow ends the wait.
                tokio::select! {
                    written = outlet.flush() => if written.is_err() { break End::Gone },
                    () = outlet.overflow.cancelled() => break too_slow(),
                }
            }
            () = until(&mut first_frame) => {
                break End::Close(CLOSE_SILENT, format!("no frame within {first_frame_secs} s of the handshake"));
            }
            readable = outlet.stream().readable() => {
                if readable.is_err() {
                    break End::Gone;
                }
                if !read_into(outlet.stream(), &mut reader) {
                    break End::Gone;
                }
            }
            _ = tick.tick() => {
                if last_heard.elapsed() > heartbeat * 3 {
                    break End::Close(CLOSE_GOING_AWAY, "no pong: connection presumed dead".into());
                }
                let watching: Vec<Uuid> = session.watching.iter().copied().collect();
                Box::pin(presence::refresh(&state, &watching, session.user.id, &session.session)).await;
                outlet.push(wire::frame(wire::PING, b""));
            }
        }
    };
    let last = match &end {
        End::Close(code, reason) => Some((*code, wire::close(*code, reason))),
        End::Answer(code) => Some((CLOSE_NORMAL, wire::frame(wire::CLOSE, code))),
        End::Gone => None,
    };
    if let Some((code, frame)) = last {
        // A client that does not read may never take the close frame: give it a moment only.
        // A slow one gets longer: its close frame waits behind everything the kernel holds for
        // it, which a slow reader needs seconds to take (the wait is this client's own task;
        // no event is queued for it any more, its overflow is marked).
        let wait = Duration::from_secs(if code == CLOSE_TOO_SLOW { 10 } else { 1 });
        outlet.finish(frame);
        let _ = tokio::time::timeout(wait, outlet.flush()).await;
        // Unread bytes make the close a reset, which can destroy the close frame in flight.
        discard_unread(outlet.stream());
    }
    state.hub.unregister(session.id);
    for episode in std::mem::take(&mut session.watching) {
        Box::pin(presence::leave(&state, episode, session.user.id, &session.session)).await;
    }
}

/// Reads what the socket has into `reader`; `false` when the client is gone. Not async, so its
/// buffer is on the stack while it runs, not in every idle connection's future.
fn read_into(stream: &TcpStream, reader: &mut wire::Reader) -> bool {
    let mut chunk = [0u8; 1024];
    match stream.try_read(&mut chunk) {
        Ok(0) => false,
        Ok(n) => {
            reader.push(&chunk[..n]);
            true
        }
        Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
    }
}

/// Reads and drops what the client sent and nobody read: closing a socket that holds unread
/// bytes resets it, which can destroy the close frame in flight.
fn discard_unread(stream: &TcpStream) {
    let mut chunk = [0u8; 1024];
    while let Ok(1..) = stream.try_read(&mut chunk) {}
}

/// Waits for `deadline`, or forever once it is gone.
async fn until(deadline: &mut Option<std::pin::Pin<Box<tokio::time::Sleep>>>) {
    match deadline {
        Some(sleep) => sleep.as_mut().await,
        None => std::future::pending().await,
    }
}

fn too_big_reason(max: usize) -> String {
    format!("frame larger than {max} bytes")
}

fn error(code: &str, message: &str) -> String {
    serde_json::json!({ "op": "error", "code": code, "message": message }).to_string()
}

fn text_frame(reply: &str) -> Bytes {
    wire::frame(wire::TEXT, reply.as_bytes())
}

impl Session {
    async fn handle(&mut self, text: &str) -> Option<String> {
        let request = match serde_json::from_str::<Request>(text) {
            Ok(r) => r,
            Err(e) => {
                return Some(error(
                    "bad_request",
                    &format!("not a request this server knows: {e}"),
                ));
            }
        };
        match request {
            Request::Ping => Some(serde_json::json!({ "op": "pong" }).to_string()),
            Request::Subscribe { topics } => self.subscribe(&topics, true).await.err(),
            Request::Unsubscribe { topics } => {
                for pattern in &topics {
                    if self.state.hub.unsubscribe(self.id, pattern)
                        && let Some(episode) = watched_episode(pattern)
                        && !self.watches_elsewhere(episode)
                        && self.watching.remove(&episode)
                    {
                        presence::leave(&self.state, episode, self.user.id, &self.session).await;
                    }
                }
                Some(serde_json::json!({ "op": "unsubscribed", "topics": topics }).to_string())
            }
            Request::Resume { last_event_id, topics } => {
                // The live frames of the new patterns stay held through the replay: released
                // after the `subscribed` reply, one that came meanwhile went out before the
                // replay of older events (the fault suite's WebSocket client saw one out of
                // order), and it made the replay stop short of it.
                if !topics.is_empty()
                    && let Err(reply) = self.subscribe(&topics, false).await
                {
                    return Some(reply);
                }
                self.resume(last_event_id).await
            }
        }
    }

    /// Subscribes to `patterns`, all or none, and queues the `subscribed` reply; `Err` holds the
    /// error reply (nothing held then). Live frames are held from before the first pattern
    /// reaches the hub until the reply is queued, so the reply precedes every event the new
    /// patterns deliver, and it still follows the presence join (a client that has it is a
    /// viewer). `release: false` leaves them held for a replay that follows.
    async fn subscribe(&mut self, patterns: &[String], release: bool) -> Result<(), String> {
        let max = self.state.settings.realtime.max_subscriptions;
        for pattern in patterns {
            if let Err(e) = topics::validate(pattern) {
                return Err(error("invalid_topic", &format!("{pattern:?}: {e}")));
            }
            if !may_subscribe(self.user.id, pattern) {
                return Err(error(
                    "forbidden",
                    &format!("{pattern:?} names another user's topics"),
                ));
            }
        }
        if self.state.hub.patterns(self.id).len() + patterns.len() > max {
            return Err(error("too_many_subscriptions", &format!("at most {max} per connection")));
        }
        // What the hub sends meanwhile waits behind the reply, as during a resume.
        let _ = self.outlet.hold();
        for pattern in patterns {
            self.state.hub.subscribe(self.id, pattern);
            if let Some(episode) = watched_episode(pattern)
                && self.watching.insert(episode)
                && let Err(e) =
                    presence::join(&self.state, episode, &self.user, &self.session).await
            {
                tracing::warn!(error = %e, "presence join failed");
            }
        }
        let reply = serde_json::json!({ "op": "subscribed", "topics": patterns });
        self.outlet.push(text_frame(&reply.to_string()));
        if release {
            // No replay: every held frame follows the reply, in the order it came.
            self.release(0).await;
        }
        Ok(())
    }

    fn watches_elsewhere(&self, episode: Uuid) -> bool {
        self.state.hub.patterns(self.id).iter().any(|p| watched_episode(p) == Some(episode))
    }

    /// Sends, in order, the events after `last_event_id` that this client may see and that
    /// live delivery has not sent yet, then the reply; live events wait meanwhile, and those the
    /// replay covered are not sent again.
    async fn resume(&mut self, last_event_id: Uuid) -> Option<String> {
        // Live delivery has covered everything from its first event on.
        let until = self.outlet.hold().unwrap_or(i64::MAX);
        let (replayed_through, reply) = self.replay(last_event_id, until).await;
        self.outlet.push(text_frame(&reply));
        self.release(replayed_through).await;
        None
    }

    /// Ends the outlet's hold; what it let go of (a burst that outgrew the send buffer while
    /// the replay ran) is replayed from the log first, as often as it takes. A client that
    /// needs more than `realtime.max_replay` events of that does not keep up: closed with 4008.
    async fn release(&mut self, mut through: i64) {
        let mut budget = self.state.settings.realtime.max_replay;
        while let Some((after, until)) = self.outlet.release(through) {
            let limit = i64::try_from(budget.saturating_add(1)).unwrap_or(i64::MAX);
            match super::logged_between(&self.state.db, after, until, false, limit).await {
                Ok(rows) if rows.len() as u64 > budget => {
                    self.outlet.give_up();
                    return;
                }
                Ok(rows) => {
                    budget -= rows.len() as u64;
                    metrics::RELAY_CAUGHT_UP.inc_by(&[], rows.len() as u64);
                    if !self.send_logged(rows).await {
                        return;
                    }
                    through = until;
                }
                Err(e) => {
                    // Without those events the client would miss them: it reconnects and
                    // resumes instead.
                    tracing::warn!(error = %e, "catch-up from the event log failed");
                    self.ending = Some(End::Close(
                        CLOSE_TRY_AGAIN,
                        "cannot read the event log now: reconnect and resume".into(),
                    ));
                    return;
                }
            }
        }
    }

    /// The replay of [`Self::resume`]: how far it went (0: nowhere) and the reply.
    async fn replay(&mut self, last_event_id: Uuid, until: i64) -> (i64, String) {
        #[derive(FromQueryResult)]
        struct Seq {
            seq: i64,
        }
        let db = &self.state.db;
        let found = Seq::find_by_statement(sql(
            "SELECT seq FROM event_log WHERE id = $1",
            [last_event_id.into()],
        ))
        .one(db)
        .await;
        let from = match found {
            Ok(Some(s)) => s.seq,
            Ok(None) => {
                return (
                    0,
                    error(
                        "resume_unavailable",
                        "that event is unknown or older than the event log keeps: reload instead",
                    ),
                );
            }
            Err(e) => {
                tracing::warn!(error = %e, "resume lookup failed");
                return (0, error("unavailable", "cannot resume now, try again"));
            }
        };
        let max = self.state.settings.realtime.max_replay;
        let limit = i64::try_from(max.saturating_add(1)).unwrap_or(i64::MAX);
        // Live delivery sent this socket everything from `until` on. Without a live frame yet,
        // the replay goes as far as the relay has handed out (held frames it covers are dropped
        // at the release), or the shipper recorded publishing: every number up to either is
        // final. Not less: the hub may have handed out numbers the shipper has not recorded
        // yet, before this socket held its frames, and the replay must cover them.
        let rows = if until < i64::MAX {
            super::logged_between(db, from, until - 1, false, limit).await
        } else {
            super::logged_between(db, from, self.state.broker.last_seq(), true, limit).await
        };
        let rows = match rows {
            Ok(rows) if rows.len() as u64 > max => {
                return (0, error("resume_too_far", "too many events were missed: reload instead"));
            }
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %e, "resume query failed");
                return (0, error("unavailable", "cannot resume now, try again"));
            }
        };
        let replayed_through = rows.last().map_or(from, |r| r.seq);
        self.send_logged(rows).await;
        let reply = serde_json::json!({ "op": "resumed", "lastEventId": last_event_id });
        (replayed_through, reply.to_string())
    }

    /// Sends the logged events this client subscribes to and may see; `false` if it was closed
    /// meanwhile as too slow, or the server is shutting down (the rest not sent).
    async fn send_logged(&self, rows: Vec<super::Logged>) -> bool {
        let patterns = self.state.hub.patterns(self.id);
        // A client that takes nothing for this long is not reading.
        let stalled = Duration::from_secs(self.state.settings.realtime.heartbeat_secs * 3);
        let mut sent = 0;
        for row in rows {
            if !patterns.iter().any(|p| topics::matches(p, &row.routing_key)) {
                continue;
            }
            let Some((text, audience)) =
                frame_text(&row.routing_key, row.body.as_bytes(), row.traceparent.as_deref())
            else {
                continue;
            };
            if !audience.includes(self.viewer) {
                continue;
            }
            self.outlet.push(wire::frame(wire::TEXT, text.as_bytes()));
            sent += 1;
            // Live events wait in the hold meanwhile (or in the log, past the buffer), so only
            // the client's reading bounds this: one that stops is closed, and the replay stops.
            if sent % REPLAY_BATCH == 0 {
                tokio::select! {
                    _ = self.outlet.flush() => {}
                    () = self.outlet.overflow.cancelled() => return false,
                    // The session ends with the server's close frame, as when idle.
                    () = self.state.shutdown.cancelled() => return false,
                    () = tokio::time::sleep(stalled) => {
                        self.outlet.give_up();
                        return false;
                    }
                }
            }
        }
        !self.outlet.overflow.is_cancelled()
    }
}

/// `episode.<id>.#` makes its subscriber a viewer of that episode.
fn watched_episode(pattern: &str) -> Option<Uuid> {
    let rest = pattern.strip_prefix("episode.")?.strip_suffix(".#")?;
    Uuid::parse_str(rest).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_whole_episode_pattern_makes_a_viewer() {
        let id = Uuid::from_u128(5);
        assert_eq!(watched_episode(&format!("episode.{id}.#")), Some(id));
        assert_eq!(watched_episode(&format!("episode.{id}.created")), None);
        assert_eq!(watched_episode("episode.*.#"), None);
    }
}
