//! `Usage.Read(copy, purpose)`: the only way a local application reads a received copy.
//!
//! The read is decided by the copy's sticky policy at use scope, with this node as the
//! recipient, the declared purpose, the time since the agreement and the uses so far.
//! The declared purpose must also lie within the purpose the agreement was made for.
//! Decision and use count are one step: under the copy's lock the node decides, then
//! commits the raised count (with the usage notice, if the policy asks for one)
//! together with the read's audit entry before a byte is sent, so concurrent reads
//! cannot exceed a count and a crash can neither lose a use nor leave one unlogged. A refusal names the failed constraints and is logged as a policy decision; a
//! permitted read is logged as a use.

use std::sync::Arc;

use liutong_policy::{Action, Duty, Request, Scope};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::duties::{self, DeletionCause};
use super::{USAGE, Usage, UsageError, UseRecord, use_key, uses, when};
use crate::audit::log::EventKind;
use crate::base::clock::now;
use crate::contract::{Agreement, purpose_within};
use crate::storage::Write;
use crate::transfer::{self, Manifest, TransferState};
use liutong_proto::v1::read_response::Part;
use liutong_proto::v1::{ReadHeader, ReadResponse};

/// A permitted read: what to send.
#[derive(Debug)]
pub struct ReadGrant {
    pub header: ReadHeader,
    /// The copy's signed manifest: where each chunk lies and its SHA-256.
    manifest: Manifest,
    /// The copy's record: how its payload file is sealed.
    copy: transfer::ReceivedCopy,
}

impl Usage {
    /// Decides a read and, when permitted, counts it durably and logs it.
    pub async fn authorize_read(
        &self,
        agreement_id: &str,
        purpose: &str,
    ) -> Result<ReadGrant, UsageError> {
        let agreement_id = agreement_id.trim();
        let purpose = purpose.trim();
        if agreement_id.is_empty() {
            return Err(UsageError::Invalid(
                "agreement_id: name the copy's agreement (see `liutong data list`)".into(),
            ));
        }
        if purpose.is_empty() {
            return Err(UsageError::Invalid(
                "purpose: declare the purpose of this use".into(),
            ));
        }
        let storage = self.storage.as_ref();
        if let Some(d) = duties::deletion(storage, agreement_id)? {
            return Err(UsageError::Gone(Box::new(d)));
        }
        let copy = transfer::copy(storage, agreement_id)?.ok_or_else(|| {
            UsageError::NotFound(format!(
                "this node holds no copy for agreement {agreement_id}"
            ))
        })?;
        if copy.state != TransferState::Completed {
            let p = transfer::progress(&copy);
            return Err(UsageError::NotReady(format!(
                "the copy of agreement {agreement_id} is {} ({} of {} chunks received); it can be \
             read once its transfer is COMPLETED (liutong transfer pull --agreement {agreement_id})",
                p.state, p.chunks_received, p.chunks_total
            )));
        }
        let agreement = self.sticky_agreement(&copy.agreement)?;
        let manifest: Manifest = copy
            .manifest
            .peek_json()
            .map_err(|e| UsageError::DataLoss(format!("the copy's manifest: {e}")))?;
        let deadline = self.deadline(&agreement);
        if let Some(deadline) = deadline
            && deadline <= now()
        {
            // The background task had not come round to it yet.
            let d = self
                .delete(&agreement, DeletionCause::Expired { deadline })
                .await?;
            return Err(UsageError::Gone(Box::new(d)));
        }
        let policy = self.policy_of(&agreement)?;
        // A revocation the provider made a moment ago reaches the copy before this read
        // (applied, it deletes the copy: the check under the lock below then refuses).
        let revocation = match self.confirm_not_revoked(&agreement).await {
            Ok(said) => said,
            Err(e) => {
                self.refuse_read(&agreement, purpose, &e.to_string())
                    .await?;
                return Err(e);
            }
        };

        let lock = self.contracts.locks().lock_for(agreement_id);
        let guard = lock.lock().await;
        if let Some(d) = duties::deletion(storage, agreement_id)? {
            return Err(UsageError::Gone(Box::new(d)));
        }
        let mut record = uses(storage, agreement_id)?;
        if let Err(why) = purpose_within(&policy, purpose, &agreement) {
            self.refuse_read(&agreement, purpose, &why).await?;
            return Err(UsageError::Denied(why));
        }
        // The purpose declared for this read, within the agreement's (checked above).
        let decision = liutong_policy::evaluate(
            &policy,
            &Request {
                purpose: Some(purpose.to_owned()),
                ..agreement.request(Scope::Use, Action::Read, &self.identity.membership)
            },
            // One count per agreement: the copy's reads and the aggregate queries
            // answered under it.
            &agreement
                .policy_state(record.uses + crate::query::queries_so_far(storage, agreement_id)?),
        );
        if !decision.is_permit() {
            let why = format!(
                "the agreement's policy refuses this read: {}",
                decision.explain()
            );
            self.refuse_read(&agreement, purpose, &why).await?;
            if outside_time_window(&decision) {
                self.alerts
                    .raise(
                        crate::alerts::Rule::ReadOutsideWindow,
                        Some(&agreement.provider.to_string()),
                        format!("read of copy {agreement_id} outside its permitted time: {why}"),
                    )
                    .await;
            }
            return Err(UsageError::Denied(why));
        }
        if let Some(k) = crate::query::aggregate_only(&decision.duties) {
            let why = format!(
                "the agreement's policy allows only aggregates over groups of at least {k} \
             (aggregateOnly); a record-level read is refused"
            );
            self.refuse_read(&agreement, purpose, &why).await?;
            return Err(UsageError::Denied(why));
        }

        // Permitted: the raised use count, its notice and the audit entry are one commit,
        // durable before any data leaves.
        let used_at = now();
        record = UseRecord {
            uses: record.uses + 1,
            first_used_at: record.first_used_at.or(Some(used_at)),
            last_used_at: Some(used_at),
        };
        let mut records = vec![(
            USAGE,
            Write::Put(
                use_key(agreement_id),
                serde_json::to_vec(&record).expect("use records serialize"),
            ),
        )];
        let notify = decision.duties.contains(&Duty::Notify);
        if notify {
            records.push(self.usage_notice_write(&agreement, purpose, record.uses)?);
        }
        let performed = performed_duties(&decision.duties, deadline);
        let event = agreement.event(
        EventKind::Usage,
        agreement.provider.as_str(),
        format!(
            "read of the copy ({} v{}, {} bytes) for purpose {purpose}: use {}, permitted{}; duties: {}; revocation: {revocation}",
            agreement.product_id,
            agreement.version,
            manifest.size,
            record.uses,
            decision
                .rule
                .as_ref()
                .map(|r| format!(" by {r}"))
                .unwrap_or_default(),
            performed.join("; ")
        ),
    );
        self.commit(&[event], records).await?;
        drop(guard);
        if notify {
            self.kick();
        }
        Ok(ReadGrant {
            header: ReadHeader {
                agreement_id: agreement_id.to_owned(),
                product_id: manifest.product_id.clone(),
                version: manifest.version,
                format: manifest.format.clone(),
                size: manifest.size,
                sha256: manifest.sha256.clone(),
                use_number: record.uses,
                decision: decision.explain(),
                duties: performed,
            },
            manifest,
            copy,
        })
    }

    /// Streams a permitted read: the header, then each chunk of the copy, checked against
    /// the signed manifest as it is read back (a copy changed on disk stops with
    /// `DATA_LOSS`; a copy deleted meanwhile, by a revocation, stops with `NOT_FOUND`).
    pub fn spawn_read_stream(
        self: Arc<Self>,
        grant: ReadGrant,
        tx: mpsc::Sender<Result<ReadResponse, UsageError>>,
    ) {
        tokio::spawn(async move {
            let agreement_id = grant.header.agreement_id.clone();
            let header = ReadResponse {
                part: Some(Part::Header(grant.header)),
            };
            if tx.send(Ok(header)).await.is_err() {
                return;
            }
            let manifest = &grant.manifest;
            for (index, expected) in manifest.chunk_hashes.iter().enumerate() {
                // Straight from the payload file: a copy deleted meanwhile has lost it first.
                let chunk = transfer::read_copy_chunk(
                    self.storage.as_ref(),
                    &grant.copy,
                    manifest,
                    index as u32,
                );
                let data = match chunk {
                    Ok(Some(d)) if hex::encode(Sha256::digest(&d)) == *expected => d,
                    Ok(Some(_)) => {
                        let _ = tx
                        .send(Err(UsageError::DataLoss(format!(
                            "chunk {index} of the copy of agreement {agreement_id} does not match \
                             the provider's signed manifest; the copy was altered on disk"
                        ))))
                        .await;
                        return;
                    }
                    Ok(None) => {
                        let _ = tx
                            .send(Err(UsageError::NotFound(format!(
                                "the copy of agreement {agreement_id} was deleted during the read"
                            ))))
                            .await;
                        return;
                    }
                    Err(transfer::TransferError::DataLoss(why)) => {
                        let _ = tx.send(Err(UsageError::DataLoss(why))).await;
                        return;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(UsageError::Unavailable(e.to_string()))).await;
                        return;
                    }
                };
                let message = ReadResponse {
                    part: Some(Part::Data(data)),
                };
                if tx.send(Ok(message)).await.is_err() {
                    return;
                }
            }
        });
    }
}

impl Usage {
    /// Logs a refused read as a policy decision.
    async fn refuse_read(
        &self,
        agreement: &Agreement,
        purpose: &str,
        why: &str,
    ) -> Result<(), UsageError> {
        agreement
            .log(
                &self.audit,
                self.identity.participant_id(),
                EventKind::PolicyDecision,
                format!("use scope, read of the copy for purpose {purpose}: refused: {why}"),
            )
            .await
            .map_err(|e| UsageError::Audit(e.to_string()))
    }
}

/// The duties carried out for a permitted read, in words.
fn performed_duties(duties: &[Duty], deadline: Option<i64>) -> Vec<String> {
    let mut out = vec!["log: this read is recorded in the audit log".to_owned()];
    for d in duties {
        match d {
            Duty::Notify => {
                out.push("notify: a signed usage notice is on its way to the provider".to_owned())
            }
            Duty::DeleteAfter { .. } => {
                if let Some(t) = deadline {
                    out.push(format!("deleteAfter: the copy is deleted at {}", when(t)));
                }
            }
            Duty::Mask { .. } => {
                out.push("mask: applied by the provider before delivery".to_owned())
            }
            Duty::KAnonymity { k } => out.push(format!(
                "kAnonymity: the provider delivered only records whose quasi-identifiers \
                 at least {k} records share"
            )),
            Duty::NextPolicy { policy } => out.push(format!(
                "nextPolicy: onward sharing must carry the policy {policy}"
            )),
            Duty::Log | Duty::AggregateOnly { .. } | Duty::DifferentialPrivacy { .. } => {}
        }
    }
    out.dedup();
    out
}

/// Whether a refusal failed on the policy's time window (a `dateTime` or `elapsedTime`
/// constraint): such a read is a security alert, not only a refusal.
fn outside_time_window(decision: &liutong_policy::Decision) -> bool {
    decision.failed.iter().any(|f| {
        let text = f.constraint.text.as_str();
        text.starts_with("dateTime") || text.starts_with("elapsedTime")
    })
}
