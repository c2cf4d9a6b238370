//! The consumer's steps: fetching the offer, signing and sending a contract request
//! (on record before it is sent), taking the provider's answer, checking the agreement
//! against the request and the offer, and countersigning it (on record before it is
//! sent); also the compile context used to check another node's policies.

use std::sync::Arc;

use liutong_policy::{Classification, CompileContext, CompiledPolicy, Guardrails, Policy};

use crate::audit::log::Event;
use crate::base::clock::now;
use crate::base::error::{ErrorKind, PeerRefusal};
use crate::base::random::{new_id, new_nonce};
use crate::identity::{Envelope, MemberRole};
use liutong_proto::v1::negotiation_client::NegotiationClient;
use liutong_proto::v1::{NegotiationRequest, NegotiationState, VerifyAgreementRequest};

use super::agreement::{
    AGREEMENT_PAYLOAD_TYPE, Agreement, ContractRequest, REQUEST_PAYLOAD_TYPE, Role,
};
use super::cache::CachedPolicy;
use super::contracts::Contracts;
use super::negotiation::{ContractError, Negotiation, SENT, change, peer_text};
use super::state::{self, NegotiationEvent, NegotiationStatus};

impl Contracts {
    async fn provider_channel(
        &self,
        address: &str,
    ) -> Result<crate::telemetry::PeerChannel, ContractError> {
        self.peers
            .connect_peer(address)
            .await
            .map_err(|e| ContractError::Unreachable(e.to_string()))
    }

    /// A channel to the provider of `n` that only that participant can answer on: what
    /// is sent again (the signed request, the countersigned agreement) reaches no one else,
    /// whatever its stored address now leads to.
    pub(super) async fn member_channel(
        &self,
        n: &Negotiation,
    ) -> Result<crate::telemetry::PeerChannel, ContractError> {
        self.peers
            .connect_member(&n.peer_address, &n.peer)
            .await
            .map_err(|e| ContractError::Unreachable(e.to_string()))
    }

    /// The consumer asks a provider for a contract.
    pub async fn request(
        &self,
        address: &str,
        offer_id: &str,
        purpose: &str,
    ) -> Result<Negotiation, ContractError> {
        self.require_own_role(MemberRole::Consumer, "requesting a contract")
            .map_err(|e| ContractError::Forbidden(e.to_string()))?;
        if purpose.trim().is_empty() {
            return Err(ContractError::Invalid("purpose: declare a purpose".into()));
        }
        let channel = self.provider_channel(address).await?;
        let offer = self.offer(&channel, address, offer_id).await?;
        let provider = offer.owner;
        // The request goes only to a current member that may provide, and only on a
        // channel whose server is that member: the offer's owner is the peer's own word.
        self.require_peer_role(&provider, MemberRole::Provider, "offering a product")
            .map_err(|e| ContractError::Forbidden(e.to_string()))?;
        let channel = self
            .peers
            .connect_member(address, &provider)
            .await
            .map_err(|e| ContractError::Unreachable(e.to_string()))?;
        let t = now();
        let request = ContractRequest {
            negotiation_id: new_id("neg")?,
            consumer: self.identity.membership.participant_id.clone(),
            provider: provider.clone(),
            offer_id: offer_id.to_owned(),
            purpose: purpose.trim().to_owned(),
            nonce: new_nonce()?,
            created_at: t,
            expires_at: t + 300,
        };
        let envelope =
            Envelope::sign_json(REQUEST_PAYLOAD_TYPE, &request, &self.identity.signing_key)?;
        let mut n = Negotiation {
            id: request.negotiation_id.clone(),
            role: Role::Consumer,
            peer: provider,
            peer_address: address.to_owned(),
            offer_id: offer_id.to_owned(),
            purpose: request.purpose.clone(),
            state: NegotiationStatus::Requested,
            reason: String::new(),
            failed_constraints: Vec::new(),
            request: envelope.clone(),
            offer_policy: offer.policy,
            offer_classification: offer.classification,
            agreement: None,
            agreement_id: None,
            created_at: t,
            updated_at: t,
        };
        let claim = self.claim(&n.id);
        // REQUESTED is durable before the request leaves: after a crash or a lost answer
        // the poller asks the provider about it (and sends it again if it never arrived),
        // so an agreement the provider signs for it is never left without its consumer.
        let requested = change(&mut n, NegotiationEvent::RequestSent, SENT)?;
        self.commit(&n, vec![requested]).await?;
        // Pause point `negotiation.consumer.requested`: REQUESTED is durable, the request
        // not sent yet.
        crate::pause::at("negotiation.consumer.requested").await;
        let answer = NegotiationClient::new(channel)
            .request(NegotiationRequest {
                request: Some(envelope.into()),
            })
            .await;
        let taken = self.take_answer(&mut n, answer).await;
        drop(claim);
        taken.map(|()| n)
    }

    /// Takes the provider's answer to the request of `n` (sent now, or again): a state
    /// goes to [`advance`]; a refusal ends the negotiation; a call that did not get through,
    /// or that the provider answers as one it already holds, keeps it REQUESTED, to be
    /// asked about again.
    pub(super) async fn take_answer(
        &self,
        n: &mut Negotiation,
        answer: Result<tonic::Response<NegotiationState>, tonic::Status>,
    ) -> Result<(), ContractError> {
        use crate::recovery::{Call, Verdict, verdict};
        let refusal = match answer {
            Ok(state) => return self.advance(n, state.into_inner(), Vec::new()).await,
            Err(status) => PeerRefusal::from(status),
        };
        match verdict(Call::Request, &refusal) {
            Verdict::Retry => Err(ContractError::Unreachable(format!(
                "{}; the request is kept (REQUESTED) and the provider is asked again until \
             it answers (at most recovery.expire_after)",
                &refusal.message
            ))),
            Verdict::Held => Err(ContractError::Unreachable(format!(
                "the provider already holds this request ({}); it is asked how it stands",
                &refusal.message
            ))),
            Verdict::Refused => {
                if refusal.kind == ErrorKind::PermissionDenied {
                    n.failed_constraints = vec![peer_text(&refusal.message)];
                }
                self.transition(
                    n,
                    NegotiationEvent::Terminated,
                    &format!("the provider refused: {}", peer_text(&refusal.message)),
                )
                .await?;
                Err(ContractError::Peer(refusal))
            }
        }
    }

    /// Takes the provider's answer: when it is AGREED, checks and countersigns the
    /// agreement and sends it back. `unlogged`: events of this negotiation not committed
    /// yet, which go first into its next commit.
    pub(super) async fn advance(
        &self,
        n: &mut Negotiation,
        answer: NegotiationState,
        mut unlogged: Vec<Event>,
    ) -> Result<(), ContractError> {
        match state::answer_to_request(&answer.state) {
            state::Answer::Agreement => {}
            state::Answer::Terminated => {
                n.failed_constraints = answer
                    .failed_constraints
                    .iter()
                    .take(32)
                    .map(|c| peer_text(c))
                    .collect();
                unlogged.push(change(
                    n,
                    NegotiationEvent::Terminated,
                    &peer_text(&answer.reason),
                )?);
                return self.commit(n, unlogged).await;
            }
            state::Answer::Undecided => {
                // Not decided yet. That the provider has the request is recorded once;
                // what it says while it decides is its text, not a step of this node's, so
                // a provider that changes it on every question writes nothing more here.
                if n.reason == SENT || !unlogged.is_empty() {
                    let said = peer_text(answer.reason.trim());
                    let reason = if said.is_empty() || said == SENT {
                        "received by the provider, not decided yet".to_owned()
                    } else {
                        said
                    };
                    unlogged.push(change(n, NegotiationEvent::Pending, &reason)?);
                    self.commit(n, unlogged).await?;
                }
                return Ok(());
            }
        }
        let agreement = match answer.agreement {
            Some(envelope) => self.accept_agreement(n, envelope.into()),
            None => Err(ContractError::Invalid(
                "the provider answered AGREED without an agreement".into(),
            )),
        };
        let (countersigned, agreement) = match agreement {
            Ok(accepted) => accepted,
            Err(e) => {
                // The consumer refuses an agreement that fails its checks.
                unlogged.push(change(
                    n,
                    NegotiationEvent::Terminated,
                    &format!("the agreement was refused: {e}"),
                )?);
                self.commit(n, unlogged).await?;
                return Err(e);
            }
        };
        n.agreement = Some(countersigned);
        n.agreement_id = Some(agreement.agreement_id.clone());
        // VERIFIED is durable before the countersignature leaves: a crash never leaves a
        // contract this node signed but has no record of, and the poller sends it again
        // from this record until the provider confirms it. FINALIZED only after the
        // provider's answer.
        unlogged.push(change(n, NegotiationEvent::Countersigned, "countersigned")?);
        self.commit(n, unlogged).await?;
        // Pause point `negotiation.consumer.verified`: VERIFIED (with the countersigned
        // agreement) is durable, the countersignature not sent yet.
        crate::pause::at("negotiation.consumer.verified").await;
        self.send_countersigned(n).await
    }

    /// Sends the countersigned agreement of VERIFIED `n` to its provider (again, after a
    /// crash or a lost answer: the provider answers a repeat as it did the first). The
    /// provider's confirmation makes it FINALIZED; its answer that it does not hold the
    /// negotiation AGREED or FINALIZED with this agreement makes it TERMINATED; anything
    /// else (a call that did not get through, a provider that does not recognise this node
    /// yet) leaves it VERIFIED, to be sent again. It does not expire: the provider may
    /// already hold the contract FINALIZED, and only its answer tells.
    pub(super) async fn send_countersigned(
        &self,
        n: &mut Negotiation,
    ) -> Result<(), ContractError> {
        use crate::recovery::{Call, Verdict, verdict};
        let countersigned = n
            .agreement
            .clone()
            .expect("VERIFIED negotiations carry their agreement");
        let kept = |why: &str| {
            ContractError::Unreachable(format!(
                "{why}; the countersigned agreement is kept (VERIFIED) and sent again until the \
             provider confirms or refuses it"
            ))
        };
        let channel = self
            .member_channel(n)
            .await
            .map_err(|e| kept(&e.to_string()))?;
        let answer = NegotiationClient::new(channel)
            .verify(VerifyAgreementRequest {
                negotiation_id: n.id.clone(),
                agreement: Some(countersigned.clone().into()),
            })
            .await;
        let done = match answer.map_err(PeerRefusal::from) {
            Ok(done) => done.into_inner(),
            Err(refusal) if verdict(Call::Countersignature, &refusal) != Verdict::Refused => {
                return Err(kept(&refusal.message));
            }
            Err(refusal) => {
                self.transition(
                    n,
                    NegotiationEvent::Terminated,
                    &format!(
                        "the provider refused the countersigned agreement: {}",
                        peer_text(&refusal.message)
                    ),
                )
                .await?;
                return Err(ContractError::Peer(refusal));
            }
        };
        let same = done
            .agreement
            .map(Envelope::from)
            .is_some_and(|a| a == countersigned);
        if !state::confirms_countersignature(&done.state) || !same {
            return Err(ContractError::Invalid(format!(
                "the provider answered {} to the countersigned agreement{}",
                peer_text(&done.state),
                if same { "" } else { ", with another agreement" }
            )));
        }
        self.transition(n, NegotiationEvent::Finalized, "").await
    }

    /// Checks the provider's agreement for negotiation `n` and countersigns it (once).
    pub(super) fn accept_agreement(
        &self,
        n: &Negotiation,
        envelope: Envelope,
    ) -> Result<(Envelope, Agreement), ContractError> {
        let provider = self
            .trust
            .member(&n.peer, now())
            .map_err(|e| ContractError::Forbidden(format!("the provider: {e}")))?;
        let agreement: Agreement = envelope
            .open_json(AGREEMENT_PAYLOAD_TYPE, &provider.signing_key)
            .map_err(|e| ContractError::Signature(format!("the provider's agreement: {e}")))?;
        self.check_agreement(n, &agreement)?;
        let mut countersigned = envelope;
        if countersigned
            .verify(&self.identity.signing_key.public_key())
            .is_err()
        {
            countersigned.add_signature(&self.identity.signing_key)?;
        }
        Ok((countersigned, agreement))
    }

    /// The consumer's checks of an agreement: it is for this request, and its policy only
    /// narrows the offer the consumer saw.
    fn check_agreement(&self, n: &Negotiation, a: &Agreement) -> Result<(), ContractError> {
        let mismatch = |what: &str| {
            ContractError::Invalid(format!(
                "the agreement does not match the request: {what} differs"
            ))
        };
        if a.negotiation_id != n.id {
            return Err(mismatch("negotiation"));
        }
        if a.consumer != self.identity.membership.participant_id {
            return Err(mismatch("consumer"));
        }
        if a.provider != n.peer {
            return Err(mismatch("provider"));
        }
        if a.offer_id != n.offer_id {
            return Err(mismatch("offer"));
        }
        if a.purpose != n.purpose {
            return Err(mismatch("purpose"));
        }
        let (Some(offer_odrl), Some(classification)) = (&n.offer_policy, n.offer_classification)
        else {
            return Err(ContractError::Policy(
                "the offer's policy was not recorded".into(),
            ));
        };
        let context = analysis_context(classification);
        let compile = |v: &serde_json::Value| -> Result<CompiledPolicy, ContractError> {
            let policy =
                Policy::from_odrl_value(v).map_err(|e| ContractError::Policy(e.to_string()))?;
            liutong_policy::compile(policy, &context)
                .map_err(|e| ContractError::Policy(e.to_string()))
        };
        let offer = self.offer_policy(&n.offer_id, offer_odrl, classification, compile)?;
        let agreement = compile(&a.policy)?;
        if !liutong_policy::implies(&agreement, &offer) {
            return Err(ContractError::Policy(format!(
                "the agreement's policy grants more than the offer: {}",
                liutong_policy::narrowing_gaps(&agreement, &offer).join("; ")
            )));
        }
        Ok(())
    }
}

impl Contracts {
    /// The offer's policy `odrl`, compiled with `compile`: once per offer and kept, as
    /// every request for the offer checks its agreement against it. A different policy
    /// or classification under the same offer ID is compiled anew.
    fn offer_policy(
        &self,
        offer_id: &str,
        odrl: &serde_json::Value,
        classification: Classification,
        compile: impl FnOnce(&serde_json::Value) -> Result<CompiledPolicy, ContractError>,
    ) -> Result<Arc<CompiledPolicy>, ContractError> {
        let cache = &self.offer_policies;
        {
            let cached = cache.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(c) = cached.get(offer_id)
                && c.classification == classification
                && c.source == *odrl
            {
                return Ok(c.compiled.clone());
            }
        }
        let compiled = Arc::new(compile(odrl)?);
        let mut cached = cache.lock().unwrap_or_else(|p| p.into_inner());
        if cached.len() >= OFFER_POLICIES_KEPT {
            cached.clear();
        }
        cached.insert(
            offer_id.to_owned(),
            CachedPolicy {
                source: odrl.clone(),
                classification,
                compiled: compiled.clone(),
            },
        );
        Ok(compiled)
    }
}

/// How many compiled offer policies the consumer keeps (all are dropped when more come).
const OFFER_POLICIES_KEPT: usize = 1024;

/// A compile context for checking another node's policies: the provider's own
/// guardrails already applied, so any province is accepted here.
pub(crate) fn analysis_context(classification: Classification) -> CompileContext {
    CompileContext::new(classification).with_guardrails(Guardrails {
        important_regions: liutong_policy::RegionCode::provinces().collect(),
        important_requires_approval: true,
    })
}
