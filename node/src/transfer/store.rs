//! The consumer's copy store: each received copy's record (its manifest, agreement,
//! progress and receipt) and its payload file of chunks, read, listed, shown as progress
//! and deleted; the record is the commit point of the chunks it counts.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::identity::Envelope;
use crate::storage::Storage;
use liutong_proto::v1::TransferProgress;

use super::error::TransferError;
use super::seal::{CopyCipher, CopySeal, ENTRY_LEN, ensure_node_key};
use super::{Manifest, TransferState};

/// Consumer side: received copies and their progress. Their chunks are in a payload
/// file each (see [`copy_payload`]), made durable before the record that counts them.
pub(super) const COPIES: &str = "copies";

/// Consumer side, in [`COPIES`]: `p/<agreement ID>` marks a COMPLETED copy whose receipt
/// the provider has not confirmed yet; written with COMPLETED, removed on confirmation.
pub(super) const RECEIPT_PENDING: &[u8] = b"p/";

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
    /// How the payload file is sealed (see the `transfer::seal` module); `None` for a copy kept in
    /// plain form by an earlier version of the node, read as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seal: Option<CopySeal>,
}

pub(super) fn copy_key(agreement_id: &str) -> Vec<u8> {
    format!("r/{agreement_id}").into_bytes()
}

/// Where a copy's chunks are kept: one payload file per agreement, chunk `i` at
/// `i × chunk_size`.
pub(super) fn copy_payload(agreement_id: &str) -> String {
    format!("copies/{agreement_id}")
}

/// Reads chunk `index` of a copy from its payload file, opened if the copy is sealed
/// (`None` once the copy is deleted: [`delete_copy`] removes the file first). A sealed
/// chunk that does not open is `DataLoss`, never wrong bytes.
pub(crate) fn read_copy_chunk(
    storage: &dyn Storage,
    c: &ReceivedCopy,
    manifest: &Manifest,
    index: u32,
) -> Result<Option<Vec<u8>>, TransferError> {
    let offset = index as u64 * manifest.chunk_size as u64;
    if index as usize >= manifest.chunk_hashes.len() || offset > manifest.size {
        return Ok(None);
    }
    let len = (manifest.size - offset).min(manifest.chunk_size as u64) as usize;
    let name = copy_payload(&c.agreement_id);
    let blobs = storage.blobs();
    let Some(mut data) = blobs.read_at(&name, offset, len)? else {
        return Ok(None);
    };
    let Some(seal) = &c.seal else {
        return Ok(Some(data).filter(|d| d.len() == len));
    };
    let cipher = CopyCipher::new(storage, &c.agreement_id, seal, manifest)?;
    let entry = blobs
        .read_at(&name, cipher.entry_offset(index), ENTRY_LEN)?
        .unwrap_or_default();
    if data.len() != len {
        data.clear();
    }
    cipher.open(index, &mut data, &entry)?;
    if data.len() != len {
        return Err(TransferError::DataLoss(format!(
            "chunk {index} of the copy of agreement {} fails its integrity check; the copy \
             was altered on disk and none of that chunk is given out",
            c.agreement_id
        )));
    }
    Ok(Some(data))
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

/// The copies whose agreement ID comes after `after`, by agreement ID, one page.
pub fn copies_page(
    storage: &dyn Storage,
    after: Option<&str>,
    limit: usize,
) -> Result<crate::storage::Page<ReceivedCopy>, TransferError> {
    let after = after.map(copy_key);
    crate::storage::page_where(storage, COPIES, b"r/", after.as_deref(), limit, |_, v| {
        Ok::<_, TransferError>(serde_json::from_slice(v).ok())
    })
}

/// The agreement ID of a copy's storage key (as in [`copies_page`]'s `next`).
pub fn copy_key_agreement(key: &[u8]) -> Option<&str> {
    std::str::from_utf8(key.strip_prefix(b"r/")?).ok()
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
    read_copy_chunk(storage, &c, &manifest_of(&c), index)
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
    storage.blobs().remove(&sealing_payload(agreement_id))?;
    storage.delete(COPIES, &copy_key(agreement_id))?;
    Ok(())
}

pub(super) fn manifest_of(c: &ReceivedCopy) -> Manifest {
    c.manifest
        .peek_json()
        .expect("stored manifests were checked when received")
}

/// Progress as the local API shows it.
pub fn progress(c: &ReceivedCopy) -> TransferProgress {
    progress_with(c, &manifest_of(c))
}

/// Progress of a copy whose manifest is already read.
pub(super) fn progress_with(c: &ReceivedCopy, m: &Manifest) -> TransferProgress {
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

pub(super) fn pending_key(agreement_id: &str) -> Vec<u8> {
    [RECEIPT_PENDING, agreement_id.as_bytes()].concat()
}

/// Writes the copy record. It is the commit point of the chunks it counts, which are
/// made durable before it; after a crash an uncounted chunk is simply fetched again.
pub(super) fn save_copy(storage: &dyn Storage, c: &ReceivedCopy) -> Result<(), TransferError> {
    storage.put(
        COPIES,
        &copy_key(&c.agreement_id),
        &serde_json::to_vec(c).expect("copies serialize"),
    )?;
    Ok(())
}

/// Where a plain copy is sealed before the sealed file takes its place.
pub(super) fn sealing_payload(agreement_id: &str) -> String {
    format!("{}.sealing", copy_payload(agreement_id))
}

/// At start, before the node serves anyone: seals the completed copies an earlier
/// version of the node kept in plain form. Each is sealed into a file of its own and
/// made durable; then its record names the sealing (the commit point), and only then
/// does the sealed file replace the plain one. A start after a crash in between
/// finishes the replacement (the record is sealed) or begins again (it is not).
/// Returns how many copies were sealed.
pub async fn seal_plain_copies(storage: &dyn Storage) -> Result<usize, TransferError> {
    let blobs = storage.blobs();
    let mut sealed = 0;
    for mut c in copies(storage)? {
        let sealing = sealing_payload(&c.agreement_id);
        if c.seal.is_some() {
            // Sealed and committed, and the replacement cut short.
            if blobs.read_at(&sealing, 0, 0)?.is_some() {
                blobs.rename(&sealing, &copy_payload(&c.agreement_id))?;
            }
            continue;
        }
        if c.state != TransferState::Completed {
            // An unfinished plain copy is fetched again, sealed, by its next pull.
            continue;
        }
        blobs.remove(&sealing)?;
        let manifest = manifest_of(&c);
        let seal = CopySeal::fresh()?;
        ensure_node_key(storage)?;
        let cipher = CopyCipher::new(storage, &c.agreement_id, &seal, &manifest)?;
        let mut writer = blobs.writer(&sealing, true)?;
        let mut entries = blobs.writer(&sealing, false)?;
        for index in 0..manifest.chunk_hashes.len() as u32 {
            let plain = read_copy_chunk(storage, &c, &manifest, index)?
                .filter(|d| hex::encode(Sha256::digest(d)) == manifest.chunk_hashes[index as usize])
                .ok_or_else(|| {
                    TransferError::DataLoss(format!(
                        "chunk {index} of the plain copy of agreement {} is missing or does not \
                         match the provider's signed manifest; it is left as it is",
                        c.agreement_id
                    ))
                });
            let mut data = match plain {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(agreement = %c.agreement_id, error = %e, "a plain copy was not sealed");
                    blobs.remove(&sealing)?;
                    break;
                }
            };
            let entry = cipher.seal(index, &mut data)?;
            writer.write_at(index as u64 * manifest.chunk_size as u64, &data)?;
            entries.write_at(cipher.entry_offset(index), &entry)?;
            if index as usize + 1 == manifest.chunk_hashes.len() {
                writer.sync()?;
                entries.sync()?;
                c.seal = Some(seal.clone());
            }
        }
        drop((writer, entries));
        if c.seal.is_none() {
            continue;
        }
        save_copy(storage, &c)?;
        storage.flush().await?;
        // Pause point `transfer.copies.sealed`: a plain copy's sealed file is durable and
        // its record names the sealing; the plain file has not been replaced yet.
        crate::pause::at("transfer.copies.sealed").await;
        blobs.rename(&sealing, &copy_payload(&c.agreement_id))?;
        sealed += 1;
    }
    Ok(sealed)
}
