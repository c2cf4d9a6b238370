//! `liutong.v1.Audit` (peer API and local API) and `liutong.v1.Witness` (peer API).
//!
//! Who may call what:
//! - peers: GetCheckpoint and GetVerifierKey for any member; the rest needs the member
//!   role `auditor`; NewCheckpoint is local only;
//! - local clients: roles `auditor` and `admin`; NewCheckpoint needs `admin`.

use std::sync::Arc;

use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};

use crate::audit::log::{AuditLog, log_key_of, origin_for, witness_key_of, witness_name_for};
use crate::audit::merkle::{self, Hash};
use crate::audit::search::{self, SearchFilter};
use crate::audit::witness::WitnessError;
use crate::audit::witnessing::{CheckpointOffer, WitnessStore, WitnessingError};
use crate::base::bounded;
use crate::base::clock::now;
use crate::cosigning::{COSIGNED_SIZE_TRAILER, CheckpointStatus, Cosigning};
use crate::identity::{MemberRole, Membership, NodeIdentity, ParticipantId};
use crate::local::LocalRole;
use crate::trust::TrustStore;
use liutong_proto::v1::audit_server::Audit;
use liutong_proto::v1::witness_server::Witness;
use liutong_proto::v1::{
    AuditEntry, CheckpointResponse, ConsistencyProof, CosignRequest, CosignResponse,
    GetCheckpointRequest, GetEntriesRequest, GetEntriesResponse, GetVerifierKeyRequest,
    InclusionProof, NewCheckpointRequest, ProveConsistencyRequest, ProveInclusionRequest,
    ReportCheckpointRequest, ReportCheckpointResponse, SearchRequest, SearchResponse,
    VerifierKeyResponse,
};

use super::caller::{PeerCaller, require_role};
use super::errors::into_status;

/// Most entries one GetEntries answer carries.
const MAX_ENTRIES: usize = 1000;
/// About the most entry bytes one answer carries (well under the message limit).
const MAX_ENTRY_BYTES: usize = 2 * 1024 * 1024;

/// The audit log's reads, proofs and checkpoints, on both APIs.
pub struct AuditService {
    pub cosigning: Arc<Cosigning>,
    pub identity: Arc<NodeIdentity>,
}

/// This node as a witness of other members' logs (peer API).
pub struct WitnessService {
    pub witness: Arc<WitnessStore>,
    pub identity: Arc<NodeIdentity>,
    pub trust: Arc<TrustStore>,
}

/// Who is calling, on either API.
enum Caller<'a> {
    Peer(&'a Membership),
    Local(LocalRole),
}

fn caller<T>(request: &Request<T>) -> Result<Caller<'_>, Status> {
    if let Some(p) = request.extensions().get::<PeerCaller>() {
        return Ok(Caller::Peer(&p.0));
    }
    if let Some(r) = request.extensions().get::<LocalRole>() {
        return Ok(Caller::Local(*r));
    }
    Err(Status::unauthenticated("the caller was not authenticated"))
}

/// Any member or local auditor/admin: checkpoints and keys.
fn require_any(request: &Request<impl Sized>, what: &str) -> Result<(), Status> {
    match caller(request)? {
        Caller::Peer(_) => Ok(()),
        Caller::Local(role) => role.require(&[LocalRole::Auditor, LocalRole::Admin], what),
    }
}

/// Members with the auditor role, or local auditor/admin.
fn require_auditor(request: &Request<impl Sized>, what: &str) -> Result<(), Status> {
    match caller(request)? {
        Caller::Peer(m) => require_role(m, MemberRole::Auditor, what),
        Caller::Local(role) => role.require(&[LocalRole::Auditor, LocalRole::Admin], what),
    }
}

fn checkpoint_response(cosigning: &Cosigning, s: CheckpointStatus) -> CheckpointResponse {
    CheckpointResponse {
        cosignatures: s.cosignatures(),
        quorum: s.quorum,
        witnessed: s.witnessed(),
        note: s.note,
        size: s.checkpoint.size,
        root: s.checkpoint.root.to_vec(),
        witness_credentials: s.witnesses.into_iter().map(Into::into).collect(),
        log_size: cosigning.log().size(),
    }
}

/// The latest checkpoint, signing one first if the log has grown past it (so that
/// proofs can lead to a signed root).
async fn covering_checkpoint(cosigning: &Cosigning) -> Result<CheckpointStatus, Status> {
    match cosigning.latest_status().map_err(into_status)? {
        Some(s) if s.checkpoint.size == cosigning.log().size() => Ok(s),
        _ => cosigning.checkpoint(true).await.map_err(into_status),
    }
}

fn inclusion(log: &AuditLog, index: u64, size: u64) -> Result<InclusionProof, Status> {
    let data = log
        .entry(index)
        .map_err(into_status)?
        .ok_or_else(|| Status::data_loss(format!("entry {index} is missing from this log")))?;
    let proof = log.inclusion_proof(index, size).map_err(into_status)?;
    let root = log.root_at(size).map_err(into_status)?;
    Ok(InclusionProof {
        leaf_index: index,
        tree_size: size,
        root: root.to_vec(),
        leaf_hash: merkle::leaf_hash(&data).to_vec(),
        proof: proof.iter().map(|h| h.to_vec()).collect(),
        data,
    })
}

#[tonic::async_trait]
impl Audit for AuditService {
    async fn get_checkpoint(
        &self,
        request: Request<GetCheckpointRequest>,
    ) -> Result<Response<CheckpointResponse>, Status> {
        require_any(&request, "reading the checkpoint")?;
        let status = self
            .cosigning
            .latest_status()
            .map_err(into_status)?
            .ok_or_else(|| Status::not_found("this node has not signed a checkpoint yet"))?;
        Ok(Response::new(checkpoint_response(&self.cosigning, status)))
    }

    async fn get_verifier_key(
        &self,
        request: Request<GetVerifierKeyRequest>,
    ) -> Result<Response<VerifierKeyResponse>, Status> {
        require_any(&request, "reading the verifier key")?;
        let c = &self.identity;
        let log_key = log_key_of(&c.membership).map_err(into_status)?;
        let witness_key = witness_key_of(&c.membership).map_err(into_status)?;
        Ok(Response::new(VerifierKeyResponse {
            log_key: log_key.to_string(),
            witness_key: witness_key.to_string(),
            origin: self.cosigning.origin(),
            credential: Some(c.credential.clone().into()),
            previous_credentials: c
                .previous_credentials
                .iter()
                .cloned()
                .map(Into::into)
                .collect(),
        }))
    }

    async fn get_entries(
        &self,
        request: Request<GetEntriesRequest>,
    ) -> Result<Response<GetEntriesResponse>, Status> {
        require_auditor(&request, "reading audit entries")?;
        let r = request.into_inner();
        if r.to < r.from {
            return Err(Status::invalid_argument(format!(
                "to: {} is before from: {}",
                r.to, r.from
            )));
        }
        let log = self.cosigning.log();
        let size = log.size();
        if r.from >= size {
            return Err(Status::out_of_range(format!(
                "from: entry {} does not exist; the log holds {size} entries",
                r.from
            )));
        }
        let entries = log
            .entries(r.from, r.to, MAX_ENTRIES, MAX_ENTRY_BYTES)
            .map_err(into_status)?
            .into_iter()
            .map(|(index, data)| AuditEntry { index, data })
            .collect();
        Ok(Response::new(GetEntriesResponse {
            entries,
            log_size: size,
        }))
    }

    async fn prove_inclusion(
        &self,
        request: Request<ProveInclusionRequest>,
    ) -> Result<Response<InclusionProof>, Status> {
        require_auditor(&request, "proving inclusion")?;
        let r = request.into_inner();
        let size = if r.size == 0 {
            covering_checkpoint(&self.cosigning).await?.checkpoint.size
        } else {
            r.size
        };
        if r.index >= size {
            return Err(Status::out_of_range(format!(
                "index: entry {} is not in a tree of {size} entries",
                r.index
            )));
        }
        Ok(Response::new(inclusion(
            self.cosigning.log(),
            r.index,
            size,
        )?))
    }

    async fn prove_consistency(
        &self,
        request: Request<ProveConsistencyRequest>,
    ) -> Result<Response<ConsistencyProof>, Status> {
        require_auditor(&request, "proving consistency")?;
        let r = request.into_inner();
        let size2 = if r.size2 == 0 {
            covering_checkpoint(&self.cosigning).await?.checkpoint.size
        } else {
            r.size2
        };
        if r.size1 > size2 {
            return Err(Status::invalid_argument(format!(
                "size1: {} is larger than size2: {size2}",
                r.size1
            )));
        }
        let log = self.cosigning.log();
        let proof: Vec<Hash> = if r.size1 == 0 {
            Vec::new()
        } else {
            log.consistency_proof(r.size1, size2).map_err(into_status)?
        };
        Ok(Response::new(ConsistencyProof {
            size1: r.size1,
            size2,
            root1: log.root_at(r.size1).map_err(into_status)?.to_vec(),
            root2: log.root_at(size2).map_err(into_status)?.to_vec(),
            proof: proof.iter().map(|h| h.to_vec()).collect(),
        }))
    }

    async fn search(
        &self,
        request: Request<SearchRequest>,
    ) -> Result<Response<SearchResponse>, Status> {
        require_auditor(&request, "searching the audit log")?;
        let r = request.into_inner();
        bounded::optional_id("product", r.product.trim()).map_err(into_status)?;
        bounded::optional_id("agreement", r.agreement.trim()).map_err(into_status)?;
        bounded::optional_id("participant", r.participant.trim()).map_err(into_status)?;
        let filter = SearchFilter::from_request(&r).map_err(Status::invalid_argument)?;
        let checkpoint = covering_checkpoint(&self.cosigning).await?;
        let size = checkpoint.checkpoint.size;
        let found =
            search::scan(self.cosigning.log(), &filter, r.from, size).map_err(into_status)?;
        let matches = found
            .indices
            .iter()
            .map(|&i| inclusion(self.cosigning.log(), i, size))
            .collect::<Result<_, _>>()?;
        Ok(Response::new(SearchResponse {
            checkpoint: Some(checkpoint_response(&self.cosigning, checkpoint)),
            matches,
            next_from: found.next_from.unwrap_or(0),
        }))
    }

    async fn new_checkpoint(
        &self,
        request: Request<NewCheckpointRequest>,
    ) -> Result<Response<CheckpointResponse>, Status> {
        match caller(&request)? {
            Caller::Peer(_) => {
                return Err(Status::permission_denied(
                    "signing a checkpoint is only possible on the node's local API, role admin",
                ));
            }
            Caller::Local(role) => role.require(&[LocalRole::Admin], "signing a checkpoint")?,
        }
        let status = self.cosigning.checkpoint(true).await.map_err(into_status)?;
        Ok(Response::new(checkpoint_response(&self.cosigning, status)))
    }
}

fn proof_hashes(proof: &[Vec<u8>]) -> Result<Vec<Hash>, Status> {
    proof
        .iter()
        .enumerate()
        .map(|(i, h)| {
            h.as_slice().try_into().map_err(|_| {
                Status::invalid_argument(format!(
                    "proof[{i}]: a hash is 32 bytes, this one has {}",
                    h.len()
                ))
            })
        })
        .collect()
}

/// The witness's answer to a refusal, with the right code (the witness store has
/// already reported a conflict).
fn witnessing_status(e: WitnessingError) -> Status {
    match e {
        WitnessingError::Witness(WitnessError::Conflict(evidence)) => {
            Status::data_loss(WitnessError::Conflict(evidence).to_string())
        }
        WitnessingError::Witness(WitnessError::OldSizeMismatch { cosigned, .. }) => {
            let mut status = Status::failed_precondition(e.to_string());
            status
                .metadata_mut()
                .insert(COSIGNED_SIZE_TRAILER, MetadataValue::from(cosigned));
            status
        }
        WitnessingError::Witness(WitnessError::GoingBack { .. }) => {
            Status::failed_precondition(e.to_string())
        }
        WitnessingError::Witness(_) => Status::invalid_argument(e.to_string()),
        WitnessingError::Storage(_) => Status::unavailable(e.to_string()),
        WitnessingError::Damaged(_) => Status::internal(e.to_string()),
    }
}

#[tonic::async_trait]
impl Witness for WitnessService {
    async fn cosign(
        &self,
        request: Request<CosignRequest>,
    ) -> Result<Response<CosignResponse>, Status> {
        let caller = request
            .extensions()
            .get::<PeerCaller>()
            .map(|c| c.0.clone())
            .ok_or_else(|| Status::unauthenticated("the caller was not authenticated"))?;
        let r = request.into_inner();
        // A member asks for its own log only.
        let log_key = log_key_of(&caller).map_err(into_status)?;
        let proof = proof_hashes(&r.proof)?;
        let result = self
            .witness
            .cosign(
                &witness_name_for(self.identity.participant_id()),
                &self.identity.signing_key,
                log_key,
                CheckpointOffer {
                    note: r.note.as_bytes(),
                    old_size: r.old_size,
                    proof: &proof,
                },
                now().max(0) as u64,
            )
            .await;
        match result {
            Ok(line) => Ok(Response::new(CosignResponse {
                cosignature: line.to_string(),
                credential: Some(self.identity.credential.clone().into()),
            })),
            Err(WitnessingError::Witness(WitnessError::UnknownLog { origin })) => {
                Err(Status::permission_denied(format!(
                    "participant {} may ask to witness only its own log {}, not {origin}",
                    caller.participant_id,
                    origin_for(&caller.participant_id)
                )))
            }
            Err(e) => Err(witnessing_status(e)),
        }
    }

    async fn report_checkpoint(
        &self,
        request: Request<ReportCheckpointRequest>,
    ) -> Result<Response<ReportCheckpointResponse>, Status> {
        if request.extensions().get::<PeerCaller>().is_none() {
            return Err(Status::unauthenticated("the caller was not authenticated"));
        }
        let r = request.into_inner();
        let origin = r
            .note
            .lines()
            .next()
            .ok_or_else(|| Status::invalid_argument("note: it is empty"))?;
        let owner = origin
            .strip_prefix("liutong.")
            .and_then(|o| o.strip_suffix("/audit"))
            .and_then(|id| ParticipantId::parse(id).ok())
            .ok_or_else(|| {
                Status::invalid_argument(format!(
                    "note: the origin {origin:?} is not a Liutong log (liutong.<participant>/audit)"
                ))
            })?;
        let member = self.trust.member(&owner, now()).map_err(Status::from)?;
        let log_key = log_key_of(&member).map_err(into_status)?;
        match self
            .witness
            .report(log_key, r.note.as_bytes(), now().max(0) as u64)
            .await
        {
            Ok(cosigned_size) => Ok(Response::new(ReportCheckpointResponse { cosigned_size })),
            Err(e) => Err(witnessing_status(e)),
        }
    }
}
