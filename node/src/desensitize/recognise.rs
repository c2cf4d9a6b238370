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
    }) || (t == FieldType::Name && names_a_person(&words, &joined, header))
}

/// Words of a header that say its values are people (`emergency_contact`,
/// `name_of_guardian`), wherever they stand in it; `filename` is no such word.
const PERSON_WORDS: &[&str] = &["name", "contact", "contacts", "guardian"];
/// The same in Chinese, found anywhere in a header (`紧急联系人`).
const PERSON_PARTS: &[&str] = &["姓名", "联系人", "监护人", "家属", "负责人", "收件人"];

/// A header naming people, unless it names another type (`contact_phone` is a mobile
/// number, `contact_email` an address).
fn names_a_person(words: &[&str], joined: &str, header: &str) -> bool {
    (words.iter().any(|w| PERSON_WORDS.contains(w))
        || PERSON_PARTS.iter().any(|p| joined.contains(p)))
        && ![FieldType::Idcard, FieldType::Mobile, FieldType::Email]
            .into_iter()
            .any(|t| header_is(t, header))
}

/// Words of a header naming a quasi-identifier: an attribute that does not name a
/// person but, combined with others, can single one out (where, when born, gender,
/// age, postcode, origin).
const QUASI_WORDS: &[&str] = &[
    "district",
    "region",
    "county",
    "city",
    "province",
    "area",
    "address",
    "street",
    "residence",
    "birth",
    "birthday",
    "birthdate",
    "birthyear",
    "dob",
    "born",
    "gender",
    "sex",
    "age",
    "postcode",
    "postal",
    "zip",
    "zipcode",
    "nationality",
    "ethnicity",
    "hukou",
];
/// The same in Chinese, found anywhere in a header (`出生日期`, `所在区县`).
const QUASI_PARTS: &[&str] = &[
    "地区",
    "区域",
    "区县",
    "行政区",
    "辖区",
    "城市",
    "省份",
    "住址",
    "地址",
    "户籍",
    "籍贯",
    "出生",
    "生日",
    "性别",
    "年龄",
    "邮编",
    "邮政编码",
    "民族",
    "所在地",
];
/// Whole Chinese headers naming a quasi-identifier that are too short to look for
/// inside longer ones (`区` is also part of `社区活动`).
const QUASI_WHOLE: &[&str] = &["区", "县", "市", "省"];

/// Whether a column header names a quasi-identifier (`district`, `birth_date`,
/// `gender`, `age`, `postcode`, `出生日期`).
pub fn header_is_quasi_identifier(header: &str) -> bool {
    let lower = header.trim().to_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    let joined = words.concat();
    words.iter().any(|w| QUASI_WORDS.contains(w))
        || [
            "dateofbirth",
            "birthdate",
            "birthday",
            "zipcode",
            "postcode",
        ]
        .iter()
        .any(|n| joined.contains(n))
        || QUASI_PARTS.iter().any(|p| joined.contains(p))
        || QUASI_WHOLE.contains(&joined.as_str())
}

/// Last words of a header naming an identifier of a record (`person_id`, `uid`,
/// `patient_no`).
const IDENTIFIER_WORDS: &[&str] = &["id", "uid", "uuid", "guid", "no"];
/// Endings of a Chinese header naming one (`人员编号`, `会员卡号`).
const IDENTIFIER_ENDINGS: &[&str] = &[
    "编号",
    "卡号",
    "账号",
    "帐号",
    "学号",
    "工号",
    "病案号",
    "病历号",
    "档案号",
    "会员号",
    "用户名",
];

/// Whether a column header names a record identifier (`id`, `person_id`, `personId`,
/// `UID`, `编号`).
pub fn header_is_identifier(header: &str) -> bool {
    let trimmed = header.trim();
    let lower = trimmed.to_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    let last = words.last().copied().unwrap_or("");
    // `personId`, `PersonID`: an identifier suffix in camel case (`VALID` is none).
    let camel = (trimmed.ends_with("Id") || trimmed.ends_with("ID"))
        && trimmed.len() > 2
        && trimmed[..trimmed.len() - 2]
            .chars()
            .last()
            .is_some_and(|c| c.is_lowercase() || c.is_ascii_digit());
    IDENTIFIER_WORDS.contains(&last)
        || camel
        || IDENTIFIER_ENDINGS
            .iter()
            .any(|e| words.concat().ends_with(e))
}

/// Whether `value` reads as a measured amount rather than a code: a decimal number with
/// a fraction (`52341.50`), or a whole number of at most seven digits without a leading
/// zero (`52341`). Amounts that differ from record to record are the data a delivery
/// is for, so being all different does not make them identifiers; longer numbers and
/// those with a leading zero are codes.
pub fn value_is_amount(value: &str) -> bool {
    let v = value.trim();
    let v = v.strip_prefix('-').unwrap_or(v);
    let (whole, fraction) = match v.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (v, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match fraction {
        Some(f) => digits(whole) && digits(f),
        None => digits(whole) && whole.len() <= 7 && (whole == "0" || !whole.starts_with('0')),
    }
}

/// Whether a value is one token that could identify a record (`P000123`, `1001`,
/// `8341.50`, `2024-05-17T08:00:01`): at most 64 characters and no white space. A
/// column of such values that all differ links its rows wherever they are released,
/// whatever the values mean; free text is not taken as one.
pub fn value_is_token(value: &str) -> bool {
    let v = value.trim();
    !v.is_empty() && v.chars().count() <= 64 && !v.chars().any(char::is_whitespace)
}

/// A piece of personal data found inside a longer text: its byte range and type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    pub start: usize,
    pub end: usize,
    pub kind: FieldType,
}

/// Words after which a text usually gives a person's name (`联系人：王芳`,
/// `contact Zhang Wei`), longest first so `联系人` is taken before `联系`.
const NAME_LABELS: &[&str] = &[
    "紧急联系人",
    "联系人",
    "监护人",
    "负责人",
    "收件人",
    "姓名",
    "联系",
    "家属",
    "户主",
    "name",
    "contact",
];

/// What follows a name label but is no name (`联系电话`, `联系方式`).
const NOT_NAMES: &[&str] = &[
    "电话", "手机", "方式", "地址", "邮箱", "号码", "先生", "女士", "人", "我", "的",
];

/// The personal data inside a free text: ID numbers with a valid check character,
/// mobile numbers (also written in groups, or after +86), e-mail addresses, and names
/// after a name label. Ranges do not overlap and are in order.
pub fn find_in_text(text: &str) -> Vec<Found> {
    let mut found = Vec::new();
    find_emails(text, &mut found);
    find_numbers(text, &mut found);
    find_labelled_names(text, &mut found);
    found.sort_by_key(|f| (f.start, std::cmp::Reverse(f.end)));
    let mut out: Vec<Found> = Vec::with_capacity(found.len());
    for f in found {
        if out.last().is_none_or(|last| f.start >= last.end) {
            out.push(f);
        }
    }
    out
}

fn find_emails(text: &str, found: &mut Vec<Found>) {
    let b = text.as_bytes();
    let local = |c: u8| c.is_ascii_alphanumeric() || b"._%+-".contains(&c);
    let domain = |c: u8| c.is_ascii_alphanumeric() || b".-".contains(&c);
    for (at, _) in text.match_indices('@') {
        let mut start = at;
        while start > 0 && local(b[start - 1]) {
            start -= 1;
        }
        let mut end = at + 1;
        while end < b.len() && domain(b[end]) {
            end += 1;
        }
        while end > at + 1 && matches!(b[end - 1], b'.' | b'-') {
            end -= 1;
        }
        if start < at && is_email(&text[start..end]) {
            found.push(Found {
                start,
                end,
                kind: FieldType::Email,
            });
        }
    }
}

/// Runs of digits, possibly in groups joined by one space or hyphen (`138 1234 5678`),
/// possibly ending in an ID number's `X`.
fn find_numbers(text: &str, found: &mut Vec<Found>) {
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if !b[i].is_ascii_digit() || (i > 0 && b[i - 1].is_ascii_digit()) {
            i += 1;
            continue;
        }
        // Groups of digits: (start, end) byte ranges.
        let mut groups = Vec::new();
        let mut j = i;
        loop {
            let g = j;
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
            groups.push((g, j));
            if j + 1 < b.len() && matches!(b[j], b' ' | b'-') && b[j + 1].is_ascii_digit() {
                j += 1;
            } else {
                break;
            }
        }
        // An ID number's check character.
        let x_after = |end: usize| {
            end < b.len()
                && matches!(b[end], b'X' | b'x')
                && !b.get(end + 1).is_some_and(u8::is_ascii_alphanumeric)
        };
        let (first, last) = (groups[0].0, groups[groups.len() - 1].1);
        let plus = first > 0 && b[first - 1] == b'+';
        let mut whole_end = last;
        if x_after(last) {
            whole_end += 1;
        }
        if let Some(kind) = number_kind(&text[first..whole_end]) {
            let start = if plus && kind == FieldType::Mobile {
                first - 1
            } else {
                first
            };
            found.push(Found {
                start,
                end: whole_end,
                kind,
            });
        } else if groups.len() > 1 {
            // Several numbers side by side: each on its own.
            for &(g0, g1) in &groups {
                let end = if x_after(g1) { g1 + 1 } else { g1 };
                if let Some(kind) = number_kind(&text[g0..end]) {
                    found.push(Found {
                        start: g0,
                        end,
                        kind,
                    });
                }
            }
        }
        i = j.max(i + 1);
    }
}

/// An ID number or a mobile number, written with or without separators.
fn number_kind(written: &str) -> Option<FieldType> {
    let compact: String = written
        .chars()
        .filter(|c| !matches!(c, ' ' | '-'))
        .collect();
    if validate_idcard(&compact).is_ok() {
        return Some(FieldType::Idcard);
    }
    let mobile = match compact.len() {
        11 => is_mobile(&compact),
        13 => compact.starts_with("86") && is_mobile(&compact[2..]),
        _ => false,
    };
    mobile.then_some(FieldType::Mobile)
}

fn is_cjk(c: char) -> bool {
    ('\u{4e00}'..='\u{9fff}').contains(&c)
}

fn find_labelled_names(text: &str, found: &mut Vec<Found>) {
    let lower = text.to_ascii_lowercase();
    for label in NAME_LABELS {
        for (at, _) in lower.match_indices(label) {
            let after = at + label.len();
            if label.is_ascii() {
                let before = text[..at].chars().next_back();
                let next = text[after..].chars().next();
                if before.is_some_and(|c| c.is_ascii_alphanumeric())
                    || next.is_some_and(|c| c.is_ascii_alphanumeric())
                {
                    continue;
                }
            }
            if let Some((start, end)) = name_after(text, after) {
                found.push(Found {
                    start,
                    end,
                    kind: FieldType::Name,
                });
            }
        }
    }
}

/// The name right after a label: past separators (`：`, `:`, `是`, spaces), two or
/// three Chinese characters, or up to three capitalised Latin words.
fn name_after(text: &str, from: usize) -> Option<(usize, usize)> {
    let rest = &text[from..];
    let skipped = rest
        .char_indices()
        .find(|(_, c)| !matches!(c, ':' | '：' | ' ' | '=' | '是' | '为' | '\u{3000}'))
        .map(|(i, _)| i)?;
    let start = from + skipped;
    let tail = &text[start..];
    if NOT_NAMES.iter().any(|w| tail.starts_with(w)) {
        return None;
    }
    let first = tail.chars().next()?;
    if is_cjk(first) {
        let mut end = start;
        for (n, (i, c)) in tail.char_indices().enumerate() {
            if n >= 3
                || !is_cjk(c)
                || (n >= 2 && NOT_NAMES.iter().any(|w| tail[i..].starts_with(w)))
            {
                break;
            }
            end = start + i + c.len_utf8();
        }
        return (end - start >= 2 * '王'.len_utf8()).then_some((start, end));
    }
    if first.is_ascii_uppercase() {
        let mut end = start;
        let mut words = 0;
        let mut pos = start;
        while words < 3 {
            let w = &text[pos..];
            if !w.starts_with(|c: char| c.is_ascii_uppercase()) {
                break;
            }
            let len = w
                .find(|c: char| !c.is_ascii_alphabetic())
                .unwrap_or(w.len());
            end = pos + len;
            words += 1;
            if text[end..].starts_with(' ') {
                pos = end + 1;
            } else {
                break;
            }
        }
        return Some((start, end));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_told_from_codes() {
        for amount in ["52341", "52341.50", "-12.5", "0", "0.75", "1234567"] {
            assert!(value_is_amount(amount), "{amount}");
        }
        for code in [
            "12345678",
            "007",
            "P00012",
            "3301061990",
            "1.2.3",
            "",
            "-",
            "1e5",
        ] {
            assert!(!value_is_amount(code), "{code}");
        }
    }

    #[test]
    fn quasi_identifier_and_identifier_headers_and_tokens() {
        for h in [
            "district",
            "birth_date",
            "dateOfBirth",
            "Gender",
            "age",
            "postcode",
            "出生日期",
            "所在区县",
            "性别",
            "区",
        ] {
            assert!(header_is_quasi_identifier(h), "{h}");
        }
        for h in ["income", "page", "usage", "社区活动", "note", "visits"] {
            assert!(!header_is_quasi_identifier(h), "{h}");
        }
        for h in [
            "id",
            "person_id",
            "personId",
            "PersonID",
            "UID",
            "patient_no",
            "人员编号",
        ] {
            assert!(header_is_identifier(h), "{h}");
        }
        for h in ["idea", "paid", "valid", "income", "district", "VALID"] {
            assert!(!header_is_identifier(h), "{h}");
        }
        for v in [
            "P000123",
            "1001",
            "a7f3-09",
            "8341.50",
            "2024-05-17T08:00:01",
        ] {
            assert!(value_is_token(v), "{v}");
        }
        for v in ["", "call me", "回访 联系人", &"x".repeat(65)] {
            assert!(!value_is_token(v), "{v}");
        }
    }

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

    fn found_in(text: &str) -> Vec<(&str, FieldType)> {
        find_in_text(text)
            .into_iter()
            .map(|f| (&text[f.start..f.end], f.kind))
            .collect()
    }

    #[test]
    fn personal_data_is_found_inside_free_text() {
        use FieldType::*;
        assert_eq!(
            found_in("回访：联系人王芳，电话13812345678，邮箱wf@example.cn。"),
            [
                ("王芳", Name),
                ("13812345678", Mobile),
                ("wf@example.cn", Email)
            ]
        );
        assert_eq!(
            found_in("call contact Zhang Wei at +86 139-1234-5678 or 138 0000 1111 today"),
            [
                ("Zhang Wei", Name),
                ("+86 139-1234-5678", Mobile),
                ("138 0000 1111", Mobile)
            ]
        );
        assert_eq!(
            found_in("身份证11010519491231002X已核验;姓名：李娜"),
            [("11010519491231002X", Idcard), ("李娜", Name)]
        );
        assert_eq!(
            found_in("13812345678 13912345678"),
            [("13812345678", Mobile), ("13912345678", Mobile)]
        );
    }

    #[test]
    fn numbers_and_words_that_are_not_personal_data_stay() {
        // A wrong check character, a number too long to be a mobile, an order number,
        // a label with no name after it.
        assert_eq!(found_in("110105194912310021 138123456789 NO.2024001"), []);
        assert_eq!(
            found_in("联系电话见附件; contact details below; filename"),
            []
        );
    }

    #[test]
    fn headers_naming_people_anywhere_in_them() {
        for h in [
            "emergency_contact",
            "name_of_guardian",
            "紧急联系人",
            "contact",
            "家属姓名",
        ] {
            assert!(header_is(FieldType::Name, h), "{h}");
        }
        for h in ["contact_phone", "contact_email", "filename", "district"] {
            assert!(!header_is(FieldType::Name, h), "{h}");
        }
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
