//! ssp-gateway: a TLS-terminating OMA IMPS SSP edge proxy.
//!
//! It sits in front of an operator's legacy IMPS server ("the core"), rewrites the core's user
//! IDs to `wv:+MSISDN`, finds peer operators through ENUM and DNS SRV, and enforces peer policy.
//! See `README.md` for operation and `routes/example.toml` for configuration.

pub mod certs;
pub mod cli;
pub mod config;
pub mod directory;
pub mod ops;
pub mod relay;
pub mod resolve;
pub mod rewrite;
pub mod ssp;
pub mod tls;
pub mod token;
