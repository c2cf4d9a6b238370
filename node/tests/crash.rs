//! Crashes at every step boundary of a negotiation and of a transfer: real `liutong`
//! processes, one of them started with `LIUTONG_PAUSE_AT=<point>`, killed with SIGKILL
//! once it reports the pause, and started again. Both sides must then reach the same
//! final state by themselves: FINALIZED with the same agreement bytes, the receipt at
//! the provider, a pull resumed from the first chunk that was not durable.

mod dsp;
mod process;

use process::*;
use sha2::Digest as _;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Bound of every wait: generous, as the machine may be busy; each wait ends as soon as
/// its condition holds.
const LIMIT: Duration = Duration::from_secs(60);

fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "liutong failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
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
    if let Err(e) = try_wait_line(rx, needle, what) {
        panic!("{e}");
    }
}

/// [`wait_line`], answering what was seen instead if the line does not come.
fn try_wait_line(rx: &mpsc::Receiver<String>, needle: &str, what: &str) -> Result<(), String> {
    let deadline = Instant::now() + LIMIT;
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return Ok(()),
            Ok(line) => seen.push(line),
            Err(mpsc::RecvTimeoutError::Timeout) => break,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    Err(format!(
        "{what}: no line with {needle:?}; saw:\n{}",
        seen.join("\n")
    ))
}

/// Polls `check` every 50 ms until it gives a value, for at most [`LIMIT`].
fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + LIMIT;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {LIMIT:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits for a command the test started to end, for at most [`LIMIT`]; kills it when
/// the time is up (a command whose node was killed may wait on it).
fn end(mut child: Child) {
    let deadline = Instant::now() + LIMIT;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.wait();
}

/// A `liutong serve` process and its node directory.
struct Node {
    config: PathBuf,
    peer: String,
    child: Option<Child>,
    stderr: Option<mpsc::Receiver<String>>,
}

impl Node {
    fn config(&self) -> &str {
        self.config.to_str().unwrap()
    }

    /// Starts the node, pausing at `pause` if given, and waits until it serves.
    fn start(&mut self, pause: Option<&str>) {
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--config", self.config()])
            .env_remove("LIUTONG_CONFIG")
            .env_remove("LIUTONG_PAUSE_AT")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(point) = pause {
            cmd.env("LIUTONG_PAUSE_AT", point);
        }
        let mut child = cmd.spawn().expect("start liutong serve");
        let stdout = lines(child.stdout.take().unwrap());
        let stderr = lines(child.stderr.take().unwrap());
        if let Err(missing) = try_wait_line(&stdout, "serving:", "liutong serve") {
            // A node that did not come up says why on its standard error.
            let _ = child.kill();
            let _ = child.wait();
            let said: Vec<String> = stderr.try_iter().collect();
            panic!("{missing}\nits standard error:\n{}", said.join("\n"));
        }
        self.stderr = Some(stderr);
        std::thread::spawn(move || for _ in stdout {});
        self.child = Some(child);
    }

    /// Waits for the node to report the pause at `point`, then kills it (SIGKILL).
    fn kill_when_paused(&mut self, point: &str) {
        let rx = self.stderr.take().expect("started");
        wait_line(&rx, &format!("liutong: paused at {point}"), point);
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sets `recovery.expire_after` in the node's configuration (read at its start).
    fn expire_after(&self, limit: &str) {
        let text = std::fs::read_to_string(&self.config).unwrap();
        let line = text
            .lines()
            .find(|l| l.starts_with("expire_after ="))
            .unwrap_or_else(|| panic!("no expire_after in {text}"))
            .to_owned();
        std::fs::write(
            &self.config,
            text.replace(&line, &format!("expire_after = \"{limit}\"")),
        )
        .unwrap();
    }

    fn contract(&self, id: &str) -> serde_json::Value {
        self.try_contract(id)
            .unwrap_or_else(|| panic!("no negotiation {id} at {}", self.config()))
    }

    /// Negotiation `id` as this node shows it, if it knows it.
    fn try_contract(&self, id: &str) -> Option<serde_json::Value> {
        let o = liutong(&["contract", "show", id, "--json", "--config", self.config()]);
        o.status
            .success()
            .then(|| serde_json::from_slice(&o.stdout).unwrap())
    }

    fn contracts(&self) -> Vec<serde_json::Value> {
        serde_json::from_str(&ok(liutong(&[
            "contract",
            "list",
            "--json",
            "--config",
            self.config(),
        ])))
        .unwrap()
    }

    /// The audit entries about `agreement`, as text.
    fn audit(&self, agreement: &str) -> String {
        ok(liutong(&[
            "audit",
            "search",
            "--agreement",
            agreement,
            "--config",
            self.config(),
        ]))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An authority, a provider (the transport bureau, with one product of 4 chunks) and
/// a consumer (a logistics company), each a real process in its own directory.
struct Space {
    _dir: tempfile::TempDir,
    authority: Child,
    provider: Node,
    consumer: Node,
    offer: String,
}

impl Drop for Space {
    fn drop(&mut self) {
        let _ = self.authority.kill();
        let _ = self.authority.wait();
    }
}

impl Space {
    fn new() -> Space {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let authority = root.join("authority");
        let auth_port = free_port();
        ok(liutong(&[
            "authority",
            "init",
            "--dir",
            authority.to_str().unwrap(),
            "--name",
            "Crash Test Data Space",
        ]));
        let mut authority_child = Command::new(BIN)
            .args([
                "authority",
                "serve",
                "--dir",
                authority.to_str().unwrap(),
                "--listen",
                &format!("127.0.0.1:{auth_port}"),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = lines(authority_child.stdout.take().unwrap());
        wait_line(&out, "serving its trust list", "authority serve");
        std::thread::spawn(move || for _ in out {});
        let member = |id: &str, name: &str, kind: &str, roles: &str| -> Node {
            let bundle = root.join(format!("bundle-{id}"));
            let node = root.join(id);
            ok(liutong(&[
                "join",
                "--dir",
                node.to_str().unwrap(),
                "--participant",
                id,
            ]));
            let request = node.join("identity/admission-request.json");
            ok(liutong(&[
                "authority",
                "admit",
                "--dir",
                authority.to_str().unwrap(),
                "--request",
                request.to_str().unwrap(),
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
                bundle.to_str().unwrap(),
            ]));
            assert_no_private_key(&bundle);
            let peer = format!("127.0.0.1:{}", free_port());
            ok(liutong(&[
                "init",
                "--dir",
                node.to_str().unwrap(),
                "--bundle",
                bundle.to_str().unwrap(),
                "--listen",
                &peer,
                "--admin-listen",
                &format!("127.0.0.1:{}", free_port()),
                "--authority",
                &format!("127.0.0.1:{auth_port}"),
            ]));
            // Retries come quickly here, so the test waits little.
            let config = node.join("node.toml");
            let text = std::fs::read_to_string(&config).unwrap();
            assert!(text.contains("retry_interval = \"1s\""), "{text}");
            std::fs::write(
                &config,
                text.replace("retry_interval = \"1s\"", "retry_interval = \"100ms\""),
            )
            .unwrap();
            Node {
                config,
                peer,
                child: None,
                stderr: None,
            }
        };
        let mut provider = member(
            TRANSPORT,
            "Hangzhou Transport Bureau",
            "government",
            "provider,consumer",
        );
        let mut consumer = member(
            LOGISTICS,
            "Hangzhou Logistics Co.",
            "enterprise",
            "consumer",
        );
        provider.start(None);
        consumer.start(None);
        for node in [&provider, &consumer] {
            ok(liutong(&["trust", "refresh", "--config", node.config()]));
        }
        // Four chunks: three whole ones and a short last one.
        let csv = root.join("traffic.csv");
        let mut rows = String::from("road,hour,vehicles\n");
        let mut i = 0u64;
        while rows.len() < (3 << 20) + 1000 {
            rows.push_str(&format!("Road {i},{},{}\n", i % 24, i * 7 % 1999));
            i += 1;
        }
        std::fs::write(&csv, rows).unwrap();
        let policy = root.join("open.toml");
        std::fs::write(&policy, OPEN_POLICY).unwrap();
        let published: serde_json::Value = serde_json::from_str(&ok(liutong(&[
            "product",
            "publish",
            csv.to_str().unwrap(),
            "--title",
            "Road traffic flow",
            "--classification",
            "general-2",
            "--format",
            "csv",
            "--policy",
            policy.to_str().unwrap(),
            "--json",
            "--config",
            provider.config(),
        ])))
        .unwrap();
        assert_eq!(published["chunks"], 4, "{published}");
        let offer = published["offer_id"].as_str().unwrap().to_owned();
        Space {
            _dir: dir,
            authority: authority_child,
            provider,
            consumer,
            offer,
        }
    }

    /// `liutong contract request` at the consumer, running while the test kills nodes.
    fn request_in_background(&self) -> Child {
        Command::new(BIN)
            .args([
                "contract",
                "request",
                "--peer",
                &self.provider.peer,
                "--offer",
                &self.offer,
                "--purpose",
                "statistics",
                "--json",
                "--config",
                self.consumer.config(),
            ])
            .env_remove("LIUTONG_PAUSE_AT")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }

    /// A negotiation to completion, with no crash: its agreement ID.
    fn agreement(&self) -> String {
        let c: serde_json::Value = serde_json::from_str(&ok(liutong(&[
            "contract",
            "request",
            "--peer",
            &self.provider.peer,
            "--offer",
            &self.offer,
            "--purpose",
            "statistics",
            "--json",
            "--config",
            self.consumer.config(),
        ])))
        .unwrap();
        assert_eq!(c["state"], "FINALIZED", "{c}");
        c["agreement_id"].as_str().unwrap().to_owned()
    }

    /// The consumer's negotiations not in `before`.
    fn new_negotiation(&self, before: &[String]) -> String {
        eventually("the new negotiation at the consumer", || {
            self.consumer
                .contracts()
                .into_iter()
                .filter_map(|c| c["negotiation_id"].as_str().map(str::to_owned))
                .find(|id| !before.contains(id))
        })
    }

    fn negotiation_ids(&self) -> Vec<String> {
        self.consumer
            .contracts()
            .into_iter()
            .filter_map(|c| c["negotiation_id"].as_str().map(str::to_owned))
            .collect()
    }

    /// Waits until both sides hold negotiation `id` FINALIZED, and checks they hold the
    /// same agreement, signed by both.
    fn assert_finalized_on_both_sides(&self, id: &str, point: &str) {
        let (consumer, provider) = eventually(&format!("{point}: FINALIZED on both sides"), || {
            let c = self.consumer.contract(id);
            // The provider may not have got the request yet.
            let p = self.provider.try_contract(id)?;
            for side in [&c, &p] {
                let state = side["state"].as_str().unwrap_or_default();
                assert!(
                    state != "TERMINATED",
                    "{point}: a side ended the negotiation: {side}"
                );
            }
            (c["state"] == "FINALIZED" && p["state"] == "FINALIZED").then_some((c, p))
        });
        assert_eq!(
            consumer["agreement"], provider["agreement"],
            "{point}: the same agreement bytes and signatures on both sides"
        );
        assert_eq!(
            consumer["agreement"]["signatures"].as_array().map(Vec::len),
            Some(2),
            "{point}: {consumer}"
        );
        assert_eq!(consumer["agreement_id"], provider["agreement_id"]);
    }
}

/// Restarts the node `which` picks paused at `point`, has the consumer request a
/// contract, and kills that node (SIGKILL) once it has paused there; answers the
/// consumer's negotiation IDs from before the request.
fn request_cut_at(
    space: &mut Space,
    which: fn(&mut Space) -> &mut Node,
    point: &str,
) -> Vec<String> {
    which(space).stop();
    which(space).start(Some(point));
    let before = space.negotiation_ids();
    let request = space.request_in_background();
    which(space).kill_when_paused(point);
    end(request);
    before
}

fn consumer(space: &mut Space) -> &mut Node {
    &mut space.consumer
}

fn provider(space: &mut Space) -> &mut Node {
    &mut space.provider
}

/// Kills the consumer right after REQUESTED is durable (the request not sent) and right
/// after VERIFIED is durable (the countersignature not sent); after a restart it asks,
/// sends what is missing, and both sides finish FINALIZED with the same agreement.
#[test]
fn a_consumer_killed_mid_negotiation_finishes_it_after_a_restart() {
    let mut space = Space::new();
    for point in [
        "negotiation.consumer.requested",
        "negotiation.consumer.verified",
    ] {
        let before = request_cut_at(&mut space, consumer, point);
        space.consumer.start(None);
        let id = space.new_negotiation(&before);
        space.assert_finalized_on_both_sides(&id, point);
    }
}

/// Kills the provider right after AGREED is durable (the consumer not answered) and
/// right after FINALIZED is durable (the consumer not answered): the consumer keeps its
/// state (a provider that cannot be reached has refused nothing), asks again, and both
/// sides finish FINALIZED with the same agreement.
#[test]
fn a_provider_killed_mid_negotiation_is_asked_again_and_both_sides_finish() {
    let mut space = Space::new();
    for point in [
        "negotiation.provider.agreed",
        "negotiation.provider.finalized",
    ] {
        let before = request_cut_at(&mut space, provider, point);
        let id = space.new_negotiation(&before);
        let waiting = space.consumer.contract(&id);
        assert_ne!(
            waiting["state"], "TERMINATED",
            "{point}: an unreachable provider is no refusal: {waiting}"
        );
        space.provider.start(None);
        space.assert_finalized_on_both_sides(&id, point);
    }
}

/// The provider finalized the contract but died before answering, and the consumer
/// (VERIFIED) was down longer than `recovery.expire_after` too: after its restart the
/// consumer asks before it gives anything up, learns the contract is FINALIZED there
/// and finishes it, rather than ending a contract the provider holds as made.
#[test]
fn a_countersigned_contract_outlives_a_downtime_longer_than_the_expiry() {
    let mut space = Space::new();
    let point = "negotiation.provider.finalized";
    let before = request_cut_at(&mut space, provider, point);
    let id = space.new_negotiation(&before);
    let verified = space.consumer.contract(&id);
    assert_eq!(verified["state"], "VERIFIED", "{verified}");
    let verified_at = verified["updated_at"].as_i64().unwrap();
    space.consumer.stop();
    space.consumer.expire_after("1s");
    // The downtime: the countersignature's record gets older than the limit.
    eventually("the countersignature older than the limit", || {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        (now > verified_at + 2).then_some(())
    });
    space.provider.start(None);
    space.consumer.start(None);
    space.assert_finalized_on_both_sides(&id, point);
}

/// A pull cut by a crash of the consumer after its first chunks were synced resumes
/// from the first chunk not synced; a consumer killed after COMPLETED (receipt not
/// sent) and a provider killed after recording the receipt (consumer not answered)
/// both end with the receipt at the provider, recorded once.
#[test]
fn transfers_cut_by_a_crash_resume_and_deliver_their_receipt() {
    let mut space = Space::new();

    // The consumer dies after chunks 0 and 1 and their count are durable.
    let agreement = space.agreement();
    let point = "transfer.consumer.synced";
    space.consumer.stop();
    space.consumer.start(Some(point));
    let pull = Command::new(BIN)
        .args([
            "transfer",
            "pull",
            "--agreement",
            &agreement,
            "--max-chunks",
            "2",
            "--json",
            "--config",
            space.consumer.config(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    space.consumer.kill_when_paused(point);
    end(pull);
    space.consumer.start(None);
    let done = pull_all(&space, &agreement);
    assert_eq!(done["state"], "COMPLETED", "{done}");
    let log = space.provider.audit(&agreement);
    assert!(
        log.contains("4 chunks from chunk 0") && log.contains("4 chunks from chunk 2"),
        "{point}: the second pull resumes from chunk 2, the first not synced:\n{log}"
    );
    // The chunks sealed before the crash and those sealed after it read as one copy.
    let read = liutong(&[
        "data",
        "read",
        &agreement,
        "--purpose",
        "statistics",
        "--config",
        space.consumer.config(),
    ]);
    assert!(read.status.success(), "{point}: {}", text(&read));
    assert_eq!(
        hex::encode(sha2::Sha256::digest(&read.stdout)),
        done["sha256"].as_str().unwrap(),
        "{point}: the copy read back is the product"
    );
    assert_receipt_once(&space, &agreement, point);

    // The consumer dies after COMPLETED is durable, before the receipt leaves.
    let agreement = space.agreement();
    let point = "transfer.consumer.completed";
    space.consumer.stop();
    space.consumer.start(Some(point));
    let pull = background_pull(&space, &agreement);
    space.consumer.kill_when_paused(point);
    end(pull);
    space.consumer.start(None);
    assert_receipt_once(&space, &agreement, point);

    // The provider dies after recording the receipt, before answering.
    let agreement = space.agreement();
    let point = "transfer.provider.receipt";
    space.provider.stop();
    space.provider.start(Some(point));
    let pull = background_pull(&space, &agreement);
    space.provider.kill_when_paused(point);
    end(pull);
    space.provider.start(None);
    assert_receipt_once(&space, &agreement, point);
    // The consumer stops sending it once the provider confirms it: a later pull
    // answers COMPLETED and the receipt is still recorded once.
    let done = pull_all(&space, &agreement);
    assert_eq!(done["state"], "COMPLETED", "{done}");
    assert_eq!(
        done["reason"], "",
        "{point}: the receipt was not refused: {done}"
    );
    assert_receipt_once(&space, &agreement, point);
}

fn background_pull(space: &Space, agreement: &str) -> Child {
    Command::new(BIN)
        .args([
            "transfer",
            "pull",
            "--agreement",
            agreement,
            "--json",
            "--config",
            space.consumer.config(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn pull_all(space: &Space, agreement: &str) -> serde_json::Value {
    let out = ok(liutong(&[
        "transfer",
        "pull",
        "--agreement",
        agreement,
        "--json",
        "--config",
        space.consumer.config(),
    ]));
    serde_json::from_str(&out).unwrap()
}

/// Waits until the consumer has the provider's confirmation of the receipt for
/// `agreement` (it stops sending it then), and checks the provider recorded it exactly
/// once and the consumer took the confirmation once.
fn assert_receipt_once(space: &Space, agreement: &str, point: &str) {
    let confirmed = eventually(&format!("{point}: the receipt confirmed"), || {
        let log = space.consumer.audit(agreement);
        log.contains("receipt confirmed by the provider")
            .then_some(log)
    });
    assert_eq!(
        confirmed
            .matches("transfer receipt confirmed by the provider")
            .count(),
        1,
        "{point}: the confirmation is taken once:\n{confirmed}"
    );
    let log = space.provider.audit(agreement);
    assert_eq!(
        log.matches("transfer COMPLETED: receipt for").count(),
        1,
        "{point}: the receipt is recorded once:\n{log}"
    );
}

/// A differentially private query whose budget the provider spent and logged before it
/// was killed (the answer not yet sent): after the restart that ε stays spent, so the
/// crash gave the consumer no free answer, and the budget runs out one query sooner.
#[test]
fn a_provider_killed_after_spending_privacy_gives_no_free_answer() {
    let mut space = Space::new();
    let dir = space._dir.path();
    let csv = dir.join("incomes.csv");
    let mut rows = String::from("name,district,income\n");
    for i in 0..40u64 {
        rows.push_str(&format!("Resident{i:02},Xihu,{}\n", 3_000 + i * 517));
    }
    std::fs::write(&csv, rows).unwrap();
    let policy = dir.join("dp.toml");
    std::fs::write(
        &policy,
        r#"uid = "urn:liutong:policy:incomes-dp"
type = "set"

[[permission]]
action = "aggregate"
duty = [{ action = "differentialPrivacy", epsilon = 1, budget = 2, bounds = [
  { column = "income", lower = 0, upper = 50000 },
] }]
"#,
    )
    .unwrap();
    let published: serde_json::Value = serde_json::from_str(&ok(liutong(&[
        "product",
        "publish",
        arg(&csv),
        "--title",
        "Resident incomes",
        "--classification",
        "general-2",
        "--format",
        "csv",
        "--policy",
        arg(&policy),
        "--json",
        "--config",
        space.provider.config(),
    ])))
    .unwrap();
    let c: serde_json::Value = serde_json::from_str(&ok(liutong(&[
        "contract",
        "request",
        "--peer",
        &space.provider.peer,
        "--offer",
        published["offer_id"].as_str().unwrap(),
        "--purpose",
        "statistics",
        "--json",
        "--config",
        space.consumer.config(),
    ])))
    .unwrap();
    assert_eq!(c["state"], "FINALIZED", "{c}");
    let agreement = c["agreement_id"].as_str().unwrap().to_owned();
    let query = |config: &str| {
        command(&[
            "query",
            "--agreement",
            &agreement,
            "--aggregate",
            "sum:income",
            "--json",
            "--config",
            config,
        ])
    };

    let point = "query-budget-spent";
    space.provider.stop();
    space.provider.start(Some(point));
    let cut = query(space.consumer.config())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    space.provider.kill_when_paused(point);
    end(cut);
    space.provider.start(None);

    let answer: serde_json::Value =
        serde_json::from_str(&ok(query(space.consumer.config()).output().unwrap())).unwrap();
    let p = &answer["differential_privacy"];
    assert_eq!(
        (p["epsilon_spent"].as_f64(), p["epsilon_left"].as_f64()),
        (Some(2.0), Some(0.0)),
        "{point}: the ε of the cut query stays spent: {answer}"
    );
    let refused = query(space.consumer.config()).output().unwrap();
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("privacy budget is spent"), "{said}");
    let log = space.provider.audit(&agreement);
    assert_eq!(
        log.matches("differential privacy: ε = 1 spent").count(),
        2,
        "{point}: both answers that spent are on record:\n{log}"
    );
}

/// Kills the provider after it answered a Dataspace Protocol contract request (the
/// decision and the consumer's callback address durable, 201 sent) but before it told
/// the consumer the outcome at its callback address: after a restart it tells it.
#[test]
fn a_provider_killed_before_its_dsp_callback_tells_the_consumer_after_a_restart() {
    use liutong_node::identity::ParticipantId;
    use liutong_node::tls::{self, TlsIdentity};

    let mut space = Space::new();
    let root = space._dir.path().to_path_buf();
    let dsp_port = free_port();
    space.provider.stop();
    let mut text = std::fs::read_to_string(&space.provider.config).unwrap();
    text.push_str(&format!("\n[dsp]\nlisten = \"127.0.0.1:{dsp_port}\"\n"));
    std::fs::write(&space.provider.config, text).unwrap();
    let point = "dsp.provider.callback";
    space.provider.start(Some(point));

    let consumer = TlsIdentity::load(
        &root.join(format!("bundle-{LOGISTICS}/node.crt")),
        &root.join(format!("{LOGISTICS}/identity/node.key")),
    )
    .unwrap();
    let roots = tls::load_roots(&root.join(format!("bundle-{LOGISTICS}/ca.crt"))).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let provider_uri = ParticipantId::parse(TRANSPORT).unwrap().san_uri();
    let callbacks = runtime.block_on(dsp::Callbacks::start(&consumer, &roots, provider_uri));
    let cpid = "urn:uuid:crash-before-callback";
    let message = serde_json::json!({
        "@context": [dsp::CONTEXT],
        "@type": "ContractRequestMessage",
        "consumerPid": cpid,
        "offer": {
            "@type": "Offer",
            "@id": format!("urn:liutong:offer:{}", space.offer),
            "permission": [{"action": "use"}],
        },
        "callbackAddress": callbacks.url(),
        "lt:purpose": "statistics",
    });
    dsp::assert_valid(&message);
    let client = dsp::Client::new(
        format!("127.0.0.1:{dsp_port}").parse().unwrap(),
        Some(&consumer),
        roots,
    );
    let answer = runtime.block_on(client.post("/negotiations/request", &message));
    assert_eq!(answer.status, 201, "{answer:?}");
    let ppid = answer.message()["providerPid"].as_str().unwrap().to_owned();
    space.provider.kill_when_paused(point);
    assert!(
        callbacks.received().is_empty(),
        "{:?}",
        callbacks.received()
    );

    space.provider.start(None);
    let agreed =
        runtime.block_on(callbacks.wait_for(&format!("/callback/negotiations/{cpid}/agreement")));
    assert_eq!(agreed["providerPid"], ppid.as_str());
    assert_eq!(space.provider.contract(&ppid)["state"], "AGREED");
}

/// Gives `node` a Dataspace Protocol listener on a free loopback port (read at its
/// next start) and answers its base URL.
fn with_dsp_listener(node: &mut Node) -> String {
    let port = free_port();
    node.stop();
    let mut text = std::fs::read_to_string(&node.config).unwrap();
    text.push_str(&format!("\n[dsp]\nlisten = \"127.0.0.1:{port}\"\n"));
    std::fs::write(&node.config, text).unwrap();
    format!("https://127.0.0.1:{port}")
}

/// Kills a consumer negotiating over the Dataspace Protocol right after REQUESTED is
/// durable (the request not sent) and right after VERIFIED is durable (the
/// verification not sent); after a restart it asks the provider, sends what is
/// missing, and both sides finish FINALIZED with the same dual-signed agreement.
#[test]
fn a_dsp_consumer_killed_mid_negotiation_finishes_it_after_a_restart() {
    let mut space = Space::new();
    let provider_url = with_dsp_listener(&mut space.provider);
    with_dsp_listener(&mut space.consumer);
    space.provider.start(None);
    for point in [
        "negotiation.consumer.requested",
        "negotiation.consumer.verified",
    ] {
        space.consumer.stop();
        space.consumer.start(Some(point));
        let before = space.negotiation_ids();
        let request = Command::new(BIN)
            .args([
                "contract",
                "request",
                "--peer",
                &provider_url,
                "--offer",
                &space.offer,
                "--purpose",
                "statistics",
                "--json",
                "--config",
                space.consumer.config(),
            ])
            .env_remove("LIUTONG_PAUSE_AT")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        space.consumer.kill_when_paused(point);
        end(request);
        space.consumer.start(None);
        let id = space.new_negotiation(&before);
        space.assert_finalized_on_both_sides(&id, point);
        let consumer = space.consumer.contract(&id);
        assert_eq!(
            consumer["peer_address"],
            provider_url.as_str(),
            "{consumer}"
        );
    }
}

/// The DSP transfers `node` lists (`liutong transfer list --dsp --json`).
fn dsp_transfers(node: &Node) -> Vec<serde_json::Value> {
    serde_json::from_str(&ok(liutong(&[
        "transfer",
        "list",
        "--dsp",
        "--json",
        "--config",
        node.config(),
    ])))
    .unwrap()
}

/// Kills a DSP consumer right after its operator's termination of a transfer is
/// durable, before the provider is told: after a restart the consumer tells it, and
/// the provider records the transfer TERMINATED.
#[test]
fn a_dsp_consumer_killed_before_telling_its_termination_tells_it_after_a_restart() {
    let mut space = Space::new();
    let provider_url = with_dsp_listener(&mut space.provider);
    with_dsp_listener(&mut space.consumer);
    space.provider.start(None);
    space.consumer.start(None);
    let contract: serde_json::Value = serde_json::from_str(&ok(liutong(&[
        "contract",
        "request",
        "--peer",
        &provider_url,
        "--offer",
        &space.offer,
        "--purpose",
        "statistics",
        "--json",
        "--config",
        space.consumer.config(),
    ])))
    .unwrap();
    assert_eq!(contract["state"], "FINALIZED", "{contract}");
    let agreement = contract["agreement_id"].as_str().unwrap().to_owned();
    // A pull stopped after one chunk: the transfer is SUSPENDED on both sides.
    ok(liutong(&[
        "transfer",
        "pull",
        "--agreement",
        &agreement,
        "--peer",
        &provider_url,
        "--max-chunks",
        "1",
        "--config",
        space.consumer.config(),
    ]));
    let mine = dsp_transfers(&space.consumer);
    assert_eq!(mine.len(), 1, "{mine:?}");
    let cpid = mine[0]["consumer_pid"].as_str().unwrap().to_owned();
    let ppid = mine[0]["provider_pid"].as_str().unwrap().to_owned();
    let provider_state = |space: &Space| {
        dsp_transfers(&space.provider)
            .into_iter()
            .find(|t| t["provider_pid"] == ppid.as_str())
            .map(|t| t["state"].as_str().unwrap_or_default().to_owned())
    };
    assert_eq!(provider_state(&space).as_deref(), Some("SUSPENDED"));

    let point = "dsp.consumer.transfer_notice";
    space.consumer.stop();
    space.consumer.start(Some(point));
    let out = ok(liutong(&[
        "transfer",
        "terminate",
        "--id",
        &cpid,
        "--reason",
        "the study was cancelled",
        "--config",
        space.consumer.config(),
    ]));
    assert!(out.starts_with("TERMINATED: "), "{out}");
    space.consumer.kill_when_paused(point);
    assert_eq!(
        provider_state(&space).as_deref(),
        Some("SUSPENDED"),
        "the provider was not told before the crash"
    );

    space.consumer.start(None);
    eventually("the provider records the termination", || {
        (provider_state(&space).as_deref() == Some("TERMINATED")).then_some(())
    });
    let mine = dsp_transfers(&space.consumer);
    assert_eq!(mine[0]["state"], "TERMINATED", "{mine:?}");
    let log = space.provider.audit(&agreement);
    assert!(
        log.contains(&format!("DSP transfer {ppid} TERMINATED by the consumer"))
            && log.contains("the study was cancelled"),
        "{log}"
    );
}
