//! Retention (issue 20): what is not history is deleted once nothing reads it any more, and
//! the history's monthly partitions are made ahead and, if configured, dropped when old.
//!
//! Every worker process that runs a sweeper runs this, at most once per
//! `retention.interval_secs` per database, in a task of its own so the one-second sweeps
//! (outbox, pending commands, stranded jobs) never wait for it. Each table is emptied oldest
//! first in batches of `retention.batch_size` rows, one short transaction per batch, locking
//! with `SKIP LOCKED`: two processes sweeping at once share the work instead of waiting for
//! each other, and a producer never waits behind a sweep for longer than one batch.
//!
//! What goes, and when (defaults in `shared/src/config.rs`, README "Data lifecycle"):
//! - `commands`: applied or rejected commands `retention.commands_secs` after acceptance (at
//!   least 24 h: the row is the Idempotency-Key record). A pending command stays: the
//!   republish sweeper still owns it.
//! - `event_log`: shipped rows older than `realtime.event_log_retention_secs` (how far a
//!   resume reaches back). An unshipped row (`seq` NULL) is never deleted, nor one the
//!   notification worker has not read yet (after its `notification_cursor` position).
//! - `jobs`: succeeded, failed and cancelled jobs `retention.jobs_secs` after they finished.
//!   Their activity rows stay (history).
//! - `notifications`: read ones `retention.read_notifications_secs` after they were read.
//! - `user_presence`: rows expired for longer than `retention.presence_grace_secs` (the api
//!   expires sessions itself, with `viewer_left`; these are what no api was running to expire).
//! - `activity_log`: partitions are made `retention.activity_months_ahead` months ahead; with
//!   `retention.activity_months` > 0, months wholly older than that are dropped.
//!
//! The outbox needs nothing here: nothing writes it any more, and its sweeper deletes what it
//! publishes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{Datelike, NaiveDate, Utc};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr, FromQueryResult};
use showrunner_shared::config::Settings;
use showrunner_shared::db::sql;
use showrunner_shared::metrics;

use crate::runtime::Context;

/// Rows deleted (or partitions made and dropped) by one sweep, per table.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Swept {
    pub commands: u64,
    pub event_log: u64,
    pub jobs: u64,
    pub notifications: u64,
    pub presence: u64,
    pub partitions_made: i32,
    pub partitions_dropped: i32,
}

impl Swept {
    fn any(&self) -> bool {
        *self != Self::default()
    }
}

/// When each database was last swept by this process, and whether a sweep is running.
static LAST: Mutex<Option<HashMap<String, (Instant, bool)>>> = Mutex::new(None);

/// Called by the sweepers every second: starts a sweep in the background when this process
/// has not swept this database for `retention.interval_secs` and none is running.
pub fn tick(ctx: &Context) {
    let key = ctx.settings.database.url.clone();
    let interval = Duration::from_secs(ctx.settings.retention.interval_secs);
    {
        let Ok(mut last) = LAST.lock() else { return };
        let last = last.get_or_insert_with(HashMap::new);
        match last.get(&key) {
            Some((_, true)) => return,
            Some((at, false)) if at.elapsed() < interval => return,
            _ => {}
        }
        last.insert(key.clone(), (Instant::now(), true));
    }
    let (db, settings) = (ctx.db.clone(), ctx.settings.clone());
    tokio::spawn(async move {
        match sweep(&db, &settings).await {
            Ok(swept) if swept.any() => tracing::info!(?swept, "retention sweep"),
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "retention sweep failed"),
        }
        if let Ok(mut last) = LAST.lock()
            && let Some(entry) = last.get_or_insert_with(HashMap::new).get_mut(&key)
        {
            *entry = (Instant::now(), false);
        }
    });
}

/// One sweep of every table. A table's failure does not stop the others; the first error is
/// returned after all were tried.
pub async fn sweep(db: &DatabaseConnection, settings: &Arc<Settings>) -> Result<Swept, DbErr> {
    let r = &settings.retention;
    let batch = i64::from(r.batch_size);
    // One sweep takes at most about half the interval per table, so a large backlog (the
    // first sweep after an upgrade) is worked off over several sweeps.
    let budget = Duration::from_secs(r.interval_secs.div_ceil(2).max(1));
    let mut swept = Swept::default();
    let mut first_error = None;
    for rule in &RULES {
        let started = Instant::now();
        let age = (rule.age_secs)(settings) as f64;
        let result = delete_in_batches(db, rule.delete, age, batch, budget).await;
        metrics::RETENTION_SECONDS.observe_duration(&[rule.table], started.elapsed());
        match result {
            Ok(n) => {
                metrics::RETENTION_DELETED.inc_by(&[rule.table], n);
                *(rule.count)(&mut swept) = n;
            }
            Err(error) => {
                metrics::RETENTION_ERRORS.inc(&[rule.table]);
                tracing::warn!(%error, table = rule.table, "retention of one table failed");
                first_error.get_or_insert(error);
            }
        }
    }
    match partitions(db, settings, Utc::now().date_naive()).await {
        Ok((made, dropped)) => {
            swept.partitions_made = made;
            swept.partitions_dropped = dropped;
        }
        Err(error) => {
            metrics::RETENTION_ERRORS.inc(&["activity_log"]);
            tracing::warn!(%error, "activity log partitions not kept");
            first_error.get_or_insert(error);
        }
    }
    match first_error {
        Some(error) => Err(error),
        None => Ok(swept),
    }
}

/// One table's retention: its rows older than `age_secs` go, `$1` of `delete` being that
/// age in seconds and `$2` the batch size; `count` is where [`Swept`] reports it.
struct Rule {
    table: &'static str,
    delete: &'static str,
    age_secs: fn(&Settings) -> u64,
    count: fn(&mut Swept) -> &mut u64,
}

/// The delete statement of `table`'s rule (`$1` the age in seconds, `$2` the batch size), for
/// tests that look at its plan.
pub fn statement(table: &str) -> Option<&'static str> {
    RULES.iter().find(|rule| rule.table == table).map(|rule| rule.delete)
}

/// Every table swept by age, in the order of the module's list above. Each subquery picks the
/// oldest rows by the column its index orders (so a batch reads an index range, not the
/// table), and `SKIP LOCKED` lets two sweeping processes share the work.
const RULES: [Rule; 5] = [
    Rule {
        table: "commands",
        delete: "DELETE FROM commands WHERE id IN (SELECT id FROM commands \
             WHERE accepted_at < now() - make_interval(secs => $1) AND status <> 'pending' \
             ORDER BY accepted_at LIMIT $2 FOR UPDATE SKIP LOCKED)",
        age_secs: |s| s.retention.commands_secs,
        count: |w| &mut w.commands,
    },
    Rule {
        table: "event_log",
        // The oldest rows by `seq`, then those of them past the window: `logged_at` has no
        // index (every event would pay for it twice), and `seq` order is logging order but for
        // a few milliseconds, so a row logged a little earlier than the one before it goes
        // with the next sweep.
        delete: "DELETE FROM event_log WHERE seq IN (SELECT seq FROM ( \
             SELECT seq, logged_at FROM event_log \
             WHERE seq <= (SELECT position FROM notification_cursor WHERE id = 1) \
             ORDER BY seq LIMIT $2 FOR UPDATE SKIP LOCKED) oldest \
             WHERE logged_at < now() - make_interval(secs => $1))",
        age_secs: |s| s.realtime.event_log_retention_secs,
        count: |w| &mut w.event_log,
    },
    Rule {
        table: "jobs",
        delete: "DELETE FROM jobs WHERE id IN (SELECT id FROM jobs \
             WHERE status IN ('succeeded', 'failed', 'cancelled') \
             AND completed_at < now() - make_interval(secs => $1) \
             ORDER BY completed_at LIMIT $2 FOR UPDATE SKIP LOCKED)",
        age_secs: |s| s.retention.jobs_secs,
        count: |w| &mut w.jobs,
    },
    Rule {
        table: "notifications",
        delete: "DELETE FROM notifications WHERE id IN (SELECT id FROM notifications \
             WHERE read_at IS NOT NULL AND read_at < now() - make_interval(secs => $1) \
             ORDER BY read_at LIMIT $2 FOR UPDATE SKIP LOCKED)",
        age_secs: |s| s.retention.read_notifications_secs,
        count: |w| &mut w.notifications,
    },
    Rule {
        table: "user_presence",
        delete: "DELETE FROM user_presence WHERE (episode_id, user_id, session) IN \
             (SELECT episode_id, user_id, session FROM user_presence \
             WHERE last_seen < now() - make_interval(secs => $1) \
             ORDER BY last_seen LIMIT $2 FOR UPDATE SKIP LOCKED)",
        age_secs: |s| s.http.presence_ttl_secs.saturating_add(s.retention.presence_grace_secs),
        count: |w| &mut w.presence,
    },
];

/// Runs `delete` (whose `$1` is an age in seconds and `$2` the batch size) until a batch
/// deletes less than a full batch or `budget` is spent, pausing after each full batch as long
/// as it took; how many rows it deleted.
async fn delete_in_batches(
    db: &DatabaseConnection,
    delete: &str,
    age_secs: f64,
    batch: i64,
    budget: Duration,
) -> Result<u64, DbErr> {
    let started = Instant::now();
    let mut total = 0;
    loop {
        let batch_started = Instant::now();
        let n = db.execute_raw(sql(delete, [age_secs.into(), batch.into()])).await?.rows_affected();
        total += n;
        if n < u64::try_from(batch).unwrap_or(u64::MAX) || started.elapsed() >= budget {
            return Ok(total);
        }
        // A backlog is deleted at most half the time: the pause lets the commits of the write
        // path (and the WAL they wait on) through between two batches.
        tokio::time::sleep(batch_started.elapsed()).await;
    }
}

#[derive(FromQueryResult)]
struct Count {
    n: i32,
}

/// Makes the activity log's partitions from `today`'s month to `activity_months_ahead`
/// months ahead, and drops the months older than `activity_months` (when not 0); how many
/// it made and dropped.
pub async fn partitions(
    db: &DatabaseConnection,
    settings: &Settings,
    today: NaiveDate,
) -> Result<(i32, i32), DbErr> {
    let r = &settings.retention;
    let this_month = first_of_month(today, 0);
    let last = first_of_month(today, i64::from(r.activity_months_ahead));
    let made = Count::find_by_statement(sql(
        "SELECT activity_log_ensure($1, $2) AS n",
        [this_month.into(), last.into()],
    ))
    .one(db)
    .await?
    .map_or(0, |c| c.n);
    let mut dropped = 0;
    if r.activity_months > 0 {
        let cutoff = first_of_month(today, -i64::from(r.activity_months));
        dropped = Count::find_by_statement(sql(
            "SELECT activity_log_drop_before($1) AS n",
            [cutoff.into()],
        ))
        .one(db)
        .await?
        .map_or(0, |c| c.n);
    }
    Ok((made, dropped))
}

/// The first day of the month `months` after (or before) `day`'s month.
fn first_of_month(day: NaiveDate, months: i64) -> NaiveDate {
    let index = i64::from(day.year()) * 12 + i64::from(day.month0()) + months;
    let year = i32::try_from(index.div_euclid(12)).unwrap_or(day.year());
    let month = u32::try_from(index.rem_euclid(12)).unwrap_or(0) + 1;
    NaiveDate::from_ymd_opt(year, month, 1).unwrap_or(day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_roll_over_years() {
        let d = |y, m, day| NaiveDate::from_ymd_opt(y, m, day).expect("a valid date");
        assert_eq!(first_of_month(d(2026, 12, 3), 0), d(2026, 12, 1));
        assert_eq!(first_of_month(d(2026, 12, 31), 2), d(2027, 2, 1));
        assert_eq!(first_of_month(d(2026, 1, 15), -1), d(2025, 12, 1));
        assert_eq!(first_of_month(d(2026, 3, 1), -27), d(2023, 12, 1));
    }
}
