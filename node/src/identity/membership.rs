//! The membership credential: what the data-space authority attests about a member.
//!
//! The authority signs it as a DSSE envelope of type [`MEMBERSHIP_PAYLOAD_TYPE`]; the
//! same records, unsigned, make up the members of the signed trust list.

use std::fmt;
use std::str::FromStr;

use rustls::pki_types::CertificateDer;
use serde::{Deserialize, Serialize};

use super::keys::PublicKey;
use super::{Envelope, EnvelopeError, ParticipantId};

/// Payload type of a signed membership credential.
pub const MEMBERSHIP_PAYLOAD_TYPE: &str = "application/vnd.liutong.membership+json";

/// A member of the data space as the authority admitted it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Membership {
    pub participant_id: ParticipantId,
    pub name: String,
    #[serde(with = "kind_by_member_name")]
    pub kind: ParticipantKind,
    pub sector: String,
    pub region: RegionCode,
    pub roles: Vec<MemberRole>,
    /// Validity of the membership and of its TLS certificate, Unix seconds.
    pub valid_from: i64,
    pub valid_until: i64,
    /// The member node's Ed25519 key; it signs the node's envelopes.
    pub signing_key: PublicKey,
    /// SHA-256 (hex) of the DER TLS certificate issued with this membership. A node
    /// presenting any other certificate for this participant is refused.
    pub certificate_sha256: String,
    /// Name of the authority that admitted the member.
    pub authority: String,
}

impl Membership {
    pub fn has_role(&self, role: MemberRole) -> bool {
        self.roles.contains(&role)
    }

    /// Checks that the member holds `role` for `what` (e.g. "requesting a contract"):
    /// the one check, and the one message, for every step a role allows.
    pub fn require_role(&self, role: MemberRole, what: &str) -> Result<(), MissingRole> {
        if self.has_role(role) {
            return Ok(());
        }
        Err(MissingRole {
            what: what.to_owned(),
            role,
            participant: self.participant_id.clone(),
            roles: self.roles.clone(),
        })
    }

    /// Checks that this is the node's own credential: issued to the participant of
    /// node.toml, naming the node's signing key and its TLS certificate (the first of
    /// `chain`, the node's certificate chain).
    pub fn check_own(
        &self,
        participant: &ParticipantId,
        signing_key: &PublicKey,
        chain: &[CertificateDer<'_>],
    ) -> Result<(), IdentityMismatch> {
        if &self.participant_id != participant {
            return Err(IdentityMismatch::Participant {
                issued: self.participant_id.clone(),
                configured: participant.clone(),
            });
        }
        if &self.signing_key != signing_key {
            return Err(IdentityMismatch::SigningKey {
                named: self.signing_key,
                held: *signing_key,
            });
        }
        let cert = chain.first().ok_or(IdentityMismatch::NoCertificate)?;
        if certificate_fingerprint(cert) != self.certificate_sha256 {
            return Err(IdentityMismatch::Certificate);
        }
        Ok(())
    }

    pub fn to_proto(&self) -> liutong_proto::v1::Participant {
        liutong_proto::v1::Participant {
            participant_id: self.participant_id.to_string(),
            name: self.name.clone(),
            kind: self.kind.member_name().to_owned(),
            sector: self.sector.clone(),
            region: self.region.to_string(),
            roles: self.roles.iter().map(ToString::to_string).collect(),
            valid_from_unix: self.valid_from,
            valid_until_unix: self.valid_until,
        }
    }
}

/// A member lacks the role a step needs ([`Membership::require_role`]). Its text is
/// what a refused caller reads: "`<what>` needs the member role `<role>`; participant
/// `<id>` has the roles `<roles>`".
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{what} needs the member role {role}; participant {participant} has the roles {}",
    roles_text(roles)
)]
pub struct MissingRole {
    pub what: String,
    pub role: MemberRole,
    pub participant: ParticipantId,
    pub roles: Vec<MemberRole>,
}

fn roles_text(roles: &[MemberRole]) -> String {
    if roles.is_empty() {
        return "(none)".to_owned();
    }
    roles
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// SHA-256 of a DER certificate, lowercase hex: what a membership's
/// `certificate_sha256` holds, and how a peer's certificate is matched to it.
pub fn certificate_fingerprint(der: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(der))
}

/// Opens a signed membership credential: checks the payload type and the authority's
/// signature, and reads the membership it attests.
pub fn open_credential(
    credential: &Envelope,
    authority_key: &PublicKey,
) -> Result<Membership, EnvelopeError> {
    credential.open_json(MEMBERSHIP_PAYLOAD_TYPE, authority_key)
}

/// Reads a credential file's bytes (`identity/credential.json`): the envelope, and the
/// membership it attests once [opened](open_credential) with `authority_key`.
pub fn parse_credential(
    bytes: &[u8],
    authority_key: &PublicKey,
) -> Result<(Envelope, Membership), CredentialError> {
    let credential: Envelope =
        serde_json::from_slice(bytes).map_err(CredentialError::NotAnEnvelope)?;
    let membership =
        open_credential(&credential, authority_key).map_err(CredentialError::NotSigned)?;
    Ok((credential, membership))
}

/// Why credential bytes are refused. The messages follow the credential's name:
/// "credential.json is not a signed credential …".
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialError {
    #[error("is not a signed credential (a JSON envelope): {0}")]
    NotAnEnvelope(serde_json::Error),
    #[error("does not verify against the authority key: {0}")]
    NotSigned(EnvelopeError),
}

/// How a credential fails to be the node's own ([`Membership::check_own`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityMismatch {
    #[error("the credential was issued to {issued}, but node.toml says participant {configured}")]
    Participant {
        issued: ParticipantId,
        configured: ParticipantId,
    },
    #[error("the credential names the signing key {named}, but this node's key is {held}")]
    SigningKey { named: PublicKey, held: PublicKey },
    #[error("node.crt holds no certificate")]
    NoCertificate,
    #[error("the credential names another TLS certificate than node.crt")]
    Certificate,
}

/// What kind of organisation a participant is: government department (政府部门),
/// enterprise (企业) or public institution (事业单位). The policy language defines the
/// kinds; a membership credential, the node's API and its command line name them by
/// their [member name](ParticipantKind::member_name) (`government`, `enterprise`,
/// `institution`), never by the policy's `Display` form.
pub use liutong_policy::RecipientKind as ParticipantKind;

/// Serde for [`Membership::kind`]: the kind's member name, as in every credential and
/// trust list already signed.
mod kind_by_member_name {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::ParticipantKind;

    pub fn serialize<S: Serializer>(kind: &ParticipantKind, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(kind.member_name())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ParticipantKind, D::Error> {
        let name = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        ParticipantKind::ALL
            .into_iter()
            .find(|k| k.member_name() == name)
            .ok_or_else(|| serde::de::Error::unknown_variant(&name, &ParticipantKind::MEMBER_NAMES))
    }
}

/// A role a member plays in the data space.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberRole {
    Provider,
    Consumer,
    Auditor,
}

impl FromStr for MemberRole {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "provider" => Ok(Self::Provider),
            "consumer" => Ok(Self::Consumer),
            "auditor" => Ok(Self::Auditor),
            other => Err(format!(
                "unknown role {other:?}; use provider, consumer or auditor"
            )),
        }
    }
}

impl fmt::Display for MemberRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Provider => "provider",
            Self::Consumer => "consumer",
            Self::Auditor => "auditor",
        })
    }
}

/// A 6-digit administrative division code (行政区划代码), e.g. `330100` for Hangzhou.
/// The rule (six digits, the first two a province) is the policy language's
/// ([`liutong_policy::RegionCode`]); this keeps the text as written.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RegionCode(String);

impl RegionCode {
    pub fn parse(s: &str) -> Result<Self, String> {
        Self::checked(s).map(|_| Self(s.to_owned()))
    }

    /// Checks `s` with the policy language's rule, in the node's words (operators read
    /// them on the command line).
    fn checked(s: &str) -> Result<liutong_policy::RegionCode, String> {
        use liutong_policy::RegionCodeError;
        liutong_policy::RegionCode::checked(s).map_err(|e| match e {
            RegionCodeError::NotSixDigits(_) => {
                format!("region {s:?} is not a 6-digit administrative division code such as 330100")
            }
            RegionCodeError::NoProvince { code } => format!(
                "region {s:?} starts with {:02}, which is no province code (11 to 82)",
                code / 10_000
            ),
        })
    }

    /// The code as the policy language holds it.
    pub fn code(&self) -> liutong_policy::RegionCode {
        Self::checked(&self.0).expect("a RegionCode holds only checked text")
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for RegionCode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for RegionCode {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<RegionCode> for String {
    fn from(r: RegionCode) -> String {
        r.0
    }
}

impl fmt::Display for RegionCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RegionCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RegionCode({})", self.0)
    }
}

/// The signing keys that earlier credentials (a node's key history) name, oldest first.
pub fn previous_keys(history: &[Envelope]) -> Vec<PublicKey> {
    history
        .iter()
        .filter_map(|e| serde_json::from_slice::<Membership>(&e.payload).ok())
        .map(|m| m.signing_key)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::SigningKey;

    fn member(key: PublicKey, certificate: &CertificateDer<'_>) -> Membership {
        Membership {
            participant_id: ParticipantId::parse("91110000600037341L").unwrap(),
            name: "Test".into(),
            kind: ParticipantKind::Government,
            sector: "transport".into(),
            region: RegionCode::parse("330100").unwrap(),
            roles: vec![MemberRole::Provider],
            valid_from: 0,
            valid_until: 1,
            signing_key: key,
            certificate_sha256: certificate_fingerprint(certificate),
            authority: "Test authority".into(),
        }
    }

    #[test]
    fn a_missing_role_names_the_step_the_role_and_the_roles_held() {
        let key = SigningKey::generate().unwrap().public_key();
        let mut m = member(key, &CertificateDer::from(b"cert".to_vec()));
        assert!(m.require_role(MemberRole::Provider, "offering").is_ok());
        let err = m
            .require_role(MemberRole::Consumer, "requesting a contract")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "requesting a contract needs the member role consumer; participant \
             91110000600037341L has the roles provider"
        );
        m.roles = vec![];
        let err = m.require_role(MemberRole::Auditor, "reading").unwrap_err();
        assert!(err.to_string().ends_with("has the roles (none)"), "{err}");
    }

    #[test]
    fn a_credential_opens_only_with_its_authority_key() {
        let authority = SigningKey::generate().unwrap();
        let other = SigningKey::generate().unwrap();
        let node = SigningKey::generate().unwrap();
        let m = member(node.public_key(), &CertificateDer::from(b"cert".to_vec()));
        let bytes = Envelope::sign_json(MEMBERSHIP_PAYLOAD_TYPE, &m, &authority)
            .unwrap()
            .to_json()
            .into_bytes();
        let (envelope, opened) = parse_credential(&bytes, &authority.public_key()).unwrap();
        assert_eq!(opened, m);
        assert_eq!(
            open_credential(&envelope, &authority.public_key()).unwrap(),
            m
        );
        let err = parse_credential(&bytes, &other.public_key()).unwrap_err();
        assert!(matches!(err, CredentialError::NotSigned(_)), "{err}");
        let err = parse_credential(b"{not json", &authority.public_key()).unwrap_err();
        assert!(
            err.to_string().starts_with("is not a signed credential"),
            "{err}"
        );
    }

    #[test]
    fn the_own_credential_names_the_participant_key_and_certificate() {
        let node = SigningKey::generate().unwrap();
        let cert = CertificateDer::from(b"cert".to_vec());
        let m = member(node.public_key(), &cert);
        let own = std::slice::from_ref(&cert);
        let id = m.participant_id.clone();
        assert_eq!(m.check_own(&id, &node.public_key(), own), Ok(()));
        let other_id = ParticipantId::parse("91330100MA2L0G0013").unwrap();
        let err = m.check_own(&other_id, &node.public_key(), own).unwrap_err();
        assert!(err.to_string().contains("issued to"), "{err}");
        let other_key = SigningKey::generate().unwrap().public_key();
        assert_eq!(
            m.check_own(&id, &other_key, own),
            Err(IdentityMismatch::SigningKey {
                named: node.public_key(),
                held: other_key
            })
        );
        assert_eq!(
            m.check_own(&id, &node.public_key(), &[]),
            Err(IdentityMismatch::NoCertificate)
        );
        assert_eq!(
            m.check_own(
                &id,
                &node.public_key(),
                &[CertificateDer::from(b"other".to_vec())]
            ),
            Err(IdentityMismatch::Certificate)
        );
    }

    #[test]
    fn region_codes() {
        assert!(RegionCode::parse("330100").is_ok());
        assert!(RegionCode::parse("110000").is_ok());
        assert!(RegionCode::parse("33010").unwrap_err().contains("6-digit"));
        assert!(RegionCode::parse("33a100").is_err());
        assert!(
            RegionCode::parse("990000")
                .unwrap_err()
                .contains("province")
        );
        // The node's own words for the policy language's checks.
        assert_eq!(
            RegionCode::parse("33010").unwrap_err(),
            "region \"33010\" is not a 6-digit administrative division code such as 330100"
        );
        assert_eq!(
            RegionCode::parse("990000").unwrap_err(),
            "region \"990000\" starts with 99, which is no province code (11 to 82)"
        );
        // 19 lies between 11 and 82 but names no province.
        assert!(RegionCode::parse("190000").is_err());
        let r = RegionCode::parse("330106").unwrap();
        assert_eq!(
            r.code(),
            liutong_policy::RegionCode::parse("330106").unwrap()
        );
        assert_eq!(serde_json::to_string(&r).unwrap(), "\"330106\"");
        let err = serde_json::from_str::<RegionCode>("\"990000\"").unwrap_err();
        assert!(err.to_string().contains("no province code"), "{err}");
    }

    #[test]
    fn a_membership_names_its_kind_by_the_member_name() {
        let mut m = member(
            SigningKey::generate().unwrap().public_key(),
            &CertificateDer::from(b"cert".to_vec()),
        );
        m.kind = ParticipantKind::PublicInstitution;
        let json = serde_json::to_value(&m).unwrap();
        assert_eq!(json["kind"], "institution");
        assert_eq!(m.to_proto().kind, "institution");
        assert_eq!(serde_json::from_value::<Membership>(json).unwrap(), m);
        let mut json = serde_json::to_value(&m).unwrap();
        json["kind"] = "publicInstitution".into();
        let err = serde_json::from_value::<Membership>(json).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown variant `publicInstitution`, expected one of `government`, `enterprise`, \
             `institution`"
        );
    }

    #[test]
    fn kinds_and_roles_parse_with_helpful_errors() {
        assert_eq!(
            ParticipantKind::from_member_name("enterprise").unwrap(),
            ParticipantKind::Enterprise
        );
        assert!(
            ParticipantKind::from_member_name("company")
                .unwrap_err()
                .contains("government, enterprise or institution")
        );
        assert_eq!(
            "auditor".parse::<MemberRole>().unwrap(),
            MemberRole::Auditor
        );
        assert!("admin".parse::<MemberRole>().is_err());
    }
}
