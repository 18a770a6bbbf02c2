//! Which episode worker consumes which command partition. Live workers heartbeat in
//! `worker_heartbeats`; each computes the same assignment from the same live set: rendezvous
//! hashing with bounded load (a partition goes to its highest-scoring worker that still has
//! its fair share), so shares differ by at most one partition and a
//! membership change moves few partitions. A worker that stops or dies hands its share over
//! within the heartbeat TTL. Single active consumer on every partition queue stays the fence while a
//! partition moves: the new owner only gets messages once the old one let go.

use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr, FromQueryResult};
use showrunner_shared::db::sql;
use uuid::Uuid;

const ROLE: &str = "episode-worker";

/// The owner of every partition among `workers` (index = partition).
pub fn assignment(workers: &[Uuid], partitions: u16) -> Vec<Uuid> {
    let mut workers: Vec<Uuid> = workers.to_vec();
    workers.sort_unstable();
    workers.dedup();
    if workers.is_empty() {
        return Vec::new();
    }
    // Every worker gets `floor` partitions, and `extra` of them one more.
    let floor = usize::from(partitions) / workers.len();
    let mut extra = usize::from(partitions) % workers.len();
    let mut load = vec![0usize; workers.len()];
    (0..partitions)
        .map(|p| {
            let mut ranked: Vec<usize> = (0..workers.len()).collect();
            ranked.sort_by_key(|&i| std::cmp::Reverse(score(workers[i], p)));
            let chosen = ranked
                .into_iter()
                .find(|&i| load[i] < floor || (load[i] == floor && extra > 0))
                .unwrap_or(0);
            if load[chosen] == floor {
                extra = extra.saturating_sub(1);
            }
            load[chosen] += 1;
            workers[chosen]
        })
        .collect()
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
    (0u16..).zip(assignment(live, partitions)).filter(|(_, w)| *w == me).map(|(p, _)| p).collect()
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
    fn shares_differ_by_at_most_one_and_every_partition_has_one_owner() {
        for seed in 0..50u128 {
            for n in 1..=5u128 {
                let workers: Vec<Uuid> =
                    (0..n).map(|i| Uuid::from_u128(seed * 10 + i + 1)).collect();
                let shares: Vec<usize> =
                    workers.iter().map(|w| owned(*w, &workers, 16).len()).collect();
                assert_eq!(shares.iter().sum::<usize>(), 16);
                let (min, max) = (shares.iter().min(), shares.iter().max());
                assert!(max.zip(min).is_some_and(|(a, b)| a - b <= 1), "seed {seed}: {shares:?}");
            }
        }
    }

    #[test]
    fn every_worker_computes_the_same_assignment_in_any_order() {
        let (a, b, c) = (Uuid::from_u128(11), Uuid::from_u128(22), Uuid::from_u128(33));
        assert_eq!(assignment(&[a, b, c], 16), assignment(&[c, a, b], 16));
    }

    #[test]
    fn a_third_worker_moves_few_partitions() {
        let (a, b, c) = (Uuid::from_u128(11), Uuid::from_u128(22), Uuid::from_u128(33));
        let before = assignment(&[a, b], 64);
        let after = assignment(&[a, b, c], 64);
        let moved = before.iter().zip(&after).filter(|(x, y)| x != y).count();
        // About a third has to move to the newcomer; bounded load may shuffle a few more.
        assert!(moved <= 32, "{moved} of 64 moved");
    }
}
