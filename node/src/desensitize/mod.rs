//! Desensitization (数据脱敏) at delivery: the policy's mask duties applied to CSV and
//! JSON Lines products before they leave the provider.
//!
//! The map:
//! - [`recognise`] — the built-in field types: mainland ID numbers (GB 11643, check
//!   character validated), mobile numbers, e-mail addresses, and names (by header).
//! - [`method`] — one method on one value: keep first n / last m, mask all, keyed hash
//!   (HMAC-SHA256), drop, generalise (a date to its year, a code to its prefecture).
//! - [`plan`] — which rule masks which field (first selecting rule wins), from one
//!   detection pass over the data; which fields identify records (pseudonymised in a
//!   delivery) and which are quasi-identifiers.
//! - [`stream`] — masking a whole payload record by record, deterministically: the
//!   k-anonymity of the released quasi-identifiers (and the records withheld under a
//!   minimum k), and the records in an order of the agreement's key.
//! - [`watermark`] — the per-agreement marks in a tabular delivery's measure values,
//!   and scoring a found copy against an agreement.
//! - [`delivery`] — the node's side: the per-agreement hash key, and the derived
//!   delivery of an agreement (masked, watermarked, or both), produced once, stored in
//!   chunks with their hashes, so the signed manifest covers exactly the bytes delivered
//!   and a cut transfer resumes; deleted when the agreement is revoked or the consumer's
//!   copy is deleted.
//!
//! Pure parts (`recognise`, `method`, `plan`, `stream`, `watermark`) do no I/O of their
//! own.

pub mod delivery;
pub mod method;
pub mod plan;
pub mod recognise;
pub mod stream;
pub mod watermark;

pub use delivery::{DeliveryForms, Desensitization, MaskedDelivery, delivery_for, mask_rules};
pub use plan::Plan;
pub use stream::AppliedRule;

use crate::storage::StorageError;

/// Whether any rule or obligation of a policy carries a mask or a `kAnonymity` duty
/// (a product in opaque bytes cannot be offered with one: publishing refuses it, and so
/// would delivery).
pub fn policy_has_mask_duties(policy: &liutong_policy::Policy) -> bool {
    policy.duties().any(|d| {
        matches!(
            d,
            liutong_policy::Duty::Mask { .. } | liutong_policy::Duty::KAnonymity { .. }
        )
    })
}

/// Why a payload cannot be desensitized.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DesensitizeError {
    #[error(
        "product {product} is opaque bytes, so its policy's mask duties cannot be applied; \
         it is not delivered (publish it as csv or jsonl to deliver it masked)"
    )]
    OpaqueBytes { product: String },
    #[error("the product cannot be read for masking: {0}")]
    Read(String),
    #[error("the masked delivery cannot be written: {0}")]
    Write(String),
    #[error("the stored masked delivery is damaged: {0}")]
    Damaged(String),
    /// The masked delivery was deleted (the agreement revoked, or the consumer's copy
    /// deleted).
    #[error("{0}")]
    Removed(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}
