//! Member roles: each peer entry point serves only a caller holding the role it needs,
//! and a node acts only in the roles the authority granted it. Every call goes through
//! mutual TLS to real nodes; a refusal is PERMISSION_DENIED with one message, and leaves
//! nothing recorded.

mod common;

use std::time::Duration;

use common::*;
use liutong_node::catalog::product::{Format, NewVersion};
use liutong_node::contract::{ContractRequest, REQUEST_PAYLOAD_TYPE};
use liutong_node::identity::{Envelope, MemberRole, ParticipantKind};
use liutong_node::local::LocalRole;
use liutong_proto::v1::audit_client::AuditClient;
use liutong_proto::v1::catalog_client::CatalogClient;
use liutong_proto::v1::negotiation_client::NegotiationClient;
use liutong_proto::v1::query_client::QueryClient;
use liutong_proto::v1::transfer_client::TransferClient;
use liutong_proto::v1::usage_control_client::UsageControlClient;
use liutong_proto::v1::{
    AggregateRequest, DescribeRequest, GetCheckpointRequest, GetEntriesRequest,
    GetNegotiationRequest, GetOfferRequest, ListOffersRequest, NegotiationRequest, NotifyRequest,
    ProveConsistencyRequest, ProveInclusionRequest, PullRequest, QueryAggregateRequest,
    ReceiptRequest, RevocationsRequest, RevokeRequest, SearchRequest, VerifyAgreementRequest,
};
use tonic::Code;

/// An auditor-only member (a made-up, well-formed USCC).
const AUDITOR: &str = ROGUE;

const POLICY: &str = r#"
uid = "urn:liutong:policy:traffic"
type = "set"

[[permission]]
action = "use"
constraint = [{ leftOperand = "purpose", operator = "isA", rightOperand = "publicService" }]
"#;

const CSV: &[u8] = b"road,hour,vehicles\nYan'an Rd,8,1520\nTianmushan Rd,8,1210\n";

/// Four members, one per set of roles, that all know each other.
struct Space {
    space: DataSpace,
    /// Admitted as `provider` only.
    provider: TestNode,
    /// Admitted as `consumer` only.
    consumer: TestNode,
    /// Admitted as `provider` and `consumer`.
    both: TestNode,
    /// Admitted as `auditor` only.
    auditor: TestNode,
}

impl Space {
    async fn start() -> Space {
        let space = DataSpace::start().await;
        // Usage duties (notices, revocations) run often, so their effects show soon.
        let quick = |c: &mut liutong_node::config::NodeConfig| {
            c.usage.check_interval = Duration::from_millis(200)
        };
        let provider = space
            .node_with(TRANSPORT, "provider", &[MemberRole::Provider], quick)
            .await;
        let consumer = space
            .node_with(ECOLOGY, "consumer", &[MemberRole::Consumer], quick)
            .await;
        let both = space
            .node_with(
                LOGISTICS,
                "both",
                &[MemberRole::Provider, MemberRole::Consumer],
                quick,
            )
            .await;
        let auditor = space
            .node_with(AUDITOR, "auditor", &[MemberRole::Auditor], quick)
            .await;
        refresh_all(&[&provider, &consumer, &both, &auditor]).await;
        Space {
            space,
            provider,
            consumer,
            both,
            auditor,
        }
    }

    /// Stops every node, then removes the data space's directory.
    async fn stop(self) {
        for n in [self.provider, self.consumer, self.both, self.auditor] {
            n.running.shutdown().await.unwrap();
        }
        drop(self.space);
    }
}

/// The refusal every role check gives.
fn needs(what: &str, role: &str, participant: &str, roles: &str) -> String {
    format!("{what} needs the member role {role}; participant {participant} has the roles {roles}")
}

/// Audit entries of `node` of these kinds about `participant`.
fn entries_about(node: &TestNode, participant: &str, kinds: &[&str]) -> Vec<serde_json::Value> {
    node.audit_events()
        .into_iter()
        .filter(|e| e["participant"] == participant && kinds.iter().any(|k| e["kind"] == *k))
        .collect()
}

/// A contract request for `offer` at `provider`, signed by `consumer` (as its node would
/// sign it, so only the role check stands in its way).
fn signed_request(consumer: &TestNode, provider: &TestNode, offer: &str, nonce: &str) -> Envelope {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let body = ContractRequest {
        negotiation_id: format!("neg-roles-{nonce}"),
        consumer: consumer.participant.clone(),
        provider: provider.participant.clone(),
        offer_id: offer.into(),
        purpose: "publicService".into(),
        nonce: nonce.repeat(32),
        created_at: now,
        expires_at: now + 300,
    };
    Envelope::sign_json(
        REQUEST_PAYLOAD_TYPE,
        &body,
        &consumer.running.node.identity.signing_key,
    )
    .unwrap()
}

/// The outcome of one call, for the table: Ok, or its status.
type Outcome = Result<(), tonic::Status>;

fn done<T>(r: Result<tonic::Response<T>, tonic::Status>) -> Outcome {
    r.map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_peer_entry_point_needs_the_caller_s_member_role() {
    let s = Space::start().await;
    let offer = publish(
        &s.both,
        CSV,
        "Road traffic flow",
        "general-2",
        "csv",
        POLICY,
    )
    .await
    .expect("a provider publishes")
    .offer_id;
    let provider_id = s.provider.participant.to_string();
    let consumer_id = s.consumer.participant.to_string();

    // The provider-only member calls every entry point that needs `consumer`; the
    // consumer-only member the peer audit API, which needs `auditor`.
    let as_provider = s.provider.channel_to(&s.both).await;
    let as_consumer = s.consumer.channel_to(&s.both).await;
    let request = signed_request(&s.provider, &s.both, &offer, "a");
    let mut cases: Vec<(&str, &str, &str, Outcome)> = vec![
        (
            "listing the catalog",
            "consumer",
            "provider",
            done(
                CatalogClient::new(as_provider.clone())
                    .list(ListOffersRequest::default())
                    .await,
            ),
        ),
        (
            "reading an offer",
            "consumer",
            "provider",
            done(
                CatalogClient::new(as_provider.clone())
                    .get(GetOfferRequest {
                        offer_id: offer.clone(),
                    })
                    .await,
            ),
        ),
        (
            "requesting a contract",
            "consumer",
            "provider",
            done(
                NegotiationClient::new(as_provider.clone())
                    .request(NegotiationRequest {
                        request: Some(request.clone().into()),
                    })
                    .await,
            ),
        ),
        (
            "asking about a negotiation",
            "consumer",
            "provider",
            done(
                NegotiationClient::new(as_provider.clone())
                    .get(GetNegotiationRequest {
                        negotiation_id: "neg-roles-a".into(),
                    })
                    .await,
            ),
        ),
        (
            "countersigning an agreement",
            "consumer",
            "provider",
            done(
                NegotiationClient::new(as_provider.clone())
                    .verify(VerifyAgreementRequest {
                        negotiation_id: "neg-roles-a".into(),
                        agreement: Some(request.clone().into()),
                    })
                    .await,
            ),
        ),
        (
            "pulling a transfer",
            "consumer",
            "provider",
            done(
                TransferClient::new(as_provider.clone())
                    .pull(PullRequest {
                        agreement_id: "agr-roles".into(),
                        from_chunk: 0,
                    })
                    .await,
            ),
        ),
        (
            "confirming a transfer",
            "consumer",
            "provider",
            done(
                TransferClient::new(as_provider.clone())
                    .receipt(ReceiptRequest {
                        receipt: Some(request.clone().into()),
                    })
                    .await,
            ),
        ),
        (
            "sending an aggregate query",
            "consumer",
            "provider",
            done(
                QueryClient::new(as_provider.clone())
                    .aggregate(AggregateRequest {
                        agreement_id: "agr-roles".into(),
                        query: None,
                        purpose: String::new(),
                    })
                    .await,
            ),
        ),
        (
            "sending a usage notice or deletion receipt",
            "consumer",
            "provider",
            done(
                UsageControlClient::new(as_provider.clone())
                    .notify(NotifyRequest {
                        message: Some(request.clone().into()),
                    })
                    .await,
            ),
        ),
        (
            "asking for revocations",
            "consumer",
            "provider",
            done(
                UsageControlClient::new(as_provider.clone())
                    .revocations(RevocationsRequest::default())
                    .await,
            ),
        ),
    ];
    let mut audit = AuditClient::new(as_consumer.clone());
    cases.push((
        "reading audit entries",
        "auditor",
        "consumer",
        done(
            audit
                .get_entries(GetEntriesRequest { from: 0, to: 1 })
                .await,
        ),
    ));
    cases.push((
        "proving inclusion",
        "auditor",
        "consumer",
        done(
            audit
                .prove_inclusion(ProveInclusionRequest::default())
                .await,
        ),
    ));
    cases.push((
        "proving consistency",
        "auditor",
        "consumer",
        done(
            audit
                .prove_consistency(ProveConsistencyRequest::default())
                .await,
        ),
    ));
    cases.push((
        "searching the audit log",
        "auditor",
        "consumer",
        done(audit.search(SearchRequest::default()).await),
    ));

    let mut wrong = Vec::new();
    for (what, role, held, outcome) in &cases {
        let caller = if *held == "provider" {
            &provider_id
        } else {
            &consumer_id
        };
        let expected = needs(what, role, caller, held);
        match outcome {
            Err(s) if s.code() == Code::PermissionDenied && s.message() == expected => {}
            Err(s) => wrong.push(format!("{what}: {:?} {:?}", s.code(), s.message())),
            Ok(()) => wrong.push(format!("{what}: served")),
        }
    }
    assert!(
        wrong.is_empty(),
        "not refused for the missing role:\n{}",
        wrong.join("\n")
    );

    // Nothing was written for the refused caller: no negotiation, no delivery, no
    // notice, no catalog access.
    let node = &s.both.running.node;
    assert!(node.contracts.list().unwrap().is_empty());
    assert!(node.usage.usage_notices("agr-roles").unwrap().is_empty());
    let written = entries_about(
        &s.both,
        &provider_id,
        &[
            "catalog_accessed",
            "policy_decision",
            "negotiation_state_changed",
            "transfer",
            "usage",
            "query",
        ],
    );
    assert!(written.is_empty(), "{written:?}");

    // Any member, whatever its roles, may ask who a node is, whether it is healthy, and
    // for its checkpoints and verifier key.
    for (caller, name) in [(&s.provider, "provider"), (&s.auditor, "auditor")] {
        let channel = caller.channel_to(&s.both).await;
        liutong_proto::v1::node_client::NodeClient::new(channel.clone())
            .describe(DescribeRequest {})
            .await
            .unwrap_or_else(|e| panic!("{name} describes: {e:?}"));
        tonic_health::pb::health_client::HealthClient::new(channel.clone())
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await
            .unwrap_or_else(|e| panic!("{name} checks health: {e:?}"));
        AuditClient::new(channel)
            .get_checkpoint(GetCheckpointRequest {})
            .await
            .unwrap_or_else(|e| panic!("{name} reads the checkpoint: {e:?}"));
    }
    s.stop().await;
}

/// Stores an offered product straight into `node`'s catalog, as a node that ignores its
/// own roles (a changed binary) would: peers must not take its word for it.
async fn publish_ignoring_roles(node: &TestNode) -> String {
    let catalog = &node.running.node.catalog;
    let mut upload = catalog
        .products
        .begin(NewVersion {
            product_id: None,
            title: "Air quality".into(),
            description: "hourly PM2.5".into(),
            owner: node.participant.clone(),
            classification: "general-2".parse().unwrap(),
            format: Format::Csv,
            derived_from: vec![],
            policy_odrl: None,
        })
        .unwrap();
    let policy = liutong_node::catalog::parse_policy(POLICY, None).unwrap();
    let compiled = catalog
        .offer_policy(policy, upload.product_id(), "general-2".parse().unwrap())
        .unwrap();
    upload.set_policy_odrl(compiled.policy().to_odrl());
    upload.write(CSV).unwrap();
    let product = upload.finish(0).await.unwrap();
    product.offer_id().expect("offered")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_only_node_publishes_nothing() {
    let s = Space::start().await;
    let consumer_id = s.consumer.participant.to_string();
    let err = publish(&s.consumer, CSV, "Air quality", "general-2", "csv", POLICY)
        .await
        .unwrap_err();
    assert_refused(
        &err,
        Code::PermissionDenied,
        &needs("publishing a product", "provider", &consumer_id, "consumer"),
    );
    assert!(
        s.consumer
            .running
            .node
            .catalog
            .products
            .list()
            .unwrap()
            .is_empty()
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_only_node_asks_for_no_contract_and_pulls_nothing() {
    let s = Space::start().await;
    let provider_id = s.provider.participant.to_string();
    let offer = publish(
        &s.both,
        CSV,
        "Road traffic flow",
        "general-2",
        "csv",
        POLICY,
    )
    .await
    .expect("a provider publishes")
    .offer_id;
    let err = s
        .provider
        .request_contract(&s.both, &offer, "publicService")
        .await
        .unwrap_err();
    assert_refused(
        &err,
        Code::PermissionDenied,
        &needs(
            "requesting a contract",
            "consumer",
            &provider_id,
            "provider",
        ),
    );
    // Nothing is recorded on either side.
    assert!(s.provider.running.node.contracts.list().unwrap().is_empty());
    assert!(s.both.running.node.contracts.list().unwrap().is_empty());
    let err = s.provider.pull_all("agr-roles").await.unwrap_err();
    assert_refused(
        &err,
        Code::PermissionDenied,
        &needs("pulling a transfer", "consumer", &provider_id, "provider"),
    );
    assert!(
        s.provider
            .running
            .node
            .transfers
            .copies()
            .unwrap()
            .is_empty()
    );
    let err = s
        .provider
        .admin(LocalRole::Admin)
        .await
        .query_aggregate(QueryAggregateRequest {
            agreement_id: "agr-roles".into(),
            peer: String::new(),
            query: None,
            purpose: String::new(),
        })
        .await
        .unwrap_err();
    assert_refused(
        &err,
        Code::PermissionDenied,
        &needs(
            "sending an aggregate query",
            "consumer",
            &provider_id,
            "provider",
        ),
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offer_from_a_member_without_the_provider_role_is_not_negotiated() {
    let s = Space::start().await;
    let consumer_id = s.consumer.participant.to_string();
    // A consumer-only member that offers a product anyway (its node ignoring its roles):
    // a consumer refuses to ask it, before sending a request or recording anything.
    let hostile = publish_ignoring_roles(&s.consumer).await;
    let catalog = s
        .both
        .admin(LocalRole::Admin)
        .await
        .peer_catalog(liutong_proto::v1::PeerCatalogRequest {
            address: s.consumer.peer_addr().to_string(),
            page_size: 0,
            page_token: String::new(),
        })
        .await
        .expect("the hostile node's catalog")
        .into_inner();
    assert_eq!(
        catalog.offers.len(),
        1,
        "the offer is there to be asked for"
    );
    let err = s
        .both
        .request_contract(&s.consumer, &hostile, "publicService")
        .await
        .unwrap_err();
    assert_refused(
        &err,
        Code::PermissionDenied,
        &needs("offering a product", "provider", &consumer_id, "consumer"),
    );
    assert!(s.both.running.node.contracts.list().unwrap().is_empty());
    assert!(s.consumer.running.node.contracts.list().unwrap().is_empty());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_the_provider_role_answers_no_contract_request() {
    let s = Space::start().await;
    let consumer_id = s.consumer.participant.to_string();
    let hostile = publish_ignoring_roles(&s.consumer).await;
    // Sent a signed request directly (as a consumer that skips its own check would), the
    // node refuses itself: answering a request needs `provider`.
    let request = signed_request(&s.both, &s.consumer, &hostile, "b");
    let err = NegotiationClient::new(s.both.channel_to(&s.consumer).await)
        .request(NegotiationRequest {
            request: Some(request.into()),
        })
        .await
        .unwrap_err();
    assert_refused(
        &err,
        Code::PermissionDenied,
        &needs(
            "answering a contract request",
            "provider",
            &consumer_id,
            "consumer",
        ),
    );
    assert!(s.consumer.running.node.contracts.list().unwrap().is_empty());
    assert!(
        entries_about(
            &s.consumer,
            &s.both.participant.to_string(),
            &["policy_decision", "negotiation_state_changed"]
        )
        .is_empty()
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_provider_role_was_withdrawn_offers_nothing_more() {
    let s = Space::start().await;
    let both_id = s.both.participant.to_string();
    let offer = publish(
        &s.both,
        CSV,
        "Road traffic flow",
        "general-2",
        "csv",
        POLICY,
    )
    .await
    .expect("a provider publishes")
    .offer_id;
    let agreed = s
        .consumer
        .request_contract(&s.both, &offer, "publicService")
        .await
        .expect("agreed while it was a provider");
    assert_eq!(agreed.state, "FINALIZED", "{agreed:?}");
    // The authority re-admits the member as a consumer only; the node learns it from
    // its next trust list, before anyone installs the new admission.
    let mut withdrawn = DataSpace::admission(LOGISTICS, "both", ParticipantKind::Government);
    withdrawn.roles = vec![MemberRole::Consumer];
    withdrawn.renew = true;
    s.space.admit(withdrawn);
    refresh_all(&[&s.both, &s.consumer]).await;

    let err = publish(&s.both, CSV, "Air quality", "general-2", "csv", POLICY)
        .await
        .unwrap_err();
    assert_refused(
        &err,
        Code::PermissionDenied,
        &needs("publishing a product", "provider", &both_id, "consumer"),
    );
    assert_eq!(
        s.both.running.node.catalog.products.list().unwrap().len(),
        1,
        "nothing more was stored"
    );
    // A consumer that reaches it anyway (this channel does not check the server's
    // certificate against the trust list) gets no contract.
    let request = signed_request(&s.consumer, &s.both, &offer, "c");
    let err = NegotiationClient::new(s.consumer.channel_to(&s.both).await)
        .request(NegotiationRequest {
            request: Some(request.into()),
        })
        .await
        .unwrap_err();
    assert_refused(
        &err,
        Code::PermissionDenied,
        &needs(
            "answering a contract request",
            "provider",
            &both_id,
            "consumer",
        ),
    );
    assert_eq!(
        s.both.running.node.contracts.list().unwrap().len(),
        1,
        "no negotiation besides the earlier one"
    );

    // Its consumer asks it for nothing more under the earlier agreement.
    let err = s.consumer.pull_all(&agreed.agreement_id).await.unwrap_err();
    assert_refused(
        &err,
        Code::PermissionDenied,
        &needs("delivering a product", "provider", &both_id, "consumer"),
    );
    assert!(
        s.consumer
            .running
            .node
            .transfers
            .copies()
            .unwrap()
            .is_empty()
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_does_what_it_was_admitted_for() {
    let s = Space::start().await;
    // A provider-only member publishes; a consumer-only member browses, negotiates to
    // FINALIZED and pulls the copy.
    let offer = publish(
        &s.provider,
        CSV,
        "Road traffic flow",
        "general-2",
        "csv",
        POLICY,
    )
    .await
    .expect("a provider publishes")
    .offer_id;
    let offers = CatalogClient::new(s.consumer.channel_to(&s.provider).await)
        .list(ListOffersRequest::default())
        .await
        .expect("a consumer lists the catalog")
        .into_inner()
        .offers;
    assert_eq!(offers.len(), 1);
    let agreement = s
        .consumer
        .agree_and_pull(&s.provider, &offer, "publicService")
        .await;
    // The consumer's receipt reaches the provider (Transfer.Receipt needs `consumer`).
    let provider = &s.provider;
    let confirmed = wait_until(Duration::from_secs(15), || {
        let agreement = agreement.clone();
        async move {
            provider.audit_events().iter().any(|e| {
                e["kind"] == "transfer"
                    && e["agreement"] == agreement.as_str()
                    && e["detail"].as_str().unwrap().contains("receipt")
            })
        }
    })
    .await;
    assert!(confirmed, "the provider logged the consumer's receipt");

    // The provider revokes; the consumer asks it for revocations, applies this one (it
    // comes from a member holding `provider`) and returns a signed deletion receipt.
    provider
        .usage(LocalRole::Admin)
        .await
        .revoke(RevokeRequest {
            agreement_id: agreement.clone(),
            reason: "figures withdrawn".into(),
        })
        .await
        .expect("the provider revokes");
    let consumer = s.consumer.participant.to_string();
    let deleted = wait_until(Duration::from_secs(30), || {
        let (agreement, consumer) = (agreement.clone(), consumer.clone());
        async move {
            provider
                .running
                .node
                .usage
                .revocation_of(&consumer, &agreement)
                .unwrap()
                .is_some_and(|r| r.deletion_receipt.is_some())
        }
    })
    .await;
    assert!(deleted, "the consumer returned its deletion receipt");

    // The same signed revocation, from a member the consumer's trust list did not list
    // as a provider, is not applied.
    let record = provider
        .running
        .node
        .usage
        .revocation_of(&consumer, &agreement)
        .unwrap()
        .expect("the revocation is on record");
    let mut not_a_provider = s
        .consumer
        .running
        .node
        .trust
        .member(
            &provider.participant,
            time::OffsetDateTime::now_utc().unix_timestamp(),
        )
        .unwrap();
    not_a_provider.roles = vec![MemberRole::Consumer];
    let err = s
        .consumer
        .running
        .node
        .usage
        .apply_revocation(&not_a_provider, record.revocation)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        needs(
            "revoking an agreement",
            "provider",
            provider.participant.as_str(),
            "consumer"
        )
    );

    // An auditor-only member reads the provider's log.
    let entries = AuditClient::new(s.auditor.channel_to(&s.provider).await)
        .get_entries(GetEntriesRequest { from: 0, to: 10 })
        .await
        .expect("an auditor reads entries")
        .into_inner()
        .entries;
    assert!(!entries.is_empty());
    s.stop().await;
}
