//! Who is who in the data space: participant IDs, signing keys, signed envelopes and
//! membership credentials.
//!
//! - [`ParticipantId`] can only hold a valid 统一社会信用代码 (USCC, GB 32100-2015).
//! - [`keys`] holds the node's Ed25519 signing key (ring), stored owner-readable only.
//! - [`envelope`] is the one signed-envelope type (DSSE) used for everything signed.
//! - [`membership`] is the credential the authority signs for each admitted member.
//! - [`request`] is the admission request a member's node sends the authority.
//! - [`bundle`] is the layout of the admission bundle and of the node's `identity/`.

pub mod bundle;
pub mod envelope;
pub mod keys;
pub mod membership;
pub mod own;
pub mod request;

use std::fmt;
use std::str::FromStr;

use liutong_policy::{ParticipantCode, UsccError};
use serde::{Deserialize, Serialize};

pub use envelope::{Envelope, EnvelopeError};
pub use keys::{KeyError, PublicKey, SigningKey};
pub use membership::{MemberRole, Membership, MissingRole, ParticipantKind, RegionCode};
pub use own::NodeIdentity;

/// A participant of the data space, identified by its 统一社会信用代码 (Unified Social
/// Credit Identifier). Parsing checks the length, the character set and the check
/// character, so a value of this type is always a well-formed code.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ParticipantId(ParticipantCode);

/// Why a string is not a valid participant ID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParticipantIdError {
    #[error("participant ID {id:?} has {len} characters; a 统一社会信用代码 (USCC) has exactly 18")]
    Length { id: String, len: usize },
    #[error(
        "participant ID {id:?}: character {position} ({ch:?}) is not allowed; a USCC uses only \
         0-9 and the capital letters A-Y without I, O, S, V and Z"
    )]
    Character {
        id: String,
        /// 1-based position of the bad character.
        position: usize,
        ch: char,
    },
    #[error(
        "participant ID {id:?}: the check character (18th) is {found:?}, but the first 17 \
         characters require {expected:?} (GB 32100-2015); look for a typing error"
    )]
    CheckCharacter {
        id: String,
        found: char,
        expected: char,
    },
}

impl ParticipantId {
    /// Parses and checks a USCC. The rule is the policy language's
    /// ([`ParticipantCode::checked`]), so both sides accept the same IDs.
    pub fn parse(s: &str) -> Result<Self, ParticipantIdError> {
        ParticipantCode::checked(s)
            .map(Self)
            .map_err(ParticipantIdError::from)
    }

    /// Completes the first 17 characters of a USCC with its check character. Used to
    /// make identifiers for development and test set-ups.
    pub fn with_check_character(first17: &str) -> Result<Self, ParticipantIdError> {
        let check = ParticipantCode::check_character(first17).map_err(|e| match e {
            // Counted as the whole ID would be, with its check character.
            UsccError::Length { id, len } => ParticipantIdError::Length { id, len: len + 1 },
            e => e.into(),
        })?;
        Self::parse(&format!("{first17}{check}"))
    }

    /// The ID as the policy language holds it.
    pub fn code(&self) -> &ParticipantCode {
        &self.0
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// The URI this participant's certificates carry as subject alternative name.
    pub fn san_uri(&self) -> String {
        format!("{SAN_URI_PREFIX}{}", self.0.as_str())
    }

    /// Reads the participant from a certificate's SAN URI (`urn:uscc:<code>`).
    pub fn from_san_uri(uri: &str) -> Option<Result<Self, ParticipantIdError>> {
        uri.strip_prefix(SAN_URI_PREFIX).map(Self::parse)
    }
}

/// Prefix of the SAN URI naming a participant in its TLS certificate.
pub const SAN_URI_PREFIX: &str = "urn:uscc:";

/// The node's words for the policy language's USCC checks; operators and scripts read
/// these messages, so they stay the node's own.
impl From<UsccError> for ParticipantIdError {
    fn from(e: UsccError) -> Self {
        match e {
            UsccError::Length { id, len } => Self::Length { id, len },
            UsccError::Character { id, position, ch } => Self::Character { id, position, ch },
            UsccError::CheckCharacter {
                id,
                found,
                expected,
            } => Self::CheckCharacter {
                id,
                found,
                expected,
            },
        }
    }
}

impl FromStr for ParticipantId {
    type Err = ParticipantIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for ParticipantId {
    type Error = ParticipantIdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<ParticipantId> for String {
    fn from(id: ParticipantId) -> String {
        id.0.into()
    }
}

impl fmt::Display for ParticipantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_str())
    }
}

impl fmt::Debug for ParticipantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ParticipantId({})", self.0.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_design_example() {
        let id = ParticipantId::parse("91110000600037341L").expect("valid per DESIGN.md");
        assert_eq!(id.as_str(), "91110000600037341L");
        assert_eq!(id.san_uri(), "urn:uscc:91110000600037341L");
    }

    #[test]
    fn accepts_codes_checked_by_an_independent_implementation() {
        // Check characters computed with a separate Python implementation of GB 32100-2015.
        for code in [
            "91330100MA27XY401X",
            "113301000024821386",
            "12330000470003217W",
            "91330106MA2GL0A01F",
        ] {
            ParticipantId::parse(code).unwrap_or_else(|e| panic!("{code}: {e}"));
        }
    }

    #[test]
    fn names_the_failed_check() {
        let err = ParticipantId::parse("91110000600037341K").unwrap_err();
        assert_eq!(
            err,
            ParticipantIdError::CheckCharacter {
                id: "91110000600037341K".into(),
                found: 'K',
                expected: 'L'
            }
        );
        assert!(err.to_string().contains("require 'L'"), "{err}");
    }

    #[test]
    fn names_the_bad_character_and_its_position() {
        for (code, position, ch) in [
            ("91110000600O37341L", 12, 'O'),
            ("I1110000600037341L", 1, 'I'),
            ("9111000060003734sL", 17, 's'),
            ("91110000600037341Z", 18, 'Z'),
            ("9111000060003734VL", 17, 'V'),
        ] {
            match ParticipantId::parse(code) {
                Err(ParticipantIdError::Character {
                    position: p, ch: c, ..
                }) => assert_eq!((p, c), (position, ch), "{code}"),
                other => panic!("{code}: expected a character error, got {other:?}"),
            }
        }
    }

    #[test]
    fn rejects_wrong_lengths_and_non_ascii() {
        assert!(matches!(
            ParticipantId::parse("91110000600037341"),
            Err(ParticipantIdError::Length { len: 17, .. })
        ));
        assert!(matches!(
            ParticipantId::parse(""),
            Err(ParticipantIdError::Length { len: 0, .. })
        ));
        assert!(matches!(
            ParticipantId::parse("9111000060003734１L"),
            Err(ParticipantIdError::Character { position: 17, .. })
        ));
    }

    #[test]
    fn completes_a_check_character() {
        let id = ParticipantId::with_check_character("91110000600037341").unwrap();
        assert_eq!(id.as_str(), "91110000600037341L");
    }

    #[test]
    fn reads_the_san_uri() {
        let id = ParticipantId::from_san_uri("urn:uscc:91110000600037341L")
            .unwrap()
            .unwrap();
        assert_eq!(id.as_str(), "91110000600037341L");
        assert!(ParticipantId::from_san_uri("urn:other:x").is_none());
    }

    #[test]
    fn serde_refuses_invalid_codes() {
        let ok: ParticipantId = serde_json::from_str("\"91110000600037341L\"").unwrap();
        assert_eq!(ok.as_str(), "91110000600037341L");
        let err = serde_json::from_str::<ParticipantId>("\"91110000600037341K\"").unwrap_err();
        assert!(err.to_string().contains("check character"), "{err}");
    }
}
