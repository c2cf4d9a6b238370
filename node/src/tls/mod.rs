//! Mutual TLS between nodes, to the authority, and on the local administration API
//! (rustls with the ring provider, chosen explicitly).
//!
//! How a connection is trusted, in two steps:
//! 1. The TLS handshake proves that the peer holds the private key of the certificate
//!    it presents (`DeferredClientVerifier`). It does not yet judge the certificate,
//!    so that a refused caller gets a gRPC status that says why instead of a bare TLS
//!    alert.
//! 2. Every request then passes [`auth::AuthLayer`], which checks the chain against the
//!    right CA, the validity period and, for peers, the current trust list, and answers
//!    `UNAUTHENTICATED` or `PERMISSION_DENIED` with the reason. Nothing reaches a
//!    service before that.
//!
//! Clients ([`client_config`]) check the server's chain and its identity URI
//! ([`ExpectedServer`]), not a host name: in a data space a node is known by its
//! participant ID, wherever it runs.

pub mod auth;
pub mod ca_key;
pub mod certs;

use std::future::Future as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tonic::transport::{Channel, Endpoint};

use crate::base::error::{ErrorKind, ErrorKinded};
use crate::identity::ParticipantId;

/// What a connection may cost the server before it has shown who it is.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    /// A TLS handshake not finished within this time is dropped.
    pub handshake_timeout: Duration,
    /// A connection that presented no client certificate is closed after this time:
    /// every call on it is refused, so it has nothing to wait for.
    pub no_certificate_timeout: Duration,
}

impl ConnectionLimits {
    /// The limits of the node's `[limits]` section.
    pub fn of(limits: &crate::config::Limits) -> Self {
        Self {
            handshake_timeout: limits.handshake_timeout,
            no_certificate_timeout: limits.no_certificate_timeout,
        }
    }
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self::of(&crate::config::Limits::default())
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    #[error(transparent)]
    Cert(#[from] certs::CertError),
    #[error("{path}: {reason}")]
    Pem { path: PathBuf, reason: String },
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    #[error("cannot connect to {address}: {reason}")]
    Connect { address: String, reason: String },
}

/// Failing to reach a peer is `UNAVAILABLE`; anything else is this node's own TLS set-up
/// being broken.
impl ErrorKinded for TlsError {
    fn kind(&self) -> ErrorKind {
        match self {
            TlsError::Connect { .. } => ErrorKind::Unavailable,
            _ => ErrorKind::Internal,
        }
    }
}

/// The ring crypto provider, chosen explicitly rather than by feature flags.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Installs ring as the process-wide default provider. Call first thing in `main` and in
/// tests: some libraries use the process default.
pub fn install_default_provider() {
    // Fails only when a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A certificate chain and its private key.
pub struct TlsIdentity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl Clone for TlsIdentity {
    fn clone(&self) -> Self {
        Self {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl TlsIdentity {
    /// Loads a PEM certificate chain and a PEM private key (owner-readable only).
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Self, TlsError> {
        let cert_text = certs::read_text(cert_path)?;
        let key_text = certs::read_private_text(key_path)?;
        let chain = rustls_pemfile::certs(&mut cert_text.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError::Pem {
                path: cert_path.to_owned(),
                reason: e.to_string(),
            })?;
        if chain.is_empty() {
            return Err(TlsError::Pem {
                path: cert_path.to_owned(),
                reason: "no CERTIFICATE block".into(),
            });
        }
        let key = rustls_pemfile::private_key(&mut key_text.as_bytes())
            .map_err(|e| TlsError::Pem {
                path: key_path.to_owned(),
                reason: e.to_string(),
            })?
            .ok_or_else(|| TlsError::Pem {
                path: key_path.to_owned(),
                reason: "no PRIVATE KEY block".into(),
            })?;
        Ok(Self { chain, key })
    }

    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, TlsError> {
        let pem_err = |reason: String| TlsError::Pem {
            path: PathBuf::from("<memory>"),
            reason,
        };
        let chain = rustls_pemfile::certs(&mut cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| pem_err(e.to_string()))?;
        let key = rustls_pemfile::private_key(&mut key_pem.as_bytes())
            .map_err(|e| pem_err(e.to_string()))?
            .ok_or_else(|| pem_err("no PRIVATE KEY block".into()))?;
        Ok(Self { chain, key })
    }
}

/// Loads the CA certificate(s) in a PEM file as trust anchors.
pub fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    roots_from_pem(&certs::read_text(path)?).map_err(|reason| TlsError::Pem {
        path: path.to_owned(),
        reason,
    })
}

pub fn roots_from_pem(pem: &str) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_bytes()) {
        let cert = cert.map_err(|e| e.to_string())?;
        roots.add(cert).map_err(|e| e.to_string())?;
    }
    if roots.is_empty() {
        return Err("no CA certificate found".into());
    }
    Ok(roots)
}

/// A server configuration that asks every client for a certificate and leaves judging
/// it to [`auth::AuthLayer`].
pub fn server_config(
    identity: &TlsIdentity,
    client_roots: &RootCertStore,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = provider();
    let verifier = Arc::new(DeferredClientVerifier {
        hints: client_roots.subjects(),
        algorithms: provider.signature_verification_algorithms,
    });
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(identity.chain.clone(), identity.key.clone_key())?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// A membership test: participant and the SHA-256 of its certificate in, the reason for
/// a refusal out.
pub type MemberCheck = Arc<dyn Fn(&ParticipantId, &str) -> Result<(), String> + Send + Sync>;

/// Which server a client accepts, besides a valid chain to its roots.
#[derive(Clone)]
pub enum ExpectedServer {
    /// A certificate carrying exactly this SAN URI.
    Uri(String),
    /// Any participant (`urn:uscc:…`), checked by the given membership test, which gets
    /// the participant and the SHA-256 of its certificate.
    Member(MemberCheck),
}

impl std::fmt::Debug for ExpectedServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Uri(u) => write!(f, "ExpectedServer::Uri({u})"),
            Self::Member(_) => f.write_str("ExpectedServer::Member"),
        }
    }
}

/// A client configuration presenting `identity` (if any) and accepting only the
/// expected server.
pub fn client_config(
    identity: Option<&TlsIdentity>,
    roots: RootCertStore,
    expected: ExpectedServer,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let provider = provider();
    let verifier = Arc::new(IdentityServerVerifier {
        roots: Arc::new(roots),
        expected,
        algorithms: provider.signature_verification_algorithms,
    });
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match identity {
        Some(id) => builder.with_client_auth_cert(id.chain.clone(), id.key.clone_key())?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// HTTP/2 flow-control window of a stream that a node receives (bytes).
const TRANSFER_WINDOW: u32 = 8 << 20;

/// Opens a gRPC channel to `address` (host:port) over mutual TLS.
pub async fn connect(
    address: &str,
    config: Arc<rustls::ClientConfig>,
) -> Result<Channel, TlsError> {
    connect_paced(address, config, None).await
}

/// As [`connect`], sending at most `pace.0` requests in each `pace.1` when a pace is
/// given (the caller waits for its turn rather than being refused by a server that
/// limits its callers' rate).
pub async fn connect_paced(
    address: &str,
    config: Arc<rustls::ClientConfig>,
    pace: Option<(u64, Duration)>,
) -> Result<Channel, TlsError> {
    let connect_err = |reason: String| TlsError::Connect {
        address: address.to_owned(),
        reason,
    };
    let endpoint = Endpoint::from_shared(format!("http://{address}"))
        .map_err(|e| connect_err(format!("not a host:port address ({e})")))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(60))
        // Room for several 1 MiB transfer chunks in flight, so a stream is not held up
        // waiting for window updates.
        .initial_stream_window_size(TRANSFER_WINDOW)
        .initial_connection_window_size(2 * TRANSFER_WINDOW);
    let endpoint = match pace {
        Some((requests, per)) => endpoint.rate_limit(requests, per),
        None => endpoint,
    };
    let connector = TlsConnector::from(config);
    endpoint
        .connect_with_connector(tower::service_fn(move |uri: http::Uri| {
            let connector = connector.clone();
            async move {
                let host = uri.host().unwrap_or("localhost").to_owned();
                let port = uri.port_u16().unwrap_or(443);
                let bare = host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_owned();
                let tcp = TcpStream::connect((bare.as_str(), port)).await?;
                tcp.set_nodelay(true)?;
                // The name only fills SNI; the verifier checks identity URIs instead.
                let server_name = ServerName::try_from(bare)
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
                let tls = connector.connect(server_name, tcp).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
            }
        }))
        .await
        .map_err(|e| connect_err(error_chain(&e)))
}

/// Accepts TCP connections and completes TLS handshakes concurrently, yielding the
/// established streams for `tonic`'s `serve_with_incoming`. Failed or slow handshakes
/// (`limits.handshake_timeout`) are logged with the remote address and dropped; a
/// connection without a client certificate is closed after
/// `limits.no_certificate_timeout`. The stream ends when the server stops reading it.
pub fn incoming(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    limits: ConnectionLimits,
) -> impl tokio_stream::Stream<Item = Result<ServerStream, std::io::Error>> {
    let acceptor = TlsAcceptor::from(config);
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                () = tx.closed() => break,
            };
            let (tcp, remote) = match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Typically EMFILE; back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let stream = ServerStream::new(stream, limits.no_certificate_timeout);
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Ok(Err(e)) => log_handshake_failure(remote, &e.to_string()),
                    Err(_) => log_handshake_failure(remote, "timed out"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// An accepted TLS connection. One whose client presented no certificate fails every
/// read and write once its time is up, which makes the HTTP/2 server close it: such a
/// client is refused on every call, and must not hold a socket for as long as it likes.
pub struct ServerStream {
    inner: tokio_rustls::server::TlsStream<TcpStream>,
    /// When a connection without a client certificate is closed.
    close_at: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl ServerStream {
    fn new(inner: tokio_rustls::server::TlsStream<TcpStream>, no_certificate: Duration) -> Self {
        let anonymous = inner
            .get_ref()
            .1
            .peer_certificates()
            .is_none_or(|c| c.is_empty());
        Self {
            inner,
            close_at: anonymous.then(|| Box::pin(tokio::time::sleep(no_certificate))),
        }
    }

    /// Whether the connection's time is up; otherwise the caller is woken when it is.
    fn expired(&mut self, cx: &mut Context<'_>) -> std::io::Result<()> {
        let Some(at) = &mut self.close_at else {
            return Ok(());
        };
        if at.as_mut().poll(cx).is_pending() {
            return Ok(());
        }
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "closed: the client presented no certificate (limits.no_certificate_timeout)",
        ))
    }
}

impl tonic::transport::server::Connected for ServerStream {
    type ConnectInfo =
        <tokio_rustls::server::TlsStream<TcpStream> as tonic::transport::server::Connected>::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

impl AsyncRead for ServerStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.expired(cx)?;
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for ServerStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.expired(cx)?;
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.expired(cx)?;
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

fn log_handshake_failure(remote: SocketAddr, reason: &str) {
    tracing::warn!(%remote, reason, "TLS handshake refused");
}

/// Every cause of an error, joined, so a person sees the root reason.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

/// Client-certificate verifier of the handshake: it asks for a certificate (naming the
/// accepted CAs), checks the handshake signature, i.e. that the client holds the key,
/// and leaves the judgement of the certificate itself to [`auth::AuthLayer`].
#[derive(Debug)]
struct DeferredClientVerifier {
    hints: Vec<DistinguishedName>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for DeferredClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        // A client without a certificate is answered with UNAUTHENTICATED at the gRPC
        // layer, which tells it what is missing.
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Server-certificate verifier of clients: a valid chain to the roots, then the
/// expected identity URI instead of a host name.
#[derive(Debug)]
struct IdentityServerVerifier {
    roots: Arc<RootCertStore>,
    expected: ExpectedServer,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for IdentityServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let parsed = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        let uris = certs::san_uris(end_entity).map_err(rustls::Error::General)?;
        match &self.expected {
            ExpectedServer::Uri(want) => {
                if !uris.iter().any(|u| u == want) {
                    return Err(rustls::Error::General(format!(
                        "the server's certificate names {uris:?}, not {want}"
                    )));
                }
            }
            ExpectedServer::Member(check) => {
                let participant = uris
                    .iter()
                    .find_map(|u| ParticipantId::from_san_uri(u))
                    .ok_or_else(|| {
                        rustls::Error::General(
                            "the server's certificate names no participant (urn:uscc:…)".into(),
                        )
                    })?
                    .map_err(|e| rustls::Error::General(e.to_string()))?;
                check(&participant, &certs::fingerprint(end_entity))
                    .map_err(rustls::Error::General)?;
            }
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
