//! The Dataspace Protocol 2025-1 HTTPS binding, version discovery and catalog, against
//! a real node over real TLS on loopback, driven by a raw HTTP client as the protocol's
//! compatibility kit drives a connector. Every body the node answers with is validated
//! against the protocol's JSON Schemas (`tests/dsp/schemas`).

mod common;
mod dsp;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use common::*;
use dsp::{Client, assert_valid, catalog_request};
use liutong_node::config::{DspSection, NodeConfig};
use liutong_node::identity::{MemberRole, ParticipantKind};
use liutong_node::tls::TlsIdentity;
use liutong_proto::v1::ListOffersRequest;
use liutong_proto::v1::catalog_client::CatalogClient;
use serde_json::{Value as Json, json};

const ROLES: &[MemberRole] = &[MemberRole::Provider, MemberRole::Consumer];
const CSV: &[u8] = b"district,households\nXihu,241000\nShangcheng,198000\n";

/// Open to every member, with a logical constraint and duties, so that every part of
/// the ODRL export reaches the DSP offer.
const OPEN: &str = r#"
uid = "urn:liutong:policy:households"
type = "set"

[[permission]]
action = "use"
constraint = [
  { leftOperand = "dateTime", operator = "lt", rightOperand = 2099-01-01T00:00:00Z },
  { or = [
      { leftOperand = "region", operator = "isPartOf", rightOperand = "330000" },
      { leftOperand = "recipientKind", operator = "eq", rightOperand = "government" },
  ] },
]
duty = [{ action = "log" }, { action = "deleteAfter", elapsed = "P30D" }]
"#;

/// Only for members of the ecology sector: the test's consumer (transport) may not see it.
const ECOLOGY_ONLY: &str = r#"
uid = "urn:liutong:policy:ecology-only"
type = "set"

[[permission]]
action = "use"
constraint = [{ leftOperand = "sector", operator = "eq", rightOperand = "ecology" }]
"#;

/// Turns the DSP listener on at a loopback port the OS picks.
fn with_dsp(config: &mut NodeConfig) {
    config.dsp = Some(DspSection::on("127.0.0.1:0".parse().unwrap()));
}

/// A provider serving DSP, and the certificates of members to call it with.
struct Fixture {
    space: DataSpace,
    provider: TestNode,
    /// A member with the consumer role (sector transport).
    consumer: TlsIdentity,
}

impl Fixture {
    async fn start(edit: impl FnOnce(&mut NodeConfig)) -> Self {
        let space = DataSpace::start().await;
        let provider = space
            .node_with(TRANSPORT, "transport", ROLES, |c| {
                with_dsp(c);
                edit(c);
            })
            .await;
        let consumer = member(&space, ECOLOGY, ROLES);
        refresh_all(&[&provider]).await;
        Self {
            space,
            provider,
            consumer,
        }
    }

    fn dsp_addr(&self) -> std::net::SocketAddr {
        self.provider
            .running
            .dsp_addr()
            .expect("the DSP listener is on")
    }

    fn client(&self, identity: Option<&TlsIdentity>) -> Client {
        Client::new(self.dsp_addr(), identity, self.provider.roots())
    }

    fn base_url(&self) -> String {
        format!("https://{}", self.dsp_addr())
    }
}

/// Admits a member with `roles` and returns the certificate of its admission bundle.
fn member(space: &DataSpace, id: &str, roles: &[MemberRole]) -> TlsIdentity {
    let mut admission = DataSpace::admission(id, id, ParticipantKind::Government);
    admission.roles = roles.to_vec();
    let bundle = space.admit(admission);
    space.identity_of(&bundle)
}

/// The audit entries written since entry `from`.
fn entries_since(node: &TestNode, from: usize) -> Vec<Json> {
    node.audit_events().split_off(from)
}

fn of_kind<'a>(entries: &'a [Json], kind: &str) -> Vec<&'a Json> {
    entries.iter().filter(|e| e["kind"] == kind).collect()
}

#[test]
fn every_example_in_the_copied_schemas_validates_but_the_one_they_contradict() {
    let examples: Vec<_> = dsp::files(&dsp::schemas_dir(), "json")
        .into_iter()
        .filter(|p| p.parent().is_some_and(|d| d.ends_with("example")))
        .collect();
    assert_eq!(examples.len(), 27, "the examples of DSP 2025-1 errata 1");
    for path in examples {
        let example: Json = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let schema = schema_of_example(&path);
        let errors = dsp::errors(&schema, &example);
        if path.ends_with("common/example/dataservice-did-service.json") {
            // The one example the published schemas contradict: the DID service schema
            // wants every serviceEndpoint to end in `/catalog`, and this example of a
            // data service points at its version metadata instead. Nothing else is
            // wrong with it.
            assert_eq!(errors.len(), 1, "{errors:?}");
            assert!(
                errors[0].contains("/catalog$") && errors[0].ends_with("at /serviceEndpoint"),
                "{errors:?}"
            );
            continue;
        }
        assert!(errors.is_empty(), "{}: {errors:?}", path.display());
        // Where the example has a type, the mapping the tests validate responses with
        // picks the same schema.
        if example.get("@type").is_some() && !schema.contains("did-service") {
            assert_eq!(dsp::schema_for(&example), schema, "{}", path.display());
        }
    }
}

/// The schema an example file illustrates, by its name.
fn schema_of_example(path: &Path) -> String {
    let area = path
        .parent()
        .and_then(Path::parent)
        .and_then(Path::file_name)
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let stem = path.file_stem().unwrap().to_string_lossy();
    let name = match stem.as_ref() {
        "nested-catalog" => "catalog",
        "catalogservice-did-service" | "dataservice-did-service" => "did-service",
        other => other.trim_end_matches("_initial").trim_end_matches("-full"),
    };
    format!("{area}/{name}-schema.json")
}

#[test]
fn the_schema_check_refuses_what_the_protocol_forbids() {
    let catalog: Json = serde_json::from_slice(
        &std::fs::read(dsp::schemas_dir().join("catalog/example/catalog.json")).unwrap(),
    )
    .unwrap();
    assert!(dsp::errors("catalog/catalog-schema.json", &catalog).is_empty());
    let mut no_context = catalog.clone();
    no_context.as_object_mut().unwrap().remove("@context");
    let mut wrong_context = catalog.clone();
    wrong_context["@context"] = json!(["https://w3id.org/dspace/2024/1/context.jsonld"]);
    let mut offer_with_target = catalog.clone();
    offer_with_target["dataset"][0]["hasPolicy"][0]["target"] = json!("urn:x");
    let mut unknown_operator = catalog.clone();
    unknown_operator["dataset"][0]["hasPolicy"][0]["permission"][0]["constraint"][0]["operator"] =
        json!("within");
    let mut empty_datasets = catalog.clone();
    empty_datasets["dataset"] = json!([]);
    for (what, bad) in [
        ("no @context", no_context),
        ("another version's context", wrong_context),
        ("an offer with a target", offer_with_target),
        ("an operator outside ODRL's", unknown_operator),
        ("an empty dataset list", empty_datasets),
    ] {
        assert!(
            !dsp::errors("catalog/catalog-schema.json", &bad).is_empty(),
            "{what} passed the schema"
        );
    }
    // The transfer schemas' pointer without its leading `/` resolves.
    let error: Json = serde_json::from_slice(
        &std::fs::read(dsp::schemas_dir().join("transfer/example/transfer-error.json")).unwrap(),
    )
    .unwrap();
    assert_valid(&error);
    let mut no_pid = error.clone();
    no_pid.as_object_mut().unwrap().remove("consumerPid");
    assert!(!dsp::errors("transfer/transfer-error-schema.json", &no_pid).is_empty());
}

#[tokio::test]
async fn the_version_is_discovered_without_a_certificate_and_nothing_else_is_served() {
    let f = Fixture::start(|_| {}).await;
    let anonymous = f.client(None);

    let answer = anonymous.get("/.well-known/dspace-version").await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(
        answer.headers[http::header::CONTENT_TYPE],
        "application/json"
    );
    let versions = answer.message();
    let version = &versions["protocolVersions"][0];
    assert_eq!(version["version"], "2025-1");
    assert_eq!(version["binding"], "HTTPS");
    assert_eq!(version["path"], "/");

    let before = f.provider.audit_events().len();
    let answer = anonymous.post("/catalog/request", &catalog_request()).await;
    assert_eq!(answer.status, 401, "{answer:?}");
    let error = answer.message();
    assert_eq!(error["@type"], "CatalogError");
    assert!(
        error["reason"][0]
            .as_str()
            .unwrap()
            .contains("no client certificate"),
        "{error}"
    );
    let answer = anonymous.get("/catalog/datasets/anything").await;
    assert_eq!(answer.status, 401, "{answer:?}");
    answer.message();

    let entries = entries_since(&f.provider, before);
    let refusals = of_kind(&entries, "refusal");
    assert_eq!(refusals.len(), 2, "{entries:?}");
    assert!(
        refusals[0]["detail"]
            .as_str()
            .unwrap()
            .contains("POST /catalog/request: Unauthenticated: no client certificate"),
        "{refusals:?}"
    );
    assert!(of_kind(&entries, "catalog_accessed").is_empty());
}

#[tokio::test]
async fn non_members_and_members_without_the_consumer_role_are_refused() {
    let f = Fixture::start(|_| {}).await;
    let revoked = member(&f.space, ROGUE, ROLES);
    let provider_only = member(&f.space, LOGISTICS, &[MemberRole::Provider]);
    refresh_all(&[&f.provider]).await;
    // Served while a member, to show that the revocation is what refuses it.
    let answer = f
        .client(Some(&revoked))
        .post("/catalog/request", &catalog_request())
        .await;
    assert_eq!(answer.status, 200, "{answer:?}");

    f.space.revoke(ROGUE, "left the data space");
    refresh_all(&[&f.provider]).await;
    let before = f.provider.audit_events().len();
    let answer = f
        .client(Some(&revoked))
        .post("/catalog/request", &catalog_request())
        .await;
    assert_eq!(answer.status, 403, "{answer:?}");
    let reason = answer.message()["reason"][0].as_str().unwrap().to_owned();
    assert!(
        reason.contains("revoked") && reason.contains("left the data space"),
        "{reason}"
    );

    let answer = f
        .client(Some(&provider_only))
        .post("/catalog/request", &catalog_request())
        .await;
    assert_eq!(answer.status, 403, "{answer:?}");
    let reason = answer.message()["reason"][0].as_str().unwrap().to_owned();
    assert!(reason.contains("consumer"), "{reason}");

    // A certificate of another data space does not get past the TLS handshake.
    let elsewhere = DataSpace::start().await;
    let stranger = member(&elsewhere, ECOLOGY, ROLES);
    let refused = f
        .client(Some(&stranger))
        .send(
            "POST",
            "/catalog/request",
            Some(serde_json::to_vec(&catalog_request()).unwrap()),
        )
        .await;
    assert!(refused.is_err(), "{refused:?}");

    let entries = entries_since(&f.provider, before);
    let refusals: Vec<String> = of_kind(&entries, "refusal")
        .iter()
        .map(|e| e["detail"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(refusals.len(), 2, "{refusals:?}");
    assert!(refusals[0].contains("PermissionDenied"), "{refusals:?}");
    assert!(
        refusals[1].starts_with(&format!(
            "refused member {LOGISTICS} calling POST /catalog/request: PermissionDenied"
        )),
        "{refusals:?}"
    );
    assert!(of_kind(&entries, "catalog_accessed").is_empty());
}

#[tokio::test]
async fn a_member_sees_the_offers_the_grpc_catalog_shows_it_as_dcat_datasets() {
    let f = Fixture::start(|_| {}).await;
    let open = publish(&f.provider, CSV, "Households", "general-2", "csv", OPEN)
        .await
        .expect("published");
    let hidden = publish(
        &f.provider,
        CSV,
        "Wetlands",
        "general-2",
        "csv",
        ECOLOGY_ONLY,
    )
    .await
    .expect("published");
    let unoffered = publish(&f.provider, CSV, "Drafts", "general-2", "csv", "")
        .await
        .expect("published");
    let client = f.client(Some(&f.consumer));
    let before = f.provider.audit_events().len();

    let answer = client.post("/catalog/request", &catalog_request()).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert!(answer.links().is_empty(), "one page: {:?}", answer.links());
    let catalog = answer.message();
    assert_eq!(catalog["@type"], "Catalog");
    assert_eq!(
        catalog["participantId"],
        format!("urn:uscc:{TRANSPORT}").as_str()
    );
    assert_eq!(catalog["service"][0]["endpointURL"], f.base_url().as_str());
    let datasets = catalog["dataset"].as_array().expect("datasets");
    let shown: BTreeSet<String> = datasets
        .iter()
        .map(|d| d["@id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        shown,
        BTreeSet::from([format!("urn:liutong:product:{}", open.product_id)])
    );

    // The same offers as the gRPC catalog shows the same member.
    let mut grpc = CatalogClient::new(
        peer_channel(
            f.provider.peer_addr(),
            Some(&f.consumer),
            f.provider.roots(),
        )
        .await,
    );
    let offers = grpc
        .list(ListOffersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .offers;
    let grpc_shown: BTreeSet<String> = offers
        .iter()
        .map(|o| format!("urn:liutong:product:{}", o.product_id))
        .collect();
    assert_eq!(shown, grpc_shown);

    // The dataset: the product's offer as its policy, pulled over HTTPS from this node.
    let dataset = &datasets[0];
    assert_eq!(dataset["dct:title"], "Households");
    assert_eq!(dataset["dcat:version"], "1");
    let offer = &dataset["hasPolicy"][0];
    assert_eq!(offer["@type"], "Offer");
    assert_eq!(
        offer["@id"],
        format!("urn:liutong:offer:{}", open.offer_id).as_str()
    );
    assert_eq!(offer["assigner"], TRANSPORT);
    assert_eq!(offer["@context"]["lt"], liutong_policy::odrl::PROFILE_NS);
    let permission = &offer["permission"][0];
    assert_eq!(permission["action"], "use");
    let constraints = permission["constraint"].as_array().unwrap();
    assert_eq!(constraints[0]["leftOperand"], "dateTime");
    assert_eq!(constraints[0]["operator"], "lt");
    let either = constraints[1]["or"].as_array().expect("or, as an array");
    assert_eq!(either[0]["leftOperand"], "lt:region");
    assert_eq!(either[0]["operator"], "isPartOf");
    assert_eq!(either[0]["rightOperand"], "330000");
    let duties: Vec<&str> = permission["duty"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["action"].as_str().unwrap())
        .collect();
    assert_eq!(duties, ["lt:log", "delete"]);
    let distribution = &dataset["distribution"][0];
    assert_eq!(distribution["format"], "HttpData-PULL");
    assert_eq!(distribution["accessService"]["@type"], "DataService");
    assert_eq!(
        distribution["accessService"]["endpointURL"],
        f.base_url().as_str()
    );
    // The offer reads back as the policy the provider published, with the dataset as
    // its target, as a consumer takes it from the catalog.
    let mut targeted = offer.clone();
    targeted["target"] = dataset["@id"].clone();
    let policy = liutong_policy::Policy::from_odrl_value(&targeted).expect("the offer is ODRL");
    assert_eq!(policy.permissions.len(), 1);
    assert_eq!(policy.permissions[0].constraints.len(), 2);

    // One dataset by its @id, and by its product ID.
    for id in [
        format!("urn:liutong:product:{}", open.product_id),
        open.product_id.clone(),
    ] {
        let answer = client.get(&format!("/catalog/datasets/{id}")).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        let one = answer.message();
        assert_eq!(one["@type"], "Dataset");
        assert_eq!(one["hasPolicy"], dataset["hasPolicy"]);
    }

    // A product the member may not see, one not offered, and one that does not exist
    // are all unknown to it.
    for id in [
        format!("urn:liutong:product:{}", hidden.product_id),
        unoffered.product_id.clone(),
        "prd-none".to_owned(),
        "urn:liutong:product:".to_owned() + &"x".repeat(300),
    ] {
        let answer = client.get(&format!("/catalog/datasets/{id}")).await;
        assert_eq!(answer.status, 404, "{id}: {answer:?}");
        let error = answer.message();
        assert_eq!(error["@type"], "CatalogError");
        assert_eq!(error["code"], "404");
    }

    let entries = entries_since(&f.provider, before);
    let accessed: Vec<&str> = of_kind(&entries, "catalog_accessed")
        .iter()
        .map(|e| e["detail"].as_str().unwrap())
        .collect();
    assert_eq!(accessed.len(), 4, "{accessed:?}"); // the DSP listing, the gRPC one, two reads
    assert_eq!(
        accessed[0],
        "listed the catalog over the Dataspace Protocol: 1 offers shown"
    );
    assert!(accessed[2].starts_with(&format!("read dataset {}", open.product_id)));
    assert_eq!(of_kind(&entries, "refusal").len(), 4, "{entries:?}");
}

#[tokio::test]
async fn the_catalog_is_paged_with_link_headers_both_ways() {
    let f = Fixture::start(|_| {}).await;
    let mut published = BTreeSet::new();
    for i in 0..5 {
        let p = publish(
            &f.provider,
            CSV,
            &format!("Households {i}"),
            "general-2",
            "csv",
            OPEN,
        )
        .await
        .expect("published");
        published.insert(format!("urn:liutong:product:{}", p.product_id));
    }
    publish(
        &f.provider,
        CSV,
        "Wetlands",
        "general-2",
        "csv",
        ECOLOGY_ONLY,
    )
    .await
    .expect("published");
    let client = f.client(Some(&f.consumer));

    // Forwards, two at a time: 2, 2, 1.
    let mut pages: Vec<Vec<String>> = Vec::new();
    let mut path = "/catalog/request?pageSize=2".to_owned();
    let mut previous_links = Vec::new();
    for _ in 0..10 {
        let answer = client.post(&path, &catalog_request()).await;
        assert_eq!(answer.status, 200, "{path}: {answer:?}");
        let ids: Vec<String> = answer.message()["dataset"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["@id"].as_str().unwrap().to_owned())
            .collect();
        pages.push(ids);
        for (url, _) in answer.links() {
            assert!(url.starts_with(&f.base_url()), "{url}");
        }
        previous_links.push(answer.link("previous"));
        match answer.link("next") {
            Some(next) => path = Client::path_of(&next),
            None => break,
        }
    }
    let sizes: Vec<usize> = pages.iter().map(Vec::len).collect();
    assert_eq!(sizes, [2, 2, 1]);
    let all: Vec<String> = pages.concat();
    assert_eq!(
        all.iter().cloned().collect::<BTreeSet<_>>(),
        published,
        "every visible offer once, the hidden one never"
    );
    assert_eq!(all.len(), 5, "no offer twice");
    assert!(
        previous_links[0].is_none(),
        "the first page has no previous"
    );

    // Backwards from the last page: the same pages in reverse.
    let mut back = previous_links[2]
        .clone()
        .expect("the last page has a previous");
    for expected in [&pages[1], &pages[0]] {
        let answer = client
            .post(&Client::path_of(&back), &catalog_request())
            .await;
        assert_eq!(answer.status, 200, "{answer:?}");
        let ids: Vec<String> = answer.message()["dataset"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["@id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(&ids, expected);
        assert!(
            answer.link("next").is_some(),
            "a page before the last has a next"
        );
        match answer.link("previous") {
            Some(p) => back = p,
            None => assert_eq!(expected, &pages[0], "only the first page has no previous"),
        }
    }
}

#[tokio::test]
async fn bad_requests_are_refused_with_a_catalog_error_and_recorded() {
    const LIMIT: usize = 64 * 1024;
    let f = Fixture::start(|c| {
        c.limits.max_message_bytes = LIMIT;
        c.limits.refusals_recorded_per_window = 100;
    })
    .await;
    publish(&f.provider, CSV, "Households", "general-2", "csv", OPEN)
        .await
        .expect("published");
    let client = f.client(Some(&f.consumer));
    let before = f.provider.audit_events().len();

    let oversized = {
        let mut m = catalog_request();
        m["padding"] = json!("x".repeat(LIMIT));
        serde_json::to_vec(&m).unwrap()
    };
    let with = |edit: &dyn Fn(&mut Json)| {
        let mut m = catalog_request();
        edit(&mut m);
        serde_json::to_vec(&m).unwrap()
    };
    let cases: Vec<(&str, String, Vec<u8>, &str)> = vec![
        (
            "malformed JSON",
            "/catalog/request".into(),
            b"{\"@context\": [".to_vec(),
            "not JSON",
        ),
        (
            "no @context",
            "/catalog/request".into(),
            with(&|m| {
                m.as_object_mut().unwrap().remove("@context");
            }),
            "@context is missing",
        ),
        (
            "@context not an array",
            "/catalog/request".into(),
            with(&|m| m["@context"] = json!(dsp::CONTEXT)),
            "must be an array",
        ),
        (
            "another version's context",
            "/catalog/request".into(),
            with(&|m| m["@context"] = json!(["https://w3id.org/dspace/2024/1/context.jsonld"])),
            "does not name the Dataspace Protocol 2025-1 context",
        ),
        (
            "an unknown @type",
            "/catalog/request".into(),
            with(&|m| m["@type"] = json!("CatalogRequest")),
            "takes a CatalogRequestMessage",
        ),
        (
            "a dataset request where a catalog request belongs",
            "/catalog/request".into(),
            with(&|m| m["@type"] = json!("DatasetRequestMessage")),
            "takes a CatalogRequestMessage",
        ),
        (
            "a filter",
            "/catalog/request".into(),
            with(&|m| m["filter"] = json!([{"title": "Households"}])),
            "does not support catalog filters",
        ),
        (
            "a continuation token of another list",
            "/catalog/request?continuationToken=bmVnLTAwMQ".into(),
            serde_json::to_vec(&catalog_request()).unwrap(),
            "continuationToken",
        ),
        (
            "a page size that is not a number",
            "/catalog/request?pageSize=many".into(),
            serde_json::to_vec(&catalog_request()).unwrap(),
            "the query is not valid",
        ),
        (
            "an oversized body",
            "/catalog/request".into(),
            oversized,
            "larger than this node accepts",
        ),
    ];
    for (what, path, body, expected) in &cases {
        let answer = client
            .send("POST", path, Some(body.clone()))
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(answer.status, 400, "{what}: {answer:?}");
        let error = answer.message();
        assert_eq!(error["@type"], "CatalogError", "{what}");
        assert_eq!(error["code"], "400", "{what}");
        let reason = error["reason"][0].as_str().unwrap();
        assert!(reason.contains(expected), "{what}: {reason}");
    }

    // Each refusal is on the audit log under the member, and nothing else happened.
    let entries = entries_since(&f.provider, before);
    let refusals: Vec<&str> = of_kind(&entries, "refusal")
        .iter()
        .map(|e| e["detail"].as_str().unwrap())
        .collect();
    assert_eq!(refusals.len(), cases.len(), "{refusals:?}");
    for r in &refusals {
        assert!(
            r.starts_with(&format!(
                "refused member {ECOLOGY} calling POST /catalog/request: InvalidArgument: "
            )),
            "{r}"
        );
    }
    assert_eq!(
        entries.len(),
        refusals.len(),
        "nothing but the refusals was recorded: {entries:?}"
    );

    // The same member is served once it sends a proper message.
    let answer = client.post("/catalog/request", &catalog_request()).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    answer.message();
}

#[tokio::test]
async fn the_listener_is_off_unless_configured_and_stops_with_the_node() {
    let space = DataSpace::start().await;
    let plain = space.node_with(TRANSPORT, "transport", ROLES, |_| {}).await;
    assert_eq!(plain.running.dsp_addr(), None);

    let node = space.node_with(ECOLOGY, "ecology", ROLES, with_dsp).await;
    let addr = node.running.dsp_addr().expect("on");
    let client = Client::new(addr, None, node.roots());
    assert_eq!(client.get("/.well-known/dspace-version").await.status, 200);
    node.running.shutdown().await.expect("clean shutdown");
    // Stopped: the port no longer accepts connections at all.
    let closed = wait_until(Duration::from_secs(10), || async move {
        tokio::net::TcpStream::connect(addr).await.is_err()
    })
    .await;
    assert!(
        closed,
        "the DSP listener still accepts connections after the node stopped"
    );
}

#[tokio::test]
async fn a_member_over_its_request_rate_is_answered_429_and_recorded() {
    let f = Fixture::start(|c| {
        c.limits.requests_per_second_per_member = 1;
        c.limits.request_burst_per_member = 2;
    })
    .await;
    let client = f.client(Some(&f.consumer));
    let before = f.provider.audit_events().len();
    // Far more calls than the burst; they could only all be served if they took
    // longer than 20 seconds together.
    const CALLS: usize = 20;
    let mut limited = None;
    for _ in 0..CALLS {
        let answer = client.post("/catalog/request", &catalog_request()).await;
        match answer.status {
            200 => {}
            429 => {
                limited = Some(answer);
                break;
            }
            other => panic!("unexpected status {other}: {answer:?}"),
        }
    }
    let answer = limited.expect("the member is limited within its burst and rate");
    let error = answer.message();
    assert_eq!(error["@type"], "CatalogError");
    assert!(
        error["reason"][0]
            .as_str()
            .unwrap()
            .contains("requests_per_second_per_member"),
        "{error}"
    );
    let entries = entries_since(&f.provider, before);
    let refusals: Vec<&str> = of_kind(&entries, "refusal")
        .iter()
        .map(|e| e["detail"].as_str().unwrap())
        .collect();
    assert!(
        refusals.iter().any(|r| r.starts_with(&format!(
            "refused member {ECOLOGY} calling POST /catalog/request: ResourceExhausted"
        ))),
        "{refusals:?}"
    );
    let alerts = of_kind(&entries, "alert");
    assert!(
        alerts.iter().any(|a| a["detail"]
            .as_str()
            .unwrap()
            .contains("went over its limits")),
        "{alerts:?}"
    );
}
