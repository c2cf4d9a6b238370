//! The windowed rules' counter: the recent events per (rule, source), pruned per source
//! and swept of quiet sources, so that a count is cheap however many sources are heard
//! from. Pure bookkeeping: the caller passes the time.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::rule::Rule;
use crate::config::AlertsSection;

/// The recent events of the windowed rules, per (rule, source), oldest first.
///
/// An event prunes only its own source's window. Sources whose events have all left
/// their window are dropped by a sweep over every source, made at most once per
/// shortest window, so memory holds only the sources heard from lately while the cost
/// per event does not grow with the number of sources (a scan of many addresses in
/// failed authentications would otherwise make every further event slower).
#[derive(Default)]
pub(super) struct Windows {
    pub(super) events: HashMap<(Rule, String), VecDeque<Instant>>,
    /// When stale sources were last dropped.
    swept_at: Option<Instant>,
}

impl Windows {
    /// Adds an event at `now` to the window of `key`; returns the count when it reaches
    /// `threshold`, and then forgets the source (its count starts again).
    pub(super) fn count(
        &mut self,
        rules: &AlertsSection,
        key: (Rule, String),
        threshold: u32,
        window: Duration,
        now: Instant,
    ) -> Option<usize> {
        self.sweep(rules, now);
        let events = self.events.entry(key.clone()).or_default();
        while events
            .front()
            .is_some_and(|first| now.duration_since(*first) >= window)
        {
            events.pop_front();
        }
        events.push_back(now);
        if events.len() >= threshold.max(1) as usize {
            let count = events.len();
            self.events.remove(&key);
            Some(count)
        } else {
            None
        }
    }

    /// Drops the sources whose last event left its window, if the shortest window has
    /// passed since the last sweep.
    fn sweep(&mut self, rules: &AlertsSection, now: Instant) {
        let every =
            window_of(rules, Rule::PolicyDenials).min(window_of(rules, Rule::FailedAuthentication));
        let swept_at = *self.swept_at.get_or_insert(now);
        if now.duration_since(swept_at) < every {
            return;
        }
        self.swept_at = Some(now);
        self.events.retain(|(r, _), events| {
            events
                .back()
                .is_some_and(|last| now.duration_since(*last) < window_of(rules, *r))
        });
    }
}

/// The window of a windowed rule (zero for the others, which keep no window).
fn window_of(rules: &AlertsSection, rule: Rule) -> Duration {
    match rule {
        Rule::PolicyDenials => rules.policy_denials.window,
        Rule::FailedAuthentication => rules.failed_authentication.window,
        _ => Duration::ZERO,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_prunes_only_its_own_window_and_quiet_sources_are_dropped() {
        let minute = Duration::from_secs(60);
        let mut rules = AlertsSection::default();
        rules.policy_denials.window = minute;
        rules.failed_authentication.window = minute;
        let address = |a: &str| (Rule::FailedAuthentication, a.to_owned());
        let mut windows = Windows::default();
        let t0 = Instant::now();
        // A scan: one refusal from each of many addresses.
        for i in 0..100 {
            let key = address(&format!("10.0.0.{i}"));
            assert_eq!(windows.count(&rules, key, 3, minute, t0), None);
        }
        assert_eq!(windows.events.len(), 100);

        // Within the window, another address's refusal leaves the others as they are.
        let t1 = t0 + Duration::from_secs(30);
        assert_eq!(
            windows.count(&rules, address("10.0.1.1"), 3, minute, t1),
            None
        );
        assert_eq!(windows.events.len(), 101);
        // An address heard again counts only its events still inside the window.
        assert_eq!(
            windows.count(&rules, address("10.0.0.7"), 3, minute, t1),
            None
        );
        assert_eq!(windows.events[&address("10.0.0.7")].len(), 2);

        // A window later, the addresses quiet since then are dropped: only those heard
        // within the last minute remain.
        let t2 = t0 + Duration::from_secs(61);
        assert_eq!(
            windows.count(&rules, address("10.0.1.2"), 3, minute, t2),
            None
        );
        let mut left: Vec<&str> = windows.events.keys().map(|(_, a)| a.as_str()).collect();
        left.sort();
        assert_eq!(left, ["10.0.0.7", "10.0.1.1", "10.0.1.2"]);
        // Heard again, it counts its events of the last minute only (t0 left).
        assert_eq!(
            windows.count(&rules, address("10.0.0.7"), 4, minute, t2),
            None
        );
        assert_eq!(windows.events[&address("10.0.0.7")].len(), 2);

        // A source whose alert fired is forgotten: its count starts again.
        assert_eq!(
            windows.count(&rules, address("10.0.1.2"), 3, minute, t2),
            None
        );
        assert_eq!(
            windows.count(&rules, address("10.0.1.2"), 3, minute, t2),
            Some(3)
        );
        assert!(!windows.events.contains_key(&address("10.0.1.2")));
        assert_eq!(windows.events.len(), 2);
    }
}
