//! The Dataspace Protocol 2025-1 contract negotiation, provider role, against a real
//! node over real TLS on loopback: a raw HTTP test consumer drives the scenario shapes
//! of the protocol's compatibility kit (CN:01 request → agreement → verification →
//! finalized; CN:02 terminations and a request answering no offer; CN:03 invalid
//! transitions, answered 4xx other than 404), and a small HTTPS server with a member's
//! certificate receives the provider's callbacks. Every message sent and received, in
//! both directions, is validated against the protocol's JSON Schemas.

mod common;
mod dsp;

use std::sync::atomic::Ordering;

use common::*;
use dsp::{CALLBACK_WITHIN, Callbacks, Client, assert_valid};
use liutong_node::config::{DspSection, NodeConfig};
use liutong_node::contract::{ContractRequest, REQUEST_PAYLOAD_TYPE};
use liutong_node::identity::{Envelope, MemberRole, ParticipantId, ParticipantKind};
use liutong_node::local::LocalRole;
use liutong_node::tls::TlsIdentity;
use liutong_proto::v1::ApproveContractRequest;
use serde_json::{Value as Json, json};

const ROLES: &[MemberRole] = &[MemberRole::Provider, MemberRole::Consumer];
const CSV: &[u8] = b"district,households\nXihu,241000\nShangcheng,198000\n";
const CONTEXT: &str = dsp::CONTEXT;

/// Use for public service only: a request for another purpose is denied, naming it.
const PUBLIC_SERVICE: &str = r#"
uid = "urn:liutong:policy:households"
type = "set"

[[permission]]
action = "use"
constraint = [{ leftOperand = "purpose", operator = "isA", rightOperand = "publicService" }]
"#;

/// Important data: research within Zhejiang, with a person's approval.
const IMPORTANT: &str = r#"
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

fn with_dsp(config: &mut NodeConfig) {
    config.dsp = Some(DspSection::on("127.0.0.1:0".parse().unwrap()));
}

/// A provider serving DSP with two offers, and a consumer member's certificate.
struct Fixture {
    space: DataSpace,
    provider: TestNode,
    consumer: TlsIdentity,
    consumer_id: ParticipantId,
    /// The offer `@id`s, as the catalog shows them.
    open_offer: String,
    important_offer: String,
}

impl Fixture {
    async fn start() -> Self {
        let space = DataSpace::start().await;
        let provider = space
            .node_with(TRANSPORT, "transport", ROLES, with_dsp)
            .await;
        let consumer = member(&space, ECOLOGY);
        refresh_all(&[&provider]).await;
        let open = publish(
            &provider,
            CSV,
            "Households",
            "general-2",
            "csv",
            PUBLIC_SERVICE,
        )
        .await
        .unwrap();
        let important = publish(&provider, CSV, "OD matrix", "important", "csv", IMPORTANT)
            .await
            .unwrap();
        Self {
            space,
            provider,
            consumer,
            consumer_id: ParticipantId::parse(ECOLOGY).unwrap(),
            open_offer: format!("urn:liutong:offer:{}", open.offer_id),
            important_offer: format!("urn:liutong:offer:{}", important.offer_id),
        }
    }

    fn client(&self, identity: &TlsIdentity) -> Client {
        let addr = self
            .provider
            .running
            .dsp_addr()
            .expect("the DSP listener is on");
        Client::new(addr, Some(identity), self.provider.roots())
    }

    /// The provider's record of negotiation `id`.
    fn negotiation(&self, id: &str) -> Option<liutong_node::contract::Negotiation> {
        self.provider.running.node.contracts.get(id).unwrap()
    }
}

fn member(space: &DataSpace, id: &str) -> TlsIdentity {
    let mut admission = DataSpace::admission(id, id, ParticipantKind::Government);
    admission.roles = ROLES.to_vec();
    let bundle = space.admit(admission);
    space.identity_of(&bundle)
}

/// A `ContractRequestMessage` for `offer` answering to `callback`.
fn request_message(consumer_pid: &str, offer: &str, callback: &str, purpose: &str) -> Json {
    let message = json!({
        "@context": [CONTEXT],
        "@type": "ContractRequestMessage",
        "consumerPid": consumer_pid,
        "offer": {"@type": "Offer", "@id": offer, "permission": [{"action": "use"}]},
        "callbackAddress": callback,
        "lt:purpose": purpose,
    });
    assert_valid(&message);
    message
}

fn pids_message(ty: &str, provider_pid: &str, consumer_pid: &str) -> Json {
    let message = json!({
        "@context": [CONTEXT],
        "@type": ty,
        "providerPid": provider_pid,
        "consumerPid": consumer_pid,
    });
    message
}

fn event(provider_pid: &str, consumer_pid: &str, event_type: &str) -> Json {
    let mut m = pids_message(
        "ContractNegotiationEventMessage",
        provider_pid,
        consumer_pid,
    );
    m["eventType"] = event_type.into();
    assert_valid(&m);
    m
}

fn termination(provider_pid: &str, consumer_pid: &str) -> Json {
    let mut m = pids_message(
        "ContractNegotiationTerminationMessage",
        provider_pid,
        consumer_pid,
    );
    m["code"] = "consumer.cancelled".into();
    m["reason"] = json!(["the project was cancelled"]);
    assert_valid(&m);
    m
}

fn verification(provider_pid: &str, consumer_pid: &str) -> Json {
    let m = pids_message(
        "ContractAgreementVerificationMessage",
        provider_pid,
        consumer_pid,
    );
    assert_valid(&m);
    m
}

/// Sends a new request and returns the provider's process ID from its 201 answer.
async fn start_negotiation(client: &Client, message: &Json) -> String {
    let answer = client.post("/negotiations/request", message).await;
    assert_eq!(answer.status, 201, "{answer:?}");
    let body = answer.message();
    assert_eq!(body["@type"], "ContractNegotiation");
    assert_eq!(body["state"], "REQUESTED");
    assert_eq!(body["consumerPid"], message["consumerPid"]);
    body["providerPid"].as_str().unwrap().to_owned()
}

async fn state_of(client: &Client, provider_pid: &str) -> String {
    let answer = client.get(&format!("/negotiations/{provider_pid}")).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    answer.message()["state"].as_str().unwrap().to_owned()
}

/// A refusal: the status, and a valid `ContractNegotiationError` whose reason contains
/// `words`.
#[track_caller]
fn assert_error(answer: &dsp::Answer, status: u16, words: &str) -> Json {
    assert_eq!(answer.status, status, "{answer:?}");
    let error = answer.message();
    assert_eq!(error["@type"], "ContractNegotiationError", "{error}");
    let reason = error["reason"].to_string();
    assert!(reason.contains(words), "{words:?} not in {reason}");
    error
}

#[tokio::test]
async fn cn_01_a_request_is_agreed_verified_and_finalized_through_callbacks() {
    let f = Fixture::start().await;
    let callbacks = Callbacks::start(
        &f.consumer,
        &f.provider.roots(),
        f.provider.participant.san_uri(),
    )
    .await;
    let client = f.client(&f.consumer);
    let cpid = "urn:uuid:0b7c1d2e-0001-4000-8000-000000000001";
    let ppid = start_negotiation(
        &client,
        &request_message(cpid, &f.open_offer, &callbacks.url(), "urbanPlanning"),
    )
    .await;

    let agreed = callbacks
        .wait_for(&format!("/callback/negotiations/{cpid}/agreement"))
        .await;
    assert_eq!(agreed["@type"], "ContractAgreementMessage");
    assert_eq!(agreed["providerPid"], ppid.as_str());
    assert_eq!(agreed["consumerPid"], cpid);
    let agreement = &agreed["agreement"];
    assert_eq!(agreement["assignee"], f.consumer_id.san_uri());
    assert_eq!(agreement["assigner"], f.provider.participant.san_uri());
    assert!(
        agreement["target"]
            .as_str()
            .unwrap()
            .starts_with("urn:liutong:product:")
            || agreement["target"].as_str().unwrap().contains(':'),
        "{agreement}"
    );
    assert!(
        agreed.get("lt:agreement").is_none(),
        "a plain request gets no envelope"
    );
    assert_eq!(state_of(&client, &ppid).await, "AGREED");

    let answer = client
        .post(
            &format!("/negotiations/{ppid}/agreement/verification"),
            &verification(&ppid, cpid),
        )
        .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let finalized = callbacks
        .wait_for(&format!("/callback/negotiations/{cpid}/events"))
        .await;
    assert_eq!(finalized["eventType"], "FINALIZED");
    assert_eq!(state_of(&client, &ppid).await, "FINALIZED");

    // The same contract component as over gRPC: a FINALIZED record whose agreement the
    // provider signed, recorded as not signed by the consumer.
    let n = f
        .negotiation(&ppid)
        .expect("the provider keeps the negotiation");
    assert_eq!(n.state.as_str(), "FINALIZED");
    assert!(!n.signed_by_peer());
    assert_eq!(n.agreement.as_ref().unwrap().signatures.len(), 1);
    assert!(
        n.reason.contains("not signed by the consumer"),
        "{}",
        n.reason
    );
    let audit = f.provider.audit_texts().join("\n");
    assert!(audit.contains("negotiation scope"), "{audit}");
    assert!(
        audit.contains(&format!("negotiation {ppid} VERIFIED → FINALIZED")),
        "{audit}"
    );
}

#[tokio::test]
async fn a_denied_request_is_terminated_at_the_callback_naming_the_failed_constraint() {
    let f = Fixture::start().await;
    let callbacks = Callbacks::start(
        &f.consumer,
        &f.provider.roots(),
        f.provider.participant.san_uri(),
    )
    .await;
    let client = f.client(&f.consumer);
    let cpid = "urn:uuid:denied-1";
    let ppid = start_negotiation(
        &client,
        &request_message(cpid, &f.open_offer, &callbacks.url(), "marketing"),
    )
    .await;
    let ended = callbacks
        .wait_for(&format!("/callback/negotiations/{cpid}/termination"))
        .await;
    assert_eq!(ended["providerPid"], ppid.as_str());
    let reason = ended["reason"].to_string();
    assert!(
        reason.contains("failed constraint") && reason.contains("purpose"),
        "{reason}"
    );
    assert_eq!(state_of(&client, &ppid).await, "TERMINATED");
    assert!(
        callbacks
            .received()
            .iter()
            .all(|(p, _)| !p.ends_with("/agreement")),
        "no agreement was sent"
    );
}

#[tokio::test]
async fn cn_02_either_side_terminates_and_no_request_answers_an_offer_never_made() {
    let f = Fixture::start().await;
    let callbacks = Callbacks::start(
        &f.consumer,
        &f.provider.roots(),
        f.provider.participant.san_uri(),
    )
    .await;
    let client = f.client(&f.consumer);

    // The consumer terminates an AGREED negotiation.
    let cpid = "urn:uuid:terminated-by-consumer";
    let ppid = start_negotiation(
        &client,
        &request_message(cpid, &f.open_offer, &callbacks.url(), "urbanPlanning"),
    )
    .await;
    callbacks
        .wait_for(&format!("/callback/negotiations/{cpid}/agreement"))
        .await;
    // A request answering an offer: this provider made none (CN:02 counter-request).
    let mut counter = request_message(cpid, &f.open_offer, &callbacks.url(), "urbanPlanning");
    counter.as_object_mut().unwrap().remove("callbackAddress");
    counter["providerPid"] = ppid.clone().into();
    assert_valid(&counter);
    let answer = client
        .post(&format!("/negotiations/{ppid}/request"), &counter)
        .await;
    let error = assert_error(&answer, 400, "OFFERED");
    assert_eq!(error["providerPid"], ppid.as_str());
    assert_eq!(error["consumerPid"], cpid);

    let answer = client
        .post(
            &format!("/negotiations/{ppid}/termination"),
            &termination(&ppid, cpid),
        )
        .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(state_of(&client, &ppid).await, "TERMINATED");
    let n = f.negotiation(&ppid).unwrap();
    assert!(
        n.reason.contains("the project was cancelled"),
        "{}",
        n.reason
    );
    // A final state takes no termination, and no verification.
    let answer = client
        .post(
            &format!("/negotiations/{ppid}/termination"),
            &termination(&ppid, cpid),
        )
        .await;
    assert_error(&answer, 400, "TERMINATED");
    let answer = client
        .post(
            &format!("/negotiations/{ppid}/agreement/verification"),
            &verification(&ppid, cpid),
        )
        .await;
    assert_error(&answer, 400, "TERMINATED");

    // The provider terminates: a person rejects a request for important data waiting
    // for approval, and the consumer is told at its callback address.
    let consumer_node = f
        .space
        .node_with(LOGISTICS, "logistics", ROLES, |_| {})
        .await;
    refresh_all(&[&f.provider]).await;
    let logistics_callbacks = Callbacks::start(
        &consumer_node.identity,
        &f.provider.roots(),
        f.provider.participant.san_uri(),
    )
    .await;
    let cpid = "urn:uuid:rejected-by-provider";
    let ppid = signed_request(&f, &consumer_node, cpid, &logistics_callbacks).await;
    f.provider
        .admin(LocalRole::Admin)
        .await
        .reject_contract(liutong_proto::v1::RejectContractRequest {
            negotiation_id: ppid.clone(),
            reason: "not for this project".into(),
        })
        .await
        .expect("reject");
    let ended = logistics_callbacks
        .wait_for(&format!("/callback/negotiations/{cpid}/termination"))
        .await;
    assert!(
        ended["reason"].to_string().contains("not for this project"),
        "{ended}"
    );
}

#[tokio::test]
async fn cn_03_invalid_transitions_are_400_with_a_negotiation_error_not_404() {
    let f = Fixture::start().await;
    let callbacks = Callbacks::start(
        &f.consumer,
        &f.provider.roots(),
        f.provider.participant.san_uri(),
    )
    .await;
    let client = f.client(&f.consumer);
    let cpid = "urn:uuid:invalid-transitions";
    let ppid = start_negotiation(
        &client,
        &request_message(cpid, &f.open_offer, &callbacks.url(), "urbanPlanning"),
    )
    .await;
    callbacks
        .wait_for(&format!("/callback/negotiations/{cpid}/agreement"))
        .await;
    // ACCEPTED answers an offer; FINALIZED is the provider's to send.
    let answer = client
        .post(
            &format!("/negotiations/{ppid}/events"),
            &event(&ppid, cpid, "ACCEPTED"),
        )
        .await;
    assert_error(&answer, 400, "AGREED");
    let answer = client
        .post(
            &format!("/negotiations/{ppid}/events"),
            &event(&ppid, cpid, "FINALIZED"),
        )
        .await;
    assert_error(&answer, 400, "provider's to send");
    // A message naming another consumer process.
    let answer = client
        .post(
            &format!("/negotiations/{ppid}/agreement/verification"),
            &verification(&ppid, "urn:uuid:someone-else"),
        )
        .await;
    assert_error(&answer, 400, "consumerPid");
    assert_eq!(state_of(&client, &ppid).await, "AGREED");
    // Verified, then a second verification is the first one's answer, and a
    // termination of the FINALIZED negotiation is refused.
    for _ in 0..2 {
        let answer = client
            .post(
                &format!("/negotiations/{ppid}/agreement/verification"),
                &verification(&ppid, cpid),
            )
            .await;
        assert_eq!(answer.status, 200, "{answer:?}");
    }
    let answer = client
        .post(
            &format!("/negotiations/{ppid}/termination"),
            &termination(&ppid, cpid),
        )
        .await;
    assert_error(&answer, 400, "FINALIZED");
    assert_eq!(state_of(&client, &ppid).await, "FINALIZED");
}

#[tokio::test]
async fn an_unknown_or_another_participants_negotiation_is_404() {
    let f = Fixture::start().await;
    let callbacks = Callbacks::start(
        &f.consumer,
        &f.provider.roots(),
        f.provider.participant.san_uri(),
    )
    .await;
    let client = f.client(&f.consumer);
    let cpid = "urn:uuid:mine";
    let ppid = start_negotiation(
        &client,
        &request_message(cpid, &f.open_offer, &callbacks.url(), "urbanPlanning"),
    )
    .await;
    let other = member(&f.space, LOGISTICS);
    refresh_all(&[&f.provider]).await;
    let stranger = f.client(&other);
    let answer = stranger.get(&format!("/negotiations/{ppid}")).await;
    assert_error(&answer, 404, "does not exist for you");
    let answer = stranger
        .post(
            &format!("/negotiations/{ppid}/termination"),
            &termination(&ppid, cpid),
        )
        .await;
    assert_error(&answer, 404, "does not exist for you");
    let answer = client
        .get("/negotiations/neg-000000000000000000000000")
        .await;
    assert_error(&answer, 404, "does not exist for you");
    // The stranger's attempt changed nothing.
    assert_ne!(state_of(&client, &ppid).await, "TERMINATED");
}

#[tokio::test]
async fn bad_input_is_refused_with_400_recorded_and_nothing_stored() {
    let f = Fixture::start().await;
    let client = f.client(&f.consumer);
    let good = request_message(
        "urn:uuid:bad",
        &f.open_offer,
        "https://localhost:9/cb",
        "urbanPlanning",
    );
    let mut no_context = good.clone();
    no_context.as_object_mut().unwrap().remove("@context");
    let mut wrong_context = good.clone();
    wrong_context["@context"] = json!(["https://w3id.org/dspace/2024/1/context.jsonld"]);
    let mut unknown_type = good.clone();
    unknown_type["@type"] = "ContractOfferRequest".into();
    let mut plain_http = good.clone();
    plain_http["callbackAddress"] = "http://localhost:9/cb".into();
    let mut unknown_offer = good.clone();
    unknown_offer["offer"]["@id"] = "urn:liutong:offer:nothing/v1".into();
    let oversized = {
        let mut m = good.clone();
        m["lt:purpose"] = "x"
            .repeat(f.provider.config.limits.max_message_bytes + 1)
            .into();
        serde_json::to_vec(&m).unwrap()
    };
    let before = f.provider.audit_events().len();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("malformed JSON", b"{\"@context\": [".to_vec(), "not JSON"),
        (
            "no @context",
            serde_json::to_vec(&no_context).unwrap(),
            "@context is missing",
        ),
        (
            "wrong @context",
            serde_json::to_vec(&wrong_context).unwrap(),
            "does not name",
        ),
        (
            "unknown @type",
            serde_json::to_vec(&unknown_type).unwrap(),
            "takes a ContractRequestMessage",
        ),
        (
            "plain HTTP callback",
            serde_json::to_vec(&plain_http).unwrap(),
            "not an https:// URL",
        ),
        (
            "unknown offer",
            serde_json::to_vec(&unknown_offer).unwrap(),
            "does not exist",
        ),
        ("oversized", oversized, "larger than this node accepts"),
    ];
    for (what, body, words) in &cases {
        let answer = client
            .send("POST", "/negotiations/request", Some(body.clone()))
            .await
            .unwrap();
        let error = assert_error(&answer, 400, words);
        assert!(error.get("providerPid").is_some(), "{what}: {error}");
    }
    assert!(
        f.provider.running.node.contracts.list().unwrap().is_empty(),
        "nothing stored"
    );
    let refusals: Vec<Json> = f
        .provider
        .audit_events()
        .split_off(before)
        .into_iter()
        .filter(|e| e["kind"] == "refusal")
        .collect();
    assert_eq!(refusals.len(), cases.len(), "{refusals:?}");
    assert!(
        refusals.iter().all(|e| e["detail"]
            .as_str()
            .unwrap()
            .contains("POST /negotiations/request")),
        "{refusals:?}"
    );
}

#[tokio::test]
async fn a_callback_server_with_another_members_certificate_is_not_called() {
    let f = Fixture::start().await;
    let third_party = member(&f.space, LOGISTICS);
    refresh_all(&[&f.provider]).await;
    // The consumer aims the provider at a server of another member.
    let elsewhere = Callbacks::start(
        &third_party,
        &f.provider.roots(),
        f.provider.participant.san_uri(),
    )
    .await;
    let client = f.client(&f.consumer);
    let cpid = "urn:uuid:aimed-elsewhere";
    let ppid = start_negotiation(
        &client,
        &request_message(cpid, &f.open_offer, &elsewhere.url(), "urbanPlanning"),
    )
    .await;
    let terminated = wait_until(CALLBACK_WITHIN, || async {
        f.negotiation(&ppid)
            .is_some_and(|n| n.state.as_str() == "TERMINATED")
    })
    .await;
    assert!(terminated, "{:?}", f.negotiation(&ppid));
    let n = f.negotiation(&ppid).unwrap();
    assert!(n.reason.contains("is not the consumer"), "{}", n.reason);
    assert!(
        elsewhere.received().is_empty(),
        "{:?}",
        elsewhere.received()
    );
    let audit = f.provider.audit_texts().join("\n");
    assert!(audit.contains("DSP callback refused"), "{audit}");
    assert_eq!(state_of(&client, &ppid).await, "TERMINATED");
}

/// Sends a signed request (`lt:request`) for the important offer from `consumer`'s node
/// and returns the provider's process ID.
async fn signed_request(
    f: &Fixture,
    consumer: &TestNode,
    cpid: &str,
    callbacks: &Callbacks,
) -> String {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let offer_id = f
        .important_offer
        .strip_prefix("urn:liutong:offer:")
        .unwrap()
        .to_owned();
    let request = ContractRequest {
        negotiation_id: format!(
            "neg-{}",
            &cpid.replace(|c: char| !c.is_ascii_alphanumeric(), "")
        ),
        consumer: consumer.participant.clone(),
        provider: f.provider.participant.clone(),
        offer_id,
        purpose: "scientificResearch".into(),
        nonce: "0a".repeat(16),
        created_at: now,
        expires_at: now + 300,
    };
    let envelope = Envelope::sign_json(
        REQUEST_PAYLOAD_TYPE,
        &request,
        &consumer.running.node.identity.signing_key,
    )
    .unwrap();
    let mut message = request_message(
        cpid,
        &f.important_offer,
        &callbacks.url(),
        "scientificResearch",
    );
    message["lt:request"] = serde_json::to_value(&envelope).unwrap();
    assert_valid(&message);
    let ppid = start_negotiation(&f.client(&consumer.identity), &message).await;
    assert_eq!(ppid, request.negotiation_id);
    ppid
}

#[tokio::test]
async fn important_data_takes_only_a_signed_request_and_waits_for_approval() {
    let f = Fixture::start().await;
    let client = f.client(&f.consumer);
    let callbacks = Callbacks::start(
        &f.consumer,
        &f.provider.roots(),
        f.provider.participant.san_uri(),
    )
    .await;
    let plain = request_message(
        "urn:uuid:plain-important",
        &f.important_offer,
        &callbacks.url(),
        "scientificResearch",
    );
    let answer = client.post("/negotiations/request", &plain).await;
    assert_error(&answer, 403, "must be signed");
    assert!(f.provider.running.node.contracts.list().unwrap().is_empty());

    // A Liutong consumer signs its request with its node's key.
    let consumer = f
        .space
        .node_with(LOGISTICS, "logistics", ROLES, |_| {})
        .await;
    refresh_all(&[&f.provider]).await;
    let callbacks = Callbacks::start(
        &consumer.identity,
        &f.provider.roots(),
        f.provider.participant.san_uri(),
    )
    .await;
    let client = f.client(&consumer.identity);
    let cpid = "urn:uuid:signed-important";
    let ppid = signed_request(&f, &consumer, cpid, &callbacks).await;
    assert_eq!(state_of(&client, &ppid).await, "REQUESTED");
    assert!(f.negotiation(&ppid).unwrap().reason.contains("approval"));
    assert!(
        callbacks.received().is_empty(),
        "nothing before the approval"
    );

    f.provider
        .admin(LocalRole::Admin)
        .await
        .approve_contract(ApproveContractRequest {
            negotiation_id: ppid.clone(),
        })
        .await
        .expect("approve");
    let agreed = callbacks
        .wait_for(&format!("/callback/negotiations/{cpid}/agreement"))
        .await;
    let mut envelope: Envelope =
        serde_json::from_value(agreed["lt:agreement"].clone()).expect("the signed agreement");
    envelope
        .verify(&f.provider.running.node.identity.signing_key.public_key())
        .unwrap();
    // A verification without the countersignature is refused for a signed request.
    let answer = client
        .post(
            &format!("/negotiations/{ppid}/agreement/verification"),
            &verification(&ppid, cpid),
        )
        .await;
    assert_error(&answer, 400, "countersigned");
    envelope
        .add_signature(&consumer.running.node.identity.signing_key)
        .unwrap();
    let mut verify = verification(&ppid, cpid);
    verify["lt:agreement"] = serde_json::to_value(&envelope).unwrap();
    assert_valid(&verify);
    let answer = client
        .post(
            &format!("/negotiations/{ppid}/agreement/verification"),
            &verify,
        )
        .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    callbacks
        .wait_for(&format!("/callback/negotiations/{cpid}/events"))
        .await;
    let n = f.negotiation(&ppid).unwrap();
    assert_eq!(n.state.as_str(), "FINALIZED");
    assert!(n.signed_by_peer());
    assert_eq!(n.agreement.as_ref().unwrap().signatures.len(), 2);
    let content = n.agreement_content().unwrap();
    assert_eq!(content.approved_by.as_deref(), Some("local admin"));
}

#[tokio::test]
async fn news_not_yet_told_survives_a_restart_and_is_told_after_it() {
    let f = Fixture::start().await;
    let callbacks = Callbacks::start(
        &f.consumer,
        &f.provider.roots(),
        f.provider.participant.san_uri(),
    )
    .await;
    // The consumer's server is up but not taking messages yet.
    callbacks.accepting.store(false, Ordering::SeqCst);
    let cpid = "urn:uuid:told-after-restart";
    let ppid = start_negotiation(
        &f.client(&f.consumer),
        &request_message(cpid, &f.open_offer, &callbacks.url(), "urbanPlanning"),
    )
    .await;
    let tried = wait_until(CALLBACK_WITHIN, || async {
        callbacks.attempts.load(Ordering::SeqCst) > 0
    })
    .await;
    assert!(tried, "the provider calls back");
    let Fixture {
        space: _space,
        provider,
        consumer,
        ..
    } = f;
    let provider = provider.restart().await;
    callbacks.accepting.store(true, Ordering::SeqCst);
    let agreed = callbacks
        .wait_for(&format!("/callback/negotiations/{cpid}/agreement"))
        .await;
    assert_eq!(agreed["providerPid"], ppid.as_str());
    let client = Client::new(
        provider.running.dsp_addr().unwrap(),
        Some(&consumer),
        provider.roots(),
    );
    assert_eq!(state_of(&client, &ppid).await, "AGREED");
}

#[tokio::test]
async fn a_member_without_the_consumer_role_cannot_negotiate() {
    let f = Fixture::start().await;
    let mut admission = DataSpace::admission(LOGISTICS, LOGISTICS, ParticipantKind::Government);
    admission.roles = vec![MemberRole::Provider];
    let provider_only = f.space.identity_of(&f.space.admit(admission));
    refresh_all(&[&f.provider]).await;
    let message = request_message(
        "urn:uuid:no-role",
        &f.open_offer,
        "https://localhost:9/cb",
        "urbanPlanning",
    );
    let answer = f
        .client(&provider_only)
        .post("/negotiations/request", &message)
        .await;
    assert_error(&answer, 403, "consumer");
    let answer = f
        .client(&provider_only)
        .get("/negotiations/neg-000000000000000000000000")
        .await;
    assert_error(&answer, 403, "consumer");
    assert!(f.provider.running.node.contracts.list().unwrap().is_empty());
}

/// The counter-offer rule: a request for an offer the catalog does not hold, of a
/// product the consumer may see, is answered with the product's current offer at the
/// callback address (OFFERED); a request for exactly that offer at
/// `/negotiations/:providerPid/request` is then decided as a first request is.
#[tokio::test]
async fn a_request_for_an_offer_not_held_is_answered_with_a_counter_offer() {
    let f = Fixture::start().await;
    let callbacks = Callbacks::start(
        &f.consumer,
        &f.provider.roots(),
        f.provider.participant.san_uri(),
    )
    .await;
    let client = f.client(&f.consumer);
    let cpid = "urn:uuid:counter-offer-1";
    let (product, _) = f.open_offer.split_once("/v").unwrap();
    let stale = format!("{product}/v9");
    let mut message = request_message(cpid, &stale, &callbacks.url(), "urbanPlanning");
    message["offer"]["target"] = product
        .replace("urn:liutong:offer:", "urn:liutong:product:")
        .into();
    assert_valid(&message);
    let ppid = start_negotiation(&client, &message).await;
    let offered = callbacks
        .wait_for(&format!("/callback/negotiations/{cpid}/offers"))
        .await;
    assert_eq!(offered["@type"], "ContractOfferMessage");
    assert_eq!(offered["providerPid"], ppid.as_str());
    assert_eq!(offered["offer"]["@id"], f.open_offer.as_str());
    assert_eq!(state_of(&client, &ppid).await, "OFFERED");

    // A request for another offer does not answer it.
    let mut counter = request_message(cpid, &stale, &callbacks.url(), "urbanPlanning");
    counter.as_object_mut().unwrap().remove("callbackAddress");
    counter["providerPid"] = ppid.clone().into();
    assert_valid(&counter);
    let path = format!("/negotiations/{ppid}/request");
    assert_error(&client.post(&path, &counter).await, 400, "counter-offer");
    counter["offer"]["@id"] = f.open_offer.clone().into();
    assert_valid(&counter);
    let answer = client.post(&path, &counter).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.message()["state"], "REQUESTED");
    let agreed = callbacks
        .wait_for(&format!("/callback/negotiations/{cpid}/agreement"))
        .await;
    assert_eq!(agreed["providerPid"], ppid.as_str());
    let n = f.negotiation(&ppid).unwrap();
    assert_eq!(n.state.as_str(), "AGREED");
    assert_eq!(
        format!("urn:liutong:offer:{}", n.offer_id),
        f.open_offer,
        "agreed on the counter-offer"
    );
    // Once answered, the counter-offer takes no second request.
    assert_error(&client.post(&path, &counter).await, 400, "OFFERED");
}

/// A plain DSP consumer may take a counter-offer with an ACCEPTED event instead of a
/// new request: the provider then decides the counter-offer as a first request and the
/// agreement follows at the callback address; a second ACCEPTED finds it no longer
/// OFFERED.
#[tokio::test]
async fn a_counter_offer_is_taken_by_an_accepted_event() {
    let f = Fixture::start().await;
    let callbacks = Callbacks::start(
        &f.consumer,
        &f.provider.roots(),
        f.provider.participant.san_uri(),
    )
    .await;
    let client = f.client(&f.consumer);
    let cpid = "urn:uuid:counter-offer-accepted";
    let (product, _) = f.open_offer.split_once("/v").unwrap();
    let mut message = request_message(
        cpid,
        &format!("{product}/v9"),
        &callbacks.url(),
        "urbanPlanning",
    );
    message["offer"]["target"] = product
        .replace("urn:liutong:offer:", "urn:liutong:product:")
        .into();
    let ppid = start_negotiation(&client, &message).await;
    callbacks
        .wait_for(&format!("/callback/negotiations/{cpid}/offers"))
        .await;
    assert_eq!(state_of(&client, &ppid).await, "OFFERED");

    let accepted = event(&ppid, cpid, "ACCEPTED");
    assert_valid(&accepted);
    let path = format!("/negotiations/{ppid}/events");
    let answer = client.post(&path, &accepted).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let agreed = callbacks
        .wait_for(&format!("/callback/negotiations/{cpid}/agreement"))
        .await;
    assert_valid(&agreed);
    assert_eq!(agreed["providerPid"], ppid.as_str());
    let n = f.negotiation(&ppid).unwrap();
    assert_eq!(n.state.as_str(), "AGREED");
    assert_eq!(
        format!("urn:liutong:offer:{}", n.offer_id),
        f.open_offer,
        "agreed on the counter-offer"
    );
    assert_eq!(n.purpose, "urbanPlanning", "the first request's purpose");
    assert_error(&client.post(&path, &accepted).await, 400, "OFFERED");
}
