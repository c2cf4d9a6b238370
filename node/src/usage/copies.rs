//! The copies this node received and the ones it deleted, listed together
//! (`Usage.ListCopies`), and the content fingerprints each copy leaves behind (see
//! [`super::rows`]): made from a completed copy before anything else may need them
//! and kept after the copy is deleted, so its rows are recognised when they come back
//! in a product this node publishes.

use std::collections::BTreeMap;
use std::sync::Arc;

use liutong_proto::v1::CopyStatus;

use ring::hmac;

use super::rows::{RowReader, Sketch};
use super::{USAGE, Usage, UsageError, duties, uses};
use crate::contract::Agreement;
use crate::transfer;

impl Usage {
    /// The received copies and the deleted ones, by agreement (`Usage.ListCopies`), one
    /// page: at most `limit` (at least one) whose agreement ID comes after `after`, and
    /// the agreement ID the next page starts after (`None` on the last page).
    ///
    /// Both stores are ordered by agreement ID, so the first `limit + 1` of each hold
    /// the first `limit + 1` of the two merged.
    pub fn copies_page(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<CopyStatus>, Option<String>), UsageError> {
        let storage = self.storage.as_ref();
        let limit = limit.max(1);
        let copies = transfer::copies_page(storage, after, limit + 1)?.items;
        let deletions = duties::deletions_page(storage, after, limit + 1)?.items;
        let mut merged: BTreeMap<String, CopyStatus> = BTreeMap::new();
        for c in copies {
            merged.insert(c.agreement_id.clone(), self.copy_status(&c)?);
        }
        // A deletion record replaces the copy's own line (a crash may leave both).
        for d in deletions {
            merged.insert(d.agreement_id.clone(), self.deletion_status(&d)?);
        }
        let more = merged.len() > limit;
        let page: Vec<CopyStatus> = merged.into_values().take(limit).collect();
        let next = more
            .then(|| page.last().map(|c| c.agreement_id.clone()))
            .flatten();
        Ok((page, next))
    }

    fn copy_status(&self, c: &transfer::ReceivedCopy) -> Result<CopyStatus, UsageError> {
        let storage = self.storage.as_ref();
        let agreement: Option<Agreement> = c.agreement.peek_json().ok();
        let progress = transfer::progress(c);
        let record = uses(storage, &c.agreement_id)?;
        Ok(CopyStatus {
            agreement_id: c.agreement_id.clone(),
            provider: c.provider.clone(),
            product_id: progress.product_id,
            version: progress.version,
            purpose: agreement
                .as_ref()
                .map(|a| a.purpose.clone())
                .unwrap_or_default(),
            state: progress.state,
            uses: record.uses,
            last_used_unix: record.last_used_at.unwrap_or_default(),
            delete_at_unix: agreement
                .as_ref()
                .and_then(|a| self.deadline(a))
                .unwrap_or_default(),
            deleted_at_unix: 0,
            reason: c.reason.clone(),
            size: progress.bytes_total,
        })
    }

    fn deletion_status(&self, d: &duties::Deletion) -> Result<CopyStatus, UsageError> {
        let record = uses(self.storage.as_ref(), &d.agreement_id)?;
        Ok(CopyStatus {
            agreement_id: d.agreement_id.clone(),
            provider: d.provider.clone(),
            product_id: d.product_id.clone(),
            version: d.version,
            purpose: self
                .contracts
                .by_agreement(&d.agreement_id)
                .ok()
                .flatten()
                .map(|n| n.purpose)
                .unwrap_or_default(),
            state: d.state().to_owned(),
            uses: record.uses,
            last_used_unix: record.last_used_at.unwrap_or_default(),
            delete_at_unix: match d.cause {
                duties::DeletionCause::Expired { deadline } => deadline,
                duties::DeletionCause::Revoked { .. } => 0,
            },
            deleted_at_unix: d.deleted_at,
            reason: d.explain(),
            size: 0,
        })
    }
}

/// In tree `usage`: the node-local key of the content fingerprints.
const FINGERPRINT_KEY: &[u8] = b"fk";

fn sketch_key(agreement_id: &str) -> Vec<u8> {
    format!("f/{agreement_id}").into_bytes()
}

impl Usage {
    /// The key the content fingerprints are made with: random, made once per node.
    pub(super) fn fingerprint_key(&self) -> Result<hmac::Key, UsageError> {
        let key = crate::storage::node_secret(self.storage.as_ref(), USAGE, FINGERPRINT_KEY)
            .map_err(|e| match e {
                crate::storage::SecretError::Storage(e) => UsageError::Storage(e),
                crate::storage::SecretError::Random(e) => UsageError::Random(e),
            })?
            .ok_or_else(|| {
                UsageError::DataLoss("the content fingerprint key is damaged".to_owned())
            })?;
        Ok(hmac::Key::new(hmac::HMAC_SHA256, &key))
    }

    /// Makes and stores the fingerprints of a completed copy that has none yet; the
    /// stored ones are kept. Nothing happens for a copy not completed or not held.
    pub fn remember_copy(&self, agreement_id: &str) -> Result<(), UsageError> {
        let storage = self.storage.as_ref();
        if storage.get(USAGE, &sketch_key(agreement_id))?.is_some() {
            return Ok(());
        }
        let Some(c) = transfer::copy(storage, agreement_id)? else {
            return Ok(());
        };
        if c.state != transfer::TransferState::Completed {
            return Ok(());
        }
        fingerprint(&|| Some(self.storage.clone()), &self.fingerprint_key()?, &c)
    }

    /// Consumer side, as a transfer finishes: every chunk of the copy is in and
    /// verified, and its fingerprints are made now, on a blocking thread of their own
    /// (they take a pass over the whole copy), so its rows are recognised in whatever
    /// this node publishes from then on, also once the payload file is gone. A publish
    /// that comes first makes them itself (see [`Usage::copy_sketches`]).
    pub(crate) fn remember_verified(&self, agreement_id: &str) -> Result<(), UsageError> {
        // The pass holds the node's storage only while it reads or writes, so a node
        // that stops meanwhile is not kept open by it (the storage is closed where the
        // node is, not on this thread); the pass then ends, and a later publish makes
        // the fingerprints.
        let storage = Arc::downgrade(&self.storage);
        let key = self.fingerprint_key()?;
        let id = agreement_id.to_owned();
        tokio::task::spawn_blocking(move || {
            let made = (|| {
                let copy = {
                    let Some(storage) = storage.upgrade() else {
                        return Ok(());
                    };
                    if storage.get(USAGE, &sketch_key(&id))?.is_some() {
                        return Ok(());
                    }
                    transfer::copy(storage.as_ref(), &id)?
                };
                match copy {
                    Some(c) => fingerprint(&|| storage.upgrade(), &key, &c),
                    None => Ok(()),
                }
            })();
            if let Err(e) = made {
                tracing::warn!(agreement = %id, error = %e, "cannot fingerprint a received copy");
            }
        });
        Ok(())
    }
}

/// Makes and stores the fingerprints of the copy `c`, every chunk of which must be in
/// its payload file: a missing chunk is an error, never a fingerprint of less.
/// `storage()` gives the node's storage for each step, or `None` once the node has
/// stopped: then nothing is stored and the pass ends.
fn fingerprint(
    storage: &dyn Fn() -> Option<Arc<dyn crate::storage::Storage>>,
    key: &hmac::Key,
    c: &transfer::ReceivedCopy,
) -> Result<(), UsageError> {
    let manifest: transfer::Manifest = c
        .manifest
        .peek_json()
        .map_err(|e| UsageError::DataLoss(format!("the copy's manifest: {e}")))?;
    let mut sketch = Sketch::default();
    let mut reader = RowReader::default();
    for index in 0..manifest.chunk_hashes.len() as u32 {
        let Some(held) = storage() else {
            return Ok(());
        };
        let chunk = transfer::read_copy_chunk(held.as_ref(), c, &manifest, index)?
            .filter(|_| index < c.chunks_received)
            .ok_or_else(|| {
                UsageError::DataLoss(format!(
                    "chunk {index} of the copy of agreement {} is missing, so its content \
                     fingerprints cannot be made",
                    c.agreement_id
                ))
            })?;
        reader.feed(&chunk, &mut |row| sketch.add_row(key, &row));
    }
    reader.finish(&mut |row| sketch.add_row(key, &row));
    if let Some(held) = storage() {
        held.put(USAGE, &sketch_key(&c.agreement_id), &sketch.to_bytes())?;
    }
    Ok(())
}

impl Usage {
    /// The fingerprints of every copy this node received, held or deleted, by
    /// agreement ID; completed copies without any are fingerprinted first.
    pub fn copy_sketches(&self) -> Result<Vec<(String, Sketch)>, UsageError> {
        let storage = self.storage.as_ref();
        for c in transfer::copies(storage)? {
            if c.state == transfer::TransferState::Completed
                && storage.get(USAGE, &sketch_key(&c.agreement_id))?.is_none()
            {
                self.remember_copy(&c.agreement_id)?;
            }
        }
        let mut out = Vec::new();
        for (k, v) in storage.scan_prefix(USAGE, b"f/")?.iter() {
            let Some(id) = k
                .strip_prefix(b"f/")
                .and_then(|k| std::str::from_utf8(k).ok())
            else {
                continue;
            };
            let sketch = Sketch::from_bytes(v).ok_or_else(|| {
                UsageError::DataLoss(format!(
                    "the content fingerprints of the copy received under agreement {id} are \
                     damaged"
                ))
            })?;
            out.push((id.to_owned(), sketch));
        }
        Ok(out)
    }
}
