//! Handlers for contract negotiation: the peer API's `Negotiation` service and the
//! local API's contract commands.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::peer_caller;
use crate::contract::{ContractError, Contracts};
use liutong_proto::v1::negotiation_server::Negotiation;
use liutong_proto::v1::{
    GetNegotiationRequest, NegotiationRequest, NegotiationState, VerifyAgreementRequest,
};

/// A contract error as the status a person can act on.
pub(super) fn contract_status(e: ContractError) -> Status {
    let failure = match &e {
        ContractError::Storage(s) => super::storage_failure_status(s),
        other => super::storage_failure_status(other),
    };
    if let Some(status) = failure {
        return status;
    }
    let message = e.to_string();
    match e {
        ContractError::NotFound(_) | ContractError::UnknownOffer(_) => Status::not_found(message),
        ContractError::Exists(_) => Status::already_exists(message),
        ContractError::Replay(_) => {
            // Said in metadata too: a consumer sending its request again takes it as
            // "already held", not as a refusal.
            let mut status = Status::failed_precondition(message);
            status.metadata_mut().insert(
                crate::recovery::REFUSAL_KEY,
                tonic::metadata::MetadataValue::from_static(crate::recovery::REPLAY),
            );
            status
        }
        ContractError::Expired(_) | ContractError::WrongState { .. } => {
            Status::failed_precondition(message)
        }
        ContractError::Signature(_) => Status::data_loss(message),
        ContractError::Invalid(_) => Status::invalid_argument(message),
        ContractError::Forbidden(_) | ContractError::Denied { .. } => {
            Status::permission_denied(message)
        }
        ContractError::Policy(_) => Status::failed_precondition(message),
        ContractError::Peer(status) => Status::new(
            status.code(),
            format!("the provider answered: {}", status.message()),
        ),
        ContractError::Unreachable(_) | ContractError::Busy(_) => Status::unavailable(message),
        ContractError::Storage(_) | ContractError::Audit(_) => Status::unavailable(message),
        ContractError::Random(_) => Status::internal(message),
    }
}

pub struct NegotiationService {
    pub contracts: Arc<Contracts>,
}

#[tonic::async_trait]
impl Negotiation for NegotiationService {
    async fn request(
        &self,
        request: Request<NegotiationRequest>,
    ) -> Result<Response<NegotiationState>, Status> {
        let caller = peer_caller(&request)?.clone();
        let envelope = request.into_inner().request.ok_or_else(|| {
            Status::invalid_argument("request: the signed contract request is missing")
        })?;
        self.contracts
            .receive_request(&caller, envelope.into())
            .await
            .map(|n| Response::new(n.to_state_proto()))
            .map_err(contract_status)
    }

    async fn get(
        &self,
        request: Request<GetNegotiationRequest>,
    ) -> Result<Response<NegotiationState>, Status> {
        let caller = peer_caller(&request)?.clone();
        let id = request.into_inner().negotiation_id;
        self.contracts
            .state_for(&caller, &id)
            .map(|n| Response::new(n.to_state_proto()))
            .map_err(contract_status)
    }

    async fn verify(
        &self,
        request: Request<VerifyAgreementRequest>,
    ) -> Result<Response<NegotiationState>, Status> {
        let caller = peer_caller(&request)?.clone();
        let VerifyAgreementRequest {
            negotiation_id,
            agreement,
        } = request.into_inner();
        let envelope = agreement.ok_or_else(|| {
            Status::invalid_argument("agreement: the countersigned agreement is missing")
        })?;
        self.contracts
            .receive_countersigned(&caller, &negotiation_id, envelope.into())
            .await
            .map(|n| Response::new(n.to_state_proto()))
            .map_err(contract_status)
    }
}
