//! Personal data at rest: what a revoked masked delivery leaves on the provider's disk,
//! looked for byte by byte in every file under the node's data directory.

mod common;

use std::path::Path;

use common::*;
use liutong_node::identity::MemberRole;
use liutong_node::local::LocalRole;
use liutong_proto::v1::RevokeRequest;

const ROLES: &[MemberRole] = &[MemberRole::Provider, MemberRole::Consumer];

/// Masks the mobile number to 3 + 4 characters and keeps the other columns.
const MASK_MOBILES: &str = r#"
uid = "urn:liutong:policy:masked-mobiles"
type = "set"

[[permission]]
action = "use"
duty = [
  { action = "mask", rules = [{ field = { name = "mobile" }, method = { keep = { first = 3, last = 4 } } }] },
]
"#;

/// Every file under `dir` (recursively) whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(at) = pending.pop() {
        for entry in std::fs::read_dir(&at).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if let Ok(bytes) = std::fs::read(&path)
                && bytes.windows(needle.len()).any(|w| w == needle)
            {
                found.push(path.display().to_string());
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_masked_delivery_leaves_no_byte_on_the_provider() {
    let space = DataSpace::start().await;
    let provider = space.node_with(TRANSPORT, "transport", ROLES, |_| {}).await;
    let consumer = space.node_with(ECOLOGY, "ecology", ROLES, |_| {}).await;
    refresh_all(&[&provider, &consumer]).await;

    // A distinctive masked value: the masked form of this mobile, with a rare
    // neighbour in the same row that only the masked bytes carry next to it.
    let csv = b"resident_code,mobile\nQZ7Y-unique-resident,13912340987\n";
    let masked_row: &[u8] = b"QZ7Y-unique-resident,139****0987";
    let product = publish(
        &provider,
        csv,
        "Residents",
        "general-2",
        "csv",
        MASK_MOBILES,
    )
    .await
    .unwrap();
    let contract = consumer
        .request_contract(&provider, &product.offer_id, "statistics")
        .await
        .unwrap();
    consumer.pull_all(&contract.agreement_id).await.unwrap();
    let data_dir = provider.config.data_dir();
    assert!(
        !files_containing(&data_dir, masked_row).is_empty(),
        "the provider stored the masked delivery"
    );

    provider
        .usage(LocalRole::Admin)
        .await
        .revoke(RevokeRequest {
            agreement_id: contract.agreement_id.clone(),
            reason: "consent withdrawn".into(),
        })
        .await
        .unwrap();
    // Whatever the node does at start (finishing removals a stop cut short) is done
    // once it serves again.
    let provider = provider.restart().await;
    let left = files_containing(&provider.config.data_dir(), masked_row);
    assert!(
        left.is_empty(),
        "masked bytes left after revocation: {left:?}"
    );
    drop(space);
}
