//! Data products in storage: versioned, chunked (about 1 MiB a chunk) payloads with a
//! SHA-256 per chunk and for the whole, and their metadata.
//!
//! The payload of a version is one file among the storage's payload files
//! (`products/<product>/v<version>`, chunk `i` at offset `i × CHUNK_SIZE`); the records
//! are in the database. Publishing streams: chunks are written to an unfinished file as
//! they arrive; at the end the file is synced and renamed, and only then the product
//! record is written and flushed. A publish that fails part-way removes its file, and
//! files left by a crash (unfinished, or with no product record) are removed at start,
//! so nothing is ever stored half-done. Earlier versions are kept.
//!
//! (Nodes before payload files kept chunks in the database's `chunks` tree; those are
//! still read.)

use std::io::Read;
use std::sync::Arc;

use liutong_policy::Classification;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::schema::{self, Profile};
use crate::base::random::{RandomError, random_bytes};
use crate::identity::ParticipantId;
use crate::storage::blobs::BlobWriter;
use crate::storage::{Storage, StorageError, Write};

/// Size of a chunk, in bytes.
pub const CHUNK_SIZE: usize = 1 << 20;

const PRODUCTS: &str = "products";
/// Chunks as nodes before payload files kept them (read only).
const CHUNKS: &str = "chunks";
/// The directory of product payloads among the storage's payload files.
const PAYLOADS: &str = "products";
const UNFINISHED: &str = ".partial";

/// The payload format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Csv,
    Jsonl,
    Bytes,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "csv" => Ok(Self::Csv),
            "jsonl" => Ok(Self::Jsonl),
            "bytes" => Ok(Self::Bytes),
            other => Err(format!("unknown format {other:?}; use csv, jsonl or bytes")),
        }
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Csv => "csv",
            Self::Jsonl => "jsonl",
            Self::Bytes => "bytes",
        })
    }
}

/// One version of a data product.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProductVersion {
    /// Stable across versions, e.g. `prd-3f9a…`.
    pub product_id: String,
    pub version: u32,
    pub title: String,
    pub description: String,
    pub owner: ParticipantId,
    pub classification: Classification,
    pub format: Format,
    pub size: u64,
    /// SHA-256 of the whole payload, hex.
    pub sha256: String,
    pub chunk_size: u32,
    /// SHA-256 of every chunk, hex, in order.
    pub chunk_hashes: Vec<String>,
    /// Columns and quality figures (CSV and JSON Lines).
    pub profile: Option<Profile>,
    /// Products this one was derived from.
    #[serde(default)]
    pub derived_from: Vec<String>,
    /// The offer's policy, as ODRL JSON-LD; `None` when the product is not offered.
    pub policy_odrl: Option<serde_json::Value>,
    pub published_at: i64,
}

impl ProductVersion {
    /// The offer of this version (there is one per offered version).
    pub fn offer_id(&self) -> Option<String> {
        self.policy_odrl
            .as_ref()
            .map(|_| format!("{}/v{}", self.product_id, self.version))
    }

    /// The product's URN, the target of its policies.
    pub fn target(product_id: &str) -> String {
        format!("urn:liutong:product:{product_id}")
    }
}

/// SHA-256 over a payload's chunk hashes (each as its 32 bytes, in order), hex. With the
/// chunk size it fixes every chunk's bytes, so an agreement that names it fixes the
/// payload chunk by chunk: a consumer that checks each chunk as it arrives needs no
/// second pass over the whole payload. `None` if a hash is not 64 hex digits.
pub fn chunk_list_sha256(chunk_hashes: &[String]) -> Option<String> {
    let mut list = Sha256::new();
    for h in chunk_hashes {
        let mut raw = [0u8; 32];
        hex::decode_to_slice(h, &mut raw).ok()?;
        list.update(raw);
    }
    Some(hex::encode(list.finalize()))
}

/// Splits an offer ID into product ID and version.
pub fn parse_offer_id(offer_id: &str) -> Option<(&str, u32)> {
    let (product, version) = offer_id.rsplit_once("/v")?;
    Some((product, version.parse().ok()?))
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProductError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("product {0} does not exist")]
    NotFound(String),
    #[error("the {format} data does not parse: {reason}")]
    Profile { format: Format, reason: String },
    #[error("the stored product is damaged: {0}")]
    Damaged(String),
    #[error("cannot write or read the payload file: {0}")]
    Payload(#[from] std::io::Error),
    #[error("cannot make a product ID: {0}")]
    Random(#[from] RandomError),
}

/// What the publisher says about a new product or version.
#[derive(Clone, Debug)]
pub struct NewVersion {
    /// `None` for a new product, `Some(id)` for a new version of it.
    pub product_id: Option<String>,
    pub title: String,
    pub description: String,
    pub owner: ParticipantId,
    pub classification: Classification,
    pub format: Format,
    pub derived_from: Vec<String>,
    pub policy_odrl: Option<serde_json::Value>,
}

/// The node's data products.
#[derive(Clone)]
pub struct ProductStore {
    storage: Arc<dyn Storage>,
}

impl ProductStore {
    /// Opens the store and removes chunks that a crashed publish left behind.
    pub fn open(storage: Arc<dyn Storage>) -> Result<Self, ProductError> {
        let store = Self { storage };
        store.remove_orphan_chunks()?;
        Ok(store)
    }

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
        })
    }

    /// A given version.
    pub fn get(
        &self,
        product_id: &str,
        version: u32,
    ) -> Result<Option<ProductVersion>, ProductError> {
        self.storage
            .get(PRODUCTS, &product_key(product_id, version))?
            .map(|b| decode(&b))
            .transpose()
    }

    /// The latest version of a product.
    pub fn latest(&self, product_id: &str) -> Result<Option<ProductVersion>, ProductError> {
        Ok(self.versions(product_id)?.pop())
    }

    /// Every version of a product, oldest first.
    pub fn versions(&self, product_id: &str) -> Result<Vec<ProductVersion>, ProductError> {
        let mut prefix = product_id.as_bytes().to_vec();
        prefix.push(0);
        self.storage
            .scan_prefix(PRODUCTS, &prefix)?
            .iter()
            .map(|(_, v)| decode(v))
            .collect()
    }

    /// The latest version of every product, ordered by product ID.
    pub fn list(&self) -> Result<Vec<ProductVersion>, ProductError> {
        let mut out: Vec<ProductVersion> = Vec::new();
        for (_, v) in self.storage.scan_prefix(PRODUCTS, b"")? {
            let p = decode(&v)?;
            match out.last_mut() {
                Some(last) if last.product_id == p.product_id => *last = p,
                _ => out.push(p),
            }
        }
        Ok(out)
    }

    /// One stored chunk.
    pub fn chunk(
        &self,
        product_id: &str,
        version: u32,
        index: u32,
    ) -> Result<Vec<u8>, ProductError> {
        let missing = || {
            ProductError::Damaged(format!(
                "chunk {index} of {product_id} v{version} is missing"
            ))
        };
        let name = payload_name(product_id, version);
        match self.read_chunk(&name, index)? {
            Some(data) if !data.is_empty() || index == 0 => Ok(data),
            Some(_) => Err(missing()),
            None => self
                .storage
                .get(CHUNKS, &chunk_key(product_id, version, index))?
                .ok_or_else(missing),
        }
    }

    fn read_chunk(&self, name: &str, index: u32) -> Result<Option<Vec<u8>>, ProductError> {
        Ok(self
            .storage
            .blobs()
            .read_at(name, index as u64 * CHUNK_SIZE as u64, CHUNK_SIZE)?)
    }

    /// The payload file of a version, for tests that damage it on purpose.
    pub fn payload_path(
        &self,
        product_id: &str,
        version: u32,
    ) -> Result<std::path::PathBuf, ProductError> {
        Ok(self
            .storage
            .blobs()
            .path(&payload_name(product_id, version))?)
    }

    /// A reader over a stored version's payload, chunk by chunk.
    pub fn reader(&self, p: &ProductVersion) -> ChunkReader {
        ChunkReader {
            store: self.clone(),
            product_id: p.product_id.clone(),
            version: p.version,
            unfinished: None,
            chunks: p.chunk_hashes.len() as u32,
            next: 0,
            current: Vec::new(),
            position: 0,
        }
    }

    fn remove_orphan_chunks(&self) -> Result<(), ProductError> {
        let blobs = self.storage.blobs();
        for product in blobs.list(PAYLOADS)? {
            let dir = format!("{PAYLOADS}/{product}");
            for file in blobs.list(&dir)? {
                let known = match file.strip_prefix('v').and_then(|v| v.parse::<u32>().ok()) {
                    Some(version) => self
                        .storage
                        .get(PRODUCTS, &product_key(&product, version))?
                        .is_some(),
                    None => false, // unfinished
                };
                if !known {
                    tracing::warn!(file = %file, product = %product, "removing the payload of an unfinished publish");
                    blobs.remove(&format!("{dir}/{file}"))?;
                }
            }
        }
        self.remove_orphan_legacy_chunks()
    }

    fn remove_orphan_legacy_chunks(&self) -> Result<(), ProductError> {
        let mut orphans = Vec::new();
        let mut last: Option<(Vec<u8>, bool)> = None;
        for (key, _) in self.storage.scan_prefix(CHUNKS, b"")? {
            // Key: product \0 version(4) \0 index(4); the record key is its first part.
            let record = key[..key.len() - 5].to_vec();
            let known = match &last {
                Some((k, known)) if *k == record => *known,
                _ => {
                    let known = self.storage.get(PRODUCTS, &record)?.is_some();
                    last = Some((record, known));
                    known
                }
            };
            if !known {
                orphans.push(Write::Delete(key));
            }
        }
        if !orphans.is_empty() {
            tracing::warn!(
                chunks = orphans.len(),
                "removing chunks of an unfinished publish"
            );
            self.storage.apply(CHUNKS, orphans)?;
        }
        Ok(())
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
    unfinished: String,
    buffer: Vec<u8>,
    chunk_hashes: Vec<String>,
    whole: Sha256,
    size: u64,
}

impl Upload {
    pub fn product_id(&self) -> &str {
        &self.product_id
    }

    pub fn version(&self) -> u32 {
        self.version
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
    /// the payload written so far is removed.
    pub async fn finish(mut self, now: i64) -> Result<ProductVersion, ProductError> {
        let result = self.finish_inner(now).await;
        if result.is_err() {
            self.abort();
        }
        result
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
        let bytes = serde_json::to_vec(&product).expect("product records serialize");
        self.store.storage.put(
            PRODUCTS,
            &product_key(&product.product_id, product.version),
            &bytes,
        )?;
        self.store.storage.flush().await?;
        Ok(product)
    }

    /// Removes the payload of this upload.
    pub fn abort(&self) {
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

/// Reads a stored payload chunk by chunk (never the whole payload at once).
pub struct ChunkReader {
    store: ProductStore,
    product_id: String,
    version: u32,
    /// Reads an unfinished publish's file instead (profiling before it completes).
    unfinished: Option<String>,
    chunks: u32,
    next: u32,
    current: Vec<u8>,
    position: usize,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.position == self.current.len() {
            if self.next == self.chunks {
                return Ok(0);
            }
            self.current = match &self.unfinished {
                Some(name) => self
                    .store
                    .read_chunk(name, self.next)
                    .map_err(std::io::Error::other)?
                    .unwrap_or_default(),
                None => self
                    .store
                    .chunk(&self.product_id, self.version, self.next)
                    .map_err(std::io::Error::other)?,
            };
            self.position = 0;
            self.next += 1;
        }
        let n = buf.len().min(self.current.len() - self.position);
        buf[..n].copy_from_slice(&self.current[self.position..self.position + n]);
        self.position += n;
        Ok(n)
    }
}

fn decode(bytes: &[u8]) -> Result<ProductVersion, ProductError> {
    serde_json::from_slice(bytes).map_err(|e| ProductError::Damaged(e.to_string()))
}

fn product_key(product_id: &str, version: u32) -> Vec<u8> {
    let mut key = product_id.as_bytes().to_vec();
    key.push(0);
    key.extend_from_slice(&version.to_be_bytes());
    key
}

/// The payload file of a version among the storage's payload files.
fn payload_name(product_id: &str, version: u32) -> String {
    format!("{PAYLOADS}/{product_id}/v{version}")
}

fn chunk_key(product_id: &str, version: u32, index: u32) -> Vec<u8> {
    let mut key = product_key(product_id, version);
    key.push(0);
    key.extend_from_slice(&index.to_be_bytes());
    key
}

fn new_product_id() -> Result<String, RandomError> {
    Ok(format!("prd-{}", hex::encode(random_bytes::<8>()?)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::SledStorage;

    fn new_version(format: Format) -> NewVersion {
        NewVersion {
            product_id: None,
            title: "Air quality".into(),
            description: "hourly".into(),
            owner: ParticipantId::parse("91110000600037341L").unwrap(),
            classification: Classification::General2,
            format,
            derived_from: vec![],
            policy_odrl: None,
        }
    }

    #[tokio::test]
    async fn chunks_hashes_versions_and_reads_back() {
        let store = ProductStore::open(SledStorage::temporary().unwrap()).unwrap();
        let payload: Vec<u8> = (0..(CHUNK_SIZE * 2 + 100))
            .map(|i| (i % 251) as u8)
            .collect();
        let mut up = store.begin(new_version(Format::Bytes)).unwrap();
        for part in payload.chunks(70_000) {
            up.write(part).unwrap();
        }
        let p = up.finish(1).await.unwrap();
        assert_eq!(p.chunk_hashes.len(), 3);
        assert_eq!(p.size, payload.len() as u64);
        assert_eq!(p.sha256, hex::encode(Sha256::digest(&payload)));
        assert_eq!(
            p.chunk_hashes[2],
            hex::encode(Sha256::digest(&payload[2 * CHUNK_SIZE..]))
        );
        let mut back = Vec::new();
        store.reader(&p).read_to_end(&mut back).unwrap();
        assert_eq!(back, payload);

        let mut next = new_version(Format::Bytes);
        next.product_id = Some(p.product_id.clone());
        let mut up = store.begin(next).unwrap();
        up.write(b"v2").unwrap();
        let v2 = up.finish(2).await.unwrap();
        assert_eq!(v2.version, 2);
        assert_eq!(store.versions(&p.product_id).unwrap().len(), 2, "v1 kept");
        assert_eq!(store.list().unwrap(), vec![v2]);
    }

    #[tokio::test]
    async fn a_failed_publish_leaves_nothing() {
        let storage = SledStorage::temporary().unwrap();
        let store = ProductStore::open(storage.clone()).unwrap();
        let mut up = store.begin(new_version(Format::Csv)).unwrap();
        let dir = format!("{PAYLOADS}/{}", up.product_id());
        // Invalid UTF-8 in a CSV: the profile fails, so the publish fails.
        up.write(&vec![b'a'; CHUNK_SIZE + 10]).unwrap();
        up.write(b",\n\xff\xfe,\"unterminated\n").unwrap();
        assert_eq!(storage.blobs().list(&dir).unwrap().len(), 1, "written");
        let err = up.finish(1).await.unwrap_err();
        assert!(matches!(err, ProductError::Profile { .. }), "{err}");
        assert!(store.list().unwrap().is_empty());
        assert!(
            storage.blobs().list(&dir).unwrap().is_empty(),
            "payload removed"
        );
    }

    #[tokio::test]
    async fn orphan_chunks_are_removed_at_open() {
        let storage = SledStorage::temporary().unwrap();
        let store = ProductStore::open(storage.clone()).unwrap();
        let mut up = store.begin(new_version(Format::Bytes)).unwrap();
        let dir = format!("{PAYLOADS}/{}", up.product_id());
        up.write(&vec![1u8; CHUNK_SIZE * 2]).unwrap();
        // A crash: no finish, no abort.
        drop(up);
        // And a crash after the rename, before the record: a payload nothing names.
        let orphan = store.begin(new_version(Format::Bytes)).unwrap();
        let orphan_dir = format!("{PAYLOADS}/{}", orphan.product_id());
        storage
            .blobs()
            .rename(&orphan.unfinished, &format!("{orphan_dir}/v1"))
            .unwrap();
        drop(orphan);
        // And chunks a node before payload files left in the database.
        storage
            .put(CHUNKS, &chunk_key("prd-old", 1, 0), b"x")
            .unwrap();
        let kept = {
            let mut up = store.begin(new_version(Format::Bytes)).unwrap();
            up.write(b"published").unwrap();
            up.finish(1).await.unwrap()
        };
        assert_eq!(storage.blobs().list(&dir).unwrap(), vec!["v1.partial"]);
        assert_eq!(storage.blobs().list(&orphan_dir).unwrap(), vec!["v1"]);

        let store = ProductStore::open(storage.clone()).unwrap();
        assert!(storage.blobs().list(&dir).unwrap().is_empty());
        assert!(storage.blobs().list(&orphan_dir).unwrap().is_empty());
        assert!(storage.scan_prefix(CHUNKS, b"").unwrap().is_empty());
        let mut back = Vec::new();
        store.reader(&kept).read_to_end(&mut back).unwrap();
        assert_eq!(back, b"published", "a finished publish is kept");
    }

    #[tokio::test]
    async fn chunks_stored_before_payload_files_are_still_read() {
        let storage = SledStorage::temporary().unwrap();
        let store = ProductStore::open(storage.clone()).unwrap();
        storage
            .put(PRODUCTS, &product_key("prd-old", 1), b"{}")
            .unwrap();
        storage
            .put(CHUNKS, &chunk_key("prd-old", 1, 0), b"old bytes")
            .unwrap();
        assert_eq!(store.chunk("prd-old", 1, 0).unwrap(), b"old bytes");
        assert!(matches!(
            store.chunk("prd-old", 1, 1),
            Err(ProductError::Damaged(_))
        ));
    }

    #[test]
    fn offer_ids_split() {
        assert_eq!(parse_offer_id("prd-ab/v12"), Some(("prd-ab", 12)));
        assert_eq!(parse_offer_id("prd-ab"), None);
    }
}
