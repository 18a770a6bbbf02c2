//! The notification worker reads the event log (issue 14): it no longer has a queue of its own,
//! so an event crosses the broker once, for the relays alone. The worker's place in the log
//! (`position`: every event up to this `seq` has been turned into its notifications) and its
//! lease (one active notification worker at a time, fenced like the log shipper) live here.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &str = r#"
CREATE TABLE notification_cursor (
    id          smallint PRIMARY KEY CHECK (id = 1),
    holder      uuid,
    lease_until timestamptz NOT NULL DEFAULT '-infinity',
    position    bigint NOT NULL
);
-- Where the worker starts: an upgraded system's queue may still hold events the old worker had
-- not read when it stopped, so start an hour back (notifications already made are skipped by
-- their unique (event, user) key); a new or idle system starts after its last event.
INSERT INTO notification_cursor (id, position)
SELECT 1, COALESCE(
    (SELECT min(seq) - 1 FROM event_log WHERE seq IS NOT NULL AND logged_at > now() - interval '1 hour'),
    (SELECT max(seq) FROM event_log),
    0);
-- The lease row is rewritten by every batch: room for HOT updates, vacuumed by count.
ALTER TABLE notification_cursor SET (fillfactor = 50, autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 100, autovacuum_vacuum_cost_delay = 0);
"#;

const DOWN: &str = r#"
DROP TABLE IF EXISTS notification_cursor;
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
