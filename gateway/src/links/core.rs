//! The link to our core: where requests for our subscribers go (their IDs rewritten to the
//! core's), and where answers to the core's own requests go back.

use std::borrow::Cow;
use std::sync::Arc;

use http::{HeaderValue, Uri};
use tokio::time::Instant;

use super::exchange::{Outgoing, Target, owned_session, request_headers, session_value};
use super::http::{Connector, SspClient};
use super::peer::Identity;
use super::{Links, Live, Outbound, Part, Reply};
use crate::config::{Config, CoreAuth, ResponseMode};
use crate::error::{Failure, Kind, Side};
use crate::rewrite::{Direction, PeerView};
use crate::ssp::splice::Spliced;
use crate::ssp::{Message, NS_WV_SSP_13, Transaction};
use crate::tls::{self, TlsError};
use crate::token::Leg;

/// The link to the core.
pub(crate) struct CoreLink {
    /// Where to POST.
    pub urls: Vec<Uri>,
    /// The client.
    pub client: SspClient,
    /// How the core answers.
    pub mode: ResponseMode,
    /// Our session ID towards a core that does not associate.
    session: String,
    /// The same as a header value, made once.
    session_header: Option<HeaderValue>,
}

impl std::fmt::Debug for CoreLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoreLink")
            .field("urls", &self.urls)
            .finish_non_exhaustive()
    }
}

impl CoreLink {
    /// The link of `[core]`, if configured.
    pub(crate) fn new(
        cfg: &Config,
        identity: Option<&Identity>,
    ) -> Result<Option<CoreLink>, TlsError> {
        let Some(c) = &cfg.core else { return Ok(None) };
        let trust = if !c.pins.is_empty() {
            Some(tls::ServerTrust::Pins(c.pins.clone()))
        } else if !c.trust.is_empty() {
            Some(tls::ServerTrust::Roots(Arc::new(tls::load_roots(
                &c.trust,
            )?)))
        } else {
            None
        };
        let uri: Uri = c
            .url
            .parse()
            .map_err(|_| TlsError::Verifier(format!("core url {:?}", c.url)))?;
        let tls_cfg = match trust {
            Some(t) => {
                let ident = identity.cloned();
                let name = uri.host().unwrap_or("localhost").to_owned();
                let name = rustls_pki_types::ServerName::try_from(name)
                    .map_err(|e| TlsError::Verifier(e.to_string()))?;
                Some((Arc::new(tls::client_config_from(t, ident, false)?), name))
            }
            None => None,
        };
        let t = &cfg.timeouts;
        let session = format!("ssp-gateway@{}", cfg.operator.public_domain);
        Ok(Some(CoreLink {
            urls: vec![uri],
            client: SspClient::new(
                Connector::new(tls_cfg, t.connect, t.handshake),
                t.idle,
                cfg.limits.xml.max_body,
            ),
            mode: c.mode,
            session_header: session_value(&session),
            session,
        }))
    }

    /// Where to send.
    pub(crate) fn target(&self) -> Target<'_> {
        Target {
            label: "core",
            metric: "core",
            side: Side::Core,
            client: &self.client,
            urls: &self.urls,
        }
    }
}

impl Links {
    fn core_associates(&self) -> bool {
        self.cfg()
            .core
            .as_ref()
            .is_some_and(|c| c.auth == CoreAuth::Association)
    }

    /// Our session ID towards the core: the association's when the core associates.
    fn core_session(&self, live: &Live, core: &CoreLink) -> String {
        if self.core_associates()
            && let Some(e) = self.assoc.established(live.rw.primary_core_domain())
        {
            return e.our_session;
        }
        core.session.clone()
    }

    /// Our session ID on answers to the core (empty without a core link).
    fn answer_session(&self, live: &Live) -> String {
        match &live.core {
            Some(c) => self.core_session(live, c),
            None => String::new(),
        }
    }

    /// Send one request part to the core (IDs rewritten to the core's) for its answer: read
    /// typed, or (a spliced request's answer in the fast shape) written back for the
    /// request's origin already ([`Reply`]).
    pub(crate) async fn to_core(
        &self,
        request: Outbound<'_, '_>,
        part: Part<'_>,
    ) -> Result<Reply, Failure> {
        let live = self.live();
        let core = core_link(&live)?;
        let target = core.target();
        let deadline = Instant::now() + live.cfg.timeouts.request;
        let (session, session_header): (Cow<'_, str>, _) = if self.core_associates() {
            let domain = live.rw.primary_core_domain().to_owned();
            // Boxed: the association's state would enlarge every request's future.
            owned_session(
                Box::pin(self.associate(&domain, &target, NS_WV_SSP_13, deadline))
                    .await?
                    .our_session,
            )
        } else {
            (Cow::Borrowed(&core.session), core.session_header.clone())
        };
        let issued = match part.issued {
            Some(i) => i.clone(),
            None => self.issue_for(Leg::ToCore, part, part.origin_peer),
        };
        let headers = request_headers(session_header, &issued.tid);
        let dir = self.dir.load();
        let mut answer_for = None;
        let body = match request {
            Outbound::Typed(request) => {
                let mut msg = Message::session(
                    session.into_owned(),
                    vec![Transaction::request(issued.tid.clone(), *request)],
                );
                live.rw
                    .rewrite(&dir, &mut msg, Direction::Inbound, core_view(&live));
                msg.emit(NS_WV_SSP_13)
            }
            Outbound::Spliced(s, origin) => {
                answer_for = Some((origin, part.origin_tid));
                splice_for_core(&live, &dir, s, &session, &issued.tid)
            }
        };
        drop(dir);
        let out = Outgoing {
            headers,
            body,
            issued: &issued,
        };
        self.exchange(&target, out, deadline, false, answer_for)
            .await
    }

    /// A remote answer, read by the fast path, written for the core (see
    /// [`Links::answer_spliced`]): IDs in core form, our session with the core.
    pub(crate) fn core_answer_spliced(&self, s: &mut Spliced<'_>, tid: &str) -> String {
        let live = self.live.load();
        let session = self.answer_session(&live);
        splice_for_core(&live, &self.dir.load(), s, &session, tid)
    }

    /// Answers serialised for the core (IDs mapped to the core's), and the message.
    pub(crate) fn core_body(&self, answers: Vec<Transaction>) -> (Message, String) {
        let live = self.live();
        let session = self.answer_session(&live);
        let mut msg = Message::session(session, answers);
        let dir = self.dir.load();
        live.rw
            .rewrite(&dir, &mut msg, Direction::Inbound, core_view(&live));
        let body = msg.emit(NS_WV_SSP_13);
        (msg, body)
    }

    /// POST answers to an asynchronous core; false if they could not be delivered.
    pub(crate) async fn answers_to_core(&self, answers: Vec<Transaction>) -> bool {
        let live = self.live();
        let Some(core) = &live.core else { return false };
        let (msg, body) = self.core_body(answers);
        self.deliver_answers_to(&core.target(), &msg, body).await
    }
}

/// The core's link in `live`.
fn core_link(live: &Live) -> Result<&CoreLink, Failure> {
    live.core
        .as_ref()
        .ok_or_else(|| Failure::local(Kind::Unreachable, "no [core] configured"))
}

/// `s` written for the core by splicing: IDs in core form, `session` and `tid`.
fn splice_for_core(
    live: &Live,
    dir: &crate::directory::Directory,
    s: &mut Spliced<'_>,
    session: &str,
    tid: &str,
) -> String {
    live.rw
        .rewrite_slots(dir, s.slots(), Direction::Inbound, core_view(live));
    s.emit(NS_WV_SSP_13, session, tid)
}

/// How the core wants IDs written (for inbound rewriting).
pub(crate) fn core_view(live: &Live) -> PeerView<'_> {
    PeerView {
        style: live
            .cfg
            .core
            .as_ref()
            .map(|c| c.id_style)
            .unwrap_or_default(),
        domain: Some(live.rw.public_domain()),
    }
}
