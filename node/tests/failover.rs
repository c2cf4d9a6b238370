//! Replicas of one node on one PostgreSQL database: the leadership lease fences every
//! write, so a replica that lost its lease cannot write; and real `liutong serve`
//! replicas fail over when the leader is killed.

#[path = "postgres/mod.rs"]
mod postgres;
mod process;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use liutong_node::config::{NodeConfig, StorageEngine, StorageSection};
use liutong_node::storage::{PostgresStorage, Storage, Write};
use process::*;

const LEASE: Duration = Duration::from_secs(60);

fn refused_as_deposed(what: &str, reason: String) {
    assert!(
        reason.contains("no longer the leader"),
        "{what}: refused, but not for the lease: {reason}"
    );
}

/// A leader whose lease expired (by the database's clock) is refused on every kind of
/// write, and nothing it tried to write after that is in the database; the replica that
/// takes the lease over writes, and the old token stays refused.
#[test]
fn a_replica_whose_lease_expired_cannot_write() {
    let cluster = postgres::shared();
    let db = cluster.database();
    let leader = PostgresStorage::open(db.target()).unwrap();
    let standby = PostgresStorage::open(db.target()).unwrap();
    let first = leader.acquire_lease("leader", LEASE).unwrap();
    assert!(first.is_some(), "a free lease is taken");
    assert_eq!(
        standby.acquire_lease("standby", LEASE).unwrap(),
        None,
        "a held lease is not taken"
    );
    leader.put("t", b"before", b"1").unwrap();
    let mut payload = leader.blobs().writer("p/a", false).unwrap();
    payload.write_at(0, b"before").unwrap();
    assert!(leader.renew_lease(LEASE).unwrap());
    assert!(leader.lease_lost().borrow().is_none());

    // The leader is partitioned past its lease: the database's clock says it expired.
    cluster.psql(
        &db.name,
        "UPDATE liutong_lease SET expires_at = now() - interval '1 second'",
    );
    let e = |r: Result<(), liutong_node::storage::StorageError>| r.unwrap_err().to_string();
    refused_as_deposed("put", e(leader.put("t", b"after", b"2")));
    refused_as_deposed("delete", e(leader.delete("t", b"before")));
    refused_as_deposed(
        "insert_new",
        leader
            .insert_new("t", b"new", b"3")
            .unwrap_err()
            .to_string(),
    );
    refused_as_deposed(
        "apply",
        e(leader.apply("t", vec![Write::Put(b"batch".to_vec(), b"4".to_vec())])),
    );
    refused_as_deposed(
        "payload write",
        payload.write_at(6, b"after").unwrap_err().to_string(),
    );
    refused_as_deposed(
        "payload length",
        payload.set_len(2).unwrap_err().to_string(),
    );
    refused_as_deposed(
        "new payload",
        leader
            .blobs()
            .writer("p/b", false)
            .err()
            .unwrap()
            .to_string(),
    );
    refused_as_deposed(
        "payload removal",
        leader.blobs().remove("p/a").unwrap_err().to_string(),
    );
    assert!(
        leader.lease_lost().borrow().is_some(),
        "the refusal is reported to whoever watches the lease"
    );
    assert!(
        !leader.renew_lease(LEASE).unwrap(),
        "an expired lease is not renewed"
    );

    // Nothing it tried is in the database.
    assert_eq!(
        cluster.psql(
            &db.name,
            "SELECT string_agg(encode(key, 'escape'), ',' ORDER BY key) FROM liutong_kv"
        ),
        "before"
    );
    assert_eq!(
        cluster.psql(
            &db.name,
            "SELECT string_agg(name || ':' || len, ',' ORDER BY name) FROM liutong_blob_files"
        ),
        "p/a:6"
    );
    assert_eq!(
        standby.blobs().read_at("p/a", 0, 100).unwrap().unwrap(),
        b"before"
    );

    // The standby takes the lease over with a newer token and writes; the old token
    // stays refused although the lease is live again.
    let second = standby.acquire_lease("standby", LEASE).unwrap();
    assert!(second > first, "{second:?} after {first:?}");
    standby.put("t", b"by the new leader", b"5").unwrap();
    refused_as_deposed("put after the takeover", e(leader.put("t", b"late", b"6")));
    assert_eq!(standby.get("t", b"late").unwrap(), None);
    assert_eq!(
        standby.get("t", b"by the new leader").unwrap().as_deref(),
        Some(&b"5"[..])
    );
}

/// A released lease is free at once for another replica, and an engine that never took
/// the lease writes unfenced (a single node, `storage migrate`).
#[test]
fn a_released_lease_is_taken_at_once_and_unfenced_engines_write() {
    let db = postgres::shared().database();
    let a = PostgresStorage::open(db.target()).unwrap();
    let b = PostgresStorage::open(db.target()).unwrap();
    let unfenced = PostgresStorage::open(db.target()).unwrap();
    assert!(a.acquire_lease("a", LEASE).unwrap().is_some());
    assert_eq!(b.acquire_lease("b", LEASE).unwrap(), None);
    a.release_lease().unwrap();
    assert!(b.acquire_lease("b", LEASE).unwrap().is_some());
    refused_as_deposed("put", a.put("t", b"k", b"v").unwrap_err().to_string());
    unfenced.put("t", b"k", b"v").unwrap();
    b.put("t", b"k2", b"v").unwrap();
}

/// Bound of every wait in the process test: generous, as the machine may be busy; each
/// wait ends as soon as its condition holds.
const LIMIT: Duration = Duration::from_secs(60);

fn ok(o: Output) -> String {
    assert!(o.status.success(), "liutong failed: {}", text(&o));
    String::from_utf8(o.stdout).unwrap()
}

/// Forwards a child's output lines to a channel, from a thread that keeps draining it.
fn lines(out: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    rx
}

/// Waits until a line containing `needle` arrives, for at most [`LIMIT`].
fn wait_line(rx: &mpsc::Receiver<String>, needle: &str, what: &str) {
    let deadline = Instant::now() + LIMIT;
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return,
            Ok(line) => seen.push(line),
            Err(_) => break,
        }
    }
    panic!("{what}: no line with {needle:?}; saw:\n{}", seen.join("\n"));
}

/// The health endpoint's answer: `Ok` when SERVING, else what it said.
fn health(addr: &str, wait: &str) -> Result<(), String> {
    let o = liutong(&["health", "--addr", addr, "--wait", wait]);
    if o.status.success() {
        Ok(())
    } else {
        Err(text(&o))
    }
}

/// Asserts that nothing listens on `addr`: a connection is refused.
fn refused(addr: &str, what: &str) {
    match std::net::TcpStream::connect(addr) {
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
        Err(e) => panic!("{what} at {addr}: not refused but {e}"),
        Ok(_) => panic!("{what} at {addr} accepts connections"),
    }
}

/// One `liutong serve` replica of the provider.
struct Replica {
    config: PathBuf,
    health: String,
    child: Option<Child>,
    stderr: Option<mpsc::Receiver<String>>,
}

impl Replica {
    fn config(&self) -> &str {
        self.config.to_str().unwrap()
    }

    /// Starts it and waits for the line that says it leads (`serving:`) or waits.
    fn start(&mut self, until: &str) {
        let mut child = Command::new(BIN)
            .args(["serve", "--config", self.config()])
            .env_remove("LIUTONG_CONFIG")
            .env_remove("LIUTONG_PAUSE_AT")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start liutong serve");
        let stdout = lines(child.stdout.take().unwrap());
        self.stderr = Some(lines(child.stderr.take().unwrap()));
        self.child = Some(child);
        wait_line(&stdout, until, "liutong serve");
        std::thread::spawn(move || for _ in stdout {});
    }

    /// Sends `signal` (e.g. `STOP`, `CONT`) to the process.
    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("started").id().to_string();
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} {pid}");
    }

    /// Waits for the process to exit by itself; its status and standard error.
    fn exited(&mut self) -> (std::process::ExitStatus, String) {
        let mut child = self.child.take().expect("started");
        let deadline = Instant::now() + LIMIT;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                panic!("the replica did not exit within {LIMIT:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let said: Vec<String> = self.stderr.take().unwrap().iter().collect();
        (status, said.join("\n"))
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A member's node directory: joined, admitted by the authority and initialised.
fn member(
    root: &Path,
    authority: &Path,
    auth_addr: &str,
    id: &str,
    name: &str,
    kind: &str,
    roles: &str,
) -> PathBuf {
    let bundle = root.join(format!("bundle-{id}"));
    let node = root.join(id);
    ok(liutong(&["join", "--dir", arg(&node), "--participant", id]));
    let request = node.join("identity/admission-request.json");
    ok(liutong(&[
        "authority",
        "admit",
        "--dir",
        arg(authority),
        "--request",
        arg(&request),
        "--participant",
        id,
        "--name",
        name,
        "--kind",
        kind,
        "--sector",
        "transport",
        "--region",
        "330100",
        "--roles",
        roles,
        "--out",
        arg(&bundle),
    ]));
    ok(liutong(&[
        "init",
        "--dir",
        arg(&node),
        "--bundle",
        arg(&bundle),
        "--listen",
        &format!("127.0.0.1:{}", free_port()),
        "--admin-listen",
        &format!("127.0.0.1:{}", free_port()),
        "--authority",
        auth_addr,
    ]));
    node.join("node.toml")
}

fn request(consumer: &str, peer: &str, offer: &str) -> Command {
    let mut c = command(&[
        "contract",
        "request",
        "--peer",
        peer,
        "--offer",
        offer,
        "--purpose",
        "statistics",
        "--json",
        "--config",
        consumer,
    ]);
    c.stdout(Stdio::piped()).stderr(Stdio::null());
    c
}

/// Two replicas of a provider on one database. A standby answers NOT_SERVING on its
/// health endpoint and binds neither its peer nor its local port, so a load balancer's
/// check of the peer port finds it down. The consumer negotiates and pulls
/// against the leader; the leader is killed (SIGKILL) with a negotiation and a pull in
/// flight; the standby takes the lease and serves; every acknowledged negotiation,
/// receipt and audit entry is there, the audit log verifies across the failover, the
/// new leader negotiates, and the killed replica comes back as a standby. Then that
/// leader is paused past its lease: the standby takes over, and the paused one, resumed,
/// stops itself (exit status 75) instead of serving alongside.
///
/// The replicas listen on addresses of their own; the consumer addresses the one that
/// leads (a Service or a load balancer would do that in a deployment).
#[test]
fn the_standby_takes_over_when_the_leader_is_killed_and_nothing_acknowledged_is_lost() {
    let cluster = postgres::shared();
    let db = cluster.database();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let authority = root.join("authority");
    let auth_addr = format!("127.0.0.1:{}", free_port());
    ok(liutong(&[
        "authority",
        "init",
        "--dir",
        arg(&authority),
        "--name",
        "Failover Data Space",
    ]));
    let mut auth = spawn_authority(&authority, &auth_addr);
    let out = lines(auth.stdout.take().unwrap());
    wait_line(&out, "serving its trust list", "authority serve");
    std::thread::spawn(move || for _ in out {});

    let provider = member(
        root,
        &authority,
        &auth_addr,
        TRANSPORT,
        "Hangzhou Transport Bureau",
        "government",
        "provider,consumer",
    );
    let consumer = member(
        root,
        &authority,
        &auth_addr,
        LOGISTICS,
        "Hangzhou Logistics Co.",
        "enterprise",
        "consumer",
    );
    let mut config = NodeConfig::load(&provider).unwrap();
    config.storage = StorageSection {
        engine: StorageEngine::Postgres,
        url: Some(db.url.clone()),
        password_file: Some(cluster.password_file(provider.parent().unwrap())),
        replicas: true,
        ..Default::default()
    };
    let peer_a = config.node.listen.to_string();
    let health_a = format!("127.0.0.1:{}", free_port());
    config.node.health_listen = Some(health_a.parse().unwrap());
    std::fs::write(&provider, config.to_commented_toml()).unwrap();
    // The second replica: the same identity and configuration in its own directory,
    // with addresses of its own.
    let dir_b = root.join("replica-b");
    let cp = Command::new("cp")
        .arg("-a")
        .arg(provider.parent().unwrap())
        .arg(&dir_b)
        .status()
        .unwrap();
    assert!(cp.success());
    let health_b = format!("127.0.0.1:{}", free_port());
    config.node.health_listen = Some(health_b.parse().unwrap());
    config.node.listen = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    config.node.admin_listen = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let peer_b = config.node.listen.to_string();
    std::fs::write(dir_b.join("node.toml"), config.to_commented_toml()).unwrap();

    let mut a = Replica {
        config: provider.clone(),
        health: health_a,
        child: None,
        stderr: None,
    };
    let mut b = Replica {
        config: dir_b.join("node.toml"),
        health: health_b,
        child: None,
        stderr: None,
    };
    a.start("serving:");
    b.start("waiting for the leadership lease");
    health(&a.health, "10s").expect("the leader serves");
    let said = health(&b.health, "0s").expect_err("a standby does not serve");
    assert!(said.contains("answers NotServing"), "{said}");
    // A load balancer in front of the peer port (a TCP check, or any check on that
    // port) must see the standby as down: its peer and local ports are not bound.
    let admin_b = config.node.admin_listen.to_string();
    for (what, addr) in [("peer API", &peer_b), ("local API", &admin_b)] {
        refused(addr, &format!("the standby's {what}"));
    }

    let mut consumer_node = Replica {
        config: consumer.clone(),
        health: String::new(),
        child: None,
        stderr: None,
    };
    consumer_node.start("serving:");
    for config in [a.config(), consumer_node.config()] {
        ok(liutong(&["trust", "refresh", "--config", config]));
    }
    let csv = root.join("traffic.csv");
    let mut rows = String::from("road,hour,vehicles\n");
    for i in 0..60_000u64 {
        rows.push_str(&format!("Road {i},{},{}\n", i % 24, i * 7 % 1999));
    }
    std::fs::write(&csv, rows).unwrap();
    let policy = root.join("open.toml");
    std::fs::write(&policy, OPEN_POLICY).unwrap();
    let published: serde_json::Value = serde_json::from_str(&ok(liutong(&[
        "product",
        "publish",
        arg(&csv),
        "--title",
        "Road traffic flow",
        "--classification",
        "general-2",
        "--format",
        "csv",
        "--policy",
        arg(&policy),
        "--json",
        "--config",
        a.config(),
    ])))
    .unwrap();
    let offer = published["offer_id"].as_str().unwrap().to_owned();
    let c = consumer_node.config().to_owned();

    // Acknowledged before the failover: two agreements, one of them pulled to its receipt.
    let mut agreements = Vec::new();
    for _ in 0..2 {
        let done: serde_json::Value =
            serde_json::from_str(&ok(request(&c, &peer_a, &offer).output().unwrap())).unwrap();
        assert_eq!(done["state"], "FINALIZED", "{done}");
        agreements.push(done["agreement_id"].as_str().unwrap().to_owned());
    }
    let pulled: serde_json::Value = serde_json::from_str(&ok(liutong(&[
        "transfer",
        "pull",
        "--agreement",
        &agreements[0],
        "--json",
        "--config",
        &c,
    ])))
    .unwrap();
    assert_eq!(pulled["state"], "COMPLETED", "{pulled}");
    let receipted = agreements[0].clone();

    // In the middle of a negotiation and a pull, the leader dies.
    let mut in_flight = vec![
        request(&c, &peer_a, &offer).spawn().unwrap(),
        command(&[
            "transfer",
            "pull",
            "--agreement",
            &agreements[1],
            "--json",
            "--config",
            &c,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap(),
    ];
    std::thread::sleep(Duration::from_millis(100));
    a.kill();
    health(&b.health, "60s").expect("the standby takes over and serves");
    std::net::TcpStream::connect(&peer_b).expect("the new leader's peer port is bound");
    refused(&peer_a, "the killed leader's peer API");
    for mut child in in_flight.drain(..) {
        let deadline = Instant::now() + LIMIT;
        while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    // Everything acknowledged is at the new leader.
    for agreement in &agreements {
        let shown: serde_json::Value = serde_json::from_str(&ok(liutong(&[
            "contract",
            "show",
            agreement,
            "--json",
            "--config",
            b.config(),
        ])))
        .unwrap();
        assert_eq!(shown["state"], "FINALIZED", "{shown}");
        let log = ok(liutong(&[
            "audit",
            "search",
            "--agreement",
            agreement,
            "--config",
            b.config(),
        ]));
        assert!(
            log.contains(agreement.as_str()),
            "the agreement's audit entries:\n{log}"
        );
    }
    let log = ok(liutong(&[
        "audit",
        "search",
        "--agreement",
        &receipted,
        "--config",
        b.config(),
    ]));
    assert_eq!(
        log.matches("transfer COMPLETED: receipt for").count(),
        1,
        "the receipt is recorded once:\n{log}"
    );
    ok(liutong(&["audit", "verify", "--config", b.config()]));

    // The new leader negotiates and delivers.
    let done: serde_json::Value =
        serde_json::from_str(&ok(request(&c, &peer_b, &offer).output().unwrap())).unwrap();
    assert_eq!(done["state"], "FINALIZED", "{done}");
    let pulled: serde_json::Value = serde_json::from_str(&ok(liutong(&[
        "transfer",
        "pull",
        "--agreement",
        done["agreement_id"].as_str().unwrap(),
        "--json",
        "--config",
        &c,
    ])))
    .unwrap();
    assert_eq!(pulled["state"], "COMPLETED", "{pulled}");
    ok(liutong(&["audit", "verify", "--config", b.config()]));

    // The killed replica, started again, is a standby.
    a.start("waiting for the leadership lease");
    let said = health(&a.health, "0s").expect_err("the restarted replica does not serve");
    assert!(said.contains("answers NotServing"), "{said}");
    refused(&peer_a, "the restarted standby's peer API");
    health(&b.health, "0s").expect("the leader still serves");

    // The leader is paused past its lease (as a partition would hold it): the standby
    // takes over, and the old leader, resumed, finds its lease gone and stops itself.
    b.signal("STOP");
    health(&a.health, "60s").expect("the standby takes over from a paused leader");
    b.signal("CONT");
    let (status, said) = b.exited();
    assert_eq!(status.code(), Some(75), "{said}");
    assert!(said.contains("lost the leadership"), "{said}");
    let done: serde_json::Value =
        serde_json::from_str(&ok(request(&c, &peer_a, &offer).output().unwrap())).unwrap();
    assert_eq!(done["state"], "FINALIZED", "{done}");
    ok(liutong(&["audit", "verify", "--config", a.config()]));
}

/// The README's walk-through of two replicas by hand, run as written against a database
/// of the test cluster: the demo's provider is migrated, run as two replicas, the
/// leader is killed and the standby serves everything it wrote, then hands the lease
/// back on SIGTERM. It uses the fixed ports 7802 and 7812, so they must be free.
#[test]
fn the_readme_replicas_by_hand_run_as_written() {
    use std::os::unix::process::CommandExt as _;
    let readme = include_str!("../../README.md");
    let from = readme
        .find("**Two replicas by hand.**")
        .expect("the README shows two replicas by hand");
    let block = &readme[from..];
    let start = block.find("```sh\n").unwrap() + "```sh\n".len();
    let script = &block[start..start + block[start..].find("```").unwrap()];
    let cluster = postgres::shared();
    let db = cluster.database();
    let tmp = tempfile::tempdir().unwrap();
    let bin_dir = Path::new(BIN).parent().unwrap();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap());
    // Its own process group, so the replicas it starts in the background are stopped
    // with it; its output goes to files, which those keep open.
    let (out_file, err_file) = (tmp.path().join("stdout"), tmp.path().join("stderr"));
    let mut child = Command::new("bash")
        .args(["-euo", "pipefail", "-c", script])
        .current_dir(tmp.path())
        .env("PATH", path)
        .env("DB_URL", &db.url)
        .env("LIUTONG_DB_PASSWORD", &db.password)
        .env_remove("LIUTONG_CONFIG")
        .env_remove("LIUTONG_DATA")
        .env_remove("LIUTONG_PAUSE_AT")
        .process_group(0)
        .stdout(std::fs::File::create(&out_file).unwrap())
        .stderr(std::fs::File::create(&err_file).unwrap())
        .spawn()
        .expect("bash runs");
    let group = child.id();
    let stop_group = || {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{group}")])
            .stderr(Stdio::null())
            .status();
    };
    let limit = Duration::from_secs(300);
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            stop_group();
            let out = std::fs::read_to_string(&out_file).unwrap();
            panic!("the README's replicas by hand did not end within {limit:?}:\n{out}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    stop_group();
    let out = std::fs::read_to_string(&out_file).unwrap();
    let err = std::fs::read_to_string(&err_file).unwrap();
    let log = |name: &str| std::fs::read_to_string(tmp.path().join(name)).unwrap_or_default();
    assert!(
        status.success(),
        "{out}\n{err}\na.log:\n{}\nb.log:\n{}",
        log("a.log"),
        log("b.log")
    );
    let said = |what: &str| {
        out.find(what)
            .unwrap_or_else(|| panic!("no {what:?} in:\n{out}\n{err}"))
    };
    let migrated = said("audit log verified in PostgreSQL");
    let a_leads = said("SERVING (127.0.0.1:7802");
    let b_stands_by = said("b stands by");
    let b_leads = said("SERVING (127.0.0.1:7812");
    let verified = said("OK  ");
    assert!(migrated < a_leads && a_leads < b_stands_by, "{out}");
    assert!(b_stands_by < b_leads && b_leads < verified, "{out}");
    assert!(
        out[b_leads..].contains("Road traffic flow (hourly)"),
        "the products:\n{out}"
    );
    assert!(
        out[verified..].contains("SERVING (127.0.0.1:7802"),
        "a leads again:\n{out}"
    );
    let b_said = log("b.log");
    assert!(b_said.contains("took the leadership lease"), "{b_said}");
    // The second run of a: it stood by, then took the lease b gave up.
    let a_said = log("a.log");
    let stood_by = a_said
        .find("waiting for the leadership lease")
        .expect(&a_said);
    let took = a_said.find("took the leadership lease").expect(&a_said);
    assert!(stood_by < took, "{a_said}");
}
