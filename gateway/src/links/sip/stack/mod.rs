//! The SIP stack (rsipstack) behind one small interface: bind UDP and TCP on one port (and
//! TLS on another, `tls`), hand over incoming requests as plain values with a way to answer
//! them, and send one request to a chosen address for its final answer. Nothing else in the
//! gateway names an rsipstack type, so the stack can be replaced here alone.

mod tls;

pub(crate) use tls::{Chain, TlsSetup};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rsipstack::EndpointBuilder;
use rsipstack::platform::CancellationToken;
use rsipstack::sip::{Header, HeadersExt, Method, SipMessage, StatusCodeKind};
use rsipstack::transaction::endpoint::{EndpointInner, EndpointOption};
use rsipstack::transaction::key::{TransactionKey, TransactionRole};
use rsipstack::transaction::{Transaction, TransactionReceiver, make_tag};
use rsipstack::transport::udp::UdpConnection;
use rsipstack::transport::{SipAddr, TcpListenerConnection, TransportLayer};

/// A SIP stack failure (binding, building or sending a request).
#[derive(Debug, Clone, thiserror::Error)]
#[error("SIP: {0}")]
pub(crate) struct StackError(pub(crate) String);

fn err(e: impl std::fmt::Display) -> StackError {
    StackError(e.to_string())
}

/// Which transport a request goes over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    /// UDP (RFC 3261's default; bodies up to about 1300 bytes).
    Udp,
    /// TCP.
    Tcp,
    /// TLS over TCP (`sips`, `_sips._tcp`).
    Tls,
}

impl Transport {
    fn stack(self) -> rsipstack::sip::Transport {
        match self {
            Transport::Udp => rsipstack::sip::Transport::Udp,
            Transport::Tcp => rsipstack::sip::Transport::Tcp,
            Transport::Tls => rsipstack::sip::Transport::Tls,
        }
    }

    /// `udp`, `tcp` or `tls`, for logs, metrics and `transport=` URI parameters.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        }
    }

    /// The transport of a kept dialog (`tcp`, `tls` as stored).
    pub(crate) fn of(tcp: bool, tls: bool) -> Transport {
        match (tcp, tls) {
            (_, true) => Transport::Tls,
            (true, false) => Transport::Tcp,
            (false, false) => Transport::Udp,
        }
    }
}

/// One request to send out of any dialog.
#[derive(Debug, Clone)]
pub(crate) struct Outgoing {
    /// `MESSAGE`, `SUBSCRIBE`, …
    pub(crate) method: &'static str,
    /// The Request-URI.
    pub(crate) uri: String,
    /// The From URI (a tag is added).
    pub(crate) from: String,
    /// The To URI.
    pub(crate) to: String,
    /// Extra headers (name, value).
    pub(crate) headers: Vec<(&'static str, String)>,
    /// The body and its content type.
    pub(crate) body: Option<(String, Vec<u8>)>,
    /// Where to send it.
    pub(crate) dest: SocketAddr,
    /// Over what.
    pub(crate) transport: Transport,
    /// The far side's SIP domain: over TLS, the name its server's certificate must carry.
    pub(crate) domain: String,
    /// The dialog it is in, or makes with the Call-ID and our tag chosen by the caller (to
    /// match what comes back before the answer does); `None`: out of any dialog, with a new
    /// Call-ID and From tag.
    pub(crate) dialog: Option<DialogIds>,
    /// The Contact to give (where the far side sends requests in the dialog this makes).
    pub(crate) contact: Option<String>,
    /// The dialog's route set, as `Route` headers in this order (RFC 3261 §12.2.1.1).
    pub(crate) route: Vec<String>,
}

/// What names a dialog (RFC 3261 §12), and the next CSeq in it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct DialogIds {
    /// The Call-ID.
    pub(crate) call_id: String,
    /// Our tag (From, in requests we send).
    pub(crate) local_tag: String,
    /// Theirs (To, in requests we send); empty until their answer or first request.
    pub(crate) remote_tag: String,
    /// The CSeq of the next request we send.
    pub(crate) cseq: u32,
}

/// The final answer to a request.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    /// The status code (a timeout is a local 408).
    pub(crate) code: u16,
    /// The reason phrase.
    pub(crate) reason: String,
    /// The To tag of the answer (the far side's half of the dialog).
    pub(crate) remote_tag: Option<String>,
    /// The answer's Contact URI (where requests in the dialog go).
    pub(crate) contact: Option<String>,
    /// The answer's `Expires` (a subscription's granted duration).
    pub(crate) expires: Option<u32>,
    /// The answer's `Min-Expires` (with a 423).
    pub(crate) min_expires: Option<u32>,
    /// The answer's `Record-Route` values, in the order they came (a UAC's route set is
    /// their reverse).
    pub(crate) record_route: Vec<String>,
}

impl Reply {
    fn local(code: u16, reason: &str) -> Reply {
        Reply {
            code,
            reason: reason.into(),
            remote_tag: None,
            contact: None,
            expires: None,
            min_expires: None,
            record_route: Vec::new(),
        }
    }
}

/// Every value of header `name` in `headers`, in order (a header may also list several
/// values separated by commas).
fn all_values<'a>(headers: impl IntoIterator<Item = &'a Header>, name: &str) -> Vec<String> {
    headers
        .into_iter()
        .filter(|h| h.name().eq_ignore_ascii_case(name))
        .flat_map(|h| super::map::split_list(h.value()))
        .collect()
}

/// The SIP endpoint: its listeners and transaction layer.
pub(crate) struct Stack {
    inner: Arc<EndpointInner>,
    cancel: CancellationToken,
    local: SocketAddr,
    tls: Option<Arc<tls::Tls>>,
}

impl std::fmt::Debug for Stack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stack").field("local", &self.local).finish()
    }
}

impl Stack {
    /// Bind UDP and TCP on `listen` (advertised as `advertise`), and TLS as `tls` says, with
    /// `timeout` as the transaction timeout (RFC 3261 Timer B/F). Returns the stack and its
    /// incoming requests; the stack runs until [`Stack::stop`].
    pub(crate) async fn bind(
        listen: SocketAddr,
        advertise: Option<SocketAddr>,
        tls: Option<TlsSetup>,
        timeout: Duration,
    ) -> Result<(Stack, Requests), StackError> {
        let cancel = CancellationToken::new();
        let tls = match tls {
            Some(setup) => Some(tls::Tls::bind(setup, cancel.child_token()).await?),
            None => None,
        };
        let layer = TransportLayer::new(cancel.child_token());
        // UDP first: the first listener is what Via and Contact name by default.
        let udp = UdpConnection::create_connection(listen, advertise, Some(cancel.child_token()))
            .await
            .map_err(|e| err(format!("cannot listen on udp {listen}: {e}")))?;
        layer.add_transport(udp.into());
        // The TCP listener binds when the endpoint serves; check the port is free now, so a
        // busy port is a start error and not a warning later.
        drop(
            std::net::TcpListener::bind(listen)
                .map_err(|e| err(format!("cannot listen on tcp {listen}: {e}")))?,
        );
        let tcp = TcpListenerConnection::new(listen, advertise)
            .await
            .map_err(|e| err(format!("cannot listen on tcp {listen}: {e}")))?;
        layer.add_transport(tcp.into());
        let option = EndpointOption {
            t1x64: timeout,
            ..Default::default()
        };
        let endpoint = EndpointBuilder::new()
            .with_user_agent(concat!("ssp-gateway/", env!("CARGO_PKG_VERSION")))
            .with_transport_layer(layer)
            .with_cancel_token(cancel.child_token())
            .with_option(option)
            .build();
        let incoming = endpoint.incoming_transactions().map_err(err)?;
        let inner = endpoint.inner.clone();
        let serving = inner.clone();
        tokio::spawn(async move {
            if let Err(e) = serving.serve().await {
                tracing::error!(error = %e, "SIP endpoint stopped");
            }
        });
        let tls = tls.map(|(t, listener)| {
            let t = Arc::new(t);
            t.serve(listener, inner.clone());
            t
        });
        Ok((
            Stack {
                inner,
                cancel: cancel.clone(),
                local: advertise.unwrap_or(listen),
                tls: tls.clone(),
            },
            Requests {
                rx: incoming,
                cancel,
                flows: tls.map(|t| t.flows.clone()),
            },
        ))
    }

    /// Where peers reach this stack.
    pub(crate) fn local(&self) -> SocketAddr {
        self.local
    }

    /// Where peers reach this stack over `transport` (TLS has a port of its own).
    pub(crate) fn local_for(&self, transport: Transport) -> SocketAddr {
        match (&self.tls, transport) {
            (Some(t), Transport::Tls) => t.setup.advertise,
            _ => self.local,
        }
    }

    /// Close the listeners and end every transaction.
    pub(crate) fn stop(&self) {
        self.cancel.cancel();
    }

    /// Send `out` and wait for its final answer (at most the transaction timeout: then a
    /// local 408).
    pub(crate) async fn request(&self, out: Outgoing) -> Result<Reply, StackError> {
        let t = out.transport.stack();
        let local = match (&self.tls, out.transport) {
            (Some(tls), Transport::Tls) => tls.local(),
            (None, Transport::Tls) => {
                return Err(err("SIP over TLS is not set up ([sip] tls_listen)"));
            }
            _ => self
                .inner
                .transport_layer
                .get_listen_addrs()
                .into_iter()
                .find(|a| a.r#type == Some(t))
                .ok_or_else(|| err(format!("no {} listener", out.transport.as_str())))?,
        };
        let via = self.inner.get_via(Some(local), None).map_err(err)?;
        let uri = |s: &str| rsipstack::sip::Uri::try_from(s).map_err(err);
        let (call_id, local_tag, remote_tag, seq) = match &out.dialog {
            Some(d) => (
                d.call_id.clone(),
                d.local_tag.clone(),
                Some(d.remote_tag.clone()).filter(|t| !t.is_empty()),
                d.cseq,
            ),
            None => (
                format!("{:032x}", rand::random::<u128>()),
                make_tag().to_string(),
                None,
                1,
            ),
        };
        let from = rsipstack::sip::typed::From {
            display_name: None,
            uri: uri(&out.from)?,
            params: vec![],
        }
        .with_tag(local_tag.clone().into());
        let mut to = rsipstack::sip::typed::To {
            display_name: None,
            uri: uri(&out.to)?,
            params: vec![],
        };
        if let Some(t) = remote_tag {
            to = to.with_tag(t.into());
        }
        let method = out
            .method
            .parse::<Method>()
            .map_err(|_| err(format!("unknown method {}", out.method)))?;
        let mut req = self.inner.make_request(
            method,
            uri(&out.uri)?,
            via,
            from,
            to,
            seq,
            Some(call_id.clone().into()),
        );
        if let Some(c) = &out.contact {
            req.headers.push(Header::Contact(format!("<{c}>").into()));
        }
        for r in &out.route {
            req.headers
                .push(rsipstack::sip::headers::make_header("Route", r.clone()));
        }
        for (name, value) in out.headers {
            req.headers
                .push(rsipstack::sip::headers::make_header(name, value));
        }
        if let Some((ctype, body)) = out.body {
            req.headers.push(Header::ContentType(ctype.into()));
            req.body = body;
        }
        let key = TransactionKey::from_request(&req, TransactionRole::Client).map_err(err)?;
        // A TCP connect to a black hole would wait for the kernel's SYN timeout.
        let limit = self.inner.option.t1x64;
        let started = tokio::time::Instant::now();
        // Over TLS the flow is chosen here, for the destination's domain, and handed to the
        // transaction: rsipstack never picks one by address (nor opens one unchecked).
        let conn = match (&self.tls, out.transport) {
            (Some(tls), Transport::Tls) => {
                match tokio::time::timeout(limit, tls.ensure(&self.inner, out.dest, &out.domain))
                    .await
                {
                    Ok(Ok(c)) => Some(c),
                    Ok(Err(e)) => return Err(e),
                    Err(_) => return Ok(Reply::local(408, "no connection")),
                }
            }
            _ => None,
        };
        let mut tx = Transaction::new_client(key, req, self.inner.clone(), conn);
        tx.destination = Some(SipAddr::new(t, out.dest.into()));
        match tokio::time::timeout_at(started + limit, tx.send()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(err(e)),
            Err(_) => return Ok(Reply::local(408, "no connection")),
        }
        while let Some(msg) = tx.receive().await {
            if let SipMessage::Response(r) = msg
                && r.status_code.kind() != StatusCodeKind::Provisional
            {
                let number = |name: &str| {
                    r.header_value(name)
                        .and_then(|v| v.split(';').next()?.trim().parse::<u32>().ok())
                };
                return Ok(Reply {
                    code: r.status_code.code(),
                    reason: r.status_code.text().to_string(),
                    remote_tag: r
                        .header_value("To")
                        .and_then(|v| super::map::tag(&v).map(str::to_owned)),
                    contact: r
                        .header_value("Contact")
                        .and_then(|v| super::map::contact_uri(&v)),
                    expires: number("Expires"),
                    min_expires: number("Min-Expires"),
                    record_route: all_values(r.headers.iter(), "Record-Route"),
                });
            }
        }
        Ok(Reply::local(
            408,
            "transaction ended without a final answer",
        ))
    }
}

/// Incoming requests, in arrival order.
pub(crate) struct Requests {
    rx: TransactionReceiver,
    cancel: CancellationToken,
    flows: Option<Arc<tls::Flows>>,
}

impl Requests {
    /// The next request (`None`: the stack stopped).
    pub(crate) async fn next(&mut self) -> Option<Incoming> {
        loop {
            let tx = tokio::select! {
                t = self.rx.recv() => t?,
                () = self.cancel.cancelled() => return None,
            };
            // ACKs and CANCELs of transactions we never started need no answer.
            if matches!(tx.original.method, Method::Ack | Method::Cancel) {
                continue;
            }
            return Some(Incoming::of(tx, self.flows.as_deref()));
        }
    }
}

/// One incoming request: what the translator reads, and the way to answer it.
pub(crate) struct Incoming {
    /// The method, as written.
    pub(crate) method: String,
    /// The Request-URI.
    pub(crate) uri: String,
    /// The From header's value.
    pub(crate) from: String,
    /// The To header's value.
    pub(crate) to: String,
    /// The Call-ID.
    pub(crate) call_id: String,
    /// Content-Type, if any.
    pub(crate) content_type: Option<String>,
    /// The body.
    pub(crate) body: Vec<u8>,
    /// The address it came from.
    pub(crate) source: Option<SocketAddr>,
    /// The transport it came over.
    pub(crate) transport: Transport,
    /// Over TLS: the certificate chain the far end of the connection presented (checked
    /// against the listener's anchors in the handshake).
    pub(crate) peer_chain: Option<Chain>,
    tx: Transaction,
}

impl Incoming {
    fn of(tx: Transaction, flows: Option<&tls::Flows>) -> Incoming {
        let req = &tx.original;
        let value = |name: &str| req.header_value(name).unwrap_or_default();
        let (transport, source, local) = tx
            .connection
            .as_ref()
            .map(|c| {
                let t = match c.transport() {
                    rsipstack::sip::Transport::Udp => Transport::Udp,
                    rsipstack::sip::Transport::Tls => Transport::Tls,
                    _ => Transport::Tcp,
                };
                (
                    t,
                    c.get_remote_addr().and_then(|a| a.get_socketaddr().ok()),
                    c.get_addr().get_socketaddr().ok(),
                )
            })
            .unwrap_or((Transport::Udp, None, None));
        // The chain of the very connection it came on (its two ends tell it apart).
        let peer_chain = match (transport, local, source, flows) {
            (Transport::Tls, Some(l), Some(s), Some(f)) => f.chain((l, s)),
            _ => None,
        };
        Incoming {
            method: req.method.to_string(),
            uri: req.uri.to_string(),
            from: value("From"),
            to: value("To"),
            call_id: value("Call-ID"),
            content_type: req.header_value("Content-Type"),
            body: req.body.clone(),
            source,
            transport,
            peer_chain,
            tx,
        }
    }

    /// The value of header `name` (the first one), if present.
    pub(crate) fn header(&self, name: &str) -> Option<String> {
        self.tx.original.header_value(name)
    }

    /// Every value of header `name`, in order.
    pub(crate) fn headers(&self, name: &str) -> Vec<String> {
        all_values(self.tx.original.headers.iter(), name)
    }

    /// Its CSeq number.
    pub(crate) fn cseq(&self) -> Option<u32> {
        self.header("CSeq")?.split_whitespace().next()?.parse().ok()
    }

    /// Answer with `code` and extra headers (name, value), and `to_tag` as our tag in the To
    /// header (a dialog this answer makes; else a tag of the stack's choosing).
    pub(crate) async fn answer_in_dialog(
        mut self,
        code: u16,
        headers: Vec<(&'static str, String)>,
        to_tag: &str,
    ) {
        if let Ok(to) = self.tx.original.to_header()
            && to.tag().ok().flatten().is_none()
        {
            let tagged = to.clone().with_tag(to_tag.to_owned().into());
            self.tx.original.headers.unique_push(tagged.into());
        }
        // A 2xx that makes a dialog carries the request's Record-Route (RFC 3261 §12.1.1).
        let mut headers = headers;
        if (200..300).contains(&code) {
            for r in self.headers("Record-Route") {
                headers.push(("Record-Route", r));
            }
        }
        self.answer(code, headers).await;
    }

    /// Answer with `code` and extra headers (name, value).
    pub(crate) async fn answer(mut self, code: u16, headers: Vec<(&'static str, String)>) {
        let headers = headers
            .into_iter()
            .map(|(n, v)| rsipstack::sip::headers::make_header(n, v))
            .collect();
        let status = rsipstack::sip::StatusCode::from(code);
        if let Err(e) = self.tx.reply_with(status, headers, None).await {
            tracing::debug!(error = %e, code, "SIP answer not sent");
        }
    }
}
