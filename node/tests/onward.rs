//! No onward sharing by content: a consumer that changes a received copy's bytes
//! (reorders or trims its rows, drops a column, edits a cell, adds a newline, rewrites
//! it as JSON Lines) and publishes it under a permissive policy is refused when the
//! copy's policy does not permit `distribute`; an unrelated product is published.

mod common;

use std::time::Duration;

use common::*;
use liutong_node::desensitize::recognise::idcard_check_character;
use liutong_node::identity::MemberRole;
use tonic::Code;

const ROLES: &[MemberRole] = &[MemberRole::Provider, MemberRole::Consumer];

/// Use only: distribute is not permitted.
const USE_ONLY: &str = r#"
uid = "urn:liutong:policy:residents-use-only"
type = "set"

[[permission]]
action = "use"
"#;

/// What the consumer offers the republished data under.
const PERMISSIVE: &str = r#"
uid = "urn:liutong:policy:open-onward"
type = "set"

[[permission]]
action = "use"
"#;

const HEADER: [&str; 7] = [
    "name",
    "id_number",
    "mobile",
    "email",
    "district",
    "birth_date",
    "income",
];

/// Synthetic residents: valid GB 11643 ID numbers, mobiles, e-mails, districts, birth
/// dates and incomes, different for each `seed`.
fn residents(seed: u64, n: usize) -> Vec<Vec<String>> {
    const SURNAMES: [&str; 8] = ["王", "李", "张", "刘", "陈", "杨", "赵", "黄"];
    const GIVEN: [&str; 8] = ["伟", "芳", "娜", "敏", "静", "磊", "洋", "勇"];
    const DISTRICTS: [&str; 6] = ["西湖区", "上城区", "拱墅区", "滨江区", "萧山区", "余杭区"];
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        state >> 33
    };
    (0..n)
        .map(|i| {
            let (y, m, d) = (1950 + next() % 55, 1 + next() % 12, 1 + next() % 28);
            let first17 = format!("330106{y:04}{m:02}{d:02}{:03}", next() % 1000);
            let id = format!("{first17}{}", idcard_check_character(&first17).unwrap());
            let name = format!(
                "{}{}{}",
                SURNAMES[(next() % 8) as usize],
                GIVEN[(next() % 8) as usize],
                GIVEN[(next() % 8) as usize]
            );
            vec![
                name,
                id,
                format!("13{:09}", next() % 1_000_000_000),
                format!("r{seed}x{i}@mail{}.cn", next() % 50),
                DISTRICTS[(next() % 6) as usize].to_owned(),
                format!("{y:04}-{m:02}-{d:02}"),
                format!("{}", 30_000 + next() % 200_000),
            ]
        })
        .collect()
}

fn csv(header: &[&str], rows: &[Vec<String>]) -> Vec<u8> {
    let mut out = header.join(",");
    out.push('\n');
    for r in rows {
        out.push_str(&r.join(","));
        out.push('\n');
    }
    out.into_bytes()
}

fn without_column(rows: &[Vec<String>], column: usize) -> Vec<Vec<String>> {
    rows.iter()
        .map(|r| {
            let mut r = r.clone();
            r.remove(column);
            r
        })
        .collect()
}

fn header_without(column: usize) -> Vec<&'static str> {
    let mut h = HEADER.to_vec();
    h.remove(column);
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_copies_of_received_data_are_not_offered_onward() {
    let space = DataSpace::start().await;
    let quick = |c: &mut liutong_node::config::NodeConfig| {
        c.usage.check_interval = Duration::from_millis(200)
    };
    let provider = space.node_with(TRANSPORT, "transport", ROLES, quick).await;
    let consumer = space.node_with(ECOLOGY, "ecology", ROLES, quick).await;
    refresh_all(&[&provider, &consumer]).await;

    let people = residents(1, 2_000);
    let original = csv(&HEADER, &people);
    let product = publish(
        &provider,
        &original,
        "Residents",
        "general-2",
        "csv",
        USE_ONLY,
    )
    .await
    .expect("publish");
    let contract = consumer
        .request_contract(&provider, &product.offer_id, "urbanPlanning")
        .await
        .expect("agreement");
    let done = consumer
        .pull_all(&contract.agreement_id)
        .await
        .expect("pull");
    assert_eq!(done.state, "COMPLETED");
    let products = || consumer.running.node.catalog.products.list().unwrap().len();
    let before = products();

    let mut reordered = people.clone();
    reordered.reverse();
    let mut edited = people.clone();
    edited[17][6] = "99999".into();
    let mut newline = original.clone();
    newline.push(b'\n');
    let jsonl: Vec<u8> = people
        .iter()
        .flat_map(|r| {
            let mut line = serde_json::json!({ "who": r[0], "pid": r[1], "phone": r[2] })
                .to_string()
                .into_bytes();
            line.push(b'\n');
            line
        })
        .collect();
    let attempts: Vec<(&str, Vec<u8>, &str)> = vec![
        ("rows reordered", csv(&HEADER, &reordered), "csv"),
        (
            "name column dropped",
            csv(&header_without(0), &without_column(&people, 0)),
            "csv",
        ),
        (
            "ID column dropped",
            csv(&header_without(1), &without_column(&people, 1)),
            "csv",
        ),
        ("a quarter of the rows", csv(&HEADER, &people[..500]), "csv"),
        ("a newline added", newline, "csv"),
        ("one cell edited", csv(&HEADER, &edited), "csv"),
        ("rewritten as JSON Lines", jsonl, "jsonl"),
        (
            "declared as opaque bytes",
            csv(&HEADER, &reordered),
            "bytes",
        ),
    ];
    for (what, data, format) in attempts {
        let err = publish(
            &consumer,
            &data,
            "Residents, cleaned",
            "general-2",
            format,
            PERMISSIVE,
        )
        .await
        .expect_err(what);
        assert_eq!(err.code(), Code::PermissionDenied, "{what}: {err:?}");
        assert!(
            err.message()
                .contains("the payload holds rows of a copy this node received")
                && err.message().contains(&contract.agreement_id)
                && err.message().contains("does not permit distribute"),
            "{what}: {}",
            err.message()
        );
        assert_eq!(products(), before, "{what}: nothing is stored");
    }
    let refusals = consumer
        .audit_texts()
        .iter()
        .filter(|e| e.contains("publish refused (no onward sharing)"))
        .count();
    assert!(refusals >= 8, "every refusal is on record ({refusals})");

    // Other residents, in the same shape: published and offered.
    let unrelated = csv(&HEADER, &residents(2, 2_000));
    let own = publish(
        &consumer,
        &unrelated,
        "Residents of another city",
        "general-2",
        "csv",
        PERMISSIVE,
    )
    .await
    .expect("unrelated data is published");
    assert!(!own.offer_id.is_empty());
    assert!(own.derived_from.is_empty(), "{:?}", own.derived_from);
}

/// Kept ten seconds after the agreement (long enough for the pull to finish on a loaded
/// machine), then deleted by the consumer's node.
const SHORT_LIVED: &str = r#"
uid = "urn:liutong:policy:residents-short-lived"
type = "set"

[[permission]]
action = "use"
duty = [{ action = "deleteAfter", elapsed = "PT10S" }]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_of_a_deleted_copy_are_still_recognised() {
    let space = DataSpace::start().await;
    let quick = |c: &mut liutong_node::config::NodeConfig| {
        c.usage.check_interval = Duration::from_millis(200)
    };
    let provider = space.node_with(TRANSPORT, "transport", ROLES, quick).await;
    let consumer = space.node_with(ECOLOGY, "ecology", ROLES, quick).await;
    refresh_all(&[&provider, &consumer]).await;
    let people = residents(3, 1_000);
    let product = publish(
        &provider,
        &csv(&HEADER, &people),
        "Residents",
        "general-2",
        "csv",
        SHORT_LIVED,
    )
    .await
    .expect("publish");
    let contract = consumer
        .request_contract(&provider, &product.offer_id, "urbanPlanning")
        .await
        .expect("agreement");
    consumer
        .pull_all(&contract.agreement_id)
        .await
        .expect("pull");
    let storage = consumer.running.node.storage.clone();
    let id = contract.agreement_id.clone();
    let deleted = wait_until(Duration::from_secs(60), || {
        let storage = storage.clone();
        let id = id.clone();
        async move {
            liutong_node::usage::deletion(storage.as_ref(), &id)
                .unwrap()
                .is_some()
        }
    })
    .await;
    assert!(deleted, "the copy is deleted at its deadline");

    // The rows were kept aside before the deletion: republishing them is refused.
    let mut reordered = without_column(&people, 0);
    reordered.reverse();
    let err = publish(
        &consumer,
        &csv(&header_without(0), &reordered),
        "Residents, kept",
        "general-2",
        "csv",
        PERMISSIVE,
    )
    .await
    .expect_err("rows of a deleted copy");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(
        err.message()
            .contains("the payload holds rows of a copy this node received")
            && err.message().contains(&contract.agreement_id),
        "{}",
        err.message()
    );
}
