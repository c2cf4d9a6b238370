//! Scale benchmarks: how the node's costs grow with what it holds, on real nodes over
//! mutual TLS on loopback with real sled databases in a temporary directory.
//!
//! (catalog) `Catalog.List`, one page of 50 offers, called by a member consumer over the
//!     peer API, with 100, 10,000 and 100,000 products at the provider: p50, p99 and
//!     the CPU per call at each point, and the growth between points. Each call is
//!     one page of a walk through the whole catalog, so pages from everywhere in it
//!     are timed.
//! (proof) Inclusion proofs in the audit log at 1,000,000 and 10,000,000 entries.
//! (startup) `liutong serve` (the release binary) from its start to SERVING, and its
//!     resident memory after idling, for a node as set up and for the same node
//!     holding 1,000,000 agreements and 10,000,000 audit entries; beside it, sled's
//!     own open time and memory on the same database.
//!
//! The stores are filled with records as the node writes them (see `common::seed`):
//! products as the product store records a publish, negotiations with their signed
//! agreement and every index as the contract store commits them, audit entries
//! through the log's own append path in large groups. `proof` and `startup` share one
//! node: its log is filled once.
//!
//! Run: `cargo build --release --bin liutong` then `cargo bench -p liutong-node --bench
//! scale`. `BENCH_ONLY=catalog`, `proof` or `startup` runs one part. Settings:
//! `BENCH_PRODUCTS` (largest catalog, default 100,000), `BENCH_CATALOG_CALLS` (calls
//! per point, default 400), `BENCH_AUDIT_ENTRIES` (default 10,000,000),
//! `BENCH_AGREEMENTS` (default 1,000,000), `LIUTONG_BIN` (the release binary).
//! The temporary directory needs several GB at the default sizes.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use liutong_node::audit::log::AuditLog;
use liutong_proto::v1::ListOffersRequest;
use liutong_proto::v1::catalog_client::CatalogClient;

mod common;
use common::space::{self, DataSpace};
use common::{cpu_seconds, env_u64, event, only, seed, verdict};

/// Set in the environment of a copy of this benchmark that only opens a sled database
/// and reports its open time and memory.
const SLED_PROBE: &str = "LIUTONG_BENCH_SLED_PROBE";

fn main() {
    if let Ok(dir) = std::env::var(SLED_PROBE) {
        sled_probe(Path::new(&dir));
        return;
    }
    common::block_on(run());
}

async fn run() {
    if only("catalog") {
        catalog_curve().await;
    }
    if only("proof") || only("startup") {
        log_and_startup(only("startup")).await;
    }
}

// ---- catalog ---------------------------------------------------------------------

/// What the calls at one point measured.
struct Calls {
    /// Sorted.
    latencies: Vec<Duration>,
    cpu: f64,
}

impl Calls {
    fn percentile_ms(&self, q: f64) -> f64 {
        let n = self.latencies.len();
        self.latencies[((n as f64 * q) as usize).min(n - 1)].as_secs_f64() * 1e3
    }

    fn cpu_ms(&self) -> f64 {
        self.cpu * 1e3 / self.latencies.len().max(1) as f64
    }
}

async fn catalog_curve() {
    let largest = env_u64("BENCH_PRODUCTS", 100_000);
    let calls = env_u64("BENCH_CATALOG_CALLS", 400).max(1) as usize;
    let space = space::data_space(1).await;
    let (provider, _) = &space.nodes[0];
    let (consumer, _) = &space.nodes[1];
    let template = space::publish(provider, 16).await;
    let channel = consumer
        .node
        .peers
        .connect_peer(&provider.peer_addr().to_string())
        .await
        .expect("a channel to the provider");
    let mut client = CatalogClient::new(channel);
    let storage = provider.node.storage.clone();
    let mut points: Vec<u64> = [100, 10_000, 100_000]
        .into_iter()
        .filter(|&n| n < largest)
        .collect();
    points.push(largest);
    let mut held = 1; // the product just published
    let mut previous: Option<(u64, Calls)> = None;
    for products in points {
        eprintln!("(catalog) seeding {products} products");
        seed::products(storage.as_ref(), &template, held, products).await;
        held = products;
        // Warm-up: the page's policies compiled and cached, the channel busy.
        list_pages(&mut client, 20).await;
        let run = list_pages(&mut client, calls).await;
        let target = if products >= 100_000 {
            format!(
                " (target p50 <= 5 ms at 100,000{})",
                verdict(run.percentile_ms(0.5), 5.0)
            )
        } else {
            String::new()
        };
        println!(
            "(catalog) Catalog.List, one page of 50 over mTLS, {products} products: p50 {:.2} ms, p99 {:.2} ms, CPU {:.2} ms per call (both nodes){target}",
            run.percentile_ms(0.5),
            run.percentile_ms(0.99),
            run.cpu_ms()
        );
        if let Some((before, was)) = &previous {
            println!(
                "    growth from {before} to {products} products (x{:.0}): p50 x{:.2}, p99 x{:.2}, CPU per call x{:.2}",
                products as f64 / *before as f64,
                run.percentile_ms(0.5) / was.percentile_ms(0.5),
                run.percentile_ms(0.99) / was.percentile_ms(0.99),
                run.cpu_ms() / was.cpu_ms()
            );
        }
        previous = Some((products, run));
    }
    shutdown(space).await;
}

/// `calls` calls of `Catalog.List` (page size 50), each the next page of a walk
/// through the whole catalog, starting again at the first page after the last.
async fn list_pages(
    client: &mut CatalogClient<liutong_node::telemetry::PeerChannel>,
    calls: usize,
) -> Calls {
    let mut latencies = Vec::with_capacity(calls);
    let mut token = String::new();
    let cpu = cpu_seconds();
    for _ in 0..calls {
        let t = Instant::now();
        let page = client
            .list(ListOffersRequest {
                page_size: 50,
                page_token: token.clone(),
            })
            .await
            .expect("a catalog page")
            .into_inner();
        latencies.push(t.elapsed());
        assert!(
            page.offers.len() == 50 || page.next_page_token.is_empty(),
            "a full page of offers, but for the last"
        );
        token = page.next_page_token;
    }
    let cpu = cpu_seconds() - cpu;
    latencies.sort();
    Calls { latencies, cpu }
}

async fn shutdown(space: DataSpace) {
    for (node, _) in space.nodes {
        node.shutdown().await.expect("shut down");
    }
}

// ---- audit log proofs and start-up -------------------------------------------------

async fn log_and_startup(startup: bool) {
    let entries = env_u64("BENCH_AUDIT_ENTRIES", 10_000_000);
    let agreements = env_u64("BENCH_AGREEMENTS", 1_000_000);
    let bin = release_binary();
    if startup && bin.is_none() {
        println!(
            "(startup) skipped: no release binary; run `cargo build --release --bin liutong` or set LIUTONG_BIN"
        );
    }
    let bin = bin.filter(|_| startup);

    // A provider with one real agreement, then stopped.
    let space = space::data_space(1).await;
    let template_product = space::publish(&space.nodes[0].0, 16).await;
    let provider_addr = space.nodes[0].0.peer_addr().to_string();
    let offer = template_product.offer_id().expect("offered");
    let agreed = space.nodes[1]
        .0
        .node
        .contracts
        .request(&provider_addr, &offer, "urbanPlanning")
        .await
        .expect("negotiation");
    let agreement_id = agreed.agreement_id.expect("an agreement");
    let template = space.nodes[0]
        .0
        .node
        .contracts
        .by_agreement(&agreement_id)
        .expect("read")
        .expect("the provider's negotiation");
    let DataSpace {
        dir,
        nodes,
        config_paths,
        authority,
    } = space;
    let database = nodes[0].1.database_dir();
    let config_path = config_paths[0].clone();
    for (node, _) in nodes {
        node.shutdown().await.expect("shut down");
    }
    let baseline = match &bin {
        Some(bin) => {
            seed::wait_released(&database).await;
            Some(start_up_runs(bin, &config_path, &database, "as set up (one agreement)").await)
        }
        None => None,
    };

    // The audit log, through its own append path, with proofs on the way.
    let storage = seed::open_stopped(&database).await;
    let log = AuditLog::open(storage.clone()).expect("log");
    let mut sizes: Vec<u64> = [1_000_000].into_iter().filter(|&n| n < entries).collect();
    sizes.push(entries);
    for size in sizes {
        let fill = Instant::now();
        let cpu = cpu_seconds();
        seed::fill_log(&log, size, event).await;
        eprintln!(
            "(proof) filled the log to {} entries in {:.1} s ({:.1} s CPU)",
            log.size(),
            fill.elapsed().as_secs_f64(),
            cpu_seconds() - cpu
        );
        let (median, p99) = common::proof_timings(&log, 20_000);
        println!(
            "(proof) inclusion proof at {} entries: median {:.1} µs, p99 {:.1} µs (target median <= 50 µs{})",
            log.size(),
            median.as_secs_f64() * 1e6,
            p99.as_secs_f64() * 1e6,
            verdict(median.as_secs_f64() * 1e6, 50.0)
        );
    }
    let log_size = log.size();
    drop(log);

    if let (Some(bin), Some(baseline)) = (&bin, baseline) {
        let seeding = Instant::now();
        seed::negotiations(storage.as_ref(), &template, agreements).await;
        eprintln!(
            "(startup) stored {agreements} agreements in {:.1} s; database {:.1} GiB",
            seeding.elapsed().as_secs_f64(),
            storage.size_on_disk().unwrap_or(0) as f64 / (1u64 << 30) as f64
        );
        drop(storage);
        seed::wait_released(&database).await;
        let loaded = start_up_runs(
            bin,
            &config_path,
            &database,
            &format!("holding {agreements} agreements and {log_size} audit entries"),
        )
        .await;
        println!(
            "    growth (restarts): start-up x{:.2}, idle RSS x{:.2}",
            loaded.seconds / baseline.seconds,
            loaded.rss_mib / baseline.rss_mib
        );
        let probe = probe_sled(&database);
        println!(
            "    sled alone on the same database: open {:.0} ms, RSS {:.1} MiB after {IDLE:?}",
            probe.seconds * 1e3,
            probe.rss_mib
        );
    }
    drop(authority);
    drop(dir);
}

/// How long to let a started node idle before reading its memory.
const IDLE: Duration = Duration::from_secs(3);

/// One start of a process: seconds to SERVING (or to open, for the sled probe) and
/// resident memory after [`IDLE`].
struct Start {
    seconds: f64,
    rss_mib: f64,
}

/// Starts the node three times in a row and prints each: the first start after the
/// data was written (sled replays the log written since the database was last opened)
/// and two restarts. Returns the slower restart.
async fn start_up_runs(bin: &Path, config: &Path, database: &Path, what: &str) -> Start {
    let mut runs = Vec::new();
    for _ in 0..3 {
        let (bin, config) = (bin.to_owned(), config.to_owned());
        let run = tokio::task::spawn_blocking(move || start_once(&bin, &config))
            .await
            .expect("the start-up run");
        runs.push(run);
        seed::wait_released(database).await;
    }
    let line = |r: &Start| {
        format!(
            "start-up to SERVING {:.0} ms (target <= 1000 ms{}), idle RSS {:.1} MiB (target <= 100 MiB{})",
            r.seconds * 1e3,
            verdict(r.seconds, 1.0),
            r.rss_mib,
            verdict(r.rss_mib, 100.0)
        )
    };
    println!("(startup) liutong serve {what}:");
    println!("    first start: {}", line(&runs[0]));
    for r in &runs[1..] {
        println!("    restart:     {}", line(r));
    }
    runs.swap_remove(0);
    runs.into_iter()
        .max_by(|a, b| a.seconds.total_cmp(&b.seconds))
        .expect("two restarts")
}

/// Starts `liutong serve`, waits for SERVING (polled every 5 ms by `liutong health`),
/// idles, reads its resident memory and stops it.
fn start_once(bin: &Path, config: &Path) -> Start {
    let health = free_port();
    let started = Instant::now();
    let mut child = std::process::Command::new(bin)
        .args(["serve", "--config"])
        .arg(config)
        .args(["--health-listen", &health])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start liutong serve");
    let status = std::process::Command::new(bin)
        .args([
            "health", "--addr", &health, "--wait", "60s", "--every", "5ms",
        ])
        .stdout(std::process::Stdio::null())
        .status()
        .expect("run liutong health");
    let seconds = started.elapsed().as_secs_f64();
    assert!(status.success(), "the node did not become SERVING");
    std::thread::sleep(IDLE);
    let rss_mib = rss_mib(child.id());
    let pid = rustix::process::Pid::from_raw(child.id() as i32).expect("a child's PID");
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("stop the node");
    child.wait().expect("the node stops");
    Start { seconds, rss_mib }
}

/// A loopback address with a port free now.
fn free_port() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("address").to_string()
}

/// VmRSS of process `pid`, in MiB.
fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

/// The release `liutong` binary, if built.
fn release_binary() -> Option<PathBuf> {
    let path = match std::env::var_os("LIUTONG_BIN") {
        Some(p) => PathBuf::from(p),
        None => {
            let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
                || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
                PathBuf::from,
            );
            target.join("release/liutong")
        }
    };
    path.is_file().then_some(path)
}

/// Runs a copy of this benchmark that opens the database in `dir` with sled alone.
fn probe_sled(dir: &Path) -> Start {
    let out = std::process::Command::new(std::env::current_exe().expect("this benchmark"))
        .env(SLED_PROBE, dir)
        .output()
        .expect("run the sled probe");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut figures = text.split_whitespace().map(|v| v.parse::<f64>());
    match (figures.next(), figures.next()) {
        (Some(Ok(seconds)), Some(Ok(rss_mib))) => Start { seconds, rss_mib },
        _ => panic!(
            "the sled probe failed: {text} {}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// In the probe process: opens the sled database in `dir` as the node's storage
/// opens it, idles, and prints the seconds the open took and the resident memory.
fn sled_probe(dir: &Path) {
    let started = Instant::now();
    let db = sled::Config::new()
        .path(dir)
        .open()
        .expect("open the database");
    let seconds = started.elapsed().as_secs_f64();
    std::thread::sleep(IDLE);
    println!("{seconds} {}", rss_mib(std::process::id()));
    drop(db);
}
