//! The node's storage seam: a small trait of the node's own ([`Storage`]) with two
//! engines, sled 0.34 ([`SledStorage`], the default, embedded) and PostgreSQL
//! ([`PostgresStorage`], one database that can outlive a machine), so the engine can be
//! swapped without touching the rest of the node.
//!
//! Durability rule: a write is durable only after [`Storage::flush`] has completed.
//! Nothing that must survive a crash or a power cut (a trust list, a publish, an
//! agreement, an audit entry) is acknowledged before that. [`Storage::put_durable`]
//! does both.
//!
//! sled 0.34's own flush writes its log with `sync_file_range` (see its
//! `pagecache/iobuf.rs`), which waits for the data to reach the device but flushes
//! neither the device's write cache nor the file's metadata, and it never fsyncs the
//! files it keeps values over about 128 KiB in (`blobs/`, see its
//! `pagecache/blob_io.rs`) nor its `conf` file. That survives a crash of the process,
//! not a power cut. So [`SledStorage::flush`] follows sled's flush with a barrier of
//! its own, inside the group flush: `fdatasync` of the log, `fsync` of every new blob
//! file and of the directories that name them and sled's snapshots. Payload files
//! ([`blobs`]) are fsynced by their writers. A failed fsync puts the storage in a
//! failed state for the rest of the process ([`durability`]).

pub mod blobs;
pub mod durability;
mod error;
pub mod fault;
pub mod postgres;
mod sled_engine;

pub use error::StorageError;
pub use postgres::{PgTarget, PostgresStorage};
pub use sled_engine::{SLED_LOCK_FILE, SledStorage};

use crate::base::BoxFuture;

/// Keys and values, in key order.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// One page of a listing: its items, and the storage key the next page starts after
/// (`None` on the last page).
#[derive(Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<Vec<u8>>,
}

/// One page of the items `keep` makes of the entries whose key starts with `prefix`,
/// after `after`, in key order: at most `limit` items (at least one), read in batches
/// so that entries `keep` passes over (`None`) do not shorten the page.
pub fn page_where<T, E: From<StorageError>>(
    storage: &dyn Storage,
    tree: &str,
    prefix: &[u8],
    after: Option<&[u8]>,
    limit: usize,
    mut keep: impl FnMut(&[u8], &[u8]) -> Result<Option<T>, E>,
) -> Result<Page<T>, E> {
    let limit = limit.max(1);
    let batch = (limit + 1).clamp(64, 1024);
    let mut items = Vec::new();
    let mut last_kept: Option<Vec<u8>> = None;
    let mut position = after.map(<[u8]>::to_vec);
    loop {
        let entries = storage.scan_page(tree, prefix, position.as_deref(), batch)?;
        let full = entries.len() == batch;
        for (key, value) in entries {
            if let Some(item) = keep(&key, &value)? {
                if items.len() == limit {
                    // One more beyond the page: the next page starts after the last kept.
                    return Ok(Page {
                        items,
                        next: last_kept,
                    });
                }
                items.push(item);
                last_kept = Some(key.clone());
            }
            position = Some(key);
        }
        if !full {
            return Ok(Page { items, next: None });
        }
    }
}

/// One write of an ordered batch (see [`Storage::apply`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Write {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
}

/// The node's view of an ordered key-value store with named trees.
pub trait Storage: Send + Sync + 'static {
    fn get(&self, tree: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError>;

    fn put(&self, tree: &str, key: &[u8], value: &[u8]) -> Result<(), StorageError>;

    fn delete(&self, tree: &str, key: &[u8]) -> Result<(), StorageError>;

    /// Inserts `value` only if `key` is absent, atomically; returns whether it did.
    fn insert_new(&self, tree: &str, key: &[u8], value: &[u8]) -> Result<bool, StorageError>;

    /// Applies the writes to one tree in order. Each write is atomic; the sequence is
    /// not: a crash can leave any prefix of it. Callers put last the write that commits
    /// the others (a size, a record that counts them), so a crash leaves at most data
    /// that nothing refers to yet, which the next attempt overwrites.
    ///
    /// (sled's own `apply_batch` and transactions take a global exclusive lock that
    /// deadlocks against concurrent `flush_async` under load in 0.34.7 — seen here with
    /// 16 concurrent negotiations — so the sled implementation does not use them.)
    fn apply(&self, tree: &str, writes: Vec<Write>) -> Result<(), StorageError>;

    /// Applies writes to several trees in order, under [`Storage::apply`]'s contract:
    /// each write atomic, a crash can leave any prefix of the sequence, so the write
    /// that commits the others goes last. An engine may do better: PostgreSQL commits
    /// the whole sequence or none of it, in one round trip.
    ///
    /// The default applies each run of writes to one tree with [`Storage::apply`].
    fn apply_trees(&self, writes: Vec<(&str, Write)>) -> Result<(), StorageError> {
        let mut writes = writes.into_iter().peekable();
        while let Some((tree, first)) = writes.next() {
            let mut run = vec![first];
            while let Some((_, next)) = writes.next_if(|(t, _)| *t == tree) {
                run.push(next);
            }
            self.apply(tree, run)?;
        }
        Ok(())
    }

    /// Every key and value whose key starts with `prefix`, in key order.
    fn scan_prefix(&self, tree: &str, prefix: &[u8]) -> Result<Entries, StorageError>;

    /// At most `limit` of the entries whose key starts with `prefix` and comes after
    /// `after` (from the first one when `None`), in key order: one page of a listing,
    /// read without reading the rest of the tree.
    ///
    /// The default reads the whole prefix and slices it; engines that can seek
    /// override it.
    fn scan_page(
        &self,
        tree: &str,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StorageError> {
        Ok(self
            .scan_prefix(tree, prefix)?
            .into_iter()
            .filter(|(k, _)| after.is_none_or(|a| k.as_slice() > a))
            .take(limit)
            .collect())
    }

    /// The payloads (the bytes of products and copies) the database's records count.
    fn blobs(&self) -> &blobs::Blobs;

    /// Makes every write so far durable. Await it before acknowledging. Once a flush
    /// has failed, every later flush and write fails at once ([`durability`]).
    fn flush(&self) -> BoxFuture<'_, Result<(), StorageError>>;

    /// A receiver that holds `Some(reason)` once the storage has failed.
    fn failures(&self) -> tokio::sync::watch::Receiver<Option<String>> {
        self.blobs().durability().watch()
    }

    /// `put` then `flush`: the value is on disk when this returns.
    fn put_durable<'a>(
        &'a self,
        tree: &'a str,
        key: &'a [u8],
        value: &'a [u8],
    ) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(async move {
            self.put(tree, key, value)?;
            self.flush().await
        })
    }
}

/// Why a node secret could not be had.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("cannot make a random secret: {0}")]
    Random(#[from] crate::base::random::RandomError),
}

/// The random 32-byte secret of this node stored at `tree`/`name`, made and stored now
/// if there is none. When two first uses race, the one stored first is the secret and
/// both get it. `None` when the stored value is not 32 bytes long (damaged).
pub fn node_secret(
    storage: &dyn Storage,
    tree: &str,
    name: &[u8],
) -> Result<Option<Vec<u8>>, SecretError> {
    if storage.get(tree, name)?.is_none() {
        let fresh = crate::base::random::random_bytes::<32>()?;
        storage.insert_new(tree, name, &fresh)?;
    }
    Ok(storage.get(tree, name)?.filter(|s| s.len() == 32))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(entries: &Entries) -> Vec<&[u8]> {
        entries.iter().map(|(k, _)| k.as_slice()).collect()
    }

    #[test]
    fn pages_stay_inside_their_prefix_and_start_after_the_position() {
        let s = SledStorage::temporary().unwrap();
        for k in ["a/1", "b/1", "b/2", "b/3", "c/1"] {
            s.put("t", k.as_bytes(), b"v").unwrap();
        }
        let page = |after: Option<&[u8]>, limit| s.scan_page("t", b"b/", after, limit).unwrap();
        assert_eq!(keys(&page(None, 2)), [b"b/1", b"b/2"]);
        assert_eq!(keys(&page(Some(b"b/2"), 5)), [b"b/3"]);
        assert_eq!(keys(&page(Some(b"a/1"), 5)), [b"b/1", b"b/2", b"b/3"]);
        assert!(page(Some(b"b/3"), 5).is_empty());
        assert!(page(Some(b"z"), 5).is_empty());
    }

    #[test]
    fn a_filtered_page_is_full_and_names_where_the_next_starts() {
        let s = SledStorage::temporary().unwrap();
        for i in 0..300u32 {
            s.put("t", format!("k{i:04}").as_bytes(), &i.to_be_bytes())
                .unwrap();
        }
        let even = |_: &[u8], v: &[u8]| {
            let i = u32::from_be_bytes(v.try_into().unwrap());
            Ok::<_, StorageError>((i % 2 == 0).then_some(i))
        };
        let first = page_where(s.as_ref(), "t", b"k", None, 100, even).unwrap();
        assert_eq!(first.items, (0..200).step_by(2).collect::<Vec<_>>());
        assert_eq!(first.next.as_deref(), Some(&b"k0198"[..]));
        let second = page_where(s.as_ref(), "t", b"k", first.next.as_deref(), 100, even).unwrap();
        assert_eq!(second.items, (200..300).step_by(2).collect::<Vec<_>>());
        assert_eq!(second.next, None, "the last page names no next one");
    }
}
