//! The one table from error kinds to gRPC status codes, and [`status`], which every
//! service uses to answer with a domain error: the kind's code and the error's own
//! words, except that storage in the failed state is always `UNAVAILABLE` with the
//! storage failure's words, whatever the step was (see `storage::durability`: it
//! refuses every write until the node is restarted). The other direction, a peer's
//! code as a kind, is [`ErrorKind::from_code`].

use std::pin::Pin;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt as _};
use tonic::{Code, Status};

use crate::base::error::{ErrorKind, ErrorKinded, REFUSAL_KEY};

/// The gRPC code of each kind.
pub fn code(kind: ErrorKind) -> Code {
    match kind {
        ErrorKind::Cancelled => Code::Cancelled,
        ErrorKind::Unknown => Code::Unknown,
        ErrorKind::InvalidArgument => Code::InvalidArgument,
        ErrorKind::DeadlineExceeded => Code::DeadlineExceeded,
        ErrorKind::NotFound => Code::NotFound,
        ErrorKind::AlreadyExists => Code::AlreadyExists,
        ErrorKind::PermissionDenied => Code::PermissionDenied,
        ErrorKind::ResourceExhausted => Code::ResourceExhausted,
        ErrorKind::FailedPrecondition => Code::FailedPrecondition,
        ErrorKind::Aborted => Code::Aborted,
        ErrorKind::OutOfRange => Code::OutOfRange,
        ErrorKind::Unimplemented => Code::Unimplemented,
        ErrorKind::Internal => Code::Internal,
        ErrorKind::Unavailable => Code::Unavailable,
        ErrorKind::DataLoss => Code::DataLoss,
        ErrorKind::Unauthenticated => Code::Unauthenticated,
    }
}

/// The status a caller is answered with for `e`.
pub fn status<E: ErrorKinded>(e: &E) -> Status {
    let failure = crate::storage::durability::failure_in(e)
        .or_else(|| e.inner().and_then(crate::storage::durability::failure_in));
    if let Some(f) = failure {
        return Status::unavailable(f.to_string());
    }
    let mut status = Status::new(code(e.kind()), e.message());
    if let Some(refusal) = e.refusal() {
        status.metadata_mut().insert(
            REFUSAL_KEY,
            tonic::metadata::MetadataValue::from_static(refusal),
        );
    }
    status
}

/// [`status`] of an owned error, for `map_err`.
pub fn into_status<E: ErrorKinded>(e: E) -> Status {
    status(&e)
}

/// The messages of a data-space task's stream as gRPC messages, each error through the
/// table above.
pub type StatusStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// [`StatusStream`] over the receiving end of a task's channel.
pub fn status_stream<T, E>(rx: mpsc::Receiver<Result<T, E>>) -> StatusStream<T>
where
    T: Send + 'static,
    E: ErrorKinded + Send + 'static,
{
    Box::pin(ReceiverStream::new(rx).map(|r| r.map_err(into_status)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::StorageError;

    #[test]
    fn every_kind_maps_to_the_code_it_names_and_back() {
        for kind in ErrorKind::ALL {
            let code = code(kind);
            assert_eq!(format!("{kind:?}"), format!("{code:?}"));
            assert_eq!(ErrorKind::from_code(code), kind);
        }
    }

    #[test]
    fn a_failed_store_is_unavailable_whatever_the_step() {
        let failed = StorageError::Failed("the disk refused a write".into());
        // A product error stands for the storage error transparently: found through
        // `inner`, as its chain of sources skips it.
        let e = crate::catalog::CatalogError::Product(
            crate::catalog::product::ProductError::Storage(failed),
        );
        let s = status(&e);
        assert_eq!(s.code(), Code::Unavailable);
        assert!(
            s.message().contains("the disk refused a write"),
            "{}",
            s.message()
        );
        let e = crate::trust::TrustError::Storage(StorageError::Failed("gone".into()));
        assert_eq!(status(&e).code(), Code::Unavailable);
    }

    #[test]
    fn a_replayed_request_says_so_in_metadata() {
        let s = status(&crate::contract::ContractError::Replay("n1".into()));
        assert_eq!(s.code(), Code::FailedPrecondition);
        assert_eq!(
            s.metadata().get(REFUSAL_KEY).and_then(|v| v.to_str().ok()),
            Some(crate::recovery::REPLAY)
        );
    }

    #[test]
    fn a_peer_s_refusal_is_passed_on_with_its_code() {
        let refusal = crate::base::error::PeerRefusal::from(Status::permission_denied("no"));
        let s = status(&crate::contract::ContractError::Peer(refusal));
        assert_eq!(s.code(), Code::PermissionDenied);
        assert_eq!(s.message(), "the provider answered: no");
    }
}
