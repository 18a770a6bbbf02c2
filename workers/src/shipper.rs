//! The log shipper: gives the events producers recorded in the event log their place in the one
//! total order (`seq`), and publishes them, with that number, to the live exchange, where every
//! api's relay queue and the notification worker's queue hear them. Each event crosses the
//! broker once.
//!
//! One shipper is active at a time, fenced by a lease in `event_log_shipper`: every numbering
//! transaction first renews the lease (holder = this shipper, not expired) and locks its row, so
//! a shipper whose lease ran out numbers nothing, and two shippers never number at once. Rows are
//! numbered in what they look like at that moment: those committed and not numbered yet, in
//! `ord` order, each one after the largest `seq` so far (numbers are dense: a relay that sees a
//! jump knows it missed something and reads it from the log). A row committed later is numbered
//! later, so `seq` order is the order in which the shipper found the rows committed, and two
//! transactions that touched the same row are in their commit order (`event_log`'s doc).
//!
//! `published_seq` says how far publishes were confirmed. A shipper that takes the lease
//! publishes again everything numbered after it (the previous one may have died between its
//! numbering and its confirms): consumers drop what they have (relays by `seq`, notifications by
//! their unique key).

use std::time::{Duration, Instant};

use lapin::types::{AMQPValue, FieldTable};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr, FromQueryResult, TransactionTrait};
use showrunner_shared::broker::topology::LIVE_EXCHANGE;
use showrunner_shared::broker::{Outgoing, Publisher, publisher_json_properties};
use showrunner_shared::db::sql;
use showrunner_shared::event_log::Shipped;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::role::{Part, Role, Session};
use crate::runtime::Context;

/// How long a lease lasts without renewal: how long a dead shipper holds up the log.
pub const LEASE: Duration = Duration::from_secs(5);
/// How often an active shipper with nothing to ship renews its lease.
const RENEW_EVERY: Duration = Duration::from_secs(1);
/// How often a standby shipper tries to take the lease.
const STANDBY_POLL: Duration = Duration::from_millis(500);
/// The first pause of an idle shipper between looks at the log, doubled while the log stays
/// idle up to [`IDLE_POLL_MAX`]: under load it looks again at once, when idle at most this late.
const IDLE_POLL_MIN: Duration = Duration::from_millis(1);
const IDLE_POLL_MAX: Duration = Duration::from_millis(8);
/// Most rows numbered (and published in one confirmed batch) at a time.
const BATCH: i64 = 2_000;

/// The log shipper as a part of the activity role (`crate::role`), active or standing by.
pub struct Shipper {
    me: Uuid,
}

impl Shipper {
    pub fn new() -> Self {
        let me = Uuid::now_v7();
        tracing::info!(shipper = %me, "log shipper starting");
        Self { me }
    }
}

impl Default for Shipper {
    fn default() -> Self {
        Self::new()
    }
}

impl Part for Shipper {
    fn label(&self) -> String {
        format!("{}/shipper", Role::Activity.name())
    }

    /// None of its own: the importer beside it in the role sweeps.
    fn sweeps(&self, _: &Context, _: &CancellationToken, _: &mut JoinSet<()>) {}

    async fn session(&mut self, s: Session<'_>) -> anyhow::Result<()> {
        loop {
            match lead(&s.ctx.db, &s.ctx.publisher, s.conn, self.me, s.cancel).await {
                Ok(()) => return Ok(()),
                // The database failed under us: what was numbered may not be published, so
                // take the lease again (which publishes from the last confirmed number on).
                Err(ShipError::Db(error)) if s.ctx.publisher.is_open() => {
                    tracing::warn!(%error, "log shipper: database error, starting over");
                    tokio::select! {
                        () = s.cancel.cancelled() => return Ok(()),
                        () = tokio::time::sleep(STANDBY_POLL) => {}
                    }
                }
                Err(error) => return Err(error.into()),
            }
        }
    }

    async fn leave(&mut self, db: &DatabaseConnection) {
        release(db, self.me).await;
    }
}

#[derive(Debug, thiserror::Error)]
enum ShipError {
    #[error("database error: {0}")]
    Db(#[from] DbErr),
    #[error("publish failed: {0}")]
    Publish(#[from] showrunner_shared::broker::PublishError),
    #[error("the broker connection closed")]
    Closed,
}

/// Stands by until this shipper holds the lease, then ships until shutdown, an error, or the
/// lease is lost (then stands by again).
async fn lead(
    db: &DatabaseConnection,
    publisher: &Publisher,
    conn: &lapin::Connection,
    me: Uuid,
    cancel: &CancellationToken,
) -> Result<(), ShipError> {
    loop {
        let Some(published) = standby(db, conn, me, cancel).await? else { return Ok(()) };
        tracing::info!(published, "log shipper active");
        let mut confirmed = catch_up(db, publisher, published).await?;
        let mut recorded = published;
        let mut renewed = Instant::now();
        let mut idle = IDLE_POLL_MIN;
        loop {
            if cancel.is_cancelled() {
                release_with(db, me, confirmed).await;
                return Ok(());
            }
            if !publisher.is_open() || !conn.status().connected() {
                return Err(ShipError::Closed);
            }
            let due = renewed.elapsed() >= RENEW_EVERY || confirmed > recorded;
            if !due && !unshipped(db).await? {
                tokio::select! {
                    () = cancel.cancelled() => {}
                    () = tokio::time::sleep(idle) => {}
                }
                idle = (idle * 2).min(IDLE_POLL_MAX);
                continue;
            }
            let Some(rows) = number(db, me, confirmed).await? else {
                tracing::warn!("log shipper lost its lease, standing by");
                break;
            };
            (recorded, renewed) = (confirmed, Instant::now());
            if let Some(last) = rows.last() {
                idle = IDLE_POLL_MIN;
                let last = last.seq;
                publish(publisher, &rows).await?;
                confirmed = last;
            }
        }
    }
}

/// Waits until this shipper takes the lease: `Some(published_seq)`, or `None` on shutdown.
async fn standby(
    db: &DatabaseConnection,
    conn: &lapin::Connection,
    me: Uuid,
    cancel: &CancellationToken,
) -> Result<Option<i64>, ShipError> {
    #[derive(FromQueryResult)]
    struct Published {
        published_seq: i64,
    }
    loop {
        if !conn.status().connected() {
            return Err(ShipError::Closed);
        }
        let taken = Published::find_by_statement(sql(
            "UPDATE event_log_shipper SET holder = $1, \
             lease_until = now() + make_interval(secs => $2) \
             WHERE id = 1 AND (holder = $1 OR lease_until < now()) RETURNING published_seq",
            [me.into(), LEASE.as_secs_f64().into()],
        ))
        .one(db)
        .await?;
        if let Some(taken) = taken {
            return Ok(Some(taken.published_seq));
        }
        tokio::select! {
            () = cancel.cancelled() => return Ok(None),
            () = tokio::time::sleep(STANDBY_POLL) => {}
        }
    }
}

/// Publishes again what was numbered after `published` (confirmed or not, by whoever held the
/// lease before); the last number published.
async fn catch_up(
    db: &DatabaseConnection,
    publisher: &Publisher,
    mut published: i64,
) -> Result<i64, ShipError> {
    loop {
        let rows = Shipped::find_by_statement(sql(
            "SELECT seq, id, routing_key, body, traceparent FROM event_log \
             WHERE seq > $1 ORDER BY seq LIMIT $2",
            [published.into(), BATCH.into()],
        ))
        .all(db)
        .await?;
        let Some(last) = rows.last().map(|r| r.seq) else { return Ok(published) };
        publish(publisher, &rows).await?;
        tracing::info!(count = rows.len(), through = last, "log shipper published again");
        published = last;
    }
}

/// Whether something waits to be numbered (an index-only look at the partial index).
async fn unshipped(db: &DatabaseConnection) -> Result<bool, DbErr> {
    let row =
        db.query_one_raw(sql("SELECT 1 FROM event_log WHERE seq IS NULL LIMIT 1", [])).await?;
    Ok(row.is_some())
}

/// Renews the lease (recording `confirmed`) and numbers what has committed, in one
/// transaction; `None` when the lease is no longer this shipper's.
async fn number(
    db: &DatabaseConnection,
    me: Uuid,
    confirmed: i64,
) -> Result<Option<Vec<Shipped>>, DbErr> {
    let txn = db.begin().await?;
    // The lease row stays locked until the commit: this is the fence.
    let held = txn
        .execute_raw(sql(
            "UPDATE event_log_shipper SET lease_until = now() + make_interval(secs => $2), \
             published_seq = GREATEST(published_seq, $3) \
             WHERE id = 1 AND holder = $1 AND lease_until > now()",
            [me.into(), LEASE.as_secs_f64().into(), confirmed.into()],
        ))
        .await?;
    if held.rows_affected() == 0 {
        txn.rollback().await?;
        return Ok(None);
    }
    // The rows are locked before they are counted, so the numbers are dense even when a row
    // goes away meanwhile (the api deletes the unshipped event of a job it could not publish).
    // This statement's snapshot is taken after the lease row was locked, so it sees every
    // number the previous holder committed.
    let mut rows = Shipped::find_by_statement(sql(
        "WITH next AS ( \
           SELECT id, ord FROM event_log WHERE seq IS NULL ORDER BY ord LIMIT $1 FOR UPDATE \
         ), top AS (SELECT COALESCE(max(seq), 0) AS top FROM event_log), \
         numbered AS ( \
           SELECT next.id, top.top + row_number() OVER (ORDER BY next.ord) AS seq FROM next, top \
         ) \
         UPDATE event_log e SET seq = numbered.seq FROM numbered WHERE e.id = numbered.id \
         RETURNING e.seq, e.id, e.routing_key, e.body, e.traceparent",
        [BATCH.into()],
    ))
    .all(&txn)
    .await?;
    txn.commit().await?;
    rows.sort_by_key(|r| r.seq);
    Ok(Some(rows))
}

/// Publishes `rows` in order, with their `seq`, and waits for the confirms.
async fn publish(publisher: &Publisher, rows: &[Shipped]) -> Result<(), ShipError> {
    let ids: Vec<String> = rows.iter().map(|r| r.id.to_string()).collect();
    let messages = rows
        .iter()
        .zip(&ids)
        .map(|(row, id)| {
            let mut headers = FieldTable::default();
            headers.insert("x-seq".into(), AMQPValue::LongLongInt(row.seq));
            if let Some(tp) = &row.traceparent {
                headers.insert("traceparent".into(), AMQPValue::LongString(tp.as_str().into()));
            }
            Outgoing {
                exchange: LIVE_EXCHANGE,
                routing_key: &row.routing_key,
                body: row.body.as_bytes(),
                properties: publisher_json_properties(id, "event", headers),
                mandatory: false,
            }
        })
        .collect();
    publisher.publish_all(messages).await?;
    Ok(())
}

/// Gives the lease up (a standby shipper takes it at its next look instead of after
/// [`LEASE`]), recording how far this one published.
async fn release_with(db: &DatabaseConnection, me: Uuid, confirmed: i64) {
    let result = db
        .execute_raw(sql(
            "UPDATE event_log_shipper SET lease_until = '-infinity', \
             published_seq = GREATEST(published_seq, $2) WHERE id = 1 AND holder = $1",
            [me.into(), confirmed.into()],
        ))
        .await;
    if let Err(error) = result {
        tracing::warn!(%error, "log shipper: could not give the lease up; it expires by itself");
    }
}

async fn release(db: &DatabaseConnection, me: Uuid) {
    release_with(db, me, 0).await;
}
