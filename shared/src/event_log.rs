//! The event log: every event, written by the transaction that makes it true, in one total
//! order (`seq`), which the insert itself takes from a sequence.
//!
//! A producer (a command batch, a job transition, a notification, the api's job routes and
//! presence) calls [`record_new`] (the importer, whose events may arrive twice, [`record`])
//! inside its own transaction: the event's `event_log` row and its `activity_log` row commit
//! with the change or not at all, so nothing is published that did not happen and nothing that
//! happened goes unpublished. The insert must be the last statement of the transaction that can
//! wait for a lock: then of two transactions that touched the same row, the one that waited
//! takes the larger `seq`, and it commits later. Numbers are taken in the order producers reach
//! their insert, not in commit order, and a producer that rolls back leaves a hole: the shipper
//! (`workers/src/shipper.rs`) publishes a number only once nothing below it can still commit,
//! which needs every producer to hold its transaction id before it takes a number (the
//! statement asks for it first).

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
    /// Its activity row, when it was made from its envelope here (`None` also for an event
    /// read back or made by hand: its body is parsed when it is recorded).
    #[sea_orm(skip)]
    pub activity: Option<activity::Row>,
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
            activity: activity::Row::of(routing_key, envelope),
        }
    }
}

/// The statement of [`record`] (`dedupe`: an event id already in the log is skipped) or of
/// [`record_new`]: the events ($1-$4) in the given order, and in a data-modifying CTE their
/// activity rows ($5-$13), so both commit together. The transaction's id is taken (`xact`,
/// materialized, and every row joined to it) before the first `seq` is: a producer whose
/// transaction had no id yet when it took its number could commit after the shipper judged
/// that number final (the shipper's `Horizon`).
fn statement(dedupe: bool) -> String {
    format!(
        "WITH xact AS MATERIALIZED (SELECT pg_current_xact_id() AS xid), recorded AS ({}) \
         INSERT INTO event_log (id, routing_key, body, traceparent) \
         SELECT id, key, body, NULLIF(trace, '') \
         FROM xact, UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[]) \
         WITH ORDINALITY AS t(id, key, body, trace, n) WHERE xact.xid IS NOT NULL ORDER BY n{}",
        activity::insert(5, dedupe),
        if dedupe { " ON CONFLICT (id) DO NOTHING" } else { "" }
    )
}

static DEDUPED: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| statement(true));
static NEW: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| statement(false));

/// Writes `events` into the event log, with their activity rows, inside the caller's
/// transaction (one statement). An event already recorded (same id) is left as it is: for
/// events that may arrive twice (the importer's). Call it after every statement of the
/// transaction that may wait for a lock (see the module's doc).
pub async fn record(conn: &impl ConnectionTrait, events: &[StoredEvent]) -> Result<(), DbErr> {
    insert(conn, events, &DEDUPED).await
}

/// [`record`] for events the caller's transaction has just made (a fresh id each, which no
/// other row can hold): plain inserts. An `ON CONFLICT` insert costs PostgreSQL a speculative
/// insertion per row (a pre-check of the id index, a lock on a token, and a confirming WAL
/// record); a job's two transitions write four such rows. An id that did exist would fail the
/// transaction, not skip the event.
pub async fn record_new(conn: &impl ConnectionTrait, events: &[StoredEvent]) -> Result<(), DbErr> {
    insert(conn, events, &NEW).await
}

async fn insert(
    conn: &impl ConnectionTrait,
    events: &[StoredEvent],
    statement: &str,
) -> Result<(), DbErr> {
    if events.is_empty() {
        return Ok(());
    }
    let mut rows = activity::Rows::default();
    for event in events {
        if let Some(row) = &event.activity {
            rows.push(row.clone());
        } else if activity::records(&event.routing_key) {
            // Our own bodies always parse; one that does not (hand-made) just has no activity
            // row.
            let parsed = serde_json::from_str::<EventEnvelope>(&event.body);
            if let Some(row) = parsed.ok().and_then(|e| activity::Row::of(&event.routing_key, &e)) {
                rows.push(row);
            }
        }
    }
    let mut values: Vec<sea_orm::Value> = vec![
        events.iter().map(|e| e.id).collect::<Vec<_>>().into(),
        events.iter().map(|e| e.routing_key.clone()).collect::<Vec<_>>().into(),
        events.iter().map(|e| e.body.clone()).collect::<Vec<_>>().into(),
        events.iter().map(|e| e.traceparent.clone().unwrap_or_default()).collect::<Vec<_>>().into(),
    ];
    values.extend(rows.into_values());
    conn.execute_raw(sql(statement, values)).await?;
    Ok(())
}

/// An event as the shipper publishes it: its place in the total order and what to publish.
#[derive(Debug, Clone, FromQueryResult)]
pub struct Shipped {
    pub seq: i64,
    pub id: Uuid,
    pub routing_key: String,
    pub body: String,
    pub traceparent: Option<String>,
}
