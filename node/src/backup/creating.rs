//! Taking a backup: the node's files that a backup carries, writing the records and
//! the seal, and a backup of a stopped node straight from its directory.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::format::{FrameWriter, MAGIC, PAYLOAD_PIECE, seal_message};
use super::restoring::ensure_stopped;
use super::{BackupError, BackupFile, BackupHeader, BackupSummary, CONFIG_FILE, FILE_DIRS};
use crate::config::NodeConfig;
use crate::identity::SigningKey;
use crate::storage::{SledStorage, Storage};

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
    let signature = key.sign(&seal_message(&digest))?;
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
    let key = config
        .load_signing_key()
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
