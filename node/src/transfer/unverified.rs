//! The consumer's pull of a delivery no signature of the provider vouches for: a plain
//! Dataspace Protocol provider's, under an agreement it did not sign. There is no signed
//! manifest and no chunk list, so nothing received can be checked against what was
//! agreed: the bytes are cut into chunks of [`UNVERIFIED_CHUNK`] as they arrive, each
//! sealed and made durable before the record counts it (so a cut pull resumes from the
//! first chunk not on record, with `Range`), the whole payload is hashed as it arrives
//! (the stored prefix read back on a resume), and the copy is recorded as *unverified:
//! the provider signed no chunk list* ([`UNVERIFIED`]): on the copy, in its progress and
//! in the audit entry. The consumer's signed receipt names the SHA-256 it received.
//!
//! The copy's manifest is this node's own account of what arrived (its size, chunk
//! size and, chunk by chunk, their SHA-256), signed by no one; it is what reads of the
//! copy use, as for any copy. A payload larger than [`MAX_UNVERIFIED_BYTES`] is refused
//! before any byte is kept.

use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_stream::StreamExt as _;

use crate::audit::log::EventKind;
use crate::base::clock::now;
use crate::contract::{Agreement, Role};
use crate::identity::{Envelope, MemberRole};
use crate::storage::Write;
use crate::storage::blobs::BlobWriter;
use liutong_proto::v1::TransferProgress;

use super::error::TransferError;
use super::seal::{CopyCipher, CopySeal, ensure_node_key};
use super::store::{
    COPIES, ReceivedCopy, copy, copy_key, copy_payload, manifest_of, progress, progress_with,
    read_copy_chunk, save_copy,
};
use super::{
    MANIFEST_PAYLOAD_TYPE, Manifest, RECEIPT_PAYLOAD_TYPE, Receipt, TransferState, Transfers, state,
};

/// The chunk size of an unverified copy (the provider names none).
pub const UNVERIFIED_CHUNK: u32 = 1 << 20;
/// The largest payload taken from a provider that signed no chunk list.
pub const MAX_UNVERIFIED_BYTES: u64 = 1 << 30;
/// What an unverified copy's record and audit entry say of it.
pub const UNVERIFIED: &str = "unverified: the provider signed no chunk list";

/// The bytes of a delivery, in order.
pub type ByteStream =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<bytes::Bytes, TransferError>> + Send>>;

/// Opens an unverified delivery from a byte offset: the payload's whole size, as the
/// provider states it, and its bytes from that offset.
pub type OpenBytes = Box<
    dyn FnOnce(u64) -> crate::base::BoxFuture<'static, Result<(u64, ByteStream), TransferError>>
        + Send,
>;

/// Refuses a payload over [`MAX_UNVERIFIED_BYTES`], in words a person can act on.
pub fn check_unverified_size(size: u64) -> Result<(), TransferError> {
    if size > MAX_UNVERIFIED_BYTES {
        return Err(TransferError::Invalid(format!(
            "the provider's payload is {size} bytes; this node takes at most \
             {MAX_UNVERIFIED_BYTES} bytes from a provider that signed no chunk list, and \
             kept nothing of it"
        )));
    }
    Ok(())
}

/// The manifest of an unverified copy: this node's account, signed by no one.
fn unsigned_manifest(m: &Manifest) -> Envelope {
    Envelope {
        payload_type: MANIFEST_PAYLOAD_TYPE.to_owned(),
        payload: serde_json::to_vec(m).expect("manifests serialize"),
        signatures: Vec::new(),
    }
}

/// The chunk stage of an unverified pull, run on a blocking thread: seals a chunk and
/// writes it, durable before it returns.
struct Sink {
    writer: BlobWriter,
    entries: BlobWriter,
    cipher: CopyCipher,
    chunk_size: u64,
}

impl Sink {
    fn take(&mut self, index: u32, data: Vec<u8>) -> std::io::Result<String> {
        let hash = hex::encode(Sha256::digest(&data));
        let mut sealed = data;
        let entry = self.cipher.seal(index, &mut sealed)?;
        self.writer
            .write_at(index as u64 * self.chunk_size, &sealed)?;
        self.entries
            .write_at(self.cipher.entry_offset(index), &entry)?;
        self.writer.sync()?;
        self.entries.sync()?;
        Ok(hash)
    }
}

impl Transfers {
    /// Pulls (or resumes) the product of `agreement_id`, an agreement its provider did
    /// not sign, through `open`; reports progress on `progress_tx`. `max_chunks` (0:
    /// all) stops after that many chunks, to resume later.
    pub async fn pull_unverified(
        &self,
        agreement_id: &str,
        max_chunks: u32,
        progress_tx: mpsc::Sender<TransferProgress>,
        open: OpenBytes,
    ) -> Result<TransferProgress, TransferError> {
        self.contracts
            .require_own_role(MemberRole::Consumer, "pulling a transfer")
            .map_err(|e| TransferError::Forbidden(e.to_string()))?;
        let n = self.contracts.finalized(Role::Consumer, agreement_id)?;
        if n.agreement_signed_by_provider() {
            return Err(TransferError::Invalid(format!(
                "agreement {agreement_id} is signed by its provider: its delivery is checked \
                 against the chunk list it signed"
            )));
        }
        self.contracts
            .require_peer_role(&n.peer, MemberRole::Provider, "delivering a product")
            .map_err(|e| TransferError::Forbidden(e.to_string()))?;
        let agreement: Agreement = n
            .agreement_content()
            .ok_or_else(|| TransferError::Invalid("the agreement is unreadable".into()))?;
        let storage = self.storage.as_ref();
        if let Some(gone) = self.gate.deleted(agreement_id)? {
            return Err(TransferError::Forbidden(gone));
        }
        let existing = copy(storage, agreement_id)?;
        if let Some(c) = &existing
            && c.state == TransferState::Completed
        {
            return Ok(progress(c));
        }
        let from_chunk = existing.as_ref().map_or(0, |c| c.chunks_received);
        let (size, mut bytes) = open(from_chunk as u64 * UNVERIFIED_CHUNK as u64).await?;
        check_unverified_size(size)?;
        ensure_node_key(storage)?;
        let mut record = match existing {
            Some(mut c) => {
                let m = manifest_of(&c);
                if m.size != size {
                    return Err(TransferError::DataLoss(format!(
                        "the provider's payload is {size} bytes now, {} when this copy began; \
                         the chunks kept are not mixed with other bytes",
                        m.size
                    )));
                }
                if c.seal.is_none() {
                    return Err(TransferError::DataLoss(
                        "the unverified copy on record is not sealed".into(),
                    ));
                }
                c.state = state::next(c.state, state::TransferEvent::Resumed)?;
                c
            }
            None => {
                let count = size.div_ceil(UNVERIFIED_CHUNK as u64).max(1) as usize;
                let manifest = Manifest {
                    agreement_id: agreement_id.to_owned(),
                    product_id: agreement.product_id.clone(),
                    version: agreement.version,
                    size,
                    sha256: String::new(),
                    chunk_size: UNVERIFIED_CHUNK,
                    chunk_hashes: vec![String::new(); count],
                    format: String::new(),
                    desensitized: None,
                };
                ReceivedCopy {
                    agreement_id: agreement_id.to_owned(),
                    provider: n.peer.to_string(),
                    manifest: unsigned_manifest(&manifest),
                    agreement: n
                        .agreement
                        .clone()
                        .expect("finalized negotiations carry their agreement"),
                    chunks_received: 0,
                    state: TransferState::Started,
                    reason: UNVERIFIED.to_owned(),
                    receipt: None,
                    updated_at: now(),
                    seal: Some(CopySeal::fresh()?),
                }
            }
        };
        save_copy(storage, &record)?;
        self.storage.flush().await?;
        self.gate.delivery_began(agreement_id);
        let mut manifest = manifest_of(&record);
        let total = manifest.chunk_hashes.len() as u32;
        // The whole payload's hash: the prefix already kept is read back first.
        let mut whole = Sha256::new();
        for index in 0..record.chunks_received {
            let chunk = read_copy_chunk(storage, &record, &manifest, index)?.ok_or_else(|| {
                TransferError::DataLoss(format!(
                    "chunk {index} of the unverified copy of agreement {agreement_id} is missing"
                ))
            })?;
            whole.update(&chunk);
        }
        let seal = record.seal.as_ref().expect("unverified copies are sealed");
        let mut sink = Some(Sink {
            writer: storage.blobs().writer(&copy_payload(agreement_id), true)?,
            entries: storage.blobs().writer(&copy_payload(agreement_id), false)?,
            cipher: CopyCipher::new(storage, agreement_id, seal, &manifest)?,
            chunk_size: UNVERIFIED_CHUNK as u64,
        });
        let _ = progress_tx.send(progress_with(&record, &manifest)).await;
        let mut buffer: Vec<u8> = Vec::new();
        let mut pulled = 0u32;
        while record.chunks_received < total && (max_chunks == 0 || pulled < max_chunks) {
            let index = record.chunks_received;
            let at = index as u64 * UNVERIFIED_CHUNK as u64;
            let want = (size - at).min(UNVERIFIED_CHUNK as u64) as usize;
            while buffer.len() < want {
                match bytes.next().await {
                    Some(Ok(more)) => buffer.extend_from_slice(&more),
                    Some(Err(e)) => return Err(e),
                    None => {
                        return Err(TransferError::Unreachable(format!(
                            "the provider's data ended after {} of {size} bytes; the first \
                             {index} chunks are kept and the next pull resumes from there",
                            at + buffer.len() as u64
                        )));
                    }
                }
            }
            let rest = buffer.split_off(want);
            let data = std::mem::replace(&mut buffer, rest);
            whole.update(&data);
            self.metrics
                .transfer_bytes(crate::telemetry::metrics::Direction::Received, want as u64);
            let mut job = sink.take().expect("the sink is back before the next chunk");
            let (back, hash) = tokio::task::spawn_blocking(move || {
                let hash = job.take(index, data);
                (job, hash)
            })
            .await
            .map_err(|e| TransferError::Internal(format!("the chunk writer failed: {e}")))?;
            sink = Some(back);
            manifest.chunk_hashes[index as usize] = hash?;
            // The chunk is on disk: now the record counts it.
            record.manifest = unsigned_manifest(&manifest);
            record.chunks_received += 1;
            record.state = state::next(record.state, state::TransferEvent::ChunksSynced)?;
            record.updated_at = now();
            save_copy(storage, &record)?;
            self.storage.flush().await?;
            pulled += 1;
            let _ = progress_tx.send(progress_with(&record, &manifest)).await;
        }
        drop(sink);
        if record.chunks_received < total {
            record.state = state::next(record.state, state::TransferEvent::Suspended)?;
            return Ok(progress_with(&record, &manifest));
        }
        if !buffer.is_empty() {
            return Err(TransferError::DataLoss(format!(
                "the provider sent more than the {size} bytes it stated; the copy is kept \
                 incomplete"
            )));
        }
        let sha256 = hex::encode(whole.finalize());
        manifest.sha256 = sha256.clone();
        record.manifest = unsigned_manifest(&manifest);
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
        )?;
        record.state = state::next(record.state, state::TransferEvent::Completed)?;
        record.receipt = Some(receipt);
        record.reason = format!("{UNVERIFIED}; sha256 {sha256} is of the bytes as they arrived");
        record.updated_at = now();
        // COMPLETED and its audit entry are one commit. The receipt goes with the
        // binding's completion message only: there is no peer API to send it again over.
        let event = agreement.event(
            EventKind::Transfer,
            n.peer.as_str(),
            format!("transfer COMPLETED, {UNVERIFIED}: {size} bytes received, sha256 {sha256}"),
        );
        self.audit
            .append_with(
                &[event],
                vec![(
                    COPIES,
                    Write::Put(
                        copy_key(agreement_id),
                        serde_json::to_vec(&record).expect("copies serialize"),
                    ),
                )],
            )
            .await?;
        if let Err(e) = self.gate.copy_verified(agreement_id) {
            tracing::warn!(agreement = %agreement_id, error = %e, "cannot fingerprint a received copy");
        }
        let done = progress(&record);
        let _ = progress_tx.send(done.clone()).await;
        Ok(done)
    }
}
