//! The gRPC services, kept thin: they read the authenticated caller from the request,
//! convert messages, and call into the concern's own code.
//!
//! - Peer API (other members, mutual TLS with data-space certificates): `liutong.v1.Node`,
//!   `liutong.v1.Audit`, `liutong.v1.Witness`, `liutong.v1.Query` (compute-to-data),
//!   `grpc.health.v1.Health`, and server reflection v1 and v1alpha.
//! - Local API (the `liutong` command and local applications, role certificates):
//!   `liutong.v1.Admin`, `liutong.v1.Audit`, `liutong.v1.Usage` and reflection.
//! - The peer API also serves `liutong.v1.UsageControl` (usage notices, deletion
//!   receipts, revocations).
//!
//! The audit services live in `service/audit.rs`.
//!
//! Both routers sit behind [`AuthLayer`], so nothing here answers an unauthenticated
//! caller, health and reflection included.

pub mod audit;
pub mod catalog;
pub mod contract;
pub mod ops;
pub mod query;
pub mod transfer;
pub mod usage;

use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use tonic::server::NamedService;
use tonic::transport::Server;
use tonic::transport::server::Router;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::HealthService;
use tower::layer::util::{Identity, Stack};

use crate::audit::log::AuditLog;
use crate::authority::participant_from_certificate;
use crate::base::VERSION;
use crate::base::clock::now;
use crate::catalog::Catalog;
use crate::contract::Contracts;
use crate::health::NodeHealth;
use crate::identity::{Membership, NodeIdentity};
use crate::local::{LocalAuthenticator, LocalRole};
use crate::outbound::{Peers, TrustListRefresh};
use crate::query::Queries;
use crate::telemetry::{Metrics, RpcLayer};
use crate::tls::auth::{AuthLayer, Authenticate, ChainVerifier};
use crate::tls::{self, certs};
use crate::transfer::Transfers;
use crate::trust::{TrustError, TrustStatus, TrustStore};
use crate::usage::Usage;
use liutong_proto::v1::admin_server::{Admin, AdminServer};
use liutong_proto::v1::audit_server::AuditServer;
use liutong_proto::v1::catalog_server::CatalogServer;
use liutong_proto::v1::negotiation_server::NegotiationServer;
use liutong_proto::v1::node_client::NodeClient;
use liutong_proto::v1::node_server::{Node, NodeServer};
use liutong_proto::v1::query_server::QueryServer;
use liutong_proto::v1::transfer_server::TransferServer;
use liutong_proto::v1::usage_control_server::UsageControlServer;
use liutong_proto::v1::usage_server::UsageServer;
use liutong_proto::v1::witness_server::WitnessServer;
use liutong_proto::v1::{
    ApproveContractRequest, BackupChunk, BackupRequest, Contract, DescribePeerRequest,
    DescribeRequest, DescribeResponse, GetContractRequest, GetProductRequest, ListContractsRequest,
    ListContractsResponse, ListOffersResponse, ListProductsRequest, ListProductsResponse,
    ListTransfersRequest, ListTransfersResponse, PeerCatalogRequest, Product, PublishRequest,
    PullTransferRequest, RefreshTrustListRequest, RefreshTrustListResponse, RejectContractRequest,
    RequestContractRequest, StatusRequest, StatusResponse, TransferProgress, TrustListStatus,
};

/// A verified peer: its certificate chains to the data-space CA and the trust list
/// says it is a current member presenting its registered certificate.
#[derive(Clone, Debug)]
pub struct PeerCaller(pub Membership);

/// Authenticates peers: certificate chain, then membership in the trust list.
pub struct PeerAuthenticator {
    pub chain: ChainVerifier,
    pub trust: Arc<crate::trust::TrustStore>,
}

impl Authenticate for PeerAuthenticator {
    type Caller = PeerCaller;

    fn authenticate(&self, chain: &[CertificateDer<'static>]) -> Result<PeerCaller, Status> {
        self.chain.verify(chain).map_err(|reason| {
            Status::unauthenticated(format!("client certificate refused: {reason}"))
        })?;
        let participant = participant_from_certificate(&chain[0])?;
        let membership =
            self.trust
                .check_member(&participant, &certs::fingerprint(&chain[0]), now())?;
        Ok(PeerCaller(membership))
    }
}

/// The names the reflection services answer to on every port (both are served).
const REFLECTION: [&str; 2] = [
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// Server reflection v1 and v1alpha for a port that serves `services` (besides
/// reflection): they list those services and describe only the files that define them
/// and what those files import, so a client exploring a port sees what it can call
/// there and nothing of the other port's API.
fn reflection_services(
    services: &[&str],
) -> Result<
    (
        tonic_reflection::server::v1::ServerReflectionServer<
            impl tonic_reflection::server::v1::ServerReflection,
        >,
        tonic_reflection::server::v1alpha::ServerReflectionServer<
            impl tonic_reflection::server::v1alpha::ServerReflection,
        >,
    ),
    tonic_reflection::server::Error,
> {
    let liutong = defining(liutong_proto::FILE_DESCRIPTOR_SET, services)?;
    let health = defining(tonic_health::pb::FILE_DESCRIPTOR_SET, services)?;
    let builder = || {
        let builder = tonic_reflection::server::Builder::configure()
            .register_file_descriptor_set(liutong.clone())
            .register_file_descriptor_set(health.clone())
            // Both reflection versions are served on each port, so both are described.
            .include_reflection_service(false)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(
                tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
            );
        services
            .iter()
            .chain(&REFLECTION)
            .fold(builder, |b, name| b.with_service_name(*name))
    };
    Ok((builder().build_v1()?, builder().build_v1alpha()?))
}

/// The files of the encoded descriptor set `encoded` that define any of `services`,
/// with only those of their services, and every file they import.
fn defining(
    encoded: &[u8],
    services: &[&str],
) -> Result<prost_types::FileDescriptorSet, tonic_reflection::server::Error> {
    use prost::Message as _;
    let mut set = prost_types::FileDescriptorSet::decode(encoded)?;
    let mut needed = std::collections::HashSet::new();
    for file in &mut set.file {
        let package = file.package().to_owned();
        file.service
            .retain(|s| services.contains(&format!("{package}.{}", s.name()).as_str()));
        if !file.service.is_empty() {
            needed.insert(file.name().to_owned());
        }
    }
    // A set lists each file after those it imports: walking it backwards reaches every
    // importer before the files it imports.
    for file in set.file.iter().rev() {
        if needed.contains(file.name()) {
            needed.extend(file.dependency.iter().cloned());
        }
    }
    set.file.retain(|f| needed.contains(f.name()));
    Ok(set)
}

/// What [`peer_router`] serves besides reflection: all that its reflection lists.
const PEER_SERVICES: &[&str] = &[
    <HealthServer<HealthService> as NamedService>::NAME,
    <NodeServer<PeerService> as NamedService>::NAME,
    <CatalogServer<catalog::CatalogService> as NamedService>::NAME,
    <NegotiationServer<contract::NegotiationService> as NamedService>::NAME,
    <TransferServer<transfer::TransferService> as NamedService>::NAME,
    <AuditServer<audit::AuditService> as NamedService>::NAME,
    <WitnessServer<audit::WitnessService> as NamedService>::NAME,
    <UsageControlServer<usage::UsageControlService> as NamedService>::NAME,
    <QueryServer<query::QueryService> as NamedService>::NAME,
];

/// What [`admin_router`] serves besides reflection: all that its reflection lists.
const LOCAL_SERVICES: &[&str] = &[
    <AuditServer<audit::AuditService> as NamedService>::NAME,
    <AdminServer<AdminService> as NamedService>::NAME,
    <UsageServer<usage::UsageService> as NamedService>::NAME,
];

/// The services of the peer API, each holding only the components it needs.
pub struct PeerServices {
    pub node: PeerService,
    pub catalog: catalog::CatalogService,
    pub negotiation: contract::NegotiationService,
    pub transfer: transfer::TransferService,
    pub audit: audit::AuditService,
    pub witness: audit::WitnessService,
    pub usage_control: usage::UsageControlService,
    pub query: query::QueryService,
}

/// The services of the local API.
pub struct LocalServices {
    pub audit: audit::AuditService,
    pub admin: AdminService,
    pub usage: usage::UsageService,
}

/// The peer API router: telemetry outermost (refusals are counted too), then
/// authentication. Its health service answers from `health`. `limit` is
/// `limits.max_message_bytes`.
pub fn peer_router(
    services: PeerServices,
    limit: usize,
    telemetry: RpcLayer,
    auth: AuthLayer<PeerAuthenticator>,
    health: &NodeHealth,
) -> Router<Stack<AuthLayer<PeerAuthenticator>, Stack<RpcLayer, Identity>>> {
    // The descriptor sets are compiled into the binary; they always parse.
    let (reflection_v1, reflection_v1alpha) =
        reflection_services(PEER_SERVICES).expect("embedded descriptor sets are valid");
    Server::builder()
        .layer(telemetry)
        .layer(auth)
        .add_service(health.service())
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(
            NodeServer::new(services.node)
                .max_decoding_message_size(limit)
                .max_encoding_message_size(limit),
        )
        .add_service(
            CatalogServer::new(services.catalog)
                .max_decoding_message_size(limit)
                .max_encoding_message_size(limit),
        )
        .add_service(
            NegotiationServer::new(services.negotiation)
                .max_decoding_message_size(limit)
                .max_encoding_message_size(limit),
        )
        .add_service(
            TransferServer::new(services.transfer)
                .max_decoding_message_size(limit)
                .max_encoding_message_size(limit),
        )
        .add_service(
            AuditServer::new(services.audit)
                .max_decoding_message_size(limit)
                .max_encoding_message_size(limit),
        )
        .add_service(
            WitnessServer::new(services.witness)
                .max_decoding_message_size(limit)
                .max_encoding_message_size(limit),
        )
        .add_service(
            UsageControlServer::new(services.usage_control)
                .max_decoding_message_size(limit)
                .max_encoding_message_size(limit),
        )
        .add_service(
            QueryServer::new(services.query)
                .max_decoding_message_size(limit)
                .max_encoding_message_size(limit),
        )
}

/// The local API router, layered like the peer API's.
pub fn admin_router(
    services: LocalServices,
    limit: usize,
    telemetry: RpcLayer,
    auth: AuthLayer<LocalAuthenticator>,
) -> Router<Stack<AuthLayer<LocalAuthenticator>, Stack<RpcLayer, Identity>>> {
    let (reflection_v1, reflection_v1alpha) =
        reflection_services(LOCAL_SERVICES).expect("embedded descriptor sets are valid");
    Server::builder()
        .layer(telemetry)
        .layer(auth)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(
            AuditServer::new(services.audit)
                .max_decoding_message_size(limit)
                .max_encoding_message_size(limit),
        )
        .add_service(
            AdminServer::new(services.admin)
                .max_decoding_message_size(limit)
                .max_encoding_message_size(limit),
        )
        .add_service(
            UsageServer::new(services.usage)
                .max_decoding_message_size(limit)
                .max_encoding_message_size(limit),
        )
}

/// `Node.Describe` on the peer API.
pub struct PeerService {
    pub identity: Arc<NodeIdentity>,
    pub trust: Arc<TrustStore>,
}

fn peer_caller<T>(request: &Request<T>) -> Result<&Membership, Status> {
    request
        .extensions()
        .get::<PeerCaller>()
        .map(|c| &c.0)
        .ok_or_else(|| Status::unauthenticated("the caller was not authenticated"))
}

fn local_role<T>(request: &Request<T>) -> Result<LocalRole, Status> {
    request
        .extensions()
        .get::<LocalRole>()
        .copied()
        .ok_or_else(|| Status::unauthenticated("the caller was not authenticated"))
}

#[tonic::async_trait]
impl Node for PeerService {
    async fn describe(
        &self,
        request: Request<DescribeRequest>,
    ) -> Result<Response<DescribeResponse>, Status> {
        let caller = peer_caller(&request)?;
        Ok(Response::new(describe_response(
            &self.identity,
            &self.trust,
            Some(caller),
        )))
    }
}

fn describe_response(
    identity: &NodeIdentity,
    trust: &TrustStore,
    caller: Option<&Membership>,
) -> DescribeResponse {
    DescribeResponse {
        node: Some(identity.membership.to_proto()),
        node_credential: Some(identity.credential.clone().into()),
        caller: caller.map(Membership::to_proto),
        trust_list_sequence: trust.status().sequence,
        software_version: VERSION.to_owned(),
    }
}

/// `Admin` on the local API: the operator's calls, each handed to its component.
pub struct AdminService {
    pub identity: Arc<NodeIdentity>,
    pub trust: Arc<TrustStore>,
    pub refresh: Arc<TrustListRefresh>,
    /// `authority.address`, shown with the trust list's status.
    pub authority_address: String,
    pub peers: Arc<Peers>,
    pub audit: AuditLog,
    pub catalog: Arc<Catalog>,
    pub contracts: Arc<Contracts>,
    pub transfers: Arc<Transfers>,
    pub usage: Arc<Usage>,
    pub queries: Arc<Queries>,
    pub ops: Arc<ops::Ops>,
    pub metrics: Metrics,
    pub peer_addr: std::net::SocketAddr,
    pub admin_addr: std::net::SocketAddr,
}

fn trust_status_proto(status: TrustStatus, authority: &str) -> TrustListStatus {
    TrustListStatus {
        sequence: status.sequence,
        issued_at_unix: status.issued_at,
        expires_at_unix: status.expires_at,
        applied_at_unix: status.applied_at,
        members: status.members,
        revocations: status.revocations,
        last_error: status.last_error.unwrap_or_default(),
        authority_address: authority.to_owned(),
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn status(
        &self,
        request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        let role = local_role(&request)?;
        let base = StatusResponse {
            node: Some(self.identity.membership.to_proto()),
            caller_role: role.to_string(),
            peer_listen: self.peer_addr.to_string(),
            admin_listen: self.admin_addr.to_string(),
            trust_list: Some(trust_status_proto(
                self.trust.status(),
                &self.authority_address,
            )),
            software_version: VERSION.to_owned(),
            ..StatusResponse::default()
        };
        self.ops.status(base).map(Response::new)
    }

    async fn refresh_trust_list(
        &self,
        request: Request<RefreshTrustListRequest>,
    ) -> Result<Response<RefreshTrustListResponse>, Status> {
        local_role(&request)?.require(&[LocalRole::Admin], "refreshing the trust list")?;
        let status = self.refresh.refresh().await.map_err(trust_error_status)?;
        Ok(Response::new(RefreshTrustListResponse {
            trust_list: Some(trust_status_proto(status, &self.authority_address)),
        }))
    }

    async fn describe_peer(
        &self,
        request: Request<DescribePeerRequest>,
    ) -> Result<Response<DescribeResponse>, Status> {
        local_role(&request)?.require(&[LocalRole::Admin], "calling a peer")?;
        let address = request.into_inner().address;
        if address.trim().is_empty() {
            return Err(Status::invalid_argument(
                "address: give the peer's host:port",
            ));
        }
        let channel = self
            .peers
            .connect_peer(&address)
            .await
            .map_err(peer_connect_status)?;
        let answer = NodeClient::new(channel)
            .describe(DescribeRequest {})
            .await
            .map_err(|s| {
                Status::new(
                    s.code(),
                    format!("the peer at {address} answered: {}", s.message()),
                )
            })?;
        Ok(answer)
    }

    async fn publish_product(
        &self,
        request: Request<tonic::Streaming<PublishRequest>>,
    ) -> Result<Response<Product>, Status> {
        local_role(&request)?.require(&[LocalRole::Admin], "publishing a product")?;
        catalog::publish(
            &self.catalog,
            &self.usage,
            &self.audit,
            self.identity.participant_id(),
            request.into_inner(),
        )
        .await
        .map(Response::new)
    }

    async fn list_products(
        &self,
        request: Request<ListProductsRequest>,
    ) -> Result<Response<ListProductsResponse>, Status> {
        local_role(&request)?
            .require(&[LocalRole::Admin, LocalRole::Auditor], "listing products")?;
        let products = self
            .catalog
            .products
            .list()
            .map_err(catalog::product_status)?;
        Ok(Response::new(ListProductsResponse {
            products: products.iter().map(crate::catalog::product_proto).collect(),
        }))
    }

    async fn get_product(
        &self,
        request: Request<GetProductRequest>,
    ) -> Result<Response<ListProductsResponse>, Status> {
        local_role(&request)?
            .require(&[LocalRole::Admin, LocalRole::Auditor], "reading a product")?;
        let id = request.into_inner().product_id;
        let versions = self
            .catalog
            .products
            .versions(&id)
            .map_err(catalog::product_status)?;
        if versions.is_empty() {
            return Err(Status::not_found(format!("product {id} does not exist")));
        }
        Ok(Response::new(ListProductsResponse {
            products: versions.iter().map(crate::catalog::product_proto).collect(),
        }))
    }

    async fn peer_catalog(
        &self,
        request: Request<PeerCatalogRequest>,
    ) -> Result<Response<ListOffersResponse>, Status> {
        local_role(&request)?.require(&[LocalRole::Admin], "reading a peer's catalog")?;
        catalog::peer_catalog(&self.peers, request.into_inner())
            .await
            .map(Response::new)
    }

    type PullTransferStream =
        tokio_stream::wrappers::ReceiverStream<Result<TransferProgress, Status>>;

    async fn pull_transfer(
        &self,
        request: Request<PullTransferRequest>,
    ) -> Result<Response<Self::PullTransferStream>, Status> {
        local_role(&request)?.require(&[LocalRole::Admin], "pulling a transfer")?;
        let request = request.into_inner();
        if request.agreement_id.trim().is_empty() {
            return Err(Status::invalid_argument("agreement_id: name the agreement"));
        }
        Ok(Response::new(transfer::pull(
            self.transfers.clone(),
            self.metrics.clone(),
            request,
        )))
    }

    async fn list_transfers(
        &self,
        request: Request<ListTransfersRequest>,
    ) -> Result<Response<ListTransfersResponse>, Status> {
        local_role(&request)?
            .require(&[LocalRole::Admin, LocalRole::Auditor], "listing transfers")?;
        let copies = self.transfers.copies().map_err(transfer::transfer_status)?;
        Ok(Response::new(ListTransfersResponse {
            transfers: copies.iter().map(crate::transfer::progress).collect(),
        }))
    }

    type BackupStream = tokio_stream::wrappers::ReceiverStream<Result<BackupChunk, Status>>;

    async fn backup(
        &self,
        request: Request<BackupRequest>,
    ) -> Result<Response<Self::BackupStream>, Status> {
        let role = local_role(&request)?;
        self.ops.backup(role).await.map(Response::new)
    }

    async fn request_contract(
        &self,
        request: Request<RequestContractRequest>,
    ) -> Result<Response<Contract>, Status> {
        local_role(&request)?.require(&[LocalRole::Admin], "requesting a contract")?;
        let r = request.into_inner();
        if r.peer.trim().is_empty() {
            return Err(Status::invalid_argument(
                "peer: give the provider's host:port",
            ));
        }
        if r.offer_id.trim().is_empty() {
            return Err(Status::invalid_argument("offer_id: name the offer"));
        }
        let started = std::time::Instant::now();
        let result = self
            .contracts
            .request(&r.peer, &r.offer_id, &r.purpose)
            .await
            .map_err(contract::contract_status);
        // The state reached, or the gRPC code of the failure (e.g. PermissionDenied).
        let outcome = match &result {
            Ok(n) => n.state.to_string(),
            Err(status) => format!("{:?}", status.code()),
        };
        self.metrics
            .negotiation_finished(outcome, started.elapsed());
        result.map(|n| Response::new(n.to_proto()))
    }

    async fn list_contracts(
        &self,
        request: Request<ListContractsRequest>,
    ) -> Result<Response<ListContractsResponse>, Status> {
        local_role(&request)?
            .require(&[LocalRole::Admin, LocalRole::Auditor], "listing contracts")?;
        let mut all = self.contracts.list().map_err(contract::contract_status)?;
        all.sort_by_key(|n| n.created_at);
        Ok(Response::new(ListContractsResponse {
            contracts: all.iter().map(|n| n.to_proto()).collect(),
        }))
    }

    async fn get_contract(
        &self,
        request: Request<GetContractRequest>,
    ) -> Result<Response<Contract>, Status> {
        local_role(&request)?.require(
            &[LocalRole::Admin, LocalRole::Auditor],
            "reading a contract",
        )?;
        let id = request.into_inner().negotiation_id;
        let contracts = &self.contracts;
        let n = match contracts.get(&id).map_err(contract::contract_status)? {
            Some(n) => Some(n),
            None => contracts
                .by_agreement(&id)
                .map_err(contract::contract_status)?,
        }
        .ok_or_else(|| Status::not_found(format!("no negotiation or agreement {id}")))?;
        Ok(Response::new(n.to_proto()))
    }

    async fn approve_contract(
        &self,
        request: Request<ApproveContractRequest>,
    ) -> Result<Response<Contract>, Status> {
        local_role(&request)?.require(&[LocalRole::Admin], "approving a contract")?;
        let id = request.into_inner().negotiation_id;
        self.contracts
            .approve(&id, "local admin")
            .await
            .map(|n| Response::new(n.to_proto()))
            .map_err(contract::contract_status)
    }

    async fn reject_contract(
        &self,
        request: Request<RejectContractRequest>,
    ) -> Result<Response<Contract>, Status> {
        local_role(&request)?.require(&[LocalRole::Admin], "rejecting a contract")?;
        let r = request.into_inner();
        self.contracts
            .reject(&r.negotiation_id, &r.reason)
            .await
            .map(|n| Response::new(n.to_proto()))
            .map_err(contract::contract_status)
    }

    async fn query_aggregate(
        &self,
        request: Request<liutong_proto::v1::QueryAggregateRequest>,
    ) -> Result<Response<liutong_proto::v1::AggregateResponse>, Status> {
        local_role(&request)?.require(&[LocalRole::Admin], "sending an aggregate query")?;
        query::send(&self.queries, request.into_inner())
            .await
            .map(Response::new)
    }
}

/// A failure to reach a peer: `UNAVAILABLE`, or `INTERNAL` if this node's own TLS set-up
/// is broken.
fn peer_connect_status(e: tls::TlsError) -> Status {
    match e {
        tls::TlsError::Connect { .. } => Status::unavailable(e.to_string()),
        other => Status::internal(other.to_string()),
    }
}

/// `UNAVAILABLE` with the storage failure's own words when `e` is, or is caused by,
/// storage in the failed state (see `storage::durability`), which refuses every write
/// until the node is restarted; `None` for any other error.
pub(crate) fn storage_failure_status(e: &(dyn std::error::Error + 'static)) -> Option<Status> {
    crate::storage::durability::failure_in(e).map(|f| Status::unavailable(f.to_string()))
}

fn trust_error_status(e: TrustError) -> Status {
    if let Some(status) = storage_failure_status(&e) {
        return status;
    }
    match e {
        TrustError::Fetch { .. } => Status::unavailable(e.to_string()),
        TrustError::Storage(_) => Status::internal(e.to_string()),
        TrustError::Signature(_) => Status::data_loss(e.to_string()),
        _ => Status::failed_precondition(e.to_string()),
    }
}
