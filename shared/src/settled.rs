//! "These commands are settled": the PostgreSQL notification the command worker's batch
//! transaction sends, with the ids of the commands it applied or rejected, and that each api
//! listens to, to answer `Prefer: wait` (see `showrunner_api::settled`). An applied command is
//! named with the resource as it left it (the JSON a waiting request answers with, so the api
//! reads nothing back), or, when that does not fit a notification, marked applied (the api reads
//! the resource alone, not the command's row first). PostgreSQL delivers a `NOTIFY` only when its
//! transaction commits, to listeners of the same database: the outcome is readable by then, and
//! the channel is the deployment's (each has its own database).

use std::sync::Arc;

use sea_orm::{ConnectionTrait, DbErr, SqlxError};
use uuid::Uuid;

use crate::db::sql;

/// The channel. Unquoted in SQL it would be folded to lower case: it is lower case already.
pub const CHANNEL: &str = "showrunner_commands_settled";

/// The most bytes of one payload: PostgreSQL refuses 8,000 and more.
const MAX_PAYLOAD: usize = 7_900;

/// What a notification says of one command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Settled {
    /// Applied, and the resource as the command left it: its JSON, as the api answers with it.
    AppliedAs(Arc<str>),
    /// Applied: the resource as the command left it is readable, no need to read the
    /// command's row for its outcome.
    Applied,
    /// Applied or rejected: the command's row tells which.
    Settled,
}

impl Settled {
    /// How much it says: a later word about a command never replaces one that said more.
    pub fn rank(&self) -> u8 {
        match self {
            Self::AppliedAs(_) => 2,
            Self::Applied => 1,
            Self::Settled => 0,
        }
    }
}

/// The payloads that name `settled`, in two forms:
///
/// - marks: the ids' simple forms (32 hex digits), an applied one after a `+`, separated by
///   commas, as many per payload as fit;
/// - resources: lines of `=`, the id's 32 digits and the resource's JSON (which serde_json
///   writes on one line), as many per payload as fit, first. A resource whose line alone does not
///   fit is named by a mark instead.
///
/// A plain id says only "settled". An api of an earlier release reads only marks: it skips the
/// marked ids and the resource lines (no comma-separated piece of them is an id), and its waiter
/// is woken by the shipped event instead; an api of this release reads a plain id from an older
/// worker as "read the row", never as applied.
pub fn payloads(settled: &[(Uuid, Settled)]) -> Vec<String> {
    let mut payloads = Vec::new();
    let mut lines = String::new();
    let mut marks = String::new();
    let mut marked = Vec::new();
    for (id, how) in settled {
        match how {
            Settled::AppliedAs(json) if 33 + json.len() <= MAX_PAYLOAD => {
                if !lines.is_empty() && lines.len() + 1 + 33 + json.len() > MAX_PAYLOAD {
                    payloads.push(std::mem::take(&mut lines));
                }
                if !lines.is_empty() {
                    lines.push('\n');
                }
                lines.push('=');
                lines.push_str(id.simple().encode_lower(&mut Uuid::encode_buffer()));
                lines.push_str(json);
            }
            Settled::AppliedAs(_) | Settled::Applied => marked.push((*id, true)),
            Settled::Settled => marked.push((*id, false)),
        }
    }
    if !lines.is_empty() {
        payloads.push(lines);
    }
    // A mark, 32 digits and a comma.
    const PER_PAYLOAD: usize = (MAX_PAYLOAD + 1) / 34;
    for chunk in marked.chunks(PER_PAYLOAD) {
        marks.clear();
        for (id, applied) in chunk {
            if !marks.is_empty() {
                marks.push(',');
            }
            if *applied {
                marks.push('+');
            }
            marks.push_str(id.simple().encode_lower(&mut Uuid::encode_buffer()));
        }
        payloads.push(marks.clone());
    }
    payloads
}

/// The commands a payload names, with what it says of each; what is not an id is skipped (the
/// channel is open to any session of the database).
pub fn parse(payload: &str) -> Box<dyn Iterator<Item = (Uuid, Settled)> + '_> {
    if payload.starts_with('=') {
        return Box::new(payload.split('\n').filter_map(|line| {
            let line = line.strip_prefix('=')?;
            let (id, json) = (line.get(..32)?, line.get(32..)?);
            let id = Uuid::try_parse(id).ok()?;
            (!json.is_empty()).then(|| (id, Settled::AppliedAs(Arc::from(json))))
        }));
    }
    Box::new(payload.split(',').filter_map(|entry| {
        let entry = entry.trim();
        let (id, how) = match entry.strip_prefix('+') {
            Some(id) => (id, Settled::Applied),
            None => (entry, Settled::Settled),
        };
        Uuid::try_parse(id).ok().map(|id| (id, how))
    }))
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

    fn mixed(count: usize, json: &str) -> Vec<(Uuid, Settled)> {
        (0..count)
            .map(|i| {
                let how = match i % 3 {
                    0 => Settled::Settled,
                    1 => Settled::Applied,
                    _ => Settled::AppliedAs(Arc::from(json)),
                };
                (Uuid::now_v7(), how)
            })
            .collect()
    }

    /// What the payloads say, in a canonical order (resources come first, then marks).
    fn read_back(settled: &[(Uuid, Settled)]) -> Vec<(Uuid, Settled)> {
        let payloads = payloads(settled);
        assert!(payloads.iter().all(|p| p.len() <= MAX_PAYLOAD), "a payload is too long");
        let mut back: Vec<(Uuid, Settled)> = payloads.iter().flat_map(|p| parse(p)).collect();
        back.sort_by_key(|(id, _)| *id);
        back
    }

    #[test]
    fn marks_are_split_into_payloads_under_postgres_limit_and_read_back() {
        for (count, expect) in [(0, 0), (1, 1), (200, 1), (232, 1), (233, 2), (1_000, 5)] {
            let settled: Vec<(Uuid, Settled)> = (0..count)
                .map(|i| {
                    (Uuid::now_v7(), if i % 3 == 0 { Settled::Settled } else { Settled::Applied })
                })
                .collect();
            assert_eq!(payloads(&settled).len(), expect, "{count} ids");
            assert_eq!(read_back(&settled), settled, "{count} ids");
        }
    }

    #[test]
    fn resources_travel_as_lines_and_one_too_long_is_marked_instead() {
        let json = r#"{"id":"x","title":"a, b\nc","tags":["=","+"]}"#;
        let settled = mixed(600, json);
        let mut sorted = settled.clone();
        sorted.sort_by_key(|(id, _)| *id);
        assert_eq!(read_back(&settled), sorted);
        // 200 resource lines of 78 bytes and 400 marks of 33: two payloads of each.
        let payloads = payloads(&settled);
        assert_eq!(payloads.iter().filter(|p| p.starts_with('=')).count(), 2);
        assert_eq!(payloads.len(), 4);

        let long = format!(r#"{{"title":"{}"}}"#, "x".repeat(MAX_PAYLOAD));
        let id = Uuid::now_v7();
        let marked = super::payloads(&[(id, Settled::AppliedAs(Arc::from(long.as_str())))]);
        assert_eq!(marked, vec![format!("+{}", id.simple())]);
        assert_eq!(parse(&marked[0]).collect::<Vec<_>>(), vec![(id, Settled::Applied)]);
    }

    #[test]
    fn an_earlier_release_reads_no_id_out_of_a_resource_payload() {
        // Its parser: comma-separated ids, an applied one after a `+`.
        let id = Uuid::now_v7();
        let json = format!(r#"{{"id":"{id}","episodeId":"{}","n":[1,2]}}"#, id.simple());
        let settled = [(id, Settled::AppliedAs(Arc::from(json.as_str())))];
        for payload in payloads(&settled) {
            let ids = payload
                .split(',')
                .map(|e| e.trim())
                .filter_map(|e| Uuid::try_parse(e.strip_prefix('+').unwrap_or(e)).ok())
                .count();
            assert_eq!(ids, 0, "{payload}");
        }
    }

    #[test]
    fn what_is_not_an_id_is_skipped_and_a_plain_id_is_only_settled() {
        let id = Uuid::now_v7();
        let payload = format!("nonsense,+{},,{id},+,++{}", id.simple(), id.simple());
        assert_eq!(
            parse(&payload).collect::<Vec<_>>(),
            vec![(id, Settled::Applied), (id, Settled::Settled)]
        );
        let lines = format!("=nonsense\n={}\n=\n={}{{}}", id.simple(), id.simple());
        assert_eq!(
            parse(&lines).collect::<Vec<_>>(),
            vec![(id, Settled::AppliedAs(Arc::from("{}")))]
        );
    }

    #[test]
    fn rank_orders_what_is_known() {
        assert!(Settled::AppliedAs(Arc::from("{}")).rank() > Settled::Applied.rank());
        assert!(Settled::Applied.rank() > Settled::Settled.rank());
    }
}
