//! Contract negotiation: a consumer's signed request, the provider's policy decision,
//! a person's approval where the guardrails ask for one, the provider's signed
//! agreement and the consumer's countersignature. The agreement with both signatures
//! is the digital contract (数字合约): it fixes the product version and its hash, the
//! policy, the parties, the purpose and the time.
//!
//! States follow the Dataspace Protocol: REQUESTED → AGREED → VERIFIED → FINALIZED, or
//! TERMINATED with a reason. (OFFERED and ACCEPTED, for counter-offers, are named but
//! not used yet: a provider answers with the offer as published or not at all.)
//!
//! Both sides keep each negotiation in storage, durable before they answer, and log
//! every state change and policy decision in the audit log. A step's record and its
//! audit entries are committed together, entries first, by one flush (see
//! [`AuditLog::append_with`](crate::audit::log::AuditLog::append_with)). The consumer
//! has its request on record (REQUESTED) before it sends it, and its countersignature
//! (VERIFIED) before it sends that.
//!
//! A step whose next step did not happen (the answer was lost, a node crashed) is taken
//! up again from its record by [`Contracts::poll_pending`]: the consumer asks how its request
//! stands (and sends it again, byte for byte, if the provider never got it and it is
//! still valid: 5 minutes from when it was made) and sends its countersignature again;
//! both are answered idempotently. Only the provider's answer about the step, or
//! `recovery.expire_after` once this process tried the step, ends a negotiation that
//! way: a request (also one waiting for a person's approval) and a provider's AGREED
//! that is never countersigned are TERMINATED, with the reason recorded. A
//! countersigned agreement does not expire: the provider may hold it FINALIZED.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use liutong_policy::{
    Action, Classification, CompileContext, CompiledPolicy, Guardrails, Policy, PolicyType,
    Request, Scope, State as PolicyState,
};
use serde::{Deserialize, Serialize};

use crate::alerts::Alerts;
use crate::audit::log::{AuditError, AuditLog, Event, EventKind};
use crate::base::clock;
use crate::base::clock::now;
use crate::base::random::{RandomError, random_bytes, random_id};
use crate::catalog::product::ProductVersion;
use crate::catalog::{Catalog, requester_of};
use crate::config::{GuardrailsSection, RecoverySection};
use crate::identity::{Envelope, Membership, NodeIdentity, ParticipantId};
use crate::outbound::Peers;
use crate::storage::{Storage, StorageError, Write};
use crate::trust::TrustStore;
use liutong_proto::v1::catalog_client::CatalogClient;
use liutong_proto::v1::negotiation_client::NegotiationClient;
use liutong_proto::v1::{
    GetNegotiationRequest, GetOfferRequest, NegotiationRequest, NegotiationState,
    VerifyAgreementRequest,
};

pub mod guardrails;
mod locks;
mod state;
pub use locks::AgreementLocks;
pub use state::{Event as NegotiationEvent, IllegalTransition, NegotiationStatus, UnknownState};
pub(crate) use state::{Recovery, recovery_step};

/// Payload type of a signed contract request.
pub const REQUEST_PAYLOAD_TYPE: &str = "application/vnd.liutong.contract-request+json";
/// Payload type of a signed agreement.
pub const AGREEMENT_PAYLOAD_TYPE: &str = "application/vnd.liutong.agreement+json";
/// Longest a contract request may be valid; a replay after that is refused by expiry,
/// before it by its nonce.
const MAX_REQUEST_LIFETIME: i64 = 600;
/// Clock difference tolerated between nodes.
const CLOCK_SKEW: i64 = 60;

const NEGOTIATIONS: &str = "negotiations";
const NONCES: &str = "nonces";
/// Agreement ID → negotiation ID, so transfers find their agreement without a scan.
const AGREEMENTS: &str = "agreements";

/// What the consumer signs to ask for a contract.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContractRequest {
    pub negotiation_id: String,
    pub consumer: ParticipantId,
    pub provider: ParticipantId,
    pub offer_id: String,
    pub purpose: String,
    /// Random, used once: a replayed request is refused.
    pub nonce: String,
    pub created_at: i64,
    pub expires_at: i64,
}

/// Why [`Agreement::product`] has no product to offer.
#[derive(Debug, thiserror::Error)]
pub enum AgreedProductError {
    /// The agreed version is no longer in the store.
    #[error("{0}")]
    Gone(String),
    /// The store could not be read.
    #[error("the agreed product cannot be read: {0}")]
    Unreadable(String),
    /// The stored version's record is damaged.
    #[error("the agreed product's stored record is damaged: {0}")]
    Damaged(String),
    /// The stored bytes are not the ones agreed.
    #[error("the stored product no longer matches the agreement's hash")]
    Changed,
}

/// Why no agreement is given for an agreement ID ([`Contracts::finalized`],
/// [`Contracts::consumer_agreement`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgreementError {
    /// No FINALIZED negotiation on this node's side carries the agreement.
    #[error("no finalized agreement {0}")]
    Unknown(String),
    /// The caller is not the agreement's consumer.
    #[error("agreement {agreement_id} was made with {consumer}, not with {caller}")]
    NotConsumer {
        agreement_id: String,
        consumer: ParticipantId,
        caller: ParticipantId,
    },
    /// The stored negotiation or agreement is damaged, or not signed by this node.
    #[error("{0}")]
    Damaged(String),
    /// The store could not be read.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// The digital contract: what both parties sign.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Agreement {
    pub agreement_id: String,
    pub negotiation_id: String,
    pub provider: ParticipantId,
    pub consumer: ParticipantId,
    pub offer_id: String,
    pub product_id: String,
    pub version: u32,
    /// SHA-256 of the product version's payload, hex.
    pub product_sha256: String,
    pub size: u64,
    /// The size of the product version's chunks, and the SHA-256 over their hashes
    /// ([`chunk_list_sha256`](crate::catalog::product::chunk_list_sha256)): they fix
    /// every chunk of the agreed bytes, which the consumer checks as each arrives.
    pub chunk_size: u32,
    pub chunks_sha256: String,
    pub classification: Classification,
    pub purpose: String,
    /// The agreement's policy, ODRL 2.2 JSON-LD; its offer implies it.
    pub policy: serde_json::Value,
    pub agreed_at: i64,
    /// Who approved it, when the guardrails asked for a person's approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
}

impl Agreement {
    /// The product version this agreement names, from the provider's store, checked
    /// against the agreement's hash.
    pub fn product(
        &self,
        store: &crate::catalog::product::ProductStore,
    ) -> Result<crate::catalog::product::ProductVersion, AgreedProductError> {
        let product = store
            .get(&self.product_id, self.version)
            .map_err(|e| match e {
                crate::catalog::product::ProductError::Damaged(why) => {
                    AgreedProductError::Damaged(why)
                }
                other => AgreedProductError::Unreadable(other.to_string()),
            })?
            .ok_or_else(|| {
                AgreedProductError::Gone(format!(
                    "product {} v{} is gone",
                    self.product_id, self.version
                ))
            })?;
        if product.sha256 != self.product_sha256 {
            return Err(AgreedProductError::Changed);
        }
        Ok(product)
    }

    /// An audit event of `kind` about this agreement and its product, naming the other
    /// `participant`.
    pub fn event(&self, kind: EventKind, participant: &str, detail: String) -> Event {
        let mut event = Event::new(kind, now(), detail);
        event.participant = Some(participant.to_owned());
        event.agreement = Some(self.agreement_id.clone());
        event.product = Some(self.product_id.clone());
        event
    }

    /// The policy request of `requester` to take `action` at `scope` under this
    /// agreement, for the agreement's purpose.
    pub fn request(&self, scope: Scope, action: Action, requester: &Membership) -> Request {
        Request {
            scope,
            action,
            requester: requester_of(requester),
            purpose: Some(self.purpose.clone()),
        }
    }

    /// The policy state of this agreement now, after `uses` uses: the time since it
    /// was agreed, and the uses.
    pub fn policy_state(&self, uses: u64) -> PolicyState {
        let now = clock::now_utc();
        PolicyState {
            now,
            elapsed: std::time::Duration::from_secs(
                (now.unix_timestamp() - self.agreed_at).max(0) as u64
            ),
            uses,
        }
    }

    /// The other party of this agreement, seen from this node (`me`).
    pub fn other_party(&self, me: &ParticipantId) -> &ParticipantId {
        if self.provider == *me {
            &self.consumer
        } else {
            &self.provider
        }
    }

    /// Logs an audit event of `kind` about this agreement, naming the other party
    /// (for a step that changes no stored state); durable when this returns.
    pub async fn log(
        &self,
        audit: &AuditLog,
        me: &ParticipantId,
        kind: EventKind,
        detail: String,
    ) -> Result<(), AuditError> {
        let other = self.other_party(me);
        audit
            .append(&self.event(kind, other.as_str(), detail))
            .await
            .map(|_| ())
    }
}

/// This node's side of a negotiation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Provider,
    Consumer,
}

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
    Peer(tonic::Status),
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
}

/// The negotiations this node takes part in.
pub struct Contracts {
    storage: Arc<dyn Storage>,
    audit: AuditLog,
    identity: Arc<NodeIdentity>,
    catalog: Arc<Catalog>,
    peers: Arc<Peers>,
    trust: Arc<TrustStore>,
    alerts: Alerts,
    /// `[guardrails]`, checked again when an agreement is signed.
    guardrails: GuardrailsSection,
    /// `[recovery]`: how often and how long unfinished steps are taken up.
    recovery: RecoverySection,
    /// Per-agreement locks (see [`AgreementLocks`]).
    locks: AgreementLocks,
    /// The IDs of the negotiations with a step still to come from either side
    /// ([`Negotiation::unfinished`]), which the poller takes up: read from storage
    /// once, then kept up to date by every commit. `None` until first read.
    waiting: Arc<Mutex<Option<HashSet<String>>>>,
    /// Negotiations (and, see [`transfer`](crate::transfer), receipts) a step is
    /// working on now (see [`Contracts::claim`]).
    claims: crate::recovery::Claims,
    /// Offers fetched lately (consumer side), by provider address and offer ID. An
    /// offer ID names a product version, whose policy never changes, and the provider
    /// checks the offer again when it gets the request, so a recent answer is reused
    /// rather than asked again for every request.
    offers: Arc<Mutex<HashMap<(String, String), SeenOffer>>>,
    /// Agreement policies compiled once, by agreement ID (both sides): an agreement
    /// never changes, and pulls, queries, reads and the duties' sweep all ask for it.
    policies: Arc<Mutex<HashMap<String, CachedPolicy>>>,
}

/// A compiled agreement policy, with what it was compiled from.
struct CachedPolicy {
    /// The agreement's ODRL policy and classification: a different agreement under the
    /// same ID (a provider reusing one) is compiled anew, not served this one.
    source: serde_json::Value,
    classification: Classification,
    compiled: Arc<CompiledPolicy>,
}

/// How many compiled agreement policies are kept (all are dropped when more come).
const POLICIES_KEPT: usize = 4096;

/// An offer as the consumer fetched it.
#[derive(Clone)]
struct SeenOffer {
    owner: ParticipantId,
    policy: Option<serde_json::Value>,
    classification: Option<Classification>,
    fetched: std::time::Instant,
}

/// How long a fetched offer is reused, and how many are kept.
const OFFER_REUSE: std::time::Duration = std::time::Duration::from_secs(60);
const OFFERS_KEPT: usize = 1024;

impl Contracts {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        storage: Arc<dyn Storage>,
        audit: AuditLog,
        identity: Arc<NodeIdentity>,
        catalog: Arc<Catalog>,
        peers: Arc<Peers>,
        trust: Arc<TrustStore>,
        alerts: Alerts,
        guardrails: GuardrailsSection,
        recovery: RecoverySection,
    ) -> Self {
        Self {
            storage,
            audit,
            identity,
            catalog,
            peers,
            trust,
            alerts,
            guardrails,
            recovery,
            locks: AgreementLocks::default(),
            waiting: Arc::default(),
            claims: Default::default(),
            offers: Arc::default(),
            policies: Arc::default(),
        }
    }

    /// This agreement's policy, compiled: by the provider under its own guardrails, as
    /// it signed it; by the consumer as it checked it when it countersigned
    /// (`analysis_context`). Compiled once per agreement and kept.
    pub fn compiled_policy(
        &self,
        agreement: &Agreement,
    ) -> Result<Arc<CompiledPolicy>, Box<liutong_policy::PolicyError>> {
        let cache = &self.policies;
        {
            let cached = cache.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(c) = cached.get(&agreement.agreement_id)
                && c.classification == agreement.classification
                && c.source == agreement.policy
            {
                return Ok(c.compiled.clone());
            }
        }
        let compile_context = if agreement.provider == self.identity.membership.participant_id {
            self.catalog.compile_context(agreement.classification)
        } else {
            analysis_context(agreement.classification)
        };
        let compiled = Arc::new(liutong_policy::compile(
            Policy::from_odrl_value(&agreement.policy)?,
            &compile_context,
        )?);
        let mut cached = cache.lock().unwrap_or_else(|p| p.into_inner());
        if cached.len() >= POLICIES_KEPT {
            cached.clear();
        }
        cached.insert(
            agreement.agreement_id.clone(),
            CachedPolicy {
                source: agreement.policy.clone(),
                classification: agreement.classification,
                compiled: compiled.clone(),
            },
        );
        Ok(compiled)
    }

    /// The per-agreement locks.
    pub fn locks(&self) -> &AgreementLocks {
        &self.locks
    }

    /// This node's identity, as the agreements name it.
    pub fn identity(&self) -> &NodeIdentity {
        &self.identity
    }

    /// Offer `offer_id` at `address`, fetched within [`OFFER_REUSE`] or now.
    async fn offer(
        &self,
        channel: &crate::telemetry::PeerChannel,
        address: &str,
        offer_id: &str,
    ) -> Result<SeenOffer, ContractError> {
        let key = (address.to_owned(), offer_id.to_owned());
        {
            let offers = self.offers.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(seen) = offers.get(&key)
                && seen.fetched.elapsed() < OFFER_REUSE
            {
                return Ok(seen.clone());
            }
        }
        let offer = CatalogClient::new(channel.clone())
            .get(GetOfferRequest {
                offer_id: offer_id.to_owned(),
            })
            .await
            .map_err(ContractError::Peer)?
            .into_inner();
        let seen = SeenOffer {
            owner: ParticipantId::parse(&offer.owner)
                .map_err(|e| ContractError::Invalid(format!("the offer's owner: {e}")))?,
            policy: serde_json::from_str(&offer.policy_odrl_json).ok(),
            classification: offer.classification.parse().ok(),
            fetched: std::time::Instant::now(),
        };
        let mut offers = self.offers.lock().unwrap_or_else(|p| p.into_inner());
        if offers.len() >= OFFERS_KEPT {
            offers.retain(|_, o| o.fetched.elapsed() < OFFER_REUSE);
            if offers.len() >= OFFERS_KEPT {
                offers.clear();
            }
        }
        offers.insert(key, seen.clone());
        Ok(seen)
    }

    /// The IDs of the unfinished negotiations (`Negotiation::unfinished`). The
    /// first call reads every stored negotiation; later ones do not.
    pub fn waiting(&self) -> Result<Vec<String>, ContractError> {
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        if waiting.is_none() {
            let all = self.list()?;
            *waiting = Some(
                all.into_iter()
                    .filter(Negotiation::unfinished)
                    .map(|n| n.id)
                    .collect(),
            );
        }
        let mut ids: Vec<String> = waiting.iter().flatten().cloned().collect();
        ids.sort();
        Ok(ids)
    }

    /// Keeps [`waiting`](Self::waiting) up to date with `n` as just stored.
    fn stored(&self, n: &Negotiation) {
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(ids) = waiting.as_mut() {
            if n.unfinished() {
                ids.insert(n.id.clone());
            } else {
                ids.remove(&n.id);
            }
        }
    }

    /// Claims negotiation `id` for one step that reads, decides and commits it (a
    /// request being answered, a countersignature, a retry, an expiry), so two such
    /// steps never decide on the same record at once; `None` while another holds it.
    /// Released when the claim is dropped.
    pub(crate) fn claim(&self, id: &str) -> Option<Claim> {
        self.claims.try_claim(id)
    }

    /// The claims of this node's steps, for keys other than negotiation IDs (a
    /// transfer's receipt).
    pub(crate) fn claims(&self) -> &crate::recovery::Claims {
        &self.claims
    }

    pub fn get(&self, id: &str) -> Result<Option<Negotiation>, ContractError> {
        self.storage
            .get(NEGOTIATIONS, id.as_bytes())?
            .map(|b| {
                serde_json::from_slice(&b).map_err(|e| {
                    ContractError::Invalid(format!("stored negotiation {id} is damaged: {e}"))
                })
            })
            .transpose()
    }

    pub fn list(&self) -> Result<Vec<Negotiation>, ContractError> {
        self.storage
            .scan_prefix(NEGOTIATIONS, b"")?
            .iter()
            .map(|(_, v)| {
                serde_json::from_slice(v).map_err(|e| {
                    ContractError::Invalid(format!("stored negotiation is damaged: {e}"))
                })
            })
            .collect()
    }

    /// The negotiation whose agreement has this ID.
    pub fn by_agreement(&self, agreement_id: &str) -> Result<Option<Negotiation>, ContractError> {
        let Some(id) = self.storage.get(AGREEMENTS, agreement_id.as_bytes())? else {
            return Ok(None);
        };
        let id = String::from_utf8_lossy(&id);
        // The index is written before the record, so it may name a negotiation whose
        // stored record does not carry the agreement yet (a crash in between).
        Ok(self
            .get(&id)?
            .filter(|n| n.agreement_id.as_deref() == Some(agreement_id)))
    }

    /// The FINALIZED negotiation of this node's `role` whose agreement has this ID.
    pub fn finalized(&self, role: Role, agreement_id: &str) -> Result<Negotiation, AgreementError> {
        self.by_agreement(agreement_id)
            .map_err(|e| match e {
                ContractError::Storage(s) => AgreementError::Storage(s),
                other => AgreementError::Damaged(other.to_string()),
            })?
            .filter(|n| n.role == role && n.state == NegotiationStatus::Finalized)
            .ok_or_else(|| AgreementError::Unknown(agreement_id.to_owned()))
    }

    /// The writes that store `n`. The record that first carries the agreement (AGREED
    /// at the provider, VERIFIED at the consumer) is preceded by the agreement index.
    fn writes(n: &Negotiation) -> Vec<(&'static str, Write)> {
        let mut writes = Vec::with_capacity(2);
        let first_with_agreement = match n.role {
            Role::Provider => n.state == NegotiationStatus::Agreed,
            Role::Consumer => n.state == NegotiationStatus::Verified,
        };
        if let Some(agreement_id) = n.agreement_id.as_ref().filter(|_| first_with_agreement) {
            writes.push((
                AGREEMENTS,
                Write::Put(agreement_id.as_bytes().to_vec(), n.id.as_bytes().to_vec()),
            ));
        }
        writes.push((
            NEGOTIATIONS,
            Write::Put(
                n.id.as_bytes().to_vec(),
                serde_json::to_vec(n).expect("negotiations serialize"),
            ),
        ));
        writes
    }
}

/// A negotiation claimed by one step ([`Contracts::claim`]).
pub(crate) use crate::recovery::Claim;

/// How long a countersignature waits for another step on its negotiation (an expiry
/// being decided) before it is answered as busy.
const COUNTERSIGN_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The longest text of the provider's kept in a reason: a peer's words are recorded,
/// not any amount of them.
const PEER_TEXT: usize = 512;

/// `text` from a peer, cut to [`PEER_TEXT`] bytes (at a character boundary).
fn peer_text(text: &str) -> String {
    if text.len() <= PEER_TEXT {
        return text.to_owned();
    }
    let mut end = PEER_TEXT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// The reason a consumer's REQUESTED carries until the provider has answered it.
const SENT: &str = "sent to the provider";

impl Negotiation {
    /// A negotiation with a step still to come that this node retries or expires:
    /// a consumer's REQUESTED or VERIFIED, a provider's AGREED.
    fn unfinished(&self) -> bool {
        matches!(
            (self.role, self.state),
            (Role::Consumer, NegotiationStatus::Requested)
                | (Role::Consumer, NegotiationStatus::Verified)
                | (Role::Provider, NegotiationStatus::Agreed)
        )
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

fn event(kind: EventKind, n: &Negotiation, detail: String) -> Event {
    let mut event = Event::new(kind, now(), detail);
    event.participant = Some(n.peer.to_string());
    event.agreement = n.agreement_id.clone();
    event.product = crate::catalog::product::parse_offer_id(&n.offer_id).map(|(p, _)| p.to_owned());
    event
}

impl Contracts {
    /// Moves a negotiation to the state `step` leads to: stored and logged, durably,
    /// before anyone is told.
    async fn transition(
        &self,
        n: &mut Negotiation,
        step: NegotiationEvent,
        reason: &str,
    ) -> Result<(), ContractError> {
        let change = change(n, step, reason)?;
        self.commit(n, vec![change]).await
    }

    /// Stores `n` together with the audit events that record how it got there (entries
    /// first), durable when this returns.
    async fn commit(&self, n: &Negotiation, events: Vec<Event>) -> Result<(), ContractError> {
        self.audit
            .append_with(&events, Contracts::writes(n))
            .await
            .map_err(|e| ContractError::Audit(e.to_string()))?;
        self.stored(n);
        Ok(())
    }
}

/// Sets the state `step` leads to on `n` (not stored yet) and returns the audit event
/// for it; a step the state machine does not allow from `n`'s state changes nothing.
fn change(
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

// ---- provider side ----------------------------------------------------------------

impl Contracts {
    /// The finalized agreement this node made as the provider with `caller` as the
    /// consumer: opened with this node's own key (the current one or an earlier one, see
    /// [`rotation`](crate::rotation)), so a stored agreement that was altered is
    /// refused. Transfers, queries, receipts and usage notices all ask this.
    pub fn consumer_agreement(
        &self,
        caller: &ParticipantId,
        agreement_id: &str,
    ) -> Result<Agreement, AgreementError> {
        let n = self.finalized(Role::Provider, agreement_id)?;
        let envelope = n.agreement.as_ref().ok_or_else(|| {
            AgreementError::Damaged(format!(
                "negotiation {} is FINALIZED but carries no agreement",
                n.id
            ))
        })?;
        let agreement: Agreement = self.open_own(envelope).map_err(|e| {
            AgreementError::Damaged(format!("the stored agreement {agreement_id}: {e}"))
        })?;
        if agreement.consumer != *caller {
            return Err(AgreementError::NotConsumer {
                agreement_id: agreement_id.to_owned(),
                consumer: agreement.consumer,
                caller: caller.clone(),
            });
        }
        Ok(agreement)
    }

    /// Opens an agreement this node signed, with its current key or, for an agreement
    /// signed before a key rotation, an earlier one.
    fn open_own(&self, envelope: &Envelope) -> Result<Agreement, crate::identity::EnvelopeError> {
        let current = envelope.open_json(
            AGREEMENT_PAYLOAD_TYPE,
            &self.identity.signing_key.public_key(),
        );
        if current.is_ok() || self.identity.previous_credentials.is_empty() {
            return current;
        }
        crate::identity::membership::previous_keys(&self.identity.previous_credentials)
            .iter()
            .find_map(|key| envelope.open_json(AGREEMENT_PAYLOAD_TYPE, key).ok())
            .map_or(current, Ok)
    }

    /// The provider receives a signed contract request from `caller`.
    pub async fn receive_request(
        &self,
        caller: &Membership,
        envelope: Envelope,
    ) -> Result<Negotiation, ContractError> {
        let request: ContractRequest = envelope
            .open_json(REQUEST_PAYLOAD_TYPE, &caller.signing_key)
            .map_err(|e| {
                ContractError::Signature(format!(
                    "the contract request is not signed by the caller: {e}"
                ))
            })?;
        if request.consumer != caller.participant_id {
            return Err(ContractError::Forbidden(format!(
                "the request names consumer {}, but the caller is {}",
                request.consumer, caller.participant_id
            )));
        }
        if request.provider != self.identity.membership.participant_id {
            return Err(ContractError::Invalid(format!(
                "provider: the request is addressed to {}, but this node is {}",
                request.provider, self.identity.membership.participant_id
            )));
        }
        let t = now();
        if request.expires_at <= t {
            return Err(ContractError::Expired(format!(
                "expired at {}",
                crate::base::format::format_unix(request.expires_at)
            )));
        }
        if request.created_at > t + CLOCK_SKEW
            || request.expires_at - request.created_at > MAX_REQUEST_LIFETIME
        {
            return Err(ContractError::Expired(format!(
                "has an invalid validity (created {}, expires {}); at most {MAX_REQUEST_LIFETIME} s",
                request.created_at, request.expires_at
            )));
        }
        if request.purpose.trim().is_empty() {
            return Err(ContractError::Invalid("purpose: declare a purpose".into()));
        }
        // The nonce is kept at least until the request expires; a replay inside that time
        // is refused here, after it by the expiry check above.
        let nonce_key = format!("{}/{}", request.consumer, request.nonce);
        if !self.storage.insert_new(
            NONCES,
            nonce_key.as_bytes(),
            &request.expires_at.to_be_bytes(),
        )? {
            return Err(ContractError::Replay(request.nonce));
        }
        if self.get(&request.negotiation_id)?.is_some() {
            return Err(ContractError::Exists(request.negotiation_id));
        }
        let product = self
            .catalog
            .offer(&request.offer_id, caller, clock::now_utc())
            .map_err(|_| ContractError::UnknownOffer(request.offer_id.clone()))?;
        let policy = self
            .catalog
            .policy_of(&product)
            .map_err(|e| ContractError::Policy(e.to_string()))?
            .ok_or_else(|| ContractError::UnknownOffer(request.offer_id.clone()))?;

        let mut n = Negotiation {
            id: request.negotiation_id.clone(),
            role: Role::Provider,
            peer: caller.participant_id.clone(),
            peer_address: String::new(),
            offer_id: request.offer_id.clone(),
            purpose: request.purpose.clone(),
            state: NegotiationStatus::Requested,
            reason: String::new(),
            failed_constraints: Vec::new(),
            request: envelope,
            offer_policy: None,
            offer_classification: None,
            agreement: None,
            agreement_id: None,
            created_at: t,
            updated_at: t,
        };
        let decision = crate::catalog::evaluate_use_or_aggregate(
            &policy,
            &Request {
                scope: Scope::Negotiation,
                action: Action::Use,
                requester: requester_of(caller),
                purpose: Some(request.purpose.clone()),
            },
            &PolicyState::initial(clock::now_utc()),
        );
        let explanation = decision.explain();
        let decision_event = event(
            EventKind::PolicyDecision,
            &n,
            format!(
                "negotiation scope, offer {}, purpose {}: {explanation}",
                request.offer_id, request.purpose
            ),
        );
        self.alerts
            .policy_decision(
                "negotiation",
                &caller.participant_id,
                decision.is_permit(),
                &explanation,
            )
            .await;

        // The decision is logged in the same commit as the state it leads to.
        if !decision.is_permit() {
            n.failed_constraints = decision.failed.iter().map(|f| f.reason.clone()).collect();
            let change = change(&mut n, NegotiationEvent::Rejected, &explanation)?;
            self.commit(&n, vec![decision_event, change]).await?;
            return Err(ContractError::Denied {
                explanation,
                failed: n.failed_constraints,
            });
        }
        if decision.approval_required {
            let change = change(
                &mut n,
                NegotiationEvent::Pending,
                "waiting for a person's approval at the provider (important data)",
            )?;
            self.commit(&n, vec![decision_event, change]).await?;
            return Ok(n);
        }
        if let Err(e) = self
            .agree(
                &mut n,
                &product,
                &policy,
                None,
                vec![decision_event.clone()],
            )
            .await
        {
            // The decision stays on record even when no agreement could be made.
            if let Err(logged) = self.audit.append(&decision_event).await {
                tracing::error!(error = %logged, "cannot log the policy decision");
            }
            return Err(e);
        }
        // Pause point `negotiation.provider.agreed`: AGREED (with the signed agreement) is
        // durable, the consumer has not been answered.
        crate::pause::at("negotiation.provider.agreed").await;
        Ok(n)
    }

    /// Signs the agreement on `product` (the version `n`'s offer names, as the caller read
    /// it from the catalog): the offer's policy, narrowed to this consumer. `events` (the
    /// decision that led here) are committed with it.
    async fn agree(
        &self,
        n: &mut Negotiation,
        product: &ProductVersion,
        offer: &CompiledPolicy,
        approved_by: Option<String>,
        mut events: Vec<Event>,
    ) -> Result<(), ContractError> {
        self.check_guardrails(&n.peer, product.classification, approved_by.as_deref())
            .map_err(ContractError::Forbidden)?;
        let agreement_id = random_id("agr")?;
        let mut policy = offer.policy().clone();
        policy.policy_type = PolicyType::Agreement;
        policy.uid = format!("urn:liutong:agreement:{agreement_id}");
        policy.assignee = Some(
            n.peer
                .as_str()
                .parse()
                .map_err(|e: String| ContractError::Invalid(e))?,
        );
        let compiled = liutong_policy::compile(
            policy,
            &self.catalog.compile_context(product.classification),
        )
        .map_err(|e| ContractError::Policy(e.to_string()))?;
        if !liutong_policy::implies(&compiled, offer) {
            return Err(ContractError::Policy(format!(
                "the agreement would not narrow its offer: {}",
                liutong_policy::narrowing_gaps(&compiled, offer).join("; ")
            )));
        }
        let agreement = Agreement {
            agreement_id: agreement_id.clone(),
            negotiation_id: n.id.clone(),
            provider: self.identity.membership.participant_id.clone(),
            consumer: n.peer.clone(),
            offer_id: n.offer_id.clone(),
            product_id: product.product_id.clone(),
            version: product.version,
            product_sha256: product.sha256.clone(),
            size: product.size,
            chunk_size: product.chunk_size,
            chunks_sha256: crate::catalog::product::chunk_list_sha256(&product.chunk_hashes)
                .ok_or_else(|| {
                    ContractError::Invalid(format!(
                        "product {} has a damaged chunk list",
                        n.offer_id
                    ))
                })?,
            classification: product.classification,
            purpose: n.purpose.clone(),
            policy: compiled.policy().to_odrl(),
            agreed_at: now(),
            approved_by,
        };
        n.agreement = Some(Envelope::sign_json(
            AGREEMENT_PAYLOAD_TYPE,
            &agreement,
            &self.identity.signing_key,
        ));
        n.agreement_id = Some(agreement_id);
        events.push(change(n, NegotiationEvent::Agreed, "")?);
        self.commit(n, events).await
    }

    /// A person approves a request waiting for approval (provider side).
    pub async fn approve(&self, id: &str, by: &str) -> Result<Negotiation, ContractError> {
        let mut n = self
            .get(id)?
            .ok_or_else(|| ContractError::NotFound(id.to_owned()))?;
        if n.role != Role::Provider || state::next(n.state, NegotiationEvent::Agreed).is_err() {
            return Err(ContractError::WrongState {
                id: n.id,
                state: n.state,
                what: "only a request waiting at this provider can be approved".into(),
            });
        }
        // The requester must still be a member, and the offer still there.
        let caller = self
            .trust
            .member(&n.peer, now())
            .map_err(|e| ContractError::Forbidden(e.to_string()))?;
        // The offer must still be there and its policy still valid under this node's
        // guardrails (they may have been narrowed since the request came); a refusal is
        // logged and the request keeps waiting, for a rejection with a reason.
        let offered =
            self.catalog
                .offer(&n.offer_id, &caller, clock::now_utc())
                .and_then(|product| {
                    let policy = self.catalog.policy_of(&product)?.ok_or_else(|| {
                        crate::catalog::CatalogError::NotFound(n.offer_id.clone())
                    })?;
                    Ok((product, policy))
                });
        let (product, policy) = match offered {
            Ok(offered) => offered,
            Err(e) => {
                let refused = match e {
                    crate::catalog::CatalogError::NotFound(_) => {
                        ContractError::UnknownOffer(n.offer_id.clone())
                    }
                    other => ContractError::Policy(format!(
                        "offer {} cannot be agreed under this node's current guardrails: {other}; \
                     reject the request with a reason",
                        n.offer_id
                    )),
                };
                let decision = event(
                    EventKind::PolicyDecision,
                    &n,
                    format!("approval by {by} refused: {refused}"),
                );
                self.audit
                    .append(&decision)
                    .await
                    .map_err(|e| ContractError::Audit(e.to_string()))?;
                return Err(refused);
            }
        };
        self.agree(&mut n, &product, &policy, Some(by.to_owned()), Vec::new())
            .await?;
        Ok(n)
    }

    /// A person rejects a request waiting for approval (provider side).
    pub async fn reject(&self, id: &str, reason: &str) -> Result<Negotiation, ContractError> {
        if reason.trim().is_empty() {
            return Err(ContractError::Invalid(
                "reason: say why; the consumer reads it".into(),
            ));
        }
        let mut n = self
            .get(id)?
            .ok_or_else(|| ContractError::NotFound(id.to_owned()))?;
        if n.role != Role::Provider || state::next(n.state, NegotiationEvent::Rejected).is_err() {
            return Err(ContractError::WrongState {
                id: n.id,
                state: n.state,
                what: "only a request waiting at this provider can be rejected".into(),
            });
        }
        self.transition(
            &mut n,
            NegotiationEvent::Rejected,
            &format!("rejected by the provider: {}", reason.trim()),
        )
        .await?;
        Ok(n)
    }

    /// The consumer asks how its negotiation stands.
    pub fn state_for(&self, caller: &Membership, id: &str) -> Result<Negotiation, ContractError> {
        let n = self
            .get(id)?
            .ok_or_else(|| ContractError::NotFound(id.to_owned()))?;
        if n.role != Role::Provider || n.peer != caller.participant_id {
            // Other participants' negotiations are not theirs to see.
            return Err(ContractError::NotFound(id.to_owned()));
        }
        Ok(n)
    }

    /// The consumer returns the agreement countersigned (provider side).
    pub async fn receive_countersigned(
        &self,
        caller: &Membership,
        id: &str,
        envelope: Envelope,
    ) -> Result<Negotiation, ContractError> {
        self.state_for(caller, id)?;
        let _claim = self
            .claims
            .claim_within(id, COUNTERSIGN_WAIT)
            .await
            .ok_or_else(|| ContractError::Busy(id.to_owned()))?;
        // Read again under the claim: an expiry may have ended it in between.
        let mut n = self.state_for(caller, id)?;
        if n.state == NegotiationStatus::Finalized {
            // A retry of a Verify that already went through (its answer was lost) is
            // answered as the first one was, provided it is the same countersigned
            // agreement: the same payload and the same signatures.
            let ours = n
                .agreement
                .as_ref()
                .expect("FINALIZED negotiations carry their agreement");
            if envelope != *ours {
                return Err(ContractError::Signature(
                    "the countersigned agreement is not the one this provider finalized \
                 (another payload or other signatures)"
                        .into(),
                ));
            }
            return Ok(n);
        }
        if state::next(n.state, NegotiationEvent::CountersignatureVerified).is_err() {
            return Err(ContractError::WrongState {
                id: n.id,
                state: n.state,
                what: "only an AGREED negotiation can be verified".into(),
            });
        }
        let ours = n
            .agreement
            .as_ref()
            .expect("AGREED negotiations carry their agreement");
        if envelope.payload_type != ours.payload_type || envelope.payload != ours.payload {
            return Err(ContractError::Signature(
                "the countersigned agreement is not the agreement this provider signed (modified)"
                    .into(),
            ));
        }
        // This node's own signature, as it made it (Ed25519 signatures are deterministic,
        // and the payload is the one it signed), so no need to verify it again.
        if !ours
            .signatures
            .iter()
            .all(|s| envelope.signatures.contains(s))
        {
            return Err(ContractError::Signature(
                "the provider's signature is missing from the countersigned agreement".into(),
            ));
        }
        envelope.verify(&caller.signing_key).map_err(|e| {
            ContractError::Signature(format!("the consumer's countersignature: {e}"))
        })?;
        n.agreement = Some(envelope);
        // Both steps in one commit: the record is never left VERIFIED at the provider.
        let verified = change(&mut n, NegotiationEvent::CountersignatureVerified, "")?;
        let finalized = change(&mut n, NegotiationEvent::Finalized, "")?;
        self.commit(&n, vec![verified, finalized]).await?;
        // Pause point `negotiation.provider.finalized`: FINALIZED is durable, the consumer
        // has not been answered.
        crate::pause::at("negotiation.provider.finalized").await;
        Ok(n)
    }
}

// ---- consumer side ----------------------------------------------------------------

impl Contracts {
    async fn provider_channel(
        &self,
        address: &str,
    ) -> Result<crate::telemetry::PeerChannel, ContractError> {
        self.peers
            .connect_peer(address)
            .await
            .map_err(|e| ContractError::Unreachable(e.to_string()))
    }

    /// A channel to the provider of `n` that only that participant can answer on: what
    /// is sent again (the signed request, the countersigned agreement) reaches no one else,
    /// whatever its stored address now leads to.
    async fn member_channel(
        &self,
        n: &Negotiation,
    ) -> Result<crate::telemetry::PeerChannel, ContractError> {
        self.peers
            .connect_member(&n.peer_address, &n.peer)
            .await
            .map_err(|e| ContractError::Unreachable(e.to_string()))
    }

    /// The consumer asks a provider for a contract.
    pub async fn request(
        &self,
        address: &str,
        offer_id: &str,
        purpose: &str,
    ) -> Result<Negotiation, ContractError> {
        if purpose.trim().is_empty() {
            return Err(ContractError::Invalid("purpose: declare a purpose".into()));
        }
        let channel = self.provider_channel(address).await?;
        let offer = self.offer(&channel, address, offer_id).await?;
        let provider = offer.owner;
        let t = now();
        let request = ContractRequest {
            negotiation_id: random_id("neg")?,
            consumer: self.identity.membership.participant_id.clone(),
            provider: provider.clone(),
            offer_id: offer_id.to_owned(),
            purpose: purpose.trim().to_owned(),
            nonce: hex::encode(random_bytes::<16>()?),
            created_at: t,
            expires_at: t + 300,
        };
        let envelope =
            Envelope::sign_json(REQUEST_PAYLOAD_TYPE, &request, &self.identity.signing_key);
        let mut n = Negotiation {
            id: request.negotiation_id.clone(),
            role: Role::Consumer,
            peer: provider,
            peer_address: address.to_owned(),
            offer_id: offer_id.to_owned(),
            purpose: request.purpose.clone(),
            state: NegotiationStatus::Requested,
            reason: String::new(),
            failed_constraints: Vec::new(),
            request: envelope.clone(),
            offer_policy: offer.policy,
            offer_classification: offer.classification,
            agreement: None,
            agreement_id: None,
            created_at: t,
            updated_at: t,
        };
        let claim = self.claim(&n.id);
        // REQUESTED is durable before the request leaves: after a crash or a lost answer
        // the poller asks the provider about it (and sends it again if it never arrived),
        // so an agreement the provider signs for it is never left without its consumer.
        let requested = change(&mut n, NegotiationEvent::RequestSent, SENT)?;
        self.commit(&n, vec![requested]).await?;
        // Pause point `negotiation.consumer.requested`: REQUESTED is durable, the request
        // not sent yet.
        crate::pause::at("negotiation.consumer.requested").await;
        let answer = NegotiationClient::new(channel)
            .request(NegotiationRequest {
                request: Some(envelope.into()),
            })
            .await;
        let taken = self.take_answer(&mut n, answer).await;
        drop(claim);
        taken.map(|()| n)
    }

    /// Takes the provider's answer to the request of `n` (sent now, or again): a state
    /// goes to [`advance`]; a refusal ends the negotiation; a call that did not get through,
    /// or that the provider answers as one it already holds, keeps it REQUESTED, to be
    /// asked about again.
    async fn take_answer(
        &self,
        n: &mut Negotiation,
        answer: Result<tonic::Response<NegotiationState>, tonic::Status>,
    ) -> Result<(), ContractError> {
        use crate::recovery::{Call, Verdict, verdict};
        let status = match answer {
            Ok(state) => return self.advance(n, state.into_inner(), Vec::new()).await,
            Err(status) => status,
        };
        match verdict(Call::Request, &status) {
            Verdict::Retry => Err(ContractError::Unreachable(format!(
                "{}; the request is kept (REQUESTED) and the provider is asked again until \
             it answers (at most recovery.expire_after)",
                status.message()
            ))),
            Verdict::Held => Err(ContractError::Unreachable(format!(
                "the provider already holds this request ({}); it is asked how it stands",
                status.message()
            ))),
            Verdict::Refused => {
                if status.code() == tonic::Code::PermissionDenied {
                    n.failed_constraints = vec![peer_text(status.message())];
                }
                self.transition(
                    n,
                    NegotiationEvent::Terminated,
                    &format!("the provider refused: {}", peer_text(status.message())),
                )
                .await?;
                Err(ContractError::Peer(status))
            }
        }
    }

    /// Takes the provider's answer: when it is AGREED, checks and countersigns the
    /// agreement and sends it back. `unlogged`: events of this negotiation not committed
    /// yet, which go first into its next commit.
    async fn advance(
        &self,
        n: &mut Negotiation,
        answer: NegotiationState,
        mut unlogged: Vec<Event>,
    ) -> Result<(), ContractError> {
        match state::answer_to_request(&answer.state) {
            state::Answer::Agreement => {}
            state::Answer::Terminated => {
                n.failed_constraints = answer
                    .failed_constraints
                    .iter()
                    .take(32)
                    .map(|c| peer_text(c))
                    .collect();
                unlogged.push(change(
                    n,
                    NegotiationEvent::Terminated,
                    &peer_text(&answer.reason),
                )?);
                return self.commit(n, unlogged).await;
            }
            state::Answer::Undecided => {
                // Not decided yet. That the provider has the request is recorded once;
                // what it says while it decides is its text, not a step of this node's, so
                // a provider that changes it on every question writes nothing more here.
                if n.reason == SENT || !unlogged.is_empty() {
                    let said = peer_text(answer.reason.trim());
                    let reason = if said.is_empty() || said == SENT {
                        "received by the provider, not decided yet".to_owned()
                    } else {
                        said
                    };
                    unlogged.push(change(n, NegotiationEvent::Pending, &reason)?);
                    self.commit(n, unlogged).await?;
                }
                return Ok(());
            }
        }
        let agreement = match answer.agreement {
            Some(envelope) => self.accept_agreement(n, envelope.into()),
            None => Err(ContractError::Invalid(
                "the provider answered AGREED without an agreement".into(),
            )),
        };
        let (countersigned, agreement) = match agreement {
            Ok(accepted) => accepted,
            Err(e) => {
                // The consumer refuses an agreement that fails its checks.
                unlogged.push(change(
                    n,
                    NegotiationEvent::Terminated,
                    &format!("the agreement was refused: {e}"),
                )?);
                self.commit(n, unlogged).await?;
                return Err(e);
            }
        };
        n.agreement = Some(countersigned);
        n.agreement_id = Some(agreement.agreement_id.clone());
        // VERIFIED is durable before the countersignature leaves: a crash never leaves a
        // contract this node signed but has no record of, and the poller sends it again
        // from this record until the provider confirms it. FINALIZED only after the
        // provider's answer.
        unlogged.push(change(n, NegotiationEvent::Countersigned, "countersigned")?);
        self.commit(n, unlogged).await?;
        // Pause point `negotiation.consumer.verified`: VERIFIED (with the countersigned
        // agreement) is durable, the countersignature not sent yet.
        crate::pause::at("negotiation.consumer.verified").await;
        self.send_countersigned(n).await
    }

    /// Sends the countersigned agreement of VERIFIED `n` to its provider (again, after a
    /// crash or a lost answer: the provider answers a repeat as it did the first). The
    /// provider's confirmation makes it FINALIZED; its answer that it does not hold the
    /// negotiation AGREED or FINALIZED with this agreement makes it TERMINATED; anything
    /// else (a call that did not get through, a provider that does not recognise this node
    /// yet) leaves it VERIFIED, to be sent again. It does not expire: the provider may
    /// already hold the contract FINALIZED, and only its answer tells.
    async fn send_countersigned(&self, n: &mut Negotiation) -> Result<(), ContractError> {
        use crate::recovery::{Call, Verdict, verdict};
        let countersigned = n
            .agreement
            .clone()
            .expect("VERIFIED negotiations carry their agreement");
        let kept = |why: &str| {
            ContractError::Unreachable(format!(
                "{why}; the countersigned agreement is kept (VERIFIED) and sent again until the \
             provider confirms or refuses it"
            ))
        };
        let channel = self
            .member_channel(n)
            .await
            .map_err(|e| kept(&e.to_string()))?;
        let answer = NegotiationClient::new(channel)
            .verify(VerifyAgreementRequest {
                negotiation_id: n.id.clone(),
                agreement: Some(countersigned.clone().into()),
            })
            .await;
        let done = match answer {
            Ok(done) => done.into_inner(),
            Err(status) if verdict(Call::Countersignature, &status) != Verdict::Refused => {
                return Err(kept(status.message()));
            }
            Err(status) => {
                self.transition(
                    n,
                    NegotiationEvent::Terminated,
                    &format!(
                        "the provider refused the countersigned agreement: {}",
                        peer_text(status.message())
                    ),
                )
                .await?;
                return Err(ContractError::Peer(status));
            }
        };
        let same = done
            .agreement
            .map(Envelope::from)
            .is_some_and(|a| a == countersigned);
        if !state::confirms_countersignature(&done.state) || !same {
            return Err(ContractError::Invalid(format!(
                "the provider answered {} to the countersigned agreement{}",
                peer_text(&done.state),
                if same { "" } else { ", with another agreement" }
            )));
        }
        self.transition(n, NegotiationEvent::Finalized, "").await
    }

    /// Checks the provider's agreement for negotiation `n` and countersigns it (once).
    fn accept_agreement(
        &self,
        n: &Negotiation,
        envelope: Envelope,
    ) -> Result<(Envelope, Agreement), ContractError> {
        let provider = self
            .trust
            .member(&n.peer, now())
            .map_err(|e| ContractError::Forbidden(format!("the provider: {e}")))?;
        let agreement: Agreement = envelope
            .open_json(AGREEMENT_PAYLOAD_TYPE, &provider.signing_key)
            .map_err(|e| ContractError::Signature(format!("the provider's agreement: {e}")))?;
        self.check_agreement(n, &agreement)?;
        let mut countersigned = envelope;
        if countersigned
            .verify(&self.identity.signing_key.public_key())
            .is_err()
        {
            countersigned.add_signature(&self.identity.signing_key);
        }
        Ok((countersigned, agreement))
    }

    /// The consumer's checks of an agreement: it is for this request, and its policy only
    /// narrows the offer the consumer saw.
    fn check_agreement(&self, n: &Negotiation, a: &Agreement) -> Result<(), ContractError> {
        let mismatch = |what: &str| {
            ContractError::Invalid(format!(
                "the agreement does not match the request: {what} differs"
            ))
        };
        if a.negotiation_id != n.id {
            return Err(mismatch("negotiation"));
        }
        if a.consumer != self.identity.membership.participant_id {
            return Err(mismatch("consumer"));
        }
        if a.provider != n.peer {
            return Err(mismatch("provider"));
        }
        if a.offer_id != n.offer_id {
            return Err(mismatch("offer"));
        }
        if a.purpose != n.purpose {
            return Err(mismatch("purpose"));
        }
        let (Some(offer_odrl), Some(classification)) = (&n.offer_policy, n.offer_classification)
        else {
            return Err(ContractError::Policy(
                "the offer's policy was not recorded".into(),
            ));
        };
        let context = analysis_context(classification);
        let compile = |v: &serde_json::Value| -> Result<CompiledPolicy, ContractError> {
            let policy =
                Policy::from_odrl_value(v).map_err(|e| ContractError::Policy(e.to_string()))?;
            liutong_policy::compile(policy, &context)
                .map_err(|e| ContractError::Policy(e.to_string()))
        };
        let offer = compile(offer_odrl)?;
        let agreement = compile(&a.policy)?;
        if !liutong_policy::implies(&agreement, &offer) {
            return Err(ContractError::Policy(format!(
                "the agreement's policy grants more than the offer: {}",
                liutong_policy::narrowing_gaps(&agreement, &offer).join("; ")
            )));
        }
        Ok(())
    }
}

/// A compile context for checking another node's policies: the provider's own
/// guardrails already applied, so any province is accepted here.
pub(crate) fn analysis_context(classification: Classification) -> CompileContext {
    CompileContext::new(classification).with_guardrails(Guardrails {
        important_regions: liutong_policy::RegionCode::provinces().collect(),
        important_requires_approval: true,
    })
}

impl Contracts {
    /// Takes up every unfinished negotiation (`recovery_step`): asks providers about this
    /// node's requests (sending one again that never arrived), sends countersignatures
    /// again, and expires steps older than `recovery.expire_after` that this process has
    /// tried. Runs in the node's background work, one pass at a time; `retries` holds the
    /// attempts, so a step that keeps failing is tried less often.
    pub async fn poll_pending(&self, retries: &mut crate::recovery::Retries) {
        let pending = match self.waiting() {
            Ok(ids) => ids,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list negotiations");
                return;
            }
        };
        let config = &self.recovery;
        // A provider waits on its consumer, who may be retrying at its longest backoff.
        let provider_grace = config
            .retry_interval
            .saturating_mul(crate::recovery::MAX_BACKOFF_FACTOR);
        let mut unreachable: HashSet<String> = HashSet::new();
        for id in crate::recovery::due_now(retries, pending) {
            let read = |id: &str| match self.get(id) {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(negotiation = %id, error = %e, "cannot read the negotiation");
                    None
                }
            };
            // Decided from the record first: a step that only waits is not claimed, so
            // it never holds up the step that ends the wait (a countersignature arriving).
            let Some(n) = read(&id) else { continue };
            let started = std::time::Instant::now();
            let tried = retries.tried(&id, started).is_some_and(|t| match n.role {
                Role::Provider => t >= provider_grace,
                Role::Consumer => true,
            });
            retries.took_up(&id, started);
            match recovery_step(&n, now(), config.expire_after, tried) {
                None => {
                    // Moved on since the list was first read: no longer taken up.
                    self.stored(&n);
                    continue;
                }
                Some(Recovery::Wait) => continue,
                Some(_) if n.role == Role::Consumer && unreachable.contains(&n.peer_address) => {
                    // Its provider did not answer this pass: its other steps wait for the
                    // next one rather than each wait for the same timeout.
                    continue;
                }
                Some(_) => {}
            }
            // A negotiation another step is working on (a request being answered, a
            // countersignature arriving) is left to it.
            let Some(_claim) = self.claim(&id) else {
                continue;
            };
            // As stored now, under the claim.
            let Some(mut n) = read(&id) else { continue };
            let result = match recovery_step(&n, now(), config.expire_after, tried) {
                None => {
                    self.stored(&n);
                    continue;
                }
                Some(Recovery::Wait) => continue,
                Some(Recovery::Expire(reason)) => {
                    tracing::info!(negotiation = %n.id, %reason, "negotiation given up");
                    self.transition(&mut n, NegotiationEvent::Expired, &reason)
                        .await
                }
                Some(Recovery::Ask) => self.ask(&mut n).await,
                Some(Recovery::Countersign) => {
                    tracing::info!(negotiation = %n.id, "sending the countersigned agreement again");
                    self.send_countersigned(&mut n).await
                }
            };
            match result {
                Ok(()) => retries.succeeded(&id),
                Err(e) => {
                    let not_through = match &e {
                        ContractError::Unreachable(_) => true,
                        ContractError::Peer(status) => crate::recovery::transient(status),
                        _ => false,
                    };
                    if not_through {
                        unreachable.insert(n.peer_address.clone());
                    }
                    retries.failed(&id, std::time::Instant::now(), config.retry_interval);
                    tracing::warn!(
                        negotiation = %id,
                        attempts = retries.failures(&id),
                        error = %e,
                        "negotiation could not advance; retried later"
                    );
                }
            }
        }
    }

    /// Asks the provider how the request of REQUESTED `n` stands, and goes on from its
    /// answer. A provider that does not know a request it never answered never got it (or
    /// lost it in a crash before it was stored): it is sent again, byte for byte, while it
    /// is valid (a request is valid for 5 minutes from when it was made); after that the
    /// negotiation ends, as the provider would refuse it. A provider that does not know a
    /// request it has answered before, or refuses the question, ends it too.
    async fn ask(&self, n: &mut Negotiation) -> Result<(), ContractError> {
        use crate::recovery::{Call, Verdict, verdict};
        let channel = self.member_channel(n).await?;
        let mut client = NegotiationClient::new(channel);
        let answer = client
            .get(GetNegotiationRequest {
                negotiation_id: n.id.clone(),
            })
            .await;
        let status = match answer {
            Ok(state) => return self.advance(n, state.into_inner(), Vec::new()).await,
            Err(status) => status,
        };
        match verdict(Call::State, &status) {
            // Kept REQUESTED; asked again later.
            Verdict::Retry | Verdict::Held => return Err(ContractError::Peer(status)),
            Verdict::Refused if status.code() == tonic::Code::NotFound && n.reason == SENT => {}
            Verdict::Refused => {
                let reason = if status.code() == tonic::Code::NotFound {
                    "the provider no longer knows the request it had answered".to_owned()
                } else {
                    format!(
                        "the provider refused to say how the request stands: {}",
                        peer_text(status.message())
                    )
                };
                return self
                    .transition(n, NegotiationEvent::Terminated, &reason)
                    .await;
            }
        }
        let valid_until = n
            .request
            .peek_json::<ContractRequest>()
            .map_or(0, |r| r.expires_at);
        if valid_until <= now() {
            return self
                .transition(
                    n,
                    NegotiationEvent::Terminated,
                    "the request's validity passed before the provider received it; request the \
             contract again",
                )
                .await;
        }
        tracing::info!(negotiation = %n.id, "sending the request again");
        let answer = client
            .request(NegotiationRequest {
                request: Some(n.request.clone().into()),
            })
            .await;
        self.take_answer(n, answer).await
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
