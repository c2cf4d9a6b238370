//! Per-agreement locks, held from a decision to its durable record: a consumer's reads
//! and a provider's aggregate queries are each decided and counted under one, so two
//! concurrent uses cannot both take the last permitted one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// One lock per agreement, made on first use.
#[derive(Default)]
pub struct AgreementLocks {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl AgreementLocks {
    /// The lock of one agreement: a consumer's reads and a provider's aggregate queries
    /// are each decided and counted under it.
    pub fn lock_for(&self, agreement_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        locks.entry(agreement_id.to_owned()).or_default().clone()
    }

    /// The provider's lock of one agreement: its revocation and the consumer's notices
    /// and receipts about it are each checked and recorded under it, one at a time.
    /// (Not [`lock_for`](Self::lock_for), which an aggregate query holds while it
    /// computes.)
    pub fn provider_lock(&self, agreement_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.lock_for(&format!("provider/{agreement_id}"))
    }
}
