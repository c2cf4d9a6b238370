//! Helpers the benchmarks share: settings from the environment, the process's CPU time,
//! and a typical audit entry.
#![allow(dead_code)] // each bench uses a different part

use liutong_node::audit::log::{Event, EventKind};

/// `name` from the environment as a number, or `default`.
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Whether part `part` runs: `BENCH_ONLY` names one part, unset runs all.
pub fn only(part: &str) -> bool {
    std::env::var("BENCH_ONLY").map_or(true, |v| v == part)
}

/// CPU time (user + system, all threads) this process has used so far, in seconds, from
/// `/proc/self/stat`; on a shared machine it shows what a stage costs even when other
/// processes take turns on the cores. Other processes (a database server) are not in it.
pub fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses): utime is the 12th, stime
    // the 13th, in clock ticks (100 per second on Linux).
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// The `i`-th audit entry of a benchmark: the size of a typical event.
pub fn event(i: u64) -> Event {
    let mut e = Event::new(
        EventKind::TrustListApplied,
        1_800_000_000 + i as i64,
        format!("benchmark entry {i}"),
    );
    e.participant = Some("91110000600037341L".into());
    e
}
