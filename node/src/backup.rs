//! Backups: the whole node (database, identity, local CA, configuration) in one file,
//! taken while the node serves, and restored into a directory while it is stopped.
//!
//! **Consistent.** The node's storage goes through [`GatedStorage`]: every write call
//! (`put`, `delete`, `insert_new`, and a whole `apply` batch) holds a shared gate, and a
//! backup holds it exclusively while it copies the database. So the copy is the state
//! between two write calls: no ordered batch is half in it (an audit group's entries,
//! tree nodes and size arrive together), and it is at least as consistent as what a
//! crash leaves, which the node is built to recover from. Readers never wait; writers
//! wait while the database is copied (to a temporary file on the node's disk), not while
//! the file travels to the client.
//!
//! **Damage is detected before anything is touched.** The file is a sequence of framed
//! records, then a seal: the SHA-256 of every byte before it, and the node's Ed25519
//! signature over that hash. [`verify`] hashes the whole file against its seal before
//! it reads a single record, so a changed byte is reported as damage wherever it is (in
//! a record's length too); a file without a seal at its end is walked record by record
//! to tell one cut short (truncated) from one whose seal was changed (damaged). Then the
//! records are read and checked, and the signature against the node's own
//! (authority-signed) credential. Anything wrong is refused with the reason, and
//! [`restore`] only then writes into a new directory beside the target, which it
//! renames into place last.
//!
//! Layout: `LIUTONG-BACKUP/1\n`, then frames `tag (1 byte) ‖ length (u32, big-endian) ‖
//! payload`: `H` header (JSON), `F` file (`u16 name length ‖ name ‖ u32 mode ‖ bytes`),
//! `T` tree name, `K` entry (`u32 key length ‖ key ‖ value`), `P` a piece of a payload
//! file (`u16 name length ‖ name ‖ u64 offset ‖ bytes`), `Z` summary (JSON), and
//! last `S` seal (`SHA-256 ‖ Ed25519 signature` over `liutong-backup/v1\n ‖ SHA-256`).
//!
//! A backup holds the node's private keys: keep it as a secret (the CLI writes it 0600).

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::audit::log::{self as audit_log, AuditError};
use crate::base::BoxFuture;
use crate::base::files;
use crate::config::{self, NodeConfig};
use crate::identity::membership::parse_credential;
use crate::identity::{Membership, ParticipantId, SigningKey};
use crate::storage::{Entries, SledStorage, Storage, StorageError, Write as Op};

const MAGIC: &[u8] = b"LIUTONG-BACKUP/1\n";
const SEAL_CONTEXT: &[u8] = b"liutong-backup/v1\n";
/// No frame of a sound backup comes near this (chunks are about 1 MiB); a larger length
/// is damage, refused before anything is allocated for it.
const MAX_FRAME: u32 = 256 * 1024 * 1024;
/// The seal record: tag, length, SHA-256, Ed25519 signature.
const SEAL_RECORD: u64 = 1 + 4 + SEAL_LEN as u64;
const SEAL_LEN: u32 = 32 + 64;
/// Payload files travel in pieces of this size.
const PAYLOAD_PIECE: usize = 4 << 20;
/// The configuration's name inside a backup and in a restored directory.
pub const CONFIG_FILE: &str = "node.toml";
/// The directories of the data directory that a backup carries besides the database.
const FILE_DIRS: [&str; 2] = [config::IDENTITY_DIR, config::LOCAL_DIR];

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("cannot {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error(
        "{0} is not a Liutong backup (it does not start with LIUTONG-BACKUP/1); nothing was restored"
    )]
    NotABackup(PathBuf),
    #[error(
        "the backup {path} is truncated ({reason}): it ends before its seal; nothing was \
         restored — take a new backup or use an older one"
    )]
    Truncated { path: PathBuf, reason: String },
    #[error("the backup {path} is damaged: {reason}; nothing was restored")]
    Damaged { path: PathBuf, reason: String },
    #[error("{0}")]
    Target(String),
    #[error("cannot read the audit log's size for the backup header: {0}")]
    AuditLog(#[from] AuditError),
}

/// What the node was when the backup was taken.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupHeader {
    pub participant: String,
    /// Unix seconds.
    pub created_at: i64,
    pub software_version: String,
    /// Entries in the audit log at the time of the copy: the committed size that the
    /// copied database holds (see [`BackupHeader::describe`]).
    pub audit_log_size: u64,
}

impl BackupHeader {
    /// The header of a copy of `db` taken now: its audit log size is the one stored in
    /// `db` as the commit point of the latest group ([`audit_log::committed_size`]),
    /// not the running log's in-memory size, which advances only once a group's flush
    /// is done. Read while writers are held back, it is exactly the size the copy
    /// holds, a group written but still flushing included.
    pub fn describe(participant: &ParticipantId, db: &dyn Storage) -> Result<Self, BackupError> {
        Ok(Self {
            participant: participant.to_string(),
            created_at: crate::base::clock::now(),
            software_version: crate::base::VERSION.to_owned(),
            audit_log_size: audit_log::committed_size(db)?,
        })
    }
}

/// What a backup holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupSummary {
    pub files: u32,
    pub trees: u32,
    pub entries: u64,
    /// Payload files (the bytes of products and received copies, `db/payloads/`).
    #[serde(default)]
    pub payloads: u32,
    /// Their bytes.
    #[serde(default)]
    pub payload_bytes: u64,
}

/// A checked backup file: its header and contents.
#[derive(Clone, Debug)]
pub struct VerifiedBackup {
    pub header: BackupHeader,
    pub summary: BackupSummary,
    /// The participant's name from its credential.
    pub name: String,
    pub bytes: u64,
}

/// A file of the node's directory, carried in a backup.
#[derive(Clone, Debug)]
pub struct BackupFile {
    /// Relative to the data directory: `node.toml`, `identity/…` or `local/…`.
    pub name: String,
    pub mode: u32,
    pub contents: Vec<u8>,
}

/// The node's [`Storage`], with a gate that a backup closes to hold writers back while
/// it copies the database (see the module doc).
pub struct GatedStorage {
    inner: Arc<SledStorage>,
    gate: RwLock<()>,
}

impl GatedStorage {
    pub fn new(inner: Arc<SledStorage>) -> Self {
        Self {
            inner,
            gate: RwLock::new(()),
        }
    }

    /// Bytes the database takes on disk.
    pub fn database_bytes(&self) -> Result<u64, StorageError> {
        self.inner.size_on_disk()
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
        // A writer that panicked left no half-done state in the gate itself.
        let writers_held = self.gate.write().unwrap_or_else(|p| p.into_inner());
        let header = BackupHeader::describe(participant, self.inner.as_ref())?;
        let summary = write_backup(out, &header, node_files, &self.inner, key, move || {
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

    fn scan_prefix(&self, tree: &str, prefix: &[u8]) -> Result<Entries, StorageError> {
        self.inner.scan_prefix(tree, prefix)
    }

    fn blobs(&self) -> &crate::storage::blobs::Blobs {
        self.inner.blobs()
    }

    fn flush(&self) -> BoxFuture<'_, Result<(), StorageError>> {
        self.inner.flush()
    }
}

/// The node's files that a backup carries: the configuration (as the node runs it, with
/// `data_dir = "."` so it works in the restored directory) and every file in
/// `identity/` and `local/`.
pub fn node_files(config: &NodeConfig) -> Result<Vec<BackupFile>, BackupError> {
    let mut portable = config.clone();
    portable.node.data_dir = PathBuf::from(".");
    let mut out = vec![BackupFile {
        name: CONFIG_FILE.to_owned(),
        mode: 0o600,
        contents: portable.to_commented_toml().into_bytes(),
    }];
    for dir_name in FILE_DIRS {
        let dir = config.data_dir().join(dir_name);
        let io = |what, path: &Path| {
            let path = path.to_owned();
            move |source| BackupError::Io { what, path, source }
        };
        let mut names = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io("read the directory", &dir))? {
            let entry = entry.map_err(io("read the directory", &dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            // Temporary files of atomic writes start with a dot.
            if entry.file_type().map(|t| t.is_file()).unwrap_or(false) && !name.starts_with('.') {
                names.push(name);
            }
        }
        names.sort();
        for name in names {
            let path = dir.join(&name);
            let contents = fs::read(&path).map_err(io("read", &path))?;
            let mode = fs::metadata(&path)
                .map_err(io("read", &path))?
                .permissions()
                .mode()
                & 0o777;
            out.push(BackupFile {
                name: format!("{dir_name}/{name}"),
                mode,
                contents,
            });
        }
    }
    Ok(out)
}

/// Writes a backup of `db` (whose records must not change until `entries_copied` is
/// called) and `node_files`.
pub fn write_backup<W: Write>(
    out: W,
    header: &BackupHeader,
    node_files: &[BackupFile],
    db: &SledStorage,
    key: &SigningKey,
    entries_copied: impl FnOnce(),
) -> Result<BackupSummary, BackupError> {
    let io_err = |source| BackupError::Io {
        what: "write",
        path: PathBuf::from("the backup"),
        source,
    };
    let mut w = FrameWriter {
        out: BufWriter::with_capacity(1 << 20, out),
        hash: Sha256::new(),
    };
    w.raw(MAGIC).map_err(io_err)?;
    w.frame(
        b'H',
        &[&serde_json::to_vec(header).expect("headers serialize")],
    )
    .map_err(io_err)?;
    let mut summary = BackupSummary::default();
    for f in node_files {
        let name_len = u16::try_from(f.name.len()).expect("file names are short");
        w.frame(
            b'F',
            &[
                &name_len.to_be_bytes(),
                f.name.as_bytes(),
                &f.mode.to_be_bytes(),
                &f.contents,
            ],
        )
        .map_err(io_err)?;
        summary.files += 1;
    }
    let mut current_tree = None::<String>;
    db.for_each_entry(|tree, k, v| -> Result<(), BackupError> {
        if current_tree.as_deref() != Some(tree) {
            w.frame(b'T', &[tree.as_bytes()]).map_err(io_err)?;
            current_tree = Some(tree.to_owned());
            summary.trees += 1;
        }
        let key_len = u32::try_from(k.len()).expect("keys are short");
        w.frame(b'K', &[&key_len.to_be_bytes(), k, v])
            .map_err(io_err)?;
        summary.entries += 1;
        Ok(())
    })?;
    entries_copied();
    // Payload files, in pieces. A payload's record is written only after its file is
    // complete and synced, and every record is already copied above with writers held,
    // so each payload a record counts is whole here; bytes a pull is still adding past
    // its record's count are overwritten when it resumes after a restore.
    let blobs = db.blobs();
    let blob_err = |source| BackupError::Io {
        what: "read",
        path: PathBuf::from("the payload files"),
        source,
    };
    for name in blobs.all().map_err(blob_err)? {
        let name_len = u16::try_from(name.len()).expect("payload names are short");
        let mut offset = 0u64;
        loop {
            let piece = blobs
                .read_at(&name, offset, PAYLOAD_PIECE)
                .map_err(blob_err)?
                .unwrap_or_default();
            // An empty payload still gets one record, so that it is restored.
            if piece.is_empty() && offset > 0 {
                break;
            }
            w.frame(
                b'P',
                &[
                    &name_len.to_be_bytes(),
                    name.as_bytes(),
                    &offset.to_be_bytes(),
                    &piece,
                ],
            )
            .map_err(io_err)?;
            if offset == 0 {
                summary.payloads += 1;
            }
            summary.payload_bytes += piece.len() as u64;
            offset += piece.len() as u64;
            if piece.len() < PAYLOAD_PIECE {
                break;
            }
        }
    }
    w.frame(
        b'Z',
        &[&serde_json::to_vec(&summary).expect("summaries serialize")],
    )
    .map_err(io_err)?;
    let digest: [u8; 32] = w.hash.clone().finalize().into();
    let signature = key.sign(&seal_message(&digest));
    w.frame(b'S', &[&digest, &signature]).map_err(io_err)?;
    w.out.flush().map_err(io_err)?;
    Ok(summary)
}

/// Backs up a stopped node straight from its directory.
pub async fn backup_offline(
    config: &NodeConfig,
    out: &Path,
) -> Result<(BackupHeader, BackupSummary), BackupError> {
    ensure_stopped(&config.data_dir())?;
    let db = SledStorage::open(&config.database_dir())?;
    let key = SigningKey::load(
        &config
            .identity_dir()
            .join(crate::identity::bundle::files::SIGNING_KEY),
    )
    .map_err(|e| BackupError::Target(e.to_string()))?;
    let header = BackupHeader::describe(&config.node.participant, db.as_ref())?;
    let node_files = node_files(config)?;
    let out = out.to_owned();
    let written = header.clone();
    tokio::task::spawn_blocking(move || {
        let file = create_private(&out)?;
        let summary = write_backup(&file, &written, &node_files, &db, &key, || {})?;
        file.sync_all().map_err(|source| BackupError::Io {
            what: "write",
            path: out.clone(),
            source,
        })?;
        Ok(summary)
    })
    .await
    .map_err(|e| BackupError::Target(format!("the backup thread failed: {e}")))?
    .map(|summary| (header, summary))
}

/// Creates a new file readable by the owner only, replacing an older one.
pub fn create_private(path: &Path) -> Result<File, BackupError> {
    let io = |source| BackupError::Io {
        what: "create",
        path: path.to_owned(),
        source,
    };
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    // The mode applies only to a new file: an existing one is narrowed too.
    file.set_permissions(fs::Permissions::from_mode(0o600))
        .map_err(io)?;
    Ok(file)
}

/// Reads the whole file and checks it: frames, summary, hash, and the seal's signature
/// against the key that the backed-up credential names (the credential itself against
/// the authority key in the backed-up node.toml).
pub fn verify(path: &Path) -> Result<VerifiedBackup, BackupError> {
    read_backup(path, &mut |_| Ok(()))
}

/// Restores a verified backup into `dir`, which must be new or empty, or with `force`
/// a stopped node's directory (moved aside to `DIR.replaced-<time>`, not deleted).
/// Nothing in `dir` changes unless the whole backup checks out and is written.
/// Blocking: call it outside a Tokio runtime or from one of its blocking threads.
pub fn restore(path: &Path, dir: &Path, force: bool) -> Result<RestoreReport, BackupError> {
    let verified = verify(path)?;
    let occupied = dir.exists()
        && fs::read_dir(dir)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true);
    if occupied {
        if !force {
            return Err(BackupError::Target(format!(
                "{} is not empty; restore into a new directory, or pass --force to replace \
                 the node in it (its current contents are kept as {}.replaced-<time>)",
                dir.display(),
                dir.display()
            )));
        }
        ensure_stopped(dir)?;
    }
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let base = dir
        .file_name()
        .ok_or_else(|| BackupError::Target(format!("{} names no directory", dir.display())))?
        .to_string_lossy()
        .into_owned();
    let staging = parent.join(format!(".{base}.restoring"));
    let io = |what: &'static str, p: &Path| {
        let path = p.to_owned();
        move |source| BackupError::Io { what, path, source }
    };
    if staging.exists() {
        // Left by a restore that was interrupted; it was never the node's directory.
        fs::remove_dir_all(&staging).map_err(io("remove", &staging))?;
    }
    files::create_private_dir(&staging).map_err(io("create", &staging))?;
    let written = write_restored(path, &staging);
    if let Err(e) = written {
        let _ = fs::remove_dir_all(&staging);
        return Err(e);
    }
    let mut replaced = None;
    if dir.exists() {
        if occupied {
            let aside = parent.join(format!("{base}.replaced-{}", crate::base::clock::now()));
            fs::rename(dir, &aside).map_err(io("move aside", dir))?;
            replaced = Some(aside);
        } else {
            fs::remove_dir(dir).map_err(io("replace the empty directory", dir))?;
        }
    }
    fs::rename(&staging, dir).map_err(io("move into place", &staging))?;
    fs::File::open(parent)
        .and_then(|d| d.sync_all())
        .map_err(io("sync", parent))?;
    Ok(RestoreReport {
        backup: verified,
        config: dir.join(CONFIG_FILE),
        replaced,
    })
}

/// What [`restore`] did.
#[derive(Clone, Debug)]
pub struct RestoreReport {
    pub backup: VerifiedBackup,
    /// The restored node.toml, to start the node with.
    pub config: PathBuf,
    /// Where the directory's earlier contents were moved, with `--force`.
    pub replaced: Option<PathBuf>,
}

/// Refuses a data directory whose database a running node holds.
pub fn ensure_stopped(data_dir: &Path) -> Result<(), BackupError> {
    let lock_file = config::database_dir_in(data_dir).join(crate::storage::SLED_LOCK_FILE);
    let Ok(file) = File::open(&lock_file) else {
        return Ok(()); // no database, so no node using it
    };
    match file.try_lock() {
        Ok(()) => Ok(()),
        Err(std::fs::TryLockError::WouldBlock) => Err(BackupError::Target(format!(
            "a running node holds the database in {}; stop it first (e.g. `systemctl stop \
             liutong` or Ctrl-C), then try again",
            data_dir.display()
        ))),
        Err(std::fs::TryLockError::Error(source)) => Err(BackupError::Io {
            what: "check the lock of",
            path: lock_file,
            source,
        }),
    }
}

fn seal_message(digest: &[u8; 32]) -> Vec<u8> {
    let mut m = SEAL_CONTEXT.to_vec();
    m.extend_from_slice(digest);
    m
}

/// The second pass: write files and entries into `staging`.
fn write_restored(path: &Path, staging: &Path) -> Result<(), BackupError> {
    for d in FILE_DIRS {
        let p = staging.join(d);
        files::create_private_dir(&p).map_err(|source| BackupError::Io {
            what: "create",
            path: p,
            source,
        })?;
    }
    let db = SledStorage::open(&config::database_dir_in(staging))?;
    let mut tree = String::new();
    let mut payload: Option<(String, crate::storage::blobs::BlobWriter)> = None;
    // `restore` verified the whole file just before; this pass still checks the hash
    // at the seal, and what it wrote is discarded if that fails.
    read_records(path, &mut |record| {
        match record {
            Record::File(f) => {
                let target = staging.join(&f.name);
                let mode = if f.name == CONFIG_FILE {
                    0o644
                } else {
                    f.mode & 0o777
                };
                let written = if mode & 0o077 == 0 {
                    files::write_private(&target, &f.contents)
                } else {
                    files::write_public(&target, &f.contents)
                };
                written.map_err(|source| BackupError::Io {
                    what: "write",
                    path: target,
                    source,
                })?;
            }
            Record::Tree(name) => tree = name,
            Record::Entry(k, v) => db.put(&tree, &k, &v)?,
            Record::Payload(name, offset, bytes) => {
                let blob_err = |source| BackupError::Io {
                    what: "write the payload",
                    path: PathBuf::from(&name),
                    source,
                };
                if payload.as_ref().is_none_or(|(n, _)| *n != name) {
                    if let Some((_, done)) = payload.take() {
                        done.sync().map_err(blob_err)?;
                    }
                    let writer = db.blobs().writer(&name, false).map_err(blob_err)?;
                    payload = Some((name.clone(), writer));
                }
                let (_, writer) = payload.as_mut().expect("set above");
                writer.write_at(offset, &bytes).map_err(blob_err)?;
            }
        }
        Ok(())
    })?;
    if let Some((name, done)) = payload.take() {
        done.sync().map_err(|source| BackupError::Io {
            what: "write the payload",
            path: PathBuf::from(name),
            source,
        })?;
    }
    // The database is complete on disk before the directory is put into place.
    let flushed = futures_flush(&db);
    drop(db);
    flushed
}

/// Waits for the storage flush from blocking code: on the current Tokio runtime when
/// called from one of its blocking threads, else on a runtime of its own.
fn futures_flush(db: &Arc<SledStorage>) -> Result<(), BackupError> {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => handle.block_on(db.flush())?,
        Err(_) => tokio::runtime::Builder::new_current_thread()
            .build()
            .map_err(|source| BackupError::Io {
                what: "start a runtime for",
                path: PathBuf::from("the restored database"),
                source,
            })?
            .block_on(db.flush())?,
    }
    Ok(())
}

enum Record {
    File(BackupFile),
    Tree(String),
    Entry(Vec<u8>, Vec<u8>),
    /// A piece of a payload file: name, offset, bytes.
    Payload(String, u64, Vec<u8>),
}

/// Checks the whole file against its seal ([`check_sealed_bytes`]), then reads every
/// frame, handing files, trees and entries to `visit`, and checks them.
fn read_backup(
    path: &Path,
    visit: &mut dyn FnMut(Record) -> Result<(), BackupError>,
) -> Result<VerifiedBackup, BackupError> {
    check_sealed_bytes(path)?;
    read_records(path, visit)
}

/// Before any record is read: a file that ends in a seal record is hashed whole
/// against it, so a changed byte anywhere is damage (a changed length field would
/// otherwise send the reader past the end, as if the file were cut). A file that does
/// not end in a seal is walked record by record: cut short, it runs out (truncated);
/// with its seal record changed, the record after the summary is not a seal (damaged).
fn check_sealed_bytes(path: &Path) -> Result<(), BackupError> {
    let io = |source| BackupError::Io {
        what: "read",
        path: path.to_owned(),
        source,
    };
    let damaged = |reason: String| BackupError::Damaged {
        path: path.to_owned(),
        reason,
    };
    let truncated = |reason: &str| BackupError::Truncated {
        path: path.to_owned(),
        reason: reason.to_owned(),
    };
    let mut file = File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    if len >= MAGIC.len() as u64 + SEAL_RECORD {
        let mut seal = [0u8; SEAL_RECORD as usize];
        file.seek(SeekFrom::Start(len - SEAL_RECORD))
            .and_then(|_| file.read_exact(&mut seal))
            .map_err(io)?;
        if seal[0] == b'S' && seal[1..5] == SEAL_LEN.to_be_bytes() {
            let mut hash = Sha256::new();
            file.rewind().map_err(io)?;
            io::copy(&mut (&mut file).take(len - SEAL_RECORD), &mut hash).map_err(io)?;
            let digest: [u8; 32] = hash.finalize().into();
            return if seal[5..37] == digest {
                Ok(())
            } else {
                Err(damaged(
                    "its SHA-256 does not match the one sealed in it (bytes were changed)".into(),
                ))
            };
        }
    }
    // No seal at the end.
    let mut start = vec![0u8; MAGIC.len().min(len as usize)];
    file.rewind()
        .and_then(|_| file.read_exact(&mut start))
        .map_err(io)?;
    if start != MAGIC {
        return Err(if !start.is_empty() && MAGIC.starts_with(&start) {
            truncated("it ends inside its first line")
        } else {
            BackupError::NotABackup(path.to_owned())
        });
    }
    let mut input = BufReader::with_capacity(1 << 16, file);
    let mut at = MAGIC.len() as u64;
    let mut after_summary = false;
    loop {
        let left = len - at;
        if left == 0 {
            return Err(truncated("it ends after a whole record"));
        }
        if left < 5 {
            return Err(truncated("it ends in the middle of a record"));
        }
        let mut head = [0u8; 5];
        input.read_exact(&mut head).map_err(io)?;
        let (tag, size) = (
            head[0],
            u32::from_be_bytes([head[1], head[2], head[3], head[4]]),
        );
        if after_summary && (tag != b'S' || size != SEAL_LEN) {
            return Err(damaged(
                "the record after the summary is not a sound seal (bytes were changed)".into(),
            ));
        }
        if !b"HFTKPZS".contains(&tag) || size > MAX_FRAME {
            return Err(damaged(format!(
                "a record has type {tag:#04x} and {size} bytes, which no backup record has (bytes \
                 were changed)"
            )));
        }
        if u64::from(size) > left - 5 {
            return Err(truncated("it ends in the middle of a record"));
        }
        if tag == b'S' {
            // Not at the end, or the check above would have found it there.
            return Err(damaged("bytes follow the seal".into()));
        }
        input.seek_relative(i64::from(size)).map_err(io)?;
        at += 5 + u64::from(size);
        after_summary = tag == b'Z';
    }
}

/// Reads every frame, handing files, trees and entries to `visit`, and checks the
/// whole file. `visit` sees records before the seal is checked: [`restore`] runs a full
/// [`verify`] first.
fn read_records(
    path: &Path,
    visit: &mut dyn FnMut(Record) -> Result<(), BackupError>,
) -> Result<VerifiedBackup, BackupError> {
    let file = File::open(path).map_err(|source| BackupError::Io {
        what: "open",
        path: path.to_owned(),
        source,
    })?;
    let bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut r = FrameReader {
        input: BufReader::with_capacity(1 << 20, file),
        hash: Sha256::new(),
        path: path.to_owned(),
    };
    let mut magic = vec![0u8; MAGIC.len()];
    match r.exact(&mut magic) {
        Ok(()) if magic == MAGIC => {}
        _ => return Err(BackupError::NotABackup(path.to_owned())),
    }
    let damaged = |reason: String| BackupError::Damaged {
        path: path.to_owned(),
        reason,
    };
    let mut header = None::<BackupHeader>;
    let mut counted = BackupSummary::default();
    let mut summary = None::<BackupSummary>;
    let mut config_text = None::<String>;
    let mut credential = None::<Vec<u8>>;
    let credential_file = format!(
        "{}/{}",
        config::IDENTITY_DIR,
        crate::identity::bundle::files::CREDENTIAL
    );
    let mut tree = String::new();
    // The audit log's committed size in the copy (none stored: an empty log).
    let mut audit_log_size = 0u64;
    loop {
        let before_frame = r.hash.clone();
        let (tag, payload) = r.frame()?;
        match tag {
            b'H' if header.is_none() => {
                header = Some(
                    serde_json::from_slice(&payload)
                        .map_err(|e| damaged(format!("the header is unreadable: {e}")))?,
                );
            }
            _ if header.is_none() => {
                return Err(damaged("the first record is not the header".into()));
            }
            b'F' if summary.is_none() => {
                let f = parse_file(&payload).map_err(&damaged)?;
                if f.name == CONFIG_FILE {
                    config_text = Some(String::from_utf8_lossy(&f.contents).into_owned());
                } else if f.name == credential_file {
                    credential = Some(f.contents.clone());
                }
                counted.files += 1;
                visit(Record::File(f))?;
            }
            b'T' if summary.is_none() => {
                let name = String::from_utf8(payload)
                    .map_err(|_| damaged("a tree name is not text".into()))?;
                counted.trees += 1;
                tree.clone_from(&name);
                visit(Record::Tree(name))?;
            }
            b'K' if summary.is_none() && counted.trees > 0 => {
                let (k, v) = parse_entry(payload).map_err(&damaged)?;
                if let Some(size) = audit_log::committed_size_record(&tree, &k, &v) {
                    audit_log_size = size.map_err(|e| damaged(e.to_string()))?;
                }
                counted.entries += 1;
                visit(Record::Entry(k, v))?;
            }
            b'P' if summary.is_none() => {
                let (name, offset, bytes) = parse_payload(payload).map_err(&damaged)?;
                if offset == 0 {
                    counted.payloads += 1;
                }
                counted.payload_bytes += bytes.len() as u64;
                visit(Record::Payload(name, offset, bytes))?;
            }
            b'Z' if summary.is_none() => {
                let s: BackupSummary = serde_json::from_slice(&payload)
                    .map_err(|e| damaged(format!("the summary is unreadable: {e}")))?;
                if s != counted {
                    return Err(damaged(format!(
                        "the summary announces {} files, {} trees, {} entries and {} payload \
                         bytes, but the file holds {} files, {} trees, {} entries and {} payload \
                         bytes",
                        s.files,
                        s.trees,
                        s.entries,
                        s.payload_bytes,
                        counted.files,
                        counted.trees,
                        counted.entries,
                        counted.payload_bytes
                    )));
                }
                summary = Some(s);
            }
            b'S' if summary.is_some() => {
                if payload.len() != 32 + 64 {
                    return Err(damaged("the seal has the wrong length".into()));
                }
                let digest: [u8; 32] = before_frame.finalize().into();
                if payload[..32] != digest {
                    return Err(damaged(
                        "its SHA-256 does not match the one sealed in it (bytes were changed)"
                            .into(),
                    ));
                }
                let mut rest = [0u8; 1];
                if r.input
                    .read(&mut rest)
                    .map_err(|e| damaged(e.to_string()))?
                    != 0
                {
                    return Err(damaged("bytes follow the seal".into()));
                }
                let header = header.expect("checked above");
                let membership = seal_signer(config_text, credential).map_err(&damaged)?;
                if membership.participant_id.to_string() != header.participant {
                    return Err(damaged(format!(
                        "the header names participant {}, the credential {}",
                        header.participant, membership.participant_id
                    )));
                }
                if !membership
                    .signing_key
                    .verify(&seal_message(&digest), &payload[32..])
                {
                    return Err(damaged(
                        "the seal's signature is not by the key of the node's credential".into(),
                    ));
                }
                // A header that counts fewer entries than the copy holds comes from
                // versions that read the size before a flushing group was counted;
                // one that counts more announces entries the copy lacks.
                if header.audit_log_size > audit_log_size {
                    return Err(damaged(format!(
                        "its header announces an audit log of {} entries, but the copied \
                         log holds {audit_log_size}",
                        header.audit_log_size
                    )));
                }
                return Ok(VerifiedBackup {
                    header,
                    summary: summary.expect("checked above"),
                    name: membership.name,
                    bytes,
                });
            }
            other => {
                return Err(damaged(format!(
                    "unexpected record {:?} at this place",
                    other as char
                )));
            }
        }
    }
}

/// The membership whose key must have sealed the backup: the backed-up credential,
/// opened with the authority key that the backed-up node.toml pins.
fn seal_signer(config: Option<String>, credential: Option<Vec<u8>>) -> Result<Membership, String> {
    let config = config.ok_or("it holds no node.toml")?;
    let config: NodeConfig =
        toml::from_str(&config).map_err(|e| format!("its node.toml is unreadable: {e}"))?;
    let credential = credential.ok_or_else(|| {
        format!(
            "it holds no {}/{}",
            crate::config::IDENTITY_DIR,
            crate::identity::bundle::files::CREDENTIAL
        )
    })?;
    parse_credential(&credential, &config.authority.public_key)
        .map(|(_, membership)| membership)
        .map_err(|e| format!("its credential {e}"))
}

fn parse_file(payload: &[u8]) -> Result<BackupFile, String> {
    let bad = || "a file record is malformed".to_owned();
    let name_len = u16::from_be_bytes(
        payload
            .get(..2)
            .ok_or_else(bad)?
            .try_into()
            .unwrap_or_default(),
    ) as usize;
    let name = payload.get(2..2 + name_len).ok_or_else(bad)?;
    let name = String::from_utf8(name.to_vec()).map_err(|_| bad())?;
    check_file_name(&name)?;
    let mode_bytes = payload.get(2 + name_len..6 + name_len).ok_or_else(bad)?;
    let mode = u32::from_be_bytes(mode_bytes.try_into().map_err(|_| bad())?);
    Ok(BackupFile {
        name,
        mode,
        contents: payload[6 + name_len..].to_vec(),
    })
}

/// Only `node.toml` and plain names inside `identity/` and `local/`: a backup never
/// writes outside the directory it is restored into.
fn check_file_name(name: &str) -> Result<(), String> {
    if name == CONFIG_FILE {
        return Ok(());
    }
    let path = Path::new(name);
    let parts: Vec<Component> = path.components().collect();
    let ok = matches!(parts.as_slice(), [Component::Normal(dir), Component::Normal(_)]
        if FILE_DIRS.iter().any(|d| dir.to_str() == Some(d)));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "it names a file {name:?} outside {}/ and {}/",
            FILE_DIRS[0], FILE_DIRS[1]
        ))
    }
}

fn parse_payload(payload: Vec<u8>) -> Result<(String, u64, Vec<u8>), String> {
    let bad = || "a payload record is malformed".to_owned();
    let name_len = u16::from_be_bytes(
        payload
            .get(..2)
            .ok_or_else(bad)?
            .try_into()
            .map_err(|_| bad())?,
    ) as usize;
    let name = payload.get(2..2 + name_len).ok_or_else(bad)?;
    let name = String::from_utf8(name.to_vec()).map_err(|_| bad())?;
    // Checked again by the payload store when written; refused here so that `verify`
    // reports it.
    crate::storage::blobs::Blobs::check_name(&name)
        .map_err(|_| format!("it names a payload {name:?} that is not a valid payload name"))?;
    let offset = u64::from_be_bytes(
        payload
            .get(2 + name_len..10 + name_len)
            .ok_or_else(bad)?
            .try_into()
            .map_err(|_| bad())?,
    );
    Ok((name, offset, payload[10 + name_len..].to_vec()))
}

fn parse_entry(mut payload: Vec<u8>) -> Result<(Vec<u8>, Vec<u8>), String> {
    let bad = || "an entry record is malformed".to_owned();
    let key_len = u32::from_be_bytes(
        payload
            .get(..4)
            .ok_or_else(bad)?
            .try_into()
            .map_err(|_| bad())?,
    ) as usize;
    if payload.len() < 4 + key_len {
        return Err(bad());
    }
    let value = payload.split_off(4 + key_len);
    Ok((payload[4..].to_vec(), value))
}

struct FrameWriter<W: Write> {
    out: BufWriter<W>,
    hash: Sha256,
}

impl<W: Write> FrameWriter<W> {
    fn raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.hash.update(bytes);
        self.out.write_all(bytes)
    }

    fn frame(&mut self, tag: u8, parts: &[&[u8]]) -> io::Result<()> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let len = u32::try_from(len)
            .ok()
            .filter(|l| *l <= MAX_FRAME)
            .ok_or_else(|| io::Error::other(format!("a record of {len} bytes is too large")))?;
        self.raw(&[tag])?;
        self.raw(&len.to_be_bytes())?;
        for p in parts {
            self.raw(p)?;
        }
        Ok(())
    }
}

struct FrameReader<R: Read> {
    input: R,
    hash: Sha256,
    path: PathBuf,
}

impl<R: Read> FrameReader<R> {
    fn exact(&mut self, buf: &mut [u8]) -> Result<(), BackupError> {
        self.input.read_exact(buf).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                BackupError::Truncated {
                    path: self.path.clone(),
                    reason: "it ends in the middle of a record".into(),
                }
            } else {
                BackupError::Io {
                    what: "read",
                    path: self.path.clone(),
                    source: e,
                }
            }
        })?;
        self.hash.update(&*buf);
        Ok(())
    }

    fn frame(&mut self) -> Result<(u8, Vec<u8>), BackupError> {
        let mut head = [0u8; 5];
        self.exact(&mut head)?;
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]);
        if len > MAX_FRAME {
            return Err(BackupError::Damaged {
                path: self.path.clone(),
                reason: format!("a record claims {len} bytes, more than any backup record"),
            });
        }
        let mut payload = vec![0u8; len as usize];
        self.exact(&mut payload)?;
        Ok((head[0], payload))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_stay_inside_the_directory() {
        assert!(check_file_name("node.toml").is_ok());
        assert!(check_file_name("identity/signing.key").is_ok());
        assert!(check_file_name("local/admin.crt").is_ok());
        for bad in [
            "../x",
            "identity/../../x",
            "/etc/passwd",
            "db/x",
            "identity/a/b",
            "identity",
        ] {
            assert!(check_file_name(bad).is_err(), "{bad}");
        }
    }

    fn participant() -> ParticipantId {
        ParticipantId::parse(crate::setup::DEV_PARTICIPANT).unwrap()
    }

    /// A node directory made as `liutong` makes the development one (authority-signed
    /// credential, keys, node.toml): its files, config and signing key.
    fn dev_node(root: &Path) -> (NodeConfig, Vec<BackupFile>, SigningKey) {
        let (config_path, _) = crate::setup::ensure_dev_setup(root).unwrap();
        let config = NodeConfig::load(&config_path).unwrap();
        let key = SigningKey::load(
            &config
                .identity_dir()
                .join(crate::identity::bundle::files::SIGNING_KEY),
        )
        .unwrap();
        let files = node_files(&config).unwrap();
        (config, files, key)
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

    /// A signed backup whose header announces more audit entries than the copy holds is
    /// refused; a sound one of the same node verifies.
    #[test]
    fn a_header_announcing_entries_the_copy_lacks_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let (config, files, key) = dev_node(root.path());
        let db = SledStorage::temporary().unwrap();
        db.put("audit", b"m/size", &3u64.to_be_bytes()).unwrap();
        let sound = root.path().join("sound.backup");
        let mut header = BackupHeader::describe(&config.node.participant, db.as_ref()).unwrap();
        assert_eq!(header.audit_log_size, 3);
        write_backup(
            File::create(&sound).unwrap(),
            &header,
            &files,
            &db,
            &key,
            || {},
        )
        .unwrap();
        assert_eq!(verify(&sound).unwrap().header.audit_log_size, 3);

        header.audit_log_size = 4;
        let overstated = root.path().join("overstated.backup");
        write_backup(
            File::create(&overstated).unwrap(),
            &header,
            &files,
            &db,
            &key,
            || {},
        )
        .unwrap();
        let err = verify(&overstated).unwrap_err();
        assert!(matches!(err, BackupError::Damaged { .. }), "{err}");
        assert!(
            err.to_string()
                .contains("announces an audit log of 4 entries, but the copied log holds 3"),
            "{err}"
        );
    }

    /// A sound, signed backup of a development node with a few database entries and
    /// a payload: its bytes, and where each record starts (tag, offset, length).
    fn sound_backup(root: &Path) -> (Vec<u8>, Vec<(u8, usize, usize)>) {
        let (config, files, key) = dev_node(root);
        let db = SledStorage::temporary().unwrap();
        db.put("audit", b"m/size", &0u64.to_be_bytes()).unwrap();
        for i in 0..5u8 {
            db.put("catalog", &[b'k', i], &[i; 40]).unwrap();
        }
        let mut writer = db.blobs().writer("p1", false).unwrap();
        writer.write_at(0, b"payload bytes").unwrap();
        writer.sync().unwrap();
        let header = BackupHeader::describe(&config.node.participant, db.as_ref()).unwrap();
        let mut bytes = Vec::new();
        write_backup(&mut bytes, &header, &files, &db, &key, || {}).unwrap();
        let mut records = Vec::new();
        let mut at = MAGIC.len();
        while at < bytes.len() {
            let len = u32::from_be_bytes(bytes[at + 1..at + 5].try_into().unwrap()) as usize;
            records.push((bytes[at], at, len));
            at += 5 + len;
        }
        assert_eq!(records.last().map(|r| r.0), Some(b'S'));
        (bytes, records)
    }

    /// Whatever byte is flipped (a record's type or length, its contents, the first
    /// line, the seal's hash or signature), the file is refused as damaged; cut short
    /// anywhere, as truncated. (Positions are sampled: every record's head and the
    /// seal in full, the contents at a stride.) (A flipped length was reported as truncated: the reader
    /// ran past the end before it reached the seal.)
    #[test]
    fn any_flipped_byte_is_damage_and_any_cut_is_truncation() {
        let root = tempfile::tempdir().unwrap();
        let (sound, records) = sound_backup(root.path());
        let path = root.path().join("checked.backup");
        fs::write(&path, &sound).unwrap();
        let verified = verify(&path).expect("the sound file verifies");
        assert_eq!(verified.summary.payloads, 1);
        assert!(verified.summary.entries >= 6);

        // Every byte of the first line, of each record's type and length, of the
        // seal, and of each record's first and last bytes; every 11th byte besides.
        let mut positions: Vec<usize> = (0..MAGIC.len()).collect();
        for &(_, at, len) in &records {
            positions.extend(at..at + 5 + len.min(8));
            positions.extend((at + 5 + len).saturating_sub(8)..at + 5 + len);
        }
        positions.extend((sound.len() - SEAL_RECORD as usize)..sound.len());
        positions.extend((0..sound.len()).step_by(11));
        positions.sort_unstable();
        positions.dedup();
        for i in positions {
            for bit in [0x01, 0x80] {
                let mut flipped = sound.clone();
                flipped[i] ^= bit;
                fs::write(&path, &flipped).unwrap();
                match verify(&path) {
                    Err(BackupError::Damaged { .. }) => {}
                    other => panic!("byte {i} ^ {bit:#04x} of {}: {other:?}", sound.len()),
                }
            }
        }
        // Every cut near a record's start (the first line included) and in the seal;
        // every 7th besides.
        let mut cuts: Vec<usize> = (1..sound.len()).step_by(7).collect();
        cuts.extend(1..MAGIC.len());
        for &(_, at, _) in &records {
            cuts.extend(at.saturating_sub(6)..at + 6);
        }
        cuts.extend(sound.len() - SEAL_RECORD as usize..sound.len());
        cuts.retain(|c| (1..sound.len()).contains(c));
        cuts.sort_unstable();
        cuts.dedup();
        for cut in cuts {
            fs::write(&path, &sound[..cut]).unwrap();
            match verify(&path) {
                Err(BackupError::Truncated { .. }) => {}
                other => panic!("cut to {cut} of {} bytes: {other:?}", sound.len()),
            }
        }
        fs::write(&path, b"").unwrap();
        assert!(matches!(verify(&path), Err(BackupError::NotABackup(_))));
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

    #[test]
    fn entries_round_trip_through_frames() {
        let mut payload = 3u32.to_be_bytes().to_vec();
        payload.extend_from_slice(b"keyvalue");
        assert_eq!(
            parse_entry(payload).unwrap(),
            (b"key".to_vec(), b"value".to_vec())
        );
        assert!(parse_entry(vec![0, 0, 0, 9, 1]).is_err());
    }
}
