//! The provider's steps: receiving a signed contract request and checking it (signature,
//! validity, nonce, offer, policy), agreeing or waiting for a person's approval,
//! approval and rejection, answering how a request stands, and receiving the consumer's
//! countersignature; also the finalized agreement other concerns look up as provider.

use liutong_policy::{Action, CompiledPolicy, PolicyType, Request, Scope, State as PolicyState};

use crate::audit::log::{Event, EventKind};
use crate::base::clock;
use crate::base::clock::now;
use crate::base::random::new_id;
use crate::catalog::product::ProductVersion;
use crate::catalog::requester_of;
use crate::identity::{Envelope, MemberRole, Membership, ParticipantId};

use super::agreement::{
    AGREEMENT_PAYLOAD_TYPE, Agreement, AgreementError, ContractRequest, REQUEST_PAYLOAD_TYPE, Role,
};
use super::contracts::Contracts;
use super::negotiation::{ContractError, Negotiation, change, event};
use super::state::{self, NegotiationEvent, NegotiationStatus};
use super::store::NONCES;

/// Longest a contract request may be valid; a replay after that is refused by expiry,
/// before it by its nonce.
const MAX_REQUEST_LIFETIME: i64 = 600;
/// Clock difference tolerated between nodes.
const CLOCK_SKEW: i64 = 60;

/// Which agreements get a delivery made for them alone (a derived delivery: masked,
/// watermarked or both), decided when the agreement is signed, since the agreement
/// then carries keyed source hashes rather than plain ones (see
/// [`Agreement::derived`]). The delivery side implements it; the contract side only
/// asks.
pub trait DeliveryForm: Send + Sync {
    /// Whether deliveries of `product` under `policy` are derived. Blocking: it may
    /// read the product.
    fn derived(&self, product: &ProductVersion, policy: &liutong_policy::Policy) -> bool;
}

/// Whether a policy carries mask duties.
fn masks(policy: &liutong_policy::Policy) -> bool {
    policy
        .duties()
        .any(|d| matches!(d, liutong_policy::Duty::Mask { .. }))
}

/// How long a countersignature waits for another step on its negotiation (an expiry
/// being decided) before it is answered as busy.
const COUNTERSIGN_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

impl Contracts {
    /// The finalized agreement this node made as the provider with `caller` as the
    /// consumer: opened with this node's own key (the current one or an earlier one, see
    /// [`rotation`](crate::rotation)), so a stored agreement that was altered is
    /// refused. Transfers, queries, receipts and usage notices all ask this.
    pub fn consumer_agreement(
        &self,
        caller: &ParticipantId,
        agreement_id: &str,
    ) -> Result<Agreement, AgreementError> {
        let n = self.finalized(Role::Provider, agreement_id)?;
        let envelope = n.agreement.as_ref().ok_or_else(|| {
            AgreementError::Damaged(format!(
                "negotiation {} is FINALIZED but carries no agreement",
                n.id
            ))
        })?;
        let agreement: Agreement = self.open_own(envelope).map_err(|e| {
            AgreementError::Damaged(format!("the stored agreement {agreement_id}: {e}"))
        })?;
        if agreement.consumer != *caller {
            return Err(AgreementError::NotConsumer {
                agreement_id: agreement_id.to_owned(),
                caller: caller.clone(),
            });
        }
        Ok(agreement)
    }

    /// Opens an agreement this node signed, with its current key or, for an agreement
    /// signed before a key rotation, an earlier one.
    fn open_own(&self, envelope: &Envelope) -> Result<Agreement, crate::identity::EnvelopeError> {
        let current = envelope.open_json(
            AGREEMENT_PAYLOAD_TYPE,
            &self.identity.signing_key.public_key(),
        );
        if current.is_ok() || self.identity.previous_credentials.is_empty() {
            return current;
        }
        crate::identity::membership::previous_keys(&self.identity.previous_credentials)
            .iter()
            .find_map(|key| envelope.open_json(AGREEMENT_PAYLOAD_TYPE, key).ok())
            .map_or(current, Ok)
    }

    /// The provider receives a signed contract request from `caller`.
    pub async fn receive_request(
        &self,
        caller: &Membership,
        envelope: Envelope,
    ) -> Result<Negotiation, ContractError> {
        // A node the authority no longer lets provide takes no new contract, whatever
        // its catalog still holds.
        self.require_own_role(MemberRole::Provider, "answering a contract request")
            .map_err(|e| ContractError::Forbidden(e.to_string()))?;
        let request: ContractRequest = envelope
            .open_json(REQUEST_PAYLOAD_TYPE, &caller.signing_key)
            .map_err(|e| {
                ContractError::Signature(format!(
                    "the contract request is not signed by the caller: {e}"
                ))
            })?;
        self.decide(caller, request, envelope, true, false).await
    }

    /// [`receive_request`](Self::receive_request) for a binding that can carry a
    /// counter-offer (the Dataspace Protocol): a request naming an offer this catalog
    /// does not hold, for a product whose current offer `caller` may see, is answered
    /// with that offer (OFFERED) instead of being refused.
    pub async fn receive_request_countering(
        &self,
        caller: &Membership,
        envelope: Envelope,
        signed: bool,
    ) -> Result<Negotiation, ContractError> {
        self.require_own_role(MemberRole::Provider, "answering a contract request")
            .map_err(|e| ContractError::Forbidden(e.to_string()))?;
        let request: ContractRequest = if signed {
            envelope
                .open_json(REQUEST_PAYLOAD_TYPE, &caller.signing_key)
                .map_err(|e| {
                    ContractError::Signature(format!(
                        "the contract request is not signed by the caller: {e}"
                    ))
                })?
        } else {
            envelope
                .peek_json()
                .map_err(|e| ContractError::Invalid(format!("the contract request: {e}")))?
        };
        self.decide(caller, request, envelope, signed, true).await
    }

    /// The provider receives a contract request that `caller` did not sign: a plain
    /// Dataspace Protocol consumer's. It is decided exactly as a signed one, kept in an
    /// envelope without signatures so that the record shows the request was not signed
    /// by the peer; an offer of important data takes only a signed request, since its
    /// agreement must carry the consumer's signature too.
    pub async fn receive_unsigned_request(
        &self,
        caller: &Membership,
        request: ContractRequest,
    ) -> Result<Negotiation, ContractError> {
        self.require_own_role(MemberRole::Provider, "answering a contract request")
            .map_err(|e| ContractError::Forbidden(e.to_string()))?;
        let envelope = Envelope {
            payload_type: REQUEST_PAYLOAD_TYPE.to_owned(),
            payload: serde_json::to_vec(&request).expect("contract requests serialize"),
            signatures: Vec::new(),
        };
        self.decide(caller, request, envelope, false, false).await
    }

    /// Checks a request (`signed`: its signature by `caller` was verified) and decides
    /// it: refused, waiting for a person's approval, or agreed.
    async fn decide(
        &self,
        caller: &Membership,
        request: ContractRequest,
        envelope: Envelope,
        signed: bool,
        counter: bool,
    ) -> Result<Negotiation, ContractError> {
        if request.consumer != caller.participant_id {
            return Err(ContractError::Forbidden(format!(
                "the request names consumer {}, but the caller is {}",
                request.consumer, caller.participant_id
            )));
        }
        if request.provider != self.identity.membership.participant_id {
            return Err(ContractError::Invalid(format!(
                "provider: the request is addressed to {}, but this node is {}",
                request.provider, self.identity.membership.participant_id
            )));
        }
        // Every field is checked before anything is looked up or stored.
        let validity = request.check_fields()?;
        let t = now();
        if validity.expires_at.unix() <= t {
            return Err(ContractError::Expired(format!(
                "expired at {}",
                crate::base::format::format_unix(request.expires_at)
            )));
        }
        let lifetime = validity.lifetime();
        if request.created_at > t.saturating_add(CLOCK_SKEW)
            || !(0..=MAX_REQUEST_LIFETIME).contains(&lifetime)
        {
            return Err(ContractError::Expired(format!(
                "has an invalid validity (created {}, expires {}); at most {MAX_REQUEST_LIFETIME} s",
                request.created_at, request.expires_at
            )));
        }
        let product = match self
            .catalog
            .offer(&request.offer_id, caller, clock::now_utc())
        {
            Ok(product) => product,
            Err(_) if counter => {
                let current = self
                    .current_offer(&request.offer_id, caller)
                    .ok_or_else(|| ContractError::UnknownOffer(request.offer_id.clone()))?;
                return self.offer_instead(caller, request, envelope, current).await;
            }
            Err(_) => return Err(ContractError::UnknownOffer(request.offer_id.clone())),
        };
        let policy = self
            .catalog
            .policy_of(&product)
            .map_err(|e| ContractError::Policy(e.to_string()))?
            .ok_or_else(|| ContractError::UnknownOffer(request.offer_id.clone()))?;
        if !signed && product.classification >= liutong_policy::Classification::Important {
            return Err(ContractError::Forbidden(format!(
                "offer {} is of {} data: its agreement must be signed by both parties, so \
                 the request must be signed too; send it as a Liutong contract request \
                 envelope signed with your node's key",
                request.offer_id, product.classification
            )));
        }
        // The nonce is stored only now that the request passed every check that writes
        // nothing, and before anything about it is stored: a refused request leaves no
        // trace, and a replay of an accepted one is refused here until the request
        // expires, after that by the expiry check above (and the sweep removes the nonce).
        if !self.remember_nonce(&request)? {
            return Err(ContractError::Replay(request.nonce));
        }
        if self.get(&request.negotiation_id)?.is_some() {
            return Err(ContractError::Exists(request.negotiation_id));
        }

        let n = Negotiation {
            id: request.negotiation_id.clone(),
            role: Role::Provider,
            peer: caller.participant_id.clone(),
            peer_address: String::new(),
            offer_id: request.offer_id.clone(),
            purpose: request.purpose.clone(),
            state: NegotiationStatus::Requested,
            reason: String::new(),
            failed_constraints: Vec::new(),
            request: envelope,
            offer_policy: None,
            offer_classification: None,
            agreement: None,
            agreement_id: None,
            created_at: t,
            updated_at: t,
        };
        self.evaluate(caller, n, &request, &product, &policy, Vec::new())
            .await
    }

    /// Decides the request of `n` (REQUESTED, not stored yet or stored with an earlier
    /// state): refused, waiting for a person's approval, or agreed. `earlier`: events of
    /// `n` not committed yet, which go first into its commit.
    async fn evaluate(
        &self,
        caller: &Membership,
        mut n: Negotiation,
        request: &ContractRequest,
        product: &ProductVersion,
        policy: &CompiledPolicy,
        earlier: Vec<Event>,
    ) -> Result<Negotiation, ContractError> {
        let with_earlier = |events: Vec<Event>| {
            let mut all = earlier.clone();
            all.extend(events);
            all
        };
        let decision = crate::catalog::evaluate_use_or_aggregate(
            policy,
            &Request {
                scope: Scope::Negotiation,
                action: Action::Use,
                requester: requester_of(caller),
                purpose: Some(request.purpose.clone()),
            },
            &PolicyState::initial(clock::now_utc()),
        );
        let explanation = decision.explain();
        let decision_event = event(
            EventKind::PolicyDecision,
            &n,
            format!(
                "negotiation scope, offer {}, purpose {}: {explanation}",
                request.offer_id, request.purpose
            ),
        );
        self.alerts
            .policy_decision(
                "negotiation",
                &caller.participant_id,
                decision.is_permit(),
                &explanation,
            )
            .await;

        // The decision is logged in the same commit as the state it leads to.
        if decision.is_permit()
            && let Some(why) = self.spent_agreement(caller, &request.offer_id).await?
        {
            n.failed_constraints = vec![why.clone()];
            let refused = event(
                EventKind::PolicyDecision,
                &n,
                format!(
                    "negotiation scope, offer {}, purpose {}: refused: {why}",
                    request.offer_id, request.purpose
                ),
            );
            let change = change(&mut n, NegotiationEvent::Rejected, &why)?;
            self.commit(&n, with_earlier(vec![refused, change])).await?;
            return Err(ContractError::Denied {
                explanation: why,
                failed: n.failed_constraints,
            });
        }
        if !decision.is_permit() {
            n.failed_constraints = decision.failed.iter().map(|f| f.reason.clone()).collect();
            let change = change(&mut n, NegotiationEvent::Rejected, &explanation)?;
            self.commit(&n, with_earlier(vec![decision_event, change]))
                .await?;
            return Err(ContractError::Denied {
                explanation,
                failed: n.failed_constraints,
            });
        }
        if decision.approval_required {
            let change = change(
                &mut n,
                NegotiationEvent::Pending,
                "waiting for a person's approval at the provider (important data)",
            )?;
            self.commit(&n, with_earlier(vec![decision_event, change]))
                .await?;
            return Ok(n);
        }
        if let Err(e) = self
            .agree(
                &mut n,
                product,
                policy,
                None,
                with_earlier(vec![decision_event.clone()]),
            )
            .await
        {
            // The decision stays on record even when no agreement could be made.
            if let Err(logged) = self.audit.append(&decision_event).await {
                tracing::error!(error = %logged, "cannot log the policy decision");
            }
            return Err(e);
        }
        // Pause point `negotiation.provider.agreed`: AGREED (with the signed agreement) is
        // durable, the consumer has not been answered.
        crate::pause::at("negotiation.provider.agreed").await;
        Ok(n)
    }

    /// Stores the nonce of `request` (checked: fixed length) until the request expires;
    /// false if it is already held, i.e. the request is a replay.
    fn remember_nonce(&self, request: &ContractRequest) -> Result<bool, ContractError> {
        let key = format!("{}/{}", request.consumer, request.nonce);
        Ok(self
            .storage
            .insert_new(NONCES, key.as_bytes(), &request.expires_at.to_be_bytes())?)
    }

    /// Removes the nonces of requests that expired by `now`: a replay of one is refused
    /// by its expiry, so its nonce is no longer needed. Returns how many were removed.
    pub fn sweep_nonces(&self, now: i64) -> Result<usize, ContractError> {
        let expired: Vec<Vec<u8>> = self
            .storage
            .scan_prefix(NONCES, b"")?
            .into_iter()
            .filter(|(_, v)| {
                // A value that is not a time is no use to the replay check either.
                <[u8; 8]>::try_from(v.as_slice()).map_or(true, |b| i64::from_be_bytes(b) <= now)
            })
            .map(|(k, _)| k)
            .collect();
        let removed = expired.len();
        if removed > 0 {
            self.storage.apply(
                NONCES,
                expired
                    .into_iter()
                    .map(crate::storage::Write::Delete)
                    .collect(),
            )?;
        }
        Ok(removed)
    }

    /// Signs the agreement on `product` (the version `n`'s offer names, as the caller read
    /// it from the catalog): the offer's policy, narrowed to this consumer. `events` (the
    /// decision that led here) are committed with it.
    async fn agree(
        &self,
        n: &mut Negotiation,
        product: &ProductVersion,
        offer: &CompiledPolicy,
        approved_by: Option<String>,
        mut events: Vec<Event>,
    ) -> Result<(), ContractError> {
        self.check_guardrails(&n.peer, product.classification, approved_by.as_deref())
            .map_err(ContractError::Forbidden)?;
        let agreement_id = new_id("agr")?;
        let mut policy = offer.policy().clone();
        policy.policy_type = PolicyType::Agreement;
        policy.uid = format!("urn:liutong:agreement:{agreement_id}");
        policy.assignee = Some(
            n.peer
                .as_str()
                .parse()
                .map_err(|e: String| ContractError::Invalid(e))?,
        );
        let compiled = liutong_policy::compile(
            policy,
            &self.catalog.compile_context(product.classification),
        )
        .map_err(|e| ContractError::Policy(e.to_string()))?;
        if !liutong_policy::implies(&compiled, offer) {
            return Err(ContractError::Policy(format!(
                "the agreement would not narrow its offer: {}",
                liutong_policy::narrowing_gaps(&compiled, offer).join("; ")
            )));
        }
        let chunks_sha256 = crate::catalog::product::chunk_list_sha256(&product.chunk_hashes)
            .ok_or_else(|| {
                ContractError::Invalid(format!("product {} has a damaged chunk list", n.offer_id))
            })?;
        let derived = self.derived(product, compiled.policy()).await?;
        let (product_sha256, chunks_sha256) = if derived {
            let key = super::agreement::agreement_key(&self.storage, &agreement_id)
                .await
                .map_err(|e| match e {
                    super::agreement::KeyError::Storage(e) => ContractError::Storage(e),
                    other => ContractError::Invalid(other.to_string()),
                })?;
            super::agreement::source_hashes(&key, &product.sha256, &chunks_sha256)
        } else {
            (product.sha256.clone(), chunks_sha256)
        };
        let agreement = Agreement {
            agreement_id: agreement_id.clone(),
            negotiation_id: n.id.clone(),
            provider: self.identity.membership.participant_id.clone(),
            consumer: n.peer.clone(),
            offer_id: n.offer_id.clone(),
            product_id: product.product_id.clone(),
            version: product.version,
            product_sha256,
            size: product.size,
            chunk_size: product.chunk_size,
            chunks_sha256,
            derived,
            classification: product.classification,
            purpose: n.purpose.clone(),
            policy: compiled.policy().to_odrl(),
            agreed_at: now(),
            approved_by,
        };
        n.agreement = Some(Envelope::sign_json(
            AGREEMENT_PAYLOAD_TYPE,
            &agreement,
            &self.identity.signing_key,
        )?);
        n.agreement_id = Some(agreement_id);
        events.push(change(n, NegotiationEvent::Agreed, "")?);
        self.commit(n, events).await
    }

    /// Whether the deliveries of `product` under `policy` are derived ([`DeliveryForm`]).
    async fn derived(
        &self,
        product: &ProductVersion,
        policy: &liutong_policy::Policy,
    ) -> Result<bool, ContractError> {
        let Some(form) = self.delivery_form.get().cloned() else {
            return Ok(masks(policy));
        };
        let (product, policy) = (product.clone(), policy.clone());
        tokio::task::spawn_blocking(move || form.derived(&product, &policy))
            .await
            .map_err(|e| ContractError::Invalid(format!("the delivery form task failed: {e}")))
    }

    /// A person approves a request waiting for approval (provider side).
    pub async fn approve(&self, id: &str, by: &str) -> Result<Negotiation, ContractError> {
        let mut n = self
            .get(id)?
            .ok_or_else(|| ContractError::NotFound(id.to_owned()))?;
        if n.role != Role::Provider || state::next(n.state, NegotiationEvent::Agreed).is_err() {
            return Err(ContractError::WrongState {
                id: n.id,
                state: n.state,
                what: "only a request waiting at this provider can be approved".into(),
            });
        }
        // The requester must still be a member, and the offer still there.
        let caller = self
            .trust
            .member(&n.peer, now())
            .map_err(|e| ContractError::Forbidden(e.to_string()))?;
        // The offer must still be there and its policy still valid under this node's
        // guardrails (they may have been narrowed since the request came); a refusal is
        // logged and the request keeps waiting, for a rejection with a reason.
        let offered =
            self.catalog
                .offer(&n.offer_id, &caller, clock::now_utc())
                .and_then(|product| {
                    let policy = self.catalog.policy_of(&product)?.ok_or_else(|| {
                        crate::catalog::CatalogError::NotFound(n.offer_id.clone())
                    })?;
                    Ok((product, policy))
                });
        let (product, policy) = match offered {
            Ok(offered) => offered,
            Err(e) => {
                let refused = match e {
                    crate::catalog::CatalogError::NotFound(_) => {
                        ContractError::UnknownOffer(n.offer_id.clone())
                    }
                    other => ContractError::Policy(format!(
                        "offer {} cannot be agreed under this node's current guardrails: {other}; \
                     reject the request with a reason",
                        n.offer_id
                    )),
                };
                let decision = event(
                    EventKind::PolicyDecision,
                    &n,
                    format!("approval by {by} refused: {refused}"),
                );
                self.audit
                    .append(&decision)
                    .await
                    .map_err(|e| ContractError::Audit(e.to_string()))?;
                return Err(refused);
            }
        };
        self.agree(&mut n, &product, &policy, Some(by.to_owned()), Vec::new())
            .await?;
        Ok(n)
    }

    /// A person rejects a request waiting for approval (provider side).
    pub async fn reject(&self, id: &str, reason: &str) -> Result<Negotiation, ContractError> {
        if reason.trim().is_empty() {
            return Err(ContractError::Invalid(
                "reason: say why; the consumer reads it".into(),
            ));
        }
        let mut n = self
            .get(id)?
            .ok_or_else(|| ContractError::NotFound(id.to_owned()))?;
        if n.role != Role::Provider || state::next(n.state, NegotiationEvent::Rejected).is_err() {
            return Err(ContractError::WrongState {
                id: n.id,
                state: n.state,
                what: "only a request waiting at this provider can be rejected".into(),
            });
        }
        self.transition(
            &mut n,
            NegotiationEvent::Rejected,
            &format!("rejected by the provider: {}", reason.trim()),
        )
        .await?;
        Ok(n)
    }

    /// The consumer asks how its negotiation stands.
    pub fn state_for(&self, caller: &Membership, id: &str) -> Result<Negotiation, ContractError> {
        let n = self
            .get(id)?
            .ok_or_else(|| ContractError::NotFound(id.to_owned()))?;
        if n.role != Role::Provider || n.peer != caller.participant_id {
            // Other participants' negotiations are not theirs to see.
            return Err(ContractError::NotFound(id.to_owned()));
        }
        Ok(n)
    }

    /// Claims `caller`'s negotiation `id` on this provider, waiting a while for a step
    /// already at work on it, and reads it again under the claim: an expiry may have
    /// ended it in between.
    async fn claim_callers(
        &self,
        caller: &Membership,
        id: &str,
    ) -> Result<(crate::recovery::Claim, Negotiation), ContractError> {
        self.state_for(caller, id)?;
        let claim = self
            .claims
            .claim_within(id, COUNTERSIGN_WAIT)
            .await
            .ok_or_else(|| ContractError::Busy(id.to_owned()))?;
        Ok((claim, self.state_for(caller, id)?))
    }

    /// The consumer returns the agreement countersigned (provider side).
    pub async fn receive_countersigned(
        &self,
        caller: &Membership,
        id: &str,
        envelope: Envelope,
    ) -> Result<Negotiation, ContractError> {
        let (_claim, mut n) = self.claim_callers(caller, id).await?;
        if n.state == NegotiationStatus::Finalized {
            // A retry of a Verify that already went through (its answer was lost) is
            // answered as the first one was, provided it is the same countersigned
            // agreement: the same payload and the same signatures.
            let ours = n
                .agreement
                .as_ref()
                .expect("FINALIZED negotiations carry their agreement");
            if envelope != *ours {
                return Err(ContractError::Signature(
                    "the countersigned agreement is not the one this provider finalized \
                 (another payload or other signatures)"
                        .into(),
                ));
            }
            return Ok(n);
        }
        if state::next(n.state, NegotiationEvent::CountersignatureVerified).is_err() {
            return Err(ContractError::WrongState {
                id: n.id,
                state: n.state,
                what: "only an AGREED negotiation can be verified".into(),
            });
        }
        let ours = n
            .agreement
            .as_ref()
            .expect("AGREED negotiations carry their agreement");
        if envelope.payload_type != ours.payload_type || envelope.payload != ours.payload {
            return Err(ContractError::Signature(
                "the countersigned agreement is not the agreement this provider signed (modified)"
                    .into(),
            ));
        }
        // This node's own signature, as it made it (Ed25519 signatures are deterministic,
        // and the payload is the one it signed), so no need to verify it again.
        if !ours
            .signatures
            .iter()
            .all(|s| envelope.signatures.contains(s))
        {
            return Err(ContractError::Signature(
                "the provider's signature is missing from the countersigned agreement".into(),
            ));
        }
        envelope.verify(&caller.signing_key).map_err(|e| {
            ContractError::Signature(format!("the consumer's countersignature: {e}"))
        })?;
        n.agreement = Some(envelope);
        // Both steps in one commit: the record is never left VERIFIED at the provider.
        let verified = change(&mut n, NegotiationEvent::CountersignatureVerified, "")?;
        let finalized = change(&mut n, NegotiationEvent::Finalized, "")?;
        self.commit(&n, vec![verified, finalized]).await?;
        // Pause point `negotiation.provider.finalized`: FINALIZED is durable, the consumer
        // has not been answered.
        crate::pause::at("negotiation.provider.finalized").await;
        Ok(n)
    }
}

impl Contracts {
    /// A consumer that does not sign (a plain Dataspace Protocol consumer) confirms the
    /// provider's agreement: AGREED becomes FINALIZED, the agreement carrying the
    /// provider's signature only, and the record says so. A negotiation whose request
    /// was signed takes only the countersigned agreement
    /// ([`receive_countersigned`](Self::receive_countersigned)). A repeated
    /// confirmation of a FINALIZED negotiation is answered as the first.
    pub async fn receive_unsigned_verification(
        &self,
        caller: &Membership,
        id: &str,
    ) -> Result<Negotiation, ContractError> {
        let (_claim, mut n) = self.claim_callers(caller, id).await?;
        if n.signed_by_peer() {
            return Err(ContractError::Signature(format!(
                "negotiation {id} began with a signed request, so its agreement must come \
                 back countersigned with the same key"
            )));
        }
        if n.state == NegotiationStatus::Finalized {
            return Ok(n);
        }
        if state::next(n.state, NegotiationEvent::CountersignatureVerified).is_err() {
            return Err(ContractError::WrongState {
                id: n.id,
                state: n.state,
                what: "only an AGREED negotiation can be verified".into(),
            });
        }
        let verified = change(
            &mut n,
            NegotiationEvent::CountersignatureVerified,
            "confirmed by a consumer that does not sign: the agreement carries the \
             provider's signature only",
        )?;
        let finalized = change(
            &mut n,
            NegotiationEvent::Finalized,
            "not signed by the consumer",
        )?;
        self.commit(&n, vec![verified, finalized]).await?;
        Ok(n)
    }

    /// The consumer ends its negotiation with this provider, with its reason, in any
    /// state that is not final.
    pub async fn terminate_by_consumer(
        &self,
        caller: &Membership,
        id: &str,
        reason: &str,
    ) -> Result<Negotiation, ContractError> {
        let (_claim, mut n) = self.claim_callers(caller, id).await?;
        let reason = format!(
            "terminated by the consumer: {}",
            super::negotiation::peer_text(reason)
        );
        self.transition(&mut n, NegotiationEvent::Terminated, &reason)
            .await?;
        Ok(n)
    }

    /// This provider ends negotiation `id`, with `reason`, in any state that is not
    /// final (a consumer that cannot be told of its outcome safely, for one).
    pub async fn terminate_as_provider(
        &self,
        id: &str,
        reason: &str,
    ) -> Result<Negotiation, ContractError> {
        let _claim = self
            .claims
            .claim_within(id, COUNTERSIGN_WAIT)
            .await
            .ok_or_else(|| ContractError::Busy(id.to_owned()))?;
        let mut n = self
            .get(id)?
            .filter(|n| n.role == Role::Provider)
            .ok_or_else(|| ContractError::NotFound(id.to_owned()))?;
        self.transition(&mut n, NegotiationEvent::Terminated, reason)
            .await?;
        Ok(n)
    }
}

impl Contracts {
    /// Provider side: an earlier FINALIZED agreement of `caller` on `offer_id` whose use
    /// count is spent while its other constraints (window, purpose) still hold, described. A new
    /// agreement on the same offer would start a fresh count at once and so undo the
    /// earlier one's limit; it is refused until the earlier agreement ends.
    async fn spent_agreement(
        &self,
        caller: &Membership,
        offer_id: &str,
    ) -> Result<Option<String>, ContractError> {
        let Some(gate) = self.gate.get().and_then(std::sync::Weak::upgrade) else {
            return Ok(None);
        };
        // Only an agreement whose policy counts uses can have spent its count: the index
        // names those, so this reads none of the member's other agreements.
        let counted = self
            .counted_on_offer(&caller.participant_id, offer_id)
            .await?;
        for n in counted {
            let Some(agreement) = n.agreement_content() else {
                continue;
            };
            if gate.delivery_allowed(&agreement).is_err() {
                continue;
            }
            let Ok(policy) = self.compiled_policy(&agreement) else {
                continue;
            };
            let uses = gate.uses(&agreement.agreement_id)?;
            let request = agreement.request(Scope::Use, Action::Use, caller);
            let now = crate::catalog::evaluate_use_or_aggregate(
                &policy,
                &request,
                &agreement.policy_state(uses),
            );
            let fresh = crate::catalog::evaluate_use_or_aggregate(
                &policy,
                &request,
                &agreement.policy_state(0),
            );
            if fresh.is_permit() && !now.is_permit() {
                return Ok(Some(format!(
                    "agreement {} on offer {offer_id} has spent its use count ({uses} uses: {}) \
                     and is otherwise still in force; a new agreement on the same offer is \
                     refused until it ends, so that its count holds",
                    agreement.agreement_id,
                    now.explain()
                )));
            }
        }
        Ok(None)
    }
}

impl Contracts {
    /// The counter-offer for a request naming `offer_id`: the current offer of the same
    /// product, when `offer_id` is not it and `caller` may see it.
    fn current_offer(&self, offer_id: &str, caller: &Membership) -> Option<String> {
        let (product, _) = crate::catalog::product::parse_offer_id(offer_id)?;
        let latest = self.catalog.products.latest(product).ok()??;
        let current = latest.offer_id()?;
        if current == offer_id {
            return None;
        }
        self.catalog
            .offer(&current, caller, clock::now_utc())
            .ok()
            .map(|_| current)
    }

    /// Answers `request` with the counter-offer `current` (OFFERED, on record): the
    /// consumer may answer it with a new request for it.
    async fn offer_instead(
        &self,
        caller: &Membership,
        request: ContractRequest,
        envelope: Envelope,
        current: String,
    ) -> Result<Negotiation, ContractError> {
        if !self.remember_nonce(&request)? {
            return Err(ContractError::Replay(request.nonce));
        }
        if self.get(&request.negotiation_id)?.is_some() {
            return Err(ContractError::Exists(request.negotiation_id));
        }
        let t = now();
        let mut n = Negotiation {
            id: request.negotiation_id.clone(),
            role: Role::Provider,
            peer: caller.participant_id.clone(),
            peer_address: String::new(),
            offer_id: current.clone(),
            purpose: request.purpose.clone(),
            state: NegotiationStatus::Requested,
            reason: String::new(),
            failed_constraints: Vec::new(),
            request: envelope,
            offer_policy: None,
            offer_classification: None,
            agreement: None,
            agreement_id: None,
            created_at: t,
            updated_at: t,
        };
        let offered = change(
            &mut n,
            NegotiationEvent::Offered,
            &format!(
                "counter-offer {current}: the request named offer {}, which this catalog \
                 does not hold; {current} is the product's current offer",
                request.offer_id
            ),
        )?;
        self.commit(&n, vec![offered]).await?;
        Ok(n)
    }

    /// The consumer answers this provider's counter-offer with a new request for it
    /// (`signed`: its envelope signed by `caller`; otherwise a plain DSP consumer's,
    /// kept without signatures). Decided as a first request is.
    pub async fn receive_counter_request(
        &self,
        caller: &Membership,
        id: &str,
        envelope: Envelope,
        signed: bool,
    ) -> Result<Negotiation, ContractError> {
        self.require_own_role(MemberRole::Provider, "answering a contract request")
            .map_err(|e| ContractError::Forbidden(e.to_string()))?;
        let (_claim, mut n) = self.claim_callers(caller, id).await?;
        if n.state != NegotiationStatus::Offered {
            return Err(ContractError::WrongState {
                id: n.id,
                state: n.state,
                what: "a request answering a counter-offer needs it OFFERED".into(),
            });
        }
        if signed != n.signed_by_peer() {
            return Err(ContractError::Signature(format!(
                "negotiation {id} began with a{} request; its answer to the counter-offer \
                 must be {} too",
                if n.signed_by_peer() {
                    " signed"
                } else {
                    "n unsigned"
                },
                if n.signed_by_peer() {
                    "signed"
                } else {
                    "unsigned"
                }
            )));
        }
        let request: ContractRequest = if signed {
            envelope
                .open_json(REQUEST_PAYLOAD_TYPE, &caller.signing_key)
                .map_err(|e| {
                    ContractError::Signature(format!(
                        "the contract request is not signed by the caller: {e}"
                    ))
                })?
        } else {
            envelope
                .peek_json()
                .map_err(|e| ContractError::Invalid(format!("the contract request: {e}")))?
        };
        request.check_fields()?;
        if request.negotiation_id != n.id
            || request.consumer != caller.participant_id
            || request.provider != self.identity.membership.participant_id
        {
            return Err(ContractError::Invalid(format!(
                "the request must name negotiation {id}, consumer {} and provider {}",
                caller.participant_id, self.identity.membership.participant_id
            )));
        }
        if request.offer_id != n.offer_id {
            return Err(ContractError::Invalid(format!(
                "the request names offer {}, but the counter-offer is {}",
                request.offer_id, n.offer_id
            )));
        }
        if request.expires_at <= now() {
            return Err(ContractError::Expired(format!(
                "expired at {}",
                crate::base::format::format_unix(request.expires_at)
            )));
        }
        let product = self
            .catalog
            .offer(&n.offer_id, caller, clock::now_utc())
            .map_err(|_| ContractError::UnknownOffer(n.offer_id.clone()))?;
        let policy = self
            .catalog
            .policy_of(&product)
            .map_err(|e| ContractError::Policy(e.to_string()))?
            .ok_or_else(|| ContractError::UnknownOffer(n.offer_id.clone()))?;
        if !signed && product.classification >= liutong_policy::Classification::Important {
            return Err(ContractError::Forbidden(format!(
                "offer {} is of {} data: the request must be signed",
                n.offer_id, product.classification
            )));
        }
        if !self.remember_nonce(&request)? {
            return Err(ContractError::Replay(request.nonce));
        }
        n.request = envelope;
        n.purpose = request.purpose.clone();
        let accepted = change(
            &mut n,
            NegotiationEvent::CounterRequested,
            "the consumer requested the counter-offer",
        )?;
        self.evaluate(caller, n, &request, &product, &policy, vec![accepted])
            .await
    }
}
