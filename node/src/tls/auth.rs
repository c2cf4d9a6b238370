//! Per-request authentication of callers by their client certificate.
//!
//! [`AuthLayer`] wraps a whole tonic router. For every request it takes the client
//! certificate chain from the TLS connection, asks an [`Authenticate`] implementation
//! who the caller is, and either stores the answer in the request's extensions for the
//! handlers or answers with the refusal status itself. Refusals are logged with the
//! remote address, the method and the reason.

use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls::{CertificateError, RootCertStore};
use tonic::Status;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

use super::provider;
use crate::base::BoxFuture;
use crate::base::clock;
use crate::base::format::format_unix;

/// Decides who a caller is from its certificate chain (end entity first).
pub trait Authenticate: Send + Sync + 'static {
    /// What handlers get in the request extensions.
    type Caller: Clone + Send + Sync + 'static;

    fn authenticate(&self, chain: &[CertificateDer<'static>]) -> Result<Self::Caller, Status>;
}

/// Checks a client certificate chain against a set of CA roots, with messages a person
/// can act on.
pub struct ChainVerifier {
    verifier: Arc<dyn ClientCertVerifier>,
    /// Says whose CA this is in messages, e.g. "this data space's authority".
    issuer_label: String,
    /// Chains verified recently (SHA-256 of the certificates) and until when (Unix
    /// seconds) that still holds: a signature check per call cost a peer a sizeable
    /// share of a negotiation. An entry lasts at most [`VERIFIED_FOR`] and never past
    /// the earliest expiry in the chain, so the outcome is the same as checking anew.
    verified: std::sync::Mutex<std::collections::HashMap<[u8; 32], u64>>,
}

/// Longest a verified chain is remembered, in seconds.
const VERIFIED_FOR: u64 = 60;
/// Most chains remembered; past that the memory starts afresh.
const VERIFIED_MAX: usize = 4096;

impl ChainVerifier {
    pub fn new(roots: RootCertStore, issuer_label: &str) -> Result<Self, super::TlsError> {
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| super::TlsError::Config(rustls::Error::General(e.to_string())))?;
        Ok(Self {
            verifier,
            issuer_label: issuer_label.to_owned(),
            verified: Default::default(),
        })
    }

    /// Verifies the chain now; the error is the reason, in words.
    pub fn verify(&self, chain: &[CertificateDer<'static>]) -> Result<(), String> {
        let (end_entity, intermediates) = chain
            .split_first()
            .ok_or_else(|| "no client certificate was presented".to_owned())?;
        let now = UnixTime::since_unix_epoch(std::time::Duration::from_secs(
            // Before 1970 only on a broken clock; the epoch then fails every chain.
            u64::try_from(clock::now()).unwrap_or(0),
        ));
        let digest = {
            use sha2::{Digest, Sha256};
            let mut h = Sha256::new();
            for cert in chain {
                h.update((cert.len() as u64).to_be_bytes());
                h.update(cert.as_ref());
            }
            <[u8; 32]>::from(h.finalize())
        };
        let remembered = || {
            // Poisoning cannot leave the map inconsistent (insert, get, clear only).
            self.verified.lock().unwrap_or_else(|p| p.into_inner())
        };
        if remembered()
            .get(&digest)
            .is_some_and(|until| now.as_secs() < *until)
        {
            return Ok(());
        }
        self.verifier
            .verify_client_cert(end_entity, intermediates, now)
            .map_err(|e| self.explain(e))?;
        let expiry = chain.iter().map(|c| not_after(c)).min().flatten();
        if let Some(expiry) = expiry {
            let mut map = remembered();
            if map.len() >= VERIFIED_MAX {
                map.clear();
            }
            map.insert(digest, expiry.min(now.as_secs() + VERIFIED_FOR));
        }
        Ok(())
    }

    fn explain(&self, e: rustls::Error) -> String {
        let issuer = &self.issuer_label;
        match e {
            rustls::Error::InvalidCertificate(c) => match c {
                CertificateError::Expired => "the client certificate has expired".into(),
                CertificateError::ExpiredContext { not_after, .. } => format!(
                    "the client certificate expired at {}; ask the authority for a new admission",
                    format_unix(not_after.as_secs())
                ),
                CertificateError::NotValidYet => "the client certificate is not valid yet".into(),
                CertificateError::NotValidYetContext { not_before, .. } => format!(
                    "the client certificate is not valid before {}",
                    format_unix(not_before.as_secs())
                ),
                CertificateError::UnknownIssuer => {
                    format!("the client certificate was not issued by {issuer}")
                }
                CertificateError::BadSignature => {
                    format!("the client certificate's signature does not verify against {issuer}")
                }
                CertificateError::InvalidPurpose
                | CertificateError::InvalidPurposeContext { .. } => {
                    "the client certificate is not for TLS client authentication".into()
                }
                other => format!("the client certificate is invalid: {other:?}"),
            },
            other => format!("the client certificate is invalid: {other}"),
        }
    }
}

/// A certificate's notAfter in Unix seconds (`None`: unreadable, so not remembered).
fn not_after(cert: &CertificateDer<'_>) -> Option<u64> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    u64::try_from(parsed.validity().not_after.timestamp()).ok()
}

/// tonic refuses an over-size message with `OUT_OF_RANGE`; the data space answers limits
/// with `RESOURCE_EXHAUSTED` (DESIGN.md), so this rewrites that one case. Layers inside
/// this one that look at the status apply it first, to see what the caller will get.
pub fn limit_status(
    mut response: http::Response<tonic::body::Body>,
) -> http::Response<tonic::body::Body> {
    let headers = response.headers_mut();
    let over_limit = headers.get("grpc-status").is_some_and(|v| v == "11")
        && headers
            .get("grpc-message")
            .and_then(|m| m.to_str().ok())
            .is_some_and(|m| m.contains("too%20large") || m.contains("too large"));
    if over_limit {
        headers.insert("grpc-status", http::HeaderValue::from_static("8"));
        headers.insert(
            "grpc-message",
            http::HeaderValue::from_static(
                "the message is larger than this node accepts (limits.max_message_bytes)",
            ),
        );
    }
    response
}

/// A refused request, as the refusal hook sees it.
#[derive(Clone, Debug)]
pub struct Refusal {
    pub remote: Option<SocketAddr>,
    /// The subject of the client certificate presented, if any could be read: the
    /// caller's own words, so only to be shown escaped and capped.
    pub subject: Option<String>,
    /// The gRPC path called, e.g. `/liutong.v1.Node/Describe`.
    pub method: String,
    pub status: Status,
}

/// The subject of a certificate, as text (`None`: not a readable certificate).
fn subject_of(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    Some(parsed.subject().to_string())
}

/// Runs for every refused request, before the refusal is answered (the node records the
/// refusal in its audit log and counts it towards the failed-authentication alert here).
pub type RefusalHook = Arc<dyn Fn(Refusal) -> BoxFuture<'static, ()> + Send + Sync>;

/// A tower layer that authenticates every request; see the module doc.
pub struct AuthLayer<A> {
    auth: Arc<A>,
    on_refusal: Option<RefusalHook>,
}

impl<A> AuthLayer<A> {
    pub fn new(auth: Arc<A>) -> Self {
        Self {
            auth,
            on_refusal: None,
        }
    }

    /// Runs `hook` for every refused request.
    pub fn with_refusal_hook(mut self, hook: RefusalHook) -> Self {
        self.on_refusal = Some(hook);
        self
    }
}

impl<A> Clone for AuthLayer<A> {
    fn clone(&self) -> Self {
        Self {
            auth: self.auth.clone(),
            on_refusal: self.on_refusal.clone(),
        }
    }
}

impl<S, A> tower::Layer<S> for AuthLayer<A> {
    type Service = AuthService<S, A>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            auth: self.auth.clone(),
            on_refusal: self.on_refusal.clone(),
        }
    }
}

pub struct AuthService<S, A> {
    inner: S,
    auth: Arc<A>,
    on_refusal: Option<RefusalHook>,
}

impl<S: Clone, A> Clone for AuthService<S, A> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            auth: self.auth.clone(),
            on_refusal: self.on_refusal.clone(),
        }
    }
}

impl<S, A, B> tower::Service<http::Request<B>> for AuthService<S, A>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    A: Authenticate,
    B: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let info = request
            .extensions()
            .get::<TlsConnectInfo<TcpConnectInfo>>()
            .cloned();
        let remote: Option<SocketAddr> = info.as_ref().and_then(|i| i.get_ref().remote_addr());
        let chain = info.as_ref().and_then(|i| i.peer_certs());
        let outcome = match chain.as_deref() {
            Some(chain) if !chain.is_empty() => self.auth.authenticate(chain),
            _ => Err(Status::unauthenticated(
                "no client certificate: connect with mutual TLS, presenting the certificate \
                 issued to you (the admission bundle's node.crt, or a local client certificate)",
            )),
        };
        match outcome {
            Ok(caller) => {
                request.extensions_mut().insert(caller);
                // The inner service was driven to readiness in poll_ready; call that
                // instance and leave a fresh clone in its place for the next request.
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                let call = inner.call(request);
                Box::pin(async move { call.await.map(limit_status) })
            }
            Err(status) => {
                tracing::warn!(
                    remote = ?remote,
                    method = %request.uri().path(),
                    code = ?status.code(),
                    reason = status.message(),
                    "request refused"
                );
                let hook = self.on_refusal.as_ref().map(|hook| {
                    hook(Refusal {
                        remote,
                        subject: chain
                            .as_deref()
                            .and_then(|c| c.first())
                            .and_then(subject_of),
                        method: request.uri().path().to_owned(),
                        status: status.clone(),
                    })
                });
                Box::pin(async move {
                    if let Some(hook) = hook {
                        hook.await;
                    }
                    Ok(status.into_http())
                })
            }
        }
    }
}
