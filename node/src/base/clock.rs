//! The node's one clock.
//!
//! Every "now" the node writes into its records (audit entries, agreements, receipts,
//! certificates, trust lists) or compares against them (expiries, deadlines) is read
//! here, so there is one notion of the time to reason about and one place to replace it.
//!
//! [`now`] and [`now_utc`] read the system clock; code that has not been handed a
//! [`Clock`] calls them. Code that takes a [`Clock`] can be driven by a
//! [`Clock::manual`] in tests: a shared instant that the test sets and advances, so a
//! deadline can be passed without waiting for it. Components receive a `Clock` as they
//! are built from narrow handles; the free functions remain the system clock.

use std::sync::{Arc, Mutex, PoisonError};

use time::OffsetDateTime;

/// Where "now" comes from: the system clock, or an instant a test controls.
#[derive(Clone, Debug, Default)]
pub enum Clock {
    /// The operating system's wall clock (UTC).
    #[default]
    System,
    /// A fixed instant, shared by every clone, that moves only when told to.
    Manual(Arc<Mutex<OffsetDateTime>>),
}

impl Clock {
    /// A manual clock standing at `at` (Unix seconds, clamped to what a date can hold).
    pub fn manual(at: i64) -> Self {
        let at = OffsetDateTime::from_unix_timestamp(at).unwrap_or(OffsetDateTime::UNIX_EPOCH);
        Self::Manual(Arc::new(Mutex::new(at)))
    }

    /// The current instant.
    pub fn now_utc(&self) -> OffsetDateTime {
        match self {
            Self::System => OffsetDateTime::now_utc(),
            // A poisoned lock still holds a valid instant: a panic elsewhere cannot
            // leave an `OffsetDateTime` half-written.
            Self::Manual(at) => *at.lock().unwrap_or_else(PoisonError::into_inner),
        }
    }

    /// The current time in Unix seconds.
    pub fn now(&self) -> i64 {
        self.now_utc().unix_timestamp()
    }

    /// The current time in Unix milliseconds.
    pub fn now_ms(&self) -> i64 {
        // Milliseconds since 1970 fit an i64 for the next 290 million years.
        (self.now_utc().unix_timestamp_nanos() / 1_000_000) as i64
    }

    /// Moves a manual clock forward by `by` (backward if negative); the system clock
    /// cannot be moved and ignores this.
    pub fn advance(&self, by: time::Duration) {
        if let Self::Manual(at) = self {
            let mut at = at.lock().unwrap_or_else(PoisonError::into_inner);
            *at = at.saturating_add(by);
        }
    }
}

/// The current instant by the system clock.
pub fn now_utc() -> OffsetDateTime {
    Clock::System.now_utc()
}

/// The current time in Unix seconds by the system clock.
pub fn now() -> i64 {
    Clock::System.now()
}

/// The current time in Unix milliseconds by the system clock.
pub fn now_ms() -> i64 {
    Clock::System.now_ms()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told_and_is_shared_by_its_clones() {
        let clock = Clock::manual(1_767_225_600);
        let seen_by_a_component = clock.clone();
        assert_eq!(seen_by_a_component.now(), 1_767_225_600);
        assert_eq!(seen_by_a_component.now_ms(), 1_767_225_600_000);
        clock.advance(time::Duration::days(1));
        assert_eq!(seen_by_a_component.now(), 1_767_225_600 + 86_400);
        assert_eq!(
            seen_by_a_component.now_utc(),
            OffsetDateTime::from_unix_timestamp(1_767_312_000).unwrap()
        );
    }

    #[test]
    fn the_system_clock_reads_the_wall_clock() {
        // Two readings of the wall clock around one of ours bracket it.
        let before = OffsetDateTime::now_utc().unix_timestamp();
        let ours = now();
        let after = OffsetDateTime::now_utc().unix_timestamp();
        assert!(before <= ours && ours <= after);
        // Asking the system clock to move does nothing.
        Clock::System.advance(time::Duration::days(-1000));
        assert!(now() >= ours);
    }
}
