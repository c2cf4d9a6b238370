//! The copies this node received and the ones it deleted, listed together
//! (`Usage.ListCopies`).

use std::collections::BTreeMap;

use liutong_proto::v1::CopyStatus;

use super::{Usage, UsageError, duties, uses};
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
