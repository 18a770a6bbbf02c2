//! The event log: every event in one total order (`seq`), kept for a configurable time, so a
//! WebSocket client can resume after a disconnect without a gap or a duplicate.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &str = r#"
CREATE TABLE event_log (
    seq         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id          uuid NOT NULL UNIQUE,
    routing_key text NOT NULL,
    body        text NOT NULL,
    traceparent text,
    logged_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX event_log_logged ON event_log (logged_at);

-- A viewer may have several connections (tabs, instances): one row per session, where the
-- session is 'http' for readers of GET /episodes/{id} and the WebSocket's id otherwise.
ALTER TABLE user_presence ADD COLUMN session text NOT NULL DEFAULT 'http';
ALTER TABLE user_presence DROP CONSTRAINT user_presence_pkey;
ALTER TABLE user_presence ADD PRIMARY KEY (episode_id, user_id, session);
CREATE INDEX user_presence_last_seen ON user_presence (last_seen);
"#;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.get_connection().execute_unprepared(UP).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.get_connection().execute_unprepared("DROP TABLE IF EXISTS event_log").await?;
        Ok(())
    }
}
