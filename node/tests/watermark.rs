//! Traceable copies across real nodes: every consumer of a tabular product gets its
//! own watermarked delivery, and a copy that turns up — rows shuffled, rows and
//! columns dropped — is traced to the agreement it came from, and to no other.

mod common;

use std::time::Duration;

use common::*;
use liutong_node::desensitize::recognise::idcard_check_character;
use liutong_node::local::LocalRole;
use liutong_node::transfer::Manifest;
use liutong_proto::v1::{RevokeRequest, TraceCopyRequest, TraceCopyResponse};
use sha2::{Digest, Sha256};

const ROLES: &[liutong_node::identity::MemberRole] = &[
    liutong_node::identity::MemberRole::Provider,
    liutong_node::identity::MemberRole::Consumer,
];
/// Generous bound for what the background task does every 200 ms.
const SOON: Duration = Duration::from_secs(30);

const USE: &str = "uid = \"urn:liutong:policy:residents\"\ntype = \"set\"\n\n\
                   [[permission]]\naction = \"use\"\n";

struct Space {
    space: DataSpace,
    provider: TestNode,
    a: TestNode,
    b: TestNode,
}

async fn space() -> Space {
    let space = DataSpace::start().await;
    let quick = |c: &mut liutong_node::config::NodeConfig| {
        c.usage.check_interval = Duration::from_millis(200)
    };
    let provider = space.node_with(TRANSPORT, "transport", ROLES, quick).await;
    let a = space.node_with(ECOLOGY, "ecology", ROLES, quick).await;
    let b = space.node_with(LOGISTICS, "logistics", ROLES, quick).await;
    refresh_all(&[&provider, &a, &b]).await;
    Space {
        space,
        provider,
        a,
        b,
    }
}

/// A small deterministic generator, so the synthetic people are the same every run.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % below
    }
}

const HEADER: &str = "name,id_number,mobile,email,district,birth_date,income,savings";

/// Synthetic residents: names, GB 11643 ID numbers, mobiles, e-mails, districts,
/// birth dates, and two measures (monthly income, savings in yuan with fen).
fn residents(rows: usize, seed: u64) -> String {
    let mut r = Lcg(seed);
    let surnames = [
        "Wang", "Li", "Zhang", "Liu", "Chen", "Yang", "Zhao", "Huang",
    ];
    let districts = ["Xihu", "Shangcheng", "Gongshu", "Binjiang", "Yuhang"];
    let mut out = format!("{HEADER}\n");
    for i in 0..rows {
        let birth = format!(
            "{}{:02}{:02}",
            1950 + r.next(55),
            1 + r.next(12),
            1 + r.next(28)
        );
        let first17 = format!("330106{birth}{:03}", r.next(1000));
        let id = format!("{first17}{}", idcard_check_character(&first17).unwrap());
        out.push_str(&format!(
            "{} {},{id},1{}{:08},p{i}@example.cn,{},{}-{}-{},{},{}.{:02}\n",
            surnames[r.next(8) as usize],
            ["Wei", "Na", "Min", "Jie", "Fang"][r.next(5) as usize],
            [38, 39, 58, 86][r.next(4) as usize],
            r.next(100_000_000),
            districts[r.next(5) as usize],
            &birth[..4],
            &birth[4..6],
            &birth[6..],
            10_000 + r.next(40_000),
            100_000 + r.next(900_000),
            r.next(100)
        ));
    }
    out
}

/// Agrees on `offer` as `consumer` and pulls the copy; returns the agreement ID.
async fn agree_and_pull(consumer: &TestNode, provider: &TestNode, offer: &str) -> String {
    consumer
        .agree_and_pull(provider, offer, "urbanPlanning")
        .await
}

/// The bytes of a consumer's copy and its manifest.
fn copy_of(node: &TestNode, agreement: &str) -> (String, Manifest) {
    let storage = node.running.node.storage.as_ref();
    let copy = liutong_node::transfer::copy(storage, agreement)
        .unwrap()
        .expect("a copy");
    let manifest = copy.manifest.peek_json::<Manifest>().unwrap();
    let bytes: Vec<u8> = (0..manifest.chunk_hashes.len() as u32)
        .flat_map(|i| {
            liutong_node::transfer::copy_chunk(storage, agreement, i)
                .unwrap()
                .expect("every chunk received")
        })
        .collect();
    (String::from_utf8(bytes).unwrap(), manifest)
}

/// Runs the `liutong` binary (off the runtime's worker threads).
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

async fn trace(provider: &TestNode, data: &[u8], product: &str) -> TraceCopyResponse {
    provider
        .admin(LocalRole::Admin)
        .await
        .trace_copy(TraceCopyRequest {
            data: data.to_vec(),
            product_id: product.into(),
        })
        .await
        .expect("trace")
        .into_inner()
}

/// `text` as rows of cells (header first).
fn rows(text: &str) -> Vec<Vec<&str>> {
    text.lines().map(|l| l.split(',').collect()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shuffled_cut_copy_is_traced_to_its_consumer_and_not_the_other() {
    let s = space().await;
    let original = residents(240, 7);
    let product = publish(
        &s.provider,
        original.as_bytes(),
        "Residents",
        "general-2",
        "csv",
        USE,
    )
    .await
    .expect("publish");
    let agreement_a = agree_and_pull(&s.a, &s.provider, &product.offer_id).await;
    let agreement_b = agree_and_pull(&s.b, &s.provider, &product.offer_id).await;
    let (copy_a, _) = copy_of(&s.a, &agreement_a);
    let (copy_b, manifest_b) = copy_of(&s.b, &agreement_b);
    assert!(copy_a != copy_b, "each consumer's delivery is its own");

    // The manifest says what is marked.
    let d = manifest_b
        .desensitized
        .as_ref()
        .expect("a derived delivery");
    let w = d.watermark.as_ref().expect("a watermark summary");
    assert!(w.embedded);
    let markable = rows(&original)[1..]
        .iter()
        .flat_map(|r| [r[6], r[7]])
        .filter(|v| liutong_node::desensitize::watermark::markable(v))
        .count();
    assert!(
        markable > 400,
        "most incomes and all savings can carry a mark"
    );
    assert_eq!(w.cells, markable as u64);
    assert_eq!(w.fields, vec!["income", "savings"]);
    assert_eq!(manifest_b.sha256, hex::encode(Sha256::digest(&copy_b)));

    // Identifiers, contacts, districts and dates are untouched; each measure moves by
    // at most one unit in its last digit.
    let (before, after) = (rows(&original), rows(&copy_b));
    assert_eq!(before.len(), after.len());
    assert_eq!(before[0], after[0], "the header stays");
    let mut changed = 0;
    for (b, a) in before.iter().zip(&after).skip(1) {
        assert_eq!(b[..6], a[..6], "only measures carry marks");
        for i in 6..8 {
            let (x, y): (f64, f64) = (b[i].parse().unwrap(), a[i].parse().unwrap());
            let unit = if b[i].contains('.') { 0.01 } else { 1.0 };
            assert!((x - y).abs() <= unit + 1e-9, "{} → {}", b[i], a[i]);
            changed += usize::from(b[i] != a[i]);
        }
    }
    assert!(changed > 0, "some values carry a changed digit");

    // B's copy, shuffled, a quarter of its rows dropped, two columns dropped.
    let mut body: Vec<&Vec<&str>> = after[1..].iter().collect();
    let mut r = Lcg(99);
    for i in (1..body.len()).rev() {
        body.swap(i, r.next(i as u64 + 1) as usize);
    }
    let mut leaked = String::from("mobile,income,district,name,id_number,birth_date\n");
    for (i, row) in body.iter().enumerate() {
        if i % 4 == 3 {
            continue;
        }
        leaked.push_str(&format!(
            "{},{},{},{},{},{}\n",
            row[2], row[6], row[4], row[0], row[1], row[5]
        ));
    }
    let found = trace(&s.provider, leaked.as_bytes(), &product.product_id).await;
    assert!(found.traced, "{found:?}");
    assert_eq!(found.agreements, 2);
    assert_eq!(found.candidates[0].agreement_id, agreement_b, "{found:?}");
    assert_eq!(found.candidates[0].consumer, LOGISTICS);
    assert!(found.candidates[0].score >= found.threshold, "{found:?}");
    assert_eq!(found.candidates[1].agreement_id, agreement_a);
    assert!(found.candidates[1].score < found.threshold, "{found:?}");
    assert!(
        found.verdict.contains(&agreement_b) && found.verdict.contains("runner-up"),
        "{}",
        found.verdict
    );
    // Across every product too.
    let anywhere = trace(&s.provider, leaked.as_bytes(), "").await;
    assert_eq!(anywhere.candidates[0].agreement_id, agreement_b);

    // The provider's command, on the copy as a file.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("found.csv");
    std::fs::write(&file, &leaked).unwrap();
    let out = liutong(vec![
        "trace".into(),
        file.display().to_string(),
        "--product".into(),
        product.product_id.clone(),
        "--config".into(),
        s.provider.config_path().display().to_string(),
    ])
    .await;
    assert_succeeded(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    let first = text.lines().next().unwrap_or_default();
    assert!(
        first.starts_with(&format!("the copy came from agreement {agreement_b}"))
            && first.contains(LOGISTICS)
            && first.contains("runner-up score"),
        "{text}"
    );
    assert!(text.contains("threshold 6.0"), "{text}");

    // Neither an unrelated file of the same shape nor the unmarked product itself
    // matches any agreement.
    for (what, data) in [("unrelated", residents(240, 8)), ("unmarked", original)] {
        let found = trace(&s.provider, data.as_bytes(), &product.product_id).await;
        assert!(!found.traced, "{what}: {found:?}");
        assert!(
            found.candidates.iter().all(|c| c.score < found.threshold),
            "{what}: {found:?}"
        );
        assert!(
            found.verdict.starts_with("no agreement matches"),
            "{what}: {}",
            found.verdict
        );
    }
    drop(s.space);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_product_without_measures_is_delivered_as_it_is() {
    let s = space().await;
    let data = b"road,hour,vehicles\nYan'an Rd,8,1520\nTianmushan Rd,8,1210\n";
    let product = publish(&s.provider, data, "Traffic", "general-2", "csv", USE)
        .await
        .expect("publish");
    let agreement = agree_and_pull(&s.a, &s.provider, &product.offer_id).await;
    let (copy, manifest) = copy_of(&s.a, &agreement);
    assert_eq!(copy.as_bytes(), data);
    assert!(manifest.desensitized.is_none(), "{manifest:?}");
    assert_eq!(manifest.sha256, product.sha256);
    let found = trace(&s.provider, data, &product.product_id).await;
    assert!(!found.traced);
    assert_eq!(found.agreements, 0, "{found:?}");
    drop(s.space);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watermarked_delivery_keeps_the_product_hash_from_the_consumer_and_ends_with_revocation()
{
    let s = space().await;
    let original = residents(60, 3);
    let product = publish(
        &s.provider,
        original.as_bytes(),
        "Residents",
        "general-2",
        "csv",
        USE,
    )
    .await
    .expect("publish");
    // The catalog the consumer reads names no hash of the product's own bytes.
    let offers =
        s.a.admin(LocalRole::Admin)
            .await
            .peer_catalog(liutong_proto::v1::PeerCatalogRequest {
                address: s.provider.peer_addr().to_string(),
                page_size: 0,
                page_token: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .offers;
    assert_eq!(offers.len(), 1);
    assert!(offers[0].sha256.is_empty(), "{:?}", offers[0]);
    let contract =
        s.a.request_contract(&s.provider, &product.offer_id, "urbanPlanning")
            .await
            .unwrap();
    let envelope: liutong_node::identity::Envelope =
        serde_json::from_str(&contract.agreement_json).unwrap();
    let signed: serde_json::Value = serde_json::from_slice(&envelope.payload).unwrap();
    assert_eq!(signed["derived"], true);
    assert_ne!(signed["product_sha256"], product.sha256.as_str());
    let done = s.a.pull_all(&contract.agreement_id).await.unwrap();
    assert_eq!(done.state, "COMPLETED");
    assert_ne!(done.sha256, product.sha256);

    // The marked bytes live in a payload file of their own, removed on revocation.
    let provider_storage = s.provider.running.node.storage.clone();
    let payload = liutong_node::desensitize::delivery::payload_name(&contract.agreement_id);
    assert!(provider_storage.blobs().len(&payload).unwrap().is_some());
    s.provider
        .usage(LocalRole::Admin)
        .await
        .revoke(RevokeRequest {
            agreement_id: contract.agreement_id.clone(),
            reason: "consent withdrawn".into(),
        })
        .await
        .expect("revoke");
    assert!(
        wait_until(SOON, || async {
            provider_storage.blobs().len(&payload).unwrap().is_none()
        })
        .await,
        "the marked delivery is deleted"
    );
    drop(s.space);
}

const MASKED: &str = r#"
uid = "urn:liutong:policy:residents-masked"
type = "set"

[[permission]]
action = "use"
duty = [{ action = "mask", rules = [
  { field = { name = "name" }, method = "drop" },
  { field = { type = "idcard" } },
  { field = { type = "mobile" } },
] }]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_masked_delivery_is_marked_after_masking_and_traced() {
    let s = space().await;
    let original = residents(120, 11);
    let product = publish(
        &s.provider,
        original.as_bytes(),
        "Residents",
        "general-2",
        "csv",
        MASKED,
    )
    .await
    .expect("publish");
    let agreement_a = agree_and_pull(&s.a, &s.provider, &product.offer_id).await;
    let agreement_b = agree_and_pull(&s.b, &s.provider, &product.offer_id).await;
    let (copy, manifest) = copy_of(&s.a, &agreement_a);
    let d = manifest.desensitized.as_ref().expect("masked");
    assert_eq!(d.rules.len(), 3);
    assert_eq!(d.records, 120);
    let w = d.watermark.as_ref().expect("marked too");
    assert!(w.embedded && w.cells > 200, "{w:?}");
    // Masked: no name column, no ID number or mobile in the clear.
    let (before, after) = (rows(&original), rows(&copy));
    assert_eq!(
        after[0],
        vec![
            "id_number",
            "mobile",
            "email",
            "district",
            "birth_date",
            "income",
            "savings"
        ]
    );
    for b in before.iter().skip(1) {
        assert!(!copy.contains(b[1]) && !copy.contains(b[2]), "{b:?}");
    }
    // Records come in an order of the agreement's key, and the e-mail, different for
    // every record, is pseudonymised; district and birth date are untouched, and each
    // amount is within one unit of its original.
    let close = |x: &str, y: &str| {
        let (x, y): (f64, f64) = (x.parse().unwrap(), y.parse().unwrap());
        (x - y).abs() <= 1.0 + 1e-9
    };
    for a in after.iter().skip(1) {
        assert_eq!(a[2].len(), 64, "{a:?}");
        assert!(
            before
                .iter()
                .skip(1)
                .any(|b| b[4..6] == a[3..5] && close(b[6], a[5]) && close(b[7], a[6])),
            "{a:?} is no original record, masked and marked"
        );
    }
    let found = trace(&s.provider, copy.as_bytes(), &product.product_id).await;
    assert!(found.traced, "{found:?}");
    assert_eq!(found.candidates[0].agreement_id, agreement_a);
    assert_eq!(found.candidates[1].agreement_id, agreement_b);
    assert!(found.candidates[1].score < found.threshold, "{found:?}");
    drop(s.space);
}
