//! What a transfer step fails with ([`TransferError`]), and how the errors of the
//! concerns a transfer uses (agreements, products, masking, the audit log, the state
//! machine) become transfer errors.

use crate::audit::log::AuditError;
use crate::base::error::{ErrorKind, ErrorKinded, PeerRefusal};
use crate::catalog::product::ProductError;
use crate::contract::{AgreedProductError, AgreementError};
use crate::desensitize::DesensitizeError;
use crate::storage::StorageError;

use super::state;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransferError {
    #[error("no finalized agreement {0}")]
    UnknownAgreement(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("the agreement's policy refuses the transfer: {0}")]
    Denied(String),
    /// The agreement releases only aggregates (compute-to-data).
    #[error("{0}")]
    AggregateOnly(String),
    /// A pull that asks to start past the last chunk.
    #[error("{0}")]
    OutOfRange(String),
    /// Damaged or mismatching data: a hash, a signature, a stored record.
    #[error("{0}")]
    DataLoss(String),
    #[error("{0}")]
    Invalid(String),
    /// The agreed product version is no longer at the provider.
    #[error("{0}")]
    Gone(String),
    /// A store or file of this node cannot be read right now.
    #[error("{0}")]
    Unavailable(String),
    #[error("the provider: {0}")]
    Peer(PeerRefusal),
    #[error("cannot reach the provider: {0}")]
    Unreachable(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("the audit log cannot be written, so the step is refused: {0}")]
    Audit(String),
    #[error("cannot read or write the payload file: {0}")]
    Payload(#[from] std::io::Error),
    /// A task of the node's own failed (it panicked or was cancelled).
    #[error("{0}")]
    Internal(String),
    /// The node's signing key could not sign (a key in a token that cannot be reached).
    #[error("the node's signing key cannot sign: {0}")]
    Signing(#[from] crate::identity::KeyError),
}

impl ErrorKinded for TransferError {
    fn kind(&self) -> ErrorKind {
        match self {
            TransferError::UnknownAgreement(_) => ErrorKind::NotFound,
            TransferError::Forbidden(_) | TransferError::Denied(_) => ErrorKind::PermissionDenied,
            TransferError::DataLoss(_) => ErrorKind::DataLoss,
            TransferError::OutOfRange(_) => ErrorKind::OutOfRange,
            TransferError::Invalid(_)
            | TransferError::AggregateOnly(_)
            | TransferError::Gone(_) => ErrorKind::FailedPrecondition,
            TransferError::Peer(refusal) => refusal.kind,
            TransferError::Unreachable(_)
            | TransferError::Unavailable(_)
            | TransferError::Storage(_)
            | TransferError::Audit(_)
            | TransferError::Signing(_) => ErrorKind::Unavailable,
            TransferError::Payload(_) | TransferError::Internal(_) => ErrorKind::Internal,
        }
    }

    fn message(&self) -> String {
        match self {
            TransferError::Peer(refusal) => {
                format!("the provider answered: {}", refusal.message)
            }
            other => other.to_string(),
        }
    }

    fn inner(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TransferError::Storage(s) => Some(s),
            _ => None,
        }
    }
}

impl From<AgreementError> for TransferError {
    fn from(e: AgreementError) -> Self {
        match e {
            AgreementError::Unknown(id) => Self::UnknownAgreement(id),
            AgreementError::NotConsumer { .. } => Self::Forbidden(e.to_string()),
            AgreementError::Damaged(why) => Self::DataLoss(why),
            AgreementError::Storage(s) => Self::Storage(s),
        }
    }
}

/// A step the transfer state machine does not allow: a record that is not what the
/// step expects.
impl From<state::IllegalTransition> for TransferError {
    fn from(e: state::IllegalTransition) -> Self {
        Self::Invalid(e.to_string())
    }
}

impl From<AgreedProductError> for TransferError {
    fn from(e: AgreedProductError) -> Self {
        match e {
            AgreedProductError::Gone(why) => Self::Gone(why),
            AgreedProductError::Unreadable(_) => Self::Unavailable(e.to_string()),
            AgreedProductError::Damaged(_) | AgreedProductError::Changed => {
                Self::DataLoss(e.to_string())
            }
        }
    }
}

/// A masked delivery that cannot be made or read: deleted (with the agreement's
/// revocation or the consumer's copy) is refused with the reason; damaged is data
/// loss; a store failure is a store failure.
impl From<DesensitizeError> for TransferError {
    fn from(e: DesensitizeError) -> Self {
        match e {
            DesensitizeError::Removed(why) => Self::Forbidden(why),
            DesensitizeError::Storage(s) => Self::Storage(s),
            DesensitizeError::Damaged(_) => Self::DataLoss(e.to_string()),
            other => Self::Invalid(other.to_string()),
        }
    }
}

/// A stored product chunk that cannot be read: missing or damaged is data loss, a
/// store or file failure is a store failure.
pub(super) fn product_read_error(e: ProductError) -> TransferError {
    match e {
        ProductError::Damaged(_) => TransferError::DataLoss(e.to_string()),
        ProductError::NotFound(_) => TransferError::Gone(e.to_string()),
        ProductError::Storage(s) => TransferError::Storage(s),
        other => TransferError::Unavailable(other.to_string()),
    }
}

impl From<AuditError> for TransferError {
    fn from(e: AuditError) -> Self {
        Self::Audit(e.to_string())
    }
}
