//! "These commands are settled": the PostgreSQL notification the command worker's batch
//! transaction sends, with the ids of the commands it applied or rejected (the applied ones
//! marked, so a waiting request reads the resource without first reading the command's row),
//! and that each api listens to, to answer `Prefer: wait` (see `showrunner_api::settled`). PostgreSQL delivers a
//! `NOTIFY` only when its transaction commits, to listeners of the same database: the outcome
//! is readable by then, and the channel is the deployment's (each has its own database).

use sea_orm::{ConnectionTrait, DbErr, SqlxError};
use uuid::Uuid;

use crate::db::sql;

/// The channel. Unquoted in SQL it would be folded to lower case: it is lower case already.
pub const CHANNEL: &str = "showrunner_commands_settled";

/// The most bytes of one payload: PostgreSQL refuses 8,000 and more.
const MAX_PAYLOAD: usize = 7_900;

/// What a notification says of one command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settled {
    /// Applied: the resource as the command left it is readable, no need to read the
    /// command's row for its outcome.
    Applied,
    /// Applied or rejected: the command's row tells which.
    Settled,
}

/// The payloads that name `settled` (each command's id and whether it was applied): the ids'
/// simple forms (32 hex digits), an applied one after a `+`, separated by commas, as many per
/// payload as fit. A plain id says only "settled": an api of the release before this one
/// parses those and skips the marked ones (a waiter it does not wake here is woken by the
/// shipped event), and an api of this release reads a plain id from an older worker as
/// "read the row", never as applied.
pub fn payloads(settled: &[(Uuid, Settled)]) -> Vec<String> {
    // A mark, 32 digits and a comma.
    const PER_PAYLOAD: usize = (MAX_PAYLOAD + 1) / 34;
    settled
        .chunks(PER_PAYLOAD)
        .map(|chunk| {
            let entries: Vec<String> = chunk
                .iter()
                .map(|(id, how)| match how {
                    Settled::Applied => format!("+{}", id.simple()),
                    Settled::Settled => id.simple().to_string(),
                })
                .collect();
            entries.join(",")
        })
        .collect()
}

/// The commands a payload names, with what it says of each; what is not an id is skipped (the
/// channel is open to any session of the database).
pub fn parse(payload: &str) -> impl Iterator<Item = (Uuid, Settled)> + '_ {
    payload.split(',').filter_map(|entry| {
        let entry = entry.trim();
        let (id, how) = match entry.strip_prefix('+') {
            Some(id) => (id, Settled::Applied),
            None => (entry, Settled::Settled),
        };
        Uuid::try_parse(id).ok().map(|id| (id, how))
    })
}

/// Sends the notifications of `settled` in `txn`, in one statement; PostgreSQL delivers them
/// when `txn` commits, and drops them if it rolls back.
pub async fn notify(txn: &impl ConnectionTrait, settled: &[(Uuid, Settled)]) -> Result<(), DbErr> {
    if settled.is_empty() {
        return Ok(());
    }
    txn.execute_raw(sql(
        "SELECT pg_notify($1, payload) FROM UNNEST($2::text[]) AS payload",
        [CHANNEL.into(), payloads(settled).into()],
    ))
    .await?;
    Ok(())
}

/// Whether a commit failed because PostgreSQL's notification queue is full (a listener that
/// stopped reading holds it): the batch is then applied again without notifying, and the
/// waiting requests are answered by the shipped events or their deadline.
pub fn queue_full(error: &DbErr) -> bool {
    let sqlx = match error {
        DbErr::Exec(sea_orm::RuntimeErr::SqlxError(e))
        | DbErr::Query(sea_orm::RuntimeErr::SqlxError(e))
        | DbErr::Conn(sea_orm::RuntimeErr::SqlxError(e)) => e,
        _ => return false,
    };
    // 54000 program_limit_exceeded: "too many notifications in the NOTIFY queue".
    matches!(sqlx.as_ref(), SqlxError::Database(db) if db.code().as_deref() == Some("54000"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(count: usize, expect_payloads: usize) {
        let settled: Vec<(Uuid, Settled)> = (0..count)
            .map(|i| (Uuid::now_v7(), if i % 3 == 0 { Settled::Settled } else { Settled::Applied }))
            .collect();
        let payloads = payloads(&settled);
        assert_eq!(payloads.len(), expect_payloads, "{count} ids");
        assert!(payloads.iter().all(|p| p.len() <= MAX_PAYLOAD && p.len() < 8000), "{count} ids");
        let back: Vec<(Uuid, Settled)> = payloads.iter().flat_map(|p| parse(p)).collect();
        assert_eq!(back, settled, "{count} ids");
    }

    #[test]
    fn ids_are_split_into_payloads_under_postgres_limit_and_read_back_in_order() {
        check(0, 0);
        check(1, 1);
        check(200, 1);
        check(232, 1);
        check(233, 2);
        check(1_000, 5);
    }

    #[test]
    fn what_is_not_an_id_is_skipped_and_a_plain_id_is_only_settled() {
        let id = Uuid::now_v7();
        let payload = format!("nonsense,+{},,{id},+,++{}", id.simple(), id.simple());
        assert_eq!(
            parse(&payload).collect::<Vec<_>>(),
            vec![(id, Settled::Applied), (id, Settled::Settled)]
        );
    }
}
