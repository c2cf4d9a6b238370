//! Usage control at the consumer: shared data stays under its owner's rules after it
//! leaves the provider.
//!
//! A received copy keeps its agreement with both signatures (the sticky policy, see
//! [`crate::transfer::ReceivedCopy`]). From there:
//!
//! - [`read`] — local applications (role `app`) read a copy only through
//!   `Usage.Read(copy, purpose)`. Each read is decided by the agreement's policy at use
//!   scope (purpose, time window, use count, recipient); the use count is raised and made
//!   durable under a per-copy lock together with the decision, so concurrent reads never
//!   exceed the count and a crash never loses a use. Every read is logged.
//! - [`duties`] — what the node carries out by itself: deleting copies whose deleteAfter
//!   deadline passed (also at start, for deadlines that passed while it was stopped),
//!   and the background task that runs the duties, the outbox and the revocation checks.
//! - [`notice`] — signed messages between the parties (usage notices, deletion receipts,
//!   revocations) and the outbox that retries them with backoff until the peer
//!   acknowledges.
//! - [`revocation`] — the provider revokes an agreement: it stops delivering, and the
//!   consumer's node, when it next asks the provider (at once after a start, then every
//!   `usage.check_interval`), deletes the copy and returns a signed deletion receipt.
//!   The consumer asks because only it knows where the other party lives: a provider
//!   learns nothing of the consumer's address, so a consumer that was offline simply
//!   asks when it comes back.
//! - [`onward`] — no onward sharing: a received copy, or a product declared as derived
//!   from one, is offered only if the copy's policy permits `distribute`, and then only
//!   with the policy its `nextPolicy` duty names; a derived product keeps at least its
//!   sources' classification.
//!
//! Every step that changes stored state (a use counted, a copy deleted, a revocation, a
//! notice or receipt received) commits its records together with its audit entries
//! (`commit`, one flush), so a crash never leaves a step in force but unlogged.
//!
//! Storage: tree `usage` holds the use counts (`u/<agreement>`) and the deletion records
//! (`d/<agreement>`, committed with their audit entry before the copy is removed, so a
//! deletion interrupted by a crash is finished at the next start); tree `outbox` the messages waiting for a peer;
//! on the provider, tree `revocations` (`<consumer>/<agreement>`) and tree
//! `usage-notices` the consumers' signed notices and receipts.

mod copies;
pub mod duties;
pub mod notice;
pub mod onward;
pub mod read;
pub mod revocation;
pub mod rows;

use std::sync::Arc;

use liutong_policy::CompiledPolicy;

use crate::alerts::Alerts;
use crate::audit::log::{AuditLog, Event};
use crate::base::error::{ErrorKind, ErrorKinded, PeerRefusal};
use crate::catalog::Catalog;
use crate::config::UsageSection;
use crate::contract::{
    AGREEMENT_PAYLOAD_TYPE, Agreement, AgreementError, ContractError, Contracts, UsageGate,
};
use crate::identity::{Envelope, NodeIdentity};
use crate::outbound::Peers;
use crate::storage::{Storage, StorageError, Write};
use crate::transfer::TransferError;
use crate::trust::TrustStore;

pub use duties::{Deletion, DeletionCause, deletion};

/// Consumer side: use counts and deletion records.
const USAGE: &str = "usage";

/// Why a usage-control step was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UsageError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    /// The copy was deleted by usage control.
    #[error("{}", .0.explain())]
    Gone(Box<Deletion>),
    #[error("{0}")]
    NotReady(String),
    #[error("{0}")]
    Denied(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    WrongState(String),
    #[error("{0}")]
    DataLoss(String),
    #[error("the policy cannot be used: {0}")]
    Policy(String),
    #[error("the peer answered: {}", .0.message)]
    Peer(PeerRefusal),
    #[error("cannot reach the peer: {0}")]
    Unreachable(String),
    /// This node's own storage or payload files cannot be read now.
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("the audit log cannot be written, so the step is refused: {0}")]
    Audit(String),
    #[error("cannot make an ID: {0}")]
    Random(#[from] crate::base::random::RandomError),
    /// The node's signing key could not sign (a key in a token that cannot be reached).
    #[error("the node's signing key cannot sign: {0}")]
    Signing(#[from] crate::identity::KeyError),
}

impl From<crate::base::bounded::FieldError> for UsageError {
    fn from(e: crate::base::bounded::FieldError) -> Self {
        UsageError::Invalid(e.to_string())
    }
}

impl ErrorKinded for UsageError {
    fn kind(&self) -> ErrorKind {
        match self {
            UsageError::Invalid(_) => ErrorKind::InvalidArgument,
            UsageError::NotFound(_) => ErrorKind::NotFound,
            // A revoked agreement's copy is refused; one past its deadline is simply gone.
            UsageError::Gone(d) => match d.cause {
                DeletionCause::Revoked { .. } => ErrorKind::PermissionDenied,
                DeletionCause::Expired { .. } => ErrorKind::NotFound,
            },
            UsageError::NotReady(_) | UsageError::WrongState(_) | UsageError::Policy(_) => {
                ErrorKind::FailedPrecondition
            }
            UsageError::Denied(_) | UsageError::Forbidden(_) => ErrorKind::PermissionDenied,
            UsageError::DataLoss(_) => ErrorKind::DataLoss,
            UsageError::Peer(refusal) => refusal.kind,
            UsageError::Unreachable(_)
            | UsageError::Unavailable(_)
            | UsageError::Storage(_)
            | UsageError::Audit(_)
            | UsageError::Signing(_) => ErrorKind::Unavailable,
            UsageError::Random(_) => ErrorKind::Internal,
        }
    }

    fn inner(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            UsageError::Storage(s) => Some(s),
            _ => None,
        }
    }
}

/// A masked delivery's store failed, or its records are damaged.
impl From<crate::desensitize::DesensitizeError> for UsageError {
    fn from(e: crate::desensitize::DesensitizeError) -> Self {
        match e {
            crate::desensitize::DesensitizeError::Storage(s) => Self::Storage(s),
            other => Self::DataLoss(other.to_string()),
        }
    }
}

impl From<AgreementError> for UsageError {
    fn from(e: AgreementError) -> Self {
        match e {
            AgreementError::Unknown(_) => Self::NotFound(e.to_string()),
            AgreementError::NotConsumer { .. } => Self::Forbidden(e.to_string()),
            AgreementError::Damaged(why) => Self::DataLoss(why),
            AgreementError::Storage(s) => Self::Storage(s),
        }
    }
}

/// A negotiation that cannot be read: the store failed, or the record is damaged.
impl From<ContractError> for UsageError {
    fn from(e: ContractError) -> Self {
        match e {
            ContractError::Storage(s) => Self::Storage(s),
            other => Self::DataLoss(other.to_string()),
        }
    }
}

impl From<TransferError> for UsageError {
    fn from(e: TransferError) -> Self {
        match e {
            TransferError::Storage(s) => Self::Storage(s),
            other => Self::DataLoss(other.to_string()),
        }
    }
}

/// Usage control, both sides: reads of received copies, duties, notices and the
/// outbox, revocations, no onward sharing. Its background task is [`Usage::run`].
pub struct Usage {
    storage: Arc<dyn Storage>,
    audit: AuditLog,
    identity: Arc<NodeIdentity>,
    contracts: Arc<Contracts>,
    catalog: Arc<Catalog>,
    peers: Arc<Peers>,
    trust: Arc<TrustStore>,
    alerts: Alerts,
    /// `[usage]`: how often the background task runs.
    config: UsageSection,
    /// Wakes the background task early (a notice is waiting in the outbox).
    kick: tokio::sync::Notify,
    /// When the revocation state was last confirmed, by provider (it answered this
    /// node's question for revocations) and by agreement (the provider began a delivery
    /// under it); see [`revocation`]. Kept in memory only: after a start, a provider
    /// that cannot be reached permits no read until it answered once.
    revocations_checked: std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
}

impl Usage {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        storage: Arc<dyn Storage>,
        audit: AuditLog,
        identity: Arc<NodeIdentity>,
        contracts: Arc<Contracts>,
        catalog: Arc<Catalog>,
        peers: Arc<Peers>,
        trust: Arc<TrustStore>,
        alerts: Alerts,
        config: UsageSection,
    ) -> Self {
        Self {
            storage,
            audit,
            identity,
            contracts,
            catalog,
            peers,
            trust,
            alerts,
            config,
            kick: tokio::sync::Notify::new(),
            revocations_checked: Default::default(),
        }
    }

    /// Asks the background task to run now (something waits in the outbox).
    pub fn kick(&self) {
        self.kick.notify_one();
    }
}

/// What transfers and queries ask of usage control: one gate for every way data leaves.
impl UsageGate for Usage {
    fn delivery_allowed(&self, agreement: &Agreement) -> Result<(), String> {
        Usage::delivery_allowed(self, agreement)
    }

    fn deleted(&self, agreement_id: &str) -> Result<Option<String>, StorageError> {
        Ok(deletion(self.storage.as_ref(), agreement_id)?.map(|d| d.explain()))
    }

    fn reads(&self, agreement_id: &str) -> Result<u64, StorageError> {
        let own = uses(self.storage.as_ref(), agreement_id)?.uses;
        let reported = self
            .usage_notices(agreement_id)?
            .iter()
            .map(|n| n.use_number)
            .max()
            .unwrap_or(0);
        Ok(own.max(reported))
    }

    fn uses(&self, agreement_id: &str) -> Result<u64, StorageError> {
        Ok(self.reads(agreement_id)?
            + crate::query::queries_so_far(self.storage.as_ref(), agreement_id)?)
    }

    fn delivery_began(&self, agreement_id: &str) {
        self.delivery_confirmed(agreement_id);
    }

    fn copy_verified(&self, agreement_id: &str) -> Result<(), String> {
        self.remember_verified(agreement_id)
            .map_err(|e| e.to_string())
    }
}

impl Usage {
    /// The agreement's policy, compiled (kept per agreement, see
    /// [`Agreement::compiled_policy`]).
    fn policy_of(&self, agreement: &Agreement) -> Result<Arc<CompiledPolicy>, UsageError> {
        self.contracts
            .compiled_policy(agreement)
            .map_err(|e| UsageError::Policy(format!("agreement {}: {e}", agreement.agreement_id)))
    }

    /// The agreement a copy carries, checked: it is an agreement, and this node's own
    /// countersignature covers exactly these bytes (so the stored copy was not altered).
    fn sticky_agreement(&self, envelope: &Envelope) -> Result<Agreement, UsageError> {
        envelope
            .open_json(
                AGREEMENT_PAYLOAD_TYPE,
                &self.identity.signing_key.public_key(),
            )
            .map_err(|e| {
                UsageError::DataLoss(format!(
                    "the copy's agreement is not the one this node countersigned: {e}"
                ))
            })
    }
}

fn use_key(agreement_id: &str) -> Vec<u8> {
    format!("u/{agreement_id}").into_bytes()
}

/// How often a copy was used.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UseRecord {
    /// Permitted reads so far.
    pub uses: u64,
    pub first_used_at: Option<i64>,
    pub last_used_at: Option<i64>,
}

/// The use record of a copy (zero uses if it was never read).
pub fn uses(storage: &dyn Storage, agreement_id: &str) -> Result<UseRecord, StorageError> {
    Ok(storage
        .get(USAGE, &use_key(agreement_id))?
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default())
}

impl Usage {
    /// Commits audit events together with the writes (tree, write) that they record: the
    /// entries first, then the writes, made durable by one flush (see
    /// [`AuditLog::append_with`](crate::audit::log::AuditLog::append_with)). So a crash
    /// leaves either both or neither, never a decision that is in force but not logged;
    /// and when the entry cannot be written, nothing is.
    async fn commit(
        &self,
        events: &[Event],
        records: Vec<(&'static str, Write)>,
    ) -> Result<(), UsageError> {
        self.audit
            .append_with(events, records)
            .await
            .map(|_| ())
            .map_err(|e| UsageError::Audit(e.to_string()))
    }
}

/// Most characters of a party's free text (a revocation's reason) that an audit entry
/// or an error message quotes; the signed message keeps it whole.
const QUOTED_CHARS: usize = 1_000;

/// `text` as an entry or a message quotes it: cut at [`QUOTED_CHARS`] characters.
fn quoted(text: &str) -> std::borrow::Cow<'_, str> {
    match text.char_indices().nth(QUOTED_CHARS) {
        None => std::borrow::Cow::Borrowed(text),
        Some((end, _)) => std::borrow::Cow::Owned(format!(
            "{}… ({} characters in all)",
            &text[..end],
            text.chars().count()
        )),
    }
}

/// Unix seconds as a date a person reads.
fn when(t: i64) -> String {
    crate::base::format::format_unix(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_text_is_cut_at_a_character_boundary() {
        assert_eq!(quoted("short"), "short");
        let exact = "数".repeat(QUOTED_CHARS);
        assert_eq!(quoted(&exact), exact);
        let long = format!("{exact}据据");
        assert_eq!(
            quoted(&long),
            format!("{exact}… ({} characters in all)", QUOTED_CHARS + 2)
        );
    }
}
