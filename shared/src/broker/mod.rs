//! RabbitMQ runtime shared by every process: connecting with a name the management UI shows,
//! the topology, publishing with confirms, parking poison messages and batching deliveries.

mod consume;
mod publisher;
pub mod topology;

pub use consume::{Batch, ack_through, checked_routing_key, last_unsettled, next_batch};
pub use publisher::{
    Outgoing, PARKED_ROUTING_KEY, PublishError, Publisher,
    json_properties as publisher_json_properties,
};

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use lapin::{Connection, ConnectionProperties};

use crate::config::{AmqpSettings, redact_url};

/// Longest wait for one broker operation that is not a publish (those have
/// `amqp.confirm_timeout_secs`): connecting, opening or closing a channel or a connection,
/// consuming, acking. lapin answers them through the connection's I/O loop, and when the
/// connection dies at the wrong moment the answer may never come; a consumer that waits for it
/// stops forever (the fault-injection suite found one stuck in an ack across a broker restart).
pub const OP_TIMEOUT: Duration = Duration::from_secs(10);

/// `op`, or `None` when it took longer than [`OP_TIMEOUT`].
pub async fn bounded<F: Future>(op: F) -> Option<F::Output> {
    tokio::time::timeout(OP_TIMEOUT, op).await.ok()
}

/// Longest wait for the broker's close-ok when a worker stops. A close needs no answer to be
/// safe (what is unacked goes back to its queue either way), and its answer can be lost: when
/// the broker closes a channel at the moment we do, lapin fails the connection ("invalid
/// channel state: Closing") and the close never completes. Waited for with [`OP_TIMEOUT`],
/// two such closes in a row outlasted `shutdown.grace_secs` (10 s) in a drain test.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// `close` (of a channel or connection), or `None` after [`CLOSE_TIMEOUT`].
pub async fn close_bounded<F: Future>(close: F) -> Option<F::Output> {
    let closed = tokio::time::timeout(CLOSE_TIMEOUT, close).await.ok();
    if closed.is_none() {
        tracing::warn!("the broker did not confirm a close within {CLOSE_TIMEOUT:?}; going on");
    }
    closed
}

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("cannot connect to RabbitMQ: {0}")]
    Connect(#[source] lapin::Error),
    #[error("cannot connect to RabbitMQ: no answer within {0:?}")]
    ConnectTimeout(Duration),
    /// Every node of a cluster failed; each failure with its node (password hidden).
    #[error("cannot connect to any of the {count} RabbitMQ nodes: {failures}")]
    NoNode { count: usize, failures: String },
    #[error("RabbitMQ refused an operation: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("invalid AMQP name {0:?}")]
    Name(String),
    /// A role user may not declare, and the topology is not (all) there: run
    /// `showrunner topology` with the deploy user first.
    #[error(
        "{name} is missing from the vhost and this user may not declare it: run \
         `showrunner topology` with a user that may (deploy/README.md): {source}"
    )]
    TopologyMissing {
        name: String,
        #[source]
        source: lapin::Error,
    },
}

/// The name a process shows in the management UI: role, host and pid.
pub fn process_label(role: &str) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown-host".into());
    format!("showrunner-{role}@{host}#{}", std::process::id())
}

/// Opens a connection named after the process's role.
pub async fn connect(url: &str, role: &str) -> Result<Connection, BrokerError> {
    let props = ConnectionProperties::default().with_connection_name(process_label(role).into());
    // A node that is still starting may take the TCP connection and never answer the handshake.
    bounded(Connection::connect(url, props))
        .await
        .ok_or(BrokerError::ConnectTimeout(OP_TIMEOUT))?
        .map_err(BrokerError::Connect)
}

/// The nodes of the broker (`amqp.urls`, or `amqp.url` alone) and where the next connection
/// attempt starts. One per connection loop: the first connection goes to the first node that
/// answers, in the configured order; each later attempt starts with the node after the one the
/// last connection went to, so a process whose node went away fails over to another at once
/// instead of waiting for the lost node to refuse or time out first.
#[derive(Debug)]
pub struct Nodes {
    urls: Vec<String>,
    next: AtomicUsize,
}

impl Nodes {
    pub fn new(amqp: &AmqpSettings) -> Self {
        Self { urls: amqp.nodes().to_vec(), next: AtomicUsize::new(0) }
    }

    /// The order the next attempt tries the nodes in (indexes into the configured list).
    fn order(&self) -> impl Iterator<Item = usize> + use<> {
        let count = self.urls.len();
        let start = self.next.load(Ordering::Relaxed) % count.max(1);
        (0..count).map(move |i| (start + i) % count)
    }

    /// A connection named after the process's role to the first node that answers, and that
    /// node's URL with its password hidden (for the logs).
    pub async fn connect(&self, role: &str) -> Result<(Connection, String), BrokerError> {
        let mut failures = Vec::new();
        for i in self.order() {
            let url = &self.urls[i];
            match connect(url, role).await {
                Ok(conn) => {
                    self.next.store(i + 1, Ordering::Relaxed);
                    return Ok((conn, redact_url(url)));
                }
                // One node: its own error, as before clusters were configured.
                Err(error) if self.urls.len() == 1 => return Err(error),
                Err(error) => {
                    tracing::debug!(node = %redact_url(url), %error, "RabbitMQ node unavailable");
                    failures.push(format!("{}: {error}", redact_url(url)));
                }
            }
        }
        // Nothing answered: the next attempt starts one node further, so that a node that
        // accepts connections and then hangs does not come first every time.
        self.next.fetch_add(1, Ordering::Relaxed);
        Err(BrokerError::NoNode { count: self.urls.len(), failures: failures.join("; ") })
    }
}

/// A short string for names built from configuration or input; never panics.
pub fn short(s: impl Into<String>) -> Result<lapin::types::ShortString, BrokerError> {
    let s = s.into();
    if s.len() > 255 {
        return Err(BrokerError::Name(s));
    }
    Ok(s.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(urls: &[&str]) -> Nodes {
        Nodes { urls: urls.iter().map(|u| u.to_string()).collect(), next: AtomicUsize::new(0) }
    }

    #[test]
    fn the_first_attempt_follows_the_configured_order_and_a_reconnect_starts_after_the_node_it_lost()
     {
        let n = nodes(&["amqp://a", "amqp://b", "amqp://c"]);
        assert_eq!(n.order().collect::<Vec<_>>(), [0, 1, 2]);
        // Connected to b: when that connection is lost, c comes first and b last.
        n.next.store(2, Ordering::Relaxed);
        assert_eq!(n.order().collect::<Vec<_>>(), [2, 0, 1]);
        n.next.store(3, Ordering::Relaxed);
        assert_eq!(n.order().collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!(nodes(&["amqp://a"]).order().collect::<Vec<_>>(), [0]);
    }

    #[tokio::test]
    async fn nodes_that_refuse_are_skipped_and_reported_without_their_password() {
        // Ports that nothing listens on: bound, then released.
        let closed = || std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr());
        let (a, b) = (closed().expect("a port"), closed().expect("a port"));
        let n = nodes(&[
            &format!("amqp://u:mq-Pa55word@{a}/%2f"),
            &format!("amqp://u:mq-Pa55word@{b}/%2f"),
        ]);
        let error = n.connect("test").await.expect_err("nothing listens");
        let line = error.to_string();
        assert!(line.contains("any of the 2") && line.contains(&a.to_string()), "{line}");
        assert!(line.contains(&b.to_string()) && !line.contains("Pa55word"), "{line}");
        // The next attempt starts further on.
        assert_eq!(n.order().next(), Some(1));
    }
}
