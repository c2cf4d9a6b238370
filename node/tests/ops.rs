//! Operating a node, as an operator does it with the `liutong` binary against real nodes:
//! `status --json`, a backup taken while the node serves and is written to, restore
//! (and refusal of damaged files), and signing-key rotation with old checkpoints still
//! verifiable and peers still working.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use common::*;
use liutong_node::audit::note;
use liutong_node::audit_client::AuditorClient;
use liutong_node::config::NodeConfig;
use liutong_node::identity::{MemberRole, ParticipantKind, RegionCode};
use liutong_node::local::{self, LocalRole};
use liutong_node::runtime::RunningNode;
use liutong_proto::v1::{
    GetCheckpointRequest, GetEntriesRequest, ListContractsRequest, ListProductsRequest,
    NewCheckpointRequest, RequestContractRequest,
};
use tokio::net::TcpListener;

const BIN: &str = env!("CARGO_BIN_EXE_liutong");

const OPEN_POLICY: &str = r#"
uid = "urn:liutong:policy:open"
type = "set"

[[permission]]
action = "use"
"#;

const IMPORTANT_POLICY: &str = r#"
uid = "urn:liutong:policy:od-matrix"
type = "set"

[[permission]]
action = "use"
constraint = [
  { leftOperand = "purpose", operator = "isA", rightOperand = "research" },
  { leftOperand = "region", operator = "isPartOf", rightOperand = "330000" },
]
"#;

const CSV: &[u8] = b"road,hour,vehicles\nYan'an Rd,8,1520\nTianmushan Rd,8,1210\n";

/// Runs the binary off the async threads (it may call back into this process's nodes).
async fn liutong(args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args(&args)
            .env_remove("LIUTONG_CONFIG")
            .env_remove("LIUTONG_DATA")
            .output()
            .expect("run liutong")
    })
    .await
    .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A government provider and an enterprise consumer that know each other.
async fn two_nodes(space: &DataSpace) -> (TestNode, TestNode) {
    let transport = space
        .node(TRANSPORT, "transport", Duration::from_secs(3600))
        .await;
    let mut logistics = DataSpace::admission(
        LOGISTICS,
        "Hangzhou Logistics Co.",
        ParticipantKind::Enterprise,
    );
    logistics.region = RegionCode::parse("330106").unwrap();
    let logistics = space.node_as(logistics, "logistics").await;
    refresh_all(&[&transport, &logistics]).await;
    (transport, logistics)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_json_reports_peers_trust_age_log_size_and_pending_approvals() {
    let space = DataSpace::start().await;
    let (transport, logistics) = two_nodes(&space).await;
    let od = publish(
        &transport,
        CSV,
        "Mobility OD matrix",
        "important",
        "csv",
        IMPORTANT_POLICY,
    )
    .await
    .unwrap();
    let pending = logistics
        .request_contract(&transport, &od.offer_id, "scientificResearch")
        .await
        .expect("request");
    assert_eq!(pending.state, "REQUESTED");

    let before = transport.running.node.audit.size();
    let out = liutong(&[
        "status",
        "--json",
        "--config",
        path(&transport.config_path()),
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out));
    let after = transport.running.node.audit.size();
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");

    assert_eq!(s["node"]["participant_id"], TRANSPORT);
    assert_eq!(s["pending_approvals"], 1, "{s:#}");
    let peers = s["peers"].as_array().expect("peers");
    assert_eq!(peers.len(), 1, "{s:#}");
    assert_eq!(peers[0]["participant_id"], LOGISTICS);
    assert_eq!(peers[0]["name"], "Hangzhou Logistics Co.");
    assert_eq!(peers[0]["negotiations"], 1);
    let age = s["trust_list_age_seconds"].as_i64().expect("age");
    assert!((0..120).contains(&age), "trust list age {age}");
    assert!(s["trust_list"]["sequence"].as_u64().unwrap() > 0);
    let size = s["audit_log_size"].as_u64().expect("log size");
    assert!(
        before <= size && size <= after && size > 0,
        "{before} <= {size} <= {after}"
    );
    // No witnesses configured and quorum 0: the latest checkpoint counts as witnessed.
    assert_eq!(s["witness"]["quorum"], 0);
    assert_eq!(s["witness"]["witnessed"], true);
    assert!(s["witness"]["checkpoint_size"].as_u64().unwrap() > 0);
    assert_eq!(s["health"], "SERVING");
    assert!(s["database_bytes"].as_u64().unwrap() > 0);

    // The consumer waits on nothing of its own.
    let out = liutong(&[
        "status",
        "--json",
        "--config",
        path(&logistics.config_path()),
    ])
    .await;
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(s["pending_approvals"], 0);
    assert_eq!(s["peers"][0]["participant_id"], TRANSPORT);

    transport.running.shutdown().await.unwrap();
    logistics.running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_while_serving_and_writing_restores_a_working_node_and_damage_is_refused() {
    let space = DataSpace::start().await;
    let (transport, logistics) = two_nodes(&space).await;
    let traffic = publish(
        &transport,
        CSV,
        "Road traffic flow",
        "general-2",
        "csv",
        OPEN_POLICY,
    )
    .await
    .unwrap();
    let agreed = logistics
        .request_contract(&transport, &traffic.offer_id, "urbanPlanning")
        .await
        .expect("request");
    assert_eq!(agreed.state, "FINALIZED", "{agreed:?}");

    // A writer publishes products for as long as the backup runs.
    let stop = Arc::new(AtomicBool::new(false));
    let published = Arc::new(AtomicU32::new(0));
    let writer = {
        let (stop, published) = (stop.clone(), published.clone());
        let config = transport.config.clone();
        tokio::spawn(async move {
            let mut admin = liutong_proto::v1::admin_client::AdminClient::new(
                local::connect(&config, LocalRole::Admin).await.unwrap(),
            );
            let mut i = 0u32;
            while !stop.load(Ordering::SeqCst) && i < 500 {
                let messages = liutong_node::catalog::publish_messages(
                    liutong_proto::v1::PublishMetadata {
                        title: format!("Hourly counts {i}"),
                        description: "written during the backup".into(),
                        classification: "general-1".into(),
                        format: "bytes".into(),
                        ..Default::default()
                    },
                    format!("payload {i}").as_bytes(),
                );
                admin
                    .publish_product(tokio_stream::iter(messages))
                    .await
                    .expect("publish during backup");
                i += 1;
                published.store(i, Ordering::SeqCst);
            }
        })
    };
    assert!(
        wait_until(Duration::from_secs(20), || {
            let p = published.clone();
            async move { p.load(Ordering::SeqCst) >= 2 }
        })
        .await
    );
    let file = space.dir.path().join("transport.backup");
    let out = liutong(&[
        "backup",
        "--out",
        path(&file),
        "--config",
        path(&transport.config_path()),
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("private keys"), "{}", text(&out));
    stop.store(true, Ordering::SeqCst);
    writer.await.unwrap();
    let written_during = published.load(Ordering::SeqCst);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600,
        "a backup holds private keys"
    );
    // The audit log size the backup announces.
    let backed_up_log: u64 = text(&out)
        .split("audit log of ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("the backup names its audit log size");

    // Damage of every kind is refused, and the target is left as it was.
    let bytes = std::fs::read(&file).unwrap();
    let target = space.dir.path().join("restored");
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("keep.txt"), b"the operator's file").unwrap();
    // Where each record starts: `tag ‖ length (u32, big-endian) ‖ payload`, after the
    // first line. The damage below is placed, not left to where the middle byte falls.
    let mut records = Vec::new();
    let mut at = b"LIUTONG-BACKUP/1\n".len();
    while at < bytes.len() {
        let len = u32::from_be_bytes(bytes[at + 1..at + 5].try_into().unwrap()) as usize;
        records.push((at, len));
        at += 5 + len;
    }
    assert_eq!(at, bytes.len(), "the records end with the file");
    let (middle, middle_len) = records[records.len() / 2];
    let flip = |i: usize, bits: u8| {
        let mut b = bytes.clone();
        b[i] ^= bits;
        b
    };
    for (name, damaged, expected) in [
        // The highest byte of the middle record's length, 128 MiB added: a reader that
        // trusted the frames before the file's hash would run off the end of the file
        // and call it truncated. The lowest byte: the records after it are misaligned.
        ("length-flipped", flip(middle + 1, 0x08), "is damaged"),
        ("length-low-flipped", flip(middle + 4, 0x01), "is damaged"),
        (
            "payload-flipped",
            flip(middle + 5 + middle_len / 2, 0x01),
            "is damaged",
        ),
        ("seal-flipped", flip(bytes.len() - 1, 0x01), "is damaged"),
        ("truncated", bytes[..bytes.len() - 40].to_vec(), "truncated"),
        (
            "cut-in-record",
            bytes[..middle + 5 + middle_len / 2].to_vec(),
            "truncated",
        ),
        ("cut-between-records", bytes[..middle].to_vec(), "truncated"),
        (
            "other",
            b"not a backup at all".to_vec(),
            "not a Liutong backup",
        ),
    ] {
        let bad = space.dir.path().join(format!("{name}.backup"));
        std::fs::write(&bad, damaged).unwrap();
        let out = liutong(&["restore", path(&bad), "--dir", path(&target), "--force"]).await;
        assert_eq!(out.status.code(), Some(1), "{name}: {}", text(&out));
        let message = text(&out);
        assert!(message.contains(expected), "{name}: {message}");
        assert!(
            message.contains("nothing was restored"),
            "{name}: {message}"
        );
        let left: Vec<_> = std::fs::read_dir(&target)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["keep.txt"], "{name}: the target was touched");
        let siblings: Vec<String> = std::fs::read_dir(space.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("restor"))
            .collect();
        assert_eq!(siblings, ["restored"], "{name}: left {siblings:?}");
    }
    // Not over a running node, and not into an occupied directory without --force.
    let out = liutong(&[
        "restore",
        path(&file),
        "--dir",
        path(&transport.config.data_dir()),
        "--force",
    ])
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("running node"), "{}", text(&out));
    let out = liutong(&["restore", path(&file), "--dir", path(&target)]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("--force"), "{}", text(&out));

    // A sound file restores into a fresh directory, and a node starts on it.
    let fresh = space.dir.path().join("fresh");
    let out = liutong(&["restore", path(&file), "--dir", path(&fresh)]).await;
    assert!(out.status.success(), "{}", text(&out));
    let mut config = NodeConfig::load(&fresh.join("node.toml")).unwrap();
    assert_eq!(config.node.participant.to_string(), TRANSPORT);
    // The original still runs on its addresses: the restored node gets its own.
    let (peer, admin) = (
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
    );
    config.node.listen = peer.local_addr().unwrap();
    config.node.admin_listen = admin.local_addr().unwrap();
    config.node.health_listen = Some("127.0.0.1:0".parse().unwrap());
    let restored = RunningNode::start_with_listeners(config.clone(), peer, admin)
        .await
        .expect("a node starts on the restored directory");
    let mut admin = liutong_proto::v1::admin_client::AdminClient::new(
        local::connect(&config, LocalRole::Admin).await.unwrap(),
    );
    let products = admin
        .list_products(ListProductsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .products;
    assert!(products.iter().any(|p| p.product_id == traffic.product_id));
    // The bytes came along (payload files beside the database), not only the records.
    let store = &restored.node.catalog.products;
    assert_eq!(
        store
            .chunk(&traffic.product_id, 1, 0)
            .expect("the product's bytes"),
        CSV,
        "the restored product's bytes"
    );
    for p in &products {
        store
            .chunk(&p.product_id, 1, 0)
            .unwrap_or_else(|e| panic!("{}: its bytes were not restored: {e}", p.product_id));
    }
    let copied = products.len() as u32 - 1;
    assert!(
        copied >= 2 && copied <= written_during,
        "{copied} of {written_during} products written during the backup"
    );
    let contracts = admin
        .list_contracts(ListContractsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .contracts;
    assert!(
        contracts
            .iter()
            .any(|c| c.agreement_id == agreed.agreement_id && c.state == "FINALIZED"),
        "{contracts:?}"
    );
    // The audit log: the same entries as the original, up to the backup's size, and the
    // whole log recomputes against the restored node's signed checkpoint.
    let restored_size = restored.node.audit.size();
    assert!(restored_size > backed_up_log, "{restored_size}");
    let first = backed_up_log - 1;
    let mut original_audit = liutong_proto::v1::audit_client::AuditClient::new(
        local::connect(&transport.config, LocalRole::Auditor)
            .await
            .unwrap(),
    );
    let mut restored_audit = liutong_proto::v1::audit_client::AuditClient::new(
        local::connect(&config, LocalRole::Auditor).await.unwrap(),
    );
    let entries = |r: liutong_proto::v1::GetEntriesResponse| {
        r.entries.into_iter().map(|e| e.data).collect::<Vec<_>>()
    };
    let request = GetEntriesRequest { from: 0, to: first };
    let restored_entries = entries(
        restored_audit
            .get_entries(request)
            .await
            .unwrap()
            .into_inner(),
    );
    assert!(restored_entries.len() as u64 >= first.min(999));
    assert_eq!(
        restored_entries,
        entries(
            original_audit
                .get_entries(request)
                .await
                .unwrap()
                .into_inner()
        )
    );
    let report = AuditorClient::new(
        local::connect(&config, LocalRole::Auditor).await.unwrap(),
        config.authority.public_key,
    )
    .verify()
    .await
    .expect("the restored log verifies");
    assert!(
        report.entries > first,
        "{} entries verified, backup had {backed_up_log}",
        report.entries
    );
    let health = restored.health_addr().expect("health endpoint");
    assert_eq!(
        liutong_node::health::check(health, Duration::from_secs(5)).await,
        Ok(tonic_health::ServingStatus::Serving)
    );
    restored.shutdown().await.unwrap();
    transport.running.shutdown().await.unwrap();
    logistics.running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_key_signs_new_checkpoints_old_ones_still_verify_and_peers_still_work() {
    let space = DataSpace::start().await;
    let ecology = space
        .node_with(ECOLOGY, "ecology", &[MemberRole::Auditor], |_| {})
        .await;
    let ecology_addr = ecology.peer_addr().to_string();
    let transport = space
        .node_with(
            TRANSPORT,
            "transport",
            &[MemberRole::Provider, MemberRole::Consumer],
            |c| {
                c.audit.witnesses = vec![ecology_addr.clone()];
                c.audit.quorum = 1;
            },
        )
        .await;
    let mut logistics = DataSpace::admission(
        LOGISTICS,
        "Hangzhou Logistics Co.",
        ParticipantKind::Enterprise,
    );
    logistics.region = RegionCode::parse("330106").unwrap();
    let logistics = space.node_as(logistics, "logistics").await;
    refresh_all(&[&transport, &ecology, &logistics]).await;
    let traffic = publish(
        &transport,
        CSV,
        "Road traffic flow",
        "general-2",
        "csv",
        OPEN_POLICY,
    )
    .await
    .unwrap();

    // A checkpoint signed (and witnessed) under the old key, saved by an auditor.
    let mut audit = liutong_proto::v1::audit_client::AuditClient::new(
        local::connect(&transport.config, LocalRole::Admin)
            .await
            .unwrap(),
    );
    let old = audit
        .new_checkpoint(NewCheckpointRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(old.witnessed, "{old:?}");
    let saved = space.dir.path().join("old-checkpoint.txt");
    std::fs::write(&saved, &old.note).unwrap();
    let config_path = transport.config_path();
    let config_arg = path(&config_path).to_owned();

    // 1. The node prepares a key; 2. the authority vouches for it.
    let out = liutong(&["key", "rotate", "--config", &config_arg]).await;
    assert!(out.status.success(), "{}", text(&out));
    let new_key = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("public key: ").map(str::to_owned))
        .expect("the new public key is printed");
    let credential = space.dir.path().join("new-credential.json");
    let out = liutong(&[
        "authority",
        "rekey",
        "--dir",
        path(&space.authority_dir),
        "--participant",
        TRANSPORT,
        "--signing-key",
        &new_key,
        "--out",
        path(&credential),
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out));

    // 3. Installing needs the node stopped; a credential for another key is refused.
    let out = liutong(&[
        "key",
        "rotate",
        "--config",
        &config_arg,
        "--credential",
        path(&credential),
    ])
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("running node"), "{}", text(&out));
    let peer_addr = transport.peer_addr();
    let config = transport.config.clone();
    transport.running.shutdown().await.unwrap();
    // In-process, the database closes when the last task holding it has ended.
    assert!(
        wait_until(Duration::from_secs(20), || {
            let dir = config.data_dir();
            async move { liutong_node::backup::ensure_stopped(&dir).is_ok() }
        })
        .await,
        "the stopped node released its database"
    );
    let foreign = space.dir.path().join("foreign-credential.json");
    std::fs::write(
        &foreign,
        std::fs::read(ecology.config.identity_dir().join("credential.json")).unwrap(),
    )
    .unwrap();
    let out = liutong(&[
        "key",
        "rotate",
        "--config",
        &config_arg,
        "--credential",
        path(&foreign),
    ])
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("issued to"), "{}", text(&out));
    let out = liutong(&[
        "key",
        "rotate",
        "--config",
        &config_arg,
        "--credential",
        path(&credential),
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out));

    // The node starts again on its address with the new key.
    let restarted = RunningNode::start_with_listeners(
        config.clone(),
        TcpListener::bind(peer_addr).await.unwrap(),
        TcpListener::bind(config.node.admin_listen).await.unwrap(),
    )
    .await
    .expect("the rotated node starts");
    assert_eq!(
        restarted.node.identity.signing_key.public_key().to_base64(),
        new_key
    );
    refresh_all(&[&ecology, &logistics]).await;
    liutong_proto::v1::admin_client::AdminClient::new(
        local::connect(&config, LocalRole::Admin).await.unwrap(),
    )
    .refresh_trust_list(liutong_proto::v1::RefreshTrustListRequest {})
    .await
    .unwrap();

    // The old checkpoint verifies through the key history, and the log only grew since.
    let mut auditor = AuditorClient::new(
        local::connect(&config, LocalRole::Auditor).await.unwrap(),
        config.authority.public_key,
    );
    let mut admin_audit = liutong_proto::v1::audit_client::AuditClient::new(
        local::connect(&config, LocalRole::Admin).await.unwrap(),
    );
    let new = admin_audit
        .new_checkpoint(NewCheckpointRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(
        new.witnessed,
        "the witness cosigns under the new key: {new:?}"
    );
    let report = auditor
        .verify_saved(&old.note)
        .await
        .expect("old checkpoint");
    assert!(report.by_previous_key);
    assert_eq!(report.checkpoint.size, old.size);
    let log = auditor.trusted_log().await.unwrap();
    assert_eq!(log.membership.signing_key.to_base64(), new_key);
    // The new key alone does not open the old checkpoint, and the old key is not the
    // one that signs now.
    assert!(
        note::open_checkpoint(old.note.as_bytes(), std::slice::from_ref(&log.log_key)).is_err()
    );
    let previous = auditor.previous_log_keys(&log).await.unwrap();
    assert_eq!(previous.len(), 1);
    assert!(note::open_checkpoint(new.note.as_bytes(), &previous).is_err());
    assert!(note::open_checkpoint(new.note.as_bytes(), std::slice::from_ref(&log.log_key)).is_ok());
    // The whole log (latest checkpoint under the new key) verifies, and the CLI agrees.
    auditor.verify().await.expect("the log verifies");
    let out = liutong(&[
        "audit",
        "verify",
        "--checkpoint",
        path(&saved),
        "--config",
        &config_arg,
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("earlier key"), "{}", text(&out));
    let out = liutong(&["audit", "vkey", "--config", &config_arg]).await;
    assert!(text(&out).contains("previous liutong."), "{}", text(&out));
    // The rotation is in the log.
    let entries = admin_audit
        .get_entries(GetEntriesRequest {
            from: 0,
            to: restarted.node.audit.size() - 1,
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert!(
        entries
            .iter()
            .any(|e| String::from_utf8_lossy(&e.data).contains("signing_key_rotated")),
        "no signing_key_rotated entry"
    );

    // Peers accept the new signatures: a consumer gets a finalized agreement.
    let agreed = logistics
        .admin(LocalRole::Admin)
        .await
        .request_contract(RequestContractRequest {
            peer: peer_addr.to_string(),
            offer_id: traffic.offer_id.clone(),
            purpose: "urbanPlanning".into(),
        })
        .await
        .expect("request to the rotated node")
        .into_inner();
    assert_eq!(agreed.state, "FINALIZED", "{agreed:?}");
    let checkpoint = admin_audit
        .get_checkpoint(GetCheckpointRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(checkpoint.size >= new.size);

    restarted.shutdown().await.unwrap();
    ecology.running.shutdown().await.unwrap();
    logistics.running.shutdown().await.unwrap();
}
