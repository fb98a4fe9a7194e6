//! TLS configuration: rustls with the ring provider, PEM loading via rustls-pki-types,
//! peer identity from certificates, and certificate pins.
//!
//! The peer-facing listener always offers mutual TLS but does not require it: Baraza-like
//! peers present no certificate and send no SNI, and authenticate through the SSP association
//! instead. A certificate that *is* presented must chain to a configured trust anchor, or the
//! handshake fails. Which peer a certificate belongs to is decided after the handshake, by
//! checking it against each peer's domain and that peer's own trust anchors or pins, so one
//! peer's CA cannot vouch for another peer's domain.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

/// TLS setup errors, naming the file involved.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{}: {msg}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
    /// rustls refused the configuration (e.g. key does not match certificate).
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// Building a verifier failed (e.g. empty trust store).
    #[error("TLS verifier: {0}")]
    Verifier(String),
}

/// The one crypto provider of the process (ring; aws-lc is not compiled in).
///
/// rustls 0.23.48 marks ring's provider deprecated because ring has no post-quantum key
/// exchange (X25519MLKEM768 needs aws-lc-rs). The stack is fixed on ring, so the provider
/// stays, allowed explicitly: a `cargo update` (the fuzz crate resolves its own versions)
/// must not turn the notice into a build failure under `-D warnings`.
#[allow(deprecated)]
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Read every certificate of a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |msg: String| TlsError::Pem {
        path: path.to_owned(),
        msg,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(format!("cannot read certificates: {e}")))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(format!("bad PEM: {e}")))?;
    if certs.is_empty() {
        return Err(err("no CERTIFICATE block found".into()));
    }
    Ok(certs)
}

/// Read the private key (PKCS#8, PKCS#1 or SEC1) of a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::Pem {
        path: path.to_owned(),
        msg: format!("cannot read private key: {e}"),
    })
}

/// Our certificate chain and its private key, checked to belong together: a mismatch is
/// reported here, naming both files, rather than as rustls's bare `KeyMismatch` later.
pub fn load_identity(
    cert: &Path,
    key: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let chain = load_certs(cert)?;
    let k = load_key(key)?;
    rustls::sign::CertifiedKey::from_der(chain.clone(), k.clone_key(), &provider()).map_err(
        |e| TlsError::Pem {
            path: key.to_owned(),
            msg: match e {
                rustls::Error::InconsistentKeys(_) => format!(
                    "this private key does not belong to the certificate in {}",
                    cert.display()
                ),
                e => format!("unusable private key: {e}"),
            },
        },
    )?;
    Ok((chain, k))
}

/// Our certificate and key, taken up again when their files change (an ACME client or
/// cert-manager renewing them): every handshake, either side, uses the current pair.
pub struct CertStore {
    cert: PathBuf,
    key: PathBuf,
    current: arc_swap::ArcSwap<rustls::sign::CertifiedKey>,
    /// The files' modification times when `current` was read, and when they last failed to
    /// load (not tried again, nor logged again, until they change once more).
    stamp: std::sync::Mutex<Stamps>,
}

/// Modification times of the certificate and key files.
type Stamp = Option<(std::time::SystemTime, std::time::SystemTime)>;

#[derive(Default)]
struct Stamps {
    loaded: Stamp,
    failed: Stamp,
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertStore")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

fn modified(p: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

impl CertStore {
    /// Read `cert` and `key` (checked to belong together).
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<CertStore>, TlsError> {
        let stamp = modified(cert).zip(modified(key));
        let ck = Self::read(cert, key)?;
        Ok(Arc::new(CertStore {
            cert: cert.to_owned(),
            key: key.to_owned(),
            current: arc_swap::ArcSwap::from_pointee(ck),
            stamp: std::sync::Mutex::new(Stamps {
                loaded: stamp,
                failed: None,
            }),
        }))
    }

    fn read(cert: &Path, key: &Path) -> Result<rustls::sign::CertifiedKey, TlsError> {
        let (chain, k) = load_identity(cert, key)?;
        Ok(rustls::sign::CertifiedKey::from_der(chain, k, &provider())?)
    }

    /// The chain in use now.
    pub fn chain(&self) -> Vec<CertificateDer<'static>> {
        self.current.load().cert.clone()
    }

    /// Take the files up again if they changed since they were read: `Ok(true)` when the
    /// pair in use was replaced. A pair that does not load (half written, a key that does
    /// not match yet) leaves the current one in use and is tried again next time.
    pub fn refresh(&self) -> Result<bool, TlsError> {
        let now = modified(&self.cert).zip(modified(&self.key));
        let mut stamp = self
            .stamp
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if now.is_none() || now == stamp.loaded || now == stamp.failed {
            return Ok(false);
        }
        match Self::read(&self.cert, &self.key) {
            Ok(ck) => {
                self.current.store(Arc::new(ck));
                stamp.loaded = now;
                stamp.failed = None;
                Ok(true)
            }
            Err(e) => {
                stamp.failed = now;
                Err(e)
            }
        }
    }
}

impl rustls::server::ResolvesServerCert for CertStore {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.current.load_full())
    }
}

impl rustls::client::ResolvesClientCert for CertStore {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.current.load_full())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// A root store from PEM files.
pub fn load_roots(paths: &[PathBuf]) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for p in paths {
        for c in load_certs(p)? {
            roots.add(c).map_err(|e| TlsError::Pem {
                path: p.clone(),
                msg: format!("not a usable trust anchor: {e}"),
            })?;
        }
    }
    Ok(roots)
}

/// SHA-256 of a certificate's DER, lowercase hex: the pin format of the config.
pub fn pin_of(cert: &CertificateDer<'_>) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, cert.as_ref());
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// The server side up to the certificate: the client certificates asked for, if any.
fn server_builder(
    client_roots: Option<RootCertStore>,
    require_client_cert: bool,
) -> Result<rustls::ConfigBuilder<ServerConfig, rustls::server::WantsServerCert>, TlsError> {
    let builder =
        ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    Ok(match client_roots {
        Some(roots) if !roots.is_empty() => {
            let mut v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
            if !require_client_cert {
                v = v.allow_unauthenticated();
            }
            builder.with_client_cert_verifier(
                v.build().map_err(|e| TlsError::Verifier(e.to_string()))?,
            )
        }
        _ => builder.with_no_client_auth(),
    })
}

/// Server-side TLS for a listener. `client_roots`: anchors a presented client certificate must
/// chain to; `require_client_cert`: refuse clients without one.
pub fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    client_roots: Option<RootCertStore>,
    require_client_cert: bool,
) -> Result<ServerConfig, TlsError> {
    let mut cfg =
        server_builder(client_roots, require_client_cert)?.with_single_cert(chain, key)?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(cfg)
}

/// [`server_config`] with our certificate from `store` (renewals taken up live).
pub fn server_config_from(
    store: Arc<CertStore>,
    client_roots: Option<RootCertStore>,
    require_client_cert: bool,
) -> Result<ServerConfig, TlsError> {
    let mut cfg = server_builder(client_roots, require_client_cert)?.with_cert_resolver(store);
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(cfg)
}

/// How a client verifies the server it connects to.
#[derive(Debug, Clone)]
pub enum ServerTrust {
    /// Chain to these anchors and match the expected name.
    Roots(Arc<RootCertStore>),
    /// The end-entity certificate's SHA-256 must be one of these (self-signed peers).
    Pins(Vec<String>),
}

/// Client-side TLS towards one peer (or the core).
pub fn client_config(
    trust: ServerTrust,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    alpn_h2: bool,
) -> Result<ClientConfig, TlsError> {
    let builder =
        ClientConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let builder = match trust {
        ServerTrust::Roots(roots) => builder.with_root_certificates(roots),
        ServerTrust::Pins(pins) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinVerifier {
                pins,
                provider: provider(),
            })),
    };
    let mut cfg = match identity {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key)?,
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = if alpn_h2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(cfg)
}

/// [`client_config`] presenting our certificate from `store` (renewals taken up live).
pub fn client_config_from(
    trust: ServerTrust,
    identity: Option<Arc<CertStore>>,
    alpn_h2: bool,
) -> Result<ClientConfig, TlsError> {
    let mut cfg = client_config(trust, None, alpn_h2)?;
    if let Some(store) = identity {
        cfg.client_auth_cert_resolver = store;
    }
    Ok(cfg)
}

/// Server-side TLS asking every client for a certificate and taking any (its signatures
/// checked, its chain not): for a protocol that judges the certificate after the handshake
/// and may be proved otherwise (XMPP: SASL EXTERNAL when it chains, else Server Dialback).
pub fn server_config_any_client(store: Arc<CertStore>) -> Result<ServerConfig, TlsError> {
    let cfg = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(Arc::new(AnyCert {
            provider: provider(),
        }))
        .with_cert_resolver(store);
    Ok(cfg)
}

/// Client-side TLS for encryption only: any server certificate is taken (signatures checked),
/// ours presented. For a protocol whose peer is proved otherwise (XMPP Server Dialback over
/// TLS, where policy allows it).
pub fn client_config_unverified(
    identity: Option<Arc<CertStore>>,
) -> Result<ClientConfig, TlsError> {
    let builder =
        ClientConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let mut cfg = builder
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert {
            provider: provider(),
        }))
        .with_no_client_auth();
    if let Some(store) = identity {
        cfg.client_auth_cert_resolver = store;
    }
    Ok(cfg)
}

/// Takes any certificate, checking only that the handshake is signed by its key.
#[derive(Debug)]
struct AnyCert {
    provider: Arc<CryptoProvider>,
}

/// Handshake signature checks with a provider's algorithms (what every verifier here does,
/// whatever it decides about the certificate itself).
struct Signatures<'a>(&'a CryptoProvider);

impl Signatures<'_> {
    fn tls12(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn tls13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Signatures(&self.provider).tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Signatures(&self.provider).tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        Signatures(&self.provider).schemes()
    }
}

impl ClientCertVerifier for AnyCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        Ok(rustls::server::danger::ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        <Self as ServerCertVerifier>::verify_tls12_signature(self, message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        <Self as ServerCertVerifier>::verify_tls13_signature(self, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        Signatures(&self.provider).schemes()
    }
}

/// Accepts exactly the pinned certificates (signatures still checked).
#[derive(Debug)]
struct PinVerifier {
    pins: Vec<String>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self
            .pins
            .iter()
            .any(|p| p.eq_ignore_ascii_case(&pin_of(end_entity)))
        {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Signatures(&self.provider).tls12(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Signatures(&self.provider).tls13(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        Signatures(&self.provider).schemes()
    }
}

/// Whether `cert` names `domain` (SAN dNSName, wildcards per RFC 6125).
pub fn cert_names_domain(cert: &CertificateDer<'_>, domain: &str) -> bool {
    let Ok(ee) = webpki::EndEntityCert::try_from(cert) else {
        return false;
    };
    let Ok(name) = ServerName::try_from(domain) else {
        return false;
    };
    ee.verify_is_valid_for_subject_name(&name).is_ok()
}

/// Whether `chain` (end entity first) chains to `roots` for a server's use: between servers
/// (XMPP) the certificate a server presents as the client of a connection is its server
/// certificate, so either usage is taken (public CAs are dropping client-auth from server
/// certificates).
pub fn server_chain_ok(roots: &RootCertStore, chain: &[CertificateDer<'_>]) -> bool {
    let Some((ee, rest)) = chain.split_first() else {
        return false;
    };
    let Ok(cert) = webpki::EndEntityCert::try_from(ee) else {
        return false;
    };
    let now = UnixTime::now();
    [
        webpki::KeyUsage::server_auth(),
        webpki::KeyUsage::client_auth(),
    ]
    .into_iter()
    .any(|usage| {
        cert.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &roots.roots,
            rest,
            now,
            usage,
            None,
            None,
        )
        .is_ok()
    })
}

/// Per-peer acceptance of a client certificate chain, applied after the handshake.
#[derive(Debug, Clone)]
pub enum PeerCertCheck {
    /// The chain must verify against these anchors (the peer's own, or the default ones).
    Roots(Arc<dyn ClientCertVerifier>),
    /// The end-entity certificate must be pinned.
    Pins(Vec<String>),
}

impl PeerCertCheck {
    /// A check against a root store.
    pub fn roots(roots: RootCertStore) -> Result<PeerCertCheck, TlsError> {
        let v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| TlsError::Verifier(e.to_string()))?;
        Ok(PeerCertCheck::Roots(v))
    }

    /// Whether `chain` (end entity first) passes.
    pub fn accepts(&self, chain: &[CertificateDer<'_>]) -> bool {
        let Some((ee, rest)) = chain.split_first() else {
            return false;
        };
        match self {
            PeerCertCheck::Roots(v) => v.verify_client_cert(ee, rest, UnixTime::now()).is_ok(),
            PeerCertCheck::Pins(pins) => {
                let pin = pin_of(ee);
                pins.iter().any(|p| p.eq_ignore_ascii_case(&pin))
            }
        }
    }
}

/// When `cert` stops being valid (its `notAfter`, Unix seconds), read from the DER by hand:
/// webpki checks validity but does not say it, and this is the one field needed.
pub fn not_after(cert: &CertificateDer<'_>) -> Option<i64> {
    /// The content of the DER element at the start of `input` if its tag is `tag`, and what
    /// follows it.
    fn element(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
        let (&t, rest) = input.split_first()?;
        if t != tag {
            return None;
        }
        let (&first, rest) = rest.split_first()?;
        let (len, rest) = if first < 0x80 {
            (usize::from(first), rest)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || rest.len() < n {
                return None;
            }
            let len = rest[..n]
                .iter()
                .fold(0usize, |a, b| (a << 8) | usize::from(*b));
            (len, &rest[n..])
        };
        (rest.len() >= len).then(|| rest.split_at(len))
    }
    /// What follows the element at the start of `input`, whatever its tag.
    fn skip(input: &[u8]) -> Option<&[u8]> {
        element(input, *input.first()?).map(|(_, rest)| rest)
    }
    let (certificate, _) = element(cert.as_ref(), 0x30)?;
    let (tbs, _) = element(certificate, 0x30)?;
    // [0] version (optional), serialNumber, signature, issuer, then validity.
    let mut rest = tbs;
    if rest.first() == Some(&0xa0) {
        rest = skip(rest)?;
    }
    for _ in 0..3 {
        rest = skip(rest)?;
    }
    let (validity, _) = element(rest, 0x30)?;
    let after = skip(validity)?;
    let (digits, four) = match after.first()? {
        0x17 => (element(after, 0x17)?.0, false), // UTCTime: YYMMDDHHMMSSZ
        0x18 => (element(after, 0x18)?.0, true),  // GeneralizedTime: YYYYMMDDHHMMSSZ
        _ => return None,
    };
    let text = std::str::from_utf8(digits).ok()?.strip_suffix('Z')?;
    let num = |r: std::ops::Range<usize>| text.get(r)?.parse::<i64>().ok();
    let (year, at) = if four {
        (num(0..4)?, 4)
    } else {
        let yy = num(0..2)?;
        (if yy >= 50 { 1900 + yy } else { 2000 + yy }, 2)
    };
    let small = |r: std::ops::Range<usize>| u8::try_from(num(r)?).ok();
    let month = time::Month::try_from(small(at..at + 2)?).ok()?;
    let day = small(at + 2..at + 4)?;
    let date = time::Date::from_calendar_date(i32::try_from(year).ok()?, month, day).ok()?;
    let clock = time::Time::from_hms(
        small(at + 4..at + 6)?,
        small(at + 6..at + 8)?,
        small(at + 8..at + 10)?,
    )
    .ok()?;
    Some(
        time::PrimitiveDateTime::new(date, clock)
            .assume_utc()
            .unix_timestamp(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::DevCa;

    #[test]
    fn not_after_is_read_from_the_certificate() {
        let ca = DevCa::new("Test CA").unwrap();
        let a = ca.issue("opx.example").unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let end = not_after(&a.der).unwrap();
        // Development certificates are issued for years, not days.
        assert!(end > now + 300 * 86_400, "{end} vs {now}");
        assert!(end < now + 40 * 366 * 86_400, "{end} vs {now}");
        // Hand-made certificates with known ends: UTCTime and GeneralizedTime (a leap day).
        let tlv = |tag: u8, body: &[u8]| {
            let mut v = vec![tag, u8::try_from(body.len()).unwrap()];
            v.extend_from_slice(body);
            v
        };
        let cert = |after: Vec<u8>| {
            let validity = [tlv(0x17, b"000101000000Z"), after].concat();
            let tbs = [
                tlv(0xa0, &tlv(0x02, &[2])),
                tlv(0x02, &[1]),
                tlv(0x30, &[]),
                tlv(0x30, &[]),
                tlv(0x30, &validity),
            ]
            .concat();
            CertificateDer::from(tlv(0x30, &tlv(0x30, &tbs)))
        };
        assert_eq!(
            not_after(&cert(tlv(0x17, b"491231235959Z"))),
            Some(2_524_607_999)
        );
        assert_eq!(
            not_after(&cert(tlv(0x17, b"500101000000Z"))),
            Some(-631_152_000)
        );
        assert_eq!(
            not_after(&cert(tlv(0x18, b"20280229120000Z"))),
            Some(1_835_438_400)
        );
        assert_eq!(
            not_after(&cert(tlv(0x18, b"20270229120000Z"))),
            None,
            "no such day"
        );
        assert_eq!(not_after(&CertificateDer::from(vec![0x30, 0x01])), None);
        assert_eq!(not_after(&CertificateDer::from(Vec::new())), None);
    }

    #[test]
    fn identity_and_pins() {
        let ca = DevCa::new("Test CA").unwrap();
        let a = ca.issue("opx.example").unwrap();
        let other_ca = DevCa::new("Other CA").unwrap();
        let rogue = other_ca.issue("opx.example").unwrap();
        assert!(cert_names_domain(&a.der, "opx.example"));
        assert!(cert_names_domain(&a.der, "gw1.opx.example"), "wildcard SAN");
        assert!(!cert_names_domain(&a.der, "opy.example"));

        let mut roots = RootCertStore::empty();
        roots.add(ca.cert_der()).unwrap();
        let check = PeerCertCheck::roots(roots).unwrap();
        assert!(check.accepts(std::slice::from_ref(&a.der)));
        assert!(
            !check.accepts(std::slice::from_ref(&rogue.der)),
            "another CA's cert"
        );
        let pins = PeerCertCheck::Pins(vec![pin_of(&rogue.der)]);
        assert!(pins.accepts(std::slice::from_ref(&rogue.der)));
        assert!(!pins.accepts(std::slice::from_ref(&a.der)));
        assert!(!check.accepts(&[]));
    }

    #[test]
    fn configs_build_from_pem_files() {
        let dir = std::env::temp_dir().join(format!("ssp-tls-{}", std::process::id()));
        let ca = DevCa::new("Test CA").unwrap();
        ca.write_operator(&dir, "opx.example").unwrap();
        std::fs::write(dir.join("ca.pem"), ca.cert_pem()).unwrap();
        let chain = load_certs(&dir.join("opx.example/cert.pem")).unwrap();
        let key = load_key(&dir.join("opx.example/key.pem")).unwrap();
        let roots = load_roots(&[dir.join("ca.pem")]).unwrap();
        server_config(chain.clone(), key.clone_key(), Some(roots.clone()), false).unwrap();
        client_config(
            ServerTrust::Roots(Arc::new(roots)),
            Some((chain, key)),
            true,
        )
        .unwrap();
        let e = load_certs(&dir.join("missing.pem")).unwrap_err();
        assert!(e.to_string().contains("missing.pem"), "{e}");
        std::fs::write(dir.join("empty.pem"), "nothing here\n").unwrap();
        assert!(load_certs(&dir.join("empty.pem")).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
