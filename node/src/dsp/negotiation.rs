//! The contract negotiation protocol's HTTPS binding, provider role:
//! `GET /negotiations/:providerPid`, `POST /negotiations/request` (a new request),
//! `POST /negotiations/:providerPid/request` (a request answering an offer),
//! `…/events`, `…/agreement/verification` and `…/termination`.
//!
//! Every decision is the [contract component](crate::contract)'s, as for the gRPC
//! negotiation service: the same policy evaluation, guardrails, approval by a person
//! for important data, signed agreement and audit entries. This module reads and
//! writes the protocol's messages, and keeps what only the binding needs: the
//! consumer's process ID and callback address, and what the consumer has been told
//! ([`DspNegotiation`]). The consumer learns the outcome at its callback address (see
//! [`callback`](super::callback)).
//!
//! The provider's process ID is the negotiation's ID. The answer to a new request is
//! the negotiation as created, `REQUESTED`; the decision follows as its own message
//! (`ContractAgreementMessage` or `ContractNegotiationTerminationMessage`), sent once
//! it and this record are on disk.
//!
//! Two forms of request:
//! - plain DSP: the request is not signed; the agreement is signed by this node only
//!   and recorded as not signed by the consumer. Offers of important data refuse it.
//! - signed (between Liutong nodes): the message carries `lt:request`, the consumer's
//!   signed contract request envelope (the one the gRPC API takes). The
//!   `ContractAgreementMessage` then carries the signed agreement envelope in
//!   `lt:agreement`, and the verification must return it countersigned in
//!   `lt:agreement`; the agreement is the same dual-signed envelope as over gRPC.

use axum::Extension;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json, json};

use super::message::{self, Area, CONTEXT, DspError};
use super::state::DspState;
use crate::base::error::{ErrorKind, ErrorKinded as _};
use crate::base::random::{new_id, random_bytes};
use crate::contract::{ContractError, ContractRequest, Negotiation, NegotiationStatus};
use crate::identity::{Envelope, Membership};
use crate::service::PeerCaller;

/// The binding's records, by provider process ID.
pub(super) const RECORDS: &str = "dsp_negotiations";
/// The provider process IDs of negotiations whose consumer still has something to be
/// told; the callback worker reads only these.
pub(super) const OUTBOX: &str = "dsp_negotiation_outbox";

/// The property carrying a signed contract request (request) or the agreement
/// envelope (agreement, verification) between Liutong nodes.
pub const SIGNED_REQUEST: &str = "lt:request";
pub const SIGNED_AGREEMENT: &str = "lt:agreement";
/// The property carrying the consumer's purpose (DSP has no field for it).
pub const PURPOSE: &str = "lt:purpose";
/// The purpose of a request that names none.
pub const NO_PURPOSE: &str = "unstated";

/// How long an unsigned request is taken as valid (it is decided at once).
const UNSIGNED_LIFETIME: i64 = 300;
/// How long a termination waits for a callback in progress on its negotiation.
const RECORD_WAIT: std::time::Duration = std::time::Duration::from_secs(15);
/// The longest consumer process ID taken.
const MAX_PID: usize = 256;

/// What the binding keeps of a negotiation beside the contract component's record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DspNegotiation {
    pub provider_pid: String,
    pub consumer_pid: String,
    /// The consumer's participant: the only caller this negotiation exists for, and the
    /// participant the callback server must prove to be.
    pub consumer: String,
    /// The consumer's `callbackAddress` (`https://…`, no trailing slash).
    pub callback: String,
    /// The last state the consumer was told of (`AGREED`, `FINALIZED`, `TERMINATED`).
    pub told: Option<NegotiationStatus>,
    /// Failed attempts at telling the current news, and when to try next (Unix s).
    pub attempts: u32,
    pub next_attempt: i64,
}

impl DspNegotiation {
    pub(super) fn load(state: &DspState, pid: &str) -> Result<Option<Self>, String> {
        let Some(bytes) = state
            .storage
            .get(RECORDS, pid.as_bytes())
            .map_err(|e| e.to_string())?
        else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| format!("the stored DSP record of negotiation {pid} is damaged: {e}"))
    }

    /// Stores the record (and whether the consumer still has news coming), durably.
    pub(super) async fn store(&self, state: &DspState, pending: bool) -> Result<(), String> {
        let bytes = serde_json::to_vec(self).expect("records serialize");
        state
            .storage
            .put(RECORDS, self.provider_pid.as_bytes(), &bytes)
            .map_err(|e| e.to_string())?;
        let key = self.provider_pid.as_bytes();
        if pending {
            state
                .storage
                .put(OUTBOX, key, b"")
                .map_err(|e| e.to_string())?;
        } else {
            state
                .storage
                .delete(OUTBOX, key)
                .map_err(|e| e.to_string())?;
        }
        state.storage.flush().await.map_err(|e| e.to_string())
    }
}

/// The claim that keeps the callback worker and a handler from rewriting one record
/// at once.
pub(super) fn record_claim(pid: &str) -> String {
    format!("dsp-record/{pid}")
}

/// The `ContractNegotiation` a consumer is answered with.
fn negotiation_body(record: &DspNegotiation, state: NegotiationStatus) -> Json {
    json!({
        "@context": [CONTEXT],
        "@type": "ContractNegotiation",
        "providerPid": record.provider_pid,
        "consumerPid": record.consumer_pid,
        "state": state.as_str(),
    })
}

/// The status a contract step's refusal is answered with: a step the state machine
/// does not allow is 400 (the protocol's invalid transition), an unknown negotiation
/// 404.
fn refusal(e: &ContractError) -> StatusCode {
    match e {
        ContractError::NotFound(_) => StatusCode::NOT_FOUND,
        ContractError::WrongState { .. } => StatusCode::BAD_REQUEST,
        _ => match e.kind() {
            ErrorKind::PermissionDenied => StatusCode::FORBIDDEN,
            ErrorKind::Unavailable | ErrorKind::Internal => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        },
    }
}

pub(super) fn contract_error(e: ContractError) -> DspError {
    DspError::new(refusal(&e), Area::Negotiation, e.message())
}

/// Refuses a member without the consumer role, as the gRPC negotiation service does,
/// before anything is read for it.
fn consumer(member: &Membership, what: &str) -> Result<(), DspError> {
    member
        .require_role(crate::identity::MemberRole::Consumer, what)
        .map_err(|e| DspError::new(StatusCode::FORBIDDEN, Area::Negotiation, e.to_string()))
}

pub(super) fn bad(reason: impl Into<String>) -> DspError {
    DspError::bad_request(Area::Negotiation, reason)
}

pub(super) fn unavailable(reason: impl Into<String>) -> DspError {
    DspError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        Area::Negotiation,
        reason.into(),
    )
}

/// Reads a message of type `expected` from a body, at most the node's message size.
pub(super) async fn read(
    state: &DspState,
    body: Body,
    expected: &str,
) -> Result<Map<String, Json>, DspError> {
    let body = axum::body::to_bytes(body, state.max_body)
        .await
        .map_err(|_| {
            bad(format!(
                "the message is larger than this node accepts ({} bytes, \
                 limits.max_message_bytes) or was cut off",
                state.max_body
            ))
        })?;
    message::parse(&body, expected).map_err(bad)
}

/// A string property `key` of `message`, if present (an error if present but not a
/// string).
pub(super) fn text<'a>(
    message: &'a Map<String, Json>,
    key: &str,
) -> Result<Option<&'a str>, DspError> {
    match message.get(key) {
        None => Ok(None),
        Some(Json::String(s)) => Ok(Some(s)),
        Some(_) => Err(bad(format!("{key} must be a string"))),
    }
}

/// A process ID: 1 to 256 characters of `A-Z a-z 0-9 : . _ ~ -`, so that it can stand
/// in a callback URL's path as it is.
pub(super) fn pid(key: &str, value: Option<&str>) -> Result<String, DspError> {
    let value = value.ok_or_else(|| bad(format!("{key} is missing")))?;
    let ok = !value.is_empty()
        && value.len() <= MAX_PID
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b":._~-".contains(&b));
    if !ok {
        return Err(bad(format!(
            "{key} must be 1 to {MAX_PID} characters of letters, digits and : . _ ~ - \
             (a URN such as urn:uuid:…)"
        )));
    }
    Ok(value.to_owned())
}

/// Checks a `callbackAddress`: an `https://` URL with a host, returned without a
/// trailing slash.
pub fn callback_address(value: Option<&str>) -> Result<String, String> {
    let value = value.ok_or("callbackAddress is missing; a new request names where to answer")?;
    let refuse = || {
        format!(
            "callbackAddress {} is not an https:// URL; this node sends the outcome only over \
             HTTPS, to a server presenting your own data-space certificate",
            crate::base::bounded::shown(value, 128)
        )
    };
    if !value.starts_with("https://") || value.len() > 2048 {
        return Err(refuse());
    }
    let uri: http::Uri = value.parse().map_err(|_| refuse())?;
    if uri.scheme_str() != Some("https")
        || uri.host().is_none_or(str::is_empty)
        || uri.query().is_some()
        || value.contains('@')
    {
        return Err(refuse());
    }
    Ok(value.trim_end_matches('/').to_owned())
}

/// The binding's record of `pid` for `member`: another participant's negotiation, or
/// one this binding did not make, does not exist for it (404).
fn own_record(
    state: &DspState,
    member: &Membership,
    pid: &str,
) -> Result<DspNegotiation, DspError> {
    let unknown = || {
        DspError::not_found(
            Area::Negotiation,
            format!(
                "negotiation {} does not exist for you at this provider",
                crate::base::bounded::shown(pid, 128)
            ),
        )
        .with_pids(pid, "")
    };
    match DspNegotiation::load(state, pid) {
        Ok(Some(r)) if r.consumer == member.participant_id.to_string() => Ok(r),
        Ok(_) => Err(unknown()),
        Err(e) => Err(unavailable(e)),
    }
}

/// Checks that a message about `record` names it by both process IDs.
fn names(message: &Map<String, Json>, record: &DspNegotiation) -> Result<(), DspError> {
    names_process(
        message,
        &record.provider_pid,
        &record.consumer_pid,
        "negotiation",
    )
}

/// Checks that a message names the process (`what`: negotiation, transfer) its path
/// names by both process IDs. Errors are in the negotiation area.
pub(super) fn names_process(
    message: &Map<String, Json>,
    provider_pid: &str,
    consumer_pid: &str,
    what: &str,
) -> Result<(), DspError> {
    let provider = text(message, "providerPid")?;
    let consumer = text(message, "consumerPid")?;
    if provider != Some(provider_pid) {
        return Err(bad(format!(
            "providerPid must be {provider_pid}, the {what} this path names"
        )));
    }
    if consumer != Some(consumer_pid) {
        return Err(bad(format!(
            "consumerPid must be {consumer_pid}, as in your request"
        )));
    }
    Ok(())
}

/// The contract component's record of `record`'s negotiation, as its consumer may see it.
fn contract_state(
    state: &DspState,
    member: &Membership,
    record: &DspNegotiation,
) -> Result<Negotiation, DspError> {
    state
        .contracts
        .state_for(member, &record.provider_pid)
        .map_err(|e| contract_error(e).with_pids(&record.provider_pid, &record.consumer_pid))
}

/// `GET /negotiations/:providerPid`: how the negotiation stands.
pub async fn get(
    State(state): State<DspState>,
    Extension(PeerCaller(member)): Extension<PeerCaller>,
    Path(pid): Path<String>,
) -> Result<Response, DspError> {
    consumer(&member, "asking about a negotiation")?;
    let record = own_record(&state, &member, &pid)?;
    let n = contract_state(&state, &member, &record)?;
    Ok(axum::Json(negotiation_body(&record, n.state)).into_response())
}

/// `POST /negotiations/request`: a consumer's new request. Answered 201 with the
/// negotiation REQUESTED once it is on disk; the decision follows at the callback
/// address.
pub async fn request(
    State(state): State<DspState>,
    Extension(PeerCaller(member)): Extension<PeerCaller>,
    body: Body,
) -> Result<Response, DspError> {
    consumer(&member, "requesting a contract")?;
    let message = read(&state, body, "ContractRequestMessage").await?;
    let consumer_pid = pid("consumerPid", text(&message, "consumerPid")?)?;
    let refuse = |e: DspError| e.with_pids("", &consumer_pid);
    if message.contains_key("providerPid") {
        return Err(refuse(bad(
            "providerPid: a new request names none (the provider assigns it); a request \
             answering an offer goes to /negotiations/:providerPid/request",
        )));
    }
    let callback =
        callback_address(text(&message, "callbackAddress")?).map_err(|e| refuse(bad(e)))?;
    let offer_id = offer_of(&message).map_err(refuse)?;
    let purpose = text(&message, PURPOSE)
        .map_err(refuse)?
        .unwrap_or(NO_PURPOSE)
        .to_owned();
    let signed = match message.get(SIGNED_REQUEST) {
        None => None,
        Some(value) => Some(
            serde_json::from_value::<Envelope>(value.clone()).map_err(|e| {
                refuse(bad(format!(
                    "{SIGNED_REQUEST} is not a signed contract request envelope: {e}"
                )))
            })?,
        ),
    };
    let (provider_pid, form) = match signed {
        Some(envelope) => {
            // Read unchecked only to name the negotiation and compare the offer; the
            // contract component checks the signature.
            let request: ContractRequest = envelope
                .peek_json()
                .map_err(|e| refuse(bad(format!("{SIGNED_REQUEST}: {e}"))))?;
            if request.offer_id != offer_id {
                return Err(refuse(bad(format!(
                    "{SIGNED_REQUEST} asks for offer {}, but the message's offer is {offer_id}",
                    request.offer_id
                ))));
            }
            // The ID names a stored record and a path: checked before anything is stored.
            let id = crate::base::bounded::id("negotiation_id", &request.negotiation_id)
                .map_err(|e| refuse(bad(format!("{SIGNED_REQUEST}: {e}"))))?;
            (id, Form::Signed(envelope))
        }
        None => {
            let id = new_id("neg").map_err(|e| refuse(unavailable(e.to_string())))?;
            let now = crate::base::clock::now();
            let request = ContractRequest {
                negotiation_id: id.clone(),
                consumer: member.participant_id.clone(),
                provider: state.participant.clone(),
                offer_id: offer_id.clone(),
                purpose: purpose.clone(),
                nonce: hex::encode(
                    random_bytes::<16>().map_err(|e| refuse(unavailable(e.to_string())))?,
                ),
                created_at: now,
                expires_at: now + UNSIGNED_LIFETIME,
            };
            (id, Form::Unsigned(request))
        }
    };
    let record = DspNegotiation {
        provider_pid: provider_pid.clone(),
        consumer_pid: consumer_pid.clone(),
        consumer: member.participant_id.to_string(),
        callback,
        told: None,
        attempts: 0,
        next_attempt: 0,
    };
    let refuse = |e: DspError| e.with_pids(&provider_pid, &consumer_pid);
    let bytes = serde_json::to_vec(&record).expect("records serialize");
    // The record comes first, so a negotiation the contract component stores always
    // has its consumer's address; an ID already taken is refused before anything else.
    match state
        .storage
        .insert_new(RECORDS, provider_pid.as_bytes(), &bytes)
    {
        Ok(true) => {}
        Ok(false) => {
            return Err(refuse(bad(format!(
                "negotiation {provider_pid} already exists; a new request starts a new one"
            ))));
        }
        Err(e) => return Err(refuse(unavailable(e.to_string()))),
    }
    // A request for an offer this catalog no longer holds, for a product the caller
    // may see, is answered with the product's current offer (see `counter_request`).
    let decided = match form {
        Form::Signed(envelope) => {
            state
                .contracts
                .receive_request_countering(&member, envelope, true)
                .await
        }
        Form::Unsigned(request) => {
            state
                .contracts
                .receive_request_countering(&member, unsigned_envelope(&request), false)
                .await
        }
    };
    match decided {
        // A refusal by the policy is on record (TERMINATED, with the failed
        // constraints); the consumer is told at its callback address.
        Ok(_) | Err(ContractError::Denied { .. }) => {}
        Err(e) => {
            // Nothing of the request stays: the contract component stored nothing.
            if let Err(removed) = state.storage.delete(RECORDS, provider_pid.as_bytes()) {
                tracing::error!(error = %removed, "cannot remove the DSP record of a refused request");
            }
            return Err(refuse(contract_error(e)));
        }
    }
    record
        .store(&state, true)
        .await
        .map_err(|e| refuse(unavailable(e)))?;
    state.wake.notify_one();
    Ok((
        StatusCode::CREATED,
        axum::Json(negotiation_body(&record, NegotiationStatus::Requested)),
    )
        .into_response())
}

/// A plain DSP consumer's request, kept in an envelope without signatures.
fn unsigned_envelope(request: &ContractRequest) -> Envelope {
    Envelope {
        payload_type: crate::contract::REQUEST_PAYLOAD_TYPE.to_owned(),
        payload: serde_json::to_vec(request).expect("contract requests serialize"),
        signatures: Vec::new(),
    }
}

/// How a request came: signed by the consumer (`lt:request`), or not.
enum Form {
    Signed(Envelope),
    Unsigned(ContractRequest),
}

/// The node's offer ID a request's `offer` names (`@id`, as the catalog gives it).
fn offer_of(message: &Map<String, Json>) -> Result<String, DspError> {
    let Some(Json::Object(offer)) = message.get("offer") else {
        return Err(bad(
            "offer is missing or not an object; send the offer as the catalog shows it",
        ));
    };
    if offer.get("@type").and_then(Json::as_str) != Some("Offer") {
        return Err(bad("offer: its @type must be \"Offer\""));
    }
    let Some(Json::String(id)) = offer.get("@id") else {
        return Err(bad(
            "offer: @id is missing; name the offer by its @id in the catalog",
        ));
    };
    let prefix = super::catalog::offer_iri("");
    let offer_id = id.strip_prefix(&prefix).ok_or_else(|| {
        bad(format!(
            "offer {} is not an offer of this node (its offers are {prefix}…)",
            crate::base::bounded::shown(id, 128)
        ))
    })?;
    if let Some(target) = offer.get("target") {
        let product = crate::catalog::product::parse_offer_id(offer_id).map(|(p, _)| p);
        if product.map(super::catalog::dataset_id).as_ref()
            != target.as_str().map(str::to_owned).as_ref()
        {
            return Err(bad(format!(
                "offer: target {target} is not the dataset of offer {offer_id}"
            )));
        }
    }
    Ok(offer_id.to_owned())
}

/// `POST /negotiations/:providerPid/request`: a request answering this provider's
/// counter-offer. The counter-offer rule: a new request naming an offer this catalog
/// does not hold (another version of a product), for a product whose current offer the
/// consumer may see, is answered with that current offer (OFFERED, sent to the callback
/// address) rather than refused. The consumer takes it by requesting exactly that offer
/// here (between Liutong nodes signed again, in `lt:request`, with the same negotiation
/// ID); it is then decided as a first request is. 200 with the negotiation REQUESTED;
/// the decision follows at the callback address.
pub async fn counter_request(
    State(state): State<DspState>,
    Extension(PeerCaller(member)): Extension<PeerCaller>,
    Path(path_pid): Path<String>,
    body: Body,
) -> Result<Response, DspError> {
    consumer(&member, "requesting a contract")?;
    let message = read(&state, body, "ContractRequestMessage").await?;
    let record = own_record(&state, &member, &path_pid)?;
    let refuse = |e: DspError| e.with_pids(&record.provider_pid, &record.consumer_pid);
    names(&message, &record).map_err(refuse)?;
    let n = contract_state(&state, &member, &record)?;
    if n.state != NegotiationStatus::Offered {
        return Err(refuse(bad(format!(
            "negotiation {} is {}; a request answering an offer needs it OFFERED",
            record.provider_pid, n.state
        ))));
    }
    let offer_id = offer_of(&message).map_err(refuse)?;
    if offer_id != n.offer_id {
        return Err(refuse(bad(format!(
            "the request names offer {offer_id}, but the counter-offer is {}",
            n.offer_id
        ))));
    }
    let (envelope, signed) = match message.get(SIGNED_REQUEST) {
        Some(value) => (
            serde_json::from_value::<Envelope>(value.clone()).map_err(|e| {
                refuse(bad(format!(
                    "{SIGNED_REQUEST} is not a signed contract request envelope: {e}"
                )))
            })?,
            true,
        ),
        None => {
            let purpose = text(&message, PURPOSE)
                .map_err(refuse)?
                .map_or_else(|| n.purpose.clone(), str::to_owned);
            (
                unsigned_counter_request(&state, &member, &n, offer_id, purpose).map_err(refuse)?,
                false,
            )
        }
    };
    match state
        .contracts
        .receive_counter_request(&member, &record.provider_pid, envelope, signed)
        .await
    {
        Ok(_) | Err(ContractError::Denied { .. }) => {}
        Err(e) => return Err(refuse(contract_error(e))),
    }
    state.wake.notify_one();
    Ok(axum::Json(negotiation_body(&record, NegotiationStatus::Requested)).into_response())
}

/// A plain DSP consumer's request for the counter-offer of negotiation `n`, kept
/// unsigned as a first plain request is.
fn unsigned_counter_request(
    state: &DspState,
    member: &Membership,
    n: &Negotiation,
    offer_id: String,
    purpose: String,
) -> Result<Envelope, DspError> {
    let now = crate::base::clock::now();
    let request = ContractRequest {
        negotiation_id: n.id.clone(),
        consumer: member.participant_id.clone(),
        provider: state.participant.clone(),
        offer_id,
        purpose,
        nonce: hex::encode(random_bytes::<16>().map_err(|e| unavailable(e.to_string()))?),
        created_at: now,
        expires_at: now + UNSIGNED_LIFETIME,
    };
    Ok(unsigned_envelope(&request))
}

/// `POST /negotiations/:providerPid/events`: the consumer's ACCEPTED of a counter-offer
/// (OFFERED), taken as a plain DSP consumer's unsigned request for exactly that offer
/// and decided as a first request is (the agreement follows at the callback address);
/// a Liutong consumer answers with a signed request instead (`counter_request`).
/// FINALIZED is the provider's to send.
pub async fn event(
    State(state): State<DspState>,
    Extension(PeerCaller(member)): Extension<PeerCaller>,
    Path(path_pid): Path<String>,
    body: Body,
) -> Result<Response, DspError> {
    consumer(&member, "sending a negotiation event")?;
    let message = read(&state, body, "ContractNegotiationEventMessage").await?;
    let record = own_record(&state, &member, &path_pid)?;
    let refuse = |e: DspError| e.with_pids(&record.provider_pid, &record.consumer_pid);
    names(&message, &record).map_err(refuse)?;
    let n = contract_state(&state, &member, &record)?;
    let why = match text(&message, "eventType").map_err(refuse)? {
        Some("ACCEPTED") if n.state == NegotiationStatus::Offered => {
            let envelope = unsigned_counter_request(
                &state,
                &member,
                &n,
                n.offer_id.clone(),
                n.purpose.clone(),
            )
            .map_err(refuse)?;
            match state
                .contracts
                .receive_counter_request(&member, &record.provider_pid, envelope, false)
                .await
            {
                Ok(_) | Err(ContractError::Denied { .. }) => {}
                Err(e) => return Err(refuse(contract_error(e))),
            }
            state.wake.notify_one();
            return Ok(StatusCode::OK.into_response());
        }
        Some("ACCEPTED") => format!(
            "negotiation {} is {}; ACCEPTED answers a counter-offer, which needs it OFFERED",
            record.provider_pid, n.state
        ),
        Some("FINALIZED") => format!(
            "negotiation {} is {}; FINALIZED is the provider's to send, after it verified \
             the agreement",
            record.provider_pid, n.state
        ),
        _ => "eventType must be ACCEPTED or FINALIZED".to_owned(),
    };
    Err(refuse(bad(why)))
}

/// `POST /negotiations/:providerPid/agreement/verification`: the consumer confirms the
/// agreement (countersigned in `lt:agreement` where the request was signed). 200 once
/// FINALIZED is on disk; the FINALIZED event follows at the callback address.
pub async fn verification(
    State(state): State<DspState>,
    Extension(PeerCaller(member)): Extension<PeerCaller>,
    Path(path_pid): Path<String>,
    body: Body,
) -> Result<Response, DspError> {
    consumer(&member, "verifying an agreement")?;
    let message = read(&state, body, "ContractAgreementVerificationMessage").await?;
    let record = own_record(&state, &member, &path_pid)?;
    let refuse = |e: DspError| e.with_pids(&record.provider_pid, &record.consumer_pid);
    names(&message, &record).map_err(refuse)?;
    let verified = match message.get(SIGNED_AGREEMENT) {
        Some(value) => {
            let envelope: Envelope = serde_json::from_value(value.clone()).map_err(|e| {
                refuse(bad(format!(
                    "{SIGNED_AGREEMENT} is not a countersigned agreement envelope: {e}"
                )))
            })?;
            state
                .contracts
                .receive_countersigned(&member, &record.provider_pid, envelope)
                .await
        }
        None => {
            state
                .contracts
                .receive_unsigned_verification(&member, &record.provider_pid)
                .await
        }
    };
    verified.map_err(|e| refuse(contract_error(e)))?;
    state.wake.notify_one();
    Ok(StatusCode::OK.into_response())
}

/// `POST /negotiations/:providerPid/termination`: the consumer ends the negotiation,
/// in any state that is not final.
pub async fn termination(
    State(state): State<DspState>,
    Extension(PeerCaller(member)): Extension<PeerCaller>,
    Path(path_pid): Path<String>,
    body: Body,
) -> Result<Response, DspError> {
    consumer(&member, "ending a negotiation")?;
    let message = read(&state, body, "ContractNegotiationTerminationMessage").await?;
    let record = own_record(&state, &member, &path_pid)?;
    let pids = (record.provider_pid.clone(), record.consumer_pid.clone());
    let refuse = |e: DspError| e.with_pids(&pids.0, &pids.1);
    names(&message, &record).map_err(refuse)?;
    let reason = reason_of(&message);
    // Held while the record is rewritten, so that a callback in flight does not
    // overwrite what the consumer was told (an agreement sent as it terminated).
    let _claim = state
        .contracts
        .claims()
        .claim_within(&record_claim(&path_pid), RECORD_WAIT)
        .await
        .ok_or_else(|| {
            refuse(unavailable(
                "a message to your callback address is in progress; send the termination again",
            ))
        })?;
    // Read again under the claim: the worker may have changed it meanwhile.
    let mut record = own_record(&state, &member, &path_pid)?;
    state
        .contracts
        .terminate_by_consumer(&member, &record.provider_pid, &reason)
        .await
        .map_err(|e| refuse(contract_error(e)))?;
    // The consumer ended it: it has nothing more to be told.
    record.told = Some(NegotiationStatus::Terminated);
    if let Err(e) = record.store(&state, false).await {
        tracing::warn!(error = %e, "cannot record that the consumer ended negotiation {}", record.provider_pid);
    }
    Ok(StatusCode::OK.into_response())
}

/// The reason a termination message gives (its `code` and `reason` entries), as text.
pub(super) fn reason_of(message: &Map<String, Json>) -> String {
    let mut parts = Vec::new();
    if let Some(Json::String(code)) = message.get("code") {
        parts.push(format!("code {code}"));
    }
    if let Some(Json::Array(reasons)) = message.get("reason") {
        for r in reasons.iter().take(8) {
            match r {
                Json::String(s) => parts.push(s.clone()),
                other => parts.push(other.to_string()),
            }
        }
    }
    if parts.is_empty() {
        "no reason given".to_owned()
    } else {
        parts.join("; ")
    }
}
