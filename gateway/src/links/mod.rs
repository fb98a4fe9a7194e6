//! What the request path forwards to and hears from: the core and SSP peers (the translators
//! will be links too). Each link knows how to reach its far side (clients, URLs, TLS), how to
//! label what it sends (sessions, the association, ID rewriting, tokens) and how to wait for
//! the answer (correlation by token, sync or async); the pipeline only says *where*
//! ([`Dest`]) and *for whom* ([`Origin`]).
//!
//! - [`Links::send`]: one request part to one destination, for its answer.
//! - [`Links::answer_body`] / [`Links::deliver_answers`]: answers back to whoever asked
//!   (in the HTTP response for synchronous senders, as a POST for asynchronous ones).

pub(crate) mod assoc;
pub(crate) mod cluster;
pub(crate) mod core;
pub(crate) mod exchange;
pub mod http;
pub(crate) mod peer;
mod pending;
pub(crate) mod sender;
pub(crate) mod sip;
pub mod xmpp;

pub use cluster::Conflict;
pub use peer::PeerRt;

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::{Config, ResponseMode};
use crate::directory::Directory;
use crate::drain::Drain;
use crate::error::Failure;
use crate::ops::metrics::Metrics;
use crate::resolve::Resolver;
use crate::rewrite::Rewriter;
use crate::ssp::splice::{self, Spliced};
use crate::ssp::{Codec, Primitive, Transaction};
use crate::tls::TlsError;
use crate::token::{Leg, TokenKeys};
use assoc::Associations;
use core::CoreLink;
use http::SspClient;
use peer::PeerTable;
use pending::Pending;

/// Direction of a body seen by the wire tap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TapDir {
    /// Sent by the gateway.
    Out,
    /// Received by the gateway.
    In,
}

/// Observer of every SSP body exchanged with peers and the core: `(direction, party, body)`.
/// Used by tests to assert what crossed the wire before encryption.
pub type WireTap = Arc<dyn Fn(TapDir, &str, &str) + Send + Sync>;

/// How a remote destination was found (for logs and traces).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `[[route]]` number prefix.
    Prefix,
    /// `[[peer]]` domain.
    Peering,
    /// ENUM NAPTR, then the peering table or SRV.
    Enum,
    /// SRV `_imps-server._tcp`.
    Srv,
    /// The configured gateway of last resort.
    LastResort,
}

/// An SSP server of another operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    /// The operator's domain (its identity).
    pub domain: String,
    /// SSP URLs in failover order (empty: the peer's configured or DNS-found ones).
    pub urls: Vec<::http::Uri>,
    /// How it was found.
    pub source: Source,
}

/// Where one part of a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dest {
    /// One of our subscribers (or our own domain): our core.
    Core,
    /// Another operator's IMPS server.
    Imps(Remote),
    /// The gateway of last resort (an SSP peer that reaches what we cannot).
    LastResort(Remote),
    /// A destination reachable by SIP only: the SIP/SIMPLE translator.
    Sip(sip::SipTarget),
    /// A destination reachable by XMPP only: the XMPP translator.
    Xmpp(xmpp::XmppTarget),
    /// Nowhere: the requester gets this.
    Fail(Failure),
}

/// Who sent a request, and so where its answer goes.
#[derive(Debug, Clone)]
pub enum Origin {
    /// Our core (outbound traffic).
    Core,
    /// A peer operator (inbound traffic).
    Peer(Arc<PeerRt>),
    /// A SIP operator `[[sip.peer]]` trusts, by domain (inbound through the translator;
    /// answered in its SIP transaction).
    Sip(Arc<str>),
    /// An XMPP domain `[xmpp]` federates with, by domain (inbound through the translator;
    /// answered by stanzas of its own).
    Xmpp(Arc<str>),
}

impl Origin {
    /// The metric direction of its requests: `outbound` from the core, `inbound` from peers.
    pub fn direction(&self) -> &'static str {
        match self {
            Origin::Core => "outbound",
            Origin::Peer(_) | Origin::Sip(_) | Origin::Xmpp(_) => "inbound",
        }
    }

    /// The protocol its requests arrive in, as a metric label: `ssp` (the core, SSP peers)
    /// or `sip` (the SIP translator).
    pub fn protocol(&self) -> &'static str {
        match self {
            Origin::Core | Origin::Peer(_) => "ssp",
            Origin::Sip(_) => "sip",
            Origin::Xmpp(_) => "xmpp",
        }
    }

    /// Which leg our requests to it travel (the answers it sends us are to those).
    pub fn leg(&self) -> Leg {
        match self {
            Origin::Core => Leg::ToCore,
            Origin::Peer(_) | Origin::Sip(_) | Origin::Xmpp(_) => Leg::ToPeer,
        }
    }

    /// The peer's domain ("" for the core), as it rides in our tokens.
    pub fn domain(&self) -> &str {
        match self {
            Origin::Core => "",
            Origin::Peer(p) => &p.cfg.domain,
            Origin::Sip(d) | Origin::Xmpp(d) => d,
        }
    }
}

/// The transaction ID one part of a request goes with: our token, and the key its answer is
/// awaited under (the issuing process and the request ID inside the token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    /// The token.
    pub tid: String,
    /// The issuing process's instance.
    pub instance: u32,
    /// The request ID inside the token.
    pub request_id: u64,
}

impl Issued {
    /// Its key in the pending table.
    pub(crate) fn key(&self) -> pending::Key {
        (self.instance, self.request_id)
    }
}

/// A request on its way to an SSP far side: typed, or read by the fast path and written by
/// splicing its bytes (`ssp::splice`).
// The typed primitive is boxed: held by value (936 bytes), it sat twice in the state of every
// future that sends one (`to_core`, `to_peer`, as argument and as local), the fast path's
// among them, which never carries one. One allocation on the typed path saves that.
pub enum Outbound<'s, 'b> {
    /// A typed primitive.
    Typed(Box<Primitive>),
    /// The fast path's message (its IDs are rewritten in place on the way), and whom its
    /// answer goes back to: an answer in the fast path's shape is written for them by
    /// splicing too ([`Reply::Written`]).
    Spliced(&'s mut Spliced<'b>, &'s Origin),
}

/// A far side's answer to one request part.
// The typed primitive is boxed (as in `Outbound`): a reply is handed up through every
// layer of the request's future, and at 936 bytes each hand-over was a copy of that size,
// on the fast path too, whose replies are written ones.
#[derive(Debug)]
pub enum Reply {
    /// Read typed: the answer primitive.
    Typed(Box<Primitive>),
    /// Read by the fast path and written for the request's origin already (spliced requests
    /// only): the body to answer with, and the answer's status code.
    Written {
        /// The origin's whole answer message.
        body: String,
        /// Its status code (for the metrics).
        code: u16,
    },
}

impl Reply {
    /// A typed answer.
    pub fn typed(p: Primitive) -> Reply {
        Reply::Typed(Box::new(p))
    }

    /// The answer primitive of a typed request (whose answer is always read typed).
    pub fn into_primitive(self) -> Primitive {
        match self {
            Reply::Typed(p) => *p,
            // Only a spliced request is answered by splicing; never reached.
            Reply::Written { .. } => {
                debug_assert!(false, "a typed request answered by splicing");
                Primitive::Status(crate::ssp::Status::with(
                    crate::ssp::status::INTERNAL,
                    "answer written for another request",
                ))
            }
        }
    }

    /// The answer's status code.
    pub fn answer_code(&self) -> u16 {
        match self {
            Reply::Typed(p) => p.answer_code(),
            Reply::Written { code, .. } => *code,
        }
    }
}

impl Outbound<'_, '_> {
    /// Whether it is a notification (presence or a delivery report), which a peer with
    /// `notifications = "acknowledged"` never answers.
    fn is_notification(&self) -> bool {
        match self {
            Outbound::Typed(p) => matches!(
                **p,
                Primitive::PresenceNotification(_) | Primitive::DeliveryStatusReport(_)
            ),
            Outbound::Spliced(s, _) => matches!(
                s.kind,
                splice::Kind::PresenceNotification | splice::Kind::DeliveryStatusReport
            ),
        }
    }
}

/// The configuration of one live snapshot, for reading values out of it (a reload in
/// between changes what the next call sees, not this). It is not `Send`, so the compiler
/// keeps it from being held across an `.await` of a spawned future: a guard held long
/// takes one of the thread's few fast slots, and loads fall back to counting references.
/// Copy out what is needed, or take [`Links::live`] to keep a snapshot.
pub struct CfgRef(
    arc_swap::Guard<Arc<Live>>,
    std::marker::PhantomData<*const ()>,
);

impl std::ops::Deref for CfgRef {
    type Target = Config;

    fn deref(&self) -> &Config {
        &self.0.cfg
    }
}

/// One part of a request on its way: whose it is, so that its answer can be routed back by
/// the token alone (after a restart, by another replica).
#[derive(Debug, Clone, Copy)]
pub struct Part<'a> {
    /// The originator's transaction ID.
    pub origin_tid: &'a str,
    /// The originating peer's domain ("" for our core).
    pub origin_peer: &'a str,
    /// This part's index among the parts of a split request.
    pub index: u8,
    /// How many parts.
    pub of: u8,
    /// The token to send it with, when it was issued before (kept work sent again goes with
    /// its first token, so that the receiver recognises it); else a fresh one is issued.
    pub issued: Option<&'a Issued>,
}

/// What one configuration builds, and a reload replaces whole: a request reads it once per
/// step ([`Links::live`]), so a reload never shows it half of an old configuration and half
/// of a new one. What must outlive a reload (requests in flight, associations, the
/// directory, metrics) is beside it in [`Links`].
pub(crate) struct Live {
    /// Which build this is (each is one more than the last): what was worked out under an
    /// older one (a connection's peer) is worked out again.
    pub(crate) generation: u64,
    /// The configuration in use (sections a reload cannot change are the running ones).
    pub(crate) cfg: Arc<Config>,
    /// ID rewriting.
    pub(crate) rw: Rewriter,
    /// SSP parsing.
    pub(crate) codec: Codec,
    /// Transaction-ID tokens: the signing key, and retired keys still opening answers.
    pub(crate) keys: TokenKeys,
    /// SSP peers.
    pub(crate) peers: PeerTable,
    /// The core.
    pub(crate) core: Option<CoreLink>,
    /// DNS, for destinations and peers known only by their domain.
    pub(crate) resolver: Option<Arc<Resolver>>,
    /// Bounds of the association's responder role.
    pub(crate) assoc_bounds: Arc<assoc::Bounds>,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live")
            .field("config", &self.cfg.path)
            .finish_non_exhaustive()
    }
}

impl Live {
    /// Everything `cfg` names, built now (TLS profiles, trust anchors, pins), so mistakes
    /// surface before anything is put in use. `previous`: what runs now, whose per-peer
    /// session IDs and association bounds carry over.
    pub(crate) fn build(
        cfg: Arc<Config>,
        identity: Option<&peer::Identity>,
        keys: TokenKeys,
        resolver: Option<Arc<Resolver>>,
        previous: Option<&Live>,
    ) -> Result<Live, TlsError> {
        let peers = PeerTable::new(cfg.clone(), identity.cloned(), previous.map(|p| &p.peers))?;
        let core = CoreLink::new(&cfg, identity)?;
        let (rate, burst) = (cfg.policy.association_rate, cfg.policy.association_burst);
        let assoc_bounds = match previous {
            Some(p)
                if (
                    p.cfg.policy.association_rate,
                    p.cfg.policy.association_burst,
                ) == (rate, burst) =>
            {
                p.assoc_bounds.clone()
            }
            _ => Arc::new(assoc::Bounds::new(rate, burst)),
        };
        static BUILT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        Ok(Live {
            generation: BUILT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            rw: Rewriter::new(&cfg),
            codec: Codec {
                limits: cfg.limits.xml,
                extra_namespaces: cfg.operator.extra_namespaces.clone(),
            },
            keys,
            peers,
            core,
            resolver,
            assoc_bounds,
            cfg,
        })
    }
}

/// Every link of one gateway.
pub struct Links {
    /// What the configuration in use built (swapped whole on reload).
    pub(crate) live: ArcSwap<Live>,
    /// Subscriber directory (swapped on reload).
    pub(crate) dir: ArcSwap<Directory>,
    /// Requests waiting for asynchronous answers.
    pub(crate) pending: Pending,
    /// SSP associations (both roles).
    pub(crate) assoc: Associations,
    /// Our certificate and key (`[tls]`), for every listener and client that presents them.
    pub(crate) identity: Option<peer::Identity>,
    /// Client for the other replicas' admin listeners (`[cluster] siblings`).
    pub(crate) siblings: Option<SspClient>,
    /// Metrics.
    pub(crate) metrics: Metrics,
    /// The shutdown handle: deliveries spawned here are waited for.
    pub(crate) drain: Drain,
    /// Log lines of events a far side can cause, sampled.
    pub(crate) logs: crate::ops::logs::Sampler,
    /// The SIP/SIMPLE translator, once its listeners are bound (`[sip]`).
    pub(crate) sip: std::sync::OnceLock<sip::SipLink>,
    /// The XMPP translator, once its listener is bound (`[xmpp]`).
    pub(crate) xmpp: std::sync::OnceLock<xmpp::XmppLink>,
    assoc_locks: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    tap: Option<WireTap>,
}

impl std::fmt::Debug for Links {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Links")
            .field("public_domain", &self.cfg().operator.public_domain)
            .finish_non_exhaustive()
    }
}

/// What [`Links::new`] is built from.
pub struct LinkParts {
    /// The configuration.
    pub cfg: Arc<Config>,
    /// The subscriber directory, loaded.
    pub dir: Directory,
    /// Token keys, loaded.
    pub keys: TokenKeys,
    /// Metrics.
    pub metrics: Metrics,
    /// DNS, if configured.
    pub resolver: Option<Arc<Resolver>>,
    /// The wire tap, if any.
    pub tap: Option<WireTap>,
    /// The shutdown handle.
    pub drain: Drain,
}

impl Links {
    /// Every link of the configuration (TLS profiles are built now, so mistakes surface at
    /// start-up).
    pub fn new(p: LinkParts) -> Result<Links, TlsError> {
        let cfg = p.cfg;
        let identity = peer::identity(&cfg)?;
        let t = &cfg.timeouts;
        let siblings = (!cfg.cluster.siblings.is_empty()).then(|| {
            SspClient::new(
                http::Connector::new(None, t.connect, t.handshake),
                t.idle,
                cfg.limits.xml.max_body,
            )
        });
        let assoc = Associations::new(
            &cfg.operator.public_domain,
            std::time::Duration::from_secs(86_400),
        );
        let live = Live::build(cfg, identity.as_ref(), p.keys, p.resolver, None)?;
        Ok(Links {
            live: ArcSwap::from_pointee(live),
            identity,
            dir: ArcSwap::from_pointee(p.dir),
            pending: Pending::new(),
            assoc,
            siblings,
            logs: crate::ops::logs::Sampler::new(
                crate::ops::logs::EVERY,
                p.metrics.log_suppressed.clone(),
            ),
            metrics: p.metrics,
            drain: p.drain,
            sip: std::sync::OnceLock::new(),
            xmpp: std::sync::OnceLock::new(),
            assoc_locks: std::sync::Mutex::new(HashMap::new()),
            tap: p.tap,
        })
    }

    /// What the configuration in use built.
    pub(crate) fn live(&self) -> Arc<Live> {
        self.live.load_full()
    }

    /// The configuration in use, borrowed from the live snapshot (no reference count
    /// taken: the request path reads it a dozen times per request).
    pub(crate) fn cfg(&self) -> CfgRef {
        CfgRef(self.live.load(), std::marker::PhantomData)
    }

    /// Send one request part to `dest` and return its answer primitive (IDs in public form
    /// for remote answers, core form for the core's), or why there is none.
    pub async fn send(
        &self,
        dest: &Dest,
        request: Primitive,
        part: Part<'_>,
    ) -> Result<Primitive, Failure> {
        match dest {
            Dest::Core => self
                .to_core(Outbound::Typed(Box::new(request)), part)
                .await
                .map(Reply::into_primitive),
            Dest::Imps(r) | Dest::LastResort(r) => self
                .to_peer(r, Outbound::Typed(Box::new(request)), part)
                .await
                .map(Reply::into_primitive),
            // Boxed: the SIP legs are deep futures, kept off the stack of every request.
            Dest::Sip(t) => Box::pin(self.to_sip(t, request)).await,
            Dest::Xmpp(t) => Box::pin(self.to_xmpp(t, request)).await,
            Dest::Fail(f) => Err(f.clone()),
        }
    }

    /// The token a part for `dest` goes with, issued now (`None` for a destination that is a
    /// failure). Kept work records it before sending.
    pub fn issue(&self, dest: &Dest, part: Part<'_>) -> Option<Issued> {
        let (leg, peer) = match dest {
            Dest::Core => (Leg::ToCore, part.origin_peer.to_owned()),
            Dest::Imps(r) | Dest::LastResort(r) => (Leg::ToPeer, r.domain.to_ascii_lowercase()),
            // No SSP transaction ID goes over SIP; kept work records the token all the same.
            Dest::Sip(t) => (Leg::ToPeer, t.domain.to_ascii_lowercase()),
            Dest::Xmpp(t) => (Leg::ToPeer, t.domain.to_ascii_lowercase()),
            Dest::Fail(_) => return None,
        };
        Some(self.issue_for(leg, part, &peer))
    }

    /// A fresh token on `leg` for `part` (`peer`: the domain it names).
    pub(crate) fn issue_for(&self, leg: Leg, part: Part<'_>, peer: &str) -> Issued {
        let request_id = self.pending.next_id();
        let live = self.live.load();
        Issued {
            tid: live
                .keys
                .issue(leg, request_id, part.index, part.of, part.origin_tid, peer),
            instance: live.keys.instance(),
            request_id,
        }
    }

    /// How `origin` wants its answers: in the HTTP response, or as POSTs of their own.
    pub fn answer_mode(&self, origin: &Origin) -> ResponseMode {
        match origin {
            Origin::Core => self
                .live
                .load()
                .core
                .as_ref()
                .map(|c| c.mode)
                .unwrap_or_default(),
            Origin::Peer(p) => p.cfg.mode,
            // Answered in the SIP transaction, like a synchronous sender.
            Origin::Sip(_) | Origin::Xmpp(_) => ResponseMode::Sync,
        }
    }

    /// [`Links::answer_body`] for one answer the fast path read: its IDs rewritten for
    /// `origin` and its bytes spliced under the origin's transaction ID `tid`. `None` where
    /// only the typed path may write it: a core name in its text, bound for a peer (the
    /// typed path scrubs it), or an origin that is not SSP.
    pub(crate) fn answer_spliced(
        &self,
        origin: &Origin,
        s: &mut Spliced<'_>,
        tid: &str,
    ) -> Option<String> {
        match origin {
            Origin::Core => Some(self.core_answer_spliced(s, tid)),
            Origin::Peer(p) => self.peer_answer_spliced(p, s, tid),
            Origin::Sip(_) | Origin::Xmpp(_) => None,
        }
    }

    /// Answers serialised for `origin`, for a synchronous HTTP response.
    pub fn answer_body(&self, origin: &Origin, answers: Vec<Transaction>) -> String {
        match origin {
            Origin::Core => self.core_body(answers).1,
            Origin::Peer(p) => self.peer_body(p, answers).1,
            Origin::Sip(_) | Origin::Xmpp(_) => String::new(),
        }
    }

    /// POST answers to an asynchronous `origin`, retrying until the request deadline; false
    /// (and counted) if they could not be delivered.
    pub async fn deliver_answers(&self, origin: &Origin, answers: Vec<Transaction>) -> bool {
        match origin {
            Origin::Core => self.answers_to_core(answers).await,
            Origin::Peer(p) => self.answers_to_peer(p, answers).await,
            // Its answers went in its SIP transactions; there is nowhere to send more.
            Origin::Sip(_) | Origin::Xmpp(_) => false,
        }
    }

    /// Record a body exchanged (tests observe the wire before encryption).
    pub(crate) fn tap(&self, dir: TapDir, party: &str, body: &str) {
        if let Some(t) = &self.tap {
            t(dir, party, body);
        }
    }

    /// Whether a wire tap is installed (so bodies are only decoded for it when it is).
    pub(crate) fn tapping(&self) -> bool {
        self.tap.is_some()
    }

    /// The per-domain lock serialising association attempts.
    pub(crate) fn assoc_lock(&self, domain: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut m = match self.assoc_locks.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        m.entry(domain.to_owned()).or_default().clone()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The links of a minimal configuration (no listeners, no far sides).
    pub(crate) fn links() -> Links {
        let cfg = Config::from_str(
            std::path::Path::new("routes/test.toml"),
            "[gateway]\npublic_domain = \"opx.example\"\ncore_domains = [\"core.opx.example\"]\ncountry_code = \"46\"\n",
        )
        .unwrap();
        Links::new(LinkParts {
            dir: Directory::load(&cfg.directory).unwrap(),
            keys: TokenKeys::random(60).with_replica(0),
            cfg: Arc::new(cfg),
            metrics: Metrics::new(),
            resolver: None,
            tap: None,
            drain: Drain::new(),
        })
        .unwrap()
    }

    /// An answer the fast path writes back by splicing is, byte for byte, the one the typed
    /// path writes (for answers in canonical form, as a far gateway writes them): IDs in a
    /// detailed result rewritten, the origin's transaction ID, our session.
    #[test]
    fn a_spliced_answer_is_the_typed_one() {
        use crate::ssp::NS_WV_SSP_13;
        let links = links();
        let codec = Codec::default();
        let answers = [
            "<SendMessageResponse messageID=\"m-1\"><Status code=\"201\">\
             <StatusDescription>partly</StatusDescription><DetailedResult code=\"531\">\
             <StatusDescription>Unknown user</StatusDescription>\
             <UserID userID=\"wv:+4915199999999\"/></DetailedResult>\
             <DetailedResult code=\"200\"><User userID=\"wv:+46701234567@opx.example\"/>\
             </DetailedResult></Status></SendMessageResponse>",
            "<Status code=\"200\"/>",
            "<Status code=\"404\"><StatusDescription>gone</StatusDescription></Status>",
        ];
        // An answer in canonical form, as our emitter (and a far gateway) writes it, and its
        // primitive.
        let canonical = |inner: &str| {
            let body = format!(
                "<WV-SSP-Message xmlns=\"{NS_WV_SSP_13}\"><Session sessionID=\"y-1@opy.example\">\
                 <Transaction mode=\"Response\" transactionID=\"gw-tid\">{inner}</Transaction>\
                 </Session></WV-SSP-Message>"
            );
            let body = codec.parse(body.as_bytes()).unwrap().emit(NS_WV_SSP_13);
            let typed = codec.parse(body.as_bytes()).unwrap();
            let primitive = typed.as_session().unwrap().transactions[0]
                .primitive
                .clone();
            (body, primitive)
        };
        for inner in answers {
            let (body, primitive) = canonical(inner);
            let want = links.answer_body(
                &Origin::Core,
                vec![Transaction::response("origin-7", primitive)],
            );
            let mut s = Spliced::scan(&codec, body.as_bytes()).unwrap().unwrap();
            let got = links.answer_spliced(&Origin::Core, &mut s, "origin-7");
            assert_eq!(got.as_deref(), Some(want.as_str()), "{body}");
        }
        // Towards a peer: public IDs, its namespace; a core name in free text is the typed
        // path's to scrub.
        let peer = Origin::Peer(links.live.load().peers.get("opy.example").unwrap());
        for (inner, spliced) in [
            (answers[0].to_owned(), true),
            (
                answers[2].replace("gone", "gone from core.opx.example"),
                false,
            ),
        ] {
            let (body, primitive) = canonical(&inner);
            let want = links.answer_body(&peer, vec![Transaction::response("origin-7", primitive)]);
            assert!(!want.contains("core.opx.example"));
            let mut s = Spliced::scan(&codec, body.as_bytes()).unwrap().unwrap();
            let got = links.answer_spliced(&peer, &mut s, "origin-7");
            if spliced {
                assert_eq!(got.as_deref(), Some(want.as_str()), "{body}");
            } else {
                assert_eq!(got, None, "a core name in the answer's text: {body}");
            }
        }
        // The check reads the primitive and the IDs the envelope is written with, not only
        // the primitive: a core name in the sender's transaction ID is found too.
        let (body, _) = canonical(answers[1]);
        let mut s = Spliced::scan(&codec, body.as_bytes()).unwrap().unwrap();
        assert!(links.answer_spliced(&peer, &mut s, "origin-7").is_some());
        assert_eq!(
            links.answer_spliced(&peer, &mut s, "t-7.core.opx.example"),
            None
        );
        // Baraza's layout: the same message once parsed.
        for name in [
            "056_Session-Response-SendMessageResponse.xml",
            "907_Session-Response-SendMessageResponse-201.xml",
        ] {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/baraza")
                .join(name);
            let body = std::fs::read(path).unwrap();
            let typed = codec.parse(&body).unwrap();
            let primitive = typed.as_session().unwrap().transactions[0]
                .primitive
                .clone();
            let want = links.answer_body(
                &Origin::Core,
                vec![Transaction::response("origin-7", primitive)],
            );
            let mut s = Spliced::scan(&codec, &body).unwrap().unwrap();
            let got = links
                .answer_spliced(&Origin::Core, &mut s, "origin-7")
                .unwrap();
            assert_eq!(
                codec.parse(got.as_bytes()).unwrap(),
                codec.parse(want.as_bytes()).unwrap(),
                "{name}"
            );
        }
    }
}
