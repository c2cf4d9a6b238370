//! The admission request: what a member's node sends the authority to be admitted or to
//! renew its certificate, so that no private key ever leaves the member.
//!
//! The node makes its keys itself (`liutong join`) and writes one signed envelope holding
//! - a PKCS#10 certificate signing request for its TLS key, naming the participant's
//!   `urn:uscc:` URI and the host names and addresses it asks for (the CSR's own signature
//!   proves possession of the TLS key), and
//! - the public half of its Ed25519 signing key,
//!
//! the whole envelope signed with that signing key, which proves possession of it and binds
//! the two keys together. [`open`] checks that signature against the key the request names.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::{Envelope, EnvelopeError, ParticipantId, PublicKey, SigningKey};

/// Payload type of a signed admission request.
pub const ADMISSION_REQUEST_PAYLOAD_TYPE: &str = "application/vnd.liutong.admission-request+json";

/// The most DNS names, and separately the most IP addresses, one request may ask for.
pub const MAX_NAMES: usize = 16;
/// The largest CSR a request may carry (a P-256 CSR with [`MAX_NAMES`] names is < 2 KiB).
pub const MAX_CSR_BYTES: usize = 8 * 1024;
/// The largest request file the authority reads.
pub const MAX_REQUEST_BYTES: usize = 32 * 1024;

/// The request's payload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdmissionRequest {
    pub participant_id: ParticipantId,
    /// PKCS#10 CSR (PEM) for the node's TLS key.
    pub csr_pem: String,
    /// The node's Ed25519 signing key; it signs this request.
    pub signing_key: PublicKey,
    /// Host names the node asks to be named by in its certificate.
    pub dns_names: Vec<HostName>,
    /// Addresses the node asks to be named by in its certificate.
    pub ip_addresses: Vec<IpAddr>,
    /// When the node made the request (Unix seconds).
    pub created_at: i64,
}

/// Why an admission request is refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    #[error("the admission request is not a signed request file: {0}")]
    Format(String),
    #[error(
        "the admission request's proof of possession fails: it is not signed by the signing \
         key it names ({0}); it was altered after the member's node made it, or assembled \
         from another node's parts — ask the member to run `liutong join` again"
    )]
    ProofOfPossession(EnvelopeError),
    #[error("the admission request is invalid: {0}")]
    Invalid(String),
}

impl AdmissionRequest {
    /// Signs the request with the node's signing key (which it must name).
    pub fn sign(&self, key: &SigningKey) -> Result<Envelope, super::KeyError> {
        debug_assert_eq!(self.signing_key, key.public_key());
        Envelope::sign_json(ADMISSION_REQUEST_PAYLOAD_TYPE, self, key)
    }

    /// Every DNS name and address, as text, in the request's order.
    pub fn names(&self) -> Vec<String> {
        self.dns_names
            .iter()
            .map(ToString::to_string)
            .chain(self.ip_addresses.iter().map(ToString::to_string))
            .collect()
    }

    fn check_bounds(&self) -> Result<(), RequestError> {
        if self.csr_pem.len() > MAX_CSR_BYTES {
            return Err(RequestError::Invalid(format!(
                "the CSR has {} bytes, at most {MAX_CSR_BYTES} are accepted",
                self.csr_pem.len()
            )));
        }
        check_name_counts(&self.dns_names, &self.ip_addresses).map_err(RequestError::Invalid)?;
        Ok(())
    }
}

/// Refuses more than [`MAX_NAMES`] names of either kind, or a name given twice.
pub fn check_name_counts(dns: &[HostName], ips: &[IpAddr]) -> Result<(), String> {
    if dns.len() > MAX_NAMES || ips.len() > MAX_NAMES {
        return Err(format!(
            "{} DNS names and {} IP addresses asked for; at most {MAX_NAMES} of each",
            dns.len(),
            ips.len()
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for name in dns
        .iter()
        .map(ToString::to_string)
        .chain(ips.iter().map(ToString::to_string))
    {
        if !seen.insert(name.clone()) {
            return Err(format!("{name} is asked for twice"));
        }
    }
    Ok(())
}

/// Reads a request file's text, checks its proof of possession and bounds, and returns
/// the request. Whether its names and participant are acceptable is the authority's call.
pub fn open(text: &str) -> Result<AdmissionRequest, RequestError> {
    if text.len() > MAX_REQUEST_BYTES {
        return Err(RequestError::Format(format!(
            "{} bytes, at most {MAX_REQUEST_BYTES} are accepted",
            text.len()
        )));
    }
    let envelope: Envelope =
        serde_json::from_str(text).map_err(|e| RequestError::Format(e.to_string()))?;
    if envelope.payload_type != ADMISSION_REQUEST_PAYLOAD_TYPE {
        return Err(RequestError::Format(format!(
            "payload type {:?}, expected {ADMISSION_REQUEST_PAYLOAD_TYPE:?}",
            envelope.payload_type
        )));
    }
    let claimed: AdmissionRequest = envelope
        .peek_json()
        .map_err(|e| RequestError::Format(e.to_string()))?;
    let request: AdmissionRequest = envelope
        .open_json(ADMISSION_REQUEST_PAYLOAD_TYPE, &claimed.signing_key)
        .map_err(RequestError::ProofOfPossession)?;
    request.check_bounds()?;
    Ok(request)
}

/// A DNS name a certificate may carry: lowercase letters, digits and hyphens in dot-separated
/// labels of 1–63 characters, at most 253 in all, no wildcard, not an IP address.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HostName(String);

impl HostName {
    pub fn parse(text: &str) -> Result<Self, String> {
        let name = text.trim_end_matches('.').to_ascii_lowercase();
        let refuse = |why: &str| {
            Err(format!(
                "{text:?} is not a DNS name a certificate can carry: {why}"
            ))
        };
        if name.is_empty() || name.len() > 253 {
            return refuse("it must have 1 to 253 characters");
        }
        if name.parse::<IpAddr>().is_ok() {
            return refuse("it is an IP address; give it with --ip");
        }
        for label in name.split('.') {
            if label.is_empty() || label.len() > 63 {
                return refuse("each dot-separated part must have 1 to 63 characters");
            }
            if !label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            {
                return refuse("only letters, digits, hyphens and dots are allowed (no wildcards)");
            }
            if label.starts_with('-') || label.ends_with('-') {
                return refuse("a part may not start or end with a hyphen");
            }
        }
        Ok(Self(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for HostName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(&s)
    }
}

impl From<HostName> for String {
    fn from(h: HostName) -> String {
        h.0
    }
}

impl fmt::Display for HostName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for HostName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(key: &SigningKey) -> AdmissionRequest {
        AdmissionRequest {
            participant_id: ParticipantId::parse("91110000600037341L").unwrap(),
            csr_pem: "-----BEGIN CERTIFICATE REQUEST-----\n-----END CERTIFICATE REQUEST-----\n"
                .into(),
            signing_key: key.public_key(),
            dns_names: vec![HostName::parse("node.example.gov.cn").unwrap()],
            ip_addresses: vec!["127.0.0.1".parse().unwrap()],
            created_at: 1,
        }
    }

    #[test]
    fn opens_a_signed_request_and_refuses_an_altered_one() {
        let key = SigningKey::generate().unwrap();
        let req = request(&key);
        let text = req.sign(&key).unwrap().to_json();
        assert_eq!(open(&text).unwrap(), req);

        // The same payload signed by a key it does not name.
        let other = SigningKey::generate().unwrap();
        let forged = Envelope::sign_json(ADMISSION_REQUEST_PAYLOAD_TYPE, &req, &other).unwrap();
        assert!(matches!(
            open(&forged.to_json()),
            Err(RequestError::ProofOfPossession(_))
        ));

        // A name added after signing.
        let mut envelope = req.sign(&key).unwrap();
        let mut altered = req.clone();
        altered
            .dns_names
            .push(HostName::parse("other.example.com").unwrap());
        envelope.payload = serde_json::to_vec(&altered).unwrap();
        let err = open(&envelope.to_json()).unwrap_err();
        assert!(err.to_string().contains("proof of possession"), "{err}");

        assert!(matches!(open("{}"), Err(RequestError::Format(_))));
        let big = "x".repeat(MAX_REQUEST_BYTES + 1);
        assert!(matches!(open(&big), Err(RequestError::Format(_))));
    }

    #[test]
    fn host_names_are_checked() {
        assert_eq!(
            HostName::parse("Node.Example.CN.").unwrap().as_str(),
            "node.example.cn"
        );
        assert_eq!(HostName::parse("localhost").unwrap().as_str(), "localhost");
        for bad in [
            "",
            "*.example.cn",
            "a..b",
            "-a.cn",
            "a_b.cn",
            "127.0.0.1",
            "::1",
        ] {
            assert!(HostName::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(HostName::parse(&"a".repeat(64)).is_err());
        let many: Vec<_> = (0..=MAX_NAMES)
            .map(|i| HostName::parse(&format!("n{i}.cn")).unwrap())
            .collect();
        assert!(check_name_counts(&many, &[]).is_err());
        let twice = vec![HostName::parse("a.cn").unwrap(); 2];
        assert!(
            check_name_counts(&twice, &[])
                .unwrap_err()
                .contains("twice")
        );
    }
}
