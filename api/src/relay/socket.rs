//! One WebSocket connection: its subscriptions, its heartbeat, resume from the event log, and
//! presence for the episodes it watches. Frames are JSON text: see the contract's WebSocket
//! section.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use sea_orm::FromQueryResult;
use serde::Deserialize;
use showrunner_shared::contracts::Actor;
use showrunner_shared::db::sql;
use showrunner_shared::metrics;
use showrunner_shared::topics;
use uuid::Uuid;

use super::hub::{ClientId, Delivery, Slot, Viewer, may_subscribe};
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
    /// Seq of the last event sent: later frames at or below it were already delivered.
    last_seq: i64,
    /// Seq of the first live event sent, if any: a resume replays only what came before it.
    first_live: Option<i64>,
    watching: BTreeSet<Uuid>,
}

type Sink = SplitSink<WebSocket, Message>;

/// Serves one connection; `_slot` is its place in the user's connection limit, given back
/// when the connection ends.
pub async fn run(socket: WebSocket, state: AppState, user: User, _slot: Slot) {
    let settings = state.settings.realtime.clone();
    let viewer = Viewer { id: user.id(), admin: user.is_admin() };
    let mut registration = state.hub.register(viewer, settings.send_buffer);
    let mut session = Session {
        id: registration.id,
        user: Actor { id: user.id(), name: user.0.name.clone() },
        viewer,
        session: Uuid::now_v7().to_string(),
        last_seq: 0,
        first_live: None,
        watching: BTreeSet::new(),
        state: state.clone(),
    };
    state.hub.subscribe(session.id, &format!("user.{}.#", user.id()));
    let (mut sink, mut stream) = socket.split();
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
    let _ = sink.send(Message::Ping(Default::default())).await;

    let close: Option<(u16, String)> = loop {
        tokio::select! {
            biased;
            () = registration.overflow.cancelled() => {
                break Some((CLOSE_TOO_SLOW, "send buffer overflow: the client reads too slowly".into()));
            }
            () = shutdown.cancelled() => break Some((CLOSE_GOING_AWAY, "server shutting down".into())),
            frame = registration.frames.recv() => {
                let Some(frame) = frame else { break None };
                // A client that does not read blocks this write: its overflow ends the wait.
                let overflow = registration.overflow.clone();
                tokio::select! {
                    sent = write_queued(&mut sink, &mut registration.frames, &mut session, frame) => {
                        if sent.is_err() { break None }
                    }
                    () = overflow.cancelled() => {
                        break Some((CLOSE_TOO_SLOW, "send buffer overflow: the client reads too slowly".into()));
                    }
                }
            }
            () = until(&mut first_frame) => {
                break Some((CLOSE_SILENT, format!("no frame within {first_frame_secs} s of the handshake")));
            }
            message = stream.next() => {
                last_heard = Instant::now();
                first_frame = None;
                let reply = match message {
                    // Boxed: the rare, large request futures (resume, presence) stay out of
                    // every idle connection's task.
                    Some(Ok(Message::Text(text))) => Box::pin(session.handle(&text, &mut sink)).await,
                    Some(Ok(Message::Binary(_))) => Some(error("unsupported", "frames are JSON text")),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => None,
                    Some(Err(e)) if too_big(&e) => break Some((CLOSE_TOO_BIG, too_big_reason(settings.max_frame_bytes))),
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break None,
                };
                if let Some(reply) = reply
                    && send(&mut sink, &reply).await.is_err()
                {
                    break None;
                }
            }
            _ = tick.tick() => {
                if last_heard.elapsed() > heartbeat * 3 {
                    break Some((CLOSE_GOING_AWAY, "no pong: connection presumed dead".into()));
                }
                let watching: Vec<Uuid> = session.watching.iter().copied().collect();
                Box::pin(presence::refresh(&state, &watching, session.user.id, &session.session)).await;
                if sink.send(Message::Ping(Default::default())).await.is_err() {
                    break None;
                }
            }
        }
    };
    if let Some((code, reason)) = close {
        // A client that does not read may never take the close frame: give it a moment only.
        // A slow one gets longer: its close frame waits behind everything the kernel holds for
        // it, and the kernel takes more from this task only once the client has read about half
        // of that, which a slow reader needs seconds for (the wait is this client's own task;
        // the hub no longer queues for it, its overflow is marked).
        let wait = Duration::from_secs(if code == CLOSE_TOO_SLOW { 10 } else { 1 });
        let frame = Message::Close(Some(CloseFrame { code, reason: Utf8Bytes::from(reason) }));
        let _ = tokio::time::timeout(wait, sink.send(frame)).await;
    }
    state.hub.unregister(session.id);
    for episode in std::mem::take(&mut session.watching) {
        Box::pin(presence::leave(&state, episode, session.user.id, &session.session)).await;
    }
}

/// Waits for `deadline`, or forever once it is gone.
async fn until(deadline: &mut Option<std::pin::Pin<Box<tokio::time::Sleep>>>) {
    match deadline {
        Some(sleep) => sleep.as_mut().await,
        None => std::future::pending().await,
    }
}

/// Frames written with one flush at most: bounds the write buffer a busy client keeps.
const MAX_COALESCED: usize = 16;

/// Writes `first` and whatever else is already queued for this client (up to
/// [`MAX_COALESCED`]) with one flush: under load that is one `send` syscall for many frames
/// instead of one each, and the kernel time per delivery is what bounds the relay. The frames
/// are released (and timed, `showrunner_relay_socket_seconds`) once the flush has handed them
/// to the socket.
async fn write_queued(
    sink: &mut Sink,
    queue: &mut tokio::sync::mpsc::Receiver<Delivery>,
    session: &mut Session,
    first: Delivery,
) -> Result<(), axum::Error> {
    let mut next = Some(first);
    let mut written = Vec::with_capacity(MAX_COALESCED);
    while let Some(frame) = next.take() {
        // At or below the last seq: already delivered by a resume's replay.
        if frame.seq > session.last_seq {
            session.last_seq = frame.seq;
            session.first_live.get_or_insert(frame.seq);
            sink.feed(Message::Text(frame.text.clone())).await?;
            written.push(frame);
        }
        if written.len() < MAX_COALESCED {
            next = queue.try_recv().ok();
        }
    }
    if written.is_empty() {
        return Ok(());
    }
    sink.flush().await?;
    for frame in written {
        metrics::RELAY_SOCKET_SECONDS.observe(frame.arrived.elapsed());
    }
    Ok(())
}

/// Whether a read failed because the client's frame or message is over the size limit.
fn too_big(error: &axum::Error) -> bool {
    use std::error::Error as _;
    matches!(
        error.source().and_then(|e| e.downcast_ref::<tungstenite::Error>()),
        Some(tungstenite::Error::Capacity(_))
    )
}

fn too_big_reason(max: usize) -> String {
    format!("frame larger than {max} bytes")
}

async fn send(sink: &mut Sink, text: &str) -> Result<(), axum::Error> {
    sink.send(Message::Text(Utf8Bytes::from(text))).await
}

fn error(code: &str, message: &str) -> String {
    serde_json::json!({ "op": "error", "code": code, "message": message }).to_string()
}

impl Session {
    async fn handle(&mut self, text: &str, sink: &mut Sink) -> Option<String> {
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
            Request::Subscribe { topics } => Some(self.subscribe(&topics).await),
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
                if !topics.is_empty() {
                    let reply = self.subscribe(&topics).await;
                    if reply.contains("\"error\"") {
                        return Some(reply);
                    }
                    if send(sink, &reply).await.is_err() {
                        return None;
                    }
                }
                self.resume(last_event_id, sink).await
            }
        }
    }

    async fn subscribe(&mut self, patterns: &[String]) -> String {
        let max = self.state.settings.realtime.max_subscriptions;
        for pattern in patterns {
            if let Err(e) = topics::validate(pattern) {
                return error("invalid_topic", &format!("{pattern:?}: {e}"));
            }
            if !may_subscribe(self.user.id, pattern) {
                return error("forbidden", &format!("{pattern:?} names another user's topics"));
            }
        }
        if self.state.hub.patterns(self.id).len() + patterns.len() > max {
            return error("too_many_subscriptions", &format!("at most {max} per connection"));
        }
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
        serde_json::json!({ "op": "subscribed", "topics": patterns }).to_string()
    }

    fn watches_elsewhere(&self, episode: Uuid) -> bool {
        self.state.hub.patterns(self.id).iter().any(|p| watched_episode(p) == Some(episode))
    }

    /// Sends, in order, the events after `last_event_id` that this client may see and that
    /// live delivery has not sent yet; `None` when all went well.
    async fn resume(&mut self, last_event_id: Uuid, sink: &mut Sink) -> Option<String> {
        #[derive(FromQueryResult)]
        struct Seq {
            seq: i64,
        }
        let db = &self.state.db;
        let found = Seq::find_by_statement(sql(
            "SELECT seq FROM event_log WHERE id = $1 AND seq IS NOT NULL",
            [last_event_id.into()],
        ))
        .one(db)
        .await;
        let from = match found {
            Ok(Some(s)) => s.seq,
            Ok(None) => {
                return Some(error(
                    "resume_unavailable",
                    "that event is unknown or older than the event log keeps: reload instead",
                ));
            }
            Err(e) => {
                tracing::warn!(error = %e, "resume lookup failed");
                return Some(error("unavailable", "cannot resume now, try again"));
            }
        };
        let max = self.state.settings.realtime.max_replay;
        // Live delivery has covered everything from its first event on.
        let until = self.first_live.unwrap_or(i64::MAX);
        let limit = i64::try_from(max.saturating_add(1)).unwrap_or(i64::MAX);
        let rows = super::logged_between(db, from, until, limit).await;
        let rows = match rows {
            Ok(rows) if rows.len() as u64 > max => {
                return Some(error(
                    "resume_too_far",
                    "too many events were missed: reload instead",
                ));
            }
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %e, "resume query failed");
                return Some(error("unavailable", "cannot resume now, try again"));
            }
        };
        let replayed_through = rows.last().map_or(from, |r| r.seq);
        let patterns = self.state.hub.patterns(self.id);
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
            if send(sink, &text).await.is_err() {
                return None;
            }
        }
        // Live frames queued meanwhile at or below what the query covered are duplicates.
        self.last_seq = self.last_seq.max(replayed_through);
        Some(serde_json::json!({ "op": "resumed", "lastEventId": last_event_id }).to_string())
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
