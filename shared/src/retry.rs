//! The reconnect policy every process uses for RabbitMQ and PostgreSQL: exponential from
//! 200 ms, capped at 10 s, with jitter so that many processes do not come back in step, and
//! no limit on attempts (waiting is idle; giving up would only need a restart to undo).

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

/// A fresh sequence of reconnect delays.
pub fn reconnect_delays() -> ExponentialBackoff {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(10))
        .with_jitter()
        .without_max_times()
        .build()
}
