//! The auditor's side: read a node's log over `liutong.v1.Audit` and check it, trusting
//! nothing the node says that the authority has not vouched for.
//!
//! - The log's key comes from the node's membership credential, checked against the
//!   authority's key (which the auditor pins); the node's own statement of its key must
//!   agree.
//! - The checkpoint's signature is checked with that key, and every cosignature with the
//!   witness's own authority-signed credential.
//!
//! This file holds those checks, which need no network, and what they report; the
//! [`AuditorClient`](crate::audit_client::AuditorClient) that fetches a log over gRPC and
//! runs them is in the edges layer, [`crate::audit_client`].
//!
//! [`bundle`](super::bundle) uses the same checks offline.

use super::log::{Event, witness_key_of};
use super::note::{self, Checkpoint, NoteError, SignedNote, VerifierKey};
use crate::base::error::ErrorKind;
use crate::identity::membership;
use crate::identity::{Envelope, Membership, PublicKey};

/// Why an audit check failed. [`VerifyError::bad_entry`] names the entry, if one is to
/// blame.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// A call to the node failed; `kind` is the gRPC code's kind, so this layer needs no
    /// wire types.
    #[error("{what}: the node answered {kind:?}: {message}")]
    Rpc {
        what: &'static str,
        kind: ErrorKind,
        message: String,
    },
    #[error("the membership credential of {whose} does not verify against the authority: {reason}")]
    Credential { whose: String, reason: String },
    #[error(
        "the node presents the log key {presented}, but its authority-signed credential names {expected}"
    )]
    KeyMismatch { presented: String, expected: String },
    #[error("the checkpoint does not verify: {0}")]
    Checkpoint(#[from] NoteError),
    #[error("the cosignature of witness {witness} does not verify: {reason}")]
    Cosignature { witness: String, reason: String },
    #[error(
        "entry {index} is missing: the checkpoint of size {size} covers it, but the log does \
         not hold it (the log was truncated or the entry deleted)"
    )]
    MissingEntry { index: u64, size: u64 },
    #[error(
        "entry {index} is missing: the log's head is at size {size}, but the log does not \
         hold it (the entry was deleted)"
    )]
    MissingTailEntry { index: u64, size: u64 },
    #[error("entry {index} does not match the signed checkpoint: {reason}")]
    BadEntry { index: u64, reason: String },
    #[error(
        "entry {index} does not match the tree the node built when it appended it \
         (after the latest checkpoint, of size {checkpoint_size}, so no signature covers \
         it yet): {reason}"
    )]
    BadTailEntry {
        index: u64,
        checkpoint_size: u64,
        reason: String,
    },
    #[error("the recomputed tree does not match the signed checkpoint: {0}")]
    RootMismatch(String),
    #[error("the node's {what} does not verify: {reason}")]
    Proof { what: String, reason: String },
}

impl VerifyError {
    /// The index of the first bad entry, if the failure is one entry's.
    pub fn bad_entry(&self) -> Option<u64> {
        match self {
            Self::MissingEntry { index, .. }
            | Self::MissingTailEntry { index, .. }
            | Self::BadEntry { index, .. }
            | Self::BadTailEntry { index, .. } => Some(*index),
            _ => None,
        }
    }
}

/// A log whose key the authority vouches for.
#[derive(Clone, Debug)]
pub struct TrustedLog {
    pub origin: String,
    pub log_key: VerifierKey,
    pub membership: Membership,
    pub credential: Envelope,
}

/// A checkpoint whose log signature and cosignatures were checked.
#[derive(Clone, Debug)]
pub struct VerifiedCheckpoint {
    pub checkpoint: Checkpoint,
    /// The signed note, cosignatures included.
    pub note: String,
    /// Participant IDs of the witnesses whose cosignatures verified.
    pub cosigners: Vec<String>,
    pub witness_credentials: Vec<Envelope>,
    /// What the node says it needs.
    pub quorum: u32,
}

/// Opens a membership credential with the authority's key
/// ([`membership::open_credential`]), naming `whose` it is when it fails.
pub fn open_credential(
    credential: &Envelope,
    authority_key: &PublicKey,
    whose: &str,
) -> Result<Membership, VerifyError> {
    membership::open_credential(credential, authority_key).map_err(|e| VerifyError::Credential {
        whose: whose.to_owned(),
        reason: e.to_string(),
    })
}

/// Checks a checkpoint note: the log's signature, then each listed witness's
/// cosignature (a witness listed without a valid cosignature is an error; cosignature
/// lines of witnesses not listed are ignored).
pub fn verify_checkpoint(
    log: &TrustedLog,
    note_text: &str,
    witness_credentials: &[Envelope],
    authority_key: &PublicKey,
    quorum: u32,
) -> Result<VerifiedCheckpoint, VerifyError> {
    let (checkpoint, signed) =
        note::open_checkpoint(note_text.as_bytes(), std::slice::from_ref(&log.log_key))?;
    if checkpoint.origin != log.origin {
        return Err(VerifyError::Checkpoint(NoteError::BadCheckpoint(
            "the checkpoint names another origin than the log's",
        )));
    }
    let mut cosigners = Vec::new();
    for credential in witness_credentials {
        let member = open_credential(credential, authority_key, "a witness")?;
        let witness = member.participant_id.to_string();
        let cosign_err = |reason: String| VerifyError::Cosignature {
            witness: witness.clone(),
            reason,
        };
        let key = witness_key_of(&member).map_err(|e| cosign_err(e.to_string()))?;
        let line = signed
            .signatures()
            .iter()
            .find(|l| l.name == key.name() && l.key_id == key.key_id())
            .ok_or_else(|| cosign_err("the note carries no cosignature line of it".into()))?;
        note::verify_cosignature(signed.text(), line, &key)
            .map_err(|e| cosign_err(e.to_string()))?;
        cosigners.push(witness);
    }
    Ok(VerifiedCheckpoint {
        checkpoint,
        note: note_text.to_owned(),
        cosigners,
        witness_credentials: witness_credentials.to_vec(),
        quorum,
    })
}

/// Decodes an entry for display: the event, or `None` if it is not one.
pub fn decode(entry: &[u8]) -> Option<Event> {
    serde_json::from_slice(entry).ok()
}

/// Parses a signed note's checkpoint without checking signatures (for display only).
pub fn peek_checkpoint(note_text: &str) -> Result<Checkpoint, NoteError> {
    Checkpoint::parse(SignedNote::parse(note_text.as_bytes())?.text())
}
