//! This node as a witness of other members' logs: the [`super::witness`] decision with
//! its state kept in storage.
//!
//! - The state (per log origin, the latest checkpoint cosigned) is one value, replaced
//!   atomically and flushed *before* the cosignature leaves the node, so a restart can
//!   never make the witness go back.
//! - Calls are serialized, so two requests cannot both start from the same old state.
//! - Two signed checkpoints that cannot both be true are kept as [`Evidence`] (flushed),
//!   and then reported to the [`WitnessReports`] sink the node gave the store (the node's
//!   alerting, which raises the witness-inconsistency alert).
//!
//! A log is known by its member's signing key from the trust list: origin
//! `liutong.<participant>/audit`, key type Ed25519.

use std::sync::Arc;

use super::log::owner_of;
use super::note::{self, NoteSigner, VerifierKey};
use super::witness::{
    ConflictKind, CosignatureLine, Evidence, Witness, WitnessError, WitnessState,
};
use crate::base::BoxFuture;
use crate::storage::{Storage, StorageError};

const TREE: &str = "witness";
const STATE_KEY: &[u8] = b"state";
const EVIDENCE_PREFIX: &[u8] = b"evidence/";

/// Why the witness refused, or could not keep its promise.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WitnessingError {
    #[error(transparent)]
    Witness(#[from] WitnessError),
    #[error("the witness cannot store its state, so it does not cosign: {0}")]
    Storage(#[from] StorageError),
    #[error("the witness's stored state is damaged: {0}")]
    Damaged(String),
}

/// What a log offers a witness: its signed checkpoint note and a consistency proof from
/// the size it believes the witness last cosigned.
pub struct CheckpointOffer<'a> {
    pub note: &'a [u8],
    pub old_size: u64,
    pub proof: &'a [super::merkle::Hash],
}

/// What witnessing reports to the rest of the node. The audit layer defines it so that
/// the component that acts on a report (the node's alerting, a layer above) plugs in
/// here instead of being imported.
pub trait WitnessReports: Send + Sync {
    /// The log of `log_owner` (a participant ID, or the log's origin when it names no
    /// participant) signed two checkpoints that cannot both be true. `evidence` is
    /// already durable when this is called.
    fn conflict<'a>(&'a self, log_owner: &'a str, evidence: &'a Evidence) -> BoxFuture<'a, ()>;
}

/// The witness's storage: its state and the evidence it holds.
pub struct WitnessStore {
    storage: Arc<dyn Storage>,
    /// Told of every conflict, once its evidence is kept.
    reports: Arc<dyn WitnessReports>,
    /// One witness decision at a time.
    lock: tokio::sync::Mutex<()>,
}

impl WitnessStore {
    pub fn new(storage: Arc<dyn Storage>, reports: Arc<dyn WitnessReports>) -> Self {
        Self {
            storage,
            reports,
            lock: tokio::sync::Mutex::new(()),
        }
    }

    /// The latest checkpoint cosigned per origin.
    pub fn state(&self) -> Result<WitnessState, WitnessingError> {
        match self.storage.get(TREE, STATE_KEY)? {
            None => Ok(WitnessState::default()),
            Some(bytes) => {
                serde_json::from_slice(&bytes).map_err(|e| WitnessingError::Damaged(e.to_string()))
            }
        }
    }

    /// Every piece of conflict evidence kept, oldest first.
    pub fn evidence(&self) -> Result<Vec<Evidence>, WitnessingError> {
        self.storage
            .scan_prefix(TREE, EVIDENCE_PREFIX)?
            .into_iter()
            .map(|(_, v)| {
                serde_json::from_slice(&v).map_err(|e| WitnessingError::Damaged(e.to_string()))
            })
            .collect()
    }

    /// Decides on cosigning the offered checkpoint of the log checked by `log_key`; see
    /// [`Witness::witness`]. The new state is durable before the line is returned;
    /// conflict evidence is durable before the error is, and reported.
    pub async fn cosign(
        &self,
        name: &str,
        key_pair: &(impl NoteSigner + ?Sized),
        log_key: VerifierKey,
        offer: CheckpointOffer<'_>,
        now: u64,
    ) -> Result<CosignatureLine, WitnessingError> {
        let result = self
            .cosign_locked(name, key_pair, log_key, offer, now)
            .await;
        self.report_conflict(result).await
    }

    async fn cosign_locked(
        &self,
        name: &str,
        key_pair: &(impl NoteSigner + ?Sized),
        log_key: VerifierKey,
        offer: CheckpointOffer<'_>,
        now: u64,
    ) -> Result<CosignatureLine, WitnessingError> {
        let _one_at_a_time = self.lock.lock().await;
        let origin = log_key.name().to_owned();
        let mut witness = Witness::new(name, key_pair, [(origin, vec![log_key])], self.state()?)?;
        match witness.witness(offer.note, offer.old_size, offer.proof, now) {
            Ok(line) => {
                // Plain data always serializes.
                let bytes = serde_json::to_vec(witness.state()).expect("state serializes");
                self.storage.put_durable(TREE, STATE_KEY, &bytes).await?;
                Ok(line)
            }
            Err(WitnessError::Conflict(evidence)) => {
                self.keep_evidence(&evidence, now).await?;
                Err(WitnessError::Conflict(evidence).into())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Compares a checkpoint someone shows this witness (e.g. one another witness
    /// cosigned) with the one it cosigned for the same log. Same size, another root:
    /// the evidence is kept, reported, and [`WitnessError::Conflict`] returned.
    /// Otherwise returns the size this witness last cosigned (0 if none); nothing is
    /// changed.
    pub async fn report(
        &self,
        log_key: VerifierKey,
        checkpoint_note: &[u8],
        now: u64,
    ) -> Result<u64, WitnessingError> {
        let result = self.report_locked(log_key, checkpoint_note, now).await;
        self.report_conflict(result).await
    }

    async fn report_locked(
        &self,
        log_key: VerifierKey,
        checkpoint_note: &[u8],
        now: u64,
    ) -> Result<u64, WitnessingError> {
        let _one_at_a_time = self.lock.lock().await;
        let (checkpoint, signed) =
            note::open_checkpoint(checkpoint_note, std::slice::from_ref(&log_key))
                .map_err(WitnessError::Note)?;
        let state = self.state()?;
        let Some(known) = state.logs.get(&checkpoint.origin) else {
            return Ok(0);
        };
        if known.size == checkpoint.size && known.root != checkpoint.root {
            let evidence = Box::new(Evidence {
                origin: checkpoint.origin.clone(),
                kind: ConflictKind::SameSizeDifferentRoot,
                cosigned_note: known.note.clone(),
                offered_note: signed.to_string(),
                consistency_proof: Vec::new(),
            });
            self.keep_evidence(&evidence, now).await?;
            return Err(WitnessError::Conflict(evidence).into());
        }
        Ok(known.size)
    }

    /// Tells the sink of a conflict in `result`, outside the lock: reporting writes to
    /// the node's own audit log, which other witness decisions need not wait for.
    async fn report_conflict<T>(
        &self,
        result: Result<T, WitnessingError>,
    ) -> Result<T, WitnessingError> {
        if let Err(WitnessingError::Witness(WitnessError::Conflict(evidence))) = &result {
            let owner = owner_of(&evidence.origin);
            let owner = owner
                .as_ref()
                .map_or(evidence.origin.as_str(), |p| p.as_str());
            self.reports.conflict(owner, evidence).await;
        }
        result
    }

    async fn keep_evidence(&self, evidence: &Evidence, now: u64) -> Result<(), StorageError> {
        let mut key = EVIDENCE_PREFIX.to_vec();
        key.extend_from_slice(&now.to_be_bytes());
        // Several conflicts in one second stay apart.
        key.extend_from_slice(&self.storage.scan_prefix(TREE, &key)?.len().to_be_bytes());
        // Plain data always serializes.
        let bytes = serde_json::to_vec(evidence).expect("evidence serializes");
        self.storage.put_durable(TREE, &key, &bytes).await
    }
}
