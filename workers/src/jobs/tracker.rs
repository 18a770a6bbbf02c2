//! What a job worker keeps about the attempts it runs, and the loop that keeps them alive:
//!
//! - **lease heartbeat**: every `jobs.lease_renew_ms` (by default a second) one `UPDATE` renews
//!   the lease (`locked_until`) of every attempt this worker runs, so the lease can be short
//!   (`jobs.lease_secs`) and a worker killed with `kill -9` has its job picked up seconds
//!   after, not `jobs.timeout_secs` after;
//! - **cancel requests**: the same statement returns which of them someone asked to stop
//!   (`POST /jobs/{id}/cancel` sets `cancel_requested_at`), and their handlers' tokens are
//!   cancelled. So the request reaches whichever worker runs the job, with no message routing;
//! - **lost attempts**: an attempt the statement no longer finds (its lease ran out while the
//!   database was unreachable and another worker took the job) is told to stop too;
//! - **progress**: what handlers report (`JobContext::progress`) is written, the latest per job,
//!   every `jobs.progress_interval_ms` at most, with one `job_progress` event each.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::Utc;
use sea_orm::{DatabaseConnection, DbErr, FromQueryResult, TransactionTrait};
use showrunner_shared::contracts::JobProgress;
use showrunner_shared::db::sql;
use showrunner_shared::event_log::{self, StoredEvent};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::store::ClaimedJob;

/// Longest progress message kept.
const MESSAGE_MAX: usize = 200;

/// Why a running attempt was told to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Someone asked (`POST /jobs/{id}/cancel`): the job ends `cancelled`.
    Cancelled,
    /// The attempt is no longer this worker's: its outcome is dropped.
    Lost,
}

/// A handler's latest report, not yet written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub percent: u8,
    pub message: String,
}

/// The part of a running attempt its handler holds: the token it watches and where it reports.
#[derive(Clone, Default)]
pub struct Signals {
    pub cancel: CancellationToken,
    stop: Arc<Mutex<Option<Stop>>>,
    report: Arc<Mutex<Option<Report>>>,
}

impl Signals {
    /// Why the attempt was told to stop, if it was.
    pub fn stopped(&self) -> Option<Stop> {
        *self.stop.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn stop(&self, why: Stop) {
        let mut stop = self.stop.lock().unwrap_or_else(PoisonError::into_inner);
        // A cancel request wins over a lost lease seen later: the user's intent is known.
        if stop.is_none() {
            *stop = Some(why);
        }
        drop(stop);
        self.cancel.cancel();
    }

    /// Keeps the latest report (percent capped at 100, message at 200 characters).
    pub fn report(&self, percent: u8, message: &str) {
        let message: String = message.chars().take(MESSAGE_MAX).collect();
        *self.report.lock().unwrap_or_else(PoisonError::into_inner) =
            Some(Report { percent: percent.min(100), message });
    }

    fn take_report(&self) -> Option<Report> {
        self.report.lock().unwrap_or_else(PoisonError::into_inner).take()
    }

    /// Puts back a report that could not be written, unless a newer one came meanwhile.
    fn put_back(&self, report: Report) {
        self.report.lock().unwrap_or_else(PoisonError::into_inner).get_or_insert(report);
    }
}

struct Running {
    job: ClaimedJob,
    signals: Signals,
}

type Table = Mutex<HashMap<Uuid, Running>>;

/// The handle job tasks use; cheap to clone. Its loop ends once every handle is gone.
#[derive(Clone)]
pub struct Tracker {
    running: Arc<Table>,
}

impl Tracker {
    /// Starts the loop: leases of `lease` renewed every `renew_every`, progress written every
    /// `progress_every`.
    pub fn start(
        db: DatabaseConnection,
        lease: Duration,
        renew_every: Duration,
        progress_every: Duration,
    ) -> Self {
        let running: Arc<Table> = Arc::default();
        let weak = Arc::downgrade(&running);
        tokio::spawn(heartbeat(db, weak, lease, renew_every, progress_every));
        Self { running }
    }

    /// Tracks `job` while it runs; its handler gets the returned signals.
    pub fn enter(&self, job: &ClaimedJob) -> Signals {
        let signals = Signals::default();
        let entry = Running { job: job.clone(), signals: signals.clone() };
        self.running.lock().unwrap_or_else(PoisonError::into_inner).insert(job.id, entry);
        signals
    }

    /// The attempt ended: no more renewals or reports for it.
    pub fn leave(&self, job: &ClaimedJob) {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        if running.get(&job.id).is_some_and(|r| r.job.attempts == job.attempts) {
            running.remove(&job.id);
        }
    }
}

/// Renews leases and looks for cancel requests every `renew_every`, writes progress every
/// `progress_every`; ends when the tracker is dropped.
async fn heartbeat(
    db: DatabaseConnection,
    running: std::sync::Weak<Table>,
    lease: Duration,
    renew_every: Duration,
    progress_every: Duration,
) {
    let mut progress_tick = tokio::time::interval(progress_every);
    progress_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut lease_tick = tokio::time::interval(renew_every);
    lease_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let renew = tokio::select! {
            _ = lease_tick.tick() => true,
            _ = progress_tick.tick() => false,
        };
        let Some(table) = running.upgrade() else { return };
        if renew {
            let held: Vec<(ClaimedJob, Signals)> = snapshot(&table, |_| true);
            drop(table);
            if held.is_empty() {
                continue;
            }
            match renew_leases(&db, &held, lease).await {
                Ok(beat) => {
                    for (job, signals) in &held {
                        match beat.renewed.iter().find(|r| r.id == job.id) {
                            Some(row) if row.cancel_requested => signals.stop(Stop::Cancelled),
                            Some(_) => {}
                            None if beat.busy.contains(&job.id) => {}
                            None => signals.stop(Stop::Lost),
                        }
                    }
                }
                // The database is away: the leases run on, and if they run out another worker
                // may take the jobs; their outcomes are then refused by the guards.
                Err(error) => tracing::warn!(%error, "job lease renewal failed"),
            }
        } else {
            let (reports, signals): (Vec<(ClaimedJob, Report)>, Vec<Signals>) = {
                let table = table.lock().unwrap_or_else(PoisonError::into_inner);
                table
                    .values()
                    .filter_map(|r| {
                        let report = r.signals.take_report()?;
                        Some(((r.job.clone(), report), r.signals.clone()))
                    })
                    .unzip()
            };
            drop(table);
            if reports.is_empty() {
                continue;
            }
            match write_progress(&db, &reports).await {
                // Rows another transaction held: their reports wait for the next write.
                Ok((_recorded, busy)) => {
                    for ((job, report), signals) in reports.into_iter().zip(signals) {
                        if busy.contains(&job.id) {
                            signals.put_back(report);
                        }
                    }
                }
                Err(error) => tracing::warn!(%error, "job progress write failed"),
            }
        }
    }
}

fn snapshot(table: &Table, keep: impl Fn(&Running) -> bool) -> Vec<(ClaimedJob, Signals)> {
    table
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .values()
        .filter(|r| keep(r))
        .map(|r| (r.job.clone(), r.signals.clone()))
        .collect()
}

/// An attempt whose lease was renewed.
#[derive(Debug, FromQueryResult)]
pub struct Renewed {
    pub id: Uuid,
    /// Someone asked it to stop.
    pub cancel_requested: bool,
}

/// What one lease renewal found.
#[derive(Debug, Default)]
pub struct Beat {
    /// The attempts still this worker's, renewed.
    pub renewed: Vec<Renewed>,
    /// Those whose row another transaction held (a batch writing their outcome, a copy of
    /// their request being looked at): left alone, tried again at the next beat.
    pub busy: Vec<Uuid>,
}

/// One statement for every attempt held whose row is free: renews what is still this
/// worker's (same dispatch, same attempt, still running) and says which of them were asked to
/// stop. An attempt in neither list of the answer is no longer this worker's. Public for the
/// test that runs it against a success batch over the same rows (`tests/it/jobs_locks.rs`).
pub async fn renew_leases(
    db: &DatabaseConnection,
    held: &[(ClaimedJob, Signals)],
    lease: Duration,
) -> Result<Beat, DbErr> {
    let txn = db.begin().await?;
    let free: HashSet<Uuid> =
        super::store::lock_free(&txn, held.iter().map(|(j, _)| j.id).collect())
            .await?
            .into_iter()
            .collect();
    let busy: Vec<Uuid> = held.iter().map(|(j, _)| j.id).filter(|id| !free.contains(id)).collect();
    let held: Vec<&ClaimedJob> =
        held.iter().map(|(j, _)| j).filter(|j| free.contains(&j.id)).collect();
    if held.is_empty() {
        return Ok(Beat { renewed: Vec::new(), busy });
    }
    let renewed = Renewed::find_by_statement(sql(
        "UPDATE jobs AS j SET locked_until = now() + make_interval(secs => $4) \
         FROM UNNEST($1::uuid[], $2::uuid[], $3::int[]) AS t(id, dispatch, attempt) \
         WHERE j.id = t.id AND j.dispatch_id = t.dispatch AND j.attempts = t.attempt \
         AND j.status = 'running' \
         RETURNING j.id, j.cancel_requested_at IS NOT NULL AS cancel_requested",
        [
            held.iter().map(|j| j.id).collect::<Vec<_>>().into(),
            held.iter().map(|j| j.dispatch_id).collect::<Vec<_>>().into(),
            held.iter().map(|j| j.attempts).collect::<Vec<_>>().into(),
            lease.as_secs_f64().into(),
        ],
    ))
    .all(&txn)
    .await?;
    txn.commit().await?;
    Ok(Beat { renewed, busy })
}

/// Writes the latest report of each job whose row is free and its `job_progress`, in one
/// transaction; also returns the jobs whose row another transaction held (not written).
async fn write_progress(
    db: &DatabaseConnection,
    reports: &[(ClaimedJob, Report)],
) -> Result<(Vec<StoredEvent>, Vec<Uuid>), DbErr> {
    #[derive(FromQueryResult)]
    struct Updated {
        id: Uuid,
    }
    let txn = db.begin().await?;
    let free: HashSet<Uuid> =
        super::store::lock_free(&txn, reports.iter().map(|(j, _)| j.id).collect())
            .await?
            .into_iter()
            .collect();
    let busy: Vec<Uuid> =
        reports.iter().map(|(j, _)| j.id).filter(|id| !free.contains(id)).collect();
    let reports: Vec<&(ClaimedJob, Report)> =
        reports.iter().filter(|(j, _)| free.contains(&j.id)).collect();
    if reports.is_empty() {
        return Ok((Vec::new(), busy));
    }
    let updated = Updated::find_by_statement(sql(
        "UPDATE jobs AS j SET progress_percent = t.percent, progress_message = t.message, \
         progress_at = now() \
         FROM UNNEST($1::uuid[], $2::uuid[], $3::int[], $4::smallint[], $5::text[]) \
           AS t(id, dispatch, attempt, percent, message) \
         WHERE j.id = t.id AND j.dispatch_id = t.dispatch AND j.attempts = t.attempt \
         AND j.status = 'running' RETURNING j.id",
        [
            reports.iter().map(|(j, _)| j.id).collect::<Vec<_>>().into(),
            reports.iter().map(|(j, _)| j.dispatch_id).collect::<Vec<_>>().into(),
            reports.iter().map(|(j, _)| j.attempts).collect::<Vec<_>>().into(),
            reports.iter().map(|(_, r)| i16::from(r.percent)).collect::<Vec<_>>().into(),
            reports.iter().map(|(_, r)| r.message.clone()).collect::<Vec<_>>().into(),
        ],
    ))
    .all(&txn)
    .await?;
    let now = Utc::now();
    let events: Vec<StoredEvent> = reports
        .iter()
        .filter(|(job, _)| updated.iter().any(|u| u.id == job.id))
        .map(|(job, report)| {
            job.event(&JobProgress {
                job_id: job.id,
                attempt: job.attempts,
                percent: report.percent,
                message: report.message.clone(),
                timestamp: now,
            })
        })
        .collect();
    event_log::record_new(&txn, &events).await?;
    txn.commit().await?;
    Ok((events, busy))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_report_wins_and_is_bounded() {
        let signals = Signals::default();
        signals.report(10, "first");
        signals.report(250, &"x".repeat(500));
        let report = signals.take_report().expect("a report");
        assert_eq!(report.percent, 100);
        assert_eq!(report.message.chars().count(), MESSAGE_MAX);
        assert_eq!(signals.take_report(), None, "taken once");
    }

    #[test]
    fn a_cancel_request_is_not_overwritten_by_a_lost_lease() {
        let signals = Signals::default();
        assert_eq!(signals.stopped(), None);
        signals.stop(Stop::Cancelled);
        signals.stop(Stop::Lost);
        assert_eq!(signals.stopped(), Some(Stop::Cancelled));
        assert!(signals.cancel.is_cancelled());
    }
}
