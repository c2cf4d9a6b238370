//! Duties the node carries out by itself: deleting copies at their deleteAfter deadline
//! (and when an agreement is revoked), and the background task that runs the duties,
//! the outbox and the revocation checks.
//!
//! A deletion commits its record (the decision), the signed deletion receipt when one
//! is owed and its audit entry together, then removes the copy and flushes. Reads check
//! the record before anything else, so a copy whose deletion a crash interrupted is
//! already unreadable, and [`Usage::recover`] removes it at the next start. [`Usage::recover`] also deletes
//! the copies whose deadline passed while the node was stopped, before the node serves
//! anyone.

use std::sync::Arc;
use std::time::Duration;

use liutong_policy::{DeleteAfter, Duty, Policy};
use serde::{Deserialize, Serialize};

use super::{USAGE, Usage, UsageError, quoted, when};
use crate::audit::log::{Event, EventKind};
use crate::base::clock::now;
use crate::base::shutdown::Shutdown;
use crate::contract::Agreement;
use crate::storage::{Storage, StorageError, Write};
use crate::transfer;

/// Why a copy was deleted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum DeletionCause {
    /// The policy's deleteAfter deadline (Unix seconds) passed.
    Expired { deadline: i64 },
    /// The provider revoked the agreement.
    Revoked {
        revocation_id: String,
        reason: String,
        revoked_at: i64,
    },
}

/// A deleted copy, as the consumer keeps it: reads and pulls of the agreement are
/// refused with its explanation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deletion {
    pub agreement_id: String,
    /// The provider's participant ID.
    pub provider: String,
    pub product_id: String,
    pub version: u32,
    /// SHA-256 of the deleted payload, so publishing the same bytes again is recognised.
    pub sha256: String,
    /// SHA-256 of the bytes delivered when they were not the product's own (a masked
    /// delivery): a saved masked copy published again is recognised too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered_sha256: Option<String>,
    /// Whether the node held data for the agreement when it deleted it.
    pub held: bool,
    pub cause: DeletionCause,
    pub deleted_at: i64,
    /// The revocation this deletion answered (also when the copy had been deleted at its
    /// deadline before the provider revoked the agreement).
    #[serde(default)]
    pub revocation_id: Option<String>,
}

impl Deletion {
    /// Why the copy is gone, for a person.
    pub fn explain(&self) -> String {
        match &self.cause {
            DeletionCause::Expired { deadline } => format!(
                "the copy of agreement {} was deleted at {}: its deleteAfter deadline ({}) passed",
                self.agreement_id,
                when(self.deleted_at),
                when(*deadline)
            ),
            DeletionCause::Revoked {
                reason, revoked_at, ..
            } => format!(
                "agreement {} was revoked by its provider at {}: {}; its copy was deleted at {}",
                self.agreement_id,
                when(*revoked_at),
                quoted(reason),
                when(self.deleted_at)
            ),
        }
    }

    /// DELETED (deadline) or REVOKED.
    pub fn state(&self) -> &'static str {
        match self.cause {
            DeletionCause::Expired { .. } => "DELETED",
            DeletionCause::Revoked { .. } => "REVOKED",
        }
    }
}

fn deletion_key(agreement_id: &str) -> Vec<u8> {
    format!("d/{agreement_id}").into_bytes()
}

/// The deletion record of an agreement's copy, if usage control deleted it.
pub fn deletion(
    storage: &dyn Storage,
    agreement_id: &str,
) -> Result<Option<Deletion>, StorageError> {
    Ok(storage
        .get(USAGE, &deletion_key(agreement_id))?
        .and_then(|b| serde_json::from_slice(&b).ok()))
}

/// Every deletion record.
pub fn deletions(storage: &dyn Storage) -> Result<Vec<Deletion>, StorageError> {
    Ok(storage
        .scan_prefix(USAGE, b"d/")?
        .iter()
        .filter_map(|(_, v)| serde_json::from_slice(v).ok())
        .collect())
}

/// The deletion records whose agreement ID comes after `after`, by agreement ID, one
/// page.
pub fn deletions_page(
    storage: &dyn Storage,
    after: Option<&str>,
    limit: usize,
) -> Result<crate::storage::Page<Deletion>, StorageError> {
    let after = after.map(deletion_key);
    crate::storage::page_where(storage, USAGE, b"d/", after.as_deref(), limit, |_, v| {
        Ok::<_, StorageError>(serde_json::from_slice(v).ok())
    })
}

impl Usage {
    /// `f` over the agreement's policy: the compiled one (kept per agreement), or, when it
    /// no longer compiles here, the policy parsed alone (its duties still hold). `None`
    /// when it does not even parse.
    fn with_policy<T>(&self, agreement: &Agreement, f: impl FnOnce(&Policy) -> T) -> Option<T> {
        if let Ok(compiled) = self.contracts.compiled_policy(agreement) {
            return Some(f(compiled.policy()));
        }
        match Policy::from_odrl_value(&agreement.policy) {
            Ok(p) => Some(f(&p)),
            Err(e) => {
                tracing::warn!(agreement = %agreement.agreement_id, error = %e, "the agreement's policy does not parse");
                None
            }
        }
    }

    /// The earliest deleteAfter deadline in an agreement's policy, Unix seconds: a time
    /// after the agreement, or a date.
    pub fn deadline(&self, agreement: &Agreement) -> Option<i64> {
        self.with_policy(agreement, |policy| deadline_in(agreement, policy))
            .flatten()
    }
}

fn deadline_in(agreement: &Agreement, policy: &Policy) -> Option<i64> {
    policy
        .duties()
        .filter_map(|d| match d {
            Duty::DeleteAfter {
                when: DeleteAfter::Elapsed(e),
            } => Some(
                agreement
                    .agreed_at
                    .saturating_add(i64::try_from(e.as_secs()).unwrap_or(i64::MAX)),
            ),
            Duty::DeleteAfter {
                when: DeleteAfter::At(t),
            } => Some(t.unix_timestamp()),
            _ => None,
        })
        .min()
}

impl Usage {
    /// Whether the agreement's policy asks the consumer to notify the provider.
    pub fn notifies(&self, agreement: &Agreement) -> bool {
        self.with_policy(agreement, |p| p.duties().any(|d| matches!(d, Duty::Notify)))
            .unwrap_or(false)
    }

    /// Deletes the copy of an agreement (consumer side), records why, logs it, and queues a
    /// signed deletion receipt for the provider when one is owed (always on revocation; on
    /// a deadline when the policy has a notify duty).
    pub async fn delete(
        &self,
        agreement: &Agreement,
        cause: DeletionCause,
    ) -> Result<Deletion, UsageError> {
        self.delete_logged(agreement, cause, Vec::new()).await
    }

    /// [`delete`], with `preceding` audit events (what led to the deletion, such as the
    /// revocation received) committed together with it.
    ///
    /// The deletion record, the receipt owed and the audit entries are one commit (entries
    /// first, one flush), made before the copy's bytes are removed: a crash before it
    /// leaves the copy as it was, a crash after it leaves a logged decision whose removal
    /// the start-up [`Usage::recover`] finishes, without a second entry.
    pub(super) async fn delete_logged(
        &self,
        agreement: &Agreement,
        cause: DeletionCause,
        preceding: Vec<Event>,
    ) -> Result<Deletion, UsageError> {
        let storage = self.storage.as_ref();
        let id = &agreement.agreement_id;
        // One deletion of a copy at a time (the background task and a read may both find
        // the deadline passed): the second finds the first's record.
        let lock = self.contracts.locks().lock_for(id);
        let _one_at_a_time = lock.lock().await;
        let revocation_id = match &cause {
            DeletionCause::Revoked { revocation_id, .. } => Some(revocation_id.clone()),
            DeletionCause::Expired { .. } => None,
        };
        if let Some(mut earlier) = deletion(storage, id)? {
            // Already deleted. Finish the removal in case a crash interrupted it; a
            // revocation that arrives after a deletion at the deadline still gets its receipt.
            transfer::delete_copy(storage, id)?;
            if revocation_id.is_none() || earlier.revocation_id.is_some() {
                if preceding.is_empty() {
                    storage.flush().await?;
                } else {
                    self.commit(&preceding, Vec::new()).await?;
                }
                return Ok(earlier);
            }
            earlier.revocation_id = revocation_id;
            let records = vec![
                deletion_write(&earlier),
                self.deletion_receipt_write(agreement, &earlier, &cause)?,
            ];
            let mut events = preceding;
            if events.is_empty() {
                events.push(agreement.event(
                EventKind::Revocation,
                agreement.provider.as_str(),
                format!(
                    "{}; a signed deletion receipt answering the revocation is on its way to the \
                 provider",
                    earlier.explain()
                ),
            ));
            }
            self.commit(&events, records).await?;
            self.kick();
            return Ok(earlier);
        }
        let copy = transfer::copy(storage, id)?;
        let held = copy.is_some();
        // Display-only decoding is enough: the hash only widens what is recognised.
        let delivered_sha256 = copy
            .and_then(|c| c.manifest.peek_json::<transfer::Manifest>().ok())
            .filter(|m| m.desensitized.is_some())
            .map(|m| m.sha256);
        // The copy's content fingerprints outlive it: its rows published later by this
        // node are still recognised. A copy that cannot be read is deleted all the same.
        if let Err(e) = self.remember_copy(id) {
            tracing::warn!(agreement = %id, error = %e, "cannot fingerprint a copy before deleting it");
        }
        let record = Deletion {
            agreement_id: id.clone(),
            provider: agreement.provider.to_string(),
            product_id: agreement.product_id.clone(),
            version: agreement.version,
            sha256: agreement.product_sha256.clone(),
            delivered_sha256,
            held,
            cause: cause.clone(),
            deleted_at: now(),
            revocation_id,
        };
        // The record is the decision: reads refuse from the moment it is committed.
        let mut records = vec![deletion_write(&record)];
        let receipt_owed = record.revocation_id.is_some() || self.notifies(agreement);
        if receipt_owed {
            records.push(self.deletion_receipt_write(agreement, &record, &cause)?);
        }
        let mut events = preceding;
        events.push(agreement.event(
            EventKind::CopyDeleted,
            agreement.provider.as_str(),
            format!(
                "{}{}",
                record.explain(),
                if receipt_owed {
                    "; a signed deletion receipt is on its way to the provider"
                } else {
                    ""
                }
            ),
        ));
        self.commit(&events, records).await?;
        transfer::delete_copy(storage, id)?;
        storage.flush().await?;
        if receipt_owed {
            self.kick();
        }
        Ok(record)
    }
}

/// The write that stores a deletion record.
fn deletion_write(record: &Deletion) -> (&'static str, Write) {
    (
        USAGE,
        Write::Put(
            deletion_key(&record.agreement_id),
            serde_json::to_vec(record).expect("deletions serialize"),
        ),
    )
}

impl Usage {
    /// Deletes every copy whose deleteAfter deadline has passed. Returns how many.
    pub async fn sweep_expired(&self) -> Result<usize, UsageError> {
        let storage = self.storage.as_ref();
        let t = now();
        let mut deleted = 0;
        for c in transfer::copies(storage)? {
            if deletion(storage, &c.agreement_id)?.is_some() {
                continue;
            }
            // Display-only decoding is enough here: deleting is the safe direction.
            let Ok(agreement) = c.agreement.peek_json::<Agreement>() else {
                continue;
            };
            if let Some(deadline) = self.deadline(&agreement)
                && deadline <= t
            {
                self.delete(&agreement, DeletionCause::Expired { deadline })
                    .await?;
                deleted += 1;
            }
        }
        Ok(deleted)
    }

    /// At start, before the node serves anyone: finishes deletions a crash interrupted
    /// (copies, and on the provider masked deliveries) and deletes the copies whose
    /// deadline passed while the node was stopped.
    pub async fn recover(&self) -> Result<(), UsageError> {
        let storage = self.storage.as_ref();
        let mut finished = 0;
        for d in deletions(storage)? {
            if transfer::copy(storage, &d.agreement_id)?.is_some() {
                transfer::delete_copy(storage, &d.agreement_id)?;
                finished += 1;
            }
        }
        if finished > 0 {
            storage.flush().await?;
            tracing::warn!(
                copies = finished,
                "finished deletions interrupted by a stop"
            );
        }
        // Provider side: masked deliveries whose removal was committed but cut short.
        let masked = crate::desensitize::delivery::finish_removals(storage).await?;
        if masked > 0 {
            tracing::warn!(
                deliveries = masked,
                "finished deleting masked deliveries interrupted by a stop"
            );
        }
        let expired = self.sweep_expired().await?;
        if expired > 0 {
            tracing::info!(
                copies = expired,
                "deleted copies whose deadline passed while the node was stopped"
            );
        }
        // Copies an earlier version kept in plain form are sealed like new ones.
        let sealed = transfer::seal_plain_copies(storage).await?;
        if sealed > 0 {
            tracing::info!(
                copies = sealed,
                "sealed received copies kept in plain form by an earlier version"
            );
        }
        Ok(())
    }

    /// The background task: every `usage.check_interval` (or sooner when woken), delete
    /// expired copies, send what waits in the outbox, and ask providers for revocations.
    pub async fn run(self: Arc<Self>, mut shutdown: Shutdown) {
        let every = self.config.check_interval.max(Duration::from_millis(50));
        let mut last_poll: Option<tokio::time::Instant> = None;
        loop {
            let poll_now = last_poll.is_none_or(|t| t.elapsed() >= every);
            if poll_now {
                last_poll = Some(tokio::time::Instant::now());
            }
            let work = async {
                if let Err(e) = self.sweep_expired().await {
                    tracing::warn!(error = %e, "cannot delete expired copies; retrying");
                }
                self.deliver_due().await;
                if poll_now {
                    self.poll_revocations().await;
                }
            };
            // A stop does not wait for a slow peer. Every step is safe to cut short: a
            // deletion's record is written first and finished at the next start, and an
            // unacknowledged message stays in the outbox.
            if shutdown.unless_fired(work).await.is_none() {
                return;
            }
            let woken = shutdown.unless_fired(async {
                tokio::select! {
                    () = tokio::time::sleep(every) => {}
                    () = self.kick.notified() => {}
                }
            });
            if woken.await.is_none() {
                return;
            }
        }
    }
}
