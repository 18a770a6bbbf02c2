//! The job sweeper's search for stranded requests (`workers/src/jobs/store.rs`, `stranded`)
//! gets an index: the unsettled jobs (queued, scheduled, retrying, running) by `updated_at`.
//! Without it each worker's sweep, once a second, read every job row, settled ones included:
//! 45 ms a sweep with 60,000 rows in the job benchmark, a tenth of PostgreSQL's CPU there, and
//! without bound on a deployment that keeps a month of finished jobs. With it a sweep reads
//! only the stale unsettled rows (none, normally). The price: an index entry for each
//! unsettled row version (the job's insert, its claim); a settled row has none.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE INDEX IF NOT EXISTS jobs_unsettled ON jobs (updated_at) \
                 WHERE status IN ('queued', 'scheduled', 'retrying', 'running')",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.get_connection().execute_unprepared("DROP INDEX IF EXISTS jobs_unsettled").await?;
        Ok(())
    }
}
