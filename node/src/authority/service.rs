//! The authority's trust-list service (`liutong authority serve`): the signed trust
//! list over mutual TLS to any holder of a certificate from the data-space CA, the
//! state re-read on every request.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::{Request, Response, Status};

use super::{Authority, AuthorityError};
use crate::base::clock;
use crate::identity::ParticipantId;
use crate::tls::auth::{AuthLayer, Authenticate, ChainVerifier};
use crate::tls::certs;
use crate::tls::{self, TlsIdentity};
use liutong_proto::v1::authority_server::{Authority as AuthorityRpc, AuthorityServer};
use liutong_proto::v1::{GetTrustListRequest, GetTrustListResponse};

/// A running trust-list server.
pub struct RunningAuthority {
    pub addr: std::net::SocketAddr,
    shutdown: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
}

impl RunningAuthority {
    /// Stops serving and waits for in-flight requests.
    pub async fn shutdown(self) -> Result<(), AuthorityError> {
        let _ = self.shutdown.send(true);
        match self.task.await {
            Ok(r) => r.map_err(|e| AuthorityError::Serve(tls::error_chain(&e))),
            Err(e) => Err(AuthorityError::Serve(e.to_string())),
        }
    }
}

/// Serves the signed trust list on `listener` over mutual TLS to holders of a
/// certificate from this authority's CA.
pub async fn serve(
    dir: &Path,
    listener: TcpListener,
    validity: Duration,
) -> Result<RunningAuthority, AuthorityError> {
    let authority = Authority::open(dir)?;
    let identity = TlsIdentity::load(&dir.join("server.crt"), &dir.join("server.key"))?;
    let roots = tls::load_roots(&dir.join("ca.crt"))?;
    let server_config = tls::server_config(&identity, &roots)?;
    let auth = Arc::new(MemberCertificate {
        chain: ChainVerifier::new(roots, "this data space's authority")?,
    });
    let addr = listener.local_addr().map_err(|source| AuthorityError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let service = TrustListService {
        authority: tokio::sync::Mutex::new(authority),
        validity,
    };
    let (shutdown, mut stop) = tokio::sync::watch::channel(false);
    let incoming = tls::incoming(listener, server_config, tls::ConnectionLimits::default());
    let task = tokio::spawn(
        tonic::transport::Server::builder()
            .layer(AuthLayer::new(auth))
            .add_service(AuthorityServer::new(service))
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = stop.wait_for(|s| *s).await;
            }),
    );
    tracing::info!(%addr, "authority serving the trust list");
    Ok(RunningAuthority {
        addr,
        shutdown,
        task,
    })
}

/// Callers of the trust-list service: any holder of a certificate from this CA that
/// names a participant. Revoked members may still fetch the list (it tells them so).
struct MemberCertificate {
    chain: ChainVerifier,
}

#[derive(Clone)]
struct CallerId(#[allow(dead_code)] ParticipantId);

impl Authenticate for MemberCertificate {
    type Caller = CallerId;

    fn authenticate(
        &self,
        chain: &[rustls::pki_types::CertificateDer<'static>],
    ) -> Result<CallerId, Status> {
        self.chain.verify(chain).map_err(|reason| {
            Status::unauthenticated(format!("client certificate refused: {reason}"))
        })?;
        participant_from_certificate(&chain[0]).map(CallerId)
    }
}

/// The participant named by a certificate's `urn:uscc:` SAN URI.
pub fn participant_from_certificate(der: &[u8]) -> Result<ParticipantId, Status> {
    let uris = certs::san_uris(der).map_err(Status::unauthenticated)?;
    uris.iter()
        .find_map(|u| ParticipantId::from_san_uri(u))
        .ok_or_else(|| {
            Status::unauthenticated("the client certificate names no participant (urn:uscc:…)")
        })?
        .map_err(|e| {
            Status::unauthenticated(format!(
                "the client certificate's participant ID is invalid: {e}"
            ))
        })
}

struct TrustListService {
    /// Re-read on every request, so admissions and revocations apply at once.
    authority: tokio::sync::Mutex<Authority>,
    validity: Duration,
}

#[tonic::async_trait]
impl AuthorityRpc for TrustListService {
    async fn get_trust_list(
        &self,
        _request: Request<GetTrustListRequest>,
    ) -> Result<Response<GetTrustListResponse>, Status> {
        let mut authority = self.authority.lock().await;
        authority.reload().map_err(|e| {
            tracing::error!(error = %e, "cannot read the authority state");
            Status::internal(format!("the authority cannot read its state: {e}"))
        })?;
        let now = clock::now();
        let envelope = authority.trust_list(now, self.validity).map_err(|e| {
            tracing::error!(error = %e, "cannot sign the trust list");
            Status::unavailable(format!("the authority cannot sign the trust list: {e}"))
        })?;
        Ok(Response::new(GetTrustListResponse {
            trust_list: Some(envelope.into()),
        }))
    }
}
