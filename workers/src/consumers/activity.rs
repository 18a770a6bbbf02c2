//! The activity log: one `activity_log` row per recorded event, keyed by the event id, so a
//! redelivered event adds nothing. The sequencer (`event_log.rs`) writes these rows in the same
//! statement that gives the events their place in the event log: the activity log needs no
//! queue of its own, which saves every event one quorum queue and a transaction.

use sea_orm::Value;
use showrunner_shared::broker::topology::ACTIVITY_BINDINGS;
use showrunner_shared::contracts::EventEnvelope;
use showrunner_shared::resource::{composition, file};
use showrunner_shared::topics;
use uuid::Uuid;

use crate::runtime::Incoming;

/// Whether the activity log records an event with this routing key.
pub fn records(routing_key: &str) -> bool {
    ACTIVITY_BINDINGS.iter().any(|pattern| topics::matches(pattern, routing_key))
}

/// The columns of a batch of activity rows, bound as arrays.
#[derive(Default)]
pub struct Rows {
    ids: Vec<Uuid>,
    events: Vec<String>,
    resource_types: Vec<String>,
    resource_ids: Vec<Uuid>,
    actor_ids: Vec<Uuid>,
    actor_names: Vec<String>,
    correlations: Vec<Uuid>,
    data: Vec<String>,
    occurred: Vec<chrono::DateTime<chrono::Utc>>,
}

impl Rows {
    /// Adds the row of `incoming` (arrays cannot hold SQL NULL through the driver here, so
    /// absent ids travel as nil and the statement turns them back into NULL).
    pub fn push(&mut self, incoming: &Incoming<EventEnvelope>) {
        let e = &incoming.body;
        let (resource_type, resource_id) = resource_of(&incoming.routing_key, &e.data);
        self.ids.push(e.id);
        self.events.push(e.event.clone());
        self.resource_types.push(resource_type);
        self.resource_ids.push(resource_id.unwrap_or_default());
        self.actor_ids.push(e.actor.as_ref().map(|a| a.id).unwrap_or_default());
        self.actor_names.push(e.actor.as_ref().map(|a| a.name.clone()).unwrap_or_default());
        self.correlations.push(e.correlation_id.unwrap_or_default());
        self.data.push(e.data.to_string());
        self.occurred.push(e.occurred_at);
    }

    /// The nine array parameters, in the order [`insert`] numbers them.
    pub fn into_values(self) -> [Value; 9] {
        [
            self.ids.into(),
            self.events.into(),
            self.resource_types.into(),
            self.resource_ids.into(),
            self.actor_ids.into(),
            self.actor_names.into(),
            self.correlations.into(),
            self.data.into(),
            self.occurred.into(),
        ]
    }
}

/// The insert of [`Rows`] whose parameters start at `$first` (to sit in a larger statement).
pub fn insert(first: usize) -> String {
    const TYPES: [&str; 9] =
        ["uuid", "text", "text", "uuid", "uuid", "text", "uuid", "text", "timestamptz"];
    let arrays: Vec<String> =
        TYPES.iter().enumerate().map(|(i, t)| format!("${}::{t}[]", first + i)).collect();
    format!(
        "INSERT INTO activity_log (id, event, resource_type, resource_id, actor_id, actor_name, \
         correlation_id, data, occurred_at) \
         SELECT id, event, rtype, NULLIF(rid, '00000000-0000-0000-0000-000000000000'), \
         NULLIF(aid, '00000000-0000-0000-0000-000000000000'), NULLIF(aname, ''), \
         NULLIF(cid, '00000000-0000-0000-0000-000000000000'), data::jsonb, occurred \
         FROM UNNEST({}) AS t(id, event, rtype, rid, aid, aname, cid, data, occurred) \
         ON CONFLICT (id) DO NOTHING",
        arrays.join(", ")
    )
}

/// `episode.<id>.created` -> ("episode", Some(id)); `system.jobs.started` -> ("system", None);
/// an episode's child, `episode.<id>.composition.created`, is the child's: ("composition", the
/// composition's id from the event's data).
fn resource_of(routing_key: &str, data: &serde_json::Value) -> (String, Option<Uuid>) {
    let mut parts = routing_key.split('.');
    let kind = parts.next().unwrap_or_default().to_string();
    let id = parts.next().and_then(|p| Uuid::parse_str(p).ok());
    match (parts.next(), parts.next()) {
        (Some(composition::TOPIC_WORD), Some(_)) => {
            (composition::TOPIC_WORD.to_string(), composition::subject(data))
        }
        (Some(file::TOPIC_WORD), Some(_)) => (file::TOPIC_WORD.to_string(), file::subject(data)),
        _ => (kind, id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_come_from_the_routing_key() {
        let id = Uuid::from_u128(5);
        let none = serde_json::Value::Null;
        assert_eq!(
            resource_of(&format!("episode.{id}.created"), &none),
            ("episode".into(), Some(id))
        );
        assert_eq!(resource_of("system.jobs.started", &none), ("system".into(), None));
        assert_eq!(resource_of("", &none), (String::new(), None));
        let cid = Uuid::from_u128(6);
        let created = serde_json::json!({ "composition": { "id": cid } });
        assert_eq!(
            resource_of(&format!("episode.{id}.composition.created"), &created),
            ("composition".into(), Some(cid))
        );
        let file = serde_json::json!({ "file": { "id": cid } });
        assert_eq!(
            resource_of(&format!("episode.{id}.file.uploaded"), &file),
            ("file".into(), Some(cid))
        );
        let deleted = serde_json::json!({ "compositionId": cid, "episodeId": id });
        assert_eq!(
            resource_of(&format!("episode.{id}.composition.deleted"), &deleted),
            ("composition".into(), Some(cid))
        );
    }

    #[test]
    fn the_log_records_changes_not_notifications() {
        let id = Uuid::from_u128(5);
        assert!(records(&format!("episode.{id}.created")));
        assert!(records(&format!("episode.{id}.composition.updated")));
        assert!(records(&format!("episode.{id}.file.deleted")));
        assert!(records(&format!("job.{id}.failed")));
        assert!(records("system.jobs.started"));
        assert!(!records(&format!("user.{id}.notification")));
        assert!(!records(&format!("episode.{id}.presence")));
    }

    #[test]
    fn parameters_are_numbered_from_the_first() {
        let sql = insert(5);
        assert!(sql.contains("UNNEST($5::uuid[]") && sql.contains("$13::timestamptz[]"));
        assert!(!sql.contains("$4:") && !sql.contains("$14"));
    }
}
