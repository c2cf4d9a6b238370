//! The node's components in one place, as [`RunningNode::start`](super::RunningNode::start)
//! built them, and the services of both APIs made from them: each service gets only
//! the components it uses.

use std::net::SocketAddr;
use std::sync::Arc;

use rustls::RootCertStore;

use crate::alerts::Alerts;
use crate::audit::log::AuditLog;
use crate::audit::witnessing::WitnessStore;
use crate::backup::GatedStorage;
use crate::catalog::Catalog;
use crate::config::NodeConfig;
use crate::contract::Contracts;
use crate::cosigning::Cosigning;
use crate::identity::NodeIdentity;
use crate::outbound::{Peers, TrustListRefresh};
use crate::query::Queries;
use crate::service::ops::Ops;
use crate::service::{
    AdminService, LocalServices, PeerService, PeerServices,
    audit::{AuditService, WitnessService},
    catalog::CatalogService,
    contract::NegotiationService,
    query::QueryService,
    transfer::TransferService,
    usage::{UsageControlService, UsageService},
};
use crate::storage::Storage;
use crate::telemetry::Telemetry;
use crate::tls::TlsIdentity;
use crate::transfer::Transfers;
use crate::trust::TrustStore;
use crate::usage::Usage;

/// The node's components, built bottom-up by [`RunningNode::start`](super::RunningNode::start), each from the
/// narrow handles it needs. No component is handed this struct: it is how the runtime
/// (and tests) reach them.
pub struct Node {
    pub config: NodeConfig,
    /// This node as a member: membership, credential, signing key.
    pub identity: Arc<NodeIdentity>,
    pub tls_identity: Arc<TlsIdentity>,
    /// The data-space CA, for peers' certificates.
    pub data_space_roots: RootCertStore,
    pub storage: Arc<dyn Storage>,
    /// The same storage as `storage`, with the gate a backup closes (`crate::backup`).
    pub gated_storage: Arc<GatedStorage>,
    /// The tamper-evident log of this node's events.
    pub audit: AuditLog,
    /// Metrics, and the trace and metric export when a collector is configured.
    pub telemetry: Arc<Telemetry>,
    /// Security alerts (`[alerts]`).
    pub alerts: Alerts,
    pub trust: Arc<TrustStore>,
    /// Connections to other members' peer APIs.
    pub peers: Arc<Peers>,
    /// Fetching the trust list from the authority.
    pub refresh: Arc<TrustListRefresh>,
    /// Signing checkpoints and collecting witnesses' cosignatures.
    pub cosigning: Arc<Cosigning>,
    /// This node as a witness of other members' logs.
    pub witness: Arc<WitnessStore>,
    /// Published products and the offers peers may see.
    pub catalog: Arc<Catalog>,
    /// Negotiations and agreements, both sides.
    pub contracts: Arc<Contracts>,
    /// Compute-to-data, both sides.
    pub queries: Arc<Queries>,
    /// Delivery of agreed products, both sides.
    pub transfers: Arc<Transfers>,
    /// Usage control of received copies and of agreements this node signed.
    pub usage: Arc<Usage>,
    /// Status and backups for the operator.
    pub ops: Arc<Ops>,
    pub peer_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// The base URL other connectors reach the DSP listener at, when it is on.
    pub dsp_url: Option<String>,
    /// The web console's address and sign-in links, when it is on.
    pub console: Option<Arc<crate::local::ConsoleDoor>>,
}

impl Node {
    /// The services of the peer API, each with its components.
    pub(super) fn peer_services(&self) -> PeerServices {
        PeerServices {
            node: PeerService {
                identity: self.identity.clone(),
                trust: self.trust.clone(),
            },
            catalog: CatalogService {
                catalog: self.catalog.clone(),
                audit: self.audit.clone(),
            },
            negotiation: NegotiationService {
                contracts: self.contracts.clone(),
                max_signatures: self.config.limits.max_envelope_signatures,
            },
            transfer: TransferService {
                transfers: self.transfers.clone(),
                max_signatures: self.config.limits.max_envelope_signatures,
            },
            audit: self.audit_service(),
            witness: WitnessService {
                witness: self.witness.clone(),
                identity: self.identity.clone(),
                trust: self.trust.clone(),
            },
            usage_control: UsageControlService {
                usage: self.usage.clone(),
                max_signatures: self.config.limits.max_envelope_signatures,
            },
            query: QueryService {
                queries: self.queries.clone(),
            },
        }
    }

    /// The services of the local API.
    pub(super) fn local_services(&self) -> LocalServices {
        LocalServices {
            audit: self.audit_service(),
            admin: AdminService {
                identity: self.identity.clone(),
                trust: self.trust.clone(),
                refresh: self.refresh.clone(),
                authority_address: self.config.authority.address.clone(),
                peers: self.peers.clone(),
                audit: self.audit.clone(),
                catalog: self.catalog.clone(),
                contracts: self.contracts.clone(),
                transfers: self.transfers.clone(),
                usage: self.usage.clone(),
                queries: self.queries.clone(),
                ops: self.ops.clone(),
                metrics: self.telemetry.metrics.clone(),
                peer_addr: self.peer_addr,
                admin_addr: self.admin_addr,
                dsp: self
                    .dsp_url
                    .as_ref()
                    .map(|url| -> Arc<dyn crate::transfer::RemotePull> {
                        Arc::new(crate::dsp::pull::DspConsumer {
                            base_url: url.clone(),
                            tls_identity: self.tls_identity.clone(),
                            roots: self.data_space_roots.clone(),
                            storage: self.storage.clone(),
                            contracts: self.contracts.clone(),
                            transfers: self.transfers.clone(),
                        })
                    }),
                dsp_control: Arc::new(crate::dsp::control::Control {
                    storage: self.storage.clone(),
                    contracts: self.contracts.clone(),
                    audit: self.audit.clone(),
                }),
                console: self.console.clone(),
            },
            usage: UsageService {
                usage: self.usage.clone(),
                dsp_control: Arc::new(crate::dsp::control::Control {
                    storage: self.storage.clone(),
                    contracts: self.contracts.clone(),
                    audit: self.audit.clone(),
                }),
            },
        }
    }

    fn audit_service(&self) -> AuditService {
        AuditService {
            cosigning: self.cosigning.clone(),
            identity: self.identity.clone(),
        }
    }
}
