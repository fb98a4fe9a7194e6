//! Test infrastructure for ssp-gateway (never part of the production binary):
//!
//! - [`core_sim`]: a small legacy IMPS server ("the core") speaking SSP to its gateway;
//! - [`baraza_peer`]: a peer that behaves exactly as the real Baraza captures show;
//! - [`federation`]: operators (core simulator + gateway) on loopback with test-time certificates;
//! - [`dnslab`]: zones served by an in-process hickory-server or a real NSD;
//! - [`faults`]: the fault-injection rig (gateway processes killed and restarted, counted traffic);
//! - [`pglab`]: a PostgreSQL server started by the tests;
//! - [`siplab`], [`sipua`], [`xmpplab`]: SIP and XMPP operators (Kamailio and sipp, Prosody
//!   and slixmpp clients) for the translators' tests; [`xmpppeer`]: an XMPP-only operator in
//!   process, for the demo;
//! - [`ladder`]: the load ladder (origin, relay, pass-through, load generator).
#![allow(clippy::unwrap_used)]

pub mod attacker;
pub mod baraza_peer;
pub mod core_sim;
pub mod dates;
pub mod dnslab;
pub mod faults;
pub mod federation;
pub mod ladder;
pub mod pglab;
pub mod ports;
pub mod siplab;
pub mod sipua;
pub mod xmpplab;
pub mod xmpppeer;
