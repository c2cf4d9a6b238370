//! The `liutong` binary as an operator uses it: the README's manual set-up, bad input
//! answered with a message and a non-zero exit, and graceful shutdown on SIGTERM.

mod process;

use process::*;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The member's node makes its keys and admission request, by the name `localhost`.
fn join(node: &Path, participant: &str) -> Output {
    liutong(&[
        "join",
        "--dir",
        node.to_str().unwrap(),
        "--participant",
        participant,
        "--dns",
        "localhost",
        "--ip",
        "127.0.0.1",
    ])
}

/// `node` joins as `participant` and the authority admits it from its request.
fn admit(authority: &Path, participant: &str, node: &Path, out: &Path) -> Output {
    let o = join(node, participant);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = admit_request(
        authority,
        participant,
        &node.join("identity/admission-request.json"),
        out,
        &[],
    );
    if o.status.success() {
        assert_no_private_key(out);
    }
    o
}

/// Reads the child's stdout until a line contains `needle` or the time runs out.
fn wait_for_line(child: &mut Child, needle: &str, limit: Duration) -> Vec<String> {
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + limit;
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) => {
                let done = line.contains(needle);
                seen.push(line);
                if done {
                    // Keep draining in the background so the child never blocks on a pipe.
                    std::thread::spawn(move || for _ in rx {});
                    return seen;
                }
            }
            Err(_) => break,
        }
    }
    panic!("no line containing {needle:?} within {limit:?}; saw {seen:?}");
}

fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("process did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn manual_set_up_serve_status_and_sigterm() {
    let tmp = tempfile::tempdir().unwrap();
    let authority = tmp.path().join("authority");
    let bundle = tmp.path().join("bundle");
    let node = tmp.path().join("node");
    let o = liutong(&[
        "authority",
        "init",
        "--dir",
        authority.to_str().unwrap(),
        "--name",
        "Test Data Space",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = admit(&authority, TRANSPORT, &node, &bundle);
    assert!(o.status.success(), "{}", stderr(&o));

    let (auth_port, peer_port, admin_port) = (free_port(), free_port(), free_port());
    let o = liutong(&[
        "init",
        "--dir",
        node.to_str().unwrap(),
        "--bundle",
        bundle.to_str().unwrap(),
        "--listen",
        &format!("127.0.0.1:{peer_port}"),
        "--admin-listen",
        &format!("127.0.0.1:{admin_port}"),
        "--authority",
        &format!("127.0.0.1:{auth_port}"),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let config = node.join("node.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains(&format!("participant = \"{TRANSPORT}\"")));
    assert!(
        text.lines().filter(|l| l.starts_with('#')).count() >= 8,
        "node.toml is commented"
    );

    let mut auth = spawn_authority(&authority, &format!("127.0.0.1:{auth_port}"));
    wait_for_line(&mut auth, "serving its trust list", Duration::from_secs(20));
    let mut serve = Guard(
        Command::new(BIN)
            .args(["serve", "--config", config.to_str().unwrap()])
            .env_remove("LIUTONG_CONFIG")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for_line(&mut serve, "serving:", Duration::from_secs(20));

    let o = liutong(&["status", "--config", config.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let status: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(status["node"]["participant_id"], TRANSPORT);
    assert_eq!(status["trust_list"]["sequence"], 2);
    assert_eq!(status["caller_role"], "admin");

    // A second node on the same address: refused with the reason.
    let o = liutong(&["serve", "--config", config.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains(&format!("cannot listen on 127.0.0.1:{peer_port}"))
            || err.contains(&format!("locked by process {}", serve.0.id())),
        "{err}"
    );

    sigterm(&serve);
    let status = wait_exit(&mut serve, Duration::from_secs(20));
    assert!(status.success(), "serve exits 0 after SIGTERM: {status:?}");
    sigterm(&auth);
    assert!(wait_exit(&mut auth, Duration::from_secs(20)).success());

    // With the node stopped, the command says so.
    let o = liutong(&["status", "--config", config.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("is the node running?"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_listen_address_in_use_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let authority = tmp.path().join("authority");
    let bundle = tmp.path().join("bundle");
    let node = tmp.path().join("node");
    assert!(
        liutong(&[
            "authority",
            "init",
            "--dir",
            authority.to_str().unwrap(),
            "--name",
            "DS"
        ])
        .status
        .success()
    );
    assert!(
        admit(&authority, TRANSPORT, &node, &bundle)
            .status
            .success()
    );
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_addr = busy.local_addr().unwrap().to_string();
    let o = liutong(&[
        "init",
        "--dir",
        node.to_str().unwrap(),
        "--bundle",
        bundle.to_str().unwrap(),
        "--listen",
        &busy_addr,
        "--admin-listen",
        &format!("127.0.0.1:{}", free_port()),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = liutong(&[
        "serve",
        "--config",
        node.join("node.toml").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains(&format!("cannot listen on {busy_addr} (peer API)")),
        "{err}"
    );
    assert!(err.contains("node.listen"), "{err}");
}

#[test]
fn an_invalid_participant_id_at_admit_is_refused_and_nothing_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let authority = tmp.path().join("authority");
    assert!(
        liutong(&[
            "authority",
            "init",
            "--dir",
            authority.to_str().unwrap(),
            "--name",
            "DS"
        ])
        .status
        .success()
    );
    let node = tmp.path().join("node");
    assert!(join(&node, TRANSPORT).status.success());
    let request = node.join("identity/admission-request.json");
    let before = std::fs::read(authority.join("authority.json")).unwrap();
    for (id, expect) in [
        (
            "11330100MA2TRA0012",
            "check character (18th) is '2', but the first 17 characters require '1'",
        ),
        ("11330100MA2TRI0011", "character 14 ('I') is not allowed"),
        ("1133010", "has 7 characters"),
    ] {
        let out = tmp.path().join(format!("bundle-{id}"));
        let o = admit_request(&authority, id, &request, &out, &[]);
        assert_eq!(o.status.code(), Some(1), "{id}");
        assert!(stderr(&o).contains(expect), "{id}: {}", stderr(&o));
        assert!(!out.exists(), "no bundle for a refused admission");
    }
    assert_eq!(
        std::fs::read(authority.join("authority.json")).unwrap(),
        before,
        "state unchanged"
    );
}

#[test]
fn a_malformed_node_toml_names_the_key_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("node.toml");
    std::fs::write(
        &config,
        "[node]\nparticipant = \"11330100MA2TRA0011\"\nlisten = \"127.0.0.1:7700\"\nadmin_lisen = \"127.0.0.1:7701\"\n",
    )
    .unwrap();
    let o = liutong(&["serve", "--config", config.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("line 4"), "{err}");
    assert!(err.contains("admin_lisen"), "{err}");

    let o = liutong(&[
        "serve",
        "--config",
        tmp.path().join("missing.toml").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("cannot read the configuration"),
        "{}",
        stderr(&o)
    );

    // Unreadable: a directory where the file should be.
    let o = liutong(&["serve", "--config", tmp.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("cannot read the configuration"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_data_directory_that_cannot_be_created_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    // A regular file where a directory would go: creation fails even for root.
    let blocker = tmp.path().join("not-a-dir");
    std::fs::write(&blocker, b"x").unwrap();
    let data = blocker.join("liutong-data");
    let o = Command::new(BIN)
        .arg("serve")
        .env("LIUTONG_DATA", &data)
        .env_remove("LIUTONG_CONFIG")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("cannot create the data directory"), "{err}");
    assert!(err.contains("LIUTONG_DATA"), "{err}");
}

#[test]
fn help_explains_the_commands() {
    let o = liutong(&["--help"]);
    assert!(o.status.success());
    let text = String::from_utf8_lossy(&o.stdout);
    for word in ["serve", "init", "authority", "status", "trust", "peer"] {
        assert!(text.contains(word), "{word} missing from --help");
    }
    let o = liutong(&["authority", "admit", "--help"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("统一社会信用代码"));
    let o = liutong(&["bogus"]);
    assert_eq!(o.status.code(), Some(2), "usage errors exit 2");
}

/// The README's DSP negotiation with curl against the demo, run as written: a plain DSP
/// consumer's request is agreed, verified and finalized, and recorded as not signed by
/// the consumer.
#[test]
fn the_readme_dsp_negotiation_against_the_demo_runs_as_written() {
    let readme = include_str!("../../README.md");
    let from = readme
        .find("A negotiation with `curl` against the demo")
        .expect("the README shows a DSP negotiation against the demo");
    let block = &readme[from..];
    let start = block.find("```sh\n").unwrap() + "```sh\n".len();
    let script = &block[start..start + block[start..].find("```").unwrap()];
    let tmp = tempfile::tempdir().unwrap();
    let bin_dir = Path::new(BIN).parent().unwrap();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap());
    // Its own process group, so the authority and the node it starts in the background
    // are stopped with it; its output goes to files, which those keep open.
    let (out_file, err_file) = (tmp.path().join("stdout"), tmp.path().join("stderr"));
    let mut child = Command::new("bash")
        .args(["-euo", "pipefail", "-c", script])
        .current_dir(tmp.path())
        .env("PATH", path)
        .env_remove("LIUTONG_CONFIG")
        .env_remove("LIUTONG_DATA")
        .process_group(0)
        .stdout(std::fs::File::create(&out_file).unwrap())
        .stderr(std::fs::File::create(&err_file).unwrap())
        .spawn()
        .expect("bash runs");
    let group = child.id();
    let stop_group = || {
        let _ = Command::new("kill")
            .args(["-TERM", "--", &format!("-{group}")])
            .status();
    };
    let deadline = Instant::now() + Duration::from_secs(180);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            stop_group();
            panic!("the README's DSP negotiation did not end within 180 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    stop_group();
    let out = std::fs::read_to_string(&out_file).unwrap();
    let err = std::fs::read_to_string(&err_file).unwrap();
    assert!(status.success(), "{out}\n{err}");
    let agreed = out.find(r#""state":"AGREED""#).expect(&out);
    let finalized = out.find(r#""state":"FINALIZED""#).expect(&out);
    assert!(agreed < finalized, "{out}");
    assert!(out.contains("not signed by the consumer"), "{out}");
}

/// The README's first command. It uses the fixed development ports 7700, 7701, 7703 and
/// 7800, so this test needs them free.
#[test]
fn zero_config_serve_survives_kill_9_and_restarts() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("liutong-data");
    let start = || {
        Command::new(BIN)
            .arg("serve")
            .env("LIUTONG_DATA", &data)
            .env_remove("LIUTONG_CONFIG")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map(Guard)
            .unwrap()
    };
    let mut first = start();
    let lines = wait_for_line(&mut first, "serving:", Duration::from_secs(30));
    assert!(
        lines.iter().any(|l| l.contains("DEVELOPMENT NODE")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("Created a DEVELOPMENT authority")),
        "{lines:?}"
    );
    let status = |role: &str| {
        Command::new(BIN)
            .args(["status", "--json", "--role", role])
            .env("LIUTONG_DATA", &data)
            .env_remove("LIUTONG_CONFIG")
            .output()
            .unwrap()
    };
    let o = status("auditor");
    assert!(o.status.success(), "{}", stderr(&o));
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(json["caller_role"], "auditor");
    assert!(json["trust_list"]["sequence"].as_u64().unwrap() >= 2);

    // The README's curl commands: the node's Dataspace Protocol listener, verified by the
    // name localhost, anonymous for version discovery and with the node's own member
    // certificate for the catalog.
    let identity = data.join("node/identity");
    let file = |name: &str| identity.join(name).to_str().unwrap().to_owned();
    let curl = |args: &[&str]| {
        let o = Command::new("curl")
            .args(["--silent", "--show-error", "--max-time", "20", "--cacert"])
            .arg(file("ca.crt"))
            .args(args)
            .output()
            .expect("curl runs (.ci/run installs it)");
        assert!(o.status.success(), "curl {args:?}: {}", stderr(&o));
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()
    };
    let version = curl(&["https://localhost:7703/.well-known/dspace-version"]);
    assert_eq!(
        version["protocolVersions"][0]["version"], "2025-1",
        "{version}"
    );
    let catalog = curl(&[
        "--cert",
        &file("node.crt"),
        "--key",
        &file("node.key"),
        "--json",
        r#"{"@context": ["https://w3id.org/dspace/2025/1/context.jsonld"], "@type": "CatalogRequestMessage"}"#,
        "https://localhost:7703/catalog/request",
    ]);
    assert_eq!(catalog["@type"], "Catalog", "{catalog}");

    // A crash: no chance to flush or clean up.
    first.kill().unwrap();
    first.wait().unwrap();

    let mut second = start();
    let lines = wait_for_line(&mut second, "serving:", Duration::from_secs(30));
    assert!(
        lines
            .iter()
            .any(|l| l.contains("Using the DEVELOPMENT set-up")),
        "{lines:?}"
    );
    let o = status("admin");
    assert!(o.status.success(), "{}", stderr(&o));
    sigterm(&second);
    assert!(wait_exit(&mut second, Duration::from_secs(20)).success());
}

#[test]
fn demo_runs_the_whole_flow_and_leaves_restartable_nodes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo");
    let o = liutong(&["demo", "--dir", dir.to_str().unwrap()]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}\n{}", stderr(&o));
    for line in [
        "the logistics enterprise sees 2 offers",
        "invisible to the enterprise",
        "purpose urbanPlanning → FINALIZED",
        "purpose marketing → TERMINATED",
        "purpose scientificResearch → REQUESTED",
        "liutong contract approve",
        "FINALIZED",
        "COMPLETED: 1600012 bytes",
    ] {
        assert!(out.contains(line), "missing {line:?} in:\n{out}");
    }
    // Each member holds only the roles its part needs: no one reads another's log.
    for line in [
        "(11330100MA2TRA0011, government, region 330100) as provider",
        "(11330000MA2ECE0015, government, region 330100) as consumer",
        "(91330100MA2L0G0013, enterprise, region 330106) as consumer",
    ] {
        assert!(out.contains(line), "missing {line:?} in:\n{out}");
    }
    let members = liutong(&[
        "authority",
        "members",
        "--json",
        "--dir",
        dir.join("authority").to_str().unwrap(),
    ]);
    assert!(members.status.success(), "{}", stderr(&members));
    let members: serde_json::Value = serde_json::from_slice(&members.stdout).unwrap();
    let mut roles: Vec<String> = members["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| format!("{} {}", m["participant_id"], m["roles"]))
        .collect();
    roles.sort();
    assert_eq!(
        roles,
        [
            r#""11330000MA2ECE0015" ["consumer"]"#,
            r#""11330100MA2TRA0011" ["provider"]"#,
            r#""91330100MA2L0G0013" ["consumer"]"#,
        ]
    );

    // Refuses to overwrite a kept data space.
    let again = liutong(&["demo", "--dir", dir.to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(1));
    assert!(stderr(&again).contains("not empty"), "{}", stderr(&again));

    // Each node starts again from its directory and can be inspected.
    let config = dir.join("ecology").join("node.toml");
    let mut serve = Guard(
        Command::new(BIN)
            .args(["serve", "--config", config.to_str().unwrap()])
            .env_remove("LIUTONG_CONFIG")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for_line(&mut serve, "serving:", Duration::from_secs(30));
    let o = liutong(&[
        "contract",
        "list",
        "--json",
        "--config",
        config.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let contracts: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let finalized = contracts
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["state"] == "FINALIZED")
        .count();
    assert_eq!(finalized, 2, "{contracts:#}");
    let o = liutong(&[
        "transfer",
        "list",
        "--json",
        "--config",
        config.to_str().unwrap(),
    ]);
    let transfers: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(transfers[0]["state"], "COMPLETED");
    sigterm(&serve);
    assert!(wait_exit(&mut serve, Duration::from_secs(20)).success());
}

/// A node set up as the README's manual set-up does, with its authority serving.
struct SetUp {
    _tmp: tempfile::TempDir,
    config: std::path::PathBuf,
    /// Stopped when the set-up is dropped.
    _authority: Guard,
}

fn set_up_node() -> SetUp {
    let tmp = tempfile::tempdir().unwrap();
    let authority = tmp.path().join("authority");
    let bundle = tmp.path().join("bundle");
    let node = tmp.path().join("node");
    let o = liutong(&[
        "authority",
        "init",
        "--dir",
        authority.to_str().unwrap(),
        "--name",
        "Test Data Space",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = admit(&authority, TRANSPORT, &node, &bundle);
    assert!(o.status.success(), "{}", stderr(&o));
    let auth_port = free_port();
    let o = liutong(&[
        "init",
        "--dir",
        node.to_str().unwrap(),
        "--bundle",
        bundle.to_str().unwrap(),
        "--listen",
        &format!("127.0.0.1:{}", free_port()),
        "--admin-listen",
        &format!("127.0.0.1:{}", free_port()),
        "--authority",
        &format!("127.0.0.1:{auth_port}"),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let mut auth = spawn_authority(&authority, &format!("127.0.0.1:{auth_port}"));
    wait_for_line(&mut auth, "serving its trust list", Duration::from_secs(20));
    SetUp {
        config: node.join("node.toml"),
        _tmp: tmp,
        _authority: auth,
    }
}

/// Starts `liutong serve` with standard error to a pipe, waits until it serves, stops
/// it with SIGTERM and returns everything it wrote on standard error.
fn serve_and_stop(config: &Path, env: &[(&str, &str)]) -> String {
    let mut command = Command::new(BIN);
    command
        .args(["serve", "--config", config.to_str().unwrap()])
        .env_remove("LIUTONG_CONFIG")
        .env_remove("LIUTONG_LOG")
        .env_remove("NO_COLOR")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        command.env(k, v);
    }
    let mut serve = Guard(command.spawn().unwrap());
    let mut err = serve.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = Vec::new();
        std::io::Read::read_to_end(&mut err, &mut text).unwrap();
        text
    });
    wait_for_line(&mut serve, "serving:", Duration::from_secs(30));
    sigterm(&serve);
    assert!(wait_exit(&mut serve, Duration::from_secs(20)).success());
    String::from_utf8(reader.join().unwrap()).unwrap()
}

#[test]
fn sigterm_right_after_the_serving_line_stops_gracefully() {
    let node = set_up_node();
    // serve_and_stop sends SIGTERM as soon as the line is out and wants exit status 0.
    let err = serve_and_stop(&node.config, &[]);
    assert!(err.contains("node stopped"), "{err}");

    // The same for an authority.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("authority");
    let o = liutong(&[
        "authority",
        "init",
        "--dir",
        dir.to_str().unwrap(),
        "--name",
        "DS",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let mut auth = spawn_authority(&dir, &format!("127.0.0.1:{}", free_port()));
    wait_for_line(&mut auth, "serving its trust list", Duration::from_secs(20));
    sigterm(&auth);
    let status = wait_exit(&mut auth, Duration::from_secs(20));
    assert!(status.success(), "{status:?}");
}

#[test]
fn serve_without_a_collector_logs_no_error() {
    let node = set_up_node();
    let err = serve_and_stop(&node.config, &[]);
    assert!(err.contains("node serving"), "the log is captured: {err}");
    assert!(!err.contains("InstrumentCreationFailed"), "{err}");
    let errors: Vec<&str> = err.lines().filter(|l| l.contains("ERROR")).collect();
    assert!(errors.is_empty(), "{errors:#?}");
}

#[test]
fn log_lines_to_a_pipe_carry_no_colour_codes() {
    let node = set_up_node();
    let err = serve_and_stop(&node.config, &[]);
    assert!(err.contains("node serving"), "the log is captured: {err}");
    assert!(!err.contains('\x1b'), "escape codes in: {err:?}");
}
