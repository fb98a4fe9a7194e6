//! The running gateway as the admin endpoints see it ([`crate::ops::admin::Admin`]).

use std::sync::Arc;

use bytes::Bytes;
use http::StatusCode;

use super::Control;
use crate::ops::admin::Admin;
use crate::pipeline::answer;

/// The gateway, for the admin listener.
pub(super) struct Ops(pub Arc<Control>);

impl Admin for Ops {
    fn metrics_text(&self) -> String {
        self.0.gw.metrics().render()
    }

    fn authorized(&self, bearer: Option<&[u8]>) -> bool {
        match &*self.0.admin_token.load() {
            None => true,
            Some(t) => bearer.is_some_and(|b| crate::token::same_secret(b, t.as_bytes())),
        }
    }

    fn ready(&self) -> Result<String, String> {
        let g = &self.0.gw;
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

    async fn reload(&self) -> Result<String, String> {
        // Files are read and certificates parsed: off the runtime's workers.
        let ctl = self.0.clone();
        let result = tokio::task::spawn_blocking(move || ctl.reload())
            .await
            .map_err(|e| format!("reload did not finish: {e}\n"))?;
        match result {
            Ok(r) if r.pending.is_empty() => Ok(format!(
                "reloaded: {} directory entries, {} retired token keys\n",
                r.entries, r.retired_keys
            )),
            Ok(r) => Ok(format!(
                "reloaded: {} directory entries, {} retired token keys; changed, in use after a restart: {}\n",
                r.entries,
                r.retired_keys,
                r.pending.join(", ")
            )),
            Err(e) => Err(format!("reload refused, what runs stays in use: {e}\n")),
        }
    }

    fn max_body(&self) -> usize {
        self.0.gw.cfg().limits.xml.max_body
    }

    fn self_report(&self, body: &[u8], mac: Option<&str>) -> (StatusCode, String) {
        self.0.gw.links().self_report(body, mac)
    }

    async fn cluster_answer(&self, body: Bytes, mac: Option<String>) -> (StatusCode, String) {
        answer::take_handed_answer(&self.0.gw, &body, mac.as_deref())
    }
}
