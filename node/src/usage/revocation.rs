//! Revocation of agreements.
//!
//! Provider side: `liutong contract revoke ID --reason R` signs a revocation and stores
//! it durably; from then on the agreement's transfers are refused. The provider serves
//! each consumer the revocations it has not yet answered (`UsageControl.Revocations`),
//! and records the consumer's signed deletion receipt when it arrives.
//!
//! Consumer side: the node asks each provider it holds copies from — at once after a
//! start, then every `usage.check_interval` — checks each revocation's signature,
//! deletes the copy (reads are refused from then on), and returns a signed deletion
//! receipt through the outbox. Both steps are logged. The consumer asks rather than
//! the provider pushing because only the consumer knows where the other party can be
//! reached; a consumer that was offline therefore catches up as soon as it is back.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::duties::{self, DeletionCause};
use super::notice::DeletionReceipt;
use super::{Usage, UsageError, quoted, when};
use crate::audit::log::EventKind;
use crate::base::clock::now;
use crate::base::random::new_id;
use crate::contract::{Agreement, Role};
use crate::desensitize::delivery;
use crate::identity::{Envelope, MemberRole, Membership, ParticipantId};
use crate::storage::{StorageError, Write};
use crate::transfer;
use liutong_proto::v1::RevocationsRequest;
use liutong_proto::v1::usage_control_client::UsageControlClient;

/// Payload type of a revocation (provider → consumer).
pub const REVOCATION_PAYLOAD_TYPE: &str = "application/vnd.liutong.revocation+json";

/// Provider side: `<consumer>/<agreement>` → [`RevocationRecord`].
const REVOCATIONS: &str = "revocations";
/// Longest reason a revocation may give, in characters: both nodes quote it in their
/// audit logs, whose entries are limited in size.
pub const MAX_REASON_CHARS: usize = 1_000;

/// What the provider signs to revoke an agreement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Revocation {
    pub revocation_id: String,
    pub agreement_id: String,
    pub provider: String,
    pub consumer: String,
    pub reason: String,
    pub revoked_at: i64,
}

/// A revocation as the provider keeps it, with the consumer's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevocationRecord {
    pub agreement_id: String,
    pub consumer: String,
    pub reason: String,
    pub revoked_at: i64,
    /// The signed [`Revocation`].
    pub revocation: Envelope,
    /// The consumer's signed deletion receipt, once it arrived.
    pub deletion_receipt: Option<Envelope>,
    pub deleted_at: Option<i64>,
}

impl RevocationRecord {
    /// As the local API shows it.
    pub fn to_proto(&self) -> liutong_proto::v1::RevocationStatus {
        liutong_proto::v1::RevocationStatus {
            agreement_id: self.agreement_id.clone(),
            consumer: self.consumer.clone(),
            reason: self.reason.clone(),
            revoked_at_unix: self.revoked_at,
            revocation_json: self.revocation.to_json(),
            deletion_receipt_json: self
                .deletion_receipt
                .as_ref()
                .map(Envelope::to_json)
                .unwrap_or_default(),
            deleted_at_unix: self.deleted_at.unwrap_or_default(),
        }
    }
}

fn key(consumer: &str, agreement_id: &str) -> Vec<u8> {
    format!("{consumer}/{agreement_id}").into_bytes()
}

// ---- provider side ----------------------------------------------------------------

impl Usage {
    /// Revokes an agreement this node signed as the provider (by agreement or negotiation
    /// ID). Durable and logged before it returns.
    pub async fn revoke(&self, id: &str, reason: &str) -> Result<RevocationRecord, UsageError> {
        let reason = reason.trim();
        if reason.is_empty() {
            return Err(UsageError::Invalid(
                "reason: say why; the consumer's node records it".into(),
            ));
        }
        let length = reason.chars().count();
        if length > MAX_REASON_CHARS {
            return Err(UsageError::Invalid(format!(
                "reason: {length} characters; say why in at most {MAX_REASON_CHARS} (both \
             nodes log it)"
            )));
        }
        if id.trim().is_empty() {
            return Err(UsageError::Invalid(
                "agreement_id: name the agreement to revoke".into(),
            ));
        }
        let n = match self.contracts.by_agreement(id)? {
            Some(n) => Some(n),
            None => self.contracts.get(id)?,
        }
        .filter(|n| n.role == Role::Provider)
        .ok_or_else(|| {
            UsageError::NotFound(format!(
                "no agreement {id} signed by this node as the provider"
            ))
        })?;
        let agreement = n.agreement_content().ok_or_else(|| {
        UsageError::WrongState(format!(
            "negotiation {} is {} and has no agreement; reject a request instead of revoking it",
            n.id, n.state
        ))
    })?;
        let revocation = Revocation {
            revocation_id: new_id("rev")?,
            agreement_id: agreement.agreement_id.clone(),
            provider: self.identity.membership.participant_id.to_string(),
            consumer: agreement.consumer.to_string(),
            reason: reason.to_owned(),
            revoked_at: now(),
        };
        let record = RevocationRecord {
            agreement_id: agreement.agreement_id.clone(),
            consumer: agreement.consumer.to_string(),
            reason: reason.to_owned(),
            revoked_at: revocation.revoked_at,
            revocation: Envelope::sign_json(
                REVOCATION_PAYLOAD_TYPE,
                &revocation,
                &self.identity.signing_key,
            )?,
            deletion_receipt: None,
            deleted_at: None,
        };
        // Checked and recorded under the agreement's lock, so it is revoked once; the
        // record and its audit entry are one commit.
        let lock = self
            .contracts
            .locks()
            .provider_lock(&agreement.agreement_id);
        let _one_at_a_time = lock.lock().await;
        if let Some(earlier) =
            self.revocation_of(agreement.consumer.as_str(), &agreement.agreement_id)?
        {
            return Err(UsageError::WrongState(format!(
                "agreement {} was already revoked at {}: {}",
                agreement.agreement_id,
                when(earlier.revoked_at),
                quoted(&earlier.reason)
            )));
        }
        let mut records = vec![(
            REVOCATIONS,
            Write::Put(
                key(&record.consumer, &record.agreement_id),
                serde_json::to_vec(&record).expect("revocations serialize"),
            ),
        )];
        let masked = self.masked_removal(&agreement, "the agreement was revoked")?;
        records.extend(masked.clone().map(|m| m.write));
        let event = agreement.event(
            EventKind::Revocation,
            agreement.consumer.as_str(),
            format!(
                "agreement revoked by the provider: {reason}; its transfers are refused{}, and \
             the consumer's node deletes its copy and returns a signed deletion receipt",
                masked.as_ref().map(|m| m.detail.as_str()).unwrap_or("")
            ),
        );
        self.commit(&[event], records).await?;
        if masked.is_some() {
            self.remove_masked(&agreement.agreement_id).await?;
        }
        Ok(record)
    }
}

/// The removal of a masked delivery, to commit with the step that decides it.
#[derive(Clone)]
pub(super) struct MaskedRemoval {
    pub write: (&'static str, Write),
    /// What the step's audit entry adds about it ("; the masked delivery … is deleted").
    pub detail: String,
}

impl Usage {
    /// Provider side: the removal of an agreement's masked delivery, when it has (or may
    /// get) one.
    pub(super) fn masked_removal(
        &self,
        agreement: &Agreement,
        why: &str,
    ) -> Result<Option<MaskedRemoval>, UsageError> {
        let storage = self.storage.as_ref();
        let Some(write) = delivery::removal(storage, agreement, why)? else {
            return Ok(None);
        };
        let what = match delivery::delivered(storage, &agreement.agreement_id)? {
            Some(m) => format!(
                "; the masked delivery made for it ({} bytes in {} chunks) is deleted",
                m.size,
                m.chunk_hashes.len()
            ),
            None => "; no masked delivery will be made for it".to_owned(),
        };
        Ok(Some(MaskedRemoval {
            write,
            detail: what,
        }))
    }

    /// Provider side: deletes the chunks of a masked delivery whose removal was committed.
    pub(super) async fn remove_masked(&self, agreement_id: &str) -> Result<(), UsageError> {
        delivery::remove_chunks(self.storage.as_ref(), agreement_id).await?;
        Ok(())
    }

    /// The revocation of an agreement with `consumer`, if the provider revoked it.
    pub fn revocation_of(
        &self,
        consumer: &str,
        agreement_id: &str,
    ) -> Result<Option<RevocationRecord>, StorageError> {
        Ok(self
            .storage
            .get(REVOCATIONS, &key(consumer, agreement_id))?
            .and_then(|b| serde_json::from_slice(&b).ok()))
    }

    /// The revocations this node made as a provider, by consumer then agreement ID,
    /// one page after the storage key `after`.
    pub fn revocations_page(
        &self,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<crate::storage::Page<RevocationRecord>, StorageError> {
        crate::storage::page_where(
            self.storage.as_ref(),
            REVOCATIONS,
            b"",
            after,
            limit,
            |_, v| Ok::<_, StorageError>(serde_json::from_slice(v).ok()),
        )
    }

    /// Whether the provider may still let data leave under an agreement (a delivery or
    /// an aggregate answer): not revoked, the consumer has not returned a deletion
    /// receipt for its copy, and not past the copy's deleteAfter deadline. The error
    /// says why.
    pub fn delivery_allowed(&self, agreement: &Agreement) -> Result<(), String> {
        match self.revocation_of(agreement.consumer.as_str(), &agreement.agreement_id) {
            Ok(Some(r)) => {
                return Err(format!(
                    "agreement {} was revoked by the provider at {}: {}",
                    agreement.agreement_id,
                    when(r.revoked_at),
                    r.reason
                ));
            }
            Ok(None) => {}
            Err(e) => {
                return Err(format!(
                    "cannot check whether the agreement was revoked: {e}"
                ));
            }
        }
        // A passed deadline is the first reason, the receipt a later consequence of it.
        if let Some(deadline) = self.deadline(agreement)
            && deadline <= now()
        {
            return Err(format!(
                "the agreement's deleteAfter deadline passed at {}; a copy may no longer be held",
                when(deadline)
            ));
        }
        match self.deletion_receipt(&agreement.agreement_id) {
            Ok(Some(_)) => {
                return Err(format!(
                    "the consumer deleted its copy under agreement {} and returned a signed \
                     deletion receipt; nothing more leaves under it",
                    agreement.agreement_id
                ));
            }
            Ok(None) => {}
            Err(e) => {
                return Err(format!(
                    "cannot check whether the consumer deleted its copy: {e}"
                ));
            }
        }
        Ok(())
    }

    /// The revocations `caller` has not answered yet (`UsageControl.Revocations`), one
    /// page after the storage key `after`. A key outside the caller's own revocations
    /// gives an empty page: one member's position never shows another's.
    pub fn pending_for(
        &self,
        caller: &Membership,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<crate::storage::Page<Envelope>, StorageError> {
        let prefix = format!("{}/", caller.participant_id);
        if after.is_some_and(|a| !a.starts_with(prefix.as_bytes())) {
            return Ok(crate::storage::Page {
                items: Vec::new(),
                next: None,
            });
        }
        crate::storage::page_where(
            self.storage.as_ref(),
            REVOCATIONS,
            prefix.as_bytes(),
            after,
            limit,
            |_, v| {
                Ok::<_, StorageError>(
                    serde_json::from_slice::<RevocationRecord>(v)
                        .ok()
                        .filter(|r| r.deletion_receipt.is_none())
                        .map(|r| r.revocation),
                )
            },
        )
    }

    /// The write that attaches a consumer's deletion receipt to the revocation it answers,
    /// if the agreement was revoked (for the caller to commit with the receipt).
    pub(super) fn receipt_write(
        &self,
        receipt: &DeletionReceipt,
        envelope: &Envelope,
    ) -> Result<Option<(&'static str, Write)>, StorageError> {
        let Some(mut record) = self.revocation_of(&receipt.consumer, &receipt.agreement_id)? else {
            return Ok(None);
        };
        if !matches!(receipt.cause, DeletionCause::Revoked { .. })
            && record.deletion_receipt.is_some()
        {
            return Ok(None);
        }
        record.deletion_receipt = Some(envelope.clone());
        record.deleted_at = Some(receipt.deleted_at);
        Ok(Some((
            REVOCATIONS,
            Write::Put(
                key(&receipt.consumer, &receipt.agreement_id),
                serde_json::to_vec(&record).expect("revocations serialize"),
            ),
        )))
    }
}

// ---- consumer side ----------------------------------------------------------------

/// Pages of revocations asked of one provider in one poll.
const MAX_REVOCATION_PAGES: usize = 100;

/// In [`Usage::revocations_checked`]: a provider's answer covers all its agreements.
fn provider_key(provider: &str) -> String {
    format!("p/{provider}")
}

/// In [`Usage::revocations_checked`]: a delivery the provider began covers its agreement.
fn agreement_key(agreement_id: &str) -> String {
    format!("a/{agreement_id}")
}

impl Usage {
    /// Notes that the revocation state under `key` was confirmed just now.
    fn confirmed_now(&self, key: String) {
        self.revocations_checked
            .lock()
            .expect("the check times are never left poisoned")
            .insert(key, std::time::Instant::now());
    }

    /// The provider began a delivery under `agreement_id`, which it does only while the
    /// agreement is not revoked: as good as an answer that it is not.
    pub(super) fn delivery_confirmed(&self, agreement_id: &str) {
        self.confirmed_now(agreement_key(agreement_id));
    }
}

/// How long a use waits for its provider's answer about revocations.
pub const REVOCATION_CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

impl Usage {
    /// Asks every provider this node holds copies from for revocations, and applies them.
    pub async fn poll_revocations(&self) {
        let providers = match self.providers_of_copies() {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the providers of received copies");
                return;
            }
        };
        for (address, provider) in providers {
            if let Err(e) = self.ask_for_revocations(&address, &provider, None).await {
                tracing::debug!(%provider, error = %e, "provider not checked for revocations");
            }
        }
    }

    /// Asks `provider` (at `address`) for the revocations this node has not answered and
    /// applies them; on an answer, notes the time of this successful check. Fails when
    /// the provider cannot be reached or does not answer, or when the revocation of
    /// `agreement_id` (if given) was among them and could not be applied.
    async fn ask_for_revocations(
        &self,
        address: &str,
        provider: &ParticipantId,
        agreement_id: Option<&str>,
    ) -> Result<(), String> {
        let membership = self
            .trust
            .member(provider, now())
            .map_err(|e| e.to_string())?;
        let channel = self
            .peers
            .connect_member(address, provider)
            .await
            .map_err(|e| e.to_string())?;
        let mut client = UsageControlClient::new(channel);
        let mut page_token = String::new();
        // Bounded, so a provider that keeps answering with a next page cannot hold
        // the poller; what is left is asked for at the next poll.
        for _ in 0..MAX_REVOCATION_PAGES {
            let answer = client
                .revocations(RevocationsRequest {
                    page_size: 0,
                    page_token: std::mem::take(&mut page_token),
                })
                .await
                .map(tonic::Response::into_inner)
                .map_err(|status| format!("the provider did not answer: {}", status.message()))?;
            for envelope in answer.revocations {
                let envelope: Envelope = envelope.into();
                let about = envelope
                    .peek_json::<Revocation>()
                    .ok()
                    .map(|r| r.agreement_id);
                if let Err(e) = self.apply_revocation(&membership, envelope).await {
                    tracing::warn!(%provider, error = %e, "a revocation could not be applied");
                    if about.is_some() && about.as_deref() == agreement_id {
                        return Err(format!(
                            "the provider revoked the agreement, and the revocation could not \
                             be applied: {e}"
                        ));
                    }
                }
            }
            if answer.next_page_token.is_empty() {
                self.confirmed_now(provider_key(provider.as_str()));
                return Ok(());
            }
            page_token = answer.next_page_token;
        }
        Err(format!(
            "the provider's list of revocations did not end within {MAX_REVOCATION_PAGES} pages"
        ))
    }

    /// Before a use of the copy under `agreement`: asks its provider for revocations
    /// (one exchange, at most [`REVOCATION_CHECK_TIMEOUT`]), so a revocation reaches the
    /// copy before the use rather than at the next poll. When the provider cannot
    /// answer, the use may go on only if the last successful check with it is younger
    /// than `usage.revocation_grace`. Returns what the use's audit entry says about it.
    pub(super) async fn confirm_not_revoked(
        &self,
        agreement: &Agreement,
    ) -> Result<String, UsageError> {
        let provider = &agreement.provider;
        let address = self
            .contracts
            .by_agreement(&agreement.agreement_id)?
            .filter(|n| n.role == Role::Consumer)
            .map(|n| n.peer_address)
            .ok_or_else(|| {
                UsageError::NotFound(format!(
                    "this node holds no agreement {}",
                    agreement.agreement_id
                ))
            })?;
        let asked = tokio::time::timeout(
            REVOCATION_CHECK_TIMEOUT,
            self.ask_for_revocations(&address, provider, Some(&agreement.agreement_id)),
        )
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "no answer within {} s",
                REVOCATION_CHECK_TIMEOUT.as_secs()
            ))
        });
        let why = match asked {
            Ok(()) => return Ok("the provider confirmed it is not revoked".to_owned()),
            Err(why) => why,
        };
        let grace = self.config.revocation_grace;
        let last = {
            let checked = self
                .revocations_checked
                .lock()
                .expect("the check times are never left poisoned");
            [
                checked.get(&provider_key(provider.as_str())),
                checked.get(&agreement_key(&agreement.agreement_id)),
            ]
            .into_iter()
            .flatten()
            .max()
            .map(std::time::Instant::elapsed)
        };
        match last {
            Some(age) if age < grace => Ok(format!(
                "the provider could not be asked whether it is revoked ({why}); permitted \
                 because the last check with it, {} s ago, is within usage.revocation_grace \
                 ({} s)",
                age.as_secs(),
                grace.as_secs()
            )),
            _ => {
                let last = match last {
                    Some(age) => format!("the last check with it was {} s ago", age.as_secs()),
                    None => "it has not answered since this node started".to_owned(),
                };
                Err(UsageError::Unavailable(format!(
                    "cannot confirm with the provider {provider} that agreement {} is not \
                     revoked ({why}); {last}, and usage.revocation_grace is {} s, so the use \
                     is refused; try again once the provider can be reached",
                    agreement.agreement_id,
                    grace.as_secs()
                )))
            }
        }
    }

    /// The providers (address → participant) of the copies this node still holds.
    fn providers_of_copies(&self) -> Result<BTreeMap<String, ParticipantId>, UsageError> {
        let storage = self.storage.as_ref();
        let mut out = BTreeMap::new();
        for c in transfer::copies(storage)? {
            if duties::deletion(storage, &c.agreement_id)?.is_some() {
                continue;
            }
            if let Ok(Some(n)) = self.contracts.by_agreement(&c.agreement_id)
                && n.role == Role::Consumer
            {
                out.insert(n.peer_address, n.peer);
            }
        }
        Ok(out)
    }

    /// Applies one signed revocation from `provider`: deletes the copy, logs, and queues
    /// the signed deletion receipt. Applying it again does nothing.
    pub async fn apply_revocation(
        &self,
        provider: &Membership,
        envelope: Envelope,
    ) -> Result<(), UsageError> {
        provider
            .require_role(MemberRole::Provider, "revoking an agreement")
            .map_err(|e| UsageError::Forbidden(e.to_string()))?;
        let r: Revocation = envelope
            .open_json(REVOCATION_PAYLOAD_TYPE, &provider.signing_key)
            .map_err(|e| UsageError::DataLoss(format!("the revocation: {e}")))?;
        // The reason is kept whatever its length (it is cut where logged and escaped
        // where printed): a revocation is applied, not argued with.
        crate::base::bounded::Id::parse("revocation_id", &r.revocation_id)?;
        crate::base::bounded::Id::parse("agreement_id", &r.agreement_id)?;
        crate::base::bounded::Time::parse("revoked_at", r.revoked_at)?;
        if r.provider != provider.participant_id.as_str()
            || r.consumer != self.identity.membership.participant_id.as_str()
        {
            return Err(UsageError::Forbidden(format!(
                "the revocation of {} names provider {} and consumer {}",
                r.agreement_id,
                crate::base::bounded::quote(&r.provider),
                crate::base::bounded::quote(&r.consumer)
            )));
        }
        let agreement = self
            .contracts
            .by_agreement(&r.agreement_id)?
            .filter(|n| n.role == Role::Consumer && n.peer == provider.participant_id)
            .and_then(|n| n.agreement_content())
            .ok_or_else(|| {
                UsageError::NotFound(format!(
                    "this node holds no agreement {} with {}",
                    r.agreement_id, provider.participant_id
                ))
            })?;
        if let Some(d) = duties::deletion(self.storage.as_ref(), &r.agreement_id)?
            && d.revocation_id.as_deref() == Some(r.revocation_id.as_str())
        {
            return Ok(());
        }
        let event = agreement.event(
        EventKind::Revocation,
        provider.participant_id.as_str(),
        format!(
            "agreement revoked by the provider at {}: {}; deleting the copy and returning a signed deletion receipt",
            when(r.revoked_at),
            quoted(&r.reason)
        ),
    );
        // The revocation's entry is committed with the deletion it causes.
        self.delete_logged(
            &agreement,
            DeletionCause::Revoked {
                revocation_id: r.revocation_id,
                reason: r.reason,
                revoked_at: r.revoked_at,
            },
            vec![event],
        )
        .await?;
        Ok(())
    }
}
