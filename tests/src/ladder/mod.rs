//! The load ladder: what the gateway costs per request beside doing nothing. Each rung puts
//! one more thing between the same load generator and the same origin (a fast SSP "core"):
//!
//! - L0: generator → origin;
//! - L1: generator → tokio TCP relay → origin;
//! - L2: generator → minimal TLS pass-through (the gateway's own listener, TLS and pooled
//!   client, no XML) → origin;
//! - L3: generator (as a peer, mTLS) → the gateway's inbound path → origin (as the core);
//! - outbound: generator (as the core) → gateway X → gateway Y → origin.
//!
//! The generator and the servers run in separate processes pinned to separate CPUs, so CPU
//! time per request can be read from `/proc` for each server alone.

pub mod loadgen;
pub mod origin;
pub mod passthrough;
pub mod procstat;
pub mod relay;
pub mod report;
pub mod setup;
