//! Replicas of one gateway behind one address (`[cluster]`). An asynchronous answer may reach
//! a replica that did not send the request: the replica index in its transaction ID says
//! which one did, and the answer is handed to that replica's admin listener
//! (`POST /cluster/answer`, the body authenticated with the shared HMAC key), which completes
//! the waiting request.
//!
//! At most one answer reaches the originator:
//! - the issuing replica takes it (answers its waiting request, or drops it as late);
//! - it restarted since: it routes the answer by its token itself, as after a restart (so
//!   every copy of such an answer meets the same "routed once" record), and says so (200);
//! - it says the ID is not of its index (409: a misconfigured cluster): the receiving replica
//!   routes the answer by its token;
//! - it cannot be reached: the hand-over is retried until the request's deadline, then the
//!   answer is dropped (counted). Routing it by token instead could follow the 504 the issuing
//!   replica may already have given.
//!
//! All of this rests on each replica having its own index, at its own place in the siblings
//! list, and on every replica holding the signing key of the others. Two replicas with one
//! index would each take the other's answers for a restarted predecessor's, and the core
//! could get both a 504 and the real answer. So each replica asks every sibling who it is
//! (`POST /cluster/self`, signed like a hand-over) when it starts and every
//! [`CHECK_EVERY`], logs what is wrong, and exports the count as `ssp_cluster_conflicts`.

use std::time::Duration;

use http::StatusCode;

use super::Links;
use crate::ssp::{Message, NS_WV_SSP_13, Transaction};
use crate::token::Token;

use crate::ops::admin::MAC_HEADER;

/// How often a replica checks its siblings.
pub(crate) const CHECK_EVERY: Duration = Duration::from_secs(15);

/// A cluster misconfiguration found by asking a sibling who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// Its place in `[cluster] siblings`.
    pub sibling: usize,
    /// What is wrong.
    pub what: String,
}

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[cluster] siblings[{}]: {}", self.sibling, self.what)
    }
}

/// `replica N instance HEX`: what a replica says about itself.
fn report(replica: u8, instance: u32) -> String {
    format!("replica {replica} instance {instance:08x}\n")
}

fn parse_report(b: &[u8]) -> Option<(u8, u32)> {
    let s = std::str::from_utf8(b).ok()?;
    let mut w = s.split_ascii_whitespace();
    match (w.next(), w.next(), w.next(), w.next(), w.next()) {
        (Some("replica"), Some(r), Some("instance"), Some(i), None) => {
            Some((r.parse().ok()?, u32::from_str_radix(i, 16).ok()?))
        }
        _ => None,
    }
}

/// `path` on a sibling's admin listener (`base` is `http://HOST:PORT/`, checked at load).
fn admin_url(base: &http::Uri, path: &str) -> Option<http::Uri> {
    format!(
        "{}://{}{path}",
        base.scheme_str().unwrap_or("http"),
        base.authority().map(|a| a.as_str()).unwrap_or_default()
    )
    .parse()
    .ok()
}

/// What the issuing replica said about a handed-over answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Handoff {
    /// It issued the ID: answered (or dropped as late, its request having had its 504).
    Taken,
    /// It did not issue the ID (it is a newer process than the one that did).
    NotTheirs,
    /// No usable answer (down, timed out, misconfigured).
    Unreachable,
}

impl Links {
    /// The admin URL of the replica that issued `tok`, when that is another replica.
    pub(crate) fn sibling_of(&self, tok: &Token) -> Option<http::Uri> {
        self.siblings.as_ref()?;
        let replica = tok.replica();
        let cfg = self.cfg();
        if replica == cfg.cluster.replica {
            return None;
        }
        cfg.cluster.siblings.get(usize::from(replica)).cloned()
    }

    /// One attempt to hand `t` to the replica that issued `tok`.
    pub(crate) async fn hand_off(&self, tok: &Token, t: &Transaction) -> Option<Handoff> {
        let client = self.siblings.as_ref()?;
        let url = admin_url(&self.sibling_of(tok)?, "/cluster/answer")?;
        let body = Message::session("cluster", vec![t.clone()]).emit(NS_WV_SSP_13);
        let mac = self.live.load().keys.sign(body.as_bytes());
        let within = self.cfg().timeouts.connect.saturating_mul(2);
        let result = match client
            .post(
                &url,
                body,
                super::http::header(MAC_HEADER, &mac).as_slice(),
                within,
            )
            .await
        {
            Ok((StatusCode::OK, _)) => Handoff::Taken,
            Ok((StatusCode::CONFLICT, _)) => Handoff::NotTheirs,
            Ok((status, answer)) => {
                // 404 included: a wrong URL or a replica without the endpoint is not a
                // statement about the transaction.
                tracing::warn!(%url, %status, answer = %String::from_utf8_lossy(&answer), "replica refused a handed-over answer");
                Handoff::Unreachable
            }
            Err(e) => {
                tracing::warn!(%url, error = %e, "replica unreachable for a handed-over answer");
                Handoff::Unreachable
            }
        };
        let label = match result {
            Handoff::Taken => "taken",
            Handoff::NotTheirs => "not-theirs",
            Handoff::Unreachable => "unreachable",
        };
        self.metrics.handoffs.with_label_values(&[label]).inc();
        Some(result)
    }
}

impl Links {
    /// `POST /cluster/self`: who this replica is, told to a sibling that proves it holds our
    /// key (the body signed as a hand-over is); 401 otherwise.
    pub fn self_report(&self, body: &[u8], mac: Option<&str>) -> (StatusCode, String) {
        if !mac.is_some_and(|m| self.live.load().keys.verify(body, m)) {
            return (
                StatusCode::UNAUTHORIZED,
                "missing or wrong hand-over MAC\n".into(),
            );
        }
        (
            StatusCode::OK,
            report(self.cfg().cluster.replica, self.live.load().keys.instance()),
        )
    }

    /// Ask every sibling, ourselves included, who it is, and count what is wrong in
    /// `ssp_cluster_conflicts`. A sibling that cannot be reached (or predates the check: 404)
    /// says nothing either way: it is not counted.
    pub async fn check_cluster(&self) -> Vec<Conflict> {
        let Some(client) = self.siblings.as_ref() else {
            return Vec::new();
        };
        let me = self.cfg().cluster.replica;
        let body = report(me, self.live.load().keys.instance());
        let mac = self.live.load().keys.sign(body.as_bytes());
        let mut found = Vec::new();
        // A snapshot kept for the loop (it awaits each sibling): `CfgRef` is not held there.
        let live = self.live();
        for (i, base) in live.cfg.cluster.siblings.iter().enumerate() {
            let Some(url) = admin_url(base, "/cluster/self") else {
                continue;
            };
            let within = self.cfg().timeouts.connect.saturating_mul(2);
            let answer = client
                .post(
                    &url,
                    body.clone(),
                    super::http::header(MAC_HEADER, &mac).as_slice(),
                    within,
                )
                .await;
            let what = match answer {
                Ok((StatusCode::OK, b)) => match parse_report(&b) {
                    Some((r, inst))
                        if i == usize::from(me) && inst != self.live.load().keys.instance() =>
                    {
                        Some(format!(
                            "our own entry is answered by another process (replica {r}, \
                             instance {inst:08x}): two replicas have index {me}, or the list \
                             is in another order than the indexes"
                        ))
                    }
                    Some((r, _)) if usize::from(r) != i => Some(format!(
                        "it says it is replica {r}: the list must be in index order, each \
                         replica with its own index"
                    )),
                    Some(_) => None,
                    None => Some(format!(
                        "{url} answered something that is not a replica report: not a sibling's \
                         admin listener"
                    )),
                },
                Ok((StatusCode::UNAUTHORIZED, _)) => Some(
                    "it refuses our hand-over MAC: its hmac_key_file does not hold our signing \
                     key, so answers handed to it are lost"
                        .to_owned(),
                ),
                Ok((status, _)) => {
                    tracing::debug!(%url, %status, "sibling check: no report");
                    None
                }
                Err(e) => {
                    tracing::debug!(%url, error = %e, "sibling check: unreachable");
                    None
                }
            };
            if let Some(what) = what {
                found.push(Conflict { sibling: i, what });
            }
        }
        self.metrics.cluster_conflicts.set(found.len() as i64);
        found
    }

    /// Check the siblings and log what changed since `last` (the previous check's result).
    pub(crate) async fn recheck_cluster(&self, last: &mut Vec<Conflict>) {
        let found = self.check_cluster().await;
        if found != *last {
            for c in found.iter().filter(|c| !last.contains(c)) {
                tracing::error!("{c}");
            }
            if found.is_empty() {
                tracing::info!("cluster check: no conflicts left");
            }
            *last = found;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_reports_need_the_shared_key_and_parse_back() {
        let links = crate::links::tests::links();
        let body = b"replica 1 instance 01000000\n";
        let (st, _) = links.self_report(body, None);
        assert_eq!(st, StatusCode::UNAUTHORIZED);
        let (st, _) = links.self_report(body, Some(&links.live.load().keys.sign(b"other")));
        assert_eq!(st, StatusCode::UNAUTHORIZED);
        let (st, text) = links.self_report(body, Some(&links.live.load().keys.sign(body)));
        assert_eq!(st, StatusCode::OK);
        assert_eq!(
            parse_report(text.as_bytes()),
            Some((0, links.live.load().keys.instance()))
        );
        for bad in [
            "",
            "replica x instance 1",
            "replica 1 instance zz",
            "replica 1 instance 1 x",
        ] {
            assert_eq!(parse_report(bad.as_bytes()), None, "{bad:?}");
        }
    }

    #[test]
    fn the_replica_index_rides_in_the_instance() {
        use crate::token::Leg;
        let keys = crate::token::TokenKeys::new(&[vec![7u8; 32]], 60).with_replica(5);
        let tid = keys.issue(Leg::ToCore, 1, 0, 1, "t", "opy.example");
        let tok = keys.open(&tid).unwrap();
        assert_eq!(tok.replica(), 5);
        assert_eq!(tok.instance, keys.instance());
    }
}
