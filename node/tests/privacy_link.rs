//! Linking people across two masked deliveries of one product, as a curious consumer
//! holding both would: no column's values and no record position may tie a record of
//! one delivery to the same person's record in the other.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use liutong_node::desensitize::delivery::agreement_key;
use liutong_node::desensitize::method::keyed_hash;
use liutong_node::transfer::Manifest;

const ROLES: &[liutong_node::identity::MemberRole] = &[
    liutong_node::identity::MemberRole::Provider,
    liutong_node::identity::MemberRole::Consumer,
];

const PEOPLE: u32 = 400;

/// Residents with a person ID, a member code (an identifier under no usual header),
/// a visit time (distinct for everyone), a name, district, gender, birth date and
/// income.
fn residents() -> String {
    let surnames = ["张", "王", "李", "赵"];
    let given = ["伟", "芳", "娜", "敏", "静", "磊", "洋"];
    let mut csv =
        String::from("person_id,member_code,visit_time,name,district,gender,birth_date,income\n");
    for i in 0..PEOPLE {
        csv.push_str(&format!(
            "P{i:05},M{:08X},2025-03-{:02}T{:02}:{:02}:00,{}{}{},{},{},{}-{:02}-{:02},{}\n",
            i.wrapping_mul(2_654_435_761),
            1 + i % 28,
            8 + (i / 28) % 10,
            i % 60,
            surnames[(i % 4) as usize],
            given[(i % 7) as usize],
            given[((i / 7) % 7) as usize],
            ["330106", "330102", "330108"][(i % 3) as usize],
            if i % 2 == 0 { "M" } else { "F" },
            1970 + i % 30,
            1 + i % 12,
            1 + i % 28,
            1_000 * (3 + i % 5)
        ));
    }
    csv
}

const MASKED: &str = r#"
uid = "urn:liutong:policy:residents-masked"
type = "set"

[[permission]]
action = "use"
duty = [{ action = "mask", rules = [
  { field = { type = "name" } },
  { field = { name = "birth_date" }, method = { generalize = { to = "year" } } },
] }]
"#;

/// The header and records of a consumer's copy.
fn copy_of(node: &TestNode, agreement: &str) -> (Vec<String>, Vec<Vec<String>>) {
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
    let text = String::from_utf8(bytes).unwrap();
    let mut lines = text.lines();
    let header = lines
        .next()
        .unwrap()
        .split(',')
        .map(str::to_owned)
        .collect();
    let records = lines
        .map(|l| l.split(',').map(str::to_owned).collect())
        .collect();
    (header, records)
}

/// Values that occur exactly once in each of two columns, and equally: each ties one
/// record of one delivery to one of the other.
fn unique_links(a: &[&str], b: &[&str]) -> usize {
    let count = |col: &[&str]| {
        let mut n: HashMap<String, u32> = HashMap::new();
        for v in col {
            *n.entry((*v).to_owned()).or_default() += 1;
        }
        n
    };
    let (ca, cb) = (count(a), count(b));
    ca.iter()
        .filter(|(v, n)| **n == 1 && cb.get(*v) == Some(&1))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_masked_deliveries_of_one_product_do_not_link_by_column_or_position() {
    let space = DataSpace::start().await;
    let quick = |c: &mut liutong_node::config::NodeConfig| {
        c.usage.check_interval = Duration::from_millis(200)
    };
    let provider = space.node_with(TRANSPORT, "transport", ROLES, quick).await;
    let first = space.node_with(ECOLOGY, "ecology", ROLES, quick).await;
    let second = space.node_with(LOGISTICS, "logistics", ROLES, quick).await;
    refresh_all(&[&provider, &first, &second]).await;
    let product = publish(
        &provider,
        residents().as_bytes(),
        "Residents",
        "general-2",
        "csv",
        MASKED,
    )
    .await
    .expect("publish");
    let mut agreements = Vec::new();
    for consumer in [&first, &second] {
        let agreement = consumer
            .agree_and_pull(&provider, &product.offer_id, "urbanPlanning")
            .await;
        agreements.push(agreement);
    }
    let (header, a) = copy_of(&first, &agreements[0]);
    let (header_b, b) = copy_of(&second, &agreements[1]);
    assert_eq!(header, header_b);
    assert_eq!((a.len(), b.len()), (PEOPLE as usize, PEOPLE as usize));

    // The consumers together look for a column whose values pair their records.
    for (i, name) in header.iter().enumerate() {
        let col = |records: &[Vec<String>]| -> Vec<String> {
            records.iter().map(|r| r[i].clone()).collect()
        };
        let (ca, cb) = (col(&a), col(&b));
        let links = unique_links(
            &ca.iter().map(String::as_str).collect::<Vec<_>>(),
            &cb.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        assert_eq!(links, 0, "column {name} links {links} records");
    }
    assert!(
        !a.iter().any(|r| r[0].starts_with('P')),
        "person IDs are not delivered"
    );

    // The provider, who holds the keys, tells whose each record is; the consumers,
    // pairing records by position, would be right about as often as chance (one
    // record in 400 on average).
    let person_of = |agreement: &str, key: &ring::hmac::Key, records: &[Vec<String>]| {
        let by_pseudonym: HashMap<String, u32> = (0..PEOPLE)
            .map(|i| (keyed_hash(key, &format!("P{i:05}")), i))
            .collect();
        records
            .iter()
            .map(|r| {
                *by_pseudonym
                    .get(&r[0])
                    .unwrap_or_else(|| panic!("{agreement}: {} is no pseudonym", r[0]))
            })
            .collect::<Vec<u32>>()
    };
    let storage: Arc<dyn liutong_node::storage::Storage> = provider.running.node.storage.clone();
    let key_a = agreement_key(&storage, &agreements[0]).await.unwrap();
    let key_b = agreement_key(&storage, &agreements[1]).await.unwrap();
    let people_a = person_of(&agreements[0], &key_a, &a);
    let people_b = person_of(&agreements[1], &key_b, &b);
    let mut everyone = people_a.clone();
    everyone.sort_unstable();
    assert_eq!(
        everyone,
        (0..PEOPLE).collect::<Vec<_>>(),
        "each person once"
    );
    let same_position = people_a
        .iter()
        .zip(&people_b)
        .filter(|(x, y)| x == y)
        .count();
    assert!(
        same_position <= 8,
        "{same_position} of {PEOPLE} positions hold the same person in both deliveries"
    );
    // Nor is either delivery in the product's order.
    let in_order = people_a
        .iter()
        .enumerate()
        .filter(|(i, p)| *i as u32 == **p)
        .count();
    assert!(
        in_order <= 8,
        "{in_order} records at their product position"
    );
}
