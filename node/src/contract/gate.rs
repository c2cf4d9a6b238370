//! What usage control, above the modules that let data leave (query, transfer), says
//! about an agreement. `Usage` implements it; the runtime hands it to `Queries` and
//! `Transfers`, so a pull, a read and a query are all held to the same state of the
//! agreement: not revoked, the copy not deleted, its deleteAfter deadline not passed,
//! and one use count per agreement.

use liutong_policy::CompiledPolicy;

use super::Agreement;
use crate::storage::StorageError;

/// Usage control's answer about an agreement, for the steps below it that let data leave.
pub trait UsageGate: Send + Sync {
    /// Provider side: whether data may still leave under `agreement` (rows, chunks or
    /// aggregates): not revoked, no deletion receipt from the consumer, and not past the
    /// deleteAfter deadline of the copy. The error says why.
    fn delivery_allowed(&self, agreement: &Agreement) -> Result<(), String>;
    /// Consumer side: why usage control deleted the copy under `agreement_id`, if it
    /// did: such a copy is not fetched again, and no query is sent under it.
    fn deleted(&self, agreement_id: &str) -> Result<Option<String>, StorageError>;
    /// The reads of the agreement's copy that count against its `count`: on the
    /// consumer, the reads it made; on the provider, the highest read number the
    /// consumer's usage notices reported (0 when its policy asks for none).
    fn reads(&self, agreement_id: &str) -> Result<u64, StorageError>;
    /// Provider side: every use of the agreement this node knows of (the queries it
    /// answered and the reads reported to it): the agreement's use count.
    fn uses(&self, agreement_id: &str) -> Result<u64, StorageError>;
    /// Consumer side: the provider began a delivery under `agreement_id` (its signed
    /// manifest arrived), which it does only while the agreement is not revoked.
    fn delivery_began(&self, agreement_id: &str);
    /// Consumer side: the copy under `agreement_id` was verified and is COMPLETED. Its
    /// content fingerprints are made now, in the background, so its rows are
    /// recognised when this node publishes them, also once the copy's file is gone.
    fn copy_verified(&self, agreement_id: &str) -> Result<(), String>;
}

/// Whether `purpose`, declared for one use, lies within the purpose `agreement` was made
/// for: the same term, or a narrower one in the policy's purpose vocabulary.
pub fn purpose_within(
    policy: &CompiledPolicy,
    purpose: &str,
    agreement: &Agreement,
) -> Result<(), String> {
    let agreed = agreement.purpose.as_str();
    if purpose == agreed {
        return Ok(());
    }
    let vocabulary = policy.vocabulary();
    let Some(declared) = vocabulary.id(purpose) else {
        return Err(format!(
            "purpose {purpose} is not a term of the purpose vocabulary"
        ));
    };
    match vocabulary.id(agreed) {
        Some(a) if vocabulary.is_a(declared, a) => Ok(()),
        _ => Err(format!(
            "the declared purpose {purpose} is outside the agreement's purpose: agreement {} \
             was made for {agreed} (or a narrower purpose)",
            agreement.agreement_id
        )),
    }
}
