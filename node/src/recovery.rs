//! Retrying unfinished steps of negotiations and transfers from their stored records.
//!
//! A step that has a next step (a request whose answer was lost, a countersignature or a
//! receipt the provider has not confirmed) is retried by the node's background work
//! (see [`runtime`](crate::runtime)) until it reaches a final state. Each failed attempt
//! doubles the wait before the next, up to [`MAX_BACKOFF_FACTOR`] times
//! `recovery.retry_interval`; a step older than `recovery.expire_after` is given up with
//! a recorded reason. The decisions are pure functions of the state and the time, so
//! they are tested here; what a step does is in [`contract`](crate::contract) and
//! [`transfer`](crate::transfer).

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The longest wait between two attempts, as a multiple of the retry interval.
pub const MAX_BACKOFF_FACTOR: u32 = 64;

/// The wait after `failures` failed attempts in a row (at least one): the interval,
/// doubled for each failure after the first, at most [`MAX_BACKOFF_FACTOR`] times it.
pub fn backoff(interval: Duration, failures: u32) -> Duration {
    let doublings = failures
        .saturating_sub(1)
        .min(MAX_BACKOFF_FACTOR.trailing_zeros());
    interval.saturating_mul(1 << doublings)
}

/// Whether a step entered at `entered_at` (Unix seconds) is given up at `now`.
pub fn expired(entered_at: i64, now: i64, expire_after: Duration) -> bool {
    let limit = i64::try_from(expire_after.as_secs()).unwrap_or(i64::MAX);
    now.saturating_sub(entered_at) >= limit
}

/// Whether a gRPC status from a peer says only that the call did not get through or
/// the peer could not do it right now (so the step is kept and tried again), as
/// opposed to a refusal, which ends the step.
pub fn transient(status: &tonic::Status) -> bool {
    use tonic::Code;
    matches!(
        status.code(),
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Cancelled
            | Code::Unknown
            | Code::Aborted
            | Code::Internal
    )
}

/// Failed attempts per step (by key), kept in memory by the task that retries them: a
/// restart tries every unfinished step at once, which is what a restart is for.
#[derive(Debug, Default)]
pub struct Retries {
    failed: HashMap<String, (u32, Instant)>,
}

impl Retries {
    /// Whether the step `key` may be tried at `now`: never failed, or its wait is over.
    pub fn due(&self, key: &str, now: Instant) -> bool {
        self.failed.get(key).is_none_or(|(_, next)| *next <= now)
    }

    /// Records a failed attempt at `now`; the next is due after the [`backoff`].
    pub fn failed(&mut self, key: &str, now: Instant, interval: Duration) {
        let failures = self.failed.get(key).map_or(0, |(f, _)| *f) + 1;
        self.failed.insert(
            key.to_owned(),
            (failures, now + backoff(interval, failures)),
        );
    }

    /// Forgets the failures of `key` (its step went through).
    pub fn succeeded(&mut self, key: &str) {
        self.failed.remove(key);
    }

    /// Forgets every step not in `pending` (finished by another path).
    pub fn retain(&mut self, pending: &[String]) {
        self.failed.retain(|k, _| pending.contains(k));
    }

    /// How many failed attempts in a row `key` has.
    pub fn failures(&self, key: &str) -> u32 {
        self.failed.get(key).map_or(0, |(f, _)| *f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_interval_and_stops_at_its_bound() {
        let i = Duration::from_millis(100);
        assert_eq!(backoff(i, 1), i);
        assert_eq!(backoff(i, 2), i * 2);
        assert_eq!(backoff(i, 3), i * 4);
        assert_eq!(backoff(i, 7), i * 64);
        assert_eq!(backoff(i, 8), i * 64);
        assert_eq!(backoff(i, u32::MAX), i * MAX_BACKOFF_FACTOR);
        assert_eq!(backoff(Duration::MAX, 20), Duration::MAX);
    }

    #[test]
    fn a_step_expires_once_it_is_as_old_as_the_limit() {
        let limit = Duration::from_secs(60);
        assert!(!expired(1_000, 1_059, limit));
        assert!(expired(1_000, 1_060, limit));
        assert!(
            !expired(1_000, 900, limit),
            "a clock set back is not an expiry"
        );
        assert!(!expired(1, i64::MAX, Duration::MAX));
    }

    #[test]
    fn refusals_end_a_step_and_transport_failures_do_not() {
        use tonic::{Code, Status};
        for code in [
            Code::Unavailable,
            Code::DeadlineExceeded,
            Code::Cancelled,
            Code::Unknown,
            Code::Aborted,
            Code::Internal,
        ] {
            assert!(transient(&Status::new(code, "transport error")), "{code:?}");
        }
        for code in [
            Code::PermissionDenied,
            Code::FailedPrecondition,
            Code::InvalidArgument,
            Code::NotFound,
            Code::DataLoss,
            Code::Unauthenticated,
            Code::AlreadyExists,
        ] {
            assert!(!transient(&Status::new(code, "refused")), "{code:?}");
        }
    }

    #[test]
    fn a_failed_step_waits_its_backoff_and_a_success_clears_it() {
        let mut r = Retries::default();
        let t0 = Instant::now();
        let i = Duration::from_secs(1);
        assert!(r.due("a", t0));
        r.failed("a", t0, i);
        assert!(!r.due("a", t0));
        assert!(r.due("a", t0 + i));
        r.failed("a", t0 + i, i);
        assert_eq!(r.failures("a"), 2);
        assert!(
            !r.due("a", t0 + i * 2),
            "the second wait is twice the first"
        );
        assert!(r.due("a", t0 + i * 3));
        assert!(r.due("b", t0), "other steps are not held back");
        r.succeeded("a");
        assert!(r.due("a", t0));
        r.failed("c", t0, i);
        r.retain(&["a".to_owned()]);
        assert_eq!(r.failures("c"), 0);
    }
}
