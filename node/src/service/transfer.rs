//! Handlers for transfers: the peer API's `Transfer` service (provider side) and the
//! local API's pull (consumer side).

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::Instrument as _;

use super::caller::peer_with_role;
use super::envelopes::peer_envelope;
use super::errors::{StatusStream, into_status};
use crate::base::bounded;
use crate::identity::MemberRole;
use crate::telemetry::Metrics;
use crate::transfer::{TransferState, Transfers};
use liutong_proto::v1::transfer_server::Transfer;
use liutong_proto::v1::{
    PullRequest, PullResponse, PullTransferRequest, ReceiptRequest, ReceiptResponse,
    TransferProgress,
};

pub struct TransferService {
    pub transfers: Arc<Transfers>,
    /// `limits.max_envelope_signatures`.
    pub max_signatures: usize,
}

#[tonic::async_trait]
impl Transfer for TransferService {
    type PullStream = StatusStream<PullResponse>;

    async fn pull(
        &self,
        request: Request<PullRequest>,
    ) -> Result<Response<Self::PullStream>, Status> {
        let caller = peer_with_role(&request, MemberRole::Consumer, "pulling a transfer")?;
        let PullRequest {
            agreement_id,
            from_chunk,
        } = request.into_inner();
        bounded::id("agreement_id", &agreement_id).map_err(into_status)?;
        let delivery = self
            .transfers
            .start_delivery(&caller, &agreement_id, from_chunk)
            .await
            .map_err(into_status)?;
        let chunks = self.transfers.clone().delivery_stream(delivery, from_chunk);
        Ok(Response::new(Box::pin(
            chunks.map(|item| item.map_err(into_status)),
        )))
    }

    async fn receipt(
        &self,
        request: Request<ReceiptRequest>,
    ) -> Result<Response<ReceiptResponse>, Status> {
        let caller = peer_with_role(&request, MemberRole::Consumer, "confirming a transfer")?;
        let receipt = request
            .into_inner()
            .receipt
            .ok_or_else(|| Status::invalid_argument("receipt: the signed receipt is missing"))?;
        let receipt = peer_envelope(receipt, "receipt", self.max_signatures)?;
        self.transfers
            .receive_receipt(&caller, receipt)
            .await
            .map_err(into_status)?;
        Ok(Response::new(ReceiptResponse {
            state: TransferState::Completed.as_str().into(),
        }))
    }
}

/// `Admin.PullTransfer`: runs the pull in its own task and streams its progress; the
/// pull goes on to the end of its current step even if the caller goes away.
pub(super) fn pull(
    dsp: Option<(Arc<dyn crate::transfer::RemotePull>, String)>,
    transfers: Arc<Transfers>,
    metrics: Metrics,
    request: PullTransferRequest,
) -> ReceiverStream<Result<TransferProgress, Status>> {
    let (out, rx) = mpsc::channel(16);
    tokio::spawn(
        async move {
            let (progress_tx, mut progress_rx) = mpsc::channel(16);
            let forward = {
                let out = out.clone();
                tokio::spawn(async move {
                    while let Some(p) = progress_rx.recv().await {
                        let _ = out.send(Ok(p)).await;
                    }
                })
            };
            let started = std::time::Instant::now();
            let result = match dsp {
                None => {
                    transfers
                        .pull(&request.agreement_id, request.max_chunks, progress_tx)
                        .await
                }
                Some((remote, peer)) => {
                    remote
                        .pull(
                            peer,
                            request.agreement_id.clone(),
                            request.max_chunks,
                            progress_tx,
                        )
                        .await
                }
            }
            .map_err(into_status);
            // The state reached, or the gRPC code of the failure (e.g. DataLoss).
            let outcome = match &result {
                Ok(p) => p.state.clone(),
                Err(status) => format!("{:?}", status.code()),
            };
            metrics.transfer_finished(outcome, started.elapsed());
            let _ = forward.await;
            let _ = out.send(result).await;
        }
        // Still part of the caller's request (and trace).
        .in_current_span(),
    );
    ReceiverStream::new(rx)
}
