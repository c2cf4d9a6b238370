//! The `liutong` command: argument parsing and the glue from each subcommand to the
//! library. Errors reach `main` as `anyhow::Error` and are printed plainly; the exit
//! code is 0 on success, 1 on failure, 2 for a usage error.

mod audit;
mod contract;
mod data;
mod ops;
mod product;
mod query;
mod transfer;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use clap::{Args, Parser, Subcommand};
use tokio::net::TcpListener;
use tonic::transport::Channel;

use crate::authority::{self, Admission, Authority, DEFAULT_MEMBERSHIP_DAYS};
use crate::base::clock;
use crate::base::format::format_unix;
use crate::config::{self, NodeConfig};
use crate::identity::{MemberRole, ParticipantId, ParticipantKind, RegionCode};
use crate::local::{self, LocalRole};
use crate::runtime::RunningNode;
use crate::setup::{self, InitOptions};
use liutong_proto::v1::admin_client::AdminClient;
use liutong_proto::v1::{
    DescribePeerRequest, DescribeResponse, Participant, RefreshTrustListRequest, TrustListStatus,
};

/// Liutong (流通): a node of a trusted data space.
///
/// Run `liutong serve` with no arguments to start a development node on embedded
/// defaults (data in ./liutong-data or $LIUTONG_DATA). For a real data space, an
/// authority admits each member (`liutong authority ...`) and each member sets up its
/// node from the admission bundle (`liutong init`).
#[derive(Parser, Debug)]
#[command(name = "liutong", version, max_term_width = 100)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the node: the peer API over mutual TLS and the local administration API.
    ///
    /// Without --config (and without $LIUTONG_CONFIG), starts the zero-configuration
    /// development node: on first start it creates a DEVELOPMENT authority and identity
    /// under ./liutong-data (or $LIUTONG_DATA) and runs that authority in-process.
    /// Stops gracefully on SIGINT or SIGTERM.
    Serve {
        /// The node's node.toml.
        #[arg(long, env = "LIUTONG_CONFIG")]
        config: Option<PathBuf>,
        /// Serve the plain gRPC health endpoint (no TLS, health checks only) here,
        /// overriding `node.health_listen`; for container and Kubernetes probes.
        #[arg(long, env = "LIUTONG_HEALTH_LISTEN")]
        health_listen: Option<SocketAddr>,
    },
    /// Set up a node directory from an admission bundle and write a commented node.toml.
    Init {
        /// The node's directory (created owner-only).
        #[arg(long)]
        dir: PathBuf,
        /// The admission bundle the authority issued (`liutong authority admit --out`).
        #[arg(long)]
        bundle: PathBuf,
        /// Address of the peer API.
        #[arg(long, default_value = config::DEFAULT_LISTEN)]
        listen: SocketAddr,
        /// Address of the local administration API.
        #[arg(long, default_value = config::DEFAULT_ADMIN_LISTEN)]
        admin_listen: SocketAddr,
        /// host:port of the authority's trust-list service.
        #[arg(long, default_value = config::DEFAULT_AUTHORITY)]
        authority: String,
        /// Regions (6-digit codes, comma-separated) where recipients of important data
        /// may be; without it, important data cannot be offered.
        #[arg(long, value_delimiter = ',')]
        important_regions: Vec<RegionCode>,
        /// Overwrite an existing node.toml and identity.
        #[arg(long)]
        force: bool,
    },
    /// Operate a data-space authority: admit, revoke, serve the trust list.
    #[command(subcommand)]
    Authority(AuthorityCommand),
    /// Show this node's identity, addresses and trust-list state.
    Status {
        #[command(flatten)]
        local: LocalArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The trust list (members and revocations from the authority).
    #[command(subcommand)]
    Trust(TrustCommand),
    /// Talk to other members' nodes.
    #[command(subcommand)]
    Peer(PeerCommand),
    /// Publish and inspect this node's data products.
    #[command(subcommand)]
    Product(product::ProductCommand),
    /// Negotiate contracts (agreements) with providers; approve requests as a provider.
    #[command(subcommand)]
    Contract(contract::ContractCommand),
    /// Receive the products of agreements, verified chunk by chunk.
    #[command(subcommand)]
    Transfer(transfer::TransferCommand),
    /// Run a narrated data space on loopback: an authority and three nodes publish,
    /// browse, negotiate (granted, denied, approved by a person) and transfer.
    Demo {
        /// Keep the data space in this (new) directory, to start its nodes again with
        /// `liutong serve --config DIR/<node>/node.toml`.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Browse a peer's catalog: the offers it shows this node.
    Catalog {
        /// The peer's host:port.
        #[arg(long)]
        peer: String,
        #[command(flatten)]
        local: LocalArgs,
        #[arg(long)]
        json: bool,
    },
    /// Read and check the tamper-evident audit log (auditors; any member for checkpoints).
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Received data under usage control: read a copy for a declared purpose, list copies.
    #[command(subcommand)]
    Data(data::DataCommand),
    /// Write a consistent backup of the whole node (database, keys, local CA,
    /// node.toml) to a file, while it runs (or from its directory while it is stopped).
    /// The file holds private keys; it is written owner-only.
    Backup {
        #[command(flatten)]
        local: LocalArgs,
        /// Where to write the backup.
        #[arg(long)]
        out: PathBuf,
    },
    /// Restore a backup into a directory, with the node stopped. The whole file is
    /// checked first (checksum, seal, signature); a damaged or truncated file is refused
    /// and nothing is written.
    Restore {
        /// The backup file (`liutong backup --out`).
        file: PathBuf,
        /// The node directory to restore into (new or empty).
        #[arg(long)]
        dir: PathBuf,
        /// Replace the stopped node in DIR; its contents are moved to DIR.replaced-<time>.
        // The text is also `--help`, where `<time>` is a placeholder, not an HTML tag.
        #[allow(rustdoc::invalid_html_tags)]
        #[arg(long)]
        force: bool,
    },
    /// The node's signing key.
    #[command(subcommand)]
    Key(ops::KeyCommand),
    /// Ask the node's plain health endpoint (node.health_listen); exit 0 when SERVING.
    Health {
        /// host:port of the health endpoint [default: node.health_listen from --config].
        #[arg(long)]
        addr: Option<SocketAddr>,
        #[arg(long, env = "LIUTONG_CONFIG")]
        config: Option<PathBuf>,
        /// Keep asking until SERVING or this much time has passed, e.g. 10s.
        #[arg(long, value_parser = humantime::parse_duration)]
        wait: Option<Duration>,
        /// With --wait: ask at this fixed interval, e.g. 5ms to time a start-up
        /// [default: from 50 ms, doubling up to 500 ms].
        #[arg(long, value_parser = humantime::parse_duration, requires = "wait")]
        every: Option<Duration>,
    },
    /// Compute-to-data: aggregates over a provider's rows, computed at the provider;
    /// only groups of at least k rows come back.
    ///
    /// For an agreement whose policy permits `aggregate` (可用不可见). The provider
    /// computes the aggregates on its own node and answers only groups of at least k
    /// rows, k being the policy's minimum group size (aggregateOnly); smaller groups are
    /// suppressed and only counted. Raw rows never leave the provider. Both nodes log
    /// the query and the size of its answer.
    ///
    /// Example, the average speed by district in 2025 at 10 km/h or more: `liutong query
    /// --agreement agr-… --aggregate count --aggregate avg:speed --group-by district
    /// --where year=2025 --where 'speed>=10'`
    Query(query::QueryArgs),
}

#[derive(Subcommand, Debug)]
pub enum AuthorityCommand {
    /// Create an authority: its CA certificate and key, and its signing key.
    Init {
        #[arg(long)]
        dir: PathBuf,
        /// The authority's name, e.g. "Zhejiang Public Data Space".
        #[arg(long)]
        name: String,
    },
    /// Admit a member: issue its TLS certificate, membership credential and keys, and
    /// write them as an admission bundle (a secret: hand it over securely).
    Admit {
        #[arg(long)]
        dir: PathBuf,
        /// The member's 统一社会信用代码 (18 characters, GB 32100-2015).
        #[arg(long)]
        participant: String,
        /// The member's name.
        #[arg(long)]
        name: String,
        /// government, enterprise or institution.
        #[arg(long)]
        kind: String,
        /// Sector, e.g. transport, ecology, logistics.
        #[arg(long)]
        sector: String,
        /// 6-digit administrative division code, e.g. 330100.
        #[arg(long)]
        region: String,
        /// Comma-separated: provider, consumer, auditor.
        #[arg(long, value_delimiter = ',')]
        roles: Vec<String>,
        /// Where to write the admission bundle (a new directory).
        #[arg(long)]
        out: PathBuf,
        /// Validity of the membership and certificate, in days.
        #[arg(long, default_value_t = DEFAULT_MEMBERSHIP_DAYS)]
        days: i64,
        /// Re-admit an existing member with new keys (its old certificate stops working).
        #[arg(long)]
        renew: bool,
    },
    /// Revoke a member. Nodes refuse it from their next trust-list refresh on.
    Revoke {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        participant: String,
        /// Why; members and auditors read it.
        #[arg(long)]
        reason: String,
    },
    /// List members and revocations.
    Members {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Serve the signed trust list to members over mutual TLS.
    Serve {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value = config::DEFAULT_AUTHORITY)]
        listen: SocketAddr,
        /// How long each signed trust list stays valid.
        #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
        validity: Duration,
    },
    /// Issue a member a credential naming the new signing key its node prepared
    /// (`liutong key rotate`); its other attributes and certificate stay. Nodes see the
    /// new key from their next trust-list refresh.
    Rekey {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        participant: String,
        /// The new public key (base64), as `liutong key rotate` printed it.
        #[arg(long)]
        signing_key: String,
        /// Where to write the new credential (signed, not secret).
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
pub enum TrustCommand {
    /// Fetch the trust list from the authority now.
    Refresh {
        #[command(flatten)]
        local: LocalArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum PeerCommand {
    /// Ask a peer who it is, and who it sees us as (over mutual TLS, via this node).
    Describe {
        /// The peer's host:port.
        address: String,
        #[command(flatten)]
        local: LocalArgs,
        #[arg(long)]
        json: bool,
    },
}

/// How a command reaches its own node.
#[derive(Args, Debug)]
pub struct LocalArgs {
    /// The node's node.toml [default: $LIUTONG_DATA/node/node.toml or
    /// ./liutong-data/node/node.toml, the development node].
    #[arg(long, env = "LIUTONG_CONFIG")]
    pub config: Option<PathBuf>,
    /// Which local client certificate to use: admin, app or auditor.
    #[arg(long, default_value = "admin")]
    pub role: LocalRole,
}

impl LocalArgs {
    fn load(&self) -> anyhow::Result<NodeConfig> {
        load_config(self.config.as_deref())
    }

    /// The local API of the node in `--config`, with the certificate of `--role`.
    async fn channel(&self) -> anyhow::Result<Channel> {
        local_channel(&self.load()?, self.role).await
    }

    async fn admin(&self) -> anyhow::Result<AdminClient<Channel>> {
        Ok(AdminClient::new(self.channel().await?))
    }
}

/// The node's configuration from `path`, or the development node's
/// ($LIUTONG_DATA/node/node.toml or ./liutong-data/node/node.toml).
fn load_config(path: Option<&Path>) -> anyhow::Result<NodeConfig> {
    let path = path.map_or_else(
        || setup::dev_config_path(&setup::default_data_root()),
        Path::to_path_buf,
    );
    Ok(NodeConfig::load(&path)?)
}

/// A channel to the node's local API with the client certificate of `role`.
async fn local_channel(config: &NodeConfig, role: LocalRole) -> anyhow::Result<Channel> {
    local::connect(config, role)
        .await
        .context("is the node running? start it with `liutong serve`")
}

/// Runs a parsed command.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve {
            config,
            health_listen,
        } => serve(config, health_listen).await,
        Command::Init {
            dir,
            bundle,
            listen,
            admin_listen,
            authority,
            important_regions,
            force,
        } => {
            let path = setup::init_node(&InitOptions {
                dir,
                bundle,
                listen,
                admin_listen,
                authority,
                force,
                important_regions,
                development: None,
            })?;
            println!("wrote {}", path.display());
            println!(
                "start the node with: liutong serve --config {}",
                path.display()
            );
            Ok(())
        }
        Command::Authority(cmd) => authority_command(cmd).await,
        Command::Product(cmd) => product::run(cmd).await,
        Command::Contract(cmd) => contract::run(cmd).await,
        Command::Transfer(cmd) => transfer::run(cmd).await,
        Command::Demo { dir } => crate::demo::run(dir).await,
        Command::Catalog { peer, local, json } => product::catalog(peer, local, json).await,
        Command::Status { local, json } => ops::status(&local, json).await,
        Command::Backup { local, out } => ops::backup(&local, &out).await,
        Command::Restore { file, dir, force } => ops::restore(file, dir, force).await,
        Command::Key(cmd) => ops::key(cmd),
        Command::Health {
            addr,
            config,
            wait,
            every,
        } => ops::health(addr, config, wait, every).await,
        Command::Trust(TrustCommand::Refresh { local }) => {
            let answer = local
                .admin()
                .await?
                .refresh_trust_list(RefreshTrustListRequest {})
                .await
                .map_err(status_error)?
                .into_inner();
            let t = answer.trust_list.unwrap_or_default();
            println!(
                "trust list {} applied: {} members, {} revocations, valid until {}",
                t.sequence,
                t.members,
                t.revocations,
                format_unix(t.expires_at_unix)
            );
            Ok(())
        }
        Command::Audit(cmd) => audit::run(cmd).await,
        Command::Data(cmd) => data::run(cmd).await,
        Command::Query(args) => query::run(args).await,
        Command::Peer(PeerCommand::Describe {
            address,
            local,
            json,
        }) => {
            let answer = local
                .admin()
                .await?
                .describe_peer(DescribePeerRequest { address })
                .await
                .map_err(status_error)?
                .into_inner();
            print_describe(&answer, json)
        }
    }
}

/// A gRPC refusal as an error a person can read.
pub fn status_error(s: tonic::Status) -> anyhow::Error {
    anyhow!("{:?}: {}", s.code(), s.message())
}

/// Prints `value` as indented JSON: the `--json` output of every command.
fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Prints a listing the way every `list` command does: with `--json`, one JSON array of
/// `to_json(item)`; otherwise `line(item)` for each item, or the line `empty` when there
/// is none.
fn print_list<T>(
    items: &[T],
    json: bool,
    empty: &str,
    to_json: impl Fn(&T) -> serde_json::Value,
    line: impl FnMut(&T),
) -> anyhow::Result<()> {
    if json {
        let all: Vec<_> = items.iter().map(to_json).collect();
        return print_json(&all);
    }
    if items.is_empty() {
        println!("{empty}");
    }
    items.iter().for_each(line);
    Ok(())
}

async fn serve(
    config_path: Option<PathBuf>,
    health_listen: Option<SocketAddr>,
) -> anyhow::Result<()> {
    let config_path = match config_path {
        Some(p) => p,
        None => {
            let root = setup::default_data_root();
            let (path, created) = setup::ensure_dev_setup(&root)?;
            print_dev_banner(&root, &path, created);
            path
        }
    };
    let mut config = NodeConfig::load(&config_path)?;
    if health_listen.is_some() {
        config.node.health_listen = health_listen;
    }
    let dev_authority = match config.development_authority_dir() {
        Some(dir) => {
            let listener = TcpListener::bind(&config.authority.address)
                .await
                .with_context(|| {
                    format!(
                        "cannot listen on {} for the development authority; another process \
                         may be using it",
                        config.authority.address
                    )
                })?;
            let running =
                authority::serve(&dir, listener, authority::DEFAULT_TRUST_LIST_VALIDITY).await?;
            println!(
                "DEVELOPMENT authority serving its trust list on {} (from {})",
                running.addr,
                dir.display()
            );
            Some(running)
        }
        None => None,
    };
    let node = RunningNode::start(config).await?;
    let stop = StopSignals::catch()?;
    let m = &node.context.membership;
    println!(
        "liutong node for {} ({}) serving: peer API {} · local API {}",
        m.name,
        m.participant_id,
        node.peer_addr(),
        node.admin_addr()
    );
    println!("stop with Ctrl-C (SIGINT) or SIGTERM");
    stop.wait().await;
    println!("stopping: finishing in-flight calls and flushing storage");
    node.shutdown().await?;
    if let Some(a) = dev_authority {
        a.shutdown().await?;
    }
    println!("stopped");
    Ok(())
}

fn print_dev_banner(root: &Path, config: &Path, created: bool) {
    let line = "=".repeat(78);
    println!("{line}");
    println!(" DEVELOPMENT NODE — for trying Liutong out, not for production");
    if created {
        println!(
            " Created a DEVELOPMENT authority and node identity under {}:",
            root.display()
        );
    } else {
        println!(" Using the DEVELOPMENT set-up under {}:", root.display());
    }
    println!(
        "   authority: {} (its private keys are on this disk)",
        root.join("dev-authority").display()
    );
    println!("   node:      {}", config.display());
    println!(
        "   participant {} \"Development node\"",
        setup::DEV_PARTICIPANT
    );
    println!(" For a real data space, see the README: \"Setting up a data space by hand\".");
    println!("{line}");
}

/// SIGINT and SIGTERM, caught from the moment this is made. Make it before announcing
/// that the process serves: whoever waits for that line and then sends SIGTERM (a test,
/// a supervisor script) gets a graceful stop, not the default action that ends the
/// process on the spot.
struct StopSignals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn catch() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            interrupt: signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?,
            terminate: signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?,
        })
    }

    /// Waits for either signal.
    async fn wait(mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}

async fn authority_command(cmd: AuthorityCommand) -> anyhow::Result<()> {
    match cmd {
        AuthorityCommand::Init { dir, name } => {
            let a = Authority::init(&dir, &name)?;
            println!("authority {:?} created in {}", a.name(), dir.display());
            println!("signing key: {}", a.public_key());
            println!(
                "next: liutong authority admit --dir {} ... --out BUNDLE_DIR",
                dir.display()
            );
            Ok(())
        }
        AuthorityCommand::Admit {
            dir,
            participant,
            name,
            kind,
            sector,
            region,
            roles,
            out,
            days,
            renew,
        } => {
            let participant = ParticipantId::parse(&participant)?;
            let kind = ParticipantKind::from_member_name(&kind).map_err(|e| anyhow!(e))?;
            let region = RegionCode::parse(&region).map_err(|e| anyhow!(e))?;
            let roles = roles
                .iter()
                .map(|r| r.trim().parse::<MemberRole>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| anyhow!(e))?;
            if days <= 0 {
                return Err(anyhow!("--days must be at least 1"));
            }
            let mut a = Authority::open(&dir)?;
            let now = clock::now_utc();
            let bundle = a.admit(Admission {
                participant,
                name,
                kind,
                sector,
                region,
                roles,
                not_before: now - time::Duration::minutes(5),
                not_after: now + time::Duration::days(days),
                renew,
            })?;
            bundle.write(&out)?;
            println!(
                "admitted {} ({}); trust list sequence is now {}",
                bundle.membership.name,
                bundle.membership.participant_id,
                a.sequence()
            );
            println!(
                "admission bundle written to {} — it holds private keys: hand it over securely",
                out.display()
            );
            Ok(())
        }
        AuthorityCommand::Revoke {
            dir,
            participant,
            reason,
        } => {
            let participant = ParticipantId::parse(&participant)?;
            let mut a = Authority::open(&dir)?;
            let now = clock::now();
            a.revoke(&participant, &reason, now)?;
            println!(
                "revoked {participant}; trust list sequence is now {}; nodes apply it at their \
                 next refresh",
                a.sequence()
            );
            Ok(())
        }
        AuthorityCommand::Members { dir, json } => {
            let a = Authority::open(&dir)?;
            if json {
                let value = serde_json::json!({
                    "authority": a.name(),
                    "sequence": a.sequence(),
                    "members": a.members(),
                    "revocations": a.revocations(),
                });
                print_json(&value)?;
            } else {
                println!(
                    "authority {:?}, trust list sequence {}",
                    a.name(),
                    a.sequence()
                );
                for m in a.members() {
                    let roles: Vec<_> = m.roles.iter().map(ToString::to_string).collect();
                    println!(
                        "  member   {}  {}  {} {} {}  roles {}  until {}",
                        m.participant_id,
                        m.name,
                        m.kind.member_name(),
                        m.sector,
                        m.region,
                        roles.join(","),
                        format_unix(m.valid_until)
                    );
                }
                for r in a.revocations() {
                    println!(
                        "  revoked  {}  at {}: {}",
                        r.participant_id,
                        format_unix(r.revoked_at),
                        r.reason
                    );
                }
            }
            Ok(())
        }
        AuthorityCommand::Serve {
            dir,
            listen,
            validity,
        } => {
            let listener = TcpListener::bind(listen).await.with_context(|| {
                format!("cannot listen on {listen}; another process may be using it")
            })?;
            let running = authority::serve(&dir, listener, validity).await?;
            let stop = StopSignals::catch()?;
            println!("authority serving its trust list on {}", running.addr);
            stop.wait().await;
            running.shutdown().await?;
            Ok(())
        }
        AuthorityCommand::Rekey {
            dir,
            participant,
            signing_key,
            out,
        } => ops::authority_rekey(&dir, &participant, &signing_key, &out),
    }
}

fn participant_json(p: &Participant) -> serde_json::Value {
    serde_json::json!({
        "participant_id": p.participant_id,
        "name": p.name,
        "kind": p.kind,
        "sector": p.sector,
        "region": p.region,
        "roles": p.roles,
        "valid_from": p.valid_from_unix,
        "valid_until": p.valid_until_unix,
    })
}

fn trust_json(t: &TrustListStatus) -> serde_json::Value {
    serde_json::json!({
        "sequence": t.sequence,
        "issued_at": t.issued_at_unix,
        "expires_at": t.expires_at_unix,
        "applied_at": t.applied_at_unix,
        "members": t.members,
        "revocations": t.revocations,
        "last_error": t.last_error,
        "authority_address": t.authority_address,
    })
}

fn print_describe(d: &DescribeResponse, json: bool) -> anyhow::Result<()> {
    let node = d.node.clone().unwrap_or_default();
    let caller = d.caller.clone().unwrap_or_default();
    if json {
        return print_json(&serde_json::json!({
            "node": participant_json(&node),
            "caller": participant_json(&caller),
            "trust_list_sequence": d.trust_list_sequence,
            "software_version": d.software_version,
        }));
    }
    println!("peer        {} ({})", node.name, node.participant_id);
    println!(
        "            {} · {} · region {} · roles {}",
        node.kind,
        node.sector,
        node.region,
        node.roles.join(",")
    );
    println!("sees us as  {} ({})", caller.name, caller.participant_id);
    println!(
        "its trust list sequence {} · version {}",
        d.trust_list_sequence, d.software_version
    );
    Ok(())
}
