//! Operations: metrics and the admin listener.

pub(crate) mod admin;
pub mod logs;
pub mod metrics;
mod process;
