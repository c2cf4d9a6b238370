//! X.509 certificates: the data-space authority's CA and the certificates it issues to
//! members, and each node's local client CA for its administration API (rcgen, ECDSA
//! P-256 with ring).
//!
//! Identity is carried in a subject-alternative-name URI, not in a host name: members
//! are `urn:uscc:<participant ID>`, the authority's trust-list server is
//! [`AUTHORITY_SAN_URI`], a node's local API is [`LOCAL_NODE_SAN_URI`], and local
//! clients are `urn:liutong:local-role:<role>`.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PublicKeyData as _,
    SanType, SerialNumber,
};
use ring::rand::{SecureRandom as _, SystemRandom};
use time::OffsetDateTime;

use crate::base::clock;
use crate::base::files;
use crate::tls::ca_key::CaKey;

/// SAN URI of the authority's trust-list server certificate.
pub const AUTHORITY_SAN_URI: &str = "urn:liutong:authority";
/// SAN URI of a node's local administration server certificate.
pub const LOCAL_NODE_SAN_URI: &str = "urn:liutong:local-node";
/// Prefix of the SAN URI naming a local client's role.
pub const LOCAL_ROLE_SAN_PREFIX: &str = "urn:liutong:local-role:";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    #[error("cannot create a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} can be read by other users (mode {mode:o}); run `chmod 600 {path}`")]
    Permissions { path: PathBuf, mode: u32 },
    #[error("the certificate signing request is refused: {0}")]
    Request(String),
    #[error("{path} is not a valid PEM {what}: {reason}")]
    Format {
        path: PathBuf,
        what: &'static str,
        reason: String,
    },
    #[error(
        "the CA certificate {path} certifies the public key {certified}, but the CA key \
         is {key}: the key is not this CA's; use the key the certificate was made with"
    )]
    KeyMismatch {
        path: PathBuf,
        certified: String,
        key: String,
    },
}

/// A certificate authority that can issue certificates; its key is in memory or in a
/// PKCS#11 token ([`CaKey`]).
pub struct CertificateAuthority {
    issuer: Issuer<'static, CaKey>,
    cert_pem: String,
}

/// A certificate and its private key, both PEM.
pub struct IssuedCertificate {
    pub cert_pem: String,
    pub key_pem: String,
    /// The DER certificate, for fingerprints.
    pub cert_der: Vec<u8>,
}

/// What to put in a leaf certificate.
pub struct LeafSpec {
    pub common_name: String,
    pub san_uris: Vec<String>,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

/// A certificate the authority issued for a key it never saw (from a CSR).
pub struct SignedCertificate {
    pub cert_pem: String,
    /// The DER certificate, for fingerprints.
    pub cert_der: Vec<u8>,
}

/// The names a member's certificate carries besides its identity URI.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostNames {
    pub dns: Vec<String>,
    pub ips: Vec<IpAddr>,
}

/// A node's new TLS key and the PKCS#10 request for its certificate, both PEM. The key
/// is ECDSA P-256 (PKCS#8), the only TLS key type the authority certifies.
pub struct TlsKeyRequest {
    pub key_pem: String,
    pub csr_pem: String,
}

/// Makes a TLS key and a CSR naming `san_uri` and `names`.
pub fn tls_key_request(
    common_name: &str,
    san_uri: &str,
    names: &HostNames,
) -> Result<TlsKeyRequest, CertError> {
    let key = KeyPair::generate()?;
    let csr = subject_params(common_name, &[san_uri.to_owned()], names)?.serialize_request(&key)?;
    Ok(TlsKeyRequest {
        key_pem: key.serialize_pem(),
        csr_pem: csr.pem()?,
    })
}

/// Makes the CSR for an existing key (`key_pem`), e.g. to renew its certificate.
pub fn csr_for_key(
    key_pem: &str,
    common_name: &str,
    san_uri: &str,
    names: &HostNames,
) -> Result<String, CertError> {
    let key = KeyPair::from_pem(key_pem).map_err(|e| CertError::Request(e.to_string()))?;
    Ok(subject_params(common_name, &[san_uri.to_owned()], names)?
        .serialize_request(&key)?
        .pem()?)
}

/// The subject of a leaf: its common name and its names (identity URIs, DNS names,
/// addresses), as a CSR asks for them and a certificate carries them.
fn subject_params(
    common_name: &str,
    san_uris: &[String],
    names: &HostNames,
) -> Result<CertificateParams, CertError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    // A CN different from the CA's: some TLS stacks take a leaf whose subject equals its
    // issuer's for self-signed.
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    for uri in san_uris {
        params
            .subject_alt_names
            .push(SanType::URI(uri.as_str().try_into()?));
    }
    for dns in &names.dns {
        params
            .subject_alt_names
            .push(SanType::DnsName(dns.as_str().try_into()?));
    }
    for ip in &names.ips {
        params.subject_alt_names.push(SanType::IpAddress(*ip));
    }
    Ok(params)
}

/// A leaf certificate usable for both TLS server and client authentication.
fn leaf_certificate_params(
    spec: &LeafSpec,
    names: &HostNames,
) -> Result<CertificateParams, CertError> {
    let mut params = subject_params(&spec.common_name, &spec.san_uris, names)?;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.not_before = spec.not_before;
    params.not_after = spec.not_after;
    params.serial_number = Some(random_serial());
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

/// Whether the private key `key_pem` is the key certified by the DER certificate.
pub fn key_matches_certificate(key_pem: &str, cert_der: &[u8]) -> Result<bool, String> {
    let key = KeyPair::from_pem(key_pem).map_err(|e| format!("the key cannot be read: {e}"))?;
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| format!("the certificate cannot be parsed: {e}"))?;
    Ok(cert.tbs_certificate.subject_pki.raw == key.subject_public_key_info().as_slice())
}

impl CertificateAuthority {
    /// Creates a new self-signed CA valid for `years`.
    pub fn create(common_name: &str, years: i64) -> Result<Self, CertError> {
        Self::create_with_key(common_name, years, CaKey::Memory(KeyPair::generate()?))
    }

    /// Creates a new self-signed CA valid for `years` whose key is `key`.
    pub fn create_with_key(common_name: &str, years: i64, key: CaKey) -> Result<Self, CertError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = clock::now_utc();
        params.not_before = now - time::Duration::minutes(5);
        params.not_after = now + time::Duration::days(365 * years);
        params.serial_number = Some(random_serial());
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads a CA saved by [`CertificateAuthority::save`].
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Self, CertError> {
        let key_pem = read_private_text(key_path)?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| CertError::Format {
            path: key_path.to_owned(),
            what: "private key",
            reason: e.to_string(),
        })?;
        Self::load_with_key(cert_path, CaKey::Memory(key))
    }

    /// Loads the CA certificate at `cert_path`, whose key is `key` (a key in a token).
    /// The certificate must be `key`'s: a CA whose key signs certificates its own
    /// certificate does not verify would issue certificates no member accepts.
    pub fn load_with_key(cert_path: &Path, key: CaKey) -> Result<Self, CertError> {
        let cert_pem = read_text(cert_path)?;
        let format = |reason: String| CertError::Format {
            path: cert_path.to_owned(),
            what: "CA certificate",
            reason,
        };
        let der = rustls_pemfile::certs(&mut cert_pem.as_bytes())
            .next()
            .ok_or_else(|| format("no CERTIFICATE block".into()))?
            .map_err(|e| format(e.to_string()))?;
        let (_, cert) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| format(format!("the certificate cannot be parsed: {e}")))?;
        let certified = cert.public_key().subject_public_key.data.to_vec();
        if certified != key.der_bytes() {
            return Err(CertError::KeyMismatch {
                path: cert_path.to_owned(),
                certified: hex::encode(&certified),
                key: hex::encode(key.der_bytes()),
            });
        }
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key).map_err(|e| format(e.to_string()))?;
        Ok(Self { issuer, cert_pem })
    }

    /// Writes the certificate (world-readable) and, for a key in memory, the key (owner
    /// only); a key in a token stays there and `key_path` is not written.
    pub fn save(&self, cert_path: &Path, key_path: &Path) -> Result<(), CertError> {
        write(cert_path, self.cert_pem.as_bytes(), false)?;
        match self.issuer.key().to_pem() {
            Some(pem) => write(key_path, pem.as_bytes(), true),
            None => Ok(()),
        }
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA's public key: the uncompressed P-256 point.
    pub fn public_key(&self) -> &[u8] {
        self.issuer.key().der_bytes()
    }

    /// Issues a leaf certificate usable for both TLS server and client authentication.
    pub fn issue(&self, spec: &LeafSpec) -> Result<IssuedCertificate, CertError> {
        self.issue_for_hosts(spec, &HostNames::default())
    }

    /// Issues a leaf certificate that also names `names` (DNS names and IP addresses),
    /// for a server browsers reach by host name or address.
    pub fn issue_for_hosts(
        &self,
        spec: &LeafSpec,
        names: &HostNames,
    ) -> Result<IssuedCertificate, CertError> {
        let key = KeyPair::generate()?;
        let cert = leaf_certificate_params(spec, names)?.signed_by(&key, &self.issuer)?;
        Ok(IssuedCertificate {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().to_vec(),
        })
    }
}

impl CertificateAuthority {
    /// Issues a member's certificate for the key in `csr_pem`. The CSR's signature must
    /// hold (the member has the key), its key must be ECDSA P-256, and it must ask for
    /// exactly `spec`'s identity URI and `names`: the authority certifies what it decided,
    /// and a CSR asking for something else is refused rather than silently trimmed.
    pub fn issue_for_request(
        &self,
        csr_pem: &str,
        spec: &LeafSpec,
        names: &HostNames,
    ) -> Result<SignedCertificate, CertError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| {
            CertError::Request(match e {
                rcgen::Error::InvalidCertificationRequestSignature => {
                    "its signature does not verify: it was altered, or made without the key                      it names"
                        .to_owned()
                }
                other => format!("it cannot be read ({other})"),
            })
        })?;
        if csr.public_key.algorithm() != &rcgen::PKCS_ECDSA_P256_SHA256 {
            return Err(CertError::Request(
                "its key is not ECDSA P-256; make the request with `liutong join`".into(),
            ));
        }
        let asked: BTreeSet<String> = csr.params.subject_alt_names.iter().map(san_text).collect();
        let decided: BTreeSet<String> = spec
            .san_uris
            .iter()
            .map(|u| format!("URI:{u}"))
            .chain(names.dns.iter().map(|d| format!("DNS:{d}")))
            .chain(names.ips.iter().map(|i| format!("IP:{i}")))
            .collect();
        if asked != decided {
            let list = |set: &BTreeSet<String>| set.iter().cloned().collect::<Vec<_>>().join(", ");
            return Err(CertError::Request(format!(
                "it asks for the names [{}], but the request names [{}]",
                list(&asked),
                list(&decided)
            )));
        }
        let cert =
            leaf_certificate_params(spec, names)?.signed_by(&csr.public_key, &self.issuer)?;
        Ok(SignedCertificate {
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
        })
    }
}

fn san_text(san: &SanType) -> String {
    match san {
        SanType::URI(u) => format!("URI:{}", u.as_str()),
        SanType::DnsName(d) => format!("DNS:{}", d.as_str()),
        SanType::IpAddress(ip) => format!("IP:{ip}"),
        SanType::Rfc822Name(m) => format!("email:{}", m.as_str()),
        other => format!("{other:?}"),
    }
}

impl SignedCertificate {
    pub fn save(&self, cert_path: &Path) -> Result<(), CertError> {
        write(cert_path, self.cert_pem.as_bytes(), false)
    }
}

impl IssuedCertificate {
    pub fn save(&self, cert_path: &Path, key_path: &Path) -> Result<(), CertError> {
        write(cert_path, self.cert_pem.as_bytes(), false)?;
        write(key_path, self.key_pem.as_bytes(), true)
    }
}

fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    // The system RNG failing is not recoverable; a serial of zeros would still be
    // unique enough within one CA for the fingerprint checks, but report it loudly.
    if SystemRandom::new().fill(&mut bytes).is_err() {
        tracing::error!("system random generator failed while making a certificate serial");
    }
    bytes[0] &= 0x7f; // keep the DER integer positive
    SerialNumber::from_slice(&bytes)
}

fn write(path: &Path, contents: &[u8], private: bool) -> Result<(), CertError> {
    let result = if private {
        files::write_private(path, contents)
    } else {
        files::write_public(path, contents)
    };
    result.map_err(|source| CertError::Write {
        path: path.to_owned(),
        source,
    })
}

pub(crate) fn read_text(path: &Path) -> Result<String, CertError> {
    std::fs::read_to_string(path).map_err(|source| CertError::Read {
        path: path.to_owned(),
        source,
    })
}

pub(crate) fn read_private_text(path: &Path) -> Result<String, CertError> {
    match files::check_private(path) {
        Ok(()) => {}
        Err(files::PrivateFileError::Read(source)) => {
            return Err(CertError::Read {
                path: path.to_owned(),
                source,
            });
        }
        Err(files::PrivateFileError::Mode(mode)) => {
            return Err(CertError::Permissions {
                path: path.to_owned(),
                mode,
            });
        }
    }
    read_text(path)
}

/// The SAN URIs of a DER certificate.
pub fn san_uris(der: &[u8]) -> Result<Vec<String>, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("the certificate cannot be parsed: {e}"))?;
    let mut out = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::URI(uri) = name {
                out.push((*uri).to_owned());
            }
        }
    }
    Ok(out)
}

/// The DNS names and IP addresses of a DER certificate.
pub fn host_names(der: &[u8]) -> Result<HostNames, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("the certificate cannot be parsed: {e}"))?;
    let mut out = HostNames::default();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                x509_parser::extensions::GeneralName::DNSName(d) => out.dns.push((*d).to_owned()),
                x509_parser::extensions::GeneralName::IPAddress(b) => {
                    if let Ok(a) = <[u8; 4]>::try_from(*b) {
                        out.ips.push(IpAddr::from(a));
                    } else if let Ok(a) = <[u8; 16]>::try_from(*b) {
                        out.ips.push(IpAddr::from(a));
                    }
                }
                _ => {}
            }
        }
    }
    Ok(out)
}

/// SHA-256 of a DER certificate, lowercase hex. Defined beside the membership
/// credential, which records it.
pub use crate::identity::membership::certificate_fingerprint as fingerprint;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issues_leaf_with_san_uri_and_reloads_ca() {
        let dir = tempfile::tempdir().unwrap();
        let ca = CertificateAuthority::create("Test CA", 1).unwrap();
        let (cp, kp) = (dir.path().join("ca.crt"), dir.path().join("ca.key"));
        ca.save(&cp, &kp).unwrap();
        let ca = CertificateAuthority::load(&cp, &kp).unwrap();
        let now = OffsetDateTime::now_utc();
        let leaf = ca
            .issue(&LeafSpec {
                common_name: "leaf".into(),
                san_uris: vec!["urn:uscc:91110000600037341L".into()],
                not_before: now,
                not_after: now + time::Duration::days(1),
            })
            .unwrap();
        assert_eq!(
            san_uris(&leaf.cert_der).unwrap(),
            vec!["urn:uscc:91110000600037341L".to_owned()]
        );
        assert_eq!(fingerprint(&leaf.cert_der).len(), 64);
    }
}
