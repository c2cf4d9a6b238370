//! The auditor's side: read a node's log over `liutong.v1.Audit` and check it, trusting
//! nothing the node says that the authority has not vouched for.
//!
//! - The log's key comes from the node's membership credential, checked against the
//!   authority's key (which the auditor pins); the node's own statement of its key must
//!   agree.
//! - The checkpoint's signature is checked with that key, and every cosignature with the
//!   witness's own authority-signed credential.
//! - [`AuditorClient::verify`] fetches every entry up to the checkpoint, recomputes the
//!   tree, and compares roots. On a mismatch it finds the first entry that differs: for a
//!   size `m`, the node's consistency proof from `m` to the checkpoint verifies against
//!   the recomputed root of the first `m` entries exactly when those entries are the
//!   signed ones, so a binary search over `m` names the first changed entry.
//!
//! [`bundle`](super::bundle) uses the same checks offline.

use liutong_proto::v1::audit_client::AuditClient;
use liutong_proto::v1::{
    GetCheckpointRequest, GetEntriesRequest, GetVerifierKeyRequest, ProveConsistencyRequest,
    ProveInclusionRequest,
};
use tonic::transport::Channel;

use super::log::{Event, log_key_of, witness_key_of};
use super::merkle::{self, Hash, MemoryTreeStore};
use super::note::{self, Checkpoint, NoteError, SignedNote, VerifierKey};
use crate::identity::membership;
use crate::identity::{Envelope, Membership, PublicKey};

/// Why an audit check failed. [`VerifyError::bad_entry`] names the entry, if one is to
/// blame.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    #[error("{what}: the node answered {code:?}: {message}")]
    Rpc {
        what: &'static str,
        code: tonic::Code,
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
    #[error("entry {index} does not match the signed checkpoint: {reason}")]
    BadEntry { index: u64, reason: String },
    #[error("the recomputed tree does not match the signed checkpoint: {0}")]
    RootMismatch(String),
    #[error("the node's {what} does not verify: {reason}")]
    Proof { what: String, reason: String },
}

impl VerifyError {
    /// The index of the first bad entry, if the failure is one entry's.
    pub fn bad_entry(&self) -> Option<u64> {
        match self {
            Self::MissingEntry { index, .. } | Self::BadEntry { index, .. } => Some(*index),
            _ => None,
        }
    }
}

fn rpc(what: &'static str) -> impl FnOnce(tonic::Status) -> VerifyError {
    move |s| VerifyError::Rpc {
        what,
        code: s.code(),
        message: s.message().to_owned(),
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

/// What a successful [`AuditorClient::verify`] checked.
#[derive(Clone, Debug)]
pub struct VerifyReport {
    pub origin: String,
    pub checkpoint: VerifiedCheckpoint,
    /// Entries recomputed (the checkpoint's size).
    pub entries: u64,
    /// Entries that are not events this software can read (still covered by the tree).
    pub undecodable: Vec<u64>,
    /// The node's log size when checked (may be ahead of the checkpoint).
    pub log_size: u64,
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

/// What [`AuditorClient::verify_saved`] checked about a checkpoint saved earlier.
#[derive(Clone, Debug)]
pub struct SavedCheckpointReport {
    pub checkpoint: Checkpoint,
    /// The key that signed it: the node's current key, or an earlier one (after a key
    /// rotation) that an authority-signed credential in the node's key history names.
    pub signed_by: VerifierKey,
    pub by_previous_key: bool,
    /// The latest checkpoint it was proven consistent with.
    pub latest: VerifiedCheckpoint,
}

/// A client of one node's `liutong.v1.Audit`, with the authority key it trusts.
pub struct AuditorClient {
    client: AuditClient<Channel>,
    authority_key: PublicKey,
}

impl AuditorClient {
    pub fn new(channel: Channel, authority_key: PublicKey) -> Self {
        Self {
            client: AuditClient::new(channel).max_decoding_message_size(16 * 1024 * 1024),
            authority_key,
        }
    }

    /// The raw gRPC client, for calls that need no checking.
    pub fn raw(&mut self) -> &mut AuditClient<Channel> {
        &mut self.client
    }

    /// The node's log key, as its authority-signed credential names it.
    pub async fn trusted_log(&mut self) -> Result<TrustedLog, VerifyError> {
        let answer = self
            .client
            .get_verifier_key(GetVerifierKeyRequest {})
            .await
            .map_err(rpc("reading the verifier key"))?
            .into_inner();
        let credential: Envelope = answer
            .credential
            .ok_or_else(|| VerifyError::Credential {
                whose: "the node".into(),
                reason: "the answer carried none".into(),
            })?
            .into();
        let membership = open_credential(&credential, &self.authority_key, "the node")?;
        let log_key = log_key_of(&membership).map_err(|e| VerifyError::Credential {
            whose: "the node".into(),
            reason: e.to_string(),
        })?;
        if log_key.to_string() != answer.log_key {
            return Err(VerifyError::KeyMismatch {
                presented: answer.log_key,
                expected: log_key.to_string(),
            });
        }
        Ok(TrustedLog {
            origin: log_key.name().to_owned(),
            log_key,
            membership,
            credential,
        })
    }

    /// The log keys of the node's earlier credentials (key rotations), each checked
    /// against the authority and for the same participant, oldest first.
    pub async fn previous_log_keys(
        &mut self,
        log: &TrustedLog,
    ) -> Result<Vec<VerifierKey>, VerifyError> {
        let answer = self
            .client
            .get_verifier_key(GetVerifierKeyRequest {})
            .await
            .map_err(rpc("reading the verifier key"))?
            .into_inner();
        let mut keys = Vec::new();
        for envelope in answer.previous_credentials {
            let member = open_credential(&envelope.into(), &self.authority_key, "an earlier key")?;
            if member.participant_id != log.membership.participant_id {
                return Err(VerifyError::Credential {
                    whose: "an earlier key".into(),
                    reason: format!(
                        "it names participant {}, not {}",
                        member.participant_id, log.membership.participant_id
                    ),
                });
            }
            keys.push(log_key_of(&member).map_err(|e| VerifyError::Credential {
                whose: "an earlier key".into(),
                reason: e.to_string(),
            })?);
        }
        Ok(keys)
    }

    /// Checks a checkpoint note saved earlier: signed by the node's current key or by an
    /// earlier one the authority vouched for, and consistent with the node's latest
    /// checkpoint (so the log was only appended to since).
    pub async fn verify_saved(
        &mut self,
        note_text: &str,
    ) -> Result<SavedCheckpointReport, VerifyError> {
        let log = self.trusted_log().await?;
        let previous = self.previous_log_keys(&log).await?;
        let mut keys = vec![log.log_key.clone()];
        keys.extend(previous);
        let (checkpoint, signed) = note::open_checkpoint(note_text.as_bytes(), &keys)?;
        if checkpoint.origin != log.origin {
            return Err(VerifyError::Checkpoint(NoteError::BadCheckpoint(
                "the checkpoint names another origin than the log's",
            )));
        }
        let signed_by = keys
            .iter()
            .find(|k| {
                signed
                    .signatures()
                    .iter()
                    .any(|l| l.name == k.name() && l.key_id == k.key_id())
            })
            .cloned()
            .unwrap_or_else(|| log.log_key.clone());
        let latest = self.checkpoint(&log).await?;
        let (size1, size2) = (checkpoint.size, latest.checkpoint.size);
        if size1 > size2 {
            return Err(VerifyError::Proof {
                what: "log".into(),
                reason: format!(
                    "the saved checkpoint covers {size1} entries, but the latest covers only \
                     {size2}: the log was cut back"
                ),
            });
        }
        let proof = if size1 == size2 || size1 == 0 {
            Vec::new()
        } else {
            self.client
                .prove_consistency(ProveConsistencyRequest { size1, size2 })
                .await
                .map_err(rpc("proving consistency"))?
                .into_inner()
                .proof
        };
        if size1 > 0 {
            merkle::verify_consistency(
                size1,
                size2,
                &checkpoint.root,
                &latest.checkpoint.root,
                &proof,
            )
            .map_err(|e| VerifyError::Proof {
                what: format!("consistency proof from {size1} to {size2}"),
                reason: e.to_string(),
            })?;
        }
        Ok(SavedCheckpointReport {
            by_previous_key: signed_by != log.log_key,
            checkpoint,
            signed_by,
            latest,
        })
    }

    /// The latest checkpoint, verified.
    pub async fn checkpoint(
        &mut self,
        log: &TrustedLog,
    ) -> Result<VerifiedCheckpoint, VerifyError> {
        let answer = self
            .client
            .get_checkpoint(GetCheckpointRequest {})
            .await
            .map_err(rpc("reading the checkpoint"))?
            .into_inner();
        let credentials: Vec<Envelope> = answer
            .witness_credentials
            .into_iter()
            .map(Into::into)
            .collect();
        verify_checkpoint(
            log,
            &answer.note,
            &credentials,
            &self.authority_key,
            answer.quorum,
        )
    }

    /// Entries `from..to` (to excluded), in order; a missing one is an error naming it.
    pub async fn entries(&mut self, from: u64, to: u64) -> Result<Vec<Vec<u8>>, VerifyError> {
        let mut out = Vec::with_capacity((to - from).min(1 << 20) as usize);
        let mut next = from;
        while next < to {
            let answer = self
                .client
                .get_entries(GetEntriesRequest {
                    from: next,
                    to: to - 1,
                })
                .await;
            let answer = match answer {
                Ok(a) => a.into_inner(),
                Err(s) if s.code() == tonic::Code::OutOfRange => {
                    return Err(VerifyError::MissingEntry {
                        index: next,
                        size: to,
                    });
                }
                Err(s) => return Err(rpc("reading entries")(s)),
            };
            if answer.entries.is_empty() {
                return Err(VerifyError::MissingEntry {
                    index: next,
                    size: to,
                });
            }
            for e in answer.entries {
                if e.index != next {
                    return Err(VerifyError::MissingEntry {
                        index: next,
                        size: to,
                    });
                }
                out.push(e.data);
                next += 1;
            }
        }
        Ok(out)
    }

    /// Fetches the whole log up to the latest checkpoint and recomputes it; see the
    /// module doc.
    pub async fn verify(&mut self) -> Result<VerifyReport, VerifyError> {
        let log = self.trusted_log().await?;
        let checkpoint = self.checkpoint(&log).await?;
        let size = checkpoint.checkpoint.size;
        let entries = self.entries(0, size).await?;
        let mut tree = MemoryTreeStore::new();
        let mut undecodable = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            tree.append_entry(e);
            if serde_json::from_slice::<Event>(e).is_err() {
                undecodable.push(i as u64);
            }
        }
        if tree.current_root() != checkpoint.checkpoint.root {
            let index = self.first_divergence(&tree, &checkpoint.checkpoint).await?;
            return Err(VerifyError::BadEntry {
                index,
                reason: "its bytes are not the ones the checkpoint's tree was built from \
                         (changed on disk?)"
                    .into(),
            });
        }
        // The node's own proofs must verify too: spot-check first, middle, last.
        if size > 0 {
            for index in [0, size / 2, size - 1] {
                self.check_inclusion(index, &entries[index as usize], &checkpoint.checkpoint)
                    .await?;
            }
        }
        let log_size = self
            .client
            .get_checkpoint(GetCheckpointRequest {})
            .await
            .map_err(rpc("reading the checkpoint"))?
            .into_inner()
            .log_size;
        Ok(VerifyReport {
            origin: log.origin,
            checkpoint,
            entries: size,
            undecodable,
            log_size,
        })
    }

    async fn check_inclusion(
        &mut self,
        index: u64,
        entry: &[u8],
        checkpoint: &Checkpoint,
    ) -> Result<(), VerifyError> {
        let proof = self
            .client
            .prove_inclusion(ProveInclusionRequest {
                index,
                size: checkpoint.size,
            })
            .await
            .map_err(rpc("proving inclusion"))?
            .into_inner();
        merkle::verify_inclusion(
            &merkle::leaf_hash(entry),
            index,
            checkpoint.size,
            &proof.proof,
            &checkpoint.root,
        )
        .map_err(|e| VerifyError::Proof {
            what: format!("inclusion proof of entry {index}"),
            reason: e.to_string(),
        })
    }

    /// The first entry whose bytes differ from the signed ones (see the module doc).
    async fn first_divergence(
        &mut self,
        tree: &MemoryTreeStore,
        checkpoint: &Checkpoint,
    ) -> Result<u64, VerifyError> {
        let size = checkpoint.size;
        // The first `lo` entries are known good (0 trivially); the first `hi` are not.
        let (mut lo, mut hi) = (0u64, size);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if self.prefix_is_signed(tree, mid, checkpoint).await? {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        Ok(hi - 1)
    }

    async fn prefix_is_signed(
        &mut self,
        tree: &MemoryTreeStore,
        m: u64,
        checkpoint: &Checkpoint,
    ) -> Result<bool, VerifyError> {
        let root: Hash =
            merkle::root(tree, m).map_err(|e| VerifyError::RootMismatch(e.to_string()))?;
        let proof = self
            .client
            .prove_consistency(ProveConsistencyRequest {
                size1: m,
                size2: checkpoint.size,
            })
            .await
            .map_err(rpc("proving consistency"))?
            .into_inner();
        Ok(
            merkle::verify_consistency(m, checkpoint.size, &root, &checkpoint.root, &proof.proof)
                .is_ok(),
        )
    }
}

/// Decodes an entry for display: the event, or `None` if it is not one.
pub fn decode(entry: &[u8]) -> Option<Event> {
    serde_json::from_slice(entry).ok()
}

/// Parses a signed note's checkpoint without checking signatures (for display only).
pub fn peek_checkpoint(note_text: &str) -> Result<Checkpoint, NoteError> {
    Checkpoint::parse(SignedNote::parse(note_text.as_bytes())?.text())
}
