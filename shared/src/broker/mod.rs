//! RabbitMQ runtime shared by every process: connecting with a name the management UI shows,
//! the topology, publishing with confirms, parking poison messages and batching deliveries.

mod consume;
mod publisher;
pub mod topology;

pub use consume::{Batch, ack_through, next_batch};
pub use publisher::{
    Outgoing, PublishError, Publisher, json_properties as publisher_json_properties,
};

use lapin::{Connection, ConnectionProperties};

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("cannot connect to RabbitMQ: {0}")]
    Connect(#[source] lapin::Error),
    #[error("RabbitMQ refused an operation: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("invalid AMQP name {0:?}")]
    Name(String),
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
    Connection::connect(url, props).await.map_err(BrokerError::Connect)
}

/// A short string for names built from configuration or input; never panics.
pub fn short(s: impl Into<String>) -> Result<lapin::types::ShortString, BrokerError> {
    let s = s.into();
    if s.len() > 255 {
        return Err(BrokerError::Name(s));
    }
    Ok(s.into())
}
