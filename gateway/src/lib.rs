//! ssp-gateway: a TLS-terminating OMA IMPS SSP edge proxy.
//!
//! It sits in front of an operator's legacy IMPS server ("the core"), rewrites the core's user
//! IDs to `wv:+MSISDN`, finds peer operators through ENUM and DNS SRV, and enforces peer policy.
//! See `README.md` for operation, `routes/example.toml` for configuration and
//! `gateway/PROTOCOL.md` for the SSP profile it speaks.
//!
//! Modules, from the bottom up: `ssp` (the message model and codec), `config`, `directory`,
//! `rewrite`, `token`, `tls`, `error` (the one failure classification), `web` (HTTP pieces),
//! `drain`, `ops` (metrics, admin endpoints), `resolve` (DNS only), `links` (the far sides),
//! `pipeline` (the request path, stage by stage), `app` (the service: listeners, start, stop).

pub mod app;
pub mod budget;
pub mod certs;
pub mod cli;
pub mod config;
pub mod directory;
pub mod drain;
pub mod error;
pub mod links;
pub mod ops;
pub mod pipeline;
pub mod resolve;
pub mod rewrite;
pub mod ssp;
pub mod store;
pub mod tls;
pub mod token;
pub mod web;
