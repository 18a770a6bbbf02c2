//! The event log's `logged_at` loses its index: nothing reads by it but the retention sweep,
//! which now takes the oldest rows by `seq` (an index range it reads anyway) and deletes those
//! past the window. Every event paid for the index twice, at its insert and again when the
//! shipper numbers it (that update is not HOT: `seq` is indexed).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("DROP INDEX IF EXISTS event_log_logged")
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE INDEX IF NOT EXISTS event_log_logged ON event_log (logged_at)",
            )
            .await?;
        Ok(())
    }
}
