//! A publish stores a product only when its upload ended with its end message and every
//! byte it declares arrived: a stopped, cancelled or short upload leaves no product and
//! no payload file.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use liutong_node::catalog::{publish_end, publish_messages};
use liutong_node::config::DATABASE_DIR;
use liutong_node::local::LocalRole;
use liutong_proto::v1::publish_request::Part;
use liutong_proto::v1::{ListProductsRequest, PublishMetadata, PublishRequest};
use sha2::{Digest, Sha256};

fn metadata(title: &str) -> PublishMetadata {
    PublishMetadata {
        product_id: String::new(),
        title: title.into(),
        description: String::new(),
        classification: "general-1".into(),
        format: "bytes".into(),
        policy: String::new(),
        policy_format: String::new(),
        derived_from: vec![],
    }
}

fn data_part(bytes: Vec<u8>) -> PublishRequest {
    PublishRequest {
        part: Some(Part::Data(bytes)),
    }
}

/// Every file under the node's payload directory; on PostgreSQL, where payloads are
/// rows, every payload the store holds.
fn payload_files(node: &TestNode) -> Vec<String> {
    let blobs = node.running.node.storage.blobs();
    if blobs.path("probe").is_err() {
        return blobs.all().unwrap();
    }
    fn walk(dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.push(path.display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(
        &node.config.data_dir().join(DATABASE_DIR).join("payloads"),
        &mut out,
    );
    out
}

async fn product_count(node: &TestNode) -> usize {
    node.admin(LocalRole::Admin)
        .await
        .list_products(ListProductsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .products
        .len()
}

#[tokio::test]
async fn an_upload_that_stops_before_its_end_stores_nothing() {
    let space = DataSpace::start().await;
    let node = space
        .node(TRANSPORT, "transport", Duration::from_secs(3600))
        .await;
    let mut messages = publish_messages(metadata("stopped"), &vec![7u8; 3 << 20]);
    messages.pop(); // the end message

    let err = node
        .admin(LocalRole::Admin)
        .await
        .publish_product(tokio_stream::iter(messages))
        .await
        .unwrap_err();
    assert_refused(
        &err,
        tonic::Code::InvalidArgument,
        "the upload stopped before its end message; nothing was stored",
    );
    assert_eq!(product_count(&node).await, 0);
    assert_eq!(payload_files(&node), Vec::<String>::new());
}

#[tokio::test]
async fn an_upload_whose_end_does_not_match_stores_nothing() {
    let space = DataSpace::start().await;
    let node = space
        .node(TRANSPORT, "transport", Duration::from_secs(3600))
        .await;
    let data = vec![1u8; 2 << 20];
    let mut messages = publish_messages(metadata("short"), &data);
    // One piece lost on the way: the end still names the whole payload.
    messages.remove(1);
    let err = node
        .admin(LocalRole::Admin)
        .await
        .publish_product(tokio_stream::iter(messages))
        .await
        .unwrap_err();
    assert_refused(
        &err,
        tonic::Code::InvalidArgument,
        "end: the client sent 2097152 bytes",
    );
    assert!(err.message().contains("but 1048576 bytes"), "{err:?}");

    let mut messages = publish_messages(metadata("not hex"), &data);
    *messages.last_mut().unwrap() = PublishRequest {
        part: Some(Part::End(liutong_proto::v1::PublishEnd {
            size: data.len() as u64,
            sha256: "\u{1b}[31m".repeat(100),
        })),
    };
    let err = node
        .admin(LocalRole::Admin)
        .await
        .publish_product(tokio_stream::iter(messages))
        .await
        .unwrap_err();
    assert_refused(&err, tonic::Code::InvalidArgument, "end: sha256 must be");
    assert!(!err.message().contains('\u{1b}'), "{err:?}");

    assert_eq!(product_count(&node).await, 0);
    assert_eq!(payload_files(&node), Vec::<String>::new());
}

#[tokio::test]
async fn a_cancelled_upload_stores_nothing() {
    let space = DataSpace::start().await;
    let node = space
        .node(TRANSPORT, "transport", Duration::from_secs(3600))
        .await;
    let mut admin = node.admin(LocalRole::Admin).await;
    let (tx, rx) = tokio::sync::mpsc::channel::<PublishRequest>(4);
    let call = tokio::spawn(async move {
        admin
            .publish_product(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
    });
    tx.send(PublishRequest {
        part: Some(Part::Metadata(metadata("cancelled"))),
    })
    .await
    .unwrap();
    for _ in 0..20 {
        tx.send(data_part(vec![9u8; 1 << 20])).await.unwrap();
    }
    // The node has the 20 MiB being written when the client goes away mid-stream.
    assert!(
        wait_until(Duration::from_secs(20), || async {
            !payload_files(&node).is_empty()
        })
        .await,
        "the upload never reached the node"
    );
    call.abort(); // drops the call: the client resets the stream
    drop(tx);

    assert!(
        wait_until(Duration::from_secs(20), || async {
            payload_files(&node).is_empty()
        })
        .await,
        "the cancelled upload's payload stayed: {:?}",
        payload_files(&node)
    );
    assert_eq!(product_count(&node).await, 0);

    // A complete upload afterwards is stored, and only it.
    publish(&node, b"whole", "whole", "general-1", "bytes", "")
        .await
        .unwrap();
    assert_eq!(product_count(&node).await, 1);
    assert_eq!(payload_files(&node).len(), 1);
}

#[tokio::test]
async fn an_upload_with_its_end_is_stored_with_that_hash() {
    let space = DataSpace::start().await;
    let node = space
        .node(TRANSPORT, "transport", Duration::from_secs(3600))
        .await;
    let data = vec![3u8; (1 << 20) + 5];
    let product = publish(&node, &data, "whole", "general-1", "bytes", "")
        .await
        .unwrap();
    assert_eq!(product.size, data.len() as u64);
    assert_eq!(product.sha256, hex::encode(Sha256::digest(&data)));
    assert_eq!(
        publish_end(5, Sha256::digest(b"hello")).sha256,
        "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    );
}

#[tokio::test]
async fn the_cli_publishes_nothing_when_its_file_cannot_be_read() {
    let space = DataSpace::start().await;
    let node = space
        .node(TRANSPORT, "transport", Duration::from_secs(3600))
        .await;
    // A directory opens but cannot be read: the upload stops without its end.
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_liutong"));
    command
        .args(["product", "publish"])
        .arg(space.dir.path())
        .args([
            "--title",
            "unreadable",
            "--classification",
            "general-1",
            "--format",
            "bytes",
            "--config",
        ])
        .arg(node.config_path())
        .env_remove("LIUTONG_CONFIG");
    let out = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("cannot read") && stderr.contains("nothing was published"),
        "{stderr}"
    );
    assert_eq!(product_count(&node).await, 0);
    assert_eq!(payload_files(&node), Vec::<String>::new());
}
