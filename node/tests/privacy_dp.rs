//! Differentially private answers against a curious consumer, across real nodes: a
//! `differentialPrivacy` duty makes every answer noisy and spends a budget. Each attack
//! runs as a consumer would (only the query API) and fails if it recovers any one
//! resident's value exactly; the budget must be spent durably, once, and never
//! overspent.

mod common;

use common::*;
use liutong_node::local::LocalRole;
use liutong_proto::v1::query_client::QueryClient;
use liutong_proto::v1::{
    AggregateFunction, AggregateQuery, AggregateRequest, AggregateResponse, Aggregation, Filter,
    FilterOperator, QueryAggregateRequest,
};

/// The income bound of the duty: one resident moves a sum by at most this.
const INCOME_UPPER: u64 = 50_000;

/// Aggregates only, with noise: ε per query and a budget over all queries.
fn dp_policy(epsilon: &str, budget: &str) -> String {
    format!(
        r#"
uid = "urn:liutong:policy:residents-income-dp"
type = "set"

[[permission]]
action = "aggregate"
constraint = [{{ leftOperand = "purpose", operator = "isA", rightOperand = "publicService" }}]
duty = [{{ action = "differentialPrivacy", epsilon = {epsilon}, budget = {budget}, bounds = [
  {{ column = "income", lower = 0, upper = {INCOME_UPPER} }},
] }}]
"#
    )
}

/// The same data without the duty: exact aggregates, to show the attack is real.
const EXACT_POLICY: &str = r#"
uid = "urn:liutong:policy:residents-income-exact"
type = "set"

[[permission]]
action = "aggregate"
constraint = [{ leftOperand = "purpose", operator = "isA", rightOperand = "publicService" }]
"#;

/// GB 11643 check character of the first 17 digits.
fn id_number(first17: &str) -> String {
    const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    let sum: u32 = first17
        .chars()
        .zip(WEIGHTS)
        .map(|(c, w)| c.to_digit(10).expect("digits") * w)
        .sum();
    let check = b"10X98765432"[(sum % 11) as usize] as char;
    format!("{first17}{check}")
}

/// Synthetic residents: name, ID number, mobile, district, birth date, monthly income.
/// Xihu has 12 residents, Binjiang 35.
fn residents() -> Vec<[String; 6]> {
    (0..47u64)
        .map(|i| {
            let district = if i < 12 { "Xihu" } else { "Binjiang" };
            let birth = format!("19{:02}{:02}{:02}", 60 + i % 40, 1 + i % 12, 1 + i % 28);
            let income = 3_000 + i * 517 + (i * i * 37) % 401;
            [
                format!("Resident{i:02}"),
                id_number(&format!("330106{birth}{:03}", 100 + i)),
                format!("139{:08}", 10_000_000 + i * 7_919),
                district.to_owned(),
                format!("{}-{}-{}", &birth[..4], &birth[4..6], &birth[6..]),
                income.to_string(),
            ]
        })
        .collect()
}

fn csv(rows: &[[String; 6]]) -> Vec<u8> {
    let mut out = String::from("name,id_number,mobile,district,birth_date,income\n");
    for r in rows {
        out.push_str(&r.join(","));
        out.push('\n');
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

fn sum_income_where(op: FilterOperator, name: &str) -> AggregateQuery {
    AggregateQuery {
        aggregations: vec![aggregation(AggregateFunction::Sum, "income")],
        group_by: vec![],
        filters: vec![filter("name", op, name)],
    }
}

fn count_by(column: &str) -> AggregateQuery {
    AggregateQuery {
        aggregations: vec![aggregation(AggregateFunction::Count, "")],
        group_by: vec![column.into()],
        filters: vec![],
    }
}

async fn query(
    node: &TestNode,
    agreement: &str,
    q: AggregateQuery,
) -> Result<AggregateResponse, tonic::Status> {
    node.admin(LocalRole::Admin)
        .await
        .query_aggregate(QueryAggregateRequest {
            agreement_id: agreement.into(),
            peer: String::new(),
            query: Some(q),
            purpose: String::new(),
        })
        .await
        .map(tonic::Response::into_inner)
}

struct Setup {
    _space: DataSpace,
    provider: TestNode,
    consumer: TestNode,
}

async fn setup() -> Setup {
    let space = DataSpace::start().await;
    let (provider, consumer, _logistics) = space.transport_ecology_logistics().await;
    Setup {
        _space: space,
        provider,
        consumer,
    }
}

impl Setup {
    /// Publishes the residents under `policy` and agrees to it; the agreement's id.
    async fn agreement(&self, title: &str, policy: &str) -> String {
        let product = publish(
            &self.provider,
            &csv(&residents()),
            title,
            "general-2",
            "csv",
            policy,
        )
        .await
        .unwrap();
        let c = self
            .consumer
            .request_contract(&self.provider, &product.offer_id, "urbanPlanning")
            .await
            .expect("the contract is agreed");
        assert_eq!(c.state, "FINALIZED", "{c:?}");
        c.agreement_id
    }
}

fn the_sum(a: &AggregateResponse) -> f64 {
    assert_eq!(a.groups.len(), 1, "a total is one group: {a:?}");
    a.groups[0].values[0].value.expect("a sum")
}

/// The differencing attack: the sum of incomes of everyone up to a name, less the sum of
/// everyone before it, is that one resident's income. Exact aggregates give it away;
/// under the duty, twenty runs of it within the budget recover it in none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn differencing_two_sums_does_not_recover_an_income() {
    let s = setup().await;
    let [name, .., income] = residents()[7].clone();
    let income: f64 = income.parse().unwrap();

    // The attack works on exact answers: it must, or this test proves nothing.
    let exact = s.agreement("Resident incomes", EXACT_POLICY).await;
    let with = query(
        &s.consumer,
        &exact,
        sum_income_where(FilterOperator::Lteq, &name),
    )
    .await
    .unwrap();
    let without = query(
        &s.consumer,
        &exact,
        sum_income_where(FilterOperator::Lt, &name),
    )
    .await
    .unwrap();
    assert_eq!(the_sum(&with) - the_sum(&without), income);
    assert!(with.differential_privacy.is_none());

    let private = s
        .agreement("Resident incomes, private", &dp_policy("1", "40"))
        .await;
    let mut estimates = Vec::new();
    for run in 0..20 {
        let with = query(
            &s.consumer,
            &private,
            sum_income_where(FilterOperator::Lteq, &name),
        )
        .await
        .expect("within the budget");
        let without = query(
            &s.consumer,
            &private,
            sum_income_where(FilterOperator::Lt, &name),
        )
        .await
        .expect("within the budget");
        let p = without
            .differential_privacy
            .as_ref()
            .expect("spent privacy");
        assert_eq!(
            (p.epsilon, p.epsilon_spent, p.epsilon_left, p.budget),
            (1.0, f64::from(2 * run + 2), f64::from(38 - 2 * run), 40.0)
        );
        estimates.push(the_sum(&with) - the_sum(&without));
    }
    let recovered: Vec<&f64> = estimates
        .iter()
        .filter(|e| (**e - income).abs() < 0.5)
        .collect();
    assert!(
        recovered.is_empty(),
        "the attack recovered {name}'s income {income} in {} of 20 runs: {estimates:?}",
        recovered.len()
    );
    // Nor does the mean of all runs (the budget's worth of averaging).
    let mean = estimates.iter().sum::<f64>() / estimates.len() as f64;
    assert!((mean - income).abs() >= 0.5, "the mean {mean} is {income}");
}

/// A group that exists because of one person must not show: grouping by name shows no
/// name, though exact answers show every one; groups of many still show.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grouping_by_a_personal_key_shows_no_person() {
    let s = setup().await;
    let exact = s.agreement("Resident incomes", EXACT_POLICY).await;
    let names = query(&s.consumer, &exact, count_by("name")).await.unwrap();
    assert_eq!(names.groups.len(), 47, "exact answers list every name");

    let private = s
        .agreement("Resident incomes, private", &dp_policy("1", "20"))
        .await;
    for key in ["name", "id_number", "mobile", "birth_date"] {
        let a = query(&s.consumer, &private, count_by(key)).await.unwrap();
        assert!(
            a.groups.is_empty(),
            "grouping by {key} showed {:?}",
            a.groups
        );
        assert!(a.groups_may_be_withheld);
    }
    // Binjiang's 35 residents lie far above the threshold for ε = 1 (17): shown, with a
    // noisy count.
    let districts = query(&s.consumer, &private, count_by("district"))
        .await
        .unwrap();
    assert!(
        districts.groups.iter().any(|g| g.keys == ["Binjiang"]),
        "{districts:?}"
    );
    let p = districts.differential_privacy.expect("spent privacy");
    assert!(p.delta > 0.0 && p.delta <= 1e-6, "{p:?}");
}

/// Queries past the budget are refused with what was spent and is left, and on record
/// in the provider's audit log; refused queries spend nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_beyond_the_budget_is_refused_and_logged() {
    let s = setup().await;
    let agreement = s
        .agreement("Resident incomes, private", &dp_policy("0.5", "1.5"))
        .await;
    // Refused shapes spend nothing: extremes, and sums of a column without bounds.
    let max = AggregateQuery {
        aggregations: vec![aggregation(AggregateFunction::Max, "income")],
        ..count_by("district")
    };
    let e = query(&s.consumer, &agreement, max).await.unwrap_err();
    assert_refused(&e, tonic::Code::FailedPrecondition, "max is not answered");
    let unbounded = AggregateQuery {
        aggregations: vec![aggregation(AggregateFunction::Avg, "birth_date")],
        ..count_by("district")
    };
    let e = query(&s.consumer, &agreement, unbounded).await.unwrap_err();
    assert_refused(
        &e,
        tonic::Code::FailedPrecondition,
        "needs bounds for column",
    );

    let total = AggregateQuery {
        aggregations: vec![
            aggregation(AggregateFunction::Count, ""),
            aggregation(AggregateFunction::Avg, "income"),
        ],
        group_by: vec![],
        filters: vec![],
    };
    for n in 1..=3 {
        let a = query(&s.consumer, &agreement, total.clone()).await.unwrap();
        let p = a.differential_privacy.expect("spent privacy");
        assert_eq!(
            (p.epsilon_spent, p.epsilon_left),
            (0.5 * f64::from(n), 1.5 - 0.5 * f64::from(n))
        );
    }
    let e = query(&s.consumer, &agreement, total).await.unwrap_err();
    assert_refused(
        &e,
        tonic::Code::ResourceExhausted,
        "privacy budget is spent: ε = 1.5 of 1.5 used, 0 left",
    );
    let refused: Vec<String> = s
        .provider
        .audit_texts()
        .into_iter()
        .filter(|t| t.contains("aggregate query refused") && t.contains("budget is spent"))
        .collect();
    assert_eq!(refused.len(), 1, "{refused:?}");
    let answered = s
        .provider
        .audit_texts()
        .into_iter()
        .filter(|t| t.contains("aggregate query answered") && t.contains("differential privacy"))
        .count();
    assert_eq!(answered, 3);
    // The rows cannot be pulled instead.
    let e = s.consumer.pull_all(&agreement).await.unwrap_err();
    assert!(
        e.message()
            .contains("permits only differentially private aggregates"),
        "{e:?}"
    );
}

/// A consumer sending many queries at once, straight to the provider, gets exactly as
/// many answers as the budget pays for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_queries_cannot_overspend() {
    let s = setup().await;
    let agreement = s
        .agreement("Resident incomes, private", &dp_policy("1", "5"))
        .await;
    let channel = s.consumer.channel_to(&s.provider).await;
    let calls = (0..12).map(|_| {
        let mut client = QueryClient::new(channel.clone());
        let agreement = agreement.clone();
        tokio::spawn(async move {
            client
                .aggregate(AggregateRequest {
                    agreement_id: agreement,
                    query: Some(sum_income_where(FilterOperator::Gteq, "Resident00")),
                    purpose: String::new(),
                })
                .await
                .map(tonic::Response::into_inner)
        })
    });
    let mut spent = Vec::new();
    let mut refused = 0;
    for call in calls.collect::<Vec<_>>() {
        match call.await.expect("the call task") {
            Ok(a) => spent.push(a.differential_privacy.expect("spent privacy").epsilon_spent),
            Err(e) => {
                assert_refused(
                    &e,
                    tonic::Code::ResourceExhausted,
                    "privacy budget is spent",
                );
                refused += 1;
            }
        }
    }
    spent.sort_by(f64::total_cmp);
    assert_eq!(
        spent,
        [1.0, 2.0, 3.0, 4.0, 5.0],
        "each answer spent its own ε"
    );
    assert_eq!(refused, 7);
}

/// The spent budget is on disk: a restarted provider goes on from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_budget_survives_a_restart() {
    let s = setup().await;
    let agreement = s
        .agreement("Resident incomes, private", &dp_policy("1", "3"))
        .await;
    let total = sum_income_where(FilterOperator::Gteq, "Resident00");
    for _ in 0..2 {
        query(&s.consumer, &agreement, total.clone()).await.unwrap();
    }
    let Setup {
        _space,
        provider,
        consumer,
    } = s;
    let provider = provider.restart().await;
    let a = query(&consumer, &agreement, total.clone()).await.unwrap();
    let p = a.differential_privacy.expect("spent privacy");
    assert_eq!((p.epsilon_spent, p.epsilon_left), (3.0, 0.0));
    let e = query(&consumer, &agreement, total).await.unwrap_err();
    assert_refused(
        &e,
        tonic::Code::ResourceExhausted,
        "ε = 3 of 3 used, 0 left",
    );
    drop(provider);
}
