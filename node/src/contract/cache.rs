//! What [`Contracts`](super::Contracts) keeps in memory between steps: compiled
//! agreement and offer policies, and offers the consumer fetched lately.

use std::sync::Arc;

use liutong_policy::{Classification, CompiledPolicy};

use crate::identity::ParticipantId;

/// A compiled agreement or offer policy, with what it was compiled from.
pub(super) struct CachedPolicy {
    /// The ODRL policy and classification: a different agreement or offer under the
    /// same ID (a provider reusing one) is compiled anew, not served this one.
    pub(super) source: serde_json::Value,
    pub(super) classification: Classification,
    pub(super) compiled: Arc<CompiledPolicy>,
}

/// An offer as the consumer fetched it.
#[derive(Clone)]
pub(super) struct SeenOffer {
    pub(super) owner: ParticipantId,
    pub(super) policy: Option<serde_json::Value>,
    pub(super) classification: Option<Classification>,
    pub(super) fetched: std::time::Instant,
}
