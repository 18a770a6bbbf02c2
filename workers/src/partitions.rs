//! Which episode worker consumes which command partition. Live workers heartbeat in
//! `worker_heartbeats`; each takes the partitions that rendezvous hashing gives it, so two
//! workers each apply about half, and a worker that stops or dies hands its share over within
//! the heartbeat TTL. Single active consumer on every partition queue stays the fence while a
//! partition moves: the new owner only gets messages once the old one let go.

use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr, FromQueryResult};
use showrunner_shared::db::sql;
use uuid::Uuid;

const ROLE: &str = "episode-worker";

/// The live worker with the highest score for `partition` owns it.
pub fn owner(workers: &[Uuid], partition: u16) -> Option<Uuid> {
    workers.iter().copied().max_by_key(|w| score(*w, partition))
}

fn score(worker: Uuid, partition: u16) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in worker.as_bytes().iter().chain(partition.to_be_bytes().iter()) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    // FNV's low bits mix poorly over short inputs; a final avalanche (splitmix64) fixes that.
    hash ^= hash >> 30;
    hash = hash.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash ^= hash >> 27;
    hash = hash.wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^ (hash >> 31)
}

/// The partitions `me` owns among `live` workers.
pub fn owned(me: Uuid, live: &[Uuid], partitions: u16) -> Vec<u16> {
    (0..partitions).filter(|p| owner(live, *p) == Some(me)).collect()
}

pub async fn heartbeat(db: &DatabaseConnection, me: Uuid, label: &str) -> Result<(), DbErr> {
    db.execute_raw(sql(
        "INSERT INTO worker_heartbeats (worker_id, role, label) VALUES ($1, $2, $3) \
         ON CONFLICT (worker_id) DO UPDATE SET last_seen = now()",
        [me.into(), ROLE.into(), label.into()],
    ))
    .await?;
    Ok(())
}

#[derive(FromQueryResult)]
struct WorkerId {
    worker_id: Uuid,
}

pub async fn live_workers(db: &DatabaseConnection, ttl_secs: u64) -> Result<Vec<Uuid>, DbErr> {
    let rows = WorkerId::find_by_statement(sql(
        "SELECT worker_id FROM worker_heartbeats \
         WHERE role = $1 AND last_seen > now() - make_interval(secs => $2)",
        [ROLE.into(), (ttl_secs as f64).into()],
    ))
    .all(db)
    .await?;
    Ok(rows.into_iter().map(|r| r.worker_id).collect())
}

/// Leaves at shutdown so the others take the partitions over at once.
pub async fn leave(db: &DatabaseConnection, me: Uuid) -> Result<(), DbErr> {
    db.execute_raw(sql("DELETE FROM worker_heartbeats WHERE worker_id = $1", [me.into()])).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_worker_owns_everything() {
        let me = Uuid::now_v7();
        assert_eq!(owned(me, &[me], 16), (0..16).collect::<Vec<_>>());
    }

    #[test]
    fn partitions_split_roughly_evenly_and_every_one_has_one_owner() {
        for seed in 0..50u128 {
            let a = Uuid::from_u128(seed * 2 + 1);
            let b = Uuid::from_u128(seed * 2 + 2);
            let (mine, theirs) = (owned(a, &[a, b], 16), owned(b, &[a, b], 16));
            assert_eq!(mine.len() + theirs.len(), 16);
            assert!(mine.iter().all(|p| !theirs.contains(p)));
            assert!((3..=13).contains(&mine.len()), "seed {seed}: {mine:?}");
        }
    }

    #[test]
    fn a_third_worker_moves_only_its_own_share() {
        let (a, b, c) = (Uuid::from_u128(11), Uuid::from_u128(22), Uuid::from_u128(33));
        for p in 0..64 {
            let before = owner(&[a, b], p);
            let after = owner(&[a, b, c], p);
            assert!(after == before || after == Some(c));
        }
    }
}
