//! Transport limits against a hostile member, each driving real nodes over loopback.

mod common;

use common::*;
use liutong_node::config::NodeConfig;
use liutong_node::contract::{ContractRequest, REQUEST_PAYLOAD_TYPE};
use liutong_node::identity::envelope::Signature;
use liutong_node::identity::{Envelope, MemberRole};
use liutong_proto::v1::negotiation_client::NegotiationClient;
use liutong_proto::v1::{GetNegotiationRequest, NegotiationRequest};
use tonic::Code;

const ROLES: &[MemberRole] = &[MemberRole::Provider, MemberRole::Consumer];

const OPEN_POLICY: &str = r#"
uid = "urn:liutong:policy:open"
type = "set"

[[permission]]
action = "use"
"#;

/// A CSV product of at least `bytes` bytes.
fn csv_of(bytes: usize) -> Vec<u8> {
    let mut data = b"trip,vehicle,minutes\n".to_vec();
    let mut i = 0u64;
    while data.len() < bytes {
        data.extend_from_slice(format!("{i},{},{}\n", i % 9173, i % 97).as_bytes());
        i += 1;
    }
    data
}

async fn provider_and_consumer(
    space: &DataSpace,
    edit: impl FnOnce(&mut NodeConfig),
) -> (TestNode, TestNode) {
    let provider = space.node_with(TRANSPORT, "transport", ROLES, edit).await;
    let consumer = space.node_with(ECOLOGY, "ecology", ROLES, |_| {}).await;
    refresh_all(&[&provider, &consumer]).await;
    (provider, consumer)
}

#[tokio::test]
async fn envelope_padded_with_signatures_is_refused_before_verification() {
    let space = DataSpace::start().await;
    let (provider, consumer) = provider_and_consumer(&space, |_| {}).await;
    let product = publish(
        &provider,
        &csv_of(100),
        "Trips",
        "general-2",
        "csv",
        OPEN_POLICY,
    )
    .await
    .expect("publish");
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let body = ContractRequest {
        negotiation_id: "neg-padded".into(),
        consumer: consumer.participant.clone(),
        provider: provider.participant.clone(),
        offer_id: product.offer_id.clone(),
        purpose: "research".into(),
        nonce: "ab".repeat(16),
        created_at: now,
        expires_at: now + 300,
    };
    let key = &consumer.running.node.identity.signing_key;
    let signed = Envelope::sign_json(REQUEST_PAYLOAD_TYPE, &body, key);

    // 30,000 bogus signatures under the caller's own key ID, the valid one last: a
    // verifier that tried each would spend seconds and then accept it.
    let mut padded = signed.clone();
    let bogus = Signature {
        keyid: key.public_key().key_id(),
        sig: vec![7; 64],
    };
    padded
        .signatures
        .splice(0..0, std::iter::repeat_n(bogus, 30_000));
    let mut client = NegotiationClient::new(consumer.channel_to(&provider).await);
    let err = client
        .request(NegotiationRequest {
            request: Some(padded.into()),
        })
        .await
        .unwrap_err();
    assert_refused(
        &err,
        Code::InvalidArgument,
        "request.signatures: 30001 signatures, at most 4 are accepted",
    );

    // Nothing of it was kept: the provider does not know the negotiation.
    assert!(
        provider
            .running
            .node
            .contracts
            .get("neg-padded")
            .unwrap()
            .is_none()
    );
    let err = client
        .get(GetNegotiationRequest {
            negotiation_id: "neg-padded".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");

    // The same request with its one signature is agreed: the refusal was the padding's
    // alone, and neither its ID nor its nonce was used up.
    let agreed = client
        .request(NegotiationRequest {
            request: Some(signed.into()),
        })
        .await
        .expect("the request with one signature")
        .into_inner();
    assert_eq!(agreed.negotiation_id, "neg-padded");
    assert_eq!(agreed.state, "AGREED", "{agreed:?}");
}
