//! The peer's state (its `ssp_sessions` table, queued POSTs, deliveries) and the client
//! task that sends its POSTs, one at a time, over one keep-alive connection.

use super::*;

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(super) struct Inner {
    pub(super) domain: String,
    pub(super) users: Vec<(String, String)>,
    pub(super) addr: SocketAddr,
    pub(super) cert_der: Vec<u8>,
    pub(super) codec: Codec,
    pub(super) connector: TlsConnector,
    pub(super) out_tx: mpsc::UnboundedSender<OutReq>,
    pub(super) state: Mutex<State>,
    pub(super) wire: Mutex<Vec<WireEntry>>,
    pub(super) received: Mutex<Vec<ReceivedMessage>>,
    /// Notified on every wire entry and delivery.
    pub(super) changed: Notify,
    /// Serialises "associate if needed".
    pub(super) assoc_lock: tokio::sync::Mutex<()>,
    pub(super) msg_seq: AtomicU64,
    pub(super) accepted: AtomicU64,
    /// See [`super::BarazaPeerConfig::commit_race`].
    pub(super) commit_race: Option<Duration>,
}

#[derive(Default)]
pub(super) struct State {
    /// Domain → SSP URL.
    pub(super) peers: HashMap<String, String>,
    /// The domain of the last `set_peer`.
    pub(super) default_peer: Option<String>,
    /// Last `ssp_sessions` row id handed out.
    pub(super) next_row: u64,
    /// Last message queue id handed out.
    pub(super) next_queue: u64,
    /// The `ssp_sessions` table.
    pub(super) assocs: Vec<Assoc>,
    /// Initiator roles waiting for their association, by row.
    pub(super) waiters: HashMap<u64, oneshot::Sender<Result<(), String>>>,
    /// Our session requests waiting for their answer, by transaction ID.
    pub(super) pending: HashMap<String, oneshot::Sender<Primitive>>,
}

/// One association (a row of Baraza's `ssp_sessions`).
#[derive(Debug, Clone)]
pub(super) struct Assoc {
    pub(super) row: u64,
    /// The other side's domain.
    pub(super) domain: String,
    /// We initiated.
    pub(super) outgoing: bool,
    /// The initiator's transaction ID (ours is the row id).
    pub(super) tid: String,
    pub(super) our_token: String,
    pub(super) their_token: Option<Vec<u8>>,
    /// Their digest of our token was checked.
    pub(super) verified: bool,
    pub(super) their_session: Option<String>,
    pub(super) complete: bool,
    /// As responder: when its row is stored (a step arriving sooner is dropped).
    pub(super) committed_at: Option<Instant>,
}

impl Assoc {
    pub(super) fn our_session(&self, our_domain: &str) -> String {
        format!("{}@{our_domain}", self.row)
    }
}

/// A POST for the client task.
pub(super) struct OutReq {
    /// The domain whose URL it goes to.
    pub(super) domain: String,
    pub(super) tid_header: Option<String>,
    pub(super) sid_header: Option<String>,
    pub(super) body: String,
    pub(super) done: Option<oneshot::Sender<anyhow::Result<()>>>,
}

impl OutReq {
    pub(super) fn new(domain: impl Into<String>, body: String) -> OutReq {
        OutReq {
            domain: domain.into(),
            tid_header: None,
            sid_header: None,
            body,
            done: None,
        }
    }

    pub(super) fn with_tid(mut self, tid: impl Into<String>) -> OutReq {
        self.tid_header = Some(tid.into());
        self
    }

    pub(super) fn with_sid(mut self, sid: impl Into<String>) -> OutReq {
        self.sid_header = Some(sid.into());
        self
    }

    pub(super) fn with_done(mut self, done: oneshot::Sender<anyhow::Result<()>>) -> OutReq {
        self.done = Some(done);
        self
    }
}

/// What the server does with a request.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Answer {
    /// Empty `200 OK`.
    Ok,
    /// Empty `400 Bad Request`.
    BadRequest,
    /// Close the TCP connection without any HTTP response.
    Close(String),
}

/// What happens after the ack has been written.
pub(super) enum After {
    /// An async answer (or the next association step) to POST.
    Post(OutReq),
    /// An initiator role finished.
    Wake(oneshot::Sender<Result<(), String>>, Result<(), String>),
    /// The answer to one of our session requests.
    Reply(oneshot::Sender<Primitive>, Box<Primitive>),
}

pub(super) struct Outcome {
    pub(super) answer: Answer,
    pub(super) after: Vec<After>,
}

impl Outcome {
    pub(super) fn ok(after: Vec<After>) -> Outcome {
        Outcome {
            answer: Answer::Ok,
            after,
        }
    }

    pub(super) fn close(reason: impl Into<String>) -> Outcome {
        Outcome {
            answer: Answer::Close(reason.into()),
            after: Vec::new(),
        }
    }
}

impl Inner {
    pub(super) fn log(&self, direction: WireDirection, raw: &[u8]) {
        lock(&self.wire).push(WireEntry {
            direction,
            raw: String::from_utf8_lossy(raw).into_owned(),
        });
        self.changed.notify_waiters();
    }

    /// Wait until `cond` holds (re-checked on every wire entry or delivery), at most `within`.
    pub(super) async fn wait_until(&self, within: Duration, cond: impl Fn() -> bool) -> bool {
        let deadline = Instant::now() + within;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if cond() {
                return true;
            }
            if timeout_at(deadline, notified).await.is_err() {
                return cond();
            }
        }
    }

    pub(super) fn url_for(&self, domain: &str) -> Option<String> {
        let s = lock(&self.state);
        s.peers
            .get(&domain.to_ascii_lowercase())
            .or_else(|| s.default_peer.as_ref().and_then(|d| s.peers.get(d)))
            .cloned()
    }

    /// (our session ID, their session ID) of the newest complete association with `domain`,
    /// whoever opened it (Baraza's `ssp_get_session()` ignores the direction).
    pub(super) fn session_for(&self, domain: &str) -> Option<(String, String)> {
        let s = lock(&self.state);
        s.assocs
            .iter()
            .filter(|a| a.complete && a.domain.eq_ignore_ascii_case(domain))
            .max_by_key(|a| a.row)
            .and_then(|a| Some((a.our_session(&self.domain), a.their_session.clone()?)))
    }

    /// `wv:<local>@<domain>` for a configured user given by name or MSISDN.
    pub(super) fn local_sender_id(&self, local: &str) -> Option<String> {
        self.users
            .iter()
            .any(|(name, msisdn)| name.eq_ignore_ascii_case(local) || msisdn == local)
            .then(|| format!("wv:{local}@{}", self.domain))
    }

    /// The local user name a recipient ID designates.
    pub(super) fn local_user(&self, id: &str) -> Option<String> {
        let (local, domain) = split_id(id);
        if !domain.is_empty() && !domain.eq_ignore_ascii_case(&self.domain) {
            return None;
        }
        if local.is_empty() {
            return None;
        }
        self.users
            .iter()
            .find(|(name, msisdn)| name.eq_ignore_ascii_case(local) || msisdn == local)
            .map(|(name, _)| name.clone())
    }

    pub(super) fn new_message_id(&self) -> String {
        let seq = self.msg_seq.fetch_add(1, Ordering::Relaxed) + 1;
        format!("{}{seq:x}", hex(&rand::random::<[u8; 16]>()))
    }

    /// The initiator role (034–045): post SendSecretToken, then let the server side drive the
    /// remaining steps; wait for the end.
    pub(super) async fn associate(&self, domain: &str) -> anyhow::Result<()> {
        let domain = domain.to_ascii_lowercase();
        let deadline = Instant::now() + DEADLINE;
        let (row, body, wait_rx) = {
            let mut s = lock(&self.state);
            s.next_row += 1;
            let row = s.next_row;
            let our_token = new_token();
            let body = body_secret_token(Mode::Request, &row.to_string(), &self.domain, &our_token);
            s.assocs.push(Assoc {
                row,
                domain: domain.clone(),
                outgoing: true,
                tid: row.to_string(),
                our_token,
                their_token: None,
                verified: false,
                their_session: None,
                complete: false,
                committed_at: None,
            });
            let (tx, rx) = oneshot::channel();
            s.waiters.insert(row, tx);
            (row, body, rx)
        };
        info!(domain = %domain, row, "initiating association");
        let result = async {
            let (done_tx, done_rx) = oneshot::channel();
            let req = OutReq::new(domain.clone(), body)
                .with_tid(row.to_string())
                .with_done(done_tx);
            self.out_tx
                .send(req)
                .map_err(|_| anyhow!("the peer is shut down"))?;
            timeout_at(deadline, done_rx)
                .await
                .map_err(|_| anyhow!("SendSecretToken to {domain} timed out"))?
                .map_err(|_| anyhow!("the client task is gone"))??;
            match timeout_at(deadline, wait_rx).await {
                Ok(Ok(Ok(()))) => Ok(()),
                Ok(Ok(Err(e))) => Err(anyhow!("association with {domain} failed: {e}")),
                Ok(Err(_)) => Err(anyhow!("association with {domain} abandoned")),
                Err(_) => Err(anyhow!(
                    "association with {domain} not complete within {DEADLINE:?}"
                )),
            }
        }
        .await;
        if result.is_err() {
            let mut s = lock(&self.state);
            s.waiters.remove(&row);
            s.assocs.retain(|a| a.row != row || a.complete);
        }
        result
    }

    /// Decide what to do with one request (pure apart from state; the caller writes the ack
    /// and then runs the `after` actions).
    pub(super) fn handle_request(&self, req: &HttpMsg) -> Outcome {
        if !req.start.starts_with("POST ") {
            return Outcome::close(format!("{:?} is not an SSP POST", req.start));
        }
        let ct = req.header("content-type").unwrap_or("").trim();
        if !ct.to_ascii_lowercase().starts_with(SSP_CONTENT_TYPE) {
            return Outcome::close(format!(
                "Content-Type {ct:?} goes to the CSP handler, which drops it"
            ));
        }
        match self.codec.parse(&req.body) {
            Ok(msg) => match msg.body {
                Body::Setup(st) => self.handle_setup(st),
                Body::Session(sess) => self.handle_session(sess),
            },
            Err(e) => {
                debug!(error = %e, "unparseable SSP body: 400");
                Outcome {
                    answer: Answer::BadRequest,
                    after: Vec::new(),
                }
            }
        }
    }

    pub(super) fn handle_setup(&self, st: SetupTransaction) -> Outcome {
        let tid = st.transaction_id;
        let mut s = lock(&self.state);
        match (st.mode, st.primitive) {
            // Responder, step 1 → 2 (001 → 004).
            (Mode::Request, SetupPrimitive::SendSecretToken(p)) => {
                let Some(domain) = p.service_id.as_deref().and_then(service_domain) else {
                    return Outcome::close("SendSecretToken without a usable serviceID");
                };
                let Some(their) = decode_token(&p.token, p.token_encoding.is_some()) else {
                    return Outcome::close("SecretToken is not valid base64");
                };
                s.next_row += 1;
                let row = s.next_row;
                let our_token = new_token();
                let body =
                    body_secret_token(Mode::Response, &row.to_string(), &self.domain, &our_token);
                info!(%domain, row, %tid, "association requested");
                s.assocs.push(Assoc {
                    row,
                    domain: domain.clone(),
                    outgoing: false,
                    tid,
                    our_token,
                    their_token: Some(their),
                    verified: false,
                    their_session: None,
                    complete: false,
                    committed_at: self.commit_race.map(|d| Instant::now() + d),
                });
                Outcome::ok(vec![After::Post(
                    OutReq::new(domain, body).with_tid(row.to_string()),
                )])
            }
            // Responder, step 3 → 4 (006 → 008); wrong digest: 072/073.
            (Mode::Request, SetupPrimitive::LoginRequest(p)) => {
                let Some(i) = s
                    .assocs
                    .iter()
                    .rposition(|a| !a.outgoing && a.tid == tid && !a.verified && !a.complete)
                else {
                    return Outcome::close(format!("LoginRequest {tid:?} matches no association"));
                };
                if s.assocs[i].committed_at.is_some_and(|t| Instant::now() < t) {
                    return Outcome::close(format!(
                        "LoginRequest {tid:?} before its row is committed"
                    ));
                }
                if p.digest != digest_b64(s.assocs[i].our_token.as_bytes()) {
                    let a = s.assocs.remove(i);
                    warn!(domain = %a.domain, row = a.row, "wrong digest: association deleted");
                    return Outcome::close(format!(
                        "wrong digest from {}: association {} deleted",
                        a.domain, a.row
                    ));
                }
                let a = &mut s.assocs[i];
                a.verified = true;
                let digest = digest_b64(a.their_token.as_deref().unwrap_or_default());
                let body = body_login_request(Mode::Response, &tid, &self.domain, &digest);
                Outcome::ok(vec![After::Post(OutReq::new(a.domain.clone(), body))])
            }
            // Responder, step 5 → 6 (010 → 012).
            (Mode::Request, SetupPrimitive::LoginResponse(p)) => {
                let Some(i) = s
                    .assocs
                    .iter()
                    .rposition(|a| !a.outgoing && a.tid == tid && a.verified && !a.complete)
                else {
                    return Outcome::close(format!(
                        "LoginResponse {tid:?} matches no verified association"
                    ));
                };
                let Some(their_session) = p
                    .session_id
                    .map(|x| x.trim().to_owned())
                    .filter(|x| !x.is_empty())
                else {
                    return Outcome::close("LoginResponse without sessionID");
                };
                let a = &mut s.assocs[i];
                a.their_session = Some(their_session);
                a.complete = true;
                let ours = a.our_session(&self.domain);
                info!(domain = %a.domain, ours = %ours, theirs = ?a.their_session, "association complete (responder)");
                let body = body_login_response(Mode::Response, &tid, &ours);
                Outcome::ok(vec![After::Post(OutReq::new(a.domain.clone(), body))])
            }
            // Initiator, step 2 → 3 (036 → 038): matched by domain, the tid is ignored.
            (Mode::Response, SetupPrimitive::SendSecretToken(p)) => {
                let Some(domain) = p.service_id.as_deref().and_then(service_domain) else {
                    return Outcome::close("SendSecretToken without a usable serviceID");
                };
                let Some(i) = s.assocs.iter().rposition(|a| {
                    a.outgoing && a.their_token.is_none() && a.domain.eq_ignore_ascii_case(&domain)
                }) else {
                    return Outcome::close(format!(
                        "SendSecretToken Response from {domain} matches no association"
                    ));
                };
                let Some(their) = decode_token(&p.token, p.token_encoding.is_some()) else {
                    return Outcome::close("SecretToken is not valid base64");
                };
                let a = &mut s.assocs[i];
                let body =
                    body_login_request(Mode::Request, &a.tid, &self.domain, &digest_b64(&their));
                a.their_token = Some(their);
                Outcome::ok(vec![After::Post(OutReq::new(a.domain.clone(), body))])
            }
            // Initiator, step 4 → 5 (040 → 042).
            (Mode::Response, SetupPrimitive::LoginRequest(p)) => {
                let Some(i) = s.assocs.iter().rposition(|a| {
                    a.outgoing && a.tid == tid && a.their_token.is_some() && !a.verified
                }) else {
                    return Outcome::close(format!(
                        "LoginRequest Response {tid:?} matches no association"
                    ));
                };
                if p.digest != digest_b64(s.assocs[i].our_token.as_bytes()) {
                    let a = s.assocs.remove(i);
                    warn!(domain = %a.domain, row = a.row, "wrong digest in LoginRequest Response");
                    let mut out = Outcome::close(format!(
                        "wrong digest from {}: association {} deleted",
                        a.domain, a.row
                    ));
                    if let Some(w) = s.waiters.remove(&a.row) {
                        out.after.push(After::Wake(
                            w,
                            Err(format!("wrong digest from {}", a.domain)),
                        ));
                    }
                    return out;
                }
                let a = &mut s.assocs[i];
                a.verified = true;
                let body = body_login_response(Mode::Request, &a.tid, &a.our_session(&self.domain));
                Outcome::ok(vec![After::Post(OutReq::new(a.domain.clone(), body))])
            }
            // Initiator, step 6 (044): done.
            (Mode::Response, SetupPrimitive::LoginResponse(p)) => {
                let Some(i) = s
                    .assocs
                    .iter()
                    .rposition(|a| a.outgoing && a.tid == tid && a.verified && !a.complete)
                else {
                    return Outcome::close(format!(
                        "LoginResponse Response {tid:?} matches no association"
                    ));
                };
                let Some(their_session) = p
                    .session_id
                    .map(|x| x.trim().to_owned())
                    .filter(|x| !x.is_empty())
                else {
                    return Outcome::close("LoginResponse without sessionID");
                };
                let a = &mut s.assocs[i];
                a.their_session = Some(their_session);
                a.complete = true;
                let row = a.row;
                info!(domain = %a.domain, ours = %a.our_session(&self.domain), theirs = ?a.their_session, "association complete (initiator)");
                let mut after = Vec::new();
                if let Some(w) = s.waiters.remove(&row) {
                    after.push(After::Wake(w, Ok(())));
                }
                Outcome::ok(after)
            }
            (mode, SetupPrimitive::Other(e)) => Outcome::close(format!(
                "SetupTransaction {} holds <{:?}>, which is not handled",
                mode.as_str(),
                e.name
            )),
        }
    }

    pub(super) fn handle_session(&self, sess: Session) -> Outcome {
        let mut s = lock(&self.state);
        // Only the peer's own session ID is accepted (052: Baraza's own ID is dropped).
        let Some(a) = s
            .assocs
            .iter()
            .filter(|a| a.complete && a.their_session.as_deref() == Some(sess.session_id.as_str()))
            .max_by_key(|a| a.row)
        else {
            return Outcome::close(format!("unknown session {:?}", sess.session_id));
        };
        let peer_domain = a.domain.clone();
        let our_session = a.our_session(&self.domain);
        let mut after = Vec::new();
        for t in sess.transactions {
            match t.mode {
                Mode::Response => match s.pending.remove(&t.transaction_id) {
                    Some(tx) => after.push(After::Reply(tx, Box::new(t.primitive))),
                    None => warn!(tid = %t.transaction_id, "answer to no pending request"),
                },
                Mode::Request => {
                    let report = wants_report(&t.primitive);
                    if let Some(prim) = self.answer(&peer_domain, t.primitive) {
                        let delivered = prim.starts_with("<SendMessageResponse")
                            && prim.contains("<Status code=\"200\">");
                        let body = body_session_response(&our_session, &t.transaction_id, &prim);
                        after.push(After::Post(
                            OutReq::new(peer_domain.clone(), body)
                                .with_sid(sess.session_id.clone()),
                        ));
                        // Asked for a delivery report: sent as Baraza writes it (run1 0036).
                        if let (Some((sender, recipients, size)), true) = (report, delivered) {
                            for r in recipients {
                                let Some(local) = self.local_user(&r) else {
                                    continue;
                                };
                                let Some(local_id) = self.local_sender_id(&local) else {
                                    continue;
                                };
                                s.next_queue += 1;
                                let tid = format!("{:010}-0", s.next_queue);
                                let body = body_delivery_report(
                                    &our_session,
                                    &tid,
                                    &self.domain,
                                    &local_id,
                                    &sender,
                                    &self.new_message_id(),
                                    size,
                                    &iso8601(now_secs()),
                                );
                                after.push(After::Post(
                                    OutReq::new(peer_domain.clone(), body)
                                        .with_tid(tid)
                                        .with_sid(sess.session_id.clone()),
                                ));
                            }
                        }
                    }
                }
            }
        }
        Outcome::ok(after)
    }

    /// The primitive (as Baraza writes it) answering one session request, if any.
    pub(super) fn answer(&self, peer_domain: &str, prim: Primitive) -> Option<String> {
        let foreign = |id: &str| !id_domain(id).eq_ignore_ascii_case(peer_domain);
        match prim {
            Primitive::SendMessageRequest(p) => {
                let requestor = p
                    .meta
                    .as_ref()
                    .and_then(|m| m.requestor_user())
                    .map(str::to_owned);
                let info = p.info.unwrap_or_default();
                let sender = info.sender_id().map(str::to_owned);
                if let Some(bad) = [&requestor, &sender]
                    .into_iter()
                    .flatten()
                    .find(|id| foreign(id))
                {
                    warn!(%bad, %peer_domain, "sender outside the session's domain: 901");
                    return Some(prim_status(901));
                }
                let text = p.content.map(|c| content_text(&c)).unwrap_or_default();
                let from_id = sender.or(requestor).unwrap_or_default();
                let recipients: Vec<String> = info
                    .recipient
                    .map(|r| r.entities.into_iter().map(|e| e.id).collect())
                    .unwrap_or_default();
                let mut invalid = Vec::new();
                let mut delivered = 0;
                for r in &recipients {
                    match self.local_user(r) {
                        Some(to_local) => {
                            info!(%to_local, %from_id, "message delivered");
                            lock(&self.received).push(ReceivedMessage {
                                to_local,
                                from_id: from_id.clone(),
                                text: text.clone(),
                            });
                            self.changed.notify_waiters();
                            delivered += 1;
                        }
                        None => invalid.push(strip_wv(r).to_owned()),
                    }
                }
                if recipients.is_empty() {
                    invalid.push(String::new());
                }
                if invalid.is_empty() {
                    Some(prim_send_ok(&self.new_message_id()))
                } else {
                    let mid = if delivered > 0 {
                        self.new_message_id()
                    } else {
                        String::new()
                    };
                    Some(prim_send_invalid(&mid, &invalid))
                }
            }
            // A bare Status, not a response primitive (the live run's 0009).
            Primitive::SubscribeRequest(_) | Primitive::UnsubscribeRequest(_) => {
                Some(STATUS_COMPLETE.to_owned())
            }
            Primitive::GetPresenceRequest(p) => {
                if p.meta
                    .as_ref()
                    .and_then(|m| m.requestor_user())
                    .is_some_and(foreign)
                {
                    return Some(prim_status(901));
                }
                Some(GET_PRESENCE_EMPTY.to_owned())
            }
            other => {
                warn!(primitive = other.name(), "request not answered");
                None
            }
        }
    }

    pub(super) fn run_after(&self, after: Vec<After>) {
        for a in after {
            match a {
                After::Post(req) => {
                    if self.out_tx.send(req).is_err() {
                        warn!("client task gone; answer not sent");
                    }
                }
                After::Wake(tx, r) => {
                    let _ = tx.send(r);
                }
                After::Reply(tx, p) => {
                    let _ = tx.send(*p);
                }
            }
        }
    }

    // -- client side --

    pub(super) async fn connect(&self, t: &Target) -> anyhow::Result<Box<dyn Io>> {
        let tcp = timeout(DEADLINE, TcpStream::connect((t.host.as_str(), t.port)))
            .await
            .map_err(|_| anyhow!("connect to {}:{} timed out", t.host, t.port))??;
        let _ = tcp.set_nodelay(true);
        if !t.tls {
            return Ok(Box::new(tcp));
        }
        let name = match t.host.parse::<IpAddr>() {
            Ok(ip) => ServerName::IpAddress(ip.into()),
            Err(_) => ServerName::try_from(t.host.clone())?,
        };
        let tls = timeout(DEADLINE, self.connector.connect(name, tcp))
            .await
            .map_err(|_| anyhow!("TLS handshake with {}:{} timed out", t.host, t.port))??;
        Ok(Box::new(tls))
    }

    /// POST one request over the (reused) keep-alive connection; `Ok` on a 2xx answer.
    pub(super) async fn post(
        &self,
        conn: &mut Option<ClientConn>,
        req: &OutReq,
    ) -> anyhow::Result<()> {
        let url = self
            .url_for(&req.domain)
            .ok_or_else(|| anyhow!("no SSP URL known for {}", req.domain))?;
        let target = Target::parse(&url)?;
        let bytes = build_request(&target, req);
        if conn.as_ref().is_some_and(|c| c.url != url) {
            *conn = None;
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            let reused = conn.is_some();
            if conn.is_none() {
                let io = self.connect(&target).await?;
                *conn = Some(ClientConn {
                    url: url.clone(),
                    io,
                    buf: Vec::new(),
                });
            }
            let Some(c) = conn.as_mut() else {
                bail!("no connection");
            };
            match self.exchange(c, &bytes).await {
                Ok(resp) => {
                    if resp.wants_close() || resp.until_eof {
                        *conn = None;
                    }
                    let code = resp.status_code().unwrap_or(0);
                    if (200..300).contains(&code) {
                        return Ok(());
                    }
                    bail!("{url} answered {:?}", resp.start);
                }
                Err(e) => {
                    *conn = None;
                    if reused && attempt == 1 {
                        debug!(error = %e, "stale keep-alive connection; reconnecting");
                        continue;
                    }
                    return Err(e.context(format!("POST to {url}")));
                }
            }
        }
    }

    pub(super) async fn exchange(
        &self,
        c: &mut ClientConn,
        bytes: &[u8],
    ) -> anyhow::Result<HttpMsg> {
        c.io.write_all(bytes).await?;
        c.io.flush().await?;
        self.log(WireDirection::Out, bytes);
        match read_message(&mut c.io, &mut c.buf, true).await? {
            Some(resp) => {
                self.log(WireDirection::In, &resp.raw);
                Ok(resp)
            }
            None => bail!("connection closed without an HTTP response"),
        }
    }
}

/// The client task: the queued POSTs one at a time, in order, over one keep-alive connection.
pub(super) async fn client_loop(inner: Arc<Inner>, mut rx: mpsc::UnboundedReceiver<OutReq>) {
    let mut conn: Option<ClientConn> = None;
    while let Some(mut req) = rx.recv().await {
        let done = req.done.take();
        let res = match timeout(DEADLINE, inner.post(&mut conn, &req)).await {
            Ok(r) => r,
            Err(_) => Err(anyhow!("POST to {} timed out", req.domain)),
        };
        if let Err(e) = &res {
            warn!(domain = %req.domain, error = %format!("{e:#}"), "POST failed");
            conn = None;
        }
        if let Some(d) = done {
            let _ = d.send(res);
        }
    }
}

pub(super) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub(super) struct ClientConn {
    pub(super) url: String,
    pub(super) io: Box<dyn Io>,
    pub(super) buf: Vec<u8>,
}

/// A parsed peer URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Target {
    pub(super) tls: bool,
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) path: String,
    /// `Host:` value, always with the port (`imps.b.test:19090`).
    pub(super) host_header: String,
}

impl Target {
    pub(super) fn parse(url: &str) -> anyhow::Result<Target> {
        let lower = url.to_ascii_lowercase();
        let (tls, rest) = if lower.starts_with("https://") {
            (true, &url[8..])
        } else if lower.starts_with("http://") {
            (false, &url[7..])
        } else {
            bail!("unsupported URL {url:?}");
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let default_port = if tls { 443 } else { 80 };
        let (host, port, bracketed) = if let Some(r) = authority.strip_prefix('[') {
            let (h, after) = r
                .split_once(']')
                .ok_or_else(|| anyhow!("bad IPv6 authority in {url:?}"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().with_context(|| format!("bad port in {url:?}"))?,
                None => default_port,
            };
            (h.to_owned(), port, true)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (
                    h.to_owned(),
                    p.parse().with_context(|| format!("bad port in {url:?}"))?,
                    false,
                ),
                None => (authority.to_owned(), default_port, false),
            }
        };
        if host.is_empty() {
            bail!("no host in {url:?}");
        }
        let host_header = if bracketed {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        Ok(Target {
            tls,
            host,
            port,
            path: path.to_owned(),
            host_header,
        })
    }
}

/// Header value without control characters (no header injection from peer-supplied IDs).
pub(super) fn header_value(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).collect()
}

/// A request exactly as Baraza/Kannel writes it (004, 016, 034, 046).
pub(super) fn build_request(t: &Target, req: &OutReq) -> Vec<u8> {
    let mut head = format!("POST {} HTTP/1.1\r\nConnection: keep-alive\r\n", t.path);
    if let Some(tid) = &req.tid_header {
        head.push_str(&format!("x-wv-transactionid: {}\r\n", header_value(tid)));
    }
    if let Some(sid) = &req.sid_header {
        head.push_str(&format!("x-wv-sessionid: {}\r\n", header_value(sid)));
    }
    head.push_str(&format!(
        "User-Agent: {USER_AGENT}\r\nContent-Type: {SSP_CONTENT_TYPE}\r\nContent-Length: {}\r\nHost: {}\r\n\r\n",
        req.body.len(),
        t.host_header
    ));
    let mut out = head.into_bytes();
    out.extend_from_slice(req.body.as_bytes());
    out
}

/// Kannel's ack (002, 063): `status` like `200 OK`; the duplicated Connection header when the
/// request asked to close.
pub(super) fn ack_bytes(status: &str, request_said_close: bool, date: &str) -> String {
    let connection = if request_said_close {
        "Connection: Close\r\nConnection: keep-alive\r\n"
    } else {
        "Connection: keep-alive\r\n"
    };
    format!(
        "HTTP/1.1 {status}\r\nServer: Kannel/1.4.5\r\nDate: {date}\r\nContent-Length: 0\r\n{connection}\r\n"
    )
}

/// A message that asks for a delivery report: its sender, recipients and size.
pub(super) fn wants_report(p: &Primitive) -> Option<(String, Vec<String>, usize)> {
    let Primitive::SendMessageRequest(m) = p else {
        return None;
    };
    if !m
        .delivery_report
        .as_deref()
        .is_some_and(|d| d.eq_ignore_ascii_case("yes"))
    {
        return None;
    }
    let info = m.info.as_ref()?;
    let sender = info.sender_id()?.to_owned();
    let recipients = info
        .recipient
        .as_ref()
        .map(|r| r.entities.iter().map(|e| e.id.clone()).collect())
        .unwrap_or_default();
    let size = m
        .content
        .as_ref()
        .map(|c| content_text(c).len())
        .unwrap_or(0);
    Some((sender, recipients, size))
}
