//! Making writes durable, and the failed state a storage enters when it cannot.
//!
//! Every fsync of the storage (the database log, sled's blob files, payload files, the
//! directories that name them) goes through one [`Durability`]. When one fails, the
//! storage fails closed for the rest of the process: after a failed fsync the kernel
//! may have dropped the dirty pages and marked them clean, so a second fsync can
//! succeed without the data ever reaching the disk (PostgreSQL learnt this in 2018).
//! Retrying would acknowledge writes that are not on disk, so nothing is retried:
//! every later flush and every later write is refused at once with the first failure
//! as the reason, and the node stops acknowledging until it is restarted (a restart
//! recovers from what the disk really holds). What was durable before stays so.
//!
//! The node learns of the failure through [`Durability::watch`] (health, log, alert
//! are the runtime's business, not the storage's).

use std::fs::File;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use tokio::sync::watch;

use super::error::StorageError;
use super::fault::Fault;

/// The fsyncs of one storage, and whether one has failed.
pub struct Durability {
    /// A test's injected failure ([`super::fault`]).
    fault: Option<Fault>,
    /// The first failure: set once, never cleared.
    failure: OnceLock<String>,
    /// Tells subscribers the failure (`None` while the storage is sound).
    failed: watch::Sender<Option<String>>,
}

impl Durability {
    pub fn new(fault: Option<Fault>) -> Arc<Self> {
        Arc::new(Self {
            fault,
            failure: OnceLock::new(),
            failed: watch::channel(None).0,
        })
    }

    /// The reason the storage failed, once it has.
    pub fn failure(&self) -> Option<&str> {
        self.failure.get().map(String::as_str)
    }

    /// A receiver that holds `Some(reason)` once the storage has failed.
    pub fn watch(&self) -> watch::Receiver<Option<String>> {
        self.failed.subscribe()
    }

    /// `Err` once the storage has failed: call before any write.
    pub fn check(&self) -> Result<(), StorageError> {
        match self.failure.get() {
            Some(reason) => Err(StorageError::Failed(reason.clone())),
            None => Ok(()),
        }
    }

    /// Puts the storage in the failed state (the first reason stays) and returns the
    /// error to answer with.
    pub fn fail(&self, reason: String) -> StorageError {
        let first = self.failure.get_or_init(|| reason).clone();
        self.failed.send_if_modified(|current| {
            let changed = current.is_none();
            current.get_or_insert_with(|| first.clone());
            changed
        });
        StorageError::Failed(first)
    }

    /// `fdatasync` of `file` (at `path`): its bytes and what is needed to read them.
    pub fn sync_data(&self, file: &File, path: &Path) -> Result<(), StorageError> {
        self.sync(path, || file.sync_data())
    }

    /// `fsync` of `file` (at `path`): its bytes and all its metadata.
    pub fn sync_all(&self, file: &File, path: &Path) -> Result<(), StorageError> {
        self.sync(path, || file.sync_all())
    }

    /// `fsync` of directory `dir`: the names in it (created, renamed, removed entries).
    pub fn sync_dir(&self, dir: &Path) -> Result<(), StorageError> {
        self.sync(dir, || File::open(dir)?.sync_all())
    }

    fn sync(
        &self,
        path: &Path,
        fsync: impl FnOnce() -> std::io::Result<()>,
    ) -> Result<(), StorageError> {
        self.check()?;
        let result = match &self.fault {
            Some(fault) => fault(path).and_then(|()| fsync()),
            None => fsync(),
        };
        result.map_err(|e| self.fail(format!("fsync of {} failed: {e}", path.display())))
    }
}

/// The storage failure behind `e`, if there is one anywhere in its chain of sources
/// (also inside an `io::Error`, as payload files report it).
pub fn failure_in<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a StorageError> {
    let mut next = Some(e);
    while let Some(e) = next {
        if let Some(s @ StorageError::Failed(_)) = e.downcast_ref::<StorageError>() {
            return Some(s);
        }
        if let Some(s @ StorageError::Failed(_)) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<StorageError>())
        {
            return Some(s);
        }
        next = e.source();
    }
    None
}
