//! Counts over the audit log by day, for the console's charts, at a cost that does not
//! grow with the log: a log of ten million entries is answered in a few hundred reads.
//!
//! - **Entries per day**: entries are appended in time order, so the first entry of a
//!   day is found by binary search on entry time ([`first_at_or_after`]): about 24 reads
//!   per day boundary at ten million entries. Times a little out of order (two appends
//!   racing across a second) move a boundary by those entries only.
//! - **Policy decisions per day** need each entry read, so [`DecisionTally`] counts
//!   incrementally: it keeps per-day counts in memory, resumes from the last entry it
//!   counted, starts no earlier than the first entry of the window (found by binary
//!   search), and reads at most a given number of entries per call, saying how far it
//!   has got.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::Deserialize;

use super::log::{AuditError, AuditLog, EventKind};

/// Seconds in a day (UTC days: the charts count by UTC day).
pub const DAY: i64 = 86_400;
/// Entries looked at past one that is not an event of this software, to find its time.
const PROBE: u64 = 64;
/// Entries read from storage at a time.
const BATCH: usize = 1000;

/// What the counts need of an entry. (Not [`super::event::Event`]: that refuses fields
/// it does not know, and a count can take entries of a newer format.)
#[derive(Deserialize)]
struct Head {
    time: i64,
    kind: Option<EventKind>,
    #[serde(default)]
    detail: String,
}

fn head(bytes: &[u8]) -> Option<Head> {
    serde_json::from_slice(bytes).ok()
}

/// The start (Unix seconds) of the UTC day that holds `time`.
pub fn day_of(time: i64) -> i64 {
    time.div_euclid(DAY) * DAY
}

/// The time of entry `index`, or of the first event after it within [`PROBE`] entries
/// and before `end`; `None` when there is none.
fn time_near(log: &AuditLog, index: u64, end: u64) -> Result<Option<i64>, AuditError> {
    let last = end.min(index.saturating_add(PROBE)).saturating_sub(1);
    if index > last {
        return Ok(None);
    }
    for (_, bytes) in log.entries(index, last, PROBE as usize, usize::MAX)? {
        if let Some(h) = head(&bytes) {
            return Ok(Some(h.time));
        }
    }
    Ok(None)
}

/// The first index below `size` whose event time is at or after `time` (`size` when
/// none is), by binary search: entries are appended in time order.
pub fn first_at_or_after(log: &AuditLog, time: i64, size: u64) -> Result<u64, AuditError> {
    let (mut low, mut high) = (0, size);
    while low < high {
        let middle = low + (high - low) / 2;
        match time_near(log, middle, high)? {
            Some(t) if t < time => low = middle + 1,
            // At or after `time`, or no event from here on: the boundary is not later.
            _ => high = middle,
        }
    }
    Ok(low)
}

/// Entries in each of the `days` UTC days up to and including the one that holds `now`:
/// (day start, entries), oldest first.
pub fn entries_per_day(
    log: &AuditLog,
    size: u64,
    now: i64,
    days: u32,
) -> Result<Vec<(i64, u64)>, AuditError> {
    let first_day = day_of(now) - (i64::from(days) - 1) * DAY;
    let mut bounds = Vec::with_capacity(days as usize + 1);
    for d in 0..i64::from(days) {
        bounds.push(first_at_or_after(log, first_day + d * DAY, size)?);
    }
    // The last day ends now: every entry from its start is in it, events or not.
    bounds.push(size);
    Ok(bounds
        .windows(2)
        .enumerate()
        .map(|(d, w)| (first_day + d as i64 * DAY, w[1].saturating_sub(w[0])))
        .collect())
}

/// How a policy decision came out, from its entry's words: the policy's own
/// explanation starts with "permitted" for a permit, and a refusal after a permit
/// (a spent use count, an approval refused) says "refused".
fn permitted(detail: &str) -> bool {
    detail.contains("permitted") && !detail.contains("refused")
}

/// Policy decisions of one day.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Decisions {
    pub permit: u64,
    pub deny: u64,
}

/// What [`DecisionTally::count`] has counted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecisionCounts {
    /// (day start, decisions), oldest first, every day of the window.
    pub days: Vec<(i64, Decisions)>,
    /// Entries `counted_from..counted_to` are counted; the window's first entry is at
    /// or after `counted_from`.
    pub counted_from: u64,
    pub counted_to: u64,
    /// The log's size when counted.
    pub size: u64,
}

impl DecisionCounts {
    /// Whether every entry of the window is counted.
    pub fn complete(&self) -> bool {
        self.counted_to >= self.size
    }
}

#[derive(Default)]
struct TallyState {
    /// The next entry to count.
    next: u64,
    /// Counts by day start; days before the window are let go.
    days: BTreeMap<i64, Decisions>,
}

/// Policy decisions per day, counted incrementally in memory (a restart counts anew).
#[derive(Default)]
pub struct DecisionTally {
    state: Mutex<TallyState>,
}

impl DecisionTally {
    /// Counts at most `max_entries` more entries (up to `size`) and answers the counts
    /// of the `days` UTC days up to the one holding `now`.
    pub fn count(
        &self,
        log: &AuditLog,
        size: u64,
        now: i64,
        days: u32,
        max_entries: u64,
    ) -> Result<DecisionCounts, AuditError> {
        let first_day = day_of(now) - (i64::from(days) - 1) * DAY;
        let counted_from = first_at_or_after(log, first_day, size)?;
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.next = state.next.max(counted_from);
        state.days = state.days.split_off(&first_day);
        let end = size.min(state.next.saturating_add(max_entries));
        while state.next < end {
            let page = log.entries(state.next, end - 1, BATCH, usize::MAX)?;
            for (_, bytes) in &page {
                let Some(h) = head(bytes) else { continue };
                if h.kind != Some(EventKind::PolicyDecision) || day_of(h.time) < first_day {
                    continue;
                }
                let day = state.days.entry(day_of(h.time)).or_default();
                if permitted(&h.detail) {
                    day.permit += 1;
                } else {
                    day.deny += 1;
                }
            }
            // Missing indices are passed over: the batch covered up to here.
            state.next = (state.next + BATCH as u64).min(end);
        }
        let days = (0..i64::from(days))
            .map(|d| {
                let day = first_day + d * DAY;
                (day, state.days.get(&day).copied().unwrap_or_default())
            })
            .collect();
        Ok(DecisionCounts {
            days,
            counted_from,
            counted_to: state.next,
            size,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::log::Event;
    use crate::storage::SledStorage;

    const T0: i64 = 1_800_000_000 - 1_800_000_000 % DAY;

    async fn log_of(times: &[(i64, EventKind, &str)]) -> AuditLog {
        let log = AuditLog::open(SledStorage::temporary().unwrap()).unwrap();
        for &(t, kind, detail) in times {
            log.append(&Event::new(kind, t, detail)).await.unwrap();
        }
        log
    }

    #[tokio::test]
    async fn day_boundaries_are_found_by_time_even_a_little_out_of_order() {
        let mut times = Vec::new();
        // Day 0: 5 entries, day 1: none, day 2: 7 entries, the first two a second out
        // of order across midnight; then one that is not an event.
        for i in 0..5 {
            times.push((T0 + 100 + i, EventKind::NodeStarted, "x"));
        }
        times.push((T0 + 2 * DAY, EventKind::NodeStarted, "x"));
        times.push((T0 + 2 * DAY - 1, EventKind::NodeStarted, "x"));
        for i in 0..5 {
            times.push((T0 + 2 * DAY + 10 + i, EventKind::NodeStarted, "x"));
        }
        let log = log_of(&times).await;
        log.append_bytes(b"not an event".to_vec()).await.unwrap();
        let size = log.size();
        assert_eq!(first_at_or_after(&log, T0, size).unwrap(), 0);
        assert_eq!(first_at_or_after(&log, T0 + DAY, size).unwrap(), 5);
        // An entry at exactly the time asked for is the first at or after it.
        assert_eq!(first_at_or_after(&log, T0 + 2 * DAY + 10, size).unwrap(), 7);
        // No event after it: the boundary falls before the trailing entry without a time.
        assert_eq!(
            first_at_or_after(&log, T0 + 3 * DAY, size).unwrap(),
            size - 1
        );

        let per_day = entries_per_day(&log, size, T0 + 2 * DAY + 50, 4).unwrap();
        assert_eq!(
            per_day,
            [
                (T0 - DAY, 0),
                (T0, 5),
                // The entry a second before midnight, appended after the first entry
                // of the next day, moves the boundary past both: 2 entries off, no more.
                (T0 + DAY, 2),
                // Today's entries, the one that is not an event too.
                (T0 + 2 * DAY, 6),
            ]
        );
    }

    #[tokio::test]
    async fn decisions_are_counted_a_bounded_step_at_a_time_and_resume() {
        let permit = "negotiation scope, offer p/v1, purpose x: permitted by rule 1";
        let deny = "negotiation scope, offer p/v1, purpose x: denied: no permission applies";
        let spent = "negotiation scope, offer p/v1, purpose x: refused: the use count is spent";
        let mut times = vec![
            // Before the window: passed over without being read.
            (T0 - 40 * DAY, EventKind::PolicyDecision, permit),
            (T0, EventKind::PolicyDecision, permit),
            (T0 + 1, EventKind::PolicyDecision, deny),
            (T0 + 2, EventKind::Transfer, "permitted"),
        ];
        for i in 0..5 {
            times.push((T0 + DAY + i, EventKind::PolicyDecision, permit));
        }
        times.push((T0 + DAY + 9, EventKind::PolicyDecision, spent));
        let log = log_of(&times).await;
        let tally = DecisionTally::default();
        let now = T0 + DAY + 100;

        let first = tally.count(&log, log.size(), now, 30, 4).unwrap();
        assert_eq!((first.counted_from, first.counted_to), (1, 5));
        assert!(!first.complete());
        assert_eq!(first.days.len(), 30);
        let day = |c: &DecisionCounts, d: i64| c.days.iter().find(|(t, _)| *t == d).unwrap().1;
        assert_eq!(day(&first, T0), Decisions { permit: 1, deny: 1 });
        assert_eq!(day(&first, T0 + DAY), Decisions { permit: 1, deny: 0 });

        let second = tally.count(&log, log.size(), now, 30, 10).unwrap();
        assert_eq!(second.counted_to, log.size());
        assert!(second.complete());
        assert_eq!(day(&second, T0 + DAY), Decisions { permit: 5, deny: 1 });
        // Counted once: asking again adds nothing.
        let third = tally.count(&log, log.size(), now, 30, 4).unwrap();
        assert_eq!(third.days, second.days);
        // A day later the window moves on; the counts of days still in it stay.
        let later = tally
            .count(&log, log.size(), now + 29 * DAY, 30, 4)
            .unwrap();
        assert_eq!(later.days[0], (T0 + DAY, Decisions { permit: 5, deny: 1 }));
    }
}
