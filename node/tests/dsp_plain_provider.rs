//! A Liutong node as Dataspace Protocol consumer of a plain DSP provider (one that is
//! not a Liutong node: it signs no agreement envelope and no manifest), in the shapes
//! of the protocol's compatibility kit for the consumer side (CN_C, TP_C). The provider
//! is written here: raw HTTP over TLS with a member's certificate, answering from its
//! own tables, never through the node's DSP code; it keeps every message the consumer
//! sends, and each is validated against the 2025-1 JSON Schemas.

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
use liutong_proto::v1::{GetContractRequest, RequestContractRequest};
use serde_json::{Value as Json, json};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

const ROLES: &[MemberRole] = &[MemberRole::Provider, MemberRole::Consumer];
const CONTEXT: &str = dsp::CONTEXT;
const WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// The plain provider's negotiation process ID (one negotiation per test).
const PLAIN_PID: &str = "urn:uuid:plain-negotiation-1";
/// Its agreement's `@id`.
const PLAIN_AGREEMENT: &str = "urn:uuid:plain-agreement-1";

/// What the plain provider's catalog shows: a dataset classified general, one
/// classified important, and one it does not classify.
const OPEN: &str = "prd-open";
const IMPORTANT: &str = "prd-important";
const UNCLASSIFIED: &str = "prd-unclassified";

/// A plain DSP provider: raw HTTP over TLS with a member's certificate. It shows its
/// datasets, answers a contract request 201 (REQUESTED) and tells the state it was
/// told to; every other POST is answered 200. It keeps every message it gets.
struct PlainProvider {
    addr: std::net::SocketAddr,
    got: Arc<Mutex<Vec<(String, Json)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PlainProvider {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PlainProvider {
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

    /// A dataset of this provider's catalog: one offer, to use for research, with its
    /// classification when it gives one.
    fn dataset(product: &str) -> Option<Json> {
        let classification = match product {
            OPEN => Some("general-2"),
            IMPORTANT => Some("important"),
            UNCLASSIFIED => None,
            _ => return None,
        };
        let mut offer = json!({
            "@id": format!("urn:liutong:offer:{product}/v1"),
            "@type": "Offer",
            "permission": [{
                "action": "use",
                "constraint": [{
                    "leftOperand": "purpose",
                    "operator": "isA",
                    "rightOperand": "research",
                }],
            }],
        });
        if let Some(c) = classification {
            offer["lt:classification"] = c.into();
        }
        Some(json!({
            "@context": [CONTEXT],
            "@id": format!("urn:liutong:product:{product}"),
            "@type": "Dataset",
            "hasPolicy": [offer],
            "distribution": [{
                "@type": "Distribution",
                "format": "HttpData-PULL",
                "accessService": {
                    "@id": "urn:plain:service",
                    "@type": "DataService",
                    "endpointURL": "https://localhost",
                },
            }],
        }))
    }

    fn answer(path: &str, message: &Json) -> (u16, Json) {
        let negotiation = |consumer_pid: &Json, state: &str| {
            json!({
                "@context": [CONTEXT],
                "@type": "ContractNegotiation",
                "providerPid": PLAIN_PID,
                "consumerPid": consumer_pid,
                "state": state,
            })
        };
        let answer = if let Some(product) = path.strip_prefix("/catalog/datasets/") {
            match Self::dataset(product) {
                Some(d) => (200, d),
                None => (404, json!({})),
            }
        } else if path == "/negotiations/request" {
            (201, negotiation(&message["consumerPid"], "REQUESTED"))
        } else if path == format!("/negotiations/{PLAIN_PID}") {
            (200, negotiation(&json!("urn:uuid:unknown"), "REQUESTED"))
        } else {
            (200, json!({}))
        };
        if answer.1.get("@type").is_some() {
            assert_valid(&answer.1);
        }
        answer
    }

    fn url(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }

    /// Every message the consumer sent, each valid against the 2025-1 schemas.
    fn received(&self) -> Vec<(String, Json)> {
        let got = self.got.lock().unwrap().clone();
        for (_, message) in &got {
            assert_valid(message);
        }
        got
    }

    /// The message the consumer sent to `path`, waiting for it (bounded).
    async fn wait_for(&self, path: &str) -> Json {
        let arrived = wait_until(WAIT, || async {
            self.received().iter().any(|(p, _)| p == path)
        })
        .await;
        assert!(arrived, "nothing at {path}: {:?}", self.received());
        self.received()
            .into_iter()
            .find(|(p, _)| p == path)
            .unwrap()
            .1
    }
}

fn with_dsp(config: &mut NodeConfig) {
    config.dsp = Some(DspSection {
        listen: "127.0.0.1:0".parse().unwrap(),
        url: None,
    });
}

/// A member's certificate (a member of the data space, not running a node).
fn member(space: &DataSpace, id: &str) -> TlsIdentity {
    let mut admission = DataSpace::admission(id, id, ParticipantKind::Enterprise);
    admission.roles = ROLES.to_vec();
    let bundle = space.admit(admission);
    space.identity_of(&bundle)
}

/// The consumer node, the plain provider (another member), and the negotiation the
/// node started with it for one of its datasets (REQUESTED there).
struct Fixture {
    _space: DataSpace,
    consumer: TestNode,
    plain: PlainProvider,
    plain_identity: TlsIdentity,
    negotiation: String,
    product: &'static str,
}

impl Fixture {
    async fn start(product: &'static str) -> Self {
        let space = DataSpace::start().await;
        let consumer = space.node_with(ECOLOGY, "ecology", ROLES, with_dsp).await;
        let plain_identity = member(&space, LOGISTICS);
        refresh_all(&[&consumer]).await;
        let plain = PlainProvider::start(&plain_identity, &consumer.roots()).await;
        let c = consumer
            .admin(LocalRole::Admin)
            .await
            .request_contract(RequestContractRequest {
                peer: plain.url(),
                offer_id: format!("{product}/v1"),
                purpose: "research".into(),
            })
            .await
            .expect("requested")
            .into_inner();
        assert_eq!(c.state, "REQUESTED", "{c:?}");
        Self {
            _space: space,
            consumer,
            plain,
            plain_identity,
            negotiation: c.negotiation_id,
            product,
        }
    }

    /// A raw client of the consumer node's DSP listener, as the plain provider.
    fn client(&self) -> Client {
        Client::new(
            self.consumer.running.dsp_addr().unwrap(),
            Some(&self.plain_identity),
            self.consumer.roots(),
        )
    }

    fn message(&self, ty: &str) -> Json {
        json!({
            "@context": [CONTEXT],
            "@type": ty,
            "providerPid": PLAIN_PID,
            "consumerPid": self.negotiation,
        })
    }

    /// The plain provider's agreement message: its ODRL agreement, no Liutong
    /// envelope; `permission` as given.
    fn agreement(&self, permission: Json) -> Json {
        let mut m = self.message("ContractAgreementMessage");
        m["agreement"] = json!({
            "@id": PLAIN_AGREEMENT,
            "@type": "Agreement",
            "target": format!("urn:liutong:product:{}", self.product),
            "assigner": format!("urn:uscc:{LOGISTICS}"),
            "assignee": format!("urn:uscc:{ECOLOGY}"),
            "timestamp": "2026-01-01T00:00:00Z",
            "permission": permission,
        });
        assert_valid(&m);
        m
    }

    /// The research-only permission the offer carries.
    fn research() -> Json {
        json!([{
            "action": "use",
            "constraint": [{
                "leftOperand": "purpose",
                "operator": "isA",
                "rightOperand": "research",
            }],
        }])
    }

    async fn contract(&self) -> liutong_proto::v1::Contract {
        self.consumer
            .admin(LocalRole::Admin)
            .await
            .get_contract(GetContractRequest {
                negotiation_id: self.negotiation.clone(),
            })
            .await
            .expect("the contract")
            .into_inner()
    }

    async fn wait_for_state(&self, state: &str) -> liutong_proto::v1::Contract {
        let reached = wait_until(WAIT, || async { self.contract().await.state == state }).await;
        let c = self.contract().await;
        assert!(reached, "not {state}: {c:?}");
        c
    }

    /// The plain provider's agreement, taken; then its FINALIZED event.
    async fn agree(&self) -> liutong_proto::v1::Contract {
        let client = self.client();
        let n = &self.negotiation;
        let answer = client
            .post(
                &format!("/negotiations/{n}/agreement"),
                &self.agreement(Self::research()),
            )
            .await;
        assert_eq!(answer.status, 200, "{answer:?}");
        self.plain
            .wait_for(&format!("/negotiations/{PLAIN_PID}/agreement/verification"))
            .await;
        let mut finalized = self.message("ContractNegotiationEventMessage");
        finalized["eventType"] = "FINALIZED".into();
        assert_valid(&finalized);
        let answer = client
            .post(&format!("/negotiations/{n}/events"), &finalized)
            .await;
        assert_eq!(answer.status, 200, "{answer:?}");
        self.wait_for_state("FINALIZED").await
    }
}

#[track_caller]
fn assert_error(answer: &dsp::Answer, status: u16, words: &str) {
    assert_eq!(answer.status, status, "{answer:?}");
    let error = answer.message();
    assert_valid(&error);
    let reason = error["reason"].to_string();
    assert!(reason.contains(words), "{words:?} not in {reason}");
}

// ---- CN_C: contract negotiation with a plain provider ----

/// CN_C:01-01 (the provider agrees, the consumer verifies, the provider finalizes),
/// with an agreement the provider did not sign.
#[tokio::test]
async fn cn_c_01_01_a_plain_agreement_is_recorded_as_not_signed_by_the_provider() {
    let f = Fixture::start(OPEN).await;
    let c = f.agree().await;
    assert!(c.reason.contains("not signed by the provider"), "{c:?}");
    assert!(!c.agreement_id.is_empty(), "{c:?}");
    let envelope: liutong_node::identity::Envelope =
        serde_json::from_str(&c.agreement_json).unwrap();
    // The consumer's own signature only.
    assert_eq!(envelope.signatures.len(), 1, "{envelope:?}");
    envelope
        .verify(&f.consumer.running.node.identity.signing_key.public_key())
        .expect("signed by the consumer");
    let agreement: liutong_node::contract::Agreement = envelope.peek_json().unwrap();
    assert_eq!(agreement.policy["@id"], PLAIN_AGREEMENT);
    assert_eq!(agreement.classification.as_str(), "general-2");

    // The verification the spec asks for, with no Liutong envelope to countersign.
    let got = f.plain.received();
    let (_, verification) = got
        .iter()
        .find(|(p, _)| *p == format!("/negotiations/{PLAIN_PID}/agreement/verification"))
        .unwrap();
    assert_eq!(
        verification["@type"],
        "ContractAgreementVerificationMessage"
    );
    assert_eq!(verification["consumerPid"], f.negotiation.as_str());
    assert!(verification.get("lt:agreement").is_none(), "{verification}");

    let audit = f.consumer.audit_texts().join("\n");
    assert!(
        audit.contains(&format!(
            "negotiation {} REQUESTED → VERIFIED (Consumer side): not signed by the provider",
            f.negotiation
        )),
        "{audit}"
    );
    assert!(
        audit.contains(&format!(
            "negotiation {} VERIFIED → FINALIZED (Consumer side): not signed by the provider",
            f.negotiation
        )),
        "{audit}"
    );

    // The same agreement again is answered as the first time (a provider's retry).
    let again = f
        .client()
        .post(
            &format!("/negotiations/{}/agreement", f.negotiation),
            &f.agreement(Fixture::research()),
        )
        .await;
    assert_eq!(again.status, 200, "{again:?}");
}

/// CN_C:01-01 with important data: a plain agreement cannot cover it; the consumer
/// ends the negotiation and tells the provider why.
#[tokio::test]
async fn cn_c_important_data_under_a_plain_agreement_is_refused_with_a_termination() {
    let f = Fixture::start(IMPORTANT).await;
    let answer = f
        .client()
        .post(
            &format!("/negotiations/{}/agreement", f.negotiation),
            &f.agreement(Fixture::research()),
        )
        .await;
    assert_error(
        &answer,
        400,
        "important data is taken only under an agreement signed",
    );
    let c = f.contract().await;
    assert_eq!(c.state, "TERMINATED", "{c:?}");
    assert!(c.agreement_id.is_empty(), "no agreement is kept: {c:?}");
    assert!(c.reason.contains("important"), "{c:?}");
    let end = f
        .plain
        .wait_for(&format!("/negotiations/{PLAIN_PID}/termination"))
        .await;
    assert_eq!(end["@type"], "ContractNegotiationTerminationMessage");
    assert!(end["reason"].to_string().contains("important"), "{end}");
}

/// CN_C:01-01 with a policy this node cannot read: the negotiation ends, named.
#[tokio::test]
async fn cn_c_an_unreadable_plain_policy_is_refused_with_a_termination() {
    let f = Fixture::start(OPEN).await;
    let unreadable = json!([{
        "action": "use",
        "constraint": [{
            "leftOperand": "https://w3id.org/edc/v0.0.1/ns/inForceDate",
            "operator": "gteq",
            "rightOperand": "contractAgreement+0s",
        }],
    }]);
    let answer = f
        .client()
        .post(
            &format!("/negotiations/{}/agreement", f.negotiation),
            &f.agreement(unreadable),
        )
        .await;
    assert_error(&answer, 400, "cannot be read or enforced");
    let c = f.contract().await;
    assert_eq!(c.state, "TERMINATED", "{c:?}");
    assert!(c.reason.contains("cannot be read or enforced"), "{c:?}");
    let end = f
        .plain
        .wait_for(&format!("/negotiations/{PLAIN_PID}/termination"))
        .await;
    assert!(
        end["reason"].to_string().contains("cannot be read"),
        "{end}"
    );
    let audit = f.consumer.audit_texts().join("\n");
    assert!(audit.contains("cannot be read or enforced"), "{audit}");
}

/// An agreement that grants more than the offer, or names other parties or another
/// dataset, is refused the same way.
#[tokio::test]
async fn cn_c_a_plain_agreement_wider_than_the_offer_is_refused() {
    let f = Fixture::start(OPEN).await;
    let answer = f
        .client()
        .post(
            &format!("/negotiations/{}/agreement", f.negotiation),
            &f.agreement(json!([{"action": "use"}])),
        )
        .await;
    assert_error(&answer, 400, "grants more than the offer");
    assert_eq!(f.contract().await.state, "TERMINATED");
}

/// A dataset the provider's catalog does not classify is taken as general data.
#[tokio::test]
async fn cn_c_an_unclassified_dataset_is_agreed_as_general_data() {
    let f = Fixture::start(UNCLASSIFIED).await;
    let c = f.agree().await;
    let envelope: liutong_node::identity::Envelope =
        serde_json::from_str(&c.agreement_json).unwrap();
    let agreement: liutong_node::contract::Agreement = envelope.peek_json().unwrap();
    assert_eq!(agreement.classification.as_str(), "general-3");
}

/// CN_C:02-01 shape after the agreement: the provider ends a VERIFIED negotiation.
#[tokio::test]
async fn cn_c_02_01_the_plain_provider_terminates_after_its_agreement() {
    let f = Fixture::start(OPEN).await;
    let client = f.client();
    let n = &f.negotiation;
    let answer = client
        .post(
            &format!("/negotiations/{n}/agreement"),
            &f.agreement(Fixture::research()),
        )
        .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    f.wait_for_state("VERIFIED").await;
    let mut end = f.message("ContractNegotiationTerminationMessage");
    end["code"] = "provider.withdrawn".into();
    end["reason"] = json!(["the dataset was withdrawn"]);
    assert_valid(&end);
    let answer = client
        .post(&format!("/negotiations/{n}/termination"), &end)
        .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let c = f.contract().await;
    assert_eq!(c.state, "TERMINATED", "{c:?}");
    assert!(c.reason.contains("withdrawn"), "{c:?}");
}
