//! Group commit of the job worker's finished attempts: what its concurrent jobs returned is
//! collected and written many per transaction, their events recorded in the event log by that
//! transaction, and their deliveries acked once it committed (in one frame where they are
//! contiguous, `settle::Acks`). A job task hands its outcome over and is done; nothing is acked
//! before its row is committed, and PostgreSQL sees a few statements per batch instead of
//! several per job. Successes go in one transaction; attempts that failed and will be retried
//! in another, whose retry requests are confirmed by the broker before it commits (the rows stay
//! locked meanwhile, so a retry that comes back at once waits for the commit and finds its new
//! dispatch id). A failure for good stays with its job task (`consumer::record`): its parked copy
//! goes after the commit. (Claims are grouped where the deliveries arrive: `consumer::consume`.)

use std::time::Duration;

use chrono::Utc;
use sea_orm::DatabaseConnection;
use showrunner_shared::broker::Publisher;
use showrunner_shared::broker::topology::JOBS_QUEUE;
use showrunner_shared::{jobs, metrics};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::settle::Held;
use super::store::{self, ClaimedJob, Retry};

/// Most outcomes written in one transaction.
const BATCH_MAX: usize = 256;

/// A finished attempt and its delivery.
enum Finished {
    /// What it returned.
    Success(ClaimedJob, serde_json::Value, Held),
    /// It failed and runs again after a delay.
    Retry(Retry, Held),
}

/// The handle job tasks use; cheap to clone.
#[derive(Clone)]
pub struct Committer {
    finished: mpsc::UnboundedSender<Finished>,
    /// Cancelled once every handle is gone and what they handed in was written.
    flushed: CancellationToken,
}

impl Committer {
    /// Starts the writer loop; it ends when every handle is dropped. `publisher` sends the
    /// retries, and the requests of a batch that could not be written through the delay tiers.
    pub fn start(db: DatabaseConnection, publisher: Publisher) -> Self {
        let (finished, rx) = mpsc::unbounded_channel();
        let flushed = CancellationToken::new();
        let done = flushed.clone();
        tokio::spawn(async move {
            write_forever(rx, db, publisher).await;
            done.cancel();
        });
        Self { finished, flushed }
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
    /// most `jobs.max_in_flight` outcomes wait).
    pub fn succeed(&self, job: ClaimedJob, result: serde_json::Value, held: Held) {
        self.hand_in(Finished::Success(job, result, held));
    }

    /// Records the failed attempt `retry.job` as `retrying` with its `job_retry`, publishes
    /// `retry.next` (confirmed before the commit), and then acks `held`.
    pub fn retry(&self, retry: Retry, held: Held) {
        self.hand_in(Finished::Retry(retry, held));
    }

    fn hand_in(&self, finished: Finished) {
        if let Err(mpsc::error::SendError(finished)) = self.finished.send(finished) {
            // The writer is gone (it never stops while a handle lives): leave the delivery to
            // the broker, which hands it out again once the channel closes.
            let (Finished::Success(_, _, held) | Finished::Retry(_, held)) = finished;
            tracing::warn!(tag = held.delivery.delivery_tag, "job committer stopped");
        }
    }
}

/// Takes what is queued (at least one, at most `BATCH_MAX`), writes its successes in one
/// transaction and its retries in another (with their events), and acks the deliveries; what
/// could not be written goes back through the delay tiers, to be claimed again (the attempt's
/// lease makes that wait).
async fn write_forever(
    mut rx: mpsc::UnboundedReceiver<Finished>,
    db: DatabaseConnection,
    publisher: Publisher,
) {
    let mut pending = Vec::with_capacity(BATCH_MAX);
    while rx.recv_many(&mut pending, BATCH_MAX).await > 0 {
        let mut successes = Vec::new();
        let mut retries = Vec::new();
        for finished in pending.drain(..) {
            match finished {
                Finished::Success(job, result, held) => successes.push(((job, result), held)),
                Finished::Retry(retry, held) => retries.push((retry, held)),
            }
        }
        if !successes.is_empty() {
            write_successes(&db, &publisher, successes).await;
        }
        if !retries.is_empty() {
            write_retries(&db, &publisher, retries).await;
        }
    }
}

async fn write_successes(
    db: &DatabaseConnection,
    publisher: &Publisher,
    successes: Vec<((ClaimedJob, serde_json::Value), Held)>,
) {
    let (done, held): (Vec<(ClaimedJob, serde_json::Value)>, Vec<Held>) =
        successes.into_iter().unzip();
    let written = store::succeed_many(db, &done).await.map(|(flags, _recorded)| {
        for ((job, _), ok) in done.iter().zip(flags) {
            if ok {
                tracing::debug!(job_id = %job.id, job_type = %job.job_type, attempt = job.attempts, "job succeeded");
            } else {
                dropped(job);
            }
        }
    });
    settle(publisher, held, written, "job batch write").await;
}

/// The retries of a batch: rows and events in one transaction, every retry request confirmed
/// before it commits. Any publish or the commit failing rolls them all back and sends the
/// failed deliveries through the delay tiers; a retry request already confirmed then carries a
/// dispatch id the row never got, and is skipped as stale when it comes back.
async fn write_retries(
    db: &DatabaseConnection,
    publisher: &Publisher,
    retries: Vec<(Retry, Held)>,
) {
    let (retries, held): (Vec<Retry>, Vec<Held>) = retries.into_iter().unzip();
    let written = async {
        let (txn, flags, _recorded) = store::retry_many(db, &retries).await?;
        let now = Utc::now();
        let publishes = retries.iter().zip(&flags).filter(|(_, ok)| **ok).map(|(r, _)| {
            jobs::publish_traced(publisher, &r.next, now, r.job.traceparent.as_deref())
        });
        for published in futures_util::future::join_all(publishes).await {
            published?;
        }
        txn.commit().await?;
        anyhow::Ok(flags)
    };
    let written = written.await.map(|flags| {
        for (Retry { job, delay, error, .. }, ok) in retries.iter().zip(flags) {
            if ok {
                metrics::MESSAGES_RETRIED.inc(&[JOBS_QUEUE]);
                tracing::info!(job_id = %job.id, attempt = job.attempts, ?delay, %error, "job failed, retry scheduled");
            } else {
                dropped(job);
            }
        }
    });
    settle(publisher, held, written, "job retry write").await;
}

fn dropped(job: &ClaimedJob) {
    tracing::warn!(job_id = %job.id, "attempt outlived its lease; its outcome is dropped");
}

/// Acks the deliveries of a written batch; those of a batch that could not be written go
/// through the delay tiers, each in a task of its own.
async fn settle<E: std::fmt::Display>(
    publisher: &Publisher,
    held: Vec<Held>,
    written: Result<(), E>,
    what: &str,
) {
    match written {
        Ok(()) => {
            if let Some(acks) = held.first().map(|h| h.acks().clone()) {
                acks.ack(held).await;
            }
        }
        Err(error) => {
            tracing::warn!(%error, count = held.len(), "{what} failed, trying again later");
            for held in held {
                let publisher = publisher.clone();
                tokio::spawn(async move { held.later(&publisher).await });
            }
        }
    }
}
