//! The initial schema: every table of the design.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &str = r#"
CREATE TABLE episodes (
    id          uuid PRIMARY KEY,
    title       text NOT NULL,
    description text NOT NULL DEFAULT '',
    status      text NOT NULL CHECK (status IN ('draft', 'in_production', 'published', 'archived')),
    categories  text[] NOT NULL DEFAULT '{}',
    created_by  uuid NOT NULL,
    updated_by  uuid NOT NULL,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    deleted_at  timestamptz,
    version     bigint NOT NULL DEFAULT 1
);
-- Ids are UUIDv7, so "newest first" is "id descending".
CREATE INDEX episodes_live_newest ON episodes (id DESC) WHERE deleted_at IS NULL;
CREATE INDEX episodes_categories ON episodes USING gin (categories);

-- Every command the API accepted, with its outcome. Also the episode worker's inbox: a command
-- whose row is no longer pending was applied or rejected already. Holds the Idempotency-Key
-- record too: a keyed command's id is derived from (user, key).
CREATE TABLE commands (
    id              uuid PRIMARY KEY,
    user_id         uuid NOT NULL,
    kind            text NOT NULL,
    resource_type   text NOT NULL,
    resource_id     uuid NOT NULL,
    status          text NOT NULL CHECK (status IN ('pending', 'applied', 'rejected')),
    error           text,
    error_code      text,
    idempotency_key text,
    request_hash    text,
    message         jsonb,
    response        jsonb,
    accepted_at     timestamptz NOT NULL DEFAULT now(),
    republished_at  timestamptz,
    completed_at    timestamptz
);
CREATE INDEX commands_pending ON commands (accepted_at) WHERE status = 'pending';
CREATE INDEX commands_accepted ON commands (accepted_at);

CREATE TABLE jobs (
    id              uuid PRIMARY KEY,
    type            text NOT NULL,
    payload         jsonb NOT NULL,
    status          text NOT NULL CHECK (status IN ('queued', 'running', 'retrying', 'succeeded', 'failed', 'cancelled')),
    attempts        integer NOT NULL DEFAULT 0,
    max_attempts    integer NOT NULL,
    last_error      text,
    result          jsonb,
    episode_id      uuid,
    created_by      uuid NOT NULL,
    next_attempt_at timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX jobs_status ON jobs (status, id DESC);

-- One row per event, keyed by the event id: a redelivered event finds its row and adds none.
CREATE TABLE activity_log (
    id             uuid PRIMARY KEY,
    event          text NOT NULL,
    resource_type  text NOT NULL,
    resource_id    uuid,
    actor_id       uuid,
    actor_name     text,
    correlation_id uuid,
    data           jsonb NOT NULL,
    occurred_at    timestamptz NOT NULL,
    recorded_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX activity_resource ON activity_log (resource_type, resource_id, id DESC);
CREATE INDEX activity_actor ON activity_log (actor_id, id DESC);

CREATE TABLE notifications (
    id            uuid PRIMARY KEY,
    user_id       uuid NOT NULL,
    event_id      uuid NOT NULL,
    kind          text NOT NULL,
    title         text NOT NULL,
    message       text NOT NULL,
    resource_type text,
    resource_id   uuid,
    read_at       timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (event_id, user_id)
);
CREATE INDEX notifications_user ON notifications (user_id, id DESC);
CREATE INDEX notifications_unread ON notifications (user_id) WHERE read_at IS NULL;

CREATE TABLE user_presence (
    episode_id uuid NOT NULL,
    user_id    uuid NOT NULL,
    user_name  text NOT NULL,
    last_seen  timestamptz NOT NULL,
    PRIMARY KEY (episode_id, user_id)
);

-- Deduplication for consumers whose effect has no natural unique key (the job worker's).
CREATE TABLE inbox (
    consumer    text NOT NULL,
    message_id  uuid NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, message_id)
);

CREATE TABLE outbox (
    id          uuid PRIMARY KEY,
    routing_key text NOT NULL,
    body        text NOT NULL,
    traceparent text,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX outbox_created ON outbox (created_at);

-- Live episode workers; partitions are shared among them by rendezvous hashing.
CREATE TABLE worker_heartbeats (
    worker_id  uuid PRIMARY KEY,
    role       text NOT NULL,
    label      text NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    last_seen  timestamptz NOT NULL DEFAULT now()
);
"#;

const DOWN: &str = r#"
DROP TABLE IF EXISTS worker_heartbeats, outbox, inbox, user_presence, notifications,
    activity_log, jobs, commands, episodes;
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
