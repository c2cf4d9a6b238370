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

use serde::{Deserialize, Serialize};

use crate::alerts::Alerts;
use crate::audit::log::AuditLog;
use crate::catalog::Catalog;
use crate::config::{Limits, RecoverySection};
use crate::contract::{Contracts, UsageGate};
use crate::identity::NodeIdentity;
use crate::outbound::Peers;
use crate::storage::Storage;
use crate::telemetry::Metrics;
use crate::trust::TrustStore;

mod consumer;
mod error;
mod provider;
mod receipts;
mod seal;
pub mod state;
mod store;
mod unverified;
pub use consumer::{DeliveryParts, OpenDelivery};
pub use error::TransferError;
pub use provider::{Delivery, DeliveryStream, delivered};
pub use seal::CopySeal;
pub use state::TransferState;
pub(crate) use store::read_copy_chunk;
pub use store::{
    ReceivedCopy, copies, copies_page, copy, copy_chunk, copy_key_agreement, delete_copy, progress,
    seal_plain_copies,
};
pub use unverified::{
    ByteStream, MAX_UNVERIFIED_BYTES, OpenBytes, UNVERIFIED, UNVERIFIED_CHUNK,
    check_unverified_size,
};

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
    gate: Arc<dyn UsageGate>,
    limits: Limits,
    recovery: RecoverySection,
    /// Carries receipts of agreements negotiated over the Dataspace Protocol, whose
    /// provider has no peer API address here.
    receipt_binding: std::sync::OnceLock<Arc<dyn ReceiptBinding>>,
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
        gate: Arc<dyn UsageGate>,
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
            receipt_binding: std::sync::OnceLock::new(),
        }
    }

    /// Hands the Dataspace Protocol binding the receipts of its agreements (once, when
    /// the node's DSP listener is on).
    pub fn set_receipt_binding(&self, binding: Arc<dyn ReceiptBinding>) {
        let _ = self.receipt_binding.set(binding);
    }

    /// The received copies (consumer side), by agreement.
    pub fn copies(&self) -> Result<Vec<ReceivedCopy>, TransferError> {
        copies(self.storage.as_ref())
    }

    /// The received copies whose agreement ID comes after `after`, one page.
    pub fn copies_page(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<crate::storage::Page<ReceivedCopy>, TransferError> {
        copies_page(self.storage.as_ref(), after, limit)
    }
}

/// A pull over another binding than the Liutong peer API (the Dataspace Protocol's
/// consumer role), for the local API: `peer` is the provider's endpoint there. The
/// binding feeds the delivery to [`Transfers::pull_from`], so every check is the same.
pub trait RemotePull: Send + Sync {
    fn pull(
        self: Arc<Self>,
        peer: String,
        agreement_id: String,
        max_chunks: u32,
        progress_tx: tokio::sync::mpsc::Sender<liutong_proto::v1::TransferProgress>,
    ) -> crate::base::BoxFuture<'static, Result<liutong_proto::v1::TransferProgress, TransferError>>;
}

/// Carries a consumer's signed receipt to the provider over another binding than the
/// peer API (the Dataspace Protocol's completion message), for an agreement whose
/// provider is reached only there. `Ok` once the provider has it.
pub trait ReceiptBinding: Send + Sync {
    fn send_receipt(
        self: Arc<Self>,
        agreement_id: String,
        receipt: crate::identity::Envelope,
    ) -> crate::base::BoxFuture<'static, Result<(), crate::base::error::PeerRefusal>>;
}

/// Payload type of a transfer manifest.
pub const MANIFEST_PAYLOAD_TYPE: &str = "application/vnd.liutong.transfer-manifest+json";
/// Payload type of a transfer receipt.
pub const RECEIPT_PAYLOAD_TYPE: &str = "application/vnd.liutong.transfer-receipt+json";

/// How long a receipt step (sending one, recording one) waits for another step on the
/// same agreement's receipt to finish.
const RECEIPT_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

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
    /// this names the product version masked (by identifier) and the rules applied.
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

/// The DSP binding's provider commands on its transfers, for the local API (which sits
/// beside the binding and reaches it through this).
pub trait ProviderControl: Send + Sync {
    /// Suspends, restarts or terminates the binding's transfer `pid`: this node's
    /// transfer as provider (`pid` its providerPid) or as consumer (its consumerPid).
    fn control(
        &self,
        pid: String,
        action: ProviderAction,
        reason: String,
    ) -> crate::base::BoxFuture<'static, Result<ControlledTransfer, ControlError>>;
    /// One page of the binding's transfers: those this node provides, then those it
    /// pulls, after position `after` (as a page's `next` gave it).
    fn list(
        &self,
        after: Option<Vec<u8>>,
        limit: usize,
    ) -> Result<crate::storage::Page<DspTransferEntry>, ControlError>;
    /// Terminates every transfer of `agreement_id` that is not final.
    fn end_for_agreement(
        &self,
        agreement_id: String,
        reason: String,
    ) -> crate::base::BoxFuture<'static, Result<usize, ControlError>>;
}

/// What a provider does to one of its DSP transfers (an operator's command).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProviderAction {
    Suspend,
    Restart,
    Terminate,
}

/// A DSP transfer as an operator's command left it.
#[derive(Clone, Debug)]
pub struct ControlledTransfer {
    /// This node's role in the transfer.
    pub role: crate::contract::Role,
    pub provider_pid: String,
    pub consumer_pid: String,
    /// The other side: the consumer when this node provides, the provider otherwise.
    pub consumer: String,
    pub provider: String,
    pub agreement_id: String,
    pub state: String,
}

/// A DSP transfer in the listing, from either role.
#[derive(Clone, Debug)]
pub struct DspTransferEntry {
    pub role: crate::contract::Role,
    pub provider_pid: String,
    pub consumer_pid: String,
    /// The other side's participant.
    pub peer: String,
    pub agreement_id: String,
    pub state: String,
    /// Provider role: payload bytes the data endpoint sent for it.
    pub bytes_served: u64,
    /// When it last changed (Unix s; 0: not known).
    pub updated_at: i64,
    pub reason: String,
}

/// Why a provider's command was refused.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(
        "no DSP transfer process {0} at this node, neither as provider (a providerPid) nor \
         as consumer (a consumerPid)"
    )]
    Unknown(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Unavailable(String),
}
