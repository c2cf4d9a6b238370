//! A node whose disk fails an fsync stops acknowledging writes: the `liutong` binary as
//! an operator runs it, with an fsync failure injected (`LIUTONG_FAIL_FSYNC_IF`). A
//! publish is refused with the reason, health turns NOT_SERVING, the node logs an
//! ERROR and raises the storage-failure alert; after a restart on a sound disk,
//! everything acknowledged before is there and the node serves again.

mod process;

use process::*;
use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const CSV: &[u8] = b"road,hour,vehicles\nYan'an Rd,8,1520\nTianmushan Rd,8,1210\n";

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Waits until `file` holds a line containing `needle`; panics with what it holds at
/// the deadline.
fn wait_for_line(file: &Path, needle: &str, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let content = std::fs::read_to_string(file).unwrap_or_default();
        if content.lines().any(|l| l.contains(needle)) {
            return content;
        }
        assert!(
            Instant::now() < deadline,
            "no line containing {needle:?} in {} within {limit:?}:\n{content}",
            file.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A process that is killed when the test ends, however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(args: &[&str], env: &[(&str, &Path)], out: &Path, err: &Path) -> Killed {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .env_remove("LIUTONG_CONFIG")
        .env_remove("LIUTONG_DATA")
        .env("NO_COLOR", "1")
        .stdout(Stdio::from(File::create(out).unwrap()))
        .stderr(Stdio::from(File::create(err).unwrap()));
    for (k, v) in env {
        command.env(k, v);
    }
    Killed(command.spawn().unwrap())
}

fn publish(config: &Path, title: &str, data: &Path) -> Output {
    liutong(&[
        "product",
        "publish",
        "--config",
        s(config),
        "--title",
        title,
        "--classification",
        "general-1",
        "--format",
        "csv",
        s(data),
    ])
}

fn product_titles(config: &Path) -> Vec<String> {
    let o = liutong(&["product", "list", "--config", s(config), "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let list: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let mut titles: Vec<String> = list
        .as_array()
        .or_else(|| list["products"].as_array())
        .unwrap_or_else(|| panic!("a list of products: {list}"))
        .iter()
        .map(|p| p["title"].as_str().unwrap().to_owned())
        .collect();
    titles.sort();
    titles
}

fn health(addr: &str) -> Output {
    liutong(&["health", "--addr", addr])
}

#[test]
fn a_failed_fsync_stops_acknowledgements_until_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let (authority, bundle, node) = (
        tmp.path().join("authority"),
        tmp.path().join("bundle"),
        tmp.path().join("node"),
    );
    let o = liutong(&[
        "authority",
        "init",
        "--dir",
        s(&authority),
        "--name",
        "Test Data Space",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let o = liutong(&["join", "--dir", s(&node), "--participant", TRANSPORT]);
    assert!(o.status.success(), "{}", text(&o));
    let request = node.join("identity/admission-request.json");
    let o = admit_request(&authority, TRANSPORT, &request, &bundle, &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert_no_private_key(&bundle);
    let (auth_port, peer_port, admin_port, health_port) =
        (free_port(), free_port(), free_port(), free_port());
    let o = liutong(&[
        "init",
        "--dir",
        s(&node),
        "--bundle",
        s(&bundle),
        "--listen",
        &format!("127.0.0.1:{peer_port}"),
        "--admin-listen",
        &format!("127.0.0.1:{admin_port}"),
        "--authority",
        &format!("127.0.0.1:{auth_port}"),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let config = node.join("node.toml");
    let health_addr = format!("127.0.0.1:{health_port}");
    let data = tmp.path().join("counts.csv");
    std::fs::write(&data, CSV).unwrap();
    let log = |name: &str| tmp.path().join(name);

    let _authority = spawn(
        &[
            "authority",
            "serve",
            "--dir",
            s(&authority),
            "--listen",
            &format!("127.0.0.1:{auth_port}"),
        ],
        &[],
        &log("authority.out"),
        &log("authority.err"),
    );
    wait_for_line(
        &log("authority.out"),
        "serving its trust list",
        Duration::from_secs(20),
    );
    let serve = |env: &[(&str, &Path)], run: &str| {
        let (out, err) = (log(&format!("{run}.out")), log(&format!("{run}.err")));
        let node = spawn(
            &[
                "serve",
                "--config",
                s(&config),
                "--health-listen",
                &health_addr,
            ],
            env,
            &out,
            &err,
        );
        wait_for_line(&out, "serving:", Duration::from_secs(30));
        (node, err)
    };

    // A node on a disk that will fail: until then, writes are acknowledged.
    let trigger = tmp.path().join("fail-fsync");
    let (failing, failing_log) = serve(&[("LIUTONG_FAIL_FSYNC_IF", &trigger)], "first");
    let o = health(&health_addr);
    assert!(o.status.success(), "{}", text(&o));
    let o = publish(&config, "Acknowledged counts", &data);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(product_titles(&config), ["Acknowledged counts"]);

    // The disk fails: from now on every fsync of the node's storage returns EIO.
    File::create(&trigger).unwrap();
    let o = publish(&config, "Refused counts", &data);
    assert!(
        !o.status.success(),
        "a publish after the failure is refused"
    );
    let refusal = text(&o);
    assert!(refusal.contains("Unavailable"), "{refusal}");
    assert!(refusal.contains("the node's storage failed"), "{refusal}");
    assert!(refusal.contains("Input/output error"), "{refusal}");
    assert!(
        refusal
            .contains("writes are refused until the node is restarted after the disk is checked"),
        "{refusal}"
    );
    // Nothing of the refused publish is visible; what was acknowledged still reads.
    assert_eq!(product_titles(&config), ["Acknowledged counts"]);
    // The disk "recovers": a failed fsync is still not retried as if it had succeeded.
    std::fs::remove_file(&trigger).unwrap();
    let o = publish(&config, "Refused counts", &data);
    assert!(!o.status.success(), "still refused: {}", text(&o));
    assert!(
        text(&o).contains("the node's storage failed"),
        "{}",
        text(&o)
    );

    // Health turns NOT_SERVING, on the plain endpoint and in `liutong status`.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let o = health(&health_addr);
        if text(&o).contains("NotServing") {
            assert!(!o.status.success());
            break;
        }
        assert!(
            Instant::now() < deadline,
            "health never turned NOT_SERVING: {}",
            text(&o)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let o = liutong(&["status", "--config", s(&config), "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let status: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let reported = status["health"].as_str().unwrap();
    assert!(
        reported.starts_with("NOT_SERVING: the node's storage failed"),
        "{reported}"
    );

    // One ERROR line, and the critical storage-failure alert (its log line).
    let logged = wait_for_line(
        &failing_log,
        "rule=\"storage_failure\"",
        Duration::from_secs(20),
    );
    let errors: Vec<&str> = logged
        .lines()
        .filter(|l| {
            l.contains("ERROR") && l.contains("the node's storage failed: writes are refused")
        })
        .collect();
    assert_eq!(errors.len(), 1, "{logged}");
    let alert: Vec<&str> = logged
        .lines()
        .filter(|l| l.contains("rule=\"storage_failure\""))
        .collect();
    assert_eq!(alert.len(), 1, "{logged}");
    assert!(
        alert[0].contains("ERROR") && alert[0].contains("ALERT:"),
        "{}",
        alert[0]
    );
    drop(failing);

    // Restarted on a sound disk: the acknowledged product is there, the refused one
    // is not, and writes are acknowledged again.
    let (_restarted, _) = serve(&[], "second");
    let o = health(&health_addr);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(product_titles(&config), ["Acknowledged counts"]);
    let o = publish(&config, "Counts after the restart", &data);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        product_titles(&config),
        ["Acknowledged counts", "Counts after the restart"]
    );
}
