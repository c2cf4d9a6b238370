//! The typed values a policy talks about: classification levels, recipient kinds,
//! administrative region codes, participant IDs (USCC), durations, and the purpose
//! vocabulary with its `isA` hierarchy.
//!
//! Every type here can only hold a valid value ("parse, don't validate"): the
//! parsers reject bad input with a message that says what is wrong.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The grade of a data product (GB/T 43697-2024), highest first:
/// `core`, `important`, `general-3`, `general-2`, `general-1`.
///
/// The order of the enum is the order of sensitivity, so `Classification::General1 <
/// Classification::Core` (general-1 is the least sensitive, core the most).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Classification {
    /// 一般数据, graded 1: public.
    General1,
    /// 一般数据, graded 2.
    General2,
    /// 一般数据, graded 3: sensitive general data.
    General3,
    /// 重要数据: needs a recipient-region constraint and a human approval.
    Important,
    /// 核心数据: never leaves the node.
    Core,
}

impl Classification {
    /// All levels, least sensitive first.
    pub const ALL: [Classification; 5] = [
        Classification::General1,
        Classification::General2,
        Classification::General3,
        Classification::Important,
        Classification::Core,
    ];

    /// The level's name as written in policies.
    pub fn as_str(self) -> &'static str {
        match self {
            Classification::General1 => "general-1",
            Classification::General2 => "general-2",
            Classification::General3 => "general-3",
            Classification::Important => "important",
            Classification::Core => "core",
        }
    }

    /// Rank for comparisons: 1 (general-1) to 5 (core).
    pub(crate) fn rank(self) -> u8 {
        self as u8 + 1
    }
}

impl fmt::Display for Classification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Classification {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Classification::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown classification `{s}`: use one of core, important, general-3, general-2, general-1"
                )
            })
    }
}

impl TryFrom<String> for Classification {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Classification> for String {
    fn from(c: Classification) -> String {
        c.as_str().to_owned()
    }
}

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

/// Province-level prefixes of GB/T 2260 administrative division codes.
const PROVINCES: [u32; 34] = [
    11, 12, 13, 14, 15, 21, 22, 23, 31, 32, 33, 34, 35, 36, 37, 41, 42, 43, 44, 45, 46, 50, 51, 52,
    53, 54, 61, 62, 63, 64, 65, 71, 81, 82,
];

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
        if s.len() != 6 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "region `{s}` is not a 6-digit administrative division code such as 330106"
            ));
        }
        // Six ASCII digits always fit in a u32.
        let code: u32 = s.parse().map_err(|e| format!("region `{s}`: {e}"))?;
        RegionCode::from_u32(code)
    }

    /// Builds a code from its number (e.g. `330106`).
    pub fn from_u32(code: u32) -> Result<Self, String> {
        if !(100_000..=999_999).contains(&code) || !PROVINCES.contains(&(code / 10_000)) {
            return Err(format!(
                "region `{code:06}` does not start with a province code (11 to 82, e.g. 33 for Zhejiang)"
            ));
        }
        Ok(RegionCode(code))
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

/// Parses an ISO 8601 duration as used by `xsd:duration` in ODRL: `P30D`, `PT12H`,
/// `P1DT2H30M`, `P2W`, `PT90S`. Years and months are refused (they have no fixed
/// length) and so are fractions.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = |why: &str| format!("duration `{s}` {why}; write it like P30D, PT12H or P1DT2H30M");
    let rest = s
        .strip_prefix('P')
        .ok_or_else(|| bad("does not start with P"))?;
    if rest.is_empty() {
        return Err(bad("is empty"));
    }
    let mut secs: u64 = 0;
    let mut in_time = false;
    let mut number = String::new();
    let mut seen_unit = false;
    for c in rest.chars() {
        match c {
            '0'..='9' => number.push(c),
            'T' if !in_time && number.is_empty() => in_time = true,
            'W' | 'D' | 'H' | 'M' | 'S' | 'Y' => {
                if number.is_empty() {
                    return Err(bad("has a unit without a number"));
                }
                let n: u64 = number.parse().map_err(|_| bad("has a number too large"))?;
                number.clear();
                let unit = match (in_time, c) {
                    (false, 'W') => 7 * 86_400,
                    (false, 'D') => 86_400,
                    (true, 'H') => 3_600,
                    (true, 'M') => 60,
                    (true, 'S') => 1,
                    (false, 'Y') | (false, 'M') => {
                        return Err(bad("uses years or months, which have no fixed length"));
                    }
                    _ => return Err(bad("puts a unit on the wrong side of T")),
                };
                secs = n
                    .checked_mul(unit)
                    .and_then(|v| secs.checked_add(v))
                    .ok_or_else(|| bad("is too long"))?;
                seen_unit = true;
            }
            '.' | ',' => return Err(bad("has a fraction; use whole seconds")),
            _ => return Err(bad(&format!("has an unexpected character `{c}`"))),
        }
    }
    if !number.is_empty() || !seen_unit {
        return Err(bad("ends without a unit"));
    }
    Ok(Duration::from_secs(secs))
}

/// Writes a duration in the canonical form read by [`parse_duration`]
/// (whole seconds: `P30D`, `PT1H30M`, `PT0S`).
pub fn format_duration(d: Duration) -> String {
    let mut secs = d.as_secs();
    if secs == 0 {
        return "PT0S".to_owned();
    }
    let days = secs / 86_400;
    secs %= 86_400;
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    let mut out = String::from("P");
    if days > 0 {
        out.push_str(&format!("{days}D"));
    }
    if h + m + s > 0 {
        out.push('T');
        if h > 0 {
            out.push_str(&format!("{h}H"));
        }
        if m > 0 {
            out.push_str(&format!("{m}M"));
        }
        if s > 0 {
            out.push_str(&format!("{s}S"));
        }
    }
    out
}

/// Reads a human duration for messages: "30 days", "2 hours 5 minutes".
pub(crate) fn describe_duration(secs: u64) -> String {
    if secs == 0 {
        return "no time".to_owned();
    }
    let parts = [
        (secs / 86_400, "day"),
        (secs % 86_400 / 3600, "hour"),
        (secs % 3600 / 60, "minute"),
        (secs % 60, "second"),
    ];
    parts
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, u)| format!("{n} {u}{}", if *n == 1 { "" } else { "s" }))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A purpose vocabulary: terms and their broader term (`isA`). Configurable per data
/// space; [`PurposeVocabulary::default`] gives a small common one.
///
/// A term may have at most one broader term, so the vocabulary is a forest. Term IDs
/// are dense indexes assigned in the order terms were added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurposeVocabulary {
    terms: Vec<String>,
    parent: Vec<Option<u16>>,
    index: HashMap<String, u16>,
}

impl PurposeVocabulary {
    /// An empty vocabulary.
    pub fn empty() -> Self {
        PurposeVocabulary {
            terms: Vec::new(),
            parent: Vec::new(),
            index: HashMap::new(),
        }
    }

    /// Builds a vocabulary from `(term, broader term)` pairs; a broader term must be
    /// added before its narrower ones.
    pub fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
    ) -> Result<Self, String> {
        let mut v = PurposeVocabulary::empty();
        for (term, parent) in pairs {
            v.add(term, parent)?;
        }
        Ok(v)
    }

    /// Adds one term under an existing broader term (or at the top with `None`).
    pub fn add(&mut self, term: &str, broader: Option<&str>) -> Result<(), String> {
        if term.is_empty() || term.chars().any(char::is_whitespace) {
            return Err(format!(
                "purpose term `{term}` must be non-empty and have no spaces"
            ));
        }
        if self.index.contains_key(term) {
            return Err(format!("purpose term `{term}` is defined twice"));
        }
        let parent = match broader {
            None => None,
            Some(p) => Some(*self.index.get(p).ok_or_else(|| {
                format!(
                    "purpose term `{term}` names broader term `{p}`, which is not defined before it"
                )
            })?),
        };
        let id = u16::try_from(self.terms.len())
            .map_err(|_| "a purpose vocabulary holds at most 65535 terms".to_owned())?;
        self.terms.push(term.to_owned());
        self.parent.push(parent);
        self.index.insert(term.to_owned(), id);
        Ok(())
    }

    /// The term's ID, if the term is in the vocabulary.
    pub fn id(&self, term: &str) -> Option<u16> {
        self.index.get(term).copied()
    }

    /// The term with this ID.
    pub fn term(&self, id: u16) -> &str {
        &self.terms[usize::from(id)]
    }

    /// Number of terms.
    pub fn len(&self) -> usize {
        self.terms.len()
    }

    /// `true` when there are no terms.
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// `true` when `term` is `broader` or a narrower term of it.
    pub fn is_a(&self, term: u16, broader: u16) -> bool {
        let mut cur = Some(term);
        while let Some(t) = cur {
            if t == broader {
                return true;
            }
            cur = self.parent[usize::from(t)];
        }
        false
    }

    /// Every `(term, broader term)` pair, broader terms first: the input of
    /// [`PurposeVocabulary::from_pairs`] that rebuilds this vocabulary.
    pub fn pairs(&self) -> impl Iterator<Item = (&str, Option<&str>)> + '_ {
        self.terms.iter().zip(&self.parent).map(|(term, parent)| {
            (
                term.as_str(),
                parent.map(|p| self.terms[usize::from(p)].as_str()),
            )
        })
    }

    /// All term IDs.
    pub(crate) fn ids(&self) -> impl Iterator<Item = u16> + '_ {
        (0..self.terms.len()).map(|i| i as u16)
    }
}

impl Default for PurposeVocabulary {
    /// A small vocabulary common in public-data use:
    ///
    /// ```text
    /// publicService   research       commercial    regulation
    ///   governmentService  scientificResearch  marketing    supervision
    ///   emergencyResponse  statistics          productDevelopment  lawEnforcement
    ///   urbanPlanning      academicResearch    creditAssessment
    /// ```
    fn default() -> Self {
        let pairs = [
            ("publicService", None),
            ("governmentService", Some("publicService")),
            ("emergencyResponse", Some("publicService")),
            ("urbanPlanning", Some("publicService")),
            ("research", None),
            ("scientificResearch", Some("research")),
            ("academicResearch", Some("scientificResearch")),
            ("statistics", Some("research")),
            ("commercial", None),
            ("marketing", Some("commercial")),
            ("productDevelopment", Some("commercial")),
            ("creditAssessment", Some("commercial")),
            ("regulation", None),
            ("supervision", Some("regulation")),
            ("lawEnforcement", Some("regulation")),
        ];
        // The list above is well formed (each broader term comes first); a failure
        // here is a bug in this literal caught by the unit tests.
        PurposeVocabulary::from_pairs(pairs).expect("default purpose vocabulary is well formed")
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
    fn pairs_rebuild_the_vocabulary() {
        let v = PurposeVocabulary::default();
        let rebuilt = PurposeVocabulary::from_pairs(v.pairs()).unwrap();
        assert_eq!(rebuilt.len(), v.len());
        let academic = rebuilt.id("academicResearch").unwrap();
        assert!(rebuilt.is_a(academic, rebuilt.id("research").unwrap()));
        assert!(
            v.pairs()
                .any(|p| p == ("scientificResearch", Some("research")))
        );
    }

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
    }

    #[test]
    fn durations_round_trip() {
        for (s, secs) in [
            ("P30D", 30 * 86_400),
            ("PT12H", 12 * 3600),
            ("P1DT2H30M", 86_400 + 2 * 3600 + 1800),
            ("PT90S", 90),
            ("P2W", 14 * 86_400),
            ("PT0S", 0),
        ] {
            assert_eq!(parse_duration(s).unwrap().as_secs(), secs, "{s}");
            let back = format_duration(Duration::from_secs(secs));
            assert_eq!(parse_duration(&back).unwrap().as_secs(), secs);
        }
        for bad in ["30D", "P", "P1Y", "P1M", "PT1.5S", "P1H", "PTD", "P3"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(describe_duration(90_061), "1 day 1 hour 1 minute 1 second");
    }

    #[test]
    fn purpose_hierarchy() {
        let v = PurposeVocabulary::default();
        let academic = v.id("academicResearch").unwrap();
        let research = v.id("research").unwrap();
        let marketing = v.id("marketing").unwrap();
        assert!(v.is_a(academic, research));
        assert!(v.is_a(academic, academic));
        assert!(!v.is_a(research, academic));
        assert!(!v.is_a(marketing, research));
        assert!(PurposeVocabulary::from_pairs([("a", Some("b"))]).is_err());
        assert!(PurposeVocabulary::from_pairs([("a", None), ("a", None)]).is_err());
    }

    #[test]
    fn classification_order_and_names() {
        assert!(Classification::Core > Classification::Important);
        assert!(Classification::General3 > Classification::General1);
        for c in Classification::ALL {
            assert_eq!(c.as_str().parse::<Classification>().unwrap(), c);
        }
        assert!("secret".parse::<Classification>().is_err());
    }
}
