//! What every Showrunner process shares: configuration, domain rules, message contracts, the
//! broker and database runtime, the event log and the bearer tokens. No HTTP here.

pub mod auth;
pub mod broker;
pub mod commands;
pub mod config;
pub mod contracts;
pub mod db;
pub mod domain;
pub mod egress;
pub mod entity;
pub mod event;
pub mod event_log;
pub mod inbound;
pub mod jobs;
pub mod live;
pub mod metrics;
pub mod outbox;
pub mod process;
pub mod resource;
pub mod retry;
pub mod settled;
pub mod shutdown;
pub mod storage;
pub mod telemetry;
pub mod tls;
pub mod topics;
pub mod trace;
