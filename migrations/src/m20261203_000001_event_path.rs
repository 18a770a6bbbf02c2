//! One hop per event (issue 14): a producer writes its events into `event_log` in the
//! transaction that makes them true, and the log shipper gives them their place (`seq`) when
//! it ships them. Every existing row keeps its `seq`; rows written from now on wait with
//! `seq` NULL until the shipper numbers them, in the order the producers took `ord` (after
//! every lock their transaction waited for).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &str = r#"
-- `seq` is no longer the insert's: the shipper sets it, one number after the other, when it
-- ships a row; NULL means not shipped yet. Existing rows keep theirs.
ALTER TABLE event_log DROP CONSTRAINT event_log_pkey;
ALTER TABLE event_log ALTER COLUMN seq DROP IDENTITY IF EXISTS;
ALTER TABLE event_log ALTER COLUMN seq DROP NOT NULL;
CREATE UNIQUE INDEX event_log_seq ON event_log (seq);

-- The producer's place: taken by the insert, which is the last statement of the producer's
-- transaction that can wait for a lock, so of two transactions that touched the same row the
-- later one always has the larger `ord`.
CREATE SEQUENCE event_log_ord AS bigint;
ALTER TABLE event_log ADD COLUMN ord bigint;
ALTER TABLE event_log ALTER COLUMN ord SET DEFAULT nextval('event_log_ord');
CREATE INDEX event_log_unshipped ON event_log (ord) WHERE seq IS NULL;

-- The shipper's lease (one active shipper at a time, fenced: only the holder of an unexpired
-- lease numbers rows) and how far it has published with confirms.
CREATE TABLE event_log_shipper (
    id            smallint PRIMARY KEY CHECK (id = 1),
    holder        uuid,
    lease_until   timestamptz NOT NULL DEFAULT '-infinity',
    published_seq bigint NOT NULL
);
-- The old sequencer published every row it wrote before acking it: all shipped.
INSERT INTO event_log_shipper (id, published_seq) SELECT 1, COALESCE(max(seq), 0) FROM event_log;
"#;

const DOWN: &str = r#"
DROP TABLE IF EXISTS event_log_shipper;
DELETE FROM event_log WHERE seq IS NULL;
DROP INDEX IF EXISTS event_log_unshipped;
ALTER TABLE event_log DROP COLUMN IF EXISTS ord;
DROP SEQUENCE IF EXISTS event_log_ord;
DROP INDEX IF EXISTS event_log_seq;
ALTER TABLE event_log ALTER COLUMN seq SET NOT NULL;
ALTER TABLE event_log ADD PRIMARY KEY (seq);
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
