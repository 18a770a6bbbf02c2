//! Every exchange and queue of Showrunner, declared idempotently by each process at start.
//! Names are fixed: deployments sharing a broker stay apart by vhost.

use lapin::options::{
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection, ExchangeKind};

use super::{BrokerError, bounded};
use crate::config::{AmqpSettings, QueueType};

/// Direct exchange carrying commands; routing key = partition number.
pub const COMMANDS_EXCHANGE: &str = "showrunner.commands";
/// Topic exchange where events from outside a producer's transaction arrive (an older
/// version's outbox, an operator, another system): the activity worker's importer records them
/// in the event log. Producers of this version write the log directly.
pub const EVENTS_EXCHANGE: &str = "showrunner.events";
/// Direct exchange of the parking lot; routing key = the queue a message was parked from.
pub const PARKED_EXCHANGE: &str = "showrunner.parked";
/// Topic exchange of the shipped events (headers `x-seq`, their place in the event log, and
/// `x-prev-seq`, the number published before it: numbers have holes): the
/// WebSocket relays consume it (the notification worker reads the event log itself).
pub const LIVE_EXCHANGE: &str = "showrunner.live";
/// Every event of the events exchange, for the importer that records it in the event log.
pub const EVENT_LOG_QUEUE: &str = "showrunner.eventlog";
/// The activity worker's queue before the sequencer wrote the activity log: deleted at declare,
/// so that a broker upgraded from then does not fill it with copies nobody consumes.
pub const RETIRED_ACTIVITY_QUEUE: &str = "showrunner.activity";
/// Direct exchange of job requests; its one queue is [`JOBS_QUEUE`] (routing key [`JOBS_KEY`]).
pub const JOBS_EXCHANGE: &str = "showrunner.jobs";
pub const JOBS_QUEUE: &str = "showrunner.jobs";
pub const JOBS_KEY: &str = "run";
/// Direct exchange of the delay tiers; routing key = the tier queue's name.
pub const JOBS_DELAY_EXCHANGE: &str = "showrunner.jobs.delay";
/// TTL of each delay tier queue, in milliseconds: powers of two from 25 ms to ~55 min. A delay
/// travels through the largest tier not longer than what remains (at most one hop per binary
/// digit), so every queue holds messages of one TTL and nothing waits behind a longer one.
pub const JOB_DELAY_TIERS_MS: [u64; 18] = [
    25, 50, 100, 200, 400, 800, 1_600, 3_200, 6_400, 12_800, 25_600, 51_200, 102_400, 204_800,
    409_600, 819_200, 1_638_400, 3_276_800,
];
/// The notification worker's queue before it read the event log (issue 14): deleted at
/// declare, so that an upgraded broker does not fill it with copies nobody consumes. Its
/// parking lot stays: what was parked there is for an operator to read.
pub const RETIRED_NOTIFICATIONS_QUEUE: &str = "showrunner.notifications";

/// The events the activity log records (`event_log::record` writes their activity rows).
pub const ACTIVITY_BINDINGS: &[&str] = &[
    "episode.*.created",
    "episode.*.updated",
    "episode.*.deleted",
    "episode.*.composition.*",
    "episode.*.file.*",
    "job.*.*",
    "system.jobs.*",
];
/// The events that may produce a notification (the notification worker reads only these from
/// the event log).
pub const NOTIFYING_EVENTS: &[&str] =
    &["episode.*.created", "episode.*.deleted", "user.*.command", "job.*.failed"];

pub fn command_queue(partition: u16) -> String {
    format!("{COMMANDS_EXCHANGE}.p{partition:03}")
}

pub fn job_delay_queue(ttl_ms: u64) -> String {
    format!("{JOBS_DELAY_EXCHANGE}.{ttl_ms}ms")
}

/// Below this a wait is held by the job worker that has the request (its delivery unacked, one
/// of its slots taken) instead of by the delay tiers. Each tier a request crosses costs the
/// broker a quorum publish and an at-least-once dead-lettering, about 0.6 ms of its CPU, and a
/// greedy path through tiers of 25 ms × 2^k crosses one per bit of the wait: a retry 80-120 ms
/// away crossed one or two; now none or one (README, "One message per look").
pub const JOB_WAIT_IN_WORKER_MS: u64 = 100;

/// The tier a message with `remaining_ms` still to wait goes to: the longest not above it.
/// `None` when less than [`JOB_WAIT_IN_WORKER_MS`] remains (the worker waits it out, then runs it).
pub fn job_delay_tier(remaining_ms: u64) -> Option<u64> {
    if remaining_ms < JOB_WAIT_IN_WORKER_MS {
        return None;
    }
    JOB_DELAY_TIERS_MS.iter().rev().find(|ttl| **ttl <= remaining_ms).copied()
}

pub fn parked_queue(source: &str) -> String {
    format!("{source}.parked")
}

/// Which partition carries an episode's commands: FNV-1a of the id, so every api instance and
/// every version agrees.
pub fn partition_of(episode_id: uuid::Uuid, partitions: u16) -> u16 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in episode_id.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % u64::from(partitions.max(1))) as u16
}

/// The queue argument that sets how many nodes hold a replica of a new quorum queue.
const GROUP_SIZE_ARG: &str = "x-quorum-initial-group-size";

/// Declares everything on a channel of its own; safe to call from every process at every start.
pub async fn declare(conn: &Connection, amqp: &AmqpSettings) -> Result<(), BrokerError> {
    let mut d = Declarer { conn, ch: conn.create_channel().await?, kept: 0 };
    declare_all(&mut d, amqp).await?;
    if d.kept > 0 {
        tracing::info!(
            queues = d.kept,
            "quorum queues exist with another x-quorum-initial-group-size than \
             amqp.quorum_initial_group_size; kept as they are (it sizes new queues only)"
        );
    }
    let _ = bounded(d.ch.close(200, "topology declared".into())).await;
    Ok(())
}

/// The declaring channel, replaced when the broker closes it over a queue's group size.
struct Declarer<'a> {
    conn: &'a Connection,
    ch: Channel,
    /// Queues kept with a group size other than the configured one.
    kept: usize,
}

impl Declarer<'_> {
    /// Declares a durable queue. The broker compares `x-quorum-initial-group-size` with the
    /// existing queue's, and refuses (closing the channel) when they differ, although it only
    /// sizes a queue at creation: a deployment that sets or changes
    /// `amqp.quorum_initial_group_size` would otherwise not start. So an existing queue whose
    /// group size differs is declared again without one (its other arguments are still
    /// checked), and if it has another size of its own, only checked to exist.
    async fn queue(&mut self, name: &str, args: FieldTable) -> Result<(), BrokerError> {
        let first =
            self.ch.queue_declare(name.into(), QueueDeclareOptions::durable(), args.clone());
        let Err(error) = first.await else { return Ok(()) };
        if !names_group_size(&error) {
            return Err(error.into());
        }
        let without: FieldTable = args
            .inner()
            .iter()
            .filter(|(key, _)| key.as_str() != GROUP_SIZE_ARG)
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect::<std::collections::BTreeMap<_, _>>()
            .into();
        self.ch = self.conn.create_channel().await?;
        let second = self.ch.queue_declare(name.into(), QueueDeclareOptions::durable(), without);
        let Err(error) = second.await else {
            self.kept += 1;
            return Ok(());
        };
        if !names_group_size(&error) {
            return Err(error.into());
        }
        self.ch = self.conn.create_channel().await?;
        let passive = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::durable() };
        self.ch.queue_declare(name.into(), passive, FieldTable::default()).await?;
        self.kept += 1;
        Ok(())
    }

    async fn bind(&self, queue: &str, exchange: &str, key: &str) -> Result<(), BrokerError> {
        self.ch
            .queue_bind(
                queue.into(),
                exchange.into(),
                key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok(())
    }
}

/// Whether the broker refused a declaration over `x-quorum-initial-group-size` (its reply
/// names the argument: `PRECONDITION_FAILED - inequivalent arg 'x-quorum-initial-group-size'`).
fn names_group_size(error: &lapin::Error) -> bool {
    error.to_string().contains(GROUP_SIZE_ARG)
}

async fn declare_all(d: &mut Declarer<'_>, amqp: &AmqpSettings) -> Result<(), BrokerError> {
    let durable = ExchangeDeclareOptions { durable: true, ..Default::default() };
    for (exchange, kind) in [
        (COMMANDS_EXCHANGE, ExchangeKind::Direct),
        (EVENTS_EXCHANGE, ExchangeKind::Topic),
        (PARKED_EXCHANGE, ExchangeKind::Direct),
        (LIVE_EXCHANGE, ExchangeKind::Topic),
    ] {
        d.ch.exchange_declare(exchange.into(), kind, durable, FieldTable::default()).await?;
    }

    let mut work_queues = Vec::new();
    for p in 0..amqp.partitions {
        let name = command_queue(p);
        let mut args = work_queue_args(amqp, &name);
        // One active consumer per partition keeps the per-episode order.
        args.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
        d.queue(&name, args).await?;
        d.bind(&name, COMMANDS_EXCHANGE, &p.to_string()).await?;
        work_queues.push(name);
    }
    let mut args = work_queue_args(amqp, EVENT_LOG_QUEUE);
    // Kept as it was declared (a queue's arguments cannot change): one importer at a time,
    // which also keeps what it imports in arrival order.
    args.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
    d.queue(EVENT_LOG_QUEUE, args).await?;
    d.bind(EVENT_LOG_QUEUE, EVENTS_EXCHANGE, "#").await?;
    work_queues.push(EVENT_LOG_QUEUE.to_string());
    // Deleting a queue that does not exist succeeds, so this is idempotent. The parking lots
    // stay: what was parked there is for an operator to read. (The notification worker's
    // migration starts it an hour back in the log, so events its old queue still held when
    // the queue went are notified all the same.)
    for retired in [RETIRED_ACTIVITY_QUEUE, RETIRED_NOTIFICATIONS_QUEUE] {
        d.ch.queue_delete(retired.into(), QueueDeleteOptions::default()).await?;
    }
    declare_jobs(d, amqp).await?;
    work_queues.push(JOBS_QUEUE.to_string());
    for source in &work_queues {
        let parked = parked_queue(source);
        let mut args = FieldTable::default();
        quorum_args(amqp, &mut args);
        d.queue(&parked, args).await?;
        d.bind(&parked, PARKED_EXCHANGE, source).await?;
    }
    Ok(())
}

/// The job topology: the jobs exchange and queue, and the delay tiers that dead-letter back to it.
async fn declare_jobs(d: &mut Declarer<'_>, amqp: &AmqpSettings) -> Result<(), BrokerError> {
    let durable = ExchangeDeclareOptions { durable: true, ..Default::default() };
    for exchange in [JOBS_EXCHANGE, JOBS_DELAY_EXCHANGE] {
        d.ch.exchange_declare(
            exchange.into(),
            ExchangeKind::Direct,
            durable,
            FieldTable::default(),
        )
        .await?;
    }
    d.queue(JOBS_QUEUE, work_queue_args(amqp, JOBS_QUEUE)).await?;
    d.bind(JOBS_QUEUE, JOBS_EXCHANGE, JOBS_KEY).await?;
    for ttl in JOB_DELAY_TIERS_MS {
        let name = job_delay_queue(ttl);
        // Expired messages go back to the jobs exchange. The worker republishes (never
        // rejects) into a tier, so no dead-letter cycle without a rejection ever forms.
        let mut args = FieldTable::default();
        args.insert("x-dead-letter-exchange".into(), AMQPValue::LongString(JOBS_EXCHANGE.into()));
        args.insert("x-dead-letter-routing-key".into(), AMQPValue::LongString(JOBS_KEY.into()));
        args.insert("x-message-ttl".into(), AMQPValue::LongLongInt(ttl as i64));
        if amqp.queue_type == QueueType::Quorum {
            quorum_args(amqp, &mut args);
            // At-least-once dead-lettering needs both: a delayed retry is never dropped.
            args.insert(
                "x-dead-letter-strategy".into(),
                AMQPValue::LongString("at-least-once".into()),
            );
            args.insert("x-overflow".into(), AMQPValue::LongString("reject-publish".into()));
        }
        d.queue(&name, args).await?;
        d.bind(&name, JOBS_DELAY_EXCHANGE, &name).await?;
    }
    Ok(())
}

/// The queue type, and for quorum queues the configured group size (unset: the broker's).
fn quorum_args(amqp: &AmqpSettings, args: &mut FieldTable) {
    if amqp.queue_type == QueueType::Quorum {
        args.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
        if let Some(size) = amqp.quorum_initial_group_size {
            args.insert(GROUP_SIZE_ARG.into(), AMQPValue::LongInt(i32::from(size)));
        }
    }
}

/// Arguments of a work queue: durable type, and a delivery limit past which the broker parks a
/// message that keeps failing (at least once, so the parked copy is never lost).
fn work_queue_args(amqp: &AmqpSettings, name: &str) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-dead-letter-exchange".into(), AMQPValue::LongString(PARKED_EXCHANGE.into()));
    args.insert("x-dead-letter-routing-key".into(), AMQPValue::LongString(name.into()));
    if amqp.queue_type == QueueType::Quorum {
        quorum_args(amqp, &mut args);
        args.insert("x-delivery-limit".into(), AMQPValue::LongInt(amqp.delivery_limit));
        args.insert("x-dead-letter-strategy".into(), AMQPValue::LongString("at-least-once".into()));
        args.insert("x-overflow".into(), AMQPValue::LongString("reject-publish".into()));
    }
    args
}

/// How [`declare_or_verify`] set the topology up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setup {
    /// This user may declare, and did.
    Declared,
    /// This user may not (a least-privilege role user): everything was there already.
    Verified,
}

/// Declares the topology; when the broker refuses this user the right to (`ACCESS_REFUSED`:
/// a role's least-privilege user, `deploy/rabbitmq/permissions.json`, may configure nothing
/// shared), checks passively that every exchange and queue exists, as declared beforehand by
/// `showrunner topology` with the deploy user. Passive declarations need no permission, so
/// a role user holds only the write and read rights its work needs and can delete nothing.
pub async fn declare_or_verify(
    conn: &lapin::Connection,
    amqp: &AmqpSettings,
) -> Result<Setup, BrokerError> {
    match declare(conn, amqp).await {
        Ok(()) => Ok(Setup::Declared),
        Err(BrokerError::Amqp(error)) if access_refused(&error) => {
            // The refusal closed the declaring channel.
            let channel = conn.create_channel().await?;
            verify(&channel, amqp).await?;
            let _ = super::bounded(channel.close(200, "topology verified".into())).await;
            tracing::info!("not allowed to declare the topology; verified that it exists");
            Ok(Setup::Verified)
        }
        Err(error) => Err(error),
    }
}

fn access_refused(error: &lapin::Error) -> bool {
    soft_error(error, lapin::protocol::AMQPSoftError::ACCESSREFUSED)
}

fn soft_error(error: &lapin::Error, wanted: lapin::protocol::AMQPSoftError) -> bool {
    use lapin::protocol::AMQPErrorKind;
    matches!(error.kind(), lapin::ErrorKind::ProtocolError(e)
        if matches!(e.kind(), AMQPErrorKind::Soft(kind) if *kind == wanted))
}

/// Every exchange and queue [`declare`] makes, checked with passive declarations (which fail
/// with `NOT_FOUND` on the first one missing and need no permission).
pub async fn verify(ch: &Channel, amqp: &AmqpSettings) -> Result<(), BrokerError> {
    use lapin::options::{ExchangeDeclareOptions as E, QueueDeclareOptions as Q};
    let exchanges = [
        COMMANDS_EXCHANGE,
        EVENTS_EXCHANGE,
        PARKED_EXCHANGE,
        LIVE_EXCHANGE,
        JOBS_EXCHANGE,
        JOBS_DELAY_EXCHANGE,
    ];
    let mut work_queues: Vec<String> = (0..amqp.partitions).map(command_queue).collect();
    work_queues.extend([EVENT_LOG_QUEUE, JOBS_QUEUE].map(String::from));
    let mut queues: Vec<String> = work_queues.iter().map(|q| parked_queue(q)).collect();
    queues.extend(work_queues);
    queues.extend(JOB_DELAY_TIERS_MS.iter().map(|ttl| job_delay_queue(*ttl)));
    for exchange in exchanges {
        let options = E { passive: true, ..Default::default() };
        ch.exchange_declare(exchange.into(), ExchangeKind::Direct, options, FieldTable::default())
            .await
            .map_err(|e| missing(exchange, e))?;
    }
    for queue in &queues {
        let options = Q { passive: true, ..Default::default() };
        ch.queue_declare(queue.as_str().into(), options, FieldTable::default())
            .await
            .map_err(|e| missing(queue, e))?;
    }
    Ok(())
}

/// `NOT_FOUND` names what is missing; any other failure (a lost connection) stays what it is.
fn missing(name: &str, error: lapin::Error) -> BrokerError {
    if soft_error(&error, lapin::protocol::AMQPSoftError::NOTFOUND) {
        BrokerError::TopologyMissing { name: name.to_string(), source: error }
    } else {
        BrokerError::Amqp(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_spread_and_are_stable() {
        let mut counts = [0u32; 16];
        for i in 0..16_000u128 {
            counts[usize::from(partition_of(uuid::Uuid::from_u128(i * 7919), 16))] += 1;
        }
        assert!(counts.iter().all(|c| (700..1300).contains(c)), "{counts:?}");
        let id = uuid::Uuid::from_u128(42);
        assert_eq!(partition_of(id, 16), partition_of(id, 16));
        assert_eq!(partition_of(id, 1), 0);
    }

    #[test]
    fn a_delay_takes_the_longest_tier_that_fits() {
        for (remaining, tier) in [
            (0, None),
            (24, None),
            (25, None),
            (99, None),
            (100, Some(100)),
            (199, Some(100)),
            (1_000, Some(800)),
            (300_000, Some(204_800)),
            (u64::MAX, Some(3_276_800)),
        ] {
            assert_eq!(job_delay_tier(remaining), tier, "{remaining} ms");
        }
        assert!(JOB_DELAY_TIERS_MS.windows(2).all(|w| w[1] == 2 * w[0]));
    }
}
