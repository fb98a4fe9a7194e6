//! A minimal SIP user agent over UDP, in process: for the demo's SIMPLE-only operator (its
//! user's phone) and for tests that send hand-written SIP requests. It answers every MESSAGE
//! and SUBSCRIBE it receives with 200 (a SUBSCRIBE as a presence server that grants it) and
//! keeps what it got; it sends one request at a time from a socket of its own and reads the
//! final answer. (The real far ends of the tests are Kamailio and
//! sipp: `siplab`.)

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;

/// A MESSAGE or SUBSCRIBE the agent received.
#[derive(Debug, Clone)]
pub struct Received {
    /// The method.
    pub method: String,
    /// The From header's value.
    pub from: String,
    /// The Call-ID.
    pub call_id: String,
    /// The body.
    pub text: String,
}

/// A SIP phone on a UDP port of 127.0.0.1.
pub struct SipUa {
    /// Its port.
    pub port: u16,
    inbox: Arc<Mutex<Vec<Received>>>,
    presence: Arc<Mutex<Option<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl SipUa {
    /// Listen on `port` (0: any).
    pub async fn start(port: u16) -> anyhow::Result<SipUa> {
        let sock = UdpSocket::bind(("127.0.0.1", port)).await?;
        let port = sock.local_addr()?.port();
        let inbox = Arc::new(Mutex::new(Vec::new()));
        let keep = inbox.clone();
        let presence: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
        let state = presence.clone();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            while let Ok((n, from)) = sock.recv_from(&mut buf).await {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                let Some((head, body)) = text.split_once("\r\n\r\n") else {
                    continue;
                };
                let method = head.split(' ').next().unwrap_or_default().to_owned();
                if method != "MESSAGE" && method != "SUBSCRIBE" {
                    continue;
                }
                if let Ok(mut v) = keep.lock() {
                    v.push(Received {
                        from: header(head, "From").unwrap_or_default(),
                        call_id: header(head, "Call-ID").unwrap_or_default(),
                        text: body.to_owned(),
                        method,
                    });
                }
                let _ = sock.send_to(answer(head, 200, "OK").as_bytes(), from).await;
                // As its own presence agent: a granted SUBSCRIBE gets the state in a NOTIFY.
                let pidf = state.lock().ok().and_then(|p| p.clone());
                if head.starts_with("SUBSCRIBE ")
                    && let Some(pidf) = pidf
                {
                    let _ = sock.send_to(notify(head, &pidf).as_bytes(), from).await;
                }
            }
        });
        Ok(SipUa {
            port,
            inbox,
            presence,
            task,
        })
    }

    /// Act as its user's presence agent from now on: each SUBSCRIBE it grants is followed by
    /// a NOTIFY saying `basic` (`open`, `closed`) with the RPID `activity` and `note`.
    pub fn set_presence(&self, entity: &str, basic: &str, activity: &str, note: &str) {
        let pidf = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
             <presence xmlns=\"urn:ietf:params:xml:ns:pidf\" xmlns:dm=\"urn:ietf:params:xml:ns:pidf:data-model\" \
             xmlns:rpid=\"urn:ietf:params:xml:ns:pidf:rpid\" entity=\"{entity}\">\
             <tuple id=\"phone\"><status><basic>{basic}</basic></status><note>{note}</note></tuple>\
             <dm:person id=\"p\"><rpid:activities><rpid:{activity}/></rpid:activities></dm:person></presence>"
        );
        if let Ok(mut p) = self.presence.lock() {
            *p = Some(pidf);
        }
    }

    /// The MESSAGEs received so far.
    pub fn received(&self) -> Vec<Received> {
        self.everything()
            .into_iter()
            .filter(|r| r.method == "MESSAGE")
            .collect()
    }

    /// The SUBSCRIBEs received so far.
    pub fn subscribes(&self) -> Vec<Received> {
        self.everything()
            .into_iter()
            .filter(|r| r.method == "SUBSCRIBE")
            .collect()
    }

    fn everything(&self) -> Vec<Received> {
        self.inbox.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// Wait (at most `within`) until `n` SUBSCRIBEs came.
    pub async fn wait_for_subscribes(&self, n: usize, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        while tokio::time::Instant::now() < deadline {
            if self.subscribes().len() >= n {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.subscribes().len() >= n
    }

    /// Wait (at most `within`) until `n` MESSAGEs came.
    pub async fn wait_for(&self, n: usize, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        while tokio::time::Instant::now() < deadline {
            if self.received().len() >= n {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.received().len() >= n
    }
}

impl Drop for SipUa {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The value of header `name` in a message head.
fn header(head: &str, name: &str) -> Option<String> {
    head.lines().skip(1).find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_owned())
    })
}

/// A final answer to the request whose head is `head`.
fn answer(head: &str, code: u16, reason: &str) -> String {
    let mut out = format!("SIP/2.0 {code} {reason}\r\n");
    for l in head.lines().skip(1) {
        let name = l
            .split(':')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match name.as_str() {
            "via" | "from" | "call-id" | "cseq" => out.push_str(&format!("{l}\r\n")),
            "to" if !l.contains("tag=") => out.push_str(&format!("{l};tag=ua{code}\r\n")),
            "to" => out.push_str(&format!("{l}\r\n")),
            _ => {}
        }
    }
    if head.starts_with("SUBSCRIBE ") {
        let expires = header(head, "Expires").unwrap_or_else(|| "3600".into());
        out.push_str(&format!("Expires: {expires}\r\n"));
    }
    out.push_str("Content-Length: 0\r\n\r\n");
    out
}

/// The NOTIFY that follows the SUBSCRIBE whose head is `head` (answered with [`answer`]'s
/// To tag), carrying `pidf`, to the subscriber's Contact.
fn notify(head: &str, pidf: &str) -> String {
    let value = |n: &str| header(head, n).unwrap_or_default();
    let contact = value("Contact");
    let target = contact
        .split_once('<')
        .and_then(|(_, r)| r.split_once('>'))
        .map_or(contact.as_str(), |(u, _)| u)
        .to_owned();
    let branch: u64 = rand::random();
    format!(
        "NOTIFY {target} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK{branch:x}\r\n\
         Max-Forwards: 70\r\nFrom: {};tag=ua200\r\nTo: {}\r\nCall-ID: {}\r\n\
         CSeq: 1 NOTIFY\r\nEvent: presence\r\nSubscription-State: active;expires=600\r\n\
         Content-Type: application/pidf+xml\r\nContent-Length: {}\r\n\r\n{pidf}",
        value("To"),
        value("From"),
        value("Call-ID"),
        pidf.len()
    )
}

/// Send one `method` request from a socket of its own to 127.0.0.1:`to`: its final status
/// code, if one came within two seconds.
pub async fn request(
    to: u16,
    method: &str,
    ruri: &str,
    from: &str,
    ctype: &str,
    body: &str,
) -> Option<u16> {
    let tag: u64 = rand::random();
    let raw = format!(
        "{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{{port}};branch=z9hG4bK{tag:x}\r\n\
         Max-Forwards: 70\r\nFrom: <{from}>;tag={tag:x}\r\nTo: <{ruri}>\r\n\
         Call-ID: {tag:x}@127.0.0.1\r\nCSeq: 1 {method}\r\nContent-Type: {ctype}\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    raw_request(to, &raw).await
}

/// Send `raw` (`{port}` replaced by the sending socket's port) to 127.0.0.1:`to`: the final
/// status code of the first answer within two seconds, if any.
pub async fn raw_request(to: u16, raw: &str) -> Option<u16> {
    let sock = UdpSocket::bind("127.0.0.1:0").await.ok()?;
    let port = sock.local_addr().ok()?.port();
    let raw = raw.replace("{port}", &port.to_string());
    sock.send_to(raw.as_bytes(), ("127.0.0.1", to)).await.ok()?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    let mut buf = vec![0u8; 65536];
    loop {
        let n = tokio::time::timeout_at(deadline, sock.recv(&mut buf))
            .await
            .ok()?
            .ok()?;
        let text = String::from_utf8_lossy(&buf[..n]);
        let code: u16 = text.strip_prefix("SIP/2.0 ")?.get(..3)?.parse().ok()?;
        if code >= 200 {
            return Some(code);
        }
    }
}

/// Send one `method` request over TLS to 127.0.0.1:`to`, checking the server's certificate
/// against `ca` for `server_name` and presenting one `ca` issues for `identity` (none: no
/// certificate): the final status code, if one came within two seconds (`None` too when the
/// handshake or the connection failed).
#[allow(clippy::too_many_arguments)] // a request's parts, named as in `request`
pub async fn tls_request(
    to: u16,
    ca: &ssp_gateway::certs::DevCa,
    identity: Option<&str>,
    server_name: &str,
    method: &str,
    ruri: &str,
    from: &str,
    body: &str,
) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert_der()).ok()?;
    let builder = rustls::ClientConfig::builder_with_provider(ssp_gateway::tls::provider())
        .with_safe_default_protocol_versions()
        .ok()?
        .with_root_certificates(roots);
    let cfg = match identity {
        Some(domain) => {
            let issued = ca.issue(domain).ok()?;
            let key = <rustls_pki_types::PrivateKeyDer<'static> as rustls_pki_types::pem::PemObject>::from_pem_slice(
                issued.key_pem.as_bytes(),
            )
            .ok()?;
            builder.with_client_auth_cert(vec![issued.der], key).ok()?
        }
        None => builder.with_no_client_auth(),
    };
    let name = rustls_pki_types::ServerName::try_from(server_name.to_owned()).ok()?;
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", to))
        .await
        .ok()?;
    let port = tcp.local_addr().ok()?.port();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    let mut tls = tokio::time::timeout_at(
        deadline,
        tokio_rustls::TlsConnector::from(Arc::new(cfg)).connect(name, tcp),
    )
    .await
    .ok()?
    .ok()?;
    let tag: u64 = rand::random();
    let raw = format!(
        "{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:{port};branch=z9hG4bK{tag:x}\r\n\
         Max-Forwards: 70\r\nFrom: <{from}>;tag={tag:x}\r\nTo: <{ruri}>\r\n\
         Call-ID: {tag:x}@127.0.0.1\r\nCSeq: 1 {method}\r\n\
         Content-Type: text/plain;charset=UTF-8\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    tls.write_all(raw.as_bytes()).await.ok()?;
    let mut got = Vec::new();
    let mut buf = vec![0u8; 8192];
    loop {
        let n = tokio::time::timeout_at(deadline, tls.read(&mut buf))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        got.extend_from_slice(&buf[..n]);
        // Answers end with an empty body here; take the first final one.
        let text = String::from_utf8_lossy(&got).into_owned();
        for head in text.split("\r\n\r\n") {
            if let Some(code) = head
                .trim_start()
                .strip_prefix("SIP/2.0 ")
                .and_then(|r| r.get(..3))
                .and_then(|c| c.parse::<u16>().ok())
                && code >= 200
            {
                return Some(code);
            }
        }
    }
}
