//! One mask method applied to one value.
//!
//! Every method hides at least one character of a non-empty value: a `keep` whose
//! `first + last` would reveal the whole value keeps fewer characters (a two-character
//! name keeping its first one becomes `张*`; a one-character value becomes `*`). A value
//! that a generalisation cannot read (a "date" that is not one) is masked entirely and
//! counted, never passed through. Empty values stay empty: they reveal nothing.

use liutong_policy::{Generalization, MaskMethod};
use ring::hmac;

use super::recognise;

/// The character that replaces hidden ones.
pub const MASK_CHAR: char = '*';

/// What became of one value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Masked {
    /// The new value.
    Value(String),
    /// The field is removed.
    Dropped,
    /// A generalisation could not read the value; it was masked entirely.
    Unreadable(String),
}

/// Applies `method` to `value`. `key` is the agreement's keyed-hash key.
pub fn apply(method: &MaskMethod, value: &str, key: &hmac::Key) -> Masked {
    if let MaskMethod::Drop = method {
        return Masked::Dropped;
    }
    if value.is_empty() {
        return Masked::Value(String::new());
    }
    match method {
        MaskMethod::Keep { first, last } => Masked::Value(keep(value, *first, *last)),
        MaskMethod::MaskAll => Masked::Value(mask_all(value)),
        MaskMethod::Hash => Masked::Value(keyed_hash(key, value)),
        MaskMethod::Generalize { to } => match generalize(*to, value) {
            Some(v) => Masked::Value(v),
            None => Masked::Unreadable(mask_all(value)),
        },
        MaskMethod::Drop => Masked::Dropped,
    }
}

/// Keeps the first `first` and last `last` characters and masks the rest, but always
/// masks at least one character.
pub fn keep(value: &str, first: u32, last: u32) -> String {
    let chars: Vec<char> = value.chars().collect();
    let n = chars.len();
    let visible = n.saturating_sub(1);
    let first = (first as usize).min(visible);
    let last = (last as usize).min(visible - first);
    let mut out = String::with_capacity(value.len());
    out.extend(&chars[..first]);
    out.extend(std::iter::repeat_n(MASK_CHAR, n - first - last));
    out.extend(&chars[n - last..]);
    out
}

/// Every character masked (the length stays visible).
pub fn mask_all(value: &str) -> String {
    std::iter::repeat_n(MASK_CHAR, value.chars().count()).collect()
}

/// HMAC-SHA256 of the value under the agreement's key, hex.
pub fn keyed_hash(key: &hmac::Key, value: &str) -> String {
    hex::encode(hmac::sign(key, value.as_bytes()).as_ref())
}

/// A date to its year, an administrative code (or an ID number's region) to its
/// prefecture; `None` when the value is not of that kind.
pub fn generalize(to: Generalization, value: &str) -> Option<String> {
    match to {
        Generalization::Year => year_of(value.trim()),
        Generalization::Prefecture => prefecture_of(value.trim()),
    }
}

/// The year of `2024-05-17`, `2024/5/17`, `2024.05.17`, `20240517`, `2024年5月17日`,
/// `2024-05`, a date-time starting with a date, or a bare `2024`.
fn year_of(v: &str) -> Option<String> {
    let digits_prefix = v.bytes().take_while(u8::is_ascii_digit).count();
    let year_ok = |y: &str| y.parse::<u32>().is_ok_and(|y| (1000..=2999).contains(&y));
    let year = &v[..digits_prefix.min(v.len())];
    if digits_prefix == 4 && year_ok(year) {
        let rest = &v[4..];
        if rest.is_empty() {
            return Some(year.to_owned());
        }
        let sep = rest.chars().next()?;
        if !matches!(sep, '-' | '/' | '.' | '年') {
            return None;
        }
        let month: String = rest[sep.len_utf8()..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        return month
            .parse::<u32>()
            .is_ok_and(|m| (1..=12).contains(&m))
            .then(|| year.to_owned());
    }
    if digits_prefix == 8 && (v.len() == 8 || v.as_bytes()[8] == b'T') {
        let month = v[4..6].parse::<u32>().ok()?;
        let day = v[6..8].parse::<u32>().ok()?;
        if year_ok(&v[..4]) && (1..=12).contains(&month) && (1..=31).contains(&day) {
            return Some(v[..4].to_owned());
        }
    }
    None
}

/// `330106` → `330100`; an ID number → the prefecture of its region.
fn prefecture_of(v: &str) -> Option<String> {
    let code = if v.len() == 6 {
        v
    } else if recognise::validate_idcard(v).is_ok() {
        &v[..6]
    } else {
        return None;
    };
    if !code.bytes().all(|b| b.is_ascii_digit()) || code.starts_with("00") {
        return None;
    }
    Some(format!("{}00", &code[..4]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> hmac::Key {
        hmac::Key::new(hmac::HMAC_SHA256, b"test key")
    }

    #[test]
    fn keep_masks_the_middle_and_never_everything_visible() {
        assert_eq!(keep("13812345678", 3, 4), "138****5678");
        assert_eq!(keep("11010519491231002X", 6, 4), "110105********002X");
        assert_eq!(keep("11010519491231002X", 1, 2), "1***************2X");
        assert_eq!(keep("张三", 1, 0), "张*");
        assert_eq!(keep("欧阳修文", 1, 0), "欧***");
        assert_eq!(keep("张", 1, 0), "*");
        assert_eq!(keep("ab", 3, 4), "a*", "first + last covering everything");
        assert_eq!(keep("abc", 0, 9), "*bc");
        assert_eq!(mask_all("李四"), "**");
    }

    #[test]
    fn methods_on_values() {
        let k = key();
        assert_eq!(apply(&MaskMethod::Drop, "x", &k), Masked::Dropped);
        assert_eq!(apply(&MaskMethod::Drop, "", &k), Masked::Dropped);
        assert_eq!(
            apply(&MaskMethod::MaskAll, "", &k),
            Masked::Value(String::new())
        );
        let Masked::Value(h) = apply(&MaskMethod::Hash, "a@b.cn", &k) else {
            panic!("a value");
        };
        assert_eq!(h.len(), 64);
        assert_eq!(h, keyed_hash(&k, "a@b.cn"), "stable under one key");
        let other = hmac::Key::new(hmac::HMAC_SHA256, b"another agreement");
        assert_ne!(
            h,
            keyed_hash(&other, "a@b.cn"),
            "another key, another pseudonym"
        );
        let year = MaskMethod::Generalize {
            to: Generalization::Year,
        };
        assert_eq!(
            apply(&year, "not a date", &k),
            Masked::Unreadable("**********".into())
        );
    }

    #[test]
    fn generalisation() {
        use Generalization::*;
        for (v, y) in [
            ("1990-05-17", "1990"),
            ("1990/5/17", "1990"),
            ("1990.05.17", "1990"),
            ("19900517", "1990"),
            ("1990年5月17日", "1990"),
            ("2026-01-31T08:00:00+08:00", "2026"),
            ("1990-05", "1990"),
            ("1990", "1990"),
        ] {
            assert_eq!(generalize(Year, v).as_deref(), Some(y), "{v}");
        }
        for v in ["199", "19901317", "1990-13-01", "May 1990", "12345"] {
            assert_eq!(generalize(Year, v), None, "{v}");
        }
        assert_eq!(generalize(Prefecture, "330106").as_deref(), Some("330100"));
        assert_eq!(
            generalize(Prefecture, "11010519491231002X").as_deref(),
            Some("110100")
        );
        for v in ["33010", "3301066", "abcdef", "000000", "110105194912310021"] {
            assert_eq!(generalize(Prefecture, v), None, "{v}");
        }
    }
}
