//! A negotiation as this node keeps it ([`Negotiation`]), what its steps fail with
//! ([`ContractError`]), and the pure parts of a step: the state change a step makes on
//! a record and the audit event for it, and how much of a peer's text a reason keeps.

use crate::base::error::{ErrorKind, ErrorKinded, PeerRefusal};
use liutong_policy::Classification;
use serde::{Deserialize, Serialize};

use crate::audit::log::{Event, EventKind};
use crate::base::clock::now;
use crate::base::random::RandomError;
use crate::identity::{Envelope, ParticipantId};
use crate::storage::StorageError;
use liutong_proto::v1::NegotiationState;

use super::agreement::{Agreement, Role};
use super::state::{self, NegotiationEvent, NegotiationStatus};

/// A negotiation as this node keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Negotiation {
    pub id: String,
    pub role: Role,
    /// The other party.
    pub peer: ParticipantId,
    /// The provider's address (consumer side).
    pub peer_address: String,
    pub offer_id: String,
    pub purpose: String,
    pub state: NegotiationStatus,
    pub reason: String,
    pub failed_constraints: Vec<String>,
    /// The signed contract request.
    pub request: Envelope,
    /// The offer's policy and classification as the consumer saw them (consumer side),
    /// to check that the agreement only narrows the offer.
    pub offer_policy: Option<serde_json::Value>,
    pub offer_classification: Option<Classification>,
    /// The agreement envelope, from AGREED on (both signatures from VERIFIED on).
    pub agreement: Option<Envelope>,
    pub agreement_id: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ContractError {
    #[error("negotiation {0} does not exist")]
    NotFound(String),
    #[error("offer {0} does not exist")]
    UnknownOffer(String),
    #[error("negotiation {0} already exists")]
    Exists(String),
    #[error(
        "this contract request was already received (nonce {0}); a replayed request is refused"
    )]
    Replay(String),
    #[error("the contract request {0}")]
    Expired(String),
    #[error("{0}")]
    Signature(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("negotiation {id} is {state}; {what}")]
    WrongState {
        id: String,
        state: NegotiationStatus,
        what: String,
    },
    #[error("the provider's policy refuses the request: {explanation}")]
    Denied {
        explanation: String,
        failed: Vec<String>,
    },
    #[error("the policy cannot be used: {0}")]
    Policy(String),
    #[error("the peer: {0}")]
    Peer(PeerRefusal),
    #[error("cannot reach the peer: {0}")]
    Unreachable(String),
    /// Another step is changing this negotiation right now; asking again later works.
    #[error("negotiation {0} is being changed by another step; try again")]
    Busy(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("the audit log cannot be written, so the step is refused: {0}")]
    Audit(String),
    #[error("cannot make a nonce or an ID: {0}")]
    Random(#[from] RandomError),
    /// The node's signing key could not sign (a key in a token that cannot be reached).
    #[error("the node's signing key cannot sign: {0}")]
    Signing(#[from] crate::identity::KeyError),
}

impl ErrorKinded for ContractError {
    fn kind(&self) -> ErrorKind {
        match self {
            ContractError::NotFound(_) | ContractError::UnknownOffer(_) => ErrorKind::NotFound,
            ContractError::Exists(_) => ErrorKind::AlreadyExists,
            ContractError::Replay(_)
            | ContractError::Expired(_)
            | ContractError::WrongState { .. }
            | ContractError::Policy(_) => ErrorKind::FailedPrecondition,
            ContractError::Signature(_) => ErrorKind::DataLoss,
            ContractError::Invalid(_) => ErrorKind::InvalidArgument,
            ContractError::Forbidden(_) | ContractError::Denied { .. } => {
                ErrorKind::PermissionDenied
            }
            ContractError::Peer(refusal) => refusal.kind,
            ContractError::Unreachable(_)
            | ContractError::Busy(_)
            | ContractError::Storage(_)
            | ContractError::Audit(_)
            | ContractError::Signing(_) => ErrorKind::Unavailable,
            ContractError::Random(_) => ErrorKind::Internal,
        }
    }

    fn message(&self) -> String {
        match self {
            ContractError::Peer(refusal) => {
                format!("the provider answered: {}", refusal.message)
            }
            other => other.to_string(),
        }
    }

    fn inner(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ContractError::Storage(s) => Some(s),
            _ => None,
        }
    }

    /// A replayed request is said in metadata too: a consumer sending its request again
    /// takes it as "already held", not as a refusal.
    fn refusal(&self) -> Option<&'static str> {
        match self {
            ContractError::Replay(_) => Some(crate::recovery::REPLAY),
            _ => None,
        }
    }
}

impl From<crate::base::bounded::FieldError> for ContractError {
    fn from(e: crate::base::bounded::FieldError) -> Self {
        ContractError::Invalid(e.to_string())
    }
}

/// The longest text of the provider's kept in a reason: a peer's words are recorded,
/// not any amount of them.
const PEER_TEXT: usize = 512;

/// `text` from a peer, cut to [`PEER_TEXT`] bytes (at a character boundary).
pub(super) fn peer_text(text: &str) -> String {
    if text.len() <= PEER_TEXT {
        return text.to_owned();
    }
    let mut end = PEER_TEXT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// Whether a negotiation of `role` in `state` has a step still to come
/// ([`Negotiation::unfinished`]).
pub(super) fn unfinished(role: Role, state: NegotiationStatus) -> bool {
    matches!(
        (role, state),
        (Role::Consumer, NegotiationStatus::Requested)
            | (Role::Consumer, NegotiationStatus::Verified)
            | (Role::Provider, NegotiationStatus::Agreed)
    )
}

/// The reason a consumer's REQUESTED carries until the provider has answered it.
pub(super) const SENT: &str = "sent to the provider";

impl Negotiation {
    /// A negotiation with a step still to come that this node retries or expires:
    /// a consumer's REQUESTED or VERIFIED, a provider's AGREED.
    pub(super) fn unfinished(&self) -> bool {
        unfinished(self.role, self.state)
    }

    /// Whether the peer signed its request (a plain Dataspace Protocol consumer does
    /// not; its agreement then carries the provider's signature only).
    pub fn signed_by_peer(&self) -> bool {
        !self.request.signatures.is_empty()
    }

    /// Whether the provider signed the agreement on record, on the consumer's side: a
    /// Liutong provider's agreement carries its signature and this node's
    /// countersignature; a plain Dataspace Protocol provider's, which it did not sign,
    /// carries this node's signature only (so that the copy's sticky policy is still
    /// the one this node accepted).
    pub fn agreement_signed_by_provider(&self) -> bool {
        self.agreement
            .as_ref()
            .is_some_and(|a| a.signatures.len() >= 2)
    }

    /// The agreement's content, without checking signatures (for display and lookups).
    pub fn agreement_content(&self) -> Option<Agreement> {
        self.agreement.as_ref().and_then(|e| e.peek_json().ok())
    }

    pub fn to_state_proto(&self) -> NegotiationState {
        NegotiationState {
            negotiation_id: self.id.clone(),
            state: self.state.to_string(),
            reason: self.reason.clone(),
            agreement: self.agreement.clone().map(Into::into),
            failed_constraints: self.failed_constraints.clone(),
        }
    }

    pub fn to_proto(&self) -> liutong_proto::v1::Contract {
        liutong_proto::v1::Contract {
            negotiation_id: self.id.clone(),
            role: match self.role {
                Role::Provider => "provider",
                Role::Consumer => "consumer",
            }
            .to_owned(),
            peer: self.peer.to_string(),
            peer_address: self.peer_address.clone(),
            offer_id: self.offer_id.clone(),
            purpose: self.purpose.clone(),
            state: self.state.to_string(),
            reason: self.reason.clone(),
            failed_constraints: self.failed_constraints.clone(),
            agreement_id: self.agreement_id.clone().unwrap_or_default(),
            agreement_json: self
                .agreement
                .as_ref()
                .map(Envelope::to_json)
                .unwrap_or_default(),
            created_at_unix: self.created_at,
            updated_at_unix: self.updated_at,
        }
    }
}

pub(super) fn event(kind: EventKind, n: &Negotiation, detail: String) -> Event {
    let mut event = Event::new(kind, now(), detail);
    event.participant = Some(n.peer.to_string());
    event.agreement = n.agreement_id.clone();
    event.product = crate::catalog::product::parse_offer_id(&n.offer_id).map(|(p, _)| p.to_owned());
    event
}

/// Sets the state `step` leads to on `n` (not stored yet) and returns the audit event
/// for it; a step the state machine does not allow from `n`'s state changes nothing.
pub(super) fn change(
    n: &mut Negotiation,
    step: NegotiationEvent,
    reason: &str,
) -> Result<Event, ContractError> {
    let from = n.state;
    let state = state::next(from, step).map_err(|e| ContractError::WrongState {
        id: n.id.clone(),
        state: from,
        what: format!("{e}; the step is refused"),
    })?;
    n.state = state;
    n.reason = reason.to_owned();
    n.updated_at = now();
    let detail = if from == state {
        format!(
            "negotiation {} {state} ({:?} side){}",
            n.id,
            n.role,
            suffix(reason)
        )
    } else {
        format!(
            "negotiation {} {from} → {state} ({:?} side){}",
            n.id,
            n.role,
            suffix(reason)
        )
    };
    Ok(event(EventKind::NegotiationStateChanged, n, detail))
}

fn suffix(reason: &str) -> String {
    if reason.is_empty() {
        String::new()
    } else {
        format!(": {reason}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_s_text_is_kept_to_a_bounded_length() {
        assert_eq!(peer_text("short"), "short");
        let long = "流".repeat(400);
        let kept = peer_text(&long);
        assert!(kept.len() <= PEER_TEXT + '…'.len_utf8(), "{}", kept.len());
        assert!(kept.ends_with('…'));
    }
}
