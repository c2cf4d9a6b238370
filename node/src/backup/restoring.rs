//! Restoring a verified backup into a new directory beside the target, renamed into
//! place last, and the check that no running node holds a data directory.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::checking::{read_records, verify};
use super::format::Record;
use super::{BackupError, CONFIG_FILE, FILE_DIRS, VerifiedBackup};
use crate::base::files;
use crate::config;
use crate::storage::{SledStorage, Storage};

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
                // Everything in a node's directory is owner-only, whatever the backup says.
                files::write_private(&target, &f.contents).map_err(|source| BackupError::Io {
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
