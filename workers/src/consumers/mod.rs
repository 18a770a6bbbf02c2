//! One module per consumer; each is a [`crate::runtime::BatchHandler`].

pub mod commands;
pub mod event_log;
