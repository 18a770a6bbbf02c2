//! Compositions: cuts of an episode, tracks of clips kept as JSON (read and written whole, as
//! a PATCH replaces the whole timeline). They go with their episode's permanent delete.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &str = r#"
CREATE TABLE compositions (
    id          uuid PRIMARY KEY,
    episode_id  uuid NOT NULL REFERENCES episodes (id) ON DELETE CASCADE,
    name        text NOT NULL,
    tracks      jsonb NOT NULL DEFAULT '[]',
    duration_us bigint NOT NULL DEFAULT 0 CHECK (duration_us >= 0),
    version     bigint NOT NULL DEFAULT 1,
    created_by  uuid NOT NULL,
    updated_by  uuid NOT NULL,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    deleted_at  timestamptz
);
-- Ids are UUIDv7: an episode's live compositions, newest first, is this index in order.
CREATE INDEX compositions_episode_live ON compositions (episode_id, id DESC)
    WHERE deleted_at IS NULL;
"#;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.get_connection().execute_unprepared(UP).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.get_connection().execute_unprepared("DROP TABLE IF EXISTS compositions").await?;
        Ok(())
    }
}
