//! Starting and stopping a node: open storage, load the identity, fetch the trust list,
//! serve the peer API and the local API, refresh the trust list on an interval, and
//! shut down gracefully (stop accepting, finish in-flight calls, flush storage).
//!
//! [`RunningNode::start`] builds the components bottom-up ([`Node`]), each from the
//! narrow handles it needs, hands each service its components, and runs the background
//! loops through one runner ([`Workers`]) with one shutdown signal.

mod node;
mod workers;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::alerts::Alerts;
use crate::alerts::webhook::WebhookError;
use crate::audit::log::{AuditError, AuditLog, Event, EventKind};
use crate::audit::witnessing::WitnessStore;
use crate::backup::GatedStorage;
use crate::base::clock::now;
use crate::base::shutdown::{self, Shutdown, ShutdownSender};
use crate::catalog::Catalog;
use crate::catalog::product::{ProductError, ProductStore};
use crate::config::NodeConfig;
use crate::contract::Contracts;
use crate::cosigning::Cosigning;
use crate::dsp;
use crate::health::NodeHealth;
use crate::identity::bundle::{BundleManifest, files as bundle_files};
use crate::identity::membership;
use crate::identity::{KeyError, NodeIdentity};
use crate::local::{self, LocalAuthenticator};
use crate::outbound::{Peers, TrustListRefresh};
use crate::query::Queries;
use crate::rotation;
use crate::service::limits::{Caller, LimitsLayer, RefusalLog};
use crate::service::ops::Ops;
use crate::service::{self, PeerAuthenticator};
use crate::storage::{PgTarget, PostgresStorage, SledStorage, Storage, StorageError};
use crate::telemetry::{RpcLayer, Telemetry, TelemetryError};
use crate::tls::auth::{AuthLayer, ChainVerifier, RefusalHook};
use crate::tls::{self, ConnectionLimits, TlsError, TlsIdentity};
use crate::transfer::Transfers;
use crate::trust::{TrustError, TrustStore};
use crate::usage::Usage;
pub use node::Node;
pub use workers::Workers;

/// How long the first trust-list fetch may take before the node starts without it.
const FIRST_FETCH_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Trust(#[from] TrustError),
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error(transparent)]
    Product(#[from] ProductError),
    #[error(transparent)]
    Telemetry(#[from] TelemetryError),
    #[error(transparent)]
    Webhook(#[from] WebhookError),
    #[error(transparent)]
    Console(#[from] crate::console::ConsoleError),
    /// A setting that can only be checked when the node starts (e.g. a password file).
    #[error("{0}")]
    Config(String),
    #[error("the node's identity in {path} is not usable: {reason}")]
    Identity { path: String, reason: String },
    #[error(
        "cannot listen on {addr} ({what}): {source}; another process may be using it \
         (another `liutong serve`?), or change `{key}` in node.toml"
    )]
    Listen {
        addr: SocketAddr,
        what: &'static str,
        key: &'static str,
        source: std::io::Error,
    },
    #[error("the {what} server stopped with an error: {reason}")]
    Serve { what: &'static str, reason: String },
    #[error(
        "cannot make the data directory {path} owner-only: {source}; the node's user must \
         own everything in it"
    )]
    Modes {
        path: String,
        source: std::io::Error,
    },
}

/// A running node.
pub struct RunningNode {
    pub node: Arc<Node>,
    shutdown: ShutdownSender,
    servers: Vec<(
        &'static str,
        JoinHandle<Result<(), tonic::transport::Error>>,
    )>,
    /// Trust-list refresh, recovery, usage duties, checkpoints, the storage watch.
    workers: Workers,
    /// The record of refused requests, whose open windows are summarised at shutdown.
    refusals: Arc<RefusalLog>,
    health_addr: Option<SocketAddr>,
    /// The Dataspace Protocol listener, when `dsp.listen` is set: its address and task.
    dsp: Option<(SocketAddr, JoinHandle<()>)>,
    /// The web console, when `console.listen` is set: its address and task.
    console: Option<(SocketAddr, JoinHandle<()>)>,
}

impl RunningNode {
    /// Starts a node from its configuration. Binds both listeners before returning.
    pub async fn start(config: NodeConfig) -> Result<Self, NodeError> {
        let peer_listener = bind(config.node.listen, "peer API", "node.listen").await?;
        let admin_listener =
            bind(config.node.admin_listen, "local API", "node.admin_listen").await?;
        Self::start_with_listeners(config, peer_listener, admin_listener).await
    }

    /// Starts a node on a PostgreSQL database already open: the leader of replicas,
    /// whose storage is fenced by the leadership lease it holds.
    pub async fn start_on(
        config: NodeConfig,
        storage: Arc<PostgresStorage>,
    ) -> Result<Self, NodeError> {
        let peer_listener = bind(config.node.listen, "peer API", "node.listen").await?;
        let admin_listener =
            bind(config.node.admin_listen, "local API", "node.admin_listen").await?;
        Self::launch(config, peer_listener, admin_listener, Some(storage)).await
    }

    /// Starts a node on listeners the caller bound (tests bind port 0).
    pub async fn start_with_listeners(
        config: NodeConfig,
        peer_listener: TcpListener,
        admin_listener: TcpListener,
    ) -> Result<Self, NodeError> {
        Self::launch(config, peer_listener, admin_listener, None).await
    }

    async fn launch(
        config: NodeConfig,
        peer_listener: TcpListener,
        admin_listener: TcpListener,
        opened: Option<Arc<PostgresStorage>>,
    ) -> Result<Self, NodeError> {
        let identity_dir = config.identity_dir();
        let identity_err = |reason: String| NodeError::Identity {
            path: identity_dir.display().to_string(),
            reason,
        };
        let health_listener = match config.node.health_listen {
            Some(addr) => Some(bind(addr, "health endpoint", "node.health_listen").await?),
            None => None,
        };
        let dsp_listener = match &config.dsp {
            Some(d) => Some((
                d.listen,
                bind(d.listen, "Dataspace Protocol listener", "dsp.listen").await?,
            )),
            None => None,
        };
        let console_listener = match &config.console {
            Some(c) => Some((
                c.listen,
                bind(c.listen, "web console", "console.listen").await?,
            )),
            None => None,
        };
        // The private keys are read before the data directory is made owner-only: a key
        // file that others could read may have been copied, which its owner must learn
        // (the load refuses it) rather than have hidden by a silent chmod.
        let signing_key = config.load_signing_key()?;
        if let Some(hsm) = &config.hsm {
            tracing::info!(
                token = %hsm.token,
                key = %hsm.signing_key,
                key_id = %signing_key.public_key().key_id(),
                "the node signs with a key in a PKCS#11 token"
            );
        }
        let tls_identity = TlsIdentity::load(
            &identity_dir.join(bundle_files::CERT),
            &identity_dir.join(bundle_files::KEY),
        )?;
        let (credential, membership) = membership::parse_credential(
            &std::fs::read(identity_dir.join(bundle_files::CREDENTIAL))
                .map_err(|e| identity_err(format!("{}: {e}", bundle_files::CREDENTIAL)))?,
            &config.authority.public_key,
        )
        .map_err(|e| identity_err(format!("{} {e}", bundle_files::CREDENTIAL)))?;
        // A key in a token is checked against the credential before anything is opened
        // or written, with words that point at the token rather than at a key file.
        if let Some(hsm) = &config.hsm
            && membership.signing_key != signing_key.public_key()
        {
            return Err(identity_err(format!(
                "the key {:?} in token {:?} is {} ({}), but {} names the signing key {} \
                 ({}); have the authority issue a credential for the token's key \
                 (`liutong authority rekey`) or correct [hsm] signing_key in node.toml",
                hsm.signing_key,
                hsm.token,
                signing_key.public_key(),
                signing_key.public_key().key_id(),
                bundle_files::CREDENTIAL,
                membership.signing_key,
                membership.signing_key.key_id(),
            )));
        }
        // Everything the node creates is owner-only, and so is what an earlier run, a
        // restore or an operator left in the data directory.
        crate::base::files::owner_only_from_now_on();
        let data_dir = config.data_dir();
        let loosened =
            crate::base::files::make_owner_only(&data_dir).map_err(|source| NodeError::Modes {
                path: data_dir.display().to_string(),
                source,
            })?;
        if let Some(first) = loosened.first() {
            tracing::warn!(
                count = loosened.len(),
                first = %first.display(),
                "group or others could read files in the data directory; they are owner-only now"
            );
        }
        // A replica that took the lead hands over the database it opened (and checked
        // the settings of) while it stood by.
        let gated_storage = Arc::new(match opened {
            Some(storage) => GatedStorage::other(storage),
            None => match config
                .storage
                .postgres(&config.base_dir)
                .map_err(NodeError::Config)?
            {
                Some(db) => GatedStorage::other(PostgresStorage::open(
                    PgTarget::new(&db.url, db.password.as_deref())
                        .map_err(|e| NodeError::Config(format!("[storage] url: {e}")))?,
                )?),
                None => GatedStorage::new(SledStorage::open(&config.database_dir())?),
            },
        });
        let storage: Arc<dyn Storage> = gated_storage.clone();
        let audit = AuditLog::open(storage.clone())?;
        let telemetry = Arc::new(Telemetry::start(&config)?);
        telemetry.metrics.observe_audit_log(&audit);
        let alerts = Alerts::new(
            config.alerts.clone(),
            config
                .alerts
                .webhook_ca
                .as_ref()
                .map(|p| config.base_dir.join(p))
                .as_deref(),
            config.node.participant.clone(),
            audit.clone(),
            telemetry.metrics.clone(),
        )?;
        let products = ProductStore::open(storage.clone())?;
        let data_space_roots = tls::load_roots(&identity_dir.join(bundle_files::CA))?;
        // The configuration, the credential, the signing key and the TLS certificate must
        // all name the same participant.
        membership
            .check_own(
                &config.node.participant,
                &signing_key.public_key(),
                &tls_identity.chain,
            )
            .map_err(|e| identity_err(e.to_string()))?;
        let previous_credentials = rotation::load_history(
            &identity_dir,
            &config.authority.public_key,
            &membership.participant_id,
        )
        .map_err(|e| identity_err(e.to_string()))?;
        let manifest: Option<BundleManifest> =
            std::fs::read(identity_dir.join(bundle_files::MANIFEST))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
        if let Some(m) = manifest
            && m.authority_key != config.authority.public_key
        {
            tracing::warn!("node.toml pins another authority key than the admission bundle");
        }

        let trust = Arc::new(TrustStore::open(
            &config.authority.name,
            config.authority.public_key,
            storage.clone(),
        )?);
        let dsp_url = match (&dsp_listener, &config.dsp) {
            (Some((_, listener)), Some(d)) => match &d.url {
                Some(url) => Some(url.clone()),
                None => listener.local_addr().ok().map(|a| format!("https://{a}")),
            },
            _ => None,
        };
        let console_door = match &console_listener {
            Some((configured, listener)) => {
                let addr = listener.local_addr().map_err(|source| {
                    listen_err(*configured, "web console", "console.listen", source)
                })?;
                Some(Arc::new(local::ConsoleDoor {
                    url: crate::console::origin_of(addr),
                    links: Arc::new(local::SignInLinks::new(crate::console::LINK_LIFETIME)),
                }))
            }
            None => None,
        };
        let peer_addr = peer_listener
            .local_addr()
            .map_err(|source| listen_err(config.node.listen, "peer API", "node.listen", source))?;
        let admin_addr = admin_listener.local_addr().map_err(|source| {
            listen_err(
                config.node.admin_listen,
                "local API",
                "node.admin_listen",
                source,
            )
        })?;
        let identity = Arc::new(NodeIdentity {
            membership,
            credential,
            signing_key,
            previous_credentials,
        });
        let tls_identity = Arc::new(tls_identity);
        let peers = Arc::new(Peers::new(
            tls_identity.clone(),
            data_space_roots.clone(),
            trust.clone(),
            telemetry.clone(),
        ));
        let refresh = Arc::new(TrustListRefresh::new(
            config.authority.address.clone(),
            tls_identity.clone(),
            data_space_roots.clone(),
            trust.clone(),
            audit.clone(),
            alerts.clone(),
        ));
        let cosigning = Arc::new(Cosigning::new(
            audit.clone(),
            identity.clone(),
            peers.clone(),
            telemetry.metrics.clone(),
            config.audit.clone(),
            config.authority.public_key,
        ));
        let witness = Arc::new(WitnessStore::new(storage.clone(), Arc::new(alerts.clone())));
        let catalog = Arc::new(
            Catalog::new(
                products,
                identity.participant_id().clone(),
                config.guardrails.to_policy(),
            )
            .with_metrics(telemetry.metrics.clone()),
        );
        let contracts = Arc::new(Contracts::new(
            storage.clone(),
            audit.clone(),
            identity.clone(),
            catalog.clone(),
            peers.clone(),
            trust.clone(),
            alerts.clone(),
            config.guardrails.clone(),
            config.recovery.clone(),
        ));
        let usage = Arc::new(Usage::new(
            storage.clone(),
            audit.clone(),
            identity.clone(),
            contracts.clone(),
            catalog.clone(),
            peers.clone(),
            trust.clone(),
            alerts.clone(),
            config.usage.clone(),
        ));
        contracts.set_gate(usage.clone());
        contracts.set_delivery_form(Arc::new(crate::desensitize::DeliveryForms {
            products: catalog.products.clone(),
        }));
        let queries = Arc::new(Queries::new(
            storage.clone(),
            audit.clone(),
            identity.clone(),
            contracts.clone(),
            catalog.clone(),
            peers.clone(),
            usage.clone(),
            config.limits.clone(),
        ));
        let transfers = Arc::new(Transfers::new(
            storage.clone(),
            audit.clone(),
            identity.clone(),
            contracts.clone(),
            catalog.clone(),
            peers.clone(),
            trust.clone(),
            alerts.clone(),
            telemetry.metrics.clone(),
            usage.clone(),
            config.limits.clone(),
            config.recovery.clone(),
        ));
        let ops = Arc::new(Ops {
            config: config.clone(),
            identity: identity.clone(),
            trust: trust.clone(),
            storage: gated_storage.clone(),
            contracts: contracts.clone(),
            cosigning: cosigning.clone(),
            witness: witness.clone(),
            started_at: now(),
        });
        let node = Arc::new(Node {
            config,
            identity,
            tls_identity,
            data_space_roots,
            storage,
            gated_storage,
            audit,
            telemetry,
            alerts,
            trust,
            peers,
            refresh,
            cosigning,
            witness,
            catalog,
            contracts,
            queries,
            transfers,
            usage,
            ops,
            peer_addr,
            admin_addr,
            dsp_url,
            console: console_door,
        });
        if let Ok(Some(latest)) = node.cosigning.latest_status()
            && latest.witnessed()
        {
            node.telemetry.metrics.witnessed(latest.checkpoint.size);
        }
        // Fail closed: a node that cannot record its events does not start.
        node.audit
            .append(&Event::new(
                EventKind::NodeStarted,
                now(),
                format!("node started, version {}", crate::base::VERSION),
            ))
            .await?;
        rotation::record_current_key(
            node.storage.as_ref(),
            &node.audit,
            &node.identity.signing_key.public_key(),
            now(),
        )
        .await
        .map_err(|e| identity_err(format!("recording the signing key: {e}")))?;
        node.audit
            .record_configuration(&node.config.to_commented_toml(), now())
            .await?;
        node.audit
            .checkpoint(&node.cosigning.origin(), &node.identity.signing_key)
            .await?;

        // Before anyone is served: finish interrupted deletions and delete the copies
        // whose deleteAfter deadline passed while the node was stopped.
        if let Err(e) = node.usage.recover().await {
            tracing::warn!(error = %e, "usage control could not catch up at start; retrying in the background");
        }

        match tokio::time::timeout(FIRST_FETCH_TIMEOUT, node.refresh.refresh()).await {
            Ok(Ok(status)) => tracing::info!(sequence = status.sequence, "trust list fetched"),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "no fresh trust list at start; using the stored one if still valid, retrying")
            }
            Err(_) => {
                tracing::warn!("the authority did not answer in time; retrying in the background")
            }
        }

        let (shutdown, signal) = shutdown::channel();
        let peer_auth = Arc::new(PeerAuthenticator {
            chain: ChainVerifier::new(
                node.data_space_roots.clone(),
                "this data space's authority",
            )?,
            trust: node.trust.clone(),
        });
        let peer_tls = tls::server_config(&node.tls_identity, &node.data_space_roots)?;
        let health = NodeHealth::serving().await;
        let limits = &node.config.limits;
        let refusals = Arc::new(RefusalLog::new(node.audit.clone(), limits));
        let member_limits = LimitsLayer::new(limits, refusals.clone(), node.alerts.clone());
        let peer_router = service::peer_router(
            node.peer_services(),
            limits,
            RpcLayer::new(node.telemetry.clone(), "peer"),
            AuthLayer::new(peer_auth.clone()).with_refusal_hook(refusal_hook(
                &node.alerts,
                &refusals,
                "peer API",
            )),
            member_limits.clone(),
            &health,
        );
        let dsp_limits = member_limits.clone();
        let admin_auth = Arc::new(LocalAuthenticator::new(&node.config)?);
        let admin_tls = local::server_config(&node.config)?;
        let admin_router = service::admin_router(
            node.local_services(),
            limits,
            RpcLayer::new(node.telemetry.clone(), "local"),
            AuthLayer::new(admin_auth).with_refusal_hook(refusal_hook(
                &node.alerts,
                &refusals,
                "local API",
            )),
            member_limits,
        );

        let mut stop_peer = signal.clone();
        let peer = tokio::spawn(peer_router.serve_with_incoming_shutdown(
            tls::incoming(peer_listener, peer_tls, ConnectionLimits::of(limits)),
            async move { stop_peer.fired().await },
        ));
        let mut stop_admin = signal.clone();
        let admin = tokio::spawn(admin_router.serve_with_incoming_shutdown(
            tls::incoming(admin_listener, admin_tls, ConnectionLimits::of(limits)),
            async move { stop_admin.fired().await },
        ));
        let mut servers = vec![("peer API", peer), ("local API", admin)];
        let mut health_addr = None;
        if let Some(listener) = health_listener {
            health_addr = listener.local_addr().ok();
            servers.push((
                "health endpoint",
                crate::health::serve(listener, &health, signal.clone()),
            ));
        }

        let dsp = match dsp_listener {
            Some((configured, listener)) => {
                let addr = listener.local_addr().map_err(|source| {
                    listen_err(
                        configured,
                        "Dataspace Protocol listener",
                        "dsp.listen",
                        source,
                    )
                })?;
                let state = dsp::DspState {
                    catalog: node.catalog.clone(),
                    audit: node.audit.clone(),
                    participant: node.identity.participant_id().clone(),
                    base_url: node
                        .dsp_url
                        .clone()
                        .unwrap_or_else(|| format!("https://{addr}")),
                    max_body: limits.max_message_bytes,
                    authenticator: peer_auth.clone(),
                    refusals: refusals.clone(),
                    limits: dsp_limits,
                    on_refusal: refusal_hook(&node.alerts, &refusals, "DSP API"),
                    contracts: node.contracts.clone(),
                    storage: node.storage.clone(),
                    tls_identity: node.tls_identity.clone(),
                    data_space_roots: node.data_space_roots.clone(),
                    transfers: node.transfers.clone(),
                    token_lifetime: node
                        .config
                        .dsp
                        .as_ref()
                        .map_or(std::time::Duration::from_secs(600), |d| d.token_lifetime),
                    transfer_wake: Arc::default(),
                    wake: Arc::default(),
                };
                // Held by the notice worker; the transfer component keeps only a weak
                // handle to it (the consumer role holds the component).
                let pulls = Arc::new(dsp::pull::DspConsumer::from_state(&state));
                node.transfers
                    .set_receipt_binding(Arc::new(dsp::pull::Receipts::of(&pulls)));
                node.contracts
                    .set_consumer_binding(Arc::new(dsp::consumer::DspConsumer::new(
                        &state,
                        node.trust.clone(),
                    )));
                let tls = dsp::tls_config(&node.tls_identity, &node.data_space_roots)?;
                let task = dsp::serve(
                    listener,
                    tls,
                    limits,
                    dsp::router(state.clone()),
                    signal.clone(),
                );
                tracing::info!(dsp = %addr, "Dataspace Protocol listener serving");
                Some((addr, task, state, pulls))
            }
            None => None,
        };

        let console = match (console_listener, &node.console) {
            (Some((_, listener)), Some(door)) => {
                let listen = listener.local_addr().map_err(|source| {
                    listen_err(
                        node.config
                            .console
                            .as_ref()
                            .map(|c| c.listen)
                            .unwrap_or(crate::config::ConsoleSection::default_listen()),
                        "web console",
                        "console.listen",
                        source,
                    )
                })?;
                let tls = crate::console::tls_config(&node.config, listen)?;
                let services = node.local_services();
                let lifetime = node
                    .config
                    .console
                    .as_ref()
                    .map(|c| c.session_lifetime)
                    .unwrap_or_default();
                let state = Arc::new(crate::console::Console {
                    admin: services.admin,
                    audit: services.audit,
                    usage: services.usage,
                    alerts: node.alerts.clone(),
                    log: node.audit.clone(),
                    links: door.links.clone(),
                    sessions: crate::console::session::Sessions::new(lifetime),
                    origin: door.url.clone(),
                    tally: Default::default(),
                    refusals: refusals.clone(),
                });
                let task = dsp::serve(
                    listener,
                    tls,
                    limits,
                    crate::console::router(state),
                    signal.clone(),
                );
                tracing::info!(console = %door.url, "web console serving");
                Some((listen, task))
            }
            _ => None,
        };

        let mut workers = Workers::new(signal);
        let dsp = dsp.map(|(addr, task, state, notices)| {
            let starts = state.clone();
            workers.spawn("DSP callbacks", |s| dsp::callback::run(state, s));
            workers.spawn("DSP transfer starts", |s| dsp::transfer::run(starts, s));
            workers.spawn("DSP transfer notices", |s| {
                dsp::pull::run_notices(notices, s)
            });
            (addr, task)
        });
        let refresh = node.refresh.clone();
        let every = node.config.authority.refresh_interval;
        workers.spawn("trust-list refresh", |s| refresh.run(every, s));
        let (contracts, transfers) = (node.contracts.clone(), node.transfers.clone());
        let every = node.config.recovery.retry_interval;
        workers.spawn("recovery", |s| {
            recovery_loop(contracts, transfers, every, s)
        });
        workers.spawn("usage control", |s| node.usage.clone().run(s));
        let storage = node.storage.clone();
        let alerts = node.alerts.clone();
        workers.spawn("storage watch", |s| {
            report_storage_failure(storage, alerts, health.clone(), s)
        });
        workers.spawn("checkpoints", |s| node.cosigning.clone().run(s));
        workers.spawn("refusal summaries", |s| refusals.clone().run(s));
        tracing::info!(
            participant = %node.identity.participant_id(),
            peer = %peer_addr,
            admin = %admin_addr,
            "node serving"
        );
        Ok(Self {
            node,
            shutdown,
            servers,
            workers,
            refusals,
            health_addr,
            dsp,
            console,
        })
    }

    pub fn peer_addr(&self) -> SocketAddr {
        self.node.peer_addr
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.node.admin_addr
    }

    /// The Dataspace Protocol listener's address, when `dsp.listen` is set.
    pub fn dsp_addr(&self) -> Option<SocketAddr> {
        self.dsp.as_ref().map(|(addr, _)| *addr)
    }

    /// The web console's address, when `console.listen` is set.
    pub fn console_addr(&self) -> Option<SocketAddr> {
        self.console.as_ref().map(|(addr, _)| *addr)
    }

    /// The plain health endpoint's address, when `node.health_listen` is set.
    pub fn health_addr(&self) -> Option<SocketAddr> {
        self.health_addr
    }

    /// Stops accepting, lets in-flight calls finish, and flushes storage.
    pub async fn shutdown(self) -> Result<(), NodeError> {
        self.shutdown.fire();
        let mut first_error = None;
        for (what, task) in self.servers {
            let result = match task.await {
                Ok(r) => r.map_err(|e| tls::error_chain(&e)),
                Err(e) => Err(e.to_string()),
            };
            if let Err(reason) = result {
                first_error.get_or_insert(NodeError::Serve { what, reason });
            }
        }
        if let Some((_, task)) = self.dsp
            && let Err(e) = task.await
        {
            first_error.get_or_insert(NodeError::Serve {
                what: "Dataspace Protocol listener",
                reason: e.to_string(),
            });
        }
        if let Some((_, task)) = self.console
            && let Err(e) = task.await
        {
            first_error.get_or_insert(NodeError::Serve {
                what: "web console",
                reason: e.to_string(),
            });
        }
        self.workers.join().await;
        // The refusals counted in windows that have not ended yet.
        self.refusals.flush(true).await;
        let node = &self.node;
        let stopped = Event::new(EventKind::NodeStopped, now(), "node stopped");
        node.audit.append(&stopped).await?;
        node.audit
            .checkpoint(&node.cosigning.origin(), &node.identity.signing_key)
            .await?;
        node.storage.flush().await?;
        // Export what is left; the exporters block while they do.
        let telemetry = node.telemetry.clone();
        let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
        tracing::info!("node stopped");
        first_error.map_or(Ok(()), Err)
    }
}

/// Waits for the storage to fail (a flush or fsync that did not succeed, see
/// [`crate::storage::durability`]) and makes it known: the health status turns
/// NOT_SERVING (probes and load balancers stop sending work; an orchestrator restarts
/// the node), one ERROR line, and the storage-failure alert. The storage itself already
/// refuses every write.
async fn report_storage_failure(
    storage: Arc<dyn Storage>,
    alerts: Alerts,
    health: NodeHealth,
    mut shutdown: Shutdown,
) {
    let mut failures = storage.failures();
    let reason = loop {
        if let Some(reason) = failures.borrow_and_update().clone() {
            break reason;
        }
        match shutdown.unless_fired(failures.changed()).await {
            Some(Ok(())) => {}
            Some(Err(_)) | None => return,
        }
    };
    tracing::error!(
        reason = %reason,
        "the node's storage failed: writes are refused and health reports NOT_SERVING \
         until the node is restarted after the disk is checked"
    );
    health.set(tonic_health::ServingStatus::NotServing).await;
    alerts.storage_failed(&reason).await;
}

/// Records a refused authentication in the audit log (who: the address and the
/// certificate's subject) and counts it towards the failed-authentication alert.
fn refusal_hook(alerts: &Alerts, refusals: &Arc<RefusalLog>, api: &'static str) -> RefusalHook {
    let alerts = alerts.clone();
    let refusals = refusals.clone();
    Arc::new(move |refusal| {
        let alerts = alerts.clone();
        let refusals = refusals.clone();
        Box::pin(async move {
            let caller = Caller::Unauthenticated {
                remote: refusal.remote,
                subject: refusal.subject.clone(),
            };
            refusals
                .record(
                    &caller,
                    &refusal.method,
                    refusal.status.code(),
                    refusal.status.message(),
                )
                .await;
            alerts
                .authentication_failed(
                    api,
                    refusal.remote,
                    &refusal.method,
                    refusal.status.message(),
                )
                .await
        })
    })
}

async fn bind(
    addr: SocketAddr,
    what: &'static str,
    key: &'static str,
) -> Result<TcpListener, NodeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| listen_err(addr, what, key, source))
}

fn listen_err(
    addr: SocketAddr,
    what: &'static str,
    key: &'static str,
    source: std::io::Error,
) -> NodeError {
    NodeError::Listen {
        addr,
        what,
        key,
        source,
    }
}

/// The node's recovery work: every `recovery.retry_interval`, unfinished negotiations
/// are taken up ([`Contracts::poll_pending`]: requests asked about or sent again,
/// countersignatures sent again, stale steps expired) and receipts the providers have
/// not confirmed are sent again ([`Transfers::send_pending_receipts`]). A pass in
/// progress is abandoned at shutdown; every step it takes is durable before it goes on.
async fn recovery_loop(
    contracts: Arc<Contracts>,
    transfers: Arc<Transfers>,
    every: Duration,
    mut shutdown: Shutdown,
) {
    let mut negotiations = crate::recovery::Retries::default();
    let mut receipts = crate::recovery::Retries::default();
    while shutdown.sleep(every).await {
        let pass = async {
            contracts.poll_pending(&mut negotiations).await;
            transfers.send_pending_receipts(&mut receipts).await;
        };
        if shutdown.unless_fired(pass).await.is_none() {
            return;
        }
    }
}
