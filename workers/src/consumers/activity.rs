//! The activity worker's consumer: one `activity_log` row per event, keyed by the event id, so a
//! redelivered event adds nothing. A batch is one multi-row insert.

use sea_orm::{ConnectionTrait, TransactionTrait};
use showrunner_shared::contracts::EventEnvelope;
use showrunner_shared::db::sql;
use showrunner_shared::outbox::StoredEvent;
use uuid::Uuid;

use crate::runtime::{BatchHandler, Context, Incoming};

pub struct ActivityLog;

impl BatchHandler for ActivityLog {
    type Message = EventEnvelope;

    async fn handle(
        &self,
        ctx: &Context,
        batch: &[&Incoming<EventEnvelope>],
    ) -> anyhow::Result<Vec<StoredEvent>> {
        let mut ids = Vec::new();
        let mut events = Vec::new();
        let mut resource_types = Vec::new();
        let mut resource_ids = Vec::new();
        let mut actor_ids = Vec::new();
        let mut actor_names = Vec::new();
        let mut correlations = Vec::new();
        let mut data = Vec::new();
        let mut occurred = Vec::new();
        for incoming in batch {
            let e = &incoming.body;
            let (resource_type, resource_id) = resource_of(&incoming.routing_key);
            ids.push(e.id);
            events.push(e.event.clone());
            resource_types.push(resource_type);
            resource_ids.push(resource_id);
            actor_ids.push(e.actor.as_ref().map(|a| a.id));
            actor_names.push(e.actor.as_ref().map(|a| a.name.clone()).unwrap_or_default());
            correlations.push(e.correlation_id);
            data.push(e.data.to_string());
            occurred.push(e.occurred_at);
        }
        // Arrays cannot hold SQL NULL through the driver here, so absent ids travel as nil.
        let nil = |v: Vec<Option<Uuid>>| -> Vec<Uuid> {
            v.into_iter().map(|u| u.unwrap_or_default()).collect()
        };
        let txn = ctx.db.begin().await?;
        txn.execute_raw(sql(
            "INSERT INTO activity_log (id, event, resource_type, resource_id, actor_id, actor_name, \
             correlation_id, data, occurred_at) \
             SELECT id, event, rtype, NULLIF(rid, '00000000-0000-0000-0000-000000000000'), \
             NULLIF(aid, '00000000-0000-0000-0000-000000000000'), NULLIF(aname, ''), \
             NULLIF(cid, '00000000-0000-0000-0000-000000000000'), data::jsonb, occurred \
             FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::uuid[], $5::uuid[], $6::text[], \
             $7::uuid[], $8::text[], $9::timestamptz[]) \
             AS t(id, event, rtype, rid, aid, aname, cid, data, occurred) \
             ON CONFLICT (id) DO NOTHING",
            [
                ids.into(),
                events.into(),
                resource_types.into(),
                nil(resource_ids).into(),
                nil(actor_ids).into(),
                actor_names.into(),
                nil(correlations).into(),
                data.into(),
                occurred.into(),
            ],
        ))
        .await?;
        txn.commit().await?;
        Ok(Vec::new())
    }
}

/// `episode.<id>.created` -> ("episode", Some(id)); `system.jobs.started` -> ("system", None).
fn resource_of(routing_key: &str) -> (String, Option<Uuid>) {
    let mut parts = routing_key.split('.');
    let kind = parts.next().unwrap_or_default().to_string();
    let id = parts.next().and_then(|p| Uuid::parse_str(p).ok());
    (kind, id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_come_from_the_routing_key() {
        let id = Uuid::from_u128(5);
        assert_eq!(resource_of(&format!("episode.{id}.created")), ("episode".into(), Some(id)));
        assert_eq!(resource_of("system.jobs.started"), ("system".into(), None));
        assert_eq!(resource_of(""), (String::new(), None));
    }
}
