//! Files: media and documents attached to an episode. The row holds what the api serves
//! (name, type, size, SHA-256); the bytes are in object storage under
//! `episodes/<episodeId>/files/<id>`. They go with their episode's permanent delete (the
//! command worker queues the purge of their objects in the same transaction).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &str = r#"
CREATE TABLE files (
    id           uuid PRIMARY KEY,
    episode_id   uuid NOT NULL REFERENCES episodes (id) ON DELETE CASCADE,
    name         text NOT NULL,
    content_type text NOT NULL,
    size         bigint NOT NULL CHECK (size >= 0),
    sha256       text NOT NULL,
    created_by   uuid NOT NULL,
    created_at   timestamptz NOT NULL,
    deleted_at   timestamptz
);
-- Ids are UUIDv7: an episode's live files, newest first, is this index in order.
CREATE INDEX files_episode_live ON files (episode_id, id DESC) WHERE deleted_at IS NULL;
"#;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.get_connection().execute_unprepared(UP).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.get_connection().execute_unprepared("DROP TABLE IF EXISTS files").await?;
        Ok(())
    }
}
