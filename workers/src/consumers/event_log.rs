//! The sequencer: writes every event into `event_log`, which gives it its place (`seq`) in one
//! total order, then republishes it on the live exchange with an `x-seq` header for the
//! WebSocket relays. One writer at a time (single active consumer), so `seq` order is commit
//! order and a client that resumes from an event id misses nothing and repeats nothing.
//!
//! The same statement writes the activity log's rows (`activity.rs`): the sequencer sees every
//! event already, and one statement per batch is cheaper than a queue, a consumer and a
//! transaction of their own.

use std::collections::HashSet;
use std::sync::LazyLock;

use lapin::types::{AMQPValue, FieldTable};
use sea_orm::FromQueryResult;
use showrunner_shared::broker::topology::LIVE_EXCHANGE;
use showrunner_shared::broker::{Outgoing, publisher_json_properties};
use showrunner_shared::contracts::EventEnvelope;
use showrunner_shared::db::sql;
use showrunner_shared::outbox::StoredEvent;
use uuid::Uuid;

use crate::consumers::activity;
use crate::runtime::{BatchHandler, Context, Incoming};

pub struct EventLog;

/// The batch's event log rows ($1-$4) and, in a data-modifying CTE, its activity rows ($5-$13).
static STATEMENT: LazyLock<String> = LazyLock::new(|| {
    format!(
        "WITH recorded AS ({}) \
         INSERT INTO event_log (id, routing_key, body, traceparent) \
         SELECT id, key, body, NULLIF(trace, '') \
         FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[]) \
         WITH ORDINALITY AS t(id, key, body, trace, ord) ORDER BY ord \
         ON CONFLICT (id) DO UPDATE SET id = EXCLUDED.id \
         RETURNING seq, id",
        activity::insert(5)
    )
});

#[derive(FromQueryResult)]
struct Logged {
    seq: i64,
    id: Uuid,
}

impl BatchHandler for EventLog {
    type Message = EventEnvelope;

    async fn handle(
        &self,
        ctx: &Context,
        batch: &[&Incoming<EventEnvelope>],
    ) -> anyhow::Result<Vec<StoredEvent>> {
        let mut seen = HashSet::new();
        let mut events = Vec::new();
        for incoming in batch {
            if seen.insert(incoming.body.id) {
                let body = serde_json::to_string(&incoming.body)?;
                events.push((incoming, body));
            }
        }
        let mut recorded = activity::Rows::default();
        for (incoming, _) in events.iter().filter(|(m, _)| activity::records(&m.routing_key)) {
            recorded.push(incoming);
        }
        // A redelivered event keeps its first place: the conflict returns the existing seq,
        // and it is published again (its first publish may be what a crash cut off). Its
        // activity row exists already and stays as it is. One statement, so both commit or
        // neither does.
        let mut values: Vec<sea_orm::Value> = vec![
            events.iter().map(|(m, _)| m.body.id).collect::<Vec<_>>().into(),
            events.iter().map(|(m, _)| m.routing_key.clone()).collect::<Vec<_>>().into(),
            events.iter().map(|(_, b)| b.clone()).collect::<Vec<_>>().into(),
            events
                .iter()
                .map(|(m, _)| m.traceparent.clone().unwrap_or_default())
                .collect::<Vec<_>>()
                .into(),
        ];
        values.extend(recorded.into_values());
        let mut logged = Logged::find_by_statement(sql(&STATEMENT, values)).all(&ctx.db).await?;
        logged.sort_by_key(|l| l.seq);

        let mut messages = Vec::with_capacity(logged.len());
        let ids: Vec<String> = logged.iter().map(|l| l.id.to_string()).collect();
        for (row, id) in logged.iter().zip(&ids) {
            let Some((incoming, body)) = events.iter().find(|(m, _)| m.body.id == row.id) else {
                continue;
            };
            let mut headers = FieldTable::default();
            headers.insert("x-seq".into(), AMQPValue::LongLongInt(row.seq));
            if let Some(tp) = &incoming.traceparent {
                headers.insert("traceparent".into(), AMQPValue::LongString(tp.as_str().into()));
            }
            messages.push(Outgoing {
                exchange: LIVE_EXCHANGE,
                routing_key: &incoming.routing_key,
                body: body.as_bytes(),
                properties: publisher_json_properties(id, "event", headers),
                mandatory: false,
            });
        }
        ctx.publisher.publish_all(messages).await?;
        Ok(Vec::new())
    }
}
