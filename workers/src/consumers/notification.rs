//! The notification worker's consumer: turns events into the seed's notifications (creation and
//! deletion confirmations to the actor, rejected commands, failed jobs), unique per
//! (event, user), and records `notification_created` in the event log in the same transaction.
//! Its queue is bound to the live exchange: it hears each event once, as the log shipper
//! publishes it.

use chrono::{DateTime, Utc};
use sea_orm::{FromQueryResult, TransactionTrait};
use showrunner_shared::contracts::{
    EventEnvelope, Notification, NotificationCreated, OutgoingEvent,
};
use showrunner_shared::db::sql;
use showrunner_shared::event_log::{self, StoredEvent};
use uuid::Uuid;

use crate::runtime::{BatchHandler, Context, Incoming};

pub struct Notifications;

/// A notification to create, before it has an id.
#[derive(Debug, PartialEq)]
struct Draft {
    user_id: Uuid,
    kind: &'static str,
    title: String,
    message: String,
    resource_type: &'static str,
    resource_id: Uuid,
}

/// What, if anything, an event tells whom.
fn draft_for(event: &EventEnvelope, routing_key: &str) -> Option<Draft> {
    let str_at = |path: &[&str]| {
        path.iter()
            .try_fold(&event.data, |v, k| v.get(k))
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
    let uuid_at = |path: &[&str]| str_at(path).and_then(|s| Uuid::parse_str(&s).ok());
    let actor = event.actor.as_ref()?;
    match event.event.as_str() {
        "episode_created" => {
            let title = str_at(&["episode", "title"])?;
            Some(Draft {
                user_id: actor.id,
                kind: "episode_created",
                title: "Episode created".into(),
                message: format!("Your episode \"{title}\" was created."),
                resource_type: "episode",
                resource_id: uuid_at(&["episode", "id"])?,
            })
        }
        "episode_deleted" => {
            let title = str_at(&["title"])?;
            let how = str_at(&["deleteType"]).unwrap_or_default();
            Some(Draft {
                user_id: actor.id,
                kind: "episode_deleted",
                title: "Episode deleted".into(),
                message: format!("Your episode \"{title}\" was deleted ({how})."),
                resource_type: "episode",
                resource_id: uuid_at(&["episodeId"])?,
            })
        }
        "command_rejected" => {
            // user.<id>.command: the owner of the routing key is the one to tell.
            let user_id = routing_key.split('.').nth(1).and_then(|s| Uuid::parse_str(s).ok())?;
            Some(Draft {
                user_id,
                kind: "command_rejected",
                title: "Change rejected".into(),
                message: str_at(&["reason"])?,
                resource_type: "command",
                resource_id: uuid_at(&["commandId"])?,
            })
        }
        "job_failed" => Some(Draft {
            user_id: actor.id,
            kind: "job_failed",
            title: "Job failed".into(),
            message: format!("Job failed: {}", str_at(&["error"]).unwrap_or_default()),
            resource_type: "job",
            resource_id: uuid_at(&["jobId"])?,
        }),
        _ => None,
    }
}

#[derive(FromQueryResult)]
struct NotificationRow {
    id: Uuid,
    user_id: Uuid,
    event_id: Uuid,
    kind: String,
    title: String,
    message: String,
    resource_type: Option<String>,
    resource_id: Option<Uuid>,
    read_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
}

impl From<NotificationRow> for Notification {
    fn from(r: NotificationRow) -> Self {
        Notification {
            id: r.id,
            user_id: r.user_id,
            kind: r.kind,
            title: r.title,
            message: r.message,
            resource_type: r.resource_type,
            resource_id: r.resource_id,
            event_id: r.event_id,
            read_at: r.read_at,
            created_at: r.created_at,
        }
    }
}

impl BatchHandler for Notifications {
    type Message = EventEnvelope;

    async fn handle(
        &self,
        ctx: &Context,
        batch: &[&Incoming<EventEnvelope>],
    ) -> anyhow::Result<()> {
        let drafts: Vec<_> = batch
            .iter()
            .filter_map(|m| draft_for(&m.body, &m.routing_key).map(|d| (&m.body, m, d)))
            .collect();
        if drafts.is_empty() {
            return Ok(());
        }
        let ids: Vec<Uuid> = drafts.iter().map(|_| Uuid::now_v7()).collect();
        let column = |f: &dyn Fn(&Draft) -> String| -> Vec<String> {
            drafts.iter().map(|(_, _, d)| f(d)).collect()
        };
        let txn = ctx.db.begin().await?;
        let rows = NotificationRow::find_by_statement(sql(
            "INSERT INTO notifications (id, user_id, event_id, kind, title, message, resource_type, \
             resource_id) \
             SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], \
             $6::text[], $7::text[], $8::uuid[]) \
             ON CONFLICT (event_id, user_id) DO NOTHING \
             RETURNING id, user_id, event_id, kind, title, message, resource_type, resource_id, \
             read_at, created_at",
            [
                ids.into(),
                drafts.iter().map(|(_, _, d)| d.user_id).collect::<Vec<_>>().into(),
                drafts.iter().map(|(e, _, _)| e.id).collect::<Vec<_>>().into(),
                column(&|d| d.kind.to_string()).into(),
                column(&|d| d.title.clone()).into(),
                column(&|d| d.message.clone()).into(),
                column(&|d| d.resource_type.to_string()).into(),
                drafts.iter().map(|(_, _, d)| d.resource_id).collect::<Vec<_>>().into(),
            ],
        ))
        .all(&txn)
        .await?;
        let now = Utc::now();
        let events: Vec<StoredEvent> = rows
            .into_iter()
            .map(|row| {
                let source = drafts.iter().find(|(e, _, _)| e.id == row.event_id);
                let traceparent = Some(showrunner_shared::trace::child_or_new(
                    source.and_then(|(_, m, _)| m.traceparent.as_deref()),
                ));
                let correlation = source.and_then(|(e, _, _)| e.correlation_id);
                let notification = Notification::from(row);
                let event = OutgoingEvent::new(
                    &notification.user_id,
                    &NotificationCreated { notification: notification.clone() },
                    None,
                    correlation,
                    now,
                );
                StoredEvent::from_outgoing(&event, traceparent)
            })
            .collect();
        event_log::record(&txn, &events).await?;
        txn.commit().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use showrunner_shared::contracts::Actor;

    fn event(name: &str, data: serde_json::Value) -> EventEnvelope {
        EventEnvelope {
            id: Uuid::now_v7(),
            event: name.into(),
            version: 1,
            occurred_at: Utc::now(),
            actor: Some(Actor { id: Uuid::from_u128(1), name: "Alice".into() }),
            correlation_id: None,
            causation_id: None,
            data,
        }
    }

    #[test]
    fn creation_and_deletion_notify_the_actor_and_updates_do_not() {
        let id = Uuid::from_u128(9);
        let created =
            event("episode_created", serde_json::json!({"episode": {"id": id, "title": "Pilot"}}));
        let draft = draft_for(&created, "episode.x.created").expect("a notification");
        assert_eq!(
            (draft.user_id, draft.kind, draft.resource_id),
            (Uuid::from_u128(1), "episode_created", id)
        );
        let deleted = event(
            "episode_deleted",
            serde_json::json!({"episodeId": id, "title": "Pilot", "deleteType": "soft"}),
        );
        assert_eq!(draft_for(&deleted, "").map(|d| d.kind), Some("episode_deleted"));
        let updated = event("episode_updated", serde_json::json!({}));
        assert_eq!(draft_for(&updated, ""), None);
    }

    #[test]
    fn a_rejection_notifies_the_user_of_the_routing_key() {
        let user = Uuid::from_u128(3);
        let rejected = event(
            "command_rejected",
            serde_json::json!({"commandId": Uuid::from_u128(4), "reason": "nope"}),
        );
        let draft = draft_for(&rejected, &format!("user.{user}.command")).expect("a notification");
        assert_eq!((draft.user_id, draft.message.as_str()), (user, "nope"));
    }
}
