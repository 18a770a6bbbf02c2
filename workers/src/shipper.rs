//! The log shipper: publishes the events producers recorded in the event log to the live
//! exchange, in their one total order (`seq`), where every api's relay queue hears them. Each
//! event crosses the broker once, and the shipper writes nothing per event: a producer's insert
//! numbered it.
//!
//! One shipper is active at a time, fenced by a lease in `event_log_shipper`: every look at the
//! log checks the lease in the same statement (and renews it once a second, or after a batch),
//! so a shipper whose lease was taken reads nothing more to publish. Numbers become visible out
//! of order and may have holes ([`Horizon`] says which can be shipped). What one look can ship
//! goes out as few messages as the message size allows (`showrunner_shared::live`: a JSON
//! array of consecutive events); every message carries the number published before its first
//! event (`x-prev-seq`): a relay whose last number is below that knows it missed something and
//! reads it from the log.
//!
//! `published_seq` says how far publishes were confirmed; the notification worker, the relays'
//! catch-up and `resume` read the log no further. A shipper that takes the lease publishes again
//! everything after it (the previous one may have died between its confirms and recording
//! them): consumers drop what they have (relays by `seq`, notifications by their unique key).

use std::time::{Duration, Instant};

use lapin::types::{AMQPValue, FieldTable};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr, FromQueryResult};
use showrunner_shared::broker::topology::LIVE_EXCHANGE;
use showrunner_shared::broker::{Outgoing, Publisher, publisher_json_properties};
use showrunner_shared::db::sql;
use showrunner_shared::event_log::Shipped;
use showrunner_shared::live;
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
/// Most rows one look reads, and so most events in one message on `showrunner.live`. A relay
/// frames a message's events for a socket at once, before the client can read any of them, so
/// one message must fit in a client's send buffer (`realtime.send_buffer`, 1,024 frames by
/// default) with room to spare: at 2,000, a catch-up after a fault (the shipper reconnecting
/// while producers went on) closed the fault suite's watcher with 4008 although it missed
/// nothing. Under load a look finds a few dozen rows, so the bound only shapes catch-ups.
const BATCH: i64 = 500;

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
            let max_bytes = s.ctx.settings.amqp.max_message_bytes;
            match lead(&s.ctx.db, &s.ctx.publisher, s.conn, self.me, s.cancel, max_bytes).await {
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
    max_bytes: usize,
) -> Result<(), ShipError> {
    loop {
        let Some(published) = standby(db, conn, me, cancel).await? else { return Ok(()) };
        tracing::info!(published, "log shipper active");
        // Everything after `published` is shipped again: the previous holder may have died
        // between its publish and recording it.
        let mut log = Horizon::new(published);
        let mut recorded = published;
        let mut renewed = Instant::now();
        let mut idle = IDLE_POLL_MIN;
        loop {
            if cancel.is_cancelled() {
                release_with(db, me, log.position).await;
                return Ok(());
            }
            if !publisher.is_open() || !conn.status().connected() {
                return Err(ShipError::Closed);
            }
            let renew = renewed.elapsed() >= RENEW_EVERY || log.position > recorded;
            let Some(seen) = look(db, me, log.position, renew, log.waits()).await? else {
                tracing::warn!("log shipper lost its lease, standing by");
                break;
            };
            if renew {
                (recorded, renewed) = (log.position, Instant::now());
            }
            let rows = log.take(seen);
            if rows.is_empty() {
                tokio::select! {
                    () = cancel.cancelled() => {}
                    () = tokio::time::sleep(idle) => {}
                }
                idle = (idle * 2).min(IDLE_POLL_MAX);
                continue;
            }
            idle = IDLE_POLL_MIN;
            publish(publisher, &rows, max_bytes).await?;
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

/// One look at the log: the rows after `after` and, from the same snapshot, what says which of
/// them can be shipped (see [`Horizon`]).
#[derive(Debug, Default)]
pub(crate) struct Seen {
    /// The oldest transaction still running (`pg_snapshot_xmin`).
    pub xmin: i64,
    /// When asked for (a hole waits): a transaction id given out after the snapshot was taken,
    /// so above every id given out before it (`pg_current_xact_id()` of the look itself).
    pub bound: Option<i64>,
    /// The largest number visible.
    pub top: i64,
    /// The rows after `after`, in `seq` order, at most [`BATCH`].
    pub rows: Vec<Shipped>,
}

#[derive(FromQueryResult)]
struct SeenRow {
    held: bool,
    xmin: i64,
    bound: Option<i64>,
    top: i64,
    seq: Option<i64>,
    id: Option<Uuid>,
    routing_key: Option<String>,
    body: Option<String>,
    traceparent: Option<String>,
}

/// Looks at the log after `after` if this shipper still holds the lease (checked in the same
/// statement, so a shipper whose lease was taken reads nothing to publish); with `renew`, also
/// renews the lease and records `after` as published. `None`: the lease is gone.
async fn look(
    db: &DatabaseConnection,
    me: Uuid,
    after: i64,
    renew: bool,
    bound: bool,
) -> Result<Option<Seen>, DbErr> {
    // Renewing writes the lease row; a look that does not renew only reads it, so an idle
    // shipper writes once a second.
    let lease = if renew {
        "UPDATE event_log_shipper SET lease_until = now() + make_interval(secs => $4), \
         published_seq = GREATEST(published_seq, $2) \
         WHERE id = 1 AND holder = $1 AND lease_until > now() RETURNING 1"
    } else {
        "SELECT 1 FROM event_log_shipper WHERE id = 1 AND holder = $1 AND lease_until > now() \
         AND $4::float8 IS NOT NULL"
    };
    let statement = format!(
        "WITH lease AS ({lease}), \
         snap AS (SELECT EXISTS (SELECT 1 FROM lease) AS held, \
           pg_snapshot_xmin(pg_current_snapshot())::text::int8 AS xmin, \
           CASE WHEN $5 THEN pg_current_xact_id()::text::int8 END AS bound, \
           (SELECT COALESCE(max(seq), 0) FROM event_log) AS top) \
         SELECT snap.held, snap.xmin, snap.bound, snap.top, \
           r.seq, r.id, r.routing_key, r.body, r.traceparent \
         FROM snap LEFT JOIN LATERAL ( \
           SELECT seq, id, routing_key, body, traceparent FROM event_log \
           WHERE snap.held AND seq > $2 ORDER BY seq LIMIT $3) r ON true \
         ORDER BY r.seq"
    );
    let found = SeenRow::find_by_statement(sql(
        &statement,
        [me.into(), after.into(), BATCH.into(), LEASE.as_secs_f64().into(), bound.into()],
    ))
    .all(db)
    .await?;
    let Some(first) = found.first() else { return Ok(None) };
    if !first.held {
        return Ok(None);
    }
    let mut seen = Seen { xmin: first.xmin, bound: first.bound, top: first.top, rows: Vec::new() };
    for row in found {
        if let (Some(seq), Some(id), Some(routing_key), Some(body)) =
            (row.seq, row.id, row.routing_key, row.body)
        {
            seen.rows.push(Shipped { seq, id, routing_key, body, traceparent: row.traceparent });
        }
    }
    Ok(Some(seen))
}

/// Which numbers can be shipped. A producer's insert takes its `seq` from a sequence, after its
/// transaction has an id (`event_log::record`), and it commits later: numbers become visible
/// out of order, and a producer that rolls back leaves a hole. A visible row is shipped once
/// nothing below it can still appear:
///
/// - the next number after the last one shipped: nothing lies between;
/// - or a number at or below a *final* bound. A look's snapshot S sees `top` as the largest
///   number; every smaller number was taken before, by a transaction that had its id before.
///   While a hole waits, the look also takes a transaction id of its own, `bound`, after S:
///   above every id given out before S. Once a later look's `xmin` has reached `bound`, each
///   of those transactions has committed (and is visible) or rolled back (and never will be):
///   `top` is final. Not the snapshot's own `xmax`: that is one past the last *completed* id,
///   and a transaction given its id after that one and still running is below no `xmax` (the
///   fault suite caught a number passed over that way).
///
/// Holes are rare (a rollback, an event recorded twice, a job request the api could not
/// publish), so the shipper almost always ships by the first rule, without waiting for the
/// horizon; a long transaction elsewhere on the server only delays the numbers after a hole.
#[derive(Debug)]
pub(crate) struct Horizon {
    /// Every number up to here is published or will never exist.
    pub position: i64,
    /// The last number published (the header `x-prev-seq` of the next message).
    prev: i64,
    /// Every number up to here is visible or will never exist.
    settled: i64,
    /// Looks waiting for the horizon: (`bound`, `top`), oldest first.
    waiting: std::collections::VecDeque<(i64, i64)>,
    /// The last look stopped at a hole below what it could see.
    hole: bool,
}

/// Looks kept waiting for the horizon at most; later ones merge into the last (which only
/// makes it wait for a later `bound`).
const WAITING_MAX: usize = 64;

/// A row to publish, and the number published before it.
pub(crate) struct Outbound {
    pub row: Shipped,
    pub prev: i64,
}

impl Horizon {
    pub(crate) fn new(published: i64) -> Self {
        Self {
            position: published,
            prev: published,
            settled: published,
            waiting: Default::default(),
            hole: false,
        }
    }

    /// Whether the next look must take a `bound`: a hole waits, or looks wait for the horizon.
    pub(crate) fn waits(&self) -> bool {
        self.hole || !self.waiting.is_empty()
    }

    /// The rows of `seen` that can be shipped now, in order, each with the number before it.
    pub(crate) fn take(&mut self, seen: Seen) -> Vec<Outbound> {
        if let Some(bound) = seen.bound
            && seen.top > self.settled
        {
            let full = self.waiting.len() >= WAITING_MAX;
            match self.waiting.back_mut() {
                Some(last) if full => *last = (bound, seen.top),
                Some(last) if last.1 == seen.top => {}
                _ => self.waiting.push_back((bound, seen.top)),
            }
        }
        while let Some(&(bound, top)) = self.waiting.front() {
            if seen.xmin < bound {
                break;
            }
            self.settled = self.settled.max(top);
            self.waiting.pop_front();
        }
        let complete = (seen.rows.len() as i64) < BATCH;
        self.hole = false;
        let mut out = Vec::new();
        for row in seen.rows {
            if row.seq <= self.position {
                continue;
            }
            if row.seq != self.position + 1 && row.seq > self.settled {
                self.hole = true;
                break;
            }
            self.position = row.seq;
            out.push(Outbound { prev: std::mem::replace(&mut self.prev, row.seq), row });
        }
        // Every visible row up to `settled` was in `seen`: what is left below it are holes.
        if complete && self.position < self.settled {
            self.position = self.settled;
        }
        out
    }
}

/// Publishes `rows` in order, as few batch messages as `max_bytes` allows
/// (`showrunner_shared::live`), each with the number published before its first event, and
/// waits for the confirms.
async fn publish(
    publisher: &Publisher,
    rows: &[Outbound],
    max_bytes: usize,
) -> Result<(), ShipError> {
    let Some(first) = rows.first() else { return Ok(()) };
    let events = rows.iter().map(|Outbound { row, .. }| {
        (row.seq, row.routing_key.as_str(), row.traceparent.as_deref(), row.body.as_str())
    });
    let batches = live::pack(events, max_bytes);
    // Rows are consecutive in publish order: each batch follows the one before it.
    let mut prev = first.prev;
    let messages = batches
        .iter()
        .map(|batch| {
            let mut headers = FieldTable::default();
            headers.insert("x-seq".into(), AMQPValue::LongLongInt(batch.last_seq));
            let before = std::mem::replace(&mut prev, batch.last_seq);
            headers.insert("x-prev-seq".into(), AMQPValue::LongLongInt(before));
            let id = format!("events-{}-{}", batch.first_seq, batch.last_seq);
            Outgoing {
                exchange: LIVE_EXCHANGE,
                routing_key: live::BATCH_ROUTING_KEY,
                body: batch.json.as_bytes(),
                properties: publisher_json_properties(&id, live::BATCH_TYPE, headers),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn row(seq: i64) -> Shipped {
        Shipped {
            seq,
            id: Uuid::from_u128(seq as u128),
            routing_key: "episode.x.created".into(),
            body: "{}".into(),
            traceparent: None,
        }
    }

    fn seen(xmin: i64, bound: i64, top: i64, seqs: &[i64]) -> Seen {
        let bound = (bound > 0).then_some(bound);
        Seen { xmin, bound, top, rows: seqs.iter().copied().map(row).collect() }
    }

    fn shipped(out: &[Outbound]) -> Vec<(i64, i64)> {
        out.iter().map(|o| (o.prev, o.row.seq)).collect()
    }

    // `seen(xmin, bound, top, rows)`: a bound of 0 is a look that took none.

    #[test]
    fn the_next_number_ships_at_once_and_names_the_one_before() {
        let mut log = Horizon::new(10);
        // Transaction 100 still runs: nothing is final, but 11 and 12 follow 10.
        assert_eq!(shipped(&log.take(seen(100, 0, 14, &[11, 12, 14]))), [(10, 11), (11, 12)]);
        assert_eq!(log.position, 12);
        assert!(log.waits(), "13 is a hole: the next look takes a bound");
    }

    #[test]
    fn a_hole_waits_until_every_transaction_that_could_fill_it_has_ended() {
        let mut log = Horizon::new(10);
        // 11 is not visible (its producer may still commit).
        assert!(log.take(seen(100, 0, 12, &[12])).is_empty());
        assert!(log.waits());
        // Transactions below the bound 105 are still running: 11 may still come.
        assert!(log.take(seen(100, 105, 12, &[12])).is_empty());
        assert!(log.take(seen(104, 110, 12, &[12])).is_empty());
        // It came: both ship, in order.
        assert_eq!(shipped(&log.take(seen(104, 110, 12, &[11, 12]))), [(10, 11), (11, 12)]);
    }

    #[test]
    fn a_hole_whose_producer_ended_is_passed_over() {
        let mut log = Horizon::new(10);
        assert!(log.take(seen(100, 0, 12, &[12])).is_empty());
        assert!(log.take(seen(100, 105, 12, &[12])).is_empty());
        // Every transaction below 105 has ended and 11 never appeared: a rollback.
        assert_eq!(shipped(&log.take(seen(105, 0, 12, &[12]))), [(10, 12)]);
        assert_eq!(log.position, 12);
        assert!(!log.waits());
    }

    #[test]
    fn without_a_bound_of_its_own_no_look_passes_a_hole() {
        // A snapshot's xmin can be high while a transaction given its id after the last
        // completed one still runs: only a bound taken by the shipper settles anything.
        let mut log = Horizon::new(10);
        for xmin in [100, 1_000, 1_000_000] {
            assert!(log.take(seen(xmin, 0, 12, &[12])).is_empty());
        }
        assert_eq!(log.position, 10);
    }

    #[test]
    fn a_settled_look_passes_trailing_holes() {
        let mut log = Horizon::new(10);
        assert!(log.take(seen(200, 0, 15, &[12, 13])).is_empty());
        // Nothing below the bound runs: 11, 14 and 15 were rolled back.
        assert_eq!(shipped(&log.take(seen(200, 200, 15, &[12, 13]))), [(10, 12), (12, 13)]);
        assert_eq!(log.position, 15);
        assert_eq!(shipped(&log.take(seen(200, 0, 16, &[16]))), [(13, 16)]);
    }

    #[test]
    fn a_full_batch_does_not_pass_holes_beyond_what_it_read() {
        let mut log = Horizon::new(0);
        let rows: Vec<i64> = (1..=BATCH).map(|n| n * 2).collect();
        assert!(log.take(seen(50, 0, BATCH * 3, &rows)).is_empty());
        let out = log.take(seen(50, 50, BATCH * 3, &rows));
        assert_eq!(out.len(), BATCH as usize);
        assert_eq!(log.position, BATCH * 2, "rows after the batch were not read yet");
    }

    #[test]
    fn a_number_at_or_below_the_position_is_not_shipped_twice() {
        let mut log = Horizon::new(10);
        assert_eq!(shipped(&log.take(seen(100, 0, 11, &[9, 10, 11]))), [(10, 11)]);
    }

    #[test]
    fn waiting_looks_are_bounded() {
        let mut log = Horizon::new(0);
        for top in 1..1_000 {
            assert!(log.take(seen(1, 2 + top, top + 1, &[top + 1])).is_empty());
        }
        assert!(log.waiting.len() <= WAITING_MAX);
        // Once the last one settles, everything does.
        assert_eq!(log.take(seen(10_000, 10_000, 1_000, &[1_000])).len(), 1);
        assert_eq!(log.position, 1_000);
    }
}
