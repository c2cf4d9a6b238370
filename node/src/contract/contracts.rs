//! [`Contracts`], the negotiations this node takes part in: what every step works
//! with. The steps themselves are `impl Contracts` blocks in the files beside this one.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use crate::alerts::Alerts;
use crate::audit::log::AuditLog;
use crate::catalog::Catalog;
use crate::config::{GuardrailsSection, RecoverySection};
use crate::identity::{MemberRole, MissingRole, NodeIdentity, ParticipantId};
use crate::outbound::Peers;
use crate::storage::Storage;
use crate::trust::TrustStore;

use super::cache::{CachedPolicy, SeenOffer};
use super::locks::AgreementLocks;

/// The negotiations this node takes part in.
pub struct Contracts {
    pub(super) storage: Arc<dyn Storage>,
    pub(super) audit: AuditLog,
    pub(super) identity: Arc<NodeIdentity>,
    pub(super) catalog: Arc<Catalog>,
    pub(super) peers: Arc<Peers>,
    pub(super) trust: Arc<TrustStore>,
    pub(super) alerts: Alerts,
    /// `[guardrails]`, checked again when an agreement is signed.
    pub(super) guardrails: GuardrailsSection,
    /// `[recovery]`: how often and how long unfinished steps are taken up.
    pub(super) recovery: RecoverySection,
    /// Per-agreement locks (see [`AgreementLocks`]).
    pub(super) locks: AgreementLocks,
    /// The IDs of the negotiations with a step still to come from either side
    /// ([`Negotiation::unfinished`]), which the poller takes up: read from storage
    /// once, then kept up to date by every commit. `None` until first read.
    pub(super) waiting: Arc<Mutex<Option<HashSet<String>>>>,
    /// Negotiations (and, see [`transfer`](crate::transfer), receipts) a step is
    /// working on now (see [`Contracts::claim`]).
    pub(super) claims: crate::recovery::Claims,
    /// Offers fetched lately (consumer side), by provider address and offer ID. An
    /// offer ID names a product version, whose policy never changes, and the provider
    /// checks the offer again when it gets the request, so a recent answer is reused
    /// rather than asked again for every request.
    pub(super) offers: Arc<Mutex<HashMap<(String, String), SeenOffer>>>,
    /// Agreement policies compiled once, by agreement ID (both sides): an agreement
    /// never changes, and pulls, queries, reads and the duties' sweep all ask for it.
    pub(super) policies: Arc<Mutex<HashMap<String, CachedPolicy>>>,
    /// Offer policies compiled once, by offer ID (consumer side): every agreement on an
    /// offer is checked against its policy.
    pub(super) offer_policies: Arc<Mutex<HashMap<String, CachedPolicy>>>,
    /// Whether the listing index by creation time is known to be complete (see
    /// `Contracts::page`); the lock keeps two first listings from building it at once.
    pub(super) creation_index: Arc<tokio::sync::Mutex<bool>>,
    /// Held while the index of agreements that count uses is built for a database
    /// written before it (see `Contracts::counted_on_offer`): one build at a time.
    pub(super) counted_index: Arc<tokio::sync::Mutex<()>>,
    /// Usage control's gate, set once usage control is built above this module; the
    /// provider asks it for the use counts of earlier agreements. Weak, since usage
    /// control holds these contracts: a strong handle would keep both (and the
    /// database) alive after the node stops.
    pub(super) gate: std::sync::OnceLock<std::sync::Weak<dyn super::UsageGate>>,
    /// Tells which agreements get a delivery of their own (set once, when the node is
    /// built; until then only mask duties make one).
    pub(super) delivery_form: std::sync::OnceLock<Arc<dyn super::DeliveryForm>>,
    /// The Dataspace Protocol binding of the consumer's steps (set once, when the node
    /// is built with its `[dsp]` listener on).
    pub(super) binding: std::sync::OnceLock<Arc<dyn super::ConsumerBinding>>,
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
            offer_policies: Arc::default(),
            creation_index: Arc::default(),
            counted_index: Arc::default(),
            gate: std::sync::OnceLock::new(),
            delivery_form: std::sync::OnceLock::new(),
            binding: std::sync::OnceLock::new(),
        }
    }

    /// Hands the delivery form to the negotiations (once, when the node is built).
    pub fn set_delivery_form(&self, form: Arc<dyn super::DeliveryForm>) {
        let _ = self.delivery_form.set(form);
    }

    /// Hands usage control's gate to the negotiations (once, when the node is built).
    pub fn set_gate(&self, gate: Arc<dyn super::UsageGate>) {
        let _ = self.gate.set(Arc::downgrade(&gate));
    }

    /// The per-agreement locks.
    pub fn locks(&self) -> &AgreementLocks {
        &self.locks
    }

    /// Checks that this node, as the trust list states its membership now, holds `role`
    /// for `what`.
    pub fn require_own_role(&self, role: MemberRole, what: &str) -> Result<(), MissingRole> {
        self.trust
            .own_membership(&self.identity.membership)
            .require_role(role, what)
    }

    /// Checks that `peer` holds `role` for `what`, before this node sends it anything
    /// that needs the role. A peer the trust list does not name as a current member
    /// passes here: the connection to it checks its certificate against the same list,
    /// and refuses it with the reason.
    pub fn require_peer_role(
        &self,
        peer: &ParticipantId,
        role: MemberRole,
        what: &str,
    ) -> Result<(), MissingRole> {
        match self.trust.member(peer, crate::base::clock::now()) {
            Ok(member) => member.require_role(role, what),
            Err(_) => Ok(()),
        }
    }
}
