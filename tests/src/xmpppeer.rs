//! An XMPP-only operator in process, for the demo: the smallest server-to-server XMPP server
//! that federates with a gateway by Server Dialback (both halves: it checks the gateway's
//! keys by asking the gateway, and answers the gateway's checks of its own), for one user.
//!
//! Its user approves every presence subscription at once and then says her presence; what
//! comes for her is recorded. It reads the wire with the gateway's own framer and stanza
//! parser (`ssp_gateway::links::xmpp`). The tests use a real Prosody (`xmpplab`); this is for
//! the demo, which must run where no Prosody is installed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use ssp_gateway::links::xmpp::frame::{Frame, Framer};
use ssp_gateway::links::xmpp::stanza::{self, Header, Stanza};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const DIALBACK: &str = "jabber:server:dialback";

/// What the server's user received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// A chat message: from, body.
    Message(String, String),
    /// A presence subscription request from.
    Subscribe(String),
}

/// One stream's socket and framer.
struct Wire {
    tcp: TcpStream,
    framer: Framer,
    header: Header,
}

impl Wire {
    fn new(tcp: TcpStream) -> Wire {
        Wire {
            tcp,
            framer: Framer::new(65_536, 16),
            header: Header::default(),
        }
    }

    async fn send(&mut self, s: &str) -> Result<()> {
        self.tcp.write_all(s.as_bytes()).await?;
        Ok(())
    }

    /// The next header or stanza.
    async fn next(&mut self) -> Result<Option<Stanza>> {
        let mut buf = [0u8; 8192];
        loop {
            match self.framer.next_frame()? {
                Some(Frame::Header(h)) => {
                    self.header = stanza::header(&h, 65_536)?;
                    return Ok(None);
                }
                Some(Frame::Stanza(s)) => {
                    return Ok(Some(stanza::parse(&s, &self.header, 65_536)?));
                }
                Some(Frame::End) => bail!("stream ended"),
                None => {}
            }
            let n = self.tcp.read(&mut buf).await?;
            if n == 0 {
                bail!("connection closed");
            }
            self.framer.push(&buf[..n]);
        }
    }

    /// The next stanza, skipping a header.
    async fn stanza(&mut self) -> Result<Stanza> {
        loop {
            if let Some(s) = self.next().await? {
                return Ok(s);
            }
        }
    }
}

fn header(from: &str, to: &str, id: Option<&str>) -> String {
    format!(
        "<?xml version='1.0'?><stream:stream xmlns='jabber:server' \
         xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='{DIALBACK}' \
         from='{from}' to='{to}'{} version='1.0'>",
        id.map(|i| format!(" id='{i}'")).unwrap_or_default()
    )
}

struct Shared {
    domain: String,
    gateway_domain: String,
    gateway_port: u16,
    /// The keys we gave on our streams to the gateway, by stream ID (for its checks).
    keys: Mutex<HashMap<String, String>>,
    seen: Mutex<Vec<Seen>>,
    changed: tokio::sync::Notify,
    /// The user's presence, as the children of a presence stanza.
    presence: Mutex<String>,
    out: tokio::sync::Mutex<Option<Wire>>,
}

/// The in-process XMPP server.
#[derive(Clone)]
pub struct XmppServer {
    inner: Arc<Shared>,
    /// Where the gateway reaches it (`_xmpp-server._tcp`).
    pub port: u16,
}

impl XmppServer {
    /// Start the server of `domain`, federating with the gateway of `gateway_domain`
    /// listening on `gateway_port`; its user's presence is `presence` (children of
    /// `<presence>`, e.g. `<show>away</show>`).
    pub async fn start(
        domain: &str,
        gateway_domain: &str,
        gateway_port: u16,
        presence: &str,
    ) -> Result<XmppServer> {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = l.local_addr()?.port();
        let inner = Arc::new(Shared {
            domain: domain.to_owned(),
            gateway_domain: gateway_domain.to_owned(),
            gateway_port,
            keys: Mutex::new(HashMap::new()),
            seen: Mutex::new(Vec::new()),
            changed: tokio::sync::Notify::new(),
            presence: Mutex::new(presence.to_owned()),
            out: tokio::sync::Mutex::new(None),
        });
        let s = XmppServer { inner, port };
        let me = s.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = l.accept().await {
                let me = me.clone();
                tokio::spawn(async move {
                    let _ = me.serve(Wire::new(tcp)).await;
                });
            }
        });
        Ok(s)
    }

    /// What its user received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.inner
            .seen
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }

    /// Wait (up to `within`) until what its user received satisfies `cond`.
    pub async fn wait_for(&self, within: Duration, cond: impl Fn(&[Seen]) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let changed = self.inner.changed.notified();
            if cond(&self.seen()) {
                return true;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return cond(&self.seen());
            }
        }
    }

    fn record(&self, s: Seen) {
        if let Ok(mut v) = self.inner.seen.lock() {
            v.push(s);
        }
        self.inner.changed.notify_waiters();
    }

    /// Send `xml` to the gateway on our stream to it (opened and proved by dialback first).
    pub async fn send(&self, xml: &str) -> Result<()> {
        let mut out = self.inner.out.lock().await;
        if out.is_none() {
            *out = Some(
                self.open()
                    .await
                    .context("opening a stream to the gateway")?,
            );
        }
        let w = out.as_mut().context("no stream")?;
        if let Err(e) = w.send(xml).await {
            *out = None;
            return Err(e);
        }
        Ok(())
    }

    /// Open a stream to the gateway and prove our domain by dialback: the gateway checks
    /// our key with us on a stream of its own.
    async fn open(&self) -> Result<Wire> {
        let i = &self.inner;
        let mut w = Wire::new(TcpStream::connect(("127.0.0.1", i.gateway_port)).await?);
        w.send(&header(&i.domain, &i.gateway_domain, None)).await?;
        let _ = w.next().await?;
        let id = w.header.id.clone().context("no stream ID")?;
        let _features = w.stanza().await?;
        let key = format!("{:032x}", rand::random::<u128>());
        i.keys
            .lock()
            .map_err(|_| anyhow::anyhow!("lock"))?
            .insert(id, key.clone());
        w.send(&format!(
            "<db:result from='{}' to='{}'>{key}</db:result>",
            i.domain, i.gateway_domain
        ))
        .await?;
        loop {
            let s = w.stanza().await?;
            if s.is(DIALBACK, "result") {
                if s.attr("type") == Some("valid") {
                    return Ok(w);
                }
                bail!("the gateway did not take our key");
            }
        }
    }

    /// One stream the gateway opened to us: our features, then what it sends.
    async fn serve(&self, mut w: Wire) -> Result<()> {
        let i = &self.inner;
        let id = format!("{:016x}", rand::random::<u64>());
        let _ = w.next().await?;
        w.send(&format!(
            "{}<stream:features><dialback xmlns='urn:xmpp:features:dialback'/></stream:features>",
            header(&i.domain, &i.gateway_domain, Some(&id))
        ))
        .await?;
        let mut proved = false;
        loop {
            let s = w.stanza().await?;
            if s.is(DIALBACK, "verify") {
                // The gateway checks a key we gave on our stream to it.
                let sid = s.attr("id").unwrap_or_default();
                let ours = i.keys.lock().ok().and_then(|k| k.get(sid).cloned());
                let valid = ours.as_deref() == Some(s.el.text.as_str());
                w.send(&format!(
                    "<db:verify from='{}' to='{}' id='{sid}' type='{}'/>",
                    i.domain,
                    i.gateway_domain,
                    if valid { "valid" } else { "invalid" }
                ))
                .await?;
            } else if s.is(DIALBACK, "result") {
                // The gateway's key: checked with the gateway, on a stream of our own.
                let valid = self.check(&id, &s.el.text).await.unwrap_or(false);
                proved = valid;
                w.send(&format!(
                    "<db:result from='{}' to='{}' type='{}'/>",
                    i.domain,
                    i.gateway_domain,
                    if valid { "valid" } else { "invalid" }
                ))
                .await?;
            } else if proved {
                self.take(&s).await;
            }
        }
    }

    /// Ask the gateway whether `key` is its key for our stream `id`.
    async fn check(&self, id: &str, key: &str) -> Result<bool> {
        let i = &self.inner;
        let mut w = Wire::new(TcpStream::connect(("127.0.0.1", i.gateway_port)).await?);
        w.send(&header(&i.domain, &i.gateway_domain, None)).await?;
        let _ = w.next().await?;
        let _features = w.stanza().await?;
        w.send(&format!(
            "<db:verify from='{}' to='{}' id='{id}'>{key}</db:verify>",
            i.domain, i.gateway_domain
        ))
        .await?;
        loop {
            let s = w.stanza().await?;
            if s.is(DIALBACK, "verify") {
                return Ok(s.attr("type") == Some("valid"));
            }
        }
    }

    /// A stanza for our user.
    async fn take(&self, s: &Stanza) {
        let from = s.attr("from").unwrap_or_default().to_owned();
        let to = s.attr("to").unwrap_or_default().to_owned();
        match s.local.as_str() {
            "message" => {
                if let Some(b) = s.child(stanza::NS_SERVER, "body") {
                    self.record(Seen::Message(from, b.text.clone()));
                }
            }
            "presence" if s.attr("type") == Some("subscribe") => {
                self.record(Seen::Subscribe(from.clone()));
                // Approved at once, and her presence said.
                let p = self
                    .inner
                    .presence
                    .lock()
                    .map(|p| p.clone())
                    .unwrap_or_default();
                let _ = self
                    .send(&format!(
                        "<presence from='{to}' to='{from}' type='subscribed'/>\
                         <presence from='{to}/phone' to='{from}'>{p}</presence>"
                    ))
                    .await;
            }
            _ => {}
        }
    }
}
