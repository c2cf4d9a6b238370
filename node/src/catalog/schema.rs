//! Schema inference and quality figures for tabular data products (CSV and JSON Lines):
//! the columns and their types, the row count, the share of empty values per column,
//! and the rows that do not match the inferred schema.
//!
//! Two passes over the stored chunks: the first infers each column's type (the most
//! specific type that at least 90% of its non-empty values fit, `TYPE_SHARE`), the
//! second counts the rows that break the schema (a wrong number of fields, a value of
//! another type, a line that is not a JSON object).

use std::collections::BTreeMap;
use std::io::Read;

use serde::{Deserialize, Serialize};

/// Share of non-empty values a type must fit to become the column's type.
const TYPE_SHARE: f64 = 0.9;

/// The type of a column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColumnType {
    Integer,
    Number,
    Boolean,
    /// An ISO 8601 date (`2026-01-31`) or date-time.
    Date,
    String,
    /// A JSON object or array (JSON Lines only).
    Json,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    #[serde(rename = "type")]
    pub column_type: ColumnType,
    /// Share of rows where the value is empty or missing, 0.0 to 1.0.
    pub null_ratio: f64,
}

/// Schema and quality figures of a tabular product.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    pub columns: Vec<Column>,
    pub rows: u64,
    /// Rows that do not match the schema.
    pub nonconforming_rows: u64,
    /// 1 − nonconforming / rows (1.0 for an empty product).
    pub conformance: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("the CSV data has no header row")]
    NoHeader,
    #[error("the CSV data cannot be read: {0}")]
    Csv(String),
    #[error("the data cannot be read: {0}")]
    Io(#[from] std::io::Error),
}

fn value_fits(value: &str, t: ColumnType) -> bool {
    match t {
        ColumnType::Integer => value.parse::<i64>().is_ok(),
        ColumnType::Number => value.parse::<f64>().is_ok_and(f64::is_finite),
        ColumnType::Boolean => matches!(
            value,
            "true" | "false" | "TRUE" | "FALSE" | "True" | "False"
        ),
        ColumnType::Date => is_date(value),
        ColumnType::String | ColumnType::Json => true,
    }
}

fn is_date(v: &str) -> bool {
    let b = v.as_bytes();
    b.len() >= 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[5..7].iter().all(u8::is_ascii_digit)
        && b[8..10].iter().all(u8::is_ascii_digit)
        && (b.len() == 10 || b[10] == b'T' || b[10] == b' ')
}

/// Candidate types, most specific first.
const CANDIDATES: [ColumnType; 4] = [
    ColumnType::Integer,
    ColumnType::Number,
    ColumnType::Boolean,
    ColumnType::Date,
];

#[derive(Default, Clone)]
struct Counter {
    non_empty: u64,
    fits: [u64; 4],
}

impl Counter {
    fn add(&mut self, value: &str) {
        if value.is_empty() {
            return;
        }
        self.non_empty += 1;
        for (i, t) in CANDIDATES.iter().enumerate() {
            if value_fits(value, *t) {
                self.fits[i] += 1;
            }
        }
    }

    fn column_type(&self) -> ColumnType {
        if self.non_empty == 0 {
            return ColumnType::String;
        }
        CANDIDATES
            .iter()
            .zip(self.fits)
            .find(|(_, n)| *n as f64 >= TYPE_SHARE * self.non_empty as f64)
            .map_or(ColumnType::String, |(t, _)| *t)
    }
}

/// Profiles CSV data with a header row. `open` gives a fresh reader over the data for
/// each pass.
pub fn profile_csv<R: Read>(mut open: impl FnMut() -> R) -> Result<Profile, ProfileError> {
    let csv_err = |e: csv::Error| ProfileError::Csv(e.to_string());
    let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(open());
    let header: Vec<String> = reader
        .headers()
        .map_err(csv_err)?
        .iter()
        .map(str::to_owned)
        .collect();
    if header.is_empty() || header.iter().all(String::is_empty) {
        return Err(ProfileError::NoHeader);
    }
    let mut counters = vec![Counter::default(); header.len()];
    let mut nulls = vec![0u64; header.len()];
    let mut rows = 0u64;
    for record in reader.records() {
        let record = record.map_err(csv_err)?;
        rows += 1;
        for (i, counter) in counters.iter_mut().enumerate() {
            let value = record.get(i).unwrap_or("");
            if value.is_empty() {
                nulls[i] += 1;
            }
            counter.add(value);
        }
    }
    let types: Vec<ColumnType> = counters.iter().map(Counter::column_type).collect();

    let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(open());
    let mut nonconforming = 0u64;
    for record in reader.records() {
        let record = record.map_err(csv_err)?;
        let fits = record.len() == header.len()
            && record
                .iter()
                .zip(&types)
                .all(|(v, t)| v.is_empty() || value_fits(v, *t));
        if !fits {
            nonconforming += 1;
        }
    }
    Ok(finish(header, types, nulls, rows, nonconforming))
}

/// Profiles JSON Lines data: one JSON object per line; columns are the union of keys.
pub fn profile_jsonl<R: Read>(mut open: impl FnMut() -> R) -> Result<Profile, ProfileError> {
    use std::io::BufRead;
    let mut kinds: BTreeMap<String, BTreeMap<&'static str, u64>> = BTreeMap::new();
    let mut present: BTreeMap<String, u64> = BTreeMap::new();
    let mut rows = 0u64;
    for line in std::io::BufReader::new(open()).lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        rows += 1;
        if let Ok(serde_json::Value::Object(map)) = serde_json::from_str(&line) {
            for (k, v) in map {
                if !v.is_null() {
                    *present.entry(k.clone()).or_default() += 1;
                    *kinds
                        .entry(k)
                        .or_default()
                        .entry(json_kind(&v))
                        .or_default() += 1;
                }
            }
        }
    }
    let header: Vec<String> = kinds.keys().cloned().collect();
    let types: Vec<ColumnType> = kinds
        .values()
        .map(|k| {
            let (kind, _) = k
                .iter()
                .max_by_key(|(_, n)| **n)
                .expect("a seen key has a kind");
            match *kind {
                "integer" => ColumnType::Integer,
                "number" => ColumnType::Number,
                "boolean" => ColumnType::Boolean,
                "json" => ColumnType::Json,
                _ => ColumnType::String,
            }
        })
        .collect();
    let nulls: Vec<u64> = header
        .iter()
        .map(|h| rows - present.get(h).copied().unwrap_or(0))
        .collect();

    let mut nonconforming = 0u64;
    for line in std::io::BufReader::new(open()).lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let fits = match serde_json::from_str(&line) {
            Ok(serde_json::Value::Object(map)) => map.iter().all(|(k, v)| {
                v.is_null()
                    || header
                        .iter()
                        .position(|h| h == k)
                        .is_some_and(|i| json_fits(v, types[i]))
            }),
            _ => false,
        };
        if !fits {
            nonconforming += 1;
        }
    }
    Ok(finish(header, types, nulls, rows, nonconforming))
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Bool(_) => "boolean",
        serde_json::Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        _ => "json",
    }
}

fn json_fits(v: &serde_json::Value, t: ColumnType) -> bool {
    matches!(
        (json_kind(v), t),
        ("integer", ColumnType::Integer | ColumnType::Number)
            | ("number", ColumnType::Number)
            | ("boolean", ColumnType::Boolean)
            | ("string", ColumnType::String)
            | ("json", ColumnType::Json)
    )
}

fn finish(
    header: Vec<String>,
    types: Vec<ColumnType>,
    nulls: Vec<u64>,
    rows: u64,
    nonconforming: u64,
) -> Profile {
    let ratio = |n: u64| {
        if rows == 0 {
            0.0
        } else {
            n as f64 / rows as f64
        }
    };
    Profile {
        columns: header
            .into_iter()
            .zip(types)
            .zip(nulls)
            .map(|((name, column_type), n)| Column {
                name,
                column_type,
                null_ratio: ratio(n),
            })
            .collect(),
        rows,
        nonconforming_rows: nonconforming,
        conformance: 1.0 - ratio(nonconforming),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_types_nulls_and_nonconforming_rows() {
        let data = "station,date,pm25,ok\n\
                    A,2026-01-01,12.5,true\n\
                    B,2026-01-02,,false\n\
                    C,2026-01-03,13,true\n\
                    D,not-a-date,14,true,extra\n";
        let p = profile_csv(|| data.as_bytes()).unwrap();
        assert_eq!(p.rows, 4);
        let types: Vec<_> = p
            .columns
            .iter()
            .map(|c| (c.name.as_str(), c.column_type))
            .collect();
        assert_eq!(
            types,
            [
                ("station", ColumnType::String),
                ("date", ColumnType::String), // 3 of 4 dates: under the 90 % share
                ("pm25", ColumnType::Number),
                ("ok", ColumnType::Boolean)
            ]
        );
        assert_eq!(p.columns[2].null_ratio, 0.25);
        assert_eq!(p.nonconforming_rows, 1, "the row with an extra field");
        assert_eq!(p.conformance, 0.75);
    }

    #[test]
    fn csv_type_breaks_count_as_nonconforming() {
        let mut data = String::from("id,count\n");
        for i in 0..19 {
            data.push_str(&format!("{i},{}\n", i * 2));
        }
        data.push_str("19,many\n");
        let p = profile_csv(|| data.as_bytes()).unwrap();
        assert_eq!(p.columns[1].column_type, ColumnType::Integer);
        assert_eq!((p.rows, p.nonconforming_rows), (20, 1));
    }

    #[test]
    fn jsonl_union_of_keys() {
        let data = "{\"id\":1,\"name\":\"a\"}\n{\"id\":2,\"name\":null,\"tags\":[1]}\nnot json\n{\"id\":\"x\"}\n";
        let p = profile_jsonl(|| data.as_bytes()).unwrap();
        assert_eq!(p.rows, 4);
        let id = p.columns.iter().find(|c| c.name == "id").unwrap();
        assert_eq!(id.column_type, ColumnType::Integer);
        let name = p.columns.iter().find(|c| c.name == "name").unwrap();
        assert_eq!(name.null_ratio, 0.75);
        assert_eq!(
            p.nonconforming_rows, 2,
            "the non-JSON line and the string id"
        );
    }

    #[test]
    fn csv_without_header_is_refused() {
        assert!(matches!(
            profile_csv(|| "".as_bytes()),
            Err(ProfileError::NoHeader)
        ));
    }
}
