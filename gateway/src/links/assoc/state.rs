//! The state of SSP associations between servers (`PROTOCOL.md` §3), both roles.
//!
//! A dialback-like exchange: each side sends a secret token to the other's *configured or
//! DNS-found* address (so a claimed domain must be able to receive for that domain), then each
//! proves knowledge of the other's token with base64(MD5(token)). Four login steps, as Baraza
//! does them: LoginRequest (Request) -> LoginRequest (Response, carrying the responder's digest)
//! -> LoginResponse (Request, initiator's session ID) -> LoginResponse (Response, ours).
//!
//! Baraza quirks handled: its SendSecretToken answer carries its own row ID as transactionID, so
//! that step is matched by domain; tokens are plain hex unless an `encoding` attribute is
//! present; digests may be wrapped with CRLF. This module is state only; [`super`] does the I/O.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use md5::{Digest, Md5};
use tokio::sync::mpsc;

use crate::ssp::ids::WvId;
use crate::ssp::primitives::{LoginRequest, LoginResponse, SendSecretToken};
use crate::ssp::{Message, Mode, SetupPrimitive, SetupTransaction, Status};

/// Why an association step was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AssocError {
    /// The claimed domain has no peer entry allowing association.
    #[error("domain {0} may not associate")]
    NotAllowed(String),
    /// A step arrived that matches no association in progress.
    #[error("no association in progress matches this {0}")]
    Unmatched(&'static str),
    /// The digest did not prove knowledge of our token.
    #[error("wrong password digest from {0}")]
    BadDigest(String),
    /// The primitive or its content is unusable.
    #[error("{0}")]
    Malformed(String),
    /// The peer answered with an error status.
    #[error("peer refused: status {0}")]
    Refused(u16),
}

/// An established association.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Established {
    /// Our session ID (written in `Session@sessionID` of what we send).
    pub our_session: String,
    /// The peer's session ID (what it writes in what it sends us).
    pub peer_session: String,
}

#[derive(Debug)]
struct Assoc {
    tid: String,
    our_token: String,
    peer_token: Option<Vec<u8>>,
    digest_ok: bool,
    /// Responder: the address the verified digest came from. The LoginResponse that
    /// completes the association must come from there too: the digest is what proves the
    /// peer, and the initiator's transaction ID alone may be guessable.
    proven_from: Option<IpAddr>,
    established: Option<Established>,
    last_used: Instant,
}

#[derive(Default)]
struct State {
    /// Established associations.
    by_domain: HashMap<String, Assoc>,
    /// Attempts a peer started (we respond), by (domain, the peer's transaction ID). Kept
    /// apart from the established ones, and several per domain, so that an attempt, which
    /// anyone claiming a domain can start, neither ends that domain's association nor
    /// displaces the peer's own attempt: an attempt replaces the association only once its
    /// digest proves the dialback.
    attempts: HashMap<(String, String), Assoc>,
    /// Our own attempts (we initiate), by domain: a peer starting one at the same time does
    /// not disturb ours.
    initiating: HashMap<String, Assoc>,
    by_peer_session: HashMap<String, String>,
    /// Initiator attempts in progress: domain -> where Response-mode steps go.
    initiators: HashMap<String, (String, mpsc::Sender<SetupTransaction>)>,
}

impl State {
    /// A completed attempt becomes `domain`'s association, replacing the previous one.
    fn establish(&mut self, domain: &str, mut a: Assoc) {
        a.last_used = Instant::now();
        let session = a.established.as_ref().map(|e| e.peer_session.clone());
        if let Some(old) = self.by_domain.insert(domain.to_owned(), a)
            && let Some(e) = old.established
            && Some(&e.peer_session) != session.as_ref()
        {
            self.by_peer_session.remove(&e.peer_session);
        }
        if let Some(s) = session {
            self.by_peer_session.insert(s, domain.to_owned());
        }
    }
}

/// All associations of this gateway.
pub(crate) struct Associations {
    state: Mutex<State>,
    public_domain: String,
    ttl: Duration,
}

impl std::fmt::Debug for Associations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Associations").finish_non_exhaustive()
    }
}

/// Attempts a peer may have open at once per domain (a retry, a race, a stranger's).
const ATTEMPTS_PER_DOMAIN: usize = 4;

/// A fresh 32-hex-digit token (what Baraza sends).
fn new_token() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// The token bytes as the digest is computed over them: base64-decoded when the sender marked
/// it with an `encoding` attribute, else the trimmed text.
fn token_bytes(p: &SendSecretToken) -> Result<Vec<u8>, AssocError> {
    let text = p.token.trim();
    if text.is_empty() {
        return Err(AssocError::Malformed("empty SecretToken".into()));
    }
    if p.token_encoding.is_some() {
        let compact: String = text.split_ascii_whitespace().collect();
        B64.decode(compact)
            .map_err(|_| AssocError::Malformed("SecretToken is not valid base64".into()))
    } else {
        Ok(text.as_bytes().to_vec())
    }
}

/// base64(MD5(token)).
pub(crate) fn digest(token: &[u8]) -> String {
    B64.encode(Md5::digest(token))
}

fn digest_matches(given: &str, token: &[u8]) -> bool {
    let compact: String = given.split_ascii_whitespace().collect();
    match B64.decode(compact) {
        Ok(d) => d.as_slice() == Md5::digest(token).as_slice(),
        Err(_) => false,
    }
}

fn domain_of_service(service: Option<&str>) -> Result<String, AssocError> {
    let id = WvId::parse(service.unwrap_or_default())
        .map_err(|e| AssocError::Malformed(format!("serviceID: {e}")))?;
    match (id.is_service(), id.domain) {
        (true, Some(d)) => Ok(d),
        _ => Err(AssocError::Malformed(format!(
            "serviceID {:?} is not wv:@domain",
            service.unwrap_or_default()
        ))),
    }
}

/// The domain a Request-mode setup step claims: its service's, or (a `LoginResponse`) its
/// session's.
pub(crate) fn claimed_domain(t: &SetupTransaction) -> Option<String> {
    match &t.primitive {
        SetupPrimitive::SendSecretToken(p) => domain_of_service(p.service_id.as_deref()).ok(),
        SetupPrimitive::LoginRequest(p) => domain_of_service(p.service_id.as_deref()).ok(),
        SetupPrimitive::LoginResponse(p) => p.session_id.as_deref().and_then(domain_of_session),
        SetupPrimitive::Other(_) => None,
    }
}

fn domain_of_session(session: &str) -> Option<String> {
    session
        .rsplit_once('@')
        .map(|(_, d)| d.trim().to_ascii_lowercase())
        .filter(|d| !d.is_empty())
}

impl Associations {
    /// No associations yet; sessions live `ttl` after their last use.
    pub(crate) fn new(public_domain: &str, ttl: Duration) -> Associations {
        Associations {
            state: Mutex::new(State::default()),
            public_domain: public_domain.to_owned(),
            ttl,
        }
    }

    fn service(&self) -> String {
        format!("wv:@{}", self.public_domain)
    }

    fn new_session(&self) -> String {
        format!("{}@{}", rand::random::<u32>() >> 1, self.public_domain)
    }

    /// Handle a Request-mode setup step from a peer (we are the responder). Returns the peer's
    /// domain and the Response-mode message to POST back to it.
    pub(crate) fn on_request(
        &self,
        t: &SetupTransaction,
        allowed: impl Fn(&str) -> bool,
        from: Option<IpAddr>,
    ) -> Result<(String, Message), AssocError> {
        let mut st = self
            .state
            .lock()
            .map_err(|_| AssocError::Malformed("association state unavailable".into()))?;
        let ttl = Some(self.ttl.as_secs().to_string());
        match &t.primitive {
            SetupPrimitive::SendSecretToken(p) => {
                let domain = domain_of_service(p.service_id.as_deref())?;
                if !allowed(&domain) {
                    return Err(AssocError::NotAllowed(domain));
                }
                let our_token = new_token();
                let a = Assoc {
                    tid: t.transaction_id.clone(),
                    our_token: our_token.clone(),
                    peer_token: Some(token_bytes(p)?),
                    digest_ok: false,
                    proven_from: None,
                    established: None,
                    last_used: Instant::now(),
                };
                // The established association, if any, stays until this attempt completes.
                // Attempts per domain are few: past the bound the oldest goes.
                let mine: Vec<(String, String)> = st
                    .attempts
                    .keys()
                    .filter(|(d, _)| *d == domain)
                    .cloned()
                    .collect();
                if mine.len() >= ATTEMPTS_PER_DOMAIN
                    && let Some(oldest) = mine
                        .iter()
                        .min_by_key(|k| st.attempts.get(*k).map(|a| a.last_used))
                        .cloned()
                {
                    st.attempts.remove(&oldest);
                }
                st.attempts
                    .insert((domain.clone(), t.transaction_id.clone()), a);
                let reply = SetupPrimitive::SendSecretToken(SendSecretToken {
                    service_id: Some(self.service()),
                    protocol: Some("WV-SSP".into()),
                    protocol_version: Some("1.3".into()),
                    token: our_token,
                    ..Default::default()
                });
                Ok((
                    domain,
                    Message::setup(Mode::Response, t.transaction_id.clone(), reply),
                ))
            }
            SetupPrimitive::LoginRequest(p) => {
                let domain = domain_of_service(p.service_id.as_deref())?;
                let a = st
                    .attempts
                    .get_mut(&(domain.clone(), t.transaction_id.clone()))
                    .filter(|a| a.established.is_none())
                    .ok_or(AssocError::Unmatched("LoginRequest"))?;
                // A wrong digest is refused, but the attempt stays: anyone who guesses the
                // peer's transaction ID could otherwise cancel it (and MD5 of our 128-bit
                // token cannot be guessed instead).
                if !digest_matches(&p.digest, a.our_token.as_bytes()) {
                    return Err(AssocError::BadDigest(domain));
                }
                a.digest_ok = true;
                a.proven_from = from;
                let peer_token = a.peer_token.clone().unwrap_or_default();
                let reply = SetupPrimitive::LoginRequest(LoginRequest {
                    service_id: Some(self.service()),
                    time_to_live: ttl,
                    digest: digest(&peer_token),
                    digest_encoding: Some("base64".into()),
                    ..Default::default()
                });
                Ok((
                    domain,
                    Message::setup(Mode::Response, t.transaction_id.clone(), reply),
                ))
            }
            SetupPrimitive::LoginResponse(p) => {
                let peer_session = p
                    .session_id
                    .clone()
                    .filter(|s| !s.trim().is_empty())
                    .ok_or_else(|| {
                        AssocError::Malformed("LoginResponse without sessionID".into())
                    })?;
                if p.status.as_ref().is_some_and(|s| !s.is_success()) {
                    let code = p.status.as_ref().map(|s| s.code).unwrap_or(0);
                    return Err(AssocError::Refused(code));
                }
                // The session's domain names the attempt, and the transaction ID must be
                // that attempt's: the peer's ID alone (Baraza's are row numbers) is guessable.
                let domain = domain_of_session(&peer_session).ok_or_else(|| {
                    AssocError::Malformed(format!(
                        "LoginResponse sessionID {peer_session:?} names no domain"
                    ))
                })?;
                let key = (domain.clone(), t.transaction_id.clone());
                let Some(a) = st
                    .attempts
                    .get(&key)
                    .filter(|a| a.established.is_none() && a.digest_ok)
                else {
                    return Err(AssocError::Unmatched("LoginResponse"));
                };
                if a.proven_from != from {
                    tracing::warn!(
                        %domain,
                        digest_from = ?a.proven_from,
                        login_from = ?from,
                        "association LoginResponse from another address than the verified digest: refused"
                    );
                    return Err(AssocError::Unmatched(
                        "LoginResponse from another address than the digest",
                    ));
                }
                let mut a = st
                    .attempts
                    .remove(&key)
                    .ok_or(AssocError::Unmatched("LoginResponse"))?;
                let our_session = self.new_session();
                a.established = Some(Established {
                    our_session: our_session.clone(),
                    peer_session: peer_session.clone(),
                });
                st.establish(&domain, a);
                let reply = SetupPrimitive::LoginResponse(LoginResponse {
                    session_id: Some(our_session),
                    time_to_live: ttl,
                    status: Some(Status::new(200)),
                    ..Default::default()
                });
                Ok((
                    domain,
                    Message::setup(Mode::Response, t.transaction_id.clone(), reply),
                ))
            }
            SetupPrimitive::Other(e) => Err(AssocError::Malformed(format!(
                "unknown setup primitive <{}>",
                e.name
            ))),
        }
    }

    /// Route a Response-mode setup step to the initiator waiting for it. The first answer
    /// (SendSecretToken) is matched by the domain it names, since Baraza gives it its own
    /// transaction ID; the later ones by our transaction ID (64 random bits), so a party that
    /// did not receive our messages cannot slip its own session ID into the association.
    pub(crate) fn on_response(&self, t: SetupTransaction) -> Result<(), AssocError> {
        let st = self
            .state
            .lock()
            .map_err(|_| AssocError::Malformed("association state unavailable".into()))?;
        let waiting = match &t.primitive {
            SetupPrimitive::SendSecretToken(p) => domain_of_service(p.service_id.as_deref())
                .ok()
                .and_then(|d| st.initiators.get(&d)),
            _ => st
                .initiators
                .values()
                .find(|(tid, _)| *tid == t.transaction_id),
        };
        let tx = waiting
            .map(|(_, tx)| tx.clone())
            .ok_or(AssocError::Unmatched("setup response"))?;
        drop(st);
        tx.try_send(t)
            .map_err(|_| AssocError::Unmatched("setup response"))
    }

    /// Start an initiator attempt towards `domain`: our transaction ID and token, the first
    /// message to send, and where the answers will arrive.
    pub(crate) fn begin(
        &self,
        domain: &str,
    ) -> (String, Message, mpsc::Receiver<SetupTransaction>) {
        // 64 random bits: the later answers are matched by it (see `on_response`).
        let tid = format!("{:016x}", rand::random::<u64>());
        let token = new_token();
        let (tx, rx) = mpsc::channel(4);
        if let Ok(mut st) = self.state.lock() {
            st.initiators.insert(domain.to_owned(), (tid.clone(), tx));
            st.initiating.insert(
                domain.to_owned(),
                Assoc {
                    tid: tid.clone(),
                    our_token: token.clone(),
                    peer_token: None,
                    digest_ok: false,
                    proven_from: None,
                    established: None,
                    last_used: Instant::now(),
                },
            );
        }
        let msg = Message::setup(
            Mode::Request,
            tid.clone(),
            SetupPrimitive::SendSecretToken(SendSecretToken {
                service_id: Some(self.service()),
                protocol: Some("WV-SSP".into()),
                protocol_version: Some("1.3".into()),
                token,
                ..Default::default()
            }),
        );
        (tid, msg, rx)
    }

    /// Initiator: the peer's token arrived; the LoginRequest to send.
    pub(crate) fn step_token(
        &self,
        domain: &str,
        answer: &SetupTransaction,
    ) -> Result<Message, AssocError> {
        let SetupPrimitive::SendSecretToken(p) = &answer.primitive else {
            return Err(AssocError::Malformed("expected SendSecretToken".into()));
        };
        let peer_token = token_bytes(p)?;
        let mut st = self
            .state
            .lock()
            .map_err(|_| AssocError::Malformed("association state unavailable".into()))?;
        let a = st
            .initiating
            .get_mut(domain)
            .ok_or(AssocError::Unmatched("SendSecretToken"))?;
        let msg = Message::setup(
            Mode::Request,
            a.tid.clone(),
            SetupPrimitive::LoginRequest(LoginRequest {
                service_id: Some(self.service()),
                time_to_live: Some(self.ttl.as_secs().to_string()),
                digest: digest(&peer_token),
                digest_encoding: Some("base64".into()),
                ..Default::default()
            }),
        );
        a.peer_token = Some(peer_token);
        Ok(msg)
    }

    /// Initiator: the peer's digest arrived; verify it and return the LoginResponse to send.
    pub(crate) fn step_digest(
        &self,
        domain: &str,
        answer: &SetupTransaction,
    ) -> Result<Message, AssocError> {
        let SetupPrimitive::LoginRequest(p) = &answer.primitive else {
            return Err(AssocError::Malformed("expected LoginRequest".into()));
        };
        let mut st = self
            .state
            .lock()
            .map_err(|_| AssocError::Malformed("association state unavailable".into()))?;
        let a = st
            .initiating
            .get_mut(domain)
            .ok_or(AssocError::Unmatched("LoginRequest"))?;
        if !digest_matches(&p.digest, a.our_token.as_bytes()) {
            st.initiating.remove(domain);
            return Err(AssocError::BadDigest(domain.to_owned()));
        }
        a.digest_ok = true;
        let tid = a.tid.clone();
        let our_session = self.new_session();
        a.established = Some(Established {
            our_session: our_session.clone(),
            peer_session: String::new(),
        });
        Ok(Message::setup(
            Mode::Request,
            tid,
            SetupPrimitive::LoginResponse(LoginResponse {
                session_id: Some(our_session),
                time_to_live: Some(self.ttl.as_secs().to_string()),
                status: Some(Status::new(200)),
                ..Default::default()
            }),
        ))
    }

    /// Initiator: the peer's LoginResponse arrived; the association is up.
    pub(crate) fn step_done(
        &self,
        domain: &str,
        answer: &SetupTransaction,
    ) -> Result<Established, AssocError> {
        let SetupPrimitive::LoginResponse(p) = &answer.primitive else {
            return Err(AssocError::Malformed("expected LoginResponse".into()));
        };
        if let Some(s) = p.status.as_ref().filter(|s| !s.is_success()) {
            return Err(AssocError::Refused(s.code));
        }
        let peer_session = p
            .session_id
            .clone()
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| AssocError::Malformed("LoginResponse without sessionID".into()))?;
        // The peer's session must be in its own domain: its traffic is identified by it, and
        // another domain's session would be taken for this peer's.
        if domain_of_session(&peer_session).as_deref() != Some(domain) {
            return Err(AssocError::Malformed(format!(
                "LoginResponse sessionID {peer_session:?} is not in {domain}"
            )));
        }
        let mut st = self
            .state
            .lock()
            .map_err(|_| AssocError::Malformed("association state unavailable".into()))?;
        st.initiators.remove(domain);
        let mut a = st
            .initiating
            .remove(domain)
            .ok_or(AssocError::Unmatched("LoginResponse"))?;
        let est = Established {
            our_session: a
                .established
                .as_ref()
                .map(|e| e.our_session.clone())
                .unwrap_or_default(),
            peer_session,
        };
        if !a.digest_ok || est.our_session.is_empty() {
            return Err(AssocError::Unmatched(
                "LoginResponse before a verified digest",
            ));
        }
        a.established = Some(est.clone());
        st.establish(domain, a);
        Ok(est)
    }

    /// Abandon an initiator attempt.
    pub(crate) fn abort(&self, domain: &str) {
        if let Ok(mut st) = self.state.lock() {
            st.initiators.remove(domain);
            st.initiating.remove(domain);
        }
    }

    /// The live association with `domain` (refreshing its lifetime).
    pub(crate) fn established(&self, domain: &str) -> Option<Established> {
        let mut st = self.state.lock().ok()?;
        let ttl = self.ttl;
        let a = st.by_domain.get_mut(domain)?;
        let e = a
            .established
            .clone()
            .filter(|e| !e.peer_session.is_empty())?;
        if a.last_used.elapsed() > ttl {
            st.by_peer_session.remove(&e.peer_session);
            st.by_domain.remove(domain);
            return None;
        }
        a.last_used = Instant::now();
        Some(e)
    }

    /// The domain of the association whose peer writes `session_id` (refreshing it).
    pub(crate) fn domain_of_session(&self, session_id: &str) -> Option<String> {
        let domain = self
            .state
            .lock()
            .ok()?
            .by_peer_session
            .get(session_id)
            .cloned()?;
        self.established(&domain).map(|_| domain)
    }

    /// Number of established associations.
    pub(crate) fn count(&self) -> usize {
        self.state
            .lock()
            .map(|s| s.by_peer_session.len())
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ssp::Body;

    fn setup(m: &Message) -> &SetupTransaction {
        match &m.body {
            Body::Setup(t) => t,
            Body::Session(_) => panic!("not setup"),
        }
    }

    /// Two gateways associate with each other through this module alone.
    #[test]
    fn both_roles_complete_the_four_step_login() {
        let a = Associations::new("a.example", Duration::from_secs(60));
        let b = Associations::new("b.example", Duration::from_secs(60));
        let (_tid, m1, mut rx) = a.begin("b.example");
        let (d, m2) = b
            .on_request(setup(&m1), |d| d == "a.example", None)
            .unwrap();
        assert_eq!(d, "a.example");
        a.on_response(setup(&m2).clone()).unwrap();
        let got = rx.try_recv().unwrap();
        let m3 = a.step_token("b.example", &got).unwrap();
        let (_, m4) = b.on_request(setup(&m3), |_| true, None).unwrap();
        a.on_response(setup(&m4).clone()).unwrap();
        let m5 = a.step_digest("b.example", &rx.try_recv().unwrap()).unwrap();
        let (_, m6) = b.on_request(setup(&m5), |_| true, None).unwrap();
        a.on_response(setup(&m6).clone()).unwrap();
        let est = a.step_done("b.example", &rx.try_recv().unwrap()).unwrap();
        let b_est = b.established("a.example").unwrap();
        assert_eq!(est.peer_session, b_est.our_session);
        assert_eq!(b_est.peer_session, est.our_session);
        assert_eq!(
            b.domain_of_session(&est.our_session).as_deref(),
            Some("a.example")
        );
        assert_eq!(
            a.domain_of_session(&b_est.our_session).as_deref(),
            Some("b.example")
        );
    }

    /// Anyone can claim a domain in a SendSecretToken: that attempt must not end the
    /// domain's working association, and answers after the first need our transaction ID.
    #[test]
    fn strangers_can_neither_end_nor_hijack_an_association() {
        let a = Associations::new("a.example", Duration::from_secs(60));
        let b = Associations::new("b.example", Duration::from_secs(60));
        let (_tid, m1, mut rx) = a.begin("b.example");
        let (_, m2) = b.on_request(setup(&m1), |_| true, None).unwrap();
        a.on_response(setup(&m2).clone()).unwrap();
        let m3 = a.step_token("b.example", &rx.try_recv().unwrap()).unwrap();
        // Meanwhile a stranger starts an attempt as a.example, and b starts one towards a
        // (both at once, as two servers may): a's attempt with b carries on regardless.
        let c = Associations::new("a.example", Duration::from_secs(60));
        let (_tid, stranger, _crx) = c.begin("b.example");
        b.on_request(setup(&stranger), |_| true, None).unwrap();
        let (_tid, _b_first, _brx) = b.begin("a.example");
        let (_, m4) = b.on_request(setup(&m3), |_| true, None).unwrap();
        a.on_response(setup(&m4).clone()).unwrap();
        let m5 = a.step_digest("b.example", &rx.try_recv().unwrap()).unwrap();
        let (_, m6) = b.on_request(setup(&m5), |_| true, None).unwrap();
        // A stranger's LoginResponse for b.example, without our transaction ID: refused,
        // and it never reaches the waiting attempt.
        let mut forged = setup(&m6).clone();
        forged.transaction_id = "1".into();
        forged.primitive = SetupPrimitive::LoginResponse(LoginResponse {
            session_id: Some("evil@b.example".into()),
            status: Some(Status::new(200)),
            ..Default::default()
        });
        assert_eq!(
            a.on_response(forged),
            Err(AssocError::Unmatched("setup response"))
        );
        assert!(rx.try_recv().is_err());
        a.on_response(setup(&m6).clone()).unwrap();
        let real = rx.try_recv().unwrap();
        // b's answer naming a session of another domain would make that domain's traffic
        // pass for b's: refused.
        let mut elsewhere = real.clone();
        elsewhere.primitive = SetupPrimitive::LoginResponse(LoginResponse {
            session_id: Some("42@c.example".into()),
            status: Some(Status::new(200)),
            ..Default::default()
        });
        assert!(matches!(
            a.step_done("b.example", &elsewhere),
            Err(AssocError::Malformed(_))
        ));
        let est = a.step_done("b.example", &real).unwrap();
        assert_eq!(a.domain_of_session("evil@b.example"), None);
        assert_eq!(
            a.domain_of_session(&est.peer_session).as_deref(),
            Some("b.example")
        );

        // A stranger starts a new association as a.example with b: b's association with a
        // stays in use until the new attempt proves the dialback.
        let c = Associations::new("a.example", Duration::from_secs(60));
        let (_tid, hijack, _rx) = c.begin("b.example");
        b.on_request(setup(&hijack), |_| true, None).unwrap();
        assert_eq!(
            b.established("a.example").map(|e| e.peer_session),
            Some(est.our_session.clone())
        );
        assert_eq!(
            b.domain_of_session(&est.our_session).as_deref(),
            Some("a.example")
        );
    }

    /// As responder: a stranger who knows (or guesses) the initiator's transaction ID still
    /// cannot finish the association with a session ID of its own, nor cancel it with a bad
    /// digest: the LoginResponse must come from where the verified digest came from.
    #[test]
    fn responder_binds_the_login_to_where_the_digest_came_from() {
        let a = Associations::new("a.example", Duration::from_secs(60));
        let b = Associations::new("b.example", Duration::from_secs(60));
        let (ip_a, ip_x) = (Some([10, 0, 0, 1].into()), Some([10, 6, 6, 6].into()));
        let (_tid, m1, mut rx) = a.begin("b.example");
        let (_, m2) = b.on_request(setup(&m1), |_| true, ip_a).unwrap();
        a.on_response(setup(&m2).clone()).unwrap();
        let m3 = a.step_token("b.example", &rx.try_recv().unwrap()).unwrap();
        // A bad digest under the right transaction ID: refused, the attempt survives.
        let mut bad = setup(&m3).clone();
        bad.primitive = SetupPrimitive::LoginRequest(LoginRequest {
            service_id: Some("wv:@a.example".into()),
            digest: digest(b"a guess"),
            ..Default::default()
        });
        assert!(matches!(
            b.on_request(&bad, |_| true, ip_x),
            Err(AssocError::BadDigest(_))
        ));
        let (_, m4) = b.on_request(setup(&m3), |_| true, ip_a).unwrap();
        a.on_response(setup(&m4).clone()).unwrap();
        let m5 = a.step_digest("b.example", &rx.try_recv().unwrap()).unwrap();
        // The stranger's LoginResponse: right transaction ID, a session in a's domain.
        let mut forged = setup(&m5).clone();
        forged.primitive = SetupPrimitive::LoginResponse(LoginResponse {
            session_id: Some("evil@a.example".into()),
            status: Some(Status::new(200)),
            ..Default::default()
        });
        assert_eq!(
            b.on_request(&forged, |_| true, ip_x).err(),
            Some(AssocError::Unmatched(
                "LoginResponse from another address than the digest"
            ))
        );
        assert_eq!(b.domain_of_session("evil@a.example"), None);
        // The real one, from a: established.
        let (_, m6) = b.on_request(setup(&m5), |_| true, ip_a).unwrap();
        a.on_response(setup(&m6).clone()).unwrap();
        let est = a.step_done("b.example", &rx.try_recv().unwrap()).unwrap();
        assert_eq!(
            b.domain_of_session(&est.our_session).as_deref(),
            Some("a.example")
        );
    }

    #[test]
    fn wrong_digest_and_unmatched_steps_are_refused() {
        let b = Associations::new("b.example", Duration::from_secs(60));
        let a = Associations::new("a.example", Duration::from_secs(60));
        let (_tid, m1, _rx) = a.begin("b.example");
        b.on_request(setup(&m1), |_| true, None).unwrap();
        let mut bad = setup(&m1).clone();
        bad.primitive = SetupPrimitive::LoginRequest(LoginRequest {
            service_id: Some("wv:@a.example".into()),
            digest: digest(b"not the token"),
            ..Default::default()
        });
        assert_eq!(
            b.on_request(&bad, |_| true, None),
            Err(AssocError::BadDigest("a.example".into()))
        );
        // The failed association is gone: its LoginResponse no longer matches.
        let mut late = bad.clone();
        late.primitive = SetupPrimitive::LoginResponse(LoginResponse {
            session_id: Some("1@a.example".into()),
            ..Default::default()
        });
        assert!(matches!(
            b.on_request(&late, |_| true, None),
            Err(AssocError::Unmatched(_))
        ));
        // Not allowed to associate.
        assert!(matches!(
            b.on_request(setup(&m1), |_| false, None),
            Err(AssocError::NotAllowed(_))
        ));
    }

    #[test]
    fn baraza_token_and_digest_forms() {
        // Captures 034/038: hex token padded with newlines; the digest is over the trimmed text.
        let tok = SendSecretToken {
            token: "\n29ca0687ecd71081f4064aae323d1823\n".into(),
            ..Default::default()
        };
        let bytes = token_bytes(&tok).unwrap();
        assert_eq!(bytes, b"29ca0687ecd71081f4064aae323d1823");
        let d = digest(&bytes);
        assert!(digest_matches(&format!("\n{d}\r\n\n"), &bytes));
        // With an encoding attribute the token is base64.
        let enc = SendSecretToken {
            token: B64.encode(b"raw-secret"),
            token_encoding: Some("base64".into()),
            ..Default::default()
        };
        assert_eq!(token_bytes(&enc).unwrap(), b"raw-secret");
    }
}
