//! Recognising the built-in field types (`idcard`, `mobile`, `name`, `email`): by a
//! column's header and by its values.
//!
//! A column is of a type when its header is one of the type's usual names (in English
//! or Chinese, e.g. `mobile`, `contact_phone`, `手机号`), or — for every type but
//! `name`, which no value betrays — when any one of its values is recognised as that
//! type. Over-masking a column is the safe mistake; leaving one identifier in the clear
//! is not.

use liutong_policy::FieldType;

/// GB 11643 weights of the first 17 digits of a mainland ID number.
const ID_WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
/// GB 11643 check characters, by the weighted sum mod 11.
const ID_CHECK: &[u8; 11] = b"10X98765432";

/// The check character a mainland ID number's first 17 digits call for, or `None` if
/// they are not 17 ASCII digits.
pub fn idcard_check_character(first17: &str) -> Option<char> {
    let digits = first17.as_bytes();
    if digits.len() != 17 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let sum: u32 = digits
        .iter()
        .zip(ID_WEIGHTS)
        .map(|(d, w)| u32::from(d - b'0') * w)
        .sum();
    Some(ID_CHECK[(sum % 11) as usize] as char)
}

/// Why a value is not a valid mainland ID number.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IdcardError {
    #[error("an ID number has 18 characters, this one has {0}")]
    Length(usize),
    #[error("the first 17 characters of an ID number are digits")]
    NotDigits,
    #[error("the date of birth {0} is not a date")]
    Birth(String),
    #[error("the check character is {found}, but the first 17 digits call for {expected}")]
    Check { found: char, expected: char },
}

/// Checks a mainland ID number (GB 11643): 17 digits, of which 7 to 14 are a date of
/// birth, then the check character (`X` may be written `x`).
pub fn validate_idcard(value: &str) -> Result<(), IdcardError> {
    let n = value.chars().count();
    if n != 18 || value.len() != 18 {
        return Err(IdcardError::Length(n));
    }
    let (first17, check) = value.split_at(17);
    let expected = idcard_check_character(first17).ok_or(IdcardError::NotDigits)?;
    let birth = &first17[6..14];
    if !plausible_date(birth) {
        return Err(IdcardError::Birth(birth.to_owned()));
    }
    let found = check
        .chars()
        .next()
        .expect("18 ASCII characters")
        .to_ascii_uppercase();
    if found != expected {
        return Err(IdcardError::Check { found, expected });
    }
    Ok(())
}

/// `YYYYMMDD` with a year from 1800 to 2099, a month 01–12 and a day 01–31.
fn plausible_date(yyyymmdd: &str) -> bool {
    let num = |r: std::ops::Range<usize>| yyyymmdd.get(r).and_then(|s| s.parse::<u32>().ok());
    matches!(
        (num(0..4), num(4..6), num(6..8)),
        (Some(1800..=2099), Some(1..=12), Some(1..=31))
    ) && yyyymmdd.len() == 8
}

/// A mainland mobile number: 11 digits starting with 13 to 19, optionally written
/// with `+86`/`0086`/`86` in front and spaces or hyphens between groups.
pub fn is_mobile(value: &str) -> bool {
    let digits: String = value.chars().filter(|c| !matches!(c, ' ' | '-')).collect();
    let digits = digits
        .strip_prefix("+86")
        .or_else(|| digits.strip_prefix("0086"))
        .or_else(|| {
            (digits.len() == 13)
                .then(|| digits.strip_prefix("86"))
                .flatten()
        })
        .unwrap_or(&digits);
    let b = digits.as_bytes();
    b.len() == 11
        && b.iter().all(u8::is_ascii_digit)
        && b[0] == b'1'
        && (b'3'..=b'9').contains(&b[1])
}

/// An e-mail address: one `@`, a local part and a dotted domain, no spaces.
pub fn is_email(value: &str) -> bool {
    if value.len() > 254 || value.chars().any(char::is_whitespace) {
        return false;
    }
    let Some((local, domain)) = value.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.contains('@')
        && domain
            .split('.')
            .all(|label| !label.is_empty() && !label.starts_with('-'))
        && domain.contains('.')
}

/// Whether a value is recognised as `t` (never for `name`: only headers tell names).
pub fn value_is(t: FieldType, value: &str) -> bool {
    match t {
        FieldType::Idcard => validate_idcard(value).is_ok(),
        FieldType::Mobile => is_mobile(value),
        FieldType::Email => is_email(value),
        FieldType::Name => false,
    }
}

/// Usual column names of each type, written lower-case without separators. A header
/// matches when it is one of them, or when its last word is (`contact_phone`,
/// `owner_name`), or when it ends with a Chinese one (`联系人手机号`).
fn header_names(t: FieldType) -> &'static [&'static str] {
    match t {
        FieldType::Idcard => &[
            "idcard",
            "idcardno",
            "idcardnumber",
            "idnumber",
            "idno",
            "citizenid",
            "residentid",
            "sfzh",
            "身份证",
            "身份证号",
            "身份证号码",
            "公民身份号码",
            "证件号码",
        ],
        FieldType::Mobile => &[
            "mobile",
            "mobileno",
            "mobilephone",
            "mobilenumber",
            "phone",
            "phoneno",
            "phonenumber",
            "cellphone",
            "tel",
            "telephone",
            "sjh",
            "手机",
            "手机号",
            "手机号码",
            "联系电话",
            "电话",
        ],
        FieldType::Name => &[
            "name",
            "fullname",
            "realname",
            "personname",
            "xm",
            "姓名",
            "名字",
        ],
        FieldType::Email => &[
            "email",
            "emailaddress",
            "mail",
            "邮箱",
            "电子邮箱",
            "电子邮件",
        ],
    }
}

/// Whether a column header names a field of type `t`.
pub fn header_is(t: FieldType, header: &str) -> bool {
    let lower = header.trim().to_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    let joined = words.concat();
    let last = words.last().copied().unwrap_or("");
    header_names(t).iter().any(|name| {
        joined == *name || last == *name || (!name.is_ascii() && joined.ends_with(name))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idcard_check_character_follows_gb_11643() {
        // The standard's own example.
        assert_eq!(idcard_check_character("11010519491231002"), Some('X'));
        assert!(validate_idcard("11010519491231002X").is_ok());
        assert!(validate_idcard("11010519491231002x").is_ok());
        assert_eq!(
            validate_idcard("110105194912310021"),
            Err(IdcardError::Check {
                found: '1',
                expected: 'X'
            })
        );
        assert_eq!(
            validate_idcard("11010519491331002X"),
            Err(IdcardError::Birth("19491331".into()))
        );
        assert_eq!(
            validate_idcard("1101051949123100"),
            Err(IdcardError::Length(16))
        );
        assert_eq!(
            validate_idcard("1101051949123100AX"),
            Err(IdcardError::NotDigits)
        );
        assert!(validate_idcard("11010519491231002X中").is_err());
        // 330106 (Xihu District, Hangzhou), born 1990-05-17.
        let first17 = "33010619900517123";
        let id = format!("{first17}{}", idcard_check_character(first17).unwrap());
        assert!(validate_idcard(&id).is_ok(), "{id}");
    }

    #[test]
    fn mobiles_and_emails() {
        for m in [
            "13812345678",
            "+86 138 1234 5678",
            "0086-13812345678",
            "8613812345678",
        ] {
            assert!(is_mobile(m), "{m}");
        }
        for m in [
            "12812345678",
            "1381234567",
            "138123456789",
            "1381234567a",
            "",
        ] {
            assert!(!is_mobile(m), "{m}");
        }
        for e in ["zhang.san@example.com", "a@b.cn"] {
            assert!(is_email(e), "{e}");
        }
        for e in ["zhang", "a@b", "a@@b.cn", "@b.cn", "a b@c.cn", "a@.cn"] {
            assert!(!is_email(e), "{e}");
        }
        assert!(
            !value_is(FieldType::Name, "张三"),
            "names come from headers"
        );
    }

    #[test]
    fn headers_in_english_and_chinese() {
        assert!(header_is(FieldType::Mobile, "Mobile"));
        assert!(header_is(FieldType::Mobile, "contact_phone"));
        assert!(header_is(FieldType::Mobile, "联系人手机号"));
        assert!(header_is(FieldType::Idcard, "id_card_no"));
        assert!(header_is(FieldType::Idcard, "身份证号码"));
        assert!(header_is(FieldType::Name, "owner_name"));
        assert!(header_is(FieldType::Name, "姓名"));
        assert!(header_is(FieldType::Email, "E-mail"));
        assert!(!header_is(FieldType::Name, "filename"));
        assert!(!header_is(FieldType::Mobile, "vehicles"));
        assert!(!header_is(FieldType::Email, "district"));
    }
}
