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

use super::caller::{local_role, peer_with_role};
use super::errors::{StatusStream, into_status, status_stream};
use super::paging::{PageRequest, next_page_token};
use crate::base::bounded;
use crate::identity::MemberRole;
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
    /// Ends a revoked agreement's Dataspace Protocol transfers.
    pub dsp_control: Arc<dyn crate::transfer::ProviderControl>,
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
        bounded::id("agreement_id", &r.agreement_id).map_err(into_status)?;
        bounded::purpose("purpose", &r.purpose).map_err(into_status)?;
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
        let r = request.into_inner();
        let page = PageRequest::parse("copies", r.page_size, &r.page_token)?;
        let after = page.after().map(String::from_utf8_lossy);
        let (copies, next) = self
            .usage
            .copies_page(after.as_deref(), page.size)
            .map_err(into_status)?;
        Ok(Response::new(ListCopiesResponse {
            copies,
            next_page_token: next_page_token("copies", next.as_deref().map(str::as_bytes)),
        }))
    }

    async fn revoke(
        &self,
        request: Request<RevokeRequest>,
    ) -> Result<Response<RevocationStatus>, Status> {
        local_role(&request)?.require(&[LocalRole::Admin], "revoking an agreement")?;
        let r = request.into_inner();
        if !r.agreement_id.trim().is_empty() {
            bounded::id("agreement_id", r.agreement_id.trim()).map_err(into_status)?;
        }
        if !r.reason.trim().is_empty() {
            bounded::reason("reason", &r.reason).map_err(into_status)?;
        }
        let record = self
            .usage
            .revoke(r.agreement_id.trim(), &r.reason)
            .await
            .map_err(into_status)?;
        // The revocation is durable and already refuses every delivery; ending the
        // agreement's DSP transfers tells their consumers. One that cannot be ended now
        // is still refused, so the revocation stands.
        if let Err(e) = self
            .dsp_control
            .end_for_agreement(
                record.agreement_id.clone(),
                format!("the agreement was revoked: {}", record.reason),
            )
            .await
        {
            tracing::warn!(agreement = %record.agreement_id, error = %e, "cannot end the agreement's DSP transfers");
        }
        Ok(Response::new(record.to_proto()))
    }

    async fn list_revocations(
        &self,
        request: Request<ListRevocationsRequest>,
    ) -> Result<Response<ListRevocationsResponse>, Status> {
        local_role(&request)?.require(
            &[LocalRole::Admin, LocalRole::Auditor],
            "listing revocations",
        )?;
        let r = request.into_inner();
        let page = PageRequest::parse("revocations", r.page_size, &r.page_token)?;
        let found = self
            .usage
            .revocations_page(page.after(), page.size)
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(ListRevocationsResponse {
            next_page_token: next_page_token("revocations", found.next.as_deref()),
            revocations: found.items.iter().map(|r| r.to_proto()).collect(),
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
        let caller = peer_with_role(
            &request,
            MemberRole::Consumer,
            "sending a usage notice or deletion receipt",
        )?;
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
        let caller = peer_with_role(&request, MemberRole::Consumer, "asking for revocations")?;
        let r = request.into_inner();
        // A token names the member it pages for: another member's is refused.
        let list = format!("pending revocations of {}", caller.participant_id);
        let page = PageRequest::parse(&list, r.page_size, &r.page_token)?;
        let pending = self
            .usage
            .pending_for(&caller, page.after(), page.size)
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(RevocationsResponse {
            next_page_token: next_page_token(&list, pending.next.as_deref()),
            revocations: pending.items.into_iter().map(Into::into).collect(),
        }))
    }
}
