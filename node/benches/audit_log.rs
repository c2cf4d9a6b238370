//! Audit log benchmark: durable appends per second with group commit, and
//! inclusion-proof generation at 1,000,000 entries, on a real sled database in a
//! temporary directory. Run: `cargo bench -p liutong-node --bench audit_log`.
//! Set `AUDIT_BENCH_ENTRIES` to change the size of the proof benchmark's log.

use std::time::Instant;

use liutong_node::audit::log::AuditLog;
use liutong_node::storage::SledStorage;

mod common;
use common::event;

fn main() {
    common::block_on(run());
}

async fn run() {
    // 1. Durable appends with group commit: many concurrent writers, each append
    //    acknowledged only after its batch was flushed.
    let dir = tempfile::tempdir().expect("temp dir");
    let log = AuditLog::open(SledStorage::open(dir.path()).expect("sled")).expect("log");
    let writers = 256u64;
    let per_writer = 400u64;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..per_writer {
                log.append(&event(w * per_writer + i))
                    .await
                    .expect("append");
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer");
    }
    let seconds = started.elapsed().as_secs_f64();
    let total = writers * per_writer;
    println!(
        "durable appends (group commit, {writers} concurrent writers): {total} entries in {seconds:.2} s = {:.0} appends/s (target >= 20000)",
        total as f64 / seconds
    );
    drop(log);

    // 2. Inclusion proofs at 1,000,000 entries.
    let entries: u64 = std::env::var("AUDIT_BENCH_ENTRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().expect("temp dir");
    let log = AuditLog::open(SledStorage::open(dir.path()).expect("sled")).expect("log");
    let fill = Instant::now();
    let mut tasks = Vec::new();
    let writers = 512u64;
    for w in 0..writers {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = w;
            while i < entries {
                log.append(&event(i)).await.expect("append");
                i += writers;
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer");
    }
    println!(
        "filled a log of {} entries in {:.1} s",
        log.size(),
        fill.elapsed().as_secs_f64()
    );
    let size = log.size();
    let (median, p99) = common::proof_timings(&log, 20_000);
    println!(
        "inclusion proof at {size} entries: median {:.1} µs, p99 {:.1} µs (target median <= 50 µs){}",
        median.as_secs_f64() * 1e6,
        p99.as_secs_f64() * 1e6,
        common::verdict(median.as_secs_f64() * 1e6, 50.0)
    );
}
