//! The consumer's steps over a binding other than the peer API: the Dataspace
//! Protocol, where the provider answers at this node's callback address rather than in
//! the answer to the request. The decisions are the same as over gRPC (one agreement
//! component, two bindings): the request is signed and on record (REQUESTED) before it
//! leaves; the provider's signed agreement is checked against the request and the offer
//! and countersigned, on record (VERIFIED) before the countersignature leaves; the
//! provider's FINALIZED or termination ends it. The binding ([`ConsumerBinding`]) only
//! carries the messages.
//!
//! A provider is reached by its `https://` base URL (the negotiation's `peer_address`);
//! a step cut short (an answer lost, the node restarted) is taken up by the poller
//! through [`Contracts::recover_over_binding`].

use liutong_policy::Classification;

use crate::base::clock::now;
use crate::base::error::{ErrorKind, PeerRefusal};
use crate::base::random::{new_id, random_bytes};
use crate::identity::{Envelope, MemberRole, ParticipantId};

use super::agreement::{ContractRequest, REQUEST_PAYLOAD_TYPE, Role};
use super::contracts::Contracts;
use super::negotiation::{ContractError, Negotiation, SENT, change, peer_text};
use super::state::{NegotiationEvent, NegotiationStatus};

/// How long `request` waits for the provider's outcome at the callback address before
/// it answers with the negotiation as it stands (the outcome is still taken when it
/// comes).
const OUTCOME_WAIT: std::time::Duration = std::time::Duration::from_secs(30);
/// How long a callback waits for a step already at work on its negotiation (the
/// request whose answer it overtook).
const CALLBACK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// An offer as a provider's binding shows it to this node.
#[derive(Clone, Debug)]
pub struct BoundOffer {
    /// The provider, as its server certificate names it (a current member).
    pub provider: ParticipantId,
    /// The offer's ODRL policy and the product's classification, to check that the
    /// agreement only narrows the offer.
    pub policy: Option<serde_json::Value>,
    pub classification: Option<Classification>,
}

/// Carries the consumer's messages to a provider over another binding. Errors: a
/// call that did not get through is [`ContractError::Unreachable`]; the provider's
/// refusal is [`ContractError::Peer`].
#[tonic::async_trait]
pub trait ConsumerBinding: Send + Sync {
    /// Offer `offer_id` at the provider's `address`.
    async fn offer(&self, address: &str, offer_id: &str) -> Result<BoundOffer, ContractError>;
    /// Sends the signed request of REQUESTED `n`; `Ok` once the provider holds it.
    async fn send_request(&self, n: &Negotiation) -> Result<(), ContractError>;
    /// The state the provider says `n` is in; `None`: it does not know `n`.
    async fn state(&self, n: &Negotiation) -> Result<Option<NegotiationStatus>, ContractError>;
    /// Sends the countersigned agreement of VERIFIED `n`.
    async fn send_verification(&self, n: &Negotiation) -> Result<(), ContractError>;
    /// Tells the provider this node ended `n`, with `reason`.
    async fn send_termination(&self, n: &Negotiation, reason: &str) -> Result<(), ContractError>;
    /// Sends the new request of `n` that takes the provider's counter-offer.
    async fn send_counter_request(&self, n: &Negotiation) -> Result<(), ContractError>;
    /// One page of the provider's catalog at `address`, as the peer API lists offers,
    /// and the token of the next page (empty on the last).
    async fn catalog(
        &self,
        address: &str,
        page_size: u32,
        page_token: &str,
    ) -> Result<(Vec<liutong_proto::v1::Product>, String), ContractError>;
}

/// The reason a consumer's REQUESTED carries once it took the provider's counter-offer
/// and until the provider answers the new request.
const COUNTER_SENT: &str = "counter-offer taken: the new request was sent to the provider";

/// Whether a provider address is reached over the Dataspace Protocol binding.
pub fn over_binding(address: &str) -> bool {
    address.starts_with("https://")
}

impl Contracts {
    /// Hands the Dataspace Protocol binding to the consumer's steps (once, when the node
    /// is built with its `[dsp]` listener on).
    pub fn set_consumer_binding(&self, binding: std::sync::Arc<dyn ConsumerBinding>) {
        let _ = self.binding.set(binding);
    }

    fn binding(&self) -> Result<&std::sync::Arc<dyn ConsumerBinding>, ContractError> {
        self.binding.get().ok_or_else(|| {
            ContractError::Invalid(
                "an https:// peer is a Dataspace Protocol endpoint, and its answers come to \
                 this node's own DSP listener, which is off: add a [dsp] section (listen = \
                 \"0.0.0.0:8443\") to node.toml and restart the node, or give the peer's \
                 host:port to use the Liutong peer API"
                    .into(),
            )
        })
    }

    /// One page of the catalog of a provider reached over the Dataspace Protocol.
    pub async fn catalog_over_binding(
        &self,
        address: &str,
        page_size: u32,
        page_token: &str,
    ) -> Result<(Vec<liutong_proto::v1::Product>, String), ContractError> {
        self.binding()?
            .catalog(address.trim_end_matches('/'), page_size, page_token)
            .await
    }

    /// The consumer asks a provider reached over the Dataspace Protocol for a contract:
    /// the request is signed and on record before it is sent; the outcome arrives at
    /// this node's callback address. Answers once the negotiation is final, or once
    /// the provider says it waits (for a person's approval), or after
    /// `OUTCOME_WAIT` with the negotiation as it stands.
    pub async fn request_over_binding(
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
        let binding = self.binding()?.clone();
        let offer = binding.offer(address, offer_id).await?;
        let provider = offer.provider;
        self.require_peer_role(&provider, MemberRole::Provider, "offering a product")
            .map_err(|e| ContractError::Forbidden(e.to_string()))?;
        let t = now();
        let request = ContractRequest {
            negotiation_id: new_id("neg")?,
            consumer: self.identity.membership.participant_id.clone(),
            provider: provider.clone(),
            offer_id: offer_id.to_owned(),
            purpose: purpose.trim().to_owned(),
            nonce: hex::encode(random_bytes::<16>()?),
            created_at: t,
            expires_at: t + 300,
        };
        let envelope =
            Envelope::sign_json(REQUEST_PAYLOAD_TYPE, &request, &self.identity.signing_key)?;
        let mut n = Negotiation {
            id: request.negotiation_id.clone(),
            role: Role::Consumer,
            peer: provider,
            peer_address: address.trim_end_matches('/').to_owned(),
            offer_id: offer_id.to_owned(),
            purpose: request.purpose.clone(),
            state: NegotiationStatus::Requested,
            reason: String::new(),
            failed_constraints: Vec::new(),
            request: envelope,
            offer_policy: offer.policy,
            offer_classification: offer.classification,
            agreement: None,
            agreement_id: None,
            created_at: t,
            updated_at: t,
        };
        {
            let _claim = self.claim(&n.id);
            // REQUESTED is durable before the request leaves: the poller asks about it
            // (and sends it again if it never arrived) after a crash or a lost answer.
            let requested = change(&mut n, NegotiationEvent::RequestSent, SENT)?;
            self.commit(&n, vec![requested]).await?;
            // Pause point `negotiation.consumer.requested`: REQUESTED is durable, the
            // request not sent yet.
            crate::pause::at("negotiation.consumer.requested").await;
            if let Err(e) = binding.send_request(&n).await {
                return Err(self.request_failed(&mut n, e).await);
            }
        }
        // The claim is released: the provider's outcome may be arriving already.
        if binding.state(&n).await.ok().flatten() == Some(NegotiationStatus::Requested) {
            // The provider has not decided (a person's approval): that is recorded once.
            return self.note_pending(&n.id).await;
        }
        let deadline = tokio::time::Instant::now() + OUTCOME_WAIT;
        let n = loop {
            let n = self
                .get(&n.id)?
                .ok_or_else(|| ContractError::NotFound(n.id.clone()))?;
            if n.state.is_final() || tokio::time::Instant::now() >= deadline {
                break n;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        };
        if n.state == NegotiationStatus::Terminated && !n.failed_constraints.is_empty() {
            // Read as the gRPC binding's policy refusal reads.
            return Err(ContractError::Peer(PeerRefusal {
                kind: ErrorKind::PermissionDenied,
                message: format!(
                    "{} (failed constraints: {})",
                    n.reason,
                    n.failed_constraints.join("; ")
                ),
                refusal: None,
            }));
        }
        Ok(n)
    }

    /// What a request that was not taken becomes: kept REQUESTED when it did not get
    /// through (the poller sends it again), TERMINATED when the provider refused it.
    async fn request_failed(&self, n: &mut Negotiation, e: ContractError) -> ContractError {
        let refusal = match e {
            ContractError::Peer(refusal) if !crate::recovery::transient(&refusal) => refusal,
            ContractError::Peer(refusal) => {
                return ContractError::Unreachable(format!(
                    "{}; the request is kept (REQUESTED) and sent again until the provider \
                     takes it (at most recovery.expire_after)",
                    refusal.message
                ));
            }
            ContractError::Unreachable(why) => {
                return ContractError::Unreachable(format!(
                    "{why}; the request is kept (REQUESTED) and sent again until the provider \
                     takes it (at most recovery.expire_after)"
                ));
            }
            other => return other,
        };
        if refusal.kind == ErrorKind::PermissionDenied {
            n.failed_constraints = vec![peer_text(&refusal.message)];
        }
        let reason = format!("the provider refused: {}", peer_text(&refusal.message));
        if let Err(e) = self
            .transition(n, NegotiationEvent::Terminated, &reason)
            .await
        {
            return e;
        }
        ContractError::Peer(refusal)
    }

    /// Records once that the provider holds the request of `id` undecided.
    async fn note_pending(&self, id: &str) -> Result<Negotiation, ContractError> {
        let _claim = self
            .claims
            .claim_within(id, CALLBACK_WAIT)
            .await
            .ok_or_else(|| ContractError::Busy(id.to_owned()))?;
        let mut n = self
            .get(id)?
            .ok_or_else(|| ContractError::NotFound(id.to_owned()))?;
        if n.state == NegotiationStatus::Requested && n.reason == SENT {
            self.transition(
                &mut n,
                NegotiationEvent::Pending,
                "received by the provider, not decided yet (a person's approval there)",
            )
            .await?;
        }
        Ok(n)
    }

    /// This node's negotiation `id` as consumer with `provider` over the binding: any
    /// other (another provider's, one over the peer API, a provider's own) does not
    /// exist for the caller.
    pub fn bound_negotiation(
        &self,
        provider: &ParticipantId,
        id: &str,
    ) -> Result<Negotiation, ContractError> {
        self.get(id)?
            .filter(|n| {
                n.role == Role::Consumer && n.peer == *provider && over_binding(&n.peer_address)
            })
            .ok_or_else(|| ContractError::NotFound(id.to_owned()))
    }

    async fn claim_bound(
        &self,
        provider: &ParticipantId,
        id: &str,
    ) -> Result<(crate::recovery::Claim, Negotiation), ContractError> {
        self.bound_negotiation(provider, id)?;
        let claim = self
            .claims
            .claim_within(id, CALLBACK_WAIT)
            .await
            .ok_or_else(|| ContractError::Busy(id.to_owned()))?;
        Ok((claim, self.bound_negotiation(provider, id)?))
    }

    /// The provider's agreement arrives (its signed envelope): checked and countersigned,
    /// VERIFIED on record before this returns; the countersignature is then sent with
    /// [`send_bound_verification`](Self::send_bound_verification). The same agreement
    /// again is answered as the first time.
    pub async fn receive_bound_agreement(
        &self,
        provider: &ParticipantId,
        id: &str,
        envelope: Envelope,
    ) -> Result<Negotiation, ContractError> {
        let (_claim, mut n) = self.claim_bound(provider, id).await?;
        if matches!(
            n.state,
            NegotiationStatus::Verified | NegotiationStatus::Finalized
        ) && n
            .agreement
            .as_ref()
            .is_some_and(|a| a.payload == envelope.payload)
        {
            return Ok(n);
        }
        if n.state != NegotiationStatus::Requested {
            return Err(ContractError::WrongState {
                id: n.id.clone(),
                state: n.state,
                what: "an agreement answers a request (REQUESTED)".into(),
            });
        }
        let (countersigned, agreement) = match self.accept_agreement(&n, envelope) {
            Ok(accepted) => accepted,
            Err(e) => {
                self.transition(
                    &mut n,
                    NegotiationEvent::Terminated,
                    &format!("the agreement was refused: {e}"),
                )
                .await?;
                return Err(e);
            }
        };
        n.agreement = Some(countersigned);
        n.agreement_id = Some(agreement.agreement_id.clone());
        // VERIFIED is durable before the countersignature leaves (see the peer API's
        // consumer).
        self.transition(&mut n, NegotiationEvent::Countersigned, "countersigned")
            .await?;
        Ok(n)
    }

    /// Sends the countersigned agreement of VERIFIED `id` to its provider; FINALIZED
    /// follows when the provider says so (its event, or its state when asked).
    pub async fn send_bound_verification(&self, id: &str) -> Result<(), ContractError> {
        let binding = self.binding()?.clone();
        let Some(_claim) = self.claims.claim_within(id, CALLBACK_WAIT).await else {
            return Err(ContractError::Busy(id.to_owned()));
        };
        let Some(n) = self.get(id)? else {
            return Err(ContractError::NotFound(id.to_owned()));
        };
        if n.state != NegotiationStatus::Verified {
            return Ok(());
        }
        // Pause point `negotiation.consumer.verified`: VERIFIED (with the countersigned
        // agreement) is durable, the countersignature not sent yet.
        crate::pause::at("negotiation.consumer.verified").await;
        binding.send_verification(&n).await
    }

    /// The provider's counter-offer arrives (`offer` as the provider shows it, its
    /// classification, its offer ID). This consumer takes one it can satisfy: for the
    /// same product, with a policy that compiles for its classification. It records the
    /// counter-offer (OFFERED) and, in the same commit, its new signed request for it
    /// (REQUESTED again), which then goes to the provider with
    /// [`send_bound_counter_request`](Self::send_bound_counter_request). One it cannot
    /// satisfy ends the negotiation, and the provider is told.
    pub async fn receive_bound_offer(
        &self,
        provider: &ParticipantId,
        id: &str,
        offer_id: &str,
        policy: serde_json::Value,
        classification: Option<Classification>,
    ) -> Result<Negotiation, ContractError> {
        let (_claim, mut n) = self.claim_bound(provider, id).await?;
        if n.state == NegotiationStatus::Requested
            && n.reason == COUNTER_SENT
            && n.offer_id == offer_id
        {
            // The same counter-offer again: already taken.
            return Ok(n);
        }
        if n.state != NegotiationStatus::Requested {
            return Err(ContractError::WrongState {
                id: n.id.clone(),
                state: n.state,
                what: "a counter-offer answers a request (REQUESTED)".into(),
            });
        }
        let product_of =
            |o: &str| crate::catalog::product::parse_offer_id(o).map(|(p, _)| p.to_owned());
        let unsatisfiable = if product_of(offer_id).is_none()
            || product_of(offer_id) != product_of(&n.offer_id)
        {
            Some(format!(
                "counter-offer {offer_id} is not for the product of offer {}",
                n.offer_id
            ))
        } else {
            match classification {
                None => Some(format!("counter-offer {offer_id} names no classification")),
                Some(c) => liutong_policy::Policy::from_odrl_value(&policy)
                    .map_err(|e| e.to_string())
                    .and_then(|p| {
                        liutong_policy::compile(p, &super::consumer::analysis_context(c))
                            .map_err(|e| e.to_string())
                    })
                    .err()
                    .map(|e| format!("counter-offer {offer_id}: its policy cannot be used: {e}")),
            }
        };
        if let Some(why) = unsatisfiable {
            self.transition(&mut n, NegotiationEvent::Terminated, &why)
                .await?;
            if let Some(binding) = self.binding.get()
                && let Err(e) = binding.send_termination(&n, &why).await
            {
                tracing::warn!(negotiation = %n.id, error = %e, "the provider was not told");
            }
            return Err(ContractError::Policy(why));
        }
        let offered = change(
            &mut n,
            NegotiationEvent::Offered,
            &format!("counter-offer {offer_id} from the provider"),
        )?;
        let t = now();
        let request = ContractRequest {
            negotiation_id: n.id.clone(),
            consumer: self.identity.membership.participant_id.clone(),
            provider: n.peer.clone(),
            offer_id: offer_id.to_owned(),
            purpose: n.purpose.clone(),
            nonce: hex::encode(random_bytes::<16>()?),
            created_at: t,
            expires_at: t + 300,
        };
        n.request =
            Envelope::sign_json(REQUEST_PAYLOAD_TYPE, &request, &self.identity.signing_key)?;
        n.offer_id = offer_id.to_owned();
        n.offer_policy = Some(policy);
        n.offer_classification = classification;
        let requested = change(&mut n, NegotiationEvent::CounterRequested, COUNTER_SENT)?;
        self.commit(&n, vec![offered, requested]).await?;
        Ok(n)
    }

    /// Sends the new request of `id` that takes the provider's counter-offer (again,
    /// when the poller finds the provider still OFFERED).
    pub async fn send_bound_counter_request(&self, id: &str) -> Result<(), ContractError> {
        let binding = self.binding()?.clone();
        let _claim = self
            .claims
            .claim_within(id, CALLBACK_WAIT)
            .await
            .ok_or_else(|| ContractError::Busy(id.to_owned()))?;
        let Some(n) = self.get(id)? else {
            return Err(ContractError::NotFound(id.to_owned()));
        };
        if n.state != NegotiationStatus::Requested || n.reason != COUNTER_SENT {
            return Ok(());
        }
        binding.send_counter_request(&n).await
    }

    /// The provider's FINALIZED event: only a VERIFIED negotiation takes it (again:
    /// answered as the first time).
    pub async fn receive_bound_finalized(
        &self,
        provider: &ParticipantId,
        id: &str,
    ) -> Result<Negotiation, ContractError> {
        let (_claim, mut n) = self.claim_bound(provider, id).await?;
        match n.state {
            NegotiationStatus::Finalized => Ok(n),
            NegotiationStatus::Verified => {
                let reason = finalized_reason(&n);
                self.transition(&mut n, NegotiationEvent::Finalized, reason)
                    .await?;
                Ok(n)
            }
            state => Err(ContractError::WrongState {
                id: n.id.clone(),
                state,
                what: "FINALIZED follows the consumer's verification (VERIFIED)".into(),
            }),
        }
    }

    /// The provider ends the negotiation, with its reason and the constraints that
    /// failed, in any state that is not final.
    pub async fn receive_bound_termination(
        &self,
        provider: &ParticipantId,
        id: &str,
        reason: &str,
        failed: Vec<String>,
    ) -> Result<Negotiation, ContractError> {
        let (_claim, mut n) = self.claim_bound(provider, id).await?;
        if n.state.is_final() {
            return Err(ContractError::WrongState {
                id: n.id.clone(),
                state: n.state,
                what: "a final negotiation cannot be terminated".into(),
            });
        }
        n.failed_constraints = failed.iter().take(32).map(|c| peer_text(c)).collect();
        self.transition(
            &mut n,
            NegotiationEvent::Terminated,
            &format!("the provider ended the negotiation: {}", peer_text(reason)),
        )
        .await?;
        Ok(n)
    }

    /// This node, as consumer, ends negotiation `id` (reached over the Dataspace
    /// Protocol) in any state that is not final: TERMINATED on record, then the provider
    /// is told. A provider that cannot be told now is still ended here; the error says
    /// so.
    pub async fn terminate_as_consumer(
        &self,
        id: &str,
        reason: &str,
    ) -> Result<Negotiation, ContractError> {
        let binding = self.binding()?.clone();
        let _claim = self
            .claims
            .claim_within(id, CALLBACK_WAIT)
            .await
            .ok_or_else(|| ContractError::Busy(id.to_owned()))?;
        let mut n = self
            .get(id)?
            .filter(|n| n.role == Role::Consumer)
            .ok_or_else(|| ContractError::NotFound(id.to_owned()))?;
        if !over_binding(&n.peer_address) {
            return Err(ContractError::Invalid(format!(
                "negotiation {id} runs over the Liutong peer API, which has no termination \
                 message; only negotiations with a Dataspace Protocol provider (https://…) \
                 are terminated this way"
            )));
        }
        self.transition(
            &mut n,
            NegotiationEvent::Terminated,
            &format!("terminated by this node: {reason}"),
        )
        .await?;
        binding.send_termination(&n, reason).await.map_err(|e| {
            ContractError::Unreachable(format!(
                "negotiation {id} is TERMINATED here, but the provider could not be told: {}",
                crate::base::error::ErrorKinded::message(&e)
            ))
        })?;
        Ok(n)
    }

    /// The poller's step for a negotiation with a provider over the binding: asks the
    /// provider how it stands and goes on from its answer. REQUESTED: sent again if the
    /// provider never got it (while valid); the outcome itself (an agreement, a
    /// termination with its reason) comes at the callback address. VERIFIED: the countersignature is sent
    /// again while the provider holds the agreement AGREED; FINALIZED there finalizes it
    /// here.
    pub(super) async fn recover_over_binding(
        &self,
        n: &mut Negotiation,
    ) -> Result<(), ContractError> {
        let binding = self.binding()?.clone();
        let theirs = binding.state(n).await?;
        use NegotiationStatus as S;
        match (n.state, theirs) {
            // The provider's termination message, with its reason, is on its way to
            // the callback address; a request that never hears it expires.
            (S::Requested, Some(S::Terminated)) => Ok(()),
            (_, Some(S::Terminated)) => {
                self.transition(
                    n,
                    NegotiationEvent::Terminated,
                    "the provider ended the negotiation",
                )
                .await
            }
            (S::Requested, None) if n.reason == SENT => {
                let valid_until = n
                    .request
                    .peek_json::<ContractRequest>()
                    .map_or(0, |r| r.expires_at);
                if valid_until <= now() {
                    return self
                        .transition(
                            n,
                            NegotiationEvent::Terminated,
                            "the request's validity passed before the provider received it; \
                             request the contract again",
                        )
                        .await;
                }
                tracing::info!(negotiation = %n.id, "sending the request again");
                match binding.send_request(n).await {
                    Ok(()) => Ok(()),
                    Err(e) => Err(self.request_failed(n, e).await),
                }
            }
            (S::Requested | S::Verified, None) => {
                self.transition(
                    n,
                    NegotiationEvent::Terminated,
                    "the provider no longer knows the request it had answered",
                )
                .await
            }
            (S::Requested, Some(S::Requested)) if n.reason == SENT => {
                self.transition(
                    n,
                    NegotiationEvent::Pending,
                    "received by the provider, not decided yet",
                )
                .await
            }
            (S::Requested, Some(S::Offered)) if n.reason == COUNTER_SENT => {
                tracing::info!(negotiation = %n.id, "sending the request for the counter-offer again");
                binding.send_counter_request(n).await
            }
            (S::Verified, Some(S::Agreed)) => {
                tracing::info!(negotiation = %n.id, "sending the countersigned agreement again");
                binding.send_verification(n).await
            }
            (S::Verified, Some(S::Finalized)) => {
                let reason = finalized_reason(n);
                self.transition(n, NegotiationEvent::Finalized, reason)
                    .await
            }
            // The rest waits for the provider's message at the callback address.
            _ => Ok(()),
        }
    }
}

/// The reason a consumer's negotiation keeps once its agreement is on record without
/// the provider's signature (VERIFIED, then FINALIZED): shown by `liutong contract
/// show` and written in the audit entry of each step.
pub const UNSIGNED_AGREEMENT: &str = "not signed by the provider: a plain Dataspace Protocol \
     agreement; its ODRL policy is the usage policy, and its copy cannot be checked against \
     a chunk list the provider signed";

/// The classification taken for a dataset whose provider's catalog does not classify
/// it: the most sensitive general level, the highest an agreement the provider did not
/// sign may cover.
const UNCLASSIFIED_AS: Classification = Classification::General3;

/// The reason FINALIZED carries: the unsigned agreement's note stays on record.
fn finalized_reason(n: &Negotiation) -> &'static str {
    if n.agreement.is_some() && !n.agreement_signed_by_provider() {
        UNSIGNED_AGREEMENT
    } else {
        ""
    }
}

/// The longest agreement `@id` of a plain provider's kept.
const MAX_DSP_AGREEMENT_ID: usize = 256;

impl Contracts {
    /// A plain Dataspace Protocol provider's agreement arrives: its ODRL `agreement`
    /// object, not signed by the provider (no Liutong envelope). It is taken only for
    /// data below important, whose offer this node saw in the provider's catalog, for
    /// this request's parties and dataset, with a policy this node can read, compile and
    /// enforce that only narrows the offer. Taken: recorded VERIFIED as not signed by the
    /// provider (the verification then goes with
    /// [`send_bound_verification`](Self::send_bound_verification)). Otherwise the
    /// negotiation ends, with the reason on record, and the provider is told: this node
    /// holds no data under a policy it cannot enforce.
    pub async fn receive_unsigned_agreement(
        &self,
        provider: &ParticipantId,
        id: &str,
        agreement: &serde_json::Value,
    ) -> Result<Negotiation, ContractError> {
        let (_claim, mut n) = self.claim_bound(provider, id).await?;
        let dsp_id = agreement.get("@id").and_then(serde_json::Value::as_str);
        if matches!(
            n.state,
            NegotiationStatus::Verified | NegotiationStatus::Finalized
        ) && !n.agreement_signed_by_provider()
            && n.agreement_content()
                .is_some_and(|a| a.policy.get("@id").and_then(|v| v.as_str()) == dsp_id)
        {
            // The same agreement again: answered as the first time.
            return Ok(n);
        }
        if n.state != NegotiationStatus::Requested {
            return Err(ContractError::WrongState {
                id: n.id.clone(),
                state: n.state,
                what: "an agreement answers a request (REQUESTED)".into(),
            });
        }
        let unsigned = match self.unsigned_agreement(&n, agreement) {
            Ok(a) => a,
            Err(why) => {
                let why = format!("the agreement not signed by the provider was refused: {why}");
                self.transition(&mut n, NegotiationEvent::Terminated, &why)
                    .await?;
                if let Some(binding) = self.binding.get()
                    && let Err(e) = binding.send_termination(&n, &why).await
                {
                    // The negotiation is ended here whatever the provider hears.
                    tracing::warn!(negotiation = %n.id, error = %e, "the provider was not told");
                }
                return Err(ContractError::Policy(why));
            }
        };
        n.agreement_id = Some(unsigned.agreement_id.clone());
        // This node's signature only: the record shows the provider did not sign it,
        // and the copy's sticky policy is still the one this node accepted.
        n.agreement = Some(Envelope::sign_json(
            super::agreement::AGREEMENT_PAYLOAD_TYPE,
            &unsigned,
            &self.identity.signing_key,
        )?);
        self.transition(&mut n, NegotiationEvent::Countersigned, UNSIGNED_AGREEMENT)
            .await?;
        Ok(n)
    }

    /// Checks a plain provider's agreement object for `n` and makes it this node's
    /// record; `Err`: why it is refused.
    fn unsigned_agreement(
        &self,
        n: &Negotiation,
        agreement: &serde_json::Value,
    ) -> Result<super::agreement::Agreement, String> {
        let classification = n.offer_classification.unwrap_or(UNCLASSIFIED_AS);
        if classification >= Classification::Important {
            return Err(format!(
                "offer {} is of {classification} data: {classification} data is taken only \
                 under an agreement signed by the provider (a Liutong provider's lt:agreement \
                 envelope), since the copy must be checked against the chunk list it signs",
                n.offer_id
            ));
        }
        let Some(offer_policy) = &n.offer_policy else {
            return Err(format!(
                "offer {} was not in the provider's catalog, so nothing shows that the \
                 agreement only narrows what was offered",
                n.offer_id
            ));
        };
        let dsp_id = agreement
            .get("@id")
            .and_then(serde_json::Value::as_str)
            .filter(|i| {
                !i.is_empty()
                    && i.len() <= MAX_DSP_AGREEMENT_ID
                    && !i.chars().any(|c| c.is_control() || c.is_whitespace())
            })
            .ok_or_else(|| {
                format!(
                    "its @id must be an IRI of at most {MAX_DSP_AGREEMENT_ID} characters \
                     without spaces"
                )
            })?;
        let text = |key: &str| agreement.get(key).and_then(serde_json::Value::as_str);
        let me = &self.identity.membership.participant_id;
        if text("assigner") != Some(n.peer.san_uri().as_str()) {
            return Err(format!(
                "its assigner must be the provider, {}",
                n.peer.san_uri()
            ));
        }
        if text("assignee") != Some(me.san_uri().as_str()) {
            return Err(format!(
                "its assignee must be this consumer, {}",
                me.san_uri()
            ));
        }
        let (product_id, version) = crate::catalog::product::parse_offer_id(&n.offer_id)
            .ok_or_else(|| format!("offer {} names no product version", n.offer_id))?;
        let dataset = crate::catalog::product::ProductVersion::target(product_id);
        if text("target") != Some(dataset.as_str()) {
            return Err(format!(
                "its target must be {dataset}, the dataset this consumer requested"
            ));
        }
        let context = super::consumer::analysis_context(classification);
        let compile = |what: &str, v: &serde_json::Value| {
            liutong_policy::Policy::from_odrl_value(v)
                .map_err(|e| e.to_string())
                .and_then(|p| liutong_policy::compile(p, &context).map_err(|e| e.to_string()))
                .map_err(|e| {
                    format!("{what} cannot be read or enforced by this node's policy engine: {e}")
                })
        };
        // Parties are named here by their participant IDs, in the protocol by their
        // URIs (checked above). A catalog's offer may leave its assigner implicit: the
        // provider showing it.
        let mut offer_policy = offer_policy.clone();
        if let Some(o) = offer_policy.as_object_mut() {
            o.insert("assigner".into(), n.peer.as_str().into());
        }
        let mut policy = agreement.clone();
        if let Some(p) = policy.as_object_mut() {
            p.insert("assigner".into(), n.peer.as_str().into());
            p.insert("assignee".into(), me.as_str().into());
        }
        let offer = compile("the offer's policy", &offer_policy)?;
        let agreed = compile("its policy", &policy)?;
        if !liutong_policy::implies(&agreed, &offer) {
            return Err(format!(
                "its policy grants more than the offer: {}",
                liutong_policy::narrowing_gaps(&agreed, &offer).join("; ")
            ));
        }
        let agreed_at = text("timestamp")
            .and_then(|t| {
                time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
            })
            .map_or_else(now, |t| t.unix_timestamp());
        Ok(super::agreement::Agreement {
            agreement_id: local_agreement_id(&n.peer, dsp_id),
            negotiation_id: n.id.clone(),
            provider: n.peer.clone(),
            consumer: me.clone(),
            offer_id: n.offer_id.clone(),
            product_id: product_id.to_owned(),
            version,
            // No signed hash or chunk list: the copy is recorded as unverified.
            product_sha256: String::new(),
            size: 0,
            chunk_size: 0,
            chunks_sha256: String::new(),
            derived: false,
            classification,
            purpose: n.purpose.clone(),
            // As the provider sent it but for the parties' form: its `@id` names the
            // agreement to the provider.
            policy,
            agreed_at,
            approved_by: None,
        })
    }
}

/// This node's ID of a plain provider's agreement: the provider's `@id` is any IRI,
/// while an agreement ID here names files and keys, so it is derived from the provider
/// and that `@id` (the `@id` itself stays in the agreement's policy).
fn local_agreement_id(provider: &ParticipantId, dsp_id: &str) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(format!("{provider}\0{dsp_id}").as_bytes());
    format!("agr-dsp-{}", &hex::encode(digest)[..32])
}
