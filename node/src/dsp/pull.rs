//! The transfer process protocol, consumer role: this node pulls the product of an
//! agreement it holds as consumer from a provider's DSP endpoint (`HttpData-PULL`).
//!
//! It sends a `TransferRequestMessage` whose callback address is this node's own DSP
//! listener (`<base>/callback`), takes the provider's start message there
//! (`/callback/transfers/:consumerPid/start|completion|suspension|termination`, only
//! from that transfer's provider: anyone else is answered 404), downloads the data
//! address with its bearer token, and hands the bytes to the transfer component as the
//! peer API's delivery: the same check of the signed manifest against the agreement and
//! of every chunk against it, the same sealed copy, record and receipt. A pull that
//! stops early suspends the transfer; the next restarts it (a new token) and resumes
//! with `Range` from the first chunk not yet durable. The copy's signed receipt goes to
//! the provider in the completion message (`lt:receipt`); for an agreement negotiated
//! only over DSP, receipts sent again go the same way ([`crate::transfer::ReceiptBinding`]).
//!
//! This node's operator suspends or terminates its own transfer ([`consumer_action`]):
//! the new state and the message owed to the provider are durable together, a download
//! in progress stops at its next chunk, and the notice worker ([`run_notices`]) tells
//! the provider. A suspended transfer restarts with the next pull; one terminated here
//! is never pulled again.
//!
//! Calls go only to a server presenting the agreement's provider's own certificate;
//! this node presents its own.
//!
//! Under an agreement its provider did not sign (a plain DSP provider's), there is no
//! signed manifest: the bytes go to the transfer component's unverified pull, and the
//! data address is taken only on the provider's own host (see the last section).

use std::sync::Arc;
use std::time::Duration;

use axum::Extension;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json, json};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::TlsConnector;

use super::message::{self, Area, CONTEXT, DspError};
use super::negotiation::text;
use super::state::DspState;
use super::transfer::{FORMAT, MANIFEST_HEADER, RECEIPT, TransferProcessState as S, in_area};
use crate::audit::log::{AuditLog, Event, EventKind};
use crate::base::clock::now;
use crate::base::error::PeerRefusal;
use crate::base::random::new_id;
use crate::base::shutdown::Shutdown;
use crate::contract::{Contracts, Role};
use crate::identity::{Envelope, Membership, ParticipantId};
use crate::service::PeerCaller;
use crate::storage::Storage;
use crate::tls::{self, ExpectedServer, TlsIdentity};
use crate::transfer::{
    ControlError, DeliveryParts, Manifest, ProviderAction, TransferError, TransferState, Transfers,
};
use liutong_proto::v1::pull_response::Part;
use liutong_proto::v1::{Chunk, PullResponse, TransferProgress};

/// This node's transfers as DSP consumer, by consumer process ID.
pub(super) const RECORDS: &str = "dsp_consumer_transfers";
/// How long a pull waits for the provider's start message.
const START_WITHIN: Duration = Duration::from_secs(30);
/// How long connecting and one answer's head may take.
const CALL_WITHIN: Duration = Duration::from_secs(30);
/// A token this close to its expiry is not used for a new download.
const TOKEN_MARGIN: i64 = 30;
/// The largest answer body to a protocol message read.
const MAX_ANSWER: usize = 1 << 20;

/// What the consumer role needs: this node's listener (for callbacks), its certificate
/// and the data-space CA (for calls), and the components the pull goes through.
pub struct DspConsumer {
    /// This node's DSP base URL (no trailing slash).
    pub base_url: String,
    pub tls_identity: Arc<TlsIdentity>,
    pub roots: rustls::RootCertStore,
    pub storage: Arc<dyn Storage>,
    pub contracts: Arc<Contracts>,
    pub transfers: Arc<Transfers>,
}

/// What the consumer keeps of a transfer process.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConsumerTransfer {
    pub consumer_pid: String,
    pub provider_pid: Option<String>,
    /// The provider's participant: the only caller of this transfer's callbacks.
    pub provider: String,
    pub agreement_id: String,
    /// The provider's DSP base URL.
    pub peer_url: String,
    pub state: S,
    /// The data address of the latest start message, and its token's expiry (Unix s,
    /// 0: not given).
    pub endpoint: Option<String>,
    pub token: Option<String>,
    pub token_expires: i64,
    pub reason: String,
    /// Terminated by this node's operator: no later pull restarts it.
    #[serde(default)]
    pub ended_here: bool,
    /// When the record last changed (Unix s; 0: before this was kept).
    #[serde(default)]
    pub updated_at: i64,
}

impl ConsumerTransfer {
    fn load(storage: &dyn Storage, pid: &str) -> Result<Option<Self>, String> {
        match storage
            .get(RECORDS, pid.as_bytes())
            .map_err(|e| e.to_string())?
        {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| format!("the stored DSP transfer {pid} is damaged: {e}")),
        }
    }

    async fn store(&self, storage: &dyn Storage) -> Result<(), String> {
        let mut stamped = self.clone();
        stamped.updated_at = now();
        let bytes = serde_json::to_vec(&stamped).expect("records serialize");
        storage
            .put(RECORDS, self.consumer_pid.as_bytes(), &bytes)
            .map_err(|e| e.to_string())?;
        storage.flush().await.map_err(|e| e.to_string())
    }
}

/// This node's DSP transfers as consumer (for operators and tests).
pub fn consumer_transfers(storage: &dyn Storage) -> Result<Vec<ConsumerTransfer>, String> {
    storage
        .scan_prefix(RECORDS, b"")
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|(_, v)| serde_json::from_slice(&v).map_err(|e| e.to_string()))
        .collect()
}

fn unreachable(e: impl std::fmt::Display) -> TransferError {
    TransferError::Unreachable(e.to_string())
}

fn stored(e: String) -> TransferError {
    TransferError::Internal(e)
}

impl crate::transfer::RemotePull for DspConsumer {
    fn pull(
        self: Arc<Self>,
        peer: String,
        agreement_id: String,
        max_chunks: u32,
        progress_tx: mpsc::Sender<TransferProgress>,
    ) -> crate::base::BoxFuture<'static, Result<TransferProgress, TransferError>> {
        Box::pin(async move { pull(self, &peer, &agreement_id, max_chunks, progress_tx).await })
    }
}

/// Pulls (or resumes) the product of `agreement_id` from the provider's DSP endpoint at
/// `peer_url`; reports progress on `progress_tx`, as the peer API's pull does.
pub async fn pull(
    consumer: Arc<DspConsumer>,
    peer_url: &str,
    agreement_id: &str,
    max_chunks: u32,
    progress_tx: mpsc::Sender<TransferProgress>,
) -> Result<TransferProgress, TransferError> {
    let peer_url = peer_base(peer_url).map_err(TransferError::Invalid)?;
    let n = consumer.contracts.finalized(Role::Consumer, agreement_id)?;
    if !n.agreement_signed_by_provider() {
        return pull_unsigned(consumer, &peer_url, agreement_id, max_chunks, progress_tx).await;
    }
    let provider = n.peer.clone();
    let opened: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
    let open = {
        let (consumer, peer_url, agreement_id) =
            (consumer.clone(), peer_url.clone(), agreement_id.to_owned());
        let (provider, opened) = (provider.clone(), opened.clone());
        Box::new(move |_from_chunk: u32, offset: u64| {
            Box::pin(async move {
                let (pid, parts) =
                    open(&consumer, &peer_url, &agreement_id, &provider, offset).await?;
                *opened.lock().unwrap_or_else(|p| p.into_inner()) = Some(pid);
                Ok(parts)
            }) as std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send>>
        }) as crate::transfer::OpenDelivery
    };
    let result = consumer
        .transfers
        .pull_from(agreement_id, max_chunks, progress_tx, Some(open))
        .await;
    let pid = opened.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let Some(pid) = pid else {
        return result;
    };
    let done = result?;
    let mut record = ConsumerTransfer::load(consumer.storage.as_ref(), &pid)
        .map_err(stored)?
        .ok_or_else(|| TransferError::Internal(format!("transfer {pid} is not on record")))?;
    if done.state == TransferState::Completed.as_str() {
        complete(&consumer, &mut record, &provider).await?;
    } else {
        // Stopped early: the provider stops serving until the next pull restarts it.
        if let Err(e) = message_to_provider(&consumer, &mut record, &provider, "suspension").await {
            tracing::warn!(transfer = %pid, error = %e, "cannot suspend the DSP transfer");
        }
    }
    Ok(done)
}

/// The provider's base URL: `https://…` with a host, no trailing slash.
fn peer_base(url: &str) -> Result<String, String> {
    super::negotiation::callback_address(Some(url)).map_err(|_| {
        format!(
            "--peer {}: a DSP peer is an https:// URL with a host (its DSP base URL)",
            crate::base::bounded::shown(url, 128)
        )
    })
}

/// Tells the provider the copy verified, with its signed receipt; confirmed, the
/// receipt is not sent again.
async fn complete(
    consumer: &DspConsumer,
    record: &mut ConsumerTransfer,
    provider: &ParticipantId,
) -> Result<(), TransferError> {
    let receipt = crate::transfer::copy(consumer.storage.as_ref(), &record.agreement_id)?
        .and_then(|c| c.receipt);
    let ppid = record.provider_pid.clone().unwrap_or_default();
    let mut body = json!({
        "@context": [CONTEXT],
        "@type": "TransferCompletionMessage",
        "providerPid": ppid,
        "consumerPid": record.consumer_pid,
    });
    if let Some(r) = &receipt {
        body[RECEIPT] = serde_json::to_value(r).expect("envelopes serialize");
    }
    let sent = post(
        consumer,
        &record.peer_url,
        provider,
        &format!("/transfers/{ppid}/completion"),
        &body,
    )
    .await;
    // The copy is complete either way; a receipt that did not get through stays to be
    // sent again by the background work (over the peer API, or over DSP for an
    // agreement negotiated only there).
    let (status, answer) = match sent {
        Ok(answer) => answer,
        Err(e) => {
            tracing::warn!(transfer = %record.consumer_pid, error = %e, "the completion did not reach the provider; it is sent again");
            return Ok(());
        }
    };
    if status.is_server_error() {
        tracing::warn!(transfer = %record.consumer_pid, %status, "the provider did not take the completion now; it is sent again");
        return Ok(());
    }
    if !status.is_success() {
        return Err(TransferError::Peer(crate::base::error::PeerRefusal {
            kind: crate::base::error::ErrorKind::FailedPrecondition,
            message: format!(
                "the provider refused the completion ({status}): {}",
                reason(&answer)
            ),
            refusal: None,
        }));
    }
    if receipt.is_some() {
        consumer
            .transfers
            .receipt_confirmed(&record.agreement_id)
            .await?;
    }
    record.state = S::Completed;
    record.token = None;
    record
        .store(consumer.storage.as_ref())
        .await
        .map_err(stored)
}

/// Sends a suspension or termination of `record` to its provider.
async fn message_to_provider(
    consumer: &DspConsumer,
    record: &mut ConsumerTransfer,
    provider: &ParticipantId,
    kind: &str,
) -> Result<(), String> {
    let ppid = record.provider_pid.clone().unwrap_or_default();
    let (ty, next) = match kind {
        "suspension" => ("TransferSuspensionMessage", S::Suspended),
        _ => ("TransferTerminationMessage", S::Terminated),
    };
    let body = json!({
        "@context": [CONTEXT],
        "@type": ty,
        "providerPid": ppid,
        "consumerPid": record.consumer_pid,
        "code": "consumer.stopped",
        "reason": ["the consumer's pull stopped before the end; it resumes later"],
    });
    let (status, answer) = post(
        consumer,
        &record.peer_url,
        provider,
        &format!("/transfers/{ppid}/{kind}"),
        &body,
    )
    .await?;
    if !status.is_success() {
        return Err(format!(
            "the provider answered {status}: {}",
            reason(&answer)
        ));
    }
    record.state = next;
    record.token = None;
    record.store(consumer.storage.as_ref()).await
}

/// The process to pull through for `agreement_id` (see [`process`]), its data address
/// downloaded from `offset`. Returns the consumer process ID and the delivery.
async fn open(
    consumer: &Arc<DspConsumer>,
    peer_url: &str,
    agreement_id: &str,
    provider: &ParticipantId,
    offset: u64,
) -> Result<(String, DeliveryParts), TransferError> {
    let record = process(consumer, peer_url, agreement_id, provider).await?;
    let parts = download(consumer, &record, provider, offset).await?;
    Ok((record.consumer_pid, parts))
}

/// The process to pull through for `agreement_id`: a STARTED one whose token still
/// holds is used as it is, a SUSPENDED one (or one whose token ran out) is restarted,
/// otherwise a new one is requested.
async fn process(
    consumer: &Arc<DspConsumer>,
    peer_url: &str,
    agreement_id: &str,
    provider: &ParticipantId,
) -> Result<ConsumerTransfer, TransferError> {
    let storage = consumer.storage.as_ref();
    let active = consumer_transfers(storage)
        .map_err(stored)?
        .into_iter()
        .find(|r| {
            r.agreement_id == agreement_id
                && r.peer_url == peer_url
                && r.provider_pid.is_some()
                && matches!(r.state, S::Started | S::Suspended)
        });
    let usable = |r: &ConsumerTransfer| {
        r.state == S::Started
            && r.token.is_some()
            && (r.token_expires == 0 || r.token_expires > now() + TOKEN_MARGIN)
    };
    if active.is_none() {
        refuse_ended_here(storage, agreement_id, peer_url)?;
    }
    let record = match active {
        Some(r) if usable(&r) => r,
        Some(mut r) => {
            // This node's own suspension reaches the provider before the restart does.
            deliver_notice_now(consumer, &r.consumer_pid).await?;
            if r.state == S::Started {
                message_to_provider(consumer, &mut r, provider, "suspension")
                    .await
                    .map_err(unreachable)?;
            }
            // The start message that answers the restart brings the new token.
            r.endpoint = None;
            r.token = None;
            r.store(storage).await.map_err(stored)?;
            let ppid = r.provider_pid.clone().unwrap_or_default();
            let body = json!({
                "@context": [CONTEXT],
                "@type": "TransferStartMessage",
                "providerPid": ppid,
                "consumerPid": r.consumer_pid,
            });
            let (status, answer) = post(
                consumer,
                peer_url,
                provider,
                &format!("/transfers/{ppid}/start"),
                &body,
            )
            .await
            .map_err(unreachable)?;
            if !status.is_success() {
                return Err(refused("restarting the transfer", status, &answer));
            }
            wait_for_start(storage, &r.consumer_pid).await?
        }
        None => request(consumer, peer_url, agreement_id, provider).await?,
    };
    Ok(record)
}

fn refused(what: &str, status: http::StatusCode, answer: &[u8]) -> TransferError {
    let message = format!("{what}: the provider answered {status}: {}", reason(answer));
    TransferError::Peer(crate::base::error::PeerRefusal {
        kind: match status.as_u16() {
            401 => crate::base::error::ErrorKind::Unauthenticated,
            403 => crate::base::error::ErrorKind::PermissionDenied,
            404 => crate::base::error::ErrorKind::NotFound,
            416 => crate::base::error::ErrorKind::OutOfRange,
            s if s >= 500 => crate::base::error::ErrorKind::Unavailable,
            _ => crate::base::error::ErrorKind::FailedPrecondition,
        },
        message,
        refusal: None,
    })
}

/// The reason of a DSP error body, or the body as text.
fn reason(answer: &[u8]) -> String {
    let text = serde_json::from_slice::<Json>(answer)
        .ok()
        .and_then(|j| j.get("reason").cloned())
        .map(|r| match r {
            Json::Array(items) => items
                .iter()
                .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_owned))
                .collect::<Vec<_>>()
                .join("; "),
            other => other.to_string(),
        })
        .unwrap_or_else(|| String::from_utf8_lossy(answer).into_owned());
    crate::base::bounded::shown(&text, 512).to_string()
}

/// A new transfer process: on record first, then requested; the start message awaited.
async fn request(
    consumer: &DspConsumer,
    peer_url: &str,
    agreement_id: &str,
    provider: &ParticipantId,
) -> Result<ConsumerTransfer, TransferError> {
    let storage = consumer.storage.as_ref();
    let consumer_pid = format!(
        "urn:liutong:transfer:{}",
        new_id("ctp").map_err(|e| TransferError::Internal(e.to_string()))?
    );
    let mut record = ConsumerTransfer {
        consumer_pid: consumer_pid.clone(),
        provider_pid: None,
        provider: provider.to_string(),
        agreement_id: agreement_id.to_owned(),
        peer_url: peer_url.to_owned(),
        state: S::Requested,
        endpoint: None,
        token: None,
        token_expires: 0,
        reason: String::new(),
        ended_here: false,
        updated_at: 0,
    };
    record.store(storage).await.map_err(stored)?;
    let body = json!({
        "@context": [CONTEXT],
        "@type": "TransferRequestMessage",
        "consumerPid": consumer_pid,
        "agreementId": agreement_iri(consumer, agreement_id),
        "format": FORMAT,
        "callbackAddress": format!("{}/callback", consumer.base_url),
    });
    let (status, answer) = post(consumer, peer_url, provider, "/transfers/request", &body)
        .await
        .map_err(unreachable)?;
    if status != http::StatusCode::CREATED {
        record.state = S::Terminated;
        record.reason = reason(&answer);
        record.store(storage).await.map_err(stored)?;
        return Err(refused("requesting the transfer", status, &answer));
    }
    let process: Json = serde_json::from_slice(&answer)
        .map_err(|e| TransferError::Invalid(format!("the provider's answer: {e}")))?;
    let provider_pid = process["providerPid"]
        .as_str()
        .filter(|p| super::negotiation::pid("providerPid", Some(p)).is_ok())
        .ok_or_else(|| {
            TransferError::Invalid("the provider's answer names no usable providerPid".into())
        })?
        .to_owned();
    // Read again: the start message may already have arrived and been recorded.
    let mut current = ConsumerTransfer::load(storage, &consumer_pid)
        .map_err(stored)?
        .unwrap_or(record);
    current.provider_pid = Some(provider_pid);
    current.store(storage).await.map_err(stored)?;
    wait_for_start(storage, &consumer_pid).await
}

/// Waits (bounded) for the start message of `pid` to be on record.
async fn wait_for_start(
    storage: &dyn Storage,
    pid: &str,
) -> Result<ConsumerTransfer, TransferError> {
    let deadline = tokio::time::Instant::now() + START_WITHIN;
    loop {
        let record = ConsumerTransfer::load(storage, pid)
            .map_err(stored)?
            .ok_or_else(|| TransferError::Internal(format!("transfer {pid} is not on record")))?;
        match record.state {
            S::Started if record.token.is_some() && record.provider_pid.is_some() => {
                return Ok(record);
            }
            S::Terminated | S::Completed => {
                return Err(TransferError::Forbidden(format!(
                    "the provider ended transfer {pid}: {}",
                    record.reason
                )));
            }
            _ => {}
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(TransferError::Unreachable(format!(
                "the provider sent no start message for transfer {pid} within {}; can it \
                 reach this node's DSP listener (dsp.url)?",
                humantime::format_duration(START_WITHIN)
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Downloads the data address of `record` from `offset`, as the peer API's delivery:
/// the manifest (from its header), then the chunks cut from the bytes.
async fn download(
    consumer: &DspConsumer,
    record: &ConsumerTransfer,
    provider: &ParticipantId,
    offset: u64,
) -> Result<DeliveryParts, TransferError> {
    let endpoint = record
        .endpoint
        .clone()
        .ok_or_else(|| TransferError::Invalid("the start message named no endpoint".into()))?;
    let token = record.token.clone().unwrap_or_default();
    let uri: http::Uri = endpoint
        .parse()
        .map_err(|e| TransferError::Invalid(format!("the data address {endpoint}: {e}")))?;
    if uri.scheme_str() != Some("https") {
        return Err(TransferError::Invalid(format!(
            "the data address {endpoint} is not https://"
        )));
    }
    let mut headers = vec![(http::header::AUTHORIZATION, format!("Bearer {token}"))];
    if offset > 0 {
        headers.push((http::header::RANGE, format!("bytes={offset}-")));
    }
    let response = call(consumer, &uri, provider, "GET", headers, Vec::new())
        .await
        .map_err(unreachable)?;
    let status = response.status();
    let expected = if offset > 0 {
        http::StatusCode::PARTIAL_CONTENT
    } else {
        http::StatusCode::OK
    };
    if status != expected {
        let body = read_bounded(response.into_body()).await;
        return Err(refused("downloading the data", status, &body));
    }
    let manifest = response
        .headers()
        .get(MANIFEST_HEADER)
        .and_then(|v| {
            base64::engine::general_purpose::STANDARD
                .decode(v.as_bytes())
                .ok()
        })
        .and_then(|b| serde_json::from_slice::<Envelope>(&b).ok())
        .ok_or_else(|| {
            TransferError::Invalid(format!(
                "the provider sent no signed manifest ({MANIFEST_HEADER} header): it is not \
                 a Liutong node, and its data cannot be checked against the agreement"
            ))
        })?;
    // Read unchecked only to cut the bytes into chunks; the transfer component checks
    // the signature and the agreement.
    let m: Manifest = manifest
        .peek_json()
        .map_err(|e| TransferError::DataLoss(format!("the manifest: {e}")))?;
    let chunk_size = m.chunk_size.max(1) as u64;
    if !offset.is_multiple_of(chunk_size) {
        return Err(TransferError::Invalid(
            "a download resumes at a chunk boundary".into(),
        ));
    }
    let (tx, rx) = mpsc::channel::<Result<PullResponse, TransferError>>(2);
    let _ = tx
        .send(Ok(PullResponse {
            part: Some(Part::Manifest(manifest.into())),
        }))
        .await;
    let mut body = response.into_body();
    let size = m.size;
    let (storage, pid) = (consumer.storage.clone(), record.consumer_pid.clone());
    tokio::spawn(async move {
        let mut index = (offset / chunk_size) as u32;
        let mut at = offset;
        // Each chunk is gathered in an allocation of its own size, so its bytes are
        // copied once (from the HTTP frames) and never moved as it grows.
        let mut buffer = bytes::BytesMut::new();
        loop {
            if at >= size {
                return;
            }
            let want = (size - at).min(chunk_size) as usize;
            if buffer.len() >= want {
                let data = buffer.split_to(want).freeze();
                at += want as u64;
                let chunk = PullResponse {
                    part: Some(Part::Chunk(Chunk { index, data })),
                };
                index += 1;
                if let Err(e) = still_started(storage.as_ref(), &pid) {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
                if tx.send(Ok(chunk)).await.is_err() {
                    return;
                }
                continue;
            }
            match body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        buffer.reserve(want.saturating_sub(buffer.len()));
                        buffer.extend_from_slice(&data);
                    }
                }
                Some(Err(e)) => {
                    let _ = tx
                        .send(Err(TransferError::Unreachable(format!(
                            "the download was cut off after {at} bytes: {e}"
                        ))))
                        .await;
                    return;
                }
                // The stream ends: the chunk stage reports what is missing.
                None => return,
            }
        }
    });
    Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
}

async fn read_bounded(body: hyper::body::Incoming) -> Vec<u8> {
    match tokio::time::timeout(
        CALL_WITHIN,
        http_body_util::Limited::new(body, MAX_ANSWER).collect(),
    )
    .await
    {
        Ok(Ok(collected)) => collected.to_bytes().to_vec(),
        _ => Vec::new(),
    }
}

/// POSTs a protocol message to `base` + `path`; the status and the answer's body.
async fn post(
    consumer: &DspConsumer,
    base: &str,
    provider: &ParticipantId,
    path: &str,
    body: &Json,
) -> Result<(http::StatusCode, Vec<u8>), String> {
    let uri: http::Uri = format!("{base}{path}")
        .parse()
        .map_err(|e| format!("{base}{path}: {e}"))?;
    let response = call(
        consumer,
        &uri,
        provider,
        "POST",
        vec![(http::header::CONTENT_TYPE, "application/json".to_owned())],
        serde_json::to_vec(body).expect("messages serialize"),
    )
    .await?;
    let status = response.status();
    Ok((status, read_bounded(response.into_body()).await))
}

/// One HTTPS request to `uri`, presenting this node's certificate and accepting only a
/// server whose certificate names `provider`; the answer's head (its body to read).
async fn call(
    consumer: &DspConsumer,
    uri: &http::Uri,
    provider: &ParticipantId,
    method: &str,
    headers: Vec<(http::header::HeaderName, String)>,
    body: Vec<u8>,
) -> Result<http::Response<hyper::body::Incoming>, String> {
    tokio::time::timeout(CALL_WITHIN, async {
        let host = uri.host().unwrap_or_default();
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(443);
        let config = tls::client_config(
            Some(&consumer.tls_identity),
            consumer.roots.clone(),
            ExpectedServer::Uri(provider.san_uri()),
        )
        .map_err(|e| format!("TLS configuration: {e}"))?;
        let mut config = (*config).clone();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let tcp = TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| format!("connecting to {host}:{port}: {e}"))?;
        let name = ServerName::try_from(host.clone()).map_err(|e| format!("{host}: {e}"))?;
        let tls = TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS with {host}:{port} (must be {provider}): {e}"))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| format!("HTTP: {e}"))?;
        tokio::spawn(connection);
        let authority = uri
            .authority()
            .map(|a| a.as_str().to_owned())
            .unwrap_or_default();
        let mut request = http::Request::builder()
            .method(method)
            .uri(uri.path_and_query().map_or("/", |p| p.as_str()))
            .header(http::header::HOST, authority);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let request = request
            .body(Full::new(bytes::Bytes::from(body)))
            .map_err(|e| format!("the request: {e}"))?;
        sender
            .send_request(request)
            .await
            .map_err(|e| format!("HTTP: {e}"))
    })
    .await
    .unwrap_or_else(|_| {
        Err(format!(
            "no answer within {}",
            humantime::format_duration(CALL_WITHIN)
        ))
    })
}

// ---- this node's operator suspends or terminates its own pull ---------------------

/// The consumer process IDs of transfers whose provider is owed a suspension or
/// termination message from this node, with what is owed ([`Notice`]).
const NOTICES: &str = "dsp_consumer_transfer_outbox";
/// The longest the notice worker sleeps between looks at its outbox.
const NOTICE_TICK: Duration = Duration::from_secs(1);
/// How many times a notice is tried before it is given up (recorded on the transfer).
const NOTICE_ATTEMPTS: u32 = 8;
/// The longest wait between two tries of a notice (s).
const NOTICE_BACKOFF: i64 = 30;
/// How long an operator's command waits for another step on the same transfer.
const CONTROL_WAIT: Duration = Duration::from_secs(15);

/// A suspension or termination owed to the provider: the operator's reason, and the
/// tries so far. What it is follows from the transfer's state.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Notice {
    reason: String,
    attempts: u32,
    next_attempt: i64,
}

fn notice_claim(pid: &str) -> String {
    format!("dsp-consumer-transfer/{pid}")
}

fn load_notice(storage: &dyn Storage, pid: &str) -> Result<Option<Notice>, String> {
    match storage
        .get(NOTICES, pid.as_bytes())
        .map_err(|e| e.to_string())?
    {
        None => Ok(None),
        Some(bytes) => Ok(Some(serde_json::from_slice(&bytes).unwrap_or_default())),
    }
}

/// This node, as consumer, suspends or terminates its DSP transfer `pid` (its consumer
/// process ID); `None` when no such transfer is on record here. The new state and the
/// message owed to the provider are durable together before anything is sent, so a
/// pull in progress stops at its next chunk and a crash before the send still sends
/// it (the notice worker, [`run_notices`]). A suspended transfer is restarted by
/// pulling again; a terminated one is never pulled again.
pub async fn consumer_action(
    storage: &dyn Storage,
    contracts: &Contracts,
    log: &AuditLog,
    pid: &str,
    action: ProviderAction,
    reason: &str,
) -> Result<Option<ConsumerTransfer>, ControlError> {
    let load = || ConsumerTransfer::load(storage, pid).map_err(ControlError::Unavailable);
    if load()?.is_none() {
        return Ok(None);
    }
    let _claim = contracts
        .claims()
        .claim_within(&notice_claim(pid), CONTROL_WAIT)
        .await
        .ok_or_else(|| {
            ControlError::Unavailable(format!(
                "a message about transfer {pid} is being sent; try again"
            ))
        })?;
    let Some(mut record) = load()? else {
        return Ok(None);
    };
    let invalid = |r: &ConsumerTransfer, what: &str, needs: &str| {
        ControlError::Invalid(format!(
            "transfer {} is {}; {what} needs it {needs}",
            r.consumer_pid, r.state
        ))
    };
    let detail = match action {
        ProviderAction::Suspend => {
            if record.state != S::Started {
                return Err(invalid(&record, "a suspension", "STARTED"));
            }
            record.state = S::Suspended;
            format!(
                "DSP transfer {pid} SUSPENDED by this node as consumer: {reason}; the \
                 provider is told"
            )
        }
        ProviderAction::Restart => {
            return Err(ControlError::Invalid(format!(
                "this node is the consumer of transfer {pid}: pull again to restart it \
                 (liutong transfer pull --agreement {} --peer {})",
                record.agreement_id, record.peer_url
            )));
        }
        ProviderAction::Terminate => {
            if record.state.is_final() {
                return Err(invalid(
                    &record,
                    "a termination",
                    "REQUESTED, STARTED or SUSPENDED",
                ));
            }
            record.state = S::Terminated;
            record.ended_here = true;
            format!(
                "DSP transfer {pid} TERMINATED by this node as consumer: {reason}; the \
                 provider is told"
            )
        }
    };
    record.token = None;
    record.endpoint = None;
    record.reason = reason.to_owned();
    // Without the provider's process ID (its answer to the request never came) there
    // is no address to tell it at; its token, if any, is never used.
    if record.provider_pid.is_some() {
        let notice = Notice {
            reason: reason.to_owned(),
            ..Notice::default()
        };
        storage
            .put(
                NOTICES,
                pid.as_bytes(),
                &serde_json::to_vec(&notice).expect("notices serialize"),
            )
            .map_err(|e| ControlError::Unavailable(e.to_string()))?;
    }
    record
        .store(storage)
        .await
        .map_err(ControlError::Unavailable)?;
    let mut event = Event::new(EventKind::Transfer, now(), detail);
    event.participant = Some(record.provider.clone());
    event.agreement = Some(record.agreement_id.clone());
    if let Err(e) = log.append(&event).await {
        tracing::error!(error = %e, "cannot record a DSP transfer step");
    }
    Ok(Some(record))
}

/// A pull refuses an agreement whose transfer this node's operator terminated (and
/// that has no other transfer in progress with that provider).
fn refuse_ended_here(
    storage: &dyn Storage,
    agreement_id: &str,
    peer_url: &str,
) -> Result<(), TransferError> {
    let ended = consumer_transfers(storage)
        .map_err(stored)?
        .into_iter()
        .find(|r| r.agreement_id == agreement_id && r.peer_url == peer_url && r.ended_here);
    match ended {
        Some(r) => Err(TransferError::Forbidden(format!(
            "transfer {} of agreement {agreement_id} was terminated at this node ({}); a \
             terminated transfer is not pulled again",
            r.consumer_pid, r.reason
        ))),
        None => Ok(()),
    }
}

/// The check a download makes before each chunk: the transfer is still STARTED here
/// (this node's operator did not suspend or terminate it meanwhile).
fn still_started(storage: &dyn Storage, pid: &str) -> Result<(), TransferError> {
    match ConsumerTransfer::load(storage, pid).map_err(stored)? {
        Some(r) if r.state == S::Started => Ok(()),
        Some(r) => Err(TransferError::Forbidden(format!(
            "transfer {pid} was made {} at this node ({}); the pull stopped{}",
            r.state,
            r.reason,
            if r.state == S::Suspended {
                "; pull again to restart it"
            } else {
                ""
            }
        ))),
        None => Err(TransferError::Internal(format!(
            "transfer {pid} is not on record"
        ))),
    }
}

/// Sends the notice owed for `pid` now, whatever its backoff: a restart must not reach
/// the provider before this node's suspension has.
async fn deliver_notice_now(consumer: &DspConsumer, pid: &str) -> Result<(), TransferError> {
    let storage = consumer.storage.as_ref();
    if load_notice(storage, pid).map_err(stored)?.is_none() {
        return Ok(());
    }
    send_notice(consumer, pid, true)
        .await
        .map_err(|e| TransferError::Unreachable(format!("telling the provider first: {e}")))?;
    match load_notice(storage, pid).map_err(stored)? {
        None => Ok(()),
        Some(_) => Err(TransferError::Unreachable(format!(
            "this node's suspension of transfer {pid} has not reached the provider yet; \
             pull again later"
        ))),
    }
}

/// Sends the suspension or termination owed for transfer `pid` (unless its next try is
/// not due and `now` is false). Told, the notice is removed; a provider that refuses it
/// (4xx) is not asked again, and that is recorded on the transfer; a call that does
/// not get through is tried again after 1, 2, 4 … s, [`NOTICE_ATTEMPTS`] times.
async fn send_notice(consumer: &DspConsumer, pid: &str, due_now: bool) -> Result<(), String> {
    let storage = consumer.storage.as_ref();
    let Some(_claim) = consumer.contracts.claims().try_claim(&notice_claim(pid)) else {
        return Ok(());
    };
    let Some(mut notice) = load_notice(storage, pid)? else {
        return Ok(());
    };
    let Some(mut record) = ConsumerTransfer::load(storage, pid)? else {
        storage
            .delete(NOTICES, pid.as_bytes())
            .map_err(|e| e.to_string())?;
        return Ok(());
    };
    let (ty, kind, code) = match record.state {
        S::Suspended => (
            "TransferSuspensionMessage",
            "suspension",
            "consumer.suspended",
        ),
        S::Terminated => (
            "TransferTerminationMessage",
            "termination",
            "consumer.terminated",
        ),
        _ => {
            // Restarted meanwhile: the suspension is no longer news.
            storage
                .delete(NOTICES, pid.as_bytes())
                .map_err(|e| e.to_string())?;
            return storage.flush().await.map_err(|e| e.to_string());
        }
    };
    if !due_now && notice.next_attempt > now() {
        return Ok(());
    }
    let provider = ParticipantId::parse(&record.provider).map_err(|e| e.to_string())?;
    let ppid = record.provider_pid.clone().unwrap_or_default();
    let body = json!({
        "@context": [CONTEXT],
        "@type": ty,
        "providerPid": ppid,
        "consumerPid": record.consumer_pid,
        "code": code,
        "reason": [notice.reason],
    });
    // Pause point `dsp.consumer.transfer_notice`: this node's suspension or
    // termination of its transfer is durable, the provider has not been told yet.
    crate::pause::at("dsp.consumer.transfer_notice").await;
    let sent = post(
        consumer,
        &record.peer_url,
        &provider,
        &format!("/transfers/{ppid}/{kind}"),
        &body,
    )
    .await;
    let done = |storage: &dyn Storage| {
        storage
            .delete(NOTICES, pid.as_bytes())
            .map_err(|e| e.to_string())
    };
    let why = match sent {
        Ok((status, _)) if status.is_success() => {
            done(storage)?;
            return storage.flush().await.map_err(|e| e.to_string());
        }
        Ok((status, answer)) if status.is_client_error() => {
            // The provider will not take it (it ended the transfer itself, say): asking
            // again changes nothing.
            record.reason = format!(
                "{}; the provider refused the {kind} ({status}): {}",
                record.reason,
                reason(&answer)
            );
            done(storage)?;
            return record.store(storage).await;
        }
        Ok((status, answer)) => format!("the provider answered {status}: {}", reason(&answer)),
        Err(e) => e,
    };
    notice.attempts += 1;
    if notice.attempts >= NOTICE_ATTEMPTS {
        record.reason = format!(
            "{}; the {kind} message was given up after {} attempts: {why}",
            record.reason, notice.attempts
        );
        done(storage)?;
        record.store(storage).await?;
        return Err(why);
    }
    notice.next_attempt = now() + (1i64 << (notice.attempts - 1).min(5)).min(NOTICE_BACKOFF);
    storage
        .put(
            NOTICES,
            pid.as_bytes(),
            &serde_json::to_vec(&notice).expect("notices serialize"),
        )
        .map_err(|e| e.to_string())?;
    storage.flush().await.map_err(|e| e.to_string())?;
    Err(why)
}

/// Sends the suspensions and terminations this node owes providers, at least every
/// second, until `shutdown` fires.
pub async fn run_notices(consumer: Arc<DspConsumer>, mut shutdown: Shutdown) {
    loop {
        match consumer.storage.scan_prefix(NOTICES, b"") {
            Ok(owed) => {
                for (key, _) in owed {
                    let pid = String::from_utf8_lossy(&key).into_owned();
                    match shutdown
                        .unless_fired(send_notice(&consumer, &pid, false))
                        .await
                    {
                        None => return,
                        Some(Err(e)) => {
                            tracing::warn!(transfer = %pid, error = %e, "cannot tell the DSP provider");
                        }
                        Some(Ok(())) => {}
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "the DSP consumer's outbox cannot be read"),
        }
        tokio::select! {
            () = shutdown.fired() => return,
            () = tokio::time::sleep(NOTICE_TICK) => {}
        }
    }
}

impl DspConsumer {
    /// The consumer role as the DSP listener's state names this node.
    pub fn from_state(state: &DspState) -> Self {
        Self {
            base_url: state.base_url.clone(),
            tls_identity: state.tls_identity.clone(),
            roots: state.data_space_roots.clone(),
            storage: state.storage.clone(),
            contracts: state.contracts.clone(),
            transfers: state.transfers.clone(),
        }
    }
}

// ---- receipts of agreements reached only over DSP ---------------------------------

fn refusal(kind: crate::base::error::ErrorKind, message: String) -> PeerRefusal {
    PeerRefusal {
        kind,
        message,
        refusal: None,
    }
}

fn not_reached(e: impl std::fmt::Display) -> PeerRefusal {
    refusal(crate::base::error::ErrorKind::Unavailable, e.to_string())
}

/// A provider's answer that is not a success, as a refusal: 5xx is worth another try,
/// 4xx is an answer about the transfer itself.
fn answered(what: &str, status: http::StatusCode, answer: &[u8]) -> PeerRefusal {
    let message = format!("{what}: the provider answered {status}: {}", reason(answer));
    if status.is_server_error() {
        not_reached(message)
    } else {
        refusal(crate::base::error::ErrorKind::FailedPrecondition, message)
    }
}

/// The consumer role as the transfer component's [`crate::transfer::ReceiptBinding`]:
/// a weak handle, since the consumer role holds the transfer component and the two must
/// not keep each other (and the storage) alive once the node stops.
pub struct Receipts(std::sync::Weak<DspConsumer>);

impl Receipts {
    pub fn of(consumer: &Arc<DspConsumer>) -> Self {
        Self(Arc::downgrade(consumer))
    }
}

impl crate::transfer::ReceiptBinding for Receipts {
    fn send_receipt(
        self: Arc<Self>,
        agreement_id: String,
        receipt: Envelope,
    ) -> crate::base::BoxFuture<'static, Result<(), PeerRefusal>> {
        Box::pin(async move {
            let consumer = self
                .0
                .upgrade()
                .ok_or_else(|| not_reached("the node's DSP binding has stopped"))?;
            carry_receipt(&consumer, &agreement_id, receipt).await
        })
    }
}

/// Carries the signed receipt of `agreement_id` to its provider in the completion
/// message of the agreement's latest DSP transfer. A provider that shows that transfer
/// COMPLETED already has it (its completion was taken with the receipt); a transfer
/// suspended is restarted first, as the completion needs it STARTED.
async fn carry_receipt(
    consumer: &DspConsumer,
    agreement_id: &str,
    receipt: Envelope,
) -> Result<(), PeerRefusal> {
    let storage = consumer.storage.as_ref();
    let mut record = consumer_transfers(storage)
        .map_err(not_reached)?
        .into_iter()
        .filter(|r| r.agreement_id == agreement_id && r.provider_pid.is_some())
        .max_by_key(|r| r.updated_at)
        .ok_or_else(|| {
            refusal(
                crate::base::error::ErrorKind::FailedPrecondition,
                format!(
                    "no DSP transfer of agreement {agreement_id} is on record to carry its \
                     receipt"
                ),
            )
        })?;
    let provider = ParticipantId::parse(&record.provider).map_err(not_reached)?;
    let ppid = record.provider_pid.clone().unwrap_or_default();
    let uri: http::Uri = format!("{}/transfers/{ppid}", record.peer_url)
        .parse()
        .map_err(not_reached)?;
    let response = call(consumer, &uri, &provider, "GET", Vec::new(), Vec::new())
        .await
        .map_err(not_reached)?;
    let status = response.status();
    let answer = read_bounded(response.into_body()).await;
    if !status.is_success() {
        return Err(answered("asking the transfer's state", status, &answer));
    }
    let theirs = serde_json::from_slice::<Json>(&answer)
        .ok()
        .and_then(|j| j["state"].as_str().and_then(S::parse))
        .ok_or_else(|| not_reached("the provider's transfer process names no state"))?;
    match theirs {
        S::Completed => {}
        S::Started | S::Suspended => {
            if theirs == S::Suspended {
                let body = json!({
                    "@context": [CONTEXT],
                    "@type": "TransferStartMessage",
                    "providerPid": ppid,
                    "consumerPid": record.consumer_pid,
                });
                let (status, answer) = post(
                    consumer,
                    &record.peer_url,
                    &provider,
                    &format!("/transfers/{ppid}/start"),
                    &body,
                )
                .await
                .map_err(not_reached)?;
                if !status.is_success() {
                    // Suspended by the provider: the receipt waits for its restart.
                    return Err(not_reached(format!(
                        "restarting the transfer to complete it: the provider answered \
                         {status}: {}",
                        reason(&answer)
                    )));
                }
            }
            let body = json!({
                "@context": [CONTEXT],
                "@type": "TransferCompletionMessage",
                "providerPid": ppid,
                "consumerPid": record.consumer_pid,
                RECEIPT: serde_json::to_value(&receipt).expect("envelopes serialize"),
            });
            let (status, answer) = post(
                consumer,
                &record.peer_url,
                &provider,
                &format!("/transfers/{ppid}/completion"),
                &body,
            )
            .await
            .map_err(not_reached)?;
            if !status.is_success() {
                return Err(answered("the completion", status, &answer));
            }
        }
        other => {
            return Err(refusal(
                crate::base::error::ErrorKind::FailedPrecondition,
                format!(
                    "the provider's transfer {ppid} is {other}; a completion carrying the \
                     receipt needs it STARTED"
                ),
            ));
        }
    }
    if record.state != S::Completed {
        record.state = S::Completed;
        record.token = None;
        record.store(storage).await.map_err(not_reached)?;
    }
    Ok(())
}

// ---- callbacks --------------------------------------------------------------------

fn bad(reason: impl Into<String>) -> DspError {
    DspError::bad_request(Area::Transfer, reason)
}

/// The transfer `pid` of this node whose provider is the caller: 404 otherwise.
fn from_provider(
    state: &DspState,
    member: &Membership,
    pid: &str,
) -> Result<ConsumerTransfer, DspError> {
    match ConsumerTransfer::load(state.storage.as_ref(), pid)
        .map_err(|e| DspError::new(StatusCode::SERVICE_UNAVAILABLE, Area::Transfer, e))?
    {
        Some(r) if r.provider == member.participant_id.as_str() => Ok(r),
        _ => Err(DspError::not_found(
            Area::Transfer,
            format!(
                "no transfer process {} of this consumer with you as provider",
                crate::base::bounded::shown(pid, 128)
            ),
        )),
    }
}

async fn callback_message(
    state: &DspState,
    member: &Membership,
    pid: &str,
    body: Body,
    expected: &str,
) -> Result<(ConsumerTransfer, Map<String, Json>), DspError> {
    let body = axum::body::to_bytes(body, state.max_body)
        .await
        .map_err(|_| bad("the message is larger than this node accepts or was cut off"))?;
    let message = message::parse(&body, expected).map_err(bad)?;
    let record = from_provider(state, member, pid)?;
    let pids = |e: DspError| {
        e.with_pids(
            record.provider_pid.as_deref().unwrap_or_default(),
            &record.consumer_pid,
        )
    };
    let consumer = text(&message, "consumerPid").map_err(|e| pids(in_area(e)))?;
    if consumer != Some(record.consumer_pid.as_str()) {
        return Err(pids(bad(format!(
            "consumerPid must be {}, the transfer this path names",
            record.consumer_pid
        ))));
    }
    let provider = text(&message, "providerPid").map_err(|e| pids(in_area(e)))?;
    // The start message may come before the answer to the request is read.
    if let (Some(known), Some(named)) = (&record.provider_pid, provider)
        && known != named
    {
        return Err(pids(bad(format!("providerPid must be {known}"))));
    }
    Ok((record, message))
}

/// `POST /callback/transfers/:consumerPid/start`: the data address.
pub async fn on_start(
    State(state): State<DspState>,
    Extension(PeerCaller(member)): Extension<PeerCaller>,
    Path(pid): Path<String>,
    body: Body,
) -> Result<Response, DspError> {
    let (mut record, message) =
        callback_message(&state, &member, &pid, body, "TransferStartMessage").await?;
    let pids = (
        record.provider_pid.clone().unwrap_or_default(),
        record.consumer_pid.clone(),
    );
    let refuse = |e: DspError| e.with_pids(&pids.0, &pids.1);
    if record.state.is_final() {
        return Err(refuse(bad(format!(
            "transfer {pid} is {}; a start needs it REQUESTED, STARTED or SUSPENDED",
            record.state
        ))));
    }
    let address = message
        .get("dataAddress")
        .and_then(Json::as_object)
        .ok_or_else(|| refuse(bad(format!("dataAddress is missing; {FORMAT} needs one"))))?;
    if of_unsigned_agreement(&state, &record) {
        return plain_start(&state, record, &message, address)
            .await
            .map_err(refuse);
    }
    let endpoint = address
        .get("endpoint")
        .and_then(Json::as_str)
        .filter(|e| e.starts_with("https://"))
        .ok_or_else(|| refuse(bad("dataAddress.endpoint must be an https:// URL")))?;
    let property = |name: &str| {
        address
            .get("endpointProperties")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
            .find(|p| p.get("name").and_then(Json::as_str) == Some(name))
            .and_then(|p| p.get("value").and_then(Json::as_str))
    };
    let token = property("authorization")
        .ok_or_else(|| refuse(bad("dataAddress: the authorization property is missing")))?;
    let expires = property("expiresAt")
        .and_then(|t| {
            time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
        })
        .map_or(0, |t| t.unix_timestamp());
    if let Some(named) = text(&message, "providerPid").map_err(|e| refuse(in_area(e)))? {
        record.provider_pid.get_or_insert_with(|| named.to_owned());
    }
    record.state = S::Started;
    record.endpoint = Some(endpoint.to_owned());
    record.token = Some(token.to_owned());
    record.token_expires = expires;
    record.store(state.storage.as_ref()).await.map_err(|e| {
        refuse(DspError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            Area::Transfer,
            e,
        ))
    })?;
    Ok(StatusCode::OK.into_response())
}

async fn provider_step(
    state: DspState,
    member: Membership,
    pid: String,
    body: Body,
    expected: &str,
    to: S,
) -> Result<Response, DspError> {
    let (mut record, message) = callback_message(&state, &member, &pid, body, expected).await?;
    let refuse = |e: DspError| {
        e.with_pids(
            record.provider_pid.as_deref().unwrap_or_default(),
            &record.consumer_pid,
        )
    };
    let allowed = match to {
        S::Completed | S::Suspended => record.state == S::Started,
        _ => !record.state.is_final(),
    };
    if !allowed {
        return Err(refuse(bad(format!(
            "transfer {pid} is {}; the provider cannot make it {to}",
            record.state
        ))));
    }
    record.state = to;
    record.token = None;
    if let Some(Json::Array(reasons)) = message.get("reason") {
        record.reason = reasons
            .iter()
            .take(8)
            .map(|r| r.as_str().map_or_else(|| r.to_string(), str::to_owned))
            .collect::<Vec<_>>()
            .join("; ");
    }
    record.store(state.storage.as_ref()).await.map_err(|e| {
        refuse(DspError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            Area::Transfer,
            e,
        ))
    })?;
    Ok(StatusCode::OK.into_response())
}

/// `POST /callback/transfers/:consumerPid/completion`.
pub async fn on_completion(
    State(state): State<DspState>,
    Extension(PeerCaller(member)): Extension<PeerCaller>,
    Path(pid): Path<String>,
    body: Body,
) -> Result<Response, DspError> {
    provider_step(
        state,
        member,
        pid,
        body,
        "TransferCompletionMessage",
        S::Completed,
    )
    .await
}

/// `POST /callback/transfers/:consumerPid/suspension`.
pub async fn on_suspension(
    State(state): State<DspState>,
    Extension(PeerCaller(member)): Extension<PeerCaller>,
    Path(pid): Path<String>,
    body: Body,
) -> Result<Response, DspError> {
    provider_step(
        state,
        member,
        pid,
        body,
        "TransferSuspensionMessage",
        S::Suspended,
    )
    .await
}

/// `POST /callback/transfers/:consumerPid/termination`.
pub async fn on_termination(
    State(state): State<DspState>,
    Extension(PeerCaller(member)): Extension<PeerCaller>,
    Path(pid): Path<String>,
    body: Body,
) -> Result<Response, DspError> {
    provider_step(
        state,
        member,
        pid,
        body,
        "TransferTerminationMessage",
        S::Terminated,
    )
    .await
}

// ---- a plain provider: an agreement it did not sign ---------------------------------
//
// A plain DSP provider signs no manifest and no chunk list, so its bytes go to the
// transfer component's unverified pull (`Transfers::pull_unverified`): sealed and
// resumable like any copy, hashed whole as they arrive, recorded as unverified. Its
// data address is the only thing that aims this node at a server, so it is read into
// bounded values and taken only as an `https://` URL on the provider's own host (the
// host of the DSP URL this node reached it at, any port, no user info); the server
// there must still present the provider's certificate, as for every call. A start
// message aiming elsewhere ends the transfer, recorded, before anything is fetched.

/// The longest endpoint URL, and property value, of a plain provider's data address.
const MAX_ENDPOINT: usize = 2048;
const MAX_PROPERTY: usize = 4096;

/// The `agreementId` a transfer request names: this node's agreement IRI for a Liutong
/// provider, the plain provider's own agreement `@id` for an agreement it did not sign.
fn agreement_iri(consumer: &DspConsumer, agreement_id: &str) -> String {
    consumer
        .contracts
        .finalized(Role::Consumer, agreement_id)
        .ok()
        .filter(|n| !n.agreement_signed_by_provider())
        .and_then(|n| n.agreement_content())
        .and_then(|a| {
            a.policy
                .get("@id")
                .and_then(Json::as_str)
                .map(str::to_owned)
        })
        .unwrap_or_else(|| format!("urn:liutong:agreement:{agreement_id}"))
}

/// Whether `record` is a transfer under an agreement its provider did not sign.
fn of_unsigned_agreement(state: &DspState, record: &ConsumerTransfer) -> bool {
    state
        .contracts
        .finalized(Role::Consumer, &record.agreement_id)
        .is_ok_and(|n| !n.agreement_signed_by_provider())
}

/// [`pull`] under an agreement the provider did not sign: the same processes and
/// messages, the bytes taken by the unverified pull.
async fn pull_unsigned(
    consumer: Arc<DspConsumer>,
    peer_url: &str,
    agreement_id: &str,
    max_chunks: u32,
    progress_tx: mpsc::Sender<TransferProgress>,
) -> Result<TransferProgress, TransferError> {
    let n = consumer.contracts.finalized(Role::Consumer, agreement_id)?;
    let provider = n.peer.clone();
    let opened: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
    let open = {
        let (consumer, peer_url, agreement_id) = (
            consumer.clone(),
            peer_url.to_owned(),
            agreement_id.to_owned(),
        );
        let (provider, opened) = (provider.clone(), opened.clone());
        Box::new(move |offset: u64| {
            Box::pin(async move {
                let record = process(&consumer, &peer_url, &agreement_id, &provider).await?;
                *opened.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some(record.consumer_pid.clone());
                download_plain(&consumer, &record, &provider, offset).await
            }) as crate::base::BoxFuture<'static, _>
        }) as crate::transfer::OpenBytes
    };
    let result = consumer
        .transfers
        .pull_unverified(agreement_id, max_chunks, progress_tx, open)
        .await;
    let pid = opened.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let done = result?;
    let storage = consumer.storage.as_ref();
    let record = match &pid {
        Some(pid) => ConsumerTransfer::load(storage, pid).map_err(stored)?,
        // Completed by an earlier pull whose completion message did not get through:
        // it is sent again.
        None => consumer_transfers(storage)
            .map_err(stored)?
            .into_iter()
            .find(|r| {
                r.agreement_id == agreement_id
                    && r.peer_url == peer_url
                    && r.provider_pid.is_some()
                    && matches!(r.state, S::Started | S::Suspended)
            }),
    };
    let Some(mut record) = record else {
        return Ok(done);
    };
    if done.state == TransferState::Completed.as_str() {
        complete(&consumer, &mut record, &provider).await?;
    } else if pid.is_some()
        && let Err(e) = message_to_provider(&consumer, &mut record, &provider, "suspension").await
    {
        tracing::warn!(transfer = %record.consumer_pid, error = %e, "cannot suspend the DSP transfer");
    }
    Ok(done)
}

/// Checks a plain provider's data endpoint: `https://`, no user info, on the host of
/// `peer_url` (the provider's DSP URL).
fn check_endpoint(uri: &http::Uri, peer_url: &str) -> Result<(), String> {
    let shown = crate::base::bounded::shown(&uri.to_string(), 128).to_string();
    if uri.scheme_str() != Some("https") {
        return Err(format!(
            "dataAddress.endpoint {shown} is not an https:// URL: a provider's data is \
             fetched only over TLS"
        ));
    }
    let Some(authority) = uri.authority() else {
        return Err(format!("dataAddress.endpoint {shown} names no host"));
    };
    if authority.as_str().contains('@') {
        return Err(format!("dataAddress.endpoint {shown} carries user info"));
    }
    let own = peer_url
        .parse::<http::Uri>()
        .ok()
        .and_then(|u| u.host().map(str::to_ascii_lowercase))
        .unwrap_or_default();
    let named = authority.host().to_ascii_lowercase();
    if named != own {
        return Err(format!(
            "dataAddress.endpoint names host {}, not {}, the provider's own host (its DSP \
             URL): this node fetches a provider's data from that host only",
            crate::base::bounded::shown(&named, 128),
            crate::base::bounded::shown(&own, 128)
        ));
    }
    Ok(())
}

/// A plain provider's data address, read into bounded values.
#[derive(Debug)]
struct PlainDataAddress {
    endpoint: String,
    /// The `Authorization` header value to send (empty: none).
    authorization: String,
    /// The token's expiry (Unix s; 0: not given).
    expires: i64,
}

/// Reads the `dataAddress` of a plain provider's start message as plain DSP and EDC
/// connectors write it: `endpoint`, `endpointType`, and `endpointProperties` whose
/// names may be full IRIs (`https://w3id.org/edc/v0.0.1/ns/authorization`) or plain
/// (`authorization`). `authType` `bearer` (or none given with a value that already
/// reads `Bearer …`) sends the token as a bearer token; without `authType` the
/// `authorization` value is sent as the header's value, as EDC's data planes take it;
/// any other `authType` is refused.
fn plain_data_address(
    address: &Map<String, Json>,
    peer_url: &str,
) -> Result<PlainDataAddress, String> {
    let endpoint = address
        .get("endpoint")
        .and_then(Json::as_str)
        .ok_or("dataAddress.endpoint is missing or not a string")?;
    if endpoint.len() > MAX_ENDPOINT {
        return Err(format!(
            "dataAddress.endpoint is longer than {MAX_ENDPOINT} characters"
        ));
    }
    let uri: http::Uri = endpoint
        .parse()
        .map_err(|e| format!("dataAddress.endpoint is not a URL: {e}"))?;
    check_endpoint(&uri, peer_url)?;
    if let Some(t) = address.get("endpointType")
        && t.as_str().is_none_or(|t| t.len() > MAX_ENDPOINT)
    {
        return Err("dataAddress.endpointType must be an IRI".into());
    }
    let mut properties = std::collections::BTreeMap::new();
    for p in address
        .get("endpointProperties")
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
        .take(64)
    {
        let (Some(name), Some(value)) = (
            p.get("name").and_then(Json::as_str),
            p.get("value").and_then(Json::as_str),
        ) else {
            return Err(
                "dataAddress.endpointProperties: each needs a name and a string value".into(),
            );
        };
        let local = name.rsplit(['/', '#', ':']).next().unwrap_or(name);
        if value.len() > MAX_PROPERTY || !value.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            return Err(format!(
                "dataAddress property {}: its value must be at most {MAX_PROPERTY} printable \
                 ASCII characters",
                crate::base::bounded::shown(local, 64)
            ));
        }
        properties.insert(local.to_owned(), value.to_owned());
    }
    let token = properties.get("authorization").cloned().unwrap_or_default();
    let authorization = match properties.get("authType").map(|t| t.to_ascii_lowercase()) {
        None => token,
        Some(t) if t == "bearer" => {
            if token.is_empty() || token.to_ascii_lowercase().starts_with("bearer ") {
                token
            } else {
                format!("Bearer {token}")
            }
        }
        Some(other) => {
            return Err(format!(
                "dataAddress authType {}: this node sends only a bearer token",
                crate::base::bounded::shown(&other, 64)
            ));
        }
    };
    let expires = properties
        .get("expiresAt")
        .and_then(|t| {
            time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
        })
        .map_or(0, |t| t.unix_timestamp());
    Ok(PlainDataAddress {
        endpoint: endpoint.to_owned(),
        authorization,
        expires,
    })
}

/// The start message of a plain provider: its data address taken (STARTED), or
/// refused with the transfer ended and the refusal on record and in the audit log.
async fn plain_start(
    state: &DspState,
    mut record: ConsumerTransfer,
    message: &Map<String, Json>,
    address: &Map<String, Json>,
) -> Result<Response, DspError> {
    let unavailable = |e: String| DspError::new(StatusCode::SERVICE_UNAVAILABLE, Area::Transfer, e);
    if let Some(named) = text(message, "providerPid").map_err(in_area)? {
        record.provider_pid.get_or_insert_with(|| named.to_owned());
    }
    let address = match plain_data_address(address, &record.peer_url) {
        Ok(a) => a,
        Err(why) => {
            record.state = S::Terminated;
            record.endpoint = None;
            record.token = None;
            record.reason = format!("the provider's data address was refused: {why}");
            record
                .store(state.storage.as_ref())
                .await
                .map_err(unavailable)?;
            let mut event = crate::audit::log::Event::new(
                crate::audit::log::EventKind::Transfer,
                now(),
                format!(
                    "transfer {} TERMINATED: {}",
                    record.consumer_pid, record.reason
                ),
            );
            event.participant = Some(record.provider.clone());
            event.agreement = Some(record.agreement_id.clone());
            state
                .audit
                .append(&event)
                .await
                .map_err(|e| unavailable(e.to_string()))?;
            return Err(bad(record.reason));
        }
    };
    record.state = S::Started;
    record.endpoint = Some(address.endpoint);
    record.token = Some(address.authorization);
    record.token_expires = address.expires;
    record
        .store(state.storage.as_ref())
        .await
        .map_err(unavailable)?;
    Ok(StatusCode::OK.into_response())
}

/// Downloads a plain provider's data address of `record` from `offset` (with `Range`
/// past 0): the payload's size as its answer states it (`Content-Length`, or the total
/// of `Content-Range`), bounded, and its bytes.
async fn download_plain(
    consumer: &DspConsumer,
    record: &ConsumerTransfer,
    provider: &ParticipantId,
    offset: u64,
) -> Result<(u64, crate::transfer::ByteStream), TransferError> {
    let endpoint = record
        .endpoint
        .clone()
        .ok_or_else(|| TransferError::Invalid("the start message named no endpoint".into()))?;
    let uri: http::Uri = endpoint
        .parse()
        .map_err(|e| TransferError::Invalid(format!("the data address {endpoint}: {e}")))?;
    // Checked when the start message came; again, since the record names the server.
    check_endpoint(&uri, &record.peer_url).map_err(TransferError::Invalid)?;
    let mut headers = Vec::new();
    if let Some(value) = record.token.as_ref().filter(|t| !t.is_empty()) {
        headers.push((http::header::AUTHORIZATION, value.clone()));
    }
    if offset > 0 {
        headers.push((http::header::RANGE, format!("bytes={offset}-")));
    }
    let response = call(consumer, &uri, provider, "GET", headers, Vec::new())
        .await
        .map_err(unreachable)?;
    let status = response.status();
    let header = |name: http::header::HeaderName| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let size = match status {
        http::StatusCode::OK if offset == 0 => header(http::header::CONTENT_LENGTH)
            .and_then(|l| l.trim().parse::<u64>().ok())
            .ok_or_else(|| {
                TransferError::Invalid(
                    "the provider's data answer states no Content-Length; a payload no \
                     provider signed is taken only with its size stated"
                        .into(),
                )
            })?,
        http::StatusCode::PARTIAL_CONTENT if offset > 0 => {
            let range = header(http::header::CONTENT_RANGE).unwrap_or_default();
            content_range_total(&range, offset).ok_or_else(|| {
                TransferError::Invalid(format!(
                    "the provider answered Range bytes={offset}- with Content-Range {}",
                    crate::base::bounded::shown(&range, 64)
                ))
            })?
        }
        _ => {
            let body = read_bounded(response.into_body()).await;
            return Err(refused("downloading the data", status, &body));
        }
    };
    crate::transfer::check_unverified_size(size)?;
    // A transfer suspended or terminated at this node while it downloads stops at the
    // next piece, as a verified pull stops at its next chunk.
    let (storage, pid) = (consumer.storage.clone(), record.consumer_pid.clone());
    let bytes = tokio_stream::StreamExt::filter_map(
        http_body_util::BodyStream::new(response.into_body()),
        move |frame| match frame {
            Ok(frame) => frame.into_data().ok().map(|data| {
                still_started(storage.as_ref(), &pid)?;
                Ok(data)
            }),
            Err(e) => Some(Err(TransferError::Unreachable(format!(
                "the download was cut off: {e}"
            )))),
        },
    );
    Ok((size, Box::pin(bytes)))
}

/// The total of a `Content-Range: bytes <offset>-<end>/<total>` answering a range from
/// `offset`.
fn content_range_total(range: &str, offset: u64) -> Option<u64> {
    let (span, total) = range.strip_prefix("bytes ")?.split_once('/')?;
    let (start, end) = span.split_once('-')?;
    let (start, end, total) = (
        start.trim().parse::<u64>().ok()?,
        end.trim().parse::<u64>().ok()?,
        total.trim().parse::<u64>().ok()?,
    );
    (start == offset && end >= start && end < total).then_some(total)
}
