//! The provider's side of a transfer: the checks before a delivery (a finalized agreement
//! with the caller as consumer, its policy, usage control's gate), the signed manifest,
//! the chunk stream, and the consumer's receipt as the provider receives and keeps it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use liutong_policy::{Action, Scope};
use tokio_stream::Stream;

use crate::audit::log::EventKind;
use crate::contract::Agreement;
use crate::identity::{Envelope, Membership};
use crate::storage::Write;
use liutong_proto::v1::pull_response::Part;
use liutong_proto::v1::{Chunk, PullResponse};
use prost::bytes::Bytes;

use super::error::{TransferError, product_read_error};
use super::{
    MANIFEST_PAYLOAD_TYPE, Manifest, RECEIPT_PAYLOAD_TYPE, RECEIPT_WAIT, Receipt, Transfers,
};

/// Provider side: deliveries and their receipts.
const DELIVERIES: &str = "deliveries";

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
        // Every use of the agreement the provider knows of (the queries it answered, the
        // reads reported to it): a count that is spent delivers nothing more, whatever
        // the consumer's own node would say.
        let uses = self.gate.uses(agreement_id)?;
        let state = agreement.policy_state(uses);
        // A permission on `read` alone is delivered too: each read of the copy is then
        // decided on the consumer's node. Without one, the `use` decision stands (it
        // tells a compute-to-data agreement apart); `aggregate` never delivers a copy.
        let decision =
            crate::catalog::evaluate_first_covered(&policy, &request, &state, &[Action::Read]);
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
            let mut why = decision.explain();
            if uses > 0
                && liutong_policy::evaluate(&policy, &request, &agreement.policy_state(0))
                    .is_permit()
            {
                why = format!(
                    "the agreement's use count is spent ({uses} uses so far: {why}); nothing \
                     more is delivered under it"
                );
            }
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
        // Mask duties or a watermark: the manifest covers the derived bytes, which are
        // delivered instead.
        let masked = crate::desensitize::delivery_for(
            &self.storage,
            &self.catalog.products,
            &agreement.agreement_id,
            &product,
            &decision.duties,
            agreement.derived,
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
        // Signed before the start is logged: a key in a token that cannot sign refuses
        // the transfer before the log says it started.
        let signed_manifest =
            Envelope::sign_json(MANIFEST_PAYLOAD_TYPE, &manifest, &self.identity.signing_key)?;
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
                            ", desensitized by {} mask rule(s) over {} field(s){}, sha256 {}{}",
                            d.rules.len(),
                            d.applied.len(),
                            match &d.watermark {
                                Some(w) => format!(", watermarked in {} cell(s)", w.cells),
                                None => String::new(),
                            },
                            manifest.sha256,
                            if d.rules.is_empty() && d.required_k.is_none() {
                                String::new()
                            } else {
                                format!(", {}", d.k_anonymity_note())
                            }
                        ),
                        None => String::new(),
                    }
                ),
            )
            .await?;
        Ok(Delivery {
            desensitized: manifest.desensitized.is_some(),
            manifest: signed_manifest,
            agreement,
            chunks,
        })
    }
}

/// Whether the consumer of `agreement_id` confirmed a complete delivery with its signed
/// receipt (provider side): only then does it hold a copy to use.
pub fn delivered(
    storage: &dyn crate::storage::Storage,
    agreement_id: &str,
) -> Result<bool, crate::storage::StorageError> {
    Ok(storage.get(DELIVERIES, agreement_id.as_bytes())?.is_some())
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
    /// The manifest, then the chunks from `from_chunk`, each read only when the stream is
    /// polled for it (see [`DeliveryStream`]).
    pub fn delivery_stream(self: Arc<Self>, delivery: Delivery, from_chunk: u32) -> DeliveryStream {
        let Delivery {
            manifest,
            agreement,
            chunks,
            desensitized,
        } = delivery;
        DeliveryStream {
            transfers: self,
            agreement: Arc::new(agreement),
            desensitized,
            manifest: Some(manifest),
            next: from_chunk,
            chunks,
            step: None,
            ended: false,
        }
    }

    /// Reads chunk `index` on a blocking thread and counts it as delivered.
    async fn delivery_step(
        self: Arc<Self>,
        agreement: Arc<Agreement>,
        desensitized: bool,
        index: u32,
    ) -> Result<PullResponse, TransferError> {
        let this = self.clone();
        let read = agreement.clone();
        let data =
            tokio::task::spawn_blocking(move || this.delivery_chunk(&read, desensitized, index))
                .await
                .map_err(|e| TransferError::Internal(e.to_string()))??;
        let sent = data.len() as u64;
        let delivery = crate::alerts::Delivery {
            agreement_id: &agreement.agreement_id,
            consumer: &agreement.consumer,
            product_id: &agreement.product_id,
            version: agreement.version,
            size: agreement.size,
        };
        self.alerts.delivered(delivery, sent).await;
        Ok(PullResponse {
            part: Some(Part::Chunk(Chunk { index, data })),
        })
    }
}

/// The response stream of a delivery: the signed manifest, then the chunks in order; a
/// chunk that cannot be read ends it with its error.
///
/// Nothing is read ahead into a queue: the next chunk is read when the HTTP/2 layer
/// polls for it, which it does once it has handed the previous one to the connection,
/// and that waits for the consumer's flow-control window. A consumer that stops reading
/// therefore holds about two chunks of the provider's memory per stream (the one being
/// sent and the next), however large the product.
pub struct DeliveryStream {
    transfers: Arc<Transfers>,
    agreement: Arc<Agreement>,
    desensitized: bool,
    manifest: Option<Envelope>,
    /// The next chunk to read.
    next: u32,
    chunks: u32,
    /// The chunk being read.
    step: Option<ChunkRead>,
    ended: bool,
}

/// Reading one chunk of a delivery.
type ChunkRead = Pin<Box<dyn Future<Output = Result<PullResponse, TransferError>> + Send>>;

impl Stream for DeliveryStream {
    type Item = Result<PullResponse, TransferError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if let Some(manifest) = this.manifest.take() {
            return Poll::Ready(Some(Ok(PullResponse {
                part: Some(Part::Manifest(manifest.into())),
            })));
        }
        if this.ended {
            return Poll::Ready(None);
        }
        let step = match &mut this.step {
            Some(step) => step,
            None if this.next >= this.chunks => {
                this.ended = true;
                return Poll::Ready(None);
            }
            None => this
                .step
                .insert(Box::pin(this.transfers.clone().delivery_step(
                    this.agreement.clone(),
                    this.desensitized,
                    this.next,
                ))),
        };
        let result = ready!(step.as_mut().poll(cx));
        this.step = None;
        match result {
            Ok(_) => this.next += 1,
            Err(_) => this.ended = true,
        }
        Poll::Ready(Some(result))
    }
}

impl Transfers {
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
        crate::base::bounded::Id::parse("agreement_id", &receipt.agreement_id)
            .map_err(|e| TransferError::Invalid(e.to_string()))?;
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

    /// The bytes each agreement's delivery was confirmed to have carried, by the
    /// receipts this node holds as provider: one page (agreement, bytes), in agreement
    /// order, after the page position `after`. A receipt is kept once a whole delivery
    /// verified at the consumer, so a delivery cut short counts nothing here.
    pub fn delivered_bytes(
        &self,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<crate::storage::Page<(String, u64)>, TransferError> {
        Ok(crate::storage::page_where(
            self.storage.as_ref(),
            DELIVERIES,
            b"",
            after,
            limit,
            |key, value| {
                let receipt = serde_json::from_slice::<Envelope>(value)
                    .ok()
                    .and_then(|e| serde_json::from_slice::<Receipt>(&e.payload).ok());
                Ok::<_, crate::storage::StorageError>(
                    receipt.map(|r| (String::from_utf8_lossy(key).into_owned(), r.size)),
                )
            },
        )?)
    }
}
