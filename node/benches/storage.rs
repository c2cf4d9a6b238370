//! Storage engine benchmarks: sled against PostgreSQL in one run, on this machine, with
//! real nodes (mutual TLS on loopback), a real sled database in a temporary directory
//! and a throwaway PostgreSQL cluster (the tests' harness: `initdb` on a loopback port,
//! removed when the run ends; PostgreSQL's server programs must be installed).
//!
//! (a) Complete negotiations (request to FINALIZED, every state durable and audited),
//!     `BENCH_CONSUMERS` (default 16) consumers in a closed loop against a provider on
//!     sled, on PostgreSQL as a single node, and on PostgreSQL as the leader of
//!     replicas (holding the leadership lease, so every write is fenced).
//! (b) Durable audit appends (256 concurrent writers) on the same three.
//! (c) Failover: two `liutong serve` replicas of a provider on PostgreSQL with the
//!     default lease (3 s, renewed every 1 s); the leader is killed (SIGKILL) and the
//!     time until the standby answers SERVING on its health endpoint, and until a
//!     negotiation against it succeeds, is measured; `BENCH_ROUNDS` (default 3) rounds,
//!     the killed replica restarted as the standby each time.
//!
//! Run: `cargo bench -p liutong-node --bench storage`. `BENCH_ONLY=a`, `b` or `c` runs
//! one part; scale with `BENCH_NEGOTIATIONS` (default 1000 per engine). Each figure is
//! printed next to its target; the exit status does not depend on the targets.

#[path = "../tests/postgres/mod.rs"]
mod postgres;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use liutong_node::audit::log::AuditLog;
use liutong_node::authority;
use liutong_node::config::{NodeConfig, StorageEngine, StorageSection};
use liutong_node::identity::ParticipantId;
use liutong_node::runtime::{Node, RunningNode};
use liutong_node::storage::{PostgresStorage, SledStorage, Storage};

mod common;
use common::{cpu_seconds, env_u64, event, only};

/// A lease long enough that the in-process leader of (a) and (b) never renews it.
const BENCH_LEASE: Duration = Duration::from_secs(3600);

/// Bound of every wait for a process or an answer.
const LIMIT: Duration = Duration::from_secs(60);

fn main() {
    common::block_on(run());
}

/// Where a provider keeps its state.
#[derive(Clone, Copy, PartialEq)]
enum Engine {
    Sled,
    /// A single node on PostgreSQL: its writes are not fenced.
    Postgres,
    /// The leader of replicas: it holds the lease, and every write checks it.
    PostgresLeader,
}

impl Engine {
    fn name(self) -> &'static str {
        match self {
            Engine::Sled => "sled",
            Engine::Postgres => "PostgreSQL, single node",
            Engine::PostgresLeader => "PostgreSQL, leader of replicas (fenced writes)",
        }
    }
}

/// A member's node directory, admitted and initialised; its configuration.
struct Member {
    config_path: PathBuf,
    config: NodeConfig,
}

struct DataSpace {
    dir: tempfile::TempDir,
    _authority: authority::RunningAuthority,
    members: Vec<Member>,
}

/// An authority and `n` admitted members, each with a node directory (not started).
async fn data_space(n: usize) -> DataSpace {
    let dir = tempfile::tempdir().expect("temp dir");
    let authority = common::space::serve_authority(dir.path()).await;
    let members = (0..n)
        .map(|i| {
            let id = ParticipantId::with_check_character(&format!("91330100MA2C{i:04}0"))
                .unwrap()
                .to_string();
            let (config, config_path) = common::space::member_node(
                dir.path(),
                &authority,
                i,
                &id,
                free_addr(),
                free_addr(),
            );
            Member {
                config_path,
                config,
            }
        })
        .collect();
    DataSpace {
        dir,
        _authority: authority,
        members,
    }
}

fn free_addr() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// `[storage]` for a new database of the harness' cluster, the password in a file in
/// `dir`.
fn on_postgres(dir: &Path, replicas: bool) -> (StorageSection, postgres::Database) {
    let cluster = postgres::shared();
    let db = cluster.database();
    let section = StorageSection {
        engine: StorageEngine::Postgres,
        url: Some(db.url.clone()),
        password_file: Some(cluster.password_file(dir)),
        replicas,
        ..Default::default()
    };
    (section, db)
}

/// Starts `member` in this process on `engine`.
async fn start(member: &Member, engine: Engine) -> RunningNode {
    let mut config = member.config.clone();
    let dir = member.config_path.parent().unwrap();
    match engine {
        Engine::Sled => RunningNode::start(config).await.unwrap(),
        Engine::Postgres => {
            config.storage = on_postgres(dir, false).0;
            RunningNode::start(config).await.unwrap()
        }
        Engine::PostgresLeader => {
            let (section, db) = on_postgres(dir, true);
            config.storage = section;
            let storage = tokio::task::spawn_blocking(move || {
                let storage = PostgresStorage::open(db.target()).unwrap();
                assert!(
                    storage
                        .acquire_lease("bench", BENCH_LEASE)
                        .unwrap()
                        .is_some(),
                    "a new database's lease is free"
                );
                storage
            })
            .await
            .unwrap();
            RunningNode::start_on(config, storage).await.unwrap()
        }
    }
}

/// Publishes a small product at the provider (directly, not over the API); its offer.
async fn publish(node: &RunningNode) -> String {
    common::space::publish(node, 4096)
        .await
        .offer_id()
        .expect("an offer")
}

/// `total` negotiations shared out among the consumers, each starting its next as soon
/// as one ends; per second.
async fn negotiate(consumers: &[Arc<Node>], address: &str, offer: &str, total: usize) -> Run {
    let started = Instant::now();
    let cpu = cpu_seconds();
    let mut tasks = Vec::new();
    for (c, ctx) in consumers.iter().enumerate() {
        let (ctx, offer, address) = (ctx.clone(), offer.to_owned(), address.to_owned());
        let count = total / consumers.len() + usize::from(c < total % consumers.len());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(count);
            for _ in 0..count {
                let t = Instant::now();
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
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.unwrap());
    }
    latencies.sort();
    Run {
        secs: started.elapsed().as_secs_f64(),
        cpu: cpu_seconds() - cpu,
        latencies,
    }
}

struct Run {
    latencies: Vec<Duration>,
    secs: f64,
    cpu: f64,
}

impl Run {
    fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.secs
    }

    fn percentile_ms(&self, q: f64) -> f64 {
        let n = self.latencies.len();
        self.latencies[((n as f64 * q) as usize).min(n - 1)].as_secs_f64() * 1e3
    }
}

async fn negotiations() {
    let total = env_u64("BENCH_NEGOTIATIONS", 1000) as usize;
    let consumers = env_u64("BENCH_CONSUMERS", 16).max(1) as usize;
    let engines = [Engine::Sled, Engine::Postgres, Engine::PostgresLeader];
    let space = data_space(engines.len() + consumers).await;
    let mut providers = Vec::new();
    for (i, engine) in engines.iter().enumerate() {
        providers.push(start(&space.members[i], *engine).await);
    }
    let mut nodes = Vec::new();
    for member in &space.members[engines.len()..] {
        nodes.push(start(member, Engine::Sled).await);
    }
    for node in providers.iter().chain(&nodes) {
        node.node.refresh.refresh().await.unwrap();
    }
    let contexts: Vec<_> = nodes.iter().map(|n| n.node.clone()).collect();
    let mut sled_rate = 0.0;
    for (engine, provider) in engines.iter().zip(&providers) {
        let offer = publish(provider).await;
        let address = provider.peer_addr().to_string();
        // Warm-up: each consumer's channel to the provider and the caches, not measured.
        negotiate(&contexts, &address, &offer, consumers).await;
        eprintln!("(a) negotiating with the provider on {}", engine.name());
        let run = negotiate(&contexts, &address, &offer, total).await;
        let target = if *engine == Engine::Sled {
            sled_rate = run.rate();
            "the reference".to_owned()
        } else {
            format!(
                "{:.0} % of sled's (target >= 50 %)",
                100.0 * run.rate() / sled_rate
            )
        };
        println!(
            "(a) negotiations, provider on {}, {consumers} consumers, closed loop: {} in {:.2} s = {:.0}/s, {target}",
            engine.name(),
            run.latencies.len(),
            run.secs,
            run.rate(),
        );
        println!(
            "    latency p50 {:.2} ms, p99 {:.2} ms; CPU {:.2} ms per negotiation (all nodes, not the database server)",
            run.percentile_ms(0.50),
            run.percentile_ms(0.99),
            run.cpu * 1e3 / run.latencies.len() as f64
        );
    }
    for node in providers.into_iter().chain(nodes) {
        node.shutdown().await.unwrap();
    }
    drop(space);
}

/// Durable appends per second with `writers` concurrent writers.
async fn appends(storage: Arc<dyn Storage>, writers: u64, per_writer: u64) -> f64 {
    let log = AuditLog::open(storage).expect("log");
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
    (writers * per_writer) as f64 / started.elapsed().as_secs_f64()
}

async fn audit_appends() {
    let writers = 256;
    let per_writer = env_u64("BENCH_APPENDS_PER_WRITER", 40);
    let dir = tempfile::tempdir().expect("temp dir");
    let mut sled_rate = 0.0;
    for engine in [Engine::Sled, Engine::Postgres, Engine::PostgresLeader] {
        let storage: Arc<dyn Storage> = match engine {
            Engine::Sled => SledStorage::open(&dir.path().join("sled")).expect("sled"),
            Engine::Postgres | Engine::PostgresLeader => {
                let db = postgres::shared().database();
                tokio::task::spawn_blocking(move || {
                    let storage = PostgresStorage::open(db.target()).unwrap();
                    if engine == Engine::PostgresLeader {
                        assert!(
                            storage
                                .acquire_lease("bench", BENCH_LEASE)
                                .unwrap()
                                .is_some()
                        );
                    }
                    storage
                })
                .await
                .unwrap()
            }
        };
        eprintln!("(b) appending on {}", engine.name());
        let rate = appends(storage, writers, per_writer).await;
        let target = if engine == Engine::Sled {
            sled_rate = rate;
            "target >= 20000/s".to_owned()
        } else {
            format!("{:.0} % of sled's (no target)", 100.0 * rate / sled_rate)
        };
        println!(
            "(b) durable audit appends on {}, {writers} concurrent writers: {} = {rate:.0}/s, {target}",
            engine.name(),
            writers * per_writer,
        );
    }
}

/// A `liutong serve` replica, killed when dropped.
struct Replica {
    config: PathBuf,
    health: std::net::SocketAddr,
    peer: String,
    log: PathBuf,
    child: Option<Child>,
}

impl Replica {
    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        self.child = Some(
            Command::new(env!("CARGO_BIN_EXE_liutong"))
                .arg("serve")
                .arg("--config")
                .arg(&self.config)
                .env_remove("LIUTONG_CONFIG")
                .env_remove("LIUTONG_PAUSE_AT")
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("start liutong serve"),
        );
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits until the health endpoint answers `want`; when it did, since `from`.
    async fn wait_for(&self, want: tonic_health::ServingStatus, from: Instant) -> Duration {
        let deadline = Instant::now() + LIMIT;
        loop {
            let status = liutong_node::health::check(self.health, Duration::from_secs(1)).await;
            if status == Ok(want) {
                return from.elapsed();
            }
            assert!(
                Instant::now() < deadline,
                "the replica did not answer {want:?} within {LIMIT:?} (last: {status:?}); its log:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Negotiates with `address` until one succeeds; when it did, since `from`.
async fn first_negotiation(consumer: &Node, address: &str, offer: &str, from: Instant) -> Duration {
    let deadline = Instant::now() + LIMIT;
    loop {
        let tried = tokio::time::timeout(
            Duration::from_secs(10),
            consumer.contracts.request(address, offer, "urbanPlanning"),
        )
        .await;
        if let Ok(Ok(n)) = tried {
            assert_eq!(n.state.to_string(), "FINALIZED");
            return from.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "no negotiation with {address} succeeded within {LIMIT:?}: {tried:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

async fn failover() {
    let rounds = env_u64("BENCH_ROUNDS", 3).max(1) as usize;
    let space = data_space(2).await;
    let consumer = start(&space.members[1], Engine::Sled).await;
    let provider = &space.members[0];
    let dir_a = provider.config_path.parent().unwrap().to_owned();
    let (section, _db) = on_postgres(&dir_a, true);
    let mut config = provider.config.clone();
    config.storage = section;
    // The offer is published by the node started once in this process (writing
    // unfenced, as a single node), before the replicas take turns on its database.
    let offer = {
        let node = RunningNode::start(config.clone()).await.unwrap();
        node.node.refresh.refresh().await.unwrap();
        let offer = publish(&node).await;
        node.shutdown().await.unwrap();
        offer
    };
    consumer.node.refresh.refresh().await.unwrap();
    // The second replica: the same directory copied, with addresses of its own.
    let dir_b = space.dir.path().join("replica-b");
    let copied = Command::new("cp")
        .arg("-a")
        .arg(&dir_a)
        .arg(&dir_b)
        .status()
        .unwrap();
    assert!(copied.success());
    let mut replicas = Vec::new();
    for (name, dir) in [("a", &dir_a), ("b", &dir_b)] {
        let health = free_addr();
        if name == "b" {
            config.node.listen = free_addr();
            config.node.admin_listen = free_addr();
        }
        config.node.health_listen = Some(health);
        let path = dir.join("node.toml");
        std::fs::write(&path, config.to_commented_toml()).unwrap();
        replicas.push(Replica {
            config: path,
            health,
            peer: config.node.listen.to_string(),
            log: space.dir.path().join(format!("replica-{name}.log")),
            child: None,
        });
    }
    use tonic_health::ServingStatus::{NotServing, Serving};
    replicas[0].spawn();
    replicas[0].wait_for(Serving, Instant::now()).await;
    replicas[1].spawn();
    replicas[1].wait_for(NotServing, Instant::now()).await;
    let (mut leader, mut standby) = (0, 1);
    let (mut serving, mut negotiated) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        first_negotiation(
            &consumer.node,
            &replicas[leader].peer,
            &offer,
            Instant::now(),
        )
        .await;
        eprintln!("(c) round {}: killing the leader", round + 1);
        let killed = Instant::now();
        replicas[leader].kill();
        serving.push(replicas[standby].wait_for(Serving, killed).await);
        negotiated
            .push(first_negotiation(&consumer.node, &replicas[standby].peer, &offer, killed).await);
        eprintln!(
            "    SERVING after {:.2} s, a negotiation after {:.2} s",
            serving[round].as_secs_f64(),
            negotiated[round].as_secs_f64()
        );
        // The killed replica comes back as the standby.
        replicas[leader].spawn();
        replicas[leader].wait_for(NotServing, Instant::now()).await;
        std::mem::swap(&mut leader, &mut standby);
    }
    let s = |d: Duration| format!("{:.2} s", d.as_secs_f64());
    println!(
        "(c) failover, leader killed (SIGKILL), lease 3 s renewed every 1 s, {rounds} rounds: standby SERVING after median {} (each: {}); first negotiation after median {} (target <= 5 s)",
        s(median(serving.clone())),
        serving.iter().map(|d| s(*d)).collect::<Vec<_>>().join(", "),
        s(median(negotiated.clone())),
    );
    drop(replicas);
    consumer.shutdown().await.unwrap();
}

async fn run() {
    if only("a") {
        negotiations().await;
    }
    if only("b") {
        audit_appends().await;
    }
    if only("c") {
        failover().await;
    }
}
