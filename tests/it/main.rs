//! Integration tests against the real RabbitMQ and PostgreSQL. Each test starts its own stack
//! (own database, own vhost), so they run in parallel and leave nothing behind.

mod authz;
mod bad_input;
mod broker;
mod compositions;
mod drain;
mod edge;
mod episodes;
mod event_path;
mod files;
mod hostile;
mod jobs;
mod jobs_locks;
mod jobs_plans;
mod jobs_prod;
mod limits;
mod nodes;
mod notifier;
mod oidc;
mod ops;
mod paging;
mod permissions;
mod pool;
mod realtime;
mod recovery;
mod resilience;
mod retention;
mod stray;
mod support;
mod waits;
