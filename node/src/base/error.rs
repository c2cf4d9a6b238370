//! What kind of failure an error is, apart from any wire: [`ErrorKind`], the
//! [`ErrorKinded`] trait each domain error implements beside its own variants (where the
//! knowledge of what each one means lives), and [`PeerRefusal`], a peer's answer to an
//! outbound call as a plain value. The edges turn a kind into a gRPC status with one
//! table (`service::errors`); the one conversion the other way, from a peer's status
//! code, is [`ErrorKind::from_code`] here, because the data-space modules that make the
//! outbound calls sit below the edges.

use std::fmt;

/// The kinds of failure the node tells a caller about, named as gRPC names its codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The call itself was cancelled (only ever a peer's answer).
    Cancelled,
    /// The peer's answer says nothing more (also a status code this node does not know).
    Unknown,
    InvalidArgument,
    DeadlineExceeded,
    NotFound,
    AlreadyExists,
    PermissionDenied,
    ResourceExhausted,
    FailedPrecondition,
    Aborted,
    OutOfRange,
    Unimplemented,
    Internal,
    Unavailable,
    DataLoss,
    Unauthenticated,
}

impl ErrorKind {
    /// Every kind, for tables and their tests.
    pub const ALL: [ErrorKind; 16] = [
        ErrorKind::Cancelled,
        ErrorKind::Unknown,
        ErrorKind::InvalidArgument,
        ErrorKind::DeadlineExceeded,
        ErrorKind::NotFound,
        ErrorKind::AlreadyExists,
        ErrorKind::PermissionDenied,
        ErrorKind::ResourceExhausted,
        ErrorKind::FailedPrecondition,
        ErrorKind::Aborted,
        ErrorKind::OutOfRange,
        ErrorKind::Unimplemented,
        ErrorKind::Internal,
        ErrorKind::Unavailable,
        ErrorKind::DataLoss,
        ErrorKind::Unauthenticated,
    ];

    /// The kind of a peer's gRPC answer. This is the crate's one table from status codes
    /// to kinds; it lives in the foundations rather than with the edges' table the
    /// other way (`service::errors`) because the data-space modules, below the edges,
    /// make the outbound calls and take their answers. `OK` is not a failure, so it is
    /// taken as [`Unknown`](ErrorKind::Unknown).
    pub fn from_code(code: tonic::Code) -> ErrorKind {
        use tonic::Code;
        match code {
            Code::Cancelled => ErrorKind::Cancelled,
            Code::InvalidArgument => ErrorKind::InvalidArgument,
            Code::DeadlineExceeded => ErrorKind::DeadlineExceeded,
            Code::NotFound => ErrorKind::NotFound,
            Code::AlreadyExists => ErrorKind::AlreadyExists,
            Code::PermissionDenied => ErrorKind::PermissionDenied,
            Code::ResourceExhausted => ErrorKind::ResourceExhausted,
            Code::FailedPrecondition => ErrorKind::FailedPrecondition,
            Code::Aborted => ErrorKind::Aborted,
            Code::OutOfRange => ErrorKind::OutOfRange,
            Code::Unimplemented => ErrorKind::Unimplemented,
            Code::Internal => ErrorKind::Internal,
            Code::Unavailable => ErrorKind::Unavailable,
            Code::DataLoss => ErrorKind::DataLoss,
            Code::Unauthenticated => ErrorKind::Unauthenticated,
            Code::Ok | Code::Unknown => ErrorKind::Unknown,
        }
    }
}

/// A domain error that says what kind of failure it is.
pub trait ErrorKinded: std::error::Error + 'static {
    /// What kind of failure this is.
    fn kind(&self) -> ErrorKind;

    /// The words a caller is told (its own text unless the error says otherwise).
    fn message(&self) -> String {
        self.to_string()
    }

    /// An error this one stands for transparently, in whose chain a storage failure is
    /// looked for as well as in this one's (a `#[error(transparent)]` variant forwards
    /// only the inner error's sources, not the inner error itself).
    fn inner(&self) -> Option<&(dyn std::error::Error + 'static)> {
        None
    }

    /// Why the step was refused, where the kind alone does not tell the caller (sent
    /// under [`REFUSAL_KEY`]).
    fn refusal(&self) -> Option<&'static str> {
        None
    }
}

/// A field outside its grammar is the caller's mistake.
impl ErrorKinded for crate::base::bounded::FieldError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::InvalidArgument
    }
}

/// The metadata key by which a node says why it refused a call, where the status code
/// alone does not tell (a contract request's nonce already held: `replay`).
pub const REFUSAL_KEY: &str = "liutong-refusal";

/// A peer's answer refusing an outbound call (or the call failing on the way), as a
/// plain value: its kind, its words, and the reason it gave under [`REFUSAL_KEY`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerRefusal {
    pub kind: ErrorKind,
    pub message: String,
    pub refusal: Option<String>,
}

impl From<tonic::Status> for PeerRefusal {
    fn from(status: tonic::Status) -> Self {
        PeerRefusal {
            kind: ErrorKind::from_code(status.code()),
            refusal: status
                .metadata()
                .get(REFUSAL_KEY)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            message: crate::base::bounded::shown(status.message(), PEER_WORDS),
        }
    }
}

/// The longest a peer's words are kept, in characters.
const PEER_WORDS: usize = 1024;

impl fmt::Display for PeerRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({:?})", self.message, self.kind)
    }
}

impl std::error::Error for PeerRefusal {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_s_answer_keeps_its_kind_words_and_reason() {
        let mut status = tonic::Status::already_exists("held");
        status.metadata_mut().insert(
            REFUSAL_KEY,
            tonic::metadata::MetadataValue::from_static("replay"),
        );
        let refusal = PeerRefusal::from(status);
        assert_eq!(refusal.kind, ErrorKind::AlreadyExists);
        assert_eq!(refusal.message, "held");
        assert_eq!(refusal.refusal.as_deref(), Some("replay"));
        assert_eq!(
            PeerRefusal::from(tonic::Status::new(tonic::Code::Ok, "")).kind,
            ErrorKind::Unknown
        );
    }

    #[test]
    fn a_peer_s_words_are_escaped_and_cut() {
        let forged = PeerRefusal::from(tonic::Status::not_found("no\nalert: fake\u{1b}[31m"));
        assert_eq!(forged.message, "no\\nalert: fake\\u{1b}[31m");
        let long = PeerRefusal::from(tonic::Status::not_found("x".repeat(1 << 20)));
        assert!(long.message.starts_with(&"x".repeat(PEER_WORDS)));
        assert!(
            long.message[PEER_WORDS..].starts_with("… ("),
            "{}",
            &long.message[PEER_WORDS..]
        );
    }
}
