//! Transport limits against a hostile member: envelopes padded with signatures and TLS
//! connections that never present a certificate, each driving real nodes over loopback.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use liutong_node::config::NodeConfig;
use liutong_node::contract::{ContractRequest, REQUEST_PAYLOAD_TYPE};
use liutong_node::identity::envelope::Signature;
use liutong_node::identity::{Envelope, MemberRole};
use liutong_node::tls::{self, ExpectedServer};
use liutong_proto::v1::negotiation_client::NegotiationClient;
use liutong_proto::v1::{DescribeRequest, GetNegotiationRequest, NegotiationRequest};
use tokio::io::AsyncReadExt as _;
use tokio::net::TcpStream;
use tonic::Code;

const ROLES: &[MemberRole] = &[MemberRole::Provider, MemberRole::Consumer];

const OPEN_POLICY: &str = r#"
uid = "urn:liutong:policy:open"
type = "set"

[[permission]]
action = "use"
"#;

/// A CSV product of at least `bytes` bytes.
fn csv_of(bytes: usize) -> Vec<u8> {
    let mut data = b"trip,vehicle,minutes\n".to_vec();
    let mut i = 0u64;
    while data.len() < bytes {
        data.extend_from_slice(format!("{i},{},{}\n", i % 9173, i % 97).as_bytes());
        i += 1;
    }
    data
}

async fn provider_and_consumer(
    space: &DataSpace,
    edit: impl FnOnce(&mut NodeConfig),
) -> (TestNode, TestNode) {
    let provider = space.node_with(TRANSPORT, "transport", ROLES, edit).await;
    let consumer = space.node_with(ECOLOGY, "ecology", ROLES, |_| {}).await;
    refresh_all(&[&provider, &consumer]).await;
    (provider, consumer)
}

#[tokio::test]
async fn envelope_padded_with_signatures_is_refused_before_verification() {
    let space = DataSpace::start().await;
    let (provider, consumer) = provider_and_consumer(&space, |_| {}).await;
    let product = publish(
        &provider,
        &csv_of(100),
        "Trips",
        "general-2",
        "csv",
        OPEN_POLICY,
    )
    .await
    .expect("publish");
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let body = ContractRequest {
        negotiation_id: "neg-padded".into(),
        consumer: consumer.participant.clone(),
        provider: provider.participant.clone(),
        offer_id: product.offer_id.clone(),
        purpose: "research".into(),
        nonce: "ab".repeat(16),
        created_at: now,
        expires_at: now + 300,
    };
    let key = &consumer.running.node.identity.signing_key;
    let signed = Envelope::sign_json(REQUEST_PAYLOAD_TYPE, &body, key);

    // 30,000 bogus signatures under the caller's own key ID, the valid one last: a
    // verifier that tried each would spend seconds and then accept it.
    let mut padded = signed.clone();
    let bogus = Signature {
        keyid: key.public_key().key_id(),
        sig: vec![7; 64],
    };
    padded
        .signatures
        .splice(0..0, std::iter::repeat_n(bogus, 30_000));
    let mut client = NegotiationClient::new(consumer.channel_to(&provider).await);
    let err = client
        .request(NegotiationRequest {
            request: Some(padded.into()),
        })
        .await
        .unwrap_err();
    assert_refused(
        &err,
        Code::InvalidArgument,
        "request.signatures: 30001 signatures, at most 4 are accepted",
    );

    // Nothing of it was kept: the provider does not know the negotiation.
    assert!(
        provider
            .running
            .node
            .contracts
            .get("neg-padded")
            .unwrap()
            .is_none()
    );
    let err = client
        .get(GetNegotiationRequest {
            negotiation_id: "neg-padded".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");

    // The same request with its one signature is agreed: the refusal was the padding's
    // alone, and neither its ID nor its nonce was used up.
    let agreed = client
        .request(NegotiationRequest {
            request: Some(signed.into()),
        })
        .await
        .expect("the request with one signature")
        .into_inner();
    assert_eq!(agreed.negotiation_id, "neg-padded");
    assert_eq!(agreed.state, "AGREED", "{agreed:?}");
}

/// A channel to `addr` presenting `identity`, counting how many connections it opens.
async fn counted_channel(
    addr: std::net::SocketAddr,
    identity: &tls::TlsIdentity,
    roots: rustls::RootCertStore,
    opened: Arc<AtomicUsize>,
) -> tonic::transport::Channel {
    let config = tls::client_config(
        Some(identity),
        roots,
        ExpectedServer::Member(Arc::new(|_, _| Ok(()))),
    )
    .unwrap();
    let connector = tokio_rustls::TlsConnector::from(config);
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_: http::Uri| {
            let (connector, opened) = (connector.clone(), opened.clone());
            async move {
                opened.fetch_add(1, Ordering::SeqCst);
                let tcp = TcpStream::connect(addr).await?;
                let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
                let tls = connector.connect(name, tcp).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
            }
        }))
        .await
        .expect("connect")
}

#[tokio::test]
async fn connections_without_a_certificate_are_closed() {
    let space = DataSpace::start().await;
    let (provider, consumer) = provider_and_consumer(&space, |c| {
        c.limits.no_certificate_timeout = Duration::from_secs(1);
    })
    .await;
    let addr = provider.peer_addr();

    // A member's connection, opened first and then left idle.
    let opened = Arc::new(AtomicUsize::new(0));
    let channel = counted_channel(addr, &consumer.identity, consumer.roots(), opened.clone()).await;
    let mut node = liutong_proto::v1::node_client::NodeClient::new(channel);
    node.describe(DescribeRequest {}).await.expect("describe");

    // 200 TLS connections that complete the handshake without a certificate and then
    // say nothing.
    let anonymous = tls::client_config(
        None,
        provider.roots(),
        ExpectedServer::Member(Arc::new(|_, _| Ok(()))),
    )
    .unwrap();
    let connector = tokio_rustls::TlsConnector::from(anonymous);
    let mut silent = Vec::new();
    for _ in 0..200 {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        silent.push(connector.connect(name, tcp).await.expect("TLS handshake"));
    }

    // Each is closed by the node: reading it ends (EOF or an error) before the deadline.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut readers = tokio::task::JoinSet::new();
    for mut tls in silent {
        readers.spawn(async move {
            let mut buf = [0u8; 4096];
            loop {
                match tokio::time::timeout_at(deadline, tls.read(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => return true,
                    Ok(Ok(_)) => {} // the server's HTTP/2 settings
                    Err(_) => return false,
                }
            }
        });
    }
    let mut closed = 0;
    while let Some(r) = readers.join_next().await {
        closed += usize::from(r.unwrap());
    }
    assert_eq!(closed, 200, "connections without a certificate left open");

    // The member's idle connection outlived them: it answers without reconnecting.
    node.describe(DescribeRequest {})
        .await
        .expect("describe again");
    assert_eq!(
        opened.load(Ordering::SeqCst),
        1,
        "the member's connection was closed"
    );
}
