//! The data circulation flow across real nodes: publishing, catalogs filtered by policy,
//! signed contract negotiation with and without a person's approval, and every refusal.

mod common;

use common::*;
use liutong_node::contract::{ContractRequest, REQUEST_PAYLOAD_TYPE};
use liutong_node::identity::{Envelope, ParticipantKind, RegionCode, SigningKey};
use liutong_node::local::LocalRole;
use liutong_proto::v1::negotiation_client::NegotiationClient;
use liutong_proto::v1::{
    ApproveContractRequest, GetContractRequest, ListOffersRequest, NegotiationRequest,
    PeerCatalogRequest, RejectContractRequest, RequestContractRequest, VerifyAgreementRequest,
};
use std::time::Duration;
use tonic::Code;

const TRAFFIC_POLICY: &str = r#"
uid = "urn:liutong:policy:traffic"
type = "set"

[[permission]]
action = "use"
constraint = [{ leftOperand = "purpose", operator = "isA", rightOperand = "publicService" }]

[[prohibition]]
action = "use"
constraint = [{ leftOperand = "purpose", operator = "isA", rightOperand = "commercial" }]
"#;

const GOVERNMENT_ONLY: &str = r#"
uid = "urn:liutong:policy:bus-gps"
type = "set"

[[permission]]
action = "use"
constraint = [{ leftOperand = "recipientKind", operator = "eq", rightOperand = "government" }]
"#;

const IMPORTANT_POLICY: &str = r#"
uid = "urn:liutong:policy:od-matrix"
type = "set"

[[permission]]
action = "use"
constraint = [
  { leftOperand = "purpose", operator = "isA", rightOperand = "research" },
  { leftOperand = "region", operator = "isPartOf", rightOperand = "330000" },
]
duty = [{ action = "log" }]
"#;

const CSV: &[u8] = b"road,hour,vehicles\nYan'an Rd,8,1520\nTianmushan Rd,8,1210\n";

struct Space {
    space: DataSpace,
    transport: TestNode,
    ecology: TestNode,
    logistics: TestNode,
}

async fn space() -> Space {
    let space = DataSpace::start().await;
    let mut ecology = DataSpace::admission(
        ECOLOGY,
        "Hangzhou Ecology Bureau",
        ParticipantKind::Government,
    );
    ecology.sector = "ecology".into();
    let mut logistics = DataSpace::admission(
        LOGISTICS,
        "Hangzhou Logistics Co.",
        ParticipantKind::Enterprise,
    );
    logistics.sector = "logistics".into();
    logistics.region = RegionCode::parse("330106").unwrap();
    let ecology_bundle = space.admit(ecology);
    let logistics_bundle = space.admit(logistics);
    let transport = space
        .node(TRANSPORT, "transport", Duration::from_secs(3600))
        .await;
    let ecology = space
        .node_from_bundle(&ecology_bundle, "ecology", Duration::from_secs(3600))
        .await;
    let logistics = space
        .node_from_bundle(&logistics_bundle, "logistics", Duration::from_secs(3600))
        .await;
    refresh_all(&[&transport, &ecology, &logistics]).await;
    Space {
        space,
        transport,
        ecology,
        logistics,
    }
}

async fn offers_seen_by(consumer: &TestNode, provider: &TestNode) -> Vec<String> {
    let mut titles: Vec<String> = consumer
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
        .map(|o| o.title)
        .collect();
    titles.sort();
    titles
}

async fn request(
    consumer: &TestNode,
    provider: &TestNode,
    offer: &str,
    purpose: &str,
) -> Result<liutong_proto::v1::Contract, tonic::Status> {
    consumer
        .admin(LocalRole::Admin)
        .await
        .request_contract(RequestContractRequest {
            peer: provider.peer_addr().to_string(),
            offer_id: offer.into(),
            purpose: purpose.into(),
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn contract(node: &TestNode, id: &str) -> liutong_proto::v1::Contract {
    node.admin(LocalRole::Admin)
        .await
        .get_contract(GetContractRequest {
            negotiation_id: id.into(),
        })
        .await
        .expect("contract")
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_browse_and_negotiate() {
    let s = space().await;
    let traffic = publish(
        &s.transport,
        CSV,
        "Road traffic flow",
        "general-2",
        "csv",
        TRAFFIC_POLICY,
    )
    .await
    .expect("publish");
    assert_eq!(traffic.size, CSV.len() as u64);
    let profile: serde_json::Value = serde_json::from_str(&traffic.profile_json).unwrap();
    assert_eq!(profile["rows"], 2);
    assert_eq!(profile["columns"][2]["type"], "integer");
    publish(
        &s.transport,
        CSV,
        "Bus GPS traces",
        "general-3",
        "csv",
        GOVERNMENT_ONLY,
    )
    .await
    .unwrap();
    let od = publish(
        &s.transport,
        CSV,
        "Mobility OD matrix",
        "important",
        "csv",
        IMPORTANT_POLICY,
    )
    .await
    .unwrap();
    publish(&s.transport, CSV, "Not offered", "general-1", "csv", "")
        .await
        .unwrap();

    // Catalogs: the enterprise does not even see the government-only product.
    assert_eq!(
        offers_seen_by(&s.ecology, &s.transport).await,
        ["Bus GPS traces", "Mobility OD matrix", "Road traffic flow"]
    );
    assert_eq!(
        offers_seen_by(&s.logistics, &s.transport).await,
        ["Mobility OD matrix", "Road traffic flow"]
    );

    // A granted negotiation: FINALIZED on both sides, with both signatures.
    let granted = request(&s.ecology, &s.transport, &traffic.offer_id, "urbanPlanning")
        .await
        .unwrap();
    assert_eq!(granted.state, "FINALIZED", "{granted:?}");
    let agreement: Envelope = serde_json::from_str(&granted.agreement_json).unwrap();
    assert_eq!(agreement.signatures.len(), 2);
    agreement
        .verify(&s.transport.running.context.signing_key.public_key())
        .unwrap();
    agreement
        .verify(&s.ecology.running.context.signing_key.public_key())
        .unwrap();
    let at_provider = contract(&s.transport, &granted.negotiation_id).await;
    assert_eq!(
        (at_provider.state.as_str(), at_provider.role.as_str()),
        ("FINALIZED", "provider")
    );
    assert_eq!(
        at_provider.agreement_json, granted.agreement_json,
        "both sides store the same contract"
    );
    let content: serde_json::Value = serde_json::from_slice(&agreement.payload).unwrap();
    assert_eq!(content["consumer"], ECOLOGY);
    assert_eq!(content["product_sha256"], traffic.sha256);
    assert_eq!(content["policy"]["@type"], "Agreement");

    // A denied one names its reason; both sides record TERMINATED.
    let denied = request(&s.logistics, &s.transport, &traffic.offer_id, "marketing")
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    assert!(
        denied.message().contains("marketing"),
        "{}",
        denied.message()
    );
    let terminated = s.transport.running.context.contracts.list().unwrap();
    assert!(
        terminated
            .iter()
            .any(|n| n.state.to_string() == "TERMINATED" && n.peer.as_str() == LOGISTICS)
    );

    // Important data waits for a person.
    let pending = request(&s.ecology, &s.transport, &od.offer_id, "scientificResearch")
        .await
        .unwrap();
    assert_eq!(pending.state, "REQUESTED");
    assert!(
        contract(&s.transport, &pending.negotiation_id)
            .await
            .reason
            .contains("approval")
    );
    s.transport
        .admin(LocalRole::Admin)
        .await
        .approve_contract(ApproveContractRequest {
            negotiation_id: pending.negotiation_id.clone(),
        })
        .await
        .expect("approve");
    let finalized = wait_until(Duration::from_secs(15), || {
        let ecology = &s.ecology;
        let id = pending.negotiation_id.clone();
        async move { contract(ecology, &id).await.state == "FINALIZED" }
    })
    .await;
    assert!(finalized, "the consumer finalized the approved agreement");
    let approved: serde_json::Value = serde_json::from_slice(
        &serde_json::from_str::<Envelope>(
            &contract(&s.ecology, &pending.negotiation_id)
                .await
                .agreement_json,
        )
        .unwrap()
        .payload,
    )
    .unwrap();
    assert_eq!(approved["approved_by"], "local admin");

    // And a rejection reaches the consumer with its reason.
    let second = request(&s.ecology, &s.transport, &od.offer_id, "statistics")
        .await
        .unwrap();
    s.transport
        .admin(LocalRole::Admin)
        .await
        .reject_contract(RejectContractRequest {
            negotiation_id: second.negotiation_id.clone(),
            reason: "statistics bureau has this already".into(),
        })
        .await
        .unwrap();
    let rejected = wait_until(Duration::from_secs(15), || {
        let ecology = &s.ecology;
        let id = second.negotiation_id.clone();
        async move {
            let c = contract(ecology, &id).await;
            c.state == "TERMINATED" && c.reason.contains("statistics bureau has this already")
        }
    })
    .await;
    assert!(rejected);

    // The enterprise cannot negotiate what it cannot see, nor what does not exist.
    let bus_offer = s
        .transport
        .running
        .context
        .catalog
        .products
        .list()
        .unwrap()
        .into_iter()
        .find(|p| p.title == "Bus GPS traces")
        .unwrap()
        .offer_id()
        .unwrap();
    for offer in [bus_offer.as_str(), "prd-0000/v1"] {
        let err = request(&s.logistics, &s.transport, offer, "urbanPlanning")
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{offer}: {err:?}");
    }
    drop(s.space);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_replayed_forged_and_modified_messages() {
    let s = space().await;
    let traffic = publish(
        &s.transport,
        CSV,
        "Road traffic flow",
        "general-2",
        "csv",
        TRAFFIC_POLICY,
    )
    .await
    .unwrap();
    let granted = request(&s.ecology, &s.transport, &traffic.offer_id, "urbanPlanning")
        .await
        .unwrap();
    let stored = s
        .ecology
        .running
        .context
        .contracts
        .get(&granted.negotiation_id)
        .unwrap()
        .unwrap();
    let mut client = NegotiationClient::new(
        peer_channel(
            s.transport.peer_addr(),
            Some(&s.ecology.identity),
            s.ecology.roots(),
        )
        .await,
    );

    // Replayed: the very same signed request again.
    let err = client
        .request(NegotiationRequest {
            request: Some(stored.request.clone().into()),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("replayed"), "{}", err.message());

    // Modified after signing.
    let mut altered = stored.request.clone();
    let mut body: ContractRequest = serde_json::from_slice(&altered.payload).unwrap();
    body.nonce = "00".repeat(16);
    body.purpose = "marketing".into();
    altered.payload = serde_json::to_vec(&body).unwrap();
    let err = client
        .request(NegotiationRequest {
            request: Some(altered.into()),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::DataLoss, "{err:?}");

    // Signed by a key that is not the caller's.
    let forger = SigningKey::generate().unwrap();
    body.nonce = "11".repeat(16);
    body.negotiation_id = "neg-forged".into();
    let forged = Envelope::sign_json(REQUEST_PAYLOAD_TYPE, &body, &forger);
    let err = client
        .request(NegotiationRequest {
            request: Some(forged.into()),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::DataLoss, "{err:?}");

    // A request in someone else's name, even correctly signed by the caller.
    body.consumer = s.logistics.participant.clone();
    body.nonce = "22".repeat(16);
    let impostor = Envelope::sign_json(
        REQUEST_PAYLOAD_TYPE,
        &body,
        &s.ecology.running.context.signing_key,
    );
    let err = client
        .request(NegotiationRequest {
            request: Some(impostor.into()),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");

    // An expired request.
    let mut old = body.clone();
    old.consumer = s.ecology.participant.clone();
    old.nonce = "33".repeat(16);
    old.created_at -= 3600;
    old.expires_at = old.created_at + 300;
    let expired = Envelope::sign_json(
        REQUEST_PAYLOAD_TYPE,
        &old,
        &s.ecology.running.context.signing_key,
    );
    let err = client
        .request(NegotiationRequest {
            request: Some(expired.into()),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("expired"), "{}", err.message());

    // A countersigned agreement that was changed: refused, nothing changes.
    let mut agreement = stored.agreement.clone().unwrap();
    let mut content: serde_json::Value = serde_json::from_slice(&agreement.payload).unwrap();
    content["purpose"] = "marketing".into();
    agreement.payload = serde_json::to_vec(&content).unwrap();
    let err = client
        .verify(VerifyAgreementRequest {
            negotiation_id: granted.negotiation_id.clone(),
            agreement: Some(agreement.into()),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::DataLoss, "{err:?}");

    // Another participant cannot read this negotiation.
    let mut other = NegotiationClient::new(
        peer_channel(
            s.transport.peer_addr(),
            Some(&s.logistics.identity),
            s.logistics.roots(),
        )
        .await,
    );
    let err = other
        .get(liutong_proto::v1::GetNegotiationRequest {
            negotiation_id: granted.negotiation_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    // A message over the node's size limit.
    let mut huge = stored.request.clone();
    huge.payload = vec![b' '; 5 * 1024 * 1024];
    let err = client
        .request(NegotiationRequest {
            request: Some(huge.into()),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");

    // The catalog still answers normally afterwards.
    let mut catalog = liutong_proto::v1::catalog_client::CatalogClient::new(
        peer_channel(
            s.transport.peer_addr(),
            Some(&s.ecology.identity),
            s.ecology.roots(),
        )
        .await,
    );
    let page = catalog
        .list(ListOffersRequest {
            page_size: 10,
            page_token: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(page.into_inner().offers.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_refuses_bad_input_and_stores_nothing() {
    let space = DataSpace::start().await;
    let node = space
        .node(TRANSPORT, "transport", Duration::from_secs(3600))
        .await;
    let core = publish(&node, CSV, "Core data", "core", "csv", TRAFFIC_POLICY)
        .await
        .unwrap_err();
    assert_eq!(core.code(), Code::InvalidArgument);
    assert!(
        core.message().contains("core data never leaves the node"),
        "{}",
        core.message()
    );
    let bad = publish(&node, CSV, "Bad", "secret", "csv", "")
        .await
        .unwrap_err();
    assert!(
        bad.message().starts_with("classification:"),
        "{}",
        bad.message()
    );
    let bad = publish(&node, CSV, "Bad", "general-1", "xml", "")
        .await
        .unwrap_err();
    assert!(bad.message().starts_with("format:"), "{}", bad.message());
    let bad = publish(
        &node,
        CSV,
        "Bad",
        "general-1",
        "csv",
        "[[permission]]\naction = \"sell\"",
    )
    .await
    .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert!(bad.message().starts_with("policy:"), "{}", bad.message());
    let bad = publish(
        &node,
        b"a,b\n\"unterminated\xff\n",
        "Bad CSV",
        "general-1",
        "csv",
        "",
    )
    .await
    .unwrap_err();
    assert!(bad.message().starts_with("data:"), "{}", bad.message());
    assert!(
        node.running
            .context
            .catalog
            .products
            .list()
            .unwrap()
            .is_empty(),
        "nothing stored"
    );
}
