//! The command worker's consumer: applies the commands of its partitions, whatever their
//! resource. One transaction per batch holds the resources' changes (each resource's rules are
//! its `apply` in `showrunner_shared::resource`), the command outcomes (the `commands` row is
//! this consumer's inbox: a command no longer `pending` was handled before and is skipped) and
//! the events, written into the event log last, and the notification that names the commands
//! it settled (`showrunner_shared::settled`), which PostgreSQL delivers to the api's waiting
//! requests when the transaction commits. Nothing here knows one resource from another.

use std::collections::HashSet;

use chrono::{DateTime, SubsecRound, Utc};
use sea_orm::{ConnectionTrait, DbErr, FromQueryResult, TransactionTrait};
use showrunner_shared::contracts::{CommandEnvelope, CommandRejected, OutgoingEvent};
use showrunner_shared::db::sql;
use showrunner_shared::event_log::{self, StoredEvent};
use showrunner_shared::resource::{Batch, CommandStatus, Rejection};
use showrunner_shared::settled::{self, Settled};
use uuid::Uuid;

use crate::runtime::{BatchHandler, Context, Incoming};

/// Applies command batches; every resource goes through it.
pub struct Commands;

impl BatchHandler for Commands {
    type Message = CommandEnvelope;

    async fn handle(
        &self,
        ctx: &Context,
        batch: &[&Incoming<CommandEnvelope>],
    ) -> anyhow::Result<()> {
        // A conflict means another worker applied some of these commands while this transaction
        // ran (it briefly held the partition too); it rolled back, and the next attempt finds
        // them handled and skips them.
        let mut attempt = 0;
        let mut notify = true;
        loop {
            match apply_batch(ctx, batch, notify).await {
                Err(BatchError::HandledElsewhere(count)) if attempt < 3 => {
                    attempt += 1;
                    tracing::warn!(
                        count,
                        "commands applied by another worker meanwhile, batch rolled back and tried again"
                    );
                }
                // A listener that stopped reading holds PostgreSQL's notification queue until
                // it is full: the batch must not wait for it. Its waiting requests are woken by
                // the shipped events instead, or answer 202 at their deadline.
                Err(BatchError::Db(error)) if notify && settled::queue_full(&error) => {
                    notify = false;
                    tracing::warn!(%error, "notification queue full, batch applied again without notifying");
                }
                Ok(()) => return Ok(()),
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

/// Applies the batch in one transaction, its events recorded in the event log.
async fn apply_batch(
    ctx: &Context,
    batch: &[&Incoming<CommandEnvelope>],
    notify: bool,
) -> Result<(), BatchError> {
    let txn = ctx.db.begin().await?;
    // Every lookup here is by primary key. On a young table without statistics the planner
    // picks (and caches) sequential scans, which made each batch read the whole table.
    txn.execute_unprepared("SET LOCAL enable_seqscan = off").await?;
    let handled = already_handled(&txn, batch).await?;
    let mut state = Batch::load(&txn, batch.iter().map(|m| &m.body.command)).await?;
    let now = Utc::now().trunc_subsecs(6);

    let mut outcomes = Vec::new();
    let mut answers = Vec::new();
    let mut events = Vec::new();
    let mut seen = HashSet::new();
    for incoming in batch {
        let envelope = &incoming.body;
        if handled.contains(&envelope.id) || !seen.insert(envelope.id) {
            tracing::debug!(command_id = %envelope.id, "duplicate command skipped");
            continue;
        }
        let outcome = state.apply(envelope, now);
        // The resource as this command left it, for the request that waits on it.
        let how = match &outcome {
            Ok(_) => state
                .answer(&envelope.command)
                .map_or(Settled::Applied, |json| Settled::AppliedAs(std::sync::Arc::from(json))),
            Err(_) => Settled::Settled,
        };
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
        answers.push((envelope.id, how));
    }

    state.write(&txn).await?;
    let recorded = record_outcomes(&txn, &outcomes, now).await?;
    if recorded < outcomes.len() {
        txn.rollback().await?;
        return Err(BatchError::HandledElsewhere(outcomes.len() - recorded));
    }
    // Last: every lock this batch waits for is held by now (see `event_log`).
    event_log::record_new(&txn, &events).await?;
    if notify {
        // Delivered at the commit, when every outcome above is readable; one statement.
        settled::notify(&txn, &answers).await?;
    }
    txn.commit().await?;
    Ok(())
}

#[derive(FromQueryResult)]
struct CommandRow {
    id: Uuid,
    status: CommandStatus,
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
    let rows = CommandRow::find_by_statement(sql(
        "SELECT id, status FROM commands WHERE id = ANY($1) ORDER BY id FOR UPDATE",
        [ids.into()],
    ))
    .all(txn)
    .await?;
    Ok(rows.into_iter().filter(|r| r.status != CommandStatus::Pending).map(|r| r.id).collect())
}

/// Writes each command's outcome; how many were written. A command whose row is no longer
/// `pending` is left as it is and not counted: a command published without a recorded row (the
/// api records one first, a hand-published one has none) can be inserted by two workers at
/// once, and the second must learn that it lost rather than overwrite the first. The stored
/// message is cleared: only a pending command's is read again (the republish sweeper, a keyed
/// retry), so an outcome row keeps what `GET /commands/{id}` and a keyed retry answer.
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
    let mut resource_types = Vec::new();
    let mut resources = Vec::new();
    let mut statuses = Vec::new();
    let mut errors = Vec::new();
    let mut codes = Vec::new();
    for (envelope, rejection) in outcomes {
        ids.push(envelope.id);
        users.push(envelope.actor.id);
        kinds.push(envelope.command.kind().to_string());
        let (resource_type, resource_id) = envelope.command.resource();
        resource_types.push(resource_type.as_str().to_string());
        resources.push(resource_id);
        let status =
            if rejection.is_some() { CommandStatus::Rejected } else { CommandStatus::Applied };
        statuses.push(status.as_str().to_string());
        errors.push(rejection.as_ref().map(|r| r.reason.clone()).unwrap_or_default());
        codes.push(rejection.as_ref().map(|r| r.code.as_str().to_string()).unwrap_or_default());
    }
    let written = txn
        .execute_raw(sql(
            "INSERT INTO commands (id, user_id, kind, resource_type, resource_id, status, error, \
         error_code, completed_at) \
         SELECT id, user_id, kind, resource_type, resource_id, status, NULLIF(error, ''), \
         NULLIF(code, ''), $8 \
         FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::uuid[], $5::text[], $6::text[], \
         $7::text[], $9::text[]) AS t(id, user_id, kind, resource_id, status, error, code, \
         resource_type) \
         ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, error = EXCLUDED.error, \
         error_code = EXCLUDED.error_code, completed_at = EXCLUDED.completed_at, message = NULL \
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
                resource_types.into(),
            ],
        ))
        .await?;
    Ok(usize::try_from(written.rows_affected()).unwrap_or(usize::MAX))
}
