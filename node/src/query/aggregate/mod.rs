//! Aggregate queries over a product's rows (CSV or JSON Lines): filters, groups,
//! aggregates, and the minimum group size k. Pure: rows in, answer out.
//!
//! The query and its checks are here; the one pass over the rows that answers it is in
//! `engine`. The tests below run queries end to end.
//!
//! Values are read as text (a JSON Lines value as its text, null as missing). If the
//! agreement also carries mask rules, each value is masked first, so a query sees only
//! what a delivery would show, and a dropped column cannot be used at all.

mod engine;

use std::fmt;

use crate::desensitize::Plan;

pub use engine::{
    Answer, Clamps, Group, Masking, run_csv, run_csv_clamped, run_jsonl, run_jsonl_clamped,
};

/// Most group-by columns.
pub const MAX_GROUP_BY: usize = 3;
/// Most aggregations, and most filters, in one query.
pub const MAX_TERMS: usize = 16;
/// Most distinct groups a query may make (shown or suppressed).
pub const MAX_GROUPS: usize = 10_000;

/// An aggregate function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Function {
    Count,
    Sum,
    Avg,
    Min,
    Max,
}

impl Function {
    pub fn as_str(self) -> &'static str {
        match self {
            Function::Count => "count",
            Function::Sum => "sum",
            Function::Avg => "avg",
            Function::Min => "min",
            Function::Max => "max",
        }
    }
}

/// One aggregation: a function over a column (none for `count`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Aggregation {
    pub function: Function,
    pub column: Option<String>,
}

impl fmt::Display for Aggregation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.column {
            Some(c) => write!(f, "{}({c})", self.function.as_str()),
            None => f.write_str(self.function.as_str()),
        }
    }
}

/// A filter's comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FilterOp {
    Eq,
    Lt,
    Lteq,
    Gt,
    Gteq,
}

impl FilterOp {
    pub fn as_str(self) -> &'static str {
        match self {
            FilterOp::Eq => "=",
            FilterOp::Lt => "<",
            FilterOp::Lteq => "<=",
            FilterOp::Gt => ">",
            FilterOp::Gteq => ">=",
        }
    }
}

/// `column op value`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter {
    pub column: String,
    pub op: FilterOp,
    pub value: String,
}

impl Filter {
    fn holds(&self, value: Option<&str>) -> bool {
        let Some(v) = value else {
            return false;
        };
        let ordering = match (number(v), number(&self.value)) {
            (Some(a), Some(b)) => a.partial_cmp(&b),
            _ => Some(v.cmp(self.value.as_str())),
        };
        let Some(o) = ordering else {
            return false;
        };
        match self.op {
            FilterOp::Eq => o.is_eq(),
            FilterOp::Lt => o.is_lt(),
            FilterOp::Lteq => o.is_le(),
            FilterOp::Gt => o.is_gt(),
            FilterOp::Gteq => o.is_ge(),
        }
    }
}

fn number(v: &str) -> Option<f64> {
    v.trim().parse::<f64>().ok().filter(|x| x.is_finite())
}

/// A query, checked against the product's columns with [`Query::check`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Query {
    pub aggregations: Vec<Aggregation>,
    pub group_by: Vec<String>,
    pub filters: Vec<Filter>,
}

impl fmt::Display for Query {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let aggs: Vec<String> = self.aggregations.iter().map(ToString::to_string).collect();
        f.write_str(&aggs.join(", "))?;
        if !self.group_by.is_empty() {
            write!(f, " by {}", self.group_by.join(", "))?;
        }
        if !self.filters.is_empty() {
            let fs: Vec<String> = self
                .filters
                .iter()
                .map(|x| format!("{} {} {}", x.column, x.op.as_str(), x.value))
                .collect();
            write!(f, " where {}", fs.join(" and "))?;
        }
        Ok(())
    }
}

impl Query {
    /// The query as the audit logs keep it: each filter value as a keyed hash
    /// (HMAC-SHA-256, first 16 hex digits), never the value. An audit log is append-only
    /// and cannot be erased, and a filter value is often a person's name or ID number;
    /// whoever holds the key can still check whether a given value was queried.
    pub fn logged(&self, key: &ring::hmac::Key) -> String {
        let hidden = Query {
            filters: self
                .filters
                .iter()
                .map(|f| {
                    let tag = ring::hmac::sign(key, f.value.as_bytes());
                    let hex: String = tag.as_ref()[..8]
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect();
                    Filter {
                        value: format!("hmac:{hex}"),
                        ..f.clone()
                    }
                })
                .collect(),
            ..self.clone()
        };
        hidden.to_string()
    }
}

/// Why a query cannot be answered.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AggregateError {
    /// The query is malformed; the message names the part.
    #[error("{0}")]
    Invalid(String),
    #[error(
        "the query makes more than {MAX_GROUPS} groups; group by fewer or coarser columns, or filter"
    )]
    TooManyGroups,
    #[error("the product cannot be read: {0}")]
    Read(String),
}

impl Query {
    /// Every column the query reads, once each, in first-use order.
    pub fn columns(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        let all = self
            .group_by
            .iter()
            .map(String::as_str)
            .chain(self.aggregations.iter().filter_map(|a| a.column.as_deref()))
            .chain(self.filters.iter().map(|f| f.column.as_str()));
        for c in all {
            if !out.contains(&c) {
                out.push(c);
            }
        }
        out
    }

    /// Checks the shape of the query and that every column exists in `columns` and is
    /// not dropped by the mask rules.
    pub fn check(&self, columns: &[String], plan: Option<&Plan>) -> Result<(), AggregateError> {
        let invalid = |m: String| Err(AggregateError::Invalid(m));
        if self.aggregations.is_empty() {
            return invalid(
                "aggregations: ask for at least one (count, sum, avg, min, max)".into(),
            );
        }
        if self.aggregations.len() > MAX_TERMS || self.filters.len() > MAX_TERMS {
            return invalid(format!(
                "at most {MAX_TERMS} aggregations and {MAX_TERMS} filters"
            ));
        }
        if self.group_by.len() > MAX_GROUP_BY {
            return invalid(format!(
                "group_by: at most {MAX_GROUP_BY} columns, not {}",
                self.group_by.len()
            ));
        }
        for (i, a) in self.aggregations.iter().enumerate() {
            match (a.function, &a.column) {
                (Function::Count, _) => {}
                (f, None) => {
                    return invalid(format!("aggregations[{i}]: {} needs a column", f.as_str()));
                }
                _ => {}
            }
        }
        for c in self.columns() {
            if !columns.iter().any(|k| k == c) {
                return invalid(format!(
                    "column {c:?} does not exist; the product's columns are {}",
                    columns.join(", ")
                ));
            }
            if let Some(a) = plan.and_then(|p| p.action(c))
                && a.method == liutong_policy::MaskMethod::Drop
            {
                return invalid(format!(
                    "column {c:?} is dropped by the agreement's mask rules and cannot be queried"
                ));
            }
        }
        Ok(())
    }
}
#[cfg(test)]
mod tests {
    use ring::hmac;

    use super::*;

    const SPEEDS: &str = "district,year,speed,plate\n\
        Xihu,2025,30,A1\n\
        Xihu,2025,40,A2\n\
        Xihu,2025,50,A3\n\
        Binjiang,2025,20,B1\n\
        Binjiang,2024,25,B2\n\
        Shangcheng,2025,,C1\n\
        Shangcheng,2025,60,C2\n\
        Shangcheng,2025,fast,C3\n";

    fn columns() -> Vec<String> {
        ["district", "year", "speed", "plate"]
            .map(String::from)
            .to_vec()
    }

    fn agg(function: Function, column: Option<&str>) -> Aggregation {
        Aggregation {
            function,
            column: column.map(String::from),
        }
    }

    fn filter(column: &str, op: FilterOp, value: &str) -> Filter {
        Filter {
            column: column.into(),
            op,
            value: value.into(),
        }
    }

    #[test]
    fn groups_below_k_are_withheld_without_a_count() {
        let q = Query {
            aggregations: vec![
                agg(Function::Count, None),
                agg(Function::Avg, Some("speed")),
                agg(Function::Min, Some("speed")),
                agg(Function::Max, Some("speed")),
                agg(Function::Sum, Some("speed")),
            ],
            group_by: vec!["district".into()],
            filters: vec![filter("year", FilterOp::Eq, "2025")],
        };
        q.check(&columns(), None).unwrap();
        let a = run_csv(&q, 3, None, SPEEDS.as_bytes()).unwrap();
        // Binjiang has one row in 2025: below k = 3, withheld, and only "may be" said.
        assert!(a.may_be_withheld);
        assert_eq!(
            a.groups,
            vec![
                Group {
                    keys: vec!["Shangcheng".into()],
                    rows: 3,
                    // Only 60 reads as a number; min and max need 3k = 9 rows.
                    values: vec![Some(3.0), Some(60.0), None, None, Some(60.0)],
                },
                Group {
                    keys: vec!["Xihu".into()],
                    rows: 3,
                    values: vec![Some(3.0), Some(40.0), None, None, Some(120.0)],
                },
            ]
        );
        assert_eq!(a.rows_read, 8);
        assert_eq!(
            q.to_string(),
            "count, avg(speed), min(speed), max(speed), sum(speed) by district where year = 2025"
        );
    }

    #[test]
    fn logged_queries_carry_keyed_hashes_of_filter_values() {
        let q = Query {
            aggregations: vec![agg(Function::Count, None)],
            group_by: vec!["district".into()],
            filters: vec![
                filter("plate", FilterOp::Eq, "A2"),
                filter("speed", FilterOp::Gteq, "40"),
            ],
        };
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"node key");
        let logged = q.logged(&key);
        assert!(
            logged.starts_with("count by district where plate = hmac:")
                && logged.contains(" and speed >= hmac:"),
            "{logged}"
        );
        assert!(!logged.contains("A2") && !logged.contains("40"), "{logged}");
        assert_eq!(logged, q.logged(&key), "the same value, the same hash");
        let other = hmac::Key::new(hmac::HMAC_SHA256, b"another key");
        assert_ne!(logged, q.logged(&other), "a hash needs the key to check");
    }

    #[test]
    fn a_filter_matching_no_row_and_one_row_answer_alike() {
        // The oracle: with a group-by, 0 withheld groups meant "no such row" and 1 meant
        // "exactly one", so a binary search on a filter read one person's value.
        for group_by in [vec![], vec!["district".to_owned()]] {
            let answer = |value: &str| {
                let q = Query {
                    aggregations: vec![agg(Function::Count, None)],
                    group_by: group_by.clone(),
                    filters: vec![
                        filter("plate", FilterOp::Eq, "A2"),
                        filter("speed", FilterOp::Gteq, value),
                    ],
                };
                run_csv(&q, 3, None, SPEEDS.as_bytes()).unwrap()
            };
            // A2 drives at 40: `speed >= 40` matches its row, `speed >= 41` none.
            assert_eq!(answer("40"), answer("41"), "group by {group_by:?}");
            assert!(answer("40").may_be_withheld && answer("40").groups.is_empty());
        }
    }

    #[test]
    fn min_and_max_are_means_of_k_extremes_in_groups_of_at_least_3k() {
        let mut data = String::from("g,v\n");
        for v in 1..=6 {
            data.push_str(&format!("six,{v}\n"));
        }
        for v in 1..=5 {
            data.push_str(&format!("five,{}\n", v * 10));
        }
        let q = Query {
            aggregations: vec![
                agg(Function::Min, Some("v")),
                agg(Function::Max, Some("v")),
                agg(Function::Sum, Some("v")),
            ],
            group_by: vec!["g".into()],
            filters: vec![],
        };
        let a = run_csv(&q, 2, None, data.as_bytes()).unwrap();
        let got: Vec<(&str, &[Option<f64>])> = a
            .groups
            .iter()
            .map(|g| (g.keys[0].as_str(), g.values.as_slice()))
            .collect();
        assert_eq!(
            got,
            vec![
                // 5 < 3k = 6 rows: the sum less two lowest and two highest would be one
                // row's value, so no min or max.
                ("five", &[None, None, Some(150.0)][..]),
                ("six", &[Some(1.5), Some(5.5), Some(21.0)][..]),
            ]
        );
        // Without a minimum group size, min and max are the values themselves.
        let a = run_csv(&q, 1, None, data.as_bytes()).unwrap();
        assert_eq!(
            a.groups[0].values,
            vec![Some(10.0), Some(50.0), Some(150.0)]
        );
        assert!(a.may_be_withheld, "a group-by may always withhold");
        // An unfiltered total says whether it was withheld: that depends on no one row.
        let total = Query {
            group_by: vec![],
            ..q
        };
        assert!(
            !run_csv(&total, 2, None, data.as_bytes())
                .unwrap()
                .may_be_withheld
        );
        assert!(
            run_csv(&total, 20, None, data.as_bytes())
                .unwrap()
                .may_be_withheld
        );
    }

    #[test]
    fn range_filters_and_a_single_group() {
        let q = Query {
            aggregations: vec![agg(Function::Count, None)],
            group_by: vec![],
            filters: vec![
                filter("speed", FilterOp::Gteq, "25"),
                filter("speed", FilterOp::Lt, "60"),
            ],
        };
        let a = run_csv(&q, 2, None, SPEEDS.as_bytes()).unwrap();
        assert_eq!(a.groups.len(), 1);
        assert_eq!(
            a.groups[0].rows, 4,
            "30, 40, 50, 25 — not empty, fast or 60"
        );
        // A filter that leaves one row: the single group is below k.
        let q = Query {
            filters: vec![filter("plate", FilterOp::Eq, "C2")],
            ..q
        };
        let a = run_csv(&q, 2, None, SPEEDS.as_bytes()).unwrap();
        assert!(a.groups.is_empty());
        assert!(a.may_be_withheld);
        // No row at all: the same answer, nothing else said.
        let q = Query {
            filters: vec![filter("plate", FilterOp::Eq, "none")],
            ..q
        };
        let b = run_csv(&q, 2, None, SPEEDS.as_bytes()).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn jsonl_rows_are_read_as_text() {
        let data = "{\"d\":\"Xihu\",\"v\":1}\n{\"d\":\"Xihu\",\"v\":2.5}\n{\"d\":null,\"v\":3}\nnot json\n";
        let q = Query {
            aggregations: vec![agg(Function::Sum, Some("v"))],
            group_by: vec!["d".into()],
            filters: vec![],
        };
        let a = run_jsonl(&q, 1, None, data.as_bytes()).unwrap();
        let got: Vec<(Vec<String>, Option<f64>)> = a
            .groups
            .into_iter()
            .map(|g| (g.keys, g.values[0]))
            .collect();
        assert_eq!(
            got,
            vec![
                (vec![String::new()], Some(3.0)),
                (vec!["Xihu".into()], Some(3.5))
            ]
        );
    }

    #[test]
    fn bad_queries_name_what_is_wrong() {
        let base = Query {
            aggregations: vec![agg(Function::Count, None)],
            ..Query::default()
        };
        let check = |q: Query| q.check(&columns(), None).unwrap_err().to_string();
        assert!(check(Query::default()).contains("at least one"));
        assert!(
            check(Query {
                group_by: vec![
                    "district".into(),
                    "year".into(),
                    "speed".into(),
                    "plate".into()
                ],
                ..base.clone()
            })
            .contains("at most 3")
        );
        let e = check(Query {
            aggregations: vec![agg(Function::Avg, Some("sped"))],
            ..base.clone()
        });
        assert!(
            e.contains("\"sped\" does not exist") && e.contains("district, year"),
            "{e}"
        );
        assert!(
            check(Query {
                aggregations: vec![agg(Function::Max, None)],
                ..base.clone()
            })
            .contains("max needs a column")
        );
    }

    #[test]
    fn mask_rules_apply_before_the_query_sees_values() {
        use crate::desensitize::plan::detect_csv;
        use liutong_policy::{FieldSelector, Generalization, MaskMethod, MaskRule};
        let data = "birth_date,plate,speed
1990-05-17,A1,30
1990-11-02,A2,50
1985-01-01,B1,70
";
        let plan = Plan::new(
            vec![
                MaskRule {
                    field: FieldSelector::Name("birth_date".into()),
                    method: MaskMethod::Generalize {
                        to: Generalization::Year,
                    },
                },
                MaskRule {
                    field: FieldSelector::Name("plate".into()),
                    method: MaskMethod::Drop,
                },
            ],
            &detect_csv(data.as_bytes()).unwrap(),
        );
        let key = hmac::Key::new(hmac::HMAC_SHA256, b"k");
        let columns: Vec<String> = ["birth_date", "plate", "speed"].map(String::from).to_vec();
        let by_year = Query {
            aggregations: vec![agg(Function::Avg, Some("speed"))],
            group_by: vec!["birth_date".into()],
            filters: vec![],
        };
        by_year.check(&columns, Some(&plan)).unwrap();
        let a = run_csv(&by_year, 1, Some((&plan, &key)), data.as_bytes()).unwrap();
        let keys: Vec<&str> = a.groups.iter().map(|g| g.keys[0].as_str()).collect();
        assert_eq!(
            keys,
            ["1985", "1990"],
            "grouped by year, never by the full date"
        );
        let by_plate = Query {
            group_by: vec!["plate".into()],
            ..by_year
        };
        let e = by_plate.check(&columns, Some(&plan)).unwrap_err();
        assert!(
            e.to_string()
                .contains("dropped by the agreement's mask rules"),
            "{e}"
        );
    }

    #[test]
    fn too_many_groups_is_refused() {
        let mut data = String::from("id\n");
        for i in 0..=MAX_GROUPS {
            data.push_str(&format!("{i}\n"));
        }
        let q = Query {
            aggregations: vec![agg(Function::Count, None)],
            group_by: vec!["id".into()],
            filters: vec![],
        };
        assert_eq!(
            run_csv(&q, 2, None, data.as_bytes()),
            Err(AggregateError::TooManyGroups)
        );
    }
}
