//! Limits that hold against a consumer that goes around its own node: a spent use
//! count stops deliveries at the provider, a new agreement cannot restart a spent
//! count (found through the index of a member's agreements on an offer that count
//! uses), and a received copy's rows are recognised in what the consumer publishes from
//! the moment the copy is verified, even once its payload file is gone.

mod common;

use std::time::Duration;

use common::*;
use liutong_node::contract::Contracts;
use liutong_node::local::LocalRole;
use liutong_node::storage::Write;
use liutong_proto::v1::read_response::Part;
use liutong_proto::v1::{PullRequest, ReadRequest};
use tokio_stream::StreamExt as _;
use tonic::Code;

/// Generous bound for what the background tasks do every 200 ms.
const SOON: Duration = Duration::from_secs(30);

/// Synthetic people: every ID number, mobile and e-mail is made up.
const PEOPLE: &str = "name,id_number,mobile,email,district,birth_date,income\n\
张伟,330106198503127318,13905710001,zhangwei@example.cn,Xihu,1985-03-12,8200\n\
王芳,330102199011234526,13905710002,wangfang@example.cn,Shangcheng,1990-11-23,9100\n\
李娜,330105197807055743,13905710003,lina@example.cn,Gongshu,1978-07-05,7600\n\
刘洋,330108199202288311,13905710004,liuyang@example.cn,Binjiang,1992-02-28,12400\n\
陈静,330110198812016629,13905710005,chenjing@example.cn,Yuhang,1988-12-01,10300\n";

/// Two uses at most; the provider is notified of every read.
const TWO_USES: &str = r#"
uid = "urn:liutong:policy:people-two-uses"
type = "set"
obligation = [{ action = "notify" }]

[[permission]]
action = "use"
constraint = [{ leftOperand = "count", operator = "lt", rightOperand = 2 }]
"#;

/// Use only: distribute is not permitted.
const USE_ONLY: &str = r#"
uid = "urn:liutong:policy:people-use-only"
type = "set"

[[permission]]
action = "use"
"#;

async fn offered(s: &TwoMembers, policy: &str) -> String {
    publish(
        &s.provider,
        PEOPLE.as_bytes(),
        "Residents",
        "general-2",
        "csv",
        policy,
    )
    .await
    .expect("publish")
    .offer_id
}

/// Agrees on `offer` for research and pulls the copy; the agreement ID.
async fn agreed(s: &TwoMembers, offer: &str) -> String {
    s.consumer
        .agree_and_pull(&s.provider, offer, "research")
        .await
}

async fn read(s: &TwoMembers, agreement: &str) -> Result<Vec<u8>, tonic::Status> {
    let mut stream = s
        .consumer
        .usage(LocalRole::App)
        .await
        .read(ReadRequest {
            agreement_id: agreement.into(),
            purpose: "research".into(),
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

/// Reads twice (the whole count) and waits until the provider has both notices.
async fn spend_the_count(s: &TwoMembers, agreement: &str) {
    for _ in 0..2 {
        read(s, agreement).await.expect("within the count");
    }
    let provider = s.provider.running.node.usage.clone();
    assert!(
        wait_until(SOON, || async {
            provider.usage_notices(agreement).unwrap().len() == 2
        })
        .await,
        "the provider learnt of both reads"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_sent_straight_to_the_provider_is_refused_once_the_count_is_spent() {
    let s = two_members().await;
    let offer = offered(&s, TWO_USES).await;
    let agreement = agreed(&s, &offer).await;
    spend_the_count(&s, &agreement).await;

    // The consumer asks the provider for the bytes again, around its own node.
    let pulled = s
        .consumer
        .direct_transfer_client(&s.provider)
        .await
        .pull(PullRequest {
            agreement_id: agreement.clone(),
            from_chunk: 0,
        })
        .await;
    let err = match pulled {
        Err(e) => e,
        Ok(stream) => {
            let mut stream = stream.into_inner();
            let mut got = Vec::new();
            while let Some(Ok(part)) = stream.next().await {
                got.push(format!("{part:?}"));
            }
            panic!("the provider delivered again: {} parts", got.len());
        }
    };
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(
        err.message().contains("use count is spent") && err.message().contains("2 uses"),
        "{}",
        err.message()
    );
    let logged = s
        .provider
        .audit_events()
        .into_iter()
        .filter(|e| {
            e["agreement"] == agreement.as_str()
                && e["detail"]
                    .as_str()
                    .is_some_and(|d| d.starts_with("transfer refused") && d.contains("spent"))
        })
        .count();
    assert_eq!(logged, 1, "the refusal is in the provider's audit log");
    drop(s.space);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_count_is_found_through_the_index_also_when_it_is_built_late() {
    let s = two_members().await;
    let offer = offered(&s, TWO_USES).await;
    let agreement = agreed(&s, &offer).await;
    spend_the_count(&s, &agreement).await;
    // An agreement on an offer without a use count cannot spend one: it is left out
    // of the index, however many the member holds.
    let unlimited = offered(&s, USE_ONLY).await;
    agreed(&s, &unlimited).await;
    agreed(&s, &unlimited).await;

    // The provider indexes the agreements whose policy counts uses, by consumer and
    // offer, in the commit that finalizes each.
    let storage = s.provider.running.node.storage.clone();
    let negotiation = s
        .provider
        .running
        .node
        .contracts
        .by_agreement(&agreement)
        .unwrap()
        .expect("the provider's negotiation");
    let counted = |offer: &str| {
        Contracts::counted_agreements(storage.as_ref(), &s.consumer.participant, offer).unwrap()
    };
    assert_eq!(
        counted(&offer),
        vec![negotiation.id.clone()],
        "the counted agreement is indexed by consumer and offer"
    );
    assert!(
        counted(&unlimited).is_empty(),
        "agreements without a use count are not indexed"
    );
    let refused = s
        .consumer
        .request_contract(&s.provider, &offer, "research")
        .await
        .expect_err("a fresh count is refused");
    assert_refused(&refused, Code::PermissionDenied, "has spent its use count");
    assert!(refused.message().contains(&agreement), "{refused:?}");

    // A database written before the index: it is built from the negotiations on the
    // next check, and the spent count still holds.
    let entries = storage.scan_prefix("agreements_counted", b"").unwrap();
    assert_eq!(entries.len(), 1, "one counted agreement in all");
    storage
        .apply(
            "agreements_counted",
            vec![Write::Delete(entries[0].0.clone())],
        )
        .unwrap();
    storage
        .apply(
            "negotiation_indexes",
            vec![Write::Delete(b"counted".to_vec())],
        )
        .unwrap();
    assert!(counted(&offer).is_empty());
    let again = s
        .consumer
        .request_contract(&s.provider, &offer, "research")
        .await
        .expect_err("still refused");
    assert_refused(&again, Code::PermissionDenied, "has spent its use count");
    assert_eq!(
        counted(&offer),
        vec![negotiation.id],
        "the index was built again"
    );
    assert!(counted(&unlimited).is_empty());
    drop(s.space);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_of_a_verified_copy_are_recognised_after_its_file_is_gone() {
    let s = two_members().await;
    let offer = offered(&s, USE_ONLY).await;
    let agreement = agreed(&s, &offer).await;
    // The fingerprints are made in the background once the copy is verified.
    let storage = s.consumer.running.node.storage.clone();
    let key = format!("f/{agreement}");
    assert!(
        wait_until(SOON, || async {
            storage.get("usage", key.as_bytes()).unwrap().is_some()
        })
        .await,
        "the verified copy was fingerprinted without a publish"
    );
    drop(storage);
    // One permitted read gives the rows to the consumer; then the copy's file goes.
    let rows = read(&s, &agreement).await.expect("a permitted read");
    let file = s
        .consumer
        .config
        .data_dir()
        .join("db/payloads/copies")
        .join(&agreement);
    std::fs::remove_file(&file).expect("the copy's payload file");

    // The rows, reordered, published as the consumer's own.
    let text = String::from_utf8(rows).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines[1..].reverse();
    let republished = format!("{}\n", lines.join("\n"));
    let err = publish(
        &s.consumer,
        republished.as_bytes(),
        "Residents, cleaned",
        "general-2",
        "csv",
        USE_ONLY,
    )
    .await
    .expect_err("the received rows are not offered onward");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(
        err.message()
            .contains("the payload holds rows of a copy this node received")
            && err.message().contains(&agreement),
        "{}",
        err.message()
    );
    drop(s.space);
}
