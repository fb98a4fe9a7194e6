//! Which SIP operator a request is from, and the TLS set-up that proves it.
//!
//! Over UDP and TCP nothing but the source address can vouch for the `From` domain, so a
//! `[[sip.peer]]` names the networks its servers send from. Over TLS the far side presents
//! a certificate in the handshake; a peer with `tls = true` is trusted when that certificate
//! chains to *its* anchors (its `trust`, else `[tls] trust`) and names its domain (RFC 5922
//! §7.1), so one operator's CA cannot vouch for another operator's domain. The listener asks
//! every client for a certificate from any anchor a peer has; which peer it belongs to is
//! decided per request, against the `From` domain.
//!
//! Connections the gateway opens check the server's certificate against the SIP domain of
//! the destination (RFC 5922 §7.2) with that peer's anchors, and present our certificate.

use std::collections::HashMap;
use std::sync::Arc;

use rustls_pki_types::CertificateDer;

use super::stack::{Incoming, TlsSetup, Transport};
use crate::config::{SipPeerSpec, SipSpec, TlsSpec};
use crate::tls::{self, PeerCertCheck, ServerTrust, TlsError};

/// Each TLS-trusted peer's certificate check, by lowercase domain.
pub(crate) type CertChecks = HashMap<String, PeerCertCheck>;

/// The TLS set-up of `spec` (`None` without `tls_listen`), and the certificate checks of the
/// peers trusted by certificate.
pub(crate) fn setup(
    spec: &SipSpec,
    tls_cfg: &TlsSpec,
    identity: Option<Arc<tls::CertStore>>,
) -> Result<(Option<TlsSetup>, CertChecks), TlsError> {
    let Some(listen) = spec.tls_listen else {
        return Ok((None, CertChecks::new()));
    };
    let Some(identity) = identity else {
        return Err(TlsError::Verifier(
            "SIP over TLS needs [tls] cert and key".into(),
        ));
    };
    let anchors = |p: &SipPeerSpec| {
        if p.trust.is_empty() {
            tls_cfg.trust.clone()
        } else {
            p.trust.clone()
        }
    };
    let mut checks = CertChecks::new();
    let mut all = Vec::new();
    for p in spec.peers.iter().filter(|p| p.tls) {
        let paths = anchors(p);
        checks.insert(
            p.domain.to_ascii_lowercase(),
            PeerCertCheck::roots(tls::load_roots(&paths)?)?,
        );
        all.extend(paths);
    }
    all.sort();
    all.dedup();
    // Clients are asked for a certificate, and one that is sent must chain to an anchor of
    // some peer; one that is not sent leaves the connection trusted by address alone.
    let client_roots = (!all.is_empty())
        .then(|| tls::load_roots(&all))
        .transpose()?;
    let mut server = tls::server_config_from(identity.clone(), client_roots, false)?;
    server.alpn_protocols.clear();
    let client = |paths: &[std::path::PathBuf]| -> Result<Arc<rustls::ClientConfig>, TlsError> {
        let roots = tls::load_roots(paths)?;
        let mut c = tls::client_config_from(
            ServerTrust::Roots(Arc::new(roots)),
            Some(identity.clone()),
            false,
        )?;
        c.alpn_protocols.clear();
        Ok(Arc::new(c))
    };
    let mut clients = HashMap::new();
    for p in spec.peers.iter().filter(|p| !p.trust.is_empty()) {
        clients.insert(p.domain.to_ascii_lowercase(), client(&p.trust)?);
    }
    let default_client = if tls_cfg.trust.is_empty() {
        None
    } else {
        Some(client(&tls_cfg.trust)?)
    };
    let advertise = match spec.advertise {
        Some(a) => std::net::SocketAddr::new(a.ip(), listen.port()),
        None => listen,
    };
    Ok((
        Some(TlsSetup {
            listen,
            advertise,
            server: Arc::new(server),
            clients,
            default_client,
        }),
        checks,
    ))
}

/// The `[[sip.peer]]` that `req`, claiming to be from `domain`, is trusted as: by its source
/// address (any transport), or over TLS by a certificate of its own that names `domain`.
pub(crate) fn peer_of<'a>(
    spec: &'a SipSpec,
    checks: &CertChecks,
    domain: &str,
    req: &Incoming,
) -> Option<&'a SipPeerSpec> {
    let source = req.source.map(|s| s.ip().to_canonical());
    if let Some(p) = source.and_then(|ip| spec.peer_at(domain, ip)) {
        return Some(p);
    }
    if req.transport != Transport::Tls {
        return None;
    }
    certified(spec, checks, domain, req.peer_chain.as_deref()?)
}

/// The TLS-trusted peer of `domain`, if `chain` (end entity first) is one of its
/// certificates naming it.
fn certified<'a>(
    spec: &'a SipSpec,
    checks: &CertChecks,
    domain: &str,
    chain: &[CertificateDer<'_>],
) -> Option<&'a SipPeerSpec> {
    let p = spec.peer(domain).filter(|p| p.tls)?;
    let check = checks.get(&p.domain.to_ascii_lowercase())?;
    let ee = chain.first()?;
    (check.accepts(chain) && tls::cert_names_domain(ee, &p.domain)).then_some(p)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::certs::DevCa;

    fn spec(peers: Vec<SipPeerSpec>) -> SipSpec {
        SipSpec {
            listen: "127.0.0.1:5060".parse().unwrap(),
            advertise: None,
            tls_listen: Some("127.0.0.1:5061".parse().unwrap()),
            max_body: 1000,
            subscribe_expires: 3600,
            peers,
        }
    }

    fn peer(domain: &str, tls: bool) -> SipPeerSpec {
        SipPeerSpec {
            domain: domain.into(),
            addresses: Vec::new(),
            tls,
            trust: Vec::new(),
            imdn: false,
            rate: 10,
            burst: 10,
        }
    }

    #[test]
    fn a_certificate_vouches_only_for_its_own_domain_and_its_peers_anchors() {
        let ca = DevCa::new("B's CA").unwrap();
        let other = DevCa::new("C's CA").unwrap();
        let spec = spec(vec![
            peer("opb.example", true),
            peer("opc.example", true),
            peer("opd.example", false),
        ]);
        let mut checks = CertChecks::new();
        checks.insert(
            "opb.example".into(),
            PeerCertCheck::roots({
                let mut r = rustls::RootCertStore::empty();
                r.add(ca.cert_der()).unwrap();
                r
            })
            .unwrap(),
        );
        checks.insert(
            "opc.example".into(),
            PeerCertCheck::roots({
                let mut r = rustls::RootCertStore::empty();
                r.add(other.cert_der()).unwrap();
                r
            })
            .unwrap(),
        );
        let b = ca.issue("opb.example").unwrap().der;
        assert!(certified(&spec, &checks, "opb.example", std::slice::from_ref(&b)).is_some());
        assert!(
            certified(&spec, &checks, "OPB.example", std::slice::from_ref(&b)).is_some(),
            "domains are caseless"
        );
        assert!(
            certified(&spec, &checks, "opc.example", std::slice::from_ref(&b)).is_none(),
            "B's certificate does not name C"
        );
        let c_by_b = ca.issue("opc.example").unwrap().der;
        assert!(
            certified(&spec, &checks, "opc.example", std::slice::from_ref(&c_by_b)).is_none(),
            "B's CA cannot vouch for C"
        );
        let d = ca.issue("opd.example").unwrap().der;
        assert!(
            certified(&spec, &checks, "opd.example", std::slice::from_ref(&d)).is_none(),
            "a peer without tls = true is trusted by address only"
        );
        assert!(
            certified(&spec, &checks, "ope.example", std::slice::from_ref(&d)).is_none(),
            "no such peer"
        );
    }
}
