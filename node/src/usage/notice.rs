//! Signed messages from the consumer to the provider — usage notices (the notify duty)
//! and deletion receipts — and the outbox that delivers them.
//!
//! A message is signed and stored in the outbox in the same commit as the use or the
//! deletion it reports (and their audit entries), so a crash cannot lose it. The background task sends what is
//! due; a message leaves the outbox only when the provider acknowledged it, and a
//! failed attempt is retried after a delay that doubles each time (from
//! `usage.check_interval` up to ten minutes). The provider stores each message
//! idempotently, so a message sent twice is recorded once.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duties::{Deletion, DeletionCause};
use super::{Usage, UsageError, quoted};
use crate::audit::log::EventKind;
use crate::base::bounded;
use crate::base::clock::{now, now_ms};
use crate::base::random::new_id;
use crate::contract::{Agreement, Role};
use crate::identity::{Envelope, Membership, ParticipantId};
use crate::storage::{StorageError, Write};
use liutong_proto::v1::NotifyRequest;
use liutong_proto::v1::usage_control_client::UsageControlClient;

/// Payload type of a usage notice (consumer → provider).
pub const USAGE_NOTICE_PAYLOAD_TYPE: &str = "application/vnd.liutong.usage-notice+json";
/// Payload type of a deletion receipt (consumer → provider).
pub const DELETION_RECEIPT_PAYLOAD_TYPE: &str = "application/vnd.liutong.deletion-receipt+json";

const OUTBOX: &str = "outbox";
/// Provider side: the consumers' notices (`n/<agreement>/<notice>`) and deletion
/// receipts (`r/<agreement>`).
const NOTICES: &str = "usage-notices";
/// Longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(600);

/// What the consumer signs for each use when the policy asks it to notify.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageNotice {
    pub notice_id: String,
    pub agreement_id: String,
    pub consumer: String,
    pub provider: String,
    pub product_id: String,
    pub version: u32,
    /// The purpose the application declared for this use.
    pub purpose: String,
    /// Use number N of the copy.
    pub use_number: u64,
    pub used_at: i64,
}

/// What the consumer signs when it deleted a copy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeletionReceipt {
    pub receipt_id: String,
    pub agreement_id: String,
    pub consumer: String,
    pub provider: String,
    pub product_id: String,
    pub version: u32,
    pub sha256: String,
    /// Whether the consumer held data for the agreement (false: it never pulled it).
    pub held: bool,
    pub cause: DeletionCause,
    pub deleted_at: i64,
}

/// A message waiting for its recipient.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxItem {
    pub id: String,
    /// The recipient's participant ID and peer API address.
    pub to: String,
    pub address: String,
    pub agreement_id: String,
    /// What it is, for people ("usage notice, use 3").
    pub what: String,
    pub message: Envelope,
    pub attempts: u32,
    /// Unix milliseconds.
    pub next_attempt_at: i64,
    pub last_error: String,
    pub created_at: i64,
}

impl Usage {
    /// The outbox write of a signed message for the agreement's provider, for the caller
    /// to commit with the step it belongs to.
    fn outbox_write(
        &self,
        agreement: &Agreement,
        what: String,
        message: Envelope,
    ) -> Result<(&'static str, Write), UsageError> {
        let n = self
            .contracts
            .by_agreement(&agreement.agreement_id)?
            .filter(|n| n.role == Role::Consumer)
            .ok_or_else(|| {
                UsageError::NotFound(format!(
                    "this node holds no agreement {} as a consumer",
                    agreement.agreement_id
                ))
            })?;
        let item = OutboxItem {
            id: new_id("out")?,
            to: agreement.provider.to_string(),
            address: n.peer_address,
            agreement_id: agreement.agreement_id.clone(),
            what,
            message,
            attempts: 0,
            next_attempt_at: 0,
            last_error: String::new(),
            created_at: now(),
        };
        Ok((
            OUTBOX,
            Write::Put(
                format!("o/{}", item.id).into_bytes(),
                serde_json::to_vec(&item).expect("outbox items serialize"),
            ),
        ))
    }

    /// Signs a usage notice for one permitted use; returns its outbox write.
    pub(super) fn usage_notice_write(
        &self,
        agreement: &Agreement,
        purpose: &str,
        use_number: u64,
    ) -> Result<(&'static str, Write), UsageError> {
        let notice = UsageNotice {
            notice_id: new_id("use")?,
            agreement_id: agreement.agreement_id.clone(),
            consumer: self.identity.membership.participant_id.to_string(),
            provider: agreement.provider.to_string(),
            product_id: agreement.product_id.clone(),
            version: agreement.version,
            purpose: purpose.to_owned(),
            use_number,
            used_at: now(),
        };
        let envelope = Envelope::sign_json(
            USAGE_NOTICE_PAYLOAD_TYPE,
            &notice,
            &self.identity.signing_key,
        )?;
        self.outbox_write(
            agreement,
            format!("usage notice, use {use_number}"),
            envelope,
        )
    }

    /// Signs a deletion receipt; returns its outbox write.
    pub(super) fn deletion_receipt_write(
        &self,
        agreement: &Agreement,
        deletion: &Deletion,
        cause: &DeletionCause,
    ) -> Result<(&'static str, Write), UsageError> {
        let receipt = DeletionReceipt {
            receipt_id: new_id("del")?,
            agreement_id: agreement.agreement_id.clone(),
            consumer: self.identity.membership.participant_id.to_string(),
            provider: agreement.provider.to_string(),
            product_id: agreement.product_id.clone(),
            version: agreement.version,
            sha256: deletion.sha256.clone(),
            held: deletion.held,
            cause: cause.clone(),
            deleted_at: deletion.deleted_at,
        };
        let envelope = Envelope::sign_json(
            DELETION_RECEIPT_PAYLOAD_TYPE,
            &receipt,
            &self.identity.signing_key,
        )?;
        self.outbox_write(agreement, "deletion receipt".into(), envelope)
    }

    /// Everything in the outbox.
    pub fn outbox(&self) -> Result<Vec<OutboxItem>, StorageError> {
        Ok(self
            .storage
            .scan_prefix(OUTBOX, b"o/")?
            .iter()
            .filter_map(|(_, v)| serde_json::from_slice(v).ok())
            .collect())
    }

    /// Sends every outbox message that is due; acknowledged ones leave the outbox, the
    /// others wait longer each time.
    pub async fn deliver_due(&self) {
        let items = match self.outbox() {
            Ok(items) => items,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the outbox");
                return;
            }
        };
        let t = now_ms();
        for mut item in items.into_iter().filter(|i| i.next_attempt_at <= t) {
            let key = format!("o/{}", item.id);
            match self.send_notice(&item).await {
                Ok(()) => {
                    if let Err(e) = self.storage.delete(OUTBOX, key.as_bytes()) {
                        tracing::warn!(error = %e, "cannot remove a delivered message; it is sent again");
                    }
                }
                Err(e) => {
                    item.attempts += 1;
                    let base = self.config.check_interval.max(Duration::from_millis(50));
                    let delay = base
                        .saturating_mul(1u32 << item.attempts.min(16))
                        .min(MAX_BACKOFF);
                    item.next_attempt_at = now_ms() + delay.as_millis() as i64;
                    item.last_error = e.to_string();
                    tracing::debug!(to = %item.to, what = %item.what, attempts = item.attempts, error = %e, "message not delivered; retrying later");
                    if let Err(e) = self.storage.put(
                        OUTBOX,
                        key.as_bytes(),
                        &serde_json::to_vec(&item).expect("outbox items serialize"),
                    ) {
                        tracing::warn!(error = %e, "cannot record a delivery attempt");
                    }
                }
            }
        }
    }

    async fn send_notice(&self, item: &OutboxItem) -> Result<(), UsageError> {
        let to: ParticipantId = item
            .to
            .parse()
            .map_err(|e| UsageError::Invalid(format!("outbox item {}: recipient: {e}", item.id)))?;
        let channel = self
            .peers
            .connect_member(&item.address, &to)
            .await
            .map_err(|e| UsageError::Unreachable(e.to_string()))?;
        UsageControlClient::new(channel)
            .notify(NotifyRequest {
                message: Some(item.message.clone().into()),
            })
            .await
            .map_err(|s| UsageError::Peer(s.into()))?;
        Ok(())
    }
}

// ---- provider side ----------------------------------------------------------------

impl Usage {
    /// The provider receives a signed notice or deletion receipt from `caller`: it must be
    /// signed by the caller, about an agreement this node made as the provider with the
    /// caller as consumer. Stored together with its audit entry (one commit) and logged
    /// once; a repeat is acknowledged again.
    pub async fn receive_notice(
        &self,
        caller: &Membership,
        envelope: Envelope,
    ) -> Result<(), UsageError> {
        match envelope.payload_type.as_str() {
            USAGE_NOTICE_PAYLOAD_TYPE => {
                let notice: UsageNotice = open(caller, &envelope, USAGE_NOTICE_PAYLOAD_TYPE)?;
                notice.check_fields()?;
                let agreement =
                    self.provider_agreement(caller, &notice.agreement_id, &notice.consumer)?;
                self.names_the_agreement(
                    &agreement,
                    &notice.provider,
                    &notice.product_id,
                    notice.version,
                )?;
                // A use is of a copy the consumer holds: one it confirmed receiving.
                if !crate::transfer::delivered(self.storage.as_ref(), &agreement.agreement_id)? {
                    return Err(UsageError::WrongState(format!(
                        "no copy was delivered to you under agreement {}, so there is no use \
                         of it to notify",
                        agreement.agreement_id
                    )));
                }
                let key = format!("n/{}/{}", notice.agreement_id, notice.notice_id);
                // Checked and recorded under the agreement's lock: a notice sent twice at
                // once is logged once.
                let lock = self
                    .contracts
                    .locks()
                    .provider_lock(&agreement.agreement_id);
                let _one_at_a_time = lock.lock().await;
                if self.storage.get(NOTICES, key.as_bytes())?.is_some() {
                    return Ok(());
                }
                let event = agreement.event(
                    EventKind::Usage,
                    caller.participant_id.as_str(),
                    format!(
                        "usage notice from the consumer: use {} of the copy, purpose {}, at {}",
                        notice.use_number,
                        quoted(&notice.purpose),
                        super::when(notice.used_at)
                    ),
                );
                self.commit(
                    &[event],
                    vec![(
                        NOTICES,
                        Write::Put(key.into_bytes(), envelope.to_json().into_bytes()),
                    )],
                )
                .await
            }
            DELETION_RECEIPT_PAYLOAD_TYPE => {
                let receipt: DeletionReceipt =
                    open(caller, &envelope, DELETION_RECEIPT_PAYLOAD_TYPE)?;
                receipt.check_fields()?;
                let agreement =
                    self.provider_agreement(caller, &receipt.agreement_id, &receipt.consumer)?;
                self.names_the_agreement(
                    &agreement,
                    &receipt.provider,
                    &receipt.product_id,
                    receipt.version,
                )?;
                let key = format!("r/{}", receipt.agreement_id);
                // The same lock as the revocation, whose record the receipt updates.
                let lock = self
                    .contracts
                    .locks()
                    .provider_lock(&agreement.agreement_id);
                let _one_at_a_time = lock.lock().await;
                let known = self
                    .storage
                    .get(NOTICES, key.as_bytes())?
                    .and_then(|b| serde_json::from_slice::<Envelope>(&b).ok())
                    .is_some_and(|e| e.payload == envelope.payload);
                if known {
                    return Ok(());
                }
                let mut records = vec![(
                    NOTICES,
                    Write::Put(
                        key.into_bytes(),
                        serde_json::to_vec(&envelope).expect("envelopes serialize"),
                    ),
                )];
                records.extend(self.receipt_write(&receipt, &envelope)?);
                let masked = self.masked_removal(
                    &agreement,
                    "the consumer deleted its copy (signed deletion receipt)",
                )?;
                records.extend(masked.clone().map(|m| m.write));
                let cause = match &receipt.cause {
                    DeletionCause::Expired { .. } => "its deleteAfter deadline passed".to_owned(),
                    DeletionCause::Revoked { reason, .. } => {
                        format!("the agreement was revoked ({})", quoted(reason))
                    }
                };
                let event = agreement.event(
                    EventKind::CopyDeleted,
                    caller.participant_id.as_str(),
                    format!(
                        "signed deletion receipt from the consumer: {} at {}, because {cause}{}",
                        if receipt.held {
                            "copy deleted"
                        } else {
                            "no copy was held; none will be fetched"
                        },
                        super::when(receipt.deleted_at),
                        masked.as_ref().map(|m| m.detail.as_str()).unwrap_or("")
                    ),
                );
                self.commit(&[event], records).await?;
                if masked.is_some() {
                    self.remove_masked(&agreement.agreement_id).await?;
                }
                Ok(())
            }
            other => Err(UsageError::Invalid(format!(
                "message: payload type {other:?} is neither a usage notice nor a deletion receipt"
            ))),
        }
    }

    /// A consumer's deletion receipt for an agreement, as the provider stored it.
    pub fn deletion_receipt(&self, agreement_id: &str) -> Result<Option<Envelope>, StorageError> {
        Ok(self
            .storage
            .get(NOTICES, format!("r/{agreement_id}").as_bytes())?
            .and_then(|b| serde_json::from_slice(&b).ok()))
    }

    /// The consumers' usage notices for an agreement, as the provider stored them.
    pub fn usage_notices(&self, agreement_id: &str) -> Result<Vec<UsageNotice>, StorageError> {
        Ok(self
            .storage
            .scan_prefix(NOTICES, format!("n/{agreement_id}/").as_bytes())?
            .iter()
            .filter_map(|(_, v)| serde_json::from_slice::<Envelope>(v).ok())
            .filter_map(|e| e.peek_json().ok())
            .collect())
    }
}

impl UsageNotice {
    /// Checks the fields the consumer chose against their grammar
    /// ([`bounded`](crate::base::bounded)); the first that does not fit is named.
    fn check_fields(&self) -> Result<(), UsageError> {
        bounded::Id::parse("notice_id", &self.notice_id)?;
        bounded::Id::parse("agreement_id", &self.agreement_id)?;
        bounded::Id::parse("product_id", &self.product_id)?;
        bounded::Text::parse("purpose", &self.purpose, bounded::PURPOSE_MAX)?;
        bounded::Time::parse("used_at", self.used_at)?;
        Ok(())
    }
}

impl DeletionReceipt {
    /// Checks the fields the consumer chose against their grammar
    /// ([`bounded`](crate::base::bounded)); the first that does not fit is named.
    fn check_fields(&self) -> Result<(), UsageError> {
        bounded::Id::parse("receipt_id", &self.receipt_id)?;
        bounded::Id::parse("agreement_id", &self.agreement_id)?;
        bounded::Id::parse("product_id", &self.product_id)?;
        bounded::Time::parse("deleted_at", self.deleted_at)?;
        if self.sha256.len() != 64 || !self.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(UsageError::Invalid(format!(
                "sha256: a SHA-256 is 64 hex digits (got {})",
                bounded::quote(&self.sha256)
            )));
        }
        Ok(())
    }
}

fn open<T: serde::de::DeserializeOwned>(
    caller: &Membership,
    envelope: &Envelope,
    payload_type: &str,
) -> Result<T, UsageError> {
    envelope
        .open_json(payload_type, &caller.signing_key)
        .map_err(|e| UsageError::DataLoss(format!("the message is not signed by the caller: {e}")))
}

impl Usage {
    /// Checks that a consumer's message is about `agreement` as this node made it: sent to
    /// this provider, about the agreed product and version.
    fn names_the_agreement(
        &self,
        agreement: &Agreement,
        provider: &str,
        product_id: &str,
        version: u32,
    ) -> Result<(), UsageError> {
        if provider != agreement.provider.as_str() {
            return Err(UsageError::Invalid(format!(
                "provider: the message is addressed to {}, but agreement {} was made by {}",
                bounded::quote(provider),
                agreement.agreement_id,
                agreement.provider
            )));
        }
        if product_id != agreement.product_id || version != agreement.version {
            return Err(UsageError::Invalid(format!(
                "product_id: the message names {} v{version}, but agreement {} covers {} v{}",
                bounded::quote(product_id),
                agreement.agreement_id,
                agreement.product_id,
                agreement.version
            )));
        }
        Ok(())
    }

    /// The agreement this node made as the provider with `caller` as the consumer, which
    /// the caller's message names as its consumer too.
    fn provider_agreement(
        &self,
        caller: &Membership,
        agreement_id: &str,
        named_consumer: &str,
    ) -> Result<Agreement, UsageError> {
        let agreement = self
            .contracts
            .consumer_agreement(&caller.participant_id, agreement_id)?;
        if named_consumer != caller.participant_id.as_str() {
            return Err(UsageError::Forbidden(format!(
                "the message names consumer {named_consumer}, but the caller is {}",
                caller.participant_id
            )));
        }
        Ok(agreement)
    }
}
