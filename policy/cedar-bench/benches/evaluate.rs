//! Criterion benches of `liutong_policy::evaluate` against Cedar on the same decision,
//! followed by a summary of both medians and their ratio.
//!
//! Run: `cargo bench -p liutong-policy-cedar-bench`

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::Criterion;
use liutong_policy::evaluate;
use liutong_policy_cedar_bench::{Scenario, fifty_rules, realistic};

fn main() {
    let scenarios = [realistic(5), fifty_rules(5)];
    for s in &scenarios {
        assert!(
            s.liutong_permits() && s.cedar_permits(),
            "{}: both must permit",
            s.name
        );
    }

    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    for s in &scenarios {
        let mut g = c.benchmark_group(s.name);
        g.bench_function("liutong", |b| {
            b.iter(|| {
                evaluate(
                    black_box(&s.liutong),
                    black_box(&s.request),
                    black_box(&s.state),
                )
            })
        });
        g.bench_function("cedar", |b| {
            b.iter(|| {
                s.cedar.authorizer.is_authorized(
                    black_box(&s.cedar.request),
                    black_box(&s.cedar.policies),
                    black_box(&s.cedar.entities),
                )
            })
        });
        g.finish();
    }
    c.final_summary();

    println!("\nsummary (median of 201 timed batches per engine, same process):");
    println!(
        "{:<36} {:>14} {:>14} {:>10}",
        "scenario", "liutong", "cedar", "cedar/liutong"
    );
    for s in &scenarios {
        let ours = median_ns(|| {
            black_box(evaluate(
                black_box(&s.liutong),
                black_box(&s.request),
                black_box(&s.state),
            ));
        });
        let theirs = median_ns(|| {
            black_box(s.cedar.authorizer.is_authorized(
                black_box(&s.cedar.request),
                black_box(&s.cedar.policies),
                black_box(&s.cedar.entities),
            ));
        });
        println!(
            "{:<36} {:>11.1} ns {:>11.1} ns {:>9.1}x",
            s.name,
            ours,
            theirs,
            theirs / ours
        );
    }
    print_target(&scenarios[0]);
}

fn print_target(a: &Scenario) {
    let m = median_ns(|| {
        black_box(evaluate(
            black_box(&a.liutong),
            black_box(&a.request),
            black_box(&a.state),
        ));
    });
    println!(
        "target (a) median <= 1 us: {} ({m:.1} ns)",
        if m <= 1000.0 { "met" } else { "NOT met" }
    );
}

/// Median time of one call, from 201 batches each sized to take about 1 ms.
fn median_ns(mut f: impl FnMut()) -> f64 {
    let mut per_batch = 1u64;
    loop {
        let t = Instant::now();
        for _ in 0..per_batch {
            f();
        }
        if t.elapsed() >= Duration::from_millis(1) || per_batch >= 1 << 24 {
            break;
        }
        per_batch *= 2;
    }
    let mut samples: Vec<f64> = (0..201)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..per_batch {
                f();
            }
            t.elapsed().as_nanos() as f64 / per_batch as f64
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}
