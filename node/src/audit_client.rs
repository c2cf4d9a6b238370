//! [`AuditorClient`]: the auditor's client of one node's `liutong.v1.Audit`, which fetches
//! the node's key, checkpoint and entries and checks them with the offline checks of
//! [`crate::audit::auditor`]; it also collects a node's part of an evidence bundle
//! ([`AuditorClient::collect_evidence`]).
//!
//! - [`AuditorClient::verify`] fetches every entry up to the head of the log, recomputes
//!   the tree, and compares its root at the checkpoint's size with the signed one. On a
//!   mismatch it finds the first entry that differs: for a size `m`, the node's
//!   consistency proof from `m` to the checkpoint verifies against the recomputed root
//!   of the first `m` entries exactly when those entries are the signed ones, so a
//!   binary search over `m` names the first changed entry.
//! - The entries after the latest checkpoint (the unsigned tail) are checked against the
//!   tree the node built when it appended them: its root at the head must be the
//!   recomputed one (else the same binary search, against the head, names the changed
//!   entry), and its consistency proof from the checkpoint to the head must verify, so
//!   the head extends what the node signed.

use liutong_proto::v1::audit_client::AuditClient;
use liutong_proto::v1::{
    GetCheckpointRequest, GetEntriesRequest, GetVerifierKeyRequest, ProveConsistencyRequest,
    ProveInclusionRequest,
};
use tonic::transport::Channel;

mod evidence;

use crate::audit::auditor::{
    TrustedLog, VerifiedCheckpoint, VerifyError, open_credential, verify_checkpoint,
};
use crate::audit::log::{Event, log_key_of};
use crate::audit::merkle::{self, Hash, MemoryTreeStore};
use crate::audit::note::{self, Checkpoint, NoteError, VerifierKey};
use crate::base::error::ErrorKind;
use crate::identity::{Envelope, PublicKey};

fn rpc(what: &'static str) -> impl FnOnce(tonic::Status) -> VerifyError {
    move |s| VerifyError::Rpc {
        what,
        kind: ErrorKind::from_code(s.code()),
        message: s.message().to_owned(),
    }
}

/// What a successful [`AuditorClient::verify`] checked.
#[derive(Clone, Debug)]
pub struct VerifyReport {
    pub origin: String,
    pub checkpoint: VerifiedCheckpoint,
    /// Entries recomputed: every entry up to the head.
    pub entries: u64,
    /// Entries that are not events this software can read (still covered by the tree).
    pub undecodable: Vec<u64>,
    /// The head: the node's log size when checked (may be ahead of the checkpoint).
    pub log_size: u64,
    /// The recomputed root of the whole log, up to the head. The node's own root at
    /// that size agrees, and is consistent with the checkpoint.
    pub head_root: Hash,
}

impl VerifyReport {
    /// Entries after the latest checkpoint, which no signature covers yet.
    pub fn unsigned(&self) -> u64 {
        self.log_size - self.checkpoint.checkpoint.size
    }
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
        Ok(self.checkpoint_and_head(log).await?.0)
    }

    /// The latest checkpoint, verified, and the log's size (its head) when it was read.
    async fn checkpoint_and_head(
        &mut self,
        log: &TrustedLog,
    ) -> Result<(VerifiedCheckpoint, u64), VerifyError> {
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
        let checkpoint = verify_checkpoint(
            log,
            &answer.note,
            &credentials,
            &self.authority_key,
            answer.quorum,
        )?;
        Ok((checkpoint, answer.log_size))
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

    /// Fetches the whole log up to its head and recomputes it; see the module doc.
    pub async fn verify(&mut self) -> Result<VerifyReport, VerifyError> {
        let log = self.trusted_log().await?;
        let (checkpoint, head) = self.checkpoint_and_head(&log).await?;
        let size = checkpoint.checkpoint.size;
        if head < size {
            return Err(VerifyError::Proof {
                what: "log".into(),
                reason: format!(
                    "the node signed a checkpoint of {size} entries, but says its log holds \
                     only {head}: the log was cut back"
                ),
            });
        }
        let mut entries = self.entries(0, size).await?;
        entries.extend(self.entries(size, head).await.map_err(|e| match e {
            VerifyError::MissingEntry { index, size } => {
                VerifyError::MissingTailEntry { index, size }
            }
            other => other,
        })?);
        let mut tree = MemoryTreeStore::new();
        let mut undecodable = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            tree.append_entry(e);
            if serde_json::from_slice::<Event>(e).is_err() {
                undecodable.push(i as u64);
            }
        }
        let signed_prefix =
            merkle::root(&tree, size).map_err(|e| VerifyError::RootMismatch(e.to_string()))?;
        if signed_prefix != checkpoint.checkpoint.root {
            let index = self
                .first_divergence(&tree, 0, size, &checkpoint.checkpoint.root)
                .await?;
            return Err(VerifyError::BadEntry {
                index,
                reason: "its bytes are not the ones the checkpoint's tree was built from \
                         (changed on disk?)"
                    .into(),
            });
        }
        let head_root = tree.current_root();
        if head > size {
            self.check_tail(&tree, &checkpoint.checkpoint, head, &head_root)
                .await?;
        }
        // The node's own proofs must verify too: spot-check first, middle, last of the
        // signed tree, and the head's last entry.
        if size > 0 {
            for index in [0, size / 2, size - 1] {
                self.check_inclusion(index, &entries[index as usize], &checkpoint.checkpoint)
                    .await?;
            }
        }
        if head > size {
            let at_head = Checkpoint {
                origin: checkpoint.checkpoint.origin.clone(),
                size: head,
                root: head_root,
            };
            self.check_inclusion(head - 1, &entries[head as usize - 1], &at_head)
                .await?;
        }
        Ok(VerifyReport {
            origin: log.origin,
            checkpoint,
            entries: head,
            undecodable,
            log_size: head,
            head_root,
        })
    }

    /// Checks the entries after the checkpoint against the node's tree at `head`, and
    /// that tree's consistency with the checkpoint.
    async fn check_tail(
        &mut self,
        tree: &MemoryTreeStore,
        checkpoint: &Checkpoint,
        head: u64,
        head_root: &Hash,
    ) -> Result<(), VerifyError> {
        let size = checkpoint.size;
        let answer = self
            .client
            .prove_consistency(ProveConsistencyRequest {
                size1: size,
                size2: head,
            })
            .await
            .map_err(rpc("proving consistency"))?
            .into_inner();
        let node_root: Hash =
            answer
                .root2
                .as_slice()
                .try_into()
                .map_err(|_| VerifyError::Proof {
                    what: format!("root at the head (size {head})"),
                    reason: format!("{} bytes, not 32", answer.root2.len()),
                })?;
        if node_root != *head_root {
            let index = self.first_divergence(tree, size, head, &node_root).await?;
            return Err(VerifyError::BadTailEntry {
                index,
                checkpoint_size: size,
                reason: "its bytes are not the ones whose hash the node stored (changed on \
                         disk?)"
                    .into(),
            });
        }
        if size > 0 {
            merkle::verify_consistency(size, head, &checkpoint.root, head_root, &answer.proof)
                .map_err(|e| VerifyError::Proof {
                    what: format!(
                        "consistency proof from the checkpoint of size {size} to the head \
                         (size {head})"
                    ),
                    reason: e.to_string(),
                })?;
        }
        Ok(())
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

    /// The first entry whose bytes differ from the ones the tree of `size` entries with
    /// root `root` was built from, the first `known_good` being right (see the module
    /// doc).
    async fn first_divergence(
        &mut self,
        tree: &MemoryTreeStore,
        known_good: u64,
        size: u64,
        root: &Hash,
    ) -> Result<u64, VerifyError> {
        // The first `lo` entries are known good; the first `hi` are not.
        let (mut lo, mut hi) = (known_good, size);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if self.prefix_matches(tree, mid, size, root).await? {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        Ok(hi - 1)
    }

    /// Whether the first `m` recomputed entries are the ones the tree of `size` entries
    /// with root `root` was built from.
    async fn prefix_matches(
        &mut self,
        tree: &MemoryTreeStore,
        m: u64,
        size: u64,
        root: &Hash,
    ) -> Result<bool, VerifyError> {
        let prefix: Hash =
            merkle::root(tree, m).map_err(|e| VerifyError::RootMismatch(e.to_string()))?;
        let proof = self
            .client
            .prove_consistency(ProveConsistencyRequest {
                size1: m,
                size2: size,
            })
            .await
            .map_err(rpc("proving consistency"))?
            .into_inner();
        Ok(merkle::verify_consistency(m, size, &prefix, root, &proof.proof).is_ok())
    }
}
