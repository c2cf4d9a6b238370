//! Transport limits against a hostile member: envelopes padded with signatures, TLS
//! connections that never present a certificate, and transfer streams that are never
//! read. Each test drives real nodes over loopback; the last one measures a real
//! `liutong serve` process's resident memory.

mod common;
use std::io::BufRead as _;
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::process;
use common::*;
use liutong_node::config::NodeConfig;
use liutong_node::contract::{ContractRequest, REQUEST_PAYLOAD_TYPE};
use liutong_node::identity::envelope::Signature;
use liutong_node::identity::{Envelope, MemberRole};
use liutong_node::tls::{self, ExpectedServer};
use liutong_proto::v1::negotiation_client::NegotiationClient;
use liutong_proto::v1::transfer_client::TransferClient;
use liutong_proto::v1::{DescribeRequest, GetNegotiationRequest, NegotiationRequest, PullRequest};
use tokio::io::AsyncReadExt as _;
use tokio::net::TcpStream;
use tokio_stream::StreamExt as _;
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
    let signed = Envelope::sign_json(REQUEST_PAYLOAD_TYPE, &body, key).unwrap();

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

/// A `liutong serve` process, killed when dropped.
struct Serving(Child);

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Serving {
    /// Starts `liutong serve` on `config` and waits until it says it serves, starting it
    /// again while the ports or the database of the node stopped before are not free.
    fn start(config: &std::path::Path) -> Self {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match Self::try_start(config, deadline) {
                Ok(serving) => return serving,
                Err(said) if Instant::now() < deadline => {
                    eprintln!("liutong serve did not start yet: {said}");
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(said) => panic!("liutong serve did not start serving:\n{said}"),
            }
        }
    }

    fn try_start(config: &std::path::Path, deadline: Instant) -> Result<Self, String> {
        let mut child = process::command(&["serve", "--config", process::arg(config)])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start liutong serve");
        let stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                let _ = tx.send(line);
            }
        });
        let mut serving = Self(child);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.contains("serving:") => break,
                Ok(_) => {}
                Err(_) => {
                    let _ = serving.0.kill();
                    let _ = serving.0.wait();
                    let mut said = String::new();
                    let _ = std::io::Read::read_to_string(&mut stderr, &mut said);
                    return Err(said);
                }
            }
        }
        // Keep draining its output so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in rx {});
        std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
        Ok(serving)
    }

    /// Resident memory of the process, in bytes.
    fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.0.id())).unwrap();
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/<pid>/status");
        kib * 1024
    }

    /// Resident memory once it stops changing by more than 1 MiB between samples
    /// (or after a bounded number of samples).
    async fn settled_rss(&self) -> u64 {
        let mut last = self.rss();
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let now = self.rss();
            if now.abs_diff(last) < (1 << 20) {
                return now;
            }
            last = now;
        }
        last
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_streams_that_are_never_read_keep_memory_bounded() {
    const STREAMS: usize = 200;
    const PER_CONNECTION: u32 = 32;
    let space = DataSpace::start().await;
    let (provider, consumer) = provider_and_consumer(&space, |c| {
        c.limits.max_concurrent_streams = PER_CONNECTION;
    })
    .await;
    // 16 chunks of 1 MiB: far more than a stream may hold.
    let product = publish(
        &provider,
        &csv_of((16 << 20) - 4096),
        "Trips",
        "general-2",
        "csv",
        OPEN_POLICY,
    )
    .await
    .expect("publish");
    let contract = consumer
        .request_contract(&provider, &product.offer_id, "research")
        .await
        .expect("agreement");
    assert_eq!(contract.state, "FINALIZED");
    let agreement = contract.agreement_id;

    // The provider again, as its own `liutong serve` process.
    let addr = provider.peer_addr();
    let config_path = provider.config_path();
    let _stopped = provider.stop().await;
    let serving = Serving::start(&config_path);

    let channel = peer_channel(addr, Some(&consumer.identity), consumer.roots()).await;
    let mut client = TransferClient::new(channel.clone());
    // One pull read to its end, so what a delivery allocates once is in the baseline.
    let mut whole = client
        .pull(PullRequest {
            agreement_id: agreement.clone(),
            from_chunk: 0,
        })
        .await
        .expect("pull")
        .into_inner();
    let mut parts = 0;
    while let Some(part) = whole.next().await {
        part.expect("a part of the delivery");
        parts += 1;
    }
    assert_eq!(parts, 17, "the manifest and 16 chunks");
    let before = serving.settled_rss().await;

    // STREAMS pulls on one connection, none of them read.
    let started = Arc::new(AtomicUsize::new(0));
    let mut held = Vec::new();
    for _ in 0..STREAMS {
        let mut client = TransferClient::new(channel.clone());
        let (agreement, started) = (agreement.clone(), started.clone());
        held.push(tokio::spawn(async move {
            // A pull that fails never counts as started.
            let Ok(stream) = client
                .pull(PullRequest {
                    agreement_id: agreement,
                    from_chunk: 0,
                })
                .await
            else {
                return;
            };
            started.fetch_add(1, Ordering::SeqCst);
            // Held open, never read, until the test ends.
            std::future::pending::<()>().await;
            drop(stream);
        }));
    }
    assert!(
        wait_until(Duration::from_secs(60), || {
            let started = started.clone();
            async move { started.load(Ordering::SeqCst) >= PER_CONNECTION as usize }
        })
        .await,
        "the first {PER_CONNECTION} pulls did not start"
    );
    let after = serving.settled_rss().await;

    // Unbounded, each stream held about 8 MiB of chunks queued for the consumer;
    // bounded, about two chunks (the one being sent and the next), plus what the
    // allocator keeps.
    let growth = after.saturating_sub(before);
    eprintln!(
        "provider resident memory: {} MiB before, {} MiB with {STREAMS} unread pulls",
        before >> 20,
        after >> 20
    );
    let bound = u64::from(PER_CONNECTION) * (6 << 20);
    assert!(
        growth < bound,
        "the provider grew by {} MiB for {STREAMS} unread pulls, more than {} MiB",
        growth >> 20,
        bound >> 20
    );
    // Streams over the per-connection limit wait for one to end, as HTTP/2 does.
    assert_eq!(started.load(Ordering::SeqCst), PER_CONNECTION as usize);
    for task in held {
        task.abort();
    }
}
