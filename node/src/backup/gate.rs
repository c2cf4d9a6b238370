//! The write gate: the node's storage as [`GatedStorage`], whose write calls hold a
//! shared gate that a backup holds exclusively while it copies the database, so that
//! the copy is the state between two write calls.

use std::io::Write;
use std::sync::{Arc, RwLock};

use super::creating::write_backup;
use super::{BackupError, BackupFile, BackupHeader, BackupSummary};
use crate::base::BoxFuture;
use crate::identity::{ParticipantId, SigningKey};
use crate::storage::{Entries, SledStorage, Storage, StorageError, Write as Op};

/// The node's [`Storage`], with a gate that a backup closes to hold writers back while
/// it copies the database (see the module doc).
pub struct GatedStorage {
    inner: Arc<dyn Storage>,
    /// The same storage when it is sled, whose files a backup copies; a PostgreSQL
    /// database is backed up with the database's own tools.
    sled: Option<Arc<SledStorage>>,
    gate: RwLock<()>,
}

impl GatedStorage {
    pub fn new(inner: Arc<SledStorage>) -> Self {
        Self {
            inner: inner.clone(),
            sled: Some(inner),
            gate: RwLock::new(()),
        }
    }

    /// Another engine's storage, which this node does not back up itself.
    pub fn other(inner: Arc<dyn Storage>) -> Self {
        Self {
            inner,
            sled: None,
            gate: RwLock::new(()),
        }
    }

    fn sled(&self) -> Result<&Arc<SledStorage>, BackupError> {
        self.sled.as_ref().ok_or_else(|| {
            BackupError::Target(
                "this node's database is in PostgreSQL: back it up with the database's own \
                 tools (pg_dump, or the server's base backups and WAL archive)"
                    .into(),
            )
        })
    }

    /// Bytes the database takes on disk.
    /// (0 for a database that is not on this node's disk.)
    pub fn database_bytes(&self) -> Result<u64, StorageError> {
        match &self.sled {
            Some(sled) => sled.size_on_disk(),
            None => Ok(0),
        }
    }

    /// Writes a backup of `participant`'s database and `node_files` to `out`, with
    /// writers held back while the database's entries are copied (not while the payload
    /// files are, which do not go through the gate). The header is made once writers are
    /// held, from the database itself, so the audit log size it announces is the one
    /// the copy holds. Returns the header and what the backup holds.
    /// Blocking: call it from a blocking thread.
    pub fn write_backup<W: Write>(
        &self,
        out: W,
        participant: &ParticipantId,
        node_files: &[BackupFile],
        key: &SigningKey,
    ) -> Result<(BackupHeader, BackupSummary), BackupError> {
        let sled = self.sled()?;
        // A writer that panicked left no half-done state in the gate itself.
        let writers_held = self.gate.write().unwrap_or_else(|p| p.into_inner());
        let header = BackupHeader::describe(participant, self.inner.as_ref())?;
        let summary = write_backup(out, &header, node_files, sled, key, move || {
            drop(writers_held)
        })?;
        Ok((header, summary))
    }

    fn writing(&self) -> std::sync::RwLockReadGuard<'_, ()> {
        self.gate.read().unwrap_or_else(|p| p.into_inner())
    }
}

impl Storage for GatedStorage {
    fn get(&self, tree: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.inner.get(tree, key)
    }

    fn put(&self, tree: &str, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        let _gate = self.writing();
        self.inner.put(tree, key, value)
    }

    fn delete(&self, tree: &str, key: &[u8]) -> Result<(), StorageError> {
        let _gate = self.writing();
        self.inner.delete(tree, key)
    }

    fn insert_new(&self, tree: &str, key: &[u8], value: &[u8]) -> Result<bool, StorageError> {
        let _gate = self.writing();
        self.inner.insert_new(tree, key, value)
    }

    fn apply(&self, tree: &str, writes: Vec<Op>) -> Result<(), StorageError> {
        let _gate = self.writing();
        self.inner.apply(tree, writes)
    }

    fn apply_trees(&self, writes: Vec<(&str, Op)>) -> Result<(), StorageError> {
        let _gate = self.writing();
        self.inner.apply_trees(writes)
    }

    fn scan_prefix(&self, tree: &str, prefix: &[u8]) -> Result<Entries, StorageError> {
        self.inner.scan_prefix(tree, prefix)
    }

    fn scan_page(
        &self,
        tree: &str,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StorageError> {
        self.inner.scan_page(tree, prefix, after, limit)
    }

    fn blobs(&self) -> &crate::storage::blobs::Blobs {
        self.inner.blobs()
    }

    fn flush(&self) -> BoxFuture<'_, Result<(), StorageError>> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use std::fs::{self, File};
    use std::path::Path;

    use crate::audit::log as audit_log;

    use super::*;
    use crate::backup::checking::read_backup;
    use crate::backup::format::Record;

    fn participant() -> ParticipantId {
        ParticipantId::parse(crate::setup::DEV_PARTICIPANT).unwrap()
    }

    /// The audit log's size as the backup at `path` holds it (its `m/size` record).
    fn copied_log_size(path: &Path) -> u64 {
        let (mut tree, mut size) = (String::new(), 0);
        let _ = read_backup(path, &mut |r| {
            match r {
                Record::Tree(name) => tree = name,
                Record::Entry(k, v) => {
                    if let Some(s) = audit_log::committed_size_record(&tree, &k, &v) {
                        size = s.unwrap();
                    }
                }
                _ => {}
            }
            Ok(())
        });
        size
    }

    /// A writer applies ordered pairs (a, b) with the same value; every backup taken
    /// meanwhile must hold equal values, never a batch cut in half.
    #[test]
    fn a_backup_never_holds_half_an_ordered_batch() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let gated = Arc::new(GatedStorage::new(SledStorage::temporary().unwrap()));
        let key = SigningKey::generate().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (gated, stop) = (gated.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let v = i.to_be_bytes().to_vec();
                    gated
                        .apply(
                            "pairs",
                            vec![Op::Put(b"a".to_vec(), v.clone()), Op::Put(b"b".to_vec(), v)],
                        )
                        .unwrap();
                    i += 1;
                }
                i
            })
        };
        let dir = tempfile::tempdir().unwrap();
        for round in 0..30 {
            let mut out = Vec::new();
            gated
                .write_backup(&mut out, &participant(), &[], &key)
                .unwrap();
            let path = dir.path().join(format!("{round}.backup"));
            fs::write(&path, &out).unwrap();
            let (mut a, mut b) = (None, None);
            let end = read_backup(&path, &mut |r| {
                if let Record::Entry(k, v) = r {
                    match k.as_slice() {
                        b"a" => a = Some(v),
                        b"b" => b = Some(v),
                        _ => {}
                    }
                }
                Ok(())
            });
            // No node.toml in this bare backup, so only the seal's signer is missing.
            let err = end.unwrap_err().to_string();
            assert!(err.contains("no node.toml"), "{err}");
            assert_eq!(a, b, "round {round}: a batch was cut in half");
        }
        stop.store(true, Ordering::SeqCst);
        assert!(writer.join().unwrap() > 0);
    }

    /// A task keeps appending to a real audit log; the size each backup's header
    /// announces is the size the copied log holds.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_header_describes_the_audit_log_the_backup_holds() {
        use crate::audit::log::{AuditLog, Event, EventKind};
        use std::sync::atomic::{AtomicBool, Ordering};
        let gated = Arc::new(GatedStorage::new(SledStorage::temporary().unwrap()));
        let log = AuditLog::open(gated.clone()).unwrap();
        let key = Arc::new(SigningKey::generate().unwrap());
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (log, stop) = (log.clone(), stop.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let event = Event::new(EventKind::BackupTaken, 0, "written meanwhile");
                    log.append(&event).await.unwrap();
                }
            })
        };
        let dir = tempfile::tempdir().unwrap();
        let mut sizes = Vec::new();
        for round in 0..30 {
            let (gated, key) = (gated.clone(), key.clone());
            let path = dir.path().join(format!("{round}.backup"));
            let file = path.clone();
            let (header, _) = tokio::task::spawn_blocking(move || {
                let out = File::create(&file).unwrap();
                gated.write_backup(&out, &participant(), &[], &key).unwrap()
            })
            .await
            .unwrap();
            assert_eq!(
                header.audit_log_size,
                copied_log_size(&path),
                "round {round}: the header describes another log than the one copied"
            );
            sizes.push(header.audit_log_size);
        }
        stop.store(true, Ordering::SeqCst);
        writer.await.unwrap();
        assert!(
            sizes.last() > sizes.first(),
            "the log grew meanwhile: {sizes:?}"
        );
    }

    /// The case the in-memory size got wrong, held still: a group is written (its
    /// `m/size` stored) and its flush has not returned when the backup is taken. The
    /// copy holds the group, so the header must count it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_header_counts_a_group_that_is_written_but_still_flushing() {
        use crate::audit::log::{AuditLog, Event, EventKind};
        let gated = Arc::new(GatedStorage::new(SledStorage::temporary().unwrap()));
        let flush_held = Arc::new(tokio::sync::Semaphore::new(0));
        let log = AuditLog::open(Arc::new(HeldFlush {
            inner: gated.clone(),
            released: flush_held.clone(),
        }))
        .unwrap();
        let append = {
            let log = log.clone();
            tokio::spawn(async move {
                log.append(&Event::new(EventKind::BackupTaken, 0, "flushing"))
                    .await
            })
        };
        // Bounded wait for the group to be written; its flush waits on the semaphore.
        let mut waited = 0;
        while audit_log::committed_size(gated.as_ref()).unwrap() == 0 {
            assert!(waited < 2000, "the group was never written");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            waited += 1;
        }
        assert_eq!(log.size(), 0, "the in-memory size waits for the flush");

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("flushing.backup");
        let key = SigningKey::generate().unwrap();
        let (header, _) = gated
            .write_backup(File::create(&path).unwrap(), &participant(), &[], &key)
            .unwrap();
        assert_eq!(
            copied_log_size(&path),
            1,
            "the copy holds the written group"
        );
        assert_eq!(header.audit_log_size, 1, "the header counts it");

        flush_held.add_permits(1);
        assert_eq!(append.await.unwrap().unwrap(), 0);
        assert_eq!(log.size(), 1);
    }

    /// The node's storage with its flush held until a permit is released: the state
    /// between a group's write and the end of its flush, held still for a test.
    struct HeldFlush {
        inner: Arc<GatedStorage>,
        released: Arc<tokio::sync::Semaphore>,
    }

    impl Storage for HeldFlush {
        fn get(&self, tree: &str, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
            self.inner.get(tree, key)
        }
        fn put(&self, tree: &str, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
            self.inner.put(tree, key, value)
        }
        fn delete(&self, tree: &str, key: &[u8]) -> Result<(), StorageError> {
            self.inner.delete(tree, key)
        }
        fn insert_new(&self, tree: &str, key: &[u8], value: &[u8]) -> Result<bool, StorageError> {
            self.inner.insert_new(tree, key, value)
        }
        fn apply(&self, tree: &str, writes: Vec<Op>) -> Result<(), StorageError> {
            self.inner.apply(tree, writes)
        }
        fn scan_prefix(&self, tree: &str, prefix: &[u8]) -> Result<Entries, StorageError> {
            self.inner.scan_prefix(tree, prefix)
        }
        fn blobs(&self) -> &crate::storage::blobs::Blobs {
            self.inner.blobs()
        }
        fn flush(&self) -> BoxFuture<'_, Result<(), StorageError>> {
            Box::pin(async move {
                let _permit = self.released.acquire().await.expect("never closed");
                self.inner.flush().await
            })
        }
    }
}
