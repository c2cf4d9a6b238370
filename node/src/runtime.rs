//! Starting and stopping a node: open storage, load the identity, fetch the trust list,
//! serve the peer API and the local API, refresh the trust list on an interval, and
//! shut down gracefully (stop accepting, finish in-flight calls, flush storage).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::RootCertStore;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::alerts::Alerts;
use crate::alerts::webhook::WebhookError;
use crate::audit::cosigning::{self, Cosigning};
use crate::audit::log::{AuditError, AuditLog, Event, EventKind, origin_for};
use crate::audit::witnessing::WitnessStore;
use crate::backup::GatedStorage;
use crate::base::clock::now;
use crate::catalog::Catalog;
use crate::catalog::product::{ProductError, ProductStore};
use crate::config::NodeConfig;
use crate::contract::Contracts;
use crate::health::NodeHealth;
use crate::identity::bundle::{BundleManifest, files as bundle_files};
use crate::identity::membership;
use crate::identity::{Envelope, KeyError, Membership, ParticipantId, SigningKey};
use crate::local::{self, LocalAuthenticator};
use crate::rotation;
use crate::service::{self, PeerAuthenticator};
use crate::storage::{SledStorage, Storage, StorageError};
use crate::telemetry::{PeerChannel, RpcLayer, Telemetry, TelemetryError};
use crate::tls::auth::{AuthLayer, ChainVerifier, RefusalHook};
use crate::tls::certs::AUTHORITY_SAN_URI;
use crate::tls::{self, ExpectedServer, TlsError, TlsIdentity};
use crate::trust::{TrustError, TrustStatus, TrustStore};
use liutong_proto::v1::GetTrustListRequest;
use liutong_proto::v1::authority_client::AuthorityClient;

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
}

/// Everything the services share about this node.
pub struct NodeContext {
    pub config: NodeConfig,
    /// This node's membership, as the authority signed it.
    pub membership: Membership,
    pub credential: Envelope,
    /// Signs this node's envelopes (agreements, receipts, checkpoints).
    pub signing_key: SigningKey,
    pub tls_identity: TlsIdentity,
    /// The data-space CA, for peers' certificates.
    pub data_space_roots: RootCertStore,
    pub trust: Arc<TrustStore>,
    pub storage: Arc<dyn Storage>,
    /// The tamper-evident log of this node's events.
    pub audit: AuditLog,
    /// Published products and the offers peers may see.
    pub catalog: Catalog,
    /// Negotiations and agreements, both sides.
    pub contracts: Contracts,
    /// Signing checkpoints and collecting witnesses' cosignatures.
    pub cosigning: Cosigning,
    /// This node as a witness of other members' logs.
    pub witness: WitnessStore,
    /// Usage control of received copies: per-copy locks, compiled sticky policies.
    pub usage: crate::usage::UsageLocks,
    pub peer_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// Metrics, and the trace and metric export when a collector is configured.
    pub telemetry: Arc<Telemetry>,
    /// Security alerts (`[alerts]`): raise them here.
    pub alerts: Alerts,
    /// The same storage as `storage`, with the gate a backup closes (`crate::backup`).
    pub gated_storage: Arc<GatedStorage>,
    /// Credentials of this node's earlier signing keys, oldest first (key rotation).
    pub previous_credentials: Vec<Envelope>,
    /// When the node started, Unix seconds.
    pub started_at: i64,
    /// Connections to peers, reused by [`NodeContext::connect_peer`].
    pub peer_channels: PeerChannels,
}

/// Channels to other members' peer APIs, one per address, reused across calls (HTTP/2
/// carries many calls on one connection, so a negotiation does not pay a TLS handshake
/// per message). A channel is made anew when the trust list changed since it was made
/// (the peer's membership is checked at the handshake) or when it is older than
/// [`PEER_CHANNEL_MAX_AGE`].
#[derive(Default)]
pub struct PeerChannels {
    channels: std::sync::Mutex<
        std::collections::HashMap<String, (u64, std::time::Instant, tonic::transport::Channel)>,
    >,
}

/// Longest a peer connection is reused before its certificate is checked again by a
/// new handshake.
pub const PEER_CHANNEL_MAX_AGE: Duration = Duration::from_secs(300);

impl NodeContext {
    /// The client configuration for a peer that must be a current member and, when
    /// `expected` is given, exactly that participant.
    fn member_client_config(
        &self,
        expected: Option<ParticipantId>,
    ) -> Result<Arc<rustls::ClientConfig>, TlsError> {
        let trust = self.trust.clone();
        tls::client_config(
            Some(&self.tls_identity),
            self.data_space_roots.clone(),
            ExpectedServer::Member(Arc::new(move |id, fingerprint| {
                if let Some(expected) = &expected
                    && id != expected
                {
                    return Err(format!(
                        "the server at this address is {id}, not the expected participant \
                         {expected}"
                    ));
                }
                trust
                    .check_member(id, fingerprint, now())
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            })),
        )
    }

    /// A channel to another member's peer API, with this node's identity; the peer must
    /// be a current member. Calls on it carry this node's trace context.
    pub async fn connect_peer(&self, address: &str) -> Result<PeerChannel, TlsError> {
        self.connect(address, None).await
    }

    /// Like [`connect_peer`](Self::connect_peer), for a peer whose participant ID is
    /// known (the other party of an agreement): the server must be that participant, so
    /// a stale or redirected address never receives what was meant for it.
    pub async fn connect_member(
        &self,
        address: &str,
        participant: &ParticipantId,
    ) -> Result<PeerChannel, TlsError> {
        self.connect(address, Some(participant)).await
    }

    async fn connect(
        &self,
        address: &str,
        expected: Option<&ParticipantId>,
    ) -> Result<PeerChannel, TlsError> {
        let key = match expected {
            Some(p) => format!("{p}@{address}"),
            None => address.to_owned(),
        };
        let sequence = self.trust.status().sequence;
        let lock = || {
            // Poisoning cannot leave the map inconsistent (insert and get only).
            self.peer_channels
                .channels
                .lock()
                .unwrap_or_else(|p| p.into_inner())
        };
        if let Some((seq, made, channel)) = lock().get(&key)
            && *seq == sequence
            && made.elapsed() < PEER_CHANNEL_MAX_AGE
        {
            return Ok(PeerChannel::new(channel.clone(), &self.telemetry));
        }
        let channel = tls::connect(address, self.member_client_config(expected.cloned())?).await?;
        lock().insert(key, (sequence, std::time::Instant::now(), channel.clone()));
        Ok(PeerChannel::new(channel, &self.telemetry))
    }

    /// Fetches the trust list from the authority and applies it. A new sequence and a
    /// refused list are audit events.
    pub async fn refresh_trust_list(&self) -> Result<TrustStatus, TrustError> {
        let before = self.trust.status().sequence;
        let result = self.fetch_and_apply().await;
        let event = match &result {
            Ok(status) if status.sequence != before => Some(Event::new(
                EventKind::TrustListApplied,
                now(),
                format!(
                    "trust list {} applied: {} members, {} revocations",
                    status.sequence, status.members, status.revocations
                ),
            )),
            Ok(_) | Err(TrustError::Fetch { .. }) => None,
            Err(e) => Some(Event::new(
                EventKind::TrustListRefused,
                now(),
                e.to_string(),
            )),
        };
        if let Err(e) = &result {
            self.trust.record_error(e);
        }
        if let Some(event) = event
            && let Err(e) = self.audit.append(&event).await
        {
            tracing::error!(error = %e, "cannot log the trust-list event");
        }
        self.alerts
            .check_trust_list(&self.trust.status(), now())
            .await;
        result
    }

    /// The origin of this node's audit log, e.g. `liutong.<participant>/audit`.
    pub fn audit_origin(&self) -> String {
        origin_for(&self.membership.participant_id)
    }

    async fn fetch_and_apply(&self) -> Result<TrustStatus, TrustError> {
        let address = &self.config.authority.address;
        let fetch_err = |reason: String| TrustError::Fetch {
            address: address.clone(),
            reason,
        };
        let client = tls::client_config(
            Some(&self.tls_identity),
            self.data_space_roots.clone(),
            ExpectedServer::Uri(AUTHORITY_SAN_URI.to_owned()),
        )
        .map_err(|e| fetch_err(e.to_string()))?;
        let channel = tls::connect(address, client)
            .await
            .map_err(|e| fetch_err(e.to_string()))?;
        let known = self.trust.status().sequence;
        let response = AuthorityClient::new(channel)
            .get_trust_list(GetTrustListRequest {
                known_sequence: known,
            })
            .await
            .map_err(|s| fetch_err(format!("{:?}: {}", s.code(), s.message())))?
            .into_inner();
        let envelope = response
            .trust_list
            .ok_or_else(|| fetch_err("the answer carried no trust list".into()))?;
        self.trust.apply(envelope.into(), now()).await
    }
}

/// A running node.
pub struct RunningNode {
    pub context: Arc<NodeContext>,
    shutdown: watch::Sender<bool>,
    servers: Vec<(
        &'static str,
        JoinHandle<Result<(), tonic::transport::Error>>,
    )>,
    refresher: JoinHandle<()>,
    poller: JoinHandle<()>,
    checkpointer: JoinHandle<()>,
    /// Usage-control duties, outbox and revocation checks.
    usage: JoinHandle<()>,
    /// Reports a failure of the storage (health, log, alert).
    storage_watch: JoinHandle<()>,
    health_addr: Option<SocketAddr>,
}

impl RunningNode {
    /// Starts a node from its configuration. Binds both listeners before returning.
    pub async fn start(config: NodeConfig) -> Result<Self, NodeError> {
        let peer_listener = bind(config.node.listen, "peer API", "node.listen").await?;
        let admin_listener =
            bind(config.node.admin_listen, "local API", "node.admin_listen").await?;
        Self::start_with_listeners(config, peer_listener, admin_listener).await
    }

    /// Starts a node on listeners the caller bound (tests bind port 0).
    pub async fn start_with_listeners(
        config: NodeConfig,
        peer_listener: TcpListener,
        admin_listener: TcpListener,
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
        let gated_storage = Arc::new(GatedStorage::new(SledStorage::open(
            &config.database_dir(),
        )?));
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
        let signing_key = SigningKey::load(&identity_dir.join(bundle_files::SIGNING_KEY))?;
        let tls_identity = TlsIdentity::load(
            &identity_dir.join(bundle_files::CERT),
            &identity_dir.join(bundle_files::KEY),
        )?;
        let data_space_roots = tls::load_roots(&identity_dir.join(bundle_files::CA))?;
        let (credential, membership) = membership::parse_credential(
            &std::fs::read(identity_dir.join(bundle_files::CREDENTIAL))
                .map_err(|e| identity_err(format!("{}: {e}", bundle_files::CREDENTIAL)))?,
            &config.authority.public_key,
        )
        .map_err(|e| identity_err(format!("{} {e}", bundle_files::CREDENTIAL)))?;
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
        let catalog = Catalog::new(
            products,
            membership.participant_id.clone(),
            config.guardrails.to_policy(),
        )
        .with_metrics(telemetry.metrics.clone());
        let contracts = Contracts::new(storage.clone());
        let context = Arc::new(NodeContext {
            config,
            membership,
            credential,
            signing_key,
            tls_identity,
            data_space_roots,
            trust,
            witness: WitnessStore::new(storage.clone()),
            storage,
            audit,
            catalog,
            contracts,
            cosigning: Cosigning::default(),
            usage: Default::default(),
            peer_addr,
            admin_addr,
            telemetry,
            alerts,
            gated_storage,
            previous_credentials,
            started_at: now(),
            peer_channels: PeerChannels::default(),
        });
        if let Ok(Some(latest)) = cosigning::latest_status(&context)
            && latest.witnessed()
        {
            context.telemetry.metrics.witnessed(latest.checkpoint.size);
        }
        // Fail closed: a node that cannot record its events does not start.
        context
            .audit
            .append(&Event::new(
                EventKind::NodeStarted,
                now(),
                format!("node started, version {}", crate::base::VERSION),
            ))
            .await?;
        rotation::record_current_key(
            context.storage.as_ref(),
            &context.audit,
            &context.signing_key.public_key(),
            now(),
        )
        .await
        .map_err(|e| identity_err(format!("recording the signing key: {e}")))?;
        context
            .audit
            .record_configuration(&context.config.to_commented_toml(), now())
            .await?;
        context
            .audit
            .checkpoint(&context.audit_origin(), &context.signing_key)
            .await?;

        // Before anyone is served: finish interrupted deletions and delete the copies
        // whose deleteAfter deadline passed while the node was stopped.
        if let Err(e) = crate::usage::duties::recover(&context).await {
            tracing::warn!(error = %e, "usage control could not catch up at start; retrying in the background");
        }

        match tokio::time::timeout(FIRST_FETCH_TIMEOUT, context.refresh_trust_list()).await {
            Ok(Ok(status)) => tracing::info!(sequence = status.sequence, "trust list fetched"),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "no fresh trust list at start; using the stored one if still valid, retrying")
            }
            Err(_) => {
                tracing::warn!("the authority did not answer in time; retrying in the background")
            }
        }

        let (shutdown, stop) = watch::channel(false);
        let peer_auth = Arc::new(PeerAuthenticator {
            chain: ChainVerifier::new(
                context.data_space_roots.clone(),
                "this data space's authority",
            )?,
            trust: context.trust.clone(),
        });
        let peer_tls = tls::server_config(&context.tls_identity, &context.data_space_roots)?;
        let health = NodeHealth::serving().await;
        let peer_router = service::peer_router(
            context.clone(),
            RpcLayer::new(context.telemetry.clone(), "peer"),
            AuthLayer::new(peer_auth).with_refusal_hook(refusal_alert(&context, "peer API")),
            &health,
        );
        let admin_auth = Arc::new(LocalAuthenticator::new(&context.config)?);
        let admin_tls = local::server_config(&context.config)?;
        let admin_router = service::admin_router(
            context.clone(),
            RpcLayer::new(context.telemetry.clone(), "local"),
            AuthLayer::new(admin_auth).with_refusal_hook(refusal_alert(&context, "local API")),
        );

        let mut stop_peer = stop.clone();
        let peer = tokio::spawn(peer_router.serve_with_incoming_shutdown(
            tls::incoming(peer_listener, peer_tls),
            async move {
                let _ = stop_peer.wait_for(|s| *s).await;
            },
        ));
        let mut stop_admin = stop.clone();
        let admin = tokio::spawn(admin_router.serve_with_incoming_shutdown(
            tls::incoming(admin_listener, admin_tls),
            async move {
                let _ = stop_admin.wait_for(|s| *s).await;
            },
        ));
        let refresher = tokio::spawn(refresh_loop(context.clone(), stop.clone()));
        let poller = tokio::spawn(negotiation_poll_loop(context.clone(), stop.clone()));
        let usage = tokio::spawn(crate::usage::duties::run(context.clone(), stop.clone()));
        let mut servers = vec![("peer API", peer), ("local API", admin)];
        let mut health_addr = None;
        if let Some(listener) = health_listener {
            health_addr = listener.local_addr().ok();
            servers.push((
                "health endpoint",
                crate::health::serve(listener, &health, stop.clone()),
            ));
        }
        let storage_watch = tokio::spawn(report_storage_failure(
            context.clone(),
            health.clone(),
            stop.clone(),
        ));
        let checkpointer = tokio::spawn(cosigning::run_timer(context.clone(), stop));
        tracing::info!(
            participant = %context.membership.participant_id,
            peer = %peer_addr,
            admin = %admin_addr,
            "node serving"
        );
        Ok(Self {
            context,
            shutdown,
            servers,
            refresher,
            poller,
            checkpointer,
            usage,
            storage_watch,
            health_addr,
        })
    }

    pub fn peer_addr(&self) -> SocketAddr {
        self.context.peer_addr
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.context.admin_addr
    }

    /// The plain health endpoint's address, when `node.health_listen` is set.
    pub fn health_addr(&self) -> Option<SocketAddr> {
        self.health_addr
    }

    /// Stops accepting, lets in-flight calls finish, and flushes storage.
    pub async fn shutdown(self) -> Result<(), NodeError> {
        let _ = self.shutdown.send(true);
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
        let _ = self.refresher.await;
        let _ = self.poller.await;
        let _ = self.checkpointer.await;
        let _ = self.usage.await;
        let _ = self.storage_watch.await;
        let stopped = Event::new(EventKind::NodeStopped, now(), "node stopped");
        self.context.audit.append(&stopped).await?;
        self.context
            .audit
            .checkpoint(&self.context.audit_origin(), &self.context.signing_key)
            .await?;
        self.context.storage.flush().await?;
        // Export what is left; the exporters block while they do.
        let telemetry = self.context.telemetry.clone();
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
    context: Arc<NodeContext>,
    health: NodeHealth,
    mut stop: watch::Receiver<bool>,
) {
    let mut failures = context.storage.failures();
    let reason = loop {
        if let Some(reason) = failures.borrow_and_update().clone() {
            break reason;
        }
        tokio::select! {
            changed = failures.changed() => if changed.is_err() { return },
            _ = stop.wait_for(|s| *s) => return,
        }
    };
    tracing::error!(
        reason = %reason,
        "the node's storage failed: writes are refused and health reports NOT_SERVING \
         until the node is restarted after the disk is checked"
    );
    health.set(tonic_health::ServingStatus::NotServing).await;
    context.alerts.storage_failed(&reason).await;
}

/// Counts refused authentications towards the failed-authentication alert.
fn refusal_alert(context: &NodeContext, api: &'static str) -> RefusalHook {
    let alerts = context.alerts.clone();
    Arc::new(move |refusal| {
        let alerts = alerts.clone();
        Box::pin(async move {
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
/// are taken up ([`poll_pending`](crate::contract::poll_pending): requests asked about
/// or sent again, countersignatures sent again, stale steps expired) and receipts the
/// providers have not confirmed are sent again
/// ([`send_pending_receipts`](crate::transfer::send_pending_receipts)). A pass in
/// progress is abandoned at shutdown; every step it takes is durable before it goes on.
async fn negotiation_poll_loop(context: Arc<NodeContext>, mut stop: watch::Receiver<bool>) {
    let every = context.config.recovery.retry_interval;
    let mut negotiations = crate::recovery::Retries::default();
    let mut receipts = crate::recovery::Retries::default();
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let pass = async {
            crate::contract::poll_pending(&context, &mut negotiations).await;
            crate::transfer::send_pending_receipts(&context, &mut receipts).await;
        };
        tokio::select! {
            () = pass => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

async fn refresh_loop(context: Arc<NodeContext>, mut stop: watch::Receiver<bool>) {
    let every = context.config.authority.refresh_interval;
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        if let Err(e) = context.refresh_trust_list().await {
            tracing::warn!(error = %e, "trust list refresh failed");
        }
    }
}
