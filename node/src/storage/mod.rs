//! The node's storage seam: a small trait of the node's own ([`Storage`]) with sled
//! 0.34 as its implementation ([`SledStorage`]), so the engine can be swapped without
//! touching the rest of the node.
//!
//! Durability rule: a write is durable only after [`Storage::flush`] has completed.
//! Nothing that must survive a crash (a trust list, a publish, an agreement, an audit
//! entry) is acknowledged before that. [`Storage::put_durable`] does both.
//!
//! Caveat of the sled implementation: sled 0.34's flush writes its log with
//! `sync_file_range` (see its `pagecache/iobuf.rs`), which waits for the data to reach
//! the device but flushes neither the device's write cache nor the file's metadata.
//! That survives a crash of the process, not necessarily a power cut. Payload files
//! ([`blobs`]) use `fsync`.

pub mod blobs;
pub mod files;

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};

/// A boxed future, so the trait stays usable as `Arc<dyn Storage>`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Storage failures. The node refuses the operation rather than go on without them.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    #[error("cannot open the database in {path}: {reason}")]
    Open { path: PathBuf, reason: String },
    #[error("database error in tree {tree:?}: {reason}")]
    Engine { tree: String, reason: String },
    #[error("cannot flush the database to disk: {0}")]
    Flush(String),
}

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

    /// Makes every write so far durable. Await it before acknowledging.
    fn flush(&self) -> BoxFuture<'_, Result<(), StorageError>>;

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

/// The file in a sled 0.34 database directory that sled locks while the database is
/// open (a running node holds it).
pub const SLED_LOCK_FILE: &str = "db";

/// [`Storage`] on sled 0.34.7.
pub struct SledStorage {
    db: sled::Db,
    /// Opened trees, kept because `open_tree` takes a lock and allocates.
    trees: Mutex<HashMap<String, sled::Tree>>,
    /// Large payloads, as files in `payloads/` inside the database directory.
    blobs: blobs::Blobs,
    /// Group flush: at most one `flush_async` in flight. Many concurrent flushes starve
    /// sled's I/O thread pool (each blocks a pool thread waiting for a buffer that
    /// another queued job must write), which hung the node under load; one at a time,
    /// with every caller covered by the first flush that starts after its writes, is
    /// both safe and faster.
    flush: FlushGate,
}

#[derive(Default)]
struct FlushGate {
    lock: tokio::sync::Mutex<()>,
    /// Flush requests so far; a request's writes happened before it took its number.
    requested: std::sync::atomic::AtomicU64,
    /// Every request numbered up to this is durable.
    durable: std::sync::atomic::AtomicU64,
}

impl SledStorage {
    /// Opens (or creates) the database in `path`.
    ///
    /// sled releases its file lock from a background thread shortly after the last
    /// handle of a database is dropped, so a database closed a moment ago may still be
    /// locked: a lock held by someone else is retried for up to one second before it is
    /// reported (then another process, e.g. a running node, really holds it).
    pub fn open(path: &Path) -> Result<Arc<Self>, StorageError> {
        let open = || sled::Config::new().path(path).open();
        let locked = |e: &sled::Error| matches!(e, sled::Error::Io(io) if io.kind() == std::io::ErrorKind::WouldBlock);
        let mut attempt = open();
        for _ in 0..40 {
            match &attempt {
                Err(e) if locked(e) => {
                    std::thread::sleep(std::time::Duration::from_millis(25));
                    attempt = open();
                }
                _ => break,
            }
        }
        let db = attempt.map_err(|e| StorageError::Open {
            path: path.to_owned(),
            reason: explain_open_error(&e),
        })?;
        let blobs = blobs::Blobs::open(&path.join("payloads")).map_err(|e| StorageError::Open {
            path: path.join("payloads"),
            reason: e.to_string(),
        })?;
        Ok(Arc::new(Self {
            db,
            trees: Mutex::new(HashMap::new()),
            blobs,
            flush: FlushGate::default(),
        }))
    }

    /// A database that lives only as long as this value, for tests.
    pub fn temporary() -> Result<Arc<Self>, StorageError> {
        let db = sled::Config::new()
            .temporary(true)
            .open()
            .map_err(|e| StorageError::Open {
                path: PathBuf::from("<temporary>"),
                reason: e.to_string(),
            })?;
        let blobs = blobs::Blobs::temporary().map_err(|e| StorageError::Open {
            path: PathBuf::from("<temporary>"),
            reason: e.to_string(),
        })?;
        Ok(Arc::new(Self {
            db,
            trees: Mutex::new(HashMap::new()),
            blobs,
            flush: FlushGate::default(),
        }))
    }

    fn tree(&self, name: &str) -> Result<sled::Tree, StorageError> {
        // A poisoned lock means another thread panicked while inserting a tree handle;
        // the map is still consistent (insert is the only mutation), so keep using it.
        let mut trees = self.trees.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = trees.get(name) {
            return Ok(t.clone());
        }
        let tree = self.db.open_tree(name).map_err(|e| engine_error(name, e))?;
        trees.insert(name.to_owned(), tree.clone());
        Ok(tree)
    }
}

impl SledStorage {
    /// Visits every tree and every key and value in it, in tree-name and key order, for a
    /// backup ([`crate::backup`]). The visit is not isolated from writers: the caller
    /// holds them back while it runs.
    pub fn for_each_entry<E: From<StorageError>>(
        &self,
        mut visit: impl FnMut(&str, &[u8], &[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut names: Vec<String> = self
            .db
            .tree_names()
            .iter()
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .collect();
        names.sort();
        for name in names {
            let tree = self.tree(&name)?;
            for item in tree.iter() {
                let (k, v) = item.map_err(|e| engine_error(&name, e))?;
                visit(&name, &k, &v)?;
            }
        }
        Ok(())
    }

    /// Bytes the database takes on disk.
    pub fn size_on_disk(&self) -> Result<u64, StorageError> {
        self.db.size_on_disk().map_err(|e| engine_error("*", e))
    }
}

fn engine_error(tree: &str, e: sled::Error) -> StorageError {
    StorageError::Engine {
        tree: tree.to_owned(),
        reason: e.to_string(),
    }
}

fn explain_open_error(e: &sled::Error) -> String {
    match e {
        sled::Error::Io(io) if io.kind() == std::io::ErrorKind::WouldBlock => {
            "the database is locked by another process; is another `liutong serve` running \
             with this data directory?"
                .to_owned()
        }
        other => other.to_string(),
    }
}

impl Storage for SledStorage {
    fn get(&self, tree: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self
            .tree(tree)?
            .get(key)
            .map_err(|e| engine_error(tree, e))?
            .map(|v| v.to_vec()))
    }

    fn put(&self, tree: &str, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        self.tree(tree)?
            .insert(key, value)
            .map_err(|e| engine_error(tree, e))?;
        Ok(())
    }

    fn delete(&self, tree: &str, key: &[u8]) -> Result<(), StorageError> {
        self.tree(tree)?
            .remove(key)
            .map_err(|e| engine_error(tree, e))?;
        Ok(())
    }

    fn insert_new(&self, tree: &str, key: &[u8], value: &[u8]) -> Result<bool, StorageError> {
        Ok(self
            .tree(tree)?
            .compare_and_swap(key, None as Option<&[u8]>, Some(value))
            .map_err(|e| engine_error(tree, e))?
            .is_ok())
    }

    fn apply(&self, tree: &str, writes: Vec<Write>) -> Result<(), StorageError> {
        let t = self.tree(tree)?;
        for w in writes {
            match w {
                Write::Put(k, v) => t.insert(k, v).map(|_| ()),
                Write::Delete(k) => t.remove(k).map(|_| ()),
            }
            .map_err(|e| engine_error(tree, e))?;
        }
        Ok(())
    }

    fn scan_prefix(&self, tree: &str, prefix: &[u8]) -> Result<Entries, StorageError> {
        self.tree(tree)?
            .scan_prefix(prefix)
            .map(|r| {
                r.map(|(k, v)| (k.to_vec(), v.to_vec()))
                    .map_err(|e| engine_error(tree, e))
            })
            .collect()
    }

    fn blobs(&self) -> &blobs::Blobs {
        &self.blobs
    }

    fn flush(&self) -> BoxFuture<'_, Result<(), StorageError>> {
        use std::sync::atomic::Ordering::SeqCst;
        Box::pin(async move {
            let ticket = self.flush.requested.fetch_add(1, SeqCst) + 1;
            let _one_at_a_time = self.flush.lock.lock().await;
            if self.flush.durable.load(SeqCst) >= ticket {
                return Ok(()); // a flush that started after this request covered it
            }
            // Every request numbered so far wrote before taking its number, so this
            // flush covers them all.
            let covers = self.flush.requested.load(SeqCst);
            // sled's blocking flush (its `flush_async` was seen to never complete under
            // concurrent load, with many databases in one process). On a multi-threaded
            // runtime it runs in place, the worker's other tasks moving to another
            // thread: that costs about a fifth less CPU per negotiation than handing it
            // to the blocking pool and back (bench `flow`). Elsewhere it goes to the
            // blocking pool, or runs directly outside any runtime.
            use tokio::runtime::{Handle, RuntimeFlavor};
            let flushed = match Handle::try_current().map(|h| h.runtime_flavor()) {
                Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(|| self.db.flush()),
                Ok(_) => {
                    let db = self.db.clone();
                    tokio::task::spawn_blocking(move || db.flush())
                        .await
                        .map_err(|e| StorageError::Flush(e.to_string()))?
                }
                Err(_) => self.db.flush(),
            };
            flushed.map_err(|e| StorageError::Flush(e.to_string()))?;
            self.flush.durable.fetch_max(covers, SeqCst);
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn puts_scans_and_batches() {
        let s = SledStorage::temporary().unwrap();
        s.put("t", b"a/1", b"one").unwrap();
        s.put("t", b"a/2", b"two").unwrap();
        s.put("t", b"b/1", b"other").unwrap();
        s.put("u", b"a/3", b"other tree").unwrap();
        let a = s.scan_prefix("t", b"a/").unwrap();
        assert_eq!(
            a,
            vec![
                (b"a/1".to_vec(), b"one".to_vec()),
                (b"a/2".to_vec(), b"two".to_vec())
            ]
        );
        s.apply(
            "t",
            vec![
                Write::Delete(b"a/1".to_vec()),
                Write::Put(b"a/9".to_vec(), b"nine".to_vec()),
            ],
        )
        .unwrap();
        assert_eq!(s.get("t", b"a/1").unwrap(), None);
        assert_eq!(s.get("t", b"a/9").unwrap(), Some(b"nine".to_vec()));
        assert!(s.insert_new("t", b"n", b"1").unwrap());
        assert!(!s.insert_new("t", b"n", b"2").unwrap());
        assert_eq!(s.get("t", b"n").unwrap(), Some(b"1".to_vec()));
        s.flush().await.unwrap();
    }

    #[tokio::test]
    async fn durable_writes_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = SledStorage::open(dir.path()).unwrap();
            s.put_durable("t", b"k", b"v").await.unwrap();
        }
        let s = SledStorage::open(dir.path()).unwrap();
        assert_eq!(s.get("t", b"k").unwrap(), Some(b"v".to_vec()));
    }
}
