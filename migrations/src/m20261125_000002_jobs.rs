//! Jobs on the broker: which published copy of a job may run (`dispatch_id`), how long a
//! claimed attempt is held (`locked_until`), and the creator's name for the events' actor.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &str = r#"
-- The id of the one message copy allowed to run the job's next attempt. Every publish (request,
-- retry, replay) sets a new one, so a stale or duplicated copy finds another id and is skipped.
ALTER TABLE jobs ADD COLUMN dispatch_id uuid;
-- A running attempt's lease: a redelivery (the worker died) may claim the job only after it.
ALTER TABLE jobs ADD COLUMN locked_until timestamptz;
ALTER TABLE jobs ADD COLUMN created_by_name text NOT NULL DEFAULT '';
ALTER TABLE jobs ADD COLUMN completed_at timestamptz;
CREATE INDEX jobs_creator ON jobs (created_by, id DESC);
"#;

const DOWN: &str = r#"
DROP INDEX IF EXISTS jobs_creator;
ALTER TABLE jobs DROP COLUMN IF EXISTS dispatch_id, DROP COLUMN IF EXISTS locked_until,
    DROP COLUMN IF EXISTS created_by_name, DROP COLUMN IF EXISTS completed_at;
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
