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
use std::time::Duration;

use lapin::{Connection, ConnectionProperties};

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

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("cannot connect to RabbitMQ: {0}")]
    Connect(#[source] lapin::Error),
    #[error("cannot connect to RabbitMQ: no answer within {0:?}")]
    ConnectTimeout(Duration),
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

/// A short string for names built from configuration or input; never panics.
pub fn short(s: impl Into<String>) -> Result<lapin::types::ShortString, BrokerError> {
    let s = s.into();
    if s.len() > 255 {
        return Err(BrokerError::Name(s));
    }
    Ok(s.into())
}
