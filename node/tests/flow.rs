//! The data circulation flow across real nodes: publishing, catalogs filtered by policy,
//! signed contract negotiation with and without a person's approval, and every refusal.

mod common;

use common::*;
use liutong_node::contract::{ContractRequest, REQUEST_PAYLOAD_TYPE};
use liutong_node::identity::{Envelope, SigningKey};
use liutong_node::local::LocalRole;
use liutong_proto::v1::negotiation_client::NegotiationClient;
use liutong_proto::v1::{
    ApproveContractRequest, GetContractRequest, ListOffersRequest, NegotiationRequest,
    PeerCatalogRequest, RejectContractRequest, VerifyAgreementRequest,
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
    let (transport, ecology, logistics) = space.transport_ecology_logistics().await;
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

/// Publishes the road traffic CSV under `TRAFFIC_POLICY`.
async fn publish_traffic(node: &TestNode) -> Result<liutong_proto::v1::Product, tonic::Status> {
    publish(
        node,
        CSV,
        "Road traffic flow",
        "general-2",
        "csv",
        TRAFFIC_POLICY,
    )
    .await
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
    let traffic = publish_traffic(&s.transport).await.expect("publish");
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
    let granted = s
        .ecology
        .request_contract(&s.transport, &traffic.offer_id, "urbanPlanning")
        .await
        .unwrap();
    assert_eq!(granted.state, "FINALIZED", "{granted:?}");
    let agreement: Envelope = serde_json::from_str(&granted.agreement_json).unwrap();
    assert_eq!(agreement.signatures.len(), 2);
    agreement
        .verify(&s.transport.running.node.identity.signing_key.public_key())
        .unwrap();
    agreement
        .verify(&s.ecology.running.node.identity.signing_key.public_key())
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
    let denied = s
        .logistics
        .request_contract(&s.transport, &traffic.offer_id, "marketing")
        .await
        .unwrap_err();
    assert_refused(&denied, Code::PermissionDenied, "marketing");
    let terminated = s.transport.running.node.contracts.list().unwrap();
    assert!(
        terminated
            .iter()
            .any(|n| n.state.to_string() == "TERMINATED" && n.peer.as_str() == LOGISTICS)
    );

    // Important data waits for a person.
    let pending = s
        .ecology
        .request_contract(&s.transport, &od.offer_id, "scientificResearch")
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
    let second = s
        .ecology
        .request_contract(&s.transport, &od.offer_id, "statistics")
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
        .node
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
        let err = s
            .logistics
            .request_contract(&s.transport, offer, "urbanPlanning")
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{offer}: {err:?}");
    }
    drop(s.space);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_replayed_forged_and_modified_messages() {
    let s = space().await;
    let traffic = publish_traffic(&s.transport).await.unwrap();
    let granted = s
        .ecology
        .request_contract(&s.transport, &traffic.offer_id, "urbanPlanning")
        .await
        .unwrap();
    let stored = s
        .ecology
        .running
        .node
        .contracts
        .get(&granted.negotiation_id)
        .unwrap()
        .unwrap();
    let mut client = NegotiationClient::new(s.ecology.channel_to(&s.transport).await);

    // Replayed: the very same signed request again.
    let err = client
        .request(NegotiationRequest {
            request: Some(stored.request.clone().into()),
        })
        .await
        .unwrap_err();
    assert_refused(&err, Code::FailedPrecondition, "replayed");

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
    let forged = Envelope::sign_json(REQUEST_PAYLOAD_TYPE, &body, &forger).unwrap();
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
        &s.ecology.running.node.identity.signing_key,
    )
    .unwrap();
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
        &s.ecology.running.node.identity.signing_key,
    )
    .unwrap();
    let err = client
        .request(NegotiationRequest {
            request: Some(expired.into()),
        })
        .await
        .unwrap_err();
    assert_refused(&err, Code::FailedPrecondition, "expired");

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
    let mut other = NegotiationClient::new(s.logistics.channel_to(&s.transport).await);
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
        s.ecology.channel_to(&s.transport).await,
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
    assert_refused(
        &core,
        Code::InvalidArgument,
        "core data never leaves the node",
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
            .node
            .catalog
            .products
            .list()
            .unwrap()
            .is_empty(),
        "nothing stored"
    );
}

/// Flips one byte of a stored product's payload file, at `offset`.
/// Flips one byte of a stored payload, through the node's own payload store (files on
/// sled, rows on PostgreSQL).
fn flip_byte(node: &TestNode, payload: &str, offset: u64) {
    let blobs = node.running.node.storage.blobs();
    let byte = blobs.read_at(payload, offset, 1).unwrap().unwrap()[0];
    let mut writer = blobs.writer(payload, false).unwrap();
    writer.write_at(offset, &[byte ^ 0xff]).unwrap();
    writer.sync().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verified_transfer_with_tampering_cut_resume_and_receipt() {
    use sha2::{Digest, Sha256};
    let s = space().await;
    // 3.5 MiB: four chunks.
    let payload: Vec<u8> = (0..(3 * (1 << 20) + (1 << 19)))
        .map(|i: u32| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    let product = publish(
        &s.transport,
        &payload,
        "Camera archive",
        "general-2",
        "bytes",
        TRAFFIC_POLICY,
    )
    .await
    .unwrap();
    assert_eq!(product.chunks, 4);
    let agreed = s
        .ecology
        .request_contract(&s.transport, &product.offer_id, "urbanPlanning")
        .await
        .unwrap();
    let agreement = agreed.agreement_id.clone();

    // Someone else cannot use the agreement.
    let mut other = s.logistics.direct_transfer_client(&s.transport).await;
    let err = other
        .pull(liutong_proto::v1::PullRequest {
            agreement_id: agreement.clone(),
            from_chunk: 0,
        })
        .await
        .unwrap_err();
    assert_refused(
        &err,
        Code::PermissionDenied,
        &format!("{LOGISTICS} is not a party to agreement {agreement}"),
    );
    assert!(!err.message().contains(ECOLOGY), "{}", err.message());
    // Nor send a receipt for it, even one it signed itself: refused naming only the
    // caller, never the agreement's consumer.
    let forged = liutong_node::identity::Envelope::sign_json(
        liutong_node::transfer::RECEIPT_PAYLOAD_TYPE,
        &liutong_node::transfer::Receipt {
            agreement_id: agreement.clone(),
            product_id: product.product_id.clone(),
            version: 1,
            sha256: hex::encode(Sha256::digest(&payload)),
            size: payload.len() as u64,
            received_at: 0,
        },
        &s.logistics.running.node.identity.signing_key,
    )
    .unwrap();
    let err = other
        .receipt(liutong_proto::v1::ReceiptRequest {
            receipt: Some(forged.into()),
        })
        .await
        .unwrap_err();
    assert_refused(
        &err,
        Code::PermissionDenied,
        &format!(
            "{} is not a party to agreement {agreement}",
            s.logistics.running.node.identity.membership.participant_id
        ),
    );
    assert!(
        !err.message().contains(
            s.ecology
                .running
                .node
                .identity
                .membership
                .participant_id
                .as_str()
        ),
        "{}",
        err.message()
    );
    assert!(
        s.transport
            .running
            .node
            .transfers
            .delivery_receipt(&agreement)
            .unwrap()
            .is_none(),
        "no receipt is stored"
    );

    // The consumer asking to start past the last chunk: OUT_OF_RANGE, and no delivery
    // is logged as started.
    let audit = &s.transport.running.node.audit;
    let logged = audit.size();
    let mut own = s.ecology.direct_transfer_client(&s.transport).await;
    let err = own
        .pull(liutong_proto::v1::PullRequest {
            agreement_id: agreement.clone(),
            from_chunk: 5,
        })
        .await
        .unwrap_err();
    assert_refused(&err, Code::OutOfRange, "the product has 4 chunks");
    assert!(
        (logged..audit.size()).all(
            |i| !String::from_utf8_lossy(&audit.entry(i).unwrap().unwrap())
                .contains("transfer STARTED")
        ),
        "a refused pull is not logged as started"
    );

    // A cut: two chunks now, the rest later.
    let partial = s.ecology.pull(&agreement, 2).await.unwrap();
    assert_eq!(
        (
            partial.state.as_str(),
            partial.chunks_received,
            partial.chunks_total
        ),
        ("STARTED", 2, 4)
    );
    assert!(
        partial.sha256.is_empty(),
        "a partial copy has no verified hash"
    );

    // A chunk tampered with at the provider: refused, not kept, transfer not complete.
    let payload_file = s
        .transport
        .running
        .node
        .catalog
        .products
        .payload_of(&product.product_id, 1);
    let tampered = 2 * (1 << 20) + 100;
    flip_byte(&s.transport, &payload_file, tampered);
    let err = s.ecology.pull(&agreement, 0).await.unwrap_err();
    assert_refused(&err, Code::DataLoss, "chunk 2");
    let copy = liutong_node::transfer::copy(s.ecology.running.node.storage.as_ref(), &agreement)
        .unwrap()
        .unwrap();
    assert_eq!(copy.chunks_received, 2, "the bad chunk was not kept");
    assert_ne!(copy.state, liutong_node::transfer::TransferState::Completed);

    // Repaired: the pull resumes from the first missing chunk and completes.
    flip_byte(&s.transport, &payload_file, tampered);
    let done = s.ecology.pull(&agreement, 0).await.unwrap();
    assert_eq!(
        (done.state.as_str(), done.chunks_received),
        ("COMPLETED", 4)
    );
    assert_eq!(done.sha256, hex::encode(Sha256::digest(&payload)));
    let storage = s.ecology.running.node.storage.as_ref();
    let mut received = Vec::new();
    for i in 0..4 {
        received.extend(
            liutong_node::transfer::copy_chunk(storage, &agreement, i)
                .unwrap()
                .unwrap(),
        );
    }
    assert!(received == payload, "byte-identical copy");
    // The sticky policy travels with the copy: the agreement with both signatures.
    let copy = liutong_node::transfer::copy(storage, &agreement)
        .unwrap()
        .unwrap();
    assert_eq!(copy.agreement.signatures.len(), 2);

    // The provider holds the consumer's signed receipt; both logged COMPLETED.
    let receipt = s
        .transport
        .running
        .node
        .transfers
        .delivery_receipt(&agreement)
        .unwrap()
        .expect("receipt stored");
    receipt
        .verify(&s.ecology.running.node.identity.signing_key.public_key())
        .unwrap();
    for node in [&s.transport, &s.ecology] {
        let completed = node
            .audit_texts()
            .iter()
            .any(|e| e.contains("transfer COMPLETED"));
        assert!(completed, "COMPLETED logged on both sides");
    }
    // The provider saw the resume start at the first missing chunk.
    let resumed = s
        .transport
        .audit_texts()
        .iter()
        .any(|e| e.contains("from chunk 2"));
    assert!(resumed, "the resumed pull asked from chunk 2");

    // The provider cannot read its payload: a chunk missing altogether is DATA_LOSS; a
    // payload file that fails to read (an I/O error) is UNAVAILABLE, to try again.
    let first_chunk_error = || async {
        let mut stream = s
            .ecology
            .direct_transfer_client(&s.transport)
            .await
            .pull(liutong_proto::v1::PullRequest {
                agreement_id: agreement.clone(),
                from_chunk: 0,
            })
            .await
            .expect("the delivery starts")
            .into_inner();
        let manifest = stream.message().await.unwrap().expect("the manifest");
        assert!(matches!(
            manifest.part,
            Some(liutong_proto::v1::pull_response::Part::Manifest(_))
        ));
        stream.message().await.expect_err("the first chunk fails")
    };
    let blobs = s.transport.running.node.storage.blobs();
    let on_disk = blobs.path(&payload_file).ok();
    blobs.remove(&payload_file).unwrap();
    let err = first_chunk_error().await;
    assert_refused(&err, Code::DataLoss, "is missing");
    // A directory where the file should be makes its read fail; payloads kept as rows
    // (PostgreSQL) have no such place.
    if let Some(path) = on_disk {
        std::fs::create_dir(&path).unwrap();
        let err = first_chunk_error().await;
        assert_refused(&err, Code::Unavailable, "payload file");
    }
}

/// The agreement fixes the product's chunk list: a provider that later delivers other
/// bytes under a manifest it signed (chunk hashes that match those bytes, the agreed
/// whole-payload hash) is refused before any chunk is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_bytes_than_agreed_under_a_signed_manifest_are_refused() {
    use sha2::{Digest, Sha256};
    let s = space().await;
    let payload: Vec<u8> = (0..(2 * (1 << 20) + 1000))
        .map(|i: u32| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    let product = publish(
        &s.transport,
        &payload,
        "Camera archive",
        "general-2",
        "bytes",
        TRAFFIC_POLICY,
    )
    .await
    .unwrap();
    assert_eq!(product.chunks, 3);
    let agreed = s
        .ecology
        .request_contract(&s.transport, &product.offer_id, "urbanPlanning")
        .await
        .unwrap();
    let agreement = agreed.agreement_id.clone();

    // At the provider: the last chunk's bytes change, and the stored record lists the
    // new bytes' hash, so the signed manifest is consistent with what is sent.
    let provider = &s.transport.running.node;
    let payload_file = provider.catalog.products.payload_of(&product.product_id, 1);
    let changed = 2 * (1 << 20) + 10;
    flip_byte(&s.transport, &payload_file, changed);
    let mut last = payload[2 << 20..].to_vec();
    last[10] ^= 0xff;
    let mut prefix = product.product_id.as_bytes().to_vec();
    prefix.push(0);
    let (key, record) = provider
        .storage
        .scan_prefix("products", &prefix)
        .unwrap()
        .pop()
        .expect("the product record");
    let mut record: serde_json::Value = serde_json::from_slice(&record).unwrap();
    record["chunk_hashes"][2] = hex::encode(Sha256::digest(&last)).into();
    provider
        .storage
        .put("products", &key, &serde_json::to_vec(&record).unwrap())
        .unwrap();

    let err = s.ecology.pull(&agreement, 0).await.unwrap_err();
    assert_eq!(err.code(), Code::DataLoss, "{err:?}");
    assert!(
        err.message()
            .contains("the manifest does not match the agreement: chunk list"),
        "{}",
        err.message()
    );
    let storage = s.ecology.running.node.storage.as_ref();
    assert!(
        liutong_node::transfer::copy(storage, &agreement)
            .unwrap()
            .is_none(),
        "nothing of the other bytes is kept"
    );
    assert!(
        liutong_node::transfer::copy_chunk(storage, &agreement, 0)
            .unwrap()
            .is_none()
    );
}

/// Receipts for one agreement that arrive together are decided one after the other:
/// the same receipt sent many times at once is recorded once (one audit entry), and of
/// different receipts sent at once exactly one is accepted, the others refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_arriving_together_are_recorded_once() {
    use liutong_node::transfer::{RECEIPT_PAYLOAD_TYPE, Receipt};
    use liutong_proto::v1::ReceiptRequest;
    use sha2::{Digest, Sha256};
    let s = space().await;
    let payload = b"road,hour,vehicles\nRoad 1,8,120\n".to_vec();
    let product = publish(
        &s.transport,
        &payload,
        "Road counts",
        "general-2",
        "bytes",
        TRAFFIC_POLICY,
    )
    .await
    .unwrap();
    let receipt = |agreement: &str, received_at: i64| {
        Envelope::sign_json(
            RECEIPT_PAYLOAD_TYPE,
            &Receipt {
                agreement_id: agreement.to_owned(),
                product_id: product.product_id.clone(),
                version: 1,
                sha256: hex::encode(Sha256::digest(&payload)),
                size: payload.len() as u64,
                received_at,
            },
            &s.ecology.running.node.identity.signing_key,
        )
        .unwrap()
    };
    // Each on its own connection, all at once.
    let send_all = |receipts: Vec<Envelope>| async {
        let mut calls = Vec::new();
        for r in receipts {
            let mut client = s.ecology.direct_transfer_client(&s.transport).await;
            calls.push(tokio::spawn(async move {
                client
                    .receipt(ReceiptRequest {
                        receipt: Some(r.into()),
                    })
                    .await
            }));
        }
        let mut answers = Vec::new();
        for call in calls {
            answers.push(call.await.unwrap());
        }
        answers
    };
    let recorded = |agreement: &str| {
        s.transport
            .audit_texts()
            .iter()
            .filter(|t| t.contains(agreement) && t.contains("transfer COMPLETED: receipt for"))
            .count()
    };

    let agreement = s
        .ecology
        .request_contract(&s.transport, &product.offer_id, "urbanPlanning")
        .await
        .unwrap()
        .agreement_id;
    let same = receipt(&agreement, 1);
    for answer in send_all(vec![same.clone(); 8]).await {
        answer.expect("a repeat of the receipt held is acknowledged");
    }
    assert_eq!(recorded(&agreement), 1, "the same receipt is recorded once");

    let agreement = s
        .ecology
        .request_contract(&s.transport, &product.offer_id, "urbanPlanning")
        .await
        .unwrap()
        .agreement_id;
    let different: Vec<Envelope> = (1..=8).map(|t| receipt(&agreement, t)).collect();
    let answers = send_all(different.clone()).await;
    let accepted: Vec<&Envelope> = answers
        .iter()
        .zip(&different)
        .filter_map(|(a, r)| a.is_ok().then_some(r))
        .collect();
    assert_eq!(
        accepted.len(),
        1,
        "exactly one of different receipts: {answers:?}"
    );
    for refused in answers.iter().filter_map(|a| a.as_ref().err()) {
        assert_refused(refused, Code::FailedPrecondition, "another receipt");
    }
    let held = s
        .transport
        .running
        .node
        .transfers
        .delivery_receipt(&agreement)
        .unwrap()
        .unwrap();
    assert_eq!(&held, accepted[0], "the accepted receipt is the one held");
    assert_eq!(recorded(&agreement), 1);
}
