//! The event log numbered by its producers' inserts, without a lock (issues 14, 15): `seq`
//! takes its value from the `event_log_ord` sequence when the row is inserted, and the shipper
//! no longer writes the rows at all. Numbers are taken in the order producers reach their
//! insert, not in commit order, and a rolled-back producer leaves a hole: the shipper publishes
//! a number only once nothing below it can still commit (`workers/src/shipper.rs`), and every
//! published event carries the number published before it (`x-prev-seq`), so a relay tells a
//! hole from a lost message. The shipper's second write of every row (a non-HOT update of the
//! wide row and two index entries) and the `unshipped` index go.
//!
//! A deployment upgrading in place: rows an older shipper had not numbered yet are numbered
//! here, after every number given so far, in `ord` order; the sequence continues after them.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &str = r#"
LOCK TABLE event_log IN EXCLUSIVE MODE;
SELECT setval('event_log_ord',
    GREATEST((SELECT COALESCE(max(seq), 0) FROM event_log),
             (SELECT last_value FROM event_log_ord), 1));
UPDATE event_log SET seq = n.seq FROM (
    SELECT id, nextval('event_log_ord') AS seq FROM (
        SELECT id FROM event_log WHERE seq IS NULL ORDER BY ord) o
) n WHERE event_log.id = n.id;
DROP INDEX IF EXISTS event_log_unshipped;
ALTER TABLE event_log ALTER COLUMN seq SET DEFAULT nextval('event_log_ord');
ALTER TABLE event_log ALTER COLUMN seq SET NOT NULL;
ALTER TABLE event_log DROP COLUMN ord;
ALTER SEQUENCE event_log_ord OWNED BY event_log.seq;
"#;

const DOWN: &str = r#"
ALTER SEQUENCE event_log_ord OWNED BY NONE;
ALTER TABLE event_log ADD COLUMN ord bigint;
UPDATE event_log SET ord = seq;
ALTER TABLE event_log ALTER COLUMN ord SET DEFAULT nextval('event_log_ord');
ALTER TABLE event_log ALTER COLUMN seq DROP DEFAULT;
ALTER TABLE event_log ALTER COLUMN seq DROP NOT NULL;
UPDATE event_log SET seq = NULL
    WHERE seq > (SELECT published_seq FROM event_log_shipper WHERE id = 1);
CREATE INDEX event_log_unshipped ON event_log (ord) WHERE seq IS NULL;
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
