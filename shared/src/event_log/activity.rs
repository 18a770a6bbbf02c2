//! The activity log: one `activity_log` row per recorded event, keyed by the event id, so an
//! event recorded twice adds nothing. [`super::record`] writes these rows in the statement that
//! writes the events into the event log, in the producer's own transaction: the activity log
//! needs no queue and no consumer of its own.

use sea_orm::Value;
use uuid::Uuid;

use crate::broker::topology::ACTIVITY_BINDINGS;
use crate::contracts::EventEnvelope;
use crate::event::Event;
use crate::resource::ResourceType;
use crate::topics;

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

/// One event's activity row, made where the event is (`StoredEvent::from_envelope`), so
/// recording it needs no parse of the event's body.
#[derive(Debug, Clone)]
pub struct Row {
    id: Uuid,
    event: String,
    resource_type: String,
    resource_id: Option<Uuid>,
    actor: Option<(Uuid, String)>,
    correlation: Option<Uuid>,
    data: String,
    occurred: chrono::DateTime<chrono::Utc>,
}

impl Row {
    /// The row of the event `e` sent with `routing_key`, if the activity log records it.
    pub fn of(routing_key: &str, e: &EventEnvelope) -> Option<Self> {
        if !records(routing_key) {
            return None;
        }
        let (resource_type, resource_id) = resource_of(routing_key, &e.event);
        Some(Self {
            id: e.id,
            event: e.event.name().to_string(),
            resource_type,
            resource_id,
            actor: e.actor.as_ref().map(|a| (a.id, a.name.clone())),
            correlation: e.correlation_id,
            data: serde_json::to_string(&e.event.data()).unwrap_or_default(),
            occurred: e.occurred_at,
        })
    }
}

impl Rows {
    /// Adds `row` (arrays cannot hold SQL NULL through the driver here, so absent ids travel
    /// as nil and the statement turns them back into NULL).
    pub fn push(&mut self, row: Row) {
        let (actor_id, actor_name) = row.actor.unwrap_or_default();
        self.ids.push(row.id);
        self.events.push(row.event);
        self.resource_types.push(row.resource_type);
        self.resource_ids.push(row.resource_id.unwrap_or_default());
        self.actor_ids.push(actor_id);
        self.actor_names.push(actor_name);
        self.correlations.push(row.correlation.unwrap_or_default());
        self.data.push(row.data);
        self.occurred.push(row.occurred);
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

/// The insert of [`Rows`] whose parameters start at `$first` (to sit in a larger statement);
/// `dedupe`: a row whose id is already there is skipped.
pub fn insert(first: usize, dedupe: bool) -> String {
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
         FROM UNNEST({}) AS t(id, event, rtype, rid, aid, aname, cid, data, occurred){}",
        arrays.join(", "),
        if dedupe { " ON CONFLICT (id) DO NOTHING" } else { "" }
    )
}

/// `episode.<id>.created` -> ("episode", Some(id)); `system.jobs.started` -> ("system", None);
/// an episode's child, `episode.<id>.composition.created`, is the child's: ("composition", the
/// composition's id from the event); a file's likewise.
fn resource_of(routing_key: &str, event: &Event) -> (String, Option<Uuid>) {
    let composition = |id| (ResourceType::Composition.as_str().to_string(), Some(id));
    match event {
        Event::CompositionCreated(d) => composition(d.composition.id),
        Event::CompositionUpdated(d) => composition(d.composition.id),
        Event::CompositionDeleted(d) => composition(d.composition_id),
        Event::FileUploaded(d) => (ResourceType::File.as_str().to_string(), Some(d.file.id)),
        Event::FileDeleted(d) => (ResourceType::File.as_str().to_string(), Some(d.file_id)),
        _ => {
            let mut parts = routing_key.split('.');
            let kind = parts.next().unwrap_or_default().to_string();
            (kind, parts.next().and_then(|p| Uuid::parse_str(p).ok()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contracts::DeleteType;
    use crate::event::Foreign;
    use crate::resource::composition::CompositionDeleted;
    use crate::resource::file::FileDeleted;

    #[test]
    fn resources_come_from_the_routing_key_and_a_child_from_its_event() {
        let id = Uuid::from_u128(5);
        let foreign = Event::Other(Foreign { event: "x".into(), data: serde_json::Value::Null });
        assert_eq!(
            resource_of(&format!("episode.{id}.created"), &foreign),
            ("episode".into(), Some(id))
        );
        assert_eq!(resource_of("system.jobs.started", &foreign), ("system".into(), None));
        assert_eq!(resource_of("", &foreign), (String::new(), None));
        let cid = Uuid::from_u128(6);
        let deleted = CompositionDeleted {
            composition_id: cid,
            episode_id: id,
            name: "Cut".into(),
            delete_type: DeleteType::Soft,
            deleted_by: id,
            timestamp: chrono::Utc::now(),
        };
        assert_eq!(
            resource_of(&format!("episode.{id}.composition.deleted"), &deleted.into()),
            ("composition".into(), Some(cid))
        );
        let fid = Uuid::from_u128(7);
        let file_deleted = FileDeleted {
            file_id: fid,
            episode_id: id,
            name: "stem.wav".into(),
            delete_type: DeleteType::Soft,
            deleted_by: id,
            timestamp: chrono::Utc::now(),
        };
        assert_eq!(
            resource_of(&format!("episode.{id}.file.deleted"), &file_deleted.into()),
            ("file".into(), Some(fid))
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
        let sql = insert(5, true);
        assert!(sql.contains("UNNEST($5::uuid[]") && sql.contains("$13::timestamptz[]"));
        assert!(!sql.contains("$4:") && !sql.contains("$14"));
    }

    #[test]
    fn only_the_deduplicating_insert_skips_known_ids() {
        assert!(insert(5, true).ends_with("ON CONFLICT (id) DO NOTHING"));
        assert!(!insert(5, false).contains("ON CONFLICT"));
    }
}
