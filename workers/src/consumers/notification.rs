//! The notification worker's consumer: turns events into the seed's notifications (creation and
//! deletion confirmations to the actor, rejected commands, failed jobs), unique per
//! (event, user), and records `notification_created` in the event log in the same transaction.
//! Its queue is bound to the live exchange: it hears each event once, as the log shipper
//! publishes it.

use chrono::Utc;
use sea_orm::{FromQueryResult, TransactionTrait};
use showrunner_shared::contracts::{
    CommandRejected, EpisodeCreated, EpisodeDeleted, Event, EventData, EventEnvelope, JobFailed,
    Notification, NotificationCreated, OutgoingEvent,
};
use showrunner_shared::db::sql;
use showrunner_shared::entity::notification;
use showrunner_shared::event_log::{self, StoredEvent};
use showrunner_shared::resource::ResourceType;
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
    let actor = event.actor.as_ref()?;
    match &event.event {
        Event::EpisodeCreated(d) => Some(Draft {
            user_id: actor.id,
            kind: EpisodeCreated::NAME,
            title: "Episode created".into(),
            message: format!("Your episode \"{}\" was created.", d.episode.title),
            resource_type: ResourceType::Episode.as_str(),
            resource_id: d.episode.id,
        }),
        Event::EpisodeDeleted(d) => Some(Draft {
            user_id: actor.id,
            kind: EpisodeDeleted::NAME,
            title: "Episode deleted".into(),
            message: format!(
                "Your episode \"{}\" was deleted ({}).",
                d.title,
                d.delete_type.as_str()
            ),
            resource_type: ResourceType::Episode.as_str(),
            resource_id: d.episode_id,
        }),
        Event::CommandRejected(d) => {
            // user.<id>.command: the owner of the routing key is the one to tell.
            let user_id = routing_key.split('.').nth(1).and_then(|s| Uuid::parse_str(s).ok())?;
            Some(Draft {
                user_id,
                kind: CommandRejected::NAME,
                title: "Change rejected".into(),
                message: d.reason.clone(),
                resource_type: "command",
                resource_id: d.command_id,
            })
        }
        Event::JobFailed(d) => Some(Draft {
            user_id: actor.id,
            kind: JobFailed::NAME,
            title: "Job failed".into(),
            message: format!("Job failed: {}", d.error),
            resource_type: "job",
            resource_id: d.job_id,
        }),
        _ => None,
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
        // One statement for the whole batch (UNNEST, with the unique (event, user) pair
        // skipping what a redelivery would add twice): an entity insert is a row's work.
        let rows = notification::Model::find_by_statement(sql(
            "INSERT INTO notifications (id, user_id, event_id, kind, title, message, resource_type, \
             resource_id) \
             SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], \
             $6::text[], $7::text[], $8::uuid[]) \
             ON CONFLICT (event_id, user_id) DO NOTHING \
             RETURNING *",
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
    use showrunner_shared::contracts::{Actor, DeleteType, Episode, EpisodeUpdated};
    use showrunner_shared::domain::EpisodeStatus;

    fn event(event: Event) -> EventEnvelope {
        EventEnvelope {
            id: Uuid::now_v7(),
            version: 1,
            occurred_at: Utc::now(),
            actor: Some(Actor { id: Uuid::from_u128(1), name: "Alice".into() }),
            correlation_id: None,
            causation_id: None,
            event,
        }
    }

    fn pilot(id: Uuid) -> Episode {
        let at = Utc::now();
        let by = Uuid::from_u128(1);
        Episode {
            id,
            title: "Pilot".into(),
            description: String::new(),
            status: EpisodeStatus::Draft,
            categories: Vec::new(),
            created_by: by,
            updated_by: by,
            created_at: at,
            updated_at: at,
            deleted_at: None,
            version: 1,
        }
    }

    #[test]
    fn creation_and_deletion_notify_the_actor_and_updates_do_not() {
        let (id, by, at) = (Uuid::from_u128(9), Uuid::from_u128(1), Utc::now());
        let created =
            event(EpisodeCreated { episode: pilot(id), created_by: by, timestamp: at }.into());
        let draft = draft_for(&created, "episode.x.created").expect("a notification");
        assert_eq!(
            (draft.user_id, draft.kind, draft.resource_id, draft.message.as_str()),
            (by, "episode_created", id, "Your episode \"Pilot\" was created.")
        );
        let deleted = event(
            EpisodeDeleted {
                episode_id: id,
                title: "Pilot".into(),
                delete_type: DeleteType::Soft,
                deleted_by: by,
                timestamp: at,
            }
            .into(),
        );
        let draft = draft_for(&deleted, "").expect("a notification");
        assert_eq!(
            (draft.kind, draft.message.as_str()),
            ("episode_deleted", "Your episode \"Pilot\" was deleted (soft).")
        );
        let updated = EpisodeUpdated {
            episode: pilot(id),
            changed_fields: vec!["title".into()],
            updated_by: by,
            timestamp: at,
        };
        assert_eq!(draft_for(&event(updated.into()), ""), None);
    }

    #[test]
    fn a_rejection_notifies_the_user_of_the_routing_key() {
        let user = Uuid::from_u128(3);
        let rejected =
            event(CommandRejected { command_id: Uuid::from_u128(4), reason: "nope".into() }.into());
        let draft = draft_for(&rejected, &format!("user.{user}.command")).expect("a notification");
        assert_eq!((draft.user_id, draft.message.as_str()), (user, "nope"));
    }
}
