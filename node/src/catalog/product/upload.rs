//! A publish in progress: the payload written chunk by chunk to an unfinished file,
//! hashed as it arrives, then profiled, made durable under its final name, and only
//! then recorded; on any error the payload is removed.

use sha2::{Digest, Sha256};

use super::super::schema;
use super::store::{UNFINISHED, new_product_id, payload_name};
use super::{CHUNK_SIZE, Format, NewVersion, ProductError, ProductStore, ProductVersion};
use crate::storage::blobs::BlobWriter;

impl ProductStore {
    /// Starts publishing a version; write the payload to the returned upload.
    pub fn begin(&self, new: NewVersion) -> Result<Upload, ProductError> {
        let (product_id, version) = match &new.product_id {
            Some(id) => {
                let latest = self
                    .latest(id)?
                    .ok_or_else(|| ProductError::NotFound(id.clone()))?;
                (id.clone(), latest.version + 1)
            }
            None => (new_product_id()?, 1),
        };
        let unfinished = format!("{}{UNFINISHED}", payload_name(&product_id, version));
        // Publishing writes through the page cache, so a product just published is
        // delivered from memory.
        let writer = self.storage.blobs().writer(&unfinished, false)?;
        Ok(Upload {
            store: self.clone(),
            new,
            product_id,
            version,
            writer,
            unfinished,
            buffer: Vec::with_capacity(CHUNK_SIZE),
            chunk_hashes: Vec::new(),
            whole: Sha256::new(),
            size: 0,
            finished: false,
        })
    }
}

/// A publish in progress.
pub struct Upload {
    store: ProductStore,
    new: NewVersion,
    product_id: String,
    version: u32,
    /// The unfinished payload file and its name; renamed when the publish completes.
    writer: BlobWriter,
    pub(super) unfinished: String,
    buffer: Vec<u8>,
    chunk_hashes: Vec<String>,
    whole: Sha256,
    size: u64,
    /// Set once the version is recorded; an upload dropped before that removes its
    /// payload, so a publish that stops anywhere leaves nothing behind.
    finished: bool,
}

impl Upload {
    pub fn product_id(&self) -> &str {
        &self.product_id
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    /// Payload bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// SHA-256 (hex) of the payload written so far.
    pub fn sha256(&self) -> String {
        hex::encode(self.whole.clone().finalize())
    }

    /// Records more sources of this version before `finish`.
    pub fn add_derived_from(&mut self, sources: impl IntoIterator<Item = String>) {
        for s in sources {
            if !self.new.derived_from.contains(&s) {
                self.new.derived_from.push(s);
            }
        }
    }

    /// Sets the offer's policy (ODRL JSON-LD) before `finish`.
    pub fn set_policy_odrl(&mut self, policy: serde_json::Value) {
        self.new.policy_odrl = Some(policy);
    }

    /// Adds payload bytes; full chunks are written to storage as they fill.
    pub fn write(&mut self, mut data: &[u8]) -> Result<(), ProductError> {
        self.whole.update(data);
        self.size += data.len() as u64;
        while !data.is_empty() {
            let room = CHUNK_SIZE - self.buffer.len();
            let take = room.min(data.len());
            self.buffer.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buffer.len() == CHUNK_SIZE {
                self.store_chunk()?;
            }
        }
        Ok(())
    }

    fn store_chunk(&mut self) -> Result<(), ProductError> {
        let index = self.chunk_hashes.len() as u32;
        self.chunk_hashes
            .push(hex::encode(Sha256::digest(&self.buffer)));
        self.writer
            .write_at(index as u64 * CHUNK_SIZE as u64, &self.buffer)?;
        self.buffer.clear();
        Ok(())
    }

    /// Stores the last chunk, profiles tabular data, makes the payload file durable
    /// under its final name, then writes the product record and flushes. On any error
    /// the payload written so far is removed (when the upload is dropped).
    pub async fn finish(mut self, now: i64) -> Result<ProductVersion, ProductError> {
        let product = self.finish_inner(now).await?;
        self.finished = true;
        Ok(product)
    }

    async fn finish_inner(&mut self, now: i64) -> Result<ProductVersion, ProductError> {
        if !self.buffer.is_empty() || self.chunk_hashes.is_empty() {
            self.store_chunk()?;
        }
        let mut product = ProductVersion {
            product_id: self.product_id.clone(),
            version: self.version,
            title: self.new.title.clone(),
            description: self.new.description.clone(),
            owner: self.new.owner.clone(),
            classification: self.new.classification,
            format: self.new.format,
            size: self.size,
            sha256: hex::encode(self.whole.clone().finalize()),
            chunk_size: CHUNK_SIZE as u32,
            chunk_hashes: self.chunk_hashes.clone(),
            profile: None,
            derived_from: self.new.derived_from.clone(),
            policy_odrl: self.new.policy_odrl.clone(),
            published_at: now,
        };
        let open = || {
            let mut reader = self.store.reader(&product);
            reader.unfinished = Some(self.unfinished.clone());
            reader
        };
        let profile = match product.format {
            Format::Csv => Some(schema::profile_csv(open)),
            Format::Jsonl => Some(schema::profile_jsonl(open)),
            Format::Bytes => None,
        };
        product.profile = profile.transpose().map_err(|e| ProductError::Profile {
            format: product.format,
            reason: e.to_string(),
        })?;
        self.writer.set_len(self.size)?;
        self.writer.sync()?;
        self.store.storage.blobs().rename(
            &self.unfinished,
            &payload_name(&product.product_id, product.version),
        )?;
        let (tree, record) = ProductStore::record_write(&product);
        self.store.storage.apply(tree, vec![record])?;
        self.store.storage.flush().await?;
        Ok(product)
    }

    /// Removes the payload of this upload.
    fn abort(&self) {
        let blobs = self.store.storage.blobs();
        let removed = blobs.remove(&self.unfinished).and_then(|()| {
            // A publish that failed after the rename, before its record was written.
            match self.store.get(&self.product_id, self.version) {
                Ok(None) => blobs.remove(&payload_name(&self.product_id, self.version)),
                _ => Ok(()),
            }
        });
        if let Err(e) = removed {
            tracing::error!(error = %e, "cannot remove the payload of a failed publish; it is removed at the next start");
        }
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if !self.finished {
            self.abort();
        }
    }
}
