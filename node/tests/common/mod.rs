//! A data space in one test process: a real authority serving its trust list over
//! mutual TLS on a loopback port, and real nodes with their own temporary directories
//! and sled databases, each on loopback ports chosen by the OS.
#![allow(dead_code)] // each test file uses a different part of this harness

#[path = "../process/mod.rs"]
pub mod process;

#[path = "../postgres/mod.rs"]
pub mod postgres;

pub use process::assert_no_private_key;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use liutong_node::authority::{self, Admission, Authority, RunningAuthority};
use liutong_node::config::NodeConfig;
use liutong_node::identity::{MemberRole, ParticipantId, ParticipantKind, RegionCode};
use liutong_node::local::{self, LocalRole};
use liutong_node::runtime::RunningNode;
use liutong_node::setup::{self, InitOptions, JoinOptions};
use liutong_node::tls::{self, ExpectedServer, TlsIdentity};
use liutong_proto::v1::admin_client::AdminClient;
use liutong_proto::v1::node_client::NodeClient;
use liutong_proto::v1::transfer_client::TransferClient;
use liutong_proto::v1::{Contract, PullTransferRequest, RequestContractRequest, TransferProgress};
use tempfile::TempDir;
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio_stream::StreamExt as _;
use tonic::Status;
use tonic::transport::Channel;

pub const TRANSPORT: &str = "11330100MA2TRA0011";
pub const ECOLOGY: &str = "11330000MA2ECE0015";
pub const LOGISTICS: &str = "91330100MA2L0G0013";
pub const ROGUE: &str = "91330100MA2R0GE01F";

/// Whether the suite's provider (the transport bureau's node) keeps its database in
/// PostgreSQL: `LIUTONG_TEST_STORAGE=postgres`, in a throwaway cluster of this test
/// binary, one database per node. Otherwise every node is on sled.
pub fn provider_on_postgres() -> bool {
    match std::env::var("LIUTONG_TEST_STORAGE").as_deref() {
        Ok("postgres") => true,
        Ok("sled") | Err(_) => false,
        Ok(other) => panic!("LIUTONG_TEST_STORAGE={other:?}: use sled or postgres"),
    }
}

pub struct DataSpace {
    pub dir: TempDir,
    pub authority_dir: PathBuf,
    pub authority: RunningAuthority,
}

pub struct TestNode {
    pub running: RunningNode,
    pub config: NodeConfig,
    /// The node's own certificate, for calling peers directly.
    pub identity: TlsIdentity,
    pub participant: ParticipantId,
}

/// The participant a bundle admits, from its manifest.
fn bundle_participant(bundle: &std::path::Path) -> ParticipantId {
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(bundle.join("bundle.json")).expect("bundle manifest"),
    )
    .unwrap();
    ParticipantId::parse(manifest["participant_id"].as_str().unwrap()).unwrap()
}

impl DataSpace {
    /// An authority named "Test Data Space", serving on a loopback port.
    pub async fn start() -> Self {
        tls::install_default_provider();
        let dir = tempfile::tempdir().expect("temp dir");
        let authority_dir = dir.path().join("authority");
        Authority::init(&authority_dir, "Test Data Space").expect("authority init");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let authority = authority::serve(
            &authority_dir,
            listener,
            authority::DEFAULT_TRUST_LIST_VALIDITY,
        )
        .await
        .expect("authority serves");
        Self {
            dir,
            authority_dir,
            authority,
        }
    }

    pub fn admission(id: &str, name: &str, kind: ParticipantKind) -> Admission {
        let now = OffsetDateTime::now_utc();
        Admission {
            participant: ParticipantId::parse(id).expect("test IDs are valid"),
            name: name.into(),
            kind,
            sector: "transport".into(),
            region: RegionCode::parse("330100").expect("valid region"),
            roles: vec![MemberRole::Provider, MemberRole::Consumer],
            not_before: now - time::Duration::minutes(5),
            not_after: now + time::Duration::days(30),
            renew: false,
        }
    }

    /// Where the member's node made its keys and its admission request.
    pub fn member_dir(&self, participant: &ParticipantId) -> PathBuf {
        self.dir.path().join(format!("member-{participant}"))
    }

    /// The member's node makes its keys and request (`liutong join`, by the names
    /// `localhost`, 127.0.0.1 and ::1); the authority admits it from that request and
    /// writes its bundle. Returns the bundle directory, checked to hold no private key.
    pub fn admit(&self, admission: Admission) -> PathBuf {
        let mut out = self
            .dir
            .path()
            .join(format!("bundle-{}", admission.participant));
        // A renewal's bundle goes beside the first.
        for n in 2.. {
            if !out.exists() {
                break;
            }
            out = self
                .dir
                .path()
                .join(format!("bundle-{}-{n}", admission.participant));
        }
        let joined = setup::join(&JoinOptions {
            dir: self.member_dir(&admission.participant),
            participant: admission.participant.clone(),
            dns: vec!["localhost".into()],
            ips: vec!["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()],
            hsm: None,
        })
        .expect("join");
        let mut a = Authority::open(&self.authority_dir).expect("open authority");
        a.admit(admission, &joined.request)
            .expect("admit")
            .write(&out)
            .expect("write bundle");
        assert_no_private_key(&out);
        out
    }

    /// A member of `other` (another authority): its node's TLS identity, made through
    /// the same request as any member's.
    pub fn identity_from(&self, other: &mut Authority, admission: Admission) -> TlsIdentity {
        let dir = self
            .dir
            .path()
            .join(format!("foreign-{}", admission.participant));
        let joined = setup::join(&JoinOptions {
            dir: dir.clone(),
            participant: admission.participant.clone(),
            dns: vec![],
            ips: vec![],
            hsm: None,
        })
        .expect("join");
        let bundle = other.admit(admission, &joined.request).expect("admit");
        let key = std::fs::read_to_string(dir.join("identity/node.key")).unwrap();
        TlsIdentity::from_pem(&bundle.certificate.cert_pem, &key).unwrap()
    }

    /// The TLS identity a bundle's member presents: the bundle's certificate and the
    /// key its node made.
    pub fn identity_of(&self, bundle: &std::path::Path) -> TlsIdentity {
        let key = self
            .member_dir(&bundle_participant(bundle))
            .join("identity/node.key");
        TlsIdentity::load(&bundle.join("node.crt"), &key).expect("member identity")
    }

    /// Sets `dir` up as a node from `bundle`, with the keys its member's node made.
    pub fn init_from_bundle(&self, bundle: &std::path::Path, mut opts: InitOptions) -> PathBuf {
        // The test's node directory stands for the member's machine: its keys move there.
        let from = self
            .member_dir(&bundle_participant(bundle))
            .join("identity");
        let to = opts.dir.join("identity");
        std::fs::create_dir_all(&to).unwrap();
        for f in ["node.key", "signing.key"] {
            std::fs::copy(from.join(f), to.join(f)).expect("copy member key");
        }
        opts.bundle = bundle.to_owned();
        let config_path = setup::init_node(&opts).expect("init node");
        if bundle_participant(bundle).as_str() == TRANSPORT && provider_on_postgres() {
            let mut config = NodeConfig::load(&config_path).expect("load config");
            let cluster = postgres::shared();
            let db = cluster.database();
            config.storage = liutong_node::config::StorageSection {
                engine: liutong_node::config::StorageEngine::Postgres,
                url: Some(db.url),
                password_env: None,
                password_file: Some(cluster.password_file(&opts.dir)),
                password: None,
                ..Default::default()
            };
            std::fs::write(&config_path, config.to_commented_toml()).expect("write node.toml");
        }
        config_path
    }

    pub fn revoke(&self, id: &str, reason: &str) {
        let mut a = Authority::open(&self.authority_dir).expect("open authority");
        a.revoke(
            &ParticipantId::parse(id).unwrap(),
            reason,
            OffsetDateTime::now_utc().unix_timestamp(),
        )
        .expect("revoke");
    }

    /// Admits a member and starts its node.
    pub async fn node(&self, id: &str, name: &str, refresh: Duration) -> TestNode {
        let bundle = self.admit(Self::admission(id, name, ParticipantKind::Government));
        self.node_from_bundle(&bundle, name, refresh).await
    }

    pub async fn node_from_bundle(
        &self,
        bundle: &std::path::Path,
        name: &str,
        refresh: Duration,
    ) -> TestNode {
        let peer = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dir = self.dir.path().join(format!("node-{name}"));
        let config_path = self.init_from_bundle(
            bundle,
            InitOptions {
                dir,
                bundle: bundle.to_owned(),
                listen: peer.local_addr().unwrap(),
                admin_listen: admin.local_addr().unwrap(),
                authority: self.authority.addr.to_string(),
                force: false,
                important_regions: vec![RegionCode::parse("330000").unwrap()],
                development: None,
            },
        );
        let mut config = NodeConfig::load(&config_path).expect("load config");
        config.authority.refresh_interval = refresh;
        let identity = TlsIdentity::load(
            &config.identity_dir().join("node.crt"),
            &config.identity_dir().join("node.key"),
        )
        .unwrap();
        let participant = config.node.participant.clone();
        let running = RunningNode::start_with_listeners(config.clone(), peer, admin)
            .await
            .expect("node starts");
        TestNode {
            running,
            config,
            identity,
            participant,
        }
    }
}

impl TestNode {
    pub fn peer_addr(&self) -> SocketAddr {
        self.running.peer_addr()
    }

    pub async fn admin(&self, role: LocalRole) -> AdminClient<Channel> {
        AdminClient::new(local::connect(&self.config, role).await.expect("local API"))
    }

    /// The data-space CA, as this node trusts it.
    pub fn roots(&self) -> rustls::RootCertStore {
        tls::load_roots(&self.config.identity_dir().join("ca.crt")).unwrap()
    }
}

/// A channel to a node's peer API presenting `identity` (or no certificate), checking
/// only that the server chains to `roots` and names a participant.
pub async fn peer_channel(
    addr: SocketAddr,
    identity: Option<&TlsIdentity>,
    roots: rustls::RootCertStore,
) -> Channel {
    let config = tls::client_config(
        identity,
        roots,
        ExpectedServer::Member(Arc::new(|_, _| Ok(()))),
    )
    .expect("client config");
    tls::connect(&addr.to_string(), config)
        .await
        .expect("connect")
}

pub async fn node_client(
    addr: SocketAddr,
    identity: Option<&TlsIdentity>,
    roots: rustls::RootCertStore,
) -> NodeClient<Channel> {
    NodeClient::new(peer_channel(addr, identity, roots).await)
}

/// Asserts that `err` has gRPC status `code` and a message containing `expected`.
#[track_caller]
pub fn assert_refused(err: &Status, code: tonic::Code, expected: &str) {
    assert_eq!(err.code(), code, "{err:?}");
    assert!(err.message().contains(expected), "{}", err.message());
}

/// Asserts that a command exited 0, showing its standard error otherwise.
#[track_caller]
pub fn assert_succeeded(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Polls `check` until it returns true or `limit` passes; no fixed sleeps in tests.
pub async fn wait_until<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Publishes `data` through the node's local API as admin.
pub async fn publish(
    node: &TestNode,
    data: &[u8],
    title: &str,
    classification: &str,
    format: &str,
    policy: &str,
) -> Result<liutong_proto::v1::Product, tonic::Status> {
    let messages = liutong_node::catalog::publish_messages(
        liutong_proto::v1::PublishMetadata {
            product_id: String::new(),
            title: title.into(),
            description: format!("{title}, for tests"),
            classification: classification.into(),
            format: format.into(),
            policy: policy.into(),
            policy_format: String::new(),
            derived_from: vec![],
        },
        data,
    );
    node.admin(LocalRole::Admin)
        .await
        .publish_product(tokio_stream::iter(messages))
        .await
        .map(tonic::Response::into_inner)
}

impl DataSpace {
    /// Admits a member with these attributes and starts its node.
    pub async fn node_as(&self, admission: Admission, name: &str) -> TestNode {
        let bundle = self.admit(admission);
        self.node_from_bundle(&bundle, name, Duration::from_secs(3600))
            .await
    }
}

/// Refreshes every node's trust list, so each knows all members admitted so far.
pub async fn refresh_all(nodes: &[&TestNode]) {
    for n in nodes {
        n.admin(LocalRole::Admin)
            .await
            .refresh_trust_list(liutong_proto::v1::RefreshTrustListRequest {})
            .await
            .expect("refresh");
    }
}

impl DataSpace {
    /// Admits a member with `roles` and starts its node with `edit` applied to its
    /// configuration (e.g. audit witnesses).
    pub async fn node_with(
        &self,
        id: &str,
        name: &str,
        roles: &[MemberRole],
        edit: impl FnOnce(&mut NodeConfig),
    ) -> TestNode {
        let mut admission = Self::admission(id, name, ParticipantKind::Government);
        admission.roles = roles.to_vec();
        let bundle = self.admit(admission);
        let peer = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let config_path = self.init_from_bundle(
            &bundle,
            InitOptions {
                dir: self.dir.path().join(format!("node-{name}")),
                bundle: bundle.clone(),
                listen: peer.local_addr().unwrap(),
                admin_listen: admin.local_addr().unwrap(),
                authority: self.authority.addr.to_string(),
                force: false,
                important_regions: vec![RegionCode::parse("330000").unwrap()],
                development: None,
            },
        );
        let mut config = NodeConfig::load(&config_path).expect("load config");
        config.authority.refresh_interval = Duration::from_secs(3600);
        edit(&mut config);
        // Later commands (the CLI) read the same settings from the file.
        std::fs::write(&config_path, config.to_commented_toml()).expect("write node.toml");
        let identity = TlsIdentity::load(
            &config.identity_dir().join("node.crt"),
            &config.identity_dir().join("node.key"),
        )
        .unwrap();
        let participant = config.node.participant.clone();
        let running = RunningNode::start_with_listeners(config.clone(), peer, admin)
            .await
            .expect("node starts");
        TestNode {
            running,
            config,
            identity,
            participant,
        }
    }
}

impl TestNode {
    /// The path of the node's node.toml.
    pub fn config_path(&self) -> PathBuf {
        self.config.base_dir.join("node.toml")
    }
}

impl TestNode {
    /// Stops the node gracefully and starts it again with the same configuration, data
    /// and addresses (waiting for the ports and the database to be released).
    pub async fn restart(self) -> TestNode {
        let TestNode {
            running,
            config,
            identity,
            participant,
        } = self;
        running.shutdown().await.expect("clean shutdown");
        TestNode {
            running: start_again(&config).await,
            config,
            identity,
            participant,
        }
    }

    /// Stops the node gracefully; `StoppedNode::start` starts it again.
    pub async fn stop(self) -> StoppedNode {
        self.running.shutdown().await.expect("clean shutdown");
        StoppedNode {
            config: self.config,
            identity: self.identity,
            participant: self.participant,
        }
    }

    /// The node's `liutong.v1.Usage` service with the client certificate of `role`.
    pub async fn usage(
        &self,
        role: LocalRole,
    ) -> liutong_proto::v1::usage_client::UsageClient<Channel> {
        liutong_proto::v1::usage_client::UsageClient::new(
            local::connect(&self.config, role).await.expect("local API"),
        )
    }
}

/// A node that was stopped, with everything needed to start it again.
pub struct StoppedNode {
    pub config: NodeConfig,
    pub identity: TlsIdentity,
    pub participant: ParticipantId,
}

impl StoppedNode {
    /// The path of the node's node.toml.
    pub fn config_path(&self) -> PathBuf {
        self.config.base_dir.join("node.toml")
    }

    pub async fn start(self) -> TestNode {
        TestNode {
            running: start_again(&self.config).await,
            config: self.config,
            identity: self.identity,
            participant: self.participant,
        }
    }
}

async fn start_again(config: &NodeConfig) -> RunningNode {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match RunningNode::start(config.clone()).await {
            Ok(running) => return running,
            // The ports, and the database of the stopped node (released once its last
            // connection task ends), may take a moment to be free again.
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::debug!(error = %e, "node not restarted yet");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("the node does not start again: {e}"),
        }
    }
}

impl DataSpace {
    /// Three members that know each other: the transport bureau (government), the
    /// ecology bureau (government, sector "ecology") and a logistics company
    /// (enterprise, sector "logistics", region 330106).
    pub async fn transport_ecology_logistics(&self) -> (TestNode, TestNode, TestNode) {
        let mut ecology = Self::admission(
            ECOLOGY,
            "Hangzhou Ecology Bureau",
            ParticipantKind::Government,
        );
        ecology.sector = "ecology".into();
        let mut logistics = Self::admission(
            LOGISTICS,
            "Hangzhou Logistics Co.",
            ParticipantKind::Enterprise,
        );
        logistics.sector = "logistics".into();
        logistics.region = RegionCode::parse("330106").unwrap();
        let ecology_bundle = self.admit(ecology);
        let logistics_bundle = self.admit(logistics);
        let transport = self
            .node(TRANSPORT, "transport", Duration::from_secs(3600))
            .await;
        let ecology = self
            .node_from_bundle(&ecology_bundle, "ecology", Duration::from_secs(3600))
            .await;
        let logistics = self
            .node_from_bundle(&logistics_bundle, "logistics", Duration::from_secs(3600))
            .await;
        refresh_all(&[&transport, &ecology, &logistics]).await;
        (transport, ecology, logistics)
    }
}

impl TestNode {
    /// A channel to `target`'s peer API presenting this node's certificate.
    pub async fn channel_to(&self, target: &TestNode) -> Channel {
        peer_channel(target.peer_addr(), Some(&self.identity), self.roots()).await
    }

    /// `provider`'s transfer service, called directly as this node (not through this
    /// node's admin API).
    pub async fn direct_transfer_client(&self, provider: &TestNode) -> TransferClient<Channel> {
        TransferClient::new(self.channel_to(provider).await)
    }

    /// Requests a contract for `offer` at `provider` through this node's admin API.
    pub async fn request_contract(
        &self,
        provider: &TestNode,
        offer: &str,
        purpose: &str,
    ) -> Result<Contract, Status> {
        self.admin(LocalRole::Admin)
            .await
            .request_contract(RequestContractRequest {
                peer: provider.peer_addr().to_string(),
                offer_id: offer.into(),
                purpose: purpose.into(),
            })
            .await
            .map(tonic::Response::into_inner)
    }

    /// Pulls the transfer of `agreement` through this node's admin API, at most
    /// `max_chunks` chunks (0: all); returns the last progress reported.
    pub async fn pull(&self, agreement: &str, max_chunks: u32) -> Result<TransferProgress, Status> {
        let mut stream = self
            .admin(LocalRole::Admin)
            .await
            .pull_transfer(PullTransferRequest {
                agreement_id: agreement.into(),
                max_chunks,
                peer: String::new(),
            })
            .await?
            .into_inner();
        let mut last = None;
        while let Some(item) = stream.next().await {
            last = Some(item?);
        }
        last.ok_or_else(|| Status::internal("no progress"))
    }

    /// Asks `provider` for `offer_id` for `purpose`, sees the agreement FINALIZED and
    /// pulls the whole copy; returns the agreement ID.
    pub async fn agree_and_pull(
        &self,
        provider: &TestNode,
        offer_id: &str,
        purpose: &str,
    ) -> String {
        let contract = self
            .request_contract(provider, offer_id, purpose)
            .await
            .expect("the contract is agreed");
        assert_eq!(contract.state, "FINALIZED", "{contract:?}");
        let done = self.pull_all(&contract.agreement_id).await.expect("pull");
        assert_eq!(done.state, "COMPLETED", "{done:?}");
        contract.agreement_id
    }

    /// Pulls the whole transfer of `agreement`; returns the last progress reported.
    pub async fn pull_all(&self, agreement: &str) -> Result<TransferProgress, Status> {
        self.pull(agreement, 0).await
    }

    /// Every entry of the node's audit log, as text.
    pub fn audit_texts(&self) -> Vec<String> {
        let audit = &self.running.node.audit;
        (0..audit.size())
            .map(|i| {
                let entry = audit
                    .entry(i)
                    .unwrap()
                    .expect("an entry below the log size");
                String::from_utf8_lossy(&entry).into_owned()
            })
            .collect()
    }

    /// Every entry of the node's audit log, as JSON.
    pub fn audit_events(&self) -> Vec<serde_json::Value> {
        let audit = &self.running.node.audit;
        (0..audit.size())
            .map(|i| {
                let entry = audit
                    .entry(i)
                    .unwrap()
                    .expect("an entry below the log size");
                serde_json::from_slice(&entry).unwrap()
            })
            .collect()
    }
}

/// A data space of two members that both provide and consume: the transport bureau as
/// provider and the ecology bureau as consumer, each running its usage-control duties
/// every 200 ms.
pub struct TwoMembers {
    pub space: DataSpace,
    pub provider: TestNode,
    pub consumer: TestNode,
}

pub async fn two_members() -> TwoMembers {
    const ROLES: &[MemberRole] = &[MemberRole::Provider, MemberRole::Consumer];
    let space = DataSpace::start().await;
    let quick = |c: &mut NodeConfig| c.usage.check_interval = Duration::from_millis(200);
    let provider = space.node_with(TRANSPORT, "transport", ROLES, quick).await;
    let consumer = space.node_with(ECOLOGY, "ecology", ROLES, quick).await;
    refresh_all(&[&provider, &consumer]).await;
    TwoMembers {
        space,
        provider,
        consumer,
    }
}
