//! Multi-node tests of the foundation: an authority and three nodes in-process on
//! loopback, calling each other over mutual TLS; every refusal case of the peer API.

mod common;

use std::time::Duration;

use common::*;
use liutong_node::authority::Authority;
use liutong_node::identity::ParticipantKind;
use liutong_node::local::LocalRole;
use liutong_node::tls::{self, ExpectedServer};
use liutong_proto::v1::{
    DescribePeerRequest, DescribeRequest, RefreshTrustListRequest, StatusRequest,
};
use time::OffsetDateTime;
use tonic::Code;

const LONG: Duration = Duration::from_secs(3600);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_describe_each_other_over_mutual_tls() {
    let space = DataSpace::start().await;
    let transport = space.node(TRANSPORT, "transport", LONG).await;
    let ecology = space.node(ECOLOGY, "ecology", LONG).await;
    let logistics = space.node(LOGISTICS, "logistics", LONG).await;
    // Each node fetched the trust list at start, before the later members were
    // admitted; refresh so every node knows all three.
    for n in [&transport, &ecology, &logistics] {
        n.admin(LocalRole::Admin)
            .await
            .refresh_trust_list(RefreshTrustListRequest {})
            .await
            .expect("refresh");
    }
    let nodes = [&transport, &ecology, &logistics];
    for caller in nodes {
        for callee in nodes {
            if std::ptr::eq(caller, callee) {
                continue;
            }
            let answer = caller
                .admin(LocalRole::Admin)
                .await
                .describe_peer(DescribePeerRequest {
                    address: callee.peer_addr().to_string(),
                })
                .await
                .expect("describe peer")
                .into_inner();
            let node = answer.node.unwrap();
            let seen = answer.caller.unwrap();
            assert_eq!(node.participant_id, callee.participant.as_str());
            assert_eq!(seen.participant_id, caller.participant.as_str());
            assert_eq!(seen.region, "330100");
            assert_eq!(seen.kind, "government");
            assert_eq!(answer.trust_list_sequence, 4);
            // The node's credential travels signed by the authority.
            let credential = answer.node_credential.unwrap();
            assert_eq!(
                credential.payload_type,
                "application/vnd.liutong.membership+json"
            );
        }
    }
    // And directly, with the node's own certificate.
    let mut client = node_client(
        ecology.peer_addr(),
        Some(&transport.identity),
        transport.roots(),
    )
    .await;
    let answer = client
        .describe(DescribeRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.caller.unwrap().participant_id, TRANSPORT);

    // A peer whose participant is known (the other party of an agreement) must be that
    // participant: another member at its address is refused, before any call is made.
    let peers = &transport.running.node.peers;
    let Err(refused) = peers
        .connect_member(&ecology.peer_addr().to_string(), &logistics.participant)
        .await
    else {
        panic!("the ecology bureau is not the logistics enterprise");
    };
    assert!(
        refused.to_string().contains(&format!(
            "is {ECOLOGY}, not the expected participant {LOGISTICS}"
        )),
        "{refused}"
    );
    assert!(
        peers
            .connect_member(&ecology.peer_addr().to_string(), &ecology.participant)
            .await
            .is_ok(),
        "the right participant at its address"
    );

    for n in [transport, ecology, logistics] {
        n.running.shutdown().await.expect("clean shutdown");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_without_a_client_certificate_is_unauthenticated() {
    let space = DataSpace::start().await;
    let node = space.node(TRANSPORT, "transport", LONG).await;
    let mut client = node_client(node.peer_addr(), None, node.roots()).await;
    let status = client.describe(DescribeRequest {}).await.unwrap_err();
    assert_refused(&status, Code::Unauthenticated, "no client certificate");

    // Health and reflection are behind the same check.
    let channel = peer_channel(node.peer_addr(), None, node.roots()).await;
    let status = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    node.running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_reflection_answer_members() {
    use tokio_stream::StreamExt as _;
    use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;

    let space = DataSpace::start().await;
    let node = space.node(TRANSPORT, "transport", LONG).await;
    let channel = node.channel_to(&node).await;
    let health = tonic_health::pb::health_client::HealthClient::new(channel.clone())
        .check(tonic_health::pb::HealthCheckRequest {
            service: "liutong.v1.Node".into(),
        })
        .await
        .expect("health")
        .into_inner();
    assert_eq!(
        health.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection v1alpha")
        .into_inner();
    let response = responses.next().await.expect("one answer").expect("ok");
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection answer");
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&"liutong.v1.Node"), "{names:?}");
    assert!(names.contains(&"grpc.health.v1.Health"), "{names:?}");
    node.running.shutdown().await.unwrap();
}

/// What server reflection v1 and v1alpha on `channel` list, each sorted.
async fn reflected_services(channel: tonic::transport::Channel) -> (Vec<String>, Vec<String>) {
    use tokio_stream::StreamExt as _;
    use tonic_reflection::pb::{v1, v1alpha};

    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut answers = v1::server_reflection_client::ServerReflectionClient::new(channel.clone())
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection v1")
        .into_inner();
    let answer = answers.next().await.expect("one answer").expect("ok");
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        answer.message_response
    else {
        panic!("unexpected reflection v1 answer: {answer:?}");
    };
    let mut listed_v1: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    listed_v1.sort();

    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let mut answers = v1alpha::server_reflection_client::ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection v1alpha")
        .into_inner();
    let answer = answers.next().await.expect("one answer").expect("ok");
    let Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        answer.message_response
    else {
        panic!("unexpected reflection v1alpha answer: {answer:?}");
    };
    let mut listed_v1alpha: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    listed_v1alpha.sort();
    (listed_v1, listed_v1alpha)
}

/// The services defined in the files reflection v1 on `channel` returns for `symbol`,
/// or the status it answered with.
async fn services_in_file_of(
    channel: tonic::transport::Channel,
    symbol: &str,
) -> Result<Vec<String>, tonic::Status> {
    use prost::Message as _;
    use tokio_stream::StreamExt as _;
    use tonic_reflection::pb::v1;

    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1::server_reflection_request::MessageRequest::FileContainingSymbol(symbol.into()),
        ),
    };
    let mut answers = v1::server_reflection_client::ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection v1")
        .into_inner();
    // tonic's reflection server answers an unknown symbol with an error status on the
    // stream; the protocol's own ErrorResponse is accepted too.
    let answer = answers.next().await.expect("one answer")?;
    match answer.message_response {
        Some(v1::server_reflection_response::MessageResponse::FileDescriptorResponse(files)) => {
            let mut services = Vec::new();
            for bytes in files.file_descriptor_proto {
                let file = prost_types::FileDescriptorProto::decode(bytes.as_slice()).unwrap();
                for s in &file.service {
                    services.push(format!("{}.{}", file.package(), s.name()));
                }
            }
            Ok(services)
        }
        Some(v1::server_reflection_response::MessageResponse::ErrorResponse(e)) => Err(
            tonic::Status::new(Code::from(e.error_code), e.error_message),
        ),
        other => panic!("unexpected reflection answer: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_port_reflects_exactly_the_services_it_serves() {
    let space = DataSpace::start().await;
    let node = space.node(TRANSPORT, "transport", LONG).await;
    let reflection = [
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ];
    let sorted = |names: &[&str]| {
        let mut names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        names.sort();
        names
    };
    let peer = sorted(
        &[
            "grpc.health.v1.Health",
            "liutong.v1.Node",
            "liutong.v1.Catalog",
            "liutong.v1.Negotiation",
            "liutong.v1.Transfer",
            "liutong.v1.Audit",
            "liutong.v1.Witness",
            "liutong.v1.UsageControl",
            "liutong.v1.Query",
        ]
        .into_iter()
        .chain(reflection)
        .collect::<Vec<_>>(),
    );
    let local = sorted(
        &["liutong.v1.Admin", "liutong.v1.Audit", "liutong.v1.Usage"]
            .into_iter()
            .chain(reflection)
            .collect::<Vec<_>>(),
    );

    let peer_channel = node.channel_to(&node).await;
    let (v1, v1alpha) = reflected_services(peer_channel.clone()).await;
    assert_eq!(v1, peer, "peer API, reflection v1");
    assert_eq!(v1alpha, peer, "peer API, reflection v1alpha");
    let local_channel = liutong_node::local::connect(&node.config, LocalRole::Admin)
        .await
        .expect("local API");
    let (v1, v1alpha) = reflected_services(local_channel.clone()).await;
    assert_eq!(v1, local, "local API, reflection v1");
    assert_eq!(v1alpha, local, "local API, reflection v1alpha");

    // Each listed service can be described, and its file names no service of the
    // other port: the peer port's usage.proto carries UsageControl without Usage.
    for (channel, listed) in [(&peer_channel, &peer), (&local_channel, &local)] {
        for name in listed.iter() {
            let services = services_in_file_of(channel.clone(), name)
                .await
                .unwrap_or_else(|e| panic!("{name}: {e:?}"));
            assert!(services.contains(name), "{name}: {services:?}");
            for s in &services {
                assert!(listed.contains(s), "{s} described beside {name}");
            }
        }
    }
    for symbol in [
        "liutong.v1.Admin",
        "liutong.v1.Authority",
        "liutong.v1.Usage",
    ] {
        let status = services_in_file_of(peer_channel.clone(), symbol)
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::NotFound, "{symbol}: {status:?}");
    }
    for symbol in [
        "liutong.v1.Node",
        "liutong.v1.Authority",
        "grpc.health.v1.Health",
    ] {
        let status = services_in_file_of(local_channel.clone(), symbol)
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::NotFound, "{symbol}: {status:?}");
    }
    node.running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_another_authority_is_unauthenticated() {
    let space = DataSpace::start().await;
    let node = space.node(TRANSPORT, "transport", LONG).await;

    // A second data space admits a participant with the same kind of certificate.
    let other_dir = space.dir.path().join("other-authority");
    let mut other = Authority::init(&other_dir, "Other Data Space").unwrap();
    let identity = space.identity_from(
        &mut other,
        DataSpace::admission(ROGUE, "Rogue Ltd", ParticipantKind::Enterprise),
    );

    let mut client = node_client(node.peer_addr(), Some(&identity), node.roots()).await;
    let status = client.describe(DescribeRequest {}).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(
        status
            .message()
            .contains("not issued by this data space's authority"),
        "{}",
        status.message()
    );
    node.running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_certificate_is_unauthenticated() {
    let space = DataSpace::start().await;
    let node = space.node(TRANSPORT, "transport", LONG).await;
    let mut expired = DataSpace::admission(LOGISTICS, "Logistics Co", ParticipantKind::Enterprise);
    let now = OffsetDateTime::now_utc();
    expired.not_before = now - time::Duration::days(10);
    expired.not_after = now - time::Duration::days(1);
    let bundle_dir = space.admit(expired);
    let identity = space.identity_of(&bundle_dir);

    let mut client = node_client(node.peer_addr(), Some(&identity), node.roots()).await;
    let status = client.describe(DescribeRequest {}).await.unwrap_err();
    assert_refused(&status, Code::Unauthenticated, "expired at");
    node.running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_unknown_to_the_trust_list_is_permission_denied_until_refresh() {
    let space = DataSpace::start().await;
    let transport = space.node(TRANSPORT, "transport", LONG).await;
    // Admitted after the transport node fetched its list.
    let ecology = space.node(ECOLOGY, "ecology", LONG).await;
    let mut client = node_client(
        transport.peer_addr(),
        Some(&ecology.identity),
        ecology.roots(),
    )
    .await;
    let status = client.describe(DescribeRequest {}).await.unwrap_err();
    assert_refused(
        &status,
        Code::PermissionDenied,
        "is not a member in trust list 2",
    );

    transport
        .admin(LocalRole::Admin)
        .await
        .refresh_trust_list(RefreshTrustListRequest {})
        .await
        .unwrap();
    let answer = client
        .describe(DescribeRequest {})
        .await
        .expect("member now")
        .into_inner();
    assert_eq!(answer.caller.unwrap().participant_id, ECOLOGY);
    transport.running.shutdown().await.unwrap();
    ecology.running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_takes_effect_at_the_next_refresh_without_restart() {
    let space = DataSpace::start().await;
    // Both admitted before the provider starts, so its first list knows both.
    let consumer_bundle = space.admit(DataSpace::admission(
        LOGISTICS,
        "Logistics Co",
        ParticipantKind::Enterprise,
    ));
    let provider = space
        .node(TRANSPORT, "transport", Duration::from_millis(200))
        .await;
    let consumer = space
        .node_from_bundle(&consumer_bundle, "logistics", LONG)
        .await;

    let mut client = node_client(
        provider.peer_addr(),
        Some(&consumer.identity),
        consumer.roots(),
    )
    .await;
    client
        .describe(DescribeRequest {})
        .await
        .expect("a member before revocation");

    space.revoke(LOGISTICS, "contract with the data space ended");
    // The provider refreshes every 200 ms on its own; wait for the refusal.
    let refused = wait_until(Duration::from_secs(10), || {
        let mut client = client.clone();
        async move {
            matches!(client.describe(DescribeRequest {}).await,
                Err(s) if s.code() == Code::PermissionDenied)
        }
    })
    .await;
    assert!(refused, "the revoked member was still served after 10 s");
    let status = client.describe(DescribeRequest {}).await.unwrap_err();
    assert!(status.message().contains("revoked"), "{}", status.message());
    assert!(
        status
            .message()
            .contains("contract with the data space ended"),
        "{}",
        status.message()
    );
    // The same node process: no restart happened.
    assert_eq!(provider.running.node.trust.status().revocations, 1);
    // The node logged its start and both trust lists it applied, and the two calls it
    // refused the revoked member.
    let events = provider.audit_events();
    let kinds: Vec<String> = events
        .iter()
        .map(|entry| entry["kind"].as_str().unwrap().to_owned())
        .filter(|kind| kind != "refusal")
        .collect();
    // Refreshes that bring no new sequence are not logged.
    assert_eq!(
        kinds,
        ["node_started", "trust_list_applied", "trust_list_applied"],
        "{kinds:?}"
    );
    let refusals: Vec<&str> = events
        .iter()
        .filter(|entry| entry["kind"] == "refusal")
        .map(|entry| entry["detail"].as_str().unwrap())
        .collect();
    assert_eq!(refusals.len(), 2, "{refusals:?}");
    assert!(
        refusals
            .iter()
            .all(|r| r.contains("PermissionDenied") && r.contains("revoked")),
        "{refusals:?}"
    );
    provider.running.shutdown().await.unwrap();
    consumer.running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolled_back_trust_list_is_refused_and_the_newer_one_kept() {
    let space = DataSpace::start().await;
    let node = space.node(TRANSPORT, "transport", LONG).await;
    let state = space.authority_dir.join("authority.json");
    let old = std::fs::read(&state).unwrap();
    space.admit(DataSpace::admission(
        ECOLOGY,
        "Ecology Bureau",
        ParticipantKind::Government,
    ));
    let mut admin = node.admin(LocalRole::Admin).await;
    let applied = admin
        .refresh_trust_list(RefreshTrustListRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(applied.trust_list.unwrap().sequence, 3);

    // The authority's state goes back (a restored old backup, or an attacker).
    std::fs::write(&state, old).unwrap();
    let status = admin
        .refresh_trust_list(RefreshTrustListRequest {})
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(
        status
            .message()
            .contains("sequence 2 is older than the sequence 3"),
        "{}",
        status.message()
    );
    let now = admin.status(StatusRequest {}).await.unwrap().into_inner();
    let trust = now.trust_list.unwrap();
    assert_eq!(trust.sequence, 3);
    assert!(trust.last_error.contains("older"), "{}", trust.last_error);
    node.running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_api_checks_certificates_and_roles() {
    let space = DataSpace::start().await;
    let node = space.node(TRANSPORT, "transport", LONG).await;

    let status = node
        .admin(LocalRole::App)
        .await
        .status(StatusRequest {})
        .await
        .unwrap();
    assert_eq!(status.into_inner().caller_role, "app");

    let status = node
        .admin(LocalRole::App)
        .await
        .refresh_trust_list(RefreshTrustListRequest {})
        .await
        .unwrap_err();
    assert_refused(
        &status,
        Code::PermissionDenied,
        "needs the local role admin",
    );
    let status = node
        .admin(LocalRole::Auditor)
        .await
        .describe_peer(DescribePeerRequest {
            address: node.peer_addr().to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);

    // The data-space certificate is not a local client certificate.
    let local_roots = tls::load_roots(&node.config.local_dir().join("ca.crt")).unwrap();
    let config = tls::client_config(
        Some(&node.identity),
        local_roots.clone(),
        ExpectedServer::Uri("urn:liutong:local-node".into()),
    )
    .unwrap();
    let channel = tls::connect(&node.running.admin_addr().to_string(), config)
        .await
        .unwrap();
    let status = liutong_proto::v1::admin_client::AdminClient::new(channel)
        .status(StatusRequest {})
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(
        status
            .message()
            .contains("not issued by this node's local client CA"),
        "{}",
        status.message()
    );

    // And no certificate at all.
    let config = tls::client_config(
        None,
        local_roots,
        ExpectedServer::Uri("urn:liutong:local-node".into()),
    )
    .unwrap();
    let channel = tls::connect(&node.running.admin_addr().to_string(), config)
        .await
        .unwrap();
    let status = liutong_proto::v1::admin_client::AdminClient::new(channel)
        .status(StatusRequest {})
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    node.running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_refuses_to_call_a_revoked_peer() {
    let space = DataSpace::start().await;
    let ecology_bundle = space.admit(DataSpace::admission(
        ECOLOGY,
        "Ecology Bureau",
        ParticipantKind::Government,
    ));
    let transport = space.node(TRANSPORT, "transport", LONG).await;
    let ecology = space
        .node_from_bundle(&ecology_bundle, "ecology", LONG)
        .await;
    space.revoke(ECOLOGY, "suspended by the operator");
    let mut admin = transport.admin(LocalRole::Admin).await;
    admin
        .refresh_trust_list(RefreshTrustListRequest {})
        .await
        .unwrap();
    let status = admin
        .describe_peer(DescribePeerRequest {
            address: ecology.peer_addr().to_string(),
        })
        .await
        .unwrap_err();
    assert_refused(&status, Code::Unavailable, "suspended by the operator");
    transport.running.shutdown().await.unwrap();
    ecology.running.shutdown().await.unwrap();
}
