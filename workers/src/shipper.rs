//! The log shipper: publishes the events producers recorded in the event log, in their order
//! (`seq`, which the producers' own inserts gave them, in commit order: `event_log`'s doc), with
//! that number, to the live exchange, where every api's relay queue hears them. Each event
//! crosses the broker once, and the shipper writes nothing per event: it reads what committed
//! after the last number it published and publishes it with confirms.
//!
//! One shipper is active at a time, fenced by a lease in `event_log_shipper`: the holder renews
//! it at least every [`RENEW_EVERY`] (a lease lasts [`LEASE`]), and every read of the log checks
//! in the same statement that the lease is still its own, so a shipper that lost it reads, and
//! publishes, nothing more. Publishing twice would only be wasteful (consumers drop what they
//! have), never wrong.
//!
//! `published_seq` says how far publishes were confirmed, recorded with each renewal. A shipper
//! that takes the lease publishes again everything after it (the previous one may have died
//! between its confirms and its next renewal): consumers drop what they have (relays by `seq`).
//!
//! Rows an older version's producers left unnumbered (`seq` NULL, during a rolling upgrade) are
//! numbered by the renewal, from the producers' counter, so they are shipped after what was
//! committed before them.

use std::time::{Duration, Instant};

use lapin::types::{AMQPValue, FieldTable};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr, FromQueryResult};
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
/// Most rows published in one confirmed batch.
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
                // The database failed under us: take the lease again, which publishes again
                // from the last number recorded as confirmed.
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
        tracing::info!(published, "log shipper active, publishing from there");
        let mut confirmed = published;
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
            if renewed.elapsed() >= RENEW_EVERY {
                if !renew(db, me, confirmed).await? {
                    tracing::warn!("log shipper lost its lease, standing by");
                    break;
                }
                renewed = Instant::now();
            }
            let Some(rows) = recorded_after(db, me, confirmed).await? else {
                tracing::warn!("log shipper lost its lease, standing by");
                break;
            };
            let Some(last) = rows.last().map(|r| r.seq) else {
                tokio::select! {
                    () = cancel.cancelled() => {}
                    () = tokio::time::sleep(idle) => {}
                }
                idle = (idle * 2).min(IDLE_POLL_MAX);
                continue;
            };
            idle = IDLE_POLL_MIN;
            publish(publisher, &rows).await?;
            confirmed = last;
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

/// What committed after `published`, in order, at most [`BATCH`] rows; `None` when the lease is
/// no longer this shipper's (checked in the same statement, so nothing is read, and published,
/// after another shipper took it). Every number up to the largest one seen is committed or
/// given back (`event_log`'s doc), so nothing skipped here can appear later.
async fn recorded_after(
    db: &DatabaseConnection,
    me: Uuid,
    published: i64,
) -> Result<Option<Vec<Shipped>>, DbErr> {
    // One row with NULLs when the lease is held and nothing is new; none when it is not held.
    #[derive(FromQueryResult)]
    struct Row {
        seq: Option<i64>,
        id: Option<Uuid>,
        routing_key: Option<String>,
        body: Option<String>,
        traceparent: Option<String>,
    }
    let rows = Row::find_by_statement(sql(
        "SELECT e.seq, e.id, e.routing_key, e.body, e.traceparent FROM event_log_shipper s \
         LEFT JOIN LATERAL ( \
           SELECT seq, id, routing_key, body, traceparent FROM event_log \
           WHERE seq > $2 ORDER BY seq LIMIT $3 \
         ) e ON true \
         WHERE s.id = 1 AND s.holder = $1 AND s.lease_until > now() ORDER BY e.seq",
        [me.into(), published.into(), BATCH.into()],
    ))
    .all(db)
    .await?;
    if rows.is_empty() {
        return Ok(None);
    }
    Ok(Some(
        rows.into_iter()
            .filter_map(|r| {
                Some(Shipped {
                    seq: r.seq?,
                    id: r.id?,
                    routing_key: r.routing_key?,
                    body: r.body?,
                    traceparent: r.traceparent,
                })
            })
            .collect(),
    ))
}

/// Renews the lease, recording `confirmed`; `false` when the lease is no longer this
/// shipper's. Then numbers the rows an older version left unnumbered, if there are any.
async fn renew(db: &DatabaseConnection, me: Uuid, confirmed: i64) -> Result<bool, DbErr> {
    #[derive(FromQueryResult)]
    struct Renewed {
        strays: bool,
    }
    let renewed = Renewed::find_by_statement(sql(
        "UPDATE event_log_shipper SET lease_until = now() + make_interval(secs => $2), \
         published_seq = GREATEST(published_seq, $3) \
         WHERE id = 1 AND holder = $1 AND lease_until > now() \
         RETURNING EXISTS (SELECT 1 FROM event_log WHERE seq IS NULL) AS strays",
        [me.into(), LEASE.as_secs_f64().into(), confirmed.into()],
    ))
    .one(db)
    .await?;
    let Some(renewed) = renewed else { return Ok(false) };
    if renewed.strays {
        // The producers' counter, so the strays take the next numbers after every commit
        // before this one (the row locks of `FOR UPDATE` first: the same order as an older
        // shipper's, never the reverse of a producer's).
        let numbered = db
            .execute_raw(sql(
                "WITH stray AS ( \
                   SELECT id, ord FROM event_log WHERE seq IS NULL ORDER BY ord LIMIT $1 \
                   FOR UPDATE \
                 ), counter AS ( \
                   UPDATE event_log_counter SET top = top + (SELECT count(*) FROM stray) \
                   WHERE id = 1 AND EXISTS (SELECT 1 FROM stray) \
                   RETURNING top - (SELECT count(*) FROM stray) AS base \
                 ), numbered AS ( \
                   SELECT stray.id, counter.base + row_number() OVER (ORDER BY stray.ord, stray.id) \
                   AS seq FROM stray, counter \
                 ) \
                 UPDATE event_log e SET seq = numbered.seq FROM numbered WHERE e.id = numbered.id",
                [BATCH.into()],
            ))
            .await?;
        tracing::info!(
            count = numbered.rows_affected(),
            "log shipper numbered rows an older version left"
        );
    }
    Ok(true)
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
