//! Bounded, typed values for everything that arrives from outside the node — a peer's
//! messages and a local client's arguments — and the one escaping function for printing
//! text that came from others.
//!
//! A field is parsed here at the edge, before any state is written; a value that does
//! not fit is refused with a [`FieldError`] that names the field and quotes at most a
//! short, escaped prefix of what was sent (a megabyte of input is not echoed back).
//!
//! The grammars:
//!
//! - An ID ([`Id`]): 1 to [`ID_MAX`] characters of `A-Z a-z 0-9 . _ : -`, and not `.`
//!   or `..`. Every ID the node makes fits (`neg-…`, `agr-…`, `prd-…`, `use-…`, a
//!   participant's 18-character credit code), so nothing legitimate is refused; a path
//!   separator, a space or a control character never gets into a key or a log line.
//! - An offer ID ([`OfferId`]): a product ID, `/v`, and a version number (`prd-…/v3`).
//! - Text ([`Text`]): a purpose, a reason: 1 to a field's maximum of characters,
//!   no control characters (newline, NUL, ESC, …), no bidirectional overrides and no
//!   line or paragraph separators, so it can neither forge a line nor reorder one.
//! - A nonce ([`Nonce`]): exactly [`NONCE_LEN`] lowercase hex digits (16 random bytes,
//!   which is what consumers make), so a replay record has a fixed size.
//! - A time ([`Time`]): Unix seconds from 2000 to 9999, so arithmetic on it cannot
//!   overflow.

use std::borrow::Cow;
use std::fmt;

/// Longest ID.
pub const ID_MAX: usize = 128;
/// Length of a contract request's nonce: 16 random bytes in hex.
pub const NONCE_LEN: usize = 32;
/// Longest purpose, in characters.
pub const PURPOSE_MAX: usize = 256;
/// Longest reason (a rejection's, a revocation's), in characters.
pub const REASON_MAX: usize = 1000;
/// Earliest time accepted: 2000-01-01T00:00:00Z.
pub const TIME_MIN: i64 = 946_684_800;
/// Latest time accepted: 9999-12-31T23:59:59Z.
pub const TIME_MAX: i64 = 253_402_300_799;
/// How much of a refused value an error message quotes, in characters.
const QUOTED: usize = 32;

/// A field that does not fit its grammar: `field: why (got "prefix…")`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {why}")]
pub struct FieldError {
    pub field: &'static str,
    pub why: String,
}

impl FieldError {
    fn new(field: &'static str, why: impl Into<String>) -> Self {
        FieldError {
            field,
            why: why.into(),
        }
    }
}

/// An ID from outside the node, checked against the ID grammar (see the module).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id(String);

impl Id {
    /// `value` as an ID, or a refusal naming `field`.
    pub fn parse(field: &'static str, value: &str) -> Result<Id, FieldError> {
        check_id(field, value).map(|()| Id(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Id {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

fn check_id(field: &'static str, value: &str) -> Result<(), FieldError> {
    if value.is_empty() {
        return Err(FieldError::new(field, "is empty; an ID is required"));
    }
    if value.len() > ID_MAX {
        return Err(FieldError::new(
            field,
            format!(
                "is {} bytes long; an ID has at most {ID_MAX} (got {})",
                value.len(),
                quote(value)
            ),
        ));
    }
    if let Some(bad) = value.chars().find(|c| !id_char(*c)) {
        return Err(FieldError::new(
            field,
            format!(
                "holds {}; an ID is made of A-Z a-z 0-9 . _ : - only (got {})",
                quote_char(bad),
                quote(value)
            ),
        ));
    }
    if value == "." || value == ".." {
        return Err(FieldError::new(
            field,
            format!("{} is not an ID", quote(value)),
        ));
    }
    Ok(())
}

fn id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')
}

/// `value` checked as an ID, kept as the `String` the domain types hold.
pub fn id(field: &'static str, value: &str) -> Result<String, FieldError> {
    Id::parse(field, value).map(Id::into_string)
}

/// `value` checked as an ID where an empty value means "none" (a filter left out).
pub fn optional_id(field: &'static str, value: &str) -> Result<Option<String>, FieldError> {
    if value.is_empty() {
        return Ok(None);
    }
    id(field, value).map(Some)
}

/// An offer ID: a product ID (an [`Id`]), `/v`, and a version number.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct OfferId {
    text: String,
    product_len: usize,
    version: u32,
}

impl OfferId {
    pub fn parse(field: &'static str, value: &str) -> Result<OfferId, FieldError> {
        if value.len() > ID_MAX + 11 {
            return Err(FieldError::new(
                field,
                format!(
                    "is {} bytes long; an offer ID is a product ID and /v<version> (got {})",
                    value.len(),
                    quote(value)
                ),
            ));
        }
        let Some((product, version)) = value.rsplit_once("/v") else {
            return Err(FieldError::new(
                field,
                format!(
                    "an offer ID is a product ID and /v<version>, as in prd-1f2e/v3 (got {})",
                    quote(value)
                ),
            ));
        };
        check_id(field, product)?;
        let version = match version.parse::<u32>() {
            Ok(v) if version.bytes().all(|b| b.is_ascii_digit()) => v,
            _ => {
                return Err(FieldError::new(
                    field,
                    format!(
                        "the version after /v is not a number (got {})",
                        quote(value)
                    ),
                ));
            }
        };
        Ok(OfferId {
            text: value.to_owned(),
            product_len: product.len(),
            version,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn product_id(&self) -> &str {
        &self.text[..self.product_len]
    }

    pub fn version(&self) -> u32 {
        self.version
    }
}

impl fmt::Display for OfferId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// `value` checked as an offer ID, kept as a `String`.
pub fn offer_id(field: &'static str, value: &str) -> Result<String, FieldError> {
    OfferId::parse(field, value).map(|o| o.text)
}

/// Text from others — a purpose, a reason — checked by length and character class.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Text(String);

impl Text {
    /// `value` as text of 1 to `max` characters, not only spaces, without control characters,
    /// bidi overrides or line separators; a refusal names `field`. (Not trimmed: a
    /// signed value is kept as it was signed.)
    pub fn parse(field: &'static str, value: &str, max: usize) -> Result<Text, FieldError> {
        if value.trim().is_empty() {
            return Err(FieldError::new(field, "is empty"));
        }
        let length = value.chars().count();
        if length > max {
            return Err(FieldError::new(
                field,
                format!(
                    "{length} characters; at most {max} are accepted (got {})",
                    quote(value)
                ),
            ));
        }
        if let Some(bad) = value.chars().find(|c| unsafe_char(*c)) {
            return Err(FieldError::new(
                field,
                format!(
                    "holds the control character {}; text may hold none (got {})",
                    quote_char(bad),
                    quote(value)
                ),
            ));
        }
        Ok(Text(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `value` checked as a purpose (at most [`PURPOSE_MAX`] characters), trimmed.
pub fn purpose(field: &'static str, value: &str) -> Result<String, FieldError> {
    Text::parse(field, value.trim(), PURPOSE_MAX).map(Text::into_string)
}

/// `value` checked as a reason (at most [`REASON_MAX`] characters), trimmed.
pub fn reason(field: &'static str, value: &str) -> Result<String, FieldError> {
    Text::parse(field, value.trim(), REASON_MAX).map(Text::into_string)
}

/// A contract request's nonce: exactly [`NONCE_LEN`] lowercase hex digits.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Nonce(String);

impl Nonce {
    pub fn parse(field: &'static str, value: &str) -> Result<Nonce, FieldError> {
        if value.len() != NONCE_LEN
            || !value
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(FieldError::new(
                field,
                format!(
                    "a nonce is {NONCE_LEN} lowercase hex digits (got {} bytes: {})",
                    value.len(),
                    quote(value)
                ),
            ));
        }
        Ok(Nonce(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A point in time from outside the node, in Unix seconds within [`TIME_MIN`] ..=
/// [`TIME_MAX`], so a difference or a sum of two never overflows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time(i64);

impl Time {
    pub fn parse(field: &'static str, value: i64) -> Result<Time, FieldError> {
        if !(TIME_MIN..=TIME_MAX).contains(&value) {
            return Err(FieldError::new(
                field,
                format!(
                    "{value} is not a time this node accepts (Unix seconds from {TIME_MIN} to \
                     {TIME_MAX})"
                ),
            ));
        }
        Ok(Time(value))
    }

    pub fn unix(self) -> i64 {
        self.0
    }

    /// Seconds from `earlier` to `self` (negative when `earlier` is later).
    pub fn since(self, earlier: Time) -> i64 {
        // Both lie within TIME_MIN..=TIME_MAX, so this cannot overflow.
        self.0 - earlier.0
    }
}

/// A character that must not reach a terminal or a log line as it is: a control
/// character (C0, DEL, C1: newline, NUL, ESC, …), a bidirectional override or isolate,
/// a directional mark, or a line or paragraph separator.
pub fn unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{200b}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}' | '\u{2028}' | '\u{2029}' | '\u{061c}' | '\u{feff}'
        )
}

/// `text` as it may be printed: every [`unsafe_char`] shown as an escape (`\n`, `\t`,
/// `\r`, `\0`, otherwise `\u{1b}`), and a backslash as `\\` so an escape in the text
/// cannot pass for one made here. Text without any of these is returned as it is.
pub fn escape(text: &str) -> Cow<'_, str> {
    escaped(text, true)
}

fn escaped(text: &str, backslashes: bool) -> Cow<'_, str> {
    if !text
        .chars()
        .any(|c| (backslashes && c == '\\') || unsafe_char(c))
    {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\\' if backslashes => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\0' => out.push_str("\\0"),
            c if unsafe_char(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// `text` as a record or a message keeps words that may be someone else's: every
/// [`unsafe_char`] escaped as [`escape`] does, and cut to `cap` characters with a note
/// of how many were left out, so the text can neither forge a line nor grow a record.
/// Backslashes stay as they are: a message that quotes a value escaped it already, and
/// is not escaped twice.
pub fn shown(text: &str, cap: usize) -> String {
    match text.char_indices().nth(cap) {
        None => escaped(text, false).into_owned(),
        Some((end, _)) => {
            let left = text[end..].chars().count();
            format!("{}… ({left} more characters)", escaped(&text[..end], false))
        }
    }
}

/// At most the first `QUOTED` characters of `value`, escaped and in quotes, with `…`
/// when there was more: how an error message shows a refused value.
pub fn quote(value: &str) -> String {
    let mut chars = value.char_indices();
    let cut = chars.nth(QUOTED).map(|(i, _)| i);
    match cut {
        Some(end) => format!("\"{}\"…", escape(&value[..end])),
        None => format!("\"{}\"", escape(value)),
    }
}

fn quote_char(c: char) -> String {
    let mut buf = [0u8; 4];
    format!("'{}'", escape(c.encode_utf8(&mut buf)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_id_the_node_makes_is_an_id() {
        for ok in [
            "neg-0123456789abcdef01234567",
            "agr-0123456789abcdef01234567",
            "prd-0123456789abcdef",
            "11330100MA2TRA0011",
            "urn:liutong:agreement:agr-1",
            "a.b_c:d-e",
            &"x".repeat(ID_MAX),
        ] {
            assert_eq!(Id::parse("id", ok).unwrap().as_str(), ok);
        }
        let made = crate::base::random::new_id("neg").unwrap();
        assert_eq!(Id::parse("id", &made).unwrap().as_str(), made);
    }

    #[test]
    fn ids_outside_the_grammar_are_refused_naming_the_field() {
        for bad in [
            "",
            ".",
            "..",
            "../../etc/passwd",
            "neg\0x",
            "neg\nalert: fake",
            "neg 1",
            "négociation",
            &"x".repeat(ID_MAX + 1),
        ] {
            let err = Id::parse("negotiation_id", bad).unwrap_err();
            assert_eq!(err.field, "negotiation_id", "{bad:?}");
            assert!(err.to_string().starts_with("negotiation_id: "), "{err}");
            assert!(!err.to_string().contains('\n'), "{err}");
            assert!(!err.to_string().contains('\0'), "{err}");
        }
    }

    #[test]
    fn a_refusal_quotes_only_a_short_escaped_prefix() {
        let huge = "a".repeat(1 << 20);
        let err = Id::parse("negotiation_id", &huge).unwrap_err().to_string();
        assert!(err.len() < 200, "{} bytes", err.len());
        let err = Text::parse("purpose", &"\u{1b}[31m".repeat(1000), PURPOSE_MAX)
            .unwrap_err()
            .to_string();
        assert!(err.len() < 300, "{} bytes", err.len());
        assert!(!err.contains('\u{1b}'), "{err}");
        assert!(err.contains("\\u{1b}"), "{err}");
    }

    #[test]
    fn offer_ids_are_a_product_id_and_a_version() {
        let offer = OfferId::parse("offer_id", "prd-ab/v12").unwrap();
        assert_eq!((offer.product_id(), offer.version()), ("prd-ab", 12));
        for bad in [
            "prd-ab",
            "prd-ab/v",
            "prd-ab/v+1",
            "../x/v1",
            "/v1",
            "prd/ab/v1",
        ] {
            assert_eq!(
                OfferId::parse("offer_id", bad).unwrap_err().field,
                "offer_id",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn text_is_bounded_and_holds_no_control_characters() {
        assert_eq!(
            purpose("purpose", " urbanPlanning ").unwrap(),
            "urbanPlanning"
        );
        assert_eq!(
            purpose("purpose", "城市规划 2026").unwrap(),
            "城市规划 2026"
        );
        for bad in [
            "",
            "   ",
            "a\nb",
            "a\rb",
            "a\0b",
            "a\u{1b}[31mb",
            "a\u{202e}b",
            "a\u{2028}b",
            "a\u{85}b",
        ] {
            assert_eq!(
                purpose("purpose", bad).unwrap_err().field,
                "purpose",
                "{bad:?}"
            );
        }
        assert!(purpose("purpose", &"p".repeat(PURPOSE_MAX)).is_ok());
        assert!(purpose("purpose", &"p".repeat(PURPOSE_MAX + 1)).is_err());
        assert!(reason("reason", &"r".repeat(REASON_MAX)).is_ok());
        assert!(reason("reason", &"r".repeat(70_000)).is_err());
        // A signed value is checked as it is: a newline at its end is not trimmed away.
        assert!(Text::parse("purpose", "urbanPlanning\n", PURPOSE_MAX).is_err());
    }

    #[test]
    fn nonces_have_one_length_and_alphabet() {
        assert!(Nonce::parse("nonce", &"0a".repeat(16)).is_ok());
        for bad in [
            String::new(),
            "0a".repeat(15),
            "0a".repeat(17),
            "0A".repeat(16),
            "zz".repeat(16),
            "0a".repeat(8 * 1024),
        ] {
            assert_eq!(Nonce::parse("nonce", &bad).unwrap_err().field, "nonce");
        }
    }

    #[test]
    fn times_outside_the_sane_range_are_refused() {
        for bad in [-1, 0, i64::MIN, i64::MAX, TIME_MIN - 1, TIME_MAX + 1] {
            assert_eq!(
                Time::parse("created_at", bad).unwrap_err().field,
                "created_at"
            );
        }
        let a = Time::parse("t", TIME_MIN).unwrap();
        let b = Time::parse("t", TIME_MAX).unwrap();
        assert_eq!(b.since(a), TIME_MAX - TIME_MIN);
        assert_eq!(a.since(b), TIME_MIN - TIME_MAX);
    }

    #[test]
    fn escaping_shows_control_characters_and_keeps_the_rest() {
        assert!(matches!(escape("plain 文本"), Cow::Borrowed(_)));
        assert_eq!(escape("a\nb"), "a\\nb");
        assert_eq!(escape("\u{1b}[31mred"), "\\u{1b}[31mred");
        assert_eq!(escape("x\0y\r\t"), "x\\0y\\r\\t");
        assert_eq!(escape("rtl\u{202e}"), "rtl\\u{202e}");
        assert_eq!(escape("zero\u{200b}width"), "zero\\u{200b}width");
        assert_eq!(escape("back\\nslash"), "back\\\\nslash");
        assert_eq!(quote(&"é".repeat(40)), format!("\"{}\"…", "é".repeat(32)));
    }

    #[test]
    fn shown_text_is_escaped_and_cut_with_a_count() {
        assert_eq!(shown("plain", 10), "plain");
        assert_eq!(shown("a\nb\u{202e}c", 10), "a\\nb\\u{202e}c");
        assert_eq!(shown("quoted \\n", 10), "quoted \\n");
        let long = "x".repeat(1000);
        let c = shown(&long, 256);
        assert!(c.starts_with(&"x".repeat(256)));
        assert!(c.ends_with("… (744 more characters)"), "{c}");
    }
}
