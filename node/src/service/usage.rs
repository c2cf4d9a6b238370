//! Handlers for usage control: the local API's `Usage` service (reads by local
//! applications, copies, revocations) and the peer API's `UsageControl` service
//! (notices and deletion receipts from consumers, revocations for them).
//!
//! Who may do what on the local API: only the role `app` reads received data. An
//! administrator runs the node but is not a data user under the agreements, so `admin`
//! cannot read copies; `admin` and `auditor` see the copies, their use counts and the
//! revocations. Only `admin` revokes.

use std::sync::Arc;

use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

use super::caller::{local_role, peer_caller};
use super::errors::{StatusStream, into_status, status_stream};
use crate::local::LocalRole;
use crate::usage::{self};
use liutong_proto::v1::usage_control_server::UsageControl;
use liutong_proto::v1::usage_server::Usage;
use liutong_proto::v1::{
    ListCopiesRequest, ListCopiesResponse, ListRevocationsRequest, ListRevocationsResponse,
    NotifyRequest, NotifyResponse, ReadRequest, ReadResponse, RevocationStatus, RevocationsRequest,
    RevocationsResponse, RevokeRequest,
};

/// The local API's usage control.
pub struct UsageService {
    pub usage: Arc<usage::Usage>,
}

#[tonic::async_trait]
impl Usage for UsageService {
    type ReadStream = StatusStream<ReadResponse>;

    async fn read(
        &self,
        request: Request<ReadRequest>,
    ) -> Result<Response<Self::ReadStream>, Status> {
        local_role(&request)?.require(&[LocalRole::App], "reading received data")?;
        let r = request.into_inner();
        let grant = self
            .usage
            .authorize_read(&r.agreement_id, &r.purpose)
            .await
            .map_err(into_status)?;
        let (tx, rx) = mpsc::channel(4);
        self.usage.clone().spawn_read_stream(grant, tx);
        Ok(Response::new(status_stream(rx)))
    }

    async fn list_copies(
        &self,
        request: Request<ListCopiesRequest>,
    ) -> Result<Response<ListCopiesResponse>, Status> {
        local_role(&request)?.require(
            &[LocalRole::Admin, LocalRole::App, LocalRole::Auditor],
            "listing received copies",
        )?;
        self.usage
            .copies()
            .map(|copies| Response::new(ListCopiesResponse { copies }))
            .map_err(into_status)
    }

    async fn revoke(
        &self,
        request: Request<RevokeRequest>,
    ) -> Result<Response<RevocationStatus>, Status> {
        local_role(&request)?.require(&[LocalRole::Admin], "revoking an agreement")?;
        let r = request.into_inner();
        self.usage
            .revoke(r.agreement_id.trim(), &r.reason)
            .await
            .map(|record| Response::new(record.to_proto()))
            .map_err(into_status)
    }

    async fn list_revocations(
        &self,
        request: Request<ListRevocationsRequest>,
    ) -> Result<Response<ListRevocationsResponse>, Status> {
        local_role(&request)?.require(
            &[LocalRole::Admin, LocalRole::Auditor],
            "listing revocations",
        )?;
        let all = self
            .usage
            .revocations()
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(ListRevocationsResponse {
            revocations: all.iter().map(|r| r.to_proto()).collect(),
        }))
    }
}

/// The peer API's usage control.
pub struct UsageControlService {
    pub usage: Arc<usage::Usage>,
    /// `limits.max_envelope_signatures`.
    pub max_signatures: usize,
}

#[tonic::async_trait]
impl UsageControl for UsageControlService {
    async fn notify(
        &self,
        request: Request<NotifyRequest>,
    ) -> Result<Response<NotifyResponse>, Status> {
        let caller = peer_caller(&request)?.clone();
        let message = request
            .into_inner()
            .message
            .ok_or_else(|| Status::invalid_argument("message: the signed message is missing"))?;
        let message = super::envelopes::peer_envelope(message, "message", self.max_signatures)?;
        self.usage
            .receive_notice(&caller, message)
            .await
            .map_err(into_status)?;
        Ok(Response::new(NotifyResponse {
            state: "RECORDED".into(),
        }))
    }

    async fn revocations(
        &self,
        request: Request<RevocationsRequest>,
    ) -> Result<Response<RevocationsResponse>, Status> {
        let caller = peer_caller(&request)?.clone();
        let pending = self
            .usage
            .pending_for(&caller)
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(RevocationsResponse {
            revocations: pending.into_iter().map(Into::into).collect(),
        }))
    }
}
