//! The contract negotiation protocol, consumer role: this node asks a provider's DSP
//! endpoint for a contract ([`DspConsumer`], the contract component's
//! [`ConsumerBinding`]) and takes the provider's messages at its callback address, its
//! own DSP base URL: `POST /negotiations/:consumerPid/offers`, `…/agreement`,
//! `…/events`, `…/termination`, and `POST /negotiations/offers`.
//!
//! Every decision is the contract component's, as for a provider reached over the peer
//! API: the request is signed (`lt:request`) and on record before it leaves; the
//! provider's agreement must be its signed envelope (`lt:agreement`), checked against
//! the request and the offer and countersigned, on record before the verification
//! (carrying it countersigned in `lt:agreement`) leaves. So the agreement is the same
//! dual-signed envelope as over gRPC, kept by the same component: `liutong contract
//! show` and transfers use it alike.
//!
//! Calls go to the provider over HTTPS presenting this node's certificate; the
//! provider's server certificate must chain to the data-space CA and name a current
//! member (its URI SAN), and for a known negotiation exactly its provider. A callback
//! is taken only from the negotiation's provider: for any other member the
//! negotiation does not exist (404).
//!
//! `…/events` and `…/termination` share their paths with the provider role's
//! endpoints (the provider's process ID there, the consumer's here): a message naming
//! a negotiation this node started with the caller as provider is taken here, any
//! other goes to the provider role (which answers 404 for one that is not the
//! caller's).
//!
//! A plain DSP provider (not a Liutong node) signs no envelope: its agreement message
//! carries only its ODRL `agreement`. That is taken as *not signed by the provider*
//! (recorded so, shown by `liutong contract show` and in the audit entries) for data
//! below important whose offer this node saw, when the policy engine can read and
//! enforce its policy and it only narrows the offer; the verification then carries no
//! envelope. Otherwise the negotiation ends and the provider is told why: important
//! data requires the signed form, and no data is held under a policy this node cannot
//! enforce.
//!
//! A counter-offer it can satisfy is taken by requesting it (signed again, the same
//! negotiation); a provider's initial offer is refused (400): this node negotiates
//! only from its own requests.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Extension;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::rt::TokioIo;
use rustls::RootCertStore;
use rustls::pki_types::ServerName;
use serde_json::{Map, Value as Json, json};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::message::{Area, CONTEXT, DspError};
use super::negotiation::{
    self as provider_role, SIGNED_AGREEMENT, SIGNED_REQUEST, bad, contract_error, read, reason_of,
    text, unavailable,
};
use super::state::DspState;
use crate::base::clock::now;
use crate::base::error::{ErrorKind, PeerRefusal};
use crate::contract::{BoundOffer, ConsumerBinding, ContractError, Negotiation, NegotiationStatus};
use crate::identity::{Envelope, ParticipantId};
use crate::service::PeerCaller;
use crate::storage::Storage;
use crate::tls::{self, ExpectedServer, TlsIdentity};
use crate::trust::TrustStore;

/// The provider's process ID of each negotiation this node started over DSP, by the
/// negotiation's ID (also its consumer process ID).
const PROVIDER_PIDS: &str = "dsp_consumer_provider_pids";
/// How long connecting, the handshake and the answer to one call may take.
const CALL_WITHIN: Duration = Duration::from_secs(15);
/// The largest answer read from a provider.
const MAX_ANSWER: usize = 4 << 20;

/// The consumer's side of the binding: calls to providers' DSP endpoints.
pub struct DspConsumer {
    tls_identity: Arc<TlsIdentity>,
    roots: RootCertStore,
    trust: Arc<TrustStore>,
    /// This node's DSP base URL: its callback address.
    callback: String,
    storage: Arc<dyn Storage>,
}

/// An answer from a provider: its status, body and who it is.
struct Answer {
    status: StatusCode,
    headers: http::HeaderMap,
    body: Vec<u8>,
}

impl DspConsumer {
    pub fn new(state: &DspState, trust: Arc<TrustStore>) -> Self {
        Self {
            tls_identity: state.tls_identity.clone(),
            roots: state.data_space_roots.clone(),
            trust,
            callback: state.base_url.clone(),
            storage: state.storage.clone(),
        }
    }

    /// The provider's process ID of `n`: the one its answer named, or (before that
    /// answer is on record) the negotiation's ID, which a Liutong provider takes from
    /// the signed request.
    fn provider_pid(&self, n: &Negotiation) -> String {
        self.storage
            .get(PROVIDER_PIDS, n.id.as_bytes())
            .ok()
            .flatten()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_else(|| n.id.clone())
    }

    /// One HTTPS call to `base` + `path`. The server must be a current member and, when
    /// `expected` is given, exactly that participant; the participant it proved to be is
    /// returned with its answer.
    async fn call(
        &self,
        base: &str,
        method: &str,
        path: &str,
        body: Option<&Json>,
        expected: Option<&ParticipantId>,
    ) -> Result<(Answer, ParticipantId), ContractError> {
        tokio::time::timeout(
            CALL_WITHIN,
            self.exchange(base, method, path, body, expected),
        )
        .await
        .unwrap_or_else(|_| {
            Err(ContractError::Unreachable(format!(
                "{base}: no answer within {}",
                humantime::format_duration(CALL_WITHIN)
            )))
        })
    }

    async fn exchange(
        &self,
        base: &str,
        method: &str,
        path: &str,
        body: Option<&Json>,
        expected: Option<&ParticipantId>,
    ) -> Result<(Answer, ParticipantId), ContractError> {
        let unreachable = |what: &str, e: &dyn std::fmt::Display| {
            ContractError::Unreachable(format!("{base}: {what}: {e}"))
        };
        let uri: http::Uri = base.parse().map_err(|e| unreachable("the URL", &e))?;
        if uri.scheme_str() != Some("https") || uri.query().is_some() {
            return Err(ContractError::Invalid(format!(
                "peer {base}: a Dataspace Protocol endpoint is an https:// URL without a query"
            )));
        }
        let host = uri
            .host()
            .unwrap_or_default()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(443);
        let seen: Arc<Mutex<Option<ParticipantId>>> = Arc::default();
        let (trust, expected_id, slot) = (self.trust.clone(), expected.cloned(), seen.clone());
        let config = tls::client_config(
            Some(&self.tls_identity),
            self.roots.clone(),
            ExpectedServer::Member(Arc::new(move |id, fingerprint| {
                if let Some(expected) = &expected_id
                    && id != expected
                {
                    return Err(format!(
                        "the server is {id}, not the negotiation's provider {expected}"
                    ));
                }
                trust
                    .check_member(id, fingerprint, now())
                    .map_err(|e| e.to_string())?;
                *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(id.clone());
                Ok(())
            })),
        )
        .map_err(|e| unreachable("TLS configuration", &e))?;
        let mut config = (*config).clone();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let tcp = TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| unreachable("connecting", &e))?;
        let name = ServerName::try_from(host.clone()).map_err(|e| unreachable("the host", &e))?;
        let stream = TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| {
                unreachable(
                    "TLS (the server must be a current member of this data space)",
                    &e,
                )
            })?;
        let participant = seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| unreachable("TLS", &"the server named no participant"))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| unreachable("HTTP", &e))?;
        tokio::spawn(connection);
        let base_path = uri.path().trim_end_matches('/');
        let authority = uri
            .authority()
            .map(|a| a.as_str().to_owned())
            .unwrap_or_default();
        let mut request = http::Request::builder()
            .method(method)
            .uri(format!("{base_path}{path}"))
            .header(http::header::HOST, authority);
        if body.is_some() {
            request = request.header(http::header::CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(bytes::Bytes::from(
                body.map(|b| serde_json::to_vec(b).expect("messages serialize"))
                    .unwrap_or_default(),
            )))
            .map_err(|e| unreachable("the request", &e))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| unreachable("HTTP", &e))?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = Limited::new(response.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| unreachable("the answer", &e))?
            .to_bytes()
            .to_vec();
        Ok((
            Answer {
                status,
                headers,
                body,
            },
            participant,
        ))
    }

    /// A provider's refusal, as the contract component takes it: the status's kind, and
    /// the reasons of its DSP error message.
    fn refusal(base: &str, answer: &Answer) -> ContractError {
        let kind = match answer.status.as_u16() {
            400 | 413 | 422 => ErrorKind::InvalidArgument,
            401 => ErrorKind::Unauthenticated,
            403 => ErrorKind::PermissionDenied,
            404 => ErrorKind::NotFound,
            409 => ErrorKind::AlreadyExists,
            429 => ErrorKind::ResourceExhausted,
            _ => ErrorKind::Unavailable,
        };
        let reasons = serde_json::from_slice::<Json>(&answer.body)
            .ok()
            .and_then(|b| b.get("reason").cloned())
            .map(|r| match r {
                Json::Array(items) => items
                    .iter()
                    .take(8)
                    .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_owned))
                    .collect::<Vec<_>>()
                    .join("; "),
                other => other.to_string(),
            })
            .unwrap_or_default();
        ContractError::Peer(PeerRefusal {
            kind,
            message: format!("{base} answered {}: {reasons}", answer.status),
            refusal: None,
        })
    }

    fn message(ty: &str, provider_pid: &str, consumer_pid: &str) -> Json {
        json!({
            "@context": [CONTEXT],
            "@type": ty,
            "providerPid": provider_pid,
            "consumerPid": consumer_pid,
        })
    }

    async fn post_message(
        &self,
        n: &Negotiation,
        path: &str,
        body: &Json,
    ) -> Result<(), ContractError> {
        let (answer, _) = self
            .call(&n.peer_address, "POST", path, Some(body), Some(&n.peer))
            .await?;
        if answer.status.is_success() {
            Ok(())
        } else {
            Err(Self::refusal(&n.peer_address, &answer))
        }
    }
}

#[tonic::async_trait]
impl ConsumerBinding for DspConsumer {
    async fn offer(&self, address: &str, offer_id: &str) -> Result<BoundOffer, ContractError> {
        let (product, _) = crate::catalog::product::parse_offer_id(offer_id)
            .ok_or_else(|| ContractError::UnknownOffer(offer_id.to_owned()))?;
        let (answer, provider) = self
            .call(
                address.trim_end_matches('/'),
                "GET",
                &format!("/catalog/datasets/{product}"),
                None,
                None,
            )
            .await?;
        if answer.status == StatusCode::NOT_FOUND {
            return Err(ContractError::UnknownOffer(offer_id.to_owned()));
        }
        if !answer.status.is_success() {
            return Err(Self::refusal(address, &answer));
        }
        let dataset: Json = serde_json::from_slice(&answer.body).map_err(|e| {
            ContractError::Invalid(format!(
                "{address} answered a dataset that is not JSON: {e}"
            ))
        })?;
        let iri = super::catalog::offer_iri(offer_id);
        let Some(offer) = dataset
            .get("hasPolicy")
            .and_then(Json::as_array)
            .and_then(|offers| offers.iter().find(|o| o["@id"] == iri.as_str()))
        else {
            // Another offer of a product the provider shows this node: requested as
            // asked for; the provider may answer with its current offer instead.
            return Ok(BoundOffer {
                provider,
                policy: None,
                classification: None,
            });
        };
        let mut policy = offer.clone();
        if let (Some(o), Some(target)) = (policy.as_object_mut(), dataset.get("@id")) {
            // In a catalog the dataset is the offer's target.
            o.entry("target").or_insert_with(|| target.clone());
        }
        let classification = policy
            .as_object_mut()
            .and_then(|o| o.remove(super::catalog::CLASSIFICATION))
            .and_then(|c| c.as_str().and_then(|c| c.parse().ok()));
        Ok(BoundOffer {
            provider,
            classification,
            policy: Some(policy),
        })
    }

    async fn send_request(&self, n: &Negotiation) -> Result<(), ContractError> {
        let body = json!({
            "@context": [CONTEXT],
            "@type": "ContractRequestMessage",
            "consumerPid": n.id,
            "offer": request_offer(n),
            "callbackAddress": self.callback,
            provider_role::PURPOSE: n.purpose,
            SIGNED_REQUEST: n.request,
        });
        let (answer, _) = self
            .call(
                &n.peer_address,
                "POST",
                "/negotiations/request",
                Some(&body),
                Some(&n.peer),
            )
            .await?;
        if !answer.status.is_success() {
            return Err(Self::refusal(&n.peer_address, &answer));
        }
        let provider_pid = serde_json::from_slice::<Json>(&answer.body)
            .ok()
            .and_then(|b| {
                b.get("providerPid")
                    .and_then(Json::as_str)
                    .map(str::to_owned)
            })
            .filter(|p| !p.is_empty() && p.len() <= 256)
            .ok_or_else(|| {
                ContractError::Invalid(format!(
                    "{} answered the request without a providerPid",
                    n.peer_address
                ))
            })?;
        self.storage
            .put(PROVIDER_PIDS, n.id.as_bytes(), provider_pid.as_bytes())?;
        self.storage.flush().await?;
        Ok(())
    }

    async fn send_counter_request(&self, n: &Negotiation) -> Result<(), ContractError> {
        let pid = self.provider_pid(n);
        let mut body = Self::message("ContractRequestMessage", &pid, &n.id);
        body["offer"] = request_offer(n);
        body[provider_role::PURPOSE] = n.purpose.clone().into();
        body[SIGNED_REQUEST] = serde_json::to_value(&n.request).expect("envelopes serialize");
        self.post_message(n, &format!("/negotiations/{pid}/request"), &body)
            .await
    }

    async fn state(&self, n: &Negotiation) -> Result<Option<NegotiationStatus>, ContractError> {
        let pid = self.provider_pid(n);
        let (answer, _) = self
            .call(
                &n.peer_address,
                "GET",
                &format!("/negotiations/{pid}"),
                None,
                Some(&n.peer),
            )
            .await?;
        if answer.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !answer.status.is_success() {
            return Err(Self::refusal(&n.peer_address, &answer));
        }
        let body: Json = serde_json::from_slice(&answer.body).unwrap_or_default();
        let state = body.get("state").and_then(Json::as_str).unwrap_or_default();
        NegotiationStatus::parse(state)
            .map(Some)
            .map_err(|e| ContractError::Invalid(format!("{}: {e}", n.peer_address)))
    }

    async fn send_verification(&self, n: &Negotiation) -> Result<(), ContractError> {
        let pid = self.provider_pid(n);
        let mut body = Self::message("ContractAgreementVerificationMessage", &pid, &n.id);
        // A plain provider's agreement is confirmed by the message alone: it signed no
        // envelope to return countersigned.
        if let Some(agreement) = n
            .agreement
            .as_ref()
            .filter(|_| n.agreement_signed_by_provider())
        {
            body[SIGNED_AGREEMENT] = serde_json::to_value(agreement).expect("envelopes serialize");
        }
        self.post_message(
            n,
            &format!("/negotiations/{pid}/agreement/verification"),
            &body,
        )
        .await
    }

    async fn catalog(
        &self,
        address: &str,
        page_size: u32,
        page_token: &str,
    ) -> Result<(Vec<liutong_proto::v1::Product>, String), ContractError> {
        // 0 asks for the provider's default page, as over the peer API.
        let mut path = match page_size {
            0 => "/catalog/request?".to_owned(),
            n => format!("/catalog/request?pageSize={}&", n.min(500)),
        };
        if !page_token.is_empty() {
            // The token is the provider's own, as its Link header gave it.
            if !page_token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.~%".contains(&b))
            {
                return Err(ContractError::Invalid(
                    "page_token: not a token this listing gave".into(),
                ));
            }
            path.push_str(&format!("continuationToken={page_token}"));
        }
        let body = json!({
            "@context": [CONTEXT],
            "@type": "CatalogRequestMessage",
            "filter": [],
        });
        let path = path.trim_end_matches(['?', '&']);
        let (answer, provider) = self.call(address, "POST", path, Some(&body), None).await?;
        if !answer.status.is_success() {
            return Err(Self::refusal(address, &answer));
        }
        let catalog: Json = serde_json::from_slice(&answer.body).map_err(|e| {
            ContractError::Invalid(format!(
                "{address} answered a catalog that is not JSON: {e}"
            ))
        })?;
        let products = catalog
            .get("dataset")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
            .filter_map(|d| product_of(d, &provider))
            .collect();
        Ok((products, next_token(&answer.headers)))
    }

    async fn send_termination(&self, n: &Negotiation, reason: &str) -> Result<(), ContractError> {
        let pid = self.provider_pid(n);
        let mut body = Self::message("ContractNegotiationTerminationMessage", &pid, &n.id);
        body["code"] = "consumer.terminated".into();
        body["reason"] = json!([reason]);
        self.post_message(n, &format!("/negotiations/{pid}/termination"), &body)
            .await
    }
}

/// The offer a request of `n` names: the offer as the provider showed it, or (one it
/// did not show) its `@id` and target with the use this node asks for.
fn request_offer(n: &Negotiation) -> Json {
    let mut offer = n.offer_policy.clone().unwrap_or_else(|| json!({}));
    if let Some(o) = offer.as_object_mut() {
        o.insert("@type".into(), "Offer".into());
        o.insert("@id".into(), super::catalog::offer_iri(&n.offer_id).into());
        if let Some((product, _)) = crate::catalog::product::parse_offer_id(&n.offer_id) {
            o.insert("target".into(), super::catalog::dataset_id(product).into());
        }
        if !o.contains_key("permission") && !o.contains_key("prohibition") {
            o.insert("permission".into(), json!([{"action": "use"}]));
        }
    }
    offer
}

/// A catalog's dataset as the peer API lists a product with its offer; `None`: not a
/// Liutong offer (no offer ID or version this node can read).
fn product_of(dataset: &Json, owner: &ParticipantId) -> Option<liutong_proto::v1::Product> {
    let text = |v: &Json, key: &str| {
        v.get(key)
            .and_then(Json::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let offer = dataset.get("hasPolicy")?.as_array()?.first()?;
    let offer_id = text(offer, "@id")
        .strip_prefix(&super::catalog::offer_iri(""))?
        .to_owned();
    let (product_id, version) = crate::catalog::product::parse_offer_id(&offer_id)?;
    Some(liutong_proto::v1::Product {
        product_id: product_id.to_owned(),
        version,
        title: text(dataset, "dct:title"),
        description: text(dataset, "dct:description"),
        owner: owner.to_string(),
        classification: text(offer, super::catalog::CLASSIFICATION),
        format: text(dataset, "dct:format"),
        size: dataset
            .get("dcat:byteSize")
            .and_then(Json::as_u64)
            .unwrap_or_default(),
        offer_id: offer_id.clone(),
        policy_odrl_json: offer.to_string(),
        ..Default::default()
    })
}

/// The `continuationToken` of a `Link` header's `rel="next"` URL, if any.
fn next_token(headers: &http::HeaderMap) -> String {
    headers
        .get_all(http::header::LINK)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter(|v| v.contains("rel=\"next\""))
        .find_map(|v| {
            let url = v
                .split(';')
                .next()?
                .trim()
                .trim_start_matches('<')
                .trim_end_matches('>');
            let query = url.split_once('?')?.1;
            query
                .split('&')
                .find_map(|kv| kv.strip_prefix("continuationToken="))
                .map(str::to_owned)
        })
        .unwrap_or_default()
}

/// The caller's negotiation `pid` as this node's consumer side keeps it: another
/// member's (or one this node provides) does not exist for the caller.
fn bound(state: &DspState, caller: &ParticipantId, pid: &str) -> Result<Negotiation, DspError> {
    state
        .contracts
        .bound_negotiation(caller, pid)
        .map_err(|e| contract_error(e).with_pids("", pid))
}

/// Checks that a callback about `n` names it by both process IDs.
fn names(
    state: &DspState,
    message: &Map<String, Json>,
    n: &Negotiation,
) -> Result<String, DspError> {
    let consumer = text(message, "consumerPid")?;
    if consumer != Some(n.id.as_str()) {
        return Err(bad(format!(
            "consumerPid must be {}, the negotiation this path names",
            n.id
        )));
    }
    let known = state
        .storage
        .get(PROVIDER_PIDS, n.id.as_bytes())
        .map_err(|e| unavailable(e.to_string()))?
        .map(|b| String::from_utf8_lossy(&b).into_owned());
    let provider = text(message, "providerPid")?.unwrap_or_default().to_owned();
    if let Some(known) = known
        && provider != known
    {
        return Err(bad(format!(
            "providerPid must be {known}, as in your answer to the request"
        )));
    }
    Ok(provider)
}

/// Whether `pid` names a negotiation this node started as consumer with `caller` as
/// its provider (the provider role's endpoints share these callback paths: anything
/// else goes to the provider role, which answers for its own negotiations and 404
/// otherwise).
fn consumed_from(state: &DspState, caller: &ParticipantId, pid: &str) -> bool {
    state.contracts.bound_negotiation(caller, pid).is_ok()
}

/// `POST /negotiations/:consumerPid/agreement`: the provider's agreement, its signed
/// envelope in `lt:agreement` (a plain provider's: none). 200 once it is countersigned
/// (or taken as not signed by the provider) and VERIFIED on record; the verification
/// follows.
pub async fn agreement(
    State(state): State<DspState>,
    Extension(PeerCaller(member)): Extension<PeerCaller>,
    Path(pid): Path<String>,
    body: Body,
) -> Result<Response, DspError> {
    let message = read(&state, body, "ContractAgreementMessage").await?;
    let provider = member.participant_id.clone();
    let n = bound(&state, &provider, &pid)?;
    let ppid = names(&state, &message, &n).map_err(|e| e.with_pids("", &pid))?;
    let refuse = |e: DspError| e.with_pids(&ppid, &pid);
    let Some(value) = message.get(SIGNED_AGREEMENT) else {
        return unsigned_agreement(state, &provider, pid.clone(), &message)
            .await
            .map_err(refuse);
    };
    let envelope: Envelope = serde_json::from_value(value.clone()).map_err(|e| {
        refuse(bad(format!(
            "{SIGNED_AGREEMENT} is not a signed agreement envelope: {e}"
        )))
    })?;
    state
        .contracts
        .receive_bound_agreement(&provider, &pid, envelope)
        .await
        .map_err(|e| refuse(contract_error(e)))?;
    let contracts = state.contracts.clone();
    tokio::spawn(async move {
        if let Err(e) = contracts.send_bound_verification(&pid).await {
            // The poller sends it again.
            tracing::warn!(negotiation = %pid, error = %e, "the verification was not delivered");
        }
    });
    Ok(StatusCode::OK.into_response())
}

/// A plain provider's agreement (no `lt:agreement`): its `agreement` object, taken by
/// the contract component as not signed by the provider, or refused with the
/// negotiation ended and the provider told why. 200 once it is VERIFIED on record; the
/// verification follows.
async fn unsigned_agreement(
    state: DspState,
    provider: &ParticipantId,
    pid: String,
    message: &Map<String, Json>,
) -> Result<Response, DspError> {
    let Some(agreement) = message.get("agreement").filter(|a| a.is_object()) else {
        return Err(bad("agreement is missing or not an object"));
    };
    state
        .contracts
        .receive_unsigned_agreement(provider, &pid, agreement)
        .await
        .map_err(contract_error)?;
    let contracts = state.contracts.clone();
    tokio::spawn(async move {
        if let Err(e) = contracts.send_bound_verification(&pid).await {
            // The poller sends it again.
            tracing::warn!(negotiation = %pid, error = %e, "the verification was not delivered");
        }
    });
    Ok(StatusCode::OK.into_response())
}

/// `POST /negotiations/:pid/events`: the provider's FINALIZED (consumer role), or a
/// consumer's event to this node as provider.
pub async fn event(
    State(state): State<DspState>,
    caller: Extension<PeerCaller>,
    Path(pid): Path<String>,
    body: Body,
) -> Result<Response, DspError> {
    let member = caller.0.0.participant_id.clone();
    if !consumed_from(&state, &member, &pid) {
        return provider_role::event(State(state), caller, Path(pid), body).await;
    }
    let message = read(&state, body, "ContractNegotiationEventMessage").await?;
    let n = bound(&state, &member, &pid)?;
    let ppid = names(&state, &message, &n).map_err(|e| e.with_pids("", &pid))?;
    let refuse = |e: DspError| e.with_pids(&ppid, &pid);
    match text(&message, "eventType").map_err(refuse)? {
        Some("FINALIZED") => {
            state
                .contracts
                .receive_bound_finalized(&member, &pid)
                .await
                .map_err(|e| refuse(contract_error(e)))?;
            Ok(StatusCode::OK.into_response())
        }
        Some("ACCEPTED") => Err(refuse(bad(format!(
            "negotiation {pid} is {}; ACCEPTED is the consumer's to send",
            n.state
        )))),
        _ => Err(refuse(bad("eventType must be ACCEPTED or FINALIZED"))),
    }
}

/// `POST /negotiations/:pid/termination`: the provider ends this node's negotiation
/// (consumer role), or a consumer ends one this node provides.
pub async fn termination(
    State(state): State<DspState>,
    caller: Extension<PeerCaller>,
    Path(pid): Path<String>,
    body: Body,
) -> Result<Response, DspError> {
    let member = caller.0.0.participant_id.clone();
    if !consumed_from(&state, &member, &pid) {
        return provider_role::termination(State(state), caller, Path(pid), body).await;
    }
    let message = read(&state, body, "ContractNegotiationTerminationMessage").await?;
    let n = bound(&state, &member, &pid)?;
    let ppid = names(&state, &message, &n).map_err(|e| e.with_pids("", &pid))?;
    let refuse = |e: DspError| e.with_pids(&ppid, &pid);
    let failed = match message.get("reason") {
        Some(Json::Array(reasons)) => reasons
            .iter()
            .filter_map(Json::as_str)
            .filter_map(|r| r.strip_prefix("failed constraint: "))
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    };
    state
        .contracts
        .receive_bound_termination(&member, &pid, &reason_of(&message), failed)
        .await
        .map_err(|e| refuse(contract_error(e)))?;
    Ok(StatusCode::OK.into_response())
}

/// `POST /negotiations/:consumerPid/offers`: the provider's counter-offer. This node
/// takes one it can satisfy (the same product, a policy it can read) by requesting it:
/// 200 once the counter-offer and the new signed request are on record; the request
/// follows. One it cannot satisfy ends the negotiation (400, the provider told).
pub async fn offer(
    State(state): State<DspState>,
    Extension(PeerCaller(member)): Extension<PeerCaller>,
    Path(pid): Path<String>,
    body: Body,
) -> Result<Response, DspError> {
    let message = read(&state, body, "ContractOfferMessage").await?;
    let provider = member.participant_id.clone();
    let n = bound(&state, &provider, &pid)?;
    let ppid = names(&state, &message, &n).map_err(|e| e.with_pids("", &pid))?;
    let refuse = |e: DspError| e.with_pids(&ppid, &pid);
    let Some(Json::Object(offer)) = message.get("offer") else {
        return Err(refuse(bad("offer is missing or not an object")));
    };
    let prefix = super::catalog::offer_iri("");
    let offer_id = offer
        .get("@id")
        .and_then(Json::as_str)
        .and_then(|id| id.strip_prefix(&prefix))
        .ok_or_else(|| refuse(bad(format!("offer: its @id must be {prefix}<offer ID>"))))?
        .to_owned();
    let mut policy = offer.clone();
    let classification = policy
        .remove(super::catalog::CLASSIFICATION)
        .and_then(|c| c.as_str().and_then(|c| c.parse().ok()));
    state
        .contracts
        .receive_bound_offer(
            &provider,
            &pid,
            &offer_id,
            Json::Object(policy),
            classification,
        )
        .await
        .map_err(|e| refuse(contract_error(e)))?;
    let contracts = state.contracts.clone();
    tokio::spawn(async move {
        if let Err(e) = contracts.send_bound_counter_request(&pid).await {
            // The poller sends it again.
            tracing::warn!(negotiation = %pid, error = %e, "the request for the counter-offer was not delivered");
        }
    });
    Ok(StatusCode::OK.into_response())
}

/// `POST /negotiations/offers`: a provider's initial offer. This node negotiates only
/// from its own requests, so it is refused (400) and nothing is stored.
pub async fn initial_offer(
    State(state): State<DspState>,
    body: Body,
) -> Result<Response, DspError> {
    let message = read(&state, body, "ContractOfferMessage").await?;
    let provider_pid = text(&message, "providerPid")?
        .unwrap_or_default()
        .to_owned();
    Err(DspError::bad_request(
        Area::Negotiation,
        "this node negotiates only from its own requests: it takes no provider's initial \
         offer; publish the offer in your catalog and this node's operator can request it",
    )
    .with_pids(&provider_pid, ""))
}
