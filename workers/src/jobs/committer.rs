//! Group commit for the job worker: the claims and the successes of its concurrent jobs are
//! collected and written many per transaction (one for the claims, one for the successes),
//! and their events published in one confirmed batch. A job task waits for its own answer, so
//! nothing is acked before its row is committed; PostgreSQL sees a few statements per batch
//! instead of several per job.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use sea_orm::{DatabaseConnection, DbErr};
use showrunner_shared::broker::Publisher;
use showrunner_shared::contracts::JobRequest;
use showrunner_shared::outbox::{self, StoredEvent};
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
    /// Cancelled once every handle is gone and the last committed events were published.
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
    pub fn start(db: DatabaseConnection, publisher: Publisher, lease: Duration) -> Self {
        let (claims, claim_rx) = mpsc::channel(BATCH_MAX);
        let (successes, success_rx) = mpsc::channel(BATCH_MAX);
        let (events, events_rx) = mpsc::unbounded_channel();
        let db_for_events = db.clone();
        let flushed = CancellationToken::new();
        let done = flushed.clone();
        tokio::spawn(async move {
            publish_events(events_rx, db_for_events, publisher).await;
            done.cancel();
        });
        tokio::spawn(run(
            claim_rx,
            db.clone(),
            events.clone(),
            move |db, batch: Vec<TracedRequest>| -> BatchFuture<Claim> {
                Box::pin(async move { store::claim_many(&db, &batch, lease).await })
            },
        ));
        tokio::spawn(run(
            success_rx,
            db,
            events,
            |db, batch: Vec<(ClaimedJob, serde_json::Value)>| -> BatchFuture<bool> {
                Box::pin(async move { store::succeed_many(&db, &batch).await })
            },
        ));
        Self { claims, successes, flushed }
    }

    /// Drops this handle and waits (at most `limit`) until the events of everything committed
    /// were published: a draining worker calls it once its job tasks are done.
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

/// Publishes committed events as they come, many per confirmed batch, then deletes them from
/// the outbox; runs apart from the writers so a confirm round trip never delays a commit.
async fn publish_events(
    mut rx: mpsc::UnboundedReceiver<Vec<StoredEvent>>,
    db: DatabaseConnection,
    publisher: Publisher,
) {
    let mut batches = Vec::new();
    while rx.recv_many(&mut batches, 64).await > 0 {
        let events: Vec<StoredEvent> = batches.drain(..).flatten().collect();
        if let Err(error) = outbox::publish(&db, &publisher, &events).await {
            // Committed in the outbox: the sweeper publishes them.
            tracing::warn!(%error, count = events.len(), "outbox publish failed, left to the sweeper");
        }
    }
}

type BatchFuture<O> =
    Pin<Box<dyn Future<Output = Result<(Vec<O>, Vec<StoredEvent>), DbErr>> + Send>>;

/// Takes what is queued (at least one, at most `BATCH_MAX`), writes it in one transaction,
/// answers every sender, and hands the batch's committed events to the outbox publisher.
async fn run<I: Send + 'static, O: Send + 'static>(
    mut rx: mpsc::Receiver<(I, Reply<O>)>,
    db: DatabaseConnection,
    events_out: mpsc::UnboundedSender<Vec<StoredEvent>>,
    write: impl Fn(DatabaseConnection, Vec<I>) -> BatchFuture<O> + Send + 'static,
) {
    let mut pending = Vec::with_capacity(BATCH_MAX);
    while rx.recv_many(&mut pending, BATCH_MAX).await > 0 {
        let (items, replies): (Vec<I>, Vec<Reply<O>>) = pending.drain(..).unzip();
        match write(db.clone(), items).await {
            Ok((answers, events)) => {
                for (reply, answer) in replies.into_iter().zip(answers) {
                    let _ = reply.send(Ok(answer));
                }
                // If the publisher is gone the events stay in the outbox for the sweeper.
                let _ = events_out.send(events);
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
