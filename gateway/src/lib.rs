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

/// Entry points for the fuzz targets (`gateway/fuzz`) into parsers that are otherwise
/// reached only from inside the SIP translator. Not an API.
#[doc(hidden)]
pub mod fuzzing {
    /// A PIDF body as a NOTIFY brings it (at most `max_body` bytes): whether it is taken,
    /// and if so that what it says, written back as PIDF, reads the same.
    pub fn pidf(body: &[u8], max_body: usize) -> bool {
        use crate::links::sip::pidf;
        match pidf::parse(body, max_body) {
            Ok(p) => {
                let again = pidf::emit("sip:fuzz@example.net", &p);
                assert_eq!(pidf::parse(again.as_bytes(), usize::MAX).ok(), Some(p));
                true
            }
            Err(_) => false,
        }
    }

    /// A `message/cpim` body as a MESSAGE brings it: the wrapper, and the IMDN notification
    /// it may carry (whether one was read).
    pub fn cpim(body: &[u8], max_body: usize) -> bool {
        use crate::links::sip::imdn;
        imdn::unwrap(body).is_ok_and(|c| imdn::notification(&c.body, max_body).is_ok())
    }

    /// A SIP header value as the translator reads it: an address, a tag, a Contact, a
    /// route list, a subscription state.
    pub fn sip_header(value: &str) {
        use crate::links::sip::map;
        let _ = map::address(value).and_then(|a| a.number());
        let _ = map::tag(value);
        let _ = map::contact_uri(value);
        let _ = map::split_list(value);
        let _ = map::sub_state(value).terminated();
    }
}
