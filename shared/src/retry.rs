//! The retry policies: exponential, with jitter so that many processes (or tasks) do not come
//! back in step, and no limit on attempts (each caller decides when to stop: reconnecting
//! never does, since waiting is idle and giving up would only need a restart to undo).

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

/// Reconnecting to RabbitMQ and PostgreSQL, in every process: 200 ms doubling to 10 s.
pub fn reconnect_delays() -> ExponentialBackoff {
    jittered(Duration::from_millis(200), Duration::from_secs(10))
}

/// Parking a copy, or recording one as parked: 200 ms doubling to 5 s, for as long as the
/// caller's patience lasts (`workers::runtime::PARK_PATIENCE`).
pub fn park_delays() -> ExponentialBackoff {
    jittered(Duration::from_millis(200), Duration::from_secs(5))
}

/// Applying a batch again after it failed: 100 ms doubling to 5 s.
pub fn apply_delays() -> ExponentialBackoff {
    jittered(Duration::from_millis(100), Duration::from_secs(5))
}

fn jittered(min: Duration, max: Duration) -> ExponentialBackoff {
    ExponentialBuilder::default()
        .with_min_delay(min)
        .with_max_delay(max)
        .with_jitter()
        .without_max_times()
        .build()
}
