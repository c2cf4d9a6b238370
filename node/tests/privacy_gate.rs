//! One usage-control gate for every way data leaves, tried as a curious consumer would:
//! after a revocation, after the copy's deleteAfter deadline, after the agreement's
//! count is spent, outside its time window and for a purpose outside the agreement's,
//! an aggregate query that would give one group per person is refused — through the
//! consumer's own node and sent straight to the provider — and a pull and a read stay
//! refused. Each refusal is checked by its code, its message and its audit entry, and
//! no individual value may come back.

mod common;

use std::time::Duration;

use common::*;
use liutong_node::local::LocalRole;
use liutong_proto::v1::query_client::QueryClient;
use liutong_proto::v1::read_response::Part;
use liutong_proto::v1::{
    AggregateFunction, AggregateQuery, AggregateRequest, AggregateResponse, Aggregation,
    ListCopiesRequest, PullRequest, QueryAggregateRequest, ReadRequest, RevokeRequest,
};
use tokio_stream::StreamExt as _;
use tonic::{Code, Status};

/// Generous bound for what the background tasks do every 200 ms.
const SOON: Duration = Duration::from_secs(30);

/// Synthetic people: every ID number, mobile and e-mail is made up.
const PEOPLE: &str = "person_id,name,id_number,mobile,email,district,birth_date,income\n\
P001,张伟,330106198503127318,13905710001,zhangwei@example.cn,Xihu,1985-03-12,8200\n\
P002,王芳,330102199011234526,13905710002,wangfang@example.cn,Shangcheng,1990-11-23,9100\n\
P003,李娜,330105197807055743,13905710003,lina@example.cn,Gongshu,1978-07-05,7600\n\
P004,刘洋,330108199202288311,13905710004,liuyang@example.cn,Binjiang,1992-02-28,12400\n\
P005,陈静,330110198812016629,13905710005,chenjing@example.cn,Yuhang,1988-12-01,10300\n";

/// The values a curious consumer is after.
const SECRETS: &[&str] = &[
    "330106198503127318",
    "330102199011234526",
    "330105197807055743",
    "330108199202288311",
    "330110198812016629",
    "13905710001",
    "zhangwei@example.cn",
];

/// `use` for research, without further limits (the revocation case).
const RESEARCH: &str = r#"
uid = "urn:liutong:policy:people-research"
type = "set"

[[permission]]
action = "use"
constraint = [{ leftOperand = "purpose", operator = "isA", rightOperand = "research" }]
"#;

/// Two uses at most; the provider is notified of every read.
const TWO_USES: &str = r#"
uid = "urn:liutong:policy:people-two-uses"
type = "set"
obligation = [{ action = "notify" }]

[[permission]]
action = "use"
constraint = [{ leftOperand = "count", operator = "lt", rightOperand = 2 }]
"#;

/// Usable for three seconds after the agreement.
const THREE_SECONDS: &str = r#"
uid = "urn:liutong:policy:people-window"
type = "set"

[[permission]]
action = "use"
constraint = [{ leftOperand = "elapsedTime", operator = "lt", rightOperand = "PT3S" }]
"#;

/// The copy is deleted three seconds after the agreement.
const DELETE_AFTER: &str = r#"
uid = "urn:liutong:policy:people-short-lived"
type = "set"

[[permission]]
action = "use"
duty = [{ action = "deleteAfter", elapsed = "PT3S" }]
"#;

/// Publishes the people under `policy`, agrees for `purpose` and pulls the copy.
async fn agreed(s: &TwoMembers, policy: &str, purpose: &str) -> String {
    let product = publish(
        &s.provider,
        PEOPLE.as_bytes(),
        "Residents",
        "general-2",
        "csv",
        policy,
    )
    .await
    .expect("publish");
    s.consumer
        .agree_and_pull(&s.provider, &product.offer_id, purpose)
        .await
}

/// The differencing-free way to every row: one group per person.
fn one_group_per_person() -> AggregateQuery {
    AggregateQuery {
        aggregations: vec![Aggregation {
            function: AggregateFunction::Count as i32,
            column: String::new(),
        }],
        group_by: vec!["person_id".into(), "name".into(), "id_number".into()],
        filters: vec![],
    }
}

/// `liutong query --group-by person_id,name,id_number --purpose P` through the
/// consumer's own node.
async fn query(
    s: &TwoMembers,
    agreement: &str,
    purpose: &str,
) -> Result<AggregateResponse, Status> {
    s.consumer
        .admin(LocalRole::Admin)
        .await
        .query_aggregate(QueryAggregateRequest {
            agreement_id: agreement.into(),
            peer: String::new(),
            query: Some(one_group_per_person()),
            purpose: purpose.into(),
        })
        .await
        .map(tonic::Response::into_inner)
}

/// The same query sent straight to the provider, as a consumer that bypasses its own
/// node's checks would.
async fn query_direct(
    s: &TwoMembers,
    agreement: &str,
    purpose: &str,
) -> Result<AggregateResponse, Status> {
    QueryClient::new(s.consumer.channel_to(&s.provider).await)
        .aggregate(AggregateRequest {
            agreement_id: agreement.into(),
            query: Some(one_group_per_person()),
            purpose: purpose.into(),
        })
        .await
        .map(tonic::Response::into_inner)
}

/// A raw pull straight from the provider; the bytes it delivered.
async fn pull_direct(s: &TwoMembers, agreement: &str) -> Result<Vec<u8>, Status> {
    let mut stream = s
        .consumer
        .direct_transfer_client(&s.provider)
        .await
        .pull(PullRequest {
            agreement_id: agreement.into(),
            from_chunk: 0,
        })
        .await?
        .into_inner();
    let mut data = Vec::new();
    while let Some(item) = stream.next().await {
        if let Some(liutong_proto::v1::pull_response::Part::Chunk(c)) = item?.part {
            data.extend(c.data);
        }
    }
    Ok(data)
}

/// A read of the copy at the consumer, as a local application makes it.
async fn read(s: &TwoMembers, agreement: &str, purpose: &str) -> Result<Vec<u8>, Status> {
    let mut stream = s
        .consumer
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

/// Fails if any individual value is in `answer`.
fn assert_no_individual_value<T: std::fmt::Debug>(answer: &Result<T, Status>) {
    let text = format!("{answer:?}");
    for secret in SECRETS {
        assert!(!text.contains(secret), "{secret} came back: {text}");
    }
}

/// A refused query: no individual value, the code, the message.
fn assert_query_refused(answer: Result<AggregateResponse, Status>, code: Code, expected: &str) {
    assert_no_individual_value(&answer);
    let err = answer.expect_err("the query must be refused");
    assert_refused(&err, code, expected);
}

/// The audit entries of `node` about `agreement` of `kind` whose detail holds every
/// one of `words`.
fn entries(node: &TestNode, agreement: &str, kind: &str, words: &[&str]) -> usize {
    node.audit_events()
        .into_iter()
        .filter(|e| e["agreement"] == agreement && e["kind"] == kind)
        .filter(|e| {
            let detail = e["detail"].as_str().unwrap_or_default();
            words.iter().all(|w| detail.contains(w))
        })
        .count()
}

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn agreed_at(s: &TwoMembers, agreement: &str) -> i64 {
    let copy = liutong_node::transfer::copy(s.consumer.running.node.storage.as_ref(), agreement)
        .unwrap()
        .expect("copy");
    copy.agreement.peek_json::<serde_json::Value>().unwrap()["agreed_at"]
        .as_i64()
        .unwrap()
}

/// Whether the consumer still holds a readable copy (not DELETED or REVOKED).
async fn copy_held(s: &TwoMembers, agreement: &str) -> bool {
    s.consumer
        .usage(LocalRole::Auditor)
        .await
        .list_copies(ListCopiesRequest::default())
        .await
        .expect("list copies")
        .into_inner()
        .copies
        .iter()
        .any(|c| c.agreement_id == agreement && c.state == "COMPLETED")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_revocation_queries_pulls_and_reads_are_refused() {
    let s = two_members().await;
    let agreement = agreed(&s, RESEARCH, "research").await;
    s.provider
        .usage(LocalRole::Admin)
        .await
        .revoke(RevokeRequest {
            agreement_id: agreement.clone(),
            reason: "consent withdrawn".into(),
        })
        .await
        .expect("revoke");
    // The consumer's node deletes its copy and returns a signed deletion receipt.
    assert!(wait_until(SOON, || async { !copy_held(&s, &agreement).await }).await);
    let provider = s.provider.running.node.usage.clone();
    assert!(
        wait_until(SOON, || async {
            provider.deletion_receipt(&agreement).unwrap().is_some()
        })
        .await
    );

    assert_query_refused(
        query(&s, &agreement, "").await,
        Code::PermissionDenied,
        "revoked",
    );
    assert_query_refused(
        query_direct(&s, &agreement, "").await,
        Code::PermissionDenied,
        "revoked",
    );
    assert_eq!(
        entries(&s.provider, &agreement, "query", &["refused", "revoked"]),
        1,
        "the provider logs the refused query"
    );
    assert_eq!(
        entries(&s.consumer, &agreement, "query", &["refused", "revoked"]),
        1,
        "the consumer logs the query it did not send"
    );

    let pulled = pull_direct(&s, &agreement).await;
    assert_no_individual_value(&pulled);
    assert_refused(&pulled.unwrap_err(), Code::PermissionDenied, "revoked");
    let pulled = s.consumer.pull_all(&agreement).await;
    assert_refused(&pulled.unwrap_err(), Code::PermissionDenied, "revoked");
    let r = read(&s, &agreement, "research").await;
    assert_no_individual_value(&r);
    assert_refused(&r.unwrap_err(), Code::PermissionDenied, "revoked");
    drop(s.space);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_delete_after_deadline_queries_pulls_and_reads_are_refused() {
    let s = two_members().await;
    let agreement = agreed(&s, DELETE_AFTER, "research").await;
    let since = agreed_at(&s, &agreement);
    assert!(wait_until(SOON, || async { unix_now() >= since + 4 }).await);

    assert_query_refused(
        query_direct(&s, &agreement, "").await,
        Code::PermissionDenied,
        "deleteAfter deadline passed",
    );
    assert_eq!(
        entries(
            &s.provider,
            &agreement,
            "query",
            &["refused", "deleteAfter"]
        ),
        1
    );
    // Through the consumer's node: its copy is (or is about to be) deleted.
    assert!(wait_until(SOON, || async { !copy_held(&s, &agreement).await }).await);
    assert_query_refused(
        query(&s, &agreement, "").await,
        Code::PermissionDenied,
        "deleteAfter",
    );
    assert_eq!(
        entries(
            &s.consumer,
            &agreement,
            "query",
            &["refused", "deleteAfter"]
        ),
        1
    );

    let pulled = pull_direct(&s, &agreement).await;
    assert_no_individual_value(&pulled);
    assert_refused(&pulled.unwrap_err(), Code::PermissionDenied, "deleteAfter");
    let r = read(&s, &agreement, "research").await;
    assert_no_individual_value(&r);
    assert_refused(&r.unwrap_err(), Code::NotFound, "deleteAfter");
    drop(s.space);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_the_reads_spent_the_count_queries_are_refused() {
    let s = two_members().await;
    let agreement = agreed(&s, TWO_USES, "research").await;
    for _ in 0..2 {
        read(&s, &agreement, "research")
            .await
            .expect("within the count");
    }
    assert_query_refused(
        query(&s, &agreement, "").await,
        Code::PermissionDenied,
        "count",
    );
    assert_eq!(
        entries(&s.consumer, &agreement, "query", &["refused", "count"]),
        1
    );
    // The provider counts the reads its usage notices reported.
    let provider = s.provider.running.node.usage.clone();
    assert!(
        wait_until(SOON, || async {
            provider.usage_notices(&agreement).unwrap().len() == 2
        })
        .await
    );
    assert_query_refused(
        query_direct(&s, &agreement, "").await,
        Code::PermissionDenied,
        "count",
    );
    assert_eq!(
        entries(&s.provider, &agreement, "query", &["refused", "count"]),
        1
    );
    // A read stays refused, also after pulling again.
    s.consumer
        .pull_all(&agreement)
        .await
        .expect("the copy is held");
    let r = read(&s, &agreement, "research").await;
    assert_no_individual_value(&r);
    assert_refused(&r.unwrap_err(), Code::PermissionDenied, "count");
    drop(s.space);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_spend_the_same_count_as_reads() {
    let s = two_members().await;
    let agreement = agreed(&s, TWO_USES, "research").await;
    query(&s, &agreement, "").await.expect("first use");
    query(&s, &agreement, "").await.expect("second use");
    // Both uses are spent: neither a read nor another query is permitted, also not a
    // query sent straight to the provider, which counted both.
    let r = read(&s, &agreement, "research").await;
    assert_no_individual_value(&r);
    assert_refused(&r.unwrap_err(), Code::PermissionDenied, "count");
    assert_query_refused(
        query_direct(&s, &agreement, "").await,
        Code::PermissionDenied,
        "count",
    );
    assert_eq!(
        entries(&s.provider, &agreement, "query", &["refused", "count"]),
        1
    );
    drop(s.space);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outside_the_window_queries_pulls_and_reads_are_refused() {
    let s = two_members().await;
    let agreement = agreed(&s, THREE_SECONDS, "research").await;
    let since = agreed_at(&s, &agreement);
    assert!(wait_until(SOON, || async { unix_now() >= since + 4 }).await);

    assert_query_refused(
        query(&s, &agreement, "").await,
        Code::PermissionDenied,
        "elapsedTime",
    );
    assert_query_refused(
        query_direct(&s, &agreement, "").await,
        Code::PermissionDenied,
        "elapsedTime",
    );
    assert_eq!(
        entries(
            &s.provider,
            &agreement,
            "query",
            &["refused", "elapsedTime"]
        ),
        2,
    );
    assert_eq!(
        entries(
            &s.consumer,
            &agreement,
            "query",
            &["refused", "elapsedTime"]
        ),
        1
    );
    let pulled = pull_direct(&s, &agreement).await;
    assert_no_individual_value(&pulled);
    assert_refused(&pulled.unwrap_err(), Code::PermissionDenied, "elapsedTime");
    let r = read(&s, &agreement, "research").await;
    assert_no_individual_value(&r);
    assert_refused(&r.unwrap_err(), Code::PermissionDenied, "elapsedTime");
    drop(s.space);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purpose_outside_the_agreement_is_refused_for_queries_and_reads() {
    let s = two_members().await;
    let agreement = agreed(&s, RESEARCH, "research").await;
    assert_query_refused(
        query(&s, &agreement, "marketing").await,
        Code::PermissionDenied,
        "outside the agreement's purpose",
    );
    assert_query_refused(
        query_direct(&s, &agreement, "marketing").await,
        Code::PermissionDenied,
        "outside the agreement's purpose",
    );
    assert_eq!(
        entries(&s.provider, &agreement, "query", &["refused", "marketing"]),
        2,
    );
    assert_eq!(
        entries(&s.consumer, &agreement, "query", &["refused", "marketing"]),
        1
    );
    let r = read(&s, &agreement, "marketing").await;
    assert_no_individual_value(&r);
    assert_refused(
        &r.unwrap_err(),
        Code::PermissionDenied,
        "outside the agreement's purpose",
    );
    // The agreement's own purpose, and a narrower one, are answered.
    query(&s, &agreement, "research")
        .await
        .expect("its purpose");
    query(&s, &agreement, "academicResearch")
        .await
        .expect("a narrower purpose");
    drop(s.space);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_agreement_does_not_reset_a_spent_count() {
    let s = two_members().await;
    let product = publish(
        &s.provider,
        PEOPLE.as_bytes(),
        "Residents",
        "general-2",
        "csv",
        TWO_USES,
    )
    .await
    .expect("publish");
    let first = s
        .consumer
        .request_contract(&s.provider, &product.offer_id, "research")
        .await
        .expect("agreement");
    assert_eq!(first.state, "FINALIZED");
    query(&s, &first.agreement_id, "").await.expect("first use");
    query(&s, &first.agreement_id, "")
        .await
        .expect("second use");
    assert_query_refused(
        query(&s, &first.agreement_id, "").await,
        Code::PermissionDenied,
        "count",
    );
    // Agreeing again on the same offer would give a fresh count at once: refused while
    // the spent agreement is in force.
    let again = s
        .consumer
        .request_contract(&s.provider, &product.offer_id, "research")
        .await
        .expect_err("a fresh count is refused");
    assert_refused(&again, Code::PermissionDenied, "has spent its use count");
    assert_eq!(
        s.provider
            .audit_events()
            .iter()
            .filter(|e| e["kind"] == "policy_decision"
                && e["detail"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("has spent its use count"))
            .count(),
        1,
        "the provider logs the refusal"
    );
    drop(s.space);
}
