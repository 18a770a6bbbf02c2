//! History that can grow for years (issue 20): `activity_log` becomes a table partitioned by
//! month, so retention and archiving drop or detach a month instead of deleting rows.
//!
//! The partition key is the row's id, the event id: a UUIDv7 for every event Showrunner
//! makes, whose first 48 bits are its millisecond, so a month is a range of ids. Keying by id
//! rather than by a time column keeps what the table already relies on: the primary key is
//! still `id` alone (a unique index must hold the partition key), so `ON CONFLICT (id) DO
//! NOTHING` still makes a redelivered event a no-op, and the API's `ORDER BY id DESC` with an
//! `id < cursor` lands on the partitions in key order and prunes those above the cursor.
//! Events from outside may carry ids of another version; they land in whatever month their
//! first bits name, or in `activity_log_default` when no partition covers it.
//!
//! Partitions are made ahead by the workers (`activity_log_ensure`, called by the retention
//! sweep); this migration makes the months the existing rows need plus two ahead, and copies
//! every row.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &str = r#"
-- The smallest UUIDv7-shaped id of an instant: the bound of a month's range.
CREATE FUNCTION showrunner_uuid_at(t timestamptz) RETURNS uuid
LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT (lpad(to_hex(floor(extract(epoch FROM t) * 1000)::bigint), 12, '0')
            || '00000000000000000000')::uuid
$$;

-- The partitions of the months from `first` to `last` (first days, UTC) that do not exist
-- yet. A partition is made as a plain table, given the rows of its month that went to the
-- default partition meanwhile, and attached: ATTACH locks the parent only SHARE UPDATE
-- EXCLUSIVE, so producers keep inserting (CREATE ... PARTITION OF would lock them out). A
-- short lock_timeout makes a busy moment fail this call, retried at the next sweep, rather
-- than queue everyone behind it. Returns how many partitions it made.
CREATE FUNCTION activity_log_ensure(first_month date, last_month date) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    m date := date_trunc('month', first_month)::date;
    part text;
    lo uuid;
    hi uuid;
    made integer := 0;
BEGIN
    SET LOCAL lock_timeout = '2s';
    PERFORM pg_advisory_xact_lock(hashtext('activity_log_partitions'));
    WHILE m <= last_month LOOP
        part := 'activity_log_' || to_char(m, 'YYYY_MM');
        IF to_regclass(part) IS NULL THEN
            lo := showrunner_uuid_at(m::timestamp AT TIME ZONE 'UTC');
            hi := showrunner_uuid_at((m + interval '1 month')::timestamp AT TIME ZONE 'UTC');
            EXECUTE format('CREATE TABLE %I (LIKE activity_log INCLUDING DEFAULTS)', part);
            EXECUTE format('WITH moved AS (DELETE FROM activity_log_default '
                           'WHERE id >= $1 AND id < $2 RETURNING *) '
                           'INSERT INTO %I SELECT * FROM moved', part) USING lo, hi;
            EXECUTE format('ALTER TABLE activity_log ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                           part, lo, hi);
            made := made + 1;
        END IF;
        m := (m + interval '1 month')::date;
    END LOOP;
    RETURN made;
END $$;

-- Drops the monthly partitions that end on or before `cutoff` (a month's first day, UTC).
-- The default partition is never dropped. Returns how many it dropped.
CREATE FUNCTION activity_log_drop_before(cutoff date) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    part record;
    dropped integer := 0;
BEGIN
    SET LOCAL lock_timeout = '2s';
    PERFORM pg_advisory_xact_lock(hashtext('activity_log_partitions'));
    FOR part IN
        SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'activity_log'::regclass
          AND c.relname ~ '^activity_log_[0-9]{4}_[0-9]{2}$'
          AND to_date(substr(c.relname, 14), 'YYYY_MM') + interval '1 month' <= cutoff
    LOOP
        EXECUTE format('DROP TABLE %I', part.relname);
        dropped := dropped + 1;
    END LOOP;
    RETURN dropped;
END $$;

ALTER TABLE activity_log RENAME TO activity_log_unpartitioned;
ALTER INDEX activity_log_pkey RENAME TO activity_log_unpartitioned_pkey;
ALTER INDEX activity_resource RENAME TO activity_unpartitioned_resource;
ALTER INDEX activity_actor RENAME TO activity_unpartitioned_actor;

CREATE TABLE activity_log (
    id             uuid NOT NULL,
    event          text NOT NULL,
    resource_type  text NOT NULL,
    resource_id    uuid,
    actor_id       uuid,
    actor_name     text,
    correlation_id uuid,
    data           jsonb NOT NULL,
    occurred_at    timestamptz NOT NULL,
    recorded_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (id)
) PARTITION BY RANGE (id);
CREATE INDEX activity_resource ON activity_log (resource_type, resource_id, id DESC);
CREATE INDEX activity_actor ON activity_log (actor_id, id DESC);
CREATE TABLE activity_log_default PARTITION OF activity_log DEFAULT;

-- The months the existing UUIDv7 ids name (within reason: an id from outside may name any
-- year), then two ahead.
SELECT activity_log_ensure(
    COALESCE((SELECT date_trunc('month', to_timestamp(
                  ('x' || replace(left(id::text, 13), '-', ''))::bit(48)::bigint / 1000.0)
                  AT TIME ZONE 'UTC')::date
              FROM activity_log_unpartitioned
              WHERE substr(id::text, 15, 1) = '7'
                AND id >= showrunner_uuid_at(now() - interval '10 years')
                AND id < showrunner_uuid_at(now())
              ORDER BY id LIMIT 1),
             date_trunc('month', now() AT TIME ZONE 'UTC')::date),
    (date_trunc('month', now() AT TIME ZONE 'UTC') + interval '2 months')::date);

INSERT INTO activity_log (id, event, resource_type, resource_id, actor_id, actor_name,
                          correlation_id, data, occurred_at, recorded_at)
SELECT id, event, resource_type, resource_id, actor_id, actor_name, correlation_id, data,
       occurred_at, recorded_at
FROM activity_log_unpartitioned;
DROP TABLE activity_log_unpartitioned;
"#;

const DOWN: &str = r#"
CREATE TABLE activity_log_plain (LIKE activity_log INCLUDING DEFAULTS);
INSERT INTO activity_log_plain SELECT * FROM activity_log;
DROP TABLE activity_log;
ALTER TABLE activity_log_plain RENAME TO activity_log;
ALTER TABLE activity_log ADD PRIMARY KEY (id);
CREATE INDEX activity_resource ON activity_log (resource_type, resource_id, id DESC);
CREATE INDEX activity_actor ON activity_log (actor_id, id DESC);
DROP FUNCTION IF EXISTS activity_log_drop_before(date);
DROP FUNCTION IF EXISTS activity_log_ensure(date, date);
DROP FUNCTION IF EXISTS showrunner_uuid_at(timestamptz);
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
