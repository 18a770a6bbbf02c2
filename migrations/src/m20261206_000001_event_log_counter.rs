//! The event log written once (issue 14): a producer gives its events their place (`seq`) in
//! the insert itself, from a one-row counter whose row lock it holds until its commit, so the
//! log shipper only reads and publishes; it no longer updates every row a second time.
//!
//! Rows an older shipper had not numbered yet are numbered here, in `ord` order, after the
//! largest `seq`; the counter starts after them. `ord`, its sequence and the partial index of
//! unnumbered rows stay, for rows an older producer may still insert during a rolling upgrade:
//! the shipper numbers such strays from the same counter.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &str = r#"
CREATE TABLE event_log_counter (
    id  smallint PRIMARY KEY CHECK (id = 1),
    top bigint NOT NULL
);
-- One row updated by every producer transaction (in place: `top` is not indexed): room on the
-- page for those updates, vacuum by count alone, unthrottled, like the shipper's lease row.
ALTER TABLE event_log_counter SET (fillfactor = 50, autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 100, autovacuum_vacuum_cost_delay = 0);
-- Numbering and counting under this lock: an older shipper numbering at the same moment waits.
LOCK TABLE event_log IN SHARE ROW EXCLUSIVE MODE;
WITH top AS (SELECT COALESCE(max(seq), 0) AS top FROM event_log),
numbered AS (
    SELECT e.id, top.top + row_number() OVER (ORDER BY e.ord, e.id) AS seq
    FROM event_log e, top WHERE e.seq IS NULL
)
UPDATE event_log e SET seq = numbered.seq FROM numbered WHERE e.id = numbered.id;
INSERT INTO event_log_counter (id, top) SELECT 1, COALESCE(max(seq), 0) FROM event_log;
"#;

const DOWN: &str = r#"
DROP TABLE IF EXISTS event_log_counter;
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
