//! Operations: metrics and the admin listener.

pub mod admin;
pub mod metrics;
