//! Retrying unfinished steps of negotiations and transfers from their stored records.
//!
//! A step that has a next step (a request whose answer was lost, a countersignature or a
//! receipt the provider has not confirmed) is retried by the node's background work
//! (see [`runtime`](crate::runtime)) until it reaches a final state. Each failed attempt
//! doubles the wait before the next, up to [`MAX_BACKOFF_FACTOR`] times
//! `recovery.retry_interval`; a step older than `recovery.expire_after` is given up with
//! a recorded reason, but only once this process has tried it, and a countersigned
//! agreement never by time (see [`contract`](crate::contract)). Only the peer's answer
//! about the step ends it otherwise ([`verdict`]); one step at a time works on a record
//! ([`Claims`]). The decisions are pure functions of the state, the answer and the
//! time, so they are tested here; what a step does is in [`contract`](crate::contract)
//! and [`transfer`](crate::transfer).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::base::error::{ErrorKind, PeerRefusal};

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

/// Whether a peer's answer says only that the call did not get through or the peer
/// could not do it right now (so the step is kept and tried again), as opposed to a
/// refusal, which ends the step.
pub fn transient(answer: &PeerRefusal) -> bool {
    matches!(
        answer.kind,
        ErrorKind::Unavailable
            | ErrorKind::DeadlineExceeded
            | ErrorKind::Cancelled
            | ErrorKind::Unknown
            | ErrorKind::Aborted
            | ErrorKind::Internal
    )
}

/// The metadata key by which a provider says why it refused a contract request, where
/// the status code alone does not tell (see [`REPLAY`]).
pub use crate::base::error::REFUSAL_KEY;
/// [`REFUSAL_KEY`]'s value for a request whose nonce the provider already holds.
pub const REPLAY: &str = "replay";

/// A call of a step that is retried, as [`verdict`] judges its failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Call {
    /// A contract request sent (again) to its provider.
    Request,
    /// A question to the provider about how a negotiation stands.
    State,
    /// A countersigned agreement sent (again) to its provider.
    Countersignature,
    /// A transfer receipt sent (again) to its provider.
    Receipt,
}

/// What a failed retried call means for its step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The call did not get through, or the peer cannot answer it right now (its
    /// trust list may not know this node yet after an admission or a key rotation):
    /// kept, tried again later.
    Retry,
    /// The provider already holds the request (its nonce or its negotiation), from an
    /// earlier sending it may still be handling: kept, and asked about again.
    Held,
    /// The provider's answer ends the step.
    Refused,
}

/// How a failed `call` to a provider is taken. Only an answer about the step itself
/// ends it: a refusal by the peer's authentication layer (`UNAUTHENTICATED`, and
/// `PERMISSION_DENIED` where the step's own call cannot be refused that way) says
/// only that the peer does not recognise this node yet, and is retried until the
/// step expires.
pub fn verdict(call: Call, answer: &PeerRefusal) -> Verdict {
    if transient(answer) || answer.kind == ErrorKind::Unauthenticated {
        return Verdict::Retry;
    }
    let replay = answer.refusal.as_deref() == Some(REPLAY);
    match (call, answer.kind) {
        (Call::Request, ErrorKind::AlreadyExists) => Verdict::Held,
        (Call::Request, ErrorKind::FailedPrecondition) if replay => Verdict::Held,
        // A request's policy refusal is PERMISSION_DENIED; the other calls are only
        // refused that way by the authentication layer.
        (Call::Request, _) => Verdict::Refused,
        (Call::State | Call::Countersignature | Call::Receipt, ErrorKind::PermissionDenied) => {
            Verdict::Retry
        }
        // A countersignature ends only on an answer about the negotiation: it does
        // not exist there, is in another state, or the agreement is not the one signed.
        (
            Call::Countersignature,
            ErrorKind::NotFound | ErrorKind::FailedPrecondition | ErrorKind::DataLoss,
        ) => Verdict::Refused,
        (Call::Countersignature, _) => Verdict::Retry,
        (Call::State | Call::Receipt, _) => Verdict::Refused,
    }
}

/// The steps of `pending` that are due now, after `retries` forgot every step not in
/// it (finished by another path): how each retrying pass starts.
pub fn due_now(retries: &mut Retries, pending: Vec<String>) -> Vec<String> {
    retries.retain(&pending);
    let now = Instant::now();
    pending
        .into_iter()
        .filter(|key| retries.due(key, now))
        .collect()
}

/// Keys (a negotiation, an agreement's receipt) that one step at a time works on: a
/// step claims its key, reads the stored record, decides and commits, and releases it.
#[derive(Clone, Default)]
pub struct Claims {
    inner: Arc<ClaimsInner>,
}

#[derive(Default)]
struct ClaimsInner {
    held: Mutex<HashSet<String>>,
    released: tokio::sync::Notify,
}

impl Claims {
    /// Claims `key`; `None` while another step holds it.
    pub fn try_claim(&self, key: &str) -> Option<Claim> {
        let mut held = self.inner.held.lock().unwrap_or_else(|p| p.into_inner());
        held.insert(key.to_owned()).then(|| Claim {
            claims: self.clone(),
            key: key.to_owned(),
        })
    }

    /// Claims `key`, waiting at most `wait` for another step to release it.
    pub async fn claim_within(&self, key: &str, wait: Duration) -> Option<Claim> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Registered before the check, so a release in between is not missed.
            let released = self.inner.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if let Some(claim) = self.try_claim(key) {
                return Some(claim);
            }
            if tokio::time::timeout_at(deadline, released).await.is_err() {
                return self.try_claim(key);
            }
        }
    }
}

/// A key claimed by one step ([`Claims`]); released when dropped.
pub struct Claim {
    claims: Claims,
    key: String,
}

impl Drop for Claim {
    fn drop(&mut self) {
        let inner = &self.claims.inner;
        inner
            .held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.key);
        inner.released.notify_waiters();
    }
}

/// Attempts per step (by key), kept in memory by the task that retries them: a restart
/// tries every unfinished step at once, which is what a restart is for, and gives up
/// none before it has tried it (see [`Retries::tried`]).
#[derive(Debug, Default)]
pub struct Retries {
    steps: HashMap<String, Step>,
}

#[derive(Debug)]
struct Step {
    /// Failed attempts in a row.
    failed: u32,
    /// When the next attempt is due.
    next: Instant,
    /// When this process first took the step up.
    first: Instant,
}

impl Retries {
    /// Whether the step `key` may be tried at `now`: never failed, or its wait is over.
    pub fn due(&self, key: &str, now: Instant) -> bool {
        self.steps
            .get(key)
            .is_none_or(|s| s.failed == 0 || s.next <= now)
    }

    fn step(&mut self, key: &str, now: Instant) -> &mut Step {
        self.steps.entry(key.to_owned()).or_insert(Step {
            failed: 0,
            next: now,
            first: now,
        })
    }

    /// Records that this process took the step `key` up at `now` (an attempt was made
    /// or, for a step that waits on the other party, it was looked at).
    pub fn took_up(&mut self, key: &str, now: Instant) {
        self.step(key, now);
    }

    /// Records a failed attempt at `now`; the next is due after the [`backoff`].
    pub fn failed(&mut self, key: &str, now: Instant, interval: Duration) {
        let step = self.step(key, now);
        step.failed += 1;
        step.next = now + backoff(interval, step.failed);
    }

    /// Forgets the failures of `key` (its step went through); it stays taken up.
    pub fn succeeded(&mut self, key: &str) {
        if let Some(step) = self.steps.get_mut(key) {
            step.failed = 0;
        }
    }

    /// Forgets every step not in `pending` (finished by another path).
    pub fn retain(&mut self, pending: &[String]) {
        self.steps.retain(|k, _| pending.contains(k));
    }

    /// How many failed attempts in a row `key` has.
    pub fn failures(&self, key: &str) -> u32 {
        self.steps.get(key).map_or(0, |s| s.failed)
    }

    /// How long this process has had the step `key` taken up at `now` (`None`: not at
    /// all). A step is given up only once this process tried it: after a downtime
    /// longer than `recovery.expire_after` every step is tried once before any expires.
    pub fn tried(&self, key: &str, now: Instant) -> Option<Duration> {
        self.steps
            .get(key)
            .map(|s| now.saturating_duration_since(s.first))
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
            assert!(
                transient(&Status::new(code, "transport error").into()),
                "{code:?}"
            );
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
            assert!(!transient(&Status::new(code, "refused").into()), "{code:?}");
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
    #[test]
    fn only_an_answer_about_the_step_ends_it() {
        use tonic::{Code, Status};
        let status = |code| PeerRefusal::from(Status::new(code, "no"));
        // The authentication layer of a provider whose trust list is behind.
        for call in [
            Call::Request,
            Call::State,
            Call::Countersignature,
            Call::Receipt,
        ] {
            assert_eq!(
                verdict(call, &status(Code::Unauthenticated)),
                Verdict::Retry
            );
            assert_eq!(verdict(call, &status(Code::Unavailable)), Verdict::Retry);
        }
        for call in [Call::State, Call::Countersignature, Call::Receipt] {
            assert_eq!(
                verdict(call, &status(Code::PermissionDenied)),
                Verdict::Retry,
                "{call:?}"
            );
        }
        // A request's PERMISSION_DENIED is its policy's refusal.
        assert_eq!(
            verdict(Call::Request, &status(Code::PermissionDenied)),
            Verdict::Refused
        );
        // The provider already holds the request: asked again, not ended.
        assert_eq!(
            verdict(Call::Request, &status(Code::AlreadyExists)),
            Verdict::Held
        );
        let mut replay = Status::new(Code::FailedPrecondition, "no");
        replay.metadata_mut().insert(
            REFUSAL_KEY,
            tonic::metadata::MetadataValue::from_static(REPLAY),
        );
        assert_eq!(
            verdict(Call::Request, &PeerRefusal::from(replay)),
            Verdict::Held
        );
        assert_eq!(
            verdict(Call::Request, &status(Code::FailedPrecondition)),
            Verdict::Refused,
            "an expired request or a policy that cannot be used"
        );
        // A countersignature ends only on the provider's answer about the negotiation.
        for code in [Code::NotFound, Code::FailedPrecondition, Code::DataLoss] {
            assert_eq!(
                verdict(Call::Countersignature, &status(code)),
                Verdict::Refused,
                "{code:?}"
            );
        }
        assert_eq!(
            verdict(Call::Countersignature, &status(Code::InvalidArgument)),
            Verdict::Retry
        );
        assert_eq!(
            verdict(Call::State, &status(Code::NotFound)),
            Verdict::Refused
        );
        assert_eq!(
            verdict(Call::Receipt, &status(Code::InvalidArgument)),
            Verdict::Refused
        );
    }

    #[test]
    fn a_step_counts_as_tried_from_its_first_attempt_in_this_process() {
        let mut r = Retries::default();
        let t0 = Instant::now();
        let i = Duration::from_secs(1);
        assert_eq!(r.tried("a", t0), None);
        r.took_up("a", t0);
        assert_eq!(r.tried("a", t0 + i), Some(i));
        assert!(r.due("a", t0), "taken up is not failed");
        r.failed("a", t0 + i, i);
        r.succeeded("a");
        assert_eq!(
            r.tried("a", t0 + i * 3),
            Some(i * 3),
            "a success keeps it tried"
        );
        assert_eq!(
            due_now(&mut r, vec!["b".into()]),
            vec!["b".to_owned()],
            "steps finished elsewhere are forgotten"
        );
        assert_eq!(r.tried("a", t0), None);
    }

    #[tokio::test]
    async fn a_claim_is_held_by_one_step_and_waited_for_by_another() {
        let claims = Claims::default();
        let first = claims.try_claim("k").unwrap();
        assert!(claims.try_claim("k").is_none());
        assert!(claims.try_claim("other").is_some());
        assert!(
            claims
                .claim_within("k", Duration::from_millis(10))
                .await
                .is_none(),
            "held all along: the wait ends at its deadline"
        );
        let waiter = {
            let claims = claims.clone();
            tokio::spawn(async move {
                claims
                    .claim_within("k", Duration::from_secs(60))
                    .await
                    .is_some()
            })
        };
        tokio::task::yield_now().await;
        drop(first);
        assert!(waiter.await.unwrap(), "released: the waiting step gets it");
        assert!(claims.try_claim("k").is_some(), "and released it in turn");
    }
}
