//! The consumer's pull: fetching (or resuming) a delivery, checking the signed manifest
//! against the agreement and each chunk against the manifest on a blocking thread while
//! the next one arrives, and making chunks durable before the record counts them.

use std::sync::Arc;

use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::audit::log::EventKind;
use crate::base::clock::now;
use crate::contract::{Agreement, Role};
use crate::identity::{Envelope, MemberRole};
use crate::storage::Write;
use crate::storage::blobs::BlobWriter;
use crate::telemetry::metrics::Direction::Received;
use liutong_proto::v1::pull_response::Part;
use liutong_proto::v1::transfer_client::TransferClient;
use liutong_proto::v1::{PullRequest, PullResponse, TransferProgress};

use super::error::TransferError;
use super::seal::{CopyCipher, CopySeal, ensure_node_key};
use super::store::{
    COPIES, ReceivedCopy, copy, copy_key, copy_payload, pending_key, progress, progress_with,
    save_copy,
};
use super::{
    MANIFEST_PAYLOAD_TYPE, Manifest, RECEIPT_PAYLOAD_TYPE, Receipt, TransferState, Transfers, state,
};

/// Make received chunks durable and count them at least this often (chunks), so a
/// crash loses little.
const FLUSH_EVERY: u32 = 16;

impl Transfers {
    /// Pulls (or resumes) the product of an agreement; reports progress on `progress_tx`.
    /// `max_chunks` (0: all) stops after that many chunks, to resume later.
    pub async fn pull(
        &self,
        agreement_id: &str,
        max_chunks: u32,
        progress_tx: mpsc::Sender<TransferProgress>,
    ) -> Result<TransferProgress, TransferError> {
        self.pull_from(agreement_id, max_chunks, progress_tx, None)
            .await
    }

    /// [`pull`](Self::pull) from the provider's Liutong peer API (`open` is `None`) or
    /// from another binding: `open` is called with the resume point (the first chunk
    /// missing, and its byte offset) and gives the provider's delivery in the peer API's
    /// form, the signed manifest first, then the chunks from there. Every check, the
    /// copy, its record and the receipt are the same whichever binding delivers; a
    /// receipt is sent here only over the peer API (the other binding carries it).
    pub async fn pull_from(
        &self,
        agreement_id: &str,
        max_chunks: u32,
        progress_tx: mpsc::Sender<TransferProgress>,
        open: Option<OpenDelivery>,
    ) -> Result<TransferProgress, TransferError> {
        self.contracts
            .require_own_role(MemberRole::Consumer, "pulling a transfer")
            .map_err(|e| TransferError::Forbidden(e.to_string()))?;
        let n = self.contracts.finalized(Role::Consumer, agreement_id)?;
        // Asked only of a member that may provide, before anything is sent or recorded.
        self.contracts
            .require_peer_role(&n.peer, MemberRole::Provider, "delivering a product")
            .map_err(|e| TransferError::Forbidden(e.to_string()))?;
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

        let (mut client, mut stream) = match open {
            None => {
                let channel = self
                    .peers
                    .connect_member(&n.peer_address, &n.peer)
                    .await
                    .map_err(|e| TransferError::Unreachable(e.to_string()))?;
                let limit = self.limits.max_message_bytes;
                let mut client = TransferClient::new(channel)
                    .max_decoding_message_size(limit)
                    .max_encoding_message_size(limit);
                let stream = client
                    .pull(PullRequest {
                        agreement_id: agreement_id.to_owned(),
                        from_chunk,
                    })
                    .await
                    .map_err(|s| TransferError::Peer(s.into()))?
                    .into_inner();
                (Some(client), Source::Grpc(Box::new(stream)))
            }
            Some(open) => {
                let offset = match &existing {
                    Some(c) => {
                        let m: Manifest = c.manifest.peek_json().map_err(|e| {
                            TransferError::DataLoss(format!("the stored manifest: {e}"))
                        })?;
                        from_chunk as u64 * m.chunk_size as u64
                    }
                    None => 0,
                };
                (None, Source::Other(open(from_chunk, offset).await?))
            }
        };

        // The manifest: signed by the provider, for this agreement's product version.
        let first = stream
            .message()
            .await?
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
        self.gate.delivery_began(agreement_id);
        // Copies are sealed at rest under the node copy key, stored (and made durable
        // with the record below) before any chunk is sealed with it.
        ensure_node_key(storage)?;
        let mut unsealed_prefix = false;
        let mut record = match existing {
            Some(mut c) => {
                if c.manifest.payload != manifest_envelope.payload {
                    return Err(TransferError::DataLoss(
                        "the provider's manifest changed since the transfer started".into(),
                    ));
                }
                c.state = state::next(c.state, state::TransferEvent::Resumed)?;
                if c.seal.is_none() {
                    // Begun in plain form by an earlier version: fetched again, sealed,
                    // from the first chunk.
                    c.seal = Some(CopySeal::fresh()?);
                    c.chunks_received = 0;
                    unsealed_prefix = true;
                }
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
                seal: Some(CopySeal::fresh()?),
            },
        };
        save_copy(storage, &record)?;
        self.storage.flush().await?;
        if unsealed_prefix {
            // The record no longer counts the plain chunks; now they go.
            storage.blobs().remove(&copy_payload(agreement_id))?;
        }
        let total = manifest.chunk_hashes.len() as u32;
        let _ = progress_tx.send(progress_with(&record, &manifest)).await;

        // The chunks, each checked against the signed manifest (whose chunk list the
        // agreement fixes) before it is kept.
        let manifest = Arc::new(manifest);
        let seal = record
            .seal
            .as_ref()
            .expect("new and resumed copies are sealed");
        let mut sink = Some(Sink {
            writer: storage.blobs().writer(&copy_payload(agreement_id), true)?,
            entries: storage.blobs().writer(&copy_payload(agreement_id), false)?,
            cipher: CopyCipher::new(storage, agreement_id, seal, &manifest)?,
            manifest: manifest.clone(),
        });
        // The chunk being checked and written on a blocking thread while the next arrives.
        let mut in_flight: Option<tokio::task::JoinHandle<(Sink, std::io::Result<Taken>)>> = None;
        let mut next = record.chunks_received;
        let mut pulled = 0u32;
        loop {
            let more = next < total && (max_chunks == 0 || pulled < max_chunks);
            let message = if more {
                Some(stream.message().await?)
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
                            record.state =
                                state::next(record.state, state::TransferEvent::ChunksSynced)?;
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
                        record.state =
                            state::next(record.state, state::TransferEvent::ChunkRefused)?;
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
            record.state = state::next(record.state, state::TransferEvent::Suspended)?;
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
        )?;
        record.state = state::next(record.state, state::TransferEvent::Completed)?;
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
        // Its content fingerprints are made from here on; a publish that comes first
        // makes them itself.
        if let Err(e) = self.gate.copy_verified(agreement_id) {
            tracing::warn!(agreement = %agreement_id, error = %e, "cannot fingerprint a received copy");
        }
        // Pause point `transfer.consumer.completed`: COMPLETED is durable, the receipt not
        // sent yet.
        crate::pause::at("transfer.consumer.completed").await;
        if let Some(client) = client.take() {
            self.send_receipt(agreement_id, Some(client)).await?;
        }
        let done = progress(&record);
        let _ = progress_tx.send(done.clone()).await;
        Ok(done)
    }
}

/// Opens a delivery from another binding than the peer API: called with the first chunk
/// missing and its byte offset.
pub type OpenDelivery = Box<
    dyn FnOnce(
            u32,
            u64,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<DeliveryParts, TransferError>> + Send>,
        > + Send,
>;

/// A delivery in the peer API's form: the signed manifest, then the chunks in order.
pub type DeliveryParts =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<PullResponse, TransferError>> + Send>>;

/// Where a pull's delivery comes from.
enum Source {
    Grpc(Box<tonic::Streaming<PullResponse>>),
    Other(DeliveryParts),
}

impl Source {
    async fn message(&mut self) -> Result<Option<PullResponse>, TransferError> {
        match self {
            Source::Grpc(stream) => stream
                .message()
                .await
                .map_err(|s| TransferError::Peer(s.into())),
            Source::Other(stream) => tokio_stream::StreamExt::next(stream).await.transpose(),
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
    // A derived agreement carries only keyed hashes of the source: its delivery must
    // be the derived one, checked against the signed manifest.
    if a.derived && m.desensitized.is_none() {
        return Err(mismatch(
            "the agreement's delivery is derived, the manifest names the product's own bytes",
        ));
    }
    // A desensitized delivery names the product version it masked (by identifier, not
    // by a hash of the unmasked bytes); the provider's signature binds the masked bytes.
    match &m.desensitized {
        Some(d) => {
            if d.source_product_id != a.product_id || d.source_version != a.version {
                return Err(mismatch("masked product version"));
            }
            if d.source_size != a.size {
                return Err(mismatch("payload size"));
            }
        }
        None => {
            if m.sha256 != a.product_sha256 || m.size != a.size {
                return Err(mismatch("payload hash or size"));
            }
        }
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

/// The consumer's chunk stage, run on a blocking thread: checks a chunk against the
/// signed manifest, seals it and writes it to the copy's payload file.
struct Sink {
    /// The sealed chunks, at their offsets (aligned writes where possible).
    writer: BlobWriter,
    /// The same file, written without `O_DIRECT`: the chunks' nonces and tags in its
    /// tail, whose small writes must not be padded over one another.
    entries: BlobWriter,
    cipher: CopyCipher,
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
    /// The chunk's hash and its sealing run side by side (one core hashes while the
    /// other copies it into the writer's staging buffer and seals it there); only a
    /// chunk that matches is written, from that buffer, so it is copied once.
    fn take(&mut self, index: u32, data: &[u8], sync: bool) -> std::io::Result<Taken> {
        let Sink {
            writer,
            entries,
            cipher,
            manifest: m,
        } = self;
        let offset = index as u64 * m.chunk_size as u64;
        // Every chunk is whole but the last, which ends the payload; one of another
        // length is refused before it is hashed or sealed.
        let expected_len = (m.size - offset).min(m.chunk_size as u64);
        if data.len() as u64 != expected_len {
            return self.refuse();
        }
        let (matches, entry) = std::thread::scope(|scope| {
            let check =
                scope.spawn(|| hex::encode(Sha256::digest(data)) == m.chunk_hashes[index as usize]);
            let staged = writer.staging(data.len());
            staged.copy_from_slice(data);
            let entry = cipher.seal(index, staged);
            let matches = check
                .join()
                .map_err(|_| std::io::Error::other("the chunk hashing thread panicked"))?;
            Ok::<_, std::io::Error>((matches, entry))
        })?;
        if !matches {
            return self.refuse();
        }
        let entry = entry?;
        // The direct write of the last chunk is padded up to the tail's start at most
        // (the tail is aligned), so it never covers an entry.
        writer.write_staged_at(offset, data.len())?;
        entries.write_at(cipher.entry_offset(index), &entry)?;
        if sync {
            // Both descriptors: the bytes and the entries that open them.
            writer.sync()?;
            entries.sync()?;
        }
        Ok(Taken::Kept { durable: sync })
    }

    /// Nothing of a bad chunk was written; the chunks before it are made durable.
    fn refuse(&self) -> std::io::Result<Taken> {
        self.writer.sync()?;
        self.entries.sync()?;
        Ok(Taken::Refused)
    }
}
