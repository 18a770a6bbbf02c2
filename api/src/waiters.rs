//! Requests waiting (`Prefer: wait`) for their command to be applied or rejected. The
//! command notifications (`settled.rs`) wake them by command id when the worker's transaction
//! commits; the shipped events (`link.rs`) by their `correlationId`, later. No polling.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use uuid::Uuid;

#[derive(Default)]
pub struct Waiters {
    waiting: Mutex<HashMap<Uuid, (watch::Sender<bool>, usize)>>,
}

/// A registration; dropping it forgets the wait.
pub struct Wait {
    waiters: Arc<Waiters>,
    command_id: Uuid,
    receiver: watch::Receiver<bool>,
}

impl Waiters {
    /// Registers interest in `command_id`; call before publishing so no event is missed.
    pub fn register(self: &Arc<Self>, command_id: Uuid) -> Wait {
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        let (sender, count) =
            waiting.entry(command_id).or_insert_with(|| (watch::channel(false).0, 0));
        *count += 1;
        Wait { waiters: self.clone(), command_id, receiver: sender.subscribe() }
    }

    pub fn wake(&self, command_id: Uuid) {
        self.wake_all([command_id]);
    }

    /// Wakes the requests waiting on any of `command_ids` (taking the lock once).
    pub fn wake_all(&self, command_ids: impl IntoIterator<Item = Uuid>) {
        let waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        if waiting.is_empty() {
            return;
        }
        for command_id in command_ids {
            if let Some((sender, _)) = waiting.get(&command_id) {
                let _ = sender.send(true);
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
    /// Resolves once the command was seen settled (its outcome committed).
    pub async fn done(&mut self) {
        let _ = self.receiver.wait_for(|seen| *seen).await;
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
        a.done().await;
        b.done().await;
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
        waiters.wake_all([one, Uuid::now_v7(), two]);
        a.done().await;
        b.done().await;
        assert!(!*c.receiver.borrow());
    }
}
