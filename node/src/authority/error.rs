//! What can go wrong with the authority, in words its operator can act on.

use std::path::PathBuf;

use crate::identity::{KeyError, ParticipantId};
use crate::tls::TlsError;
use crate::tls::certs::CertError;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthorityError {
    #[error("{0} already holds an authority; choose another directory or remove it deliberately")]
    AlreadyExists(PathBuf),
    #[error("{0} holds no authority (no authority.json); run `liutong authority init` first")]
    Missing(PathBuf),
    #[error("cannot use the authority directory {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is damaged: {reason}")]
    State { path: PathBuf, reason: String },
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Cert(#[from] CertError),
    #[error(transparent)]
    Token(#[from] crate::hsm::HsmError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(
        "participant {0} is already a member; pass --renew to issue it a new certificate and \
         credential (the old certificate stops working)"
    )]
    AlreadyMember(ParticipantId),
    #[error(
        "participant {participant} was revoked at {revoked_at} ({reason}); a revoked \
         participant cannot be admitted again under the same ID"
    )]
    Revoked {
        participant: ParticipantId,
        reason: String,
        revoked_at: String,
    },
    #[error("participant {0} is not a member")]
    NotMember(ParticipantId),
    #[error("{0}")]
    Invalid(String),
    #[error("admission refused: {0}")]
    Refused(String),
    #[error(transparent)]
    Request(#[from] crate::identity::request::RequestError),
    #[error("the output directory {0} exists and is not empty; choose a new one")]
    OutputExists(PathBuf),
    #[error("serving the trust list failed: {0}")]
    Serve(String),
}
