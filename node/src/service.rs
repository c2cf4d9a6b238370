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
//! The audit services live in `service/audit.rs`, the local API's `Admin` in
//! `service/admin.rs`, and who is calling (the peer authenticator, the caller of a
//! request) in `service/caller.rs`.
//!
//! Both routers sit behind [`AuthLayer`], so nothing here answers an unauthenticated
//! caller, health and reflection included.

mod admin;
pub mod audit;
mod caller;
pub mod catalog;
pub mod contract;
mod envelopes;
pub mod errors;
pub mod limits;
pub mod ops;
pub mod paging;
pub mod query;
pub mod transfer;
pub mod usage;

pub use admin::AdminService;
pub use caller::{PeerAuthenticator, PeerCaller};

use std::sync::Arc;

use tonic::server::NamedService;
use tonic::transport::Server;
use tonic::transport::server::Router;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::HealthService;
use tower::layer::util::{Identity, Stack};

use crate::base::VERSION;
use crate::config::Limits;
use crate::health::NodeHealth;
use crate::identity::{Membership, NodeIdentity};
use crate::local::LocalAuthenticator;
use crate::telemetry::RpcLayer;
use crate::tls::auth::AuthLayer;
use crate::trust::TrustStore;
use caller::peer_caller;
use limits::LimitsLayer;
use liutong_proto::v1::admin_server::AdminServer;
use liutong_proto::v1::audit_server::AuditServer;
use liutong_proto::v1::catalog_server::CatalogServer;
use liutong_proto::v1::negotiation_server::NegotiationServer;
use liutong_proto::v1::node_server::{Node, NodeServer};
use liutong_proto::v1::query_server::QueryServer;
use liutong_proto::v1::transfer_server::TransferServer;
use liutong_proto::v1::usage_control_server::UsageControlServer;
use liutong_proto::v1::usage_server::UsageServer;
use liutong_proto::v1::witness_server::WitnessServer;
use liutong_proto::v1::{DescribeRequest, DescribeResponse};

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

/// A gRPC server with the HTTP/2 limits of `[limits]`: at most `max_concurrent_streams`
/// calls per connection (a client opening more waits), `stream_window_bytes` of
/// flow-control window per call and twice that per connection (what a client may send
/// before the node reads it), and keepalive pings that close a connection whose peer
/// no longer answers. Messages larger than `max_message_bytes` are refused per service.
fn server(limits: &Limits) -> Server {
    Server::builder()
        .max_concurrent_streams(limits.max_concurrent_streams)
        .initial_stream_window_size(limits.stream_window_bytes)
        .initial_connection_window_size(limits.stream_window_bytes.saturating_mul(2))
        .http2_keepalive_interval(Some(limits.keepalive_interval))
        .http2_keepalive_timeout(Some(limits.keepalive_interval))
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

/// The layers of the peer API router, outermost last.
pub type PeerLayers =
    Stack<LimitsLayer, Stack<AuthLayer<PeerAuthenticator>, Stack<RpcLayer, Identity>>>;

/// The layers of the local API router, outermost last.
pub type LocalLayers =
    Stack<LimitsLayer, Stack<AuthLayer<LocalAuthenticator>, Stack<RpcLayer, Identity>>>;

/// The peer API router: telemetry outermost (refusals are counted too), then
/// authentication, then the per-member limits and the record of refusals (which need
/// the authenticated caller). Its health service answers from `health`. `limit` is
/// `limits.max_message_bytes`.
pub fn peer_router(
    services: PeerServices,
    limits: &Limits,
    telemetry: RpcLayer,
    auth: AuthLayer<PeerAuthenticator>,
    member_limits: LimitsLayer,
    health: &NodeHealth,
) -> Router<PeerLayers> {
    // The descriptor sets are compiled into the binary; they always parse.
    let (reflection_v1, reflection_v1alpha) =
        reflection_services(PEER_SERVICES).expect("embedded descriptor sets are valid");
    let limit = limits.max_message_bytes;
    server(limits)
        .layer(telemetry)
        .layer(auth)
        .layer(member_limits)
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
    limits: &Limits,
    telemetry: RpcLayer,
    auth: AuthLayer<LocalAuthenticator>,
    member_limits: LimitsLayer,
) -> Router<LocalLayers> {
    let (reflection_v1, reflection_v1alpha) =
        reflection_services(LOCAL_SERVICES).expect("embedded descriptor sets are valid");
    let limit = limits.max_message_bytes;
    server(limits)
        .layer(telemetry)
        .layer(auth)
        .layer(member_limits)
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
