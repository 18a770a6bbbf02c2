//! Group commit of the job worker's successes: what its concurrent jobs returned is collected
//! and written many per transaction, their `job_completed` events recorded in the event log by
//! that transaction, and their deliveries acked once it committed (in one frame where they
//! are contiguous, `settle::Acks`). A job task hands its success over and is done; nothing is
//! acked before its row is committed, and PostgreSQL sees a few statements per batch instead
//! of several per job. (Claims are grouped where the deliveries arrive: `consumer::consume`.)

use std::time::Duration;

use sea_orm::DatabaseConnection;
use showrunner_shared::broker::Publisher;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::settle::Held;
use super::store::{self, ClaimedJob};

/// Most successes written in one transaction.
const BATCH_MAX: usize = 256;

/// A finished attempt, what it returned, and its delivery.
type Success = (ClaimedJob, serde_json::Value, Held);

/// The handle job tasks use; cheap to clone.
#[derive(Clone)]
pub struct Committer {
    successes: mpsc::UnboundedSender<Success>,
    /// Cancelled once every handle is gone and what they handed in was written.
    flushed: CancellationToken,
}

impl Committer {
    /// Starts the writer loop; it ends when every handle is dropped. `publisher` sends the
    /// requests of a batch that could not be written through the delay tiers.
    pub fn start(db: DatabaseConnection, publisher: Publisher) -> Self {
        let (successes, rx) = mpsc::unbounded_channel();
        let flushed = CancellationToken::new();
        let done = flushed.clone();
        tokio::spawn(async move {
            write_forever(rx, db, publisher).await;
            done.cancel();
        });
        Self { successes, flushed }
    }

    /// Drops this handle and waits (at most `limit`) until everything handed in was written: a
    /// draining worker calls it once its job tasks are done.
    pub async fn flush(self, limit: Duration) {
        let flushed = self.flushed.clone();
        drop(self);
        let _ = tokio::time::timeout(limit, flushed.cancelled()).await;
    }

    /// Records the success of `job` (unless the attempt is no longer this worker's) and then
    /// acks `held`. The delivery's slot stays taken until then (the queue is unbounded: at
    /// most `jobs.max_in_flight` successes wait).
    pub fn succeed(&self, job: ClaimedJob, result: serde_json::Value, held: Held) {
        if let Err(mpsc::error::SendError((_, _, held))) = self.successes.send((job, result, held))
        {
            // The writer is gone (it never stops while a handle lives): leave the delivery to
            // the broker, which hands it out again once the channel closes.
            tracing::warn!(tag = held.delivery.delivery_tag, "job committer stopped");
        }
    }
}

/// Takes what is queued (at least one, at most `BATCH_MAX`), writes it in one transaction
/// (with its events), and acks the deliveries; a batch that could not be written goes back
/// through the delay tiers, to be claimed again (the attempt's lease makes that wait).
async fn write_forever(
    mut rx: mpsc::UnboundedReceiver<Success>,
    db: DatabaseConnection,
    publisher: Publisher,
) {
    let mut pending = Vec::with_capacity(BATCH_MAX);
    while rx.recv_many(&mut pending, BATCH_MAX).await > 0 {
        let (done, held): (Vec<(ClaimedJob, serde_json::Value)>, Vec<Held>) =
            pending.drain(..).map(|(job, result, held)| ((job, result), held)).unzip();
        match store::succeed_many(&db, &done).await {
            Ok((flags, _recorded)) => {
                for ((job, _), ok) in done.iter().zip(flags) {
                    if ok {
                        tracing::debug!(job_id = %job.id, job_type = %job.job_type, attempt = job.attempts, "job succeeded");
                    } else {
                        tracing::warn!(job_id = %job.id, "attempt outlived its lease; its outcome is dropped");
                    }
                }
                if let Some(acks) = held.first().map(|h| h.acks().clone()) {
                    acks.ack(held).await;
                }
            }
            Err(error) => {
                tracing::warn!(%error, count = held.len(), "job batch write failed, trying again later");
                for held in held {
                    let publisher = publisher.clone();
                    tokio::spawn(async move { held.later(&publisher).await });
                }
            }
        }
    }
}
