//! k-anonymity of masked deliveries against a curious consumer, across real nodes: the
//! manifest states the exact k of what was released, a `kAnonymity` duty withholds the
//! records of smaller groups, and the default rule for ID numbers leaves every person
//! among hundreds of candidates even when everything else about them is known.

mod common;

use std::collections::{HashMap, HashSet};

use common::*;
use liutong_node::desensitize::recognise::idcard_check_character;
use liutong_node::transfer::Manifest;

/// Publishes `data` (CSV) under `policy`, agrees and pulls it; returns the delivered
/// text and the manifest.
async fn delivered(s: &TwoMembers, data: &[u8], policy: &str) -> (String, Manifest) {
    let product = publish(&s.provider, data, "Residents", "general-2", "csv", policy)
        .await
        .expect("publish");
    let agreement = s
        .consumer
        .agree_and_pull(&s.provider, &product.offer_id, "urbanPlanning")
        .await;
    let storage = s.consumer.running.node.storage.as_ref();
    let copy = liutong_node::transfer::copy(storage, &agreement)
        .unwrap()
        .expect("a copy");
    let manifest = copy.manifest.peek_json::<Manifest>().unwrap();
    let bytes: Vec<u8> = (0..manifest.chunk_hashes.len() as u32)
        .flat_map(|i| {
            liutong_node::transfer::copy_chunk(storage, &agreement, i)
                .unwrap()
                .expect("every chunk received")
        })
        .collect();
    (String::from_utf8(bytes).unwrap(), manifest)
}

fn idcard(region: &str, birth: &str, sequence: u32) -> String {
    let first17 = format!("{region}{birth}{sequence:03}");
    format!("{first17}{}", idcard_check_character(&first17).unwrap())
}

/// A synthetic resident.
#[derive(Clone, Debug)]
struct Person {
    name: String,
    id: String,
    mobile: String,
    email: String,
    district: String,
    birth: String,
    gender: &'static str,
    income: u32,
}

/// Residents of three districts of one prefecture, born 1980–1982, each with a valid
/// ID number whose region, birth date and sex digit agree with the other columns.
fn residents(n: u32) -> Vec<Person> {
    let surnames = ["张", "王"];
    let given = ["伟", "芳", "娜", "敏", "静", "磊", "洋"];
    let districts = ["330106", "330102", "330108"];
    (0..n)
        .map(|i| {
            // A spread that leaves some groups small and others large.
            let mix = i.wrapping_mul(2_654_435_761) >> 7;
            let district = districts[(mix % 3) as usize];
            let year = 1980 + (mix / 3) % 3;
            let birth = format!("{year}{:02}{:02}", 1 + (mix / 9) % 12, 1 + (mix / 108) % 28);
            let male = (mix / 7) % 2 == 0;
            // The 17th digit is odd for men, even for women.
            let sequence = ((mix / 3_024) % 500) * 2 + u32::from(male);
            Person {
                name: format!(
                    "{}{}{}",
                    surnames[((mix / 5) % 2) as usize],
                    given[(i % 7) as usize],
                    given[((i / 7) % 7) as usize]
                ),
                id: idcard(district, &birth, sequence),
                mobile: format!("139{:08}", 10_000_000 + i * 7_919),
                email: format!("r{i}@example.cn"),
                district: district.to_owned(),
                birth: format!("{}-{}-{}", &birth[..4], &birth[4..6], &birth[6..]),
                gender: if male { "M" } else { "F" },
                income: 1_000 * (3 + i % 5),
            }
        })
        .collect()
}

fn csv_of(people: &[Person]) -> String {
    let mut csv = String::from("name,id_number,mobile,email,district,birth_date,gender,income\n");
    for p in people {
        csv.push_str(&format!(
            "{},{},{},{},{},{},{},{}\n",
            p.name, p.id, p.mobile, p.email, p.district, p.birth, p.gender, p.income
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
  { field = { type = "idcard" }, method = "maskAll" },
  { field = { type = "mobile" }, method = "drop" },
  { field = { type = "email" }, method = "hash" },
  { field = { name = "district" }, method = { generalize = { to = "prefecture" } } },
  { field = { name = "birth_date" }, method = { generalize = { to = "year" } } },
] }]
"#;

/// The released quasi-identifiers of a person under [`MASKED`], worked out from the
/// unmasked data: the surname, an ID number's length, the prefecture, the birth year
/// and the gender (the hashed e-mail is a pseudonym, the income an attribute).
fn released_quasi_identifiers(p: &Person) -> String {
    let surname: String = p.name.chars().take(1).collect();
    let hidden = "*".repeat(p.name.chars().count() - 1);
    format!(
        "{surname}{hidden},{},{}00,{},{}",
        "*".repeat(18),
        &p.district[..4],
        &p.birth[..4],
        p.gender
    )
}

fn group_sizes<'a>(keys: impl Iterator<Item = &'a str>) -> HashMap<&'a str, u64> {
    let mut sizes = HashMap::new();
    for k in keys {
        *sizes.entry(k).or_default() += 1;
    }
    sizes
}

/// The quasi-identifier columns of each delivered record, joined.
fn delivered_groups(text: &str, quasi: &[String]) -> Vec<String> {
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("a header").split(',').collect();
    let at: Vec<usize> = quasi
        .iter()
        .map(|q| {
            header
                .iter()
                .position(|h| h == q)
                .expect("a released column")
        })
        .collect();
    lines
        .map(|l| {
            let cells: Vec<&str> = l.split(',').collect();
            at.iter().map(|i| cells[*i]).collect::<Vec<_>>().join(",")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_masked_delivery_states_its_exact_k_anonymity_and_logs_it() {
    let s = two_members().await;
    let people = residents(60);
    let expected: Vec<String> = people.iter().map(released_quasi_identifiers).collect();
    let sizes = group_sizes(expected.iter().map(String::as_str));
    let k = *sizes.values().min().unwrap();
    assert!(
        k < 4 && sizes.values().any(|n| *n >= 4),
        "the data has small and large groups: {sizes:?}"
    );

    let (text, manifest) = delivered(&s, csv_of(&people).as_bytes(), MASKED).await;
    let d = manifest.desensitized.expect("a masked delivery");
    assert_eq!(
        d.quasi_identifiers,
        ["name", "id_number", "district", "birth_date", "gender"]
    );
    assert_eq!(d.k_anonymity, Some(k), "the exact k of the released data");
    assert_eq!((d.required_k, d.withheld_for_k, d.records), (None, 0, 60));
    // The same k, counted on the delivered bytes.
    let got = delivered_groups(&text, &d.quasi_identifiers);
    assert_eq!(
        group_sizes(got.iter().map(String::as_str)),
        sizes,
        "the delivered groups are the expected ones"
    );
    let logged = s.provider.audit_texts().iter().any(|e| {
        e.contains(&format!(
            "k-anonymity {k} over name, id_number, district, birth_date, gender"
        ))
    });
    assert!(logged, "the provider's log states the k delivered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_k_anonymity_duty_withholds_every_record_of_a_smaller_group() {
    let s = two_members().await;
    let people = residents(60);
    let expected: Vec<String> = people.iter().map(released_quasi_identifiers).collect();
    let sizes = group_sizes(expected.iter().map(String::as_str));
    let small: u64 = sizes.values().filter(|n| **n < 4).sum();
    assert!(small > 0 && small < 60, "{sizes:?}");

    let policy = MASKED.replace(
        "duty = [{ action = \"mask\"",
        "duty = [{ action = \"kAnonymity\", k = 4 }, { action = \"mask\"",
    );
    let (text, manifest) = delivered(&s, csv_of(&people).as_bytes(), &policy).await;
    let d = manifest.desensitized.expect("a masked delivery");
    assert_eq!(d.required_k, Some(4));
    assert_eq!((d.withheld_for_k, d.records), (small, 60 - small));
    assert!(d.k_anonymity.unwrap() >= 4, "{d:?}");
    // The curious consumer looks for a record it can single out by its
    // quasi-identifiers: none is shared by fewer than 4.
    let got = delivered_groups(&text, &d.quasi_identifiers);
    assert_eq!(got.len() as u64, 60 - small);
    let delivered_sizes = group_sizes(got.iter().map(String::as_str));
    let alone: Vec<_> = delivered_sizes.iter().filter(|(_, n)| **n < 4).collect();
    assert!(
        alone.is_empty(),
        "groups smaller than 4 released: {alone:?}"
    );
    // Exactly the people of the large groups are delivered (their e-mails differ).
    assert_eq!(
        delivered_sizes,
        sizes.into_iter().filter(|(_, n)| *n >= 4).collect()
    );
    let logged = s
        .provider
        .audit_texts()
        .iter()
        .any(|e| e.contains(&format!("(required 4; {small} record(s) withheld)")));
    assert!(logged, "the provider's log states what was withheld");
}

const DEFAULT_RULES: &str = r#"
uid = "urn:liutong:policy:residents-default-masks"
type = "set"

[[permission]]
action = "use"
duty = [{ action = "mask", rules = [
  { field = { type = "idcard" } },
  { field = { type = "mobile" } },
  { field = { type = "name" } },
] }]
"#;

/// Every valid ID number of a person born on `birth` (`YYYY-MM-DD`) in `district`,
/// of `gender`, that shows as `masked` (a `*` hides one character).
fn candidates(masked: &str, district: &str, birth: &str, gender: &str) -> Vec<String> {
    let birth = birth.replace('-', "");
    (0..1000)
        .filter(|seq| (seq % 2 == 1) == (gender == "M"))
        .map(|seq| idcard(district, &birth, seq))
        .filter(|id| {
            id.chars().count() == masked.chars().count()
                && id
                    .chars()
                    .zip(masked.chars())
                    .all(|(c, m)| m == '*' || c == m)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_id_masks_leave_every_person_among_hundreds_of_candidates() {
    let s = two_members().await;
    let people = residents(3_000);
    let (text, manifest) = delivered(&s, csv_of(&people).as_bytes(), DEFAULT_RULES).await;
    let d = manifest.desensitized.expect("a masked delivery");
    assert_eq!(d.records, 3_000);
    assert!(
        d.quasi_identifiers.contains(&"id_number".to_owned()),
        "the visible part of a masked ID number is a quasi-identifier: {:?}",
        d.quasi_identifiers
    );
    // The consumer knows each person's district, birth date and gender from the clear
    // columns, and enumerates the valid ID numbers the masked one still allows.
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let (id, district, birth, gender) = (
        col("id_number"),
        col("district"),
        col("birth_date"),
        col("gender"),
    );
    let mut fewest = usize::MAX;
    let mut allowed: HashSet<String> = HashSet::new();
    for line in lines {
        let c: Vec<&str> = line.split(',').collect();
        assert!(c[id].contains('*'), "an ID number in the clear: {line}");
        let found = candidates(c[id], c[district], c[birth], c[gender]);
        fewest = fewest.min(found.len());
        allowed.extend(found);
    }
    // The attack is the right one: every true ID number is among the candidates.
    let missed = people.iter().filter(|p| !allowed.contains(&p.id)).count();
    assert_eq!(missed, 0, "the enumeration covers every person");
    assert!(
        fewest >= 500,
        "a person's masked ID number narrows to {fewest} candidates"
    );
}
