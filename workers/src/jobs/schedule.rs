//! The retry schedule: exponential backoff with jitter from `jobs.*` configuration. Pure, so
//! it is tested with a table of cases.

use std::time::Duration;

use showrunner_shared::config::JobSettings;

/// Fraction of spread around the exponential delay: each delay is drawn from
/// `[0.8 d, 1.2 d)`, so retries of many jobs failing together spread out, while with a factor
/// of 1.5 or more every delay is still longer than the one before.
const JITTER: f64 = 0.2;

/// The policy of one job.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    pub initial: Duration,
    pub factor: f64,
    pub max: Duration,
}

impl RetryPolicy {
    pub fn from_settings(jobs: &JobSettings) -> Self {
        Self {
            initial: Duration::from_millis(jobs.initial_delay_ms),
            factor: jobs.backoff_factor,
            max: Duration::from_millis(jobs.max_delay_ms),
        }
    }

    /// The delay after failed attempt `attempt` (1-based). `unit` is a uniform draw from
    /// `[0, 1)`; the result never exceeds `max`.
    pub fn delay_after(&self, attempt: u32, unit: f64) -> Duration {
        let exponent = attempt.saturating_sub(1).min(1_000) as i32;
        let base = self.initial.as_secs_f64() * self.factor.powi(exponent);
        let capped = base.min(self.max.as_secs_f64());
        let jittered = capped * (1.0 - JITTER + 2.0 * JITTER * unit.clamp(0.0, 1.0));
        Duration::from_secs_f64(jittered.min(self.max.as_secs_f64()))
    }
}

/// Whether another attempt follows failed attempt `attempt` of `max_attempts`.
pub fn retries_left(attempt: i32, max_attempts: i32) -> bool {
    attempt < max_attempts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(initial_ms: u64, factor: f64, max_ms: u64) -> RetryPolicy {
        RetryPolicy {
            initial: Duration::from_millis(initial_ms),
            factor,
            max: Duration::from_millis(max_ms),
        }
    }

    #[test]
    fn delays_grow_exponentially_with_bounded_jitter() {
        // (policy, failed attempt, draw, expected delay in ms)
        let cases = [
            (policy(100, 2.0, 10_000), 1, 0.5, 100),
            (policy(100, 2.0, 10_000), 2, 0.5, 200),
            (policy(100, 2.0, 10_000), 3, 0.5, 400),
            (policy(100, 2.0, 10_000), 1, 0.0, 80),
            (policy(100, 2.0, 10_000), 1, 0.999_999, 119),
            (policy(100, 2.0, 10_000), 10, 0.5, 10_000),
            (policy(100, 2.0, 10_000), 10, 0.999, 10_000),
            (policy(100, 2.0, 10_000), 10, 0.0, 8_000),
            (policy(1_000, 1.0, 5_000), 7, 0.5, 1_000),
            (policy(1_000, 3.0, 60_000), 3, 0.5, 9_000),
            (policy(1_000, 2.0, 60_000), u32::MAX, 0.5, 60_000),
            (policy(1_000, 2.0, 60_000), 0, 0.5, 1_000),
        ];
        for (p, attempt, unit, expected) in cases {
            assert_eq!(
                p.delay_after(attempt, unit).as_millis(),
                expected,
                "{p:?} attempt {attempt} draw {unit}"
            );
        }
    }

    #[test]
    fn with_factor_two_each_delay_exceeds_the_last_whatever_the_draws() {
        let p = policy(100, 2.0, 60_000);
        for attempt in 1..8 {
            let longest_now = p.delay_after(attempt, 0.999_999);
            let shortest_next = p.delay_after(attempt + 1, 0.0);
            assert!(shortest_next > longest_now, "attempt {attempt}");
        }
    }

    #[test]
    fn retries_stop_at_max_attempts() {
        for (attempt, max, expected) in [(1, 3, true), (2, 3, true), (3, 3, false), (1, 1, false)] {
            assert_eq!(retries_left(attempt, max), expected, "{attempt}/{max}");
        }
    }
}
