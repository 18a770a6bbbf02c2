//! The write side of one WebSocket the relay owns. Whichever task has a frame (a hub shard for
//! events, the session for its replies) writes it straight into the socket, in order, with no
//! per-delivery channel or task wake-up; what the kernel does not take at once waits here, at
//! most `realtime.send_buffer` frames, and the session's task writes it when the socket is
//! writable again. One more than that closes the client (4008): nobody else waits for it.
//! Live frames held while a resume replays the log are the server's wait, not the client's: a
//! hold that outgrows the buffer lets them go and the session replays them from the log.

use std::any::Any;
use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::sync::{Mutex, MutexGuard};

use bytes::Bytes;
use showrunner_shared::metrics;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::hub::{Delivery, Frame};

/// Frames one vectored write takes at most.
const WRITE_BATCH: usize = 64;

pub struct Outlet {
    stream: TcpStream,
    /// Held for as long as the socket lives (the edge's connection count).
    _keep: Box<dyn Any + Send + Sync>,
    state: Mutex<State>,
    /// Something waits in `pending`: the session writes it.
    pub ready: Notify,
    /// Cancelled when the client fell behind: its session closes it with 4008.
    pub overflow: CancellationToken,
    limit: usize,
}

struct Pending {
    bytes: Bytes,
    /// The event this frame carries, released once it is written.
    delivery: Option<Delivery>,
}

#[derive(Default)]
struct State {
    pending: VecDeque<Pending>,
    /// Bytes of the first pending frame already written.
    offset: usize,
    /// Live frames kept back while a resume replays the log or a subscribe is answered (`Some`
    /// meanwhile).
    held: Option<Vec<Frame>>,
    /// Live frames a hold let go of, as the seqs `(after, through]`: the log has them, and the
    /// release hands the range to the session to replay.
    spilled: Option<(i64, i64)>,
    /// Seq of the last event sent: a live frame at or below it was sent by a replay.
    last_seq: i64,
    /// Seq of the first live event sent: a resume replays only what came before it.
    first_live: Option<i64>,
    /// Overflowed, failed or closing: no more events.
    closed: bool,
}

impl Outlet {
    pub fn new(stream: TcpStream, keep: Box<dyn Any + Send + Sync>, limit: usize) -> Self {
        Self {
            stream,
            _keep: keep,
            state: Mutex::default(),
            ready: Notify::new(),
            overflow: CancellationToken::new(),
            limit: limit.max(1),
        }
    }

    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends an event's frame, unless a replay sent it already; `true` if this client takes it
    /// (written, waiting, or held behind a resume).
    pub fn live(&self, frame: &Frame) -> bool {
        let mut state = self.lock();
        if state.closed || frame.seq <= state.last_seq {
            return false;
        }
        let state = &mut *state;
        if let Some(held) = &mut state.held {
            if held.len() < self.limit {
                held.push(frame.clone());
            } else {
                // A burst during a long replay (the shipper catching up after an outage): the
                // client is not behind, the replay is. Every held frame and this one are in the
                // log (the shipper ships only what it read there), so they need no memory here.
                let after = state
                    .spilled
                    .map_or_else(|| held.first().map_or(frame.seq, |f| f.seq) - 1, |(a, _)| a);
                held.clear();
                state.spilled = Some((after, frame.seq));
            }
            return true;
        }
        self.accept(state, frame, true);
        true
    }

    /// Sends `frame`; `tracked` while the dispatching shard still counts it (so a frame that
    /// waits can join its fan-out count).
    fn accept(&self, state: &mut State, frame: &Frame, tracked: bool) {
        state.last_seq = frame.seq;
        state.first_live.get_or_insert(frame.seq);
        let unwritten = self.write_or_queue(state, &frame.wire);
        if unwritten {
            if tracked && let Some(last) = state.pending.back_mut() {
                last.delivery = Some(Delivery::new(frame));
            }
            if state.pending.len() > self.limit {
                self.overflowed(state);
            }
        } else {
            metrics::RELAY_SOCKET_SECONDS.observe(frame.arrived.elapsed());
        }
    }

    /// Writes `bytes` now if nothing waits before them, else queues them; `true` if queued.
    fn write_or_queue(&self, state: &mut State, bytes: &Bytes) -> bool {
        let mut offset = 0;
        if state.pending.is_empty() {
            match self.stream.try_write(bytes) {
                Ok(n) if n == bytes.len() => return false,
                Ok(n) => offset = n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => {
                    // The session's read or next flush sees the socket gone.
                    state.closed = true;
                    self.ready.notify_one();
                    return false;
                }
            }
            state.offset = offset;
            self.ready.notify_one();
        }
        state.pending.push_back(Pending { bytes: bytes.clone(), delivery: None });
        true
    }

    /// Too much waits: keep only what is half written (the framing needs its end), drop the
    /// rest, take no more events, and let the session close the connection.
    fn overflowed(&self, state: &mut State) {
        state.closed = true;
        state.held = None;
        state.spilled = None;
        let keep = usize::from(state.offset > 0);
        state.pending.truncate(keep);
        self.overflow.cancel();
    }

    /// Queues one of the session's own frames (a reply, a ping) behind what waits.
    pub fn push(&self, bytes: Bytes) {
        let mut state = self.lock();
        self.write_or_queue(&mut state, &bytes);
    }

    /// Queues a frame and writes everything waiting, the frame included.
    pub async fn send(&self, bytes: Bytes) -> io::Result<()> {
        self.push(bytes);
        self.flush().await
    }

    /// The last frame: no events after it (a close frame).
    pub fn finish(&self, bytes: Bytes) {
        let mut state = self.lock();
        if !state.closed {
            state.closed = true;
            state.held = None;
        }
        self.write_or_queue(&mut state, &bytes);
    }

    /// Writes what waits until nothing does (waiting for the socket as long as it takes).
    pub async fn flush(&self) -> io::Result<()> {
        loop {
            {
                let mut state = self.lock();
                let state = &mut *state;
                loop {
                    if state.pending.is_empty() {
                        return Ok(());
                    }
                    let offset = state.offset;
                    let slices: Vec<IoSlice<'_>> = state
                        .pending
                        .iter()
                        .take(WRITE_BATCH)
                        .enumerate()
                        .map(|(i, p)| {
                            IoSlice::new(if i == 0 { &p.bytes[offset..] } else { &p.bytes })
                        })
                        .collect();
                    let written = match self.stream.try_write_vectored(&slices) {
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => {
                            state.closed = true;
                            state.pending.clear();
                            return Err(e);
                        }
                    };
                    drop(slices);
                    let mut done = written + state.offset;
                    while let Some(front) = state.pending.front() {
                        if done < front.bytes.len() {
                            break;
                        }
                        done -= front.bytes.len();
                        if let Some(p) = state.pending.pop_front()
                            && let Some(delivery) = &p.delivery
                        {
                            metrics::RELAY_SOCKET_SECONDS.observe(delivery.arrived.elapsed());
                        }
                    }
                    state.offset = done;
                }
            }
            self.stream.writable().await?;
        }
    }

    /// Holds live frames back while a resume replays the log (or a subscribe is answered);
    /// returns the seq of the first live event sent, where a replay stops. A hold already on
    /// (a resume's subscribe) goes on with what it holds.
    pub fn hold(&self) -> Option<i64> {
        let mut state = self.lock();
        if !state.closed && state.held.is_none() {
            state.held = Some(Vec::new());
        }
        state.first_live
    }

    /// Ends a hold whose replay went through `replayed_through` (0: none): the frames held
    /// meanwhile follow, those the replay covered left out. A hold that let frames go stays on
    /// and returns their range `(after, through]` instead: the caller replays it from the log
    /// and calls again with how far that went.
    #[must_use]
    pub fn release(&self, replayed_through: i64) -> Option<(i64, i64)> {
        let mut state = self.lock();
        state.last_seq = state.last_seq.max(replayed_through);
        if let Some((after, through)) = state.spilled.take()
            && !state.closed
            && through > state.last_seq
        {
            return Some((after.max(state.last_seq), through));
        }
        let held = state.held.take()?;
        for frame in held {
            if state.closed {
                break;
            }
            if frame.seq > state.last_seq {
                self.accept(&mut state, &frame, false);
            }
        }
        None
    }

    /// Marks the client as too slow (its session closes it with 4008) when it took nothing of
    /// a replay for longer than it may.
    pub fn give_up(&self) {
        let mut state = self.lock();
        self.overflowed(&mut state);
    }
}
