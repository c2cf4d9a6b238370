//! The product store: product records in the database, payloads among the storage's
//! payload files, reads chunk by chunk, and the removal at open of what a crashed
//! publish left behind.

use std::io::Read;
use std::sync::Arc;

use super::{CHUNK_SIZE, ProductError, ProductVersion};
use crate::base::random::{RandomError, random_bytes};
use crate::storage::{Storage, Write};

pub(super) const PRODUCTS: &str = "products";
/// Chunks as nodes before payload files kept them (read only).
const CHUNKS: &str = "chunks";
/// The directory of product payloads among the storage's payload files.
const PAYLOADS: &str = "products";
pub(super) const UNFINISHED: &str = ".partial";

/// The node's data products.
#[derive(Clone)]
pub struct ProductStore {
    pub(super) storage: Arc<dyn Storage>,
}
impl ProductStore {
    /// Opens the store and removes chunks that a crashed publish left behind.
    pub fn open(storage: Arc<dyn Storage>) -> Result<Self, ProductError> {
        let store = Self { storage };
        store.remove_orphan_chunks()?;
        Ok(store)
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

    /// The versions of a product after the storage key `after`, oldest first, one page.
    pub fn versions_page(
        &self,
        product_id: &str,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<crate::storage::Page<ProductVersion>, ProductError> {
        let mut prefix = product_id.as_bytes().to_vec();
        prefix.push(0);
        crate::storage::page_where(
            self.storage.as_ref(),
            PRODUCTS,
            &prefix,
            after,
            limit,
            |_, v| decode(v).map(Some),
        )
    }

    /// The latest version of at most `limit` products (at least one) whose ID comes
    /// after `after`, by product ID, and whether more products follow.
    ///
    /// A page reads about as many records as it shows, in batches a little larger
    /// than the page, and decodes only the latest version of each product it shows:
    /// its cost does not depend on how many products follow it.
    pub fn list_page(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<ProductVersion>, bool), ProductError> {
        let limit = limit.max(1);
        let batch = (limit + 1).clamp(16, 256);
        let mut out: Vec<ProductVersion> = Vec::new();
        // The latest record seen of the product being read; decoded once the next
        // product's first record shows that no later version follows.
        let mut latest: Option<(Vec<u8>, Vec<u8>)> = None;
        // Past every version of the product `after`.
        let mut position = after.map(|id| product_key(id, u32::MAX));
        loop {
            let entries = self
                .storage
                .scan_page(PRODUCTS, b"", position.as_deref(), batch)?;
            let full = entries.len() == batch;
            for (key, value) in entries {
                position = Some(key.clone());
                if let Some((previous, record)) = latest.take() {
                    if same_product(&previous, &key) {
                        latest = Some((key, value));
                        continue;
                    }
                    if out.len() == limit {
                        return Ok((out, true));
                    }
                    out.push(decode(&record)?);
                }
                latest = Some((key, value));
            }
            if !full {
                let Some((_, record)) = latest else {
                    return Ok((out, false));
                };
                if out.len() == limit {
                    return Ok((out, true));
                }
                out.push(decode(&record)?);
                return Ok((out, false));
            }
        }
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

    /// The write that records `p` when its publish finishes: the tree and the write.
    /// Public so that a stopped node's storage can be filled in bulk with records as
    /// the store keeps them (benchmarks of large catalogs); `Storage::apply` the writes
    /// to the tree, then flush.
    pub fn record_write(p: &ProductVersion) -> (&'static str, Write) {
        let bytes = serde_json::to_vec(p).expect("product records serialize");
        (
            PRODUCTS,
            Write::Put(product_key(&p.product_id, p.version), bytes),
        )
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

    pub(super) fn read_chunk(
        &self,
        name: &str,
        index: u32,
    ) -> Result<Option<Vec<u8>>, ProductError> {
        Ok(self
            .storage
            .blobs()
            .read_at(name, index as u64 * CHUNK_SIZE as u64, CHUNK_SIZE)?)
    }

    /// The payload name of a version in the storage's blobs, for tests that damage it
    /// on purpose.
    pub fn payload_of(&self, product_id: &str, version: u32) -> String {
        payload_name(product_id, version)
    }

    /// A reader over a stored version's payload, chunk by chunk.
    /// The storage the products are kept in.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

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

/// Reads a stored payload chunk by chunk (never the whole payload at once).
pub struct ChunkReader {
    store: ProductStore,
    product_id: String,
    version: u32,
    /// Reads an unfinished publish's file instead (profiling before it completes).
    pub(super) unfinished: Option<String>,
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

/// Whether two product record keys ([`product_key`]) are versions of one product.
fn same_product(a: &[u8], b: &[u8]) -> bool {
    let id = |k: &[u8]| k.len().checked_sub(VERSION_SUFFIX).map(|n| k[..n].to_vec());
    id(a).is_some() && id(a) == id(b)
}

/// The bytes a product record key has after the product ID: a zero and the version.
const VERSION_SUFFIX: usize = 5;

pub(super) fn product_key(product_id: &str, version: u32) -> Vec<u8> {
    let mut key = product_id.as_bytes().to_vec();
    key.push(0);
    key.extend_from_slice(&version.to_be_bytes());
    key
}

/// The payload file of a version among the storage's payload files.
pub(super) fn payload_name(product_id: &str, version: u32) -> String {
    format!("{PAYLOADS}/{product_id}/v{version}")
}

fn chunk_key(product_id: &str, version: u32, index: u32) -> Vec<u8> {
    let mut key = product_key(product_id, version);
    key.push(0);
    key.extend_from_slice(&index.to_be_bytes());
    key
}

pub(super) fn new_product_id() -> Result<String, RandomError> {
    Ok(format!("prd-{}", hex::encode(random_bytes::<8>()?)))
}
#[cfg(test)]
mod tests {
    use liutong_policy::Classification;
    use sha2::{Digest, Sha256};

    use super::super::{Format, NewVersion};
    use super::*;
    use crate::identity::ParticipantId;
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
        // A crash: no finish, and the process gone before the upload is dropped.
        std::mem::forget(up);
        // And a crash after the rename, before the record: a payload nothing names.
        let orphan = store.begin(new_version(Format::Bytes)).unwrap();
        let orphan_dir = format!("{PAYLOADS}/{}", orphan.product_id());
        storage
            .blobs()
            .rename(&orphan.unfinished, &format!("{orphan_dir}/v1"))
            .unwrap();
        std::mem::forget(orphan);
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
}
