//! "These commands are settled": the PostgreSQL notification the command worker's batch
//! transaction sends, with the ids of the commands it applied or rejected, and that each api
//! listens to, to answer `Prefer: wait` (see `showrunner_api::settled`). PostgreSQL delivers a
//! `NOTIFY` only when its transaction commits, to listeners of the same database: the outcome
//! is readable by then, and the channel is the deployment's (each has its own database).

use sea_orm::{ConnectionTrait, DbErr, SqlxError};
use uuid::Uuid;

use crate::db::sql;

/// The channel. Unquoted in SQL it would be folded to lower case: it is lower case already.
pub const CHANNEL: &str = "showrunner_commands_settled";

/// The most bytes of one payload: PostgreSQL refuses 8,000 and more.
const MAX_PAYLOAD: usize = 7_900;

/// The payloads that name `ids`: their simple (32 hex digits) forms separated by commas, as
/// many per payload as fit.
pub fn payloads(ids: &[Uuid]) -> Vec<String> {
    // 32 digits and a comma.
    const PER_PAYLOAD: usize = (MAX_PAYLOAD + 1) / 33;
    ids.chunks(PER_PAYLOAD)
        .map(|chunk| {
            let simple: Vec<String> = chunk.iter().map(|id| id.simple().to_string()).collect();
            simple.join(",")
        })
        .collect()
}

/// The command ids a payload names; what is not an id is skipped (the channel is open to any
/// session of the database).
pub fn parse(payload: &str) -> impl Iterator<Item = Uuid> + '_ {
    payload.split(',').filter_map(|id| Uuid::try_parse(id.trim()).ok())
}

/// Sends the notifications of `ids` in `txn`, in one statement; PostgreSQL delivers them when
/// `txn` commits, and drops them if it rolls back.
pub async fn notify(txn: &impl ConnectionTrait, ids: &[Uuid]) -> Result<(), DbErr> {
    if ids.is_empty() {
        return Ok(());
    }
    txn.execute_raw(sql(
        "SELECT pg_notify($1, payload) FROM UNNEST($2::text[]) AS payload",
        [CHANNEL.into(), payloads(ids).into()],
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
        let ids: Vec<Uuid> = (0..count).map(|_| Uuid::now_v7()).collect();
        let payloads = payloads(&ids);
        assert_eq!(payloads.len(), expect_payloads, "{count} ids");
        assert!(payloads.iter().all(|p| p.len() <= MAX_PAYLOAD && p.len() < 8000), "{count} ids");
        let back: Vec<Uuid> = payloads.iter().flat_map(|p| parse(p)).collect();
        assert_eq!(back, ids, "{count} ids");
    }

    #[test]
    fn ids_are_split_into_payloads_under_postgres_limit_and_read_back_in_order() {
        check(0, 0);
        check(1, 1);
        check(200, 1);
        check(239, 1);
        check(240, 2);
        check(1_000, 5);
    }

    #[test]
    fn what_is_not_an_id_is_skipped() {
        let id = Uuid::now_v7();
        let payload = format!("nonsense,{},,{id}", id.simple());
        assert_eq!(parse(&payload).collect::<Vec<_>>(), vec![id, id]);
    }
}
