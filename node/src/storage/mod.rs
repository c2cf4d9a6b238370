//! The node's storage seam: a small trait of the node's own ([`Storage`]) with sled
//! 0.34 as its implementation ([`SledStorage`]), so the engine can be swapped without
//! touching the rest of the node.
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
mod sled_engine;

pub use error::StorageError;
pub use sled_engine::{SLED_LOCK_FILE, SledStorage};

use crate::base::BoxFuture;

/// Keys and values, in key order.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

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

    /// Every key and value whose key starts with `prefix`, in key order.
    fn scan_prefix(&self, tree: &str, prefix: &[u8]) -> Result<Entries, StorageError>;

    /// The payload files beside the database (chunks of products and copies).
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
