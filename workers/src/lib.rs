//! Showrunner's workers: the role skeleton (`role`: the roles and how each is started,
//! reconnected and drained), the consume runtime, one consumer module per queue, and the parts
//! of the roles.

pub mod consumers;
pub mod jobs;
pub mod notifier;
mod observe;
pub mod ops;
pub mod partitions;
pub mod retention;
pub mod role;
pub mod runtime;
pub mod session;
pub mod shipper;
pub mod supervisor;

pub use role::Role;
