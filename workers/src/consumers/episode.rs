//! The episode worker's consumer: applies episode commands. One transaction per batch holds the
//! episode changes, the command outcomes (the `commands` row is this consumer's inbox: a command
//! no longer `pending` was handled before and is skipped) and the outbox events.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, SubsecRound, Utc};
use sea_orm::{ConnectionTrait, DbErr, FromQueryResult, TransactionTrait};
use showrunner_shared::contracts::{
    Command, CommandEnvelope, CommandRejected, DeleteType, Episode, EpisodeChanges, EpisodeCreated,
    EpisodeDeleted, EpisodeUpdated, OutgoingEvent,
};
use showrunner_shared::db::{EpisodeRow, sql};
use showrunner_shared::outbox::{self, StoredEvent};
use uuid::Uuid;

use crate::runtime::{BatchHandler, Context, Incoming};

pub struct EpisodeCommands;

impl BatchHandler for EpisodeCommands {
    type Message = CommandEnvelope;

    async fn handle(
        &self,
        ctx: &Context,
        batch: &[&Incoming<CommandEnvelope>],
    ) -> anyhow::Result<Vec<StoredEvent>> {
        // A conflict means another worker applied some of these commands while this transaction
        // ran (it briefly held the partition too); it rolled back, and the next attempt finds
        // them handled and skips them.
        let mut attempt = 0;
        loop {
            match apply_batch(ctx, batch).await {
                Err(BatchError::HandledElsewhere(count)) if attempt < 3 => {
                    attempt += 1;
                    tracing::warn!(
                        count,
                        "commands applied by another worker meanwhile, batch rolled back and tried again"
                    );
                }
                Ok(events) => return Ok(events),
                // The database error itself, so the runtime can tell a lost connection.
                Err(BatchError::Db(error)) => return Err(error.into()),
                Err(error) => return Err(error.into()),
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum BatchError {
    #[error("{0} commands of the batch were applied by another worker meanwhile")]
    HandledElsewhere(usize),
    #[error(transparent)]
    Db(#[from] DbErr),
}

/// Applies the batch in one transaction; the events it wrote to the outbox.
async fn apply_batch(
    ctx: &Context,
    batch: &[&Incoming<CommandEnvelope>],
) -> Result<Vec<StoredEvent>, BatchError> {
    let txn = ctx.db.begin().await?;
    // Every lookup here is by primary key. On a young table without statistics the planner
    // picks (and caches) sequential scans, which made each batch read the whole table.
    txn.execute_unprepared("SET LOCAL enable_seqscan = off").await?;
    let handled = already_handled(&txn, batch).await?;
    let mut episodes = load_episodes(&txn, batch).await?;
    let now = Utc::now().trunc_subsecs(6);

    let mut outcomes = Vec::new();
    let mut events = Vec::new();
    let mut seen = HashSet::new();
    for incoming in batch {
        let envelope = &incoming.body;
        if handled.contains(&envelope.id) || !seen.insert(envelope.id) {
            tracing::debug!(command_id = %envelope.id, "duplicate command skipped");
            continue;
        }
        let slot = episodes.entry(envelope.command.episode_id()).or_default();
        let outcome = apply(&mut slot.after, envelope, now);
        let event = match &outcome {
            Ok(event) => event.clone(),
            Err(rejection) => OutgoingEvent::new(
                &envelope.actor.id,
                &CommandRejected { command_id: envelope.id, reason: rejection.reason.clone() },
                Some(envelope.actor.clone()),
                Some(envelope.id),
                now,
            ),
        };
        // The event continues the command's trace as a new span.
        let traceparent = showrunner_shared::trace::child_or_new(incoming.traceparent.as_deref());
        events.push(StoredEvent::from_outgoing(&event, Some(traceparent)));
        outcomes.push((envelope, outcome.err()));
    }

    write_episodes(&txn, &episodes).await?;
    let recorded = record_outcomes(&txn, &outcomes, now).await?;
    if recorded < outcomes.len() {
        txn.rollback().await?;
        return Err(BatchError::HandledElsewhere(outcomes.len() - recorded));
    }
    outbox::insert(&txn, &events).await?;
    txn.commit().await?;
    Ok(events)
}

/// Why a command could not be applied; `code` lets the API pick the HTTP status.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    pub code: &'static str,
    pub reason: String,
}

fn reject(code: &'static str, reason: String) -> Rejection {
    Rejection { code, reason }
}

/// An episode before this batch and as the batch leaves it.
#[derive(Default)]
struct Slot {
    before: Option<Episode>,
    after: Option<Episode>,
}

/// Applies one command to the episode's current state; the event it produces, or why not.
fn apply(
    state: &mut Option<Episode>,
    envelope: &CommandEnvelope,
    now: DateTime<Utc>,
) -> Result<OutgoingEvent, Rejection> {
    let actor = envelope.actor.clone();
    let event = |e: OutgoingEvent| Ok(e);
    match &envelope.command {
        Command::CreateEpisode { episode_id, title, description, status, categories } => {
            if state.is_some() {
                return Err(reject("conflict", format!("episode {episode_id} already exists")));
            }
            let created_at = envelope.accepted_at.trunc_subsecs(6);
            let episode = Episode {
                id: *episode_id,
                title: title.as_str().to_string(),
                description: description.as_str().to_string(),
                status: *status,
                categories: categories.as_slice().to_vec(),
                created_by: actor.id,
                updated_by: actor.id,
                created_at,
                updated_at: created_at,
                deleted_at: None,
                version: 1,
            };
            *state = Some(episode.clone());
            let data = EpisodeCreated { episode, created_by: actor.id, timestamp: now };
            event(OutgoingEvent::new(episode_id, &data, Some(actor), Some(envelope.id), now))
        }
        Command::UpdateEpisode { episode_id, changes } => {
            let episode = live(state, *episode_id)?;
            let changed_fields = apply_changes(episode, changes);
            if !changed_fields.is_empty() {
                episode.updated_by = actor.id;
                episode.updated_at = now;
                episode.version += 1;
            }
            let data = EpisodeUpdated {
                episode: episode.clone(),
                changed_fields,
                updated_by: actor.id,
                timestamp: now,
            };
            event(OutgoingEvent::new(episode_id, &data, Some(actor), Some(envelope.id), now))
        }
        Command::DeleteEpisode { episode_id, permanent } => {
            let title = if *permanent {
                let episode = state.take().ok_or_else(|| missing(*episode_id))?;
                episode.title
            } else {
                let episode = live(state, *episode_id)?;
                episode.deleted_at = Some(now);
                episode.updated_by = actor.id;
                episode.updated_at = now;
                episode.version += 1;
                episode.title.clone()
            };
            let data = EpisodeDeleted {
                episode_id: *episode_id,
                title,
                delete_type: if *permanent { DeleteType::Permanent } else { DeleteType::Soft },
                deleted_by: actor.id,
                timestamp: now,
            };
            event(OutgoingEvent::new(episode_id, &data, Some(actor), Some(envelope.id), now))
        }
    }
}

fn missing(id: Uuid) -> Rejection {
    reject("not_found", format!("episode {id} does not exist"))
}

/// The episode if it exists and is not soft-deleted.
fn live(state: &mut Option<Episode>, id: Uuid) -> Result<&mut Episode, Rejection> {
    match state {
        None => Err(missing(id)),
        Some(e) if e.deleted_at.is_some() => {
            Err(reject("gone", format!("episode {id} is deleted")))
        }
        Some(e) => Ok(e),
    }
}

/// Sets the fields that differ; returns their names, in the contract's spelling.
fn apply_changes(episode: &mut Episode, changes: &EpisodeChanges) -> Vec<String> {
    let mut changed = Vec::new();
    if let Some(title) = &changes.title
        && episode.title != title.as_str()
    {
        episode.title = title.as_str().to_string();
        changed.push("title".to_string());
    }
    if let Some(description) = &changes.description
        && episode.description != description.as_str()
    {
        episode.description = description.as_str().to_string();
        changed.push("description".to_string());
    }
    if let Some(status) = changes.status
        && episode.status != status
    {
        episode.status = status;
        changed.push("status".to_string());
    }
    if let Some(categories) = &changes.categories
        && episode.categories != categories.as_slice()
    {
        episode.categories = categories.as_slice().to_vec();
        changed.push("categories".to_string());
    }
    changed
}

#[derive(FromQueryResult)]
struct CommandStatus {
    id: Uuid,
    status: String,
}

async fn already_handled(
    txn: &impl ConnectionTrait,
    batch: &[&Incoming<CommandEnvelope>],
) -> Result<HashSet<Uuid>, DbErr> {
    let ids: Vec<Uuid> = batch.iter().map(|m| m.body.id).collect();
    // Locking every row of the batch, whatever its status, serialises two workers that briefly
    // both hold a partition: the second waits for the first to commit, then reads the status
    // the first wrote. The status must not be in the WHERE clause: under READ COMMITTED rows
    // are filtered on the statement's snapshot before they are locked, so a row another
    // transaction is changing would still read 'pending', be skipped, and not be waited for.
    // Locked in id order, so two batches never deadlock.
    let rows = CommandStatus::find_by_statement(sql(
        "SELECT id, status FROM commands WHERE id = ANY($1) ORDER BY id FOR UPDATE",
        [ids.into()],
    ))
    .all(txn)
    .await?;
    Ok(rows.into_iter().filter(|r| r.status != "pending").map(|r| r.id).collect())
}

async fn load_episodes(
    txn: &impl ConnectionTrait,
    batch: &[&Incoming<CommandEnvelope>],
) -> Result<HashMap<Uuid, Slot>, DbErr> {
    let ids: Vec<Uuid> = batch
        .iter()
        .map(|m| m.body.command.episode_id())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let rows = EpisodeRow::find_by_statement(sql(
        "SELECT * FROM episodes WHERE id = ANY($1) ORDER BY id FOR UPDATE",
        [ids.into()],
    ))
    .all(txn)
    .await?;
    let mut slots = HashMap::new();
    for row in rows {
        let episode = Episode::try_from(row)?;
        slots.insert(episode.id, Slot { before: Some(episode.clone()), after: Some(episode) });
    }
    Ok(slots)
}

/// Writes the batch's episodes: one multi-row upsert for the new and changed, one delete for
/// the permanently deleted.
async fn write_episodes(
    txn: &impl ConnectionTrait,
    slots: &HashMap<Uuid, Slot>,
) -> Result<(), DbErr> {
    let changed: Vec<&Episode> = slots
        .values()
        .filter_map(|slot| slot.after.as_ref().filter(|e| slot.before.as_ref() != Some(*e)))
        .collect();
    let deleted: Vec<Uuid> = slots
        .iter()
        .filter(|(_, s)| s.before.is_some() && s.after.is_none())
        .map(|(id, _)| *id)
        .collect();
    if !changed.is_empty() {
        let column = |f: &dyn Fn(&Episode) -> String| -> Vec<String> {
            changed.iter().map(|e| f(e)).collect()
        };
        // Arrays of arrays do not unnest row by row, so categories travel as JSON text.
        let categories =
            column(&|e| serde_json::to_string(&e.categories).unwrap_or_else(|_| "[]".into()));
        let deleted_at = column(&|e| e.deleted_at.map(|d| d.to_rfc3339()).unwrap_or_default());
        txn.execute_raw(sql(
            "INSERT INTO episodes (id, title, description, status, categories, created_by, \
             updated_by, created_at, updated_at, deleted_at, version) \
             SELECT id, title, description, status, \
             ARRAY(SELECT jsonb_array_elements_text(categories::jsonb)), created_by, updated_by, \
             created_at, updated_at, NULLIF(deleted_at, '')::timestamptz, version \
             FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::uuid[], \
             $7::uuid[], $8::timestamptz[], $9::timestamptz[], $10::text[], $11::bigint[]) \
             AS t(id, title, description, status, categories, created_by, updated_by, created_at, \
             updated_at, deleted_at, version) \
             ON CONFLICT (id) DO UPDATE SET title = EXCLUDED.title, \
             description = EXCLUDED.description, status = EXCLUDED.status, \
             categories = EXCLUDED.categories, updated_by = EXCLUDED.updated_by, \
             updated_at = EXCLUDED.updated_at, deleted_at = EXCLUDED.deleted_at, \
             version = EXCLUDED.version",
            [
                changed.iter().map(|e| e.id).collect::<Vec<_>>().into(),
                column(&|e| e.title.clone()).into(),
                column(&|e| e.description.clone()).into(),
                column(&|e| e.status.as_str().to_string()).into(),
                categories.into(),
                changed.iter().map(|e| e.created_by).collect::<Vec<_>>().into(),
                changed.iter().map(|e| e.updated_by).collect::<Vec<_>>().into(),
                changed.iter().map(|e| e.created_at).collect::<Vec<_>>().into(),
                changed.iter().map(|e| e.updated_at).collect::<Vec<_>>().into(),
                deleted_at.into(),
                changed.iter().map(|e| e.version).collect::<Vec<_>>().into(),
            ],
        ))
        .await?;
    }
    if !deleted.is_empty() {
        txn.execute_raw(sql("DELETE FROM episodes WHERE id = ANY($1)", [deleted.into()])).await?;
    }
    Ok(())
}

/// Writes each command's outcome; how many were written. A command whose row is no longer
/// `pending` is left as it is and not counted: a command published without a recorded row (the
/// api records one first, a hand-published one has none) can be inserted by two workers at
/// once, and the second must learn that it lost rather than overwrite the first.
async fn record_outcomes(
    txn: &impl ConnectionTrait,
    outcomes: &[(&CommandEnvelope, Option<Rejection>)],
    now: DateTime<Utc>,
) -> Result<usize, DbErr> {
    if outcomes.is_empty() {
        return Ok(0);
    }
    let mut ids = Vec::new();
    let mut users = Vec::new();
    let mut kinds = Vec::new();
    let mut resources = Vec::new();
    let mut statuses = Vec::new();
    let mut errors = Vec::new();
    let mut codes = Vec::new();
    for (envelope, rejection) in outcomes {
        ids.push(envelope.id);
        users.push(envelope.actor.id);
        kinds.push(envelope.command.kind().to_string());
        resources.push(envelope.command.episode_id());
        statuses.push(if rejection.is_some() { "rejected" } else { "applied" }.to_string());
        errors.push(rejection.as_ref().map(|r| r.reason.clone()).unwrap_or_default());
        codes.push(rejection.as_ref().map(|r| r.code.to_string()).unwrap_or_default());
    }
    let written = txn
        .execute_raw(sql(
            "INSERT INTO commands (id, user_id, kind, resource_type, resource_id, status, error, \
         error_code, completed_at) \
         SELECT id, user_id, kind, 'episode', resource_id, status, NULLIF(error, ''), \
         NULLIF(code, ''), $8 \
         FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::uuid[], $5::text[], $6::text[], \
         $7::text[]) AS t(id, user_id, kind, resource_id, status, error, code) \
         ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, error = EXCLUDED.error, \
         error_code = EXCLUDED.error_code, completed_at = EXCLUDED.completed_at \
         WHERE commands.status = 'pending'",
            [
                ids.into(),
                users.into(),
                kinds.into(),
                resources.into(),
                statuses.into(),
                errors.into(),
                codes.into(),
                now.into(),
            ],
        ))
        .await?;
    Ok(usize::try_from(written.rows_affected()).unwrap_or(usize::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use showrunner_shared::contracts::{Actor, COMMAND_VERSION};
    use showrunner_shared::domain::EpisodeStatus;

    fn envelope(command: Command) -> CommandEnvelope {
        CommandEnvelope {
            id: Uuid::now_v7(),
            version: COMMAND_VERSION,
            actor: Actor { id: Uuid::from_u128(1), name: "Alice".into() },
            accepted_at: Utc::now(),
            command,
        }
    }

    fn create(id: Uuid) -> CommandEnvelope {
        envelope(Command::CreateEpisode {
            episode_id: id,
            title: "Pilot".to_string().try_into().unwrap_or_else(|_| unreachable!()),
            description: Default::default(),
            status: EpisodeStatus::Draft,
            categories: Default::default(),
        })
    }

    #[test]
    fn create_update_delete_in_order() {
        let id = Uuid::now_v7();
        let mut state = None;
        let now = Utc::now();
        assert!(apply(&mut state, &create(id), now).is_ok());
        let update = envelope(Command::UpdateEpisode {
            episode_id: id,
            changes: EpisodeChanges {
                status: Some(EpisodeStatus::Published),
                ..Default::default()
            },
        });
        let event = apply(&mut state, &update, now).expect("applies");
        assert_eq!(event.envelope.data["changedFields"], serde_json::json!(["status"]));
        assert_eq!(state.as_ref().map(|e| e.version), Some(2));
        let delete = envelope(Command::DeleteEpisode { episode_id: id, permanent: false });
        assert!(apply(&mut state, &delete, now).is_ok());
        assert!(state.as_ref().is_some_and(|e| e.deleted_at.is_some()));
        assert_eq!(apply(&mut state, &update, now).map(|_| ()).map_err(|r| r.code), Err("gone"));
    }

    #[test]
    fn commands_on_a_missing_episode_are_rejected() {
        let id = Uuid::now_v7();
        let mut state = None;
        let now = Utc::now();
        let update =
            envelope(Command::UpdateEpisode { episode_id: id, changes: Default::default() });
        assert_eq!(
            apply(&mut state, &update, now).map(|_| ()).map_err(|r| r.code),
            Err("not_found")
        );
        let delete = envelope(Command::DeleteEpisode { episode_id: id, permanent: true });
        assert_eq!(
            apply(&mut state, &delete, now).map(|_| ()).map_err(|r| r.code),
            Err("not_found")
        );
        assert!(apply(&mut state, &create(id), now).is_ok());
        assert_eq!(
            apply(&mut state, &create(id), now).map(|_| ()).map_err(|r| r.code),
            Err("conflict")
        );
    }
}
