//! `liutong storage migrate --to postgres`: copies a stopped node's sled database (its
//! records and payload files) into the empty PostgreSQL database its `[storage]` section
//! names, then checks the copy: every record read back, every payload's bytes, and the
//! audit log recomputed from the entries in PostgreSQL against the sled log's root and
//! the node's signed checkpoint. The sled database is left as it was.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use crate::audit::log::AuditLog;
use crate::audit::merkle::{self, MemoryTreeStore};
use crate::storage::blobs::rows::CHUNK;
use crate::storage::{PgTarget, PostgresStorage, SledStorage, Storage, StorageError, Write};

/// Writes per transaction while copying.
const BATCH: usize = 500;

/// What a migration copied and checked.
#[derive(Debug)]
pub struct Migrated {
    pub trees: usize,
    pub records: u64,
    pub payloads: usize,
    pub payload_bytes: u64,
    pub audit_entries: u64,
    /// The audit log's root (hex) in PostgreSQL, the same as in sled.
    pub audit_root: String,
}

/// Why a migration stopped. Nothing in the sled database is changed either way.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("{0}")]
    Refused(String),
}

fn fail(reason: impl std::fmt::Display) -> MigrateError {
    MigrateError::Refused(reason.to_string())
}

/// Copies the sled database in `sled_dir` into `target` and checks the copy. Needs a
/// Tokio runtime (the audit log's reader starts a task).
pub fn sled_to_postgres(sled_dir: &Path, target: PgTarget) -> Result<Migrated, MigrateError> {
    if !sled_dir.join(crate::storage::SLED_LOCK_FILE).exists() {
        return Err(fail(format!(
            "there is no sled database in {}: nothing to copy",
            sled_dir.display()
        )));
    }
    let sled = SledStorage::open(sled_dir)?;
    let place = target.place().to_owned();
    let pg = PostgresStorage::open(target)?;
    if !pg.is_empty()? {
        return Err(fail(format!(
            "the PostgreSQL database {place} already holds a node's records or payloads; \
             migrate into an empty database (a new one, or drop the liutong_* tables)"
        )));
    }

    // Records, tree by tree, in batches of one transaction each.
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut pending: Vec<Write> = Vec::new();
    let mut pending_tree = String::new();
    sled.for_each_entry(|tree, key, value| -> Result<(), MigrateError> {
        if tree != pending_tree || pending.len() == BATCH {
            if !pending.is_empty() {
                pg.apply(&pending_tree, std::mem::take(&mut pending))?;
            }
            pending_tree = tree.to_owned();
        }
        pending.push(Write::Put(key.to_vec(), value.to_vec()));
        *counts.entry(tree.to_owned()).or_default() += 1;
        Ok(())
    })?;
    if !pending.is_empty() {
        pg.apply(&pending_tree, pending)?;
    }

    // Payloads, chunk by chunk.
    fn io(name: &str) -> impl Fn(std::io::Error) -> MigrateError + '_ {
        move |e| fail(format!("payload {name}: {e}"))
    }
    let names = sled.blobs().all().map_err(io("listing"))?;
    let mut payload_bytes = 0;
    for name in &names {
        let mut writer = pg.blobs().writer(name, false).map_err(io(name))?;
        let mut offset = 0u64;
        loop {
            let piece = sled
                .blobs()
                .read_at(name, offset, CHUNK as usize)
                .map_err(io(name))?
                .unwrap_or_default();
            if piece.is_empty() {
                break;
            }
            writer.write_at(offset, &piece).map_err(io(name))?;
            offset += piece.len() as u64;
        }
        writer.set_len(offset).map_err(io(name))?;
        writer.sync().map_err(io(name))?;
        payload_bytes += offset;
    }

    // The check: every record and payload read back from PostgreSQL.
    let records: u64 = counts.values().sum();
    let copied = pg.count_records()?;
    if copied != records {
        return Err(fail(format!(
            "PostgreSQL holds {copied} records after the copy, sled {records}"
        )));
    }
    sled.for_each_entry(|tree, key, value| -> Result<(), MigrateError> {
        match pg.get(tree, key)? {
            Some(v) if v == value => Ok(()),
            _ => Err(fail(format!(
                "record {:?} of tree {tree:?} differs in PostgreSQL",
                String::from_utf8_lossy(key)
            ))),
        }
    })?;
    for name in &names {
        let len = sled.blobs().len(name).map_err(io(name))?;
        if pg.blobs().len(name).map_err(io(name))? != len {
            return Err(fail(format!(
                "payload {name} has another length in PostgreSQL"
            )));
        }
        let mut offset = 0u64;
        while offset < len.unwrap_or(0) {
            let a = sled.blobs().read_at(name, offset, CHUNK as usize);
            let b = pg.blobs().read_at(name, offset, CHUNK as usize);
            let a = a.map_err(io(name))?.unwrap_or_default();
            if b.map_err(io(name))?.as_deref() != Some(&a[..]) || a.is_empty() {
                return Err(fail(format!(
                    "payload {name} differs in PostgreSQL at {offset}"
                )));
            }
            offset += a.len() as u64;
        }
    }

    // The audit log: recomputed from the entries PostgreSQL holds, it must have the sled
    // log's root, and the node's signed checkpoint must be a prefix of it.
    let pg: Arc<dyn Storage> = pg;
    let sled_log = AuditLog::open(sled.clone() as Arc<dyn Storage>).map_err(fail)?;
    let pg_log = AuditLog::open(pg.clone()).map_err(fail)?;
    let size = pg_log.size();
    if size != sled_log.size() {
        return Err(fail(format!(
            "the audit log holds {size} entries in PostgreSQL, {} in sled",
            sled_log.size()
        )));
    }
    let mut tree = MemoryTreeStore::new();
    for index in 0..size {
        let entry = pg_log
            .entry(index)
            .map_err(fail)?
            .ok_or_else(|| fail(format!("audit entry {index} is missing in PostgreSQL")))?;
        tree.append_entry(&entry);
    }
    let root = tree.current_root();
    if root != sled_log.root() || root != pg_log.root() {
        return Err(fail(
            "the audit log's entries in PostgreSQL do not hash to the sled log's root",
        ));
    }
    if let Some(note) = pg_log.latest_checkpoint().map_err(fail)? {
        let signed = crate::audit::auditor::peek_checkpoint(&note)
            .map_err(|e| fail(format!("the stored checkpoint: {e}")))?;
        let at = merkle::root(&tree, signed.size).map_err(|e| fail(e.to_string()))?;
        if at != signed.root {
            return Err(fail(format!(
                "the node's signed checkpoint of {} entries does not match the audit log \
                 copied to PostgreSQL",
                signed.size
            )));
        }
    }
    Ok(Migrated {
        trees: counts.len(),
        records,
        payloads: names.len(),
        payload_bytes,
        audit_entries: size,
        audit_root: hex::encode(root),
    })
}
