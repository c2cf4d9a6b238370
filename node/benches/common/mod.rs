//! Helpers the benchmarks share: settings from the environment, the process's CPU time,
//! a typical audit entry and the timing of inclusion proofs; a data space of real
//! nodes ([`space`]) and bulk filling of a node's storage ([`seed`]).
#![allow(dead_code)] // each bench uses a different part

pub mod seed;
pub mod space;

/// Runs a benchmark's `main` future on the runtime every benchmark uses: two worker
/// threads (the machine's cores), with the process's TLS crypto provider installed.
pub fn block_on<F: std::future::Future>(bench: F) -> F::Output {
    liutong_node::tls::install_default_provider();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(bench)
}

use std::time::{Duration, Instant};

use liutong_node::audit::log::{AuditLog, Event, EventKind};
use liutong_node::audit::merkle;

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

/// The median and 99th percentile of `count` inclusion proofs for indices spread over
/// the whole of `log`; one proof is checked against the root, so the figures are those
/// of real, valid proofs.
pub fn proof_timings(log: &AuditLog, count: usize) -> (Duration, Duration) {
    let size = log.size();
    let root = log.root();
    let mut timings = Vec::with_capacity(count);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..count {
        // xorshift: spread the indices over the whole log.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let index = x % size;
        let t = Instant::now();
        let proof = log.inclusion_proof(index, size).expect("proof");
        timings.push(t.elapsed());
        std::hint::black_box(&proof);
    }
    timings.sort();
    let entry = log.entry(size / 2).expect("read").expect("entry");
    let proof = log.inclusion_proof(size / 2, size).expect("proof");
    merkle::verify_inclusion(&merkle::leaf_hash(&entry), size / 2, size, &proof, &root)
        .expect("proof verifies");
    (
        timings[timings.len() / 2],
        timings[timings.len() * 99 / 100],
    )
}

/// `figure` against `target` (both the same unit, lower is better): " (not met)" when
/// it misses.
pub fn verdict(figure: f64, target: f64) -> &'static str {
    unmet(figure <= target)
}

/// What a line adds when its target is not `met`: " (not met)".
pub fn unmet(met: bool) -> &'static str {
    if met { "" } else { " (not met)" }
}
