//! Requests waiting (`Prefer: wait`) for their command to be applied or rejected. The
//! command notifications (`settled.rs`) wake them by command id when the worker's transaction
//! commits, saying whether it was applied; the shipped events (`link.rs`) by their
//! `correlationId`, later, saying only that it settled. No polling.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use showrunner_shared::settled::Settled;
use tokio::sync::watch;
use uuid::Uuid;

/// What was heard of one command (nothing yet: `None`), and how many requests wait on it.
type Waited = (watch::Sender<Option<Settled>>, usize);

#[derive(Default)]
pub struct Waiters {
    waiting: Mutex<HashMap<Uuid, Waited>>,
}

/// A registration; dropping it forgets the wait.
pub struct Wait {
    waiters: Arc<Waiters>,
    command_id: Uuid,
    receiver: watch::Receiver<Option<Settled>>,
}

impl Waiters {
    /// Registers interest in `command_id`; call before publishing so no event is missed.
    pub fn register(self: &Arc<Self>, command_id: Uuid) -> Wait {
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        let (sender, count) =
            waiting.entry(command_id).or_insert_with(|| (watch::channel(None).0, 0));
        *count += 1;
        Wait { waiters: self.clone(), command_id, receiver: sender.subscribe() }
    }

    /// Wakes the requests waiting on `command_id`, settled (applied or rejected).
    pub fn wake(&self, command_id: Uuid) {
        self.wake_all([(command_id, Settled::Settled)]);
    }

    /// Wakes the requests waiting on any of the commands named (taking the lock once). What is
    /// known stays known: a later "settled" does not hide an earlier "applied", nor a mark the
    /// resource an earlier word carried.
    pub fn wake_all(&self, settled: impl IntoIterator<Item = (Uuid, Settled)>) {
        let waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        if waiting.is_empty() {
            return;
        }
        for (command_id, how) in settled {
            if let Some((sender, _)) = waiting.get(&command_id) {
                sender.send_if_modified(|seen| {
                    let news = seen.as_ref().is_none_or(|seen| how.rank() > seen.rank());
                    if news {
                        *seen = Some(how);
                    }
                    news
                });
            }
        }
    }

    /// The commands waited on now.
    pub fn waiting(&self) -> Vec<Uuid> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner()).keys().copied().collect()
    }

    pub fn len(&self) -> usize {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Wait {
    /// Resolves once the command was seen settled (its outcome committed), with what was heard
    /// of it.
    pub async fn done(&mut self) -> Settled {
        match self.receiver.wait_for(Option::is_some).await {
            Ok(seen) => seen.clone().unwrap_or(Settled::Settled),
            // The sender lives while this registration does; were it gone, the row tells.
            Err(_) => Settled::Settled,
        }
    }
}

impl Drop for Wait {
    fn drop(&mut self) {
        let mut waiting = self.waiters.waiting.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, count)) = waiting.get_mut(&self.command_id) {
            *count -= 1;
            if *count == 0 {
                waiting.remove(&self.command_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_wake_reaches_every_waiter_and_dropping_cleans_up() {
        let waiters = Arc::new(Waiters::default());
        let id = Uuid::now_v7();
        let mut a = waiters.register(id);
        let mut b = waiters.register(id);
        waiters.wake(Uuid::now_v7());
        waiters.wake(id);
        assert_eq!(a.done().await, Settled::Settled);
        assert_eq!(b.done().await, Settled::Settled);
        assert_eq!(waiters.waiting(), vec![id]);
        drop(a);
        assert_eq!(waiters.len(), 1);
        drop(b);
        assert!(waiters.is_empty());
    }

    #[tokio::test]
    async fn wake_all_wakes_only_the_ids_it_names() {
        let waiters = Arc::new(Waiters::default());
        let (one, two, three) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let mut a = waiters.register(one);
        let mut b = waiters.register(two);
        let c = waiters.register(three);
        waiters.wake_all([
            (one, Settled::Applied),
            (Uuid::now_v7(), Settled::Applied),
            (two, Settled::Settled),
        ]);
        assert_eq!(a.done().await, Settled::Applied);
        assert_eq!(b.done().await, Settled::Settled);
        assert!(c.receiver.borrow().is_none());
    }

    #[tokio::test]
    async fn applied_is_not_forgotten_when_the_event_says_settled_later() {
        let waiters = Arc::new(Waiters::default());
        let id = Uuid::now_v7();
        let mut early = waiters.register(id);
        waiters.wake_all([(id, Settled::Applied)]);
        waiters.wake(id);
        let mut late = waiters.register(id);
        assert_eq!(early.done().await, Settled::Applied);
        assert_eq!(late.done().await, Settled::Applied);
        // And a "settled" first is made precise by an "applied" after it.
        let other = Uuid::now_v7();
        let mut wait = waiters.register(other);
        waiters.wake(other);
        waiters.wake_all([(other, Settled::Applied)]);
        assert_eq!(wait.done().await, Settled::Applied);
    }

    #[tokio::test]
    async fn the_resource_is_kept_over_a_later_mark_and_wins_over_an_earlier_one() {
        let waiters = Arc::new(Waiters::default());
        let left = Settled::AppliedAs(Arc::from(r#"{"id":1}"#));
        let (one, two) = (Uuid::now_v7(), Uuid::now_v7());
        let mut first = waiters.register(one);
        let mut second = waiters.register(two);
        waiters.wake_all([(one, left.clone()), (two, Settled::Applied)]);
        waiters.wake_all([(one, Settled::Applied), (two, left.clone())]);
        waiters.wake(one);
        assert_eq!(first.done().await, left);
        assert_eq!(second.done().await, left);
    }
}
