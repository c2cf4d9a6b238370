//! Contract negotiation: a consumer's signed request, the provider's policy decision,
//! a person's approval where the guardrails ask for one, the provider's signed
//! agreement and the consumer's countersignature. The agreement with both signatures
//! is the digital contract (数字合约): it fixes the product version and its hash, the
//! policy, the parties, the purpose and the time.
//!
//! States follow the Dataspace Protocol: REQUESTED → AGREED → VERIFIED → FINALIZED, or
//! TERMINATED with a reason. Over the Dataspace Protocol a provider may answer a request
//! for an offer its catalog does not hold (another version of a product the consumer
//! may see) with the product's current offer: OFFERED, and the consumer's new request
//! for it makes the negotiation REQUESTED again. (ACCEPTED is named but not used: a
//! counter-offer is taken by a new request, signed again.)
//!
//! Both sides keep each negotiation in storage, durable before they answer, and log
//! every state change and policy decision in the audit log. A step's record and its
//! audit entries are committed together, entries first, by one flush (see
//! [`AuditLog::append_with`](crate::audit::log::AuditLog::append_with)). The consumer
//! has its request on record (REQUESTED) before it sends it, and its countersignature
//! (VERIFIED) before it sends that.
//!
//! A step whose next step did not happen (the answer was lost, a node crashed) is taken
//! up again from its record by [`Contracts::poll_pending`]: the consumer asks how its request
//! stands (and sends it again, byte for byte, if the provider never got it and it is
//! still valid: 5 minutes from when it was made) and sends its countersignature again;
//! both are answered idempotently. Only the provider's answer about the step, or
//! `recovery.expire_after` once this process tried the step, ends a negotiation that
//! way: a request (also one waiting for a person's approval) and a provider's AGREED
//! that is never countersigned are TERMINATED, with the reason recorded. A
//! countersigned agreement does not expire: the provider may hold it FINALIZED.

mod agreement;
mod cache;
mod consumer;
mod consumer_binding;
mod contracts;
mod gate;
pub mod guardrails;
mod locks;
mod negotiation;
mod provider;
mod resume;
mod state;
mod store;
pub use agreement::{
    AGREEMENT_PAYLOAD_TYPE, AgreedProductError, Agreement, AgreementError, ContractRequest,
    KeyError, REQUEST_PAYLOAD_TYPE, Role, agreement_key, source_hashes, stored_agreement_key,
};
pub use consumer_binding::{BoundOffer, ConsumerBinding, over_binding};
pub use contracts::Contracts;
pub use gate::{UsageGate, purpose_within};
pub use locks::AgreementLocks;
pub use negotiation::{ContractError, Negotiation};
pub use provider::DeliveryForm;
pub use state::{IllegalTransition, NegotiationEvent, NegotiationStatus, UnknownNegotiationState};
pub use store::NegotiationPage;
