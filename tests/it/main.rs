//! Integration tests against the real RabbitMQ and PostgreSQL. Each test starts its own stack
//! (own database, own vhost), so they run in parallel and leave nothing behind.

mod authz;
mod bad_input;
mod broker;
mod compositions;
mod drain;
mod episodes;
mod hostile;
mod jobs;
mod limits;
mod ops;
mod realtime;
mod resilience;
mod stray;
mod support;
