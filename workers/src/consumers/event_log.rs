//! The importer: records in the event log the events that reach the events exchange from
//! outside a producer's transaction (what a version before issue 14 left in its outbox or in
//! this queue during an upgrade, and events an operator or another system publishes there).
//! They are recorded like every event, with their activity rows (`event_log::record`), and the
//! log shipper numbers and publishes them. Producers of this version write the log directly and
//! never come through here.

use std::collections::HashSet;

use showrunner_shared::contracts::EventEnvelope;
use showrunner_shared::event_log::{self, StoredEvent};

use crate::runtime::{BatchHandler, Context, Incoming};

pub struct Importer;

impl BatchHandler for Importer {
    type Message = EventEnvelope;

    async fn handle(
        &self,
        ctx: &Context,
        batch: &[&Incoming<EventEnvelope>],
    ) -> anyhow::Result<()> {
        // A redelivered event finds its row and keeps its first place.
        let mut seen = HashSet::new();
        let events: Vec<StoredEvent> = batch
            .iter()
            .filter(|m| seen.insert(m.body.id))
            .map(|m| StoredEvent::from_envelope(&m.routing_key, &m.body, m.traceparent.clone()))
            .collect();
        event_log::record(&ctx.db, &events).await?;
        Ok(())
    }
}
