//! The audit log as auditors and witnesses use it, with real nodes in-process: who may
//! read what, proofs that verify, tampering on disk found and named, checkpoints
//! cosigned by witnesses, and a node that shows two different checkpoints caught.

mod common;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use common::*;
use liutong_node::audit::auditor::VerifyError;
use liutong_node::audit::bundle::{BUNDLE_VERSION, EvidenceBundle, verify_bundle};
use liutong_node::audit::log::{Event, EventKind, origin_for};
use liutong_node::audit::merkle;
use liutong_node::audit::note::{self, Checkpoint};
use liutong_node::audit::search::SearchFilter;
use liutong_node::audit_client::AuditorClient;
use liutong_node::config::NodeConfig;
use liutong_node::identity::MemberRole;
use liutong_node::local::{self, LocalRole};
use liutong_node::runtime::{NodeError, RunningNode};
use liutong_node::storage::{SledStorage, Storage};
use liutong_proto::v1::audit_client::AuditClient;
use liutong_proto::v1::witness_client::WitnessClient;
use liutong_proto::v1::{
    CosignRequest, GetCheckpointRequest, GetEntriesRequest, GetVerifierKeyRequest,
    NewCheckpointRequest, ProveConsistencyRequest, ProveInclusionRequest, ReportCheckpointRequest,
};
use tonic::Code;
use tonic::transport::Channel;

const ALL_ROLES: &[MemberRole] = &[
    MemberRole::Provider,
    MemberRole::Consumer,
    MemberRole::Auditor,
];
const NO_AUDITOR: &[MemberRole] = &[MemberRole::Provider, MemberRole::Consumer];

async fn local_audit(node: &TestNode, role: LocalRole) -> AuditClient<Channel> {
    AuditClient::new(local::connect(&node.config, role).await.expect("local API"))
}

/// A client of `target`'s peer API presenting `caller`'s certificate.
async fn peer_auditor(caller: &TestNode, target: &TestNode) -> AuditorClient {
    AuditorClient::new(
        caller.channel_to(target).await,
        caller.config.authority.public_key,
    )
}

async fn local_auditor(node: &TestNode) -> AuditorClient {
    AuditorClient::new(
        local::connect(&node.config, LocalRole::Auditor)
            .await
            .unwrap(),
        node.config.authority.public_key,
    )
}

/// Stops a node and waits until its database can be opened directly.
async fn stop_and_open_db(node: TestNode) -> (NodeConfig, Arc<SledStorage>) {
    let config = node.config.clone();
    node.running.shutdown().await.expect("clean shutdown");
    let mut storage = None;
    assert!(
        wait_until(Duration::from_secs(10), || {
            storage = SledStorage::open(&config.database_dir()).ok();
            let ok = storage.is_some();
            async move { ok }
        })
        .await,
        "the database was not released"
    );
    (config, storage.unwrap())
}

async fn restart(config: NodeConfig) -> Result<RunningNode, NodeError> {
    // The ports may take a moment to be free again.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match RunningNode::start(config.clone()).await {
            // The ports, and the database of the stopped node (released once its last
            // connection task ends), may take a moment to be free again.
            Err(NodeError::Listen { .. } | NodeError::Storage(_))
                if tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => return other,
        }
    }
}

fn entry_key(index: u64) -> Vec<u8> {
    let mut key = vec![b'e'];
    key.extend_from_slice(&index.to_be_bytes());
    key
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auditors_read_and_prove_while_other_callers_are_refused() {
    let space = DataSpace::start().await;
    let node = space
        .node_with(TRANSPORT, "transport", NO_AUDITOR, |_| {})
        .await;
    let auditor = space.node_with(ECOLOGY, "ecology", ALL_ROLES, |_| {}).await;
    let plain = space
        .node_with(LOGISTICS, "logistics", NO_AUDITOR, |_| {})
        .await;
    refresh_all(&[&node, &auditor, &plain]).await;

    // Local auditor: the verifier key, a fresh checkpoint, entries and proofs.
    let mut local = local_audit(&node, LocalRole::Auditor).await;
    let vkey = local
        .get_verifier_key(GetVerifierKeyRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(
        vkey.log_key
            .starts_with(&format!("liutong.{TRANSPORT}/audit+")),
        "{}",
        vkey.log_key
    );
    let refused = local
        .new_checkpoint(NewCheckpointRequest {})
        .await
        .unwrap_err();
    assert_refused(&refused, Code::PermissionDenied, "admin");
    let cp = local_audit(&node, LocalRole::Admin)
        .await
        .new_checkpoint(NewCheckpointRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cp.size, node.running.node.audit.size());
    assert!(
        cp.witnessed,
        "quorum 0: every checkpoint counts as witnessed"
    );
    let key: note::VerifierKey = vkey.log_key.parse().unwrap();
    let (checkpoint, _) = note::open_checkpoint(cp.note.as_bytes(), &[key]).unwrap();
    assert_eq!(checkpoint.root.to_vec(), cp.root);

    let entries = local
        .get_entries(GetEntriesRequest { from: 0, to: 100 })
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert_eq!(entries.len() as u64, cp.size);
    let first: Event = serde_json::from_slice(&entries[0].data).unwrap();
    assert_eq!(first.kind, EventKind::NodeStarted);
    for e in &entries {
        let p = local
            .prove_inclusion(ProveInclusionRequest {
                index: e.index,
                size: 0,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(p.tree_size, cp.size);
        merkle::verify_inclusion(
            &merkle::leaf_hash(&e.data),
            e.index,
            cp.size,
            &p.proof,
            &checkpoint.root,
        )
        .unwrap();
    }
    let c = local
        .prove_consistency(ProveConsistencyRequest { size1: 1, size2: 0 })
        .await
        .unwrap()
        .into_inner();
    merkle::verify_consistency(1, cp.size, &c.root1, &checkpoint.root, &c.proof).unwrap();
    let bad = local
        .get_entries(GetEntriesRequest { from: 5, to: 2 })
        .await
        .unwrap_err();
    assert_refused(&bad, Code::InvalidArgument, "to");

    // The app role reads nothing of the log.
    let app = local_audit(&node, LocalRole::App)
        .await
        .get_checkpoint(GetCheckpointRequest {})
        .await
        .unwrap_err();
    assert_eq!(app.code(), Code::PermissionDenied);

    // A member without the auditor role reads checkpoints and keys, but no entries.
    let mut member = AuditClient::new(plain.channel_to(&node).await);
    member
        .get_checkpoint(GetCheckpointRequest {})
        .await
        .expect("any member reads checkpoints");
    let denied = member
        .get_entries(GetEntriesRequest { from: 0, to: 1 })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert!(
        denied.message().contains("auditor") && denied.message().contains(LOGISTICS),
        "{}",
        denied.message()
    );
    let denied = member
        .new_checkpoint(NewCheckpointRequest {})
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);

    // A member with the auditor role checks the whole log over the peer API.
    let report = peer_auditor(&auditor, &node).await.verify().await.unwrap();
    assert_eq!(report.origin, origin_for(&node.participant));
    assert!(report.entries >= cp.size);

    for n in [node, auditor, plain] {
        n.running.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_changed_on_disk_is_named_by_verify() {
    let space = DataSpace::start().await;
    let node = space
        .node_with(TRANSPORT, "transport", NO_AUDITOR, |_| {})
        .await;
    for i in 0..20 {
        node.running
            .node
            .audit
            .append(&Event::new(
                EventKind::Alert,
                1_800_000_000 + i,
                format!("event {i}"),
            ))
            .await
            .unwrap();
    }
    local_audit(&node, LocalRole::Admin)
        .await
        .new_checkpoint(NewCheckpointRequest {})
        .await
        .unwrap();
    local_auditor(&node)
        .await
        .verify()
        .await
        .expect("untouched log verifies");

    let (config, db) = stop_and_open_db(node).await;
    let (bad, original) = (0..30)
        .find_map(|i| {
            let e = String::from_utf8(db.get("audit", &entry_key(i)).unwrap()?).unwrap();
            e.contains("\"event 5\"").then_some((i, e))
        })
        .unwrap();
    let changed = original.replace("event 5", "event X");
    db.put("audit", &entry_key(bad), changed.as_bytes())
        .unwrap();
    db.flush().await.unwrap();
    drop(db);

    let running = restart(config.clone()).await.expect("the node starts");
    let node = TestNode {
        identity: liutong_node::tls::TlsIdentity::load(
            &config.identity_dir().join("node.crt"),
            &config.identity_dir().join("node.key"),
        )
        .unwrap(),
        participant: config.node.participant.clone(),
        config,
        running,
    };
    let err = local_auditor(&node).await.verify().await.unwrap_err();
    assert_eq!(err.bad_entry(), Some(bad), "{err}");
    assert!(err.to_string().contains(&format!("entry {bad} ")), "{err}");

    // The command does the same and exits non-zero.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_liutong"))
        .args(["audit", "verify", "--config"])
        .arg(node.config_path())
        .env_remove("LIUTONG_CONFIG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains(&format!("entry {bad} ")), "{stderr}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_liutong"))
        .args(["audit", "verify", "--json", "--config"])
        .arg(node.config_path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["badEntry"], bad);
    node.running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_after_the_checkpoint_are_verified_up_to_the_head() {
    let space = DataSpace::start().await;
    // No checkpoint by the timer after its first round: the tail stays unsigned.
    let node = space
        .node_with(TRANSPORT, "transport", NO_AUDITOR, |c| {
            c.audit.checkpoint_interval = Duration::from_secs(3600);
        })
        .await;
    let audit = &node.running.node.audit;
    for i in 0..12 {
        audit
            .append(&Event::new(
                EventKind::Alert,
                1_800_000_000 + i,
                format!("signed {i}"),
            ))
            .await
            .unwrap();
    }
    local_audit(&node, LocalRole::Admin)
        .await
        .new_checkpoint(NewCheckpointRequest {})
        .await
        .unwrap();
    // The timer's first round may still sign what was appended before it ran; a second
    // batch comes after that round.
    let (mut checkpoint, mut last_batch) = (0, 0);
    for batch in 0..2 {
        last_batch = batch;
        for i in 0..10 {
            audit
                .append(&Event::new(
                    EventKind::Alert,
                    1_800_000_100 + i,
                    format!("tail {batch}-{i}"),
                ))
                .await
                .unwrap();
        }
        checkpoint = local_audit(&node, LocalRole::Auditor)
            .await
            .get_checkpoint(GetCheckpointRequest {})
            .await
            .unwrap()
            .into_inner()
            .size;
        if checkpoint + 10 <= audit.size() {
            break;
        }
    }
    let head = audit.size();
    assert!(
        checkpoint + 10 <= head,
        "checkpoint {checkpoint}, head {head}"
    );

    let report = local_auditor(&node)
        .await
        .verify()
        .await
        .expect("the log verifies");
    assert_eq!(report.entries, head);
    assert_eq!(report.log_size, head);
    assert_eq!(report.checkpoint.checkpoint.size, checkpoint);
    assert_eq!(report.unsigned(), head - checkpoint);
    assert_eq!(report.head_root, audit.root_at(head).unwrap());

    // The command names the checkpoint the unsigned tail is consistent with.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_liutong"))
        .args(["audit", "verify", "--config"])
        .arg(node.config_path())
        .env_remove("LIUTONG_CONFIG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!(
            "{head} entries recomputed; root {} matches the signed checkpoint of size {checkpoint}",
            B64.encode(report.checkpoint.checkpoint.root)
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "head at size {head} (root {}): {} entries after the checkpoint, not signed yet, \
             consistent with the checkpoint of size {checkpoint}",
            B64.encode(report.head_root),
            head - checkpoint
        )),
        "{stdout}"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_liutong"))
        .args(["audit", "verify", "--json", "--config"])
        .arg(node.config_path())
        .env_remove("LIUTONG_CONFIG")
        .output()
        .unwrap();
    assert!(out.status.success());
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["entries"], head);
    assert_eq!(answer["unsigned"], head - checkpoint);
    assert_eq!(answer["consistentWith"]["size"], checkpoint);

    // An unsigned entry changed in storage: no signature covers it, but the node's tree
    // was built from the original bytes, so verify names it.
    let storage = node.running.node.storage.clone();
    let find = |text: &str| {
        (checkpoint..head)
            .find_map(|i| {
                let e = String::from_utf8(storage.get("audit", &entry_key(i)).unwrap()?).unwrap();
                e.contains(text).then_some((i, e))
            })
            .unwrap()
    };
    let (bad, original) = find(&format!("\"tail {last_batch}-4\""));
    storage
        .put(
            "audit",
            &entry_key(bad),
            original.replace("\"tail ", "\"tale ").as_bytes(),
        )
        .unwrap();
    let err = local_auditor(&node).await.verify().await.unwrap_err();
    assert!(
        matches!(err, VerifyError::BadTailEntry { index, checkpoint_size, .. }
            if index == bad && checkpoint_size == checkpoint),
        "{err}"
    );
    assert!(err.to_string().contains(&format!("entry {bad} ")), "{err}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_liutong"))
        .args(["audit", "verify", "--json", "--config"])
        .arg(node.config_path())
        .env_remove("LIUTONG_CONFIG")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["badEntry"], bad);

    // Put back, then a later unsigned entry deleted: named as missing.
    storage
        .put("audit", &entry_key(bad), original.as_bytes())
        .unwrap();
    local_auditor(&node).await.verify().await.expect("restored");
    let (gone, _) = find(&format!("\"tail {last_batch}-7\""));
    storage.delete("audit", &entry_key(gone)).unwrap();
    let err = local_auditor(&node).await.verify().await.unwrap_err();
    assert!(
        matches!(err, VerifyError::MissingTailEntry { index, .. } if index == gone),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains(&format!("entry {gone} is missing")),
        "{err}"
    );
    node.running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_log_is_named_by_verify_or_refused_at_start() {
    let space = DataSpace::start().await;
    let node = space
        .node_with(TRANSPORT, "transport", NO_AUDITOR, |_| {})
        .await;
    for i in 0..10 {
        node.running
            .node
            .audit
            .append(&Event::new(EventKind::Alert, i, "x"))
            .await
            .unwrap();
    }
    // Shutdown signs a checkpoint covering everything.
    let size = node.running.node.audit.size() + 1;
    let (config, db) = stop_and_open_db(node).await;

    // The tail's entries removed, the size left: the node starts, verify names the gap.
    for i in 6..size {
        db.delete("audit", &entry_key(i)).unwrap();
    }
    db.flush().await.unwrap();
    drop(db);
    let running = restart(config.clone()).await.expect("the node starts");
    let client = AuditorClient::new(
        local::connect(&config, LocalRole::Auditor).await.unwrap(),
        config.authority.public_key,
    );
    let mut client = client;
    let err = client.verify().await.unwrap_err();
    assert!(
        matches!(err, VerifyError::MissingEntry { index: 6, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("entry 6 is missing"), "{err}");
    running.shutdown().await.unwrap();

    // The size cut back too: the node refuses to start and says what was removed.
    let db = {
        let mut storage = None;
        wait_until(Duration::from_secs(10), || {
            storage = SledStorage::open(&config.database_dir()).ok();
            let ok = storage.is_some();
            async move { ok }
        })
        .await;
        storage.unwrap()
    };
    db.put("audit", b"m/size", &6u64.to_be_bytes()).unwrap();
    db.flush().await.unwrap();
    drop(db);
    let err = restart(config).await.err().expect("refused");
    let msg = err.to_string();
    assert!(
        msg.contains("truncated") && msg.contains("entries 6 to"),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn witnesses_cosign_checkpoints_and_auditors_check_the_cosignatures() {
    let space = DataSpace::start().await;
    let witness = space.node_with(ECOLOGY, "ecology", ALL_ROLES, |_| {}).await;
    let witness_addr = witness.peer_addr().to_string();
    let log = space
        .node_with(TRANSPORT, "transport", NO_AUDITOR, |c| {
            c.audit.witnesses = vec![witness_addr];
            c.audit.quorum = 1;
        })
        .await;
    refresh_all(&[&witness, &log]).await;

    let mut admin = local_audit(&log, LocalRole::Admin).await;
    let first = admin
        .new_checkpoint(NewCheckpointRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(first.witnessed, "{}", first.note);
    assert_eq!(first.cosignatures, 1);
    assert!(
        first.note.contains(&format!("liutong.{ECOLOGY}/witness ")),
        "{}",
        first.note
    );
    // The log grows; the next checkpoint is proven consistent with the cosigned one.
    for i in 0..5 {
        log.running
            .node
            .audit
            .append(&Event::new(EventKind::Alert, i, "grow"))
            .await
            .unwrap();
    }
    let second = admin
        .new_checkpoint(NewCheckpointRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(
        second.witnessed && second.size > first.size,
        "{}",
        second.note
    );
    let state = witness.running.node.witness.state().unwrap();
    assert_eq!(state.logs[&origin_for(&log.participant)].size, second.size);

    // An auditor checks the cosignature against the witness's credential.
    let report = peer_auditor(&witness, &log).await.verify().await.unwrap();
    assert_eq!(report.checkpoint.cosigners, [ECOLOGY]);
    // The node's status names the witness among its peers as having cosigned (its
    // credential opened with the authority key).
    let status = log
        .admin(LocalRole::Admin)
        .await
        .status(liutong_proto::v1::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    let peer = status
        .peers
        .iter()
        .find(|p| p.participant_id == ECOLOGY)
        .expect("the witness is a peer");
    assert!(peer.witness, "{status:?}");
    assert!(status.witness.is_some_and(|w| w.witnessed), "{status:?}");

    // The command prints the note exactly.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_liutong"))
        .args(["audit", "checkpoint", "--config"])
        .arg(log.config_path())
        .output()
        .unwrap();
    assert_succeeded(&out);
    assert_eq!(String::from_utf8(out.stdout).unwrap(), second.note);

    // After a restart the log no longer knows what the witness cosigned; the witness
    // names the size and the log proves from there.
    let config = log.config.clone();
    drop(admin);
    log.running.shutdown().await.unwrap();
    let restarted = restart(config.clone()).await.expect("the node restarts");
    let third = local::connect(&config, LocalRole::Admin)
        .await
        .map(AuditClient::new)
        .unwrap()
        .new_checkpoint(NewCheckpointRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(
        third.witnessed && third.size > second.size,
        "{}",
        third.note
    );
    assert!(witness.running.node.witness.evidence().unwrap().is_empty());

    restarted.shutdown().await.unwrap();
    witness.running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_showing_two_checkpoints_to_two_witnesses_is_caught() {
    let space = DataSpace::start().await;
    let w1 = space
        .node_with(ECOLOGY, "ecology", NO_AUDITOR, |_| {})
        .await;
    let w2 = space
        .node_with(LOGISTICS, "logistics", NO_AUDITOR, |_| {})
        .await;
    let liar = space
        .node_with(TRANSPORT, "transport", NO_AUDITOR, |_| {})
        .await;
    refresh_all(&[&w1, &w2, &liar]).await;

    // The liar signs two checkpoints of the same size with different roots.
    let origin = origin_for(&liar.participant);
    let key = &liar.running.node.identity.signing_key;
    let sign = |root: [u8; 32]| {
        note::sign_checkpoint(
            &Checkpoint {
                origin: origin.clone(),
                size: 3,
                root,
            },
            &origin,
            key,
        )
        .unwrap()
        .to_string()
    };
    let honest = sign(merkle::leaf_hash(b"one history"));
    let forged = sign(merkle::leaf_hash(b"another history"));

    let mut to_w1 = WitnessClient::new(liar.channel_to(&w1).await);
    let mut to_w2 = WitnessClient::new(liar.channel_to(&w2).await);
    let cosign = |note: &str| CosignRequest {
        note: note.to_owned(),
        old_size: 0,
        proof: vec![],
    };
    // Each witness alone sees nothing wrong.
    to_w1.cosign(cosign(&honest)).await.expect("w1 cosigns");
    let forged_cosigned = to_w2.cosign(cosign(&forged)).await.expect("w2 cosigns");
    assert!(
        forged_cosigned
            .into_inner()
            .cosignature
            .starts_with(&format!("— liutong.{LOGISTICS}/witness "))
    );

    // W2 (or anyone) shows W1 the checkpoint W2 cosigned: W1 catches the fork.
    let mut gossip = WitnessClient::new(w2.channel_to(&w1).await);
    let caught = gossip
        .report_checkpoint(ReportCheckpointRequest {
            note: forged.clone(),
        })
        .await
        .unwrap_err();
    assert_refused(&caught, Code::DataLoss, &origin);
    // The same split shown to W1 directly is caught too.
    let again = to_w1.cosign(cosign(&forged)).await.unwrap_err();
    assert_eq!(again.code(), Code::DataLoss);

    let evidence = w1.running.node.witness.evidence().unwrap();
    assert_eq!(evidence.len(), 2);
    assert_eq!(evidence[0].cosigned_note, honest);
    assert_eq!(evidence[0].offered_note, forged);
    // W1 never went back or forward: it still holds the checkpoint it cosigned.
    let state = w1.running.node.witness.state().unwrap();
    assert_eq!(state.logs[&origin].note, honest);

    // And W1's own log holds the alert, findable by the liar's participant ID.
    let found = liutong_node::audit::search::scan(
        &w1.running.node.audit,
        &SearchFilter {
            participant: Some(TRANSPORT.into()),
            ..SearchFilter::default()
        },
        0,
        w1.running.node.audit.size(),
    )
    .unwrap();
    // Two alerts (the fork reported, then offered again by the liar itself), and the
    // record of the liar's refused cosign request.
    let kinds: Vec<EventKind> = found
        .indices
        .iter()
        .map(|i| {
            serde_json::from_slice::<Event>(&w1.running.node.audit.entry(*i).unwrap().unwrap())
                .unwrap()
                .kind
        })
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == EventKind::Alert).count(),
        2,
        "{kinds:?}"
    );
    assert_eq!(
        kinds.iter().filter(|k| **k == EventKind::Refusal).count(),
        1,
        "{kinds:?}"
    );
    assert_eq!(found.indices.len(), 3, "{kinds:?}");
    let alert: Event = serde_json::from_slice(
        &w1.running
            .node
            .audit
            .entry(found.indices[0])
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(alert.kind, EventKind::Alert);

    // A member may only ask for its own log to be witnessed.
    let mut other = WitnessClient::new(w2.channel_to(&w1).await);
    let refused = other.cosign(cosign(&honest)).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);

    for n in [w1, w2, liar] {
        n.running.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evidence_bundle_from_two_nodes_verifies_offline_and_tampering_is_named() {
    let space = DataSpace::start().await;
    let provider = space
        .node_with(TRANSPORT, "transport", ALL_ROLES, |_| {})
        .await;
    let consumer = space
        .node_with(LOGISTICS, "logistics", ALL_ROLES, |_| {})
        .await;
    refresh_all(&[&provider, &consumer]).await;

    // Both sides log events about the same agreement.
    for (node, other) in [(&provider, LOGISTICS), (&consumer, TRANSPORT)] {
        for step in ["requested", "agreed"] {
            let mut e = Event::new(
                EventKind::Alert,
                1_800_000_000,
                format!("negotiation {step}"),
            );
            e.participant = Some(other.into());
            e.product = Some("bus-gps".into());
            e.agreement = Some("agr-1".into());
            node.running.node.audit.append(&e).await.unwrap();
        }
    }
    let out_file = space.dir.path().join("bundle.json");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_liutong"))
        .args(["audit", "export", "--agreement", "agr-1", "--peer"])
        .arg(consumer.peer_addr().to_string())
        .arg("--out")
        .arg(&out_file)
        .arg("--config")
        .arg(provider.config_path())
        .output()
        .unwrap();
    assert_succeeded(&out);

    let bundle: EvidenceBundle =
        serde_json::from_slice(&std::fs::read(&out_file).unwrap()).unwrap();
    assert_eq!(bundle.version, BUNDLE_VERSION);
    assert_eq!(bundle.logs.len(), 2);
    assert!(bundle.logs.iter().all(|l| l.entries.len() == 2));
    let authority_key = provider.config.authority.public_key;
    verify_bundle(&bundle, &authority_key).expect("the bundle verifies");

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_liutong"))
        .args(["audit", "verify", "--bundle"])
        .arg(&out_file)
        .arg("--authority-key")
        .arg(authority_key.to_base64())
        .output()
        .unwrap();
    assert_succeeded(&out);

    // A changed entry in the bundle is named.
    let mut tampered = bundle.clone();
    let entry = &mut tampered.logs[1].entries[1];
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let text = String::from_utf8(b64.decode(&entry.data).unwrap())
        .unwrap()
        .replace("agreed", "refused");
    entry.data = b64.encode(text);
    let index = entry.index;
    let err = verify_bundle(&tampered, &authority_key).unwrap_err();
    assert_eq!(err.bad_entry(), Some(index), "{err}");

    // Search by participant and product works the same way.
    let mut auditor = peer_auditor(&provider, &consumer).await;
    let evidence = auditor
        .collect_evidence(&SearchFilter {
            participant: Some(TRANSPORT.into()),
            product: Some("bus-gps".into()),
            ..SearchFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(evidence.entries.len(), 2);

    for n in [provider, consumer] {
        n.running.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_timer_signs_and_gets_witnessed_when_the_log_grows() {
    let space = DataSpace::start().await;
    let witness = space
        .node_with(ECOLOGY, "ecology", NO_AUDITOR, |_| {})
        .await;
    let witness_addr = witness.peer_addr().to_string();
    let log = space
        .node_with(TRANSPORT, "transport", NO_AUDITOR, |c| {
            c.audit.checkpoint_interval = Duration::from_millis(100);
            c.audit.witnesses = vec![witness_addr];
            c.audit.quorum = 1;
        })
        .await;
    refresh_all(&[&witness, &log]).await;
    let mut client = local_audit(&log, LocalRole::Auditor).await;
    for round in 0..2 {
        log.running
            .node
            .audit
            .append(&Event::new(EventKind::Alert, round, "grow"))
            .await
            .unwrap();
        let size = log.running.node.audit.size();
        let signed = wait_until(Duration::from_secs(20), || {
            let mut client = client.clone();
            async move {
                let cp = client
                    .get_checkpoint(GetCheckpointRequest {})
                    .await
                    .unwrap()
                    .into_inner();
                cp.size >= size && cp.witnessed
            }
        })
        .await;
        assert!(
            signed,
            "round {round}: no witnessed checkpoint of size {size}"
        );
    }
    let cp = client
        .get_checkpoint(GetCheckpointRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cp.cosignatures, 1);
    for n in [witness, log] {
        n.running.shutdown().await.unwrap();
    }
}
