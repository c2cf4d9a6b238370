//! The `liutong` command: argument parsing and the glue from each subcommand to the
//! library. Errors reach `main` as `anyhow::Error` and are printed plainly; the exit
//! code is 0 on success, 1 on failure, 2 for a usage error.
//!
//! This file holds the top-level arguments and the dispatch; each group of
//! subcommands lives in its own file beside it, how a command reaches its own node
//! ([`LocalArgs`]) in `local_node`, and the output helpers every command shares in
//! `output`.

mod audit;
mod authority;
mod console;
mod contract;
mod data;
mod local_node;
mod ops;
mod output;
mod peer;
mod product;
mod query;
mod serve;
mod trace;
mod transfer;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::config;
use crate::identity::{ParticipantId, RegionCode};
use crate::setup::{self, InitOptions, JoinOptions, RenewOptions};

pub use authority::AuthorityCommand;
pub use local_node::LocalArgs;
pub use output::status_error;
pub use peer::{PeerCommand, TrustCommand};

/// Liutong (流通): a node of a trusted data space.
///
/// Run `liutong serve` with no arguments to start a development node on embedded
/// defaults (data in ./liutong-data or $LIUTONG_DATA). For a real data space, each
/// member's node makes its own keys and an admission request (`liutong join`), the
/// authority admits it from that request (`liutong authority admit --request`), and the
/// member installs the bundle it gets back (`liutong init`). No private key leaves the
/// member's node.
#[derive(Parser, Debug)]
#[command(name = "liutong", version, max_term_width = 100)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the node: the peer API over mutual TLS and the local API.
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
    /// Make this node's keys and its admission request: the first step of joining.
    ///
    /// The TLS key (ECDSA P-256) and the signing key (Ed25519) are made in DIR/identity/
    /// and never leave it. The request (DIR/identity/admission-request.json, not secret)
    /// holds a certificate signing request for the TLS key with the names asked for, and
    /// the signing key's public half, signed with that key. Send it to the authority,
    /// which answers with an admission bundle; install that with `liutong init`.
    ///
    /// With --renew on a set-up node: a new TLS key (kept beside the current one until
    /// the bundle is installed) and a request for its certificate, signed with the
    /// node's current signing key. Use it to renew the certificate, change its names or
    /// replace the TLS key.
    Join {
        /// The node's directory (created owner-only).
        #[arg(long)]
        dir: PathBuf,
        /// The member's 统一社会信用代码 (18 characters, GB 32100-2015).
        #[arg(long, required_unless_present = "renew")]
        participant: Option<String>,
        /// Host names the certificate should carry, so that standard clients can check the
        /// node by name (comma-separated or repeated), e.g. node.hz.gov.cn.
        #[arg(long, value_delimiter = ',')]
        dns: Vec<String>,
        /// IP addresses the certificate should carry (comma-separated or repeated).
        #[arg(long, value_delimiter = ',')]
        ip: Vec<IpAddr>,
        /// Renew a set-up node's certificate with a new TLS key.
        #[arg(long, conflicts_with = "participant")]
        renew: bool,
        /// Keep the signing key in a PKCS#11 token (HSM): the token's module, e.g.
        /// /usr/lib/softhsm/libsofthsm2.so. No signing.key is written; `liutong init`
        /// writes the token into node.toml as `[hsm]`.
        #[arg(long, requires_all = ["hsm_token", "hsm_key"], conflicts_with = "renew")]
        hsm_module: Option<PathBuf>,
        /// The token's label.
        #[arg(long, requires = "hsm_module")]
        hsm_token: Option<String>,
        /// Label (CKA_LABEL) of the Ed25519 key pair in the token.
        #[arg(long, requires = "hsm_module")]
        hsm_key: Option<String>,
        /// The environment variable holding the token's PIN (also when the node runs).
        #[arg(long, requires = "hsm_module", conflicts_with = "hsm_pin_file")]
        hsm_pin_env: Option<String>,
        /// A file, readable by its owner only, holding the token's PIN.
        #[arg(long, requires = "hsm_module")]
        hsm_pin_file: Option<PathBuf>,
    },
    /// Install the admission bundle beside the keys `liutong join` made, and write a
    /// commented node.toml.
    ///
    /// The bundle must answer this node's request: its certificate must be for the
    /// node's TLS key and its credential must name the node's signing key; any other
    /// bundle is refused and nothing is written. On a node prepared with
    /// `liutong join --renew` (and stopped), installs the renewed certificate and the
    /// new TLS key, leaving node.toml as it is.
    Init {
        /// The node's directory, where `liutong join` made the keys.
        #[arg(long)]
        dir: PathBuf,
        /// The admission bundle the authority issued (`liutong authority admit --out`).
        #[arg(long)]
        bundle: PathBuf,
        /// Address of the peer API.
        #[arg(long, default_value = config::DEFAULT_LISTEN)]
        listen: SocketAddr,
        /// Address of the local API.
        #[arg(long, default_value = config::DEFAULT_ADMIN_LISTEN)]
        admin_listen: SocketAddr,
        /// host:port of the authority's trust-list service.
        #[arg(long, default_value = config::DEFAULT_AUTHORITY)]
        authority: String,
        /// Regions (6-digit codes, comma-separated) where recipients of important data
        /// may be; without it, important data cannot be offered.
        #[arg(long, value_delimiter = ',')]
        important_regions: Vec<RegionCode>,
        /// Overwrite an existing node.toml (the node's keys stay).
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
    /// Negotiate agreements with providers; approve, reject and revoke them as a provider.
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
        /// The peer: its peer API's host:port, or its Dataspace Protocol endpoint
        /// (https://host:port), which needs this node's own `[dsp]` listener on.
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
    /// Received copies under usage control: read one for a declared purpose, list them.
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
    /// The node's database.
    #[command(subcommand)]
    Storage(StorageCommand),
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
    /// withheld, and how many is never said. Raw rows never leave the provider. Both nodes log
    /// the query and the size of its answer.
    ///
    /// Example, the average speed by district in 2025 at 10 km/h or more: `liutong query
    /// --agreement agr-… --aggregate count --aggregate avg:speed --group-by district
    /// --where year=2025 --where 'speed>=10'`
    Query(query::QueryArgs),
    /// Provider side: name the agreement a found copy of a tabular product came from,
    /// by its watermark.
    ///
    /// Every tabular delivery with measure values (numbers of five significant digits
    /// or more, not identifiers, codes, phone numbers or dates) carries marks keyed to
    /// its agreement. The copy (CSV with its header row, or JSON Lines) is scored
    /// against every such agreement of the product(s); rows reordered or dropped and
    /// columns dropped leave the remaining marks readable. The best agreement is named
    /// when its score reaches the threshold (6.0), with the runner-up's score; a copy
    /// not from an agreement reaches it with probability below 1.6e-8 per agreement.
    ///
    /// Example: `liutong trace found.csv --product prd-…`
    Trace(trace::TraceArgs),
    /// The web console (`[console] listen` in node.toml): sign in with a one-time link.
    #[command(subcommand)]
    Console(console::ConsoleCommand),
}

/// Runs a parsed command.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve {
            config,
            health_listen,
        } => serve::serve(config, health_listen).await,
        Command::Join {
            dir,
            participant,
            dns,
            ip,
            renew,
            hsm_module,
            hsm_token,
            hsm_key,
            hsm_pin_env,
            hsm_pin_file,
        } => {
            // Paths are recorded absolute: node.toml reads them relative to its own place.
            let absolute = |p: PathBuf| std::path::absolute(&p).unwrap_or(p);
            let hsm = match (hsm_module, hsm_token, hsm_key) {
                (Some(module), Some(token), Some(signing_key)) => Some(config::HsmSection {
                    module: absolute(module),
                    token,
                    signing_key,
                    pin_env: hsm_pin_env,
                    pin_file: hsm_pin_file.map(absolute),
                    pin: None,
                }),
                _ => None,
            };
            let joined = match participant {
                Some(participant) => setup::join(&JoinOptions {
                    dir,
                    participant: ParticipantId::parse(&participant)?,
                    dns,
                    ips: ip,
                    hsm,
                })?,
                None if renew => setup::renew(&RenewOptions { dir, dns, ips: ip })?,
                None => anyhow::bail!("--participant is needed (or --renew on a set-up node)"),
            };
            let names = joined.request.names();
            println!(
                "{} for {}; names asked for: {}",
                if joined.new_keys {
                    "made new keys"
                } else {
                    "kept the keys made earlier"
                },
                joined.request.participant_id,
                if names.is_empty() {
                    "none".to_owned()
                } else {
                    names.join(", ")
                }
            );
            println!("signing key: {}", joined.request.signing_key);
            println!(
                "admission request written to {} (not secret): send it to the authority, \
                 then install the bundle it returns with `liutong init --bundle DIR`",
                joined.request_path.display()
            );
            Ok(())
        }
        Command::Init {
            dir,
            bundle,
            listen,
            admin_listen,
            authority,
            important_regions,
            force,
        } => {
            let renewal = setup::is_pending_renewal(&dir) && !force;
            let shown = dir.display().to_string();
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
            if renewal {
                println!(
                    "installed the renewed certificate and the new TLS key in {shown}; start \
                     the node again"
                );
                return Ok(());
            }
            println!("wrote {}", path.display());
            println!(
                "start the node with: liutong serve --config {}",
                path.display()
            );
            Ok(())
        }
        Command::Authority(cmd) => authority::run(cmd).await,
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
        Command::Trust(cmd) => peer::trust(cmd).await,
        Command::Audit(cmd) => audit::run(cmd).await,
        Command::Data(cmd) => data::run(cmd).await,
        Command::Query(args) => query::run(args).await,
        Command::Trace(args) => trace::run(args).await,
        Command::Console(command) => console::run(command).await,
        Command::Peer(cmd) => peer::peer(cmd).await,
        Command::Storage(StorageCommand::Migrate { to, config }) => migrate_storage(to, &config),
    }
}

#[derive(Subcommand, Debug)]
pub enum StorageCommand {
    /// Copy a stopped node's sled database into PostgreSQL, and check the copy.
    ///
    /// Set `[storage]` engine = "postgres" and its url (and password_env or password_file)
    /// in node.toml first: that database, which must be empty, receives the copy of the
    /// sled database in the data directory's db/. Every record and payload is read back,
    /// and the audit log is recomputed from the copied entries and checked against the
    /// sled log and the node's signed checkpoint. The sled database is left as it was.
    Migrate {
        /// The engine to move to.
        #[arg(long, value_enum)]
        to: StorageTarget,
        /// The node's node.toml, with the target in `[storage]`.
        #[arg(long, env = "LIUTONG_CONFIG")]
        config: PathBuf,
    },
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum StorageTarget {
    Postgres,
}

fn migrate_storage(_to: StorageTarget, config_path: &std::path::Path) -> anyhow::Result<()> {
    let config = config::NodeConfig::load(config_path)?;
    let settings = config
        .storage
        .postgres(&config.base_dir)
        .map_err(anyhow::Error::msg)?
        .ok_or_else(|| {
            anyhow::anyhow!(
                "{} keeps the node in sled: set [storage] engine = \"postgres\" and url (with \
                 password_env or password_file) first, then run this again",
                config_path.display()
            )
        })?;
    let target = crate::storage::PgTarget::new(&settings.url, settings.password.as_deref())
        .map_err(|e| anyhow::anyhow!("[storage] url: {e}"))?;
    let place = target.place().to_owned();
    let m = crate::backup::migrate::sled_to_postgres(&config.database_dir(), target)?;
    println!(
        "copied {} records in {} trees and {} payloads ({} bytes) to PostgreSQL at {place}",
        m.records, m.trees, m.payloads, m.payload_bytes
    );
    println!(
        "audit log verified in PostgreSQL: {} entries, root {}",
        m.audit_entries, m.audit_root
    );
    println!(
        "start the node with: liutong serve --config {} (the sled database in {} is left as \
         it was)",
        config_path.display(),
        config.database_dir().display()
    );
    Ok(())
}
