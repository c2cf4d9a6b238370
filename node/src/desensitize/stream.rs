//! Masking a whole CSV or JSON Lines payload, record by record, from a reader to a
//! writer.
//!
//! The output is deterministic: the same payload, plan, key and options always give
//! the same bytes, so a delivery can be produced again byte for byte.
//! - CSV is written back with `\n` line ends and quotes only where needed; dropped
//!   columns leave the header and every row.
//! - JSON Lines are written back one compact object per line (keys in sorted order);
//!   a selected value that is a number or a boolean is masked as its text and becomes a
//!   string; an object or array is hashed as its JSON text or masked entirely. Lines that
//!   are not JSON objects cannot be masked and are withheld (counted). Blank lines are
//!   left out.
//!
//! The payload is read more than once: a first pass counts the records sharing each
//! combination of released quasi-identifiers (their equivalence classes), so the
//! k-anonymity of what is released is known and, under a minimum k, the records of
//! smaller classes are withheld; then the records are written. In [`Order::Keyed`] they
//! are written in an order drawn from the agreement's key (a keyed hash of each
//! record's position, sorted), so two agreements' deliveries of one product do not
//! line up row by row. Memory holds one digest and count per class, and at most
//! [`ORDER_BUFFER`] bytes of masked records: a larger payload is written in several
//! passes, each taking the records whose keyed positions fall in its share.

use std::collections::HashMap;
use std::io::{Read, Write};

use ring::hmac;
use serde::{Deserialize, Serialize};

use super::DesensitizeError;
use super::method::{self, Masked};
use super::plan::{
    self, FieldAction, IDENTIFIER_RULE, Plan, SelectedBy, describe_method, describe_rule, digest128,
};

/// What the masking did to one field: listed in the signed manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppliedRule {
    /// The column (CSV) or top-level key (JSON Lines).
    pub field: String,
    /// The rule's position in the policy's mask rules (1-based) and the rule in words.
    pub rule: String,
    /// How the rule selected the field: by its name, its header, or its values.
    pub selected_by: SelectedBy,
    /// The method in words.
    pub method: String,
    /// Values changed (or removed, for `drop`).
    pub values: u64,
    /// Values a generalisation could not read, masked entirely instead.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unreadable: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The order records are written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// As they are read.
    Input,
    /// Sorted by a keyed hash of each record's position under the agreement's key.
    Keyed,
}

/// How a payload is masked beyond its plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    /// Withhold the records of equivalence classes smaller than this.
    pub min_k: Option<u32>,
    pub order: Order,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            min_k: None,
            order: Order::Input,
        }
    }
}

/// Masked records held in memory at once when writing them in keyed order.
pub const ORDER_BUFFER: u64 = 32 << 20;

/// Domain separation of the keyed record order.
const ORDER_LABEL: &[u8] = b"liutong/desensitize/record-order/v1\0";

/// The result of masking a payload.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub applied: Vec<AppliedRule>,
    /// Records written.
    pub records: u64,
    /// Records that could not be masked and were left out (JSON Lines lines that are not
    /// objects).
    pub withheld: u64,
    /// The quasi-identifiers the k-anonymity is measured over.
    pub quasi_identifiers: Vec<String>,
    /// The size of the smallest equivalence class among the records written (`None`
    /// when none is written).
    pub k_anonymity: Option<u64>,
    /// Records left out because fewer than the minimum k records shared their
    /// quasi-identifiers.
    pub withheld_for_k: u64,
}

/// What masking one record did, added to the counters only if it is written.
#[derive(Default)]
struct Tally {
    values: Vec<usize>,
    unreadable: Vec<usize>,
    content: Vec<(String, usize)>,
}

impl Tally {
    fn clear(&mut self) {
        self.values.clear();
        self.unreadable.clear();
        self.content.clear();
    }

    fn content(&mut self, field: &str, rules: &[usize]) {
        for rule in rules {
            self.content.push((field.to_owned(), *rule));
        }
    }
}

struct Counters {
    values: Vec<u64>,
    unreadable: Vec<u64>,
    /// Values masked inside the text of fields no rule selects, by field and rule.
    content: std::collections::BTreeMap<(String, usize), u64>,
}

impl Counters {
    fn new(plan: &Plan) -> Self {
        Counters {
            values: vec![0; plan.actions.len()],
            unreadable: vec![0; plan.actions.len()],
            content: Default::default(),
        }
    }

    fn add(&mut self, tally: &Tally) {
        for i in &tally.values {
            self.values[*i] += 1;
        }
        for i in &tally.unreadable {
            self.unreadable[*i] += 1;
        }
        for (field, rule) in &tally.content {
            *self.content.entry((field.clone(), *rule)).or_default() += 1;
        }
    }

    fn finish(self, plan: &Plan) -> Vec<AppliedRule> {
        plan.actions
            .iter()
            .enumerate()
            .map(|(i, a)| AppliedRule {
                field: a.field.clone(),
                rule: if a.rule == IDENTIFIER_RULE {
                    "no rule: an identifier gets a pseudonym of this agreement".to_owned()
                } else {
                    format!(
                        "rule {}: {}",
                        a.rule + 1,
                        describe_rule(&plan.rules[a.rule])
                    )
                },
                selected_by: a.selected_by,
                method: describe_method(&a.method),
                values: self.values[i],
                unreadable: self.unreadable[i],
            })
            .chain(
                self.content
                    .into_iter()
                    .map(|((field, rule), values)| AppliedRule {
                        field,
                        rule: format!("rule {}: {}", rule + 1, describe_rule(&plan.rules[rule])),
                        selected_by: SelectedBy::Content,
                        method: format!(
                            "{}, inside the text",
                            describe_method(&plan.rules[rule].method)
                        ),
                        values,
                        unreadable: 0,
                    }),
            )
            .collect()
    }
}

fn index_of(plan: &Plan, action: &FieldAction) -> usize {
    plan.actions
        .iter()
        .position(|a| a.field == action.field)
        .expect("actions come from the plan")
}

/// One masked record: its bytes as written, and the digest of its released
/// quasi-identifiers (its equivalence class).
struct MaskedRecord {
    bytes: Vec<u8>,
    class: u128,
}

/// The digest of a record's released quasi-identifiers; `None` for a field the record
/// lacks (distinct from an empty value).
fn class_of<'a>(values: impl Iterator<Item = Option<&'a str>>) -> u128 {
    let parts: Vec<Vec<u8>> = values
        .map(|v| match v {
            Some(v) => [b"=".as_slice(), v.as_bytes()].concat(),
            None => b"-".to_vec(),
        })
        .collect();
    let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
    digest128(&refs)
}

/// A format's record-by-record masking, read from the start by each pass.
trait Masker {
    /// The bytes written before the records (the CSV header).
    fn preamble(&mut self) -> Result<Vec<u8>, DesensitizeError>;
    /// Calls `f` with each record masked, in input order; returns the number of input
    /// records that cannot be masked and are withheld.
    fn each(
        &mut self,
        data: &mut dyn Read,
        f: &mut dyn FnMut(MaskedRecord, &Tally) -> Result<(), DesensitizeError>,
    ) -> Result<u64, DesensitizeError>;
}

/// Masks with `masker` over the payload `open` gives (once per pass) into `out`.
fn run<R: Read>(
    plan: &Plan,
    key: &hmac::Key,
    options: Options,
    masker: &mut dyn Masker,
    open: impl Fn() -> R,
    mut out: impl Write,
) -> Result<Outcome, DesensitizeError> {
    let write_err = |e: std::io::Error| DesensitizeError::Write(e.to_string());
    // Pass 1: the equivalence classes and the size of what is written.
    let mut classes: HashMap<u128, u64> = HashMap::new();
    let mut masked_bytes = 0u64;
    let withheld = masker.each(&mut open(), &mut |r, _| {
        *classes.entry(r.class).or_default() += 1;
        masked_bytes += r.bytes.len() as u64;
        Ok(())
    })?;
    let min_k = u64::from(options.min_k.unwrap_or(0));
    let released = |class: &u128| classes.get(class).is_some_and(|n| *n >= min_k);
    let k_anonymity = classes.values().filter(|n| **n >= min_k).min().copied();
    let withheld_for_k = classes.values().filter(|n| **n < min_k).sum();

    out.write_all(&masker.preamble()?).map_err(write_err)?;
    let mut counters = Counters::new(plan);
    let mut records = 0u64;
    match options.order {
        Order::Input => {
            masker.each(&mut open(), &mut |r, tally| {
                if released(&r.class) {
                    counters.add(tally);
                    records += 1;
                    out.write_all(&r.bytes).map_err(write_err)?;
                }
                Ok(())
            })?;
        }
        Order::Keyed => {
            // Each pass takes the records whose keyed position falls in its share of
            // the 64-bit range, so at most about ORDER_BUFFER bytes are held.
            let passes = masked_bytes / ORDER_BUFFER + 1;
            for pass in 0..passes {
                let mut held: Vec<(u64, u64, Vec<u8>)> = Vec::new();
                let mut position = 0u64;
                masker.each(&mut open(), &mut |r, tally| {
                    let at = position;
                    position += 1;
                    let tag = order_tag(key, at);
                    let share = ((u128::from(tag) * u128::from(passes)) >> 64) as u64;
                    if share == pass && released(&r.class) {
                        counters.add(tally);
                        held.push((tag, at, r.bytes));
                    }
                    Ok(())
                })?;
                held.sort_unstable_by_key(|(tag, at, _)| (*tag, *at));
                records += held.len() as u64;
                for (_, _, bytes) in held {
                    out.write_all(&bytes).map_err(write_err)?;
                }
            }
        }
    }
    out.flush().map_err(write_err)?;
    Ok(Outcome {
        applied: counters.finish(plan),
        records,
        withheld,
        quasi_identifiers: plan.quasi_identifiers.clone(),
        k_anonymity,
        withheld_for_k,
    })
}

/// The keyed position of record `at` (0-based, in input order).
fn order_tag(key: &hmac::Key, at: u64) -> u64 {
    let mut ctx = hmac::Context::with_key(key);
    ctx.update(ORDER_LABEL);
    ctx.update(&at.to_be_bytes());
    let tag = ctx.sign();
    u64::from_be_bytes(tag.as_ref()[..8].try_into().expect("32 bytes"))
}

/// Masks CSV data (header row first) into `out`; `open` gives the data from its start
/// (it is read more than once).
pub fn mask_csv<R: Read>(
    plan: &Plan,
    key: &hmac::Key,
    options: Options,
    open: impl Fn() -> R,
    out: impl Write,
) -> Result<Outcome, DesensitizeError> {
    let header: Vec<String> = csv::ReaderBuilder::new()
        .flexible(true)
        .from_reader(open())
        .headers()
        .map_err(|e| DesensitizeError::Read(e.to_string()))?
        .iter()
        .map(str::to_owned)
        .collect();
    let mut masker = CsvMasker {
        plan,
        key,
        header,
        by_position: Vec::new(),
    };
    run(plan, key, options, &mut masker, open, out)
}

/// Where the CSV writer puts one row, for it to be taken out.
#[derive(Clone, Default)]
struct RowBuffer(std::rc::Rc<std::cell::RefCell<Vec<u8>>>);

impl Write for RowBuffer {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.borrow_mut().extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct CsvMasker<'a> {
    plan: &'a Plan,
    key: &'a hmac::Key,
    header: Vec<String>,
    /// The action on each column position, found once (rows longer than the header
    /// get theirs when first seen), and whether it is a quasi-identifier.
    by_position: Vec<(Option<(usize, FieldAction)>, bool)>,
}

impl CsvMasker<'_> {
    fn position(&mut self, i: usize) -> &(Option<(usize, FieldAction)>, bool) {
        while self.by_position.len() <= i {
            let name = plan::csv_field_name(&self.header, self.by_position.len());
            let action = self
                .plan
                .action(&name)
                .map(|a| (index_of(self.plan, a), a.clone()));
            let quasi = self.plan.quasi_identifiers.contains(&name);
            self.by_position.push((action, quasi));
        }
        &self.by_position[i]
    }

    fn writer() -> (csv::Writer<RowBuffer>, RowBuffer) {
        let buffer = RowBuffer::default();
        let writer = csv::WriterBuilder::new()
            .flexible(true)
            .terminator(csv::Terminator::Any(b'\n'))
            .from_writer(buffer.clone());
        (writer, buffer)
    }

    /// The bytes of one row as the CSV writer writes it.
    fn written(
        (writer, buffer): &mut (csv::Writer<RowBuffer>, RowBuffer),
        row: &[String],
    ) -> Result<Vec<u8>, DesensitizeError> {
        writer
            .write_record(row)
            .map_err(|e| DesensitizeError::Write(e.to_string()))?;
        writer
            .flush()
            .map_err(|e| DesensitizeError::Write(e.to_string()))?;
        Ok(std::mem::take(&mut *buffer.0.borrow_mut()))
    }
}

impl Masker for CsvMasker<'_> {
    fn preamble(&mut self) -> Result<Vec<u8>, DesensitizeError> {
        let header = self.header.clone();
        let kept: Vec<String> = header
            .iter()
            .enumerate()
            .filter(|(i, _)| {
                !matches!(&self.position(*i).0, Some((_, a)) if a.method == liutong_policy::MaskMethod::Drop)
            })
            .map(|(_, h)| h.clone())
            .collect();
        Self::written(&mut Self::writer(), &kept)
    }

    fn each(
        &mut self,
        data: &mut dyn Read,
        f: &mut dyn FnMut(MaskedRecord, &Tally) -> Result<(), DesensitizeError>,
    ) -> Result<u64, DesensitizeError> {
        let read_err = |e: csv::Error| DesensitizeError::Read(e.to_string());
        let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(data);
        let mut writer = Self::writer();
        // Quasi-identifier positions of the header that a short row may lack.
        let quasi_count = (0..self.header.len())
            .filter(|i| self.position(*i).1)
            .count();
        let mut tally = Tally::default();
        let mut row: Vec<String> = Vec::new();
        let mut quasi: Vec<String> = Vec::new();
        for record in reader.records() {
            let record = record.map_err(read_err)?;
            row.clear();
            quasi.clear();
            tally.clear();
            for (i, value) in record.iter().enumerate() {
                let (action, is_quasi) = self.position(i).clone();
                let released = match action {
                    None => match self.plan.mask_in_text(value, self.key) {
                        Some((masked, used)) => {
                            tally.content(&plan::csv_field_name(&self.header, i), &used);
                            Some(masked)
                        }
                        None => Some(value.to_owned()),
                    },
                    Some((slot, action)) => match action.apply(value, self.key) {
                        Masked::Dropped => {
                            tally.values.push(slot);
                            None
                        }
                        Masked::Value(v) => {
                            if v != value {
                                tally.values.push(slot);
                            }
                            Some(v)
                        }
                        Masked::Unreadable(v) => {
                            tally.values.push(slot);
                            tally.unreadable.push(slot);
                            Some(v)
                        }
                    },
                };
                if let Some(v) = released {
                    if is_quasi {
                        quasi.push(v.clone());
                    }
                    row.push(v);
                }
            }
            let missing = quasi_count.saturating_sub(quasi.len());
            let class = class_of(
                quasi
                    .iter()
                    .map(|v| Some(v.as_str()))
                    .chain(std::iter::repeat_n(None, missing)),
            );
            let bytes = Self::written(&mut writer, &row)?;
            f(MaskedRecord { bytes, class }, &tally)?;
        }
        Ok(0)
    }
}

/// Masks JSON Lines data into `out`; `open` gives the data from its start (it is read
/// more than once).
pub fn mask_jsonl<R: Read>(
    plan: &Plan,
    key: &hmac::Key,
    options: Options,
    open: impl Fn() -> R,
    out: impl Write,
) -> Result<Outcome, DesensitizeError> {
    run(
        plan,
        key,
        options,
        &mut JsonlMasker { plan, key },
        open,
        out,
    )
}

struct JsonlMasker<'a> {
    plan: &'a Plan,
    key: &'a hmac::Key,
}

impl Masker for JsonlMasker<'_> {
    fn preamble(&mut self) -> Result<Vec<u8>, DesensitizeError> {
        Ok(Vec::new())
    }

    fn each(
        &mut self,
        data: &mut dyn Read,
        f: &mut dyn FnMut(MaskedRecord, &Tally) -> Result<(), DesensitizeError>,
    ) -> Result<u64, DesensitizeError> {
        let mut failure: Option<DesensitizeError> = None;
        let mut tally = Tally::default();
        let withheld = plan::for_each_object(data, |object| {
            if failure.is_some() {
                return;
            }
            tally.clear();
            let object: plan::JsonObject = mask_members(
                self.plan,
                self.key,
                "",
                object.clone().into_iter(),
                &mut tally,
            )
            .into_iter()
            .collect();
            let texts: Vec<Option<String>> = self
                .plan
                .quasi_identifiers
                .iter()
                .map(|path| {
                    member_at(&object, path)
                        .and_then(|v| plan::json_text(v).map(|t| t.into_owned()))
                })
                .collect();
            let class = class_of(texts.iter().map(|t| t.as_deref()));
            let mut bytes = match serde_json::to_vec(&object) {
                Ok(b) => b,
                Err(e) => {
                    failure = Some(DesensitizeError::Write(e.to_string()));
                    return;
                }
            };
            bytes.push(b'\n');
            if let Err(e) = f(MaskedRecord { bytes, class }, &tally) {
                failure = Some(e);
            }
        })?;
        match failure {
            Some(e) => Err(e),
            None => Ok(withheld),
        }
    }
}

/// The value at a field path (`contact.district`) of a masked record.
fn member_at<'a>(object: &'a plan::JsonObject, path: &str) -> Option<&'a serde_json::Value> {
    let mut parts = path.split('.');
    let mut value = object.get(parts.next()?)?;
    for part in parts {
        value = value.as_object()?.get(part)?;
    }
    Some(value)
}

/// The members of the object at `path` (`""` for the record), masked: each by the
/// rule that selects it, a nested object member by member, and any other value by the
/// content rules for what is found inside its text.
fn mask_members(
    plan: &Plan,
    key: &hmac::Key,
    path: &str,
    members: impl Iterator<Item = (String, serde_json::Value)>,
    tally: &mut Tally,
) -> Vec<(String, serde_json::Value)> {
    let mut out = Vec::new();
    for (k, value) in members {
        let name = plan::member_path(path, &k);
        if let Some(action) = plan.action(&name) {
            let slot = index_of(plan, action);
            match mask_json_value(action, &value, key) {
                None => out.push((k, value)),
                Some(Masked::Dropped) => tally.values.push(slot),
                Some(Masked::Value(v)) => {
                    tally.values.push(slot);
                    out.push((k, serde_json::Value::String(v)));
                }
                Some(Masked::Unreadable(v)) => {
                    tally.values.push(slot);
                    tally.unreadable.push(slot);
                    out.push((k, serde_json::Value::String(v)));
                }
            }
            continue;
        }
        let masked = match value {
            serde_json::Value::Object(inner) if path.matches('.').count() < plan::MAX_DEPTH => {
                serde_json::Value::Object(
                    mask_members(plan, key, &name, inner.into_iter(), tally)
                        .into_iter()
                        .collect(),
                )
            }
            other => match plan::json_text(&other).and_then(|t| plan.mask_in_text(&t, key)) {
                Some((text, used)) => {
                    tally.content(&name, &used);
                    serde_json::Value::String(text)
                }
                None => other,
            },
        };
        out.push((k, masked));
    }
    out
}

/// The masked form of one JSON value; `None` when it stays as it is (null, or an empty
/// string under a method other than `drop`).
fn mask_json_value(
    action: &FieldAction,
    value: &serde_json::Value,
    key: &hmac::Key,
) -> Option<Masked> {
    use liutong_policy::MaskMethod;
    if action.method == MaskMethod::Drop {
        return Some(Masked::Dropped);
    }
    let text = plan::json_text(value)?;
    if text.is_empty() {
        return None;
    }
    if value.is_object() || value.is_array() {
        // A structure has no first characters or year to keep: hash it or hide it.
        return Some(match action.method {
            MaskMethod::Hash => Masked::Value(method::keyed_hash(key, &text)),
            MaskMethod::Generalize { .. } => Masked::Unreadable(method::mask_all(&text)),
            _ => Masked::Value(method::mask_all(&text)),
        });
    }
    Some(action.apply(&text, key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desensitize::plan::{detect_csv, detect_jsonl};
    use liutong_policy::{FieldSelector, FieldType, Generalization, MaskMethod, MaskRule};

    fn rules() -> Vec<MaskRule> {
        vec![
            MaskRule {
                field: FieldSelector::Type(FieldType::Idcard),
                method: MaskMethod::Keep { first: 6, last: 4 },
            },
            MaskRule {
                field: FieldSelector::Type(FieldType::Mobile),
                method: MaskMethod::Keep { first: 3, last: 4 },
            },
            MaskRule {
                field: FieldSelector::Type(FieldType::Name),
                method: MaskMethod::Keep { first: 1, last: 0 },
            },
            MaskRule {
                field: FieldSelector::Type(FieldType::Email),
                method: MaskMethod::Hash,
            },
            MaskRule {
                field: FieldSelector::Name("address".into()),
                method: MaskMethod::Drop,
            },
            MaskRule {
                field: FieldSelector::Name("birth_date".into()),
                method: MaskMethod::Generalize {
                    to: Generalization::Year,
                },
            },
        ]
    }

    fn key() -> hmac::Key {
        hmac::Key::new(hmac::HMAC_SHA256, b"agreement key")
    }

    #[test]
    fn csv_rows_are_masked_and_dropped_columns_leave() {
        let data = "name,idcard,mobile,email,address,birth_date,visits\n\
                    张三,11010519491231002X,13812345678,zs@example.com,\"Xihu Rd 1, Hangzhou\",1949-12-31,3\n\
                    李四,,,,,unknown,5\n";
        let plan = Plan::new(rules(), &detect_csv(data.as_bytes()).unwrap());
        let mut out = Vec::new();
        let outcome = mask_csv(
            &plan,
            &key(),
            Options::default(),
            || data.as_bytes(),
            &mut out,
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        let hash = method::keyed_hash(&key(), "zs@example.com");
        assert_eq!(
            text,
            format!(
                "name,idcard,mobile,email,birth_date,visits\n\
                 张*,110105********002X,138****5678,{hash},1949,3\n\
                 李*,,,,*******,5\n"
            )
        );
        assert_eq!(outcome.records, 2);
        let summary: Vec<(&str, u64, u64)> = outcome
            .applied
            .iter()
            .map(|a| (a.field.as_str(), a.values, a.unreadable))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("name", 2, 0),
                ("idcard", 1, 0),
                ("mobile", 1, 0),
                ("email", 1, 0),
                ("address", 2, 0),
                ("birth_date", 2, 1),
            ]
        );
        assert_eq!(
            outcome.applied[0].rule,
            "rule 3: type name: keep first 1, last 0"
        );
    }

    #[test]
    fn jsonl_values_are_masked_and_non_objects_withheld() {
        let data = "{\"name\":\"王五\",\"mobile\":13812345678,\"address\":{\"city\":\"Hangzhou\"},\"n\":1}\n\
                    [1,2]\n\
                    {\"name\":null,\"email\":{\"a\":1}}\n";
        let plan = Plan::new(rules(), &detect_jsonl(data.as_bytes()).unwrap());
        let mut out = Vec::new();
        let outcome = mask_jsonl(
            &plan,
            &key(),
            Options::default(),
            || data.as_bytes(),
            &mut out,
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        let hash = method::keyed_hash(&key(), "{\"a\":1}");
        assert_eq!(
            text,
            format!(
                "{{\"mobile\":\"138****5678\",\"n\":1,\"name\":\"王*\"}}\n\
                 {{\"email\":\"{hash}\",\"name\":null}}\n"
            )
        );
        assert_eq!((outcome.records, outcome.withheld), (2, 1));
    }

    #[test]
    fn the_same_input_masks_to_the_same_bytes() {
        let data = "email,mobile\na@b.cn,13812345678\n";
        let plan = Plan::new(rules(), &detect_csv(data.as_bytes()).unwrap());
        let run = |k: &hmac::Key| {
            let mut out = Vec::new();
            mask_csv(&plan, k, Options::default(), || data.as_bytes(), &mut out).unwrap();
            out
        };
        assert_eq!(run(&key()), run(&key()));
        let other = hmac::Key::new(hmac::HMAC_SHA256, b"another agreement");
        assert_ne!(run(&key()), run(&other));
    }

    /// People in three groups by district, birth year and gender: 3, 2 and 1 records.
    const GROUPS: &str = "name,district,birth_date,gender,income\n\
                          张三,330106,1990-01-02,M,100\n\
                          李四,330106,1990-07-09,M,200\n\
                          王五,330106,1990-03-03,M,100\n\
                          赵六,330102,1985-01-01,F,200\n\
                          钱七,330102,1985-02-02,F,100\n\
                          孙八,330102,1986-02-02,F,200\n";

    fn group_rules() -> Vec<MaskRule> {
        vec![
            MaskRule {
                field: FieldSelector::Type(FieldType::Name),
                method: MaskMethod::Drop,
            },
            MaskRule {
                field: FieldSelector::Name("birth_date".into()),
                method: MaskMethod::Generalize {
                    to: Generalization::Year,
                },
            },
        ]
    }

    fn masked_groups(options: Options, k: &hmac::Key) -> (String, Outcome) {
        let plan = Plan::for_delivery(group_rules(), &detect_csv(GROUPS.as_bytes()).unwrap());
        let mut out = Vec::new();
        let outcome = mask_csv(&plan, k, options, || GROUPS.as_bytes(), &mut out).unwrap();
        (String::from_utf8(out).unwrap(), outcome)
    }

    #[test]
    fn k_anonymity_is_the_smallest_group_sharing_the_released_quasi_identifiers() {
        let (text, outcome) = masked_groups(Options::default(), &key());
        assert_eq!(
            outcome.quasi_identifiers,
            ["district", "birth_date", "gender"],
            "the dropped name is released as nothing; income is an attribute"
        );
        assert_eq!(
            outcome.k_anonymity,
            Some(1),
            "孙八 is alone in 330102/1986/F"
        );
        assert_eq!((outcome.records, outcome.withheld_for_k), (6, 0));
        assert!(text.contains("330102,1986,F,200\n"), "{text}");
    }

    #[test]
    fn a_minimum_k_withholds_the_records_of_smaller_groups() {
        for (min_k, records, withheld, k) in
            [(2, 5, 1, Some(2)), (3, 3, 3, Some(3)), (4, 0, 6, None)]
        {
            let options = Options {
                min_k: Some(min_k),
                order: Order::Input,
            };
            let (text, outcome) = masked_groups(options, &key());
            assert_eq!(
                (outcome.records, outcome.withheld_for_k, outcome.k_anonymity),
                (records, withheld, k),
                "min k {min_k}: {text}"
            );
            assert_eq!(text.lines().count() as u64, records + 1, "{text}");
            assert_eq!(
                text.lines().next(),
                Some("district,birth_date,gender,income")
            );
            // No released combination is shared by fewer than the minimum.
            let mut groups: std::collections::HashMap<String, u32> = Default::default();
            for line in text.lines().skip(1) {
                let qi: Vec<&str> = line.split(',').take(3).collect();
                *groups.entry(qi.join(",")).or_default() += 1;
            }
            assert!(groups.values().all(|n| *n >= min_k), "{groups:?}");
        }
    }

    #[test]
    fn jsonl_quasi_identifiers_and_identifiers_are_found_by_path() {
        let mut data = String::new();
        for i in 0..12 {
            data.push_str(&format!(
                "{{\"uid\":\"u{i}\",\"home\":{{\"district\":\"33010{}\"}},\"gender\":\"{}\",\"n\":{}}}\n",
                i % 2,
                if i < 11 { "M" } else { "F" },
                i % 3
            ));
        }
        let plan = Plan::for_delivery(vec![], &detect_jsonl(data.as_bytes()).unwrap());
        assert_eq!(plan.quasi_identifiers, ["gender", "home.district"]);
        let options = Options {
            min_k: Some(2),
            order: Order::Keyed,
        };
        let mut out = Vec::new();
        let outcome = mask_jsonl(&plan, &key(), options, || data.as_bytes(), &mut out).unwrap();
        // Groups: 330100/M has 6, 330101/M 5, 330101/F (u11) 1, withheld.
        assert_eq!(
            (outcome.records, outcome.withheld_for_k, outcome.k_anonymity),
            (11, 1, Some(5))
        );
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains("\"u3\""), "{text}");
        assert!(text.contains(&method::keyed_hash(&key(), "u3")), "{text}");
        assert!(!text.contains(&method::keyed_hash(&key(), "u11")), "{text}");
        assert_eq!(outcome.applied[0].selected_by, SelectedBy::Identifier);
        assert_eq!(outcome.applied[0].values, 11);
    }

    #[test]
    fn keyed_order_is_stable_for_one_key_and_differs_for_another() {
        let keyed = Options {
            min_k: None,
            order: Order::Keyed,
        };
        let (input, _) = masked_groups(Options::default(), &key());
        let (once, outcome) = masked_groups(keyed, &key());
        let (again, _) = masked_groups(keyed, &key());
        assert_eq!(once, again, "the same key gives the same bytes");
        assert_eq!(outcome.records, 6);
        let sorted = |t: &str| {
            let mut l: Vec<String> = t.lines().map(str::to_owned).collect();
            l.sort();
            l
        };
        assert_eq!(sorted(&once), sorted(&input), "the same records");
        assert_eq!(
            once.lines().next(),
            input.lines().next(),
            "the header first"
        );
        // Over 20 keys, the orders are not all one: the key decides.
        let orders: std::collections::HashSet<String> = (0..20)
            .map(|i| {
                let k = hmac::Key::new(hmac::HMAC_SHA256, format!("agreement {i}").as_bytes());
                masked_groups(keyed, &k).0
            })
            .collect();
        assert!(orders.len() > 5, "{orders:?}");
    }

    mod property {
        use super::*;
        use crate::desensitize::recognise::idcard_check_character;
        use proptest::prelude::*;

        /// A valid mainland ID number from a region, a birth date and a sequence.
        fn idcard() -> impl Strategy<Value = String> {
            (
                110000u32..660000,
                1900u32..2025,
                1u32..13,
                1u32..29,
                0u32..1000,
            )
                .prop_map(|(region, y, m, d, seq)| {
                    let first17 = format!("{region:06}{y:04}{m:02}{d:02}{seq:03}");
                    let check = idcard_check_character(&first17).expect("17 digits");
                    format!("{first17}{check}")
                })
        }

        fn mobile() -> impl Strategy<Value = String> {
            (3u8..10, 0u64..1_000_000_000).prop_map(|(second, rest)| format!("1{second}{rest:09}"))
        }

        fn name() -> impl Strategy<Value = String> {
            let surnames = prop::sample::select(vec!["张", "王", "李", "赵", "欧阳", "司马"]);
            let given = prop::collection::vec(
                prop::sample::select(vec!["伟", "芳", "娜", "敏", "静", "磊", "洋", "艳"]),
                1..3,
            );
            (surnames, given).prop_map(|(s, g)| format!("{s}{}", g.concat()))
        }

        fn email() -> impl Strategy<Value = String> {
            (
                "[a-z][a-z0-9._]{2,12}",
                prop::sample::select(vec!["example.com", "mail.gov.cn"]),
            )
                .prop_map(|(local, domain)| format!("{local}@{domain}"))
        }

        fn method() -> impl Strategy<Value = MaskMethod> {
            prop_oneof![
                (0u32..20, 0u32..20).prop_map(|(first, last)| MaskMethod::Keep { first, last }),
                Just(MaskMethod::MaskAll),
                Just(MaskMethod::Hash),
                Just(MaskMethod::Drop),
            ]
        }

        type Row = (String, String, String, String, u16);

        fn rows() -> impl Strategy<Value = Vec<Row>> {
            prop::collection::vec((name(), idcard(), mobile(), email(), 0u16..1000), 1..40)
        }

        /// Type rules with any methods; ID numbers, mobiles and e-mails sit under
        /// neutral headers half of the time, so they are found by their values.
        fn rules_and_headers() -> impl Strategy<Value = (Vec<MaskRule>, [&'static str; 5])> {
            (prop::collection::vec(method(), 4), any::<bool>()).prop_map(|(methods, neutral)| {
                let rules = FieldType::ALL
                    .iter()
                    .zip(methods)
                    .map(|(t, method)| MaskRule {
                        field: FieldSelector::Type(*t),
                        method,
                    })
                    .collect();
                let headers = if neutral {
                    ["姓名", "c1", "c2", "c3", "visits"]
                } else {
                    ["name", "idcard", "mobile", "email", "visits"]
                };
                (rules, headers)
            })
        }

        /// No output record contains its own row's name, ID number, mobile or e-mail, and
        /// an identifier of another row appears in a record only where this row's own
        /// values contain it: a kept part of one value may equal another row's whole value
        /// (`李敏*` for 李敏伟 beside 李敏; an e-mail `xd…@mail.gov.cn` kept but its first
        /// character beside `d…@mail.gov.cn`), which reveals nothing of that other row.
        fn assert_hidden(output: &str, rows: &[Row], header: bool) -> Result<(), TestCaseError> {
            let records: Vec<&str> = output.lines().skip(usize::from(header)).collect();
            prop_assert_eq!(records.len(), rows.len());
            for (record, (name, id, mobile, email, _)) in records.iter().zip(rows) {
                let own = [name, id, mobile, email];
                for value in own {
                    prop_assert!(
                        !record.contains(value.as_str()),
                        "{value} appears in its masked record {record}"
                    );
                }
                for (_, other_id, other_mobile, other_email, _) in rows {
                    for other in [other_id, other_mobile, other_email] {
                        prop_assert!(
                            !record.contains(other.as_str())
                                || own.iter().any(|v| v.contains(other.as_str())),
                            "{other} of another row appears in the masked record {record}"
                        );
                    }
                }
            }
            Ok(())
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(128))]

            #[test]
            fn masked_csv_never_contains_an_original_value(
                rows in rows(),
                (rules, headers) in rules_and_headers(),
            ) {
                let mut data = headers.join(",") + "\n";
                for (n, i, m, e, v) in &rows {
                    data.push_str(&format!("{n},{i},{m},{e},{v}\n"));
                }
                let plan = Plan::new(rules, &detect_csv(data.as_bytes()).unwrap());
                let mut out = Vec::new();
                let outcome = mask_csv(&plan, &key(), Options::default(), || data.as_bytes(), &mut out).unwrap();
                prop_assert_eq!(outcome.records, rows.len() as u64);
                assert_hidden(&String::from_utf8(out).unwrap(), &rows, true)?;
            }

            #[test]
            fn masked_jsonl_never_contains_an_original_value(
                rows in rows(),
                (rules, headers) in rules_and_headers(),
                numbers in any::<bool>(),
            ) {
                let mut data = String::new();
                for (n, i, m, e, v) in &rows {
                    // Mobiles as JSON numbers half of the time.
                    let mobile = if numbers { m.clone() } else { format!("\"{m}\"") };
                    data.push_str(&format!(
                        "{{\"{}\":\"{n}\",\"{}\":\"{i}\",\"{}\":{mobile},\"{}\":\"{e}\",\"{}\":{v}}}\n",
                        headers[0], headers[1], headers[2], headers[3], headers[4]
                    ));
                }
                let plan = Plan::new(rules, &detect_jsonl(data.as_bytes()).unwrap());
                let mut out = Vec::new();
                let outcome = mask_jsonl(&plan, &key(), Options::default(), || data.as_bytes(), &mut out).unwrap();
                prop_assert_eq!((outcome.records, outcome.withheld), (rows.len() as u64, 0));
                assert_hidden(&String::from_utf8(out).unwrap(), &rows, false)?;
            }
        }
    }
}
