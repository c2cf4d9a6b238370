//! The consumer's receipts: signing and sending one when a copy verified, one step at a
//! time per agreement, sending it again from the node's background work until the
//! provider has it, and giving it up with the reason recorded.

use crate::audit::log::EventKind;
use crate::base::clock::now;
use crate::base::error::PeerRefusal;
use crate::contract::Role;
use crate::storage::Write;
use liutong_proto::v1::ReceiptRequest;
use liutong_proto::v1::transfer_client::TransferClient;

use super::error::TransferError;
use super::store::{
    COPIES, RECEIPT_PENDING, ReceivedCopy, copy, copy_key, manifest_of, pending_key,
};
use super::{RECEIPT_WAIT, TransferState, Transfers};

impl Transfers {
    /// The claim of the consumer's receipt step for `agreement_id`: one at a time sends it
    /// or gives it up (a pull's own, the background work's).
    async fn receipt_claim(&self, agreement_id: &str) -> Option<crate::recovery::Claim> {
        self.contracts
            .claims()
            .claim_within(&format!("receipt-out/{agreement_id}"), RECEIPT_WAIT)
            .await
    }

    /// Sends the receipt of COMPLETED copy `agreement_id` to its provider (on `client`, or
    /// on a new connection), unless the provider already confirmed it. Confirmed, the
    /// copy's mark is removed; a refusal removes it too and is recorded as the copy's
    /// reason; a call that does not get through keeps it, to be sent again, and is no
    /// error to the caller (the copy is complete either way).
    pub(super) async fn send_receipt(
        &self,
        agreement_id: &str,
        client: Option<TransferClient<crate::telemetry::PeerChannel>>,
    ) -> Result<(), TransferError> {
        use crate::recovery::{Call, Verdict, verdict};
        let Some(_claim) = self.receipt_claim(agreement_id).await else {
            // Another step is sending it; the mark stays until the provider confirms it.
            return Ok(());
        };
        // As stored now, under the claim: the other step may have delivered it meanwhile.
        let storage = self.storage.as_ref();
        let key = pending_key(agreement_id);
        if storage.get(COPIES, &key)?.is_none() {
            return Ok(());
        }
        let Some(c) = copy(storage, agreement_id)?.filter(|c| c.state == TransferState::Completed)
        else {
            // The copy was deleted (usage control) or never completed.
            storage.delete(COPIES, &key)?;
            return Ok(());
        };
        let Some(receipt) = c.receipt.clone() else {
            storage.delete(COPIES, &key)?;
            return Ok(());
        };
        let answer = match client {
            Some(mut client) => client
                .receipt(ReceiptRequest {
                    receipt: Some(receipt.into()),
                })
                .await
                .map(|_| ())
                .map_err(PeerRefusal::from),
            None => {
                let n = self.contracts.finalized(Role::Consumer, &c.agreement_id)?;
                // An agreement negotiated over the Dataspace Protocol names the
                // provider's DSP endpoint, not a peer API address: the receipt goes
                // there, in a completion message.
                if crate::contract::over_binding(&n.peer_address) {
                    let Some(binding) = self.receipt_binding.get() else {
                        return Err(TransferError::Unreachable(format!(
                            "the provider of agreement {agreement_id} is reached over the \
                             Dataspace Protocol, and this node's DSP listener is off \
                             ([dsp] listen in node.toml)"
                        )));
                    };
                    binding
                        .clone()
                        .send_receipt(c.agreement_id.clone(), receipt)
                        .await
                } else {
                    let mut client = match self.peers.connect_member(&n.peer_address, &n.peer).await
                    {
                        Ok(channel) => TransferClient::new(channel),
                        Err(e) => return Err(TransferError::Unreachable(e.to_string())),
                    };
                    client
                        .receipt(ReceiptRequest {
                            receipt: Some(receipt.into()),
                        })
                        .await
                        .map(|_| ())
                        .map_err(PeerRefusal::from)
                }
            }
        };
        let refusal = match answer {
            Ok(_) => {
                // The confirmation and the end of the resending are one commit.
                self.audit
                    .append_with(
                        &[copy_event(
                            &c,
                            "transfer receipt confirmed by the provider".into(),
                        )],
                        vec![(COPIES, Write::Delete(key))],
                    )
                    .await?;
                return Ok(());
            }
            Err(refusal) => refusal,
        };
        match verdict(Call::Receipt, &refusal) {
            Verdict::Retry | Verdict::Held => {
                tracing::warn!(
                    agreement = %c.agreement_id,
                    error = %refusal.message,
                    "the receipt did not reach the provider; it is sent again"
                );
                Ok(())
            }
            Verdict::Refused => {
                let reason: String = refusal.message.chars().take(512).collect();
                self.give_up_receipt(&c, &format!("the provider refused the receipt: {reason}"))
                    .await?;
                Err(TransferError::Peer(refusal))
            }
        }
    }
}

impl Transfers {
    /// The provider confirmed the receipt of COMPLETED copy `agreement_id` over another
    /// binding (it carried the receipt): it is not sent again.
    pub async fn receipt_confirmed(&self, agreement_id: &str) -> Result<(), TransferError> {
        let Some(_claim) = self.receipt_claim(agreement_id).await else {
            return Err(TransferError::Unavailable(format!(
                "the receipt of agreement {agreement_id} is being sent; it is confirmed then"
            )));
        };
        let storage = self.storage.as_ref();
        let key = pending_key(agreement_id);
        if storage.get(COPIES, &key)?.is_none() {
            return Ok(());
        }
        let Some(c) = copy(storage, agreement_id)? else {
            return Ok(());
        };
        self.audit
            .append_with(
                &[copy_event(
                    &c,
                    "transfer receipt confirmed by the provider".into(),
                )],
                vec![(COPIES, Write::Delete(key))],
            )
            .await?;
        Ok(())
    }
}

/// An audit event about copy `c`, naming its provider.
fn copy_event(c: &ReceivedCopy, detail: String) -> crate::audit::log::Event {
    let mut event = crate::audit::log::Event::new(EventKind::Transfer, now(), detail);
    event.participant = Some(c.provider.clone());
    event.agreement = Some(c.agreement_id.clone());
    event.product = Some(manifest_of(c).product_id);
    event
}

impl Transfers {
    /// Stops sending the receipt of copy `c`, with `reason` recorded on the copy and in the
    /// audit log. The caller holds the receipt's claim ([`receipt_claim`]).
    async fn give_up_receipt(&self, c: &ReceivedCopy, reason: &str) -> Result<(), TransferError> {
        let mut c = c.clone();
        c.reason = reason.to_owned();
        c.updated_at = now();
        let event = copy_event(&c, format!("transfer receipt not delivered: {reason}"));
        self.audit
            .append_with(
                &[event],
                vec![
                    (
                        COPIES,
                        Write::Put(
                            copy_key(&c.agreement_id),
                            serde_json::to_vec(&c).expect("copies serialize"),
                        ),
                    ),
                    (COPIES, Write::Delete(pending_key(&c.agreement_id))),
                ],
            )
            .await?;
        Ok(())
    }

    /// Sends again every receipt the providers have not confirmed (consumer side), and
    /// gives up one whose copy completed more than `recovery.expire_after` ago once this
    /// process has tried it and failed. Runs in the node's background work; `retries`
    /// holds the attempts.
    pub async fn send_pending_receipts(&self, retries: &mut crate::recovery::Retries) {
        let storage = self.storage.as_ref();
        let pending: Vec<String> = match storage.scan_prefix(COPIES, RECEIPT_PENDING) {
            Ok(entries) => entries
                .iter()
                .map(|(k, _)| String::from_utf8_lossy(&k[RECEIPT_PENDING.len()..]).into_owned())
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the receipts to send");
                return;
            }
        };
        let config = &self.recovery;
        let mut unreachable = std::collections::HashSet::new();
        for id in crate::recovery::due_now(retries, pending) {
            let c = match copy(storage, &id) {
                Ok(Some(c)) if c.state == TransferState::Completed => c,
                Ok(_) => {
                    // The copy was deleted (usage control) or never completed.
                    let _ = storage.delete(COPIES, &pending_key(&id));
                    continue;
                }
                Err(e) => {
                    tracing::warn!(agreement = %id, error = %e, "cannot read the copy");
                    continue;
                }
            };
            if retries.failures(&id) > 0
                && crate::recovery::expired(c.updated_at, now(), config.expire_after)
            {
                let reason = format!(
                    "expired: the provider did not confirm the receipt within {}",
                    humantime::format_duration(config.expire_after)
                );
                let Some(_claim) = self.receipt_claim(&id).await else {
                    continue;
                };
                if !matches!(storage.get(COPIES, &pending_key(&id)), Ok(Some(_))) {
                    continue;
                }
                if let Err(e) = self.give_up_receipt(&c, &reason).await {
                    tracing::warn!(agreement = %id, error = %e, "cannot record the given-up receipt");
                }
                continue;
            }
            // A provider that did not answer this pass is not called again in it.
            if unreachable.contains(&c.provider) {
                continue;
            }
            tracing::info!(agreement = %id, "sending the receipt again");
            retries.took_up(&id, std::time::Instant::now());
            let sent = self.send_receipt(&id, None).await;
            match (sent, storage.get(COPIES, &pending_key(&id))) {
                (Ok(()), Ok(None)) => retries.succeeded(&id),
                (Err(TransferError::Peer(_)), _) => retries.succeeded(&id),
                (result, _) => {
                    unreachable.insert(c.provider.clone());
                    retries.failed(&id, std::time::Instant::now(), config.retry_interval);
                    if let Err(e) = result {
                        tracing::warn!(agreement = %id, error = %e, "the receipt could not be sent");
                    }
                }
            }
        }
    }
}
