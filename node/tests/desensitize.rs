//! Desensitization at delivery and compute-to-data across real nodes: masked bytes
//! under a signed manifest that lists the rules applied, keyed hashes per agreement,
//! aggregate queries with small groups withheld, and raw pulls of aggregate-only
//! agreements refused.

mod common;

use common::*;
use liutong_node::desensitize::recognise::idcard_check_character;
use liutong_node::local::LocalRole;
use liutong_node::transfer::{MANIFEST_PAYLOAD_TYPE, Manifest};
use liutong_proto::v1::{
    AggregateFunction, AggregateQuery, AggregateResponse, Aggregation, Filter, FilterOperator,
    QueryAggregateRequest,
};
use sha2::{Digest, Sha256};
use tonic::Code;

const MASKED_POLICY: &str = r#"
uid = "urn:liutong:policy:residents"
type = "set"

[[permission]]
action = "use"
constraint = [{ leftOperand = "purpose", operator = "isA", rightOperand = "publicService" }]
duty = [{ action = "mask", rules = [
  { field = { type = "idcard" }, method = { keep = { first = 6, last = 4 } } },
  { field = { type = "mobile" } },
  { field = { type = "name" } },
  { field = { type = "email" }, method = "hash" },
  { field = { name = "address" }, method = "drop" },
  { field = { name = "birth_date" }, method = { generalize = { to = "year" } } },
] }]
"#;

const AGGREGATE_POLICY: &str = r#"
uid = "urn:liutong:policy:speeds"
type = "set"

[[permission]]
action = "aggregate"
constraint = [
  { leftOperand = "purpose", operator = "isA", rightOperand = "publicService" },
  { leftOperand = "count", operator = "lt", rightOperand = 3 },
]
duty = [{ action = "aggregateOnly", k = 3 }]
"#;

struct Space {
    _space: DataSpace,
    transport: TestNode,
    ecology: TestNode,
    logistics: TestNode,
}

async fn space() -> Space {
    let space = DataSpace::start().await;
    let (transport, ecology, logistics) = space.transport_ecology_logistics().await;
    Space {
        _space: space,
        transport,
        ecology,
        logistics,
    }
}

async fn agree(consumer: &TestNode, provider: &TestNode, offer: &str) -> String {
    let c = consumer
        .request_contract(provider, offer, "urbanPlanning")
        .await
        .expect("the contract is agreed");
    assert_eq!(c.state, "FINALIZED", "{c:?}");
    c.agreement_id
}

/// The bytes of a completed copy.
fn received(node: &TestNode, agreement: &str) -> Vec<u8> {
    let storage = node.running.node.storage.as_ref();
    let copy = liutong_node::transfer::copy(storage, agreement)
        .unwrap()
        .expect("a copy");
    let chunks = copy
        .manifest
        .peek_json::<Manifest>()
        .unwrap()
        .chunk_hashes
        .len() as u32;
    (0..chunks)
        .flat_map(|i| {
            liutong_node::transfer::copy_chunk(storage, agreement, i)
                .unwrap()
                .expect("every chunk received")
        })
        .collect()
}

fn idcard(i: u32) -> String {
    let first17 = format!(
        "330106{:04}0{}{:02}{:03}",
        1950 + i % 60,
        1 + i % 9,
        1 + i % 28,
        i % 1000
    );
    format!("{first17}{}", idcard_check_character(&first17).unwrap())
}

/// Residents: name, ID number, mobile, e-mail (each address used by two rows), address,
/// birth date, visits. About 2 MiB, so the masked delivery has several chunks.
fn residents(rows: u32) -> (Vec<u8>, Vec<[String; 3]>) {
    let surnames = ["张", "王", "李", "赵", "陈", "刘"];
    let given = ["伟", "芳", "娜", "敏", "静", "磊", "洋"];
    let mut csv = String::from("name,id_number,mobile,email,address,birth_date,visits\n");
    let mut originals = Vec::new();
    for i in 0..rows {
        let name = format!(
            "{}{}{}",
            surnames[i as usize % 6],
            given[i as usize % 7],
            given[(i as usize / 7) % 7]
        );
        let id = idcard(i);
        let mobile = format!("13{:09}", 100_000_000 + i * 7919 % 899_999_999);
        let email = format!("resident{}@example.com", i / 2);
        csv.push_str(&format!(
            "{name},{id},{mobile},{email},\"Wensan Rd {i}, Xihu\",{}-05-17,{}\n",
            1950 + i % 60,
            i % 12
        ));
        originals.push([id, mobile, email]);
    }
    (csv.into_bytes(), originals)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn masked_transfer_delivers_masked_bytes_under_a_manifest_that_lists_the_rules() {
    let s = space().await;
    let (data, originals) = residents(24_000);
    assert!(data.len() > 2 << 20, "more than two chunks: {}", data.len());
    let product = publish(
        &s.transport,
        &data,
        "Resident services",
        "general-2",
        "csv",
        MASKED_POLICY,
    )
    .await
    .unwrap();
    let agreement = agree(&s.ecology, &s.transport, &product.offer_id).await;

    // A cut after one chunk, then a resume: the masked chunks are the same ones.
    let partial = s.ecology.pull(&agreement, 1).await.unwrap();
    assert_eq!(
        (partial.state.as_str(), partial.chunks_received),
        ("STARTED", 1)
    );
    let done = s.ecology.pull(&agreement, 0).await.unwrap();
    assert_eq!(done.state, "COMPLETED", "{done:?}");
    let bytes = received(&s.ecology, &agreement);
    assert_eq!(done.sha256, hex::encode(Sha256::digest(&bytes)));
    assert_ne!(done.sha256, product.sha256, "masked bytes, not the product");

    // The manifest, signed by the provider, covers the delivered bytes and lists the
    // rules applied, naming the product version masked.
    let storage = s.ecology.running.node.storage.as_ref();
    let copy = liutong_node::transfer::copy(storage, &agreement)
        .unwrap()
        .unwrap();
    let manifest: Manifest = copy
        .manifest
        .open_json(
            MANIFEST_PAYLOAD_TYPE,
            &s.transport.running.node.identity.signing_key.public_key(),
        )
        .expect("the manifest verifies with the provider's key");
    assert_eq!(manifest.sha256, done.sha256);
    assert_eq!(manifest.size, bytes.len() as u64);
    for (i, chunk) in bytes.chunks(manifest.chunk_size as usize).enumerate() {
        assert_eq!(manifest.chunk_hashes[i], hex::encode(Sha256::digest(chunk)));
    }
    let d = manifest.desensitized.expect("the manifest lists the rules");
    assert_eq!(
        (
            d.source_product_id.as_str(),
            d.source_version,
            d.source_size
        ),
        (product.product_id.as_str(), product.version, product.size)
    );
    assert_eq!(d.rules.len(), 6);
    let applied: Vec<(&str, &str)> = d
        .applied
        .iter()
        .map(|a| (a.field.as_str(), a.method.as_str()))
        .collect();
    assert_eq!(
        applied,
        vec![
            ("name", "keep first 1, last 0"),
            ("id_number", "keep first 6, last 4"),
            ("mobile", "keep first 3, last 4"),
            ("email", "keyed hash (HMAC-SHA256, key of this agreement)"),
            ("address", "drop"),
            ("birth_date", "generalize to year"),
        ]
    );
    assert!(
        d.applied.iter().all(|a| a.values == 24_000),
        "{:?}",
        d.applied
    );
    assert_eq!((d.records, d.withheld_records), (24_000, 0));

    // No original identifier is in the delivered bytes; the masked forms are.
    let text = String::from_utf8(bytes).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("name,id_number,mobile,email,birth_date,visits"),
        "the address column is dropped"
    );
    let cells: std::collections::HashSet<&str> = text.split(['\n', ',']).collect();
    for (i, [id, mobile, email]) in originals.iter().enumerate() {
        for original in [id, mobile, email] {
            assert!(
                !cells.contains(original.as_str()),
                "{original} was delivered"
            );
            // Anywhere in the text, too (a sample: the whole scan is slow in debug).
            assert!(
                i >= 200 || !text.contains(original.as_str()),
                "{original} delivered"
            );
        }
    }
    // Records come in an order of the agreement's key: the first resident's record is
    // the one with its masked ID number and mobile.
    let (id0, mobile0) = (&originals[0][0], &originals[0][1]);
    let first: Vec<&str> = lines
        .map(|l| l.split(',').collect::<Vec<&str>>())
        .find(|c| {
            c[1] == format!("330106********{}", &id0[14..])
                && c[2] == format!("{}****{}", &mobile0[..3], &mobile0[7..])
        })
        .expect("the first resident's record");
    assert_eq!(first[0], "张**");
    assert_eq!(
        first[1],
        format!("330106********{}", &originals[0][0][14..])
    );
    assert_eq!(
        first[2],
        format!("{}****{}", &originals[0][1][..3], &originals[0][1][7..])
    );
    assert_eq!(first[4], "1950");
    assert!(!text.contains("Wensan Rd"));

    // The provider logged what it applied; the receipt names the masked bytes.
    let logged = s
        .transport
        .audit_texts()
        .iter()
        .any(|e| e.contains("desensitized by 6 mask rule(s) over 6 field(s)"));
    assert!(logged, "the masked delivery is in the provider's log");
    let receipt = s
        .transport
        .running
        .node
        .transfers
        .delivery_receipt(&agreement)
        .unwrap()
        .expect("the receipt of the masked bytes is accepted");
    let receipt: liutong_node::transfer::Receipt = receipt.peek_json().unwrap();
    assert_eq!(receipt.sha256, done.sha256);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_hashes_are_stable_within_an_agreement_and_differ_across_agreements() {
    let s = space().await;
    let data = "email,visits\na@example.com,1\nb@example.com,2\na@example.com,3\n";
    let product = publish(
        &s.transport,
        data.as_bytes(),
        "Visits",
        "general-2",
        "csv",
        MASKED_POLICY,
    )
    .await
    .unwrap();
    let first = agree(&s.ecology, &s.transport, &product.offer_id).await;
    let second = agree(&s.logistics, &s.transport, &product.offer_id).await;
    let mut pseudonyms = Vec::new();
    for (node, agreement) in [(&s.ecology, &first), (&s.logistics, &second)] {
        assert_eq!(node.pull(agreement, 0).await.unwrap().state, "COMPLETED");
        let text = String::from_utf8(received(node, agreement)).unwrap();
        // Records come in an order of the agreement's key: put them back in the
        // product's order by their visits (1, 2, 3).
        let mut rows: Vec<(String, String)> = text
            .lines()
            .skip(1)
            .map(|l| {
                let (email, visits) = l.split_once(',').unwrap();
                (visits.to_owned(), email.to_owned())
            })
            .collect();
        rows.sort();
        let hashes: Vec<String> = rows.into_iter().map(|(_, email)| email).collect();
        assert_eq!(hashes.len(), 3);
        assert!(hashes.iter().all(|h| h.len() == 64), "{hashes:?}");
        assert_eq!(
            hashes[0], hashes[2],
            "one address, one pseudonym within an agreement"
        );
        assert_ne!(hashes[0], hashes[1]);
        pseudonyms.push(hashes);
    }
    assert_ne!(
        pseudonyms[0][0], pseudonyms[1][0],
        "the same address has unlinkable pseudonyms under two agreements"
    );
    // Pulling the same agreement's delivery again gives the same bytes (the masked
    // delivery is kept per agreement, and it is deterministic anyway).
    let again = liutong_node::desensitize::delivery::delivered(
        s.transport.running.node.storage.as_ref(),
        &first,
    )
    .unwrap()
    .expect("kept per agreement");
    assert_eq!(
        again.sha256,
        hex::encode(Sha256::digest(received(&s.ecology, &first)))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mask_duties_on_opaque_bytes_are_refused_at_publish() {
    let s = space().await;
    let err = publish(
        &s.transport,
        b"\x00\x01binary",
        "Scans",
        "general-2",
        "bytes",
        MASKED_POLICY,
    )
    .await
    .unwrap_err();
    assert_refused(&err, Code::InvalidArgument, "opaque bytes");
    let products = s
        .transport
        .admin(LocalRole::Admin)
        .await
        .list_products(liutong_proto::v1::ListProductsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .products;
    assert!(products.is_empty(), "nothing stored");
}

const SPEEDS: &str = "district,year,speed,plate\n\
    Xihu,2025,30,A1\n\
    Xihu,2025,40,A2\n\
    Xihu,2025,50,A3\n\
    Xihu,2024,45,A4\n\
    Binjiang,2025,20,B1\n\
    Binjiang,2025,24,B2\n\
    Shangcheng,2025,60,C1\n\
    Shangcheng,2025,70,C2\n\
    Shangcheng,2025,80,C3\n";

fn aggregation(function: AggregateFunction, column: &str) -> Aggregation {
    Aggregation {
        function: function as i32,
        column: column.into(),
    }
}

async fn query(
    node: &TestNode,
    agreement: &str,
    q: AggregateQuery,
) -> Result<AggregateResponse, tonic::Status> {
    node.admin(LocalRole::Admin)
        .await
        .query_aggregate(QueryAggregateRequest {
            agreement_id: agreement.into(),
            peer: String::new(),
            query: Some(q),
            purpose: String::new(),
        })
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregate_queries_suppress_small_groups_and_raw_pulls_are_refused() {
    let s = space().await;
    let product = publish(
        &s.transport,
        SPEEDS.as_bytes(),
        "Vehicle speeds",
        "general-2",
        "csv",
        AGGREGATE_POLICY,
    )
    .await
    .unwrap();
    // The aggregate-only offer is listed and negotiated like any other.
    let offers = s
        .ecology
        .admin(LocalRole::Admin)
        .await
        .peer_catalog(liutong_proto::v1::PeerCatalogRequest {
            address: s.transport.peer_addr().to_string(),
            page_size: 0,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .offers;
    assert_eq!(offers.len(), 1, "{offers:?}");
    let agreement = agree(&s.ecology, &s.transport, &product.offer_id).await;

    // Grouped by district in 2025: Binjiang has two rows, fewer than k = 3.
    let by_district = AggregateQuery {
        aggregations: vec![
            aggregation(AggregateFunction::Count, ""),
            aggregation(AggregateFunction::Avg, "speed"),
            aggregation(AggregateFunction::Max, "speed"),
        ],
        group_by: vec!["district".into()],
        filters: vec![Filter {
            column: "year".into(),
            op: FilterOperator::Eq as i32,
            value: "2025".into(),
        }],
    };
    let a = query(&s.ecology, &agreement, by_district.clone())
        .await
        .unwrap();
    assert_eq!(a.k, 3);
    assert!(a.groups_may_be_withheld, "Binjiang withheld");
    let groups: Vec<(Vec<String>, u64, Vec<Option<f64>>)> = a
        .groups
        .iter()
        .map(|g| {
            (
                g.keys.clone(),
                g.rows,
                g.values.iter().map(|v| v.value).collect(),
            )
        })
        .collect();
    assert_eq!(
        groups,
        vec![
            (
                vec!["Shangcheng".into()],
                3,
                // No max over fewer than 3k rows: it would be one row's value.
                vec![Some(3.0), Some(70.0), None]
            ),
            (vec!["Xihu".into()], 3, vec![Some(3.0), Some(40.0), None]),
        ]
    );
    assert_eq!(a.aggregations, ["count", "avg(speed)", "max(speed)"]);

    // A query that would reveal one small group alone: suppressed, nothing shown.
    let binjiang = AggregateQuery {
        aggregations: vec![aggregation(AggregateFunction::Avg, "speed")],
        group_by: vec![],
        filters: vec![
            Filter {
                column: "district".into(),
                op: FilterOperator::Eq as i32,
                value: "Binjiang".into(),
            },
            Filter {
                column: "speed".into(),
                op: FilterOperator::Gteq as i32,
                value: "10".into(),
            },
        ],
    };
    let a = query(&s.ecology, &agreement, binjiang).await.unwrap();
    assert!(a.groups.is_empty(), "{a:?}");
    assert!(a.groups_may_be_withheld);

    // Bad queries are refused with the part named, and are not counted as uses.
    let err = query(
        &s.ecology,
        &agreement,
        AggregateQuery {
            aggregations: vec![aggregation(AggregateFunction::Sum, "sped")],
            ..AggregateQuery::default()
        },
    )
    .await
    .unwrap_err();
    assert_refused(&err, Code::InvalidArgument, "\"sped\" does not exist");
    let err = query(
        &s.ecology,
        &agreement,
        AggregateQuery {
            aggregations: vec![aggregation(AggregateFunction::Count, "")],
            group_by: vec![
                "district".into(),
                "year".into(),
                "speed".into(),
                "plate".into(),
            ],
            filters: vec![],
        },
    )
    .await
    .unwrap_err();
    assert_refused(&err, Code::InvalidArgument, "at most 3");

    // Raw rows never leave: a pull of the agreement is refused, with the reason.
    let err = s.ecology.pull(&agreement, 0).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message()
            .contains("permits only aggregates over groups of at least 3 rows"),
        "{}",
        err.message()
    );
    assert!(
        liutong_node::transfer::copy(s.ecology.running.node.storage.as_ref(), &agreement)
            .unwrap()
            .is_none_or(|c| c.chunks_received == 0),
        "no row received"
    );

    // Another member cannot use the agreement.
    let mut other = liutong_proto::v1::query_client::QueryClient::new(
        s.logistics.channel_to(&s.transport).await,
    );
    let err = other
        .aggregate(liutong_proto::v1::AggregateRequest {
            agreement_id: agreement.clone(),
            query: Some(by_district.clone()),
            purpose: String::new(),
        })
        .await
        .unwrap_err();
    assert_refused(
        &err,
        Code::PermissionDenied,
        &format!("{LOGISTICS} is not a party to agreement {agreement}"),
    );
    assert!(!err.message().contains(ECOLOGY), "{}", err.message());

    // The policy allows fewer than three queries: two were answered, a third is, the
    // fourth is refused with the failed constraint.
    query(&s.ecology, &agreement, by_district.clone())
        .await
        .unwrap();
    let err = query(&s.ecology, &agreement, by_district)
        .await
        .unwrap_err();
    assert_refused(&err, Code::PermissionDenied, "number of uses");

    // Both nodes logged the queries with the size of their answers.
    let entries = |node: &TestNode| -> Vec<String> {
        node.audit_texts()
            .into_iter()
            .filter(|e| e.contains("\"kind\":\"query\""))
            .collect()
    };
    let provider = entries(&s.transport);
    assert!(
        provider.iter().any(|e| e.contains(
            "aggregate query answered (count, avg(speed), max(speed) by district where year = hmac:"
        ) && e.contains(
            "): 2 groups of at least k = 3 rows returned, smaller groups may be withheld; 9 rows read"
        )),
        "{provider:#?}"
    );
    assert!(
        provider
            .iter()
            .any(|e| e.contains("aggregate query refused"))
    );
    let consumer = entries(&s.ecology);
    assert!(
        consumer
            .iter()
            .any(|e| e.contains("aggregate query sent")
                && e.contains("smaller groups may be withheld")),
        "{consumer:#?}"
    );
}

/// Concurrent queries under one agreement are decided one at a time against the
/// persisted count: with `count lt 3`, exactly three of six simultaneous queries are
/// answered and the others are refused with the failed constraint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_queries_never_exceed_the_count() {
    let s = space().await;
    let product = publish(
        &s.transport,
        SPEEDS.as_bytes(),
        "Vehicle speeds",
        "general-2",
        "csv",
        AGGREGATE_POLICY,
    )
    .await
    .unwrap();
    let agreement = agree(&s.ecology, &s.transport, &product.offer_id).await;
    let count = AggregateQuery {
        aggregations: vec![aggregation(AggregateFunction::Count, "")],
        group_by: vec!["district".into()],
        filters: vec![],
    };
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let mut admin = s.ecology.admin(LocalRole::Admin).await;
        let request = QueryAggregateRequest {
            agreement_id: agreement.clone(),
            peer: String::new(),
            query: Some(count.clone()),
            purpose: String::new(),
        };
        tasks.push(tokio::spawn(
            async move { admin.query_aggregate(request).await },
        ));
    }
    let mut answered = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => answered += 1,
            Err(e) => {
                assert_refused(&e, Code::PermissionDenied, "number of uses");
            }
        }
    }
    assert_eq!(answered, 3, "count lt 3 allows three queries");
}

const OPEN_POLICY: &str = r#"
uid = "urn:liutong:policy:open"
type = "set"

[[permission]]
action = "use"
"#;

/// An agreed product version that is gone from the provider's store (say, a restore
/// from an older backup) is a wrong state, FAILED_PRECONDITION, for pulls and
/// aggregate queries alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gone_product_version_is_failed_precondition_for_pulls_and_queries() {
    let s = space().await;
    let publish_speeds = |policy: &'static str| {
        publish(
            &s.transport,
            SPEEDS.as_bytes(),
            "Vehicle speeds",
            "general-2",
            "csv",
            policy,
        )
    };
    let aggregated = publish_speeds(AGGREGATE_POLICY).await.unwrap();
    let raw = publish_speeds(OPEN_POLICY).await.unwrap();
    let for_queries = agree(&s.ecology, &s.transport, &aggregated.offer_id).await;
    let for_pulls = agree(&s.ecology, &s.transport, &raw.offer_id).await;
    let storage = s.transport.running.node.storage.clone();
    for product in [&aggregated, &raw] {
        let mut key = product.product_id.as_bytes().to_vec();
        key.push(0);
        key.extend_from_slice(&1u32.to_be_bytes());
        assert!(storage.get("products", &key).unwrap().is_some());
        storage.delete("products", &key).unwrap();
    }

    let count = AggregateQuery {
        aggregations: vec![aggregation(AggregateFunction::Count, "")],
        ..AggregateQuery::default()
    };
    let err = query(&s.ecology, &for_queries, count).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message()
            .contains(&format!("product {} v1 is gone", aggregated.product_id)),
        "{}",
        err.message()
    );
    let err = s
        .ecology
        .direct_transfer_client(&s.transport)
        .await
        .pull(liutong_proto::v1::PullRequest {
            agreement_id: for_pulls.clone(),
            from_chunk: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message()
            .contains(&format!("product {} v1 is gone", raw.product_id)),
        "{}",
        err.message()
    );
}

/// A masked delivery whose removal is recorded (by a revocation or the consumer's
/// deletion receipt decided while the pull came in) is refused with PERMISSION_DENIED
/// and the removal's reason, and nothing is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_masked_delivery_is_permission_denied_with_its_reason() {
    let s = space().await;
    let (data, _) = residents(200);
    let product = publish(
        &s.transport,
        &data,
        "Residents",
        "general-2",
        "csv",
        MASKED_POLICY,
    )
    .await
    .unwrap();
    let agreement_id = agree(&s.ecology, &s.transport, &product.offer_id).await;
    let context = &s.transport.running.node;
    let agreement = context
        .contracts
        .by_agreement(&agreement_id)
        .unwrap()
        .and_then(|n| n.agreement_content())
        .expect("the provider's agreement");
    let storage = context.storage.as_ref();
    let (tree, write) = liutong_node::desensitize::delivery::removal(
        storage,
        &agreement,
        "the consumer deleted its copy (signed deletion receipt)",
    )
    .unwrap()
    .expect("a removal to record");
    storage.apply(tree, vec![write]).unwrap();

    let err = s.ecology.pull(&agreement_id, 0).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(
        err.message().contains(&format!(
            "the masked delivery of agreement {agreement_id} was deleted at"
        )) && err
            .message()
            .contains("the consumer deleted its copy (signed deletion receipt)"),
        "{}",
        err.message()
    );
    assert!(
        liutong_node::transfer::copy(s.ecology.running.node.storage.as_ref(), &agreement_id)
            .unwrap()
            .is_none_or(|c| c.chunks_received == 0),
        "nothing was delivered"
    );
}
