//! X.509 certificates: the data-space authority's CA and the certificates it issues to
//! members, and each node's local client CA for its administration API (rcgen, ECDSA
//! P-256 with ring).
//!
//! Identity is carried in a subject-alternative-name URI, not in a host name: members
//! are `urn:uscc:<participant ID>`, the authority's trust-list server is
//! [`AUTHORITY_SAN_URI`], a node's local API is [`LOCAL_NODE_SAN_URI`], and local
//! clients are `urn:liutong:local-role:<role>`.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData as _, SanType, SerialNumber,
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
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        // A CN different from the CA's: some TLS stacks take a leaf whose subject equals
        // its issuer's for self-signed.
        params
            .distinguished_name
            .push(DnType::CommonName, &spec.common_name);
        for uri in &spec.san_uris {
            params
                .subject_alt_names
                .push(SanType::URI(uri.as_str().try_into()?));
        }
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
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(IssuedCertificate {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().to_vec(),
        })
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
