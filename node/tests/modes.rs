//! Everything a node keeps is owner-only: directories 0700, files 0600, whoever created
//! them (the node, sled, the payload store), and the node makes it so again at start.

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;

const OPEN_POLICY: &str = r#"
uid = "urn:liutong:policy:open"
type = "set"

[[permission]]
action = "use"
"#;

/// Every path under `dir` (itself included) whose mode is not 0700 for a directory or
/// 0600 for a file, with its mode.
fn not_owner_only(dir: &Path) -> Vec<(PathBuf, u32)> {
    let mut wrong = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(path) = pending.pop() {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let mode = meta.permissions().mode() & 0o777;
        if meta.is_dir() {
            if mode != 0o700 {
                wrong.push((path.clone(), mode));
            }
            for entry in std::fs::read_dir(&path).unwrap() {
                pending.push(entry.unwrap().path());
            }
        } else if meta.is_file() && mode != 0o600 {
            wrong.push((path, mode));
        }
    }
    wrong
}

#[tokio::test]
async fn a_node_keeps_every_file_owner_only() {
    let space = DataSpace::start().await;
    let (provider, consumer, _) = space.transport_ecology_logistics().await;
    let product = publish(
        &provider,
        &vec![5u8; 3 << 20],
        "Counts",
        "general-1",
        "bytes",
        OPEN_POLICY,
    )
    .await
    .unwrap();
    let contract = consumer
        .request_contract(&provider, &product.offer_id, "research")
        .await
        .unwrap();
    consumer.pull_all(&contract.agreement_id).await.unwrap();
    provider.running.node.storage.flush().await.unwrap();
    consumer.running.node.storage.flush().await.unwrap();

    for node in [&provider, &consumer] {
        let dir = node.config.data_dir();
        assert!(dir.join("db/payloads").is_dir(), "payloads kept in {dir:?}");
        assert_eq!(not_owner_only(&dir), vec![], "in {dir:?}");
    }
}

#[tokio::test]
async fn a_node_makes_loosened_files_owner_only_at_start() {
    let space = DataSpace::start().await;
    let node = space
        .node(TRANSPORT, "transport", Duration::from_secs(3600))
        .await;
    publish(&node, b"a,b\n1,2\n", "Counts", "general-1", "csv", "")
        .await
        .unwrap();
    let dir = node.config.data_dir();
    let stopped = node.stop().await;
    // What a copy with `cp -r` under umask 022, or a careless operator, leaves.
    for (path, mode) in [
        (dir.join("db"), 0o755),
        (dir.join("db/payloads"), 0o775),
        (dir.join("node.toml"), 0o644),
        (dir.join("identity/node.crt"), 0o664),
    ] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    assert_eq!(not_owner_only(&dir).len(), 4);

    let node = stopped.start().await;
    assert_eq!(not_owner_only(&dir), vec![]);
    assert_eq!(node.running.node.catalog.products.list().unwrap().len(), 1);
}
