//! The transfer process protocol's HTTPS binding, provider role, and its `HttpData-PULL`
//! data endpoint:
//! `POST /transfers/request`, `GET /transfers/:providerPid`,
//! `POST /transfers/:providerPid/start|completion|suspension|termination`, and
//! `GET /data/:providerPid`.
//!
//! A consumer asks for the product of a FINALIZED agreement it holds with this node
//! (`TransferRequestMessage`, format `HttpData-PULL`). Once the transfer is on disk it
//! is answered 201 REQUESTED; the `TransferStartMessage` follows at its callback
//! address, sent from an outbox as negotiation news is (the same rule: only to a server
//! presenting the consumer's own certificate). Its `dataAddress` names this listener's
//! data endpoint and a bearer token bound to that transfer and its agreement: random,
//! kept only as its SHA-256, valid for `[dsp] token_lifetime` (10 minutes unless set). A start message sent again
//! (after a failed try, or a restart after suspension) carries a new token, which
//! replaces the old one.
//!
//! The data endpoint takes the member's certificate AND the token, both the transfer's
//! consumer's, while the transfer is STARTED. Every request to it is a delivery of the
//! transfer component, as the gRPC pull is: the same checks of agreement, policy and
//! usage control, the same desensitized or watermarked bytes, the same audit entries.
//! The body is the payload (the concatenated chunks); the provider's signed manifest
//! (the agreement's chunk list) comes in the `Liutong-Manifest` header, base64 of its
//! JSON, so a Liutong consumer checks each chunk as over gRPC. `Range: bytes=a-` or
//! `bytes=a-b` resumes a cut download (206 with `Content-Range`).
//!
//! The consumer's completion may carry its signed receipt in `lt:receipt`; the provider
//! records it as the gRPC binding does.
//!
//! This node's operator suspends, restarts or terminates a transfer itself
//! ([`provider_action`]; revoking the agreement terminates its transfers): the new
//! state is durable first, so the data endpoint refuses at once, then the consumer is
//! told from the same outbox (a suspension or termination message, or a start message
//! with a new token). A transfer this node suspended is restarted only by this node.
//! The operator's listing ([`super::control`]) shows the bytes the data endpoint sent
//! for each transfer.

use axum::Extension;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json, json};
use sha2::{Digest, Sha256};
use tokio_stream::StreamExt as _;

use super::callback::{Failure, MAX_ATTEMPTS, call};
use super::message::{Area, CONTEXT, DspError};
use super::negotiation::{callback_address, pid, text};
use super::state::DspState;
use crate::audit::log::{AuditLog, Event, EventKind};
use crate::base::clock::now;
use crate::base::random::{new_id, random_bytes};
use crate::base::shutdown::Shutdown;
use crate::identity::{Envelope, MemberRole, Membership, ParticipantId};
use crate::service::PeerCaller;
use crate::storage::Storage;
use crate::transfer::{Manifest, TransferError};
use liutong_proto::v1::pull_response::Part;

/// The binding's transfers (provider role), by provider process ID.
pub const RECORDS: &str = "dsp_transfers";
/// The provider process IDs of transfers whose consumer is owed a start message.
const OUTBOX: &str = "dsp_transfer_outbox";
/// The payload bytes the data endpoint sent, by provider process ID (8 bytes, big
/// endian).
const SERVED: &str = "dsp_transfer_served";

/// The only format this node offers: the consumer pulls over HTTPS.
pub const FORMAT: &str = "HttpData-PULL";
/// The data address's endpoint type (HTTP).
pub const ENDPOINT_TYPE: &str = "https://w3id.org/idsa/v4.1/HTTP";
/// The property of a completion carrying the consumer's signed receipt.
pub const RECEIPT: &str = "lt:receipt";
/// The response header carrying the provider's signed manifest (base64 of its JSON).
pub const MANIFEST_HEADER: &str = "liutong-manifest";
/// The agreement `@id` prefix of the negotiation binding's agreements.
const AGREEMENT_PREFIX: &str = "urn:liutong:agreement:";
/// How long a handler waits for the outbox's step on the same transfer.
const RECORD_WAIT: std::time::Duration = std::time::Duration::from_secs(15);
/// The longest wait between two tries of a start message.
const MAX_BACKOFF: i64 = 30;

/// The state of a transfer process, as the protocol names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TransferProcessState {
    Requested,
    Started,
    Suspended,
    Completed,
    Terminated,
}

impl TransferProcessState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Requested => "REQUESTED",
            Self::Started => "STARTED",
            Self::Suspended => "SUSPENDED",
            Self::Completed => "COMPLETED",
            Self::Terminated => "TERMINATED",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            Self::Requested,
            Self::Started,
            Self::Suspended,
            Self::Completed,
            Self::Terminated,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }

    pub fn is_final(self) -> bool {
        matches!(self, Self::Completed | Self::Terminated)
    }
}

impl std::fmt::Display for TransferProcessState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the provider keeps of a transfer process.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DspTransfer {
    pub provider_pid: String,
    pub consumer_pid: String,
    /// The consumer's participant: the only caller this transfer exists for.
    pub consumer: String,
    pub agreement_id: String,
    /// The consumer's `callbackAddress` (`https://…`, no trailing slash).
    pub callback: String,
    pub state: TransferProcessState,
    /// SHA-256 (hex) of the current data address token; `None`: none opens the data.
    pub token_sha256: Option<String>,
    /// When the token stops opening the data endpoint (Unix s).
    pub token_expires: i64,
    /// Failed attempts at sending the start message, and when to try next (Unix s).
    pub attempts: u32,
    pub next_attempt: i64,
    /// The reason owed to the consumer for a suspension or termination this node made
    /// (sent from the outbox, then cleared).
    #[serde(default)]
    pub notice: Option<String>,
    /// Suspended by this node: only this node restarts it.
    #[serde(default)]
    pub by_provider: bool,
    /// When the record last changed (Unix s; 0: before this was kept).
    #[serde(default)]
    pub updated_at: i64,
}

impl DspTransfer {
    fn load(state: &DspState, pid: &str) -> Result<Option<Self>, String> {
        let Some(bytes) = state
            .storage
            .get(RECORDS, pid.as_bytes())
            .map_err(|e| e.to_string())?
        else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| format!("the stored DSP record of transfer {pid} is damaged: {e}"))
    }

    /// Stores the record (and whether a start message is owed), durably.
    async fn store(&self, state: &DspState, owed: bool) -> Result<(), String> {
        self.store_in(state.storage.as_ref(), owed).await
    }

    async fn store_in(&self, storage: &dyn Storage, owed: bool) -> Result<(), String> {
        let mut stamped = self.clone();
        stamped.updated_at = now();
        let bytes = serde_json::to_vec(&stamped).expect("records serialize");
        storage
            .put(RECORDS, self.provider_pid.as_bytes(), &bytes)
            .map_err(|e| e.to_string())?;
        let key = self.provider_pid.as_bytes();
        if owed {
            storage.put(OUTBOX, key, b"")
        } else {
            storage.delete(OUTBOX, key)
        }
        .map_err(|e| e.to_string())?;
        storage.flush().await.map_err(|e| e.to_string())
    }

    fn body(&self) -> Json {
        json!({
            "@context": [CONTEXT],
            "@type": "TransferProcess",
            "providerPid": self.provider_pid,
            "consumerPid": self.consumer_pid,
            "state": self.state.as_str(),
        })
    }
}

/// The provider's record of transfer `pid`, if any (for operators and tests).
pub fn record(state: &DspState, pid: &str) -> Result<Option<DspTransfer>, String> {
    DspTransfer::load(state, pid)
}

fn claim_key(pid: &str) -> String {
    format!("dsp-transfer/{pid}")
}

fn bad(reason: impl Into<String>) -> DspError {
    DspError::bad_request(Area::Transfer, reason)
}

fn unavailable(reason: impl Into<String>) -> DspError {
    DspError::new(StatusCode::SERVICE_UNAVAILABLE, Area::Transfer, reason)
}

/// The negotiation binding's helpers answer in its area; here they answer in this one.
pub(super) fn in_area(mut e: DspError) -> DspError {
    e.area = Area::Transfer;
    e
}

fn consumer_role(member: &Membership, what: &str) -> Result<(), DspError> {
    member
        .require_role(MemberRole::Consumer, what)
        .map_err(|e| DspError::new(StatusCode::FORBIDDEN, Area::Transfer, e.to_string()))
}

/// The negotiation binding's reading of a message, answering in this area.
async fn read(state: &DspState, body: Body, expected: &str) -> Result<Map<String, Json>, DspError> {
    super::negotiation::read(state, body, expected)
        .await
        .map_err(in_area)
}

/// The caller's transfer `pid`: 404 when there is none, or it is another participant's
/// (which is not told apart).
fn own(state: &DspState, member: &Membership, pid: &str) -> Result<DspTransfer, DspError> {
    let unknown = || {
        DspError::not_found(
            Area::Transfer,
            format!(
                "no transfer process {} of yours",
                crate::base::bounded::shown(pid, 128)
            ),
        )
    };
    match DspTransfer::load(state, pid).map_err(unavailable)? {
        Some(r) if r.consumer == member.participant_id.as_str() => Ok(r),
        _ => Err(unknown()),
    }
}

/// Checks that a message about `record` names it by both process IDs.
fn names(message: &Map<String, Json>, record: &DspTransfer) -> Result<(), DspError> {
    super::negotiation::names_process(
        message,
        &record.provider_pid,
        &record.consumer_pid,
        "transfer",
    )
    .map_err(in_area)
}

/// Records a step of a DSP transfer on the audit log, under its agreement.
async fn audit(state: &DspState, record: &DspTransfer, detail: String) {
    audit_in(&state.audit, record, detail).await;
}

async fn audit_in(log: &AuditLog, record: &DspTransfer, detail: String) {
    let mut event = Event::new(EventKind::Transfer, now(), detail);
    event.participant = Some(record.consumer.clone());
    event.agreement = Some(record.agreement_id.clone());
    if let Err(e) = log.append(&event).await {
        tracing::error!(error = %e, "cannot record a DSP transfer step");
    }
}

/// `GET /transfers/:providerPid`: how the transfer stands.
pub async fn get(
    State(state): State<DspState>,
    Extension(PeerCaller(member)): Extension<PeerCaller>,
    Path(pid): Path<String>,
) -> Result<Response, DspError> {
    let record = own(&state, &member, &pid)?;
    Ok(axum::Json(record.body()).into_response())
}

/// `POST /transfers/request`: a consumer asks for the product of a finalized agreement.
/// Answered 201 REQUESTED once on disk; the start message follows at the callback
/// address.
pub async fn request(
    State(state): State<DspState>,
    Extension(PeerCaller(member)): Extension<PeerCaller>,
    body: Body,
) -> Result<Response, DspError> {
    consumer_role(&member, "requesting a transfer")?;
    let message = read(&state, body, "TransferRequestMessage").await?;
    let consumer_pid = pid(
        "consumerPid",
        text(&message, "consumerPid").map_err(in_area)?,
    )
    .map_err(in_area)?;
    let refuse = |e: DspError| e.with_pids("", &consumer_pid);
    if message.contains_key("providerPid") {
        return Err(refuse(bad(
            "providerPid: a new request names none (the provider assigns it)",
        )));
    }
    match text(&message, "format").map_err(|e| refuse(in_area(e)))? {
        Some(FORMAT) => {}
        Some(other) => {
            return Err(refuse(bad(format!(
                "format {} is not offered; this node offers {FORMAT} (the consumer pulls \
                 over HTTPS)",
                crate::base::bounded::shown(other, 64)
            ))));
        }
        None => return Err(refuse(bad(format!("format is missing; send \"{FORMAT}\"")))),
    }
    if message.contains_key("dataAddress") {
        return Err(refuse(bad(format!(
            "dataAddress: {FORMAT} is a pull; the provider gives the data address in its \
             start message"
        ))));
    }
    let callback = callback_address(text(&message, "callbackAddress").map_err(in_area)?)
        .map_err(|e| refuse(bad(e)))?;
    let agreement_id = match text(&message, "agreementId").map_err(in_area)? {
        Some(id) => id.strip_prefix(AGREEMENT_PREFIX).unwrap_or(id).to_owned(),
        None => return Err(refuse(bad("agreementId is missing"))),
    };
    crate::base::bounded::id("agreementId", &agreement_id)
        .map_err(|e| refuse(bad(e.to_string())))?;
    // A FINALIZED agreement whose consumer is the caller; any other is not told apart.
    let agreement = match state
        .contracts
        .consumer_agreement(&member.participant_id, &agreement_id)
    {
        Ok(a) => a,
        Err(crate::contract::AgreementError::Storage(e)) => {
            return Err(refuse(unavailable(e.to_string())));
        }
        Err(_) => {
            return Err(refuse(bad(format!(
                "agreementId {agreement_id} names no finalized agreement between you and \
                 this provider"
            ))));
        }
    };
    let provider_pid = new_id("tp").map_err(|e| refuse(unavailable(e.to_string())))?;
    let record = DspTransfer {
        provider_pid: provider_pid.clone(),
        consumer_pid: consumer_pid.clone(),
        consumer: member.participant_id.to_string(),
        agreement_id: agreement.agreement_id.clone(),
        callback,
        state: TransferProcessState::Requested,
        token_sha256: None,
        token_expires: 0,
        attempts: 0,
        next_attempt: 0,
        notice: None,
        by_provider: false,
        updated_at: now(),
    };
    let refuse = |e: DspError| e.with_pids(&provider_pid, &consumer_pid);
    let bytes = serde_json::to_vec(&record).expect("records serialize");
    match state
        .storage
        .insert_new(RECORDS, provider_pid.as_bytes(), &bytes)
    {
        Ok(true) => {}
        Ok(false) => {
            return Err(refuse(unavailable(
                "a process ID was drawn twice; send again",
            )));
        }
        Err(e) => return Err(refuse(unavailable(e.to_string()))),
    }
    record
        .store(&state, true)
        .await
        .map_err(|e| refuse(unavailable(e)))?;
    audit(
        &state,
        &record,
        format!(
            "DSP transfer {provider_pid} REQUESTED ({FORMAT}, consumer process {consumer_pid})"
        ),
    )
    .await;
    state.transfer_wake.notify_one();
    Ok((StatusCode::CREATED, axum::Json(record.body())).into_response())
}

/// Runs a consumer's step on its transfer `pid` under the record's claim: `step` gets
/// the message and the record, changes the record or refuses, and says whether a start
/// message is now owed.
async fn step(
    state: &DspState,
    member: &Membership,
    pid: &str,
    message: &Map<String, Json>,
    step: impl FnOnce(&mut DspTransfer) -> Result<bool, String>,
) -> Result<DspTransfer, DspError> {
    own(state, member, pid)?;
    let _claim = state
        .contracts
        .claims()
        .claim_within(&claim_key(pid), RECORD_WAIT)
        .await
        .ok_or_else(|| {
            unavailable("a message to your callback address is in progress; send again")
        })?;
    let mut record = own(state, member, pid)?;
    let pids = (record.provider_pid.clone(), record.consumer_pid.clone());
    let refuse = |e: DspError| e.with_pids(&pids.0, &pids.1);
    names(message, &record).map_err(refuse)?;
    let owed = step(&mut record).map_err(|why| refuse(bad(why)))?;
    record
        .store(state, owed)
        .await
        .map_err(|e| refuse(unavailable(e)))?;
    if owed {
        state.transfer_wake.notify_one();
    }
    Ok(record)
}

fn invalid(record: &DspTransfer, what: &str, needs: &str) -> String {
    format!(
        "transfer {} is {}; {what} needs it {needs}",
        record.provider_pid, record.state
    )
}

/// `POST /transfers/:providerPid/start`: the consumer restarts a SUSPENDED transfer; a
/// new start message, with a new token, follows at its callback address.
pub async fn start(
    State(state): State<DspState>,
    Extension(PeerCaller(member)): Extension<PeerCaller>,
    Path(pid): Path<String>,
    body: Body,
) -> Result<Response, DspError> {
    let message = read(&state, body, "TransferStartMessage").await?;
    let record = step(&state, &member, &pid, &message, |r| {
        if r.state != TransferProcessState::Suspended {
            return Err(invalid(r, "a restart", "SUSPENDED"));
        }
        if r.by_provider {
            return Err(format!(
                "transfer {} was suspended by the provider; only the provider restarts it \
                 (its start message will follow at your callback address)",
                r.provider_pid
            ));
        }
        r.state = TransferProcessState::Started;
        r.attempts = 0;
        r.next_attempt = 0;
        Ok(true)
    })
    .await?;
    audit(
        &state,
        &record,
        format!("DSP transfer {pid} restarted by the consumer"),
    )
    .await;
    Ok(StatusCode::OK.into_response())
}

/// `POST /transfers/:providerPid/suspension`: the data endpoint stops serving it.
pub async fn suspension(
    State(state): State<DspState>,
    Extension(PeerCaller(member)): Extension<PeerCaller>,
    Path(pid): Path<String>,
    body: Body,
) -> Result<Response, DspError> {
    let message = read(&state, body, "TransferSuspensionMessage").await?;
    let record = step(&state, &member, &pid, &message, |r| {
        if r.state != TransferProcessState::Started {
            return Err(invalid(r, "a suspension", "STARTED"));
        }
        r.state = TransferProcessState::Suspended;
        r.token_sha256 = None;
        Ok(false)
    })
    .await?;
    audit(
        &state,
        &record,
        format!(
            "DSP transfer {pid} SUSPENDED by the consumer: {}",
            reason_of(&message)
        ),
    )
    .await;
    Ok(StatusCode::OK.into_response())
}

/// `POST /transfers/:providerPid/termination`: the consumer ends it, in any state that is
/// not final.
pub async fn termination(
    State(state): State<DspState>,
    Extension(PeerCaller(member)): Extension<PeerCaller>,
    Path(pid): Path<String>,
    body: Body,
) -> Result<Response, DspError> {
    let message = read(&state, body, "TransferTerminationMessage").await?;
    let record = step(&state, &member, &pid, &message, |r| {
        if r.state.is_final() {
            return Err(invalid(
                r,
                "a termination",
                "REQUESTED, STARTED or SUSPENDED",
            ));
        }
        r.state = TransferProcessState::Terminated;
        r.token_sha256 = None;
        Ok(false)
    })
    .await?;
    audit(
        &state,
        &record,
        format!(
            "DSP transfer {pid} TERMINATED by the consumer: {}",
            reason_of(&message)
        ),
    )
    .await;
    Ok(StatusCode::OK.into_response())
}

/// `POST /transfers/:providerPid/completion`: the consumer has the data. Its signed
/// receipt (`lt:receipt`), when it sends one, is checked and recorded as over gRPC
/// before COMPLETED; a receipt that does not verify leaves the transfer STARTED.
pub async fn completion(
    State(state): State<DspState>,
    Extension(PeerCaller(member)): Extension<PeerCaller>,
    Path(pid): Path<String>,
    body: Body,
) -> Result<Response, DspError> {
    let message = read(&state, body, "TransferCompletionMessage").await?;
    let current = own(&state, &member, &pid)?;
    let refuse = |e: DspError| e.with_pids(&current.provider_pid, &current.consumer_pid);
    names(&message, &current).map_err(refuse)?;
    if current.state != TransferProcessState::Started {
        return Err(refuse(bad(invalid(&current, "a completion", "STARTED"))));
    }
    let receipt = match message.get(RECEIPT) {
        None => None,
        Some(value) => Some(
            serde_json::from_value::<Envelope>(value.clone()).map_err(|e| {
                refuse(bad(format!(
                    "{RECEIPT} is not a signed receipt envelope: {e}"
                )))
            })?,
        ),
    };
    if let Some(envelope) = receipt {
        // The receipt must be for this transfer's agreement.
        let named: Option<crate::transfer::Receipt> = envelope.peek_json().ok();
        if named.as_ref().map(|r| r.agreement_id.as_str()) != Some(current.agreement_id.as_str()) {
            return Err(refuse(bad(format!(
                "{RECEIPT} is not a receipt for agreement {}",
                current.agreement_id
            ))));
        }
        state
            .transfers
            .receive_receipt(&member, envelope)
            .await
            .map_err(|e| refuse(transfer_error(e)))?;
    }
    let record = step(&state, &member, &pid, &message, |r| {
        if r.state != TransferProcessState::Started {
            return Err(invalid(r, "a completion", "STARTED"));
        }
        r.state = TransferProcessState::Completed;
        r.token_sha256 = None;
        Ok(false)
    })
    .await?;
    audit(&state, &record, format!("DSP transfer {pid} COMPLETED")).await;
    Ok(StatusCode::OK.into_response())
}

pub use crate::transfer::{ControlError as ActionError, ProviderAction};

/// Whether transfer `pid` is still STARTED with the token whose hash is `token_sha256`.
fn still_serving(storage: &dyn Storage, pid: &str, token_sha256: &str) -> Result<(), String> {
    let record = storage
        .get(RECORDS, pid.as_bytes())
        .map_err(|e| e.to_string())?
        .and_then(|b| serde_json::from_slice::<DspTransfer>(&b).ok())
        .ok_or_else(|| format!("transfer {pid} is not on record"))?;
    if record.state != TransferProcessState::Started {
        return Err(format!(
            "transfer {pid} is {}; the download stops",
            record.state
        ));
    }
    match record.token_sha256.as_deref() {
        Some(h) if ring_eq(h, token_sha256) => Ok(()),
        _ => Err(format!(
            "the token of transfer {pid} was replaced; the download stops"
        )),
    }
}

/// The payload bytes the data endpoint has sent for transfer `pid`.
pub(super) fn served(storage: &dyn Storage, pid: &str) -> u64 {
    storage
        .get(SERVED, pid.as_bytes())
        .ok()
        .flatten()
        .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
        .map_or(0, u64::from_be_bytes)
}

/// Counts `n` more bytes sent for transfer `pid`. A statistic for the operator: kept
/// with the next flush, not flushed for itself.
pub(super) fn count_served(storage: &dyn Storage, pid: &str, n: u64) {
    let total = served(storage, pid).saturating_add(n);
    if let Err(e) = storage.put(SERVED, pid.as_bytes(), &total.to_be_bytes()) {
        tracing::warn!(transfer = %pid, error = %e, "cannot count the bytes served");
    }
}

/// This node, as provider, suspends, restarts or terminates its transfer `pid`. The new
/// state is durable before anything else: the data endpoint stops serving a suspended
/// or terminated transfer at once; the consumer is then told from the outbox (a
/// suspension or termination message with `reason`, or, on a restart, a start message
/// with a new token).
pub async fn provider_action(
    storage: &dyn Storage,
    contracts: &crate::contract::Contracts,
    log: &AuditLog,
    pid: &str,
    action: ProviderAction,
    reason: &str,
) -> Result<DspTransfer, ActionError> {
    let load = || -> Result<DspTransfer, ActionError> {
        let bytes = storage
            .get(RECORDS, pid.as_bytes())
            .map_err(|e| ActionError::Unavailable(e.to_string()))?
            .ok_or_else(|| ActionError::Unknown(crate::base::bounded::shown(pid, 128)))?;
        serde_json::from_slice(&bytes).map_err(|e| {
            ActionError::Unavailable(format!(
                "the stored DSP record of transfer {pid} is damaged: {e}"
            ))
        })
    };
    load()?;
    let _claim = contracts
        .claims()
        .claim_within(&claim_key(pid), RECORD_WAIT)
        .await
        .ok_or_else(|| {
            ActionError::Unavailable(format!(
                "a message about transfer {pid} is in progress; try again"
            ))
        })?;
    let mut record = load()?;
    let refuse = |r: &DspTransfer, what: &str, needs: &str| {
        Err(ActionError::Invalid(invalid(r, what, needs)))
    };
    let detail = match action {
        ProviderAction::Suspend => {
            if record.state != TransferProcessState::Started {
                return refuse(&record, "a suspension", "STARTED");
            }
            record.state = TransferProcessState::Suspended;
            record.by_provider = true;
            record.notice = Some(reason.to_owned());
            format!("DSP transfer {pid} SUSPENDED by the provider: {reason}")
        }
        ProviderAction::Restart => {
            if record.state != TransferProcessState::Suspended {
                return refuse(&record, "a restart", "SUSPENDED");
            }
            record.state = TransferProcessState::Started;
            record.by_provider = false;
            record.notice = None;
            format!("DSP transfer {pid} restarted by the provider")
        }
        ProviderAction::Terminate => {
            if record.state.is_final() {
                return refuse(&record, "a termination", "REQUESTED, STARTED or SUSPENDED");
            }
            record.state = TransferProcessState::Terminated;
            record.notice = Some(reason.to_owned());
            format!("DSP transfer {pid} TERMINATED by the provider: {reason}")
        }
    };
    record.token_sha256 = None;
    record.attempts = 0;
    record.next_attempt = 0;
    record
        .store_in(storage, true)
        .await
        .map_err(ActionError::Unavailable)?;
    audit_in(log, &record, detail).await;
    Ok(record)
}

/// Terminates every transfer of agreement `agreement_id` that is not final (its
/// agreement was revoked or ended); returns how many.
pub async fn terminate_for_agreement(
    storage: &dyn Storage,
    contracts: &crate::contract::Contracts,
    log: &AuditLog,
    agreement_id: &str,
    reason: &str,
) -> Result<usize, ActionError> {
    let records = storage
        .scan_prefix(RECORDS, b"")
        .map_err(|e| ActionError::Unavailable(e.to_string()))?;
    let mut ended = 0;
    for (_, bytes) in records {
        let Ok(r) = serde_json::from_slice::<DspTransfer>(&bytes) else {
            continue;
        };
        if r.agreement_id == agreement_id && !r.state.is_final() {
            provider_action(
                storage,
                contracts,
                log,
                &r.provider_pid,
                ProviderAction::Terminate,
                reason,
            )
            .await?;
            ended += 1;
        }
    }
    Ok(ended)
}

/// The reason a suspension or termination message gives, as text.
fn reason_of(message: &Map<String, Json>) -> String {
    let mut parts = Vec::new();
    if let Some(Json::String(code)) = message.get("code") {
        parts.push(format!("code {}", crate::base::bounded::shown(code, 64)));
    }
    if let Some(Json::Array(reasons)) = message.get("reason") {
        for r in reasons.iter().take(8) {
            let r = match r {
                Json::String(s) => s.clone(),
                other => other.to_string(),
            };
            parts.push(crate::base::bounded::shown(&r, 256).to_string());
        }
    }
    if parts.is_empty() {
        "no reason given".to_owned()
    } else {
        parts.join("; ")
    }
}

/// The status a refusal of the transfer component is answered with.
fn transfer_error(e: TransferError) -> DspError {
    use crate::base::error::{ErrorKind, ErrorKinded as _};
    let status = match e.kind() {
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::PermissionDenied => StatusCode::FORBIDDEN,
        ErrorKind::OutOfRange => StatusCode::RANGE_NOT_SATISFIABLE,
        ErrorKind::Unavailable | ErrorKind::Internal => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_REQUEST,
    };
    DspError::new(status, Area::Transfer, e.message())
}

// ---- the data endpoint ------------------------------------------------------------

fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The token a request presents in `Authorization` (`Bearer <token>`, or the token as
/// the data address gave it).
fn presented_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .unwrap_or(value)
        .trim();
    (!token.is_empty()).then_some(token)
}

/// A refusal of the data endpoint: 401 asks for a (valid) token.
fn unauthorized(record: &DspTransfer, reason: String) -> Response {
    let mut response = DspError::new(StatusCode::UNAUTHORIZED, Area::Transfer, reason)
        .with_pids(&record.provider_pid, &record.consumer_pid)
        .into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"liutong-dsp\""),
    );
    response
}

/// A byte range of a payload of `size` bytes: `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Span {
    start: u64,
    end: u64,
}

/// The span a `Range` header asks for (`None`: the whole payload); an error when it
/// cannot be served (416). One range of bytes only: `a-`, `a-b` or `-n`.
fn range(headers: &HeaderMap, size: u64) -> Result<Option<Span>, String> {
    let Some(value) = headers.get(header::RANGE) else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| "the Range header is not text".to_owned())?;
    let spec = value
        .trim()
        .strip_prefix("bytes=")
        .ok_or_else(|| format!("Range {value}: only bytes=a-, bytes=a-b or bytes=-n is served"))?;
    if spec.contains(',') {
        return Err(format!("Range {value}: only one range is served at a time"));
    }
    let (a, b) = spec
        .split_once('-')
        .ok_or_else(|| format!("Range {value}: expected bytes=a-, bytes=a-b or bytes=-n"))?;
    let number = |s: &str| {
        s.trim()
            .parse::<u64>()
            .map_err(|_| format!("Range {value}: {s:?} is not a byte position"))
    };
    let span = match (a.trim().is_empty(), b.trim().is_empty()) {
        (true, true) => return Err(format!("Range {value}: no positions")),
        // The last n bytes.
        (true, false) => {
            let n = number(b)?.min(size);
            Span {
                start: size - n,
                end: size,
            }
        }
        (false, true) => Span {
            start: number(a)?,
            end: size,
        },
        (false, false) => {
            let (a, b) = (number(a)?, number(b)?);
            if b < a {
                return Err(format!(
                    "Range {value}: the last byte comes before the first"
                ));
            }
            Span {
                start: a,
                end: b.saturating_add(1).min(size),
            }
        }
    };
    if span.start >= size || span.start >= span.end {
        return Err(format!(
            "Range {value}: the payload has {size} bytes (positions 0 to {})",
            size.saturating_sub(1)
        ));
    }
    Ok(Some(span))
}

/// `GET /data/:providerPid`: the payload of a STARTED transfer, for its consumer's
/// certificate and current token, as the transfer component delivers it.
pub async fn data(
    State(state): State<DspState>,
    Extension(PeerCaller(member)): Extension<PeerCaller>,
    Path(pid): Path<String>,
    headers: HeaderMap,
) -> Result<Response, DspError> {
    let Some(record) = DspTransfer::load(&state, &pid).map_err(unavailable)? else {
        return Err(DspError::not_found(
            Area::Transfer,
            format!(
                "no transfer process {}",
                crate::base::bounded::shown(&pid, 128)
            ),
        ));
    };
    let pids = |e: DspError| e.with_pids(&record.provider_pid, &record.consumer_pid);
    let Some(token) = presented_token(&headers) else {
        return Ok(unauthorized(
            &record,
            "no token: send the data address's authorization value as \
             `Authorization: Bearer <token>`"
                .into(),
        ));
    };
    let matches = record
        .token_sha256
        .as_deref()
        .is_some_and(|h| ring_eq(h, &token_hash(token)));
    if record.state != TransferProcessState::Started {
        return Err(pids(DspError::new(
            StatusCode::FORBIDDEN,
            Area::Transfer,
            format!(
                "transfer {} is {}; the data endpoint serves only a STARTED transfer{}",
                record.provider_pid,
                record.state,
                if record.state == TransferProcessState::Suspended {
                    " (restart it for a new token)"
                } else {
                    ""
                }
            ),
        )));
    }
    if !matches {
        return Ok(unauthorized(
            &record,
            format!(
                "the token is not this transfer's current token; use the one in the latest \
                 start message of transfer {}",
                record.provider_pid
            ),
        ));
    }
    // The right token from another member's certificate: the token was leaked.
    if record.consumer != member.participant_id.as_str() {
        return Err(pids(DspError::new(
            StatusCode::FORBIDDEN,
            Area::Transfer,
            format!(
                "this token is bound to transfer {} of another participant; present that \
                 participant's certificate",
                record.provider_pid
            ),
        )));
    }
    if now() >= record.token_expires {
        return Ok(unauthorized(
            &record,
            format!(
                "the token expired; suspend and restart transfer {} for a new one",
                record.provider_pid
            ),
        ));
    }
    // The delivery is decided (and logged) from the chunk the range begins in, by the
    // agreement's chunk size; the manifest it makes then cuts the bytes exactly.
    // A suffix range (`bytes=-n`) names no start until the size is known: from 0.
    let suffix = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().starts_with("bytes=-"));
    let from_chunk = match (
        range(&headers, u64::MAX),
        state
            .contracts
            .consumer_agreement(&member.participant_id, &record.agreement_id),
    ) {
        (Ok(Some(span)), Ok(agreement)) if !suffix => {
            u32::try_from(span.start / agreement.chunk_size.max(1) as u64).unwrap_or(u32::MAX)
        }
        _ => 0,
    };
    let delivery = state
        .transfers
        .start_delivery(&member, &record.agreement_id, from_chunk)
        .await
        .map_err(|e| pids(transfer_error(e)))?;
    let manifest: Manifest = delivery
        .manifest
        .peek_json()
        .map_err(|e| pids(unavailable(e.to_string())))?;
    let size = manifest.size;
    let span = match range(&headers, size) {
        Ok(span) => span,
        Err(why) => {
            let mut response = pids(DspError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                Area::Transfer,
                why,
            ))
            .into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                response.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return Ok(response);
        }
    };
    let whole = Span {
        start: 0,
        end: size,
    };
    let Span { start, end } = span.unwrap_or(whole);
    let chunk_size = manifest.chunk_size.max(1) as u64;
    let first = (start / chunk_size) as u32;
    let manifest_header =
        base64::engine::general_purpose::STANDARD.encode(delivery.manifest.to_json().as_bytes());
    let (counter, counted) = (state.storage.clone(), record.provider_pid.clone());
    let token_sha256 = token_hash(token);
    let stream = state
        .transfers
        .clone()
        .delivery_stream(delivery, first)
        .filter_map(move |item| match item {
            Ok(liutong_proto::v1::PullResponse {
                part: Some(Part::Chunk(chunk)),
            }) => {
                let at = chunk.index as u64 * chunk_size;
                let len = chunk.data.len() as u64;
                if at >= end {
                    return None;
                }
                let from = start.saturating_sub(at).min(len) as usize;
                let to = (end - at).min(len) as usize;
                // A suspension, termination or new token stops a download in progress
                // too, at its next chunk.
                if let Err(why) = still_serving(counter.as_ref(), &counted, &token_sha256) {
                    return Some(Err(std::io::Error::other(why)));
                }
                count_served(counter.as_ref(), &counted, (to - from) as u64);
                Some(Ok(chunk.data.slice(from..to)))
            }
            Ok(_) => None,
            Err(e) => Some(Err(std::io::Error::other(e.to_string()))),
        })
        // Stops after the range's last chunk: the stream reads a chunk only when asked.
        .take(if end > start {
            ((end - 1) / chunk_size - first as u64 + 1) as usize
        } else {
            0
        });
    let mut response = Response::new(Body::from_stream(stream));
    let h = response.headers_mut();
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start));
    if let Ok(v) = HeaderValue::from_str(&manifest_header) {
        h.insert(MANIFEST_HEADER, v);
    }
    if span.is_some() {
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{size}", end - 1)) {
            response.headers_mut().insert(header::CONTENT_RANGE, v);
        }
    }
    Ok(response)
}

/// Compares two hashes without an early exit.
fn ring_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

// ---- the start message outbox -----------------------------------------------------

/// The longest the start worker sleeps between looks at its outbox.
const TICK: std::time::Duration = std::time::Duration::from_secs(1);

/// Sends the start messages owed, when woken and at least every second, until
/// `shutdown` fires.
pub async fn run(state: DspState, mut shutdown: Shutdown) {
    loop {
        if let Err(e) = round(&state, &mut shutdown).await {
            tracing::warn!(error = %e, "the DSP transfer outbox cannot be read");
        }
        tokio::select! {
            () = shutdown.fired() => return,
            () = state.transfer_wake.notified() => {}
            () = tokio::time::sleep(TICK) => {}
        }
    }
}

/// One look at every transfer owed a start message: a new token is made and its hash
/// and the STARTED state are durable before the message carrying it is sent.
async fn round(state: &DspState, shutdown: &mut Shutdown) -> Result<(), String> {
    let pending = state
        .storage
        .scan_prefix(OUTBOX, b"")
        .map_err(|e| e.to_string())?;
    for (key, _) in pending {
        let pid = String::from_utf8_lossy(&key).into_owned();
        match shutdown.unless_fired(take_up(state, &pid)).await {
            None => return Ok(()),
            Some(Err(e)) => {
                tracing::warn!(transfer = %pid, error = %e, "cannot send the DSP start message");
            }
            Some(Ok(())) => {}
        }
    }
    Ok(())
}

async fn take_up(state: &DspState, pid: &str) -> Result<(), String> {
    let Some(_claim) = state.contracts.claims().try_claim(&claim_key(pid)) else {
        return Ok(());
    };
    let Some(mut record) = DspTransfer::load(state, pid)? else {
        return state
            .storage
            .delete(OUTBOX, pid.as_bytes())
            .map_err(|e| e.to_string());
    };
    if record.next_attempt > now() {
        return Ok(());
    }
    if let Some(reason) = record.notice.clone()
        && matches!(
            record.state,
            TransferProcessState::Suspended | TransferProcessState::Terminated
        )
    {
        return tell_end(state, record, &reason).await;
    }
    if !matches!(
        record.state,
        TransferProcessState::Requested | TransferProcessState::Started
    ) {
        return record.store(state, false).await;
    }
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(random_bytes::<32>().map_err(|e| e.to_string())?);
    record.state = TransferProcessState::Started;
    record.token_sha256 = Some(token_hash(&token));
    record.token_expires = now() + state.token_lifetime.as_secs() as i64;
    record.store(state, true).await?;
    let expires = time::OffsetDateTime::from_unix_timestamp(record.token_expires)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default();
    let property = |name: &str, value: &str| json!({"@type": "EndpointProperty", "name": name, "value": value});
    let body = json!({
        "@context": [CONTEXT],
        "@type": "TransferStartMessage",
        "providerPid": record.provider_pid,
        "consumerPid": record.consumer_pid,
        "dataAddress": {
            "@type": "DataAddress",
            "endpointType": ENDPOINT_TYPE,
            "endpoint": format!("{}/data/{}", state.base_url, record.provider_pid),
            "endpointProperties": [
                property("authorization", &token),
                property("authType", "bearer"),
                property("expiresAt", &expires),
            ],
        },
    });
    let consumer = ParticipantId::parse(&record.consumer).map_err(|e| e.to_string())?;
    let path = format!("/transfers/{}/start", record.consumer_pid);
    // Pause point `dsp.provider.transfer_start`: the transfer is STARTED on disk with
    // the new token's hash, the consumer has not been sent the token yet.
    crate::pause::at("dsp.provider.transfer_start").await;
    match call(state, &record.callback, &consumer, &path, &body).await {
        Ok(()) => {
            record.attempts = 0;
            record.next_attempt = 0;
            record.store(state, false).await?;
            audit(
                state,
                &record,
                format!(
                    "DSP transfer {pid} STARTED: data address sent, token valid until {expires}"
                ),
            )
            .await;
            Ok(())
        }
        Err(Failure::NotTheConsumer(why)) => {
            record.state = TransferProcessState::Terminated;
            record.token_sha256 = None;
            record.store(state, false).await?;
            audit(
                state,
                &record,
                format!(
                    "DSP transfer {pid} TERMINATED: the server at callback address {} is not \
                     the consumer {}: {why}; nothing was sent to it",
                    record.callback, record.consumer
                ),
            )
            .await;
            Ok(())
        }
        Err(Failure::Retry(why)) => {
            // The token sent in vain opens nothing.
            record.token_sha256 = None;
            record.attempts += 1;
            if record.attempts >= MAX_ATTEMPTS {
                record.state = TransferProcessState::Terminated;
                record.store(state, false).await?;
                audit(
                    state,
                    &record,
                    format!(
                        "DSP transfer {pid} TERMINATED: the start message to {} was given up \
                         after {} attempts: {why}",
                        record.callback, record.attempts
                    ),
                )
                .await;
                return Ok(());
            }
            let backoff = (1i64 << (record.attempts - 1).min(5)).min(MAX_BACKOFF);
            record.next_attempt = now() + backoff;
            record.store(state, true).await?;
            Err(why)
        }
    }
}

/// Tells the consumer of this node's suspension or termination of `record`.
async fn tell_end(state: &DspState, mut record: DspTransfer, reason: &str) -> Result<(), String> {
    let (ty, kind, code) = if record.state == TransferProcessState::Suspended {
        (
            "TransferSuspensionMessage",
            "suspension",
            "provider.suspended",
        )
    } else {
        (
            "TransferTerminationMessage",
            "termination",
            "provider.terminated",
        )
    };
    let body = json!({
        "@context": [CONTEXT],
        "@type": ty,
        "providerPid": record.provider_pid,
        "consumerPid": record.consumer_pid,
        "code": code,
        "reason": [reason],
    });
    let consumer = ParticipantId::parse(&record.consumer).map_err(|e| e.to_string())?;
    let path = format!("/transfers/{}/{kind}", record.consumer_pid);
    let pid = record.provider_pid.clone();
    match call(state, &record.callback, &consumer, &path, &body).await {
        Ok(()) => {
            record.notice = None;
            record.attempts = 0;
            record.next_attempt = 0;
            record.store(state, false).await?;
            audit(
                state,
                &record,
                format!("DSP transfer {pid}: the {kind} was sent to the consumer"),
            )
            .await;
            Ok(())
        }
        Err(Failure::NotTheConsumer(why)) => {
            record.notice = None;
            record.state = TransferProcessState::Terminated;
            record.store(state, false).await?;
            audit(
                state,
                &record,
                format!(
                    "DSP transfer {pid} TERMINATED: the server at callback address {} is not \
                     the consumer {}: {why}; nothing was sent to it",
                    record.callback, record.consumer
                ),
            )
            .await;
            Ok(())
        }
        Err(Failure::Retry(why)) => {
            record.attempts += 1;
            if record.attempts >= MAX_ATTEMPTS {
                record.notice = None;
                record.store(state, false).await?;
                audit(
                    state,
                    &record,
                    format!(
                        "DSP transfer {pid}: the {kind} message to {} was given up after {} \
                         attempts: {why}; the consumer can ask for the transfer's state",
                        record.callback, record.attempts
                    ),
                )
                .await;
                return Ok(());
            }
            let backoff = (1i64 << (record.attempts - 1).min(5)).min(MAX_BACKOFF);
            record.next_attempt = now() + backoff;
            record.store(state, true).await?;
            Err(why)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(range: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::RANGE, HeaderValue::from_str(range).unwrap());
        h
    }

    #[test]
    fn ranges_of_one_span_are_served_and_others_refused() {
        let span = |s, e| Ok(Some(Span { start: s, end: e }));
        assert_eq!(range(&HeaderMap::new(), 100), Ok(None));
        assert_eq!(range(&headers("bytes=10-"), 100), span(10, 100));
        assert_eq!(range(&headers("bytes=10-19"), 100), span(10, 20));
        assert_eq!(range(&headers("bytes=90-200"), 100), span(90, 100));
        assert_eq!(range(&headers("bytes=-5"), 100), span(95, 100));
        for bad in [
            "bytes=100-",
            "bytes=20-10",
            "bytes=0-1,5-6",
            "items=0-1",
            "bytes=x-",
            "bytes=-",
        ] {
            assert!(range(&headers(bad), 100).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_token_is_read_with_or_without_its_scheme() {
        let mut h = HeaderMap::new();
        assert_eq!(presented_token(&h), None);
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc"),
        );
        assert_eq!(presented_token(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("abc"));
        assert_eq!(presented_token(&h), Some("abc"));
        assert!(ring_eq(&token_hash("abc"), &token_hash("abc")));
        assert!(!ring_eq(&token_hash("abc"), &token_hash("abd")));
    }
}
