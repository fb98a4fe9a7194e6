//! ssp-gateway: a TLS-terminating OMA IMPS SSP edge proxy.
//!
//! It sits in front of an operator's legacy IMPS server ("the core"), rewrites the core's user
//! IDs to `wv:+MSISDN`, finds peer operators through ENUM and DNS SRV, and enforces peer policy.
//! See `README.md` for operation and `routes/example.toml` for configuration.

pub mod cli;
pub mod config;
pub mod directory;
pub mod rewrite;
pub mod ssp;
