//! The running gateway as the admin endpoints see it ([`crate::ops::admin::Admin`]).

use std::sync::Arc;

use bytes::Bytes;
use http::StatusCode;

use crate::ops::admin::Admin;
use crate::pipeline::{Gateway, answer};

/// The gateway, for the admin listener.
pub(super) struct Ops(pub Arc<Gateway>);

impl Admin for Ops {
    fn metrics_text(&self) -> String {
        self.0.metrics().render()
    }

    fn ready(&self) -> Result<String, String> {
        let g = &self.0;
        let summary = format!(
            "{} directory entries, {} associations, {} pending\n",
            g.directory().len(),
            g.associations(),
            g.pending()
        );
        if g.drain().is_draining() {
            Err(format!("draining: {summary}"))
        } else {
            Ok(format!("ready: {summary}"))
        }
    }

    fn reload(&self) -> Result<String, String> {
        match super::reload(&self.0) {
            Ok(r) if r.pending.is_empty() => {
                Ok(format!("reloaded: {} directory entries\n", r.entries))
            }
            Ok(r) => Ok(format!(
                "reloaded: {} directory entries; changed, in use after a restart: {}\n",
                r.entries,
                r.pending.join(", ")
            )),
            Err(e) => Err(format!("reload refused, what runs stays in use: {e}\n")),
        }
    }

    fn max_body(&self) -> usize {
        self.0.cfg().limits.xml.max_body
    }

    fn self_report(&self, body: &[u8], mac: Option<&str>) -> (StatusCode, String) {
        self.0.links().self_report(body, mac)
    }

    async fn cluster_answer(&self, body: Bytes, mac: Option<String>) -> (StatusCode, String) {
        answer::take_handed_answer(&self.0, &body, mac.as_deref())
    }
}
