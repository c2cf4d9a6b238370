//! The copies this node received and the ones it deleted, listed together
//! (`Usage.ListCopies`).

use liutong_proto::v1::CopyStatus;

use super::{Usage, UsageError, duties, uses};
use crate::contract::Agreement;
use crate::transfer;

impl Usage {
    /// The received copies and the deleted ones, by agreement (`Usage.ListCopies`).
    pub fn copies(&self) -> Result<Vec<CopyStatus>, UsageError> {
        let storage = self.storage.as_ref();
        let mut out = Vec::new();
        for c in transfer::copies(storage)? {
            let agreement: Option<Agreement> = c.agreement.peek_json().ok();
            let progress = transfer::progress(&c);
            let record = uses(storage, &c.agreement_id)?;
            out.push(CopyStatus {
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
            });
        }
        for d in duties::deletions(storage)? {
            let record = uses(storage, &d.agreement_id)?;
            let entry = CopyStatus {
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
            };
            // A deletion record replaces the copy's own line (a crash may leave both).
            match out.iter_mut().find(|c| c.agreement_id == d.agreement_id) {
                Some(existing) => *existing = entry,
                None => out.push(entry),
            }
        }
        out.sort_by(|a, b| a.agreement_id.cmp(&b.agreement_id));
        Ok(out)
    }
}
