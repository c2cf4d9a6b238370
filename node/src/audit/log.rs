//! The audit log in the node's storage: append-only entries with group commit, the
//! Merkle tree's perfect-subtree hashes beside them, and signed checkpoints.
//!
//! Layout, all in one storage tree; `m/size` is the commit point of a group:
//! - `e` + index (8 bytes, big-endian) → the exact entry bytes;
//! - `n` + level (1 byte) + index (8 bytes) → hash of a perfect subtree (see [`merkle`]);
//! - `m/size` → the committed tree size (8 bytes, big-endian);
//! - `c/latest` → the latest signed checkpoint note, with the cosignatures collected;
//! - `c/witnesses` → the membership credentials (JSON) of the witnesses that cosigned it;
//! - `c/h/` + (`u64::MAX` − size) → a kept checkpoint ([`KeptCheckpoint`], JSON), so a
//!   plain forward scan lists the newest first; `c/o/` + size → nothing, the same
//!   checkpoints oldest first, for letting the oldest go; `c/count` → how many are kept.
//!
//! Group commit: appends go to one committer task, which takes every append waiting,
//! hashes them into the tree, writes entries, nodes and then the new size, and
//! awaits the flush before answering any of them. So an append is durable when it
//! returns, and a failed write fails every append in the batch: the operation that
//! wanted to log is refused (fail closed) instead of going on unrecorded.
//!
//! An append can carry the state change it records ([`AuditLog::append_with`]): the
//! committer writes those records after the group's entries and size, and the same
//! flush makes both durable. So a step costs one flush, and a crash never leaves the
//! record without its entry.
//!
//! The events themselves are in [`super::event`], the log and key names in
//! [`super::names`]; both are re-exported here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::{mpsc, oneshot};

pub use super::event::{ENTRY_VERSION, Event, EventKind};
use super::merkle::{self, Appender, Hash, TreeStore};
pub use super::names::{origin_for, owner_of, witness_name_for};
use super::note::{self, Checkpoint, KeyType, NoteError, VerifierKey};
use crate::base::error::{ErrorKind, ErrorKinded};
use crate::identity::{Envelope, SigningKey};
use crate::storage::{Storage, StorageError, Write};

/// Largest entry the log accepts, in bytes (DESIGN.md).
pub const MAX_ENTRY_BYTES: usize = 65_535;
/// Most appends one commit takes.
const MAX_BATCH: usize = 4096;
const TREE: &str = "audit";
const SIZE_KEY: &[u8] = b"m/size";
const CHECKPOINT_KEY: &[u8] = b"c/latest";
const WITNESSES_KEY: &[u8] = b"c/witnesses";
const CONFIG_KEY: &[u8] = b"m/config-sha256";
const HISTORY_PREFIX: &[u8] = b"c/h/";
const HISTORY_ORDER_PREFIX: &[u8] = b"c/o/";
const HISTORY_COUNT_KEY: &[u8] = b"c/count";

/// How many signed checkpoints the log keeps for auditors to list. A kept checkpoint is
/// a few hundred bytes plus the credentials of its witnesses (about 2 KiB with three),
/// and one is signed at most once per `[audit] checkpoint_interval` (one minute by
/// default) and only when the log grew, so this is a week or more of history in at
/// most about 20 MiB. Older ones add nothing an auditor cannot get otherwise: any
/// checkpoint they kept is checked against the latest with a consistency proof.
pub const KEPT_CHECKPOINTS: u64 = 10_000;

/// A signed checkpoint the log keeps, with what is known about its witnessing.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeptCheckpoint {
    /// The tree size the checkpoint states.
    pub size: u64,
    /// When this node signed it (Unix seconds); 0 when not known (a checkpoint signed
    /// before checkpoints were kept).
    pub signed_at: i64,
    /// The signed note, with the cosignatures collected so far.
    pub note: String,
    /// The membership credentials of the witnesses whose cosignatures the note carries.
    pub witnesses: Vec<Envelope>,
}

/// One page of kept checkpoints, newest first.
#[derive(Debug, Default)]
pub struct CheckpointPage {
    pub checkpoints: Vec<KeptCheckpoint>,
    /// The size to list before for the next (older) page, if there are more.
    pub older_than: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    #[error("an audit entry of {0} bytes is over the limit of 65,535 bytes")]
    TooLarge(usize),
    #[error("the audit log cannot be written, so the operation is refused: {0}")]
    Storage(#[from] StorageError),
    #[error("the audit log is shut down, so the operation is refused")]
    Closed,
    #[error("the audit log is damaged: {0}")]
    Damaged(String),
    #[error("checkpoint: {0}")]
    Note(#[from] NoteError),
    #[error("{0}")]
    Range(String),
}

/// The audit log's errors, by kind.
impl ErrorKinded for AuditError {
    fn kind(&self) -> ErrorKind {
        match self {
            AuditError::Range(_) => ErrorKind::OutOfRange,
            AuditError::TooLarge(_) => ErrorKind::ResourceExhausted,
            AuditError::Damaged(_) => ErrorKind::DataLoss,
            AuditError::Storage(_) | AuditError::Closed => ErrorKind::Unavailable,
            _ => ErrorKind::Internal,
        }
    }
}

struct Pending {
    /// One call's entries, committed together in the same group.
    entries: Vec<Vec<u8>>,
    /// Writes to other trees that these entries record, made after the entries.
    records: Vec<(&'static str, Write)>,
    /// The index of the first entry, once the group is durable.
    reply: oneshot::Sender<Result<u64, StorageError>>,
}

struct Shared {
    storage: Arc<dyn Storage>,
    /// The committed tree. Only the committer task changes it.
    appender: Mutex<Appender>,
    /// Held while the kept checkpoints and their count are read and rewritten, so two
    /// checkpoints signed at once do not count the same place twice.
    history: Mutex<()>,
    /// How many signed checkpoints are kept ([`KEPT_CHECKPOINTS`]).
    keep: u64,
    /// The upper levels of the tree as proofs have read them.
    upper: UpperNodes,
}

/// The lowest level whose perfect-subtree hashes [`UpperNodes`] keeps: each covers at
/// least 256 entries, so a log of 10,000,000 entries has about 78,000 of them.
const UPPER_LEVEL: u8 = 8;
/// The most hashes [`UpperNodes`] keeps (about 8 MiB): at 256 entries per hash of the
/// lowest level kept, a log of up to about 16,000,000 entries fits whole.
const MAX_UPPER_NODES: usize = 1 << 17;

/// Perfect-subtree hashes of level [`UPPER_LEVEL`] and up, kept in memory once read.
/// Every proof passes through the same few upper nodes, which a storage read would
/// fetch each time (about half of a proof's reads at a million entries). A hash is
/// read only for a subtree inside the committed tree, and a committed subtree's hash
/// never changes, so what is kept stays true. Reads go to the storage once it is full.
#[derive(Default)]
struct UpperNodes(RwLock<HashMap<(u8, u64), Hash>>);

/// The node's audit log.
#[derive(Clone)]
pub struct AuditLog {
    shared: Arc<Shared>,
    queue: mpsc::Sender<Pending>,
}

impl AuditLog {
    /// Opens the log in `storage` and starts its committer task (needs a Tokio runtime).
    pub fn open(storage: Arc<dyn Storage>) -> Result<Self, AuditError> {
        Self::open_keeping(storage, KEPT_CHECKPOINTS)
    }

    /// [`AuditLog::open`], keeping the latest `keep` signed checkpoints (at least one).
    pub fn open_keeping(storage: Arc<dyn Storage>, keep: u64) -> Result<Self, AuditError> {
        let size = committed_size(storage.as_ref())?;
        let stored = StoredTree {
            storage: storage.as_ref(),
            upper: None,
        };
        let appender = Appender::load(&stored, size).map_err(|e| {
            AuditError::Damaged(format!("cannot rebuild the tree of size {size}: {e}"))
        })?;
        // The node never signs beyond what it has committed, so a smaller log than its
        // own checkpoint was cut back on disk: refuse it rather than sign a fork.
        if let Some(note) = storage.get(TREE, CHECKPOINT_KEY)? {
            let signed = note::SignedNote::parse(&note)
                .and_then(|n| Checkpoint::parse(n.text()))
                .map_err(|e| AuditError::Damaged(format!("the stored checkpoint: {e}")))?;
            if signed.size > size {
                return Err(AuditError::Damaged(format!(
                    "the log holds {size} entries, but this node signed a checkpoint of {} \
                     entries: entries {size} to {} were removed (the log was truncated); \
                     restore the database from a backup",
                    signed.size,
                    signed.size - 1
                )));
            }
        }
        let shared = Arc::new(Shared {
            storage,
            appender: Mutex::new(appender),
            history: Mutex::new(()),
            keep: keep.max(1),
            upper: UpperNodes::default(),
        });
        let (queue, rx) = mpsc::channel(MAX_BATCH);
        tokio::spawn(committer(shared.clone(), rx));
        let log = Self { shared, queue };
        log.keep_latest_if_none_kept()?;
        Ok(log)
    }

    /// A log from before checkpoints were kept: its latest checkpoint starts the
    /// history (when it was signed is not known). Made durable by the next flush; if
    /// lost before, the next start does it again.
    fn keep_latest_if_none_kept(&self) -> Result<(), AuditError> {
        let storage = self.shared.storage.as_ref();
        if storage.get(TREE, HISTORY_COUNT_KEY)?.is_some() {
            return Ok(());
        }
        let Some(note_text) = self.latest_checkpoint()? else {
            return Ok(());
        };
        let size = note::SignedNote::parse(note_text.as_bytes())
            .and_then(|n| Checkpoint::parse(n.text()))?
            .size;
        let kept = KeptCheckpoint {
            size,
            signed_at: 0,
            note: note_text,
            witnesses: self.checkpoint_witnesses()?,
        };
        let _history = self.history_lock();
        let writes = self.keep_writes(&kept)?;
        storage.apply(TREE, writes)?;
        Ok(())
    }

    /// Appends an event; returns its index once it is durable.
    pub async fn append(&self, event: &Event) -> Result<u64, AuditError> {
        self.append_bytes(event.to_bytes()).await
    }

    /// Appends raw entry bytes; returns the index once they are durable.
    pub async fn append_bytes(&self, entry: Vec<u8>) -> Result<u64, AuditError> {
        self.queue(vec![entry], Vec::new()).await
    }

    /// Appends events together with the writes (tree, write) that they record: the
    /// entries are written first, then the writes, all in one group, and one flush
    /// makes all durable. Returns the index of the first entry once everything is
    /// durable.
    pub async fn append_with(
        &self,
        events: &[Event],
        records: Vec<(&'static str, Write)>,
    ) -> Result<u64, AuditError> {
        if events.is_empty() {
            return Err(AuditError::Range("no event to append".into()));
        }
        self.queue(events.iter().map(Event::to_bytes).collect(), records)
            .await
    }

    /// Queues one call's entries and records for the committer; returns the first
    /// entry's index once the group that holds them is durable.
    async fn queue(
        &self,
        entries: Vec<Vec<u8>>,
        records: Vec<(&'static str, Write)>,
    ) -> Result<u64, AuditError> {
        if let Some(big) = entries.iter().find(|e| e.len() > MAX_ENTRY_BYTES) {
            return Err(AuditError::TooLarge(big.len()));
        }
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Pending {
                entries,
                records,
                reply,
            })
            .await
            .map_err(|_| AuditError::Closed)?;
        answer
            .await
            .map_err(|_| AuditError::Closed)?
            .map_err(AuditError::Storage)
    }

    /// The committed size: entries whose group is written and flushed. (The size
    /// stored in `m/size` can be ahead while a group flushes: see [`committed_size`].)
    pub fn size(&self) -> u64 {
        self.appender().size()
    }

    /// The root of the committed tree.
    pub fn root(&self) -> Hash {
        self.appender().root()
    }

    fn appender(&self) -> Appender {
        self.shared
            .appender
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The exact bytes of entry `index`.
    pub fn entry(&self, index: u64) -> Result<Option<Vec<u8>>, AuditError> {
        Ok(self.shared.storage.get(TREE, &entry_key(index))?)
    }

    /// The root of the tree at an earlier (or the current) size.
    pub fn root_at(&self, size: u64) -> Result<Hash, AuditError> {
        self.check_size(size)?;
        merkle::root(&self.store(), size).map_err(tree_error)
    }

    /// RFC 9162 inclusion proof of entry `index` in the tree of `size` entries.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, AuditError> {
        self.check_size(size)?;
        merkle::inclusion_proof(&self.store(), index, size).map_err(tree_error)
    }

    /// RFC 9162 consistency proof from `size1` to `size2`.
    pub fn consistency_proof(&self, size1: u64, size2: u64) -> Result<Vec<Hash>, AuditError> {
        self.check_size(size2)?;
        merkle::consistency_proof(&self.store(), size1, size2).map_err(tree_error)
    }

    /// Signs a C2SP checkpoint of the committed tree as `origin` and stores it.
    pub async fn checkpoint(&self, origin: &str, key: &SigningKey) -> Result<String, AuditError> {
        let appender = self.appender();
        let checkpoint = Checkpoint {
            origin: origin.to_owned(),
            size: appender.size(),
            root: appender.root(),
        };
        let text = note::sign_checkpoint(&checkpoint, origin, key)?.to_string();
        {
            let _history = self.history_lock();
            let kept = KeptCheckpoint {
                size: checkpoint.size,
                signed_at: crate::base::clock::now(),
                note: text.clone(),
                witnesses: Vec::new(),
            };
            let mut writes = self.keep_writes(&kept)?;
            writes.push(Write::Delete(WITNESSES_KEY.to_vec()));
            writes.push(Write::Put(
                CHECKPOINT_KEY.to_vec(),
                text.clone().into_bytes(),
            ));
            self.shared.storage.apply(TREE, writes)?;
        }
        self.shared.storage.flush().await?;
        Ok(text)
    }

    /// The writes that keep `kept`: its record and its place in the order, and, when
    /// that makes more than the log keeps, the removal of the oldest; then the count.
    /// A checkpoint of a size already kept replaces it and counts once.
    fn keep_writes(&self, kept: &KeptCheckpoint) -> Result<Vec<Write>, AuditError> {
        let storage = self.shared.storage.as_ref();
        let mut count = match storage.get(TREE, HISTORY_COUNT_KEY)? {
            Some(bytes) => decode_size(&bytes)?,
            None => 0,
        };
        let mut writes = vec![Write::Put(history_key(kept.size), kept_bytes(kept))];
        if storage.get(TREE, &history_key(kept.size))?.is_some() {
            return Ok(writes);
        }
        writes.push(Write::Put(history_order_key(kept.size), Vec::new()));
        count += 1;
        if count > self.shared.keep
            && let Some((key, _)) = storage
                .scan_page(TREE, HISTORY_ORDER_PREFIX, None, 1)?
                .into_iter()
                .next()
        {
            let oldest = decode_size(&key[HISTORY_ORDER_PREFIX.len()..])?;
            writes.push(Write::Delete(history_key(oldest)));
            writes.push(Write::Delete(key));
            count -= 1;
        }
        writes.push(Write::Put(
            HISTORY_COUNT_KEY.to_vec(),
            count.to_be_bytes().to_vec(),
        ));
        Ok(writes)
    }

    fn history_lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.shared
            .history
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// The kept checkpoints of sizes below `older_than` (all when `None`), newest first,
    /// at most `limit` (at least one).
    pub fn kept_checkpoints(
        &self,
        older_than: Option<u64>,
        limit: usize,
    ) -> Result<CheckpointPage, AuditError> {
        let after = older_than.map(history_key);
        let page = crate::storage::page_where(
            self.shared.storage.as_ref(),
            TREE,
            HISTORY_PREFIX,
            after.as_deref(),
            limit,
            |_, value| parse_kept(value).map(Some),
        )?;
        let older_than = page
            .next
            .and_then(|_| page.items.last().map(|kept| kept.size));
        Ok(CheckpointPage {
            older_than,
            checkpoints: page.items,
        })
    }

    /// The kept checkpoint of tree size `size`, if there is one.
    pub fn kept_checkpoint(&self, size: u64) -> Result<Option<KeptCheckpoint>, AuditError> {
        self.shared
            .storage
            .get(TREE, &history_key(size))?
            .map(|bytes| parse_kept(&bytes))
            .transpose()
    }

    /// Replaces the stored checkpoint note with the same checkpoint carrying
    /// cosignatures, and the credentials of the witnesses that made them.
    pub async fn store_cosigned(
        &self,
        note_text: &str,
        witnesses: &[Envelope],
    ) -> Result<(), AuditError> {
        // Plain data always serializes.
        let credentials = serde_json::to_vec(witnesses).expect("envelopes serialize");
        let size = note::SignedNote::parse(note_text.as_bytes())
            .and_then(|n| Checkpoint::parse(n.text()))?
            .size;
        {
            let _history = self.history_lock();
            let mut writes = Vec::new();
            // The kept record of this size takes the cosignatures; one let go already
            // stays gone.
            if let Some(mut kept) = self.kept_checkpoint(size)? {
                kept.note = note_text.to_owned();
                kept.witnesses = witnesses.to_vec();
                writes.push(Write::Put(history_key(size), kept_bytes(&kept)));
            }
            writes.push(Write::Put(WITNESSES_KEY.to_vec(), credentials));
            writes.push(Write::Put(
                CHECKPOINT_KEY.to_vec(),
                note_text.as_bytes().to_vec(),
            ));
            self.shared.storage.apply(TREE, writes)?;
        }
        self.shared.storage.flush().await?;
        Ok(())
    }

    /// The credentials of the witnesses that cosigned the latest checkpoint.
    pub fn checkpoint_witnesses(&self) -> Result<Vec<Envelope>, AuditError> {
        match self.shared.storage.get(TREE, WITNESSES_KEY)? {
            None => Ok(Vec::new()),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| AuditError::Damaged(format!("the stored witness credentials: {e}"))),
        }
    }

    /// Entries from `from` to `to` (both included) that exist, looking at most at
    /// `max_entries` indices and stopping once `max_bytes` are reached (always at least
    /// one if any). A missing index is left out: the caller sees the gap.
    pub fn entries(
        &self,
        from: u64,
        to: u64,
        max_entries: usize,
        max_bytes: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, AuditError> {
        let mut out = Vec::new();
        let mut bytes = 0;
        let last = to.min(self.size().saturating_sub(1));
        let mut index = from;
        let end = from.saturating_add(max_entries as u64);
        while index <= last && index < end && (out.is_empty() || bytes < max_bytes) {
            if let Some(entry) = self.entry(index)? {
                bytes += entry.len();
                out.push((index, entry));
            }
            index += 1;
        }
        Ok(out)
    }

    /// Logs a `configuration_changed` event if `config_text` differs from the
    /// configuration recorded at the previous start, and records it.
    pub async fn record_configuration(
        &self,
        config_text: &str,
        time: i64,
    ) -> Result<(), AuditError> {
        use sha2::{Digest, Sha256};
        let digest = hex::encode(Sha256::digest(config_text.as_bytes()));
        let before = self.shared.storage.get(TREE, CONFIG_KEY)?;
        if before.as_deref() == Some(digest.as_bytes()) {
            return Ok(());
        }
        // The first start only records it: there is no change to report yet.
        if let Some(old) = before {
            let detail = format!(
                "configuration changed since the last start (SHA-256 of node.toml settings {} -> {digest})",
                String::from_utf8_lossy(&old)
            );
            self.append(&Event::new(EventKind::ConfigurationChanged, time, detail))
                .await?;
        }
        self.shared
            .storage
            .put_durable(TREE, CONFIG_KEY, digest.as_bytes())
            .await?;
        Ok(())
    }

    /// The latest signed checkpoint, if one was made.
    pub fn latest_checkpoint(&self) -> Result<Option<String>, AuditError> {
        Ok(self
            .shared
            .storage
            .get(TREE, CHECKPOINT_KEY)?
            .map(|b| String::from_utf8_lossy(&b).into_owned()))
    }

    /// The verifier key line (`name+hex(key_id)+base64(0x01 ‖ key)`) of `origin`.
    pub fn verifier_key(origin: &str, key: &SigningKey) -> Result<VerifierKey, AuditError> {
        Ok(VerifierKey::from_key_pair(origin, KeyType::Ed25519, key)?)
    }

    /// The committed tree's hashes, for proofs and roots within the committed size.
    fn store(&self) -> StoredTree<'_> {
        StoredTree {
            storage: self.shared.storage.as_ref(),
            upper: Some(&self.shared.upper),
        }
    }

    fn check_size(&self, size: u64) -> Result<(), AuditError> {
        let current = self.size();
        if size > current {
            return Err(AuditError::Range(format!(
                "size {size} is beyond the log's size {current}"
            )));
        }
        Ok(())
    }
}

/// The size stored in `storage` as the commit point of the latest group (`m/size`).
///
/// A group's entries, tree nodes and size are written in one ordered batch before the
/// flush that makes them durable, and [`AuditLog::size`] advances only after that
/// flush. So this can be ahead of [`AuditLog::size`] by a group that is still flushing:
/// it is the size that a copy of the storage holds, which is what describes a copy
/// taken with writers held back (a backup).
pub fn committed_size(storage: &dyn Storage) -> Result<u64, AuditError> {
    storage
        .get(TREE, SIZE_KEY)?
        .map_or(Ok(0), |bytes| decode_size(&bytes))
}

/// The committed size that a copied record holds, if the record (`tree`, `key`) is the
/// log's commit point (`m/size`): for checking a copy of the storage record by record.
pub fn committed_size_record(
    tree: &str,
    key: &[u8],
    value: &[u8],
) -> Option<Result<u64, AuditError>> {
    (tree == TREE && key == SIZE_KEY).then(|| decode_size(value))
}

fn decode_size(bytes: &[u8]) -> Result<u64, AuditError> {
    bytes
        .try_into()
        .map(u64::from_be_bytes)
        .map_err(|_| AuditError::Damaged("the stored size is not 8 bytes".into()))
}

/// The verifier key of `member`'s log, from the signing key in its membership.
pub fn log_key_of(member: &crate::identity::Membership) -> Result<VerifierKey, AuditError> {
    Ok(VerifierKey::new(
        &origin_for(&member.participant_id),
        KeyType::Ed25519,
        member.signing_key.0,
    )?)
}

/// The key that checks `member`'s cosignatures (type 0x04).
pub fn witness_key_of(member: &crate::identity::Membership) -> Result<VerifierKey, AuditError> {
    Ok(VerifierKey::new(
        &witness_name_for(&member.participant_id),
        KeyType::CosignatureV1,
        member.signing_key.0,
    )?)
}

fn tree_error<E: std::error::Error>(e: merkle::TreeError<E>) -> AuditError {
    match e {
        merkle::TreeError::MissingNode { .. } => AuditError::Damaged(e.to_string()),
        other => AuditError::Range(other.to_string()),
    }
}

/// Newest first in key order: the size is stored as its distance below `u64::MAX`.
fn history_key(size: u64) -> Vec<u8> {
    [HISTORY_PREFIX, &(u64::MAX - size).to_be_bytes()].concat()
}

fn history_order_key(size: u64) -> Vec<u8> {
    [HISTORY_ORDER_PREFIX, &size.to_be_bytes()].concat()
}

fn kept_bytes(kept: &KeptCheckpoint) -> Vec<u8> {
    // Plain data always serializes.
    serde_json::to_vec(kept).expect("kept checkpoints serialize")
}

fn parse_kept(bytes: &[u8]) -> Result<KeptCheckpoint, AuditError> {
    serde_json::from_slice(bytes)
        .map_err(|e| AuditError::Damaged(format!("a kept checkpoint: {e}")))
}

fn entry_key(index: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(9);
    key.push(b'e');
    key.extend_from_slice(&index.to_be_bytes());
    key
}

fn node_key(level: u8, index: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(10);
    key.push(b'n');
    key.push(level);
    key.extend_from_slice(&index.to_be_bytes());
    key
}

/// The perfect-subtree hashes as the storage holds them, the upper levels through
/// `upper` when given.
struct StoredTree<'a> {
    storage: &'a dyn Storage,
    upper: Option<&'a UpperNodes>,
}

impl TreeStore for StoredTree<'_> {
    type Error = StorageError;

    fn get(&self, level: u8, index: u64) -> Result<Option<Hash>, StorageError> {
        let read = || -> Result<Option<Hash>, StorageError> {
            Ok(self
                .storage
                .get(TREE, &node_key(level, index))?
                .and_then(|v| v.try_into().ok()))
        };
        let Some(upper) = self.upper.filter(|_| level >= UPPER_LEVEL) else {
            return read();
        };
        // Poisoning cannot leave the map inconsistent (insert and get only).
        if let Some(hash) = upper
            .0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(level, index))
        {
            return Ok(Some(*hash));
        }
        let hash = read()?;
        if let Some(hash) = hash {
            let mut nodes = upper.0.write().unwrap_or_else(|p| p.into_inner());
            if nodes.len() < MAX_UPPER_NODES {
                nodes.insert((level, index), hash);
            }
        }
        Ok(hash)
    }
}

/// Another `StorageError` like `e` for each call of a failed group: every caller gets
/// the variant itself (the failed state stays recognisable), not its text.
fn same_error(e: &StorageError) -> StorageError {
    match e {
        StorageError::Open { path, reason } => StorageError::Open {
            path: path.clone(),
            reason: reason.clone(),
        },
        StorageError::Engine { tree, reason } => StorageError::Engine {
            tree: tree.clone(),
            reason: reason.clone(),
        },
        StorageError::Database { place, reason } => StorageError::Database {
            place: place.clone(),
            reason: reason.clone(),
        },
        StorageError::Flush(reason) => StorageError::Flush(reason.clone()),
        StorageError::Failed(reason) => StorageError::Failed(reason.clone()),
    }
}

async fn committer(shared: Arc<Shared>, mut queue: mpsc::Receiver<Pending>) {
    while let Some(first) = queue.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let result = commit(&shared, &mut batch).await;
        if let Err(e) = &result {
            tracing::error!(error = %e, calls = batch.len(), "audit log commit failed; refusing the operations");
        }
        let mut first = result;
        for pending in batch {
            let _ = pending.reply.send(match &first {
                Ok(index) => Ok(*index),
                Err(e) => Err(same_error(e)),
            });
            if let Ok(index) = &mut first {
                *index += pending.entries.len() as u64;
            }
        }
    }
}

/// Writes one group: entries and new tree nodes, then the size that commits them (a
/// crash before it leaves entries past the size, which the next group overwrites), then
/// the records the entries carry, then flushes. All of it is one ordered batch
/// ([`Storage::apply_trees`]): on PostgreSQL one transaction for the whole group, on
/// sled the same writes in the same order as one by one. The in-memory tree advances
/// only after the flush succeeded.
async fn commit(shared: &Shared, batch: &mut [Pending]) -> Result<u64, StorageError> {
    let mut next = shared
        .appender
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let first = next.size();
    let mut writes = Vec::with_capacity(batch.len() * 3 + 1);
    for entry in batch.iter().flat_map(|p| &p.entries) {
        writes.push(Write::Put(entry_key(next.size()), entry.clone()));
        for node in next.append(merkle::leaf_hash(entry)) {
            writes.push(Write::Put(
                node_key(node.level, node.index),
                node.hash.to_vec(),
            ));
        }
    }
    writes.push(Write::Put(
        SIZE_KEY.to_vec(),
        next.size().to_be_bytes().to_vec(),
    ));
    let mut writes: Vec<(&str, Write)> = writes.into_iter().map(|w| (TREE, w)).collect();
    for pending in batch.iter_mut() {
        writes.extend(std::mem::take(&mut pending.records));
    }
    shared.storage.apply_trees(writes)?;
    shared.storage.flush().await?;
    *shared.appender.lock().unwrap_or_else(|p| p.into_inner()) = next;
    Ok(first)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::SledStorage;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_flush_reaches_the_caller_as_the_storage_failure() {
        use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
        let dir = tempfile::tempdir().unwrap();
        let failing = Arc::new(AtomicBool::new(false));
        let f = failing.clone();
        let fault: crate::storage::fault::Fault = Arc::new(move |_: &std::path::Path| {
            if f.load(SeqCst) {
                Err(std::io::Error::from_raw_os_error(libc::EIO))
            } else {
                Ok(())
            }
        });
        let log = AuditLog::open(SledStorage::open_with(dir.path(), Some(fault)).unwrap()).unwrap();
        let event = Event::new(EventKind::NodeStarted, 0, "before");
        log.append(&event).await.unwrap();
        failing.store(true, SeqCst);
        let err = log.append(&event).await.unwrap_err();
        let failure = crate::storage::durability::failure_in(&err);
        assert!(failure.is_some_and(StorageError::is_failed), "{err}");
        let text = err.to_string();
        assert_eq!(text.matches("storage failed").count(), 1, "{text}");
        assert!(!text.contains("cannot flush"), "{text}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_appends_get_distinct_indices_and_proofs_verify() {
        let log = AuditLog::open(SledStorage::temporary().unwrap()).unwrap();
        let mut tasks = Vec::new();
        for t in 0..8 {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                let mut indices = Vec::new();
                for i in 0..50 {
                    let event =
                        Event::new(EventKind::NodeStarted, 0, format!("task {t} entry {i}"));
                    indices.push(log.append(&event).await.unwrap());
                }
                indices
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        all.sort();
        assert_eq!(all, (0..400).collect::<Vec<_>>());
        assert_eq!(log.size(), 400);

        let root = log.root();
        for index in [0, 1, 199, 399] {
            let entry = log.entry(index).unwrap().unwrap();
            let proof = log.inclusion_proof(index, 400).unwrap();
            merkle::verify_inclusion(&merkle::leaf_hash(&entry), index, 400, &proof, &root)
                .unwrap();
        }
        let old_root = log.root_at(123).unwrap();
        let proof = log.consistency_proof(123, 400).unwrap();
        merkle::verify_consistency(123, 400, &old_root, &root, &proof).unwrap();
        assert!(matches!(
            log.inclusion_proof(0, 401),
            Err(AuditError::Range(_))
        ));
    }

    /// One call's events stay together: consecutive indices, in order, whatever other
    /// appends run at the same time.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_steps_events_get_consecutive_indices_among_concurrent_appends() {
        let log = AuditLog::open(SledStorage::temporary().unwrap()).unwrap();
        let mut tasks = Vec::new();
        for t in 0..4 {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..20 {
                    let step: Vec<Event> = (0..3)
                        .map(|k| Event::new(EventKind::NodeStarted, 0, format!("{t}/{i}/{k}")))
                        .collect();
                    let first = log.append_with(&step, Vec::new()).await.unwrap();
                    for (k, event) in step.iter().enumerate() {
                        assert_eq!(
                            log.entry(first + k as u64).unwrap().unwrap(),
                            event.to_bytes()
                        );
                    }
                    log.append(&Event::new(EventKind::NodeStarted, 0, format!("{t}/{i}")))
                        .await
                        .unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(log.size(), 4 * 20 * 4);
    }

    #[tokio::test]
    async fn refuses_oversized_entries_and_keeps_nothing() {
        let log = AuditLog::open(SledStorage::temporary().unwrap()).unwrap();
        let err = log
            .append_bytes(vec![b'x'; MAX_ENTRY_BYTES + 1])
            .await
            .unwrap_err();
        assert!(matches!(err, AuditError::TooLarge(65_536)), "{err}");
        assert_eq!(log.size(), 0);
        assert_eq!(
            log.append_bytes(vec![b'x'; MAX_ENTRY_BYTES]).await.unwrap(),
            0
        );
    }

    #[tokio::test]
    async fn reopening_restores_the_same_tree_and_checkpoint_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::generate().unwrap();
        let origin = "liutong.91110000600037341L/audit";
        let (root, note_text) = {
            let storage = SledStorage::open(dir.path()).unwrap();
            let log = AuditLog::open(storage).unwrap();
            for i in 0..37 {
                log.append(&Event::new(EventKind::TrustListApplied, i, "x"))
                    .await
                    .unwrap();
            }
            (log.root(), log.checkpoint(origin, &key).await.unwrap())
        };
        // Let the committer task of the first handle go before reopening the database.
        tokio::task::yield_now().await;
        let storage = SledStorage::open(dir.path()).unwrap();
        let log = AuditLog::open(storage).unwrap();
        assert_eq!((log.size(), log.root()), (37, root));
        assert_eq!(log.latest_checkpoint().unwrap().unwrap(), note_text);
        let vkey = AuditLog::verifier_key(origin, &key).unwrap();
        let (checkpoint, _) = note::open_checkpoint(note_text.as_bytes(), &[vkey]).unwrap();
        assert_eq!((checkpoint.size, checkpoint.root), (37, root));
        // Appending continues from where it was.
        assert_eq!(
            log.append(&Event::new(EventKind::NodeStarted, 0, "again"))
                .await
                .unwrap(),
            37
        );
    }

    async fn grow(log: &AuditLog, by: u64) {
        for _ in 0..by {
            log.append(&Event::new(EventKind::NodeStarted, 0, "x"))
                .await
                .unwrap();
        }
    }

    fn sizes(page: &CheckpointPage) -> Vec<u64> {
        page.checkpoints.iter().map(|k| k.size).collect()
    }

    /// Signed checkpoints are kept newest first, in pages, across a reopen; a cosigned
    /// version replaces its own size's record, not another's.
    #[tokio::test]
    async fn signed_checkpoints_are_kept_newest_first_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::generate().unwrap();
        let witness = SigningKey::generate().unwrap();
        let origin = "liutong.91110000600037341L/audit";
        let credential = Envelope {
            payload_type: "application/vnd.liutong.membership+json".into(),
            payload: b"{}".to_vec(),
            signatures: Vec::new(),
        };
        let cosigned = {
            let log = AuditLog::open(SledStorage::open(dir.path()).unwrap()).unwrap();
            let mut notes = Vec::new();
            for _ in 0..4 {
                grow(&log, 3).await;
                notes.push(log.checkpoint(origin, &key).await.unwrap());
            }
            // Signing again at the same size replaces the record and counts it once.
            log.checkpoint(origin, &key).await.unwrap();
            let mut note = note::SignedNote::parse(notes[2].as_bytes()).unwrap();
            let line =
                note::cosign(note.text(), "witness.example", &witness, 1_800_000_000).unwrap();
            note::add_cosignatures(&mut note, [line]).unwrap();
            log.store_cosigned(&note.to_string(), std::slice::from_ref(&credential))
                .await
                .unwrap();
            note.to_string()
        };
        tokio::task::yield_now().await;
        let log = AuditLog::open(SledStorage::open(dir.path()).unwrap()).unwrap();
        let first = log.kept_checkpoints(None, 3).unwrap();
        assert_eq!(sizes(&first), [12, 9, 6]);
        assert_eq!(first.older_than, Some(6));
        let rest = log.kept_checkpoints(first.older_than, 3).unwrap();
        assert_eq!((sizes(&rest), rest.older_than), (vec![3], None));

        let nine = log.kept_checkpoint(9).unwrap().unwrap();
        assert_eq!(
            (nine.note.as_str(), nine.witnesses.len()),
            (cosigned.as_str(), 1)
        );
        assert_eq!(nine.witnesses[0], credential);
        let twelve = &first.checkpoints[0];
        assert!(twelve.witnesses.is_empty());
        assert!(twelve.signed_at > 0);
        let vkey = AuditLog::verifier_key(origin, &key).unwrap();
        let (checkpoint, _) = note::open_checkpoint(twelve.note.as_bytes(), &[vkey]).unwrap();
        assert_eq!(checkpoint.root, log.root_at(12).unwrap());
        assert_eq!(log.kept_checkpoint(5).unwrap(), None);
    }

    /// A log whose latest checkpoint was signed before checkpoints were kept starts its
    /// history with it at the next start.
    #[tokio::test]
    async fn the_latest_checkpoint_of_an_older_log_starts_the_history() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::generate().unwrap();
        let origin = "liutong.91110000600037341L/audit";
        let note_text = {
            let storage = SledStorage::open(dir.path()).unwrap();
            let log = AuditLog::open(storage.clone()).unwrap();
            grow(&log, 4).await;
            let note_text = log.checkpoint(origin, &key).await.unwrap();
            // What an older node wrote: the latest checkpoint only.
            for prefix in [HISTORY_PREFIX, HISTORY_ORDER_PREFIX, HISTORY_COUNT_KEY] {
                for (k, _) in storage.scan_prefix(TREE, prefix).unwrap() {
                    storage.delete(TREE, &k).unwrap();
                }
            }
            storage.flush().await.unwrap();
            note_text
        };
        tokio::task::yield_now().await;
        let log = AuditLog::open(SledStorage::open(dir.path()).unwrap()).unwrap();
        let kept = log.kept_checkpoints(None, 10).unwrap().checkpoints;
        assert_eq!(kept.len(), 1);
        assert_eq!((kept[0].size, kept[0].signed_at), (4, 0));
        assert_eq!(kept[0].note, note_text);
        grow(&log, 1).await;
        log.checkpoint(origin, &key).await.unwrap();
        assert_eq!(sizes(&log.kept_checkpoints(None, 10).unwrap()), [5, 4]);
    }

    /// Past the bound, the oldest kept checkpoint goes, and the count stays right across
    /// a reopen.
    #[tokio::test]
    async fn only_the_latest_checkpoints_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::generate().unwrap();
        let origin = "liutong.91110000600037341L/audit";
        {
            let log = AuditLog::open_keeping(SledStorage::open(dir.path()).unwrap(), 3).unwrap();
            for _ in 0..5 {
                grow(&log, 1).await;
                log.checkpoint(origin, &key).await.unwrap();
            }
            assert_eq!(sizes(&log.kept_checkpoints(None, 10).unwrap()), [5, 4, 3]);
        }
        tokio::task::yield_now().await;
        let log = AuditLog::open_keeping(SledStorage::open(dir.path()).unwrap(), 3).unwrap();
        grow(&log, 1).await;
        log.checkpoint(origin, &key).await.unwrap();
        assert_eq!(sizes(&log.kept_checkpoints(None, 10).unwrap()), [6, 5, 4]);
        assert_eq!(log.kept_checkpoint(3).unwrap(), None);
    }

    #[tokio::test]
    async fn a_configuration_change_is_logged_once() {
        let log = AuditLog::open(SledStorage::temporary().unwrap()).unwrap();
        log.record_configuration("a = 1\n", 1).await.unwrap();
        log.record_configuration("a = 1\n", 2).await.unwrap();
        assert_eq!(log.size(), 0);
        log.record_configuration("a = 2\n", 3).await.unwrap();
        assert_eq!(log.size(), 1);
        let event: Event = serde_json::from_slice(&log.entry(0).unwrap().unwrap()).unwrap();
        assert_eq!(event.kind, EventKind::ConfigurationChanged);
        assert!(
            event.detail.contains("changed since the last start"),
            "{}",
            event.detail
        );
    }

    /// A log of `size` distinct entries, appended in groups of 64.
    async fn log_of(size: u64) -> AuditLog {
        let log = AuditLog::open(SledStorage::temporary().unwrap()).unwrap();
        let mut next = 0;
        while next < size {
            let group: Vec<Event> = (next..size.min(next + 64))
                .map(|i| Event::new(EventKind::NodeStarted, 0, format!("entry {i}")))
                .collect();
            next += group.len() as u64;
            log.append_with(&group, Vec::new()).await.unwrap();
        }
        log
    }

    /// Proofs and roots read through the upper levels kept in memory are the ones the
    /// stored tree gives, before and after those levels were read once.
    #[tokio::test]
    async fn proofs_through_the_kept_upper_levels_match_the_stored_tree() {
        let log = log_of(1100).await;
        let stored = StoredTree {
            storage: log.shared.storage.as_ref(),
            upper: None,
        };
        for _round in 0..2 {
            for size in [1, 255, 256, 257, 511, 512, 513, 1024, 1100] {
                assert_eq!(
                    log.root_at(size).unwrap(),
                    merkle::root(&stored, size).unwrap()
                );
                for index in [0, 1, size / 2, size - 1].into_iter().filter(|i| *i < size) {
                    assert_eq!(
                        log.inclusion_proof(index, size).unwrap(),
                        merkle::inclusion_proof(&stored, index, size).unwrap(),
                        "entry {index} of {size}"
                    );
                }
                for older in [1, 256, 700].into_iter().filter(|o| *o <= size) {
                    assert_eq!(
                        log.consistency_proof(older, size).unwrap(),
                        merkle::consistency_proof(&stored, older, size).unwrap(),
                        "{older} to {size}"
                    );
                }
            }
        }
    }

    /// Once a proof has read an upper-level hash, later proofs take it from memory: a
    /// proof made after that hash was damaged on disk still verifies, while one made
    /// from the stored tree alone does not.
    #[tokio::test]
    async fn a_proof_reads_each_upper_level_hash_once() {
        let log = log_of(1024).await;
        let root = log.root();
        let leaf = merkle::leaf_hash(&log.entry(5).unwrap().unwrap());
        let first = log.inclusion_proof(5, 1024).unwrap();
        merkle::verify_inclusion(&leaf, 5, 1024, &first, &root).unwrap();
        // Entry 5's sibling at level 9 is the subtree of entries 512 to 1023.
        let storage = log.shared.storage.as_ref();
        storage.put(TREE, &node_key(9, 1), &[0; 32]).unwrap();
        let again = log.inclusion_proof(5, 1024).unwrap();
        assert_eq!(again, first);
        merkle::verify_inclusion(&leaf, 5, 1024, &again, &root).unwrap();
        let stored = StoredTree {
            storage,
            upper: None,
        };
        let from_disk = merkle::inclusion_proof(&stored, 5, 1024).unwrap();
        assert!(merkle::verify_inclusion(&leaf, 5, 1024, &from_disk, &root).is_err());
    }
}
