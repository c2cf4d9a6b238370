//! Every policy example of `policy/README.md` ("Writing policies"), taken from the README
//! text itself when the test runs, works on real nodes as the example says: published
//! as an offer, listed to a consumer it is for, negotiated, delivered (or kept at the
//! provider for compute-to-data) and used under its constraints and duties.

mod common;

use std::time::Duration;

use common::*;
use liutong_node::identity::ParticipantKind;
use liutong_node::local::LocalRole;
use liutong_proto::v1::read_response::Part;
use liutong_proto::v1::{
    AggregateFunction, AggregateQuery, Aggregation, ApproveContractRequest, GetContractRequest,
    ListCopiesRequest, PeerCatalogRequest, QueryAggregateRequest, ReadRequest,
};
use tokio_stream::StreamExt as _;
use tonic::Code;

const SOON: Duration = Duration::from_secs(30);
/// The assigner the README's examples name; on a node the node itself is the assigner.
const README_ASSIGNER: &str = "91110000600037341L";
/// The enterprise the "restrict recipient" example names.
const NAMED_PARTNER: &str = "91330100MA27XY0017";
const CSV: &[u8] = b"district,households\nXihu,241000\nShangcheng,198000\n";

/// The examples of `policy/README.md`: each `<!-- example: NAME -->` marker and the
/// TOML block after it.
fn readme_examples() -> Vec<(String, String)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../policy/README.md");
    let text = std::fs::read_to_string(path).expect("policy/README.md");
    let mut out = Vec::new();
    let mut rest = text.as_str();
    while let Some(at) = rest.find("<!-- example: ") {
        rest = &rest[at + "<!-- example: ".len()..];
        let name = rest[..rest.find(" -->").expect("marker closes")].to_owned();
        let open = rest
            .find("```toml\n")
            .expect("a TOML block follows the marker")
            + 8;
        let len = rest[open..].find("```").expect("the block closes");
        out.push((name, rest[open..open + len].to_owned()));
        rest = &rest[open + len..];
    }
    out
}

/// The example as a node's operator publishes it (README: "Write it as `type = \"set\"`,
/// with no assigner or target"): the node is the assigner and the product the target.
fn as_published(example: &str) -> String {
    let assigner = format!("assigner = \"{README_ASSIGNER}\"\n");
    assert!(
        example.contains(&assigner),
        "the example names its assigner"
    );
    assert!(
        example.contains("type = \"offer\"\n"),
        "the example is an offer"
    );
    example
        .replace(&assigner, "")
        .replace("type = \"offer\"\n", "type = \"set\"\n")
        .lines()
        .filter(|l| !l.starts_with("target = "))
        .map(|l| format!("{l}\n"))
        .collect()
}

async fn offers_seen_by(consumer: &TestNode, provider: &TestNode) -> Vec<String> {
    consumer
        .admin(LocalRole::Admin)
        .await
        .peer_catalog(PeerCatalogRequest {
            address: provider.peer_addr().to_string(),
            page_size: 0,
            page_token: String::new(),
        })
        .await
        .expect("catalog")
        .into_inner()
        .offers
        .into_iter()
        .map(|o| o.offer_id)
        .collect()
}

/// Publishes the example; asserts the consumer's catalog lists it and negotiates for
/// `purpose`; returns the offer and the finalized agreement's ID.
async fn agreed(
    provider: &TestNode,
    consumer: &TestNode,
    policy: &str,
    data: &[u8],
    classification: &str,
    purpose: &str,
) -> (String, String) {
    let product = publish(
        provider,
        data,
        "Example data",
        classification,
        "csv",
        policy,
    )
    .await
    .expect("the README's example publishes");
    assert!(
        offers_seen_by(consumer, provider)
            .await
            .contains(&product.offer_id),
        "the offer is listed to a consumer it is for"
    );
    let contract = consumer
        .request_contract(provider, &product.offer_id, purpose)
        .await
        .expect("negotiated");
    assert_eq!(contract.state, "FINALIZED", "{contract:?}");
    (product.offer_id, contract.agreement_id)
}

/// Like [`agreed`], then pulls the copy.
async fn received(
    provider: &TestNode,
    consumer: &TestNode,
    policy: &str,
    data: &[u8],
    purpose: &str,
) -> String {
    let (_, agreement) = agreed(provider, consumer, policy, data, "general-2", purpose).await;
    let done = consumer.pull_all(&agreement).await.expect("pulled");
    assert_eq!(done.state, "COMPLETED");
    agreement
}

async fn read(node: &TestNode, agreement: &str, purpose: &str) -> Result<Vec<u8>, tonic::Status> {
    let mut stream = node
        .usage(LocalRole::App)
        .await
        .read(ReadRequest {
            agreement_id: agreement.into(),
            purpose: purpose.into(),
        })
        .await?
        .into_inner();
    let mut data = Vec::new();
    while let Some(item) = stream.next().await {
        if let Some(Part::Data(d)) = item?.part {
            data.extend(d);
        }
    }
    Ok(data)
}

/// The year now in Beijing time.
fn this_year() -> i32 {
    time::OffsetDateTime::now_utc()
        .to_offset(time::macros::offset!(+8))
        .year()
}

/// An example written for 2026 moved to `year`: its interval then starts on 1 January of
/// `year` and ends a year later.
fn in_year(example: &str, year: i32) -> String {
    let from = "rightOperand = 2026-01-01T00:00:00+08:00";
    let to = "rightOperand = 2027-01-01T00:00:00+08:00";
    assert!(
        example.contains(from) && example.contains(to),
        "the example's interval is no longer 2026: {example}"
    );
    example
        .replace(from, &format!("rightOperand = {year}-01-01T00:00:00+08:00"))
        .replace(
            to,
            &format!("rightOperand = {}-01-01T00:00:00+08:00", year + 1),
        )
}

/// A GB 11643 ID number: 17 digits and their check character.
fn id_number(first17: &str) -> String {
    const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    let sum: u32 = first17
        .chars()
        .zip(WEIGHTS)
        .map(|(c, w)| c.to_digit(10).unwrap() * w)
        .sum();
    let check = b"10X98765432"[(sum % 11) as usize] as char;
    format!("{first17}{check}")
}

#[test]
fn the_readme_has_the_examples_this_test_covers() {
    let names: Vec<String> = readme_examples().into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "provide-access",
            "restrict-purpose",
            "use-during-interval",
            "use-until",
            "use-n-times",
            "delete-after",
            "log-access",
            "notify",
            "restrict-recipient",
            "mask",
            "aggregate-only",
            "differential-privacy",
            "important-data",
        ],
        "a new README example needs its scenario here"
    );
}

fn example(name: &str) -> String {
    let (_, text) = readme_examples()
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("policy/README.md has no example {name}"));
    as_published(&text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn use_n_times_allows_exactly_n_reads() {
    let s = two_members().await;
    let agreement = received(
        &s.provider,
        &s.consumer,
        &example("use-n-times"),
        CSV,
        "statistics",
    )
    .await;
    for _ in 0..10 {
        assert_eq!(
            read(&s.consumer, &agreement, "statistics").await.unwrap(),
            CSV
        );
    }
    let err = read(&s.consumer, &agreement, "statistics")
        .await
        .unwrap_err();
    assert_refused(&err, Code::PermissionDenied, "count lt 10");
    // A read permission is no aggregate permission.
    let err = s
        .consumer
        .admin(LocalRole::Admin)
        .await
        .query_aggregate(QueryAggregateRequest {
            agreement_id: agreement.clone(),
            peer: String::new(),
            query: Some(count_query()),
            purpose: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    drop(s.space);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offer_no_consumer_could_use_is_refused_at_publish() {
    let s = two_members().await;
    for action in ["transfer", "distribute", "derive", "delete"] {
        let policy = format!(
            "uid = \"urn:liutong:policy:{action}-only\"\ntype = \"set\"\n\n\
             [[permission]]\naction = \"{action}\"\n"
        );
        let err = publish(&s.provider, CSV, "Unusable", "general-2", "csv", &policy)
            .await
            .unwrap_err();
        assert_refused(&err, Code::InvalidArgument, "no consumer could ever use");
        assert!(err.message().contains(action), "{}", err.message());
    }
    let products = s
        .provider
        .admin(LocalRole::Admin)
        .await
        .list_products(liutong_proto::v1::ListProductsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .products;
    assert!(products.is_empty(), "nothing was stored: {products:?}");
    drop(s.space);
}

fn count_query() -> AggregateQuery {
    AggregateQuery {
        aggregations: vec![Aggregation {
            function: AggregateFunction::Count as i32,
            column: String::new(),
        }],
        group_by: vec![],
        filters: vec![],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_purpose_and_time_examples_work_as_written() {
    let s = two_members().await;
    let (p, c) = (&s.provider, &s.consumer);

    let open = received(p, c, &example("provide-access"), CSV, "statistics").await;
    assert_eq!(read(c, &open, "statistics").await.unwrap(), CSV);

    let research = received(p, c, &example("restrict-purpose"), CSV, "research").await;
    assert_eq!(read(c, &research, "research").await.unwrap(), CSV);
    let err = read(c, &research, "marketing").await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    let product = publish(
        p,
        b"district,n\nXihu,1\n",
        "Research only",
        "general-2",
        "csv",
        &example("restrict-purpose"),
    )
    .await
    .unwrap();
    let err = c
        .request_contract(p, &product.offer_id, "marketing")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");

    // Usable during its year. In any other the offer is outside its catalog scope: not
    // listed, and asking for it answers NOT_FOUND.
    let interval = example("use-during-interval");
    let now = in_year(&interval, this_year());
    let a = received(p, c, &now, CSV, "statistics").await;
    assert_eq!(read(c, &a, "statistics").await.unwrap(), CSV);
    let past = in_year(&interval, this_year() - 2);
    let product = publish(p, CSV, "Census", "general-2", "csv", &past)
        .await
        .unwrap();
    assert!(!offers_seen_by(c, p).await.contains(&product.offer_id));
    let err = c
        .request_contract(p, &product.offer_id, "statistics")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");

    let until = received(p, c, &example("use-until"), CSV, "statistics").await;
    assert_eq!(read(c, &until, "statistics").await.unwrap(), CSV);
    drop(s.space);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duty_examples_are_carried_out() {
    let s = two_members().await;
    let (p, c) = (&s.provider, &s.consumer);

    // Delete after 30 days: the copy carries its deadline.
    let deleting = received(p, c, &example("delete-after"), CSV, "statistics").await;
    assert_eq!(read(c, &deleting, "statistics").await.unwrap(), CSV);
    let copy = c
        .usage(LocalRole::Auditor)
        .await
        .list_copies(ListCopiesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .copies
        .into_iter()
        .find(|x| x.agreement_id == deleting)
        .expect("the copy is listed");
    let in_30_days = time::OffsetDateTime::now_utc().unix_timestamp() + 30 * 86_400;
    assert!(
        (copy.delete_at_unix - in_30_days).abs() < 3_600,
        "deleted 30 days after the agreement: {copy:?}"
    );

    // Log: the read is in the consumer's audit log.
    let logged = received(p, c, &example("log-access"), CSV, "statistics").await;
    assert_eq!(read(c, &logged, "statistics").await.unwrap(), CSV);
    assert!(
        c.audit_events()
            .iter()
            .any(|e| e["agreement"] == logged.as_str()
                && e["kind"] == "usage"
                && e["detail"].as_str().unwrap().contains("read of the copy")),
        "the read is logged"
    );

    // Notify: the provider hears of the read.
    let notified = received(p, c, &example("notify"), CSV, "statistics").await;
    assert_eq!(read(c, &notified, "statistics").await.unwrap(), CSV);
    assert!(
        wait_until(SOON, || async {
            p.audit_events().iter().any(|e| {
                e["agreement"] == notified.as_str()
                    && e["detail"]
                        .as_str()
                        .unwrap()
                        .contains("usage notice from the consumer")
            })
        })
        .await,
        "the provider received the usage notice"
    );
    drop(s.space);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restrict_recipient_lists_the_offer_to_the_named_partner_only() {
    let s = two_members().await;
    let partner = s
        .space
        .node_as(
            DataSpace::admission(NAMED_PARTNER, "Named partner", ParticipantKind::Enterprise),
            "partner",
        )
        .await;
    refresh_all(&[&s.provider, &s.consumer, &partner]).await;
    let policy = example("restrict-recipient");
    let (offer, agreement) = agreed(
        &s.provider,
        &partner,
        &policy,
        CSV,
        "general-2",
        "statistics",
    )
    .await;
    partner.pull_all(&agreement).await.expect("pulled");
    assert_eq!(read(&partner, &agreement, "statistics").await.unwrap(), CSV);
    // A Hangzhou government department whose credential states no security level gets
    // no agreement.
    let err = s
        .consumer
        .request_contract(&s.provider, &offer, "statistics")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    drop(s.space);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mask_example_delivers_no_personal_value() {
    let s = two_members().await;
    let id = id_number("33010619900517123");
    let csv = format!(
        "name,id_number,mobile,email,address,birth_date,district\n\
         Wang Xiaoming,{id},13812345678,wang.xm@example.cn,12 Wensan Road,1990-05-17,330108\n"
    );
    let agreement = received(
        &s.provider,
        &s.consumer,
        &example("mask"),
        csv.as_bytes(),
        "statistics",
    )
    .await;
    let out =
        String::from_utf8(read(&s.consumer, &agreement, "statistics").await.unwrap()).unwrap();
    for secret in [
        "Wang Xiaoming",
        id.as_str(),
        "13812345678",
        "wang.xm@example.cn",
        "Wensan",
        "1990-05-17",
        "330108",
    ] {
        assert!(!out.contains(secret), "{secret} was delivered: {out}");
    }
    assert!(out.contains("330106********1230"), "{out}");
    assert!(out.contains("138****5678"), "{out}");
    assert!(out.contains("1990") && out.contains("330100"), "{out}");
    drop(s.space);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregate_only_example_answers_queries_and_keeps_its_rows() {
    let s = two_members().await;
    let mut rows = String::from("district,age\n");
    for i in 0..25 {
        rows.push_str(&format!("Xihu,{}\n", 20 + i));
    }
    let (_, agreement) = agreed(
        &s.provider,
        &s.consumer,
        &example("aggregate-only"),
        rows.as_bytes(),
        "general-2",
        "statistics",
    )
    .await;
    let err = s.consumer.pull_all(&agreement).await.unwrap_err();
    assert_refused(&err, Code::FailedPrecondition, "compute-to-data");
    let answer = s
        .consumer
        .admin(LocalRole::Admin)
        .await
        .query_aggregate(QueryAggregateRequest {
            agreement_id: agreement.clone(),
            peer: String::new(),
            query: Some(count_query()),
            purpose: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.k, 20);
    assert_eq!(answer.groups.len(), 1);
    assert_eq!(answer.groups[0].rows, 25);
    drop(s.space);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn differential_privacy_example_answers_with_noise_within_its_budget() {
    let s = two_members().await;
    let mut rows = String::from("district,income\n");
    for i in 0..60 {
        rows.push_str(&format!("Xihu,{}\n", 4_000 + i * 250));
    }
    let (_, agreement) = agreed(
        &s.provider,
        &s.consumer,
        &example("differential-privacy"),
        rows.as_bytes(),
        "general-2",
        "statistics",
    )
    .await;
    let err = s.consumer.pull_all(&agreement).await.unwrap_err();
    assert_refused(&err, Code::FailedPrecondition, "differentially private");
    let query = AggregateQuery {
        aggregations: vec![Aggregation {
            function: AggregateFunction::Sum as i32,
            column: "income".into(),
        }],
        ..count_query()
    };
    let mut left = Vec::new();
    for _ in 0..20 {
        let answer = s
            .consumer
            .admin(LocalRole::Admin)
            .await
            .query_aggregate(QueryAggregateRequest {
                agreement_id: agreement.clone(),
                peer: String::new(),
                query: Some(query.clone()),
                purpose: String::new(),
            })
            .await
            .expect("within the budget")
            .into_inner();
        assert_eq!(answer.groups.len(), 1, "{answer:?}");
        left.push(answer.differential_privacy.expect("spent").epsilon_left);
    }
    assert_eq!(left.first(), Some(&9.5));
    assert_eq!(left.last(), Some(&0.0));
    let err = s
        .consumer
        .admin(LocalRole::Admin)
        .await
        .query_aggregate(QueryAggregateRequest {
            agreement_id: agreement.clone(),
            peer: String::new(),
            query: Some(query),
            purpose: String::new(),
        })
        .await
        .unwrap_err();
    assert_refused(&err, Code::ResourceExhausted, "privacy budget is spent");
    drop(s.space);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn important_data_example_is_approved_and_used_during_its_year() {
    let s = two_members().await;
    let (p, c) = (&s.provider, &s.consumer);
    let important = example("important-data");
    let past = publish(
        p,
        CSV,
        "OD matrix 2",
        "important",
        "csv",
        &in_year(&important, this_year() - 2),
    )
    .await
    .expect("the example moved to another year publishes");
    assert!(!offers_seen_by(c, p).await.contains(&past.offer_id));
    let err = c
        .request_contract(p, &past.offer_id, "scientificResearch")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let product = publish(
        p,
        CSV,
        "OD matrix",
        "important",
        "csv",
        &in_year(&important, this_year()),
    )
    .await
    .expect("the README's example publishes");
    assert!(offers_seen_by(c, p).await.contains(&product.offer_id));
    let asked = c
        .request_contract(p, &product.offer_id, "scientificResearch")
        .await;
    let pending = asked.expect("requested");
    assert_eq!(
        pending.state, "REQUESTED",
        "a person approves important data"
    );
    p.admin(LocalRole::Admin)
        .await
        .approve_contract(ApproveContractRequest {
            negotiation_id: pending.negotiation_id.clone(),
        })
        .await
        .expect("approved");
    let contract = || async {
        c.admin(LocalRole::Admin)
            .await
            .get_contract(GetContractRequest {
                negotiation_id: pending.negotiation_id.clone(),
            })
            .await
            .unwrap()
            .into_inner()
    };
    assert!(
        wait_until(SOON, || async { contract().await.state == "FINALIZED" }).await,
        "the approved agreement is finalized"
    );
    let agreement = contract().await.agreement_id;
    c.pull_all(&agreement).await.expect("pulled");
    assert_eq!(
        read(c, &agreement, "scientificResearch").await.unwrap(),
        CSV
    );
    let err = read(c, &agreement, "statistics").await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    drop(s.space);
}
