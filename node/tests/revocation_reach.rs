//! A revocation reaches a received copy before its next use, not at the next poll: a
//! read asks the provider first, and when the provider cannot be reached the read is
//! permitted only within the configured grace since the last successful check.

mod common;

use std::time::Duration;

use common::*;
use liutong_node::identity::MemberRole;
use liutong_node::local::LocalRole;
use liutong_proto::v1::read_response::Part;
use liutong_proto::v1::{ReadRequest, RevokeRequest};
use tokio_stream::StreamExt as _;
use tonic::Code;

const ROLES: &[MemberRole] = &[MemberRole::Provider, MemberRole::Consumer];
const CSV: &[u8] = b"name,mobile,district\n\xe5\xbc\xa0\xe4\xbc\x9f,13912340987,Xihu\n";

const OPEN: &str = r#"
uid = "urn:liutong:policy:open"
type = "set"

[[permission]]
action = "use"
"#;

/// Polls for revocations so rarely that only the check before a read can see one.
const RARELY: Duration = Duration::from_secs(3600);

async fn read(node: &TestNode, agreement: &str) -> Result<Vec<u8>, tonic::Status> {
    let mut stream = node
        .usage(LocalRole::App)
        .await
        .read(ReadRequest {
            agreement_id: agreement.into(),
            purpose: "statistics".into(),
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

async fn agreed_and_pulled(provider: &TestNode, consumer: &TestNode, offer: &str) -> String {
    let contract = consumer
        .request_contract(provider, offer, "statistics")
        .await
        .expect("agreement");
    consumer
        .pull_all(&contract.agreement_id)
        .await
        .expect("pull");
    contract.agreement_id
}

/// The detail of the node's last audit entry of `kind` about `agreement`.
fn last_entry(node: &TestNode, agreement: &str, kind: &str) -> String {
    node.audit_events()
        .into_iter()
        .rfind(|e| e["agreement"] == agreement && e["kind"] == kind)
        .map(|e| e["detail"].as_str().unwrap().to_owned())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_right_after_a_revocation_is_refused() {
    let space = DataSpace::start().await;
    let provider = space.node_with(TRANSPORT, "transport", ROLES, |_| {}).await;
    let consumer = space
        .node_with(ECOLOGY, "ecology", ROLES, |c| {
            c.usage.check_interval = RARELY
        })
        .await;
    refresh_all(&[&provider, &consumer]).await;
    let product = publish(&provider, CSV, "Residents", "general-2", "csv", OPEN)
        .await
        .unwrap();
    let agreement = agreed_and_pulled(&provider, &consumer, &product.offer_id).await;
    assert_eq!(read(&consumer, &agreement).await.expect("read"), CSV);
    assert!(
        last_entry(&consumer, &agreement, "usage")
            .contains("revocation: the provider confirmed it is not revoked"),
        "the read's entry says how the revocation state was known"
    );

    provider
        .usage(LocalRole::Admin)
        .await
        .revoke(RevokeRequest {
            agreement_id: agreement.clone(),
            reason: "consent withdrawn".into(),
        })
        .await
        .expect("revoke");
    let err = read(&consumer, &agreement)
        .await
        .expect_err("a read after the revocation");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("revoked"), "{}", err.message());
    assert!(
        err.message().contains("consent withdrawn"),
        "{}",
        err.message()
    );
    drop(space);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_out_of_reach_permits_reads_only_within_the_grace() {
    let space = DataSpace::start().await;
    let provider = space.node_with(TRANSPORT, "transport", ROLES, |_| {}).await;
    // One consumer trusts a check an hour old; the other trusts none.
    let lenient = space
        .node_with(ECOLOGY, "ecology", ROLES, |c| {
            c.usage.check_interval = RARELY;
            c.usage.revocation_grace = Duration::from_secs(3600);
        })
        .await;
    let strict = space
        .node_with(LOGISTICS, "logistics", ROLES, |c| {
            c.usage.check_interval = RARELY;
            c.usage.revocation_grace = Duration::ZERO;
        })
        .await;
    refresh_all(&[&provider, &lenient, &strict]).await;
    let product = publish(&provider, CSV, "Residents", "general-2", "csv", OPEN)
        .await
        .unwrap();
    let at_lenient = agreed_and_pulled(&provider, &lenient, &product.offer_id).await;
    let at_strict = agreed_and_pulled(&provider, &strict, &product.offer_id).await;
    read(&lenient, &at_lenient).await.expect("read, checked");
    read(&strict, &at_strict).await.expect("read, checked");

    let stopped = provider.stop().await;

    assert_eq!(
        read(&lenient, &at_lenient).await.expect("within the grace"),
        CSV
    );
    let said = last_entry(&lenient, &at_lenient, "usage");
    assert!(
        said.contains("could not be asked") && said.contains("within usage.revocation_grace"),
        "the read's entry says it went on the grace: {said}"
    );

    let err = read(&strict, &at_strict)
        .await
        .expect_err("no grace: refused");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(
        err.message().contains("cannot confirm") && err.message().contains("revocation_grace"),
        "{}",
        err.message()
    );
    assert!(
        last_entry(&strict, &at_strict, "policy_decision").contains("cannot confirm"),
        "the refusal is logged"
    );
    drop(stopped);
    drop(space);
}
