//! Taking up unfinished negotiations: the poller that asks providers how this node's
//! requests stand (sending one again that never arrived), sends countersignatures again,
//! and expires steps the peer never answered once `recovery.expire_after` has passed;
//! each pass also removes the nonces of contract requests that have expired.

use std::collections::HashSet;

use crate::base::clock::now;
use crate::base::error::{ErrorKind, PeerRefusal};
use liutong_proto::v1::negotiation_client::NegotiationClient;
use liutong_proto::v1::{GetNegotiationRequest, NegotiationRequest};

use super::agreement::{ContractRequest, Role};
use super::contracts::Contracts;
use super::negotiation::{ContractError, Negotiation, SENT, peer_text};
use super::state::{NegotiationEvent, NegotiationStatus};

impl Contracts {
    /// Takes up every unfinished negotiation (`recovery_step`): asks providers about this
    /// node's requests (sending one again that never arrived), sends countersignatures
    /// again, and expires steps older than `recovery.expire_after` that this process has
    /// tried. Runs in the node's background work, one pass at a time; `retries` holds the
    /// attempts, so a step that keeps failing is tried less often.
    pub async fn poll_pending(&self, retries: &mut crate::recovery::Retries) {
        // Replay records last only as long as the requests they guard.
        if let Err(e) = self.sweep_nonces(now()) {
            tracing::warn!(error = %e, "cannot remove expired contract request nonces");
        }
        let pending = match self.waiting().await {
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
                Some(Recovery::Ask | Recovery::Countersign)
                    if super::consumer_binding::over_binding(&n.peer_address) =>
                {
                    self.recover_over_binding(&mut n).await
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

/// What the background work does next with a stored negotiation ([`recovery_step`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Recovery {
    /// Consumer, REQUESTED: ask the provider how the request stands (and send it again
    /// if the provider never got it).
    Ask,
    /// Consumer, VERIFIED: send the countersigned agreement again.
    Countersign,
    /// Provider, AGREED: the consumer's countersignature is awaited.
    Wait,
    /// Give the step up: TERMINATED with this reason.
    Expire(String),
}

/// The next action for `n` at `now` (Unix seconds), or `None` when `n` has no step to
/// come (final, or not this node's to take). `tried`: this process has taken the step
/// up before (for a provider's AGREED, for long enough that a consumer retrying at its
/// longest backoff has come by); no step is given up before, so a node that was down
/// longer than `expire_after` first tries what it can.
///
/// A request is measured from when it was made (`created_at`), whatever the provider
/// said of it since: one waiting for a person's approval there expires too. A
/// countersigned agreement never expires by time: the provider may hold it FINALIZED,
/// so it ends only on the provider's answer ([`send_countersigned`](super::send_countersigned)).
/// A provider's AGREED is measured from when it was entered (`updated_at`).
pub(crate) fn recovery_step(
    n: &Negotiation,
    now: i64,
    expire_after: std::time::Duration,
    tried: bool,
) -> Option<Recovery> {
    let after = humantime::format_duration(expire_after);
    match (n.role, n.state) {
        (Role::Consumer, NegotiationStatus::Requested) => Some(
            if tried && crate::recovery::expired(n.created_at, now, expire_after) {
                Recovery::Expire(if n.reason == SENT {
                    format!("expired: the provider did not answer the request within {after}")
                } else {
                    format!(
                        "expired: the provider did not decide on the request within {after} \
                         (last told: {})",
                        n.reason
                    )
                })
            } else {
                Recovery::Ask
            },
        ),
        (Role::Consumer, NegotiationStatus::Verified) => Some(Recovery::Countersign),
        (Role::Provider, NegotiationStatus::Agreed) => Some(
            if tried && crate::recovery::expired(n.updated_at, now, expire_after) {
                Recovery::Expire(format!(
                    "expired: the consumer did not countersign the agreement within {after}"
                ))
            } else {
                Recovery::Wait
            },
        ),
        _ => None,
    }
}

#[cfg(test)]
mod recovery_tests {
    use super::*;
    use crate::contract::REQUEST_PAYLOAD_TYPE;
    use crate::identity::{Envelope, ParticipantId};
    use std::time::Duration;

    fn negotiation(role: Role, state: NegotiationStatus, reason: &str) -> Negotiation {
        let key = crate::identity::SigningKey::generate().unwrap();
        Negotiation {
            id: "neg-1".into(),
            role,
            peer: ParticipantId::parse("91330100MA2L0G0013").unwrap(),
            peer_address: "127.0.0.1:7700".into(),
            offer_id: "offer".into(),
            purpose: "statistics".into(),
            state,
            reason: reason.into(),
            failed_constraints: Vec::new(),
            request: Envelope::sign_json(REQUEST_PAYLOAD_TYPE, &"request", &key).unwrap(),
            offer_policy: None,
            offer_classification: None,
            agreement: None,
            agreement_id: None,
            created_at: 1_000,
            updated_at: 1_000,
        }
    }

    const LIMIT: Duration = Duration::from_secs(60);

    #[test]
    fn a_request_not_answered_is_asked_about_until_it_expires() {
        let n = negotiation(Role::Consumer, NegotiationStatus::Requested, SENT);
        assert_eq!(recovery_step(&n, 1_059, LIMIT, true), Some(Recovery::Ask));
        match recovery_step(&n, 1_060, LIMIT, true) {
            Some(Recovery::Expire(why)) => {
                assert_eq!(
                    why,
                    "expired: the provider did not answer the request within 1m"
                )
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn no_step_expires_before_this_process_tried_it() {
        // After a downtime longer than the limit, each step is first tried once.
        for (role, state) in [
            (Role::Consumer, NegotiationStatus::Requested),
            (Role::Consumer, NegotiationStatus::Verified),
            (Role::Provider, NegotiationStatus::Agreed),
        ] {
            let n = negotiation(role, state, SENT);
            assert!(
                !matches!(
                    recovery_step(&n, 1_000_000, LIMIT, false),
                    Some(Recovery::Expire(_))
                ),
                "{role:?} {state}"
            );
        }
    }

    #[test]
    fn a_request_waiting_for_a_person_expires_from_when_it_was_made() {
        let mut n = negotiation(
            Role::Consumer,
            NegotiationStatus::Requested,
            "waiting for a person's approval at the provider (important data)",
        );
        // The provider's answer came later; the request's age still counts.
        n.updated_at = 1_050;
        assert_eq!(recovery_step(&n, 1_059, LIMIT, true), Some(Recovery::Ask));
        assert!(matches!(
            recovery_step(&n, 1_060, LIMIT, true),
            Some(Recovery::Expire(why)) if why.contains("did not decide") && why.contains("approval")
        ));
    }

    #[test]
    fn a_countersignature_is_sent_again_until_the_provider_answers() {
        let n = negotiation(Role::Consumer, NegotiationStatus::Verified, "countersigned");
        assert_eq!(
            recovery_step(&n, 1_000, LIMIT, true),
            Some(Recovery::Countersign)
        );
        assert_eq!(
            recovery_step(&n, 1_000_000, LIMIT, true),
            Some(Recovery::Countersign),
            "the provider may hold it FINALIZED: only its answer ends it"
        );
    }

    #[test]
    fn a_provider_waits_for_the_countersignature_until_it_expires() {
        let n = negotiation(Role::Provider, NegotiationStatus::Agreed, "");
        assert_eq!(recovery_step(&n, 1_059, LIMIT, true), Some(Recovery::Wait));
        assert!(matches!(
            recovery_step(&n, 1_060, LIMIT, true),
            Some(Recovery::Expire(why)) if why.contains("did not countersign")
        ));
    }

    #[test]
    fn final_states_and_the_other_side_s_steps_have_nothing_to_retry() {
        for (role, state) in [
            (Role::Consumer, NegotiationStatus::Finalized),
            (Role::Consumer, NegotiationStatus::Terminated),
            (Role::Consumer, NegotiationStatus::Agreed),
            (Role::Provider, NegotiationStatus::Finalized),
            (Role::Provider, NegotiationStatus::Terminated),
            (Role::Provider, NegotiationStatus::Requested),
            (Role::Provider, NegotiationStatus::Verified),
        ] {
            let n = negotiation(role, state, "");
            assert_eq!(
                recovery_step(&n, 1_000_000, LIMIT, true),
                None,
                "{role:?} {state}"
            );
            assert!(
                !n.unfinished(),
                "{role:?} {state} is not in the poller's set"
            );
        }
        for (role, state) in [
            (Role::Consumer, NegotiationStatus::Requested),
            (Role::Consumer, NegotiationStatus::Verified),
            (Role::Provider, NegotiationStatus::Agreed),
        ] {
            assert!(
                negotiation(role, state, "").unfinished(),
                "{role:?} {state}"
            );
        }
    }
}
