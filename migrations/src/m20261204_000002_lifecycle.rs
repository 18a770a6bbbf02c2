//! Retention and vacuum for the tables that are not history (issue 20).
//!
//! The indexes let the workers' retention sweep (`workers/src/retention.rs`) find what it
//! deletes oldest first, a batch at a time, without scanning the table. The storage settings
//! make autovacuum follow the churn of the queue-like tables: every row is inserted, updated
//! once or twice and deleted within a day or a month, so the default trigger (20 % of the
//! table dead) lets dead rows pile up by the million on a large table before anything is
//! reclaimed, and a small table that should be empty (the outbox) bloats in between. Here a
//! vacuum starts after a fixed number of dead rows (or a small fraction), and runs without
//! the cost-based pauses on the small tables. README ("Deployment checklist") and
//! `deploy/CHECKLIST.md` give the reasons an operator needs.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &str = r#"
CREATE INDEX jobs_finished ON jobs (completed_at)
    WHERE status IN ('succeeded', 'failed', 'cancelled');
CREATE INDEX notifications_read ON notifications (read_at) WHERE read_at IS NOT NULL;
-- `commands_accepted (accepted_at)` already serves the command sweep.

-- Insert, one update, delete a day later: vacuum after 2 % dead or 1,000 rows, analyze
-- often (the sweeps' plans depend on how old the oldest rows are), and mark inserted pages
-- all-visible early so the index-only probes stay index-only.
ALTER TABLE commands SET (autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_insert_scale_factor = 0.05, autovacuum_analyze_scale_factor = 0.02);
ALTER TABLE event_log SET (autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_threshold = 5000,
    autovacuum_vacuum_insert_scale_factor = 0.05, autovacuum_analyze_scale_factor = 0.02);
-- Rows updated many times while they run (lease renewals, progress): room on the page
-- for HOT updates, and vacuum by count.
ALTER TABLE jobs SET (fillfactor = 80, autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_vacuum_threshold = 500, autovacuum_analyze_scale_factor = 0.05);
ALTER TABLE notifications SET (autovacuum_vacuum_scale_factor = 0.05,
    autovacuum_vacuum_threshold = 1000, autovacuum_vacuum_insert_scale_factor = 0.1);
-- Small tables that should stay small, rewritten all the time (heartbeats, presence
-- refreshes, the lease row, rows an older version left): vacuum by count alone, unthrottled.
ALTER TABLE outbox SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_cost_delay = 0);
ALTER TABLE user_presence SET (fillfactor = 70, autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 500, autovacuum_vacuum_cost_delay = 0);
ALTER TABLE worker_heartbeats SET (fillfactor = 50, autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 100, autovacuum_vacuum_cost_delay = 0);
ALTER TABLE event_log_shipper SET (fillfactor = 50, autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 100, autovacuum_vacuum_cost_delay = 0);
ALTER TABLE inbox SET (autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_threshold = 1000);
"#;

const DOWN: &str = r#"
DROP INDEX IF EXISTS jobs_finished;
DROP INDEX IF EXISTS notifications_read;
ALTER TABLE commands RESET (autovacuum_vacuum_scale_factor, autovacuum_vacuum_threshold,
    autovacuum_vacuum_insert_scale_factor, autovacuum_analyze_scale_factor);
ALTER TABLE event_log RESET (autovacuum_vacuum_scale_factor, autovacuum_vacuum_threshold,
    autovacuum_vacuum_insert_scale_factor, autovacuum_analyze_scale_factor);
ALTER TABLE jobs RESET (fillfactor, autovacuum_vacuum_scale_factor, autovacuum_vacuum_threshold,
    autovacuum_analyze_scale_factor);
ALTER TABLE notifications RESET (autovacuum_vacuum_scale_factor, autovacuum_vacuum_threshold,
    autovacuum_vacuum_insert_scale_factor);
ALTER TABLE outbox RESET (autovacuum_vacuum_scale_factor, autovacuum_vacuum_threshold,
    autovacuum_vacuum_cost_delay);
ALTER TABLE user_presence RESET (fillfactor, autovacuum_vacuum_scale_factor,
    autovacuum_vacuum_threshold, autovacuum_vacuum_cost_delay);
ALTER TABLE worker_heartbeats RESET (fillfactor, autovacuum_vacuum_scale_factor,
    autovacuum_vacuum_threshold, autovacuum_vacuum_cost_delay);
ALTER TABLE event_log_shipper RESET (fillfactor, autovacuum_vacuum_scale_factor,
    autovacuum_vacuum_threshold, autovacuum_vacuum_cost_delay);
ALTER TABLE inbox RESET (autovacuum_vacuum_scale_factor, autovacuum_vacuum_threshold);
"#;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.get_connection().execute_unprepared(UP).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.get_connection().execute_unprepared(DOWN).await?;
        Ok(())
    }
}
