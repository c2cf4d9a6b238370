//! The aggregate engine: one pass over the rows, each value masked first when the
//! agreement carries mask rules, then filtered, grouped and aggregated; groups smaller
//! than k are suppressed and only counted.

use std::collections::BTreeMap;
use std::io::Read;

use ring::hmac;

use super::{AggregateError, Function, MAX_GROUPS, Query, number};
use crate::desensitize::Plan;
use crate::desensitize::method::Masked;
use crate::desensitize::plan::{csv_field_name, for_each_object, json_text};

/// One group of the answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Group {
    pub keys: Vec<String>,
    pub rows: u64,
    /// One per aggregation; `None` when no value read as a number.
    pub values: Vec<Option<f64>>,
}

/// The answer: groups of at least k rows, and how many smaller ones were suppressed.
#[derive(Clone, Debug, PartialEq)]
pub struct Answer {
    pub groups: Vec<Group>,
    pub suppressed_groups: u32,
    /// Rows read, and rows that passed the filters (for the provider's own log only).
    pub rows_read: u64,
    pub rows_matched: u64,
}

/// Masking applied to values before the query sees them.
pub type Masking<'a> = Option<(&'a Plan, &'a hmac::Key)>;

/// Runs a checked query over CSV data.
pub fn run_csv(
    query: &Query,
    k: u32,
    masking: Masking<'_>,
    data: impl Read,
) -> Result<Answer, AggregateError> {
    let read_err = |e: csv::Error| AggregateError::Read(e.to_string());
    let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(data);
    let header: Vec<String> = reader
        .headers()
        .map_err(read_err)?
        .iter()
        .map(str::to_owned)
        .collect();
    let columns = query.columns();
    let positions: Vec<Option<usize>> = columns
        .iter()
        .map(|c| (0..header.len()).find(|i| csv_field_name(&header, *i) == *c))
        .collect();
    let mut acc = Accumulator::new(query, &columns);
    let mut values: Vec<Option<String>> = Vec::with_capacity(columns.len());
    for record in reader.records() {
        let record = record.map_err(read_err)?;
        values.clear();
        for (c, p) in columns.iter().zip(&positions) {
            let v = p.and_then(|p| record.get(p)).filter(|v| !v.is_empty());
            values.push(v.map(|v| masked(masking, c, v)));
        }
        acc.add(&values)?;
    }
    Ok(acc.finish(k))
}

/// Runs a checked query over JSON Lines data (lines that are not objects are skipped).
pub fn run_jsonl(
    query: &Query,
    k: u32,
    masking: Masking<'_>,
    data: impl Read,
) -> Result<Answer, AggregateError> {
    let columns = query.columns();
    let mut acc = Accumulator::new(query, &columns);
    let mut failure = None;
    let mut values: Vec<Option<String>> = Vec::with_capacity(columns.len());
    for_each_object(data, |object| {
        if failure.is_some() {
            return;
        }
        values.clear();
        for c in &columns {
            let v = object.get(*c).and_then(json_text).filter(|v| !v.is_empty());
            values.push(v.map(|v| masked(masking, c, &v)));
        }
        if let Err(e) = acc.add(&values) {
            failure = Some(e);
        }
    })
    .map_err(|e| AggregateError::Read(e.to_string()))?;
    if let Some(e) = failure {
        return Err(e);
    }
    Ok(acc.finish(k))
}

fn masked(masking: Masking<'_>, column: &str, value: &str) -> String {
    let Some((plan, key)) = masking else {
        return value.to_owned();
    };
    match plan.action(column).map(|a| a.apply(value, key)) {
        None => value.to_owned(),
        Some(Masked::Value(v) | Masked::Unreadable(v)) => v,
        // `check` refuses dropped columns; were one read, it would read as masked.
        Some(Masked::Dropped) => crate::desensitize::method::mask_all(value),
    }
}

#[derive(Clone, Default)]
struct Stat {
    n: u64,
    sum: f64,
    min: Option<f64>,
    max: Option<f64>,
}

struct Accumulator<'q> {
    query: &'q Query,
    /// Index into the row's values of each group-by column, aggregation column, filter.
    group_at: Vec<usize>,
    agg_at: Vec<Option<usize>>,
    filter_at: Vec<usize>,
    groups: BTreeMap<Vec<String>, (u64, Vec<Stat>)>,
    rows_read: u64,
    rows_matched: u64,
}

impl<'q> Accumulator<'q> {
    fn new(query: &'q Query, columns: &[&str]) -> Self {
        let at = |c: &str| {
            columns
                .iter()
                .position(|x| *x == c)
                .expect("columns() lists every column")
        };
        Accumulator {
            query,
            group_at: query.group_by.iter().map(|c| at(c)).collect(),
            agg_at: query
                .aggregations
                .iter()
                .map(|a| a.column.as_deref().map(at))
                .collect(),
            filter_at: query.filters.iter().map(|f| at(&f.column)).collect(),
            groups: BTreeMap::new(),
            rows_read: 0,
            rows_matched: 0,
        }
    }

    fn add(&mut self, values: &[Option<String>]) -> Result<(), AggregateError> {
        self.rows_read += 1;
        let passes = self
            .query
            .filters
            .iter()
            .zip(&self.filter_at)
            .all(|(f, i)| f.holds(values[*i].as_deref()));
        if !passes {
            return Ok(());
        }
        self.rows_matched += 1;
        let key: Vec<String> = self
            .group_at
            .iter()
            .map(|i| values[*i].clone().unwrap_or_default())
            .collect();
        if !self.groups.contains_key(&key) && self.groups.len() == MAX_GROUPS {
            return Err(AggregateError::TooManyGroups);
        }
        let (rows, stats) = self
            .groups
            .entry(key)
            .or_insert_with(|| (0, vec![Stat::default(); self.agg_at.len()]));
        *rows += 1;
        for (stat, at) in stats.iter_mut().zip(&self.agg_at) {
            let Some(x) = at.and_then(|i| values[i].as_deref()).and_then(number) else {
                continue;
            };
            stat.n += 1;
            stat.sum += x;
            stat.min = Some(stat.min.map_or(x, |m| m.min(x)));
            stat.max = Some(stat.max.map_or(x, |m| m.max(x)));
        }
        Ok(())
    }

    fn finish(self, k: u32) -> Answer {
        let mut groups = Vec::new();
        let mut suppressed = 0u32;
        if self.groups.is_empty() && self.query.group_by.is_empty() {
            // The one group of "all matching rows" is empty: smaller than any k.
            suppressed = 1;
        }
        for (keys, (rows, stats)) in self.groups {
            if rows < u64::from(k.max(1)) {
                suppressed += 1;
                continue;
            }
            let values = self
                .query
                .aggregations
                .iter()
                .zip(&stats)
                .map(|(a, s)| match a.function {
                    Function::Count => Some(rows as f64),
                    _ if s.n == 0 => None,
                    Function::Sum => Some(s.sum),
                    Function::Avg => Some(s.sum / s.n as f64),
                    Function::Min => s.min,
                    Function::Max => s.max,
                })
                .collect();
            groups.push(Group { keys, rows, values });
        }
        Answer {
            groups,
            suppressed_groups: suppressed,
            rows_read: self.rows_read,
            rows_matched: self.rows_matched,
        }
    }
}
