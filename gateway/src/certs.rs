//! Development certificates: a private CA and per-operator certificates (`ssp-gateway certs dev`).
//!
//! ECDSA P-256 throughout (3-6x cheaper TLS handshakes than RSA-2048). Each operator
//! certificate carries its domain and `*.domain` as SANs (the peer identity the gateways check),
//! plus `localhost` and 127.0.0.1 for tools like curl, and is valid for both server and client
//! authentication, so one certificate serves the listener and mutual TLS towards peers.
//! For production use certificates from the operators' own PKI (see certs/README.md).

use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls_pki_types::CertificateDer;

/// Certificate generation or writing failed.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// rcgen refused.
    #[error("certificate generation: {0}")]
    Gen(#[from] rcgen::Error),
    /// Writing files failed.
    #[error("{path}: {err}")]
    Io {
        /// The file or directory.
        path: String,
        /// The error.
        err: std::io::Error,
    },
    /// An operator name that is not a domain.
    #[error("{0:?} is not a domain name (a certificate names the operator's public domain)")]
    NotADomain(String),
    /// Files that would be overwritten.
    #[error("{} already exist{}; give --force to replace them", .0.join(", "), if .0.len() == 1 { "s" } else { "" })]
    Exists(Vec<String>),
}

/// An issued certificate with its key.
#[derive(Debug, Clone)]
pub struct Issued {
    /// Certificate PEM.
    pub cert_pem: String,
    /// Private key PEM (PKCS#8).
    pub key_pem: String,
    /// Certificate DER.
    pub der: CertificateDer<'static>,
}

/// A development certificate authority.
pub struct DevCa {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    key_pem: String,
}

impl std::fmt::Debug for DevCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevCa").finish_non_exhaustive()
    }
}

fn validity(p: &mut CertificateParams) {
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::hours(1);
    p.not_after = now + time::Duration::days(825);
}

impl DevCa {
    /// A new CA with a fresh key.
    pub fn new(name: &str) -> Result<DevCa, CertError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        validity(&mut params);
        let cert = params.self_signed(&key)?;
        let key_pem = key.serialize_pem();
        Ok(DevCa {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            key_pem,
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA certificate (PEM).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate (DER).
    pub fn cert_der(&self) -> CertificateDer<'static> {
        self.cert_der.clone()
    }

    /// Issue a certificate for an operator domain.
    pub fn issue(&self, domain: &str) -> Result<Issued, CertError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec![
            domain.to_owned(),
            format!("*.{domain}"),
            "localhost".to_owned(),
        ])?;
        params
            .subject_alt_names
            .push(SanType::IpAddress(std::net::IpAddr::from([127, 0, 0, 1])));
        params.distinguished_name.push(DnType::CommonName, domain);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        validity(&mut params);
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        })
    }

    /// Issue and write `<dir>/<domain>/cert.pem` and `key.pem` (key mode 0600).
    pub fn write_operator(&self, dir: &Path, domain: &str) -> Result<Issued, CertError> {
        let issued = self.issue(domain)?;
        let d = dir.join(domain);
        write(&d.join("cert.pem"), &issued.cert_pem, false)?;
        write(&d.join("key.pem"), &issued.key_pem, true)?;
        Ok(issued)
    }

    /// Write the CA itself: `<dir>/ca.pem` and `<dir>/ca.key`.
    pub fn write_ca(&self, dir: &Path) -> Result<(), CertError> {
        write(&dir.join("ca.pem"), &self.cert_pem, false)?;
        write(&dir.join("ca.key"), &self.key_pem, true)
    }
}

fn write(path: &Path, text: &str, secret: bool) -> Result<(), CertError> {
    let io = |err| CertError::Io {
        path: path.display().to_string(),
        err,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    std::fs::write(path, text).map_err(io)?;
    if secret {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    }
    Ok(())
}

/// Whether `name` is a domain a certificate can name: a DNS name with at least two labels,
/// not an IP address.
fn is_domain(name: &str) -> bool {
    name.contains('.')
        && name.parse::<std::net::IpAddr>().is_err()
        && matches!(
            rustls_pki_types::ServerName::try_from(name),
            Ok(rustls_pki_types::ServerName::DnsName(_))
        )
}

/// `ssp-gateway certs dev`: a CA and one certificate per operator domain under `out`; every
/// file written, in order. Existing files are replaced only with `force`.
pub fn write_dev(out: &Path, operators: &[String], force: bool) -> Result<Vec<String>, CertError> {
    if let Some(bad) = operators.iter().find(|o| !is_domain(o)) {
        return Err(CertError::NotADomain(bad.clone()));
    }
    let mut files = vec![out.join("ca.pem"), out.join("ca.key")];
    for op in operators {
        files.push(out.join(op).join("cert.pem"));
        files.push(out.join(op).join("key.pem"));
    }
    let existing: Vec<String> = files
        .iter()
        .filter(|f| f.exists())
        .map(|f| f.display().to_string())
        .collect();
    if !force && !existing.is_empty() {
        return Err(CertError::Exists(existing));
    }
    let ca = DevCa::new("ssp-gateway development CA")?;
    ca.write_ca(out)?;
    for op in operators {
        ca.write_operator(out, op)?;
    }
    Ok(files.iter().map(|f| f.display().to_string()).collect())
}
