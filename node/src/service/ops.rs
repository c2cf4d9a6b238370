//! The operations calls of the local API: the node's status for `liutong status`, and
//! backups streamed to `liutong backup`.

use std::collections::HashMap;
use std::io::Read as _;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use std::sync::Arc;

use crate::audit::log::{Event, EventKind};
use crate::audit::witnessing::WitnessStore;
use crate::backup::{self, GatedStorage};
use crate::base::clock::now;
use crate::config::NodeConfig;
use crate::contract::{Contracts, NegotiationStatus, Role};
use crate::cosigning::Cosigning;
use crate::identity::NodeIdentity;
use crate::identity::membership::open_credential;
use crate::local::LocalRole;
use crate::storage::{Storage, StorageError};
use crate::trust::TrustStore;
use liutong_proto::v1::{BackupChunk, PeerStatus, StatusResponse, WitnessStatus};

/// Size of the pieces a backup is streamed in.
const CHUNK: usize = 256 * 1024;

/// The node as its operator sees it: its status and its backups.
pub struct Ops {
    pub config: NodeConfig,
    pub identity: Arc<NodeIdentity>,
    pub trust: Arc<TrustStore>,
    pub storage: Arc<GatedStorage>,
    pub contracts: Arc<Contracts>,
    pub cosigning: Arc<Cosigning>,
    pub witness: Arc<WitnessStore>,
    /// When the node started, Unix seconds.
    pub started_at: i64,
}

impl Ops {
    /// Fills the operations fields of `Status` (health, peers, logs, approvals).
    pub fn status(&self, mut base: StatusResponse) -> Result<StatusResponse, Status> {
        let now = now();
        let trust = self.trust.status();
        let negotiations = self
            .contracts
            .list()
            .map_err(|e| Status::internal(e.to_string()))?;
        let mut per_peer: HashMap<String, u32> = HashMap::new();
        for n in &negotiations {
            *per_peer.entry(n.peer.to_string()).or_default() += 1;
        }
        let pending_approvals = negotiations
            .iter()
            .filter(|n| n.role == Role::Provider && n.state == NegotiationStatus::Requested)
            .count() as u32;
        let checkpoint = self
            .cosigning
            .latest_status()
            .map_err(|e| Status::internal(e.to_string()))?;
        // Participants whose cosignature the latest checkpoint carries (their credentials
        // were checked when the cosignatures were; opened the same way here).
        let witness_participants: Vec<String> = checkpoint
            .iter()
            .flat_map(|c| c.witnesses.iter())
            .filter_map(|e| open_credential(e, &self.config.authority.public_key).ok())
            .map(|m| m.participant_id.to_string())
            .collect();
        let peers = self
            .trust
            .members()
            .into_iter()
            .filter(|m| m.participant_id != *self.identity.participant_id())
            .map(|m| {
                let id = m.participant_id.to_string();
                PeerStatus {
                    negotiations: per_peer.get(&id).copied().unwrap_or(0),
                    witness: witness_participants.contains(&id),
                    participant_id: id,
                    name: m.name,
                }
            })
            .collect();
        let audit_size = self.cosigning.log().size();
        let witness_state = self.witness.state().ok();
        let conflicts = self.witness.evidence().map(|e| e.len()).unwrap_or(0);
        let (checkpoint_size, cosignatures, witnessed) = match &checkpoint {
            Some(c) => (c.checkpoint.size, c.cosignatures(), c.witnessed()),
            None => (0, 0, self.config.audit.quorum == 0),
        };
        let mut problems = Vec::new();
        if trust.sequence == 0 || trust.expires_at <= now {
            problems.push("no valid trust list (peers are refused)".to_owned());
        }
        if !witnessed {
            problems.push(format!(
                "latest checkpoint has {cosignatures} of {} cosignatures",
                self.config.audit.quorum
            ));
        }
        if conflicts > 0 {
            problems.push(format!("{conflicts} witnessed conflicts kept as evidence"));
        }
        let storage_failure = self.storage.failures().borrow().clone();
        base.health = if let Some(reason) = storage_failure {
            format!("NOT_SERVING: {}", StorageError::Failed(reason))
        } else if problems.is_empty() {
            "SERVING".into()
        } else {
            format!("DEGRADED: {}", problems.join("; "))
        };
        base.peers = peers;
        base.trust_list_age_seconds = if trust.sequence == 0 {
            -1
        } else {
            (now - trust.issued_at).max(0)
        };
        base.audit_log_size = audit_size;
        base.witness = Some(WitnessStatus {
            checkpoint_size,
            cosignatures,
            quorum: self.config.audit.quorum,
            witnessed,
            lag: audit_size.saturating_sub(checkpoint_size),
            logs_witnessed: witness_state.map(|s| s.logs.len() as u32).unwrap_or(0),
            conflicts: conflicts as u32,
        });
        base.pending_approvals = pending_approvals;
        base.database_bytes = self.storage.database_bytes().unwrap_or(0);
        base.uptime_seconds = (now - self.started_at).max(0);
        base.previous_signing_keys =
            crate::identity::membership::previous_keys(&self.identity.previous_credentials)
                .iter()
                .map(ToString::to_string)
                .collect();
        Ok(base)
    }

    /// Takes a backup into a temporary file in the data directory (writers held back while
    /// the database is copied), logs it, then streams the file; the file is removed when
    /// the stream ends.
    pub async fn backup(
        self: &Arc<Self>,
        role: LocalRole,
    ) -> Result<ReceiverStream<Result<BackupChunk, Status>>, Status> {
        role.require(&[LocalRole::Admin], "taking a backup")?;
        let node_files =
            backup::node_files(&self.config).map_err(|e| Status::internal(e.to_string()))?;
        let ctx = self.clone();
        let (file, header, summary) = tokio::task::spawn_blocking(move || {
            let file = tempfile::Builder::new()
                .prefix(".backup-")
                .suffix(".tmp")
                .tempfile_in(ctx.config.data_dir())
                .map_err(|e| {
                    format!("cannot create a temporary file in the data directory: {e}")
                })?;
            // The header's audit log size is read from the database with writers held, so
            // it is the size the copy holds, a group still flushing included.
            let (header, summary) = ctx
                .storage
                .write_backup(
                    file.as_file(),
                    ctx.identity.participant_id(),
                    &node_files,
                    &ctx.identity.signing_key,
                )
                .map_err(|e| e.to_string())?;
            Ok::<_, String>((file, header, summary))
        })
        .await
        .map_err(|e| Status::internal(format!("the backup task failed: {e}")))?
        .map_err(Status::internal)?;
        self.cosigning
            .log()
            .append(&Event::new(
                EventKind::BackupTaken,
                now(),
                format!(
                    "backup taken: {} database entries in {} trees, {} files (keys included), \
                 audit log of {} entries",
                    summary.entries, summary.trees, summary.files, header.audit_log_size
                ),
            ))
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        let (tx, rx) = mpsc::channel(4);
        tokio::task::spawn_blocking(move || {
            let mut reader = match file.reopen() {
                Ok(f) => f,
                Err(e) => {
                    let _ = tx.blocking_send(Err(Status::internal(format!(
                        "cannot read the backup back: {e}"
                    ))));
                    return;
                }
            };
            loop {
                let mut buf = vec![0u8; CHUNK];
                match reader.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        buf.truncate(n);
                        if tx.blocking_send(Ok(BackupChunk { data: buf })).is_err() {
                            break; // the client went away
                        }
                    }
                    Err(e) => {
                        let _ = tx.blocking_send(Err(Status::internal(format!(
                            "cannot read the backup back: {e}"
                        ))));
                        break;
                    }
                }
            }
            drop(file); // removes the temporary file
        });
        Ok(ReceiverStream::new(rx))
    }
}
