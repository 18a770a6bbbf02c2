//! A failed job's row says whether its copy still has to reach the parking lot. The failure is
//! committed first and the copy published after it; a worker that dies in between (or a
//! PostgreSQL that stops before its commit's answer came back) leaves the request to be
//! delivered again, and the copy that finds `park_pending` parks it then. The old order
//! (copy confirmed, then the commit) parked a job twice when the commit did not happen: the
//! job ran again after its lease and failed again (the fault suite counted such copies).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(
                "ALTER TABLE jobs ADD COLUMN IF NOT EXISTS park_pending boolean NOT NULL DEFAULT false",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("ALTER TABLE jobs DROP COLUMN IF EXISTS park_pending")
            .await?;
        Ok(())
    }
}
