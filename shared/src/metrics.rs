//! Prometheus metrics of a process, in the text exposition format (version 0.0.4).
//!
//! A small registry written here rather than a crate: the process needs counters, gauges and
//! histograms with a few bounded labels and a text encoder, about 200 lines with no dependency
//! (`prometheus-client` would add its own derive macro crate, `parking_lot`, `dtoa` and `itoa`
//! for the same). One registry per process, like Prometheus' own clients: `showrunner up` (or
//! a test binary) runs several roles in one process and they share it. Labels are bounded by
//! construction: queue names, route templates (never raw paths), methods, status codes.
//! Updates happen per batch or per request; a series is a map entry behind a read lock.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use sea_orm::{DatabaseConnection, FromQueryResult};

use crate::db::sql;

/// Latency buckets in seconds, 1 ms to 30 s.
pub const LATENCY_BUCKETS: &[f64] =
    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

type Labels = Vec<String>;

fn key(values: &[&str]) -> Labels {
    values.iter().map(|v| (*v).to_string()).collect()
}

/// A family of series of one kind, keyed by label values.
struct Family<T> {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
    series: RwLock<BTreeMap<Labels, Arc<T>>>,
}

impl<T: Default> Family<T> {
    const fn new(name: &'static str, help: &'static str, labels: &'static [&'static str]) -> Self {
        Self { name, help, labels, series: RwLock::new(BTreeMap::new()) }
    }

    fn get(&self, values: &[&str]) -> Arc<T> {
        let labels = key(values);
        if let Some(s) = self.series.read().unwrap_or_else(|p| p.into_inner()).get(&labels) {
            return s.clone();
        }
        self.series.write().unwrap_or_else(|p| p.into_inner()).entry(labels).or_default().clone()
    }

    /// Series sorted by label values, so a scrape reads the same from one time to the next.
    fn snapshot(&self) -> BTreeMap<Labels, Arc<T>> {
        self.series.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn header(&self, out: &mut String, kind: &str) {
        let _ = writeln!(out, "# HELP {} {}", self.name, self.help);
        let _ = writeln!(out, "# TYPE {} {kind}", self.name);
    }

    fn label_text(&self, values: &[String], extra: Option<(&str, &str)>) -> String {
        let mut pairs: Vec<String> = self
            .labels
            .iter()
            .zip(values)
            .map(|(name, value)| format!("{name}=\"{}\"", escape(value)))
            .collect();
        if let Some((name, value)) = extra {
            pairs.push(format!("{name}=\"{value}\""));
        }
        if pairs.is_empty() { String::new() } else { format!("{{{}}}", pairs.join(",")) }
    }
}

/// A monotonically increasing count.
pub struct CounterVec(Family<AtomicU64>);

impl CounterVec {
    pub const fn new(
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
    ) -> Self {
        Self(Family::new(name, help, labels))
    }

    pub fn inc_by(&self, labels: &[&str], n: u64) {
        self.0.get(labels).fetch_add(n, Ordering::Relaxed);
    }

    pub fn inc(&self, labels: &[&str]) {
        self.inc_by(labels, 1);
    }

    /// The current value (0 for a series never touched).
    pub fn get(&self, labels: &[&str]) -> u64 {
        self.0.get(labels).load(Ordering::Relaxed)
    }

    fn encode(&self, out: &mut String) {
        self.0.header(out, "counter");
        for (labels, value) in self.0.snapshot() {
            let _ = writeln!(
                out,
                "{}{} {}",
                self.0.name,
                self.0.label_text(&labels, None),
                value.load(Ordering::Relaxed)
            );
        }
    }
}

/// A value that goes up and down.
pub struct GaugeVec(Family<AtomicI64>);

impl GaugeVec {
    pub const fn new(
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
    ) -> Self {
        Self(Family::new(name, help, labels))
    }

    pub fn add(&self, labels: &[&str], delta: i64) {
        self.0.get(labels).fetch_add(delta, Ordering::Relaxed);
    }

    pub fn get(&self, labels: &[&str]) -> i64 {
        self.0.get(labels).load(Ordering::Relaxed)
    }

    fn encode(&self, out: &mut String) {
        self.0.header(out, "gauge");
        for (labels, value) in self.0.snapshot() {
            let _ = writeln!(
                out,
                "{}{} {}",
                self.0.name,
                self.0.label_text(&labels, None),
                value.load(Ordering::Relaxed)
            );
        }
    }
}

#[derive(Default)]
struct Histogram {
    /// Per bucket (not cumulative), the last one being +Inf; then the sum and the count.
    state: Mutex<(Vec<u64>, f64, u64)>,
}

/// Observations counted into fixed buckets, with their sum.
pub struct HistogramVec {
    family: Family<Histogram>,
    buckets: &'static [f64],
}

impl HistogramVec {
    pub const fn new(
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
        buckets: &'static [f64],
    ) -> Self {
        Self { family: Family::new(name, help, labels), buckets }
    }

    pub fn observe(&self, labels: &[&str], value: f64) {
        let series = self.family.get(labels);
        let mut state = series.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.0.is_empty() {
            state.0 = vec![0; self.buckets.len() + 1];
        }
        let slot = self.buckets.iter().position(|b| value <= *b).unwrap_or(self.buckets.len());
        state.0[slot] += 1;
        state.1 += value;
        state.2 += 1;
    }

    pub fn observe_duration(&self, labels: &[&str], elapsed: Duration) {
        self.observe(labels, elapsed.as_secs_f64());
    }

    /// How many observations a series holds.
    pub fn count(&self, labels: &[&str]) -> u64 {
        self.family.get(labels).state.lock().unwrap_or_else(|p| p.into_inner()).2
    }

    fn encode(&self, out: &mut String) {
        let name = self.family.name;
        self.family.header(out, "histogram");
        for (labels, series) in self.family.snapshot() {
            let (buckets, sum, count) =
                series.state.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let mut cumulative = 0;
            for (i, bound) in self.buckets.iter().enumerate() {
                cumulative += buckets.get(i).copied().unwrap_or(0);
                let le = format!("{bound}");
                let labels = self.family.label_text(&labels, Some(("le", &le)));
                let _ = writeln!(out, "{name}_bucket{labels} {cumulative}");
            }
            let inf = self.family.label_text(&labels, Some(("le", "+Inf")));
            let _ = writeln!(out, "{name}_bucket{inf} {count}");
            let plain = self.family.label_text(&labels, None);
            let _ = writeln!(out, "{name}_sum{plain} {sum}");
            let _ = writeln!(out, "{name}_count{plain} {count}");
        }
    }
}

/// Most bounds a [`TimeHistogram`] takes.
const TIME_BUCKETS_MAX: usize = 24;

/// A histogram of durations without labels whose `observe` is three relaxed atomic adds, for
/// paths that run per delivery (the relay's fan-out: 100,000 observations a second and more),
/// where [`HistogramVec`]'s map lookup and lock would cost more than what they measure.
pub struct TimeHistogram {
    name: &'static str,
    help: &'static str,
    /// Upper bounds in seconds, ascending; at most [`TIME_BUCKETS_MAX`].
    buckets: &'static [f64],
    /// Per bucket (not cumulative), the one after the last bound being +Inf.
    counts: [AtomicU64; TIME_BUCKETS_MAX + 1],
    sum_nanos: AtomicU64,
}

impl TimeHistogram {
    pub const fn new(name: &'static str, help: &'static str, buckets: &'static [f64]) -> Self {
        assert!(buckets.len() <= TIME_BUCKETS_MAX, "too many buckets");
        Self {
            name,
            help,
            buckets,
            counts: [const { AtomicU64::new(0) }; TIME_BUCKETS_MAX + 1],
            sum_nanos: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let slot = self.buckets.iter().position(|b| seconds <= *b).unwrap_or(self.buckets.len());
        self.counts[slot].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.counts[..=self.buckets.len()].iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    fn encode(&self, out: &mut String) {
        let name = self.name;
        let _ = writeln!(out, "# HELP {name} {}", self.help);
        let _ = writeln!(out, "# TYPE {name} histogram");
        let mut cumulative = 0;
        for (i, bound) in self.buckets.iter().enumerate() {
            cumulative += self.counts[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        cumulative += self.counts[self.buckets.len()].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum {sum}");
        let _ = writeln!(out, "{name}_count {cumulative}");
    }
}

fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

// The process's metrics. Queue labels are queue names (a fixed set per deployment).

pub static MESSAGES_CONSUMED: CounterVec = CounterVec::new(
    "showrunner_messages_consumed_total",
    "Deliveries taken from a queue.",
    &["queue"],
);
pub static MESSAGES_ACKED: CounterVec = CounterVec::new(
    "showrunner_messages_acked_total",
    "Deliveries acknowledged after their effect was committed (or they were parked).",
    &["queue"],
);
pub static MESSAGES_REJECTED: CounterVec = CounterVec::new(
    "showrunner_messages_rejected_total",
    "Deliveries handed back to the broker unprocessed (nack, or an ack the closed channel could not carry).",
    &["queue"],
);
pub static MESSAGES_PARKED: CounterVec = CounterVec::new(
    "showrunner_messages_parked_total",
    "Messages moved to a parking lot (<queue>.parked).",
    &["queue"],
);
pub static MESSAGES_RETRIED: CounterVec = CounterVec::new(
    "showrunner_messages_retried_total",
    "Retries: a failed handler run tried again (counted per message), or a job attempt scheduled again.",
    &["queue"],
);
pub static HANDLER_SECONDS: HistogramVec = HistogramVec::new(
    "showrunner_handler_duration_seconds",
    "Time to apply one batch (or run one job attempt), retries included.",
    &["queue"],
    LATENCY_BUCKETS,
);
pub static HTTP_REQUESTS: CounterVec = CounterVec::new(
    "showrunner_http_requests_total",
    "HTTP requests answered, by route template and status.",
    &["method", "route", "status"],
);
pub static HTTP_SECONDS: HistogramVec = HistogramVec::new(
    "showrunner_http_request_duration_seconds",
    "Time to answer an HTTP request (to the response head; a WebSocket upgrade ends there).",
    &["method", "route"],
    LATENCY_BUCKETS,
);
pub static WEBSOCKETS: GaugeVec =
    GaugeVec::new("showrunner_websocket_connections", "Open WebSocket connections.", &[]);
/// Bounds for the relay's fan-out, 100 us to 5 s: a frame reaches a socket in well under a
/// millisecond when nothing waits, and the benchmark's limit of interest is 20 ms.
pub const FANOUT_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15,
    0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0,
];
pub static RELAY_FANOUT_SECONDS: TimeHistogram = TimeHistogram::new(
    "showrunner_relay_fanout_seconds",
    "Per event with at least one recipient: from its arrival at the relay to its frame written to the last matching WebSocket.",
    FANOUT_BUCKETS,
);
pub static RELAY_SOCKET_SECONDS: TimeHistogram = TimeHistogram::new(
    "showrunner_relay_socket_seconds",
    "Per frame and socket: from the event's arrival at the relay to its frame written to that WebSocket.",
    FANOUT_BUCKETS,
);
pub static RELAY_CAUGHT_UP: CounterVec = CounterVec::new(
    "showrunner_relay_caught_up_events_total",
    "Events read from the event log for WebSockets whose resume (or subscribe) held more live frames than realtime.send_buffer: they reach those sockets from there.",
    &[],
);
pub static BROKER_RECONNECTS: CounterVec = CounterVec::new(
    "showrunner_broker_connects_total",
    "RabbitMQ connections opened (the first one, then one per reconnect), by role.",
    &["role"],
);
pub static RETENTION_DELETED: CounterVec = CounterVec::new(
    "showrunner_retention_deleted_total",
    "Rows deleted by the retention sweep, by table.",
    &["table"],
);
pub static RETENTION_ERRORS: CounterVec = CounterVec::new(
    "showrunner_retention_errors_total",
    "Retention sweeps of one table that failed (activity_log: its partitions not made or dropped).",
    &["table"],
);
/// Bounds for one table's retention sweep: a batch of a few thousand rows takes milliseconds;
/// a backlog is worked off for up to half `retention.interval_secs`.
pub const SWEEP_BUCKETS: &[f64] =
    &[0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 150.0, 300.0];
pub static RETENTION_SECONDS: HistogramVec = HistogramVec::new(
    "showrunner_retention_sweep_seconds",
    "Time one table's retention sweep took, all its batches.",
    &["table"],
    SWEEP_BUCKETS,
);

/// The process's metrics in the text format.
pub fn encode() -> String {
    // Zero open sockets is a value worth showing, not a missing series.
    WEBSOCKETS.add(&[], 0);
    let mut out = String::with_capacity(8 * 1024);
    for counter in [
        &MESSAGES_CONSUMED,
        &MESSAGES_ACKED,
        &MESSAGES_REJECTED,
        &MESSAGES_PARKED,
        &MESSAGES_RETRIED,
        &HTTP_REQUESTS,
        &BROKER_RECONNECTS,
        &RELAY_CAUGHT_UP,
        &RETENTION_DELETED,
        &RETENTION_ERRORS,
    ] {
        counter.encode(&mut out);
    }
    HANDLER_SECONDS.encode(&mut out);
    HTTP_SECONDS.encode(&mut out);
    RETENTION_SECONDS.encode(&mut out);
    WEBSOCKETS.encode(&mut out);
    RELAY_FANOUT_SECONDS.encode(&mut out);
    RELAY_SOCKET_SECONDS.encode(&mut out);
    out
}

/// The `Content-Type` of [`encode`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Gauges read from the database at scrape time: the events committed and not yet shipped, those
/// the notification worker has not read, and the jobs by status.
/// Nothing is written if the database does not answer (the scrape still shows the rest).
pub async fn encode_database(db: &DatabaseConnection) -> String {
    #[derive(FromQueryResult)]
    struct Count {
        n: i64,
    }
    #[derive(FromQueryResult)]
    struct ByStatus {
        status: crate::jobs::JobStatus,
        n: i64,
    }
    let mut out = String::new();
    let query = async {
        let outbox =
            // The event log's rows the shipper has not published yet, and what an older version
            // left in the outbox (the name stays for dashboards that graph it).
            Count::find_by_statement(sql(
                "SELECT (SELECT count(*) FROM event_log WHERE seq > \
                   (SELECT published_seq FROM event_log_shipper WHERE id = 1)) \
                 + (SELECT count(*) FROM outbox) AS n",
                [],
            ))
            .one(db)
            .await?;
        // Shipped events the notification worker has not read yet (the queue depth it had
        // when it had a queue; numbers have holes where a producer rolled back, so this counts
        // rows).
        let unread = Count::find_by_statement(sql(
            "SELECT count(*) AS n FROM event_log WHERE seq > \
               (SELECT position FROM notification_cursor WHERE id = 1) \
             AND seq <= (SELECT published_seq FROM event_log_shipper WHERE id = 1)",
            [],
        ))
        .one(db)
        .await?;
        let jobs = ByStatus::find_by_statement(sql(
            "SELECT status, count(*) AS n FROM jobs GROUP BY status ORDER BY status",
            [],
        ))
        .all(db)
        .await?;
        Ok::<_, sea_orm::DbErr>((outbox, unread, jobs))
    };
    let Ok(Ok((outbox, unread, jobs))) = tokio::time::timeout(Duration::from_secs(2), query).await
    else {
        return out;
    };
    out.push_str(
        "# HELP showrunner_outbox_backlog Events committed and not yet shipped to the broker.\n",
    );
    out.push_str("# TYPE showrunner_outbox_backlog gauge\n");
    let _ = writeln!(out, "showrunner_outbox_backlog {}", outbox.map_or(0, |c| c.n));
    out.push_str(
        "# HELP showrunner_notification_backlog Shipped events the notification worker has not \
         read yet.\n# TYPE showrunner_notification_backlog gauge\n",
    );
    let _ = writeln!(out, "showrunner_notification_backlog {}", unread.map_or(0, |c| c.n));
    out.push_str("# HELP showrunner_jobs Jobs by status.\n# TYPE showrunner_jobs gauge\n");
    for status in crate::jobs::JobStatus::ALL {
        let n = jobs.iter().find(|c| c.status == status).map_or(0, |c| c.n);
        let _ = writeln!(out, "showrunner_jobs{{status=\"{status}\"}} {n}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_gauges_encode_with_their_labels() {
        static C: CounterVec = CounterVec::new("t_total", "help", &["queue"]);
        static G: GaugeVec = GaugeVec::new("t_open", "open", &[]);
        C.inc(&["b"]);
        C.inc_by(&["a\"x"], 3);
        G.add(&[], 2);
        G.add(&[], -1);
        let mut out = String::new();
        C.encode(&mut out);
        G.encode(&mut out);
        assert_eq!(
            out,
            "# HELP t_total help\n# TYPE t_total counter\nt_total{queue=\"a\\\"x\"} 3\n\
             t_total{queue=\"b\"} 1\n# HELP t_open open\n# TYPE t_open gauge\nt_open 1\n"
        );
    }

    #[test]
    fn histograms_are_cumulative_with_sum_and_count() {
        static H: HistogramVec = HistogramVec::new("t_seconds", "h", &["q"], &[0.1, 1.0]);
        for v in [0.05, 0.5, 0.7, 5.0] {
            H.observe(&["x"], v);
        }
        let mut out = String::new();
        H.encode(&mut out);
        let lines: Vec<&str> = out.lines().skip(2).collect();
        assert_eq!(
            lines,
            [
                "t_seconds_bucket{q=\"x\",le=\"0.1\"} 1",
                "t_seconds_bucket{q=\"x\",le=\"1\"} 3",
                "t_seconds_bucket{q=\"x\",le=\"+Inf\"} 4",
                "t_seconds_sum{q=\"x\"} 6.25",
                "t_seconds_count{q=\"x\"} 4",
            ]
        );
        assert_eq!(H.count(&["x"]), 4);
    }

    #[test]
    fn time_histograms_are_cumulative_with_sum_and_count() {
        static T: TimeHistogram = TimeHistogram::new("t_fanout_seconds", "h", &[0.001, 0.01]);
        for ms in [0, 1, 5, 50] {
            T.observe(Duration::from_millis(ms));
        }
        let mut out = String::new();
        T.encode(&mut out);
        assert!(out.contains("t_fanout_seconds_bucket{le=\"0.001\"} 2\n"), "{out}");
        assert!(out.contains("t_fanout_seconds_bucket{le=\"0.01\"} 3\n"), "{out}");
        assert!(out.contains("t_fanout_seconds_bucket{le=\"+Inf\"} 4\n"), "{out}");
        assert!(out.contains("t_fanout_seconds_sum 0.056\n"), "{out}");
        assert!(out.contains("t_fanout_seconds_count 4\n"), "{out}");
        assert_eq!(T.count(), 4);
    }

    #[test]
    fn the_process_registry_names_every_family() {
        MESSAGES_CONSUMED.inc(&["unit"]);
        let text = encode();
        for name in [
            "showrunner_messages_consumed_total",
            "showrunner_messages_acked_total",
            "showrunner_messages_rejected_total",
            "showrunner_messages_parked_total",
            "showrunner_messages_retried_total",
            "showrunner_handler_duration_seconds",
            "showrunner_http_requests_total",
            "showrunner_http_request_duration_seconds",
            "showrunner_websocket_connections",
            "showrunner_relay_fanout_seconds",
            "showrunner_relay_socket_seconds",
        ] {
            assert!(text.contains(&format!("# TYPE {name} ")), "{name} missing");
        }
    }
}
