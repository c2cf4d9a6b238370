//! A data space of real nodes for the benchmarks: an authority on loopback, a provider
//! and consumers admitted by it, each node with its own sled database in a temporary
//! directory, serving the peer API over mutual TLS.

use liutong_node::authority::{self, Admission, Authority};
use liutong_node::catalog::product::{Format, NewVersion, ProductVersion};
use liutong_node::config::NodeConfig;
use liutong_node::identity::{MemberRole, ParticipantId, ParticipantKind, RegionCode};
use liutong_node::runtime::RunningNode;
use liutong_node::setup::{self, InitOptions};
use tokio::net::TcpListener;

/// An offer any member may use.
pub const OPEN_POLICY: &str =
    "uid = \"urn:liutong:policy:bench\"\ntype = \"set\"\n\n[[permission]]\naction = \"use\"\n";

/// The running nodes (the provider first) and what they need to keep running.
pub struct DataSpace {
    pub dir: tempfile::TempDir,
    pub nodes: Vec<(RunningNode, NodeConfig)>,
    /// Each node's `node.toml`, in the order of `nodes`.
    pub config_paths: Vec<std::path::PathBuf>,
    pub authority: authority::RunningAuthority,
}

/// A data space with one provider and `consumers` consumers, all started, each with
/// the current trust list.
pub async fn data_space(consumers: usize) -> DataSpace {
    data_space_with(consumers, |_| {}).await
}

/// [`data_space`], with `configure` applied to every node's configuration.
pub async fn data_space_with(consumers: usize, configure: fn(&mut NodeConfig)) -> DataSpace {
    let dir = tempfile::tempdir().expect("temp dir");
    let running = serve_authority(dir.path()).await;
    let mut ids = vec!["11330100MA2TRA0011".to_owned()];
    for i in 0..consumers {
        let prefix = format!("91330100MA2C{:04}0", i);
        ids.push(
            ParticipantId::with_check_character(&prefix)
                .unwrap()
                .to_string(),
        );
    }
    let mut nodes = Vec::new();
    let mut config_paths = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let peer = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (mut config, path) = member_node(
            dir.path(),
            &running,
            i,
            id,
            peer.local_addr().unwrap(),
            admin.local_addr().unwrap(),
        );
        configure(&mut config);
        let node = RunningNode::start_with_listeners(config.clone(), peer, admin)
            .await
            .unwrap();
        nodes.push((node, config));
        config_paths.push(path);
    }
    for (node, _) in &nodes {
        node.node.refresh.refresh().await.unwrap();
    }
    DataSpace {
        dir,
        nodes,
        config_paths,
        authority: running,
    }
}

/// The benchmarks' authority, initialised in `base/authority` and serving its trust
/// list on a loopback port.
pub async fn serve_authority(base: &std::path::Path) -> authority::RunningAuthority {
    let adir = base.join("authority");
    Authority::init(&adir, "Bench Data Space").expect("authority");
    authority::serve(
        &adir,
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        authority::DEFAULT_TRUST_LIST_VALIDITY,
    )
    .await
    .expect("serve authority")
}

/// Node `i` of member `id`, admitted by the authority of [`serve_authority`] in `base`
/// and set up in `base/node-{i}` to listen on `listen` and `admin_listen` (not
/// started): its configuration, with the per-member limits lifted, and its node.toml.
pub fn member_node(
    base: &std::path::Path,
    authority: &authority::RunningAuthority,
    i: usize,
    id: &str,
    listen: std::net::SocketAddr,
    admin_listen: std::net::SocketAddr,
) -> (NodeConfig, std::path::PathBuf) {
    let bundle = admit(base, &base.join("authority"), i, id);
    let path = setup::init_node(&InitOptions {
        dir: base.join(format!("node-{i}")),
        bundle,
        listen,
        admin_listen,
        authority: authority.addr.to_string(),
        force: false,
        important_regions: vec![],
        development: None,
    })
    .unwrap();
    let mut config = NodeConfig::load(&path).unwrap();
    // The benchmark measures what a node can do; a node configured for this load
    // lifts the per-member limits (their defaults suit a shared data space).
    config.limits.requests_per_second_per_member = 0;
    config.limits.streams_per_member = 0;
    (config, path)
}

/// Node `i`'s keys and request (in `base/node-{i}`), and its admission bundle as
/// member `id` with both roles; returns the bundle's directory.
fn admit(
    base: &std::path::Path,
    authority_dir: &std::path::Path,
    i: usize,
    id: &str,
) -> std::path::PathBuf {
    let joined = setup::join(&setup::JoinOptions {
        dir: base.join(format!("node-{i}")),
        participant: ParticipantId::parse(id).unwrap(),
        dns: vec!["localhost".into()],
        ips: vec![],
        hsm: None,
    })
    .unwrap();
    let now = time::OffsetDateTime::now_utc();
    let mut a = Authority::open(authority_dir).unwrap();
    let b = a
        .admit(
            Admission {
                participant: ParticipantId::parse(id).unwrap(),
                name: format!("member {id}"),
                kind: ParticipantKind::Government,
                sector: "bench".into(),
                region: RegionCode::parse("330100").unwrap(),
                roles: vec![MemberRole::Provider, MemberRole::Consumer],
                not_before: now - time::Duration::minutes(5),
                not_after: now + time::Duration::days(1),
                renew: false,
            },
            &joined.request,
        )
        .unwrap();
    let out = base.join(format!("bundle-{id}"));
    b.write(&out).unwrap();
    out
}

/// Publishes `size` pseudo-random bytes at `node` as an open offer (directly, not over
/// the API), as the node stores a publish.
pub async fn publish(node: &RunningNode, size: u64) -> ProductVersion {
    let ctx = &node.node;
    let mut upload = ctx
        .catalog
        .products
        .begin(NewVersion {
            product_id: None,
            title: "bench payload".into(),
            description: String::new(),
            owner: ctx.identity.participant_id().clone(),
            classification: liutong_policy::Classification::General2,
            format: Format::Bytes,
            derived_from: vec![],
            policy_odrl: None,
        })
        .unwrap();
    let policy = liutong_node::catalog::parse_policy(OPEN_POLICY, None).unwrap();
    let compiled = ctx
        .catalog
        .offer_policy(
            policy,
            upload.product_id(),
            liutong_policy::Classification::General2,
        )
        .unwrap();
    upload.set_policy_odrl(compiled.policy().to_odrl());
    let block: Vec<u8> = (0..(1u32 << 20))
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let mut left = size;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        upload.write(&block[..n]).unwrap();
        left -= n as u64;
    }
    upload.finish(0).await.unwrap()
}
