//! The notification worker: turns events into the seed's notifications (creation and deletion
//! confirmations to the actor, rejected commands, failed jobs), unique per (event, user), and
//! records `notification_created` in the event log in the same transaction.
//!
//! It reads the event log itself, in `seq` order, rather than a queue of its own: an event
//! then crosses the broker once, to the relays, and the quorum enqueue, delivery and ack a
//! queue of its own cost on every event are gone (issue 14). It reads no further than the
//! shipper recorded publishing (`published_seq`): numbers become visible out of order, and the
//! shipper publishes one only once nothing below it can still commit, so "everything after
//! `position`, up to there" never skips a row that commits later.
//!
//! One notification worker is active at a time, fenced by a lease in `notification_cursor`
//! like the log shipper's: every batch's transaction moves `position` from where this worker
//! read to the last event it handled, only if this worker still holds an unexpired lease and
//! the position is still the one it read from. So a batch is applied once, in order, whoever
//! else believes it is active; the others stand by. Its notifications and the position commit
//! together, so a worker killed at any moment leaves either both or neither.
//!
//! An event that keeps failing alone (a body PostgreSQL refuses, say) is passed over with an
//! error log and counted as parked: it stays in the event log for an operator, and the events
//! after it are not held up.

use std::time::{Duration, Instant};

use chrono::Utc;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr, FromQueryResult, TransactionTrait};
use showrunner_shared::broker::topology::NOTIFYING_EVENTS;
use showrunner_shared::contracts::{
    CommandRejected, EpisodeCreated, EpisodeDeleted, Event, EventData, EventEnvelope, JobFailed,
    Notification, NotificationCreated, OutgoingEvent,
};
use showrunner_shared::db::sql;
use showrunner_shared::entity::notification;
use showrunner_shared::event_log::{self, Shipped, StoredEvent};
use showrunner_shared::metrics;
use showrunner_shared::resource::ResourceType;
use showrunner_shared::topics;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::role::{Part, Role, Session};

/// How long a lease lasts without renewal: how long a dead worker holds notifications up.
pub const LEASE: Duration = Duration::from_secs(5);
/// How often an active worker with nothing to do renews its lease.
const RENEW_EVERY: Duration = Duration::from_secs(1);
/// How often a standby worker tries to take the lease.
const STANDBY_POLL: Duration = Duration::from_millis(500);
/// The pause of an idle worker between looks at the log, doubled while it stays idle: under
/// load it looks again at once, when idle at most [`IDLE_POLL_MAX`] late.
const IDLE_POLL_MIN: Duration = Duration::from_millis(1);
const IDLE_POLL_MAX: Duration = Duration::from_millis(8);
/// Most events read (and handled in one transaction) at a time.
const BATCH: i64 = 1_000;
/// Attempts on a batch before its events are tried one by one, and on one event before it is
/// passed over. Connection errors do not count: they end the session, which starts again.
const ATTEMPTS: u32 = 5;
/// What the worker's metrics are labelled with, where a queue's name used to be.
const SOURCE: &str = "event_log";

/// The notification worker's one part.
pub struct Notifier {
    me: Uuid,
}

impl Notifier {
    pub fn new() -> Self {
        let me = Uuid::now_v7();
        tracing::info!(notifier = %me, "notification worker starting");
        Self { me }
    }
}

impl Default for Notifier {
    fn default() -> Self {
        Self::new()
    }
}

impl Part for Notifier {
    fn label(&self) -> String {
        format!("{}/event_log", Role::Notification.name())
    }

    async fn session(&mut self, s: Session<'_>) -> anyhow::Result<()> {
        loop {
            match lead(&s.ctx.db, s.conn, self.me, s.cancel).await {
                Ok(true) => return Ok(()),
                // The broker connection closed: the session ends and `serve` reconnects, so
                // the sweeps beside it get a working publisher again.
                Ok(false) => anyhow::bail!("the broker connection closed"),
                // The database went away under us: take the lease again once it is back
                // (it is still ours unless it expired meanwhile).
                Err(error) => {
                    tracing::warn!(%error, "notification worker: database error, starting over");
                    tokio::select! {
                        () = s.cancel.cancelled() => return Ok(()),
                        () = tokio::time::sleep(STANDBY_POLL) => {}
                    }
                }
            }
        }
    }

    async fn leave(&mut self, db: &DatabaseConnection) {
        let result = db
            .execute_raw(sql(
                "UPDATE notification_cursor SET lease_until = '-infinity' \
                 WHERE id = 1 AND holder = $1",
                [self.me.into()],
            ))
            .await;
        if let Err(error) = result {
            tracing::warn!(%error, "notification worker: could not give the lease up; it expires by itself");
        }
    }
}

/// Stands by until this worker holds the lease, then handles the log until shutdown (`true`),
/// the broker connection's end (`false`: the worker needs no broker, its sweeps do) or a
/// database error, standing by again whenever the lease is lost.
async fn lead(
    db: &DatabaseConnection,
    conn: &lapin::Connection,
    me: Uuid,
    cancel: &CancellationToken,
) -> Result<bool, DbErr> {
    loop {
        let Some(mut position) = standby(db, conn, me, cancel).await? else {
            return Ok(cancel.is_cancelled());
        };
        tracing::info!(position, "notification worker active");
        // How far the log was read; ahead of `position` (what the cursor row says) while only
        // events that notify nobody were read since: those need no transaction of their own (a
        // worker taking over reads them again, to no effect), and the next batch or renewal
        // moves the position over them.
        let mut read = position;
        let mut renewed = Instant::now();
        let mut idle = IDLE_POLL_MIN;
        loop {
            if cancel.is_cancelled() {
                return Ok(true);
            }
            if !conn.status().connected() {
                return Ok(false);
            }
            // Only the bodies of events that may notify are read (most are not: a job's
            // events, an episode's updates); the others come with an empty body, which nothing
            // reads. The patterns are a superset of `NOTIFYING_EVENTS`: `notifies` decides.
            let rows = Shipped::find_by_statement(sql(
                "SELECT seq, id, routing_key, \
                 CASE WHEN routing_key LIKE ANY($3::text[]) THEN body ELSE '' END AS body, \
                 traceparent FROM event_log \
                 WHERE seq > $1 \
                 AND seq <= (SELECT published_seq FROM event_log_shipper WHERE id = 1) \
                 ORDER BY seq LIMIT $2",
                [read.into(), BATCH.into(), like_patterns().into()],
            ))
            .all(db)
            .await?;
            let Some(through) = rows.last().map(|r| r.seq) else {
                if renewed.elapsed() >= RENEW_EVERY {
                    if !advance(db, me, position, read, &[]).await? {
                        tracing::warn!("notification worker lost its lease, standing by");
                        break;
                    }
                    (position, renewed) = (read, Instant::now());
                }
                tokio::select! {
                    () = cancel.cancelled() => {}
                    () = tokio::time::sleep(idle) => {}
                }
                idle = (idle * 2).min(IDLE_POLL_MAX);
                continue;
            };
            idle = IDLE_POLL_MIN;
            metrics::MESSAGES_CONSUMED.inc_by(&[SOURCE], rows.len() as u64);
            if !rows.iter().any(|r| notifies(&r.routing_key)) && renewed.elapsed() < RENEW_EVERY {
                read = through;
                continue;
            }
            let started = Instant::now();
            let span = crate::observe::span_of(
                SOURCE,
                rows.len(),
                rows.iter().filter_map(|r| r.traceparent.as_deref()),
            );
            let settled = settle(db, me, position, through, &rows, cancel);
            if !crate::observe::in_span(span, settled).await? {
                tracing::warn!("notification worker lost its lease, standing by");
                break;
            }
            metrics::HANDLER_SECONDS.observe_duration(&[SOURCE], started.elapsed());
            (position, read, renewed) = (through, through, Instant::now());
        }
    }
}

/// Waits until this worker takes the lease: `Some(position)`, or `None` on shutdown or when
/// the broker connection closed.
async fn standby(
    db: &DatabaseConnection,
    conn: &lapin::Connection,
    me: Uuid,
    cancel: &CancellationToken,
) -> Result<Option<i64>, DbErr> {
    #[derive(FromQueryResult)]
    struct Cursor {
        position: i64,
    }
    loop {
        if !conn.status().connected() {
            return Ok(None);
        }
        let taken = Cursor::find_by_statement(sql(
            "UPDATE notification_cursor SET holder = $1, \
             lease_until = now() + make_interval(secs => $2) \
             WHERE id = 1 AND (holder = $1 OR lease_until < now()) RETURNING position",
            [me.into(), LEASE.as_secs_f64().into()],
        ))
        .one(db)
        .await?;
        if let Some(taken) = taken {
            return Ok(Some(taken.position));
        }
        tokio::select! {
            () = cancel.cancelled() => return Ok(None),
            () = tokio::time::sleep(STANDBY_POLL) => {}
        }
    }
}

/// Handles `rows` (the events after `from`, through `through`) and moves the position, retrying
/// what fails; `false` when the lease is no longer this worker's. A batch that keeps failing
/// is tried an event at a time, and an event that keeps failing alone is passed over.
async fn settle(
    db: &DatabaseConnection,
    me: Uuid,
    from: i64,
    through: i64,
    rows: &[Shipped],
    cancel: &CancellationToken,
) -> Result<bool, DbErr> {
    let error = match retried(db, me, from, through, rows, cancel).await {
        Ok(held) => return Ok(held),
        Err(error) if is_connection(&error) || cancel.is_cancelled() => return Err(error),
        Err(error) => error,
    };
    if let [row] = rows {
        tracing::error!(seq = row.seq, event = %row.id, %error,
            "event keeps failing in the notification worker, passed over (it stays in the event log)");
        metrics::MESSAGES_PARKED.inc(&[SOURCE]);
        return advance(db, me, from, through, &[]).await;
    }
    tracing::warn!(%error, "notification batch keeps failing, handling its events one by one");
    let mut at = from;
    for row in rows {
        if !Box::pin(settle(db, me, at, row.seq, std::slice::from_ref(row), cancel)).await? {
            return Ok(false);
        }
        at = row.seq;
    }
    Ok(true)
}

/// [`advance`] with its drafts, tried [`ATTEMPTS`] times with backoff on errors other than a
/// lost connection.
async fn retried(
    db: &DatabaseConnection,
    me: Uuid,
    from: i64,
    through: i64,
    rows: &[Shipped],
    cancel: &CancellationToken,
) -> Result<bool, DbErr> {
    let mut delay = Duration::from_millis(100);
    let mut attempt = 1;
    loop {
        match advance(db, me, from, through, rows).await {
            Err(error) if attempt < ATTEMPTS && !is_connection(&error) => {
                tracing::warn!(%error, attempt, "notification batch failed, retrying");
                metrics::MESSAGES_RETRIED.inc_by(&[SOURCE], rows.len() as u64);
                tokio::select! {
                    () = cancel.cancelled() => return Err(error),
                    () = tokio::time::sleep(delay) => {}
                }
                (delay, attempt) = (delay * 2, attempt + 1);
            }
            result => return result,
        }
    }
}

fn is_connection(error: &DbErr) -> bool {
    matches!(error, DbErr::ConnectionAcquire(_) | DbErr::Conn(_))
}

/// One transaction: moves the position from `from` to `through` (renewing the lease) if this
/// worker holds it and nobody moved it meanwhile, and writes the notifications of `rows` with
/// their `notification_created` events. `false` (nothing written) when the fence refuses.
async fn advance(
    db: &DatabaseConnection,
    me: Uuid,
    from: i64,
    through: i64,
    rows: &[Shipped],
) -> Result<bool, DbErr> {
    let txn = db.begin().await?;
    // The cursor row stays locked until the commit: this is the fence.
    let held = txn
        .execute_raw(sql(
            "UPDATE notification_cursor SET position = $4, \
             lease_until = now() + make_interval(secs => $2) \
             WHERE id = 1 AND holder = $1 AND lease_until > now() AND position = $3",
            [me.into(), LEASE.as_secs_f64().into(), from.into(), through.into()],
        ))
        .await?;
    if held.rows_affected() == 0 {
        txn.rollback().await?;
        return Ok(false);
    }
    let events: Vec<(EventEnvelope, &Shipped)> = rows
        .iter()
        // Our own bodies always parse; one that does not (imported from outside and since
        // changed by hand) notifies nobody.
        .filter(|row| notifies(&row.routing_key))
        .filter_map(|row| Some((serde_json::from_str(&row.body).ok()?, row)))
        .collect();
    write(&txn, &events).await?;
    txn.commit().await?;
    Ok(true)
}

/// Whether an event with this routing key may notify someone (the others are not parsed).
/// `NOTIFYING_EVENTS` as `LIKE` patterns: a topic word (`*`, `#`) matches anything, so every
/// key that notifies matches one of them (and a few that do not, left to [`notifies`]).
fn like_patterns() -> Vec<String> {
    NOTIFYING_EVENTS.iter().map(|p| p.replace(['*', '#'], "%")).collect()
}

fn notifies(routing_key: &str) -> bool {
    NOTIFYING_EVENTS.iter().any(|pattern| topics::matches(pattern, routing_key))
}

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

/// Inserts the notifications `events` call for, with their `notification_created` events, in
/// `txn`.
async fn write(
    txn: &sea_orm::DatabaseTransaction,
    events: &[(EventEnvelope, &Shipped)],
) -> Result<(), DbErr> {
    let drafts: Vec<_> = events
        .iter()
        .filter_map(|(e, row)| draft_for(e, &row.routing_key).map(|d| (e, *row, d)))
        .collect();
    if drafts.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = drafts.iter().map(|_| Uuid::now_v7()).collect();
    let column = |f: &dyn Fn(&Draft) -> String| -> Vec<String> {
        drafts.iter().map(|(_, _, d)| f(d)).collect()
    };
    // One statement for the whole batch (UNNEST, with the unique (event, user) pair skipping
    // what a worker taking over from an earlier position would add twice).
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
    .all(txn)
    .await?;
    let now = Utc::now();
    let events: Vec<StoredEvent> = rows
        .into_iter()
        .map(|row| {
            let source = drafts.iter().find(|(e, _, _)| e.id == row.event_id);
            let traceparent = Some(showrunner_shared::trace::child_or_new(
                source.and_then(|(_, r, _)| r.traceparent.as_deref()),
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
    event_log::record_new(txn, &events).await
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

    /// SQL `LIKE` with `%` only (the patterns have no `_` or escapes that matter here: `_`
    /// would only widen them).
    fn like(pattern: &str, text: &str) -> bool {
        match pattern.split_once('%') {
            None => pattern == text,
            Some((head, rest)) => {
                text.starts_with(head) && (head.len()..=text.len()).any(|i| like(rest, &text[i..]))
            }
        }
    }

    #[test]
    fn every_key_that_notifies_has_its_body_read() {
        let id = Uuid::from_u128(7);
        let patterns = like_patterns();
        let keys = ["created", "deleted", "updated"].map(|e| format!("episode.{id}.{e}"));
        let others = [format!("user.{id}.command"), format!("job.{id}.failed")];
        let quiet = [format!("job.{id}.completed"), format!("job.{id}.started")];
        for key in keys.iter().chain(&others).chain(&quiet) {
            let read = patterns.iter().any(|p| like(p, key));
            assert!(!notifies(key) || read, "{key} notifies but its body is not read");
        }
        assert!(quiet.iter().all(|k| !patterns.iter().any(|p| like(p, k))), "{patterns:?}");
        assert!(!like("job.%.failed", &format!("job.{id}.completed")));
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
