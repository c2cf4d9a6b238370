//! Transfer: delivering a product version under a finalized agreement.
//!
//! The provider checks the agreement and its policy again (transfer scope), then
//! streams a signed manifest — product, version, agreement, size, chunk size and every
//! chunk's SHA-256 — followed by the chunks, reading the next chunk while it sends one.
//! The consumer checks the manifest against its agreement and each chunk against the
//! manifest as it arrives (hashing and writing one chunk on a blocking thread while the
//! next one arrives), writes good chunks to the copy's payload file, makes them durable
//! every few chunks and only then records the progress that counts them, and can resume
//! from the first missing chunk after a cut. Only when every chunk and the whole payload verified does
//! the copy become usable (COMPLETED), together with its agreement and policy (the sticky
//! policy); the consumer then returns a signed receipt and both sides record COMPLETED.
//! The receipt is sent again (by the node's background work, and by a later pull) until
//! the provider has it, which answers a repeat of the receipt it holds as the first.
//! A chunk that does not match stops the transfer with `DATA_LOSS`; nothing of it is kept.

use std::sync::Arc;

use liutong_policy::{Action, Scope};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::alerts::Alerts;
use crate::audit::log::AuditLog;
use crate::audit::log::{AuditError, EventKind};
use crate::base::clock::now;
use crate::catalog::Catalog;
use crate::catalog::product::ProductError;
use crate::config::{Limits, RecoverySection};
use crate::contract::{AgreedProductError, Agreement, AgreementError, Contracts, Role};
use crate::desensitize::DesensitizeError;
use crate::identity::{Envelope, Membership, NodeIdentity};
use crate::outbound::Peers;
use crate::storage::blobs::BlobWriter;
use crate::storage::{Storage, StorageError, Write};
use crate::telemetry::Metrics;
use crate::telemetry::metrics::Direction::Received;
use crate::trust::TrustStore;
use liutong_proto::v1::pull_response::Part;
use liutong_proto::v1::transfer_client::TransferClient;
use liutong_proto::v1::{Chunk, PullRequest, PullResponse, ReceiptRequest, TransferProgress};
use prost::bytes::Bytes;

pub mod state;
pub use state::TransferState;

/// What usage control, above this module, says about delivering under an agreement.
pub trait DeliveryGate: Send + Sync {
    /// Whether the provider may still deliver under `agreement`; the error says why.
    fn delivery_allowed(&self, agreement: &Agreement) -> Result<(), String>;
    /// Why usage control deleted the consumer's copy under `agreement_id`, if it did:
    /// such a copy is not fetched again.
    fn deleted(&self, agreement_id: &str) -> Result<Option<String>, StorageError>;
}

/// Delivery of agreed products, both sides: the provider's checks, manifest and chunk
/// stream and the receipts it keeps; the consumer's verified pull, its copies and the
/// receipts it sends.
pub struct Transfers {
    storage: Arc<dyn Storage>,
    audit: AuditLog,
    identity: Arc<NodeIdentity>,
    contracts: Arc<Contracts>,
    catalog: Arc<Catalog>,
    peers: Arc<Peers>,
    trust: Arc<TrustStore>,
    alerts: Alerts,
    metrics: Metrics,
    gate: Arc<dyn DeliveryGate>,
    limits: Limits,
    recovery: RecoverySection,
}

impl Transfers {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        storage: Arc<dyn Storage>,
        audit: AuditLog,
        identity: Arc<NodeIdentity>,
        contracts: Arc<Contracts>,
        catalog: Arc<Catalog>,
        peers: Arc<Peers>,
        trust: Arc<TrustStore>,
        alerts: Alerts,
        metrics: Metrics,
        gate: Arc<dyn DeliveryGate>,
        limits: Limits,
        recovery: RecoverySection,
    ) -> Self {
        Self {
            storage,
            audit,
            identity,
            contracts,
            catalog,
            peers,
            trust,
            alerts,
            metrics,
            gate,
            limits,
            recovery,
        }
    }

    /// The received copies (consumer side), by agreement.
    pub fn copies(&self) -> Result<Vec<ReceivedCopy>, TransferError> {
        copies(self.storage.as_ref())
    }
}

/// Payload type of a transfer manifest.
pub const MANIFEST_PAYLOAD_TYPE: &str = "application/vnd.liutong.transfer-manifest+json";
/// Payload type of a transfer receipt.
pub const RECEIPT_PAYLOAD_TYPE: &str = "application/vnd.liutong.transfer-receipt+json";

/// Consumer side: received copies and their progress. Their chunks are in a payload
/// file each (see [`copy_payload`]), made durable before the record that counts them.
const COPIES: &str = "copies";
/// Provider side: deliveries and their receipts.
const DELIVERIES: &str = "deliveries";
/// Consumer side, in [`COPIES`]: `p/<agreement ID>` marks a COMPLETED copy whose receipt
/// the provider has not confirmed yet; written with COMPLETED, removed on confirmation.
const RECEIPT_PENDING: &[u8] = b"p/";
/// How long a receipt step (sending one, recording one) waits for another step on the
/// same agreement's receipt to finish.
const RECEIPT_WAIT: std::time::Duration = std::time::Duration::from_secs(10);
/// Make received chunks durable and count them at least this often (chunks), so a
/// crash loses little.
const FLUSH_EVERY: u32 = 16;

/// What the provider signs before the chunks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub agreement_id: String,
    pub product_id: String,
    pub version: u32,
    pub size: u64,
    pub sha256: String,
    pub chunk_size: u32,
    pub chunk_hashes: Vec<String>,
    pub format: String,
    /// Set when the delivered bytes are the product masked by the policy's mask duties:
    /// `size`, `sha256` and the chunk hashes are then those of the masked bytes, and
    /// this names the product's own hash and the rules applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desensitized: Option<crate::desensitize::Desensitization>,
}

/// What the consumer signs when the copy verified.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Receipt {
    pub agreement_id: String,
    pub product_id: String,
    pub version: u32,
    pub sha256: String,
    pub size: u64,
    pub received_at: i64,
}

/// A received copy (consumer side). Usable only when `state` is COMPLETED.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReceivedCopy {
    pub agreement_id: String,
    pub provider: String,
    pub manifest: Envelope,
    /// The agreement with both signatures: the sticky policy travels with the copy.
    pub agreement: Envelope,
    pub chunks_received: u32,
    pub state: TransferState,
    pub reason: String,
    pub receipt: Option<Envelope>,
    pub updated_at: i64,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransferError {
    #[error("no finalized agreement {0}")]
    UnknownAgreement(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("the agreement's policy refuses the transfer: {0}")]
    Denied(String),
    /// The agreement releases only aggregates (compute-to-data).
    #[error("{0}")]
    AggregateOnly(String),
    /// A pull that asks to start past the last chunk.
    #[error("{0}")]
    OutOfRange(String),
    /// Damaged or mismatching data: a hash, a signature, a stored record.
    #[error("{0}")]
    DataLoss(String),
    #[error("{0}")]
    Invalid(String),
    /// The agreed product version is no longer at the provider.
    #[error("{0}")]
    Gone(String),
    /// A store or file of this node cannot be read right now.
    #[error("{0}")]
    Unavailable(String),
    #[error("the provider: {0}")]
    Peer(tonic::Status),
    #[error("cannot reach the provider: {0}")]
    Unreachable(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("the audit log cannot be written, so the step is refused: {0}")]
    Audit(String),
    #[error("cannot read or write the payload file: {0}")]
    Payload(#[from] std::io::Error),
}

impl From<AgreementError> for TransferError {
    fn from(e: AgreementError) -> Self {
        match e {
            AgreementError::Unknown(id) => Self::UnknownAgreement(id),
            AgreementError::NotConsumer { .. } => Self::Forbidden(e.to_string()),
            AgreementError::Damaged(why) => Self::DataLoss(why),
            AgreementError::Storage(s) => Self::Storage(s),
        }
    }
}

/// A step the transfer state machine does not allow: a record that is not what the
/// step expects.
impl From<state::IllegalTransition> for TransferError {
    fn from(e: state::IllegalTransition) -> Self {
        Self::Invalid(e.to_string())
    }
}

impl From<AgreedProductError> for TransferError {
    fn from(e: AgreedProductError) -> Self {
        match e {
            AgreedProductError::Gone(why) => Self::Gone(why),
            AgreedProductError::Unreadable(_) => Self::Unavailable(e.to_string()),
            AgreedProductError::Damaged(_) | AgreedProductError::Changed => {
                Self::DataLoss(e.to_string())
            }
        }
    }
}

/// A masked delivery that cannot be made or read: deleted (with the agreement's
/// revocation or the consumer's copy) is refused with the reason; damaged is data
/// loss; a store failure is a store failure.
impl From<DesensitizeError> for TransferError {
    fn from(e: DesensitizeError) -> Self {
        match e {
            DesensitizeError::Removed(why) => Self::Forbidden(why),
            DesensitizeError::Storage(s) => Self::Storage(s),
            DesensitizeError::Damaged(_) => Self::DataLoss(e.to_string()),
            other => Self::Invalid(other.to_string()),
        }
    }
}

/// A stored product chunk that cannot be read: missing or damaged is data loss, a
/// store or file failure is a store failure.
fn product_read_error(e: ProductError) -> TransferError {
    match e {
        ProductError::Damaged(_) => TransferError::DataLoss(e.to_string()),
        ProductError::NotFound(_) => TransferError::Gone(e.to_string()),
        ProductError::Storage(s) => TransferError::Storage(s),
        other => TransferError::Unavailable(other.to_string()),
    }
}

impl From<AuditError> for TransferError {
    fn from(e: AuditError) -> Self {
        Self::Audit(e.to_string())
    }
}

// ---- provider side ----------------------------------------------------------------

impl Transfers {
    /// The provider's checks before a delivery: a finalized agreement whose consumer is the
    /// caller, and the agreement's policy still permits it (transfer scope).
    pub async fn start_delivery(
        &self,
        caller: &Membership,
        agreement_id: &str,
        from_chunk: u32,
    ) -> Result<Delivery, TransferError> {
        let agreement = self
            .contracts
            .consumer_agreement(&caller.participant_id, agreement_id)?;
        // Revoked, or past the copy's deleteAfter deadline: nothing more is delivered.
        if let Err(why) = self.gate.delivery_allowed(&agreement) {
            agreement
                .log(
                    &self.audit,
                    self.identity.participant_id(),
                    EventKind::Transfer,
                    format!("transfer refused: {why}"),
                )
                .await?;
            return Err(TransferError::Forbidden(why));
        }
        let policy = self
            .contracts
            .compiled_policy(&agreement)
            .map_err(|e| TransferError::Invalid(format!("the agreement's policy: {e}")))?;
        let request = agreement.request(Scope::Transfer, Action::Use, caller);
        let state = agreement.policy_state(0);
        let decision = liutong_policy::evaluate(&policy, &request, &state);
        self.alerts
            .policy_decision(
                "transfer",
                &caller.participant_id,
                decision.is_permit(),
                &decision.explain(),
            )
            .await;
        if let Some(why) =
            crate::query::only_aggregates(&policy, &decision, &request, &state, agreement_id)
        {
            agreement
                .log(
                    &self.audit,
                    self.identity.participant_id(),
                    EventKind::Transfer,
                    format!("transfer refused: {why}"),
                )
                .await?;
            return Err(TransferError::AggregateOnly(why));
        }
        if !decision.is_permit() {
            let why = decision.explain();
            agreement
                .log(
                    &self.audit,
                    self.identity.participant_id(),
                    EventKind::Transfer,
                    format!("transfer refused at transfer scope: {why}"),
                )
                .await?;
            return Err(TransferError::Denied(why));
        }
        let product = agreement.product(&self.catalog.products)?;
        let mut manifest = Manifest {
            agreement_id: agreement_id.to_owned(),
            product_id: product.product_id.clone(),
            version: product.version,
            size: product.size,
            sha256: product.sha256.clone(),
            chunk_size: product.chunk_size,
            chunk_hashes: product.chunk_hashes.clone(),
            format: product.format.to_string(),
            desensitized: None,
        };
        // Mask duties: the manifest covers the masked bytes, which are delivered instead.
        let masked = crate::desensitize::delivery_for(
            &self.storage,
            &self.catalog.products,
            &agreement.agreement_id,
            &product,
            &decision.duties,
        )
        .await?;
        if let Some(m) = masked {
            manifest.size = m.size;
            manifest.sha256 = m.sha256;
            manifest.chunk_size = m.chunk_size;
            manifest.chunk_hashes = m.chunk_hashes;
            manifest.desensitized = Some(m.desensitization);
        }
        let chunks = manifest.chunk_hashes.len() as u32;
        if from_chunk > chunks {
            return Err(TransferError::OutOfRange(format!(
                "from_chunk: the product has {chunks} chunks"
            )));
        }
        agreement
            .log(
                &self.audit,
                self.identity.participant_id(),
                EventKind::Transfer,
                format!(
                    "transfer STARTED: {} v{}, {} chunks from chunk {from_chunk}{}",
                    product.product_id,
                    product.version,
                    manifest.chunk_hashes.len(),
                    match &manifest.desensitized {
                        Some(d) => format!(
                            ", desensitized by {} mask rule(s) over {} field(s), sha256 {}",
                            d.rules.len(),
                            d.applied.len(),
                            manifest.sha256
                        ),
                        None => String::new(),
                    }
                ),
            )
            .await?;
        Ok(Delivery {
            desensitized: manifest.desensitized.is_some(),
            manifest: Envelope::sign_json(
                MANIFEST_PAYLOAD_TYPE,
                &manifest,
                &self.identity.signing_key,
            ),
            agreement,
            chunks,
        })
    }
}

/// A delivery the provider has decided to make: its signed manifest and what the
/// chunk stream needs.
pub struct Delivery {
    pub manifest: Envelope,
    pub agreement: Agreement,
    /// How many chunks the manifest lists.
    pub chunks: u32,
    /// The chunks are the agreement's masked bytes, not the product's own.
    pub desensitized: bool,
}

impl Transfers {
    /// Streams the manifest and the chunks from `from_chunk` into `tx`, reading the next
    /// chunk on a blocking thread while one is sent (the channel's bound keeps memory flat).
    /// A chunk that cannot be read ends the stream with `to_status` of its error (the
    /// service's status mapping).
    pub fn spawn_delivery(
        self: Arc<Self>,
        delivery: Delivery,
        from_chunk: u32,
        tx: mpsc::Sender<Result<PullResponse, tonic::Status>>,
        to_status: fn(TransferError) -> tonic::Status,
    ) {
        let Delivery {
            manifest,
            agreement,
            chunks,
            desensitized,
        } = delivery;
        tokio::spawn(async move {
            if tx
                .send(Ok(PullResponse {
                    part: Some(Part::Manifest(manifest.into())),
                }))
                .await
                .is_err()
            {
                return;
            }
            let agreement = Arc::new(agreement);
            let read = |index: u32| {
                let (this, agreement) = (self.clone(), agreement.clone());
                tokio::task::spawn_blocking(move || {
                    this.delivery_chunk(&agreement, desensitized, index)
                })
            };
            let mut next = (from_chunk < chunks).then(|| read(from_chunk));
            for index in from_chunk..chunks {
                let Some(reading) = next.take() else { return };
                if index + 1 < chunks {
                    next = Some(read(index + 1));
                }
                let data = match reading.await {
                    Ok(Ok(d)) => d,
                    Ok(Err(e)) => {
                        let _ = tx.send(Err(to_status(e))).await;
                        return;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(tonic::Status::internal(e.to_string()))).await;
                        return;
                    }
                };
                let sent = data.len() as u64;
                let message = PullResponse {
                    part: Some(Part::Chunk(Chunk { index, data })),
                };
                if tx.send(Ok(message)).await.is_err() {
                    return; // the consumer went away; it resumes later
                }
                let delivery = crate::alerts::Delivery {
                    agreement_id: &agreement.agreement_id,
                    consumer: &agreement.consumer,
                    product_id: &agreement.product_id,
                    version: agreement.version,
                    size: agreement.size,
                };
                self.alerts.delivered(delivery, sent).await;
            }
        });
    }

    /// The bytes the provider delivers as chunk `index` under an agreement: the stored
    /// chunk of the agreed product version, or of the agreement's masked delivery when the
    /// policy has mask duties. Blocking (reads a file or the database).
    fn delivery_chunk(
        &self,
        agreement: &Agreement,
        desensitized: bool,
        index: u32,
    ) -> Result<Bytes, TransferError> {
        if desensitized {
            crate::desensitize::delivery::chunk(
                self.storage.as_ref(),
                &agreement.agreement_id,
                index,
            )
            .map(Bytes::from)
            .map_err(TransferError::from)
        } else {
            self.catalog
                .products
                .chunk(&agreement.product_id, agreement.version, index)
                .map(Bytes::from)
                .map_err(product_read_error)
        }
    }

    /// The consumer's signed receipt (provider side).
    pub async fn receive_receipt(
        &self,
        caller: &Membership,
        envelope: Envelope,
    ) -> Result<(), TransferError> {
        let receipt: Receipt = envelope
            .open_json(RECEIPT_PAYLOAD_TYPE, &caller.signing_key)
            .map_err(|e| TransferError::DataLoss(format!("the receipt: {e}")))?;
        let agreement = self
            .contracts
            .consumer_agreement(&caller.participant_id, &receipt.agreement_id)?;
        // A masked delivery's receipt names the masked bytes.
        let (sha256, size) = match crate::desensitize::delivery::delivered(
            self.storage.as_ref(),
            &receipt.agreement_id,
        )? {
            Some(m) => (m.sha256, m.size),
            None => (agreement.product_sha256.clone(), agreement.size),
        };
        if receipt.sha256 != sha256 || receipt.size != size {
            return Err(TransferError::DataLoss(
                "the receipt names another payload than the agreement".into(),
            ));
        }
        // One receipt step per agreement at a time, so two arriving together are decided
        // one after the other: the second sees the first.
        let Some(_claim) = self
            .contracts
            .claims()
            .claim_within(
                &format!("receipt-in/{}", receipt.agreement_id),
                RECEIPT_WAIT,
            )
            .await
        else {
            return Err(TransferError::Unavailable(format!(
                "a receipt for agreement {} is being recorded; send it again",
                receipt.agreement_id
            )));
        };
        // The consumer sends its receipt again until it learns that it arrived: the one
        // already held is acknowledged as the first was; another one is refused.
        if let Some(held) = self.delivery_receipt(&receipt.agreement_id)? {
            if held == envelope {
                return Ok(());
            }
            return Err(TransferError::Invalid(format!(
                "another receipt for agreement {} is already recorded",
                receipt.agreement_id
            )));
        }
        // The receipt and its audit entry are committed together.
        let event = agreement.event(
            EventKind::Transfer,
            caller.participant_id.as_str(),
            format!(
                "transfer COMPLETED: receipt for {} bytes, sha256 {}",
                receipt.size, receipt.sha256
            ),
        );
        self.audit
            .append_with(
                &[event],
                vec![(
                    DELIVERIES,
                    Write::Put(
                        receipt.agreement_id.as_bytes().to_vec(),
                        envelope.to_json().into_bytes(),
                    ),
                )],
            )
            .await?;
        // Pause point `transfer.provider.receipt`: the receipt is recorded (durable), the
        // consumer has not been answered.
        crate::pause::at("transfer.provider.receipt").await;
        Ok(())
    }

    /// The consumer's receipt for a delivery, once received (provider side).
    pub fn delivery_receipt(&self, agreement_id: &str) -> Result<Option<Envelope>, TransferError> {
        Ok(self
            .storage
            .get(DELIVERIES, agreement_id.as_bytes())?
            .and_then(|b| serde_json::from_slice(&b).ok()))
    }
}

// ---- consumer side ----------------------------------------------------------------

fn copy_key(agreement_id: &str) -> Vec<u8> {
    format!("r/{agreement_id}").into_bytes()
}

/// Where a copy's chunks are kept: one payload file per agreement, chunk `i` at
/// `i × chunk_size`.
fn copy_payload(agreement_id: &str) -> String {
    format!("copies/{agreement_id}")
}

/// Reads chunk `index` of a copy from its payload file (`None` once the copy is
/// deleted: [`delete_copy`] removes the file first).
pub(crate) fn read_copy_chunk(
    storage: &dyn Storage,
    agreement_id: &str,
    manifest: &Manifest,
    index: u32,
) -> Result<Option<Vec<u8>>, TransferError> {
    let offset = index as u64 * manifest.chunk_size as u64;
    if index as usize >= manifest.chunk_hashes.len() || offset > manifest.size {
        return Ok(None);
    }
    let len = (manifest.size - offset).min(manifest.chunk_size as u64) as usize;
    Ok(storage
        .blobs()
        .read_at(&copy_payload(agreement_id), offset, len)?
        .filter(|d| d.len() == len))
}

/// A received copy's record.
pub fn copy(
    storage: &dyn Storage,
    agreement_id: &str,
) -> Result<Option<ReceivedCopy>, TransferError> {
    Ok(storage
        .get(COPIES, &copy_key(agreement_id))?
        .and_then(|b| serde_json::from_slice(&b).ok()))
}

/// Every copy this node holds or is receiving.
pub fn copies(storage: &dyn Storage) -> Result<Vec<ReceivedCopy>, TransferError> {
    Ok(storage
        .scan_prefix(COPIES, b"r/")?
        .iter()
        .filter_map(|(_, v)| serde_json::from_slice(v).ok())
        .collect())
}

/// One chunk of a received copy (`None` for a chunk not received yet).
pub fn copy_chunk(
    storage: &dyn Storage,
    agreement_id: &str,
    index: u32,
) -> Result<Option<Vec<u8>>, TransferError> {
    let Some(c) = copy(storage, agreement_id)? else {
        return Ok(None);
    };
    if index >= c.chunks_received {
        return Ok(None);
    }
    read_copy_chunk(storage, agreement_id, &manifest_of(&c), index)
}

/// Deletes a received copy: its payload file, then its record (usage control deletes
/// copies at their deleteAfter deadline and on revocation). Deleting a copy that is not
/// there does nothing; a deletion cut short by a crash leaves the record, so running it
/// again finishes it.
pub fn delete_copy(storage: &dyn Storage, agreement_id: &str) -> Result<(), TransferError> {
    if copy(storage, agreement_id)?.is_none() {
        return Ok(());
    }
    storage.blobs().remove(&copy_payload(agreement_id))?;
    storage.delete(COPIES, &copy_key(agreement_id))?;
    Ok(())
}

fn manifest_of(c: &ReceivedCopy) -> Manifest {
    c.manifest
        .peek_json()
        .expect("stored manifests were checked when received")
}

/// Progress as the local API shows it.
pub fn progress(c: &ReceivedCopy) -> TransferProgress {
    progress_with(c, &manifest_of(c))
}

/// Progress of a copy whose manifest is already read.
fn progress_with(c: &ReceivedCopy, m: &Manifest) -> TransferProgress {
    let bytes = (c.chunks_received as u64 * m.chunk_size as u64).min(m.size);
    TransferProgress {
        agreement_id: c.agreement_id.clone(),
        state: c.state.to_string(),
        chunks_received: c.chunks_received,
        chunks_total: m.chunk_hashes.len() as u32,
        bytes_received: bytes,
        bytes_total: m.size,
        product_id: m.product_id.clone(),
        version: m.version,
        sha256: if c.state == TransferState::Completed {
            m.sha256.clone()
        } else {
            String::new()
        },
        reason: c.reason.clone(),
    }
}

impl Transfers {
    /// Pulls (or resumes) the product of an agreement; reports progress on `progress_tx`.
    /// `max_chunks` (0: all) stops after that many chunks, to resume later.
    pub async fn pull(
        &self,
        agreement_id: &str,
        max_chunks: u32,
        progress_tx: mpsc::Sender<TransferProgress>,
    ) -> Result<TransferProgress, TransferError> {
        let n = self.contracts.finalized(Role::Consumer, agreement_id)?;
        let agreement_envelope = n
            .agreement
            .clone()
            .expect("finalized negotiations carry their agreement");
        let agreement: Agreement = n
            .agreement_content()
            .ok_or_else(|| TransferError::Invalid("the agreement is unreadable".into()))?;
        let storage = self.storage.as_ref();
        // A copy deleted by usage control (deadline passed, agreement revoked) is not
        // fetched again.
        if let Some(gone) = self.gate.deleted(agreement_id)? {
            return Err(TransferError::Forbidden(gone));
        }
        let existing = copy(storage, agreement_id)?;
        if let Some(c) = &existing
            && c.state == TransferState::Completed
        {
            // A receipt that has not reached the provider yet goes with this pull too; the
            // copy is complete whatever becomes of it (a refusal is its recorded reason).
            if let Err(e) = self.send_receipt(agreement_id, None).await {
                tracing::warn!(agreement = %agreement_id, error = %e, "the receipt was not delivered");
            }
            let c = copy(storage, agreement_id)?.unwrap_or_else(|| c.clone());
            return Ok(progress(&c));
        }
        let from_chunk = existing.as_ref().map_or(0, |c| c.chunks_received);

        let channel = self
            .peers
            .connect_member(&n.peer_address, &n.peer)
            .await
            .map_err(|e| TransferError::Unreachable(e.to_string()))?;
        let limit = self.limits.max_message_bytes;
        let mut client = TransferClient::new(channel)
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit);
        let mut stream = client
            .pull(PullRequest {
                agreement_id: agreement_id.to_owned(),
                from_chunk,
            })
            .await
            .map_err(TransferError::Peer)?
            .into_inner();

        // The manifest: signed by the provider, for this agreement's product version.
        let first = stream
            .message()
            .await
            .map_err(TransferError::Peer)?
            .ok_or_else(|| TransferError::Invalid("the provider sent nothing".into()))?;
        let Some(Part::Manifest(manifest_envelope)) = first.part else {
            return Err(TransferError::Invalid(
                "the provider did not start with a manifest".into(),
            ));
        };
        let manifest_envelope: Envelope = manifest_envelope.into();
        let provider = self
            .trust
            .member(&n.peer, now())
            .map_err(|e| TransferError::Forbidden(format!("the provider: {e}")))?;
        let manifest: Manifest = manifest_envelope
            .open_json(MANIFEST_PAYLOAD_TYPE, &provider.signing_key)
            .map_err(|e| TransferError::DataLoss(format!("the manifest: {e}")))?;
        check_manifest(&manifest, &agreement)?;
        let mut record = match existing {
            Some(mut c) => {
                if c.manifest.payload != manifest_envelope.payload {
                    return Err(TransferError::DataLoss(
                        "the provider's manifest changed since the transfer started".into(),
                    ));
                }
                c.state = state::next(c.state, state::Event::Resumed)?;
                c
            }
            None => ReceivedCopy {
                agreement_id: agreement_id.to_owned(),
                provider: n.peer.to_string(),
                manifest: manifest_envelope,
                agreement: agreement_envelope,
                chunks_received: 0,
                state: TransferState::Started,
                reason: String::new(),
                receipt: None,
                updated_at: now(),
            },
        };
        save_copy(storage, &record)?;
        self.storage.flush().await?;
        let total = manifest.chunk_hashes.len() as u32;
        let _ = progress_tx.send(progress_with(&record, &manifest)).await;

        // The chunks, each checked against the signed manifest (whose chunk list the
        // agreement fixes) before it is kept.
        let manifest = Arc::new(manifest);
        let mut sink = Some(Sink {
            writer: storage.blobs().writer(&copy_payload(agreement_id), true)?,
            manifest: manifest.clone(),
        });
        // The chunk being checked and written on a blocking thread while the next arrives.
        let mut in_flight: Option<tokio::task::JoinHandle<(Sink, std::io::Result<Taken>)>> = None;
        let mut next = record.chunks_received;
        let mut pulled = 0u32;
        loop {
            let more = next < total && (max_chunks == 0 || pulled < max_chunks);
            let message = if more {
                Some(stream.message().await.map_err(TransferError::Peer)?)
            } else {
                None
            };
            if let Some(job) = in_flight.take() {
                let (back, taken) = job
                    .await
                    .map_err(|e| TransferError::Invalid(format!("the chunk writer failed: {e}")))?;
                sink = Some(back);
                match taken? {
                    Taken::Kept { durable } => {
                        record.chunks_received += 1;
                        record.reason.clear();
                        if durable {
                            record.state = state::next(record.state, state::Event::ChunksSynced)?;
                            // The chunks are on disk: now the record may count them, and
                            // is made durable itself before more is fetched, so the resume
                            // point after a crash is the synced prefix, never less.
                            record.updated_at = now();
                            save_copy(storage, &record)?;
                            self.storage.flush().await?;
                            // Pause point `transfer.consumer.synced`: the first synced
                            // chunks and the count of them are durable, the rest not
                            // fetched yet.
                            crate::pause::at("transfer.consumer.synced").await;
                        }
                        let _ = progress_tx.send(progress_with(&record, &manifest)).await;
                    }
                    Taken::Refused => {
                        record.state = state::next(record.state, state::Event::ChunkRefused)?;
                        let expected = record.chunks_received;
                        record.reason = format!(
                            "chunk {expected} does not match its size or SHA-256 in the signed manifest; it was not kept"
                        );
                        record.updated_at = now();
                        save_copy(storage, &record)?;
                        self.storage.flush().await?;
                        agreement
                            .log(
                                &self.audit,
                                self.identity.participant_id(),
                                EventKind::Transfer,
                                format!("transfer chunk {expected} refused: hash mismatch"),
                            )
                            .await?;
                        return Err(TransferError::DataLoss(record.reason.clone()));
                    }
                }
            }
            let Some(message) = message else { break };
            let Some(PullResponse {
                part: Some(Part::Chunk(chunk)),
            }) = message
            else {
                return Err(TransferError::Invalid(format!(
                    "the provider's stream ended after chunk {} of {total}",
                    record.chunks_received
                )));
            };
            if chunk.index != next {
                return Err(TransferError::Invalid(format!(
                    "the provider sent chunk {} where chunk {next} was due",
                    chunk.index
                )));
            }
            self.metrics
                .transfer_bytes(Received, chunk.data.len() as u64);
            pulled += 1;
            next += 1;
            // Durable at every FLUSH_EVERY chunks and at the last one this pull takes.
            let sync = next.is_multiple_of(FLUSH_EVERY) || next == total || pulled == max_chunks;
            let mut job_sink = sink.take().expect("the sink is back before the next chunk");
            in_flight = Some(tokio::task::spawn_blocking(move || {
                let taken = job_sink.take(chunk.index, &chunk.data, sync);
                (job_sink, taken)
            }));
        }
        drop(sink);
        self.storage.flush().await?;
        if record.chunks_received < total {
            record.state = state::next(record.state, state::Event::Suspended)?;
            return Ok(progress_with(&record, &manifest));
        }
        drop(stream);

        // Every chunk matched the manifest's list, which is the agreement's: the copy is
        // the payload the manifest names.
        let (sha256, size) = (manifest.sha256.clone(), manifest.size);
        let receipt = Envelope::sign_json(
            RECEIPT_PAYLOAD_TYPE,
            &Receipt {
                agreement_id: agreement_id.to_owned(),
                product_id: manifest.product_id.clone(),
                version: manifest.version,
                sha256: sha256.clone(),
                size,
                received_at: now(),
            },
            &self.identity.signing_key,
        );
        record.state = state::next(record.state, state::Event::Completed)?;
        record.receipt = Some(receipt);
        record.updated_at = now();
        // COMPLETED, the receipt to send, the mark that it is not confirmed yet and the
        // audit entry are one commit: the receipt is sent again from it until it arrives.
        let event = agreement.event(
            EventKind::Transfer,
            n.peer.as_str(),
            format!("transfer COMPLETED: {size} bytes verified, sha256 {sha256}"),
        );
        self.audit
            .append_with(
                &[event],
                // The mark before the copy record: a copy that is COMPLETED on disk always
                // has its receipt on the way.
                vec![
                    (COPIES, Write::Put(pending_key(agreement_id), Vec::new())),
                    (
                        COPIES,
                        Write::Put(
                            copy_key(agreement_id),
                            serde_json::to_vec(&record).expect("copies serialize"),
                        ),
                    ),
                ],
            )
            .await?;
        // Pause point `transfer.consumer.completed`: COMPLETED is durable, the receipt not
        // sent yet.
        crate::pause::at("transfer.consumer.completed").await;
        self.send_receipt(agreement_id, Some(client)).await?;
        let done = progress(&record);
        let _ = progress_tx.send(done.clone()).await;
        Ok(done)
    }
}

fn pending_key(agreement_id: &str) -> Vec<u8> {
    [RECEIPT_PENDING, agreement_id.as_bytes()].concat()
}

impl Transfers {
    /// The claim of the consumer's receipt step for `agreement_id`: one at a time sends it
    /// or gives it up (a pull's own, the background work's).
    async fn receipt_claim(&self, agreement_id: &str) -> Option<crate::recovery::Claim> {
        self.contracts
            .claims()
            .claim_within(&format!("receipt-out/{agreement_id}"), RECEIPT_WAIT)
            .await
    }

    /// Sends the receipt of COMPLETED copy `agreement_id` to its provider (on `client`, or
    /// on a new connection), unless the provider already confirmed it. Confirmed, the
    /// copy's mark is removed; a refusal removes it too and is recorded as the copy's
    /// reason; a call that does not get through keeps it, to be sent again, and is no
    /// error to the caller (the copy is complete either way).
    async fn send_receipt(
        &self,
        agreement_id: &str,
        client: Option<TransferClient<crate::telemetry::PeerChannel>>,
    ) -> Result<(), TransferError> {
        use crate::recovery::{Call, Verdict, verdict};
        let Some(_claim) = self.receipt_claim(agreement_id).await else {
            // Another step is sending it; the mark stays until the provider confirms it.
            return Ok(());
        };
        // As stored now, under the claim: the other step may have delivered it meanwhile.
        let storage = self.storage.as_ref();
        let key = pending_key(agreement_id);
        if storage.get(COPIES, &key)?.is_none() {
            return Ok(());
        }
        let Some(c) = copy(storage, agreement_id)?.filter(|c| c.state == TransferState::Completed)
        else {
            // The copy was deleted (usage control) or never completed.
            storage.delete(COPIES, &key)?;
            return Ok(());
        };
        let Some(receipt) = c.receipt.clone() else {
            storage.delete(COPIES, &key)?;
            return Ok(());
        };
        let client = match client {
            Some(client) => client,
            None => {
                let n = self.contracts.finalized(Role::Consumer, &c.agreement_id)?;
                match self.peers.connect_member(&n.peer_address, &n.peer).await {
                    Ok(channel) => TransferClient::new(channel),
                    Err(e) => return Err(TransferError::Unreachable(e.to_string())),
                }
            }
        };
        let mut client = client;
        let answer = client
            .receipt(ReceiptRequest {
                receipt: Some(receipt.into()),
            })
            .await;
        let status = match answer {
            Ok(_) => {
                // The confirmation and the end of the resending are one commit.
                self.audit
                    .append_with(
                        &[copy_event(
                            &c,
                            "transfer receipt confirmed by the provider".into(),
                        )],
                        vec![(COPIES, Write::Delete(key))],
                    )
                    .await?;
                return Ok(());
            }
            Err(status) => status,
        };
        match verdict(Call::Receipt, &status) {
            Verdict::Retry | Verdict::Held => {
                tracing::warn!(
                    agreement = %c.agreement_id,
                    error = %status.message(),
                    "the receipt did not reach the provider; it is sent again"
                );
                Ok(())
            }
            Verdict::Refused => {
                let reason: String = status.message().chars().take(512).collect();
                self.give_up_receipt(&c, &format!("the provider refused the receipt: {reason}"))
                    .await?;
                Err(TransferError::Peer(status))
            }
        }
    }
}

/// An audit event about copy `c`, naming its provider.
fn copy_event(c: &ReceivedCopy, detail: String) -> crate::audit::log::Event {
    let mut event = crate::audit::log::Event::new(EventKind::Transfer, now(), detail);
    event.participant = Some(c.provider.clone());
    event.agreement = Some(c.agreement_id.clone());
    event.product = Some(manifest_of(c).product_id);
    event
}

impl Transfers {
    /// Stops sending the receipt of copy `c`, with `reason` recorded on the copy and in the
    /// audit log. The caller holds the receipt's claim ([`receipt_claim`]).
    async fn give_up_receipt(&self, c: &ReceivedCopy, reason: &str) -> Result<(), TransferError> {
        let mut c = c.clone();
        c.reason = reason.to_owned();
        c.updated_at = now();
        let event = copy_event(&c, format!("transfer receipt not delivered: {reason}"));
        self.audit
            .append_with(
                &[event],
                vec![
                    (
                        COPIES,
                        Write::Put(
                            copy_key(&c.agreement_id),
                            serde_json::to_vec(&c).expect("copies serialize"),
                        ),
                    ),
                    (COPIES, Write::Delete(pending_key(&c.agreement_id))),
                ],
            )
            .await?;
        Ok(())
    }

    /// Sends again every receipt the providers have not confirmed (consumer side), and
    /// gives up one whose copy completed more than `recovery.expire_after` ago once this
    /// process has tried it and failed. Runs in the node's background work; `retries`
    /// holds the attempts.
    pub async fn send_pending_receipts(&self, retries: &mut crate::recovery::Retries) {
        let storage = self.storage.as_ref();
        let pending: Vec<String> = match storage.scan_prefix(COPIES, RECEIPT_PENDING) {
            Ok(entries) => entries
                .iter()
                .map(|(k, _)| String::from_utf8_lossy(&k[RECEIPT_PENDING.len()..]).into_owned())
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the receipts to send");
                return;
            }
        };
        let config = &self.recovery;
        let mut unreachable = std::collections::HashSet::new();
        for id in crate::recovery::due_now(retries, pending) {
            let c = match copy(storage, &id) {
                Ok(Some(c)) if c.state == TransferState::Completed => c,
                Ok(_) => {
                    // The copy was deleted (usage control) or never completed.
                    let _ = storage.delete(COPIES, &pending_key(&id));
                    continue;
                }
                Err(e) => {
                    tracing::warn!(agreement = %id, error = %e, "cannot read the copy");
                    continue;
                }
            };
            if retries.failures(&id) > 0
                && crate::recovery::expired(c.updated_at, now(), config.expire_after)
            {
                let reason = format!(
                    "expired: the provider did not confirm the receipt within {}",
                    humantime::format_duration(config.expire_after)
                );
                let Some(_claim) = self.receipt_claim(&id).await else {
                    continue;
                };
                if !matches!(storage.get(COPIES, &pending_key(&id)), Ok(Some(_))) {
                    continue;
                }
                if let Err(e) = self.give_up_receipt(&c, &reason).await {
                    tracing::warn!(agreement = %id, error = %e, "cannot record the given-up receipt");
                }
                continue;
            }
            // A provider that did not answer this pass is not called again in it.
            if unreachable.contains(&c.provider) {
                continue;
            }
            tracing::info!(agreement = %id, "sending the receipt again");
            retries.took_up(&id, std::time::Instant::now());
            let sent = self.send_receipt(&id, None).await;
            match (sent, storage.get(COPIES, &pending_key(&id))) {
                (Ok(()), Ok(None)) => retries.succeeded(&id),
                (Err(TransferError::Peer(_)), _) => retries.succeeded(&id),
                (result, _) => {
                    unreachable.insert(c.provider.clone());
                    retries.failed(&id, std::time::Instant::now(), config.retry_interval);
                    if let Err(e) = result {
                        tracing::warn!(agreement = %id, error = %e, "the receipt could not be sent");
                    }
                }
            }
        }
    }
}

fn check_manifest(m: &Manifest, a: &Agreement) -> Result<(), TransferError> {
    let mismatch = |what: &str| {
        TransferError::DataLoss(format!("the manifest does not match the agreement: {what}"))
    };
    if m.agreement_id != a.agreement_id {
        return Err(mismatch("agreement"));
    }
    if m.product_id != a.product_id || m.version != a.version {
        return Err(mismatch("product version"));
    }
    // A desensitized delivery names the product's own hash beside the masked bytes'.
    let (source_sha256, source_size) = match &m.desensitized {
        Some(d) => (&d.source_sha256, d.source_size),
        None => (&m.sha256, m.size),
    };
    if *source_sha256 != a.product_sha256 || source_size != a.size {
        return Err(mismatch("payload hash or size"));
    }
    let expected_chunks = m.size.div_ceil(m.chunk_size.max(1) as u64).max(1);
    if m.chunk_size == 0 || m.chunk_hashes.len() as u64 != expected_chunks {
        return Err(mismatch("chunk count"));
    }
    // The product's own bytes: the chunk list is the one the agreement fixes, so a
    // chunk that matches its listed hash is a chunk of the agreed bytes. (Masked bytes
    // are made after the agreement; the provider's signature on the manifest fixes
    // their list.)
    if m.desensitized.is_none()
        && (m.chunk_size != a.chunk_size
            || crate::catalog::product::chunk_list_sha256(&m.chunk_hashes).as_ref()
                != Some(&a.chunks_sha256))
    {
        return Err(mismatch("chunk list"));
    }
    Ok(())
}

/// Writes the copy record. It is the commit point of the chunks it counts, which are
/// made durable before it; after a crash an uncounted chunk is simply fetched again.
fn save_copy(storage: &dyn Storage, c: &ReceivedCopy) -> Result<(), TransferError> {
    storage.put(
        COPIES,
        &copy_key(&c.agreement_id),
        &serde_json::to_vec(c).expect("copies serialize"),
    )?;
    Ok(())
}

/// The consumer's chunk stage, run on a blocking thread: checks a chunk against the
/// signed manifest and writes it to the copy's payload file.
struct Sink {
    writer: BlobWriter,
    manifest: Arc<Manifest>,
}

/// What became of a chunk handed to the [`Sink`].
enum Taken {
    /// Written; `durable`: it and every chunk before it are on disk.
    Kept { durable: bool },
    /// Its length or SHA-256 does not match the manifest: not written (every chunk
    /// before it is on disk).
    Refused,
}

impl Sink {
    /// The chunk's hash and the write run side by side (one core hashes while the disk
    /// writes); a chunk that does not match is cut off the file again before anything
    /// counts it.
    fn take(&mut self, index: u32, data: &[u8], sync: bool) -> std::io::Result<Taken> {
        let m = &self.manifest;
        let offset = index as u64 * m.chunk_size as u64;
        // Every chunk is whole but the last, which ends the payload; one of another
        // length is refused before it is hashed or written.
        let expected_len = (m.size - offset).min(m.chunk_size as u64);
        let matches = data.len() as u64 == expected_len && {
            let (matches, written) = std::thread::scope(|scope| {
                let check = scope
                    .spawn(|| hex::encode(Sha256::digest(data)) == m.chunk_hashes[index as usize]);
                let written = self.writer.write_at(offset, data);
                let matches = check
                    .join()
                    .map_err(|_| std::io::Error::other("the chunk hashing thread panicked"))?;
                Ok::<_, std::io::Error>((matches, written))
            })?;
            written?;
            matches
        };
        if !matches {
            // Nothing of a bad chunk is kept; the chunks before it are made durable.
            self.writer.set_len(offset)?;
            self.writer.sync()?;
            return Ok(Taken::Refused);
        }
        if index as usize + 1 == m.chunk_hashes.len() {
            // The last chunk's direct write was padded to a whole block.
            self.writer.set_len(m.size)?;
        }
        if sync {
            self.writer.sync()?;
        }
        Ok(Taken::Kept { durable: sync })
    }
}
