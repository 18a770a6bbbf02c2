//! Group commit for the job worker: the claims and the successes of its concurrent jobs are
//! collected and written many per transaction (one for the claims, one for the successes),
//! their events recorded in the event log by that transaction. A job task waits for its own answer, so
//! nothing is acked before its row is committed; PostgreSQL sees a few statements per batch
//! instead of several per job.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use sea_orm::{DatabaseConnection, DbErr};
use showrunner_shared::contracts::JobRequest;
use showrunner_shared::event_log::StoredEvent;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::store::{self, Claim, ClaimedJob};

/// Most requests written in one transaction.
const BATCH_MAX: usize = 256;

type Reply<T> = oneshot::Sender<Result<T, String>>;
/// A job request and its `traceparent`.
type TracedRequest = (JobRequest, Option<String>);

/// The handle job tasks use; cheap to clone.
#[derive(Clone)]
pub struct Committer {
    claims: mpsc::Sender<(TracedRequest, Reply<Claim>)>,
    successes: mpsc::Sender<((ClaimedJob, serde_json::Value), Reply<bool>)>,
    /// Cancelled once every handle is gone and what they handed in was written.
    flushed: CancellationToken,
}

#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error("the job committer stopped")]
    Stopped,
    #[error("{0}")]
    Db(String),
}

impl Committer {
    /// Starts the two writer loops; they end when every handle is dropped.
    pub fn start(db: DatabaseConnection, lease: Duration) -> Self {
        let (claims, claim_rx) = mpsc::channel(BATCH_MAX);
        let (successes, success_rx) = mpsc::channel(BATCH_MAX);
        let flushed = CancellationToken::new();
        let done = flushed.clone();
        let claiming = tokio::spawn(run(
            claim_rx,
            db.clone(),
            move |db, batch: Vec<TracedRequest>| -> BatchFuture<Claim> {
                Box::pin(async move { store::claim_many(&db, &batch, lease).await })
            },
        ));
        let succeeding = tokio::spawn(run(
            success_rx,
            db,
            |db, batch: Vec<(ClaimedJob, serde_json::Value)>| -> BatchFuture<bool> {
                Box::pin(async move { store::succeed_many(&db, &batch).await })
            },
        ));
        tokio::spawn(async move {
            let _ = claiming.await;
            let _ = succeeding.await;
            done.cancel();
        });
        Self { claims, successes, flushed }
    }

    /// Drops this handle and waits (at most `limit`) until everything handed in was written: a
    /// draining worker calls it once its job tasks are done.
    pub async fn flush(self, limit: Duration) {
        let flushed = self.flushed.clone();
        drop(self);
        let _ = tokio::time::timeout(limit, flushed.cancelled()).await;
    }

    /// Claims the attempt `request` stands for; `traceparent` is the request's trace.
    pub async fn claim(
        &self,
        request: JobRequest,
        traceparent: Option<String>,
    ) -> Result<Claim, CommitError> {
        ask(&self.claims, (request, traceparent)).await
    }

    /// `false`: the attempt was no longer this worker's, nothing was recorded.
    pub async fn succeed(
        &self,
        job: ClaimedJob,
        result: serde_json::Value,
    ) -> Result<bool, CommitError> {
        ask(&self.successes, (job, result)).await
    }
}

async fn ask<I, O>(queue: &mpsc::Sender<(I, Reply<O>)>, item: I) -> Result<O, CommitError> {
    let (tx, rx) = oneshot::channel();
    queue.send((item, tx)).await.map_err(|_| CommitError::Stopped)?;
    rx.await.map_err(|_| CommitError::Stopped)?.map_err(CommitError::Db)
}

type BatchFuture<O> =
    Pin<Box<dyn Future<Output = Result<(Vec<O>, Vec<StoredEvent>), DbErr>> + Send>>;

/// Takes what is queued (at least one, at most `BATCH_MAX`), writes it in one transaction
/// (with its events), and answers every sender.
async fn run<I: Send + 'static, O: Send + 'static>(
    mut rx: mpsc::Receiver<(I, Reply<O>)>,
    db: DatabaseConnection,
    write: impl Fn(DatabaseConnection, Vec<I>) -> BatchFuture<O> + Send + 'static,
) {
    let mut pending = Vec::with_capacity(BATCH_MAX);
    while rx.recv_many(&mut pending, BATCH_MAX).await > 0 {
        let (items, replies): (Vec<I>, Vec<Reply<O>>) = pending.drain(..).unzip();
        match write(db.clone(), items).await {
            Ok((answers, _recorded)) => {
                for (reply, answer) in replies.into_iter().zip(answers) {
                    let _ = reply.send(Ok(answer));
                }
            }
            Err(error) => {
                tracing::warn!(%error, "job batch write failed");
                for reply in replies {
                    let _ = reply.send(Err(error.to_string()));
                }
            }
        }
    }
}
