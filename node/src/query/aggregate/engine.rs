//! The aggregate engine: one pass over the rows, each value masked first when the
//! agreement carries mask rules, then filtered, grouped and aggregated; groups smaller
//! than k are withheld.
//!
//! What an answer must not say, because each was used to read one person's values:
//! - how many groups were withheld: with a filter on a name, 0 withheld groups means
//!   "no such row" and 1 means "one row", so every filtered or grouped query says only
//!   that groups may have been withheld, whatever the rows were;
//! - how many rows passed the filters (the same signal), so it is not kept at all;
//! - an extreme value: with k > 1, `min` is the mean of the k lowest values and `max`
//!   the mean of the k highest, and only for groups of at least 3k rows. Below 3k, the
//!   sum less the k lowest and the k highest would leave fewer than k values, down to
//!   one person's. A smaller group shows no min or max.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
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

/// The answer: groups of at least k rows, and whether smaller ones may have been
/// withheld (never how many; see the module doc).
#[derive(Clone, Debug, PartialEq)]
pub struct Answer {
    pub groups: Vec<Group>,
    /// True for every query with a filter or a group-by, and for an unfiltered total
    /// that was withheld: it does not tell whether a filter matched 0 rows or 1.
    pub may_be_withheld: bool,
    /// Rows read (all rows of the product, whatever the query).
    pub rows_read: u64,
}

/// The smallest group, relative to k, whose trimmed `min` and `max` are shown.
pub const EXTREMES_AT: u32 = 3;

/// Masking applied to values before the query sees them.
pub type Masking<'a> = Option<(&'a Plan, &'a hmac::Key)>;

/// Per aggregation, the range its values are clamped to before they are added up
/// (`None`: not clamped); empty: none is.
pub type Clamps<'a> = &'a [Option<(f64, f64)>];

/// Runs a checked query over CSV data.
pub fn run_csv(
    query: &Query,
    k: u32,
    masking: Masking<'_>,
    data: impl Read,
) -> Result<Answer, AggregateError> {
    run_csv_clamped(query, k, masking, &[], data)
}

/// Runs a checked query over CSV data, clamping values first.
pub fn run_csv_clamped(
    query: &Query,
    k: u32,
    masking: Masking<'_>,
    clamps: Clamps<'_>,
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
    let mut acc = Accumulator::new(query, &columns, k, clamps);
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
    run_jsonl_clamped(query, k, masking, &[], data)
}

/// Runs a checked query over JSON Lines data, clamping values first.
pub fn run_jsonl_clamped(
    query: &Query,
    k: u32,
    masking: Masking<'_>,
    clamps: Clamps<'_>,
    data: impl Read,
) -> Result<Answer, AggregateError> {
    let columns = query.columns();
    let mut acc = Accumulator::new(query, &columns, k, clamps);
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
    /// The k lowest values seen (a max-heap, so its top is the one to drop) and the k
    /// highest (a min-heap); kept only for `min` and `max` aggregations.
    lowest: BinaryHeap<Ordered>,
    highest: BinaryHeap<Reverse<Ordered>>,
}

/// A finite number with a total order, for the heaps.
#[derive(Clone, Copy, PartialEq)]
struct Ordered(f64);

impl Eq for Ordered {}

impl PartialOrd for Ordered {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Ordered {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

impl Stat {
    fn add(&mut self, x: f64, function: Function, keep: usize) {
        self.n += 1;
        self.sum += x;
        match function {
            Function::Min => {
                self.lowest.push(Ordered(x));
                if self.lowest.len() > keep {
                    self.lowest.pop();
                }
            }
            Function::Max => {
                self.highest.push(Reverse(Ordered(x)));
                if self.highest.len() > keep {
                    self.highest.pop();
                }
            }
            _ => {}
        }
    }

    /// The mean of the kept extreme values, when the group is large enough to show it.
    fn extreme(&self, function: Function, k: u32) -> Option<f64> {
        let k = k.max(1);
        if k > 1 && self.n < u64::from(k) * u64::from(EXTREMES_AT) {
            return None;
        }
        let (sum, n) = match function {
            Function::Min => (
                self.lowest.iter().map(|x| x.0).sum::<f64>(),
                self.lowest.len(),
            ),
            _ => (
                self.highest.iter().map(|x| x.0.0).sum::<f64>(),
                self.highest.len(),
            ),
        };
        (n > 0).then(|| sum / n as f64)
    }
}

struct Accumulator<'q> {
    query: &'q Query,
    /// Index into the row's values of each group-by column, aggregation column, filter.
    group_at: Vec<usize>,
    agg_at: Vec<Option<usize>>,
    filter_at: Vec<usize>,
    groups: BTreeMap<Vec<String>, (u64, Vec<Stat>)>,
    rows_read: u64,
    /// How many extreme values each `min`/`max` keeps: k.
    keep: usize,
    clamps: Vec<Option<(f64, f64)>>,
}

impl<'q> Accumulator<'q> {
    fn new(query: &'q Query, columns: &[&str], k: u32, clamps: Clamps<'_>) -> Self {
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
            keep: usize::try_from(k.max(1)).unwrap_or(usize::MAX),
            clamps: (0..query.aggregations.len())
                .map(|i| clamps.get(i).copied().flatten())
                .collect(),
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
        for (((stat, at), a), clamp) in stats
            .iter_mut()
            .zip(&self.agg_at)
            .zip(&self.query.aggregations)
            .zip(&self.clamps)
        {
            let Some(x) = at.and_then(|i| values[i].as_deref()).and_then(number) else {
                continue;
            };
            let x = clamp.map_or(x, |(lower, upper)| x.clamp(lower, upper));
            stat.add(x, a.function, self.keep);
        }
        Ok(())
    }

    fn finish(self, k: u32) -> Answer {
        let mut groups = Vec::new();
        for (keys, (rows, stats)) in self.groups {
            if rows < u64::from(k.max(1)) {
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
                    Function::Min | Function::Max => s.extreme(a.function, k),
                })
                .collect();
            groups.push(Group { keys, rows, values });
        }
        // Without a filter or a group-by the one group is every row: whether it is shown
        // depends on the product's size alone, so saying so tells nothing about a person.
        let unfiltered = self.query.filters.is_empty() && self.query.group_by.is_empty();
        Answer {
            may_be_withheld: !unfiltered || groups.is_empty(),
            groups,
            rows_read: self.rows_read,
        }
    }
}
