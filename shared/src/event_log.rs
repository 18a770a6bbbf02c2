//! The event log: every event, written by the transaction that makes it true, in one total
//! order (`seq`) that the insert itself gives it.
//!
//! A producer (a command batch, a job transition, a notification, the api's job routes and
//! presence) calls [`record`] inside its own transaction: the event's `event_log` row and its
//! `activity_log` row commit with the change or not at all, so nothing is published that did
//! not happen and nothing that happened goes unpublished. The insert takes its numbers from the
//! one-row `event_log_counter`, whose row lock it then holds until the transaction ends: the
//! next producer's insert waits for that commit (or rollback) and numbers after it. So numbers
//! are handed out in commit order, a rolled-back transaction gives its numbers back, and what a
//! reader sees committed is always every number up to the largest it sees: the log shipper
//! (`workers/src/shipper.rs`) and the notification worker read it in `seq` order and can never
//! pass over a row that commits later. Numbers are dense but for a row another transaction
//! recorded with the same id at the same moment (its place stays empty).
//!
//! The insert must therefore be the last statement of the transaction that can wait: for a
//! lock (two producers would otherwise deadlock on the counter) or for anything outside the
//! database (every producer would wait with it). Of two transactions that touched the same
//! row, the one that waited records after the other committed, so it is numbered after it.

pub mod activity;

use sea_orm::{ConnectionTrait, DbErr, FromQueryResult};
use uuid::Uuid;

use crate::contracts::{EventEnvelope, OutgoingEvent};
use crate::db::sql;

/// An event as it is written into the event log.
#[derive(Debug, Clone, FromQueryResult)]
pub struct StoredEvent {
    pub id: Uuid,
    pub routing_key: String,
    pub body: String,
    pub traceparent: Option<String>,
}

impl StoredEvent {
    pub fn from_outgoing(event: &OutgoingEvent, traceparent: Option<String>) -> Self {
        Self::from_envelope(&event.routing_key, &event.envelope, traceparent)
    }

    pub fn from_envelope(
        routing_key: &str,
        envelope: &EventEnvelope,
        traceparent: Option<String>,
    ) -> Self {
        Self {
            id: envelope.id,
            routing_key: routing_key.to_string(),
            // Serializing an envelope of plain values cannot fail.
            body: serde_json::to_string(envelope).unwrap_or_default(),
            traceparent,
        }
    }
}

/// The statement of [`record`]: the events ($1-$4) in the given order, numbered from the
/// counter (those not recorded already), and in a data-modifying CTE their activity rows
/// ($5-$13), so both commit together.
static STATEMENT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "WITH recorded AS ({}), \
         fresh AS ( \
           SELECT t.* FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[]) \
           WITH ORDINALITY AS t(id, key, body, trace, n) \
           WHERE NOT EXISTS (SELECT 1 FROM event_log e WHERE e.id = t.id) \
         ), \
         counter AS ( \
           UPDATE event_log_counter SET top = top + (SELECT count(*) FROM fresh) \
           WHERE id = 1 AND EXISTS (SELECT 1 FROM fresh) \
           RETURNING top - (SELECT count(*) FROM fresh) AS base \
         ) \
         INSERT INTO event_log (seq, id, routing_key, body, traceparent) \
         SELECT counter.base + row_number() OVER (ORDER BY fresh.n), fresh.id, fresh.key, \
         fresh.body, NULLIF(fresh.trace, '') \
         FROM fresh, counter ORDER BY fresh.n \
         ON CONFLICT (id) DO NOTHING",
        activity::insert(5)
    )
});

/// Writes `events` into the event log, with their activity rows, inside the caller's
/// transaction (one statement). An event already recorded (same id) is left as it is. Call it
/// last, right before the commit: from here until the transaction ends every other producer
/// waits (see the module's doc).
pub async fn record(conn: &impl ConnectionTrait, events: &[StoredEvent]) -> Result<(), DbErr> {
    if events.is_empty() {
        return Ok(());
    }
    let mut rows = activity::Rows::default();
    for event in events.iter().filter(|e| activity::records(&e.routing_key)) {
        // Our own bodies always parse; one that does not (hand-made) just has no activity row.
        if let Ok(envelope) = serde_json::from_str::<EventEnvelope>(&event.body) {
            rows.push(&event.routing_key, &envelope);
        }
    }
    let mut values: Vec<sea_orm::Value> = vec![
        events.iter().map(|e| e.id).collect::<Vec<_>>().into(),
        events.iter().map(|e| e.routing_key.clone()).collect::<Vec<_>>().into(),
        events.iter().map(|e| e.body.clone()).collect::<Vec<_>>().into(),
        events.iter().map(|e| e.traceparent.clone().unwrap_or_default()).collect::<Vec<_>>().into(),
    ];
    values.extend(rows.into_values());
    conn.execute_raw(sql(&STATEMENT, values)).await?;
    Ok(())
}

/// A recorded event as read back in `seq` order: its place in the total order and what to
/// publish.
#[derive(Debug, Clone, FromQueryResult)]
pub struct Shipped {
    pub seq: i64,
    pub id: Uuid,
    pub routing_key: String,
    pub body: String,
    pub traceparent: Option<String>,
}
