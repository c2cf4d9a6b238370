//! `liutong demo`: a data space on loopback, narrated. A development authority admits a
//! city transport bureau, an ecology and environment bureau and a logistics enterprise;
//! each runs a real node (mutual TLS, its own sled database). Then, step by step:
//! publishing, catalogs filtered by policy, a granted negotiation, a denied one, a
//! request for important data approved by a person, and a verified transfer.
//!
//! Everything goes through the nodes' local APIs, exactly as the `liutong` commands do.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use tokio::net::TcpListener;
use tokio_stream::StreamExt as _;

use crate::authority::{self, Admission, Authority};
use crate::base::clock;
use crate::config::NodeConfig;
use crate::contract::NegotiationStatus;
use crate::identity::{MemberRole, ParticipantId, ParticipantKind, RegionCode};
use crate::local::{self, LocalRole};
use crate::runtime::RunningNode;
use crate::setup::{self, InitOptions, JoinOptions};
use crate::transfer::TransferState;
use liutong_proto::v1::admin_client::AdminClient;
use liutong_proto::v1::{
    ApproveContractRequest, GetContractRequest, PeerCatalogRequest, Product, PublishMetadata,
    PullTransferRequest, RefreshTrustListRequest, RequestContractRequest,
};

struct Member {
    dir_name: &'static str,
    id: &'static str,
    name: &'static str,
    kind: ParticipantKind,
    sector: &'static str,
    region: &'static str,
    /// Only what the member's part in the story needs: the bureau provides, the other
    /// two consume, and none audits another's log.
    roles: &'static [MemberRole],
}

const MEMBERS: [Member; 3] = [
    Member {
        dir_name: "transport",
        id: "11330100MA2TRA0011",
        name: "Hangzhou Transport Bureau",
        kind: ParticipantKind::Government,
        sector: "transport",
        region: "330100",
        roles: &[MemberRole::Provider],
    },
    Member {
        dir_name: "ecology",
        id: "11330000MA2ECE0015",
        name: "Hangzhou Ecology and Environment Bureau",
        kind: ParticipantKind::Government,
        sector: "ecology",
        region: "330100",
        roles: &[MemberRole::Consumer],
    },
    Member {
        dir_name: "logistics",
        id: "91330100MA2L0G0013",
        name: "Qiantang Logistics Co., Ltd.",
        kind: ParticipantKind::Enterprise,
        sector: "logistics",
        region: "330106",
        roles: &[MemberRole::Consumer],
    },
];

const TRAFFIC_POLICY: &str = r#"uid = "urn:liutong:policy:road-traffic"
type = "set"

[[permission]]
action = "use"
constraint = [{ leftOperand = "purpose", operator = "isA", rightOperand = "publicService" }]
duty = [{ action = "log" }]

[[prohibition]]
action = "use"
constraint = [{ leftOperand = "purpose", operator = "isA", rightOperand = "commercial" }]
"#;

const GOVERNMENT_ONLY: &str = r#"uid = "urn:liutong:policy:bus-gps"
type = "set"

[[permission]]
action = "use"
constraint = [{ leftOperand = "recipientKind", operator = "eq", rightOperand = "government" }]
"#;

const IMPORTANT_POLICY: &str = r#"uid = "urn:liutong:policy:od-matrix"
type = "set"

[[permission]]
action = "use"
constraint = [
  { leftOperand = "purpose", operator = "isA", rightOperand = "research" },
  { leftOperand = "region", operator = "isPartOf", rightOperand = "330000" },
]
duty = [{ action = "log" }, { action = "deleteAfter", elapsed = "P90D" }]
"#;

/// Runs the demo; with `dir`, the data space stays there afterwards.
pub async fn run(dir: Option<PathBuf>) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let (_temp, root) = match dir {
        Some(d) => {
            if d.exists() && std::fs::read_dir(&d)?.next().is_some() {
                bail!(
                    "{} exists and is not empty; give the demo a new directory",
                    d.display()
                );
            }
            std::fs::create_dir_all(&d)
                .with_context(|| format!("cannot create {}", d.display()))?;
            (None, d)
        }
        None => {
            let t = tempfile::tempdir().context("cannot create a temporary directory")?;
            let p = t.path().to_owned();
            (Some(t), p)
        }
    };

    step(1, "A data space on loopback");
    let authority_dir = root.join("authority");
    Authority::init(&authority_dir, "Hangzhou Public Data Space (demo)")?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let running_authority = authority::serve(
        &authority_dir,
        listener,
        authority::DEFAULT_TRUST_LIST_VALIDITY,
    )
    .await?;
    say(&format!(
        "the authority \"Hangzhou Public Data Space (demo)\" serves its signed trust list on {}",
        running_authority.addr
    ));
    let mut bundles = Vec::new();
    for m in &MEMBERS {
        // Each member's node makes its own keys and asks; the authority's bundle
        // holds none.
        let joined = setup::join(&JoinOptions {
            dir: root.join(m.dir_name),
            participant: ParticipantId::parse(m.id)?,
            dns: vec!["localhost".into()],
            ips: vec![std::net::IpAddr::from([127, 0, 0, 1])],
            hsm: None,
        })?;
        let now = clock::now_utc();
        let mut a = Authority::open(&authority_dir)?;
        let bundle = a.admit(
            Admission {
                participant: ParticipantId::parse(m.id)?,
                name: m.name.into(),
                kind: m.kind,
                sector: m.sector.into(),
                region: RegionCode::parse(m.region).map_err(|e| anyhow!(e))?,
                roles: m.roles.to_vec(),
                not_before: now - time::Duration::minutes(5),
                not_after: now + time::Duration::days(365),
                renew: false,
            },
            &joined.request,
        )?;
        let out = root.join(format!("bundle-{}", m.dir_name));
        bundle.write(&out)?;
        bundles.push(out);
        let roles: Vec<_> = m.roles.iter().map(ToString::to_string).collect();
        say(&format!(
            "admitted {} ({}, {}, region {}) as {}, from the admission request its node made",
            m.name,
            m.id,
            m.kind.member_name(),
            m.region,
            roles.join(", ")
        ));
    }
    let mut nodes = Vec::new();
    for (m, bundle) in MEMBERS.iter().zip(&bundles) {
        let peer = TcpListener::bind("127.0.0.1:0").await?;
        let admin = TcpListener::bind("127.0.0.1:0").await?;
        let config_path = setup::init_node(&InitOptions {
            dir: root.join(m.dir_name),
            bundle: bundle.clone(),
            listen: peer.local_addr()?,
            admin_listen: admin.local_addr()?,
            authority: running_authority.addr.to_string(),
            force: false,
            important_regions: vec![RegionCode::parse("330000").map_err(|e| anyhow!(e))?],
            development: None,
        })?;
        std::fs::remove_dir_all(bundle)?;
        // Each node also speaks the Dataspace Protocol, on a port of its own, written
        // into node.toml so that the node serves DSP at the same address when it is
        // started again (the port was free a moment ago; the node binds it at once).
        let dsp = TcpListener::bind("127.0.0.1:0").await?.local_addr()?;
        let mut config = NodeConfig::load(&config_path)?;
        config.dsp = Some(crate::config::DspSection::on(dsp));
        // And its web console, likewise on a port of its own.
        let console = TcpListener::bind("127.0.0.1:0").await?.local_addr()?;
        config.console = Some(crate::config::ConsoleSection {
            listen: console,
            ..Default::default()
        });
        crate::base::files::write_private(&config_path, config.to_commented_toml().as_bytes())?;
        let node = RunningNode::start_with_listeners(config.clone(), peer, admin).await?;
        say(&format!(
            "{} runs its node: peer API {}, Dataspace Protocol https://{}, console {}",
            m.name,
            node.peer_addr(),
            node.dsp_addr().expect("DSP is on"),
            crate::console::origin_of(node.console_addr().expect("the console is on"))
        ));
        nodes.push((node, config));
    }
    let admin = |i: usize| {
        let config = nodes[i].1.clone();
        async move {
            Ok::<_, anyhow::Error>(AdminClient::new(
                local::connect(&config, LocalRole::Admin).await?,
            ))
        }
    };
    for i in 0..3 {
        admin(i)
            .await?
            .refresh_trust_list(RefreshTrustListRequest {})
            .await?;
    }
    let transport_addr = nodes[0].0.peer_addr().to_string();

    step(2, "Publishing");
    let traffic = publish(
        &mut admin(0).await?,
        traffic_csv(),
        "Road traffic flow (hourly)",
        "general-2",
        "csv",
        TRAFFIC_POLICY,
    )
    .await?;
    let _bus = publish(
        &mut admin(0).await?,
        bus_csv(),
        "Bus GPS traces",
        "general-3",
        "csv",
        GOVERNMENT_ONLY,
    )
    .await?;
    let od = publish(
        &mut admin(0).await?,
        od_matrix_csv(),
        "Mobility OD matrix (重要数据)",
        "important",
        "csv",
        IMPORTANT_POLICY,
    )
    .await?;
    say("the transport bureau published three products, each with its usage policy:");
    for p in [&traffic, &_bus, &od] {
        say(&format!(
            "  {:<30} {:<10} {:>9} bytes, {} chunk(s), sha256 {}…",
            p.title,
            p.classification,
            p.size,
            p.chunks,
            &p.sha256[..16]
        ));
    }
    say("  (the bus traces are for government recipients only; the OD matrix is important data)");

    step(3, "Browsing catalogs");
    for (i, who) in [(1, "the ecology bureau"), (2, "the logistics enterprise")] {
        let mut client = admin(i).await?;
        let (mut offers, mut page_token) = (Vec::new(), String::new());
        loop {
            let page = client
                .peer_catalog(PeerCatalogRequest {
                    address: transport_addr.clone(),
                    page_size: 0,
                    page_token,
                })
                .await?
                .into_inner();
            offers.extend(page.offers);
            if page.next_page_token.is_empty() {
                break;
            }
            page_token = page.next_page_token;
        }
        let titles: Vec<_> = offers.iter().map(|o| o.title.as_str()).collect();
        say(&format!(
            "{who} sees {} offers: {}",
            offers.len(),
            titles.join(", ")
        ));
    }
    say("the bus traces are invisible to the enterprise: its catalog does not even list them");

    step(4, "A granted negotiation");
    let granted = admin(1)
        .await?
        .request_contract(RequestContractRequest {
            peer: transport_addr.clone(),
            offer_id: traffic.offer_id.clone(),
            purpose: "urbanPlanning".into(),
        })
        .await?
        .into_inner();
    say(&format!(
        "the ecology bureau asks for the road traffic flow, purpose urbanPlanning → {}",
        granted.state
    ));
    say(&format!(
        "agreement {} signed by the provider and countersigned by the consumer; both nodes keep it",
        granted.agreement_id
    ));

    step(5, "A denied negotiation");
    match admin(2)
        .await?
        .request_contract(RequestContractRequest {
            peer: transport_addr.clone(),
            offer_id: traffic.offer_id.clone(),
            purpose: "marketing".into(),
        })
        .await
    {
        Ok(c) => bail!(
            "the marketing request should have been refused, got {}",
            c.get_ref().state
        ),
        Err(status) => {
            say("the logistics enterprise asks for the same data, purpose marketing → TERMINATED");
            say(&format!("  {:?}: {}", status.code(), status.message()));
        }
    }

    step(6, "Important data needs a person's approval");
    let pending = admin(1)
        .await?
        .request_contract(RequestContractRequest {
            peer: transport_addr.clone(),
            offer_id: od.offer_id.clone(),
            purpose: "scientificResearch".into(),
        })
        .await?
        .into_inner();
    say(&format!(
        "the ecology bureau asks for the OD matrix, purpose scientificResearch → {}",
        pending.state
    ));
    say(&format!("  {}", pending.reason));
    say(&format!(
        "a person at the transport bureau runs: liutong contract approve {}",
        pending.negotiation_id
    ));
    admin(0)
        .await?
        .approve_contract(ApproveContractRequest {
            negotiation_id: pending.negotiation_id.clone(),
        })
        .await?;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let approved = loop {
        let c = admin(1)
            .await?
            .get_contract(GetContractRequest {
                negotiation_id: pending.negotiation_id.clone(),
            })
            .await?
            .into_inner();
        if NegotiationStatus::parse(&c.state) == Ok(NegotiationStatus::Finalized) {
            break c;
        }
        if std::time::Instant::now() > deadline {
            bail!(
                "the approved agreement was not finalized in 15 s (state {})",
                c.state
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    say(&format!(
        "the consumer's node saw the approval, verified and countersigned: agreement {} FINALIZED",
        approved.agreement_id
    ));

    step(7, "A verified transfer");
    let mut stream = admin(1)
        .await?
        .pull_transfer(PullTransferRequest {
            agreement_id: approved.agreement_id.clone(),
            max_chunks: 0,
            peer: String::new(),
        })
        .await?
        .into_inner();
    let mut last = None;
    while let Some(p) = stream.next().await {
        let p = p?;
        if p.chunks_received > 0 && TransferState::parse(&p.state) != Ok(TransferState::Completed) {
            say(&format!(
                "  chunk {}/{} verified against the signed manifest",
                p.chunks_received, p.chunks_total
            ));
        }
        last = Some(p);
    }
    let done = last.ok_or_else(|| anyhow!("no transfer progress"))?;
    if TransferState::parse(&done.state) != Ok(TransferState::Completed) || done.sha256 != od.sha256
    {
        bail!("the transfer did not complete: {done:?}");
    }
    say(&format!(
        "COMPLETED: {} bytes, sha256 {}… equals the published product; the consumer signed a receipt",
        done.bytes_total,
        &done.sha256[..16]
    ));
    say("the copy keeps its agreement and policy (the sticky policy) at the ecology bureau");

    step(8, "Every step is in the nodes' audit logs");
    for ((node, _), m) in nodes.iter().zip(&MEMBERS) {
        say(&format!(
            "{:<42} {} entries",
            m.name,
            node.node.audit.size()
        ));
    }

    for (node, _) in nodes {
        node.shutdown().await?;
    }
    running_authority.shutdown().await?;
    println!();
    println!("demo finished in {:.1} s", started.elapsed().as_secs_f64());
    if _temp.is_none() {
        print_restart(&root);
    }
    Ok(())
}

fn print_restart(root: &Path) {
    println!(
        "the data space is kept in {}. To start it again:",
        root.display()
    );
    println!(
        "  liutong authority serve --dir {}/authority --listen <the authority address in any node.toml>",
        root.display()
    );
    for m in &MEMBERS {
        println!(
            "  liutong serve --config {}/{}/node.toml",
            root.display(),
            m.dir_name
        );
    }
    println!(
        "then inspect, e.g.: liutong contract list --config {}/ecology/node.toml",
        root.display()
    );
}

fn step(n: u32, title: &str) {
    println!();
    println!("── {n}. {title}");
}

fn say(line: &str) {
    println!("   {line}");
}

async fn publish(
    admin: &mut AdminClient<tonic::transport::Channel>,
    data: Vec<u8>,
    title: &str,
    classification: &str,
    format: &str,
    policy: &str,
) -> anyhow::Result<Product> {
    let messages = crate::catalog::publish_messages(
        PublishMetadata {
            product_id: String::new(),
            title: title.into(),
            description: format!("{title} — demo data"),
            classification: classification.into(),
            format: format.into(),
            policy: policy.into(),
            policy_format: "toml".into(),
            derived_from: vec![],
        },
        &data,
    );
    Ok(admin
        .publish_product(tokio_stream::iter(messages))
        .await?
        .into_inner())
}

fn traffic_csv() -> Vec<u8> {
    let roads = [
        "Yan'an Rd",
        "Tianmushan Rd",
        "Moganshan Rd",
        "Qiutao Rd",
        "Wensan Rd",
    ];
    let mut out = String::from("road,date,hour,vehicles,avg_speed_kmh\n");
    for day in 1..=7 {
        for hour in 0..24 {
            for (i, road) in roads.iter().enumerate() {
                let vehicles = 200 + (hour * 37 + i * 113 + day * 17) % 1400;
                let speed = 18 + (hour * 7 + i * 5) % 40;
                out.push_str(&format!(
                    "{road},2026-11-{day:02},{hour},{vehicles},{speed}\n"
                ));
            }
        }
    }
    out.into_bytes()
}

fn bus_csv() -> Vec<u8> {
    let mut out = String::from("bus,timestamp,lat,lon\n");
    for i in 0..500 {
        out.push_str(&format!(
            "B{:03},2026-11-20T08:{:02}:00,{:.5},{:.5}\n",
            i % 40,
            i % 60,
            30.25 + (i as f64) * 0.0001,
            120.15 + (i as f64) * 0.0001
        ));
    }
    out.into_bytes()
}

/// About 1.5 MiB, so the transfer shows more than one chunk.
fn od_matrix_csv() -> Vec<u8> {
    let mut out = String::from("origin_cell,destination_cell,hour,trips\n");
    let mut i = 0u64;
    while out.len() < 1_600_000 {
        out.push_str(&format!(
            "C{:04},C{:04},{},{}\n",
            i % 997,
            (i * 31) % 1009,
            i % 24,
            (i * 7919) % 500
        ));
        i += 1;
    }
    out.into_bytes()
}
