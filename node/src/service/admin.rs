//! `liutong.v1.Admin` on the local API: the operator's calls (status, the trust list,
//! products, contracts, transfers, backups, aggregate queries), each checked against the
//! caller's local role and handed to its component.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::audit::log::AuditLog;
use crate::base::VERSION;
use crate::base::bounded;
use crate::catalog::Catalog;
use crate::contract::Contracts;
use crate::identity::{MemberRole, NodeIdentity};
use crate::local::LocalRole;
use crate::outbound::{Peers, TrustListRefresh};
use crate::query::Queries;
use crate::telemetry::Metrics;
use crate::transfer::Transfers;
use crate::trust::{TrustStatus, TrustStore};
use crate::usage::Usage;
use liutong_proto::v1::admin_server::Admin;
use liutong_proto::v1::node_client::NodeClient;
use liutong_proto::v1::{
    ApproveContractRequest, BackupChunk, BackupRequest, Contract, DescribePeerRequest,
    DescribeRequest, DescribeResponse, GetContractRequest, GetProductRequest, ListContractsRequest,
    ListContractsResponse, ListOffersResponse, ListProductsRequest, ListProductsResponse,
    ListTransfersRequest, ListTransfersResponse, PeerCatalogRequest, Product, PublishRequest,
    PullTransferRequest, RefreshTrustListRequest, RefreshTrustListResponse, RejectContractRequest,
    RequestContractRequest, StatusRequest, StatusResponse, TransferProgress, TrustListStatus,
};

use super::caller::{local_role, require_role};
use super::errors::into_status;
use super::paging::{PageRequest, next_page_token};
use super::{catalog, ops, query, transfer};

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
    /// The DSP consumer role, when the DSP listener is on (its callbacks arrive there).
    pub dsp: Option<Arc<dyn crate::transfer::RemotePull>>,
    /// The DSP binding's provider commands on its transfers.
    pub dsp_control: Arc<dyn crate::transfer::ProviderControl>,
    /// The web console, when `console.listen` is set.
    pub console: Option<Arc<crate::local::ConsoleDoor>>,
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

impl AdminService {
    /// Publishes a product for a local caller with `role`: `Admin.PublishProduct`, and the
    /// web console's upload form.
    pub async fn publish_as<S>(&self, role: LocalRole, messages: S) -> Result<Product, Status>
    where
        S: tokio_stream::Stream<Item = Result<PublishRequest, Status>> + Unpin,
    {
        role.require(&[LocalRole::Admin], "publishing a product")?;
        require_role(
            &self.trust.own_membership(&self.identity.membership),
            MemberRole::Provider,
            "publishing a product",
        )?;
        catalog::publish(
            &self.catalog,
            &self.usage,
            &self.audit,
            self.identity.participant_id(),
            messages,
        )
        .await
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
        let status = self.refresh.refresh().await.map_err(into_status)?;
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
            .map_err(into_status)?;
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
        let role = local_role(&request)?;
        self.publish_as(role, request.into_inner())
            .await
            .map(Response::new)
    }

    async fn list_products(
        &self,
        request: Request<ListProductsRequest>,
    ) -> Result<Response<ListProductsResponse>, Status> {
        local_role(&request)?
            .require(&[LocalRole::Admin, LocalRole::Auditor], "listing products")?;
        let r = request.into_inner();
        let page = PageRequest::parse("products", r.page_size, &r.page_token)?;
        let after = page.after().map(String::from_utf8_lossy);
        let (products, more) = self
            .catalog
            .products
            .list_page(after.as_deref(), page.size)
            .map_err(into_status)?;
        let next = more
            .then(|| products.last().map(|p| p.product_id.as_bytes()))
            .flatten();
        Ok(Response::new(ListProductsResponse {
            next_page_token: next_page_token("products", next),
            products: products.iter().map(crate::catalog::product_proto).collect(),
        }))
    }

    async fn get_product(
        &self,
        request: Request<GetProductRequest>,
    ) -> Result<Response<ListProductsResponse>, Status> {
        local_role(&request)?
            .require(&[LocalRole::Admin, LocalRole::Auditor], "reading a product")?;
        let r = request.into_inner();
        let id = bounded::id("product_id", &r.product_id).map_err(into_status)?;
        // A token names the product it pages through.
        let list = format!("versions of {id}");
        let page = PageRequest::parse(&list, r.page_size, &r.page_token)?;
        let versions = self
            .catalog
            .products
            .versions_page(&id, page.after(), page.size)
            .map_err(into_status)?;
        if versions.items.is_empty() && page.after.is_none() {
            return Err(Status::not_found(format!("product {id} does not exist")));
        }
        Ok(Response::new(ListProductsResponse {
            next_page_token: next_page_token(&list, versions.next.as_deref()),
            products: versions
                .items
                .iter()
                .map(crate::catalog::product_proto)
                .collect(),
        }))
    }

    async fn peer_catalog(
        &self,
        request: Request<PeerCatalogRequest>,
    ) -> Result<Response<ListOffersResponse>, Status> {
        local_role(&request)?.require(&[LocalRole::Admin], "reading a peer's catalog")?;
        let r = request.into_inner();
        if crate::contract::over_binding(&r.address) {
            let (offers, next_page_token) = self
                .contracts
                .catalog_over_binding(&r.address, r.page_size, &r.page_token)
                .await
                .map_err(into_status)?;
            return Ok(Response::new(liutong_proto::v1::ListOffersResponse {
                offers,
                next_page_token,
            }));
        }
        catalog::peer_catalog(&self.peers, r)
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
        bounded::id("agreement_id", &request.agreement_id).map_err(into_status)?;
        // Without a peer, the agreement's own: an agreement negotiated over DSP names
        // the provider's https:// endpoint, and is pulled over DSP too.
        let peer = if request.peer.is_empty() {
            self.contracts
                .by_agreement(&request.agreement_id)
                .map_err(into_status)?
                .map(|n| n.peer_address)
                .filter(|address| crate::contract::over_binding(address))
                .unwrap_or_default()
        } else {
            request.peer.clone()
        };
        let dsp = if peer.is_empty() {
            None
        } else if crate::contract::over_binding(&peer) {
            let Some(dsp) = &self.dsp else {
                return Err(Status::failed_precondition(
                    "pulling from a DSP peer needs this node's DSP listener (the provider \
                     sends the data address to it): set [dsp] listen in node.toml",
                ));
            };
            Some((dsp.clone(), peer))
        } else {
            return Err(Status::invalid_argument(
                "peer: a DSP peer is an https:// URL; leave it empty to pull over the \
                 agreement's own peer address",
            ));
        };
        Ok(Response::new(transfer::pull(
            dsp,
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
        let r = request.into_inner();
        let page = PageRequest::parse("transfers", r.page_size, &r.page_token)?;
        let after = page.after().map(String::from_utf8_lossy);
        let copies = self
            .transfers
            .copies_page(after.as_deref(), page.size)
            .map_err(into_status)?;
        let next = copies
            .next
            .as_deref()
            .and_then(crate::transfer::copy_key_agreement);
        Ok(Response::new(ListTransfersResponse {
            next_page_token: next_page_token("transfers", next.map(str::as_bytes)),
            transfers: copies.items.iter().map(crate::transfer::progress).collect(),
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
        bounded::offer_id("offer_id", &r.offer_id).map_err(into_status)?;
        bounded::purpose("purpose", &r.purpose).map_err(into_status)?;
        let started = std::time::Instant::now();
        let result = if crate::contract::over_binding(&r.peer) {
            self.contracts
                .request_over_binding(&r.peer, &r.offer_id, &r.purpose)
                .await
        } else {
            self.contracts
                .request(&r.peer, &r.offer_id, &r.purpose)
                .await
        }
        .map_err(into_status);
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
        let r = request.into_inner();
        let page = PageRequest::parse("contracts", r.page_size, &r.page_token)?;
        let found = self
            .contracts
            .page(page.after(), page.size)
            .await
            .map_err(into_status)?;
        Ok(Response::new(ListContractsResponse {
            next_page_token: next_page_token("contracts", found.next.as_deref()),
            contracts: found.negotiations.iter().map(|n| n.to_proto()).collect(),
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
        let id = bounded::id("negotiation_id", &request.into_inner().negotiation_id)
            .map_err(into_status)?;
        let contracts = &self.contracts;
        let n = match contracts.get(&id).map_err(into_status)? {
            Some(n) => Some(n),
            None => contracts.by_agreement(&id).map_err(into_status)?,
        }
        .ok_or_else(|| Status::not_found(format!("no negotiation or agreement {id}")))?;
        Ok(Response::new(n.to_proto()))
    }

    async fn approve_contract(
        &self,
        request: Request<ApproveContractRequest>,
    ) -> Result<Response<Contract>, Status> {
        local_role(&request)?.require(&[LocalRole::Admin], "approving a contract")?;
        let id = bounded::id("negotiation_id", &request.into_inner().negotiation_id)
            .map_err(into_status)?;
        self.contracts
            .approve(&id, "local admin")
            .await
            .map(|n| Response::new(n.to_proto()))
            .map_err(into_status)
    }

    async fn reject_contract(
        &self,
        request: Request<RejectContractRequest>,
    ) -> Result<Response<Contract>, Status> {
        local_role(&request)?.require(&[LocalRole::Admin], "rejecting a contract")?;
        let r = request.into_inner();
        bounded::id("negotiation_id", &r.negotiation_id).map_err(into_status)?;
        if !r.reason.trim().is_empty() {
            bounded::reason("reason", &r.reason).map_err(into_status)?;
        }
        self.contracts
            .reject(&r.negotiation_id, &r.reason)
            .await
            .map(|n| Response::new(n.to_proto()))
            .map_err(into_status)
    }

    async fn terminate_contract(
        &self,
        request: Request<liutong_proto::v1::TerminateContractRequest>,
    ) -> Result<Response<Contract>, Status> {
        local_role(&request)?.require(&[LocalRole::Admin], "terminating a contract")?;
        let r = request.into_inner();
        bounded::id("negotiation_id", &r.negotiation_id).map_err(into_status)?;
        if r.reason.trim().is_empty() {
            return Err(Status::invalid_argument(
                "reason: say why; the provider records it",
            ));
        }
        bounded::reason("reason", &r.reason).map_err(into_status)?;
        self.contracts
            .terminate_as_consumer(&r.negotiation_id, r.reason.trim())
            .await
            .map(|n| Response::new(n.to_proto()))
            .map_err(into_status)
    }

    async fn control_dsp_transfer(
        &self,
        request: Request<liutong_proto::v1::ControlDspTransferRequest>,
    ) -> Result<Response<liutong_proto::v1::DspTransferState>, Status> {
        use crate::transfer::{ControlError as ActionError, ProviderAction};
        local_role(&request)?.require(&[LocalRole::Admin], "controlling a DSP transfer")?;
        let r = request.into_inner();
        bounded::id("provider_pid", &r.provider_pid).map_err(into_status)?;
        let action = match r.action.as_str() {
            "suspend" => ProviderAction::Suspend,
            "restart" => ProviderAction::Restart,
            "terminate" => ProviderAction::Terminate,
            other => {
                return Err(Status::invalid_argument(format!(
                    "action {}: expected suspend, restart or terminate",
                    bounded::shown(other, 32)
                )));
            }
        };
        let reason = r.reason.trim();
        if action != ProviderAction::Restart {
            if reason.is_empty() {
                return Err(Status::invalid_argument(
                    "reason: say why; the consumer is told",
                ));
            }
            bounded::reason("reason", reason).map_err(into_status)?;
        }
        let record = self
            .dsp_control
            .control(r.provider_pid.clone(), action, reason.to_owned())
            .await
            .map_err(|e| match e {
                ActionError::Unknown(_) => Status::not_found(e.to_string()),
                ActionError::Invalid(_) => Status::failed_precondition(e.to_string()),
                ActionError::Unavailable(_) => Status::unavailable(e.to_string()),
            })?;
        Ok(Response::new(liutong_proto::v1::DspTransferState {
            provider_pid: record.provider_pid,
            consumer_pid: record.consumer_pid,
            consumer: record.consumer,
            agreement_id: record.agreement_id,
            state: record.state,
            role: role_name(record.role).to_owned(),
            provider: record.provider,
        }))
    }

    async fn list_dsp_transfers(
        &self,
        request: Request<liutong_proto::v1::ListDspTransfersRequest>,
    ) -> Result<Response<liutong_proto::v1::ListDspTransfersResponse>, Status> {
        local_role(&request)?.require(
            &[LocalRole::Admin, LocalRole::Auditor],
            "listing DSP transfers",
        )?;
        let r = request.into_inner();
        let page = PageRequest::parse("dsp-transfers", r.page_size, &r.page_token)?;
        let found = self
            .dsp_control
            .list(page.after.clone(), page.size)
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(liutong_proto::v1::ListDspTransfersResponse {
            next_page_token: next_page_token("dsp-transfers", found.next.as_deref()),
            transfers: found
                .items
                .into_iter()
                .map(|t| liutong_proto::v1::DspTransferEntry {
                    role: role_name(t.role).to_owned(),
                    provider_pid: t.provider_pid,
                    consumer_pid: t.consumer_pid,
                    peer: t.peer,
                    agreement_id: t.agreement_id,
                    state: t.state,
                    bytes_served: t.bytes_served,
                    updated_at: t.updated_at,
                    reason: t.reason,
                })
                .collect(),
        }))
    }

    async fn trace_copy(
        &self,
        request: Request<liutong_proto::v1::TraceCopyRequest>,
    ) -> Result<Response<liutong_proto::v1::TraceCopyResponse>, Status> {
        local_role(&request)?.require(&[LocalRole::Admin], "tracing a copy")?;
        super::catalog::trace_copy(
            &self.catalog,
            &self.contracts,
            &self.audit,
            request.into_inner(),
        )
        .await
        .map(Response::new)
    }

    async fn create_console_link(
        &self,
        request: Request<liutong_proto::v1::CreateConsoleLinkRequest>,
    ) -> Result<Response<liutong_proto::v1::ConsoleLink>, Status> {
        let caller = local_role(&request)?;
        let wanted = match request.get_ref().role.as_str() {
            "" => caller,
            role => role.parse().map_err(Status::invalid_argument)?,
        };
        match wanted {
            LocalRole::Admin => caller.require(&[LocalRole::Admin], "an admin console link")?,
            LocalRole::Auditor => caller.require(
                &[LocalRole::Admin, LocalRole::Auditor],
                "an auditor console link",
            )?,
            LocalRole::App => {
                return Err(Status::invalid_argument(
                    "the console has no app role; ask for an admin or auditor link",
                ));
            }
        }
        let console = self.console.as_ref().ok_or_else(|| {
            Status::failed_precondition(
                "the web console is off: set [console] listen in node.toml and restart the node",
            )
        })?;
        self.audit
            .append(&crate::audit::event::Event::new(
                crate::audit::event::EventKind::ConsoleSignIn,
                crate::base::clock::now(),
                format!("console: a sign-in link for the {wanted} role was made"),
            ))
            .await
            .map_err(|e| Status::unavailable(format!("the audit log cannot be written: {e}")))?;
        let token = console
            .links
            .mint(wanted)
            .map_err(|_| Status::internal("the system's random number generator failed"))?;
        Ok(Response::new(liutong_proto::v1::ConsoleLink {
            url: format!("{}/login?token={token}", console.url),
            role: wanted.to_string(),
            expires_in_seconds: console.links.lifetime().as_secs(),
        }))
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

/// A role as the local API names it.
fn role_name(role: crate::contract::Role) -> &'static str {
    match role {
        crate::contract::Role::Provider => "provider",
        crate::contract::Role::Consumer => "consumer",
    }
}
