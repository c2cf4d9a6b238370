//! No onward sharing: what a product being published is derived from, checked.
//!
//! A product may declare (`--derived-from`) products of this node and received copies
//! (by their agreement ID); a payload byte-identical to a received copy counts as
//! derived from it even when nothing is declared, and so does one that holds a
//! significant share of a copy's rows ([`PayloadCheck`]: at least
//! [`SIGNIFICANT`](super::rows::SIGNIFICANT) of the copy's identifying values, or of
//! the payload's rows carrying one), however its bytes were changed. For every source,
//! followed through the products it names in turn:
//!
//! - the new product keeps at least the source's classification;
//! - if the new product is offered, each received copy among the sources must be
//!   present (not deleted or revoked) and its policy must permit `distribute` to this
//!   node for the agreement's purpose; when the permission carries a `nextPolicy` duty,
//!   the offer's policy must be that policy (its `uid`).

use std::collections::HashSet;

use liutong_policy::{Action, Classification, CompiledPolicy, Duty, Scope};

use super::rows::{Overlap, RowReader, Sketch, cell_hash};
use super::{Usage, UsageError, duties, uses};
use crate::base::clock::now;
use crate::base::error::{ErrorKind, ErrorKinded};
use crate::contract::{Agreement, Role};
use crate::storage::StorageError;
use crate::transfer::{self, Manifest, TransferState};

/// Why a publish is refused by the onward-sharing rules.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OnwardError {
    #[error("derived_from: {0}")]
    UnknownSource(String),
    #[error("classification: {0}")]
    Classification(String),
    #[error("derived_from: {0}")]
    NotDistributable(String),
    #[error("policy: {0}")]
    NextPolicy(String),
    #[error("{0}")]
    Unavailable(String),
}

impl ErrorKinded for OnwardError {
    fn kind(&self) -> ErrorKind {
        match self {
            OnwardError::UnknownSource(_)
            | OnwardError::Classification(_)
            | OnwardError::NextPolicy(_) => ErrorKind::InvalidArgument,
            OnwardError::NotDistributable(_) => ErrorKind::PermissionDenied,
            OnwardError::Unavailable(_) => ErrorKind::Unavailable,
        }
    }
}

impl From<StorageError> for OnwardError {
    fn from(e: StorageError) -> Self {
        Self::Unavailable(e.to_string())
    }
}

impl From<UsageError> for OnwardError {
    fn from(e: UsageError) -> Self {
        Self::Unavailable(e.to_string())
    }
}

/// A received copy whose rows a payload holds.
#[derive(Clone, Debug, PartialEq)]
pub struct ContentMatch {
    pub agreement_id: String,
    /// Share of the copy's identifying values found in the payload.
    pub of_copy: f64,
    /// Estimated share of the payload's rows that carry one of them.
    pub of_rows: f64,
}

impl ContentMatch {
    /// How much of the copy the payload holds, for a message.
    pub fn describe(&self) -> String {
        format!(
            "it holds {:.0} % of the identifying values of the copy received under agreement \
             {}, in {:.0} % of its rows",
            self.of_copy * 100.0,
            self.agreement_id,
            self.of_rows * 100.0
        )
    }
}

/// A payload being published, compared row by row with the received copies as it
/// arrives (memory: the copies' sketches, not the payload).
pub struct PayloadCheck {
    key: Option<ring::hmac::Key>,
    copies: Vec<(String, Sketch, Overlap)>,
    reader: RowReader,
    rows: u64,
}

impl PayloadCheck {
    /// Reads more of the payload.
    pub fn feed(&mut self, data: &[u8]) {
        let Some(key) = &self.key else { return };
        let (copies, rows) = (&mut self.copies, &mut self.rows);
        self.reader
            .feed(data, &mut |row| Self::row(key, copies, rows, &row));
    }

    fn row(
        key: &ring::hmac::Key,
        copies: &mut [(String, Sketch, Overlap)],
        rows: &mut u64,
        row: &super::rows::Row,
    ) {
        *rows += 1;
        let hashes: Vec<u64> = row.iter().filter_map(|(_, v)| cell_hash(key, v)).collect();
        for (_, sketch, overlap) in copies.iter_mut() {
            overlap.add_row(sketch, &hashes);
        }
    }

    /// The copies whose rows the whole payload holds a significant share of.
    pub fn finish(mut self) -> Vec<ContentMatch> {
        let Some(key) = self.key.take() else {
            return Vec::new();
        };
        let (copies, rows) = (&mut self.copies, &mut self.rows);
        self.reader
            .finish(&mut |row| Self::row(&key, copies, rows, &row));
        self.copies
            .iter()
            .filter_map(|(id, sketch, overlap)| {
                let (of_copy, of_rows) = overlap.significant(sketch, self.rows)?;
                Some(ContentMatch {
                    agreement_id: id.clone(),
                    of_copy,
                    of_rows,
                })
            })
            .collect()
    }
}

impl Usage {
    /// Starts comparing a payload with the rows of the copies this node received
    /// (under agreements it still knows as the consumer).
    pub fn payload_check(&self) -> Result<PayloadCheck, OnwardError> {
        let mut copies = Vec::new();
        for (id, sketch) in self.copy_sketches()? {
            if !sketch.hashes.is_empty() && self.received_agreement(&id)?.is_some() {
                copies.push((id, sketch, Overlap::default()));
            }
        }
        let key = if copies.is_empty() {
            None
        } else {
            Some(self.fingerprint_key()?)
        };
        Ok(PayloadCheck {
            key,
            copies,
            reader: RowReader::default(),
            rows: 0,
        })
    }

    /// Logs a publish refused by these rules as a policy decision.
    pub async fn log_refusal(&self, error: &OnwardError) {
        let event = crate::audit::log::Event::new(
            crate::audit::log::EventKind::PolicyDecision,
            now(),
            format!("publish refused (no onward sharing): {error}"),
        );
        if let Err(e) = self.audit.append(&event).await {
            tracing::error!(error = %e, "cannot log a refused publish");
        }
    }

    /// Checks the sources of a product being published with `classification`, offered
    /// under `offer` (or not offered, `None`).
    pub fn check_derivation(
        &self,
        derived_from: &[String],
        classification: Classification,
        offer: Option<&CompiledPolicy>,
    ) -> Result<(), OnwardError> {
        let mut seen = HashSet::new();
        // (source, how the publisher reached it), for messages.
        let mut queue: Vec<(String, String)> = derived_from
            .iter()
            .map(|s| (s.trim().to_owned(), String::new()))
            .collect();
        while let Some((source, via)) = queue.pop() {
            if source.is_empty() || !seen.insert(source.clone()) {
                continue;
            }
            let products = &self.catalog.products;
            let product = products
                .latest(&source)
                .map_err(|e| OnwardError::Unavailable(e.to_string()))?;
            if let Some(p) = product {
                let path = format!("{via}product {source}");
                if p.classification > classification {
                    return Err(OnwardError::Classification(format!(
                        "{path} is {}, so a product derived from it cannot be graded lower ({classification})",
                        p.classification
                    )));
                }
                queue.extend(
                    p.derived_from
                        .iter()
                        .map(|s| (s.clone(), format!("{path}, derived from "))),
                );
                continue;
            }
            let Some(agreement) = self.received_agreement(&source)? else {
                return Err(OnwardError::UnknownSource(format!(
                    "{via}{source} is neither a product of this node nor an agreement under which \
                 this node received a copy"
                )));
            };
            let path = format!("{via}the copy received under agreement {source}");
            if agreement.classification > classification {
                return Err(OnwardError::Classification(format!(
                    "{path} is {}, so a product derived from it cannot be graded lower ({classification})",
                    agreement.classification
                )));
            }
            if let Some(offer) = offer {
                self.check_distribute(&agreement, &path, offer)?;
            }
        }
        Ok(())
    }

    /// The received copies (held or deleted) whose payload has this SHA-256: publishing
    /// such a payload is publishing the copy.
    pub fn copies_with_payload(&self, sha256: &str) -> Result<Vec<String>, OnwardError> {
        let storage = self.storage.as_ref();
        let mut out: Vec<String> = transfer::copies(storage)
            .map_err(|e| OnwardError::Unavailable(e.to_string()))?
            .into_iter()
            .filter(|c| c.state == TransferState::Completed)
            .filter(|c| {
                c.manifest
                    .peek_json::<Manifest>()
                    .is_ok_and(|m| m.sha256 == sha256)
            })
            .map(|c| c.agreement_id)
            .collect();
        out.extend(
            duties::deletions(storage)?
                .into_iter()
                .filter(|d| {
                    d.held && (d.sha256 == sha256 || d.delivered_sha256.as_deref() == Some(sha256))
                })
                .map(|d| d.agreement_id),
        );
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// The agreement under which this node (as the consumer) received, or could receive,
    /// a copy.
    fn received_agreement(&self, agreement_id: &str) -> Result<Option<Agreement>, OnwardError> {
        let n = self
            .contracts
            .by_agreement(agreement_id)
            .map_err(|e| OnwardError::Unavailable(e.to_string()))?;
        Ok(n.filter(|n| n.role == Role::Consumer)
            .and_then(|n| n.agreement_content()))
    }

    fn check_distribute(
        &self,
        agreement: &Agreement,
        path: &str,
        offer: &CompiledPolicy,
    ) -> Result<(), OnwardError> {
        let storage = self.storage.as_ref();
        if let Some(d) = duties::deletion(storage, &agreement.agreement_id)? {
            return Err(OnwardError::NotDistributable(format!(
                "{path} cannot be offered: {}",
                d.explain()
            )));
        }
        // The copy's own sticky policy, checked against this node's countersignature.
        if let Some(c) = transfer::copy(storage, &agreement.agreement_id)
            .map_err(|e| OnwardError::Unavailable(e.to_string()))?
        {
            self.sticky_agreement(&c.agreement)?;
        }
        let policy = self.policy_of(agreement)?;
        let decision = liutong_policy::evaluate(
            &policy,
            &agreement.request(Scope::Use, Action::Distribute, &self.identity.membership),
            &agreement.policy_state(uses(storage, &agreement.agreement_id)?.uses),
        );
        if !decision.is_permit() {
            return Err(OnwardError::NotDistributable(format!(
                "{path} is data from {}, and its policy does not permit distribute, so it cannot \
             be offered to anyone: {}",
                agreement.provider,
                decision.explain()
            )));
        }
        let next: Vec<&str> = decision
            .duties
            .iter()
            .filter_map(|d| match d {
                Duty::NextPolicy { policy } => Some(policy.as_str()),
                _ => None,
            })
            .collect();
        let uid = offer.policy().uid.as_str();
        if let Some(wanted) = next.iter().find(|n| **n != uid) {
            return Err(OnwardError::NextPolicy(format!(
                "{path} may be distributed only under the next policy {wanted} (its nextPolicy \
             duty); write the offer's policy with uid = \"{wanted}\" (this one is \"{uid}\")"
            )));
        }
        Ok(())
    }
}
