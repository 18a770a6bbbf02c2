//! What is left of the transactional outbox: events that a version before the event log was
//! written in the producer's transaction (issue 14) left in the `outbox` table. Nothing writes
//! there any more; the workers' sweeper publishes what is left to the events exchange, where
//! the activity worker's importer records it in the event log like any event published from
//! outside. New events go through [`crate::event_log::record`].

use std::time::Duration;

use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr, FromQueryResult, TransactionTrait};
use uuid::Uuid;

use crate::broker::topology::EVENTS_EXCHANGE;
use crate::broker::{Outgoing, PublishError, Publisher};
use crate::db::sql;
pub use crate::event_log::StoredEvent;

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("outbox database error: {0}")]
    Db(#[from] DbErr),
    #[error("outbox publish failed: {0}")]
    Publish(#[from] PublishError),
}

/// Publishes events in order with confirms, then deletes them from the outbox.
async fn publish(
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

/// Publishes outbox rows older than `older_than`, oldest first. Rows are locked with
/// `SKIP LOCKED`, so several sweepers never publish the same row at once.
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
