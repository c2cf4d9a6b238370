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
use liutong_proto::v1::{
    GetContractRequest, PullTransferRequest, RequestContractRequest, TransferProgress,
};
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

/// The plain provider's transfer process ID, its data path and its token.
const PLAIN_TP: &str = "urn:uuid:plain-transfer-1";
const DATA_PATH: &str = "/data/tp-1";
const TOKEN: &str = "tok-plain-7f3a";

/// How the plain provider serves its transfer.
#[derive(Clone, Default)]
struct Serving {
    payload: Vec<u8>,
    /// The endpoint its start message names (`None`: its own data path on the host
    /// the consumer reached it at).
    endpoint: Option<String>,
    /// The first download from the start is cut after this many bytes.
    cut_after: Option<usize>,
    /// The size its answer states (`None`: the payload's).
    stated: Option<u64>,
    /// Its data endpoint answers 503.
    failing: bool,
}

type Body = http_body_util::combinators::BoxBody<bytes::Bytes, std::io::Error>;

fn full(bytes: impl Into<bytes::Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// What the plain provider shares between its connections.
#[derive(Default)]
struct Shared {
    /// Every message it got (path, body).
    got: Mutex<Vec<(String, Json)>>,
    serving: Mutex<Serving>,
    /// A client of the consumer's DSP listener with the provider's certificate, to
    /// send its start messages.
    caller: Mutex<Option<Client>>,
    /// The `Range` header of each data download (`None`: no range).
    downloads: Mutex<Vec<Option<String>>>,
    /// The consumer's answers to its start messages (status).
    start_answers: Mutex<Vec<u16>>,
}

/// A plain DSP provider: raw HTTP over TLS with a member's certificate, answering from
/// its own tables. It shows its datasets, answers a contract request 201 (REQUESTED),
/// a transfer request 201 followed by a start message with an EDC-style data address,
/// serves its data with a bearer token and `Range`, and answers every other POST 200.
/// It keeps every message it gets.
struct PlainProvider {
    addr: std::net::SocketAddr,
    shared: Arc<Shared>,
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
        let shared: Arc<Shared> = Arc::default();
        let kept = shared.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, shared) = (acceptor.clone(), kept.clone());
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(
                        move |request: http::Request<hyper::body::Incoming>| {
                            let shared = shared.clone();
                            async move {
                                Ok::<_, std::convert::Infallible>(
                                    Self::serve(&shared, addr.port(), request).await,
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
        Self { addr, shared, task }
    }

    async fn serve(
        shared: &Arc<Shared>,
        port: u16,
        request: http::Request<hyper::body::Incoming>,
    ) -> http::Response<Body> {
        let path = request.uri().path().to_owned();
        if request.method() == http::Method::GET && path == DATA_PATH {
            return Self::data(shared, &request);
        }
        let body = request.into_body().collect().await.unwrap().to_bytes();
        let json: Json = serde_json::from_slice(&body).unwrap_or(Json::Null);
        if !json.is_null() {
            shared
                .got
                .lock()
                .unwrap()
                .push((path.clone(), json.clone()));
        }
        let (status, answer) = Self::answer(&path, &json);
        let starts = path == "/transfers/request" || path == format!("/transfers/{PLAIN_TP}/start");
        if starts {
            let consumer_pid = json["consumerPid"].as_str().unwrap_or_default().to_owned();
            let shared = shared.clone();
            tokio::spawn(async move { Self::send_start(&shared, port, &consumer_pid).await });
        }
        http::Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(full(serde_json::to_vec(&answer).unwrap()))
            .unwrap()
    }

    /// Its start message, with an EDC-style data address, to the consumer's callback.
    async fn send_start(shared: &Arc<Shared>, port: u16, consumer_pid: &str) {
        let endpoint = shared
            .serving
            .lock()
            .unwrap()
            .endpoint
            .clone()
            .unwrap_or_else(|| format!("https://localhost:{port}{DATA_PATH}"));
        let property = |name: &str, value: &str| {
            json!({
                "@type": "EndpointProperty",
                "name": format!("https://w3id.org/edc/v0.0.1/ns/{name}"),
                "value": value,
            })
        };
        let start = json!({
            "@context": [CONTEXT],
            "@type": "TransferStartMessage",
            "providerPid": PLAIN_TP,
            "consumerPid": consumer_pid,
            "dataAddress": {
                "@type": "DataAddress",
                "endpointType": "https://w3id.org/idsa/v4.1/HTTP",
                "endpoint": endpoint,
                "endpointProperties": [
                    property("authorization", TOKEN),
                    property("authType", "bearer"),
                ],
            },
        });
        assert_valid(&start);
        let caller = shared.caller.lock().unwrap().clone().expect("a caller");
        let answer = caller
            .post(&format!("/callback/transfers/{consumer_pid}/start"), &start)
            .await;
        shared.start_answers.lock().unwrap().push(answer.status);
    }

    /// Its data: the bearer token required, `Range` honoured, the first download cut
    /// when it is told to.
    fn data(
        shared: &Arc<Shared>,
        request: &http::Request<hyper::body::Incoming>,
    ) -> http::Response<Body> {
        let header = |name: http::header::HeaderName| {
            request
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let range = header(http::header::RANGE);
        shared.downloads.lock().unwrap().push(range.clone());
        let mut serving = shared.serving.lock().unwrap();
        let refuse = |status: u16| {
            http::Response::builder()
                .status(status)
                .body(full(bytes::Bytes::new()))
                .unwrap()
        };
        if header(http::header::AUTHORIZATION).as_deref() != Some(&format!("Bearer {TOKEN}")) {
            return refuse(401);
        }
        if serving.failing {
            return refuse(503);
        }
        let payload = serving.payload.clone();
        let total = serving.stated.unwrap_or(payload.len() as u64);
        let from = range
            .as_deref()
            .and_then(|r| r.strip_prefix("bytes="))
            .and_then(|r| r.strip_suffix('-'))
            .map(|r| r.parse::<usize>().unwrap());
        let mut response = http::Response::builder();
        let body = match from {
            None => {
                response = response
                    .status(200)
                    .header(http::header::CONTENT_LENGTH, total.to_string());
                payload
            }
            Some(from) => {
                response = response
                    .status(206)
                    .header(
                        http::header::CONTENT_LENGTH,
                        (total - from as u64).to_string(),
                    )
                    .header(
                        http::header::CONTENT_RANGE,
                        format!("bytes {from}-{}/{total}", total - 1),
                    );
                payload[from..].to_vec()
            }
        };
        // A cut: the bytes up to the cut, then the connection fails.
        let cut = if from.is_none() {
            serving.cut_after.take()
        } else {
            None
        };
        let keep = cut.unwrap_or(body.len()).min(body.len());
        let mut frames = vec![Ok(hyper::body::Frame::data(bytes::Bytes::from(
            body[..keep].to_vec(),
        )))];
        if cut.is_some() {
            frames.push(Err(std::io::Error::other("cut")));
        }
        // Stating more than it has, it sends what it has and then nothing: the answer
        // stays open until the consumer hangs up.
        let stream =
            tokio_stream::StreamExt::chain(tokio_stream::iter(frames), tokio_stream::pending());
        response
            .body(http_body_util::StreamBody::new(stream).boxed())
            .unwrap()
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
        } else if path == "/transfers/request" {
            (
                201,
                json!({
                    "@context": [CONTEXT],
                    "@type": "TransferProcess",
                    "providerPid": PLAIN_TP,
                    "consumerPid": message["consumerPid"],
                    "state": "REQUESTED",
                }),
            )
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

    fn serve_with(&self, change: impl FnOnce(&mut Serving)) {
        change(&mut self.shared.serving.lock().unwrap());
    }

    fn downloads(&self) -> Vec<Option<String>> {
        self.shared.downloads.lock().unwrap().clone()
    }

    fn start_answers(&self) -> Vec<u16> {
        self.shared.start_answers.lock().unwrap().clone()
    }

    /// Every message the consumer sent, each valid against the 2025-1 schemas.
    fn received(&self) -> Vec<(String, Json)> {
        let got = self.shared.got.lock().unwrap().clone();
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
    config.dsp = Some(DspSection::on("127.0.0.1:0".parse().unwrap()));
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
        *plain.shared.caller.lock().unwrap() = Some(Client::new(
            consumer.running.dsp_addr().unwrap(),
            Some(&plain_identity),
            consumer.roots(),
        ));
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

impl Fixture {
    /// Pulls the agreement's copy from the plain provider through the consumer's admin
    /// API, at most `max_chunks` chunks (0: all); the last progress, or the refusal.
    async fn pull(&self, agreement: &str, max_chunks: u32) -> Result<TransferProgress, String> {
        use tokio_stream::StreamExt as _;
        let mut stream = self
            .consumer
            .admin(LocalRole::Admin)
            .await
            .pull_transfer(PullTransferRequest {
                agreement_id: agreement.to_owned(),
                max_chunks,
                peer: self.plain.url(),
            })
            .await
            .map_err(|s| s.message().to_owned())?
            .into_inner();
        let mut last = None;
        while let Some(item) = stream.next().await {
            last = Some(item.map_err(|s| s.message().to_owned())?);
        }
        last.ok_or_else(|| "no progress".to_owned())
    }

    fn storage(&self) -> &dyn liutong_node::storage::Storage {
        self.consumer.running.node.storage.as_ref()
    }

    fn transfers(&self) -> Vec<liutong_node::dsp::pull::ConsumerTransfer> {
        liutong_node::dsp::pull::consumer_transfers(self.storage()).unwrap()
    }

    /// The bytes of the agreement's copy, read back (opened) chunk by chunk.
    fn copy_bytes(&self, agreement: &str) -> Vec<u8> {
        let copy = liutong_node::transfer::copy(self.storage(), agreement)
            .unwrap()
            .expect("a copy");
        let mut bytes = Vec::new();
        for i in 0..copy.chunks_received {
            bytes.extend(
                liutong_node::transfer::copy_chunk(self.storage(), agreement, i)
                    .unwrap()
                    .expect("the chunk"),
            );
        }
        bytes
    }
}

/// Reads the agreement's copy through the consumer's usage API for `purpose`.
async fn read(f: &Fixture, agreement: &str, purpose: &str) -> Result<Vec<u8>, tonic::Status> {
    use liutong_proto::v1::read_response::Part;
    use tokio_stream::StreamExt as _;
    let mut stream = f
        .consumer
        .usage(LocalRole::App)
        .await
        .read(liutong_proto::v1::ReadRequest {
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

/// Runs the `liutong` CLI with `config`: whether it succeeded, its stdout and stderr.
async fn liutong(args: &[&str], config: &std::path::Path) -> (bool, String, String) {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let config = config.to_owned();
    // Off the runtime: the node the command talks to runs on it.
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

/// A payload of `len` bytes, rows of text.
fn payload(len: usize) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(len + 64);
    let mut row = 0u64;
    while bytes.len() < len {
        bytes.extend_from_slice(
            format!("{row},station-{},{}\n", row % 97, row * 31 % 1000).as_bytes(),
        );
        row += 1;
    }
    bytes.truncate(len);
    bytes
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
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

// ---- TP_C: transfers from a plain provider ----

const MIB: usize = 1 << 20;

/// TP_C:01-01 (request, start, pull, completion) with a cut and a resume: the copy of
/// an agreement the provider did not sign is hashed whole as it arrives, sealed, and
/// recorded as unverified; the cut pull resumes with `Range` from the first chunk not
/// on record; the completion carries the consumer's signed receipt of the SHA-256.
#[tokio::test]
async fn tp_c_01_01_a_cut_pull_resumes_with_range_and_the_copy_is_unverified() {
    let f = Fixture::start(OPEN).await;
    let c = f.agree().await;
    let bytes = payload(2 * MIB + MIB / 2);
    f.plain.serve_with(|s| {
        s.payload = bytes.clone();
        s.cut_after = Some(MIB + MIB / 2);
    });
    let cut = f.pull(&c.agreement_id, 0).await;
    assert!(cut.is_err(), "{cut:?}");
    let request = f.plain.wait_for("/transfers/request").await;
    assert_eq!(request["@type"], "TransferRequestMessage");
    assert_eq!(
        request["agreementId"], PLAIN_AGREEMENT,
        "the provider's own agreement ID"
    );
    assert_eq!(request["format"], "HttpData-PULL");
    let kept = liutong_node::transfer::copy(f.storage(), &c.agreement_id)
        .unwrap()
        .expect("the first chunk is on record");
    assert_eq!(kept.chunks_received, 1, "{kept:?}");

    let done = f.pull(&c.agreement_id, 0).await.expect("resumed");
    assert_eq!(done.state, "COMPLETED", "{done:?}");
    assert_eq!(done.bytes_total, bytes.len() as u64);
    assert_eq!(done.sha256, sha256_hex(&bytes));
    assert!(
        done.reason
            .contains("unverified: the provider signed no chunk list"),
        "{done:?}"
    );
    assert_eq!(
        f.plain.downloads(),
        vec![None, Some(format!("bytes={MIB}-"))],
        "the resume asked for the bytes after the first chunk"
    );
    assert_eq!(f.copy_bytes(&c.agreement_id), bytes);

    let completion = f
        .plain
        .wait_for(&format!("/transfers/{PLAIN_TP}/completion"))
        .await;
    assert_eq!(completion["@type"], "TransferCompletionMessage");
    let receipt: liutong_node::identity::Envelope =
        serde_json::from_value(completion["lt:receipt"].clone()).unwrap();
    receipt
        .verify(&f.consumer.running.node.identity.signing_key.public_key())
        .expect("the consumer's signed receipt");
    let signed: Json = receipt.peek_json().unwrap();
    assert_eq!(signed["sha256"], sha256_hex(&bytes));
    assert_eq!(signed["size"], bytes.len());
    assert_eq!(f.transfers()[0].state.as_str(), "COMPLETED");

    // The copy is used under the plain agreement's policy, as any copy is.
    let used = read(&f, &c.agreement_id, "research")
        .await
        .expect("read for research");
    assert!(used == bytes, "the copy reads back as it arrived");
    let refused = read(&f, &c.agreement_id, "marketing").await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");

    // The CLI says what the copy and its agreement are.
    let config = f.consumer.config_path();
    let (ok, out, err) = liutong(
        &[
            "transfer",
            "pull",
            "--agreement",
            &c.agreement_id,
            "--peer",
            &f.plain.url(),
        ],
        &config,
    )
    .await;
    assert!(ok, "{err}");
    assert!(
        out.contains("unverified: the provider signed no chunk list")
            && !out.contains("every chunk verified"),
        "{out}"
    );
    let (ok, out, err) = liutong(&["contract", "show", &c.agreement_id], &config).await;
    assert!(ok, "{err}");
    assert!(out.contains("not signed by the provider"), "{out}");

    let audit = f.consumer.audit_texts().join("\n");
    assert!(
        audit.contains(&format!(
            "transfer COMPLETED, unverified: the provider signed no chunk list: {} bytes received, sha256 {}",
            bytes.len(),
            sha256_hex(&bytes)
        )),
        "{audit}"
    );
}

/// TP_C:02 shapes from the consumer's side: a pull stopped after a chunk suspends the
/// transfer at the provider; the next pull restarts it (the provider's new start
/// message) and resumes with `Range` from the first chunk not on record.
#[tokio::test]
async fn tp_c_02_a_stopped_pull_suspends_and_the_next_restarts_and_resumes() {
    let f = Fixture::start(OPEN).await;
    let c = f.agree().await;
    let bytes = payload(2 * MIB + 10);
    f.plain.serve_with(|s| s.payload = bytes.clone());
    let first = f.pull(&c.agreement_id, 1).await.expect("one chunk");
    assert_eq!(
        (first.chunks_received, first.chunks_total),
        (1, 3),
        "{first:?}"
    );
    let suspension = f
        .plain
        .wait_for(&format!("/transfers/{PLAIN_TP}/suspension"))
        .await;
    assert_eq!(suspension["@type"], "TransferSuspensionMessage");
    assert_eq!(f.transfers()[0].state.as_str(), "SUSPENDED");

    let done = f.pull(&c.agreement_id, 0).await.expect("resumed");
    assert_eq!(done.state, "COMPLETED", "{done:?}");
    assert_eq!(done.sha256, sha256_hex(&bytes));
    let restart = f
        .plain
        .wait_for(&format!("/transfers/{PLAIN_TP}/start"))
        .await;
    assert_eq!(restart["@type"], "TransferStartMessage");
    assert_eq!(
        f.plain.downloads(),
        vec![None, Some(format!("bytes={MIB}-"))]
    );
    assert_eq!(f.copy_bytes(&c.agreement_id), bytes);
}

/// TP_C:02 shapes: the provider suspends, then terminates, a transfer the consumer
/// holds STARTED; each reaches the consumer's record with its reason.
#[tokio::test]
async fn tp_c_02_the_plain_provider_suspends_then_terminates_a_transfer() {
    let f = Fixture::start(OPEN).await;
    let c = f.agree().await;
    f.plain.serve_with(|s| {
        s.payload = payload(1000);
        s.failing = true;
    });
    let refused = f.pull(&c.agreement_id, 0).await.unwrap_err();
    assert!(refused.contains("503"), "{refused}");
    let t = &f.transfers()[0];
    assert_eq!(t.state.as_str(), "STARTED", "{t:?}");
    let cpid = t.consumer_pid.clone();
    let client = f.client();
    let message = |ty: &str, reason: &str| {
        let m = json!({
            "@context": [CONTEXT],
            "@type": ty,
            "providerPid": PLAIN_TP,
            "consumerPid": cpid,
            "code": "provider.maintenance",
            "reason": [reason],
        });
        assert_valid(&m);
        m
    };
    let answer = client
        .post(
            &format!("/callback/transfers/{cpid}/suspension"),
            &message("TransferSuspensionMessage", "storage maintenance"),
        )
        .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let t = &f.transfers()[0];
    assert_eq!(t.state.as_str(), "SUSPENDED", "{t:?}");
    assert!(t.reason.contains("maintenance"), "{t:?}");
    let answer = client
        .post(
            &format!("/callback/transfers/{cpid}/termination"),
            &message("TransferTerminationMessage", "dataset withdrawn"),
        )
        .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let t = &f.transfers()[0];
    assert_eq!(t.state.as_str(), "TERMINATED", "{t:?}");
    assert!(t.reason.contains("withdrawn"), "{t:?}");
}

/// TP_C:01 with a hostile data address: one on another host, or plain `http://`, is
/// refused (400 to the start message), the transfer ended and recorded with the
/// reason, in the audit log, and nothing fetched or written.
#[tokio::test]
async fn tp_c_a_data_address_on_another_host_or_plain_http_is_refused() {
    for (endpoint, words) in [
        (
            "https://127.0.0.1:{port}/data/tp-1",
            "names host 127.0.0.1, not localhost",
        ),
        (
            "http://localhost:{port}/data/tp-1",
            "is not an https:// URL",
        ),
    ] {
        let f = Fixture::start(OPEN).await;
        let c = f.agree().await;
        let endpoint = endpoint.replace("{port}", &f.plain.addr.port().to_string());
        f.plain.serve_with(|s| {
            s.payload = payload(1000);
            s.endpoint = Some(endpoint.clone());
        });
        let refused = f.pull(&c.agreement_id, 0).await.unwrap_err();
        assert!(refused.contains(words), "{refused}");
        let answered = wait_until(WAIT, || async { !f.plain.start_answers().is_empty() }).await;
        assert!(answered);
        assert_eq!(f.plain.start_answers(), vec![400]);
        let t = &f.transfers()[0];
        assert_eq!(t.state.as_str(), "TERMINATED", "{t:?}");
        assert!(t.reason.contains(words), "{t:?}");
        assert!(t.endpoint.is_none() && t.token.is_none(), "{t:?}");
        assert!(f.plain.downloads().is_empty(), "nothing was fetched");
        assert!(
            liutong_node::transfer::copy(f.storage(), &c.agreement_id)
                .unwrap()
                .is_none(),
            "nothing was written"
        );
        let audit = f.consumer.audit_texts().join("\n");
        assert!(
            audit.contains(&format!("transfer {} TERMINATED", t.consumer_pid))
                && audit.contains(words),
            "{audit}"
        );
    }
}

/// A payload larger than the node takes from a provider that signed no chunk list is
/// refused from the size the provider states, before any byte is kept.
#[tokio::test]
async fn tp_c_an_oversized_payload_is_refused_before_anything_is_kept() {
    let f = Fixture::start(OPEN).await;
    let c = f.agree().await;
    f.plain.serve_with(|s| {
        s.payload = payload(1000);
        s.stated = Some(liutong_node::transfer::MAX_UNVERIFIED_BYTES + 1);
    });
    let refused = f.pull(&c.agreement_id, 0).await.unwrap_err();
    assert!(
        refused.contains(&format!(
            "this node takes at most {} bytes",
            liutong_node::transfer::MAX_UNVERIFIED_BYTES
        )),
        "{refused}"
    );
    assert!(
        liutong_node::transfer::copy(f.storage(), &c.agreement_id)
            .unwrap()
            .is_none(),
        "nothing was written"
    );
}
