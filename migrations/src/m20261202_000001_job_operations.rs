//! Jobs for production teams: `Idempotency-Key` on `POST /jobs`, progress, cancelling a running
//! job, and scheduling (`runAt`, the `scheduled` status).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &str = r#"
-- UUIDv5 of (creator, Idempotency-Key): a retried POST /jobs finds the first job. The job's own
-- id stays time-ordered (GET /jobs pages by id).
ALTER TABLE jobs ADD COLUMN idempotency_id uuid;
-- The first request's fingerprint: the same key with another body is refused (422).
ALTER TABLE jobs ADD COLUMN request_hash text;
CREATE UNIQUE INDEX jobs_idempotency ON jobs (idempotency_id) WHERE idempotency_id IS NOT NULL;
-- The latest progress a running job reported.
ALTER TABLE jobs ADD COLUMN progress_percent smallint CHECK (progress_percent BETWEEN 0 AND 100);
ALTER TABLE jobs ADD COLUMN progress_message text;
ALTER TABLE jobs ADD COLUMN progress_at timestamptz;
-- Who asked a running job to stop, and when: its worker ends it `cancelled`.
ALTER TABLE jobs ADD COLUMN cancel_requested_at timestamptz;
ALTER TABLE jobs ADD COLUMN cancel_requested_by uuid;
ALTER TABLE jobs ADD COLUMN cancel_requested_by_name text;
-- Not to run before this instant (`runAt`); a job waiting for it is `scheduled`.
ALTER TABLE jobs ADD COLUMN run_at timestamptz;
ALTER TABLE jobs DROP CONSTRAINT IF EXISTS jobs_status_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_status_check CHECK (status IN
    ('queued', 'scheduled', 'running', 'retrying', 'succeeded', 'failed', 'cancelled'));
"#;

const DOWN: &str = r#"
UPDATE jobs SET status = 'queued' WHERE status = 'scheduled';
ALTER TABLE jobs DROP CONSTRAINT IF EXISTS jobs_status_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_status_check CHECK (status IN
    ('queued', 'running', 'retrying', 'succeeded', 'failed', 'cancelled'));
DROP INDEX IF EXISTS jobs_idempotency;
ALTER TABLE jobs DROP COLUMN IF EXISTS idempotency_id, DROP COLUMN IF EXISTS request_hash,
    DROP COLUMN IF EXISTS progress_percent, DROP COLUMN IF EXISTS progress_message,
    DROP COLUMN IF EXISTS progress_at, DROP COLUMN IF EXISTS cancel_requested_at,
    DROP COLUMN IF EXISTS cancel_requested_by, DROP COLUMN IF EXISTS cancel_requested_by_name,
    DROP COLUMN IF EXISTS run_at;
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
