//! Who a participant is, as a policy sees it: its ID, a Unified Social Credit
//! Identifier (GB 32100-2015) whose check character is verified, and its kind.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The kind of participant a recipient is, from its membership credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum RecipientKind {
    /// A government department (政府部门).
    Government,
    /// An enterprise (企业).
    Enterprise,
    /// A public institution (事业单位).
    PublicInstitution,
}

impl RecipientKind {
    /// All kinds.
    pub const ALL: [RecipientKind; 3] = [
        RecipientKind::Government,
        RecipientKind::Enterprise,
        RecipientKind::PublicInstitution,
    ];

    /// The kind's name as written in policies.
    pub fn as_str(self) -> &'static str {
        match self {
            RecipientKind::Government => "government",
            RecipientKind::Enterprise => "enterprise",
            RecipientKind::PublicInstitution => "publicInstitution",
        }
    }

    /// The kinds' [member names](RecipientKind::member_name), in the order of
    /// [`RecipientKind::ALL`].
    pub const MEMBER_NAMES: [&'static str; 3] = ["government", "enterprise", "institution"];

    /// The kind's name in a membership credential, on the node's API and on its command
    /// line: `government`, `enterprise`, `institution`. Only a public institution is
    /// named differently there than in policies.
    pub fn member_name(self) -> &'static str {
        // The discriminants are the positions in `ALL`.
        RecipientKind::MEMBER_NAMES[self as usize]
    }

    /// Reads a kind by its [member name](RecipientKind::member_name).
    pub fn from_member_name(s: &str) -> Result<Self, String> {
        RecipientKind::ALL
            .into_iter()
            .find(|k| k.member_name() == s)
            .ok_or_else(|| {
                format!("unknown participant kind {s:?}; use government, enterprise or institution")
            })
    }
}

impl fmt::Display for RecipientKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RecipientKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RecipientKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown recipient kind `{s}`: use one of government, enterprise, publicInstitution"
                )
            })
    }
}

impl TryFrom<String> for RecipientKind {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<RecipientKind> for String {
    fn from(k: RecipientKind) -> String {
        k.as_str().to_owned()
    }
}

/// The 31 characters a USCC may use, each worth its index (no I, O, S, V, Z).
const USCC_CHARSET: &[u8; 31] = b"0123456789ABCDEFGHJKLMNPQRTUWXY";
/// Weights of the first 17 characters: 3^(i-1) mod 31.
const USCC_WEIGHTS: [u32; 17] = [
    1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28,
];

/// Why a text is not a Unified Social Credit Identifier ([`ParticipantCode::checked`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsccError {
    /// Not 18 characters (17 for [`ParticipantCode::check_character`]).
    #[error(
        "participant ID `{id}` has {len} characters; a Unified Social Credit Identifier has 18"
    )]
    Length {
        /// The text checked.
        id: String,
        /// Its length in characters.
        len: usize,
    },
    /// A character outside the USCC's 31.
    #[error(
        "participant ID `{id}`: character {position} (`{ch}`) is not one of 0-9 and A-Y without I, O, S, V, Z"
    )]
    Character {
        /// The text checked.
        id: String,
        /// 1-based position of the first bad character.
        position: usize,
        /// The bad character.
        ch: char,
    },
    /// The 18th character is not the one the first 17 call for.
    #[error("participant ID `{id}`: check character is `{found}` but should be `{expected}`")]
    CheckCharacter {
        /// The text checked.
        id: String,
        /// The 18th character as written.
        found: char,
        /// The check character the first 17 call for.
        expected: char,
    },
}

/// A participant ID: an 18-character Unified Social Credit Identifier (GB 32100-2015)
/// whose check character is right, e.g. `91110000600037341L`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ParticipantCode(String);

impl ParticipantCode {
    /// Parses and checks an ID; the error names the bad character or the wrong check.
    pub fn parse(s: &str) -> Result<Self, String> {
        ParticipantCode::checked(s).map_err(|e| e.to_string())
    }

    /// Parses and checks an ID: 18 characters from the USCC's 31, the last the check
    /// character the first 17 call for. The error says which check failed.
    pub fn checked(s: &str) -> Result<Self, UsccError> {
        let chars: Vec<char> = s.chars().collect();
        if chars.len() != 18 {
            return Err(UsccError::Length {
                id: s.to_owned(),
                len: chars.len(),
            });
        }
        let values = uscc_values(s, &chars)?;
        let expected = check_character_of(&values[..17]);
        if chars[17] != expected {
            return Err(UsccError::CheckCharacter {
                id: s.to_owned(),
                found: chars[17],
                expected,
            });
        }
        Ok(ParticipantCode(s.to_owned()))
    }

    /// The check character that the first 17 characters of an ID call for. The
    /// characters are checked first, then the length.
    pub fn check_character(first17: &str) -> Result<char, UsccError> {
        let chars: Vec<char> = first17.chars().collect();
        let values = uscc_values(first17, &chars)?;
        if values.len() != 17 {
            return Err(UsccError::Length {
                id: first17.to_owned(),
                len: values.len(),
            });
        }
        Ok(check_character_of(&values))
    }

    /// The ID as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Completes 17 characters with the right check character (used by tests and
    /// examples to make valid IDs).
    pub fn with_check_character(first17: &str) -> Result<Self, String> {
        if first17.len() != 17 {
            return Err(format!("`{first17}` must have 17 characters"));
        }
        let check = ParticipantCode::check_character(first17).map_err(|e| match e {
            UsccError::Character { ch, .. } => format!("`{first17}`: bad character `{ch}`"),
            e => e.to_string(),
        })?;
        ParticipantCode::parse(&format!("{first17}{check}"))
    }
}

/// Each character's value, or the first one outside the USCC's 31.
fn uscc_values(id: &str, chars: &[char]) -> Result<Vec<u32>, UsccError> {
    chars
        .iter()
        .enumerate()
        .map(|(i, &ch)| {
            u8::try_from(ch)
                .ok()
                .and_then(|b| USCC_CHARSET.iter().position(|&c| c == b))
                .map(|v| v as u32)
                .ok_or_else(|| UsccError::Character {
                    id: id.to_owned(),
                    position: i + 1,
                    ch,
                })
        })
        .collect()
}

/// The check character for the values of the first 17 characters (GB 32100-2015):
/// the weighted sum's complement mod 31.
fn check_character_of(values: &[u32]) -> char {
    let sum: u32 = values.iter().zip(USCC_WEIGHTS).map(|(v, w)| v * w).sum();
    char::from(USCC_CHARSET[((31 - sum % 31) % 31) as usize])
}

impl fmt::Display for ParticipantCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for ParticipantCode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ParticipantCode::parse(s)
    }
}

impl TryFrom<String> for ParticipantCode {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        ParticipantCode::parse(&s)
    }
}

impl From<ParticipantCode> for String {
    fn from(p: ParticipantCode) -> String {
        p.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uscc_check_character() {
        assert!(ParticipantCode::parse("91110000600037341L").is_ok());
        let e = ParticipantCode::parse("91110000600037341M").unwrap_err();
        assert!(e.contains("should be `L`"), "{e}");
        let e = ParticipantCode::parse("9111000060003734IL").unwrap_err();
        assert!(e.contains("character 17"), "{e}");
        let e = ParticipantCode::parse("123").unwrap_err();
        assert!(e.contains("18"), "{e}");
        let made = ParticipantCode::with_check_character("91330100MA27XY001").unwrap();
        assert!(ParticipantCode::parse(made.as_str()).is_ok());
    }

    #[test]
    fn accepts_codes_checked_by_an_independent_implementation() {
        // Check characters computed with a separate Python implementation of GB 32100-2015.
        for code in [
            "91110000600037341L",
            "91330100MA27XY401X",
            "113301000024821386",
            "12330000470003217W",
            "91330106MA2GL0A01F",
        ] {
            ParticipantCode::checked(code).unwrap_or_else(|e| panic!("{code}: {e}"));
        }
    }

    #[test]
    fn names_the_failed_check() {
        assert_eq!(
            ParticipantCode::checked("91110000600037341K"),
            Err(UsccError::CheckCharacter {
                id: "91110000600037341K".into(),
                found: 'K',
                expected: 'L'
            })
        );
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
            match ParticipantCode::checked(code) {
                Err(UsccError::Character {
                    position: p, ch: c, ..
                }) => assert_eq!((p, c), (position, ch), "{code}"),
                other => panic!("{code}: expected a character error, got {other:?}"),
            }
        }
    }

    #[test]
    fn rejects_wrong_lengths_and_non_ascii() {
        assert!(matches!(
            ParticipantCode::checked("91110000600037341"),
            Err(UsccError::Length { len: 17, .. })
        ));
        assert!(matches!(
            ParticipantCode::checked(""),
            Err(UsccError::Length { len: 0, .. })
        ));
        assert!(matches!(
            ParticipantCode::checked("9111000060003734１L"),
            Err(UsccError::Character { position: 17, .. })
        ));
    }

    #[test]
    fn completes_a_check_character() {
        assert_eq!(
            ParticipantCode::check_character("91110000600037341"),
            Ok('L')
        );
        assert!(matches!(
            ParticipantCode::check_character("9111000060003734"),
            Err(UsccError::Length { len: 16, .. })
        ));
        assert!(matches!(
            ParticipantCode::check_character("9111000060003734O"),
            Err(UsccError::Character { position: 17, .. })
        ));
    }

    #[test]
    fn kinds_have_a_policy_name_and_a_member_name() {
        for (kind, policy, member) in [
            (RecipientKind::Government, "government", "government"),
            (RecipientKind::Enterprise, "enterprise", "enterprise"),
            (
                RecipientKind::PublicInstitution,
                "publicInstitution",
                "institution",
            ),
        ] {
            assert_eq!((kind.as_str(), kind.to_string()), (policy, policy.into()));
            assert_eq!(policy.parse::<RecipientKind>(), Ok(kind));
            assert_eq!(kind.member_name(), member);
            assert_eq!(RecipientKind::from_member_name(member), Ok(kind));
        }
        assert!(
            RecipientKind::from_member_name("company")
                .unwrap_err()
                .contains("government, enterprise or institution")
        );
        assert!(RecipientKind::from_member_name("publicInstitution").is_err());
        assert!("institution".parse::<RecipientKind>().is_err());
    }
}
