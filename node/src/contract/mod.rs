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

use crate::alerts::Alerts;
use crate::audit::log::AuditLog;
use crate::catalog::Catalog;
use crate::config::{GuardrailsSection, RecoverySection};
use crate::identity::NodeIdentity;
use crate::outbound::Peers;
use crate::storage::Storage;
use crate::trust::TrustStore;

mod agreement;
mod consumer;
pub mod guardrails;
mod locks;
mod negotiation;
mod provider;
mod resume;
mod state;
mod store;
pub use agreement::{
    AGREEMENT_PAYLOAD_TYPE, AgreedProductError, Agreement, AgreementError, ContractRequest,
    REQUEST_PAYLOAD_TYPE, Role,
};
pub use locks::AgreementLocks;
pub use negotiation::{ContractError, Negotiation};
pub use state::{Event as NegotiationEvent, IllegalTransition, NegotiationStatus, UnknownState};
use store::{CachedPolicy, SeenOffer};

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

    /// The per-agreement locks.
    pub fn locks(&self) -> &AgreementLocks {
        &self.locks
    }

    /// This node's identity, as the agreements name it.
    pub fn identity(&self) -> &NodeIdentity {
        &self.identity
    }
}

/// A negotiation claimed by one step ([`Contracts::claim`]).
pub(crate) use crate::recovery::Claim;
