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
//! The files: `format` (the records and the seal), `gate` (the write gate),
//! `creating`, `checking` and `restoring` a backup.
//!
//! A backup holds the node's private keys: keep it as a secret (the CLI writes it 0600).

mod checking;
mod creating;
mod format;
mod gate;
pub mod migrate;
mod restoring;

pub use checking::verify;
pub use creating::{backup_offline, create_private, node_files, write_backup};
pub use gate::GatedStorage;
pub use restoring::{RestoreReport, ensure_stopped, restore};

use std::io;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::audit::log::{self as audit_log, AuditError};
use crate::config;
use crate::identity::ParticipantId;
use crate::storage::{Storage, StorageError};

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
    /// The node's key could not seal the backup (a key in a token that cannot be reached).
    #[error("the node's signing key cannot seal the backup: {0}")]
    Signing(#[from] crate::identity::KeyError),
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
