//! Administrative division codes (GB/T 2260): the province list, and the hierarchy of
//! province, prefecture and county that `isPartOf` reads.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Province-level prefixes of GB/T 2260 administrative division codes.
const PROVINCES: [u32; 34] = [
    11, 12, 13, 14, 15, 21, 22, 23, 31, 32, 33, 34, 35, 36, 37, 41, 42, 43, 44, 45, 46, 50, 51, 52,
    53, 54, 61, 62, 63, 64, 65, 71, 81, 82,
];

/// Why a text is not a region code ([`RegionCode::checked`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegionCodeError {
    /// Not six ASCII digits.
    #[error("region `{0}` is not a 6-digit administrative division code such as 330106")]
    NotSixDigits(String),
    /// Six digits, but the first two name no province.
    #[error(
        "region `{code:06}` does not start with a province code (11 to 82, e.g. 33 for Zhejiang)"
    )]
    NoProvince {
        /// The code as a number; its province prefix is `code / 10_000`.
        code: u32,
    },
}

/// A 6-digit administrative division code (GB/T 2260), e.g. `330106`.
///
/// `330106` (a district) is part of `330100` (its prefecture), which is part of
/// `330000` (its province).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RegionCode(u32);

impl RegionCode {
    /// Parses a 6-digit code whose first two digits name a province.
    pub fn parse(s: &str) -> Result<Self, String> {
        RegionCode::checked(s).map_err(|e| e.to_string())
    }

    /// Parses a 6-digit code whose first two digits name a province, saying which of
    /// the two checks failed.
    pub fn checked(s: &str) -> Result<Self, RegionCodeError> {
        if s.len() != 6 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(RegionCodeError::NotSixDigits(s.to_owned()));
        }
        // Six ASCII digits always fit in a u32.
        let code: u32 = s
            .parse()
            .map_err(|_| RegionCodeError::NotSixDigits(s.to_owned()))?;
        RegionCode::checked_u32(code)
    }

    /// Builds a code from its number (e.g. `330106`).
    pub fn from_u32(code: u32) -> Result<Self, String> {
        RegionCode::checked_u32(code).map_err(|e| e.to_string())
    }

    fn checked_u32(code: u32) -> Result<Self, RegionCodeError> {
        if !(100_000..=999_999).contains(&code) || !PROVINCES.contains(&(code / 10_000)) {
            return Err(RegionCodeError::NoProvince { code });
        }
        Ok(RegionCode(code))
    }

    /// The province-level codes (`110000` Beijing to `820000` Macao), in order.
    pub fn provinces() -> impl Iterator<Item = RegionCode> {
        PROVINCES.iter().map(|p| RegionCode(p * 10_000))
    }

    /// The code as a number.
    pub fn as_u32(self) -> u32 {
        self.0
    }

    /// `true` when `self` is `whole` or lies inside it: `330106` is part of `330100`
    /// and of `330000`; a county-level `whole` contains only itself.
    pub fn is_part_of(self, whole: RegionCode) -> bool {
        let w = whole.0;
        if w.is_multiple_of(10_000) {
            self.0 / 10_000 == w / 10_000
        } else if w.is_multiple_of(100) {
            self.0 / 100 == w / 100
        } else {
            self.0 == w
        }
    }

    pub(crate) fn province(self) -> u32 {
        self.0 / 10_000
    }

    pub(crate) fn prefecture(self) -> u32 {
        self.0 / 100
    }

    pub(crate) fn all_provinces() -> &'static [u32] {
        &PROVINCES
    }
}

impl fmt::Display for RegionCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:06}", self.0)
    }
}

impl FromStr for RegionCode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RegionCode::parse(s)
    }
}

impl TryFrom<String> for RegionCode {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        RegionCode::parse(&s)
    }
}

impl From<RegionCode> for String {
    fn from(r: RegionCode) -> String {
        r.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_hierarchy() {
        let d = RegionCode::parse("330106").unwrap();
        let p = RegionCode::parse("330100").unwrap();
        let v = RegionCode::parse("330000").unwrap();
        assert!(d.is_part_of(p) && p.is_part_of(v) && d.is_part_of(v));
        assert!(d.is_part_of(d));
        assert!(!v.is_part_of(p));
        assert!(!RegionCode::parse("330206").unwrap().is_part_of(p));
        assert!(!RegionCode::parse("110105").unwrap().is_part_of(v));
        assert!(RegionCode::parse("3301").is_err());
        assert!(RegionCode::parse("990000").is_err());
        assert!(RegionCode::parse("33010a").is_err());
        assert_eq!(
            RegionCode::checked("190000"),
            Err(RegionCodeError::NoProvince { code: 190_000 })
        );
        assert_eq!(
            RegionCode::checked("3301"),
            Err(RegionCodeError::NotSixDigits("3301".into()))
        );
    }

    #[test]
    fn the_provinces_are_the_province_level_codes() {
        let all: Vec<String> = RegionCode::provinces().map(|r| r.to_string()).collect();
        assert_eq!(all.len(), 34);
        assert_eq!(all.first().map(String::as_str), Some("110000"));
        assert_eq!(all.last().map(String::as_str), Some("820000"));
        assert!(all.contains(&"330000".to_owned()));
        let zhejiang = RegionCode::parse("330000").unwrap();
        assert!(RegionCode::provinces().all(|p| p.is_part_of(p)));
        assert_eq!(
            RegionCode::provinces()
                .filter(|p| RegionCode::parse("330106").unwrap().is_part_of(*p))
                .collect::<Vec<_>>(),
            [zhejiang]
        );
    }
}
