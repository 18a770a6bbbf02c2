//! Settling the job worker's deliveries. A delivery is held (with its slot of
//! `jobs.max_in_flight`) from the moment it is taken until what it led to is durable; then it
//! is acked. Acks go out in delivery-tag order, many per frame: one `basic.ack` with
//! `multiple` settles every finished delivery below the oldest one still held. Acking each
//! job alone cost a frame, a trip through lapin's RPC task and back, and on a quorum queue one
//! Raft command, per job.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use chrono::Utc;
use lapin::Acker;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions};
use showrunner_shared::broker::topology::JOBS_QUEUE;
use showrunner_shared::broker::{Publisher, bounded};
use showrunner_shared::contracts::JobRequest;
use showrunner_shared::{jobs, metrics, trace};
use tokio::sync::OwnedSemaphorePermit;

/// When the database or the broker fails mid-way, the request comes back after this long.
const RECHECK: Duration = Duration::from_millis(1_600);
/// A finished delivery waits at most about this long behind an older one still held (a long
/// job) before it is acked alone: unacked deliveries count against the prefetch.
pub const HOLD: Duration = Duration::from_millis(250);

/// The deliveries of one consumer session, in tag order: which are held, which are finished
/// and not acked yet.
pub struct Acks {
    state: Mutex<State>,
    /// Held while acks are sent, so frames leave in the order they were decided: a multiple
    /// ack that overtook a higher one would name a tag the broker no longer holds, and the
    /// broker closes the channel for that.
    sending: tokio::sync::Mutex<()>,
    /// At most this many finished deliveries wait behind an older held one.
    held_max: usize,
}

#[derive(Default)]
struct State {
    /// Taken and not settled: delivery tag -> when.
    held: BTreeMap<u64, Instant>,
    /// Finished, ack not sent yet.
    finished: BTreeMap<u64, Acker>,
}

/// What to send: one multiple ack (through the highest tag, and how many it settles), and acks
/// of single deliveries.
struct Due {
    through: Option<(Acker, usize)>,
    alone: Vec<Acker>,
}

impl Acks {
    /// `prefetch`: the consumer's; half of it at most waits behind a long job.
    pub fn new(prefetch: u16) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::default(),
            sending: tokio::sync::Mutex::new(()),
            held_max: usize::from(prefetch / 2).max(1),
        })
    }

    /// Holds `delivery` (and `permit`, its slot) until it is settled.
    pub fn hold(self: &Arc<Self>, delivery: Delivery, permit: OwnedSemaphorePermit) -> Held {
        self.lock().held.insert(delivery.delivery_tag, Instant::now());
        Held { delivery, _permit: permit, acks: self.clone() }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Acks `finished` (all of this session), with whatever finished before them.
    pub async fn ack(&self, finished: Vec<Held>) {
        let _order = self.sending.lock().await;
        let due = {
            let mut state = self.lock();
            for held in &finished {
                let tag = held.delivery.delivery_tag;
                state.held.remove(&tag);
                state.finished.insert(tag, held.delivery.acker.clone());
            }
            state.due(self.held_max)
        };
        // The slots are freed once the acks are on their way.
        drop(finished);
        due.send().await;
    }

    /// Acks what waited too long behind a long job; called now and then.
    pub async fn ack_overdue(&self) {
        let _order = self.sending.lock().await;
        let due = self.lock().due(self.held_max);
        due.send().await;
    }

    /// `tag` was settled by itself (a nack, a reject): no multiple ack waits for it.
    fn settled_alone(&self, tag: u64) {
        self.lock().held.remove(&tag);
    }
}

impl State {
    fn due(&mut self, held_max: usize) -> Due {
        let oldest = self.held.first_key_value().map(|(tag, at)| (*tag, *at));
        let waiting = self.finished.split_off(&oldest.map_or(u64::MAX, |(tag, _)| tag));
        let below = std::mem::replace(&mut self.finished, waiting);
        let count = below.len();
        let through = below.into_values().next_back().map(|acker| (acker, count));
        let mut due = Due { through, alone: Vec::new() };
        let overdue = oldest.is_some_and(|(_, at)| at.elapsed() >= HOLD);
        if !self.finished.is_empty() && (overdue || self.finished.len() >= held_max) {
            due.alone = std::mem::take(&mut self.finished).into_values().collect();
        }
        due
    }
}

impl Due {
    async fn send(self) {
        if let Some((last, count)) = self.through {
            report(bounded(last.ack(BasicAckOptions { multiple: true })).await, count);
        }
        for acker in self.alone {
            report(bounded(acker.ack(BasicAckOptions::default())).await, 1);
        }
    }
}

fn report(sent: Option<lapin::Result<bool>>, count: usize) {
    let n = count as u64;
    match sent {
        Some(Ok(true)) => metrics::MESSAGES_ACKED.inc_by(&[JOBS_QUEUE], n),
        Some(Ok(false)) | None => {
            metrics::MESSAGES_REJECTED.inc_by(&[JOBS_QUEUE], n);
            tracing::warn!(count, "ack not sent, channel closed: the requests will be redelivered")
        }
        Some(Err(error)) => {
            metrics::MESSAGES_REJECTED.inc_by(&[JOBS_QUEUE], n);
            tracing::warn!(%error, count, "ack failed: the requests will be redelivered")
        }
    }
}

/// A delivery this worker holds, with its slot. Settled by [`Acks::ack`] (with others),
/// [`Held::ack`], [`Held::later`] or [`Held::settled`]; one dropped unsettled is never acked
/// (the broker hands it out again once the channel closes).
pub struct Held {
    pub delivery: Delivery,
    _permit: OwnedSemaphorePermit,
    acks: Arc<Acks>,
}

impl Held {
    /// The session's acks this delivery belongs to.
    pub fn acks(&self) -> &Arc<Acks> {
        &self.acks
    }

    /// What it led to is durable: ack it.
    pub async fn ack(self) {
        let acks = self.acks.clone();
        acks.ack(vec![self]).await;
    }

    /// Settled already by its own acker (parked by rejecting it).
    pub fn settled(self) {
        self.acks.settled_alone(self.delivery.delivery_tag);
    }

    /// Whether its acker was used (the delivery was rejected into the dead-letter exchange
    /// while being parked), on a channel that is still open.
    pub fn rejected(&self) -> bool {
        !self.delivery.acker.usable() && !self.delivery.acker.poisoned()
    }

    /// What it led to is durable, a parked copy perhaps: acked, unless parking rejected it into
    /// the dead-letter exchange (then it is settled already).
    pub async fn done(self) {
        if self.rejected() { self.settled() } else { self.ack().await }
    }

    /// The request could not be handled now (the database or the broker failed): it goes
    /// through the delay tiers to be looked at again in a moment, then is acked; if the broker
    /// does not take that either, it is handed back to the queue.
    pub async fn later(self, publisher: &Publisher) {
        match requeue_later(publisher, &self.delivery).await {
            Ok(()) => self.ack().await,
            Err(error) => {
                tracing::warn!(%error, "job request not requeued, handing it back");
                metrics::MESSAGES_REJECTED.inc(&[JOBS_QUEUE]);
                let nack = BasicNackOptions { requeue: true, multiple: false };
                match bounded(self.delivery.nack(nack)).await {
                    // Only once the nack is on its way may a multiple ack pass its tag; one
                    // not sent stays held, so no multiple ack ever covers it.
                    Some(Ok(true)) => self.settled(),
                    Some(Ok(false)) | None => {
                        tracing::warn!(
                            "nack not sent, channel closed: the request will be redelivered"
                        )
                    }
                    Some(Err(error)) => {
                        tracing::warn!(%error, "nack failed: the request will be redelivered")
                    }
                }
            }
        }
    }
}

/// Sends the same request through the delay tiers, to be looked at again in a moment.
async fn requeue_later(publisher: &Publisher, delivery: &Delivery) -> anyhow::Result<()> {
    let mut request: JobRequest = serde_json::from_slice(&delivery.data)?;
    request.not_before = Some(Utc::now() + RECHECK);
    let traceparent = trace::from_amqp(&delivery.properties);
    jobs::publish_traced(publisher, &request, Utc::now(), traceparent.as_deref()).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Holds `held`, marks `finished` done, and returns what `due` sends: the tag a multiple
    /// ack goes through with its count, and how many go alone.
    fn check(state: &mut State, finished: &[u64], held_max: usize) -> (Option<usize>, usize) {
        for tag in finished {
            state.held.remove(tag);
            let delivery = Delivery::mock(*tag, "".into(), "".into(), false, Vec::new());
            state.finished.insert(*tag, delivery.acker);
        }
        let due = state.due(held_max);
        (due.through.map(|(_, count)| count), due.alone.len())
    }

    fn holding(tags: std::ops::RangeInclusive<u64>) -> State {
        let mut state = State::default();
        for tag in tags {
            state.held.insert(tag, Instant::now());
        }
        state
    }

    #[test]
    fn a_multiple_ack_never_passes_a_delivery_still_held() {
        let mut state = holding(1..=6);
        // 2 and 3 wait behind 1.
        assert_eq!(check(&mut state, &[2, 3], 10), (None, 0));
        // 1 done: 1-3 in one frame; 5 waits behind 4.
        assert_eq!(check(&mut state, &[1, 5], 10), (Some(3), 0));
        assert_eq!(state.finished.keys().copied().collect::<Vec<_>>(), [5]);
        // 4 settled alone (a nack): 5 goes, 6 is still held.
        state.held.remove(&4);
        assert_eq!(check(&mut state, &[], 10), (Some(1), 0));
        assert_eq!(check(&mut state, &[6], 10), (Some(1), 0));
        assert!(state.finished.is_empty() && state.held.is_empty());
    }

    #[test]
    fn finished_deliveries_behind_a_long_job_go_alone() {
        // Too many waiting: they go alone, the held one stays.
        let mut state = holding(1..=4);
        assert_eq!(check(&mut state, &[2, 3, 4], 3), (None, 3));
        assert_eq!(state.held.keys().copied().collect::<Vec<_>>(), [1]);
        // Waiting longer than HOLD behind it: alone too.
        let mut state = holding(1..=2);
        state.held.insert(1, Instant::now() - HOLD);
        assert_eq!(check(&mut state, &[2], 10), (None, 1));
    }
}
