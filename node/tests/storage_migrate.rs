//! `liutong storage migrate --to postgres`: a provider that has published and delivered
//! on sled is stopped, moved into PostgreSQL, and started again there with its products,
//! payloads and audit log intact.

mod common;

use std::process::Command;

use common::*;
use liutong_node::config::{NodeConfig, StorageEngine, StorageSection};
use liutong_node::identity::MemberRole;

const ROLES: &[MemberRole] = &[MemberRole::Provider, MemberRole::Consumer];

const OPEN: &str = r#"
uid = "urn:liutong:policy:open-migrated"
type = "set"

[[permission]]
action = "use"
"#;

fn migrate(config: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_liutong"))
        .args(["storage", "migrate", "--to", "postgres", "--config"])
        .arg(config)
        .env_remove("LIUTONG_CONFIG")
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sled_node_moves_into_postgres_with_its_audit_log_verified() {
    let space = DataSpace::start().await;
    // Logistics: never the node LIUTONG_TEST_STORAGE puts on PostgreSQL from the start.
    let provider = space.node_with(LOGISTICS, "logistics", ROLES, |_| {}).await;
    let consumer = space.node_with(ECOLOGY, "ecology", ROLES, |_| {}).await;
    refresh_all(&[&provider, &consumer]).await;
    // Over two 1 MiB chunks, so the payload spans several chunk rows.
    let data: Vec<u8> = (0..(2 * (1 << 20) + 321))
        .map(|i: u32| b"abcdefghij,\n"[(i % 12) as usize])
        .collect();
    let product = publish(&provider, &data, "Freight", "general-2", "csv", OPEN)
        .await
        .expect("publish");
    consumer
        .agree_and_pull(&provider, &product.offer_id, "urbanPlanning")
        .await;
    let before = provider.audit_texts();
    let config_path = provider.config_path();
    let stopped = provider.stop().await;

    // Still on sled in node.toml: refused, naming what to set.
    let out = migrate(&config_path);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("set [storage] engine = \"postgres\""),
        "{stderr}"
    );

    let cluster = postgres::shared();
    let db = cluster.database();
    let mut config = NodeConfig::load(&config_path).unwrap();
    config.storage = StorageSection {
        engine: StorageEngine::Postgres,
        url: Some(db.url.clone()),
        password_env: None,
        password_file: Some(cluster.password_file(&config.base_dir)),
        password: None,
        ..Default::default()
    };
    std::fs::write(&config_path, config.to_commented_toml()).unwrap();

    let out = migrate(&config_path);
    assert_succeeded(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    // The entries up to the stop (which adds its own).
    let verified: usize = stdout
        .split("audit log verified in PostgreSQL: ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(verified >= before.len(), "{stdout}");
    assert!(stdout.contains("1 payloads"), "{stdout}");
    // A second run finds the database taken.
    let out = migrate(&config_path);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("already holds"), "{stderr}");

    let provider = StoppedNode {
        config: NodeConfig::load(&config_path).unwrap(),
        ..stopped
    }
    .start()
    .await;
    let storage = provider.running.node.storage.clone();
    assert!(
        storage.blobs().path("products/x").is_err(),
        "the node runs on PostgreSQL now"
    );
    let after = provider.audit_texts();
    assert!(after.len() >= verified);
    assert_eq!(
        after[..before.len()],
        before[..],
        "the audit log is the same"
    );
    // The payload is delivered from PostgreSQL, byte for byte (the pull checks every
    // chunk's hash against the agreed manifest).
    consumer
        .agree_and_pull(&provider, &product.offer_id, "urbanPlanning")
        .await;
    let out = Command::new(env!("CARGO_BIN_EXE_liutong"))
        .args(["audit", "verify", "--config"])
        .arg(&config_path)
        .env_remove("LIUTONG_CONFIG")
        .output()
        .unwrap();
    assert_succeeded(&out);
}

/// Starts `liutong serve` on `config` and waits for it to say it serves.
fn serve(config: &std::path::Path) -> common::process::Guard {
    use std::io::{BufRead, BufReader};
    let mut child = common::process::Guard(
        Command::new(env!("CARGO_BIN_EXE_liutong"))
            .args(["serve", "--config"])
            .arg(config)
            .env_remove("LIUTONG_CONFIG")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Its output is read to the end (a closed pipe would fail its later lines), and
    // the reading ends when the process does, so a node that never serves fails the
    // test instead of hanging it.
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    for line in rx.iter() {
        if line.contains("serving:") {
            std::thread::spawn(move || for _ in rx {});
            return child;
        }
        seen.push(line);
    }
    panic!("liutong serve ended without serving:\n{}", seen.join("\n"));
}

/// `liutong ARGS --json --config CONFIG`, parsed.
fn json(args: &[&str], config: &std::path::Path) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_liutong"))
        .args(args)
        .args(["--json", "--config"])
        .arg(config)
        .env_remove("LIUTONG_CONFIG")
        .output()
        .unwrap();
    assert_succeeded(&out);
    serde_json::from_slice(&out.stdout).unwrap()
}

fn stop(mut node: common::process::Guard) {
    let pid = node.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = node.wait().unwrap();
    assert!(status.success(), "liutong serve stopped with {status}");
}

/// The provider a `liutong demo` left behind moves into PostgreSQL: after `storage
/// migrate` it serves from there with the same products and agreements, and its audit
/// log verifies.
#[test]
fn the_provider_left_by_the_demo_moves_into_postgres() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo");
    let out = Command::new(env!("CARGO_BIN_EXE_liutong"))
        .arg("demo")
        .arg("--dir")
        .arg(&dir)
        .env_remove("LIUTONG_CONFIG")
        .output()
        .unwrap();
    assert_succeeded(&out);
    let config_path = dir.join("transport").join("node.toml");

    // What the provider holds on sled.
    let node = serve(&config_path);
    let products = json(&["product", "list"], &config_path);
    let contracts = json(&["contract", "list"], &config_path);
    let verified = json(&["audit", "verify"], &config_path);
    stop(node);
    assert!(
        !products.as_array().unwrap().is_empty() && !contracts.as_array().unwrap().is_empty(),
        "the demo left products and agreements: {products:#} {contracts:#}"
    );

    let cluster = postgres::shared();
    let db = cluster.database();
    let mut config = NodeConfig::load(&config_path).unwrap();
    config.storage = StorageSection {
        engine: StorageEngine::Postgres,
        url: Some(db.url.clone()),
        password_file: Some(cluster.password_file(&config.base_dir)),
        ..Default::default()
    };
    std::fs::write(&config_path, config.to_commented_toml()).unwrap();
    let out = migrate(&config_path);
    assert_succeeded(&out);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("audit log verified in PostgreSQL"), "{said}");
    // Nothing is read from sled from here on: its database is moved away.
    std::fs::rename(config.database_dir(), tmp.path().join("sled-db-moved-away")).unwrap();

    let node = serve(&config_path);
    assert_eq!(json(&["product", "list"], &config_path), products);
    assert_eq!(json(&["contract", "list"], &config_path), contracts);
    let after = json(&["audit", "verify"], &config_path);
    stop(node);
    assert!(
        cluster.psql(&db.name, "SELECT count(*) FROM liutong_kv") != "0",
        "the node's records are in PostgreSQL"
    );
    assert_eq!(after["ok"], true, "{after:#}");
    assert_eq!(after["origin"], verified["origin"], "{after:#}");
    assert!(
        after["logSize"].as_u64().unwrap() >= verified["logSize"].as_u64().unwrap(),
        "the log goes on from where it was on sled: {verified:#} {after:#}"
    );
    assert_eq!(after["undecodable"], serde_json::json!([]), "{after:#}");
}
