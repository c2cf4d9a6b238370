//! This node's checkpoints and their witnessing: sign a checkpoint (on a timer when the
//! log grew, or on demand), ask each configured witness to cosign it with a consistency
//! proof from the size that witness last cosigned, check every cosignature against the
//! witness's authority-signed credential, and store the note with the cosignatures.
//!
//! A checkpoint counts as witnessed when it carries `[audit] quorum` cosignatures.
//!
//! The log, its checkpoints and the witness rules are the audit layer's; this is the
//! part that talks to other members, so it stands above the trust list and the peer
//! connections.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::audit::log::{AuditError, AuditLog, origin_for, witness_key_of};
use crate::audit::merkle::Hash;
use crate::audit::note::{self, Checkpoint, SignedNote};
use crate::base::shutdown::Shutdown;
use crate::config::AuditSection;
use crate::identity::membership::open_credential;
use crate::identity::{Envelope, Membership, NodeIdentity, PublicKey};
use crate::outbound::Peers;
use crate::telemetry::Metrics;
use liutong_proto::v1::CosignRequest;
use liutong_proto::v1::witness_client::WitnessClient;

/// The trailer in which a witness states the size it last cosigned, when a request
/// proved from another size.
pub const COSIGNED_SIZE_TRAILER: &str = "liutong-cosigned-size";
/// How long one witness may take to answer.
const WITNESS_TIMEOUT: Duration = Duration::from_secs(10);

/// The latest checkpoint and how well it is witnessed.
#[derive(Clone, Debug)]
pub struct CheckpointStatus {
    /// The signed note with its cosignature lines.
    pub note: String,
    pub checkpoint: Checkpoint,
    /// Credentials of the witnesses whose cosignatures the note carries.
    pub witnesses: Vec<Envelope>,
    pub quorum: u32,
}

impl CheckpointStatus {
    pub fn cosignatures(&self) -> u32 {
        self.witnesses.len() as u32
    }

    pub fn witnessed(&self) -> bool {
        self.cosignatures() >= self.quorum
    }
}

/// The log side of witnessing.
pub struct Cosigning {
    audit: AuditLog,
    identity: Arc<NodeIdentity>,
    peers: Arc<Peers>,
    metrics: Metrics,
    /// `[audit]`: the witnesses, the quorum and the checkpoint interval.
    config: AuditSection,
    /// The authority's key, which signs the witnesses' credentials.
    authority_key: PublicKey,
    /// Per witness address, the size it last cosigned as far as this node knows. Held
    /// for a whole round, which also serializes checkpoints.
    known: tokio::sync::Mutex<HashMap<String, u64>>,
}

impl Cosigning {
    pub fn new(
        audit: AuditLog,
        identity: Arc<NodeIdentity>,
        peers: Arc<Peers>,
        metrics: Metrics,
        config: AuditSection,
        authority_key: PublicKey,
    ) -> Self {
        Self {
            audit,
            identity,
            peers,
            metrics,
            config,
            authority_key,
            known: tokio::sync::Mutex::default(),
        }
    }

    /// The origin of this node's audit log, e.g. `liutong.<participant>/audit`.
    pub fn origin(&self) -> String {
        origin_for(self.identity.participant_id())
    }

    /// The log this component signs checkpoints of.
    pub fn log(&self) -> &AuditLog {
        &self.audit
    }

    /// Signs a new checkpoint if `sign_new` or the log grew since the latest one, then
    /// asks the witnesses that have not cosigned it yet. Witness failures are logged,
    /// not returned: the checkpoint stands, and is reported as not witnessed.
    pub async fn checkpoint(&self, sign_new: bool) -> Result<CheckpointStatus, AuditError> {
        let mut known = self.known.lock().await;
        let latest = self.latest_status()?;
        let mut status = match latest {
            Some(s) if !sign_new && s.checkpoint.size == self.audit.size() => s,
            _ => {
                let text = self
                    .audit
                    .checkpoint(&self.origin(), &self.identity.signing_key)
                    .await?;
                self.status_of(text, Vec::new())?
            }
        };
        if status.witnesses.len() >= self.config.witnesses.len() {
            if status.witnessed() {
                self.metrics.witnessed(status.checkpoint.size);
            }
            return Ok(status);
        }
        let mut note = SignedNote::parse(status.note.as_bytes())?;
        let mut added = false;
        for address in &self.config.witnesses {
            let last = known.get(address).copied().unwrap_or(0);
            match self.ask_witness(address, &status, last).await {
                Ok((line, credential, membership)) => {
                    known.insert(address.clone(), status.checkpoint.size);
                    if note.signatures().iter().any(|l| l.name == line.name) {
                        continue;
                    }
                    note.add_signature(line)?;
                    status.witnesses.push(credential);
                    added = true;
                    tracing::debug!(witness = %membership.participant_id, size = status.checkpoint.size, "checkpoint cosigned");
                }
                Err(reason) => {
                    tracing::warn!(witness = %address, size = status.checkpoint.size, %reason, "the witness did not cosign")
                }
            }
        }
        if added {
            status.note = note.to_string();
            self.audit
                .store_cosigned(&status.note, &status.witnesses)
                .await?;
        }
        if status.witnessed() {
            self.metrics.witnessed(status.checkpoint.size);
        } else {
            tracing::warn!(
                size = status.checkpoint.size,
                cosignatures = status.cosignatures(),
                quorum = status.quorum,
                "checkpoint not witnessed: fewer cosignatures than the quorum"
            );
        }
        Ok(status)
    }

    /// The latest checkpoint as stored, if the node signed one.
    pub fn latest_status(&self) -> Result<Option<CheckpointStatus>, AuditError> {
        match self.audit.latest_checkpoint()? {
            None => Ok(None),
            Some(text) => {
                let witnesses = self.audit.checkpoint_witnesses()?;
                self.status_of(text, witnesses).map(Some)
            }
        }
    }

    fn status_of(
        &self,
        note_text: String,
        witnesses: Vec<Envelope>,
    ) -> Result<CheckpointStatus, AuditError> {
        let checkpoint = Checkpoint::parse(SignedNote::parse(note_text.as_bytes())?.text())?;
        Ok(CheckpointStatus {
            note: note_text,
            checkpoint,
            witnesses,
            quorum: self.config.quorum,
        })
    }

    /// One witness round trip; retries once from the size the witness says it cosigned.
    async fn ask_witness(
        &self,
        address: &str,
        status: &CheckpointStatus,
        mut old_size: u64,
    ) -> Result<(note::SignatureLine, Envelope, Membership), String> {
        let size = status.checkpoint.size;
        let channel = self
            .peers
            .connect_peer(address)
            .await
            .map_err(|e| e.to_string())?;
        let mut witness = WitnessClient::new(channel);
        // Only the log's own signature goes to the witness.
        let plain = note::sign_checkpoint(
            &status.checkpoint,
            &self.origin(),
            &self.identity.signing_key,
        )
        .map_err(|e| e.to_string())?
        .to_string();
        for attempt in 0..2 {
            if old_size > size {
                return Err(format!(
                    "the witness cosigned size {old_size}, beyond this log's checkpoint of size {size}"
                ));
            }
            let proof: Vec<Hash> = if old_size == 0 || old_size == size {
                Vec::new()
            } else {
                self.audit
                    .consistency_proof(old_size, size)
                    .map_err(|e| e.to_string())?
            };
            let request = CosignRequest {
                note: plain.clone(),
                old_size,
                proof: proof.iter().map(|h| h.to_vec()).collect(),
            };
            let answer = tokio::time::timeout(WITNESS_TIMEOUT, witness.cosign(request)).await;
            let answer = match answer {
                Err(_) => return Err("no answer in time".into()),
                Ok(Ok(a)) => a.into_inner(),
                Ok(Err(s)) => {
                    let cosigned = s
                        .metadata()
                        .get(COSIGNED_SIZE_TRAILER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u64>().ok());
                    match cosigned {
                        Some(c) if attempt == 0 && s.code() == tonic::Code::FailedPrecondition => {
                            old_size = c;
                            continue;
                        }
                        _ => return Err(format!("{:?}: {}", s.code(), s.message())),
                    }
                }
            };
            let credential: Envelope = answer
                .credential
                .ok_or("the answer carried no credential")?
                .into();
            let membership = open_credential(&credential, &self.authority_key)
                .map_err(|e| format!("the witness's credential: {e}"))?;
            let key = witness_key_of(&membership).map_err(|e| e.to_string())?;
            let line = parse_line(&plain, &answer.cosignature)?;
            note::verify_cosignature(&status.checkpoint.to_text(), &line, &key)
                .map_err(|e| format!("the cosignature does not verify: {e}"))?;
            return Ok((line, credential, membership));
        }
        Err("the witness kept naming another old size".into())
    }

    /// Signs checkpoints every `[audit] checkpoint_interval` when the log grew, and retries
    /// witnessing while a checkpoint has fewer cosignatures than witnesses. The first round
    /// runs at once.
    pub async fn run(self: Arc<Self>, mut shutdown: Shutdown) {
        let every = self.config.checkpoint_interval;
        let mut first = true;
        loop {
            if !first && !shutdown.sleep(every).await {
                return;
            }
            first = false;
            let grown = match self.latest_status() {
                Ok(Some(s)) => s.checkpoint.size != self.audit.size(),
                Ok(None) => true,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the latest checkpoint");
                    continue;
                }
            };
            let unwitnessed = !self.config.witnesses.is_empty();
            if (grown || unwitnessed)
                && let Err(e) = self.checkpoint(grown).await
            {
                tracing::error!(error = %e, "cannot sign a checkpoint");
            }
        }
    }
}

/// Parses one signature line by appending it to a note.
fn parse_line(note_text: &str, line: &str) -> Result<note::SignatureLine, String> {
    let line = if line.ends_with('\n') {
        line.to_owned()
    } else {
        format!("{line}\n")
    };
    let parsed = SignedNote::parse(format!("{note_text}{line}").as_bytes())
        .map_err(|e| format!("the cosignature line is malformed: {e}"))?;
    parsed
        .signatures()
        .last()
        .cloned()
        .ok_or_else(|| "no cosignature line".to_owned())
}
