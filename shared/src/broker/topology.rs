//! Every exchange and queue of Showrunner, declared idempotently by each process at start.
//! Names are fixed: deployments sharing a broker stay apart by vhost.

use lapin::options::{
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, ExchangeKind};

use super::BrokerError;
use crate::config::{AmqpSettings, QueueType};

/// Direct exchange carrying commands; routing key = partition number.
pub const COMMANDS_EXCHANGE: &str = "showrunner.commands";
/// Topic exchange carrying every event.
pub const EVENTS_EXCHANGE: &str = "showrunner.events";
/// Direct exchange of the parking lot; routing key = the queue a message was parked from.
pub const PARKED_EXCHANGE: &str = "showrunner.parked";
/// Topic exchange of the sequenced events (header `x-seq`), which the WebSocket relays consume.
pub const LIVE_EXCHANGE: &str = "showrunner.live";
/// Every event, for the sequencer that writes the event log (single active consumer).
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
pub const NOTIFICATIONS_QUEUE: &str = "showrunner.notifications";

/// The events the activity log records (the sequencer filters the event log's batches by them).
pub const ACTIVITY_BINDINGS: &[&str] = &[
    "episode.*.created",
    "episode.*.updated",
    "episode.*.deleted",
    "episode.*.composition.*",
    "job.*.*",
    "system.jobs.*",
];
/// The events that may produce a notification.
pub const NOTIFICATION_BINDINGS: &[&str] =
    &["episode.*.created", "episode.*.deleted", "user.*.command", "job.*.failed"];

pub fn command_queue(partition: u16) -> String {
    format!("{COMMANDS_EXCHANGE}.p{partition:03}")
}

pub fn job_delay_queue(ttl_ms: u64) -> String {
    format!("{JOBS_DELAY_EXCHANGE}.{ttl_ms}ms")
}

/// The tier a message with `remaining_ms` still to wait goes to: the longest not above it.
/// `None` when less than the shortest tier remains (run now).
pub fn job_delay_tier(remaining_ms: u64) -> Option<u64> {
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

/// Declares everything; safe to call from every process at every start.
pub async fn declare(ch: &Channel, amqp: &AmqpSettings) -> Result<(), BrokerError> {
    let durable = ExchangeDeclareOptions { durable: true, ..Default::default() };
    for (exchange, kind) in [
        (COMMANDS_EXCHANGE, ExchangeKind::Direct),
        (EVENTS_EXCHANGE, ExchangeKind::Topic),
        (PARKED_EXCHANGE, ExchangeKind::Direct),
        (LIVE_EXCHANGE, ExchangeKind::Topic),
    ] {
        ch.exchange_declare(exchange.into(), kind, durable, FieldTable::default()).await?;
    }

    let mut work_queues = Vec::new();
    for p in 0..amqp.partitions {
        let name = command_queue(p);
        let mut args = work_queue_args(amqp, &name);
        // One active consumer per partition keeps the per-episode order.
        args.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
        declare_queue(ch, &name, args).await?;
        ch.queue_bind(
            name.as_str().into(),
            COMMANDS_EXCHANGE.into(),
            p.to_string().into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
        work_queues.push(name);
    }
    for (queue, keys) in
        [(NOTIFICATIONS_QUEUE, NOTIFICATION_BINDINGS), (EVENT_LOG_QUEUE, &["#"][..])]
    {
        let mut args = work_queue_args(amqp, queue);
        if queue == EVENT_LOG_QUEUE {
            // One writer at a time gives the log its single order.
            args.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
        }
        declare_queue(ch, queue, args).await?;
        for key in keys {
            ch.queue_bind(
                queue.into(),
                EVENTS_EXCHANGE.into(),
                (*key).into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        }
        work_queues.push(queue.to_string());
    }
    // Deleting a queue that does not exist succeeds, so this is idempotent too. Its parking lot
    // stays: what was parked there is for an operator to read.
    ch.queue_delete(RETIRED_ACTIVITY_QUEUE.into(), QueueDeleteOptions::default()).await?;
    declare_jobs(ch, amqp).await?;
    work_queues.push(JOBS_QUEUE.to_string());
    for source in &work_queues {
        let parked = parked_queue(source);
        let mut args = FieldTable::default();
        if amqp.queue_type == QueueType::Quorum {
            args.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
        }
        declare_queue(ch, &parked, args).await?;
        ch.queue_bind(
            parked.as_str().into(),
            PARKED_EXCHANGE.into(),
            source.as_str().into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    }
    Ok(())
}

/// The job topology: the jobs exchange and queue, and the delay tiers that dead-letter back to it.
async fn declare_jobs(ch: &Channel, amqp: &AmqpSettings) -> Result<(), BrokerError> {
    let durable = ExchangeDeclareOptions { durable: true, ..Default::default() };
    for exchange in [JOBS_EXCHANGE, JOBS_DELAY_EXCHANGE] {
        ch.exchange_declare(exchange.into(), ExchangeKind::Direct, durable, FieldTable::default())
            .await?;
    }
    declare_queue(ch, JOBS_QUEUE, work_queue_args(amqp, JOBS_QUEUE)).await?;
    bind(ch, JOBS_QUEUE, JOBS_EXCHANGE, JOBS_KEY).await?;
    for ttl in JOB_DELAY_TIERS_MS {
        let name = job_delay_queue(ttl);
        // Expired messages go back to the jobs exchange. The worker republishes (never
        // rejects) into a tier, so no dead-letter cycle without a rejection ever forms.
        let mut args = FieldTable::default();
        args.insert("x-dead-letter-exchange".into(), AMQPValue::LongString(JOBS_EXCHANGE.into()));
        args.insert("x-dead-letter-routing-key".into(), AMQPValue::LongString(JOBS_KEY.into()));
        args.insert("x-message-ttl".into(), AMQPValue::LongLongInt(ttl as i64));
        if amqp.queue_type == QueueType::Quorum {
            args.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
            // At-least-once dead-lettering needs both: a delayed retry is never dropped.
            args.insert(
                "x-dead-letter-strategy".into(),
                AMQPValue::LongString("at-least-once".into()),
            );
            args.insert("x-overflow".into(), AMQPValue::LongString("reject-publish".into()));
        }
        declare_queue(ch, &name, args).await?;
        bind(ch, &name, JOBS_DELAY_EXCHANGE, &name).await?;
    }
    Ok(())
}

async fn bind(ch: &Channel, queue: &str, exchange: &str, key: &str) -> Result<(), BrokerError> {
    ch.queue_bind(
        queue.into(),
        exchange.into(),
        key.into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    Ok(())
}

/// Arguments of a work queue: durable type, and a delivery limit past which the broker parks a
/// message that keeps failing (at least once, so the parked copy is never lost).
fn work_queue_args(amqp: &AmqpSettings, name: &str) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-dead-letter-exchange".into(), AMQPValue::LongString(PARKED_EXCHANGE.into()));
    args.insert("x-dead-letter-routing-key".into(), AMQPValue::LongString(name.into()));
    if amqp.queue_type == QueueType::Quorum {
        args.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
        args.insert("x-delivery-limit".into(), AMQPValue::LongInt(amqp.delivery_limit));
        args.insert("x-dead-letter-strategy".into(), AMQPValue::LongString("at-least-once".into()));
        args.insert("x-overflow".into(), AMQPValue::LongString("reject-publish".into()));
    }
    args
}

async fn declare_queue(ch: &Channel, name: &str, args: FieldTable) -> Result<(), BrokerError> {
    ch.queue_declare(name.into(), QueueDeclareOptions::durable(), args).await?;
    Ok(())
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
            (25, Some(25)),
            (99, Some(50)),
            (100, Some(100)),
            (1_000, Some(800)),
            (300_000, Some(204_800)),
            (u64::MAX, Some(3_276_800)),
        ] {
            assert_eq!(job_delay_tier(remaining), tier, "{remaining} ms");
        }
        assert!(JOB_DELAY_TIERS_MS.windows(2).all(|w| w[1] == 2 * w[0]));
    }
}
