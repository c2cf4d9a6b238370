//! Content fingerprints of tabular data: what lets onward sharing be recognised when
//! the bytes were changed (rows reordered or trimmed, a column dropped, a cell edited,
//! a newline added).
//!
//! Rows are read line by line, each line as a JSON object (JSON Lines) or else as a CSV
//! record (the first CSV record is the header), whatever format a product claims, so a
//! copy republished as "bytes" is read as well. A cell's value is normalised (trimmed,
//! lower-case) and hashed with a node-local key, so the stored fingerprints do not
//! betray the values to anyone who cannot also compute the key.
//!
//! A received copy keeps a [`Sketch`]: the hashes of its identifying values (ID numbers,
//! mobiles, e-mail addresses, recognised by value or by the column's header), the
//! smallest [`SKETCH_MAX`] of them when there are more, so a large copy stays compact
//! and the kept ones are a uniform sample. A payload being published is compared with
//! every cell it has, in any column: dropping or renaming columns does not hide a value.

use std::collections::BTreeSet;

use liutong_policy::FieldType;
use ring::hmac;

use crate::desensitize::recognise::{header_is, value_is};

/// Most hashes a copy's sketch keeps (8 bytes each).
pub const SKETCH_MAX: usize = 20_000;
/// Longest line read as a row; longer ones are skipped (they are not rows a person
/// could be told by, and an unbounded line must not hold memory).
const LINE_MAX: usize = 1 << 20;
/// Types whose values single out a person on their own.
const IDENTIFYING: [FieldType; 3] = [FieldType::Idcard, FieldType::Mobile, FieldType::Email];

/// One row: (field name, value) for each cell. CSV records before the header is known,
/// and cells beyond it, have an empty name.
pub type Row = Vec<(String, String)>;

/// Splits a byte stream into rows, fed in pieces of any size.
#[derive(Default)]
pub struct RowReader {
    pending: Vec<u8>,
    in_quotes: bool,
    too_long: bool,
    header: Option<Vec<String>>,
    /// One CSV parser for every line: building one costs more than reading a line.
    csv: LineParser,
}

impl RowReader {
    /// Reads `data`, calling `row` for each row it completes.
    pub fn feed(&mut self, data: &[u8], row: &mut dyn FnMut(Row)) {
        for &b in data {
            if b == b'"' {
                self.in_quotes = !self.in_quotes;
            }
            if b == b'\n' && !self.in_quotes {
                self.line(row);
                continue;
            }
            if self.pending.len() < LINE_MAX {
                self.pending.push(b);
            } else {
                self.too_long = true;
            }
        }
    }

    /// Reads what is left after the last newline.
    pub fn finish(&mut self, row: &mut dyn FnMut(Row)) {
        self.line(row);
    }

    fn line(&mut self, row: &mut dyn FnMut(Row)) {
        let line = std::mem::take(&mut self.pending);
        let too_long = std::mem::replace(&mut self.too_long, false);
        self.in_quotes = false;
        let text = String::from_utf8_lossy(&line);
        // A byte order mark (exports start with one) is not part of a value: the CSV
        // parser drops it itself, a JSON line is only recognised once it is gone.
        let text = text.trim().trim_start_matches('\u{feff}');
        if too_long || text.is_empty() {
            return;
        }
        if text.starts_with('{')
            && let Ok(serde_json::Value::Object(map)) = serde_json::from_str(text)
        {
            let cells = map
                .iter()
                .filter_map(|(k, v)| {
                    crate::desensitize::plan::json_text(v).map(|t| (k.clone(), t.into_owned()))
                })
                .collect();
            row(cells);
            return;
        }
        let Some(values) = self.csv.record(text.as_bytes()) else {
            return;
        };
        match &self.header {
            None => self.header = Some(values),
            Some(header) => row(values
                .into_iter()
                .enumerate()
                .map(|(i, v)| (header.get(i).cloned().unwrap_or_default(), v))
                .collect()),
        }
    }
}

/// Reads a line as one CSV record (RFC 4180 quoting, fields of any count), reusing its
/// parser and buffers from line to line.
struct LineParser {
    parser: csv_core::Reader,
    fields: Vec<u8>,
    ends: Vec<usize>,
}

impl Default for LineParser {
    fn default() -> Self {
        Self {
            // `csv_core::Reader::default()` has no state machine yet: `new` builds it.
            parser: csv_core::Reader::new(),
            fields: Vec::new(),
            ends: Vec::new(),
        }
    }
}

impl LineParser {
    /// The fields of the first record in `line`; `None` if it has none or a field is
    /// not UTF-8.
    fn record(&mut self, line: &[u8]) -> Option<Vec<String>> {
        self.parser.reset();
        // Unquoting never lengthens a field, and a line of n bytes has at most n + 1
        // fields: these sizes always suffice.
        self.fields.resize(line.len(), 0);
        self.ends.resize(line.len() + 1, 0);
        let (mut input, mut written, mut fields) = (line, 0, 0);
        loop {
            let (result, read, out, ends) = self.parser.read_record(
                input,
                &mut self.fields[written..],
                &mut self.ends[fields..],
            );
            input = &input[read..];
            written += out;
            fields += ends;
            match result {
                // The whole line is read: an empty input tells the parser it ended.
                csv_core::ReadRecordResult::InputEmpty => {}
                csv_core::ReadRecordResult::Record => break,
                csv_core::ReadRecordResult::End
                | csv_core::ReadRecordResult::OutputFull
                | csv_core::ReadRecordResult::OutputEndsFull => return None,
            }
        }
        let mut start = 0;
        self.ends[..fields]
            .iter()
            .map(|&end| {
                let field = std::str::from_utf8(&self.fields[start..end]).ok();
                start = end;
                field.map(str::to_owned)
            })
            .collect()
    }
}

/// A value as it is compared: trimmed and lower-case (`None` when empty).
fn normalise(value: &str) -> Option<String> {
    let v = value.trim().trim_matches('"').trim();
    (!v.is_empty()).then(|| v.to_lowercase())
}

/// The keyed hash of a cell's value (`None` for an empty cell).
pub fn cell_hash(key: &hmac::Key, value: &str) -> Option<u64> {
    let v = normalise(value)?;
    let tag = hmac::sign(key, v.as_bytes());
    let bytes: [u8; 8] = tag.as_ref()[..8].try_into().expect("a tag has 32 bytes");
    Some(u64::from_be_bytes(bytes))
}

/// Whether a cell names a person on its own: its value is an ID number, mobile or
/// e-mail address, or its column is named as one (then masked values count too, as
/// long as enough of them is left to tell people apart).
fn identifying(field: &str, value: &str) -> bool {
    IDENTIFYING.iter().any(|&t| {
        value_is(t, value.trim())
            || (!field.is_empty() && header_is(t, field) && value.trim().chars().count() >= 6)
    })
}

/// The fingerprints a received copy keeps: the smallest keyed hashes of its distinct
/// identifying values.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sketch {
    pub hashes: BTreeSet<u64>,
    /// Whether values had to be left out (then `hashes` is a sample).
    pub sampled: bool,
}

impl Sketch {
    /// Adds a row's identifying values.
    pub fn add_row(&mut self, key: &hmac::Key, row: &Row) {
        for (field, value) in row {
            if !identifying(field, value) {
                continue;
            }
            let Some(h) = cell_hash(key, value) else {
                continue;
            };
            if self.hashes.len() < SKETCH_MAX {
                self.hashes.insert(h);
            } else if self.hashes.last().is_some_and(|&max| h < max) && self.hashes.insert(h) {
                self.hashes.pop_last();
                self.sampled = true;
            } else if !self.hashes.contains(&h) {
                self.sampled = true;
            }
        }
    }

    /// The share of all the copy's distinct identifying values the sketch holds.
    pub fn sample_rate(&self) -> f64 {
        match (self.sampled, self.hashes.last()) {
            (true, Some(&max)) if max > 0 => {
                // Bottom-k: k values below `max` of a uniform 64-bit space.
                let distinct = (self.hashes.len() as f64 - 1.0) * (u64::MAX as f64 / max as f64);
                (self.hashes.len() as f64 / distinct).clamp(f64::MIN_POSITIVE, 1.0)
            }
            _ => 1.0,
        }
    }

    /// Stored form: a flag byte, then the hashes, 8 bytes each.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + 8 * self.hashes.len());
        out.push(u8::from(self.sampled));
        for h in &self.hashes {
            out.extend_from_slice(&h.to_be_bytes());
        }
        out
    }

    /// Reads the stored form (`None` if it is damaged).
    pub fn from_bytes(bytes: &[u8]) -> Option<Sketch> {
        let (&flag, rest) = bytes.split_first()?;
        if flag > 1 || !rest.len().is_multiple_of(8) {
            return None;
        }
        Some(Sketch {
            sampled: flag == 1,
            hashes: rest
                .chunks_exact(8)
                .map(|c| u64::from_be_bytes(c.try_into().expect("8 bytes")))
                .collect(),
        })
    }
}

/// How much of a received copy a payload holds.
#[derive(Clone, Debug, Default)]
pub struct Overlap {
    /// The copy's sketched values found anywhere in the payload.
    pub matched_values: BTreeSet<u64>,
    /// The payload's rows with at least one of them.
    pub matched_rows: u64,
}

/// Fewest matched values that count as a copy's content (a stray coincidence is not).
const MIN_MATCHED: usize = 3;
/// The share (of the copy's identifying values, or of the payload's rows) from which a
/// payload counts as holding the copy's content.
pub const SIGNIFICANT: f64 = 0.2;

impl Overlap {
    /// Adds one row of the payload, given its cells' hashes.
    pub fn add_row(&mut self, sketch: &Sketch, hashes: &[u64]) {
        let mut hit = false;
        for h in hashes {
            if sketch.hashes.contains(h) {
                self.matched_values.insert(*h);
                hit = true;
            }
        }
        self.matched_rows += u64::from(hit);
    }

    /// (share of the copy's identifying values, estimated share of the payload's rows
    /// that carry one), when that is significant.
    pub fn significant(&self, sketch: &Sketch, rows: u64) -> Option<(f64, f64)> {
        if sketch.hashes.is_empty() || self.matched_values.len() < MIN_MATCHED || rows == 0 {
            return None;
        }
        let of_copy = self.matched_values.len() as f64 / sketch.hashes.len() as f64;
        let of_rows =
            (self.matched_rows as f64 / sketch.sample_rate() / rows as f64).clamp(0.0, 1.0);
        (of_copy >= SIGNIFICANT || of_rows >= SIGNIFICANT).then_some((of_copy, of_rows))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(data: &[u8]) -> Vec<Row> {
        let mut out = Vec::new();
        let mut reader = RowReader::default();
        for piece in data.chunks(7) {
            reader.feed(piece, &mut |r| out.push(r));
        }
        reader.finish(&mut |r| out.push(r));
        out
    }

    #[test]
    fn a_byte_order_mark_is_not_part_of_the_first_field_or_key() {
        let got =
            rows("\u{feff}身份证号,name\n110101199003074514,\"Li, \"\"Wei\"\"\"\n".as_bytes());
        assert_eq!(
            got,
            vec![vec![
                ("身份证号".to_owned(), "110101199003074514".to_owned()),
                ("name".to_owned(), "Li, \"Wei\"".to_owned())
            ]]
        );
        let got = rows("\u{feff}{\"身份证号\":\"110101199003074514\"}\n".as_bytes());
        assert_eq!(
            got,
            vec![vec![(
                "身份证号".to_owned(),
                "110101199003074514".to_owned()
            )]]
        );
    }

    #[test]
    fn csv_and_json_lines_are_read_with_their_field_names() {
        let got = rows(b"name,note\n\"Li, Wei\",\"two\nlines\"\n{\"email\":\"a@b.cn\",\"n\":3}\n");
        assert_eq!(
            got,
            vec![
                vec![
                    ("name".to_owned(), "Li, Wei".to_owned()),
                    ("note".to_owned(), "two\nlines".to_owned())
                ],
                vec![
                    ("email".to_owned(), "a@b.cn".to_owned()),
                    ("n".to_owned(), "3".to_owned())
                ],
            ]
        );
    }

    #[test]
    fn a_large_sketch_keeps_a_bounded_sample_and_its_rate() {
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"k");
        let mut s = Sketch::default();
        for i in 0..(SKETCH_MAX * 2) {
            s.add_row(&key, &vec![("email".into(), format!("p{i}@example.cn"))]);
        }
        assert_eq!(s.hashes.len(), SKETCH_MAX);
        assert!(s.sampled);
        let rate = s.sample_rate();
        assert!((0.4..0.6).contains(&rate), "{rate}");
        assert_eq!(Sketch::from_bytes(&s.to_bytes()), Some(s));
    }
}
