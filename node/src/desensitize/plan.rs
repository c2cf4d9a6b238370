//! Which rule masks which field: the policy's mask rules matched against a product's
//! fields (CSV columns or the top-level keys of JSON Lines objects).
//!
//! A field takes the first rule, in written order, that selects it: a rule on a name
//! selects the field of exactly that name; a rule on a built-in type selects every
//! field whose header names that type or any of whose values is recognised as it (see
//! [`super::recognise`]). Recognising by values needs one pass over the data before
//! masking ([`detect_csv`], [`detect_jsonl`]).
//!
//! Two more kinds of field are planned without a rule:
//! - in a masked delivery ([`Plan::for_delivery`]), an identifier of a record — a
//!   header naming one (`id`, `person_id`, `编号`), or a column of single-token values
//!   (codes, numbers, time stamps) that differ on every one of at least
//!   [`MIN_RECORDS_FOR_DISTINCT`] records — gets a pseudonym of the agreement (the
//!   keyed hash): it still joins rows within one agreement, never across two;
//! - the quasi-identifiers ([`Plan::quasi_identifiers`]) are the released fields whose
//!   combination can single a person out, over which the delivery's k-anonymity is
//!   measured: fields whose header names one (district, birth date, gender, age,
//!   postcode, …) and personal data of a built-in type released with any visible part
//!   (the kept characters of an ID number, a mobile, a name, an e-mail). A pseudonym (a
//!   keyed hash of a personal value or an identifier) is not one: it is unique per
//!   person by design, and unlinkable across agreements. Other columns are taken as
//!   the data's attributes.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::{BufRead, BufReader, Read};

use liutong_policy::{FieldSelector, FieldType, MaskMethod, MaskRule};
use ring::hmac;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::DesensitizeError;
use super::method::{self, Masked};
use super::recognise;

/// Types recognisable from values.
const VALUE_TYPES: [FieldType; 3] = [FieldType::Idcard, FieldType::Mobile, FieldType::Email];

/// The fields of a product and the types their values showed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Detection {
    /// Field names in the order they first appear (CSV: header order; columns past
    /// the header are named `column N`).
    pub fields: Vec<String>,
    /// For each field, the built-in types at least one of its values was recognised as.
    pub value_types: HashMap<String, BTreeSet<FieldTypeKey>>,
    /// JSON Lines fields holding objects: their members are fields of their own, named
    /// by their path (`contact.name`), and masked there.
    pub objects: std::collections::HashSet<String>,
    /// For each field, its distinct values while every one is a token and none repeats.
    distinct: HashMap<String, Distinct>,
}

/// Fewer records than this with a value in a field say little by being all different
/// (a handful of visit counts often are), so such a field is no identifier by its
/// values alone.
pub const MIN_RECORDS_FOR_DISTINCT: u64 = 10;

/// Distinct values after which a field that repeated none is an identifier without
/// looking further (its digests are let go, so memory stays bounded: 16 MiB of
/// digests per field at most).
pub const DISTINCT_SETTLED: usize = 1 << 20;

/// The values of one field seen so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
enum Distinct {
    /// All tokens, none repeated: their 128-bit digests.
    Tracking(HashSet<u128>),
    /// [`DISTINCT_SETTLED`] tokens and none repeated: an identifier, as long as its
    /// further values are tokens.
    Settled,
    /// A value repeated or was no token (see [`recognise::value_is_token`]).
    #[default]
    No,
}

/// A 128-bit digest of a value (SHA-256, cut): collisions are out of reach, so two
/// values share one only when they are equal.
pub fn digest128(parts: &[&[u8]]) -> u128 {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    let d = h.finalize();
    u128::from_be_bytes(d[..16].try_into().expect("32 bytes"))
}

/// [`FieldType`] in an ordered set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FieldTypeKey(u8);

impl From<FieldType> for FieldTypeKey {
    fn from(t: FieldType) -> Self {
        FieldTypeKey(FieldType::ALL.iter().position(|x| *x == t).unwrap_or(0) as u8)
    }
}

impl Detection {
    fn note_field(&mut self, name: &str) {
        if !self.value_types.contains_key(name) {
            self.fields.push(name.to_owned());
            self.value_types.insert(name.to_owned(), BTreeSet::new());
        }
    }

    fn note_value(&mut self, name: &str, value: &str) {
        if value.is_empty() {
            return;
        }
        let seen = self.value_types.entry(name.to_owned()).or_default();
        for t in VALUE_TYPES {
            if !seen.contains(&t.into()) && recognise::value_is(t, value) {
                seen.insert(t.into());
            }
        }
        let distinct = self
            .distinct
            .entry(name.to_owned())
            .or_insert_with(|| Distinct::Tracking(HashSet::new()));
        let next = match distinct {
            Distinct::No => None,
            _ if !recognise::value_is_token(value) || recognise::value_is_amount(value) => {
                Some(Distinct::No)
            }
            Distinct::Settled => None,
            Distinct::Tracking(digests) => {
                if !digests.insert(digest128(&[value.as_bytes()])) {
                    Some(Distinct::No)
                } else if digests.len() >= DISTINCT_SETTLED {
                    Some(Distinct::Settled)
                } else {
                    None
                }
            }
        };
        if let Some(next) = next {
            *distinct = next;
        }
    }

    /// Whether every value of a field is a token, different from all others, over at
    /// least [`MIN_RECORDS_FOR_DISTINCT`] records.
    fn values_are_distinct_tokens(&self, name: &str) -> bool {
        match self.distinct.get(name) {
            Some(Distinct::Tracking(d)) => d.len() as u64 >= MIN_RECORDS_FOR_DISTINCT,
            Some(Distinct::Settled) => true,
            Some(Distinct::No) | None => false,
        }
    }

    /// Whether a field identifies records: its header names an identifier, or its
    /// values are distinct tokens; a quasi-identifier (a birth date, a district code)
    /// and an object holding other fields are none.
    pub fn is_identifier(&self, name: &str) -> bool {
        !self.objects.contains(name)
            && !recognise::header_is_quasi_identifier(name)
            && (recognise::header_is_identifier(name) || self.values_are_distinct_tokens(name))
    }

    fn values_are(&self, name: &str, t: FieldType) -> bool {
        self.value_types
            .get(name)
            .is_some_and(|s| s.contains(&t.into()))
    }
}

/// The name of CSV column `index` (0-based) under `header`.
pub fn csv_field_name(header: &[String], index: usize) -> String {
    header
        .get(index)
        .cloned()
        .unwrap_or_else(|| format!("column {}", index + 1))
}

/// One pass over CSV data (with a header row).
pub fn detect_csv(data: impl Read) -> Result<Detection, DesensitizeError> {
    let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(data);
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| DesensitizeError::Read(e.to_string()))?
        .iter()
        .map(str::to_owned)
        .collect();
    let mut d = Detection::default();
    for h in &header {
        d.note_field(h);
    }
    for record in reader.records() {
        let record = record.map_err(|e| DesensitizeError::Read(e.to_string()))?;
        for (i, value) in record.iter().enumerate() {
            let name = csv_field_name(&header, i);
            d.note_field(&name);
            d.note_value(&name, value);
        }
    }
    Ok(d)
}

/// One pass over JSON Lines data; lines that are not JSON objects are skipped (the
/// masking pass withholds them).
pub fn detect_jsonl(data: impl Read) -> Result<Detection, DesensitizeError> {
    let mut d = Detection::default();
    for_each_object(data, |object| note_members(&mut d, "", object.iter()))?;
    Ok(d)
}

/// Notes the members of an object at `path` (nested objects as `outer.inner`, to a
/// bounded depth; deeper ones are masked as a whole where a rule selects them).
fn note_members<'a>(
    d: &mut Detection,
    path: &str,
    members: impl Iterator<Item = (&'a String, &'a serde_json::Value)>,
) {
    for (k, v) in members {
        let name = member_path(path, k);
        d.note_field(&name);
        match v {
            serde_json::Value::Object(inner) if path.matches('.').count() < MAX_DEPTH => {
                d.objects.insert(name.clone());
                note_members(d, &name, inner.iter());
            }
            _ => {
                if let Some(text) = json_text(v) {
                    d.note_value(&name, &text);
                }
            }
        }
    }
}

/// How deep nested objects are followed.
pub const MAX_DEPTH: usize = 8;

/// The field name of member `key` of the object at `path` (`""` for the record).
pub fn member_path(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// A JSON Lines record, its keys in sorted order whatever serde_json's `preserve_order`
/// feature (which another crate in a build may turn on) says.
pub type JsonObject = std::collections::BTreeMap<String, serde_json::Value>;

/// Calls `f` with each line that is a JSON object; returns the number of non-empty
/// lines that are not.
pub fn for_each_object(
    data: impl Read,
    mut f: impl FnMut(&JsonObject),
) -> Result<u64, DesensitizeError> {
    let mut reader = BufReader::new(data);
    let mut line = Vec::new();
    let mut others = 0;
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| DesensitizeError::Read(e.to_string()))?;
        if n == 0 {
            return Ok(others);
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<serde_json::Value>(&line) {
            Ok(serde_json::Value::Object(object)) => f(&object.into_iter().collect()),
            _ => others += 1,
        }
    }
}

/// A JSON value as text: strings as they are, numbers and booleans as written, objects
/// and arrays as compact JSON; `None` for null.
pub fn json_text(v: &serde_json::Value) -> Option<std::borrow::Cow<'_, str>> {
    use std::borrow::Cow;
    match v {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) => Some(Cow::Borrowed(s)),
        serde_json::Value::Number(n) => Some(Cow::Owned(n.to_string())),
        serde_json::Value::Bool(b) => Some(Cow::Borrowed(if *b { "true" } else { "false" })),
        other => Some(Cow::Owned(other.to_string())),
    }
}

/// How one field was selected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum SelectedBy {
    /// A rule on the field's name.
    Name,
    /// A rule on a type that the field's header names.
    Header,
    /// A rule on a type that at least one of the field's values was recognised as.
    Values,
    /// A rule on a type, for values of it found inside the field's text (the field
    /// itself selected by no rule).
    Content,
    /// No rule: the field identifies records, so it gets a pseudonym of the agreement.
    Identifier,
}

/// The `rule` of a [`FieldAction`] that no rule of the policy made: an identifier's
/// pseudonym.
pub const IDENTIFIER_RULE: usize = usize::MAX;

/// The rule that masks one field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldAction {
    pub field: String,
    /// Index of the rule in the policy's mask rules (0-based), or [`IDENTIFIER_RULE`].
    pub rule: usize,
    pub method: MaskMethod,
    pub selected_by: SelectedBy,
}

impl FieldAction {
    /// Masks one text value (CSV, or a JSON value's text).
    pub fn apply(&self, value: &str, key: &hmac::Key) -> Masked {
        method::apply(&self.method, value, key)
    }
}

/// The rules matched against a product's fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The policy's mask rules, in written order.
    pub rules: Vec<MaskRule>,
    /// The masked fields, in field order.
    pub actions: Vec<FieldAction>,
    by_field: HashMap<String, usize>,
    /// For each built-in type a rule selects, the first such rule: it also masks values
    /// of that type found inside the text of fields no rule selects.
    pub content: Vec<ContentRule>,
    /// The released fields that are quasi-identifiers, in field order (see the module
    /// documentation).
    pub quasi_identifiers: Vec<String>,
}

/// The rule for one built-in type, applied to values of it found inside a text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContentRule {
    pub kind: FieldType,
    /// Index of the rule in the policy's mask rules (0-based).
    pub rule: usize,
    pub method: MaskMethod,
}

impl Plan {
    /// Matches `rules` against the detected fields (for computing on the masked
    /// values: identifiers keep their values, which aggregates never release).
    pub fn new(rules: Vec<MaskRule>, detection: &Detection) -> Plan {
        Plan::build(rules, detection, false)
    }

    /// Matches `rules` against the detected fields for a masked delivery: identifiers
    /// without a rule get a pseudonym of the agreement.
    pub fn for_delivery(rules: Vec<MaskRule>, detection: &Detection) -> Plan {
        Plan::build(rules, detection, true)
    }

    fn build(rules: Vec<MaskRule>, detection: &Detection, pseudonyms: bool) -> Plan {
        let mut actions = Vec::new();
        for field in &detection.fields {
            let chosen = rules.iter().enumerate().find_map(|(i, r)| {
                let by = match &r.field {
                    FieldSelector::Name(n) if n == field => Some(SelectedBy::Name),
                    FieldSelector::Name(_) => None,
                    // An object under a name header (`contact`) holds a person's
                    // details: its members are planned one by one.
                    FieldSelector::Type(FieldType::Name) if detection.objects.contains(field) => {
                        None
                    }
                    FieldSelector::Type(t) if recognise::header_is(*t, field) => {
                        Some(SelectedBy::Header)
                    }
                    FieldSelector::Type(t) if detection.values_are(field, *t) => {
                        Some(SelectedBy::Values)
                    }
                    FieldSelector::Type(_) => None,
                };
                by.map(|selected_by| FieldAction {
                    field: field.clone(),
                    rule: i,
                    method: r.method,
                    selected_by,
                })
            });
            let chosen = chosen.or_else(|| {
                (pseudonyms && detection.is_identifier(field)).then(|| FieldAction {
                    field: field.clone(),
                    rule: IDENTIFIER_RULE,
                    method: MaskMethod::Hash,
                    selected_by: SelectedBy::Identifier,
                })
            });
            actions.extend(chosen);
        }
        let by_field: HashMap<String, usize> = actions
            .iter()
            .enumerate()
            .map(|(i, a)| (a.field.clone(), i))
            .collect();
        let content = FieldType::ALL
            .iter()
            .filter_map(|t| {
                rules
                    .iter()
                    .position(|r| r.field == FieldSelector::Type(*t))
                    .map(|i| ContentRule {
                        kind: *t,
                        rule: i,
                        method: rules[i].method,
                    })
            })
            .collect();
        let quasi_identifiers = detection
            .fields
            .iter()
            .filter(|f| !detection.objects.contains(*f))
            .filter(|f| {
                let method = by_field.get(*f).map(|i| actions[*i].method);
                let personal = FieldType::ALL
                    .iter()
                    .any(|t| recognise::header_is(*t, f) || detection.values_are(f, *t));
                match method {
                    Some(MaskMethod::Drop) => false,
                    // A keyed hash keeps equal values equal: a hashed district still
                    // groups people as the clear one does.
                    Some(MaskMethod::Hash) => recognise::header_is_quasi_identifier(f),
                    _ => personal || recognise::header_is_quasi_identifier(f),
                }
            })
            .cloned()
            .collect();
        Plan {
            rules,
            actions,
            by_field,
            content,
            quasi_identifiers,
        }
    }

    /// The rule that masks personal data of type `kind` found inside other fields' text.
    pub fn content_rule(&self, kind: FieldType) -> Option<&ContentRule> {
        self.content.iter().find(|c| c.kind == kind)
    }

    /// The action on a field, if a rule selects it.
    pub fn action(&self, field: &str) -> Option<&FieldAction> {
        self.by_field.get(field).map(|i| &self.actions[*i])
    }

    /// Rules that select no field of this product (0-based indexes).
    pub fn unmatched_rules(&self) -> Vec<usize> {
        // (Pseudonyms of identifiers carry IDENTIFIER_RULE, which is no rule's index.)
        (0..self.rules.len())
            .filter(|i| !self.actions.iter().any(|a| a.rule == *i))
            .collect()
    }

    /// `text` with the personal data found inside it masked by the content rules, and
    /// the rules used (0-based, once per value masked); `None` when nothing was found.
    pub fn mask_in_text(&self, text: &str, key: &hmac::Key) -> Option<(String, Vec<usize>)> {
        if self.content.is_empty() {
            return None;
        }
        let mut out = String::with_capacity(text.len());
        let mut used = Vec::new();
        let mut at = 0;
        for f in recognise::find_in_text(text) {
            let Some(c) = self.content_rule(f.kind) else {
                continue;
            };
            let piece = &text[f.start..f.end];
            // Inside a text, a piece is replaced, never removed or generalised.
            let masked = match method::apply(&c.method, piece, key) {
                Masked::Value(v) if v != piece => v,
                Masked::Value(_) | Masked::Dropped | Masked::Unreadable(_) => {
                    method::mask_all(piece)
                }
            };
            out.push_str(&text[at..f.start]);
            out.push_str(&masked);
            at = f.end;
            used.push(c.rule);
        }
        if used.is_empty() {
            return None;
        }
        out.push_str(&text[at..]);
        Some((out, used))
    }
}

/// A rule in words, for manifests and messages: "type mobile: keep first 3, last 4".
pub fn describe_rule(rule: &MaskRule) -> String {
    let field = match &rule.field {
        FieldSelector::Name(n) => format!("field {n}"),
        FieldSelector::Type(t) => format!("type {}", t.as_str()),
    };
    format!("{field}: {}", describe_method(&rule.method))
}

/// A method in words.
pub fn describe_method(m: &MaskMethod) -> String {
    match m {
        MaskMethod::Keep { first, last } => format!("keep first {first}, last {last}"),
        MaskMethod::MaskAll => "mask all".into(),
        MaskMethod::Hash => "keyed hash (HMAC-SHA256, key of this agreement)".into(),
        MaskMethod::Drop => "drop".into(),
        MaskMethod::Generalize { to } => format!(
            "generalize to {}",
            match to {
                liutong_policy::Generalization::Year => "year",
                liutong_policy::Generalization::Prefecture => "prefecture",
            }
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(field: FieldSelector, method: MaskMethod) -> MaskRule {
        MaskRule { field, method }
    }

    #[test]
    fn first_selecting_rule_wins_by_name_header_or_values() {
        let csv = "姓名,phone_no,contact,email,district,note\n\
                   张三,13812345678,a@b.cn,,330106,x\n\
                   李四,,13912345678,,330102,y\n";
        let d = detect_csv(csv.as_bytes()).unwrap();
        assert_eq!(
            d.fields,
            ["姓名", "phone_no", "contact", "email", "district", "note"]
        );
        let plan = Plan::new(
            vec![
                rule(
                    FieldSelector::Name("district".into()),
                    MaskMethod::Generalize {
                        to: liutong_policy::Generalization::Prefecture,
                    },
                ),
                rule(
                    FieldSelector::Type(FieldType::Mobile),
                    MaskMethod::Keep { first: 3, last: 4 },
                ),
                rule(FieldSelector::Type(FieldType::Email), MaskMethod::Hash),
                rule(
                    FieldSelector::Type(FieldType::Name),
                    MaskMethod::Keep { first: 1, last: 0 },
                ),
                rule(FieldSelector::Type(FieldType::Idcard), MaskMethod::MaskAll),
            ],
            &d,
        );
        let got: Vec<(&str, usize, SelectedBy)> = plan
            .actions
            .iter()
            .map(|a| (a.field.as_str(), a.rule, a.selected_by))
            .collect();
        assert_eq!(
            got,
            vec![
                ("姓名", 3, SelectedBy::Header),
                ("phone_no", 1, SelectedBy::Header),
                // Values of both a mobile and an e-mail: the mobile rule comes first.
                ("contact", 1, SelectedBy::Values),
                ("email", 2, SelectedBy::Header),
                ("district", 0, SelectedBy::Name),
            ]
        );
        assert!(plan.action("note").is_none());
        assert_eq!(plan.unmatched_rules(), vec![4]);
    }

    #[test]
    fn identifiers_get_pseudonyms_in_deliveries_only() {
        let mut csv = String::from("person_id,member,income,remarks,district,birth_date,visits\n");
        for i in 0..12 {
            csv.push_str(&format!(
                "{i},M{:05},{}.50,see you {i},33010{},1990-01-{:02},{}\n",
                i * 7919,
                1000 + i * 13,
                i % 2,
                i + 1,
                i % 3
            ));
        }
        let d = detect_csv(csv.as_bytes()).unwrap();
        let pseudonyms = |plan: &Plan| -> Vec<String> {
            plan.actions
                .iter()
                .filter(|a| a.selected_by == SelectedBy::Identifier)
                .map(|a| {
                    assert_eq!((a.rule, a.method), (IDENTIFIER_RULE, MaskMethod::Hash));
                    a.field.clone()
                })
                .collect()
        };
        let plan = Plan::for_delivery(vec![], &d);
        // By header, by distinct tokens (a code); not an amount (distinct here too),
        // not free text, not a repeating column, not a quasi-identifier (a birth date,
        // distinct here too).
        assert_eq!(pseudonyms(&plan), ["person_id", "member"]);
        assert_eq!(plan.quasi_identifiers, ["district", "birth_date"]);
        assert!(pseudonyms(&Plan::new(vec![], &d)).is_empty());
        // Fewer than ten records say little by being all different.
        let few: String = csv.lines().take(10).map(|l| format!("{l}\n")).collect();
        let plan = Plan::for_delivery(vec![], &detect_csv(few.as_bytes()).unwrap());
        assert_eq!(pseudonyms(&plan), ["person_id"]);
    }

    #[test]
    fn jsonl_fields_are_top_level_keys() {
        let data = "{\"name\":\"王五\",\"m\":13812345678}\nnot json\n\n{\"z\":null,\"m\":\"x\"}\n";
        let d = detect_jsonl(data.as_bytes()).unwrap();
        assert_eq!(d.fields, ["m", "name", "z"]);
        assert!(
            d.values_are("m", FieldType::Mobile),
            "numbers are read as text"
        );
        let others = for_each_object(data.as_bytes(), |_| {}).unwrap();
        assert_eq!(others, 1, "the blank line does not count");
    }
}
