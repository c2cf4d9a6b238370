//! This node's checkpoints and their witnessing: sign a checkpoint (on a timer when the
//! log grew, or on demand), ask each configured witness to cosign it with a consistency
//! proof from the size that witness last cosigned, check every cosignature against the
//! witness's authority-signed credential, and store the note with the cosignatures.
//!
//! A checkpoint counts as witnessed when it carries `[audit] quorum` cosignatures.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use liutong_proto::v1::CosignRequest;
use liutong_proto::v1::witness_client::WitnessClient;
use tokio::sync::watch;

use super::log::{AuditError, witness_key_of};
use super::merkle::Hash;
use super::note::{self, Checkpoint, SignedNote};
use crate::identity::membership::open_credential;
use crate::identity::{Envelope, Membership};
use crate::runtime::NodeContext;

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
#[derive(Default)]
pub struct Cosigning {
    /// Per witness address, the size it last cosigned as far as this node knows. Held
    /// for a whole round, which also serializes checkpoints.
    known: tokio::sync::Mutex<HashMap<String, u64>>,
}

impl Cosigning {
    /// Signs a new checkpoint if `sign_new` or the log grew since the latest one, then
    /// asks the witnesses that have not cosigned it yet. Witness failures are logged,
    /// not returned: the checkpoint stands, and is reported as not witnessed.
    pub async fn checkpoint(
        &self,
        ctx: &NodeContext,
        sign_new: bool,
    ) -> Result<CheckpointStatus, AuditError> {
        let mut known = self.known.lock().await;
        let latest = latest_status(ctx)?;
        let mut status = match latest {
            Some(s) if !sign_new && s.checkpoint.size == ctx.audit.size() => s,
            _ => {
                let text = ctx
                    .audit
                    .checkpoint(&ctx.audit_origin(), &ctx.signing_key)
                    .await?;
                status_of(ctx, text, Vec::new())?
            }
        };
        if status.witnesses.len() >= ctx.config.audit.witnesses.len() {
            if status.witnessed() {
                ctx.telemetry.metrics.witnessed(status.checkpoint.size);
            }
            return Ok(status);
        }
        let mut note = SignedNote::parse(status.note.as_bytes())?;
        let mut added = false;
        for address in &ctx.config.audit.witnesses {
            let last = known.get(address).copied().unwrap_or(0);
            match ask_witness(ctx, address, &status, last).await {
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
            ctx.audit
                .store_cosigned(&status.note, &status.witnesses)
                .await?;
        }
        if status.witnessed() {
            ctx.telemetry.metrics.witnessed(status.checkpoint.size);
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
}

/// The latest checkpoint as stored, if the node signed one.
pub fn latest_status(ctx: &NodeContext) -> Result<Option<CheckpointStatus>, AuditError> {
    match ctx.audit.latest_checkpoint()? {
        None => Ok(None),
        Some(text) => {
            let witnesses = ctx.audit.checkpoint_witnesses()?;
            status_of(ctx, text, witnesses).map(Some)
        }
    }
}

fn status_of(
    ctx: &NodeContext,
    note_text: String,
    witnesses: Vec<Envelope>,
) -> Result<CheckpointStatus, AuditError> {
    let checkpoint = Checkpoint::parse(SignedNote::parse(note_text.as_bytes())?.text())?;
    Ok(CheckpointStatus {
        note: note_text,
        checkpoint,
        witnesses,
        quorum: ctx.config.audit.quorum,
    })
}

/// One witness round trip; retries once from the size the witness says it cosigned.
async fn ask_witness(
    ctx: &NodeContext,
    address: &str,
    status: &CheckpointStatus,
    mut old_size: u64,
) -> Result<(note::SignatureLine, Envelope, Membership), String> {
    let size = status.checkpoint.size;
    let channel = ctx.connect_peer(address).await.map_err(|e| e.to_string())?;
    let mut witness = WitnessClient::new(channel);
    // Only the log's own signature goes to the witness.
    let plain = note::sign_checkpoint(
        &status.checkpoint,
        &ctx.audit_origin(),
        ctx.signing_key.key_pair(),
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
            ctx.audit
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
        let membership = open_credential(&credential, &ctx.config.authority.public_key)
            .map_err(|e| format!("the witness's credential: {e}"))?;
        let key = witness_key_of(&membership).map_err(|e| e.to_string())?;
        let line = parse_line(&plain, &answer.cosignature)?;
        note::verify_cosignature(&status.checkpoint.to_text(), &line, &key)
            .map_err(|e| format!("the cosignature does not verify: {e}"))?;
        return Ok((line, credential, membership));
    }
    Err("the witness kept naming another old size".into())
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

/// Signs checkpoints every `[audit] checkpoint_interval` when the log grew, and retries
/// witnessing while a checkpoint has fewer cosignatures than witnesses. The first round
/// runs at once.
pub async fn run_timer(ctx: Arc<NodeContext>, mut stop: watch::Receiver<bool>) {
    let every = ctx.config.audit.checkpoint_interval;
    let mut first = true;
    loop {
        if !first {
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
        first = false;
        let grown = match latest_status(&ctx) {
            Ok(Some(s)) => s.checkpoint.size != ctx.audit.size(),
            Ok(None) => true,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the latest checkpoint");
                continue;
            }
        };
        let unwitnessed = !ctx.config.audit.witnesses.is_empty();
        if (grown || unwitnessed)
            && let Err(e) = ctx.cosigning.checkpoint(&ctx, grown).await
        {
            tracing::error!(error = %e, "cannot sign a checkpoint");
        }
    }
}
