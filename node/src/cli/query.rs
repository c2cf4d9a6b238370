//! `liutong query`: compute-to-data. Aggregates over a provider's rows, computed at the
//! provider; only groups of at least k rows come back.

use anyhow::{anyhow, bail};
use clap::Args;
use liutong_proto::v1::{AggregateResponse, QueryAggregateRequest};

use super::local_node::LocalArgs;
use super::output::{esc, print_json, status_error};
use crate::query::aggregate::{Aggregation, Filter, FilterOp, Function, Query};

/// The flags of `liutong query` (its help is on the command in `cli.rs`).
#[derive(Args, Debug)]
pub struct QueryArgs {
    /// The agreement (from `liutong contract request` or `contract list`).
    #[arg(long)]
    pub agreement: String,
    /// The provider's host:port [default: the address the agreement was negotiated
    /// with].
    #[arg(long)]
    pub peer: Option<String>,
    /// The purpose of this query, within the agreement's purpose (checked by the
    /// provider against the agreement's purpose constraint) [default: the purpose the
    /// agreement was made for].
    #[arg(long)]
    pub purpose: Option<String>,
    /// An aggregate: count, or FUNCTION:COLUMN with FUNCTION one of sum, avg, min, max
    /// (e.g. avg:speed). Repeat it, or separate with commas.
    #[arg(long = "aggregate", value_delimiter = ',', required = true)]
    pub aggregates: Vec<String>,
    /// Group by this column (at most three). Repeat it, or separate with commas.
    #[arg(long = "group-by", value_delimiter = ',')]
    pub group_by: Vec<String>,
    /// A filter COLUMN OP VALUE with OP one of =, <, <=, >, >= (e.g. year=2025,
    /// 'speed>=10'). Numbers compare as numbers, other values as text. Repeat it; all
    /// must hold.
    #[arg(long = "where")]
    pub filters: Vec<String>,
    #[command(flatten)]
    pub local: LocalArgs,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: QueryArgs) -> anyhow::Result<()> {
    let query = parse_query(&args.aggregates, &args.group_by, &args.filters)?;
    let answer = args
        .local
        .admin()
        .await?
        .query_aggregate(QueryAggregateRequest {
            agreement_id: args.agreement.clone(),
            peer: args.peer.clone().unwrap_or_default(),
            query: Some(crate::query::query_to_proto(&query)),
            purpose: args.purpose.clone().unwrap_or_default(),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    if args.json {
        print_json(&answer_json(&answer))
    } else {
        print!("{}", answer_table(&answer));
        Ok(())
    }
}

/// Reads the command's flags into a query.
pub fn parse_query(
    aggregates: &[String],
    group_by: &[String],
    filters: &[String],
) -> anyhow::Result<Query> {
    let aggregations = aggregates
        .iter()
        .map(|a| parse_aggregate(a))
        .collect::<anyhow::Result<_>>()?;
    let filters = filters
        .iter()
        .map(|f| parse_filter(f))
        .collect::<anyhow::Result<_>>()?;
    Ok(Query {
        aggregations,
        group_by: group_by
            .iter()
            .map(|c| c.trim().to_owned())
            .filter(|c| !c.is_empty())
            .collect(),
        filters,
    })
}

fn parse_aggregate(text: &str) -> anyhow::Result<Aggregation> {
    let (name, column) = match text.trim().split_once(':') {
        Some((f, c)) => (f.trim(), Some(c.trim().to_owned())),
        None => (text.trim(), None),
    };
    let function = match name {
        "count" => Function::Count,
        "sum" => Function::Sum,
        "avg" => Function::Avg,
        "min" => Function::Min,
        "max" => Function::Max,
        other => {
            bail!("--aggregate {text}: unknown function {other:?}; use count, sum, avg, min or max")
        }
    };
    match (&function, &column) {
        (Function::Count, _) => {}
        (_, Some(c)) if !c.is_empty() => {}
        _ => bail!("--aggregate {text}: {name} needs a column, e.g. {name}:speed"),
    }
    Ok(Aggregation {
        function,
        column: column.filter(|c| !c.is_empty()),
    })
}

fn parse_filter(text: &str) -> anyhow::Result<Filter> {
    let at = text.find(['<', '>', '=']).ok_or_else(|| {
        anyhow!("--where {text}: write COLUMN OP VALUE with OP one of =, <, <=, >, >=")
    })?;
    let rest = &text[at..];
    let (op, len) = if rest.starts_with("<=") {
        (FilterOp::Lteq, 2)
    } else if rest.starts_with(">=") {
        (FilterOp::Gteq, 2)
    } else if rest.starts_with('<') {
        (FilterOp::Lt, 1)
    } else if rest.starts_with('>') {
        (FilterOp::Gt, 1)
    } else {
        (FilterOp::Eq, if rest.starts_with("==") { 2 } else { 1 })
    };
    let column = text[..at].trim();
    if column.is_empty() {
        bail!("--where {text}: name a column before the operator");
    }
    Ok(Filter {
        column: column.to_owned(),
        op,
        value: rest[len..].trim().to_owned(),
    })
}

fn number_text(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(x) if x.fract() == 0.0 && x.abs() < 1e15 => format!("{x:.0}"),
        Some(x) => format!("{x:.4}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_owned(),
    }
}

/// The answer as an aligned table, saying plainly when groups may have been withheld.
pub fn answer_table(a: &AggregateResponse) -> String {
    let mut out = format!(
        "{} v{} under agreement {}: groups of at least k = {} rows\n",
        esc(&a.product_id),
        a.version,
        esc(&a.agreement_id),
        a.k
    );
    // Column names and group keys are the provider's data: escaped, one cell each.
    let cell = |text: &String| esc(text).into_owned();
    let mut rows: Vec<Vec<String>> = vec![
        a.group_by
            .iter()
            .map(cell)
            .chain(std::iter::once("rows".to_owned()))
            .chain(a.aggregations.iter().map(cell))
            .collect(),
    ];
    for g in &a.groups {
        rows.push(
            g.keys
                .iter()
                .map(cell)
                .chain(std::iter::once(g.rows.to_string()))
                .chain(g.values.iter().map(|v| number_text(v.value)))
                .collect(),
        );
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|i| {
            rows.iter()
                .map(|r| r.get(i).map_or(0, |c| c.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    for r in &rows {
        let cells: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c}{}", " ".repeat(w - c.chars().count())))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    if a.groups.is_empty() {
        out.push_str("(no group has enough rows to be shown)\n");
    }
    if a.groups_may_be_withheld && a.differential_privacy.is_some() {
        out.push_str(
            "groups whose noisy count falls below the threshold, if any, are withheld \
             (how many is not said)\n",
        );
    } else if a.groups_may_be_withheld {
        out.push_str(&format!(
            "groups of fewer than {} rows, if any, are withheld (how many is not said)\n",
            a.k
        ));
    }
    if let Some(p) = &a.differential_privacy {
        out.push_str(&format!(
            "differential privacy: every number carries random noise; this query spent ε = {}{}; \
             the agreement has spent {} of {}, {} left\n",
            p.epsilon,
            if p.delta > 0.0 {
                format!(" (δ = {:e})", p.delta)
            } else {
                String::new()
            },
            p.epsilon_spent,
            p.budget,
            p.epsilon_left
        ));
    }
    out
}

fn answer_json(a: &AggregateResponse) -> serde_json::Value {
    serde_json::json!({
        "agreement_id": a.agreement_id,
        "product_id": a.product_id,
        "version": a.version,
        "k": a.k,
        "group_by": a.group_by,
        "aggregations": a.aggregations,
        "groups": a.groups.iter().map(|g| serde_json::json!({
            "keys": g.keys,
            "rows": g.rows,
            "values": g.values.iter().map(|v| v.value).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "groups_may_be_withheld": a.groups_may_be_withheld,
        "differential_privacy": a.differential_privacy.as_ref().map(|p| serde_json::json!({
            "epsilon": p.epsilon,
            "epsilon_spent": p.epsilon_spent,
            "epsilon_left": p.epsilon_left,
            "budget": p.budget,
            "delta": p.delta,
        })),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_read_into_a_query() {
        let q = parse_query(
            &["count".into(), "avg:speed".into()],
            &["district".into()],
            &[
                "year=2025".into(),
                "speed >= 10".into(),
                "day<2025-07-01".into(),
            ],
        )
        .unwrap();
        assert_eq!(
            q.to_string(),
            "count, avg(speed) by district where year = 2025 and speed >= 10 and day < 2025-07-01"
        );
        let e = parse_query(&["median:speed".into()], &[], &[]).unwrap_err();
        assert!(e.to_string().contains("unknown function"), "{e}");
        let e = parse_query(&["avg".into()], &[], &[]).unwrap_err();
        assert!(e.to_string().contains("avg needs a column"), "{e}");
        let e = parse_query(&["count".into()], &[], &["speed".into()]).unwrap_err();
        assert!(e.to_string().contains("COLUMN OP VALUE"), "{e}");
        let e = parse_query(&["count".into()], &[], &[">=3".into()]).unwrap_err();
        assert!(e.to_string().contains("name a column"), "{e}");
    }

    #[test]
    fn the_table_says_when_groups_may_be_withheld() {
        use liutong_proto::v1::{AggregateGroup, AggregateValue};
        let a = AggregateResponse {
            agreement_id: "agr-1".into(),
            product_id: "prd-1".into(),
            version: 1,
            k: 3,
            group_by: vec!["district".into()],
            aggregations: vec!["avg(speed)".into()],
            groups: vec![AggregateGroup {
                keys: vec!["Xihu".into()],
                rows: 3,
                values: vec![AggregateValue { value: Some(40.5) }],
            }],
            groups_may_be_withheld: true,
            differential_privacy: None,
        };
        assert_eq!(
            answer_table(&a),
            "prd-1 v1 under agreement agr-1: groups of at least k = 3 rows\n\
             district  rows  avg(speed)\n\
             Xihu      3     40.5\n\
             groups of fewer than 3 rows, if any, are withheld (how many is not said)\n"
        );
        // A group key from the provider's data cannot add a line of its own.
        let mut forged = a.clone();
        forged.groups[0].keys = vec!["Xihu\n99 rows: fake\u{1b}[31m".into()];
        let table = answer_table(&forged);
        assert_eq!(table.lines().count(), 4, "{table}");
        assert!(table.contains("Xihu\\n99 rows: fake\\u{1b}[31m"), "{table}");
    }

    #[test]
    fn the_table_says_what_privacy_was_spent() {
        use liutong_proto::v1::DifferentialPrivacy;
        let a = AggregateResponse {
            agreement_id: "agr-1".into(),
            product_id: "prd-1".into(),
            version: 1,
            k: 1,
            aggregations: vec!["sum(income)".into()],
            groups_may_be_withheld: true,
            differential_privacy: Some(DifferentialPrivacy {
                epsilon: 0.5,
                epsilon_spent: 1.5,
                epsilon_left: 3.5,
                budget: 5.0,
                delta: 1e-7,
            }),
            ..AggregateResponse::default()
        };
        let table = answer_table(&a);
        assert!(
            table.ends_with(
                "groups whose noisy count falls below the threshold, if any, are withheld \
                 (how many is not said)\n\
                 differential privacy: every number carries random noise; this query spent \
                 ε = 0.5 (δ = 1e-7); the agreement has spent 1.5 of 5, 3.5 left\n"
            ),
            "{table}"
        );
        assert_eq!(answer_json(&a)["differential_privacy"]["epsilon_left"], 3.5);
    }
}
