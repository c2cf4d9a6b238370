//! Taking up unfinished negotiations: the poller that asks providers how this node's
//! requests stand (sending one again that never arrived), sends countersignatures again,
//! and expires steps the peer never answered once `recovery.expire_after` has passed.

use std::collections::HashSet;

use crate::base::clock::now;
use crate::base::error::{ErrorKind, PeerRefusal};
use liutong_proto::v1::negotiation_client::NegotiationClient;
use liutong_proto::v1::{GetNegotiationRequest, NegotiationRequest};

use super::agreement::{ContractRequest, Role};
use super::negotiation::{ContractError, Negotiation, SENT, peer_text};
use super::{Contracts, NegotiationEvent, Recovery, recovery_step};

impl Contracts {
    /// Takes up every unfinished negotiation (`recovery_step`): asks providers about this
    /// node's requests (sending one again that never arrived), sends countersignatures
    /// again, and expires steps older than `recovery.expire_after` that this process has
    /// tried. Runs in the node's background work, one pass at a time; `retries` holds the
    /// attempts, so a step that keeps failing is tried less often.
    pub async fn poll_pending(&self, retries: &mut crate::recovery::Retries) {
        let pending = match self.waiting() {
            Ok(ids) => ids,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list negotiations");
                return;
            }
        };
        let config = &self.recovery;
        // A provider waits on its consumer, who may be retrying at its longest backoff.
        let provider_grace = config
            .retry_interval
            .saturating_mul(crate::recovery::MAX_BACKOFF_FACTOR);
        let mut unreachable: HashSet<String> = HashSet::new();
        for id in crate::recovery::due_now(retries, pending) {
            let read = |id: &str| match self.get(id) {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(negotiation = %id, error = %e, "cannot read the negotiation");
                    None
                }
            };
            // Decided from the record first: a step that only waits is not claimed, so
            // it never holds up the step that ends the wait (a countersignature arriving).
            let Some(n) = read(&id) else { continue };
            let started = std::time::Instant::now();
            let tried = retries.tried(&id, started).is_some_and(|t| match n.role {
                Role::Provider => t >= provider_grace,
                Role::Consumer => true,
            });
            retries.took_up(&id, started);
            match recovery_step(&n, now(), config.expire_after, tried) {
                None => {
                    // Moved on since the list was first read: no longer taken up.
                    self.stored(&n);
                    continue;
                }
                Some(Recovery::Wait) => continue,
                Some(_) if n.role == Role::Consumer && unreachable.contains(&n.peer_address) => {
                    // Its provider did not answer this pass: its other steps wait for the
                    // next one rather than each wait for the same timeout.
                    continue;
                }
                Some(_) => {}
            }
            // A negotiation another step is working on (a request being answered, a
            // countersignature arriving) is left to it.
            let Some(_claim) = self.claim(&id) else {
                continue;
            };
            // As stored now, under the claim.
            let Some(mut n) = read(&id) else { continue };
            let result = match recovery_step(&n, now(), config.expire_after, tried) {
                None => {
                    self.stored(&n);
                    continue;
                }
                Some(Recovery::Wait) => continue,
                Some(Recovery::Expire(reason)) => {
                    tracing::info!(negotiation = %n.id, %reason, "negotiation given up");
                    self.transition(&mut n, NegotiationEvent::Expired, &reason)
                        .await
                }
                Some(Recovery::Ask) => self.ask(&mut n).await,
                Some(Recovery::Countersign) => {
                    tracing::info!(negotiation = %n.id, "sending the countersigned agreement again");
                    self.send_countersigned(&mut n).await
                }
            };
            match result {
                Ok(()) => retries.succeeded(&id),
                Err(e) => {
                    let not_through = match &e {
                        ContractError::Unreachable(_) => true,
                        ContractError::Peer(refusal) => crate::recovery::transient(refusal),
                        _ => false,
                    };
                    if not_through {
                        unreachable.insert(n.peer_address.clone());
                    }
                    retries.failed(&id, std::time::Instant::now(), config.retry_interval);
                    tracing::warn!(
                        negotiation = %id,
                        attempts = retries.failures(&id),
                        error = %e,
                        "negotiation could not advance; retried later"
                    );
                }
            }
        }
    }

    /// Asks the provider how the request of REQUESTED `n` stands, and goes on from its
    /// answer. A provider that does not know a request it never answered never got it (or
    /// lost it in a crash before it was stored): it is sent again, byte for byte, while it
    /// is valid (a request is valid for 5 minutes from when it was made); after that the
    /// negotiation ends, as the provider would refuse it. A provider that does not know a
    /// request it has answered before, or refuses the question, ends it too.
    pub(super) async fn ask(&self, n: &mut Negotiation) -> Result<(), ContractError> {
        use crate::recovery::{Call, Verdict, verdict};
        let channel = self.member_channel(n).await?;
        let mut client = NegotiationClient::new(channel);
        let answer = client
            .get(GetNegotiationRequest {
                negotiation_id: n.id.clone(),
            })
            .await;
        let refusal = match answer {
            Ok(state) => return self.advance(n, state.into_inner(), Vec::new()).await,
            Err(status) => PeerRefusal::from(status),
        };
        match verdict(Call::State, &refusal) {
            // Kept REQUESTED; asked again later.
            Verdict::Retry | Verdict::Held => return Err(ContractError::Peer(refusal)),
            Verdict::Refused if refusal.kind == ErrorKind::NotFound && n.reason == SENT => {}
            Verdict::Refused => {
                let reason = if refusal.kind == ErrorKind::NotFound {
                    "the provider no longer knows the request it had answered".to_owned()
                } else {
                    format!(
                        "the provider refused to say how the request stands: {}",
                        peer_text(&refusal.message)
                    )
                };
                return self
                    .transition(n, NegotiationEvent::Terminated, &reason)
                    .await;
            }
        }
        let valid_until = n
            .request
            .peek_json::<ContractRequest>()
            .map_or(0, |r| r.expires_at);
        if valid_until <= now() {
            return self
                .transition(
                    n,
                    NegotiationEvent::Terminated,
                    "the request's validity passed before the provider received it; request the \
             contract again",
                )
                .await;
        }
        tracing::info!(negotiation = %n.id, "sending the request again");
        let answer = client
            .request(NegotiationRequest {
                request: Some(n.request.clone().into()),
            })
            .await;
        self.take_answer(n, answer).await
    }
}
