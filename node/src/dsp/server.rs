//! The HTTPS listener: rustls with the node's certificate, asking for (not requiring) a
//! client certificate from the data-space CA; HTTP/1.1 and HTTP/2 with the peer API's
//! transport limits; the router of the binding's endpoints.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt as _;
use tonic::transport::server::Connected as _;
use tower::ServiceExt as _;

use super::auth::{PeerConnection, members_only};
use super::catalog;
use super::consumer;
use super::negotiation;
use super::pull;
use super::state::DspState;
use super::transfer;
use super::version;
use crate::base::shutdown::Shutdown;
use crate::config::Limits;
use crate::tls::{self, ConnectionLimits, TlsError, TlsIdentity};

/// How long connections in progress may take to finish once the node stops.
const DRAIN: Duration = Duration::from_secs(10);

/// The TLS configuration of the listener: the node's certificate; a client certificate
/// is asked for, naming the data-space CA, and checked against it when presented, but
/// not required (the version endpoint answers anyone). Whether the holder is a current
/// member is decided per request, by the same check as the peer API's.
pub fn tls_config(
    identity: &TlsIdentity,
    data_space_roots: &RootCertStore,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = tls::provider();
    let verifier = WebPkiClientVerifier::builder_with_provider(
        Arc::new(data_space_roots.clone()),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()
    .map_err(|e| TlsError::Config(rustls::Error::General(e.to_string())))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(identity.chain.clone(), identity.key.clone_key())?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The binding's endpoints. Everything but version discovery is for members only.
pub fn router(state: DspState) -> Router {
    let members = Router::new()
        .route("/catalog/request", post(catalog::request))
        .route("/catalog/datasets/{id}", get(catalog::dataset_by_id))
        .route("/negotiations/request", post(negotiation::request))
        .route("/negotiations/{pid}", get(negotiation::get))
        .route(
            "/negotiations/{pid}/request",
            post(negotiation::counter_request),
        )
        .route("/negotiations/offers", post(consumer::initial_offer))
        // Shared by both roles: the consumer's callback, or the provider's endpoint for
        // a negotiation it provides to the caller.
        .route("/negotiations/{pid}/events", post(consumer::event))
        .route("/negotiations/{pid}/offers", post(consumer::offer))
        .route("/negotiations/{pid}/agreement", post(consumer::agreement))
        .route(
            "/negotiations/{pid}/agreement/verification",
            post(negotiation::verification),
        )
        .route(
            "/negotiations/{pid}/termination",
            post(consumer::termination),
        )
        .route("/transfers/request", post(transfer::request))
        .route("/transfers/{pid}", get(transfer::get))
        .route("/transfers/{pid}/start", post(transfer::start))
        .route("/transfers/{pid}/completion", post(transfer::completion))
        .route("/transfers/{pid}/suspension", post(transfer::suspension))
        .route("/transfers/{pid}/termination", post(transfer::termination))
        .route("/data/{pid}", get(transfer::data))
        .route("/callback/transfers/{pid}/start", post(pull::on_start))
        .route(
            "/callback/transfers/{pid}/completion",
            post(pull::on_completion),
        )
        .route(
            "/callback/transfers/{pid}/suspension",
            post(pull::on_suspension),
        )
        .route(
            "/callback/transfers/{pid}/termination",
            post(pull::on_termination),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            members_only,
        ));
    Router::new()
        .route("/.well-known/dspace-version", get(version::get))
        .merge(members)
        .with_state(state)
}

/// Serves `router` on `listener` until `shutdown` fires; then stops accepting and lets
/// the connections in progress finish (for at most ten seconds). Handshakes and
/// connections without a client certificate are bounded as on the peer API.
pub fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    limits: &Limits,
    router: Router,
    mut shutdown: Shutdown,
) -> JoinHandle<()> {
    let incoming = crate::tls::incoming(listener, tls, ConnectionLimits::of(limits));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // A client that does not finish its request head in this time is dropped.
        .header_read_timeout(limits.handshake_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .initial_stream_window_size(limits.stream_window_bytes)
        .initial_connection_window_size(limits.stream_window_bytes.saturating_mul(2))
        .keep_alive_interval(limits.keepalive_interval)
        .keep_alive_timeout(limits.keepalive_interval);
    tokio::spawn(async move {
        let graceful = GracefulShutdown::new();
        let mut incoming = Box::pin(incoming);
        loop {
            let stream = tokio::select! {
                next = incoming.next() => match next {
                    Some(Ok(stream)) => stream,
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "accepting a DSP connection failed");
                        continue;
                    }
                    None => break,
                },
                () = shutdown.fired() => break,
            };
            let info = stream.connect_info();
            let connection = PeerConnection {
                remote: info.get_ref().remote_addr(),
                certs: info.peer_certs(),
            };
            let router = router.clone();
            let service = hyper::service::service_fn(move |mut request: http::Request<_>| {
                request.extensions_mut().insert(connection.clone());
                router.clone().oneshot(request)
            });
            let remote: Option<SocketAddr> = info.get_ref().remote_addr();
            let connection = builder
                .serve_connection(TokioIo::new(stream), service)
                .into_owned();
            let connection = graceful.watch(connection);
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(remote = ?remote, error = %e, "DSP connection ended with an error");
                }
            });
        }
        // Dropping the stream of connections stops its accept loop.
        drop(incoming);
        if tokio::time::timeout(DRAIN, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(
                "DSP connections still open {} after the node began to stop; closing them",
                humantime::format_duration(DRAIN)
            );
        }
    })
}
