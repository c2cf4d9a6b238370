//! Compute-to-data against a curious consumer: the answers of aggregate queries, run
//! across real nodes, must not give back any one resident's value. Each test runs the
//! attack as a consumer would (only the query API) and fails if it recovers a value.

mod common;

use common::*;
use liutong_node::local::LocalRole;
use liutong_proto::v1::{
    AggregateFunction, AggregateQuery, AggregateResponse, Aggregation, Filter, FilterOperator,
    QueryAggregateRequest,
};

/// Aggregates only, over groups of at least 10 rows; many queries allowed, so that only
/// the answers themselves stand between the consumer and one person's values.
const POLICY: &str = r#"
uid = "urn:liutong:policy:residents-income"
type = "set"

[[permission]]
action = "aggregate"
constraint = [
  { leftOperand = "purpose", operator = "isA", rightOperand = "publicService" },
  { leftOperand = "count", operator = "lt", rightOperand = 500 },
]
duty = [{ action = "aggregateOnly", k = 10 }]
"#;

const K: u64 = 10;

/// Synthetic residents: name, district, monthly income. Xihu has 12 residents (between
/// k and 3k), Binjiang 35.
fn residents() -> Vec<(String, &'static str, u64)> {
    let mut out = Vec::new();
    for i in 0..47u64 {
        let district = if i < 12 { "Xihu" } else { "Binjiang" };
        // Distinct, uneven incomes so that a mean of several is not one of them.
        let income = 3_000 + i * 517 + (i * i * 37) % 401;
        out.push((format!("Resident{i:02}"), district, income));
    }
    out
}

fn csv(rows: &[(String, &str, u64)]) -> Vec<u8> {
    let mut out = String::from("name,district,income\n");
    for (name, district, income) in rows {
        out.push_str(&format!("{name},{district},{income}\n"));
    }
    out.into_bytes()
}

fn aggregation(function: AggregateFunction, column: &str) -> Aggregation {
    Aggregation {
        function: function as i32,
        column: column.into(),
    }
}

fn filter(column: &str, op: FilterOperator, value: &str) -> Filter {
    Filter {
        column: column.into(),
        op: op as i32,
        value: value.into(),
    }
}

async fn query(node: &TestNode, agreement: &str, q: AggregateQuery) -> AggregateResponse {
    node.admin(LocalRole::Admin)
        .await
        .query_aggregate(QueryAggregateRequest {
            agreement_id: agreement.into(),
            peer: String::new(),
            query: Some(q),
            purpose: String::new(),
        })
        .await
        .expect("the query is answered")
        .into_inner()
}

struct Setup {
    _space: DataSpace,
    provider: TestNode,
    consumer: TestNode,
    agreement: String,
}

async fn setup() -> Setup {
    let space = DataSpace::start().await;
    let (provider, consumer, _logistics) = space.transport_ecology_logistics().await;
    let product = publish(
        &provider,
        &csv(&residents()),
        "Resident incomes",
        "general-2",
        "csv",
        POLICY,
    )
    .await
    .unwrap();
    let c = consumer
        .request_contract(&provider, &product.offer_id, "urbanPlanning")
        .await
        .expect("the contract is agreed");
    assert_eq!(c.state, "FINALIZED", "{c:?}");
    Setup {
        _space: space,
        provider,
        consumer,
        agreement: c.agreement_id,
    }
}

/// The attack on the withheld-groups signal: filter on one name and `income >= t`,
/// grouped by district, and binary-search t on whether the answer differs from the
/// answer to a filter that can match nobody. Any difference at all is used. The name
/// filtered on must not be kept in either node's audit log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_filter_and_a_binary_search_do_not_recover_an_income() {
    let s = setup().await;
    let (name, _, income) = residents()[5].clone();
    let probe = |threshold: u64| AggregateQuery {
        aggregations: vec![aggregation(AggregateFunction::Count, "")],
        group_by: vec!["district".into()],
        filters: vec![
            filter("name", FilterOperator::Eq, &name),
            filter("income", FilterOperator::Gteq, &threshold.to_string()),
        ],
    };
    let nobody = query(&s.consumer, &s.agreement, probe(u64::MAX / 4)).await;
    // Largest t with "a row matched" on [0, 2^17): 17 queries, as the attack took.
    let (mut low, mut high) = (0u64, 1u64 << 17);
    let mut queries = 0;
    while high - low > 1 {
        let mid = (low + high) / 2;
        let answer = query(&s.consumer, &s.agreement, probe(mid)).await;
        queries += 1;
        if answer != nobody {
            low = mid;
        } else {
            high = mid;
        }
        assert!(queries <= 17, "the search ends by itself");
    }
    assert_ne!(low, income, "the attack read {name}'s income exactly");
    // The answers carry nothing about the one row: each equals the no-match answer.
    let matching = query(&s.consumer, &s.agreement, probe(income)).await;
    assert_eq!(matching, nobody);
    assert!(matching.groups.is_empty(), "{matching:?}");

    // Neither append-only audit log keeps the name filtered on, nor an income probed.
    for (side, node) in [("provider", &s.provider), ("consumer", &s.consumer)] {
        let queries: Vec<String> = node
            .audit_texts()
            .into_iter()
            .filter(|e| e.contains("aggregate query"))
            .collect();
        assert!(queries.len() > 17, "{side}: every query is logged");
        for e in &queries {
            assert!(!e.contains(&name), "{side} logged the name: {e}");
            assert!(
                e.contains("where name = hmac:") && e.contains("and income >= hmac:"),
                "{side} logged a filter value: {e}"
            );
        }
    }
}

/// Min and max over a group of k to 3k rows gave one resident's income; over larger
/// groups they are means of k values and match no resident's income.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_and_max_never_give_one_residents_income() {
    let s = setup().await;
    let incomes: Vec<f64> = residents().iter().map(|r| r.2 as f64).collect();
    let a = query(
        &s.consumer,
        &s.agreement,
        AggregateQuery {
            aggregations: vec![
                aggregation(AggregateFunction::Min, "income"),
                aggregation(AggregateFunction::Max, "income"),
                aggregation(AggregateFunction::Count, ""),
            ],
            group_by: vec!["district".into()],
            filters: vec![],
        },
    )
    .await;
    let shown: Vec<(String, u64)> = a
        .groups
        .iter()
        .map(|g| (g.keys[0].clone(), g.rows))
        .collect();
    assert_eq!(
        shown,
        [("Binjiang".to_owned(), 35), ("Xihu".to_owned(), 12)],
        "both groups have at least k = {K} rows"
    );
    for g in &a.groups {
        for v in g.values[..2].iter().filter_map(|v| v.value) {
            assert!(
                !incomes.contains(&v),
                "{} of {} rows: {v} is one resident's income",
                g.keys[0],
                g.rows
            );
        }
    }
    // The large group still answers, with the mean of its k lowest and k highest.
    let binjiang: Vec<f64> = residents()
        .iter()
        .filter(|r| r.1 == "Binjiang")
        .map(|r| r.2 as f64)
        .collect();
    let mut sorted = binjiang.clone();
    sorted.sort_by(f64::total_cmp);
    let mean = |xs: &[f64]| xs.iter().sum::<f64>() / xs.len() as f64;
    let k = K as usize;
    let close = |got: Option<f64>, want: f64| got.is_some_and(|g| (g - want).abs() < 1e-6);
    assert!(
        close(a.groups[0].values[0].value, mean(&sorted[..k])),
        "{a:?}"
    );
    assert!(
        close(
            a.groups[0].values[1].value,
            mean(&sorted[sorted.len() - k..])
        ),
        "{a:?}"
    );
    // The provider's log keeps how many rows were read, not how many matched.
    let answered: Vec<String> = s
        .provider
        .audit_texts()
        .into_iter()
        .filter(|e| e.contains("aggregate query answered"))
        .collect();
    assert_eq!(answered.len(), 1, "{answered:#?}");
    assert!(answered[0].contains("47 rows read"), "{answered:#?}");
    assert!(!answered[0].contains("matched"), "{answered:#?}");
}
