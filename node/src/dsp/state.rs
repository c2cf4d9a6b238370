//! What the DSP handlers share: the components they call and how the node is named to
//! other connectors.

use std::sync::Arc;

use crate::audit::log::AuditLog;
use crate::catalog::Catalog;
use crate::contract::Contracts;
use crate::identity::ParticipantId;
use crate::service::PeerAuthenticator;
use crate::service::limits::{LimitsLayer, RefusalLog};
use crate::storage::Storage;
use crate::tls::TlsIdentity;
use crate::tls::auth::RefusalHook;

/// The state of the DSP router.
#[derive(Clone)]
pub struct DspState {
    /// The catalog component the gRPC `Catalog` service also serves from.
    pub catalog: Arc<Catalog>,
    pub audit: AuditLog,
    /// This node's participant.
    pub participant: ParticipantId,
    /// The base URL other connectors reach this listener at (no trailing slash).
    pub base_url: String,
    /// Largest request body read, in bytes (`limits.max_message_bytes`).
    pub max_body: usize,
    /// The peer API's authenticator: chain, then membership in the trust list.
    pub authenticator: Arc<PeerAuthenticator>,
    /// Records refusals of authenticated members, as on the peer API.
    pub refusals: Arc<RefusalLog>,
    /// The per-member request rate and calls in progress of the peer API, shared with
    /// it.
    pub limits: LimitsLayer,
    /// Records refused authentications and counts them towards the alert, as on the
    /// peer API.
    pub on_refusal: RefusalHook,
    /// The contract component the gRPC negotiation service also uses: one agreement
    /// component, two bindings.
    pub contracts: Arc<Contracts>,
    /// Where the binding keeps its own part of a negotiation (the consumer's process
    /// ID and callback address, what the consumer was told).
    pub storage: Arc<dyn Storage>,
    /// The node's certificate and the data-space CA, for calls to consumers'
    /// callback addresses.
    pub tls_identity: Arc<TlsIdentity>,
    pub data_space_roots: rustls::RootCertStore,
    /// The transfer component the gRPC transfer service also uses: one delivery, two
    /// bindings.
    pub transfers: Arc<crate::transfer::Transfers>,
    /// How long a data address's token opens the data endpoint (`[dsp]
    /// token_lifetime`).
    pub token_lifetime: std::time::Duration,
    /// Wakes the worker that sends transfers' start messages.
    pub transfer_wake: Arc<tokio::sync::Notify>,
    /// Wakes the callback worker when a negotiation has news for its consumer.
    pub wake: Arc<tokio::sync::Notify>,
}

impl DspState {
    /// The identifier of this node's DSP data service, named in catalogs and in the
    /// version metadata.
    pub fn service_id(&self) -> String {
        format!("urn:liutong:dsp:{}", self.participant)
    }

    /// The data service as a DCAT `DataService`.
    pub fn data_service(&self) -> serde_json::Value {
        serde_json::json!({
            "@id": self.service_id(),
            "@type": "DataService",
            "endpointURL": self.base_url,
        })
    }
}
