//! The sled 0.34 engine behind [`Storage`]: trees, batches, the group flush with its
//! fsync barrier (see the module above for why sled's own flush is not enough), and the
//! failed state a failed fsync leaves.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use super::durability::Durability;
use super::{Entries, Storage, StorageError, Write, blobs, fault};
use crate::base::BoxFuture;

/// The file in a sled 0.34 database directory that sled locks while the database is
/// open (a running node holds it).
pub const SLED_LOCK_FILE: &str = "db";

/// [`Storage`] on sled 0.34.7.
pub struct SledStorage {
    db: sled::Db,
    /// Opened trees, kept because `open_tree` takes a lock and allocates. Every
    /// storage call looks its tree up here, from every thread at once: readers share it.
    trees: RwLock<HashMap<String, sled::Tree>>,
    /// Large payloads, as files in `payloads/` inside the database directory.
    blobs: blobs::Blobs,
    /// What makes sled's writes durable beyond its own flush; absent for a temporary
    /// database.
    barrier: Option<Arc<Barrier>>,
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

/// The fsyncs sled 0.34 leaves out, made after its flush, inside the group-flush gate
/// so concurrent callers share one barrier.
struct Barrier {
    /// The database directory.
    dir: PathBuf,
    /// sled's log (`<dir>/db`), opened once: an fsync covers the file's every dirty
    /// page, whichever handle wrote them.
    log: File,
    /// sled's blob files already fsynced, with the length each had just before its
    /// fsync, so a flush syncs only new ones. sled writes a blob file while a writer
    /// reserves its place in the log, which can overlap a flush: a file listed while
    /// it is still being written is synced again once its length has changed (sled
    /// never writes to a blob file after it is complete).
    synced_blobs: Mutex<HashMap<OsString, u64>>,
    /// sled's snapshot files (`snap.*`) as of the last fsync of `dir`: sled renames a
    /// new snapshot into place and removes the old one without an fsync of the
    /// directory.
    snapshots: Mutex<Vec<OsString>>,
    durability: Arc<Durability>,
}

impl SledStorage {
    /// Opens (or creates) the database in `path`.
    ///
    /// sled releases its file lock from a background thread some time after the last
    /// handle of a database is dropped, so a database this process closed a moment ago
    /// may still be locked. A lock held by this process is waited for (up to 30 s, a
    /// loaded machine can take that long), except on a single-threaded runtime, where
    /// the handles may belong to tasks that cannot end while this waits; one held by
    /// another process, e.g. a running node, is reported after a second, naming that
    /// process.
    pub fn open(path: &Path) -> Result<Arc<Self>, StorageError> {
        Self::open_with(path, fault::from_env())
    }

    /// [`open`](Self::open), with `fault` asked before every fsync (tests).
    pub fn open_with(path: &Path, fault: Option<fault::Fault>) -> Result<Arc<Self>, StorageError> {
        const OWN_LOCK: std::time::Duration = std::time::Duration::from_secs(30);
        const OTHER_LOCK: std::time::Duration = std::time::Duration::from_secs(1);
        use tokio::runtime::{Handle, RuntimeFlavor};
        // The handles keeping a closed database locked may belong to tasks of the
        // caller's own runtime: on a single-threaded runtime waiting here would stop
        // them from ever ending, so the caller is told at once and retries itself.
        let own_patience = match Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(RuntimeFlavor::CurrentThread) => std::time::Duration::ZERO,
            _ => OWN_LOCK,
        };
        let open = || sled::Config::new().path(path).open();
        let wait_for_lock = || {
            let started = std::time::Instant::now();
            let mut attempt = open();
            let mut holder = None;
            while attempt.as_ref().is_err_and(is_locked) {
                holder = lock_holder(&path.join(SLED_LOCK_FILE));
                let patience = match holder {
                    Some(pid) if pid == std::process::id() => own_patience,
                    _ => OTHER_LOCK,
                };
                if started.elapsed() >= patience {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(25));
                attempt = open();
            }
            (attempt, holder)
        };
        // On a multi-threaded runtime the worker's other tasks move to another thread
        // while this one waits.
        let (attempt, holder) = match Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(wait_for_lock),
            _ => wait_for_lock(),
        };
        let db = attempt.map_err(|e| StorageError::Open {
            path: path.to_owned(),
            reason: explain_open_error(&e, holder),
        })?;
        let durability = Durability::new(fault);
        let blobs =
            blobs::Blobs::open_with(&path.join("payloads"), durability.clone()).map_err(|e| {
                StorageError::Open {
                    path: path.join("payloads"),
                    reason: e.to_string(),
                }
            })?;
        let barrier = Barrier::open(path, durability).map_err(|e| StorageError::Open {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        Ok(Arc::new(Self {
            db,
            trees: RwLock::new(HashMap::new()),
            blobs,
            barrier: Some(Arc::new(barrier)),
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
            trees: RwLock::new(HashMap::new()),
            blobs,
            barrier: None,
            flush: FlushGate::default(),
        }))
    }

    /// The fsyncs of this storage, and its failed state.
    pub fn durability(&self) -> &Arc<Durability> {
        self.blobs.durability()
    }

    fn tree(&self, name: &str) -> Result<sled::Tree, StorageError> {
        // A poisoned lock means another thread panicked while inserting a tree handle;
        // the map is still consistent (insert is the only mutation), so keep using it.
        if let Some(t) = self
            .trees
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
        {
            return Ok(t.clone());
        }
        let mut trees = self.trees.write().unwrap_or_else(|p| p.into_inner());
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

/// Whether sled refused to open because its lock file is locked (sled 0.34 reports
/// that as an `Other` I/O error with this text, not as `WouldBlock`).
fn is_locked(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.kind() == std::io::ErrorKind::WouldBlock
        || io.to_string().starts_with("could not acquire lock"))
}

fn explain_open_error(e: &sled::Error, holder: Option<u32>) -> String {
    if !is_locked(e) {
        return e.to_string();
    }
    match holder {
        Some(pid) if pid == std::process::id() => {
            "the database is still held open by this process (a node stopped a moment ago)"
                .to_owned()
        }
        Some(pid) => format!(
            "the database is locked by process {pid}; is another `liutong serve` running \
             with this data directory?"
        ),
        None => "the database is locked by another process; is another `liutong serve` \
                 running with this data directory?"
            .to_owned(),
    }
}

/// The process holding the `flock` on `file`, from Linux's `/proc/locks`; `None` when
/// it cannot be told (another system, no such file, no lock).
fn lock_holder(file: &Path) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(file).ok()?;
    let dev = meta.dev();
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    let wanted = format!("{major:02x}:{minor:02x}:{}", meta.ino());
    // "1: FLOCK  ADVISORY  WRITE 4242 fd:01:1234567 0 EOF"
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    locks.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            [_, "FLOCK", _, _, pid, id, ..] if *id == wanted => pid.parse().ok(),
            _ => None,
        }
    })
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
        self.durability().check()?;
        self.tree(tree)?
            .insert(key, value)
            .map_err(|e| engine_error(tree, e))?;
        Ok(())
    }

    fn delete(&self, tree: &str, key: &[u8]) -> Result<(), StorageError> {
        self.durability().check()?;
        self.tree(tree)?
            .remove(key)
            .map_err(|e| engine_error(tree, e))?;
        Ok(())
    }

    fn insert_new(&self, tree: &str, key: &[u8], value: &[u8]) -> Result<bool, StorageError> {
        self.durability().check()?;
        Ok(self
            .tree(tree)?
            .compare_and_swap(key, None as Option<&[u8]>, Some(value))
            .map_err(|e| engine_error(tree, e))?
            .is_ok())
    }

    fn apply(&self, tree: &str, writes: Vec<Write>) -> Result<(), StorageError> {
        self.durability().check()?;
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

    fn scan_page(
        &self,
        tree: &str,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StorageError> {
        use std::ops::Bound;
        let t = self.tree(tree)?;
        let entries = match after {
            // Seek to just past `after`; the prefix check ends the page at the prefix's end.
            Some(after) if after >= prefix => {
                t.range::<&[u8], _>((Bound::Excluded(after), Bound::Unbounded))
            }
            _ => t.scan_prefix(prefix),
        };
        let mut out = Vec::new();
        for item in entries {
            if out.len() >= limit {
                break;
            }
            let (k, v) = item.map_err(|e| engine_error(tree, e))?;
            if !k.starts_with(prefix) {
                break;
            }
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    fn blobs(&self) -> &blobs::Blobs {
        &self.blobs
    }

    fn flush(&self) -> BoxFuture<'_, Result<(), StorageError>> {
        use std::sync::atomic::Ordering::SeqCst;
        Box::pin(async move {
            let durability = self.durability();
            durability.check()?;
            let ticket = self.flush.requested.fetch_add(1, SeqCst) + 1;
            let _one_at_a_time = self.flush.lock.lock().await;
            // A flush that failed while this caller waited fails this caller too: its
            // writes may be among those the failed fsync lost.
            durability.check()?;
            if self.flush.durable.load(SeqCst) >= ticket {
                return Ok(()); // a flush that started after this request covered it
            }
            // Every request numbered so far wrote before taking its number, so this
            // flush covers them all.
            let covers = self.flush.requested.load(SeqCst);
            // sled's blocking flush (its `flush_async` was seen to never complete under
            // concurrent load, with many databases in one process), then the barrier.
            // On a multi-threaded runtime it runs in place, the worker's other tasks
            // moving to another thread: that costs about a fifth less CPU per
            // negotiation than handing it to the blocking pool and back (bench `flow`).
            // Elsewhere it goes to the blocking pool, or runs directly outside any
            // runtime.
            use tokio::runtime::{Handle, RuntimeFlavor};
            match Handle::try_current().map(|h| h.runtime_flavor()) {
                Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(|| {
                    flush_now(&self.db, self.barrier.as_deref(), durability)
                }),
                Ok(_) => {
                    let (db, barrier, durability) =
                        (self.db.clone(), self.barrier.clone(), durability.clone());
                    tokio::task::spawn_blocking(move || {
                        flush_now(&db, barrier.as_deref(), &durability)
                    })
                    .await
                    .unwrap_or_else(|e| {
                        Err(self
                            .durability()
                            .fail(format!("the flush task failed: {e}")))
                    })
                }
                Err(_) => flush_now(&self.db, self.barrier.as_deref(), durability),
            }?;
            self.flush.durable.fetch_max(covers, SeqCst);
            Ok(())
        })
    }
}

/// sled's flush, then the fsyncs it leaves out. Any failure puts the storage in the
/// failed state: nothing is retried (see [`durability`]).
fn flush_now(
    db: &sled::Db,
    barrier: Option<&Barrier>,
    durability: &Durability,
) -> Result<(), StorageError> {
    durability.check()?;
    db.flush()
        .map_err(|e| durability.fail(format!("the database's flush failed: {e}")))?;
    match barrier {
        Some(barrier) => barrier.sync(),
        None => Ok(()),
    }
}

/// sled's blob directory inside the database directory.
const SLED_BLOBS: &str = "blobs";
/// sled's configuration file, written once when the database is created.
const SLED_CONF: &str = "conf";
/// The start of sled's snapshot file names.
const SLED_SNAPSHOT: &str = "snap.";

impl Barrier {
    /// Makes what sled wrote before (a database just created: its directory, `conf`,
    /// log; blob files of an earlier run) durable, and prepares the barrier.
    fn open(dir: &Path, durability: Arc<Durability>) -> Result<Self, StorageError> {
        let io = |what: &str, path: &Path| {
            let path = path.display().to_string();
            let what = what.to_owned();
            move |e: std::io::Error| StorageError::Open {
                path: PathBuf::from(path),
                reason: format!("cannot {what}: {e}"),
            }
        };
        let log_path = dir.join(SLED_LOCK_FILE);
        let log = File::open(&log_path).map_err(io("open the log", &log_path))?;
        let conf_path = dir.join(SLED_CONF);
        let conf = File::open(&conf_path).map_err(io("open", &conf_path))?;
        durability.sync_all(&conf, &conf_path)?;
        let barrier = Self {
            dir: dir.to_owned(),
            log,
            synced_blobs: Mutex::default(),
            snapshots: Mutex::default(),
            durability,
        };
        barrier.sync()?;
        // The database directory itself, in case it was just created.
        barrier.durability.sync_dir(dir)?;
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            barrier.durability.sync_dir(parent)?;
        }
        Ok(barrier)
    }

    /// The fsyncs after sled's flush: new blob files and their directory first (the log
    /// refers to them), then the log, then the database directory if sled's snapshots
    /// changed.
    fn sync(&self) -> Result<(), StorageError> {
        let d = &self.durability;
        let listing = |dir: &Path| -> Result<Vec<OsString>, StorageError> {
            let entries = std::fs::read_dir(dir)
                .map_err(|e| d.fail(format!("cannot list {}: {e}", dir.display())))?;
            entries
                .map(|e| e.map(|e| e.file_name()))
                .collect::<Result<_, _>>()
                .map_err(|e| d.fail(format!("cannot list {}: {e}", dir.display())))
        };
        let blobs_dir = self.dir.join(SLED_BLOBS);
        let blobs = listing(&blobs_dir)?;
        {
            // Poisoning leaves at worst a name not yet recorded, synced again next time.
            let mut synced = self.synced_blobs.lock().unwrap_or_else(|p| p.into_inner());
            let mut new = 0;
            for name in &blobs {
                let path = blobs_dir.join(name);
                // sled may remove a blob file (garbage collection) after the listing.
                let gone = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound;
                // The length before the fsync: every byte up to it is covered by it.
                let len = match std::fs::metadata(&path) {
                    Ok(meta) => meta.len(),
                    Err(e) if gone(&e) => continue,
                    Err(e) => return Err(d.fail(format!("cannot read {}: {e}", path.display()))),
                };
                if synced.get(name) == Some(&len) {
                    continue;
                }
                match File::open(&path) {
                    Ok(file) => d.sync_all(&file, &path)?,
                    Err(e) if gone(&e) => continue,
                    Err(e) => return Err(d.fail(format!("cannot open {}: {e}", path.display()))),
                }
                synced.insert(name.clone(), len);
                new += 1;
            }
            if new > 0 {
                d.sync_dir(&blobs_dir)?;
            }
            let present: HashSet<&OsString> = blobs.iter().collect();
            synced.retain(|n, _| present.contains(n));
        }
        d.sync_data(&self.log, &self.dir.join(SLED_LOCK_FILE))?;
        let mut snapshots: Vec<OsString> = listing(&self.dir)?
            .into_iter()
            .filter(|n| n.to_string_lossy().starts_with(SLED_SNAPSHOT))
            .collect();
        snapshots.sort();
        let mut known = self.snapshots.lock().unwrap_or_else(|p| p.into_inner());
        if *known != snapshots {
            d.sync_dir(&self.dir)?;
            *known = snapshots;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::durability;

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

    /// A fault that records every path synced and fails with `EIO` while `failing` is
    /// set.
    fn recording_fault() -> (fault::Fault, Arc<Mutex<Vec<PathBuf>>>, Arc<AtomicBool>) {
        let synced = Arc::new(Mutex::new(Vec::new()));
        let failing = Arc::new(AtomicBool::new(false));
        let (s, f) = (synced.clone(), failing.clone());
        let fault: fault::Fault = Arc::new(move |path: &Path| {
            if f.load(SeqCst) {
                return Err(std::io::Error::from_raw_os_error(libc::EIO));
            }
            s.lock().unwrap().push(path.to_owned());
            Ok(())
        });
        (fault, synced, failing)
    }

    use std::sync::atomic::{AtomicBool, Ordering::SeqCst};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_flush_fsyncs_the_log_and_new_blob_files_once() {
        let dir = tempfile::tempdir().unwrap();
        let (fault, synced, _) = recording_fault();
        let s = SledStorage::open_with(dir.path(), Some(fault)).unwrap();
        let at_open = std::mem::take(&mut *synced.lock().unwrap());
        for wanted in [dir.path().join("conf"), dir.path().to_owned()] {
            assert!(at_open.contains(&wanted), "{wanted:?} not synced at open");
        }
        s.put_durable("t", b"small", b"v").await.unwrap();
        let log = dir.path().join("db");
        assert_eq!(*synced.lock().unwrap(), vec![log.clone()]);

        // A value this large goes to a blob file of sled's own.
        synced.lock().unwrap().clear();
        s.put_durable("t", b"large", &vec![7u8; 1 << 20])
            .await
            .unwrap();
        let blobs = dir.path().join("blobs");
        let in_blobs = |paths: &[PathBuf]| {
            paths
                .iter()
                .filter(|p| p.starts_with(&blobs) && **p != blobs)
                .count()
        };
        let first = std::mem::take(&mut *synced.lock().unwrap());
        assert_eq!(in_blobs(&first), 1, "{first:?}");
        assert!(first.contains(&blobs), "the blob directory: {first:?}");
        assert!(first.contains(&log));

        s.put_durable("t", b"small", b"w").await.unwrap();
        let second = std::mem::take(&mut *synced.lock().unwrap());
        assert_eq!(
            second,
            vec![log.clone()],
            "a synced blob file is not synced again"
        );

        // A blob file that was still being written when a flush synced it (sled writes
        // blob files while a writer reserves log space, which can overlap a flush) is
        // synced again once it has grown.
        let blob = std::fs::read_dir(&blobs)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let mut partial = std::fs::OpenOptions::new()
            .append(true)
            .open(&blob)
            .unwrap();
        std::io::Write::write_all(&mut partial, b"rest of the value").unwrap();
        s.put_durable("t", b"small", b"x").await.unwrap();
        let third = std::mem::take(&mut *synced.lock().unwrap());
        assert!(
            third.contains(&blob),
            "a grown blob file is synced again: {third:?}"
        );
        assert!(third.contains(&log));
    }

    #[test]
    fn a_database_locked_by_another_process_names_that_process() {
        let dir = tempfile::tempdir().unwrap();
        drop(SledStorage::open(dir.path()).unwrap());
        let lock = dir.path().join(SLED_LOCK_FILE);
        // util-linux `flock` takes the same kind of lock sled takes.
        let mut holder = std::process::Command::new("flock")
            .args(["--exclusive", "--no-fork"])
            .arg(&lock)
            .args(["sleep", "30"])
            .spawn()
            .expect("util-linux flock");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while lock_holder(&lock) != Some(holder.id()) {
            assert!(
                std::time::Instant::now() < deadline,
                "flock never took the lock"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let err = SledStorage::open(dir.path()).err().unwrap().to_string();
        holder.kill().unwrap();
        holder.wait().unwrap();
        assert!(
            err.contains(&format!("locked by process {}", holder.id())),
            "{err}"
        );
        // Once the holder is gone the database opens with its data.
        SledStorage::open(dir.path()).unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_flush_fails_the_storage_for_good() {
        let dir = tempfile::tempdir().unwrap();
        let (fault, synced, failing) = recording_fault();
        let s = SledStorage::open_with(dir.path(), Some(fault)).unwrap();
        let mut failures = s.failures();
        s.put_durable("t", b"before", b"1").await.unwrap();
        assert!(failures.borrow().is_none());

        failing.store(true, SeqCst);
        s.put("t", b"during", b"2").unwrap();
        let err = s.flush().await.unwrap_err();
        assert!(err.is_failed(), "{err}");
        assert!(err.to_string().contains("Input/output error"), "{err}");
        assert!(err.to_string().contains("writes are refused"), "{err}");
        failures.changed().await.unwrap();
        let reason = failures.borrow().clone().unwrap();
        assert!(reason.contains("fsync of"), "{reason}");

        // The disk "recovers": nothing is tried again, every write and flush is refused
        // with the first failure.
        failing.store(false, SeqCst);
        synced.lock().unwrap().clear();
        for refused in [
            s.flush().await.unwrap_err(),
            s.put("t", b"after", b"3").unwrap_err(),
            s.delete("t", b"before").unwrap_err(),
            s.insert_new("t", b"after", b"3").unwrap_err(),
            s.apply("t", vec![Write::Delete(b"before".to_vec())])
                .unwrap_err(),
        ] {
            assert!(refused.is_failed(), "{refused}");
            assert!(refused.to_string().contains(&reason), "{refused}");
        }
        let refused = s.blobs().writer("p/x", false).err().unwrap();
        assert!(durability::failure_in(&refused).is_some(), "{refused}");
        assert!(
            synced.lock().unwrap().is_empty(),
            "no fsync after the failure"
        );
        // What was committed is still readable.
        assert_eq!(s.get("t", b"before").unwrap(), Some(b"1".to_vec()));
        drop(s);

        // A restart starts from what the disk holds.
        let s = SledStorage::open(dir.path()).unwrap();
        assert_eq!(s.get("t", b"before").unwrap(), Some(b"1".to_vec()));
        s.put_durable("t", b"after", b"3").await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_caller_waiting_on_a_failed_flush_gets_the_error() {
        const WAITING: u64 = 8;
        let dir = tempfile::tempdir().unwrap();
        let storage: Arc<std::sync::OnceLock<std::sync::Weak<SledStorage>>> = Arc::default();
        let failing = Arc::new(AtomicBool::new(false));
        let fault: fault::Fault = {
            let (storage, failing) = (storage.clone(), failing.clone());
            // Fails once: a retried fsync would succeed, as it can after a real
            // failure that dropped the dirty pages.
            Arc::new(move |_: &Path| {
                if !failing.swap(false, SeqCst) {
                    return Ok(());
                }
                // Hold the failing fsync until every other caller has asked for a
                // flush (and so waits in the gate behind this one).
                let s = storage.get().and_then(|w| w.upgrade()).unwrap();
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
                while s.flush.requested.load(SeqCst) < s.flush.durable.load(SeqCst) + 1 + WAITING {
                    assert!(std::time::Instant::now() < deadline, "callers never came");
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Err(std::io::Error::from_raw_os_error(libc::EIO))
            })
        };
        let s = SledStorage::open_with(dir.path(), Some(fault)).unwrap();
        storage.set(Arc::downgrade(&s)).unwrap();
        s.put_durable("t", b"k", b"v").await.unwrap();

        failing.store(true, SeqCst);
        let mut callers = Vec::new();
        for i in 0..=WAITING {
            let s = s.clone();
            callers.push(tokio::spawn(async move {
                s.put("t", format!("k{i}").as_bytes(), b"v")?;
                s.flush().await
            }));
        }
        for caller in callers {
            let err = caller.await.unwrap().unwrap_err();
            assert!(err.is_failed(), "{err}");
        }
    }
}
