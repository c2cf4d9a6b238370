//! Handlers for contract negotiation: the peer API's `Negotiation` service and the
//! local API's contract commands.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::caller::peer_with_role;
use super::envelopes::peer_envelope;
use super::errors::into_status;
use crate::base::bounded;
use crate::contract::Contracts;
use crate::identity::MemberRole;
use liutong_proto::v1::negotiation_server::Negotiation;
use liutong_proto::v1::{
    GetNegotiationRequest, NegotiationRequest, NegotiationState, VerifyAgreementRequest,
};

pub struct NegotiationService {
    pub contracts: Arc<Contracts>,
    /// `limits.max_envelope_signatures`.
    pub max_signatures: usize,
}

#[tonic::async_trait]
impl Negotiation for NegotiationService {
    async fn request(
        &self,
        request: Request<NegotiationRequest>,
    ) -> Result<Response<NegotiationState>, Status> {
        let caller = peer_with_role(&request, MemberRole::Consumer, "requesting a contract")?;
        let envelope = request.into_inner().request.ok_or_else(|| {
            Status::invalid_argument("request: the signed contract request is missing")
        })?;
        let envelope = peer_envelope(envelope, "request", self.max_signatures)?;
        self.contracts
            .receive_request(&caller, envelope)
            .await
            .map(|n| Response::new(n.to_state_proto()))
            .map_err(into_status)
    }

    async fn get(
        &self,
        request: Request<GetNegotiationRequest>,
    ) -> Result<Response<NegotiationState>, Status> {
        let caller = peer_with_role(&request, MemberRole::Consumer, "asking about a negotiation")?;
        let id = bounded::id("negotiation_id", &request.into_inner().negotiation_id)
            .map_err(into_status)?;
        self.contracts
            .state_for(&caller, &id)
            .map(|n| Response::new(n.to_state_proto()))
            .map_err(into_status)
    }

    async fn verify(
        &self,
        request: Request<VerifyAgreementRequest>,
    ) -> Result<Response<NegotiationState>, Status> {
        let caller = peer_with_role(
            &request,
            MemberRole::Consumer,
            "countersigning an agreement",
        )?;
        let VerifyAgreementRequest {
            negotiation_id,
            agreement,
        } = request.into_inner();
        bounded::id("negotiation_id", &negotiation_id).map_err(into_status)?;
        let envelope = agreement.ok_or_else(|| {
            Status::invalid_argument("agreement: the countersigned agreement is missing")
        })?;
        let envelope = peer_envelope(envelope, "agreement", self.max_signatures)?;
        self.contracts
            .receive_countersigned(&caller, &negotiation_id, envelope)
            .await
            .map(|n| Response::new(n.to_state_proto()))
            .map_err(into_status)
    }
}
