//! Masking against a curious consumer, across real nodes: what a consumer holds after a
//! masked delivery must not let it recover any masked value, and a saved masked copy
//! stays recognised after the agreement ends.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use liutong_node::desensitize::recognise::idcard_check_character;
use liutong_node::local::LocalRole;
use liutong_node::transfer::Manifest;
use liutong_proto::v1::RevokeRequest;
use sha2::{Digest, Sha256};
use tonic::Code;

/// Generous bound for what the background task does every 200 ms.
const SOON: Duration = Duration::from_secs(30);

/// Publishes `data` (CSV) under `policy`, agrees and pulls it; returns the product and
/// the agreement ID.
async fn delivered(
    s: &TwoMembers,
    data: &[u8],
    policy: &str,
) -> (liutong_proto::v1::Product, String) {
    let product = publish(&s.provider, data, "Residents", "general-2", "csv", policy)
        .await
        .expect("publish");
    let agreement = s
        .consumer
        .agree_and_pull(&s.provider, &product.offer_id, "urbanPlanning")
        .await;
    (product, agreement)
}

/// The bytes of the consumer's copy and its manifest as JSON.
fn copy_of(node: &TestNode, agreement: &str) -> (Vec<u8>, serde_json::Value) {
    let storage = node.running.node.storage.as_ref();
    let copy = liutong_node::transfer::copy(storage, agreement)
        .unwrap()
        .expect("a copy");
    let manifest = copy.manifest.peek_json::<Manifest>().unwrap();
    let bytes = (0..manifest.chunk_hashes.len() as u32)
        .flat_map(|i| {
            liutong_node::transfer::copy_chunk(storage, agreement, i)
                .unwrap()
                .expect("every chunk received")
        })
        .collect();
    (bytes, copy.manifest.peek_json().unwrap())
}

/// Every SHA-256-sized hex string anywhere in a JSON value.
fn hashes_in(value: &serde_json::Value, out: &mut HashSet<String>) {
    match value {
        serde_json::Value::String(s) if s.len() == 64 && hex::decode(s).is_ok() => {
            out.insert(s.to_lowercase());
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| hashes_in(v, out)),
        serde_json::Value::Object(map) => map.values().for_each(|v| hashes_in(v, out)),
        _ => {}
    }
}

fn idcard(prefix: &str, birth: &str, sequence: &str) -> String {
    let first17 = format!("{prefix}{birth}{sequence}");
    format!("{first17}{}", idcard_check_character(&first17).unwrap())
}

/// The curious consumer's offline guessing: every birth date 1930–2010 put into the
/// masked ID number, the row rebuilt, hashed (as the payload's SHA-256 and as the hash
/// of its chunk list), and compared with the hashes it holds. Returns the ID numbers
/// confirmed.
fn guess_masked_ids(masked_text: &str, known: &HashSet<String>) -> Vec<String> {
    let masked_id = masked_text
        .split(['\n', ','])
        .find(|cell| cell.len() == 18 && cell.contains('*'))
        .expect("a masked ID number in the delivery");
    let (prefix, last4) = (&masked_id[..6], &masked_id[14..]);
    let mut confirmed = Vec::new();
    for year in 1930..=2010 {
        for month in 1..=12 {
            for day in 1..=31 {
                let guess = format!("{prefix}{year:04}{month:02}{day:02}{last4}");
                let candidate = masked_text.replace(masked_id, &guess);
                let sha256 = hex::encode(Sha256::digest(candidate.as_bytes()));
                let chunks = liutong_node::catalog::product::chunk_list_sha256(
                    std::slice::from_ref(&sha256),
                )
                .expect("one chunk");
                if known.contains(&sha256) || known.contains(&chunks) {
                    confirmed.push(guess);
                }
            }
        }
    }
    confirmed
}

const ID_MASKED: &str = r#"
uid = "urn:liutong:policy:ids-masked"
type = "set"

[[permission]]
action = "use"
duty = [{ action = "mask", rules = [
  { field = { type = "idcard" }, method = { keep = { first = 6, last = 4 } } },
] }]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_hash_the_consumer_holds_confirms_a_guess_of_the_unmasked_product() {
    let s = two_members().await;
    let id = idcard("330106", "19880517", "013");
    let data = format!("id_number,visits\n{id},3\n");
    let product = publish(
        &s.provider,
        data.as_bytes(),
        "Residents",
        "general-2",
        "csv",
        ID_MASKED,
    )
    .await
    .expect("publish");
    // What the consumer sees of the offer before it asks: the peer catalog's listing
    // and the offer itself.
    let mut catalog = s.consumer.admin(LocalRole::Admin).await;
    let listed = catalog
        .peer_catalog(liutong_proto::v1::PeerCatalogRequest {
            address: s.provider.peer_addr().to_string(),
            page_size: 0,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .offers;
    assert_eq!(listed.len(), 1, "{listed:?}");
    let contract = s
        .consumer
        .request_contract(&s.provider, &product.offer_id, "urbanPlanning")
        .await
        .expect("agreement");
    assert_eq!(contract.state, "FINALIZED", "{contract:?}");
    let done = s.consumer.pull_all(&contract.agreement_id).await.unwrap();
    assert_eq!(done.state, "COMPLETED", "{done:?}");
    let agreement = contract.agreement_id;
    let (bytes, manifest) = copy_of(&s.consumer, &agreement);
    let text = String::from_utf8(bytes).unwrap();
    assert!(!text.contains(&id), "the ID number itself was delivered");

    // Every hash the consumer holds: the manifest's, the signed agreement's (as both
    // its contract record and its copy's record keep it), and the catalog's.
    let mut from_manifest = HashSet::new();
    hashes_in(&manifest, &mut from_manifest);
    assert!(
        !from_manifest.is_empty(),
        "the manifest carries the masked bytes' hashes"
    );
    let envelope: liutong_node::identity::Envelope =
        serde_json::from_str(&contract.agreement_json).unwrap();
    let signed: serde_json::Value = serde_json::from_slice(&envelope.payload).unwrap();
    let mut from_agreement = HashSet::new();
    hashes_in(&signed, &mut from_agreement);
    assert!(
        !from_agreement.is_empty(),
        "the agreement still binds the provider to its source by hash"
    );
    let mut from_catalog = HashSet::new();
    for offer in &listed {
        from_catalog.insert(offer.sha256.to_lowercase());
    }
    from_catalog.insert(done.sha256.to_lowercase());

    // The attack works: given the unmasked product's hash it finds the ID number.
    let with_source: HashSet<String> = [product.sha256.clone()].into();
    assert_eq!(guess_masked_ids(&text, &with_source), vec![id.clone()]);
    // None of what the consumer holds confirms a guess.
    for (what, known) in [
        ("manifest", &from_manifest),
        ("agreement", &from_agreement),
        ("catalog or transfer progress", &from_catalog),
    ] {
        assert_eq!(
            guess_masked_ids(&text, known),
            Vec::<String>::new(),
            "the {what} confirms a guess of the masked ID number"
        );
        assert!(
            !known.contains(&product.sha256),
            "the {what} carries the unmasked product's hash"
        );
    }
    assert_eq!(signed["derived"], true, "{signed}");
    assert!(listed[0].sha256.is_empty(), "{:?}", listed[0]);
    // It names the product version it masked by identifier.
    let d = &manifest["desensitized"];
    assert_eq!(d["source_product_id"], product.product_id.as_str());
    assert_eq!(d["source_version"], product.version);
    drop(s.space);
}

const NAMES_DROPPED: &str = r#"
uid = "urn:liutong:policy:names-dropped"
type = "set"

[[permission]]
action = "use"
duty = [{ action = "mask", rules = [{ field = { name = "name" }, method = "drop" }] }]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saved_masked_copy_is_not_offered_again_after_its_revocation() {
    let s = two_members().await;
    let (_, agreement) = delivered(
        &s,
        b"name,district,cars\nZhang Wei,Xihu,9\nLi Na,Shangcheng,4\n",
        NAMES_DROPPED,
    )
    .await;
    let (saved, _) = copy_of(&s.consumer, &agreement);
    // The records in an order of the agreement's key.
    assert!(
        saved == b"district,cars\nXihu,9\nShangcheng,4\n"
            || saved == b"district,cars\nShangcheng,4\nXihu,9\n",
        "{}",
        String::from_utf8_lossy(&saved)
    );

    s.provider
        .usage(LocalRole::Admin)
        .await
        .revoke(RevokeRequest {
            agreement_id: agreement.clone(),
            reason: "consent withdrawn".into(),
        })
        .await
        .expect("revoke");
    let consumer_storage = s.consumer.running.node.storage.clone();
    // The deletion record is committed before the copy's bytes are removed: wait for
    // both.
    assert!(
        wait_until(SOON, || async {
            liutong_node::usage::duties::deletion(consumer_storage.as_ref(), &agreement)
                .unwrap()
                .is_some()
                && liutong_node::transfer::copy(consumer_storage.as_ref(), &agreement)
                    .unwrap()
                    .is_none()
        })
        .await,
        "the revocation reached the consumer"
    );
    assert!(
        liutong_node::transfer::copy(consumer_storage.as_ref(), &agreement)
            .unwrap()
            .is_none(),
        "the copy is deleted"
    );

    // The saved masked bytes, published and offered as the consumer's own: refused.
    let err = publish(
        &s.consumer,
        &saved,
        "District cars",
        "general-2",
        "csv",
        "uid = \"urn:onward\"\ntype = \"set\"\n\n[[permission]]\naction = \"use\"\n",
    )
    .await
    .unwrap_err();
    assert_refused(&err, Code::PermissionDenied, "byte-identical");
    assert!(err.message().contains(&agreement), "{}", err.message());
    drop(s.space);
}

const PERSONAL_DATA_MASKED: &str = r#"
uid = "urn:liutong:policy:personal-data-masked"
type = "set"

[[permission]]
action = "use"
duty = [{ action = "mask", rules = [
  { field = { type = "idcard" } },
  { field = { type = "mobile" } },
  { field = { type = "email" }, method = "hash" },
  { field = { type = "name" } },
] }]
"#;

/// A distinct synthetic person: Chinese name, English name, mobile, e-mail, ID number.
fn person(i: u32) -> [String; 5] {
    let surnames = ["张", "王", "李", "赵", "陈", "刘", "杨", "黄", "周", "吴"];
    let given = ["伟", "芳", "娜", "敏", "静", "磊", "洋", "勇", "艳", "杰"];
    let latin = [
        "Wei", "Fang", "Na", "Min", "Jing", "Lei", "Yang", "Yong", "Yan", "Jie",
    ];
    let (a, b, c) = (
        i as usize % 10,
        (i as usize / 10) % 10,
        (i as usize / 100) % 10,
    );
    [
        format!("{}{}{}", surnames[a], given[b], given[c]),
        format!("Zhou {}{}", latin[b], latin[c].to_lowercase()),
        format!("139{:08}", 10_000_000 + i * 7919),
        format!("p{i}@example.cn"),
        idcard(
            "330106",
            &format!("{}{:02}{:02}", 1950 + i % 50, 1 + i % 12, 1 + i % 28),
            &format!("{:03}", i % 1000),
        ),
    ]
}

/// How many of `values` appear anywhere in `text`.
fn leaked<'a>(text: &str, values: impl Iterator<Item = &'a String>) -> Vec<String> {
    values
        .filter(|v| text.contains(v.as_str()))
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn personal_data_in_contact_columns_free_text_and_nested_objects_is_masked() {
    let s = two_members().await;
    let people: Vec<[String; 5]> = (0..300).map(person).collect();

    // CSV: the contact's name under a header that is no usual name column, and remarks
    // in free text carrying names, mobiles, e-mails and ID numbers.
    let mut csv = String::from("district,emergency_contact,remarks\n");
    for (i, [name, latin, mobile, email, id]) in people.iter().enumerate() {
        let remark = match i % 3 {
            0 => format!("回访：联系人{name}，电话{mobile}，身份证{id}"),
            1 => format!("\"call contact {latin} at {mobile} or {email}\""),
            _ => format!(
                "家属{name}（{}-{}-{}）",
                &mobile[..3],
                &mobile[3..7],
                &mobile[7..]
            ),
        };
        csv.push_str(&format!("Xihu,{name},{remark}\n"));
    }
    let (_, agreement) = delivered(&s, csv.as_bytes(), PERSONAL_DATA_MASKED).await;
    let (bytes, manifest) = copy_of(&s.consumer, &agreement);
    let text = String::from_utf8(bytes).unwrap();
    let all = |k: usize| people.iter().map(move |p| &p[k]);
    for (what, k) in [
        ("names", 0),
        ("English names", 1),
        ("mobiles", 2),
        ("e-mails", 3),
        ("ID numbers", 4),
    ] {
        let out = leaked(&text, all(k));
        assert!(
            out.is_empty(),
            "{} {what} leaked, e.g. {:?}",
            out.len(),
            &out[..out.len().min(3)]
        );
    }
    assert!(
        text.lines().nth(1).unwrap().starts_with("Xihu,"),
        "{text:.200}"
    );
    // The manifest says what was masked inside the remarks.
    let applied = manifest["desensitized"]["applied"].as_array().unwrap();
    let inside: Vec<(&str, u64)> = applied
        .iter()
        .filter(|a| a["selected_by"] == "content")
        .map(|a| (a["field"].as_str().unwrap(), a["values"].as_u64().unwrap()))
        .collect();
    assert!(
        inside.iter().any(|(f, n)| *f == "remarks" && *n > 0),
        "{applied:?}"
    );

    // JSON Lines: the contact as a nested object.
    let mut jsonl = String::new();
    for [name, _, mobile, email, _] in &people {
        jsonl.push_str(
            &serde_json::json!({
                "district": "Xihu",
                "contact": { "name": name, "mobile": mobile, "note": format!("mail {email}") },
            })
            .to_string(),
        );
        jsonl.push('\n');
    }
    let product = publish(
        &s.provider,
        jsonl.as_bytes(),
        "Contacts",
        "general-2",
        "jsonl",
        PERSONAL_DATA_MASKED,
    )
    .await
    .expect("publish");
    let contract = s
        .consumer
        .request_contract(&s.provider, &product.offer_id, "urbanPlanning")
        .await
        .expect("agreement");
    let done = s.consumer.pull_all(&contract.agreement_id).await.unwrap();
    assert_eq!(done.state, "COMPLETED", "{done:?}");
    let (bytes, _) = copy_of(&s.consumer, &contract.agreement_id);
    let text = String::from_utf8(bytes).unwrap();
    for (what, k) in [("names", 0), ("mobiles", 2), ("e-mails", 3)] {
        let out = leaked(&text, all(k));
        assert!(
            out.is_empty(),
            "{} {what} leaked, e.g. {:?}",
            out.len(),
            &out[..out.len().min(3)]
        );
    }
    // Still nested objects, the district untouched.
    let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(first["district"], "Xihu");
    assert!(
        first["contact"]["mobile"].as_str().unwrap().contains('*'),
        "{first}"
    );
    drop(s.space);
}
