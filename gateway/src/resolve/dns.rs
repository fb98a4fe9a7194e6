//! The one module that talks to hickory-resolver (its API changes between minor versions).
//!
//! One hickory resolver per set of name servers, built once and shared. Its own record cache
//! is switched off: the route cache in [`super`] caches whole decisions until the smallest TTL
//! of the chain, on an explicit clock, and is the single source of TTL behaviour.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::Duration;

use hickory_resolver::Resolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{RData, RecordType};

use super::ddds::{Naptr, NaptrAnswer, Srv};

/// A set of name servers and the timeout of one query attempt.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NsSet {
    /// Servers (UDP and TCP on the same port).
    pub servers: Vec<SocketAddr>,
    /// Per attempt.
    pub timeout: Duration,
}

/// A lookup that got no usable answer: transient.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    /// What happened.
    pub message: String,
    /// The name servers failed (timeout, network, REFUSED), not just this name (SERVFAIL
    /// for one name is usually its own broken delegation): only these put the servers on
    /// hold-down, so one bad name cannot shut off lookups for every other.
    pub server: bool,
}

impl Failure {
    fn server(message: String) -> Failure {
        Failure {
            message,
            server: true,
        }
    }
}

/// Answer to a lookup of one record type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer<T> {
    /// Records, each with its TTL, and address records from the additional section.
    Records(Vec<T>, Vec<(String, IpAddr, u32)>),
    /// The name exists without records of this type.
    NoData(Option<u32>),
    /// The name does not exist.
    NxDomain(Option<u32>),
}

/// The resolvers, one per name-server set.
#[derive(Default)]
pub struct Dns {
    resolvers: Mutex<HashMap<NsSet, Resolver<TokioRuntimeProvider>>>,
}

impl std::fmt::Debug for Dns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dns").finish_non_exhaustive()
    }
}

/// FQDN text without the trailing dot.
fn name_text(n: &hickory_resolver::proto::rr::Name) -> String {
    let s = n.to_ascii();
    s.strip_suffix('.').map(str::to_owned).unwrap_or(s)
}

impl Dns {
    /// No resolvers yet (built on first use).
    pub fn new() -> Dns {
        Dns::default()
    }

    fn resolver(&self, ns: &NsSet) -> Result<Resolver<TokioRuntimeProvider>, Failure> {
        let mut m = self
            .resolvers
            .lock()
            .map_err(|_| Failure::server("resolver table unavailable".into()))?;
        if let Some(r) = m.get(ns) {
            return Ok(r.clone());
        }
        let servers = ns
            .servers
            .iter()
            .map(|sa| {
                let mut udp = ConnectionConfig::udp();
                udp.port = sa.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = sa.port();
                NameServerConfig::new(sa.ip(), true, vec![udp, tcp])
            })
            .collect();
        let mut b = Resolver::builder_with_config(
            ResolverConfig::from_name_servers(servers),
            TokioRuntimeProvider::default(),
        );
        let o = b.options_mut();
        o.use_hosts_file = ResolveHosts::Never;
        o.timeout = ns.timeout;
        o.attempts = 1;
        // The route cache is the cache (see the module header).
        o.cache_size = 0;
        o.edns0 = true;
        let r = b
            .build()
            .map_err(|e| Failure::server(format!("resolver setup: {e}")))?;
        m.insert(ns.clone(), r.clone());
        Ok(r)
    }

    async fn lookup(
        &self,
        ns: &NsSet,
        name: &str,
        rtype: RecordType,
    ) -> Result<Answer<hickory_resolver::proto::rr::Record>, Failure> {
        let fqdn = if name.ends_with('.') {
            name.to_owned()
        } else {
            format!("{name}.")
        };
        // A name DNS cannot carry (empty or over-long labels, from a user ID or a NAPTR) does
        // not exist; asking would only fail.
        if hickory_resolver::proto::rr::Name::from_utf8(&fqdn).is_err() {
            return Ok(Answer::NxDomain(None));
        }
        let r = self.resolver(ns)?;
        match r.lookup(fqdn.as_str(), rtype).await {
            Ok(l) => Ok(Answer::Records(
                {
                    // Answers may start with a CNAME chain: the records last no longer than
                    // the chain that led to them.
                    let chain = l
                        .answers()
                        .iter()
                        .filter(|rec| rec.record_type() == RecordType::CNAME)
                        .map(|rec| rec.ttl)
                        .min()
                        .unwrap_or(u32::MAX);
                    l.answers()
                        .iter()
                        .filter(|rec| rec.record_type() == rtype)
                        .map(|rec| {
                            let mut rec = rec.clone();
                            rec.ttl = rec.ttl.min(chain);
                            rec
                        })
                        .collect()
                },
                l.additionals()
                    .iter()
                    .filter_map(|rec| {
                        let ip = match &rec.data {
                            RData::A(a) => IpAddr::V4(a.0),
                            RData::AAAA(a) => IpAddr::V6(a.0),
                            _ => return None,
                        };
                        Some((name_text(&rec.name), ip, rec.ttl))
                    })
                    .collect(),
            )),
            Err(NetError::Dns(DnsError::NoRecordsFound(nr))) => match nr.response_code {
                ResponseCode::NXDomain => Ok(Answer::NxDomain(nr.negative_ttl)),
                ResponseCode::NoError => Ok(Answer::NoData(nr.negative_ttl)),
                other => Err(Failure {
                    message: format!("{fqdn} {rtype}: {other}"),
                    server: other == ResponseCode::Refused,
                }),
            },
            // SERVFAIL and the like: this name's trouble (a broken delegation, say), unless
            // the server refuses the whole tree.
            Err(NetError::Dns(DnsError::ResponseCode(code))) => Err(Failure {
                message: format!("{fqdn} {rtype}: {code}"),
                server: code == ResponseCode::Refused,
            }),
            Err(e) => Err(Failure::server(format!("{fqdn} {rtype}: {e}"))),
        }
    }

    /// NAPTR records of `name`.
    pub async fn naptr(&self, ns: &NsSet, name: &str) -> Result<NaptrAnswer, Failure> {
        Ok(match self.lookup(ns, name, RecordType::NAPTR).await? {
            Answer::Records(recs, _) => NaptrAnswer::Records(
                recs.into_iter()
                    .filter_map(|rec| match rec.data {
                        RData::NAPTR(n) => Some(Naptr {
                            order: n.order,
                            preference: n.preference,
                            flags: String::from_utf8_lossy(&n.flags).into_owned(),
                            services: String::from_utf8_lossy(&n.services).into_owned(),
                            regexp: String::from_utf8_lossy(&n.regexp).into_owned(),
                            replacement: if n.replacement.is_root() {
                                ".".into()
                            } else {
                                n.replacement.to_ascii()
                            },
                            ttl: rec.ttl,
                        }),
                        _ => None,
                    })
                    .collect(),
            ),
            Answer::NoData(t) => NaptrAnswer::NoData { negative_ttl: t },
            Answer::NxDomain(t) => NaptrAnswer::NxDomain { negative_ttl: t },
        })
    }

    /// SRV records of `name`, with address records from the additional section.
    pub async fn srv(&self, ns: &NsSet, name: &str) -> Result<Answer<Srv>, Failure> {
        Ok(match self.lookup(ns, name, RecordType::SRV).await? {
            Answer::Records(recs, extra) => Answer::Records(
                recs.into_iter()
                    .filter_map(|rec| match rec.data {
                        RData::SRV(s) => Some(Srv {
                            priority: s.priority,
                            weight: s.weight,
                            port: s.port,
                            target: if s.target.is_root() {
                                ".".into()
                            } else {
                                name_text(&s.target)
                            },
                            ttl: rec.ttl,
                        }),
                        _ => None,
                    })
                    .collect(),
                extra,
            ),
            Answer::NoData(t) => Answer::NoData(t),
            Answer::NxDomain(t) => Answer::NxDomain(t),
        })
    }

    /// A and AAAA records of `host` (IPv4 first), each with its TTL.
    pub async fn addrs(&self, ns: &NsSet, host: &str) -> Result<Answer<(IpAddr, u32)>, Failure> {
        let mut out = Vec::new();
        let mut negative = None;
        let mut nx = false;
        for rtype in [RecordType::A, RecordType::AAAA] {
            match self.lookup(ns, host, rtype).await? {
                Answer::Records(recs, _) => {
                    out.extend(recs.into_iter().filter_map(|rec| match rec.data {
                        RData::A(a) => Some((IpAddr::V4(a.0), rec.ttl)),
                        RData::AAAA(a) => Some((IpAddr::V6(a.0), rec.ttl)),
                        _ => None,
                    }))
                }
                Answer::NoData(t) => negative = negative.or(t),
                Answer::NxDomain(t) => {
                    negative = negative.or(t);
                    nx = true;
                }
            }
            if nx {
                break;
            }
        }
        Ok(if !out.is_empty() {
            Answer::Records(out, Vec::new())
        } else if nx {
            Answer::NxDomain(negative)
        } else {
            Answer::NoData(negative)
        })
    }
}
