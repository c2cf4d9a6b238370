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

const USCC_CHARSET: &[u8; 31] = b"0123456789ABCDEFGHJKLMNPQRTUWXY";
const USCC_WEIGHTS: [u32; 17] = [
    1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28,
];

/// A participant ID: an 18-character Unified Social Credit Identifier (GB 32100-2015)
/// whose check character is right, e.g. `91110000600037341L`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ParticipantCode(String);

impl ParticipantCode {
    /// Parses and checks an ID; the error names the bad character or the wrong check.
    pub fn parse(s: &str) -> Result<Self, String> {
        let bytes = s.as_bytes();
        if bytes.len() != 18 {
            return Err(format!(
                "participant ID `{s}` has {} characters; a Unified Social Credit Identifier has 18",
                s.chars().count()
            ));
        }
        let mut sum = 0u32;
        for (i, &b) in bytes.iter().enumerate() {
            let Some(v) = USCC_CHARSET.iter().position(|&c| c == b) else {
                return Err(format!(
                    "participant ID `{s}`: character {} (`{}`) is not one of 0-9 and A-Y without I, O, S, V, Z",
                    i + 1,
                    char::from(b)
                ));
            };
            if i < 17 {
                sum += v as u32 * USCC_WEIGHTS[i];
            } else {
                let expected = USCC_CHARSET[((31 - sum % 31) % 31) as usize];
                if b != expected {
                    return Err(format!(
                        "participant ID `{s}`: check character is `{}` but should be `{}`",
                        char::from(b),
                        char::from(expected)
                    ));
                }
            }
        }
        Ok(ParticipantCode(s.to_owned()))
    }

    /// The ID as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Completes 17 characters with the right check character (used by tests and
    /// examples to make valid IDs).
    pub fn with_check_character(first17: &str) -> Result<Self, String> {
        let b = first17.as_bytes();
        if b.len() != 17 {
            return Err(format!("`{first17}` must have 17 characters"));
        }
        let mut sum = 0u32;
        for (i, &c) in b.iter().enumerate() {
            let v = USCC_CHARSET
                .iter()
                .position(|&x| x == c)
                .ok_or_else(|| format!("`{first17}`: bad character `{}`", char::from(c)))?;
            sum += v as u32 * USCC_WEIGHTS[i];
        }
        let check = char::from(USCC_CHARSET[((31 - sum % 31) % 31) as usize]);
        ParticipantCode::parse(&format!("{first17}{check}"))
    }
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
}
