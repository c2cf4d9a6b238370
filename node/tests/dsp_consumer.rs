//! The Dataspace Protocol 2025-1 contract negotiation, consumer role: two real Liutong
//! nodes negotiating over DSP on loopback (the consumer node sends the signed request,
//! takes the agreement at its callback address, countersigns it, and is told
//! FINALIZED), and the consumer-side scenario shapes of the protocol's compatibility
//! kit (CN_C) driven by a raw-HTTP test provider against the consumer node: the
//! request it sends, its callback endpoints, terminations from each side, and invalid
//! transitions answered 4xx other than 404. Every message sent or answered in either
//! direction is validated against the protocol's JSON Schemas.

mod common;
mod dsp;

use std::sync::{Arc, Mutex};

use common::*;
use dsp::{Client, assert_valid};
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use liutong_node::config::{DspSection, NodeConfig};
use liutong_node::identity::{MemberRole, ParticipantKind};
use liutong_node::local::LocalRole;
use liutong_node::tls::TlsIdentity;
use liutong_proto::v1::{
    ApproveContractRequest, GetContractRequest, PeerCatalogRequest, RejectContractRequest,
    RequestContractRequest, TerminateContractRequest,
};
use serde_json::{Value as Json, json};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

const ROLES: &[MemberRole] = &[MemberRole::Provider, MemberRole::Consumer];
const CSV: &[u8] = b"district,households\nXihu,241000\nShangcheng,198000\n";
const CONTEXT: &str = dsp::CONTEXT;
const WAIT: std::time::Duration = std::time::Duration::from_secs(30);

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

fn dsp_url(node: &TestNode) -> String {
    format!(
        "https://{}",
        node.running.dsp_addr().expect("the DSP listener is on")
    )
}

/// A provider and a consumer, both Liutong nodes with their DSP listeners on, and the
/// provider's two offers (their offer IDs).
struct Pair {
    space: DataSpace,
    provider: TestNode,
    consumer: TestNode,
    open_offer: String,
    important_offer: String,
}

impl Pair {
    async fn start() -> Self {
        let space = DataSpace::start().await;
        let provider = space
            .node_with(TRANSPORT, "transport", ROLES, with_dsp)
            .await;
        let consumer = space.node_with(ECOLOGY, "ecology", ROLES, with_dsp).await;
        refresh_all(&[&provider, &consumer]).await;
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
            open_offer: open.offer_id,
            important_offer: important.offer_id,
        }
    }

    /// The consumer node requests `offer` from the provider's DSP endpoint.
    async fn request(
        &self,
        offer: &str,
        purpose: &str,
    ) -> Result<liutong_proto::v1::Contract, tonic::Status> {
        self.consumer
            .admin(LocalRole::Admin)
            .await
            .request_contract(RequestContractRequest {
                peer: dsp_url(&self.provider),
                offer_id: offer.into(),
                purpose: purpose.into(),
            })
            .await
            .map(tonic::Response::into_inner)
    }
}

/// Waits until `node`'s negotiation `id` is in `state`; panics with what it is otherwise.
async fn wait_for_state(node: &TestNode, id: &str, state: &str) {
    let reached = wait_until(WAIT, || async {
        node.running
            .node
            .contracts
            .get(id)
            .unwrap()
            .is_some_and(|n| n.state.as_str() == state)
    })
    .await;
    let n = node.running.node.contracts.get(id).unwrap();
    assert!(reached, "negotiation {id} never reached {state}: {n:?}");
}

#[tokio::test]
async fn two_nodes_negotiate_over_dsp_to_the_dual_signed_agreement() {
    let p = Pair::start().await;
    let c = p
        .request(&p.open_offer, "urbanPlanning")
        .await
        .expect("agreed");
    assert_eq!(c.state, "FINALIZED", "{c:?}");
    assert_eq!(c.role, "consumer");
    assert_eq!(c.peer, p.provider.participant.to_string());
    assert_eq!(c.peer_address, dsp_url(&p.provider));

    // The consumer keeps the agreement as a gRPC agreement is kept: both signatures.
    let mine = p
        .consumer
        .running
        .node
        .contracts
        .get(&c.negotiation_id)
        .unwrap()
        .unwrap();
    let envelope = mine.agreement.clone().expect("the agreement is kept");
    assert_eq!(envelope.signatures.len(), 2, "dual-signed");
    // The provider holds the same envelope, FINALIZED, signed by its consumer.
    let theirs = p
        .provider
        .running
        .node
        .contracts
        .get(&c.negotiation_id)
        .unwrap()
        .expect("the provider's process ID is the signed request's negotiation");
    assert_eq!(theirs.state.as_str(), "FINALIZED");
    assert!(theirs.signed_by_peer());
    assert_eq!(theirs.agreement.as_ref(), Some(&envelope));
    // The consumer's side is the agreement the transfers use.
    p.consumer
        .running
        .node
        .contracts
        .finalized(liutong_node::contract::Role::Consumer, &c.agreement_id)
        .expect("a finalized consumer agreement");
    let shown = p
        .consumer
        .admin(LocalRole::Admin)
        .await
        .get_contract(GetContractRequest {
            negotiation_id: c.agreement_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(shown.negotiation_id, c.negotiation_id);
    let audit = p.consumer.audit_texts().join("\n");
    assert!(
        audit.contains(&format!(
            "negotiation {} VERIFIED → FINALIZED",
            c.negotiation_id
        )),
        "{audit}"
    );
}

#[tokio::test]
async fn important_data_waits_for_a_person_on_the_provider_then_finalizes() {
    let p = Pair::start().await;
    let c = p
        .request(&p.important_offer, "scientificResearch")
        .await
        .expect("held for approval");
    assert_eq!(c.state, "REQUESTED", "{c:?}");
    assert!(c.reason.contains("not decided"), "{}", c.reason);
    p.provider
        .admin(LocalRole::Admin)
        .await
        .approve_contract(ApproveContractRequest {
            negotiation_id: c.negotiation_id.clone(),
        })
        .await
        .expect("approve");
    wait_for_state(&p.consumer, &c.negotiation_id, "FINALIZED").await;
    wait_for_state(&p.provider, &c.negotiation_id, "FINALIZED").await;
    let n = p
        .consumer
        .running
        .node
        .contracts
        .get(&c.negotiation_id)
        .unwrap()
        .unwrap();
    assert_eq!(n.agreement.unwrap().signatures.len(), 2);
}

#[tokio::test]
async fn a_denial_names_the_failed_constraint() {
    let p = Pair::start().await;
    let e = p
        .request(&p.open_offer, "marketing")
        .await
        .expect_err("denied");
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("purpose"), "{}", e.message());
    let listed = p.consumer.running.node.contracts.list().unwrap();
    let n = listed.first().expect("the request is on record");
    assert_eq!(n.state.as_str(), "TERMINATED");
    assert!(
        n.failed_constraints.iter().any(|c| c.contains("purpose")),
        "{:?}",
        n.failed_constraints
    );
}

#[tokio::test]
async fn either_side_terminates_a_negotiation_over_dsp() {
    let p = Pair::start().await;
    // The provider's person rejects: the consumer is told at its callback address.
    let c = p
        .request(&p.important_offer, "scientificResearch")
        .await
        .unwrap();
    assert_eq!(c.state, "REQUESTED");
    p.provider
        .admin(LocalRole::Admin)
        .await
        .reject_contract(RejectContractRequest {
            negotiation_id: c.negotiation_id.clone(),
            reason: "not this quarter".into(),
        })
        .await
        .expect("reject");
    wait_for_state(&p.consumer, &c.negotiation_id, "TERMINATED").await;
    let n = p
        .consumer
        .running
        .node
        .contracts
        .get(&c.negotiation_id)
        .unwrap()
        .unwrap();
    assert!(n.reason.contains("not this quarter"), "{}", n.reason);

    // The consumer ends one: the provider records the consumer's reason.
    let c = p
        .request(&p.important_offer, "scientificResearch")
        .await
        .unwrap();
    assert_eq!(c.state, "REQUESTED");
    let ended = p
        .consumer
        .admin(LocalRole::Admin)
        .await
        .terminate_contract(TerminateContractRequest {
            negotiation_id: c.negotiation_id.clone(),
            reason: "the project was cancelled".into(),
        })
        .await
        .expect("terminate")
        .into_inner();
    assert_eq!(ended.state, "TERMINATED");
    wait_for_state(&p.provider, &c.negotiation_id, "TERMINATED").await;
    let theirs = p
        .provider
        .running
        .node
        .contracts
        .get(&c.negotiation_id)
        .unwrap()
        .unwrap();
    assert!(
        theirs.reason.contains("the project was cancelled"),
        "{}",
        theirs.reason
    );
    // A final negotiation is not terminated again.
    let again = p
        .consumer
        .admin(LocalRole::Admin)
        .await
        .terminate_contract(TerminateContractRequest {
            negotiation_id: c.negotiation_id.clone(),
            reason: "again".into(),
        })
        .await
        .expect_err("final");
    assert_eq!(again.code(), tonic::Code::FailedPrecondition, "{again:?}");
}

#[tokio::test]
async fn a_counter_offer_is_taken_and_agreed_between_two_nodes() {
    let p = Pair::start().await;
    // A version the provider does not hold, of a product it shows the consumer: the
    // provider answers with the product's current offer, which the consumer takes.
    let (product, _) = p.open_offer.split_once("/v").unwrap();
    let stale = format!("{product}/v9");
    let c = p.request(&stale, "urbanPlanning").await.expect("agreed");
    assert_eq!(c.state, "FINALIZED", "{c:?}");
    assert_eq!(
        c.offer_id, p.open_offer,
        "the agreement is for the counter-offer"
    );
    let theirs = p
        .provider
        .running
        .node
        .contracts
        .get(&c.negotiation_id)
        .unwrap()
        .unwrap();
    assert_eq!(theirs.state.as_str(), "FINALIZED");
    assert_eq!(theirs.offer_id, p.open_offer);
    let agreement = theirs.agreement_content().unwrap();
    assert_eq!(agreement.offer_id, p.open_offer);
    assert_eq!(theirs.agreement.unwrap().signatures.len(), 2);
    let audit = p.provider.audit_texts().join("\n");
    assert!(audit.contains("REQUESTED → OFFERED"), "{audit}");
    assert!(audit.contains("OFFERED → REQUESTED"), "{audit}");
    let audit = p.consumer.audit_texts().join("\n");
    assert!(audit.contains("OFFERED → REQUESTED"), "{audit}");
}

#[tokio::test]
async fn a_node_without_its_dsp_listener_refuses_an_https_peer_clearly() {
    let p = Pair::start().await;
    let plain = p
        .space
        .node_with(LOGISTICS, "logistics", ROLES, |_| {})
        .await;
    refresh_all(&[&plain, &p.provider]).await;
    let e = plain
        .admin(LocalRole::Admin)
        .await
        .request_contract(RequestContractRequest {
            peer: dsp_url(&p.provider),
            offer_id: p.open_offer.clone(),
            purpose: "urbanPlanning".into(),
        })
        .await
        .expect_err("no DSP listener");
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("[dsp]"), "{}", e.message());
    assert!(plain.running.node.contracts.list().unwrap().is_empty());
    let e = plain
        .admin(LocalRole::Admin)
        .await
        .peer_catalog(PeerCatalogRequest {
            address: dsp_url(&p.provider),
            page_size: 0,
            page_token: String::new(),
        })
        .await
        .expect_err("no DSP listener");
    assert!(e.message().contains("[dsp]"), "{}", e.message());
}

async fn liutong(args: &[&str], config: &std::path::Path) -> (bool, String, String) {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let config = config.to_owned();
    // Off the runtime: the nodes the command talks to run on it.
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_liutong"))
            .args(&args)
            .arg("--config")
            .arg(&config)
            .env_remove("LIUTONG_CONFIG")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_cli_lists_a_dsp_catalog_and_requests_a_contract_over_dsp() {
    let p = Pair::start().await;
    let url = dsp_url(&p.provider);
    let config = p.consumer.config_path();
    let (ok, over_dsp, err) = liutong(&["catalog", "--peer", &url], &config).await;
    assert!(ok, "{err}");
    let (ok, over_grpc, err) = liutong(
        &["catalog", "--peer", &p.provider.peer_addr().to_string()],
        &config,
    )
    .await;
    assert!(ok, "{err}");
    assert_eq!(over_dsp, over_grpc, "the same listing over both bindings");
    assert!(over_dsp.contains(&p.open_offer), "{over_dsp}");

    let (ok, out, err) = liutong(
        &[
            "contract",
            "request",
            "--peer",
            &url,
            "--offer",
            &p.open_offer,
            "--purpose",
            "urbanPlanning",
        ],
        &config,
    )
    .await;
    assert!(ok, "{err}");
    assert!(out.contains("FINALIZED"), "{out}");
    let (ok, help, _) = liutong(&["contract", "terminate", "--help"], &config).await;
    assert!(ok);
    assert!(help.contains("Dataspace Protocol"), "{help}");
}

// ---- CN_C: a raw-HTTP test provider against the consumer node ----

/// A DSP provider speaking raw HTTP over TLS with a member's certificate: it shows one
/// dataset, answers a request 201 with its own process ID and says the negotiation is
/// REQUESTED; it keeps every message it gets.
struct RawProvider {
    addr: std::net::SocketAddr,
    got: Arc<Mutex<Vec<(String, Json)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RawProvider {
    fn drop(&mut self) {
        self.task.abort();
    }
}

const RAW_PID: &str = "urn:uuid:raw-provider-1";
const RAW_OFFER: &str = "prd-raw/v1";

impl RawProvider {
    async fn start(identity: &TlsIdentity, roots: &rustls::RootCertStore) -> Self {
        let tls = liutong_node::dsp::tls_config(identity, roots).unwrap();
        let mut tls = (*tls).clone();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(tls));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let got: Arc<Mutex<Vec<(String, Json)>>> = Arc::default();
        let kept = got.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, kept) = (acceptor.clone(), kept.clone());
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(
                        move |request: http::Request<hyper::body::Incoming>| {
                            let kept = kept.clone();
                            async move {
                                let path = request.uri().path().to_owned();
                                let body = request.into_body().collect().await.unwrap().to_bytes();
                                let json: Json =
                                    serde_json::from_slice(&body).unwrap_or(Json::Null);
                                if !json.is_null() {
                                    kept.lock().unwrap().push((path.clone(), json.clone()));
                                }
                                let (status, answer) = Self::answer(&path, &json);
                                Ok::<_, std::convert::Infallible>(
                                    http::Response::builder()
                                        .status(status)
                                        .header("content-type", "application/json")
                                        .body(Full::new(bytes::Bytes::from(
                                            serde_json::to_vec(&answer).unwrap(),
                                        )))
                                        .unwrap(),
                                )
                            }
                        },
                    );
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, got, task }
    }

    fn answer(path: &str, message: &Json) -> (u16, Json) {
        let negotiation = |consumer_pid: &Json| {
            json!({
                "@context": [CONTEXT],
                "@type": "ContractNegotiation",
                "providerPid": RAW_PID,
                "consumerPid": consumer_pid,
                "state": "REQUESTED",
            })
        };
        let answer = match path {
            "/catalog/datasets/prd-raw" => (
                200,
                json!({
                    "@context": [CONTEXT],
                    "@id": "urn:liutong:product:prd-raw",
                    "@type": "Dataset",
                    "hasPolicy": [{
                        "@id": format!("urn:liutong:offer:{RAW_OFFER}"),
                        "@type": "Offer",
                        "permission": [{"action": "use"}],
                        "lt:classification": "general-2",
                    }],
                    "distribution": [{
                        "@type": "Distribution",
                        "format": "HttpData-PULL",
                        "accessService": {"@id": "urn:raw", "@type": "DataService", "endpointURL": "https://localhost"},
                    }],
                }),
            ),
            "/negotiations/request" => (201, negotiation(&message["consumerPid"])),
            p if p == format!("/negotiations/{RAW_PID}") => {
                (200, negotiation(&json!("urn:uuid:unknown")))
            }
            _ => (200, json!({})),
        };
        if answer.1.get("@type").is_some() {
            assert_valid(&answer.1);
        }
        answer
    }

    fn url(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }

    fn received(&self) -> Vec<(String, Json)> {
        self.got.lock().unwrap().clone()
    }
}

/// A member's certificate (a member of the data space, not running a node).
fn member(space: &DataSpace, id: &str) -> TlsIdentity {
    let mut admission = DataSpace::admission(id, id, ParticipantKind::Enterprise);
    admission.roles = ROLES.to_vec();
    let bundle = space.admit(admission);
    space.identity_of(&bundle)
}

/// The consumer node, a raw provider of another member's, and the negotiation the node
/// started with it (REQUESTED there).
struct RawFixture {
    space: DataSpace,
    consumer: TestNode,
    raw: RawProvider,
    raw_identity: TlsIdentity,
    negotiation: String,
}

impl RawFixture {
    async fn start() -> Self {
        let space = DataSpace::start().await;
        let consumer = space.node_with(ECOLOGY, "ecology", ROLES, with_dsp).await;
        let raw_identity = member(&space, LOGISTICS);
        refresh_all(&[&consumer]).await;
        let raw = RawProvider::start(&raw_identity, &consumer.roots()).await;
        let c = consumer
            .admin(LocalRole::Admin)
            .await
            .request_contract(RequestContractRequest {
                peer: raw.url(),
                offer_id: RAW_OFFER.into(),
                purpose: "urbanPlanning".into(),
            })
            .await
            .expect("requested")
            .into_inner();
        assert_eq!(c.state, "REQUESTED", "{c:?}");
        Self {
            space,
            consumer,
            raw,
            raw_identity,
            negotiation: c.negotiation_id,
        }
    }

    /// A raw client of the consumer node's DSP listener presenting `identity`.
    fn client(&self, identity: &TlsIdentity) -> Client {
        Client::new(
            self.consumer.running.dsp_addr().unwrap(),
            Some(identity),
            self.consumer.roots(),
        )
    }

    fn message(&self, ty: &str) -> Json {
        json!({
            "@context": [CONTEXT],
            "@type": ty,
            "providerPid": RAW_PID,
            "consumerPid": self.negotiation,
        })
    }

    fn state(&self) -> String {
        self.consumer
            .running
            .node
            .contracts
            .get(&self.negotiation)
            .unwrap()
            .unwrap()
            .state
            .to_string()
    }
}

#[track_caller]
fn assert_error(answer: &dsp::Answer, status: u16, words: &str) {
    assert_eq!(answer.status, status, "{answer:?}");
    let error = answer.message();
    assert_eq!(error["@type"], "ContractNegotiationError", "{error}");
    let reason = error["reason"].to_string();
    assert!(reason.contains(words), "{words:?} not in {reason}");
}

#[tokio::test]
async fn cn_c_the_consumer_sends_a_valid_signed_request_naming_its_callback() {
    let f = RawFixture::start().await;
    let got = f.raw.received();
    let (path, request) = got
        .iter()
        .find(|(p, _)| p == "/negotiations/request")
        .expect("the request arrived");
    assert_eq!(path, "/negotiations/request");
    assert_valid(request);
    assert_eq!(request["consumerPid"], f.negotiation.as_str());
    assert_eq!(
        request["callbackAddress"],
        dsp_url(&f.consumer).as_str(),
        "the consumer's own DSP base URL"
    );
    assert_eq!(
        request["offer"]["@id"],
        format!("urn:liutong:offer:{RAW_OFFER}")
    );
    assert!(
        request["lt:request"]["signatures"]
            .as_array()
            .is_some_and(|s| s.len() == 1),
        "{request}"
    );
    assert_eq!(f.state(), "REQUESTED");
}

#[tokio::test]
async fn cn_c_02_01_the_provider_terminates_a_requested_negotiation() {
    let f = RawFixture::start().await;
    let client = f.client(&f.raw_identity);
    let mut end = f.message("ContractNegotiationTerminationMessage");
    end["code"] = "provider.declined".into();
    end["reason"] = json!(["not offered to you any more"]);
    assert_valid(&end);
    let path = format!("/negotiations/{}/termination", f.negotiation);
    let answer = client.post(&path, &end).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(f.state(), "TERMINATED");
    // A final negotiation takes no more messages (CN_C:03 shape).
    assert_error(&client.post(&path, &end).await, 400, "final");
}

#[tokio::test]
async fn cn_c_02_02_the_consumer_terminates_and_tells_the_provider() {
    let f = RawFixture::start().await;
    f.consumer
        .admin(LocalRole::Admin)
        .await
        .terminate_contract(TerminateContractRequest {
            negotiation_id: f.negotiation.clone(),
            reason: "the project was cancelled".into(),
        })
        .await
        .expect("terminated");
    assert_eq!(f.state(), "TERMINATED");
    let got = f.raw.received();
    let (_, end) = got
        .iter()
        .find(|(p, _)| *p == format!("/negotiations/{RAW_PID}/termination"))
        .expect("the provider was told, at its own process ID");
    assert_valid(end);
    assert_eq!(end["consumerPid"], f.negotiation.as_str());
    assert!(end["reason"].to_string().contains("cancelled"), "{end}");
}

#[tokio::test]
async fn cn_c_03_invalid_provider_messages_are_400_and_change_nothing() {
    let f = RawFixture::start().await;
    let client = f.client(&f.raw_identity);
    let n = &f.negotiation;

    // CN_C:03-01: FINALIZED before any agreement.
    let mut finalized = f.message("ContractNegotiationEventMessage");
    finalized["eventType"] = "FINALIZED".into();
    assert_valid(&finalized);
    let answer = client
        .post(&format!("/negotiations/{n}/events"), &finalized)
        .await;
    assert_error(&answer, 400, "REQUESTED");

    // An agreement whose lt:agreement is not the provider's signed envelope (one
    // without lt:agreement is a plain provider's: see dsp_plain_provider.rs).
    let mut agreement = f.message("ContractAgreementMessage");
    agreement["lt:agreement"] = json!({"payload": "not an envelope"});
    agreement["agreement"] = json!({
        "@id": "urn:uuid:agreement-1",
        "@type": "Agreement",
        "target": "urn:liutong:product:prd-raw",
        "assigner": "urn:uscc:91330100MA2L0G0013",
        "assignee": "urn:uscc:11330000MA2ECE0015",
        "timestamp": "2026-01-01T00:00:00Z",
        "permission": [{"action": "use"}],
    });
    assert_valid(&agreement);
    let answer = client
        .post(&format!("/negotiations/{n}/agreement"), &agreement)
        .await;
    assert_error(&answer, 400, "lt:agreement");

    // A forged envelope is refused by the contract component, which ends the
    // negotiation (the consumer refuses an agreement that fails its checks).
    // (Checked after the other shapes: it is final.)

    // A provider's initial offer is not taken: this node negotiates from its requests.
    let mut initial = counter_offer(&f, "prd-raw/v2");
    initial["offer"]
        .as_object_mut()
        .unwrap()
        .remove("lt:classification");
    initial.as_object_mut().unwrap().remove("consumerPid");
    initial["callbackAddress"] = f.raw.url().into();
    assert_valid(&initial);
    let answer = client.post("/negotiations/offers", &initial).await;
    assert_error(&answer, 400, "initial offer");

    // Bad input: the wrong context, the wrong type, a consumerPid of another.
    let mut wrong_context = finalized.clone();
    wrong_context["@context"] = json!(["https://w3id.org/dspace/2024/1/context.jsonld"]);
    let answer = client
        .post(&format!("/negotiations/{n}/events"), &wrong_context)
        .await;
    assert_error(&answer, 400, "@context");
    let answer = client
        .post(&format!("/negotiations/{n}/termination"), &finalized)
        .await;
    assert_error(
        &answer,
        400,
        "takes a ContractNegotiationTerminationMessage",
    );
    let mut other_pid = finalized.clone();
    other_pid["consumerPid"] = "urn:uuid:another".into();
    let answer = client
        .post(&format!("/negotiations/{n}/events"), &other_pid)
        .await;
    assert_error(&answer, 400, "consumerPid");
    assert_eq!(f.state(), "REQUESTED", "nothing changed");
}

/// A counter-offer of the raw provider for `offer_id` (a product it shows).
fn counter_offer(f: &RawFixture, offer_id: &str) -> Json {
    let mut offer = f.message("ContractOfferMessage");
    offer["offer"] = json!({
        "@id": format!("urn:liutong:offer:{offer_id}"),
        "@type": "Offer",
        "target": "urn:liutong:product:prd-raw",
        "assigner": LOGISTICS,
        "permission": [{"action": "use"}],
        "lt:classification": "general-2",
    });
    assert_valid(&offer);
    offer
}

#[tokio::test]
async fn cn_c_01_02_a_counter_offer_is_taken_by_a_new_signed_request() {
    let f = RawFixture::start().await;
    let client = f.client(&f.raw_identity);
    let n = &f.negotiation;
    let answer = client
        .post(
            &format!("/negotiations/{n}/offers"),
            &counter_offer(&f, "prd-raw/v2"),
        )
        .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let path = format!("/negotiations/{RAW_PID}/request");
    let arrived = wait_until(WAIT, || async {
        f.raw.received().iter().any(|(p, _)| *p == path)
    })
    .await;
    assert!(arrived, "{:?}", f.raw.received());
    let got = f.raw.received();
    let (_, request) = got.iter().find(|(p, _)| *p == path).unwrap();
    assert_valid(request);
    assert_eq!(request["providerPid"], RAW_PID);
    assert_eq!(request["consumerPid"], n.as_str());
    assert_eq!(request["offer"]["@id"], "urn:liutong:offer:prd-raw/v2");
    let envelope: liutong_node::identity::Envelope =
        serde_json::from_value(request["lt:request"].clone()).unwrap();
    let signed: liutong_node::contract::ContractRequest = envelope.peek_json().unwrap();
    assert_eq!(signed.offer_id, "prd-raw/v2");
    assert_eq!(&signed.negotiation_id, n);
    assert_eq!(envelope.signatures.len(), 1);
    let kept = f.consumer.running.node.contracts.get(n).unwrap().unwrap();
    assert_eq!(kept.state.as_str(), "REQUESTED");
    assert_eq!(kept.offer_id, "prd-raw/v2");
    // The provider then ends it (CN_C:01-02).
    let mut end = f.message("ContractNegotiationTerminationMessage");
    end["code"] = "provider.declined".into();
    assert_valid(&end);
    let answer = client
        .post(&format!("/negotiations/{n}/termination"), &end)
        .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(f.state(), "TERMINATED");
}

#[tokio::test]
async fn a_counter_offer_the_consumer_cannot_satisfy_ends_the_negotiation() {
    let f = RawFixture::start().await;
    let client = f.client(&f.raw_identity);
    let n = &f.negotiation;
    let mut other_product = counter_offer(&f, "prd-other/v1");
    other_product["offer"]["target"] = "urn:liutong:product:prd-other".into();
    let answer = client
        .post(&format!("/negotiations/{n}/offers"), &other_product)
        .await;
    assert_error(&answer, 400, "not for the product");
    assert_eq!(f.state(), "TERMINATED");
    let got = f.raw.received();
    let (_, end) = got
        .iter()
        .find(|(p, _)| *p == format!("/negotiations/{RAW_PID}/termination"))
        .expect("the provider is told");
    assert_valid(end);
}

#[tokio::test]
async fn a_callback_from_a_member_that_is_not_the_provider_is_404() {
    let f = RawFixture::start().await;
    let other = member(&f.space, ROGUE);
    refresh_all(&[&f.consumer]).await;
    let client = f.client(&other);
    let n = &f.negotiation;
    let mut end = f.message("ContractNegotiationTerminationMessage");
    end["code"] = "x".into();
    assert_valid(&end);
    let mut finalized = f.message("ContractNegotiationEventMessage");
    finalized["eventType"] = "FINALIZED".into();
    for (path, message) in [
        (format!("/negotiations/{n}/termination"), &end),
        (format!("/negotiations/{n}/events"), &finalized),
    ] {
        let answer = client.post(&path, message).await;
        assert_error(&answer, 404, "does not exist");
    }
    // Nor does a negotiation this node never had, for its own provider.
    let answer = f
        .client(&f.raw_identity)
        .post("/negotiations/urn:uuid:never/termination", &end)
        .await;
    assert_error(&answer, 404, "does not exist");
    assert_eq!(f.state(), "REQUESTED");
}
