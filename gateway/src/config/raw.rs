//! The config file as serde reads it: strict (unknown keys are errors) and untyped beyond
//! TOML's own types. [`super::validate`] turns it into the [`super::Config`] the gateway runs on.

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) gateway: RawGateway,
    #[serde(default)]
    pub(super) directory: RawDirectory,
    #[serde(default)]
    pub(super) listen: RawListen,
    #[serde(default)]
    pub(super) tls: RawTls,
    #[serde(default)]
    pub(super) core: Option<RawCore>,
    #[serde(default)]
    pub(super) timeouts: RawTimeouts,
    #[serde(default)]
    pub(super) limits: RawLimits,
    #[serde(default)]
    pub(super) policy: RawPolicy,
    #[serde(default)]
    pub(super) resolver: Option<RawResolver>,
    #[serde(default, rename = "peer")]
    pub(super) peers: Vec<RawPeer>,
    #[serde(default, rename = "route")]
    pub(super) routes: Vec<RawRoute>,
    #[serde(default)]
    pub(super) cluster: RawCluster,
    #[serde(default)]
    pub(super) store: RawStore,
    #[serde(default)]
    pub(super) sip: Option<RawSip>,
    #[serde(default)]
    pub(super) xmpp: Option<RawXmpp>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawXmpp {
    pub(super) listen: String,
    #[serde(default)]
    pub(super) max_stanza: Option<i64>,
    #[serde(default)]
    pub(super) idle: Option<String>,
    #[serde(default)]
    pub(super) auth_timeout: Option<String>,
    #[serde(default)]
    pub(super) receipt_wait: Option<String>,
    #[serde(default)]
    pub(super) dialback_secret_file: Option<String>,
    #[serde(default)]
    pub(super) trust: Vec<String>,
    #[serde(default)]
    pub(super) open: bool,
    #[serde(default)]
    pub(super) require_tls: Option<bool>,
    #[serde(default)]
    pub(super) allow_dialback: Option<bool>,
    #[serde(default, rename = "peer")]
    pub(super) peers: Vec<RawXmppPeer>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawXmppPeer {
    pub(super) domain: String,
    #[serde(default)]
    pub(super) require_tls: Option<bool>,
    #[serde(default)]
    pub(super) allow_dialback: Option<bool>,
    #[serde(default)]
    pub(super) rate: Option<u32>,
    #[serde(default)]
    pub(super) burst: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSip {
    pub(super) listen: String,
    #[serde(default)]
    pub(super) advertise: Option<String>,
    #[serde(default)]
    pub(super) tls_listen: Option<String>,
    #[serde(default)]
    pub(super) max_body: Option<i64>,
    #[serde(default)]
    pub(super) subscribe_expires: Option<String>,
    #[serde(default, rename = "peer")]
    pub(super) peers: Vec<RawSipPeer>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSipPeer {
    pub(super) domain: String,
    #[serde(default)]
    pub(super) addresses: Vec<String>,
    #[serde(default)]
    pub(super) tls: bool,
    #[serde(default)]
    pub(super) trust: Vec<String>,
    #[serde(default)]
    pub(super) imdn: bool,
    #[serde(default)]
    pub(super) rate: Option<u32>,
    #[serde(default)]
    pub(super) burst: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStore {
    pub(super) url: Option<String>,
    pub(super) sync: Option<String>,
    pub(super) lease: Option<String>,
    pub(super) keep: Option<String>,
    pub(super) max_validity: Option<String>,
    pub(super) retry_min: Option<String>,
    pub(super) retry_max: Option<String>,
    pub(super) queue: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCluster {
    #[serde(default)]
    pub(super) replica: Option<RawReplica>,
    #[serde(default)]
    pub(super) siblings: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum RawReplica {
    Index(i64),
    Word(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGateway {
    pub(super) public_domain: String,
    pub(super) core_domains: Vec<String>,
    pub(super) country_code: String,
    #[serde(default)]
    pub(super) trunk_prefix: Option<String>,
    #[serde(default)]
    pub(super) international_prefix: Option<String>,
    #[serde(default)]
    pub(super) core_hosts: Vec<String>,
    #[serde(default)]
    pub(super) extra_namespaces: Vec<String>,
    #[serde(default)]
    pub(super) hmac_key_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawListen {
    pub(super) peer: Option<String>,
    pub(super) core: Option<String>,
    pub(super) admin: Option<String>,
    #[serde(default)]
    pub(super) admin_token_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    pub(super) cert: Option<String>,
    pub(super) key: Option<String>,
    #[serde(default)]
    pub(super) trust: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCore {
    pub(super) url: String,
    #[serde(default)]
    pub(super) mode: Option<String>,
    #[serde(default)]
    pub(super) auth: Option<String>,
    #[serde(default)]
    pub(super) allow: Vec<String>,
    #[serde(default)]
    pub(super) tls: bool,
    #[serde(default)]
    pub(super) trust: Vec<String>,
    #[serde(default)]
    pub(super) pins: Vec<String>,
    #[serde(default)]
    pub(super) id_style: Option<String>,
    #[serde(default)]
    pub(super) queue: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTimeouts {
    pub(super) connect: Option<String>,
    pub(super) handshake: Option<String>,
    pub(super) request: Option<String>,
    pub(super) idle: Option<String>,
    pub(super) association: Option<String>,
    pub(super) drain: Option<String>,
    pub(super) header: Option<String>,
    pub(super) body: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    pub(super) max_body: Option<usize>,
    pub(super) max_depth: Option<usize>,
    pub(super) max_attrs: Option<usize>,
    pub(super) max_attr_len: Option<usize>,
    pub(super) max_text_len: Option<usize>,
    pub(super) max_elements: Option<usize>,
    pub(super) max_transactions: Option<usize>,
    pub(super) max_in_flight: Option<usize>,
    pub(super) max_connections: Option<usize>,
    pub(super) max_connections_per_source: Option<usize>,
    pub(super) max_unauthenticated: Option<usize>,
    pub(super) max_unauthenticated_per_source: Option<usize>,
    pub(super) min_body_rate: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawResolver {
    pub(super) nameservers: Vec<String>,
    #[serde(default)]
    pub(super) timeout: Option<String>,
    #[serde(default)]
    pub(super) attempt_timeout: Option<String>,
    #[serde(default)]
    pub(super) srv_label: Option<String>,
    #[serde(default)]
    pub(super) fallbacks: Option<Vec<String>>,
    #[serde(default)]
    pub(super) last_resort: Option<String>,
    #[serde(default)]
    pub(super) negative_min_ttl: Option<String>,
    #[serde(default)]
    pub(super) negative_max_ttl: Option<String>,
    #[serde(default)]
    pub(super) hold_down: Option<String>,
    #[serde(default)]
    pub(super) stale_max: Option<String>,
    #[serde(default)]
    pub(super) cache_entries: Option<usize>,
    #[serde(default, rename = "enum")]
    pub(super) enums: Vec<RawEnum>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEnum {
    pub(super) suffix: String,
    #[serde(default)]
    pub(super) nameservers: Vec<String>,
    #[serde(default)]
    pub(super) timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPolicy {
    pub(super) originator_rate: Option<u32>,
    pub(super) originator_burst: Option<u32>,
    #[serde(default)]
    pub(super) accept_unlisted_peers: bool,
    #[serde(default)]
    pub(super) search_wildcards: Option<String>,
    #[serde(default)]
    pub(super) search_min_digits: Option<usize>,
    #[serde(default)]
    pub(super) search_unregistered: Option<String>,
    #[serde(default)]
    pub(super) originator_check: Option<String>,
    #[serde(default)]
    pub(super) accept_local_names: bool,
    pub(super) association_rate: Option<u32>,
    pub(super) association_burst: Option<u32>,
    pub(super) failure_rate: Option<u32>,
    pub(super) failure_burst: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDirectory {
    pub(super) file: Option<String>,
    #[serde(default, rename = "template")]
    pub(super) templates: Vec<RawTemplate>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTemplate {
    pub(super) core: String,
    pub(super) public: String,
    #[serde(default)]
    pub(super) ranges: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPeer {
    pub(super) domain: String,
    #[serde(default)]
    pub(super) urls: Vec<String>,
    #[serde(default)]
    pub(super) id_style: Option<String>,
    #[serde(default)]
    pub(super) namespace: Option<String>,
    #[serde(default)]
    pub(super) mode: Option<String>,
    #[serde(default)]
    pub(super) auth: Option<String>,
    #[serde(default)]
    pub(super) trust: Vec<String>,
    #[serde(default)]
    pub(super) pins: Vec<String>,
    #[serde(default)]
    pub(super) client_cert: Option<bool>,
    #[serde(default)]
    pub(super) tls_name: Option<String>,
    #[serde(default)]
    pub(super) rate: Option<u32>,
    #[serde(default)]
    pub(super) burst: Option<u32>,
    #[serde(default)]
    pub(super) notifications: Option<String>,
    #[serde(default)]
    pub(super) address_by: Option<String>,
    #[serde(default)]
    pub(super) queue: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    pub(super) prefix: String,
    pub(super) peer: String,
}
