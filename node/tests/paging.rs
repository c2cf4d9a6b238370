//! Every list is paged: page sizes with a default and a maximum, opaque page tokens that
//! are checked, the last page without a next token, pages that follow each other without
//! gaps or repeats, and the `liutong` listings following the pages to the end, across a
//! hundred thousand negotiations.

mod common;

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use liutong_node::contract::{Contracts, Negotiation, NegotiationStatus};
use liutong_node::identity::MemberRole;
use liutong_node::local::LocalRole;
use liutong_node::storage::{SledStorage, Storage, Write};
use liutong_proto::v1::catalog_client::CatalogClient;
use liutong_proto::v1::usage_control_client::UsageControlClient;
use liutong_proto::v1::{
    Contract, GetProductRequest, ListContractsRequest, ListCopiesRequest, ListOffersRequest,
    ListProductsRequest, ListRevocationsRequest, ListTransfersRequest, PeerCatalogRequest,
    RevocationsRequest, RevokeRequest,
};
use tonic::{Code, Status};

const ROLES: &[MemberRole] = &[MemberRole::Provider, MemberRole::Consumer];
const CSV: &[u8] = b"district,households\nXihu,241000\nShangcheng,198000\n";
const OPEN: &str = r#"
uid = "urn:liutong:policy:open"
type = "set"

[[permission]]
action = "use"
"#;

/// Tokens that are not page tokens of any list: not base64, base64 of something else,
/// and one far too long.
fn bad_tokens() -> Vec<String> {
    vec![
        "not a token!".into(),
        "bmVnLTAwMQ".into(), // base64 of "neg-001"
        "A".repeat(5000),
    ]
}

/// One page: its items and its next_page_token.
type Answer<T> = Result<(Vec<T>, String), Status>;

/// Follows a list from its first page with `page_size`, checking that every page but
/// the last is full and names a next page; bounded by `max_pages`.
async fn walk<T, Fut>(
    page_size: u32,
    max_pages: usize,
    mut fetch: impl FnMut(u32, String) -> Fut,
) -> Vec<T>
where
    Fut: Future<Output = Answer<T>>,
{
    let mut all = Vec::new();
    let mut token = String::new();
    for _ in 0..max_pages {
        let (items, next) = fetch(page_size, token.clone()).await.expect("a page");
        let last = next.is_empty();
        if !last {
            assert_eq!(
                items.len(),
                page_size as usize,
                "a page before the last is full"
            );
        }
        all.extend(items);
        if last {
            return all;
        }
        assert_ne!(next, token, "a next page token moves on");
        token = next;
    }
    panic!("the list did not end within {max_pages} pages");
}

/// The checks every list gets: following pages of one item gives what one page of the
/// default size gives, in the same order, without repeats; bad tokens, and a token of
/// another list, are INVALID_ARGUMENT.
async fn check_list<T, K, Fut>(
    what: &str,
    expected: usize,
    key: impl Fn(&T) -> K,
    foreign_token: Option<&str>,
    mut fetch: impl FnMut(u32, String) -> Fut,
) -> String
where
    K: std::hash::Hash + Eq + std::fmt::Debug,
    Fut: Future<Output = Answer<T>>,
{
    let (whole, next) = fetch(0, String::new()).await.expect("the first page");
    assert_eq!(next, "", "{what}: all fit in one page of the default size");
    assert_eq!(whole.len(), expected, "{what}");
    let paged = walk(1, expected + 2, &mut fetch).await;
    let keys: Vec<K> = paged.iter().map(&key).collect();
    assert_eq!(
        keys,
        whole.iter().map(&key).collect::<Vec<_>>(),
        "{what}: pages of one give the same items in the same order"
    );
    assert_eq!(
        keys.iter().collect::<HashSet<_>>().len(),
        expected,
        "{what}"
    );
    let (_, first_token) = fetch(1, String::new()).await.expect("a page of one");
    assert!(!first_token.is_empty(), "{what}: more than one item");
    for token in bad_tokens()
        .into_iter()
        .chain(foreign_token.map(str::to_owned))
    {
        let e = fetch(1, token.clone()).await.err().unwrap_or_else(|| {
            panic!("{what}: the token {token:.40} was accepted");
        });
        assert_refused(&e, Code::InvalidArgument, "page_token");
    }
    first_token
}

/// The transport bureau provides; the ecology bureau consumes and asks for revocations
/// only when told to (so pending revocations stay pending while the test looks).
async fn provider_and_consumer() -> (DataSpace, TestNode, TestNode) {
    let space = DataSpace::start().await;
    let provider = space.node_with(TRANSPORT, "transport", ROLES, |_| {}).await;
    let consumer = space
        .node_with(ECOLOGY, "ecology", ROLES, |c| {
            c.usage.check_interval = Duration::from_secs(3600)
        })
        .await;
    refresh_all(&[&provider, &consumer]).await;
    (space, provider, consumer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_list_pages_with_checked_tokens() {
    let (space, provider, consumer) = provider_and_consumer().await;
    // Three offered products, the first in two versions, and three agreements with
    // their copies pulled; two of them revoked.
    let mut offers = Vec::new();
    for title in ["Road traffic", "Bus lines", "Parking"] {
        let p = publish(&provider, CSV, title, "general-2", "csv", OPEN)
            .await
            .expect("publish");
        offers.push(p);
    }
    let admin = provider.admin(LocalRole::Admin).await;
    let second = liutong_node::catalog::publish_messages(
        liutong_proto::v1::PublishMetadata {
            product_id: offers[0].product_id.clone(),
            title: "Road traffic".into(),
            classification: "general-2".into(),
            format: "csv".into(),
            policy: OPEN.into(),
            ..Default::default()
        },
        CSV,
    );
    admin
        .clone()
        .publish_product(tokio_stream::iter(second))
        .await
        .expect("a second version");
    let mut agreements = Vec::new();
    for p in &offers {
        let c = consumer
            .request_contract(&provider, &p.offer_id, "urbanPlanning")
            .await
            .expect("agreement");
        assert_eq!(c.state, "FINALIZED");
        consumer.pull_all(&c.agreement_id).await.expect("pull");
        agreements.push(c.agreement_id);
    }
    let provider_usage = provider.usage(LocalRole::Admin).await;
    for a in &agreements[..2] {
        provider_usage
            .clone()
            .revoke(RevokeRequest {
                agreement_id: a.clone(),
                reason: "survey withdrawn".into(),
            })
            .await
            .expect("revoke");
    }

    let products_token = check_list(
        "products",
        3,
        |p: &liutong_proto::v1::Product| p.product_id.clone(),
        None,
        |page_size, page_token| {
            let mut admin = admin.clone();
            async move {
                let a = admin
                    .list_products(ListProductsRequest {
                        page_size,
                        page_token,
                    })
                    .await?
                    .into_inner();
                Ok((a.products, a.next_page_token))
            }
        },
    )
    .await;
    let listed = admin
        .clone()
        .list_products(ListProductsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .products;
    assert!(
        listed
            .iter()
            .any(|p| p.product_id == offers[0].product_id && p.version == 2),
        "the latest version is listed"
    );

    let product = offers[0].product_id.clone();
    check_list(
        "versions",
        2,
        |p: &liutong_proto::v1::Product| p.version,
        Some(&products_token),
        |page_size, page_token| {
            let (mut admin, product_id) = (admin.clone(), product.clone());
            async move {
                let a = admin
                    .get_product(GetProductRequest {
                        product_id,
                        page_size,
                        page_token,
                    })
                    .await?
                    .into_inner();
                Ok((a.products, a.next_page_token))
            }
        },
    )
    .await;

    for (node, name) in [(&provider, "provider"), (&consumer, "consumer")] {
        let admin = node.admin(LocalRole::Auditor).await;
        check_list(
            &format!("contracts at the {name}"),
            3,
            |c: &liutong_proto::v1::Contract| c.negotiation_id.clone(),
            Some(&products_token),
            |page_size, page_token| {
                let mut admin = admin.clone();
                async move {
                    let a = admin
                        .list_contracts(ListContractsRequest {
                            page_size,
                            page_token,
                        })
                        .await?
                        .into_inner();
                    Ok((a.contracts, a.next_page_token))
                }
            },
        )
        .await;
    }

    let consumer_admin = consumer.admin(LocalRole::Auditor).await;
    check_list(
        "transfers",
        3,
        |t: &liutong_proto::v1::TransferProgress| t.agreement_id.clone(),
        Some(&products_token),
        |page_size, page_token| {
            let mut admin = consumer_admin.clone();
            async move {
                let a = admin
                    .list_transfers(ListTransfersRequest {
                        page_size,
                        page_token,
                    })
                    .await?
                    .into_inner();
                Ok((a.transfers, a.next_page_token))
            }
        },
    )
    .await;

    let consumer_usage = consumer.usage(LocalRole::App).await;
    check_list(
        "copies",
        3,
        |c: &liutong_proto::v1::CopyStatus| c.agreement_id.clone(),
        Some(&products_token),
        |page_size, page_token| {
            let mut usage = consumer_usage.clone();
            async move {
                let a = usage
                    .list_copies(ListCopiesRequest {
                        page_size,
                        page_token,
                    })
                    .await?
                    .into_inner();
                Ok((a.copies, a.next_page_token))
            }
        },
    )
    .await;

    check_list(
        "revocations",
        2,
        |r: &liutong_proto::v1::RevocationStatus| r.agreement_id.clone(),
        Some(&products_token),
        |page_size, page_token| {
            let mut usage = provider_usage.clone();
            async move {
                let a = usage
                    .list_revocations(ListRevocationsRequest {
                        page_size,
                        page_token,
                    })
                    .await?
                    .into_inner();
                Ok((a.revocations, a.next_page_token))
            }
        },
    )
    .await;

    // The peer API: the consumer's pending revocations, asked of the provider directly.
    let channel = consumer.channel_to(&provider).await;
    let pending_token = check_list(
        "pending revocations",
        2,
        |e: &liutong_proto::v1::Envelope| e.payload.clone(),
        Some(&products_token),
        |page_size, page_token| {
            let mut peer = UsageControlClient::new(channel.clone());
            async move {
                let a = peer
                    .revocations(RevocationsRequest {
                        page_size,
                        page_token,
                    })
                    .await?
                    .into_inner();
                Ok((a.revocations, a.next_page_token))
            }
        },
    )
    .await;
    // Another member cannot page through them with the consumer's token.
    let logistics = space.node_with(LOGISTICS, "logistics", ROLES, |_| {}).await;
    refresh_all(&[&provider, &consumer, &logistics]).await;
    let e = UsageControlClient::new(logistics.channel_to(&provider).await)
        .revocations(RevocationsRequest {
            page_size: 1,
            page_token: pending_token,
        })
        .await
        .expect_err("another member's page token");
    assert_refused(&e, Code::InvalidArgument, "page_token");

    check_list(
        "the provider's catalog, asked directly",
        3,
        |p: &liutong_proto::v1::Product| p.product_id.clone(),
        Some(&products_token),
        |page_size, page_token| {
            let mut peer = CatalogClient::new(channel.clone());
            async move {
                let a = peer
                    .list(ListOffersRequest {
                        page_size,
                        page_token,
                    })
                    .await?
                    .into_inner();
                Ok((a.offers, a.next_page_token))
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_catalog_longer_than_a_page_is_listed_whole() {
    let (_space, provider, consumer) = provider_and_consumer().await;
    // 60 offers (a page holds 50 by default) and 15 products that are not offered,
    // which the consumer never sees and which do not shorten its pages.
    let mut offered = HashSet::new();
    for i in 0..75 {
        let policy = if i % 5 == 4 { "" } else { OPEN };
        let p = publish(
            &provider,
            CSV,
            &format!("Sensor {i}"),
            "general-2",
            "csv",
            policy,
        )
        .await
        .expect("publish");
        if !policy.is_empty() {
            offered.insert(p.product_id);
        }
    }
    assert_eq!(offered.len(), 60);
    let admin = consumer.admin(LocalRole::Admin).await;
    let address = provider.peer_addr().to_string();
    let fetch = |page_size, page_token| {
        let (mut admin, address) = (admin.clone(), address.clone());
        async move {
            let a = admin
                .peer_catalog(PeerCatalogRequest {
                    address,
                    page_size,
                    page_token,
                })
                .await?
                .into_inner();
            Ok((a.offers, a.next_page_token))
        }
    };
    let (first, next) = fetch(0, String::new()).await.expect("first page");
    assert_eq!(first.len(), 50, "the default page size");
    assert!(!next.is_empty(), "more offers follow");
    let all = walk(50, 10, fetch).await;
    let seen: HashSet<String> = all.iter().map(|p| p.product_id.clone()).collect();
    assert_eq!(all.len(), 60, "no offer twice");
    assert_eq!(seen, offered, "every offer, and only offers");
    let ids: Vec<&String> = all.iter().map(|p| &p.product_id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "by product ID");

    // Pages of 7 give the same offers.
    let by_seven = walk(7, 20, fetch).await;
    assert_eq!(
        by_seven.iter().map(|p| &p.product_id).collect::<Vec<_>>(),
        ids
    );
    // A peer's bad token reaches the caller as the peer's INVALID_ARGUMENT.
    let Err(e) = fetch(0, "not a token!".into()).await else {
        panic!("a bad token is refused");
    };
    assert_refused(&e, Code::InvalidArgument, "page_token");
}

/// The negotiation records the ecology bureau's node keeps, as stored.
fn stored_negotiations(storage: &dyn Storage) -> Vec<Negotiation> {
    storage
        .scan_prefix("negotiations", b"")
        .unwrap()
        .iter()
        .map(|(_, v)| serde_json::from_slice(v).expect("a stored negotiation"))
        .collect()
}

/// Runs the `liutong` binary off the runtime's worker threads.
async fn liutong(args: Vec<String>) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_liutong"))
            .args(args)
            .output()
            .expect("the binary runs")
    })
    .await
    .unwrap()
}

/// Stops `consumer` and adds `count` negotiations to its database the way its contract
/// store writes them: copies of the negotiation `template_id` under new IDs, ended, a
/// second apart, some created before it and most after. The first thousand are stored
/// as a node stored them before negotiations were indexed by creation time: the record
/// alone.
async fn add_ended_negotiations(
    consumer: TestNode,
    template_id: &str,
    count: usize,
) -> StoppedNode {
    let stopped = consumer.stop().await;
    let mut storage: Option<Arc<SledStorage>> = None;
    assert!(
        wait_until(Duration::from_secs(10), || {
            storage = SledStorage::open(&stopped.config.database_dir()).ok();
            let opened = storage.is_some();
            async move { opened }
        })
        .await,
        "the stopped node's database was not released"
    );
    let storage = storage.unwrap();
    let template = stored_negotiations(storage.as_ref())
        .into_iter()
        .find(|n| n.id == template_id)
        .expect("the template negotiation");
    let mut trees: std::collections::BTreeMap<&str, Vec<Write>> = Default::default();
    for i in 0..count {
        let mut n = template.clone();
        n.id = format!("neg-bulk-{i:06}");
        n.state = NegotiationStatus::Terminated;
        n.reason = "ended without an agreement".into();
        n.agreement = None;
        n.agreement_id = None;
        n.created_at = template.created_at - 1000 + i as i64;
        n.updated_at = n.created_at;
        for (tree, write) in Contracts::record_writes(&n) {
            if i < 1000 && tree != "negotiations" {
                continue;
            }
            trees.entry(tree).or_default().push(write);
        }
    }
    for (tree, writes) in trees {
        storage.apply(tree, writes).unwrap();
    }
    storage.flush().await.unwrap();
    stopped
}

/// A provider and a stopped consumer with one real agreement between them (its record
/// at the consumer) and `count` ended negotiations added to the consumer's database
/// ([`add_ended_negotiations`]).
async fn one_agreement_and_ended_negotiations(
    count: usize,
) -> (DataSpace, TestNode, Contract, StoppedNode) {
    let (space, provider, consumer) = provider_and_consumer().await;
    let p = publish(&provider, CSV, "Road traffic", "general-2", "csv", OPEN)
        .await
        .expect("publish");
    let real = consumer
        .request_contract(&provider, &p.offer_id, "urbanPlanning")
        .await
        .expect("agreement");
    let stopped = add_ended_negotiations(consumer, &real.negotiation_id, count).await;
    (space, provider, real, stopped)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contract_list_shows_a_hundred_thousand_negotiations() {
    const ADDED: usize = 99_999;
    let (_space, _provider, real, stopped) = one_agreement_and_ended_negotiations(ADDED).await;
    let config_path = stopped.config_path();
    let consumer = stopped.start().await;
    let config = config_path.to_string_lossy().into_owned();

    let out = liutong(vec![
        "contract".into(),
        "list".into(),
        "--json".into(),
        "--config".into(),
        config.clone(),
    ])
    .await;
    assert_succeeded(&out);
    let listed: Vec<serde_json::Value> =
        serde_json::from_slice(&out.stdout).expect("one JSON array");
    assert_eq!(listed.len(), ADDED + 1, "every negotiation, once");
    let ids: HashSet<&str> = listed
        .iter()
        .map(|c| c["negotiation_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), ADDED + 1, "no negotiation twice");
    assert!(ids.contains(real.negotiation_id.as_str()));
    let created: Vec<i64> = listed
        .iter()
        .map(|c| c["created_at"].as_i64().unwrap())
        .collect();
    assert!(created.windows(2).all(|w| w[0] <= w[1]), "oldest first");

    // The text listing streams one line per negotiation.
    let out = liutong(vec![
        "contract".into(),
        "list".into(),
        "--config".into(),
        config,
    ])
    .await;
    assert_succeeded(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), ADDED + 1);
    assert!(text.lines().all(|l| l.starts_with("neg")), "{:.200}", text);

    // The largest page is the maximum, whatever the request asks for.
    let mut admin = consumer.admin(LocalRole::Admin).await;
    let page = admin
        .list_contracts(ListContractsRequest {
            page_size: u32::MAX,
            page_token: String::new(),
        })
        .await
        .expect("a page")
        .into_inner();
    assert_eq!(page.contracts.len(), 1000);
    assert!(!page.next_page_token.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_longer_than_the_burst_waits_for_the_nodes_rate() {
    const ADDED: usize = 250; // three pages of the default size
    let (_space, _provider, _, mut stopped) = one_agreement_and_ended_negotiations(ADDED).await;
    let config_path = stopped.config_path();
    // One request at once and two a second for each caller: the listing's second page
    // is refused unless the command waits for its turn.
    stopped.config.limits.requests_per_second_per_member = 2;
    stopped.config.limits.request_burst_per_member = 1;
    std::fs::write(&config_path, stopped.config.to_commented_toml()).unwrap();
    let consumer = stopped.start().await;
    let before = consumer.audit_events().len();

    let out = liutong(vec![
        "contract".into(),
        "list".into(),
        "--json".into(),
        "--config".into(),
        config_path.to_string_lossy().into_owned(),
    ])
    .await;
    assert_succeeded(&out);
    let listed: Vec<serde_json::Value> =
        serde_json::from_slice(&out.stdout).expect("one JSON array");
    assert_eq!(listed.len(), ADDED + 1, "every negotiation");
    let refused: Vec<_> = consumer.audit_events()[before..]
        .iter()
        .filter(|e| e["kind"] == "refusal")
        .cloned()
        .collect();
    assert!(refused.is_empty(), "the node refused nothing: {refused:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_takes_up_revocations_longer_than_a_page() {
    const AGREEMENTS: usize = 101; // one more than a page of the default size
    let (_space, provider, consumer) = provider_and_consumer().await;
    let p = publish(&provider, CSV, "Road traffic", "general-2", "csv", OPEN)
        .await
        .expect("publish");
    let mut agreements = Vec::new();
    for _ in 0..AGREEMENTS {
        let c = consumer
            .request_contract(&provider, &p.offer_id, "urbanPlanning")
            .await
            .expect("agreement");
        agreements.push(c.agreement_id);
    }
    // A copy of one, so the consumer asks this provider for revocations.
    consumer.pull_all(&agreements[0]).await.expect("pull");
    let usage = provider.usage(LocalRole::Admin).await;
    for a in &agreements {
        usage
            .clone()
            .revoke(RevokeRequest {
                agreement_id: a.clone(),
                reason: "survey withdrawn".into(),
            })
            .await
            .expect("revoke");
    }
    // The consumer asks once, when it starts (its next poll is an hour away): that
    // one poll must take up every page.
    let consumer = consumer.restart().await;
    let copies = consumer.usage(LocalRole::Auditor).await;
    let revoked = || {
        let copies = copies.clone();
        async move {
            let all = walk(100, 10, |page_size, page_token| {
                let mut copies = copies.clone();
                async move {
                    let a = copies
                        .list_copies(ListCopiesRequest {
                            page_size,
                            page_token,
                        })
                        .await?
                        .into_inner();
                    Ok((a.copies, a.next_page_token))
                }
            })
            .await;
            all.iter().filter(|c| c.state == "REVOKED").count()
        }
    };
    // Bounded wait for the condition: the deletions are committed one by one.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut seen = revoked().await;
    while seen < AGREEMENTS && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        seen = revoked().await;
    }
    assert_eq!(
        seen, AGREEMENTS,
        "revocations taken up by the one poll at the start"
    );
}
