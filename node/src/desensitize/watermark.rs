//! Watermark (数据水印): each tabular delivery carries marks keyed to its agreement, so
//! a copy that turns up elsewhere names the agreement it came from.
//!
//! What carries a mark: a cell of a *measure* field whose value is a plain decimal
//! number (`-?digits[.digits]`, no leading zero, no exponent) with at least
//! [`MIN_SIGNIFICANT`] significant digits, unless it is a whole number whose tens
//! digit is 0 (rounded figures such as `241000` look like that, and a changed last
//! digit would make one look precise). A measure field is a CSV column or a JSON
//! Lines record's top-level member whose every non-empty value is such a number (or a
//! shorter one), whose header names no identifier, code, phone number, date or time
//! ([`IDENTIFIER_WORDS`], [`IDENTIFIER_PARTS`], and every header the recogniser knows),
//! and none of whose values the recogniser takes for an ID number, mobile number or
//! e-mail address. A cell that reads as a date (`yyyymmdd`) is left alone too.
//!
//! The mark: the parity of the cell's last digit is set to one bit of
//! HMAC-SHA256(agreement key, the value without its last digit). A cell whose parity
//! already matches is unchanged; otherwise its last digit moves by one (0↔1, 2↔3, …,
//! 8↔9). So a marked value differs from the original by at most one unit in its last
//! digit — with five significant digits or more, less than 0.01 % of the value — and
//! it keeps its number of digits, so it stays markable and readable.
//!
//! Robustness: each mark depends on the cell's own value only, not on its row, its
//! position or its column's name, so reordering rows, dropping rows, dropping or
//! renaming columns, or mixing in other data leaves the remaining marks readable.
//!
//! Scoring a file against an agreement ([`score_csv`], [`score_jsonl`]): every distinct
//! markable value in the file's measure fields is a trial, a match when its last
//! digit's parity is the agreement's bit. A file that did not come from the agreement
//! matches each trial with probability ½ independently (the key is secret and the
//! HMAC's bits are independent of the values); a marked copy matches every marked cell.
//! The statistic is z = (2·matches − cells)/√cells; a file is traced to an agreement
//! when z ≥ [`TRACE_Z`]. By Hoeffding's inequality, P(z ≥ t) ≤ exp(−t²/2) for a file
//! not from that agreement: at t = 6 that is below 1.6 × 10⁻⁸ per agreement compared.
//! A full marked copy reaches z = √cells, so a copy needs at least 36 marked values
//! left to be traced.

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Read, Write};

use liutong_policy::FieldType;
use ring::hmac;
use serde::{Deserialize, Serialize};

use super::DesensitizeError;
use super::plan;
use super::recognise;

/// Fewest significant digits a value needs to carry a mark.
pub const MIN_SIGNIFICANT: usize = 5;
/// Most digits a markable value has (longer ones are identifiers, not measures).
const MAX_DIGITS: usize = 17;
/// The score from which a file is traced to an agreement (see the module comment for
/// the false-positive rate).
pub const TRACE_Z: f64 = 6.0;
/// Domain separation of the marks' bits.
const LABEL: &[u8] = b"liutong/watermark/v1\0";

/// Header words that name identifiers, codes, contact numbers, dates and times: a
/// column named with one of them is never marked.
pub const IDENTIFIER_WORDS: &[&str] = &[
    "id",
    "ids",
    "no",
    "num",
    "number",
    "code",
    "codes",
    "key",
    "uuid",
    "serial",
    "seq",
    "account",
    "card",
    "phone",
    "mobile",
    "tel",
    "telephone",
    "fax",
    "zip",
    "postcode",
    "postal",
    "date",
    "time",
    "timestamp",
    "ts",
    "year",
    "month",
    "day",
    "hour",
    "minute",
    "birth",
    "birthday",
    "dob",
    "born",
    "district",
    "region",
    "area",
    "county",
    "city",
    "province",
    "version",
];
/// The same in Chinese, found anywhere in a header.
pub const IDENTIFIER_PARTS: &[&str] = &[
    "编号",
    "代码",
    "编码",
    "号码",
    "证件",
    "身份证",
    "电话",
    "手机",
    "邮编",
    "账号",
    "卡号",
    "日期",
    "时间",
    "年份",
    "月份",
    "出生",
    "区划",
    "序号",
];

/// What the manifest says about a delivery's watermark.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatermarkSummary {
    /// Whether any cell carries a mark.
    pub embedded: bool,
    /// How many cells carry a mark (the value of each differs from the product's by at
    /// most one unit in its last digit).
    pub cells: u64,
    /// The fields whose cells carry marks.
    pub fields: Vec<String>,
}

/// Which fields of a product carry marks, from one pass over its data.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MarkPlan {
    /// Measure fields with at least one markable value, in the order first seen.
    pub fields: Vec<String>,
    /// How many cells would carry a mark.
    pub cells: u64,
}

impl MarkPlan {
    fn marks(&self, field: &str) -> bool {
        self.fields.iter().any(|f| f == field)
    }
}

/// What one field showed in the planning pass.
#[derive(Default)]
struct FieldSeen {
    /// A non-empty value that is no plain number, or one the recogniser knows.
    excluded: bool,
    markable: u64,
}

/// Collects the fields' figures.
#[derive(Default)]
struct Planner {
    order: Vec<String>,
    seen: HashMap<String, FieldSeen>,
}

impl Planner {
    fn note(&mut self, field: &str, value: &str) {
        let seen = match self.seen.get_mut(field) {
            Some(s) => s,
            None => {
                self.order.push(field.to_owned());
                self.seen.insert(
                    field.to_owned(),
                    FieldSeen {
                        excluded: names_an_identifier(field),
                        markable: 0,
                    },
                );
                self.seen.get_mut(field).expect("just inserted")
            }
        };
        if seen.excluded || value.is_empty() {
            return;
        }
        if plain_number(value).is_none()
            || [FieldType::Idcard, FieldType::Mobile, FieldType::Email]
                .into_iter()
                .any(|t| recognise::value_is(t, value))
        {
            seen.excluded = true;
        } else if markable(value) {
            seen.markable += 1;
        }
    }

    fn finish(self) -> MarkPlan {
        let mut plan = MarkPlan::default();
        for field in self.order {
            let seen = &self.seen[&field];
            if !seen.excluded && seen.markable > 0 {
                plan.cells += seen.markable;
                plan.fields.push(field);
            }
        }
        plan
    }
}

/// Whether a header names an identifier, a code, a contact number, a date or a time,
/// or a type the recogniser knows.
pub fn names_an_identifier(header: &str) -> bool {
    let lower = header.trim().to_lowercase();
    lower
        .split(|c: char| !c.is_alphanumeric())
        .any(|w| IDENTIFIER_WORDS.contains(&w))
        || IDENTIFIER_PARTS.iter().any(|p| lower.contains(p))
        || FieldType::ALL
            .iter()
            .any(|t| recognise::header_is(*t, header))
}

/// The digits of a plain decimal number (`-?digits[.digits]`, no leading zero but a
/// lone one before the point), or `None`.
fn plain_number(value: &str) -> Option<String> {
    let unsigned = value.strip_prefix('-').unwrap_or(value);
    let (int, frac) = match unsigned.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (unsigned, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(int) || frac.is_some_and(|f| !digits(f)) {
        return None;
    }
    if int.len() > 1 && int.starts_with('0') {
        return None;
    }
    Some(format!("{int}{}", frac.unwrap_or("")))
}

/// Whether a value can carry a mark: a plain decimal number with enough significant
/// digits, not too long, not a whole number whose tens digit is 0 (a rounded figure
/// such as `241000`, which a changed last digit would make look precise), and not a
/// date written `yyyymmdd`. Decided on everything but the last digit, so a marked
/// value is markable exactly when its original was.
pub fn markable(value: &str) -> bool {
    let Some(digits) = plain_number(value) else {
        return false;
    };
    let prefix = &digits[..digits.len() - 1];
    let significant = prefix.trim_start_matches('0').len() + 1;
    let rounded = !value.contains('.') && prefix.ends_with('0');
    significant >= MIN_SIGNIFICANT
        && digits.len() <= MAX_DIGITS
        && !rounded
        && !looks_like_a_date(value)
}

/// A `yyyymmdd` date, by all but its last digit.
fn looks_like_a_date(value: &str) -> bool {
    value.len() == 8
        && value.bytes().all(|b| b.is_ascii_digit())
        && matches!(value[..4].parse::<u32>(), Ok(1900..=2100))
        && matches!(value[4..6].parse::<u32>(), Ok(1..=12))
        && matches!(value.as_bytes()[6], b'0'..=b'3')
}

/// The bit an agreement's key gives a value (by everything but its last digit).
fn bit(key: &hmac::Key, value: &str) -> u8 {
    let prefix = &value[..value.len() - 1];
    let mut ctx = hmac::Context::with_key(key);
    ctx.update(LABEL);
    ctx.update(prefix.as_bytes());
    ctx.sign().as_ref()[0] & 1
}

/// The marked form of a markable value.
pub fn mark(key: &hmac::Key, value: &str) -> String {
    let last = value.as_bytes()[value.len() - 1] - b'0';
    let want = bit(key, value);
    let digit = if last % 2 == want { last } else { last ^ 1 };
    format!("{}{}", &value[..value.len() - 1], digit)
}

/// Whether a markable value carries an agreement's mark.
fn carries(key: &hmac::Key, value: &str) -> bool {
    let last = value.as_bytes()[value.len() - 1] - b'0';
    last % 2 == bit(key, value)
}

/// The planning pass over CSV data (header row first).
pub fn plan_csv(data: impl Read) -> Result<MarkPlan, DesensitizeError> {
    let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(data);
    let header = csv_header(&mut reader)?;
    let mut planner = Planner::default();
    for record in reader.records() {
        let record = record.map_err(|e| DesensitizeError::Read(e.to_string()))?;
        for (i, value) in record.iter().enumerate() {
            planner.note(&plan::csv_field_name(&header, i), value);
        }
    }
    Ok(planner.finish())
}

/// The planning pass over JSON Lines data (top-level members; lines that are not
/// objects are not read).
pub fn plan_jsonl(data: impl Read) -> Result<MarkPlan, DesensitizeError> {
    let mut planner = Planner::default();
    for_each_line(data, |_, object| {
        if let Some(object) = object {
            for (k, v) in object {
                match json_number_text(v) {
                    Some(text) => planner.note(k, &text),
                    None if v.is_null() => {}
                    None => planner.note(k, "not a number"),
                }
            }
        }
        Ok(())
    })?;
    Ok(planner.finish())
}

fn csv_header<R: Read>(reader: &mut csv::Reader<R>) -> Result<Vec<String>, DesensitizeError> {
    Ok(reader
        .headers()
        .map_err(|e| DesensitizeError::Read(e.to_string()))?
        .iter()
        .map(str::to_owned)
        .collect())
}

/// What a marking pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Marked {
    /// Cells that carry a mark.
    pub cells: u64,
    /// Records written.
    pub records: u64,
}

/// Marks CSV data into `out` by `plan`.
pub fn mark_csv(
    plan: &MarkPlan,
    key: &hmac::Key,
    data: impl Read,
    out: impl Write,
) -> Result<Marked, DesensitizeError> {
    let write_err = |e: csv::Error| DesensitizeError::Write(e.to_string());
    let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(data);
    let mut writer = csv::WriterBuilder::new()
        .flexible(true)
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(out);
    let header = csv_header(&mut reader)?;
    writer.write_record(&header).map_err(write_err)?;
    let marked_at: Vec<bool> = (0..header.len())
        .map(|i| plan.marks(&plan::csv_field_name(&header, i)))
        .collect();
    let mut cells = 0;
    let mut records = 0;
    let mut row: Vec<String> = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| DesensitizeError::Read(e.to_string()))?;
        records += 1;
        row.clear();
        for (i, value) in record.iter().enumerate() {
            if marked_at.get(i).copied().unwrap_or(false) && markable(value) {
                cells += 1;
                row.push(mark(key, value));
            } else {
                row.push(value.to_owned());
            }
        }
        writer.write_record(&row).map_err(write_err)?;
    }
    writer
        .flush()
        .map_err(|e| DesensitizeError::Write(e.to_string()))?;
    Ok(Marked { cells, records })
}

/// Marks JSON Lines data into `out` by `plan`: a record with a marked member is written
/// again (members in sorted order), every other line as it was.
pub fn mark_jsonl(
    plan: &MarkPlan,
    key: &hmac::Key,
    data: impl Read,
    mut out: impl Write,
) -> Result<Marked, DesensitizeError> {
    let mut cells = 0;
    let mut records = 0;
    let write_err = |e: std::io::Error| DesensitizeError::Write(e.to_string());
    for_each_line(data, |line, object| {
        let Some(object) = object else {
            return out.write_all(line).map_err(write_err);
        };
        records += 1;
        let mut changed = false;
        let mut marked = plan::JsonObject::new();
        for (k, v) in object {
            let text = json_number_text(v).filter(|t| plan.marks(k) && markable(t));
            let Some(text) = text else {
                marked.insert(k.clone(), v.clone());
                continue;
            };
            let new = mark(key, &text);
            let value = match v {
                serde_json::Value::String(_) => Some(serde_json::Value::String(new.clone())),
                _ => serde_json::from_str::<serde_json::Number>(&new)
                    .ok()
                    .filter(|n| n.to_string() == new)
                    .map(serde_json::Value::Number),
            };
            match value {
                Some(value) => {
                    cells += 1;
                    changed |= new != text;
                    marked.insert(k.clone(), value);
                }
                // A number JSON would print another way is left as it is.
                None => {
                    marked.insert(k.clone(), v.clone());
                }
            }
        }
        if !changed {
            return out.write_all(line).map_err(write_err);
        }
        serde_json::to_writer(&mut out, &marked)
            .map_err(|e| DesensitizeError::Write(e.to_string()))?;
        out.write_all(b"\n").map_err(write_err)
    })?;
    out.flush().map_err(write_err)?;
    Ok(Marked { cells, records })
}

/// A top-level JSON member's value as number text: a number as JSON prints it, or a
/// string that holds a plain number.
fn json_number_text(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::String(s) if plain_number(s).is_some() => Some(s.clone()),
        _ => None,
    }
}

/// Calls `f` with each line (with its end) and, when it is one, the JSON object it
/// holds.
fn for_each_line(
    data: impl Read,
    mut f: impl FnMut(&[u8], Option<&plan::JsonObject>) -> Result<(), DesensitizeError>,
) -> Result<(), DesensitizeError> {
    let mut reader = BufReader::new(data);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| DesensitizeError::Read(e.to_string()))?;
        if n == 0 {
            return Ok(());
        }
        match serde_json::from_slice::<serde_json::Value>(&line) {
            Ok(serde_json::Value::Object(object)) => {
                let object: plan::JsonObject = object.into_iter().collect();
                f(&line, Some(&object))?;
            }
            _ => f(&line, None)?,
        }
    }
}

/// How a file scored against one agreement's key.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Score {
    /// Distinct markable values read.
    pub cells: u64,
    /// Of those, the ones carrying the agreement's mark.
    pub matches: u64,
}

impl Score {
    /// (2·matches − cells)/√cells: about 0 for a file not from the agreement, √cells
    /// for a whole marked copy.
    pub fn z(&self) -> f64 {
        if self.cells == 0 {
            return 0.0;
        }
        (2.0 * self.matches as f64 - self.cells as f64) / (self.cells as f64).sqrt()
    }

    /// Whether the score traces the file to the agreement.
    pub fn traced(&self) -> bool {
        self.z() >= TRACE_Z
    }
}

/// The distinct markable values of a file's measure fields (its own plan: the columns
/// a copy kept are found as in the delivery).
fn trial_values(values: Vec<(String, String)>, plan: &MarkPlan) -> BTreeSet<String> {
    values
        .into_iter()
        .filter(|(field, value)| plan.marks(field) && markable(value))
        .map(|(_, value)| value)
        .collect()
}

/// Scores CSV data against each of `keys`, in their order.
pub fn score_csv(data: &[u8], keys: &[hmac::Key]) -> Result<Vec<Score>, DesensitizeError> {
    let plan = plan_csv(data)?;
    let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(data);
    let header = csv_header(&mut reader)?;
    let mut values = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| DesensitizeError::Read(e.to_string()))?;
        for (i, value) in record.iter().enumerate() {
            values.push((plan::csv_field_name(&header, i), value.to_owned()));
        }
    }
    Ok(score(&trial_values(values, &plan), keys))
}

/// Scores JSON Lines data against each of `keys`, in their order.
pub fn score_jsonl(data: &[u8], keys: &[hmac::Key]) -> Result<Vec<Score>, DesensitizeError> {
    let plan = plan_jsonl(data)?;
    let mut values = Vec::new();
    for_each_line(data, |_, object| {
        for (k, v) in object.into_iter().flatten() {
            if let Some(text) = json_number_text(v) {
                values.push((k.clone(), text));
            }
        }
        Ok(())
    })?;
    Ok(score(&trial_values(values, &plan), keys))
}

fn score(trials: &BTreeSet<String>, keys: &[hmac::Key]) -> Vec<Score> {
    keys.iter()
        .map(|key| Score {
            cells: trials.len() as u64,
            matches: trials.iter().filter(|v| carries(key, v)).count() as u64,
        })
        .collect()
}

/// Whether data looks like JSON Lines rather than CSV (its first non-empty line is a
/// JSON object).
pub fn looks_like_jsonl(data: &[u8]) -> bool {
    data.split(|b| *b == b'\n')
        .find(|l| !l.iter().all(u8::is_ascii_whitespace))
        .is_some_and(|l| {
            matches!(
                serde_json::from_slice::<serde_json::Value>(l),
                Ok(serde_json::Value::Object(_))
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> hmac::Key {
        hmac::Key::new(hmac::HMAC_SHA256, name.as_bytes())
    }

    /// Residents with a name, an ID number, a mobile, a district code, a birth date,
    /// a year, and two measures (income, balance).
    fn residents(rows: usize) -> String {
        let mut out =
            String::from("name,id_number,mobile,district_code,birth_date,year,income,balance\n");
        for i in 0..rows {
            out.push_str(&format!(
                "Person {i},33010619880517{:03}X,138{:08},330106,1988{:02}{:02},2024,{}{}{},{}.{:02}\n",
                i % 1000,
                10_000_000 + i * 7919,
                1 + i % 12,
                1 + i % 28,
                480 + i,
                1 + i % 9,
                i % 7,
                12_345 + i * 31,
                i % 100
            ));
        }
        out
    }

    #[test]
    fn only_measure_values_with_enough_digits_are_markable() {
        for v in [
            "12345", "-12345", "1234.5", "0.12345", "99999", "48137.25", "48010", "12300.5",
        ] {
            assert!(markable(v), "{v}");
        }
        for v in [
            "1234",
            "0.1234",
            "012345",
            "1.2e10",
            "12,345",
            "abc",
            "",
            "20240517",
            "20241239",
            "123456789012345678",
            "241000",
            "48100",
            "48005",
            "10000",
        ] {
            assert!(!markable(v), "{v}");
        }
        for h in [
            "id",
            "user_id",
            "district_code",
            "mobile",
            "contact_phone",
            "birth_date",
            "year",
            "身份证号",
            "邮编",
            "name",
        ] {
            assert!(names_an_identifier(h), "{h}");
        }
        for h in ["income", "balance", "trips", "月收入"] {
            assert!(!names_an_identifier(h), "{h}");
        }
    }

    #[test]
    fn marks_change_only_measure_cells_and_by_at_most_one_in_the_last_digit() {
        let data = residents(200);
        let plan = plan_csv(data.as_bytes()).unwrap();
        assert_eq!(plan.fields, vec!["income", "balance"]);
        assert_eq!(plan.cells, 400);
        let mut out = Vec::new();
        let done = mark_csv(&plan, &key("a"), data.as_bytes(), &mut out).unwrap();
        assert_eq!(
            done,
            Marked {
                cells: 400,
                records: 200
            }
        );
        let marked = String::from_utf8(out).unwrap();
        let mut changed = 0;
        for (before, after) in data.lines().zip(marked.lines()) {
            let (b, a): (Vec<&str>, Vec<&str>) =
                (before.split(',').collect(), after.split(',').collect());
            assert_eq!(b[..6], a[..6], "identifiers, codes and dates untouched");
            for i in 6..8 {
                if b[i] != a[i] {
                    changed += 1;
                    let (x, y): (f64, f64) = (b[i].parse().unwrap(), a[i].parse().unwrap());
                    let unit = if b[i].contains('.') { 0.01 } else { 1.0 };
                    assert!((x - y).abs() <= unit + 1e-9, "{} → {}", b[i], a[i]);
                    assert!((x - y).abs() / x.abs() < 1e-4, "{} → {}", b[i], a[i]);
                    assert_eq!(b[i].len(), a[i].len());
                }
            }
        }
        assert_eq!(marked.lines().count(), data.lines().count());
        // About half the cells already had the right parity.
        assert!((100..300).contains(&changed), "{changed} changed");
    }

    #[test]
    fn a_reordered_cut_copy_scores_for_its_agreement_only() {
        let data = residents(300);
        let plan = plan_csv(data.as_bytes()).unwrap();
        let (a, b) = (key("agreement a"), key("agreement b"));
        let mut out = Vec::new();
        mark_csv(&plan, &b, data.as_bytes(), &mut out).unwrap();
        let marked = String::from_utf8(out).unwrap();
        // Rows reversed, every third dropped, the balance and name columns dropped.
        let mut lines: Vec<&str> = marked.lines().skip(1).collect();
        lines.reverse();
        let mut copy = String::from("id_number,mobile,income,district_code\n");
        for (i, line) in lines.iter().enumerate() {
            if i % 3 == 0 {
                continue;
            }
            let c: Vec<&str> = line.split(',').collect();
            copy.push_str(&format!("{},{},{},{}\n", c[1], c[2], c[6], c[3]));
        }
        let scores = score_csv(copy.as_bytes(), &[a, b]).unwrap();
        assert!(scores[1].traced(), "{scores:?}");
        assert_eq!(scores[1].matches, scores[1].cells);
        assert!(!scores[0].traced(), "{scores:?}");
        // The unmarked original traces to neither.
        let original =
            score_csv(data.as_bytes(), &[key("agreement a"), key("agreement b")]).unwrap();
        assert!(original.iter().all(|s| !s.traced()), "{original:?}");
    }

    #[test]
    fn json_lines_measures_are_marked_and_traced() {
        let mut data = String::new();
        for i in 0..100 {
            data.push_str(&format!(
                "{{\"mobile\":\"138{:08}\",\"income\":{},\"rate\":\"{}.{:03}\"}}\n",
                10_000_000 + i,
                50_011 + i * 100,
                10 + i % 80,
                i
            ));
        }
        data.push_str("not json\n");
        let plan = plan_jsonl(data.as_bytes()).unwrap();
        assert_eq!(plan.fields, vec!["income", "rate"]);
        let mut out = Vec::new();
        let done = mark_jsonl(&plan, &key("j"), data.as_bytes(), &mut out).unwrap();
        assert_eq!(
            done,
            Marked {
                cells: 200,
                records: 100
            }
        );
        let text = String::from_utf8(out).unwrap();
        assert!(text.ends_with("not json\n"), "other lines kept");
        assert!(looks_like_jsonl(text.as_bytes()));
        for (before, after) in data.lines().zip(text.lines()).take(100) {
            let (b, a): (serde_json::Value, serde_json::Value) = (
                serde_json::from_str(before).unwrap(),
                serde_json::from_str(after).unwrap(),
            );
            assert_eq!(b["mobile"], a["mobile"]);
            let (x, y) = (b["income"].as_i64().unwrap(), a["income"].as_i64().unwrap());
            assert!((x - y).abs() <= 1);
        }
        let scores = score_jsonl(text.as_bytes(), &[key("other"), key("j")]).unwrap();
        assert!(scores[1].traced() && !scores[0].traced(), "{scores:?}");
    }

    #[test]
    fn a_product_without_measures_plans_no_marks() {
        let plan = plan_csv(&b"road,hour,vehicles\nYan'an Rd,8,1520\n"[..]).unwrap();
        assert_eq!(plan, MarkPlan::default());
        // A column with one non-number is no measure.
        let plan = plan_csv(&b"income\n123456\nunknown\n"[..]).unwrap();
        assert_eq!(plan.cells, 0);
        // Mobile numbers are recognised even under a neutral header.
        let plan = plan_csv(&b"value\n13812345678\n"[..]).unwrap();
        assert_eq!(plan.cells, 0);
    }
}
