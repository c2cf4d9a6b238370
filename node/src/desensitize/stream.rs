//! Masking a whole CSV or JSON Lines payload, record by record, from a reader to a
//! writer (memory stays flat whatever the payload's size).
//!
//! The output is deterministic: the same payload, plan and key always give the same
//! bytes, so a delivery can be produced again byte for byte.
//! - CSV is written back with `\n` line ends and quotes only where needed; dropped
//!   columns leave the header and every row.
//! - JSON Lines are written back one compact object per line (keys in sorted order);
//!   a selected value that is a number or a boolean is masked as its text and becomes a
//!   string; an object or array is hashed as its JSON text or masked entirely. Lines that
//!   are not JSON objects cannot be masked and are withheld (counted). Blank lines are
//!   left out.

use std::io::{Read, Write};

use ring::hmac;
use serde::{Deserialize, Serialize};

use super::DesensitizeError;
use super::method::{self, Masked};
use super::plan::{self, FieldAction, Plan, SelectedBy, describe_method, describe_rule};

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

/// The result of masking a payload.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub applied: Vec<AppliedRule>,
    /// Records written.
    pub records: u64,
    /// Records that could not be masked and were left out (JSON Lines lines that are not
    /// objects).
    pub withheld: u64,
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

    fn count_content(&mut self, field: &str, rules: &[usize]) {
        for rule in rules {
            *self.content.entry((field.to_owned(), *rule)).or_default() += 1;
        }
    }

    fn finish(self, plan: &Plan, records: u64, withheld: u64) -> Outcome {
        let applied = plan
            .actions
            .iter()
            .enumerate()
            .map(|(i, a)| AppliedRule {
                field: a.field.clone(),
                rule: format!(
                    "rule {}: {}",
                    a.rule + 1,
                    describe_rule(&plan.rules[a.rule])
                ),
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
            .collect();
        Outcome {
            applied,
            records,
            withheld,
        }
    }
}

fn index_of(plan: &Plan, action: &FieldAction) -> usize {
    plan.actions
        .iter()
        .position(|a| a.field == action.field)
        .expect("actions come from the plan")
}

/// Masks CSV data (header row first) into `out`.
pub fn mask_csv(
    plan: &Plan,
    key: &hmac::Key,
    data: impl Read,
    out: impl Write,
) -> Result<Outcome, DesensitizeError> {
    let read_err = |e: csv::Error| DesensitizeError::Read(e.to_string());
    let write_err = |e: csv::Error| DesensitizeError::Write(e.to_string());
    let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(data);
    let mut writer = csv::WriterBuilder::new()
        .flexible(true)
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(out);
    let header: Vec<String> = reader
        .headers()
        .map_err(read_err)?
        .iter()
        .map(str::to_owned)
        .collect();
    let mut counters = Counters::new(plan);
    // The action on each column position, found once (rows longer than the header get
    // theirs when first seen).
    let mut by_position: Vec<Option<(usize, FieldAction)>> = Vec::new();
    let mut position_action = |i: usize| -> Option<(usize, FieldAction)> {
        while by_position.len() <= i {
            let name = plan::csv_field_name(&header, by_position.len());
            by_position.push(plan.action(&name).map(|a| (index_of(plan, a), a.clone())));
        }
        by_position[i].clone()
    };
    let kept_header: Vec<&str> = header
        .iter()
        .enumerate()
        .filter(|(i, _)| {
            !matches!(position_action(*i), Some((_, a)) if a.method == liutong_policy::MaskMethod::Drop)
        })
        .map(|(_, h)| h.as_str())
        .collect();
    writer.write_record(&kept_header).map_err(write_err)?;
    let mut records = 0;
    let mut row: Vec<String> = Vec::new();
    for record in reader.records() {
        let record = record.map_err(read_err)?;
        row.clear();
        for (i, value) in record.iter().enumerate() {
            match position_action(i) {
                None => match plan.mask_in_text(value, key) {
                    Some((masked, used)) => {
                        counters.count_content(&plan::csv_field_name(&header, i), &used);
                        row.push(masked);
                    }
                    None => row.push(value.to_owned()),
                },
                Some((slot, action)) => match action.apply(value, key) {
                    Masked::Dropped => counters.values[slot] += 1,
                    Masked::Value(v) => {
                        if v != value {
                            counters.values[slot] += 1;
                        }
                        row.push(v);
                    }
                    Masked::Unreadable(v) => {
                        counters.values[slot] += 1;
                        counters.unreadable[slot] += 1;
                        row.push(v);
                    }
                },
            }
        }
        writer.write_record(&row).map_err(write_err)?;
        records += 1;
    }
    writer
        .flush()
        .map_err(|e| DesensitizeError::Write(e.to_string()))?;
    Ok(counters.finish(plan, records, 0))
}

/// Masks JSON Lines data into `out`.
pub fn mask_jsonl(
    plan: &Plan,
    key: &hmac::Key,
    data: impl Read,
    mut out: impl Write,
) -> Result<Outcome, DesensitizeError> {
    let mut counters = Counters::new(plan);
    let mut records = 0;
    let mut failure: Option<DesensitizeError> = None;
    let withheld = plan::for_each_object(data, |object| {
        if failure.is_some() {
            return;
        }
        let object: plan::JsonObject =
            mask_members(plan, key, "", object.clone().into_iter(), &mut counters)
                .into_iter()
                .collect();
        let written = serde_json::to_writer(&mut out, &object)
            .map_err(|e| DesensitizeError::Write(e.to_string()))
            .and_then(|()| {
                out.write_all(b"\n")
                    .map_err(|e| DesensitizeError::Write(e.to_string()))
            });
        match written {
            Ok(()) => records += 1,
            Err(e) => failure = Some(e),
        }
    })?;
    if let Some(e) = failure {
        return Err(e);
    }
    out.flush()
        .map_err(|e| DesensitizeError::Write(e.to_string()))?;
    Ok(counters.finish(plan, records, withheld))
}

/// The members of the object at `path` (`""` for the record), masked: each by the
/// rule that selects it, a nested object member by member, and any other value by the
/// content rules for what is found inside its text.
fn mask_members(
    plan: &Plan,
    key: &hmac::Key,
    path: &str,
    members: impl Iterator<Item = (String, serde_json::Value)>,
    counters: &mut Counters,
) -> Vec<(String, serde_json::Value)> {
    let mut out = Vec::new();
    for (k, value) in members {
        let name = plan::member_path(path, &k);
        if let Some(action) = plan.action(&name) {
            let slot = index_of(plan, action);
            match mask_json_value(action, &value, key) {
                None => out.push((k, value)),
                Some(Masked::Dropped) => counters.values[slot] += 1,
                Some(Masked::Value(v)) => {
                    counters.values[slot] += 1;
                    out.push((k, serde_json::Value::String(v)));
                }
                Some(Masked::Unreadable(v)) => {
                    counters.values[slot] += 1;
                    counters.unreadable[slot] += 1;
                    out.push((k, serde_json::Value::String(v)));
                }
            }
            continue;
        }
        let masked = match value {
            serde_json::Value::Object(inner) if path.matches('.').count() < plan::MAX_DEPTH => {
                serde_json::Value::Object(
                    mask_members(plan, key, &name, inner.into_iter(), counters)
                        .into_iter()
                        .collect(),
                )
            }
            other => match plan::json_text(&other).and_then(|t| plan.mask_in_text(&t, key)) {
                Some((text, used)) => {
                    counters.count_content(&name, &used);
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
        let outcome = mask_csv(&plan, &key(), data.as_bytes(), &mut out).unwrap();
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
        let outcome = mask_jsonl(&plan, &key(), data.as_bytes(), &mut out).unwrap();
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
            mask_csv(&plan, k, data.as_bytes(), &mut out).unwrap();
            out
        };
        assert_eq!(run(&key()), run(&key()));
        let other = hmac::Key::new(hmac::HMAC_SHA256, b"another agreement");
        assert_ne!(run(&key()), run(&other));
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
                let outcome = mask_csv(&plan, &key(), data.as_bytes(), &mut out).unwrap();
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
                let outcome = mask_jsonl(&plan, &key(), data.as_bytes(), &mut out).unwrap();
                prop_assert_eq!((outcome.records, outcome.withheld), (rows.len() as u64, 0));
                assert_hidden(&String::from_utf8(out).unwrap(), &rows, false)?;
            }
        }
    }
}
