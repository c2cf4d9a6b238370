//! The privacy budget each agreement has spent, on the provider.
//!
//! ε is kept in thousandths ([`Epsilon`]), so spending adds up exactly. The spent total
//! is written in the same durable group as the audit entry of the answer that spent it
//! ([`spend_record`] with `AuditLog::append_with`), before the answer leaves: a crash
//! after the write finds the budget spent and the answer on record, and a crash before
//! it has given no answer. Queries under one agreement are decided under its lock, so
//! two cannot both spend the last of a budget.

use liutong_policy::Epsilon;

use crate::storage::{Storage, StorageError, Write};

/// Agreement id → ε spent, in thousandths (u64, big-endian).
pub const SPENT: &str = "privacy_budget";

/// The ε that agreement `agreement_id` has spent, in thousandths.
pub fn spent(storage: &dyn Storage, agreement_id: &str) -> Result<u64, StorageError> {
    match storage.get(SPENT, agreement_id.as_bytes())? {
        None => Ok(0),
        Some(b) => <[u8; 8]>::try_from(b.as_slice())
            .map(u64::from_be_bytes)
            .map_err(|_| StorageError::Engine {
                tree: SPENT.into(),
                reason: format!(
                    "the privacy budget spent by agreement {agreement_id} is unreadable"
                ),
            }),
    }
}

/// Where a budget stands after a query would spend `epsilon`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spending {
    /// ε of this query, in thousandths.
    pub epsilon: u64,
    /// ε spent, this query included, in thousandths.
    pub spent: u64,
    /// The agreement's budget, in thousandths.
    pub budget: u64,
}

impl Spending {
    /// ε left after this query, in thousandths.
    pub fn left(&self) -> u64 {
        self.budget.saturating_sub(self.spent)
    }
}

/// The spending of one more query of `epsilon` after `spent`, or the refusal that says
/// how much was spent and is left.
pub fn next(spent: u64, epsilon: Epsilon, budget: Epsilon) -> Result<Spending, String> {
    let epsilon_m = u64::from(epsilon.millis());
    let budget_m = u64::from(budget.millis());
    let after = spent.saturating_add(epsilon_m);
    if after > budget_m {
        return Err(format!(
            "the agreement's privacy budget is spent: ε = {} of {} used, {} left, and a query \
             needs ε = {}; no further differentially private answer can be given under it",
            text(spent),
            budget,
            text(budget_m.saturating_sub(spent)),
            epsilon
        ));
    }
    Ok(Spending {
        epsilon: epsilon_m,
        spent: after,
        budget: budget_m,
    })
}

/// The write that records `spending`, for the audit entry's group.
pub fn spend_record(agreement_id: &str, spending: &Spending) -> (&'static str, Write) {
    (
        SPENT,
        Write::Put(
            agreement_id.as_bytes().to_vec(),
            spending.spent.to_be_bytes().to_vec(),
        ),
    )
}

/// Thousandths of ε as a number.
pub fn value(millis: u64) -> f64 {
    millis as f64 / 1000.0
}

/// Thousandths of ε as text (`0.5`, `2`).
pub fn text(millis: u64) -> String {
    value(millis).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spending_stops_at_the_budget_exactly() {
        let (e, b) = (Epsilon::from_millis(100), Epsilon::from_millis(1000));
        let mut spent = 0;
        for _ in 0..10 {
            spent = next(spent, e, b).unwrap().spent;
        }
        assert_eq!(spent, 1000, "ten queries of 0.1 spend 1 exactly");
        let why = next(spent, e, b).unwrap_err();
        assert!(
            why.contains("ε = 1 of 1 used, 0 left") && why.contains("needs ε = 0.1"),
            "{why}"
        );
        let s = next(700, Epsilon::from_millis(250), b).unwrap();
        assert_eq!((s.spent, s.left()), (950, 50));
        assert!(next(950, Epsilon::from_millis(250), b).is_err());
    }
}
