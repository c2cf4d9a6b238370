//! Data circulation benchmarks, on real in-process nodes over mutual TLS on
//! loopback with real sled databases in a temporary directory.
//!
//! (a) A 1 GiB product pulled from one node by another, with every verification on
//!     (the signed manifest, its chunk list against the agreement's, every chunk's
//!     SHA-256, durable sealed storage, the signed receipt): once over the peer API
//!     (gRPC) and once over the Dataspace Protocol's `HttpData-PULL` (the provider's
//!     data endpoint, the same checks at the consumer), each under its own agreement.
//!     In the same run: the same bytes over a plain rustls stream on loopback (same
//!     certificates) as the baseline, and one SHA-256 pass over 1 GiB (`ring`). Each
//!     transfer's CPU per GiB is printed against its target, 1.3 x (the baseline's CPU
//!     per GiB + one SHA-256 pass per GiB): the cost of moving the bytes and checking
//!     each once, with 30 % for the rest. Then a 4 GiB product is pulled while a thread
//!     samples the process's VmRSS (both nodes run in it), and the growth over the level
//!     before is printed against 64 MiB. Last, the disk alone writing the same bytes.
//!     Each measurement starts once the process is idle: the consumer fingerprints a
//!     new copy in the background (usage control), and that work is printed on its own
//!     line rather than charged to the next measurement.
//! (b) Complete negotiations (request to FINALIZED, all signatures, every state durable
//!     and audited) with 16 concurrent consumers, run twice: in a closed loop (each
//!     consumer starts its next negotiation when one ends: the throughput at
//!     saturation), and paced (the consumers together start `BENCH_RATE`, default
//!     1,000, per second on a fixed schedule; latency counts from the scheduled start).
//!     Both print throughput, p50 and p99.
//! (c) The closed loop of (b) on a fresh provider, then again once the provider holds
//!     `BENCH_AGREEMENTS` (default 1,000,000) more finalized agreements, stored as it
//!     stores its own (a quarter of them between the benchmark's consumers and its
//!     offer, the rest with other members on other offers, some of those counting
//!     uses; stored while the provider is stopped, by a copy of this benchmark in a
//!     process of its own, and the provider then starts again): how the rate of
//!     negotiations grows with the agreements held.
//!
//! Run: `cargo bench -p liutong-node --bench flow`. `BENCH_ONLY=a`, `b` or `c` runs one
//! part. Scale with `BENCH_TRANSFER_MIB` (default 1024), `BENCH_RSS_MIB` (the memory
//! transfer, default 4096), `BENCH_NEGOTIATIONS` (default 2000), `BENCH_CONSUMERS`
//! (default 16), `BENCH_RATE` and `BENCH_AGREEMENTS`. Each line also shows the CPU time
//! the process used, which stays meaningful when other processes share the cores.

use std::sync::Arc;
use std::time::{Duration, Instant};

use liutong_node::config::NodeConfig;
use liutong_node::contract::{AGREEMENT_PAYLOAD_TYPE, Agreement, Contracts, Negotiation};
use liutong_node::identity::{Envelope, ParticipantId};
use liutong_node::runtime::RunningNode;
use liutong_node::storage::{SledStorage, Storage, Write};
use liutong_node::tls::{self, ExpectedServer, TlsIdentity};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

mod common;
use common::space::{self, DataSpace};
use common::{cpu_seconds, env_u64, only, unmet, verdict};

/// Set in the environment of a copy of this benchmark that only stores the agreements of
/// part (c), described in the JSON file it names (a [`SeedJob`]), and exits.
const SEED_JOB: &str = "LIUTONG_BENCH_SEED_JOB";

fn main() {
    if let Some(job) = std::env::var_os(SEED_JOB) {
        common::block_on(run_seed_job(std::path::Path::new(&job)));
        return;
    }
    common::block_on(run());
}

/// The benchmark's data space: one provider (first) and its consumers, all started.
type Bench = DataSpace;

async fn data_space(consumers: usize) -> Bench {
    space::data_space(consumers).await
}

/// Publishes `size` pseudo-random bytes at the provider as an open offer: its ID.
async fn publish(node: &RunningNode, size: u64) -> String {
    common::space::publish(node, size)
        .await
        .offer_id()
        .expect("an offer")
}

/// What one negotiation run measured.
struct Run {
    latencies: Vec<Duration>,
    secs: f64,
    cpu: f64,
}

impl Run {
    fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.secs
    }

    /// The `q` quantile of the latencies, in milliseconds.
    fn percentile(&self, q: f64) -> f64 {
        let n = self.latencies.len();
        self.latencies[((n as f64 * q) as usize).min(n - 1)].as_secs_f64() * 1e3
    }

    fn cpu_per_negotiation_ms(&self) -> f64 {
        self.cpu * 1e3 / self.latencies.len().max(1) as f64
    }
}

/// `total` complete negotiations shared out among the consumers, each consumer one at a
/// time. `paced`: the consumers together start that many per second on a fixed schedule
/// (consumer `c` at `c/rate`, then every `consumers/rate`), and a latency counts from
/// the scheduled start, so a negotiation that starts late because the one before took
/// long is charged for the wait. Without it each consumer starts its next negotiation
/// as soon as one ends (a closed loop: throughput at saturation).
async fn negotiate(
    contexts: &[Arc<liutong_node::runtime::Node>],
    address: &str,
    offer: &str,
    total: usize,
    paced: Option<f64>,
) -> Run {
    let consumers = contexts.len();
    let started = Instant::now();
    let cpu = cpu_seconds();
    let mut tasks = Vec::new();
    for (c, ctx) in contexts.iter().enumerate() {
        let (ctx, offer, address) = (ctx.clone(), offer.to_owned(), address.to_owned());
        let count = total / consumers + usize::from(c < total % consumers);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(count);
            for k in 0..count {
                let t = match paced {
                    Some(rate) => {
                        let at =
                            started + Duration::from_secs_f64((c + k * consumers) as f64 / rate);
                        tokio::time::sleep_until(at.into()).await;
                        at
                    }
                    None => Instant::now(),
                };
                let n = ctx
                    .contracts
                    .request(&address, &offer, "urbanPlanning")
                    .await
                    .expect("negotiation");
                assert_eq!(n.state.to_string(), "FINALIZED");
                latencies.push(t.elapsed());
            }
            latencies
        }));
    }
    let mut latencies: Vec<Duration> = Vec::new();
    for t in tasks {
        latencies.extend(t.await.unwrap());
    }
    let secs = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu;
    latencies.sort();
    Run {
        latencies,
        secs,
        cpu,
    }
}

/// The parts of a transfer bench: the data space and the agreements it pulls.
struct TransferSetup {
    bench: Bench,
    /// The provider's peer API address.
    address: String,
}

impl TransferSetup {
    fn provider(&self) -> &RunningNode {
        &self.bench.nodes[0].0
    }

    fn consumer(&self) -> &RunningNode {
        &self.bench.nodes[1].0
    }

    /// A new agreement on `offer`, for one pull.
    async fn agreement(&self, offer: &str) -> String {
        let n = self
            .consumer()
            .node
            .contracts
            .request(&self.address, offer, "urbanPlanning")
            .await
            .expect("negotiation");
        n.agreement_id
            .expect("a finalized negotiation has an agreement")
    }
}

/// Pulls `agreement` over the peer API (gRPC); returns (seconds, CPU seconds).
async fn pull_grpc(consumer: &RunningNode, agreement: &str) -> (f64, f64) {
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let started = Instant::now();
    let cpu = cpu_seconds();
    let done = consumer
        .node
        .transfers
        .pull(agreement, 0, tx)
        .await
        .expect("transfer");
    let measured = (started.elapsed().as_secs_f64(), cpu_seconds() - cpu);
    assert_eq!(done.state, "COMPLETED");
    measured
}

/// Pulls `agreement` over the Dataspace Protocol (`HttpData-PULL` from the provider's
/// data endpoint, then the same checks and copy); returns (seconds, CPU seconds).
async fn pull_dsp(consumer: &RunningNode, provider: &RunningNode, agreement: &str) -> (f64, f64) {
    let ctx = &consumer.node;
    let dsp = Arc::new(liutong_node::dsp::pull::DspConsumer {
        base_url: ctx
            .dsp_url
            .clone()
            .expect("the consumer's DSP listener is on"),
        tls_identity: ctx.tls_identity.clone(),
        roots: ctx.data_space_roots.clone(),
        storage: ctx.storage.clone(),
        contracts: ctx.contracts.clone(),
        transfers: ctx.transfers.clone(),
    });
    let peer = format!("https://{}", provider.dsp_addr().expect("DSP is on"));
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let started = Instant::now();
    let cpu = cpu_seconds();
    let done = liutong_node::dsp::pull::pull(dsp, &peer, agreement, 0, tx)
        .await
        .expect("DSP transfer");
    let measured = (started.elapsed().as_secs_f64(), cpu_seconds() - cpu);
    assert_eq!(done.state, "COMPLETED");
    measured
}

/// The same number of bytes over a plain rustls stream with the same certificates, in
/// 1 MiB writes, read into a buffer and dropped; returns (seconds, CPU seconds).
async fn plain_rustls(t: &TransferSetup, consumer_config: &NodeConfig, mib: u64) -> (f64, f64) {
    let identity_dir = consumer_config.identity_dir();
    let client_id = TlsIdentity::load(
        &identity_dir.join("node.crt"),
        &identity_dir.join("node.key"),
    )
    .unwrap();
    let roots = tls::load_roots(&identity_dir.join("ca.crt")).unwrap();
    let server_cfg = tls::server_config(&t.provider().node.tls_identity, &roots).unwrap();
    let client_cfg = tls::client_config(
        Some(&client_id),
        roots,
        ExpectedServer::Member(Arc::new(|_, _| Ok(()))),
    )
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = tokio_rustls::TlsAcceptor::from(server_cfg)
            .accept(tcp)
            .await
            .unwrap();
        let block = vec![7u8; 1 << 20];
        for _ in 0..mib {
            tls.write_all(&block).await.unwrap();
        }
        tls.shutdown().await.unwrap();
    });
    let started = Instant::now();
    let cpu = cpu_seconds();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut tls_stream = tokio_rustls::TlsConnector::from(client_cfg)
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = tls_stream.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    let secs = started.elapsed().as_secs_f64();
    server.await.unwrap();
    let cpu = cpu_seconds() - cpu;
    assert_eq!(total, mib << 20);
    (secs, cpu)
}

/// CPU seconds of one SHA-256 pass over 1 GiB, in 1 MiB updates, with `ring` and with
/// `sha2` (which the consumer checks chunks with; it uses the CPU's SHA extensions where
/// present): (ring, sha2). The faster of the two is the cost of checking every byte once.
fn sha256_per_gib() -> (f64, f64) {
    use sha2::Digest;
    let block: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 251) as u8).collect();
    let cpu = cpu_seconds();
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for _ in 0..1024 {
        ctx.update(&block);
    }
    std::hint::black_box(ctx.finish());
    let ring = cpu_seconds() - cpu;
    let cpu = cpu_seconds();
    let mut ctx = sha2::Sha256::new();
    for _ in 0..1024 {
        ctx.update(&block);
    }
    std::hint::black_box(ctx.finalize());
    (ring, cpu_seconds() - cpu)
}

/// This process's resident memory (VmRSS), in bytes.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib << 10)
}

/// Samples [`rss_bytes`] every 10 ms on a thread of its own until stopped; gives the
/// highest sample.
struct RssPeak {
    stop: Arc<std::sync::atomic::AtomicBool>,
    sampler: std::thread::JoinHandle<u64>,
}

impl RssPeak {
    fn start() -> Self {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let sampler = std::thread::spawn(move || {
            let mut peak = rss_bytes();
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(rss_bytes());
                std::thread::sleep(Duration::from_millis(10));
            }
            peak.max(rss_bytes())
        });
        Self { stop, sampler }
    }

    fn stop(self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.sampler.join().expect("the RSS sampler")
    }
}

/// The disk: the same bytes written the way the consumer keeps a copy (O_DIRECT in
/// 1 MiB chunks, made durable every 16 chunks), with nothing else going on; returns the
/// seconds. A durable copy cannot arrive faster than this.
async fn disk_alone(mib: u64) -> f64 {
    let dir = tempfile::tempdir().expect("temp dir");
    let blobs = liutong_node::storage::blobs::Blobs::open(dir.path()).unwrap();
    let block = vec![7u8; 1 << 20];
    let started = Instant::now();
    tokio::task::spawn_blocking(move || {
        let mut writer = blobs.writer("copies/disk-check", true).unwrap();
        for i in 0..mib {
            writer.write_at(i << 20, &block).unwrap();
            if (i + 1) % 16 == 0 || i + 1 == mib {
                writer.sync().unwrap();
            }
        }
    })
    .await
    .unwrap();
    started.elapsed().as_secs_f64()
}

/// Waits until this process is idle (under 5 % of a core over 200 ms) and returns the
/// CPU seconds used meanwhile: the work a transfer leaves running in the background
/// (the consumer's content fingerprints of a new copy) ends before the next
/// measurement starts, so one measurement never carries another's work. Gives up
/// after two minutes.
async fn settle() -> f64 {
    let start = cpu_seconds();
    for _ in 0..600 {
        let before = cpu_seconds();
        tokio::time::sleep(Duration::from_millis(200)).await;
        if cpu_seconds() - before < 0.01 {
            break;
        }
    }
    cpu_seconds() - start
}

async fn transfer_bench() {
    let mib = env_u64("BENCH_TRANSFER_MIB", 1024);
    let rss_mib = env_u64("BENCH_RSS_MIB", 4096);
    let size = mib << 20;
    let bench = space::data_space_with(1, |c| {
        c.dsp = Some(liutong_node::config::DspSection::on(
            "127.0.0.1:0".parse().unwrap(),
        ))
    })
    .await;
    let address = bench.nodes[0].0.peer_addr().to_string();
    let t = TransferSetup { bench, address };
    let consumer_config = t.bench.nodes[1].1.clone();
    let offer = publish(t.provider(), size).await;
    let (grpc_agreement, dsp_agreement) = (t.agreement(&offer).await, t.agreement(&offer).await);

    settle().await;
    eprintln!("(a) published {mib} MiB; transferring over the peer API");
    let (liutong_secs, liutong_cpu) = pull_grpc(t.consumer(), &grpc_agreement).await;
    let fingerprints_cpu = settle().await;
    eprintln!("(a) transferring over DSP HttpData-PULL");
    let (dsp_secs, dsp_cpu) = pull_dsp(t.consumer(), t.provider(), &dsp_agreement).await;
    settle().await;
    eprintln!("(a) baseline");
    let (baseline_secs, baseline_cpu) = plain_rustls(&t, &consumer_config, mib).await;
    eprintln!("(a) SHA-256");
    let (sha_ring, sha_sha2) = sha256_per_gib();
    let sha = sha_ring.min(sha_sha2);

    let rate = |s: f64| size as f64 / s / (1u64 << 20) as f64;
    let per_gib = |cpu: f64| cpu * 1024.0 / mib as f64;
    let baseline = per_gib(baseline_cpu);
    let target = 1.3 * (baseline + sha);
    let target_words =
        format!("target <= {target:.2} s = 1.3 x (baseline {baseline:.2} + SHA-256 {sha:.2})");
    let node = per_gib(liutong_cpu);
    println!(
        "(a) transfer of {mib} MiB over mTLS, every verification on: {liutong_secs:.2} s = {:.0} MiB/s, CPU {node:.2} s per GiB (both nodes; {target_words}){}",
        rate(liutong_secs),
        verdict(node, target)
    );
    println!(
        "    then, in the background, the consumer's content fingerprints of the new copy (usage control): CPU {:.2} s per GiB",
        per_gib(fingerprints_cpu)
    );
    let dsp = per_gib(dsp_cpu);
    println!(
        "    the same over DSP HttpData-PULL: {dsp_secs:.2} s = {:.0} MiB/s, CPU {dsp:.2} s per GiB (both nodes; {target_words}){}",
        rate(dsp_secs),
        verdict(dsp, target)
    );
    println!(
        "    plain rustls stream, same bytes, same certificates: {baseline_secs:.2} s = {:.0} MiB/s, CPU {baseline:.2} s per GiB (both ends)",
        rate(baseline_secs),
    );
    println!(
        "    one SHA-256 pass: CPU {sha:.2} s per GiB (the faster of ring {sha_ring:.2} and sha2 {sha_sha2:.2})"
    );
    println!(
        "    liutong / baseline = {:.0} % (target >= 70 %)",
        100.0 * baseline_secs / liutong_secs
    );

    // Resident memory: a larger product pulled while a thread samples this process's
    // VmRSS (both nodes are in it); the growth is the peak over the level before.
    eprintln!("(a) publishing {rss_mib} MiB; transferring while sampling RSS");
    let large = publish(t.provider(), rss_mib << 20).await;
    let agreement = t.agreement(&large).await;
    settle().await;
    let before = rss_bytes();
    let peak = RssPeak::start();
    pull_grpc(t.consumer(), &agreement).await;
    let growth = peak.stop().saturating_sub(before) as f64 / (1u64 << 20) as f64;
    println!(
        "    resident memory of both nodes during a {rss_mib} MiB transfer: grows by {growth:.1} MiB (target <= 64 MiB){}",
        verdict(growth, 64.0)
    );
    for (node, _) in t.bench.nodes {
        node.shutdown().await.unwrap();
    }

    eprintln!("(a) disk");
    let disk_secs = disk_alone(mib).await;
    println!(
        "    the disk alone, writing the copy's bytes as the consumer does: {disk_secs:.2} s = {:.0} MiB/s = {:.0} % of the baseline",
        rate(disk_secs),
        100.0 * baseline_secs / disk_secs
    );
}

async fn run() {
    // ---- (a) transfer ---------------------------------------------------------
    if only("a") {
        transfer_bench().await;
    }
    // ---- (b) negotiations -----------------------------------------------------
    if only("b") {
        negotiation_bench().await;
    }
    // ---- (c) negotiations with many agreements held ----------------------------
    if only("c") {
        scale_bench().await;
    }
}

/// The closed-loop rate (b) and (c) aim for, negotiations per second.
const CLOSED_LOOP_TARGET: f64 = 1500.0;

/// A data space of `consumers` consumers and a provider with one small offer, every
/// consumer's channel to the provider opened and the caches warm: the provider, the
/// consumers' contexts, the provider's address and the offer.
async fn negotiation_space(
    consumers: usize,
) -> (Bench, Vec<Arc<liutong_node::runtime::Node>>, String, String) {
    let b = data_space(consumers).await;
    let provider = &b.nodes[0].0;
    let offer = publish(provider, 4096).await;
    let address = provider.peer_addr().to_string();
    let contexts: Vec<_> = (1..=consumers).map(|c| b.nodes[c].0.node.clone()).collect();
    // Warm-up, not measured.
    negotiate(&contexts, &address, &offer, consumers, None).await;
    (b, contexts, address, offer)
}

async fn negotiation_bench() {
    let total = env_u64("BENCH_NEGOTIATIONS", 2000) as usize;
    let consumers = env_u64("BENCH_CONSUMERS", 16).max(1) as usize;
    let rate = env_u64("BENCH_RATE", 1000).max(1) as f64;
    let (b, contexts, address, offer) = negotiation_space(consumers).await;

    eprintln!("(b) negotiating, closed loop");
    let run = negotiate(&contexts, &address, &offer, total, None).await;
    println!(
        "(b) {} complete negotiations (request → FINALIZED, all signatures), {consumers} concurrent consumers each starting its next as soon as one ends: {:.2} s = {:.0} per second (target >= {CLOSED_LOOP_TARGET:.0}){}",
        run.latencies.len(),
        run.secs,
        run.rate(),
        unmet(run.rate() >= CLOSED_LOOP_TARGET)
    );
    println!(
        "    latency p50 {:.2} ms, p99 {:.2} ms; CPU {:.2} ms per negotiation (all nodes)",
        run.percentile(0.50),
        run.percentile(0.99),
        run.cpu_per_negotiation_ms()
    );

    eprintln!("(b) negotiating, paced at {rate} per second");
    let run = negotiate(&contexts, &address, &offer, total, Some(rate)).await;
    println!(
        "(b) {} complete negotiations, {consumers} concurrent consumers together starting {rate:.0} per second on a fixed schedule: {:.2} s = {:.0} per second (target >= {rate:.0}){}",
        run.latencies.len(),
        run.secs,
        run.rate(),
        // The schedule's last start is at (total - 1) / rate: a run that keeps up ends
        // within a few percent of total / rate.
        unmet(run.rate() >= 0.95 * rate)
    );
    let (p50, p99) = (run.percentile(0.50), run.percentile(0.99));
    println!(
        "    latency from the scheduled start p50 {p50:.2} ms (target <= 5 ms){}, p99 {p99:.2} ms (target <= 25 ms){}; CPU {:.2} ms per negotiation (all nodes)",
        unmet(p50 <= 5.0),
        unmet(p99 <= 25.0),
        run.cpu_per_negotiation_ms()
    );
    for (node, _) in b.nodes {
        node.shutdown().await.unwrap();
    }
}

async fn scale_bench() {
    let total = env_u64("BENCH_NEGOTIATIONS", 2000) as usize;
    let consumers = env_u64("BENCH_CONSUMERS", 16).max(1) as usize;
    let agreements = env_u64("BENCH_AGREEMENTS", 1_000_000) as usize;
    let (mut b, contexts, address, offer) = negotiation_space(consumers).await;

    eprintln!("(c) negotiating, closed loop, fresh provider");
    let fresh = negotiate(&contexts, &address, &offer, total, None).await;
    println!(
        "(c) closed loop, {consumers} consumers, fresh provider: {:.0} negotiations per second, p50 {:.2} ms, p99 {:.2} ms; CPU {:.2} ms per negotiation",
        fresh.rate(),
        fresh.percentile(0.50),
        fresh.percentile(0.99),
        fresh.cpu_per_negotiation_ms()
    );

    // The provider stops, its storage takes the agreements, and it starts again on the
    // same address: a provider that came to hold them over time, now running.
    let (plain, counted) = templates(&b.nodes[0].0, &contexts, &address, &offer).await;
    let (provider, config) = b.nodes.remove(0);
    provider.shutdown().await.unwrap();
    eprintln!("(c) storing {agreements} agreements at the provider");
    let started = Instant::now();
    let members: Vec<ParticipantId> = contexts
        .iter()
        .map(|c| c.identity.membership.participant_id.clone())
        .collect();
    seed_in_own_process(&SeedJob {
        database_dir: config.database_dir(),
        plain,
        counted,
        members,
        offer: offer.clone(),
        count: agreements,
    });
    eprintln!(
        "(c) stored {agreements} agreements in {:.1} s; starting the provider again",
        started.elapsed().as_secs_f64()
    );
    let provider = RunningNode::start_with_listeners(
        config.clone(),
        TcpListener::bind(&address).await.unwrap(),
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
    )
    .await
    .unwrap();
    provider.node.refresh.refresh().await.unwrap();
    // What the recovery poller reads first after the first start on the seeded
    // database: every stored negotiation, to build the index of the unfinished ones.
    // Done here, timed, rather than during the measurement.
    let started = Instant::now();
    let cpu = cpu_seconds();
    provider.node.contracts.waiting().await.unwrap();
    eprintln!(
        "(c) the provider found its unfinished negotiations in {:.1} s, {:.1} s of CPU",
        started.elapsed().as_secs_f64(),
        cpu_seconds() - cpu
    );
    b.nodes.insert(0, (provider, config));
    let started = Instant::now();
    let cpu = settle().await;
    eprintln!(
        "(c) the nodes settled after the restart in {:.1} s, {cpu:.1} s of CPU",
        started.elapsed().as_secs_f64()
    );
    reconnect(&contexts, &address, &offer).await;

    eprintln!("(c) negotiating, closed loop, provider holding {agreements} agreements");
    let held = negotiate(&contexts, &address, &offer, total, None).await;
    println!(
        "    the same with {agreements} more agreements held: {:.0} negotiations per second, p50 {:.2} ms, p99 {:.2} ms; CPU {:.2} ms per negotiation",
        held.rate(),
        held.percentile(0.50),
        held.percentile(0.99),
        held.cpu_per_negotiation_ms()
    );
    let ratio = held.rate() / fresh.rate();
    println!(
        "    with / without = {:.0} % (target >= 90 %){}",
        100.0 * ratio,
        unmet(ratio >= 0.9)
    );
    for (node, _) in b.nodes {
        node.shutdown().await.unwrap();
    }
}

/// A use count, added to a template agreement's policy for the stored agreements that
/// count uses.
fn with_use_count(policy: &serde_json::Value) -> serde_json::Value {
    use liutong_policy::{Atomic, LeftOperand, Operator, Policy, Value};
    let mut policy = Policy::from_odrl_value(policy).expect("the agreement's policy");
    for rule in &mut policy.permissions {
        rule.constraints
            .push(Atomic::new(LeftOperand::Count, Operator::Lt, Value::Integer(10)).into());
    }
    policy.to_odrl()
}

/// A well-mixed 64-bit value of `i` (SplitMix64), for IDs that look random.
fn mix(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// An ID shaped as the node makes them: `prefix`, a dash and 24 hex digits.
fn seeded_id(prefix: &str, i: u64) -> String {
    format!("{prefix}-{:016x}{:08x}", mix(i), mix(!i) as u32)
}

/// Templates for the stored agreements, from the running provider: its record of a
/// real negotiation with the first consumer, and the same with a policy that counts
/// uses (signed again by the provider and the consumer).
async fn templates(
    provider: &RunningNode,
    consumers: &[Arc<liutong_node::runtime::Node>],
    address: &str,
    offer: &str,
) -> (Negotiation, Negotiation) {
    let first = consumers[0]
        .contracts
        .request(address, offer, "urbanPlanning")
        .await
        .expect("negotiation");
    let plain = provider
        .node
        .contracts
        .by_agreement(first.agreement_id.as_deref().unwrap())
        .unwrap()
        .expect("the provider's negotiation");
    let mut counted = plain.clone();
    let mut content: Agreement = plain.agreement_content().expect("its agreement");
    content.policy = with_use_count(&content.policy);
    let mut envelope = Envelope::sign_json(
        AGREEMENT_PAYLOAD_TYPE,
        &content,
        &provider.node.identity.signing_key,
    )
    .unwrap();
    envelope
        .add_signature(&consumers[0].identity.signing_key)
        .unwrap();
    counted.agreement = Some(envelope);
    (plain, counted)
}

/// What a copy of this benchmark started with [`SEED_JOB`] stores: the arguments of
/// [`seed_agreements`], in the stopped provider's database.
#[derive(serde::Serialize, serde::Deserialize)]
struct SeedJob {
    database_dir: std::path::PathBuf,
    plain: Negotiation,
    counted: Negotiation,
    members: Vec<ParticipantId>,
    offer: String,
    count: usize,
}

/// Runs `job` in a copy of this benchmark and waits for it. Storing a million records
/// takes and frees gigabytes; in this process the allocator would hand that memory back
/// to the system during the negotiations measured next and charge them for it, which
/// a provider that came to hold its agreements over time does not pay.
fn seed_in_own_process(job: &SeedJob) {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), serde_json::to_vec(job).unwrap()).unwrap();
    let status = std::process::Command::new(std::env::current_exe().expect("this benchmark"))
        .env(SEED_JOB, file.path())
        .status()
        .expect("the seeding process starts");
    assert!(status.success(), "the seeding process failed: {status}");
}

/// The [`SEED_JOB`] process: stores the agreements, makes them durable, and ends.
async fn run_seed_job(path: &std::path::Path) {
    let job: SeedJob = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let storage = stopped_storage(&job.database_dir).await;
    seed_agreements(
        storage,
        &job.plain,
        &job.counted,
        &job.members,
        &job.offer,
        job.count,
    )
    .await;
}

/// The storage of a stopped node, once the node has let go of it.
async fn stopped_storage(database_dir: &std::path::Path) -> Arc<dyn Storage> {
    for _ in 0..300 {
        if let Ok(storage) = SledStorage::open(database_dir) {
            return storage;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the stopped provider's database was not released");
}

/// Each consumer's channel to a provider that started again, opened by a negotiation
/// (asked again while the old connection is found closed), not measured.
async fn reconnect(contexts: &[Arc<liutong_node::runtime::Node>], address: &str, offer: &str) {
    for ctx in contexts {
        let mut tries = 0;
        while let Err(e) = ctx.contracts.request(address, offer, "urbanPlanning").await {
            tries += 1;
            assert!(tries < 50, "the provider is not reachable again: {e}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Stores `count` finalized agreements in a stopped provider's `storage`, written
/// exactly as the provider commits its own (each one's records from
/// [`Contracts::record_writes`] of its AGREED and FINALIZED states), in large batches.
/// They are copies of `plain` (or, for some, `counted`) with their own IDs, creation
/// times, consumers and offers: a quarter between the benchmark's consumers (`members`)
/// and its offer, the rest among 10,000 other members and 1,000 other offers, one in
/// eight of those counting uses.
async fn seed_agreements(
    storage: Arc<dyn Storage>,
    plain: &Negotiation,
    counted: &Negotiation,
    bench_members: &[ParticipantId],
    offer: &str,
    count: usize,
) {
    const BATCH: usize = 20_000;
    // An AGREED record without its envelopes and policy, for the index entry alone.
    let mut light = plain.clone();
    light.state = liutong_node::contract::NegotiationStatus::Agreed;
    light.request.payload.clear();
    light.request.signatures.clear();
    light.agreement = None;
    light.offer_policy = None;
    let members: Vec<ParticipantId> = (0..10_000)
        .map(|m| ParticipantId::with_check_character(&format!("91440300MA5{m:05}0")).unwrap())
        .collect();
    let offers: Vec<String> = (0..1_000u64)
        .map(|o| format!("{}/v1", seeded_id("prd", o)))
        .collect();
    let mut i = 0usize;
    while i < count {
        let end = (i + BATCH).min(count);
        let mut trees: std::collections::BTreeMap<&'static str, Vec<Write>> = Default::default();
        for k in i..end {
            let mine = k.is_multiple_of(4);
            let mut n = if !mine && k % 32 == 1 {
                counted.clone()
            } else {
                plain.clone()
            };
            n.id = seeded_id("neg", k as u64);
            n.agreement_id = Some(seeded_id("agr", k as u64));
            if mine {
                n.peer = bench_members[k / 4 % bench_members.len()].clone();
                n.offer_id = offer.to_owned();
            } else {
                n.peer = members[mix(k as u64) as usize % members.len()].clone();
                n.offer_id = offers[mix(k as u64 + 1) as usize % offers.len()].clone();
            }
            n.created_at = plain.created_at - (count - k) as i64;
            n.updated_at = n.created_at;
            // Of its AGREED record only the agreement index entry is kept: the FINALIZED
            // record replaces the rest.
            let mut agreed = light.clone();
            agreed.id.clone_from(&n.id);
            agreed.agreement_id.clone_from(&n.agreement_id);
            for (tree, write) in Contracts::record_writes(&agreed)
                .into_iter()
                .filter(|(tree, _)| *tree == "agreements")
                .chain(Contracts::record_writes(&n))
            {
                trees.entry(tree).or_default().push(write);
            }
        }
        let storage = storage.clone();
        tokio::task::spawn_blocking(move || {
            for (tree, writes) in trees {
                storage.apply(tree, writes).unwrap();
            }
        })
        .await
        .unwrap();
        if end.is_multiple_of(100_000) {
            eprintln!("(c) {end} stored");
        }
        i = end;
    }
    storage.flush().await.unwrap();
}
