//! Dataspace Protocol 2025-1 for tests: an offline validator of messages against the
//! protocol's JSON Schemas (copied beside this file, see README.md), and a raw HTTPS
//! client, as the protocol's compatibility kit uses, over real TLS on loopback.
#![allow(dead_code)] // each DSP test file uses a different part of this

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use liutong_node::tls::{self, ExpectedServer, TlsIdentity};
use rustls::pki_types::ServerName;
use serde_json::Value as Json;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// The DSP 2025-1 context every message names.
pub const CONTEXT: &str = "https://w3id.org/dspace/2025/1/context.jsonld";
/// How long a request may go unanswered before the client gives up, so that a test
/// against a node that stopped answering ends by itself.
pub const ANSWER_WITHIN: std::time::Duration = std::time::Duration::from_secs(30);
/// How long a callback may take to arrive.
pub const CALLBACK_WITHIN: std::time::Duration = std::time::Duration::from_secs(20);

/// Where the schemas' `$id`s live.
const BASE: &str = "https://w3id.org/dspace/2025/1/";

/// The copied schemas folder.
pub fn schemas_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dsp/schemas")
}

/// Every file under `dir` with the extension `ext`, sorted.
pub fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files(&path, ext));
        } else if path.extension().is_some_and(|e| e == ext) {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// A schema file's JSON, with the one JSON pointer written without its leading `/`
/// (`#definitions/…`) read as the pointer it means.
fn load_schema(path: &Path) -> Json {
    let text = std::fs::read_to_string(path).unwrap();
    serde_json::from_str(&text.replace("#definitions/", "#/definitions/")).unwrap()
}

/// Validators by schema path relative to the schemas folder (e.g.
/// `catalog/catalog-schema.json`), all built against one offline registry of every
/// schema under its `$id`.
fn validators() -> &'static HashMap<String, jsonschema::Validator> {
    static VALIDATORS: OnceLock<HashMap<String, jsonschema::Validator>> = OnceLock::new();
    VALIDATORS.get_or_init(|| {
        let dir = schemas_dir();
        let schemas: Vec<(String, Json)> = files(&dir, "json")
            .into_iter()
            .filter(|p| p.to_string_lossy().ends_with("-schema.json"))
            .map(|p| {
                let relative = p.strip_prefix(&dir).unwrap().to_string_lossy().into_owned();
                let schema = load_schema(&p);
                assert_eq!(
                    schema["$id"].as_str(),
                    Some(format!("{BASE}{relative}").as_str()),
                    "{relative}: its $id names where it lies"
                );
                (relative, schema)
            })
            .collect();
        let registry: &'static jsonschema::Registry = Box::leak(Box::new(
            jsonschema::Registry::new()
                .extend(schemas.iter().map(|(relative, schema)| {
                    (
                        format!("{BASE}{relative}"),
                        jsonschema::Resource::from_contents(schema.clone()),
                    )
                }))
                .expect("schema IDs are URIs")
                .prepare()
                .expect("the schemas reference each other consistently"),
        ));
        schemas
            .into_iter()
            .map(|(relative, schema)| {
                let validator = jsonschema::options()
                    .with_draft(jsonschema::Draft::Draft201909)
                    .with_registry(registry)
                    .offline()
                    .build(&schema)
                    .unwrap_or_else(|e| panic!("{relative}: {e}"));
                (relative, validator)
            })
            .collect()
    })
}

/// The schema (relative path) a message is validated against, by its `@type`; the
/// version metadata has none and is known by `protocolVersions`.
pub fn schema_for(message: &Json) -> &'static str {
    if message.get("protocolVersions").is_some() {
        return "common/protocol-version-schema.json";
    }
    let ty = message["@type"]
        .as_str()
        .unwrap_or_else(|| panic!("a DSP message without @type: {message}"));
    match ty {
        "Catalog" => "catalog/catalog-schema.json",
        "Dataset" => "catalog/dataset-schema.json",
        "CatalogError" => "catalog/catalog-error-schema.json",
        "CatalogRequestMessage" => "catalog/catalog-request-message-schema.json",
        "DatasetRequestMessage" => "catalog/dataset-request-message-schema.json",
        "ContractRequestMessage" => "negotiation/contract-request-message-schema.json",
        "ContractOfferMessage" => "negotiation/contract-offer-message-schema.json",
        "ContractAgreementMessage" => "negotiation/contract-agreement-message-schema.json",
        "ContractAgreementVerificationMessage" => {
            "negotiation/contract-agreement-verification-message-schema.json"
        }
        "ContractNegotiationEventMessage" => {
            "negotiation/contract-negotiation-event-message-schema.json"
        }
        "ContractNegotiationTerminationMessage" => {
            "negotiation/contract-negotiation-termination-message-schema.json"
        }
        "ContractNegotiation" => "negotiation/contract-negotiation-schema.json",
        "ContractNegotiationError" => "negotiation/contract-negotiation-error-schema.json",
        "TransferRequestMessage" => "transfer/transfer-request-message-schema.json",
        "TransferStartMessage" => "transfer/transfer-start-message-schema.json",
        "TransferCompletionMessage" => "transfer/transfer-completion-message-schema.json",
        "TransferSuspensionMessage" => "transfer/transfer-suspension-message-schema.json",
        "TransferTerminationMessage" => "transfer/transfer-termination-message-schema.json",
        "TransferProcess" => "transfer/transfer-process-schema.json",
        "TransferError" => "transfer/transfer-error-schema.json",
        other => panic!("no DSP 2025-1 schema for @type {other}"),
    }
}

/// The errors of `instance` against the schema at `schema` (relative path); empty when
/// it validates.
pub fn errors(schema: &str, instance: &Json) -> Vec<String> {
    let validator = validators()
        .get(schema)
        .unwrap_or_else(|| panic!("no schema {schema}"));
    validator
        .iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

/// Panics unless `message` validates against the schema of its type.
#[track_caller]
pub fn assert_valid(message: &Json) {
    let schema = schema_for(message);
    let errors = errors(schema, message);
    assert!(
        errors.is_empty(),
        "not a valid DSP 2025-1 message ({schema}):\n  {}\n{}",
        errors.join("\n  "),
        serde_json::to_string_pretty(message).unwrap()
    );
}

/// A `CatalogRequestMessage` with an empty filter.
pub fn catalog_request() -> Json {
    serde_json::json!({
        "@context": [CONTEXT],
        "@type": "CatalogRequestMessage",
        "filter": [],
    })
}

/// An HTTP answer.
pub struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Vec<u8>,
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Answer")
            .field("status", &self.status)
            .field("headers", &self.headers)
            // A payload is shown by its start only.
            .field(
                "body",
                &String::from_utf8_lossy(&self.body[..self.body.len().min(2048)]),
            )
            .finish()
    }
}

impl Answer {
    /// The body as JSON, which must be a valid DSP message of its type.
    #[track_caller]
    pub fn message(&self) -> Json {
        let json: Json = serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "the body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        });
        assert_valid(&json);
        json
    }

    /// The `Link` headers as (URL, rel).
    pub fn links(&self) -> Vec<(String, String)> {
        self.headers
            .get_all(http::header::LINK)
            .iter()
            .map(|v| {
                let text = v.to_str().expect("a Link header is text");
                let (url, rel) = text.split_once(';').expect("<url>; rel=\"…\"");
                let url = url.trim().trim_start_matches('<').trim_end_matches('>');
                let rel = rel
                    .trim()
                    .strip_prefix("rel=")
                    .expect("rel=")
                    .trim_matches('"');
                (url.to_owned(), rel.to_owned())
            })
            .collect()
    }

    /// The URL of the link with relation `rel`, if any.
    pub fn link(&self, rel: &str) -> Option<String> {
        self.links()
            .into_iter()
            .find(|(_, r)| r == rel)
            .map(|(url, _)| url)
    }
}

/// A raw HTTPS client of a node's DSP listener: HTTP/1.1 over TLS, presenting
/// `identity` as client certificate (or none) and checking that the server chains to
/// `roots` and names a participant.
#[derive(Clone)]
pub struct Client {
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
}

impl Client {
    pub fn new(
        addr: SocketAddr,
        identity: Option<&TlsIdentity>,
        roots: rustls::RootCertStore,
    ) -> Self {
        let config = tls::client_config(
            identity,
            roots,
            ExpectedServer::Member(Arc::new(|_, _| Ok(()))),
        )
        .expect("client config");
        let mut config = (*config).clone();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Self {
            addr,
            config: Arc::new(config),
        }
    }

    /// Sends one request on a connection of its own; the error is the TLS or HTTP
    /// failure, in words, or no answer within [`ANSWER_WITHIN`].
    pub async fn send(
        &self,
        method: &str,
        path_and_query: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Answer, String> {
        self.send_with(method, path_and_query, &[], body).await
    }

    /// [`send`](Self::send) with extra request headers.
    pub async fn send_with(
        &self,
        method: &str,
        path_and_query: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Result<Answer, String> {
        tokio::time::timeout(
            ANSWER_WITHIN,
            self.exchange(method, path_and_query, headers, body, usize::MAX),
        )
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {ANSWER_WITHIN:?}")))
    }

    /// A GET whose answer is cut off by the client once at least `keep` bytes of its
    /// body arrived (the connection is dropped): the body holds what arrived by then.
    pub async fn get_cut(&self, path: &str, headers: &[(&str, &str)], keep: usize) -> Answer {
        tokio::time::timeout(
            ANSWER_WITHIN,
            self.exchange("GET", path, headers, None, keep),
        )
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {ANSWER_WITHIN:?}")))
        .expect("an answer")
    }

    async fn exchange(
        &self,
        method: &str,
        path_and_query: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
        keep: usize,
    ) -> Result<Answer, String> {
        let tcp = TcpStream::connect(self.addr)
            .await
            .map_err(|e| e.to_string())?;
        let name = ServerName::try_from(self.addr.ip().to_string()).unwrap();
        let tls = TlsConnector::from(self.config.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| format!("HTTP: {e}"))?;
        let connection = tokio::spawn(connection);
        let mut request = http::Request::builder()
            .method(method)
            .uri(path_and_query)
            .header(http::header::HOST, self.addr.to_string());
        if body.is_some() {
            request = request.header(http::header::CONTENT_TYPE, "application/json");
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(Full::new(bytes::Bytes::from(body.unwrap_or_default())))
            .unwrap();
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("HTTP: {e}"))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let mut incoming = response.into_body();
        let mut body = Vec::new();
        while body.len() < keep {
            match incoming.frame().await {
                None => break,
                Some(frame) => {
                    let frame = frame.map_err(|e| format!("HTTP body: {e}"))?;
                    if let Ok(data) = frame.into_data() {
                        body.extend_from_slice(&data);
                    }
                }
            }
        }
        if keep != usize::MAX {
            // The cut: the connection goes, whatever was still coming.
            connection.abort();
        }
        Ok(Answer {
            status,
            headers,
            body,
        })
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.send("GET", path, None).await.expect("an answer")
    }

    pub async fn post(&self, path: &str, body: &Json) -> Answer {
        self.send("POST", path, Some(serde_json::to_vec(body).unwrap()))
            .await
            .expect("an answer")
    }

    /// The path and query of a link this listener gave (`https://host:port/p?q`).
    pub fn path_of(url: &str) -> String {
        let rest = url.strip_prefix("https://").expect("an https:// link");
        let at = rest.find('/').expect("a path");
        rest[at..].to_owned()
    }
}

/// A callback server: HTTPS with a member's certificate, answering 200 to every POST
/// and keeping what it got (path, body, whether the caller presented a certificate of
/// the provider).
pub struct Callbacks {
    pub addr: SocketAddr,
    got: Arc<Mutex<Vec<(String, Json)>>>,
    /// Whether messages are taken (otherwise answered 503), and how many came.
    pub accepting: Arc<AtomicBool>,
    pub attempts: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Callbacks {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Callbacks {
    pub async fn start(
        identity: &TlsIdentity,
        roots: &rustls::RootCertStore,
        caller: String,
    ) -> Self {
        let tls = liutong_node::dsp::tls_config(identity, roots).unwrap();
        let mut tls = (*tls).clone();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(tls));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let got: Arc<Mutex<Vec<(String, Json)>>> = Arc::default();
        let kept = got.clone();
        let accepting = Arc::new(AtomicBool::new(true));
        let attempts = Arc::new(AtomicUsize::new(0));
        let (open, counted) = (accepting.clone(), attempts.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                let kept = kept.clone();
                let caller = caller.clone();
                let (open, counted) = (open.clone(), counted.clone());
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(tcp).await else {
                        return;
                    };
                    // Only the provider's node, presenting its own certificate, calls.
                    let presented = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .map(|c| names_participant(c.as_ref(), &caller))
                        .unwrap_or(false);
                    let service = hyper::service::service_fn(
                        move |request: http::Request<hyper::body::Incoming>| {
                            let kept = kept.clone();
                            let (open, counted) = (open.clone(), counted.clone());
                            async move {
                                let path = request.uri().path().to_owned();
                                let body = request.into_body().collect().await.unwrap().to_bytes();
                                let json: Json =
                                    serde_json::from_slice(&body).unwrap_or(Json::Null);
                                counted.fetch_add(1, Ordering::SeqCst);
                                let taken = open.load(Ordering::SeqCst);
                                let status = match (presented, taken) {
                                    (false, _) => 401,
                                    (true, false) => 503,
                                    (true, true) => 200,
                                };
                                if status == 200 {
                                    kept.lock().unwrap().push((path, json));
                                }
                                Ok::<_, std::convert::Infallible>(
                                    http::Response::builder()
                                        .status(status)
                                        .body(Full::new(bytes::Bytes::new()))
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
        Self {
            addr,
            got,
            accepting,
            attempts,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("https://localhost:{}/callback", self.addr.port())
    }

    pub fn received(&self) -> Vec<(String, Json)> {
        self.got.lock().unwrap().clone()
    }

    /// The message received at `path`, waiting for it (bounded).
    pub async fn wait_for(&self, path: &str) -> Json {
        let deadline = tokio::time::Instant::now() + CALLBACK_WITHIN;
        let got = loop {
            if self.received().iter().any(|(p, _)| p == path) {
                break true;
            }
            if tokio::time::Instant::now() >= deadline {
                break false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        };
        assert!(got, "no callback at {path}; got {:?}", self.received());
        let message = self
            .received()
            .into_iter()
            .find(|(p, _)| p == path)
            .unwrap()
            .1;
        assert_valid(&message);
        message
    }
}

/// Whether a DER certificate's URI SAN names `participant` (`urn:uscc:…`).
fn names_participant(der: &[u8], participant: &str) -> bool {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return false;
    };
    san.value
        .general_names
        .iter()
        .any(|n| matches!(n, x509_parser::extensions::GeneralName::URI(u) if *u == participant))
}

/// A recording relay in front of a provider's DSP listener: it presents the provider's
/// certificate (so a consumer node calls it as it would the provider), keeps every JSON
/// message it is sent (path, body), and passes each request on to the provider with
/// the consumer's certificate, answering what the provider answered.
pub struct Relay {
    pub addr: SocketAddr,
    got: Arc<Mutex<Vec<(String, Json)>>>,
    /// Requests whose path ends with this are kept but answered 503 by the relay, not
    /// passed on (a provider that cannot take them now).
    holding: Arc<Mutex<Option<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Relay {
    pub async fn start(
        provider_identity: &TlsIdentity,
        provider: SocketAddr,
        consumer_identity: &TlsIdentity,
        roots: rustls::RootCertStore,
    ) -> Self {
        let tls = liutong_node::dsp::tls_config(provider_identity, &roots).unwrap();
        let mut tls = (*tls).clone();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(tls));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = Client::new(provider, Some(consumer_identity), roots);
        let got: Arc<Mutex<Vec<(String, Json)>>> = Arc::default();
        let kept = got.clone();
        let holding: Arc<Mutex<Option<String>>> = Arc::default();
        let held = holding.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, kept, client) = (acceptor.clone(), kept.clone(), client.clone());
                let held = held.clone();
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(
                        move |request: http::Request<hyper::body::Incoming>| {
                            let (kept, client) = (kept.clone(), client.clone());
                            let held = held.lock().unwrap().clone();
                            async move {
                                let method = request.method().as_str().to_owned();
                                let path = request
                                    .uri()
                                    .path_and_query()
                                    .map(|p| p.as_str().to_owned())
                                    .unwrap_or_default();
                                let body = request.into_body().collect().await.unwrap().to_bytes();
                                if let Ok(json) = serde_json::from_slice::<Json>(&body) {
                                    kept.lock().unwrap().push((path.clone(), json));
                                }
                                if held.is_some_and(|end| path.ends_with(&end)) {
                                    return Ok(http::Response::builder()
                                        .status(503)
                                        .body(Full::new(bytes::Bytes::from_static(
                                            b"held by the test relay",
                                        )))
                                        .unwrap());
                                }
                                let answer = client
                                    .send_with(
                                        &method,
                                        &path,
                                        &[],
                                        (!body.is_empty()).then(|| body.to_vec()),
                                    )
                                    .await;
                                let response = match answer {
                                    Ok(a) => http::Response::builder()
                                        .status(a.status)
                                        .header("content-type", "application/json")
                                        .body(Full::new(bytes::Bytes::from(a.body))),
                                    Err(e) => http::Response::builder()
                                        .status(502)
                                        .body(Full::new(bytes::Bytes::from(e))),
                                };
                                Ok::<_, std::convert::Infallible>(response.unwrap())
                            }
                        },
                    );
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            got,
            holding,
            task,
        }
    }

    /// Answers requests whose path ends with `end` 503 from now on (`None`: passes
    /// every request on again).
    pub fn hold(&self, end: Option<&str>) {
        *self.holding.lock().unwrap() = end.map(str::to_owned);
    }

    pub fn url(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }

    /// The messages it was sent, in order.
    pub fn received(&self) -> Vec<(String, Json)> {
        self.got.lock().unwrap().clone()
    }
}
