//! A hostile member against a real node: per-member request and call limits, and every
//! refusal of the peer and local APIs on record in the audit log, floods included.

mod common;

use std::time::Duration;

use common::*;
use liutong_node::authority::Authority;
use liutong_node::contract::{ContractRequest, REQUEST_PAYLOAD_TYPE};
use liutong_node::identity::{Envelope, MemberRole, ParticipantKind, SigningKey};
use liutong_node::local::LocalRole;
use liutong_proto::v1::catalog_client::CatalogClient;
use liutong_proto::v1::negotiation_client::NegotiationClient;
use liutong_proto::v1::{
    DescribeRequest, DescribeResponse, GetOfferRequest, ListOffersRequest, NegotiationRequest,
    RefreshTrustListRequest,
};
use serde_json::Value;
use tokio_stream::StreamExt as _;
use tonic::Code;

const BOTH: &[MemberRole] = &[MemberRole::Provider, MemberRole::Consumer];

const TRAFFIC_POLICY: &str = r#"
uid = "urn:liutong:policy:traffic"
type = "set"

[[permission]]
action = "use"
constraint = [{ leftOperand = "purpose", operator = "isA", rightOperand = "publicService" }]
"#;

const GOVERNMENT_ONLY: &str = r#"
uid = "urn:liutong:policy:bus-gps"
type = "set"

[[permission]]
action = "use"
constraint = [{ leftOperand = "recipientKind", operator = "eq", rightOperand = "government" }]
"#;

const CSV: &[u8] = b"road,hour,vehicles\nYan'an Rd,8,1520\nTianmushan Rd,8,1210\n";

/// The audit entries of `node` from index `from` on, as JSON.
fn entries_from(node: &TestNode, from: usize) -> Vec<Value> {
    node.audit_events().split_off(from)
}

/// The refusal entries among `entries`.
fn refusals(entries: &[Value]) -> Vec<&Value> {
    entries.iter().filter(|e| e["kind"] == "refusal").collect()
}

/// The one refusal entry whose detail contains every one of `parts`.
#[track_caller]
fn refusal_with<'a>(entries: &'a [Value], parts: &[&str]) -> &'a Value {
    let found: Vec<&Value> = refusals(entries)
        .into_iter()
        .filter(|e| {
            let detail = e["detail"].as_str().unwrap_or_default();
            parts.iter().all(|p| detail.contains(p))
        })
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one refusal entry with {parts:?} among {:#?}",
        refusals(entries)
    );
    found[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_over_the_rate_is_refused_alerted_and_bounded_in_the_log() {
    let space = DataSpace::start().await;
    let transport = space
        .node_with(TRANSPORT, "transport", BOTH, |c| {
            c.limits.requests_per_second_per_member = 2;
            c.limits.request_burst_per_member = 5;
            c.limits.refusals_recorded_per_window = 3;
            c.limits.refusal_window = Duration::from_secs(3600);
        })
        .await;
    let ecology = space.node_with(ECOLOGY, "ecology", BOTH, |_| {}).await;
    refresh_all(&[&transport, &ecology]).await;
    let node = transport.running.node.clone();
    let before = transport.audit_events().len();

    let mut catalog = CatalogClient::new(ecology.channel_to(&transport).await);
    const CALLS: usize = 300;
    let (mut served, mut refused) = (0usize, 0usize);
    for _ in 0..CALLS {
        match catalog
            .list(ListOffersRequest {
                page_size: 10,
                page_token: String::new(),
            })
            .await
        {
            Ok(_) => served += 1,
            Err(status) => {
                assert_refused(
                    &status,
                    Code::ResourceExhausted,
                    "limits.requests_per_second_per_member",
                );
                refused += 1;
            }
        }
    }
    assert!(served >= 5, "the burst is served: {served}");
    assert!(
        refused > CALLS / 2,
        "most of the flood is refused: {refused}"
    );

    // What the flood left in the log: one entry per listing served, one alert, and the
    // first three refusals; nothing else.
    let added = entries_from(&transport, before);
    let of_kind = |kind: &str| added.iter().filter(|e| e["kind"] == kind).count();
    assert_eq!(of_kind("catalog_accessed"), served, "{added:#?}");
    assert_eq!(of_kind("refusal"), 3, "{added:#?}");
    assert_eq!(of_kind("alert"), 1, "{added:#?}");
    assert_eq!(added.len(), served + 3 + 1, "{added:#?}");
    let alert = added.iter().find(|e| e["kind"] == "alert").unwrap();
    assert_eq!(alert["participant"], ECOLOGY);
    assert!(
        alert["detail"].as_str().unwrap().starts_with(&format!(
            "member_limits: member {ECOLOGY} went over its limits"
        )),
        "{alert}"
    );
    for r in refusals(&added) {
        assert_eq!(r["participant"], ECOLOGY);
        let detail = r["detail"].as_str().unwrap();
        assert!(
            detail.starts_with(&format!(
                "refused member {ECOLOGY} calling /liutong.v1.Catalog/List: ResourceExhausted: "
            )),
            "{detail}"
        );
    }

    // The rest of the window's refusals are counted in one entry, written when the
    // window ends or, as here, when the node stops.
    transport.running.shutdown().await.unwrap();
    let summaries: Vec<Value> = (before as u64..node.audit.size())
        .map(|i| serde_json::from_slice(&node.audit.entry(i).unwrap().unwrap()).unwrap())
        .filter(|e: &Value| {
            e["kind"] == "refusal" && e["detail"].as_str().unwrap().contains("more refusals")
        })
        .collect();
    assert_eq!(summaries.len(), 1, "{summaries:#?}");
    let detail = summaries[0]["detail"].as_str().unwrap();
    assert!(
        detail.starts_with(&format!(
            "{} more refusals of member {ECOLOGY} within 1h for /liutong.v1.Catalog/List ×{}",
            refused - 3,
            refused - 3
        )),
        "{detail}"
    );
    ecology.running.shutdown().await.unwrap();
}

/// Starts a `Node.Describe` call of `channel` that sends its request but never ends it,
/// so the node holds it in progress until the returned task is aborted. A call refused
/// for the member's limit (another of its calls was in progress just then) is made
/// again, for at most 20 s.
fn held_call(channel: tonic::transport::Channel) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let mut grpc = tonic::client::Grpc::new(channel.clone());
            if grpc.ready().await.is_err() {
                return;
            }
            let requests = tokio_stream::once(DescribeRequest {}).chain(tokio_stream::pending());
            let codec = tonic_prost::ProstCodec::<DescribeRequest, DescribeResponse>::default();
            let path = http::uri::PathAndQuery::from_static("/liutong.v1.Node/Describe");
            match grpc
                .client_streaming(tonic::Request::new(requests), path, codec)
                .await
            {
                Err(s)
                    if s.code() == Code::ResourceExhausted
                        && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                _ => return,
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_over_a_member_s_limit_are_refused_while_another_member_is_served() {
    let space = DataSpace::start().await;
    let transport = space
        .node_with(TRANSPORT, "transport", BOTH, |c| {
            c.limits.streams_per_member = 2;
        })
        .await;
    let ecology = space.node_with(ECOLOGY, "ecology", BOTH, |_| {}).await;
    let logistics = space.node_with(LOGISTICS, "logistics", BOTH, |_| {}).await;
    refresh_all(&[&transport, &ecology, &logistics]).await;

    let channel = ecology.channel_to(&transport).await;
    let held: Vec<_> = (0..2).map(|_| held_call(channel.clone())).collect();
    let mut probe = liutong_proto::v1::node_client::NodeClient::new(channel.clone());
    // The held calls reach the node in their own time: probe until one is refused.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let refusal = loop {
        match probe.describe(DescribeRequest {}).await {
            Err(status) if status.code() == Code::ResourceExhausted => break status,
            _ if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            other => panic!("a third call of the same member is not refused: {other:?}"),
        }
    };
    assert_refused(
        &refusal,
        Code::ResourceExhausted,
        "has 2 calls in progress, the most this node serves one caller at once \
         (limits.streams_per_member)",
    );

    // Another member is served meanwhile.
    let mut other =
        liutong_proto::v1::node_client::NodeClient::new(logistics.channel_to(&transport).await);
    other
        .describe(DescribeRequest {})
        .await
        .expect("another member is served");
    // The refused probe is on record (and so is any held call that had to be made again).
    let entries = transport.audit_events();
    let over: Vec<&Value> = refusals(&entries)
        .into_iter()
        .filter(|e| {
            e["detail"].as_str().unwrap().starts_with(&format!(
                "refused member {ECOLOGY} calling /liutong.v1.Node/Describe: ResourceExhausted: \
                 member {ECOLOGY} has 2 calls in progress"
            ))
        })
        .collect();
    assert!(!over.is_empty(), "{:#?}", refusals(&entries));
    assert!(
        over.iter().all(|e| e["participant"] == ECOLOGY),
        "{over:#?}"
    );
    assert!(
        entries
            .iter()
            .any(|e| e["kind"] == "alert" && e["participant"] == ECOLOGY),
        "the member over its limits is alerted"
    );

    // Once its calls end, the member is served again.
    for h in held {
        h.abort();
    }
    assert!(
        wait_until(Duration::from_secs(20), || {
            let mut probe = probe.clone();
            async move { probe.describe(DescribeRequest {}).await.is_ok() }
        })
        .await,
        "the ended calls free their places"
    );
    probe.describe(DescribeRequest {}).await.unwrap();
    for n in [transport, ecology, logistics] {
        n.running.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_refusal_is_on_record_with_who_what_and_why() {
    let space = DataSpace::start().await;
    let (transport, ecology, logistics) = space.transport_ecology_logistics().await;
    let traffic = publish(
        &transport,
        CSV,
        "Road traffic flow",
        "general-2",
        "csv",
        TRAFFIC_POLICY,
    )
    .await
    .unwrap();
    let hidden = publish(
        &transport,
        CSV,
        "Bus GPS",
        "general-2",
        "csv",
        GOVERNMENT_ONLY,
    )
    .await
    .unwrap();
    let granted = ecology
        .request_contract(&transport, &traffic.offer_id, "urbanPlanning")
        .await
        .unwrap();
    let agreement = granted.agreement_id.clone();
    let before = transport.audit_events().len();

    // Cross-consumer pull: logistics pulls ecology's agreement, and is not told whose
    // agreement it is.
    let mut pull = logistics.direct_transfer_client(&transport).await;
    let err = pull
        .pull(liutong_proto::v1::PullRequest {
            agreement_id: agreement.clone(),
            from_chunk: 0,
        })
        .await
        .unwrap_err();
    assert_refused(
        &err,
        Code::PermissionDenied,
        &format!("{LOGISTICS} is not a party to agreement {agreement}"),
    );
    assert!(!err.message().contains(ECOLOGY), "{}", err.message());

    // Hidden offer: logistics is not a government body.
    let mut catalog = CatalogClient::new(logistics.channel_to(&transport).await);
    let err = catalog
        .get(GetOfferRequest {
            offer_id: hidden.offer_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");

    // Replay, bad signature and duplicate negotiation ID, from ecology.
    let stored = ecology
        .running
        .node
        .contracts
        .get(&granted.negotiation_id)
        .unwrap()
        .unwrap();
    let mut negotiation = NegotiationClient::new(ecology.channel_to(&transport).await);
    let err = negotiation
        .request(NegotiationRequest {
            request: Some(stored.request.clone().into()),
        })
        .await
        .unwrap_err();
    assert_refused(&err, Code::FailedPrecondition, "replayed");
    let mut body: ContractRequest = serde_json::from_slice(&stored.request.payload).unwrap();
    body.nonce = "11".repeat(16);
    let forged = Envelope::sign_json(
        REQUEST_PAYLOAD_TYPE,
        &body,
        &SigningKey::generate().unwrap(),
    )
    .unwrap();
    let err = negotiation
        .request(NegotiationRequest {
            request: Some(forged.into()),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::DataLoss, "{err:?}");
    body.nonce = "22".repeat(16);
    let duplicate = Envelope::sign_json(
        REQUEST_PAYLOAD_TYPE,
        &body,
        &ecology.running.node.identity.signing_key,
    )
    .unwrap();
    let err = negotiation
        .request(NegotiationRequest {
            request: Some(duplicate.into()),
        })
        .await
        .unwrap_err();
    assert_refused(&err, Code::AlreadyExists, "already exists");

    // A local client whose role does not allow the call.
    let err = transport
        .admin(LocalRole::App)
        .await
        .refresh_trust_list(RefreshTrustListRequest {})
        .await
        .unwrap_err();
    assert_refused(&err, Code::PermissionDenied, "needs the local role admin");

    // A certificate from another data space.
    let other_dir = space.dir.path().join("other-authority");
    let mut other = Authority::init(&other_dir, "Other Data Space").unwrap();
    let rogue = space.identity_from(
        &mut other,
        DataSpace::admission(ROGUE, "Rogue Ltd", ParticipantKind::Enterprise),
    );
    let err = node_client(transport.peer_addr(), Some(&rogue), transport.roots())
        .await
        .describe(DescribeRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");

    let entries = entries_from(&transport, before);
    let cross = refusal_with(
        &entries,
        &[
            &format!("refused member {LOGISTICS} calling /liutong.v1.Transfer/Pull"),
            "PermissionDenied",
            &agreement,
        ],
    );
    assert_eq!(cross["participant"], LOGISTICS);
    assert!(
        !cross["detail"].as_str().unwrap().contains(ECOLOGY),
        "{cross}"
    );
    let entry = refusal_with(
        &entries,
        &[
            &format!("refused member {LOGISTICS} calling /liutong.v1.Catalog/Get"),
            "NotFound",
            &hidden.offer_id,
        ],
    );
    assert_eq!(entry["participant"], LOGISTICS);
    for (code, why) in [
        ("FailedPrecondition", "replayed"),
        ("DataLoss", "not signed by the caller"),
        ("AlreadyExists", "already exists"),
    ] {
        let entry = refusal_with(
            &entries,
            &[
                &format!("refused member {ECOLOGY} calling /liutong.v1.Negotiation/Request"),
                code,
                why,
            ],
        );
        assert_eq!(entry["participant"], ECOLOGY);
    }
    let entry = refusal_with(
        &entries,
        &[
            "refused the local role app calling /liutong.v1.Admin/RefreshTrustList",
            "PermissionDenied",
            "needs the local role admin",
        ],
    );
    assert!(entry.get("participant").is_none(), "{entry}");
    let entry = refusal_with(
        &entries,
        &[
            "refused an unauthenticated caller from 127.0.0.1:",
            "presenting a certificate for \"",
            "calling /liutong.v1.Node/Describe",
            "Unauthenticated",
            "not issued by this data space's authority",
        ],
    );
    assert!(entry.get("participant").is_none(), "{entry}");
    for n in [transport, ecology, logistics] {
        n.running.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mebibyte_of_bad_input_gives_a_capped_entry_and_message() {
    let space = DataSpace::start().await;
    let transport = space.node_with(TRANSPORT, "transport", BOTH, |_| {}).await;
    let logistics = space.node_with(LOGISTICS, "logistics", BOTH, |_| {}).await;
    refresh_all(&[&transport, &logistics]).await;
    let before = transport.audit_events().len();

    // A megabyte of offer ID, with a forged line and a right-to-left override in it.
    let offer_id = format!(
        "od-\n{{\"kind\":\"node_started\"}}\u{202e}{}",
        "A".repeat(1024 * 1024)
    );
    let mut catalog = CatalogClient::new(logistics.channel_to(&transport).await);
    let err = catalog
        .get(GetOfferRequest {
            offer_id: offer_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().len() < 4096, "{} bytes", err.message().len());
    assert!(
        err.message()
            .starts_with("offer_id: is 1048606 bytes long; an offer ID is")
            && err.message().contains("od-\\n{\"kind\""),
        "{}",
        err.message()
    );

    let entries = entries_from(&transport, before);
    let entry = refusal_with(
        &entries,
        &[&format!(
            "refused member {LOGISTICS} calling /liutong.v1.Catalog/Get"
        )],
    );
    let detail = entry["detail"].as_str().unwrap();
    assert!(detail.len() < 2048, "{} bytes", detail.len());
    assert!(
        !detail.contains('\n') && !detail.contains('\u{202e}'),
        "{detail}"
    );
    assert!(
        detail.contains("od-\\n{") && detail.contains("\\u{202e}"),
        "{detail}"
    );
    for n in [transport, logistics] {
        n.running.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_past_the_first_are_summarised_when_the_window_ends() {
    let space = DataSpace::start().await;
    let transport = space
        .node_with(TRANSPORT, "transport", BOTH, |c| {
            c.limits.refusals_recorded_per_window = 1;
            c.limits.refusal_window = Duration::from_secs(1);
        })
        .await;
    let logistics = space.node_with(LOGISTICS, "logistics", BOTH, |_| {}).await;
    refresh_all(&[&transport, &logistics]).await;
    let before = transport.audit_events().len();

    let mut catalog = CatalogClient::new(logistics.channel_to(&transport).await);
    for i in 0..3 {
        let err = catalog
            .get(GetOfferRequest {
                offer_id: format!("prd-missing-{i}/v1"),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{err:?}");
    }
    // The window ends while the node runs: the summary is written without another
    // refusal or a shutdown to prompt it.
    let summarised = wait_until(Duration::from_secs(20), || {
        let entries = entries_from(&transport, before);
        async move {
            refusals(&entries).iter().any(|e| {
                e["detail"]
                    .as_str()
                    .unwrap()
                    .contains(&format!("more refusals of member {LOGISTICS} within 1s"))
            })
        }
    })
    .await;
    let entries = entries_from(&transport, before);
    assert!(summarised, "{:#?}", refusals(&entries));
    let refused = refusals(&entries);
    // One entry of its own and one summary of the other two, unless the window ended
    // between the calls (then a refusal opened a new window with an entry of its own).
    let own = refused
        .iter()
        .filter(|e| e["detail"].as_str().unwrap().starts_with("refused member"))
        .count();
    let counted: u64 = refused
        .iter()
        .filter_map(|e| {
            let d = e["detail"].as_str().unwrap();
            d.split_once(" more refusals of ")
                .map(|(n, _)| n.parse::<u64>().unwrap())
        })
        .sum();
    assert_eq!(own as u64 + counted, 3, "{refused:#?}");
    for e in &refused {
        assert_eq!(e["participant"], LOGISTICS);
    }
    for n in [transport, logistics] {
        n.running.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_that_ends_a_stream_is_on_record() {
    let space = DataSpace::start().await;
    let ecology = space.node_with(ECOLOGY, "ecology", BOTH, |_| {}).await;
    let before = ecology.audit_events().len();

    // The pull answers with a stream at once; the unknown agreement ends it with an error.
    let err = ecology.pull("agr-nowhere", 0).await.unwrap_err();
    assert_ne!(err.code(), Code::Ok);
    let why = format!("{:?}", err.code());
    let on_record = wait_until(Duration::from_secs(20), || {
        let entries = entries_from(&ecology, before);
        let why = why.clone();
        async move {
            refusals(&entries).iter().any(|e| {
                let d = e["detail"].as_str().unwrap();
                d.starts_with(&format!(
                    "refused the local role admin calling /liutong.v1.Admin/PullTransfer: {why}: "
                )) && d.contains("agr-nowhere")
            })
        }
    })
    .await;
    let entries = entries_from(&ecology, before);
    assert!(on_record, "{err:?} {:#?}", refusals(&entries));
    ecology.running.shutdown().await.unwrap();
}
