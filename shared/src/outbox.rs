//! The transactional outbox: events are written in the same transaction as the change they
//! describe, published after commit with confirms, then deleted. A sweeper publishes whatever a
//! crash between commit and publish left behind, so no committed event is ever lost.

use std::time::Duration;

use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr, FromQueryResult, TransactionTrait};
use uuid::Uuid;

use crate::broker::topology::EVENTS_EXCHANGE;
use crate::broker::{Outgoing, PublishError, Publisher};
use crate::contracts::OutgoingEvent;
use crate::db::sql;

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("outbox database error: {0}")]
    Db(#[from] DbErr),
    #[error("outbox publish failed: {0}")]
    Publish(#[from] PublishError),
}

/// An event as stored in the outbox, ready to publish.
#[derive(Debug, Clone, FromQueryResult)]
pub struct StoredEvent {
    pub id: Uuid,
    pub routing_key: String,
    pub body: String,
    pub traceparent: Option<String>,
}

impl StoredEvent {
    pub fn from_outgoing(event: &OutgoingEvent, traceparent: Option<String>) -> Self {
        Self {
            id: event.envelope.id,
            routing_key: event.routing_key.clone(),
            // Serializing an envelope of plain values cannot fail.
            body: serde_json::to_string(&event.envelope).unwrap_or_default(),
            traceparent,
        }
    }
}

/// Writes events into the outbox inside the caller's transaction (one statement for all).
pub async fn insert(conn: &impl ConnectionTrait, events: &[StoredEvent]) -> Result<(), DbErr> {
    if events.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = events.iter().map(|e| e.id).collect();
    let keys: Vec<String> = events.iter().map(|e| e.routing_key.clone()).collect();
    let bodies: Vec<String> = events.iter().map(|e| e.body.clone()).collect();
    let traces: Vec<String> =
        events.iter().map(|e| e.traceparent.clone().unwrap_or_default()).collect();
    conn.execute_raw(sql(
        "INSERT INTO outbox (id, routing_key, body, traceparent) \
         SELECT id, key, body, NULLIF(trace, '') \
         FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[]) AS t(id, key, body, trace) \
         ON CONFLICT (id) DO NOTHING",
        [ids.into(), keys.into(), bodies.into(), traces.into()],
    ))
    .await?;
    Ok(())
}

/// Publishes events in order with confirms, then deletes them from the outbox.
pub async fn publish(
    db: &impl ConnectionTrait,
    publisher: &Publisher,
    events: &[StoredEvent],
) -> Result<(), OutboxError> {
    if events.is_empty() {
        return Ok(());
    }
    let messages = events
        .iter()
        .map(|e| Outgoing {
            exchange: EVENTS_EXCHANGE,
            routing_key: &e.routing_key,
            body: e.body.as_bytes(),
            properties: event_properties(e),
            mandatory: false,
        })
        .collect();
    publisher.publish_all(messages).await?;
    let ids: Vec<Uuid> = events.iter().map(|e| e.id).collect();
    db.execute_raw(sql("DELETE FROM outbox WHERE id = ANY($1)", [ids.into()])).await?;
    Ok(())
}

fn event_properties(e: &StoredEvent) -> lapin::BasicProperties {
    let mut headers = lapin::types::FieldTable::default();
    if let Some(tp) = &e.traceparent {
        headers
            .insert("traceparent".into(), lapin::types::AMQPValue::LongString(tp.as_str().into()));
    }
    crate::broker::publisher_json_properties(&e.id.to_string(), "event", headers)
}

/// Publishes outbox rows older than `older_than` (left by a crash), oldest first. Rows are
/// locked with `SKIP LOCKED`, so several sweepers never publish the same row at once.
pub async fn sweep(
    db: &DatabaseConnection,
    publisher: &Publisher,
    older_than: Duration,
    limit: u64,
) -> Result<usize, OutboxError> {
    let txn = db.begin().await?;
    let rows = StoredEvent::find_by_statement(sql(
        "SELECT id, routing_key, body, traceparent FROM outbox \
         WHERE created_at < now() - make_interval(secs => $1) \
         ORDER BY created_at, id LIMIT $2 FOR UPDATE SKIP LOCKED",
        [older_than.as_secs_f64().into(), (limit as i64).into()],
    ))
    .all(&txn)
    .await?;
    publish(&txn, publisher, &rows).await?;
    txn.commit().await?;
    Ok(rows.len())
}
