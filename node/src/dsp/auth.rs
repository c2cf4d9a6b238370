//! Who is calling over DSP: the connection's client certificate, judged exactly as the
//! peer API judges it ([`PeerAuthenticator`](crate::service::PeerAuthenticator): the
//! chain to the data-space CA, then a current member of the trust list presenting its
//! registered certificate), and the record of every refusal.
//!
//! The TLS layer asks every client for a certificate without requiring one, because
//! the version endpoint answers anyone; every other endpoint sits behind
//! [`members_only`].

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rustls::pki_types::CertificateDer;
use tonic::Status;

use super::message::{Area, DspError, Refused, code_of, status_of};
use super::state::DspState;
use crate::service::PeerCaller;
use crate::service::limits::Caller;
use crate::tls::auth::{Authenticate, Refusal};

/// What the TLS connection of a request showed: the remote address and the client's
/// certificate chain (end entity first), if it presented one.
#[derive(Clone, Debug, Default)]
pub struct PeerConnection {
    pub remote: Option<SocketAddr>,
    pub certs: Option<Arc<Vec<CertificateDer<'static>>>>,
}

/// Lets a request through only from a current member, leaving its [`PeerCaller`] in
/// the request's extensions. A refused authentication is answered 401 or 403 with the
/// area's DSP error and recorded as the peer API records it (audit entry, the
/// failed-authentication alert). A member over the peer API's per-member limits is
/// answered 429 (recorded by the limits). A member's request the handler refuses (a
/// [`Refused`] response) is recorded on the audit log under the member.
pub async fn members_only(
    State(state): State<DspState>,
    mut request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path().to_owned();
    let method = format!("{} {path}", request.method());
    let area = Area::of_path(&path);
    let connection = request
        .extensions()
        .get::<PeerConnection>()
        .cloned()
        .unwrap_or_default();
    let chain = connection.certs.as_deref().filter(|c| !c.is_empty());
    let outcome = match chain {
        Some(chain) => state.authenticator.authenticate(chain),
        None => Err(Status::unauthenticated(
            "no client certificate: connect with mutual TLS, presenting the certificate \
             this data space's authority issued to you (the admission bundle's node.crt)",
        )),
    };
    let caller = match outcome {
        Ok(caller) => caller,
        Err(status) => {
            tracing::warn!(
                remote = ?connection.remote,
                method = %method,
                reason = status.message(),
                "DSP request refused"
            );
            (state.on_refusal)(Refusal {
                remote: connection.remote,
                subject: chain.and_then(|c| c.first()).and_then(subject_of),
                method,
                status: status.clone(),
            })
            .await;
            return DspError::new(status_of(status.code()), area, status.message()).into_response();
        }
    };
    let member = Caller::Member(caller.0.participant_id.to_string());
    // Held until the answer is ready: the call counts as in progress until then.
    let _admitted = match state.limits.admit(&member, &method).await {
        Ok(admitted) => admitted,
        Err(status) => {
            tracing::warn!(caller = %member, method = %method, reason = status.message(), "DSP request refused");
            return DspError::new(status_of(status.code()), area, status.message()).into_response();
        }
    };
    request.extensions_mut().insert::<PeerCaller>(caller);
    let response = next.run(request).await;
    if let Some(refused) = response.extensions().get::<Refused>() {
        tracing::warn!(
            caller = %member,
            method = %method,
            status = response.status().as_u16(),
            reason = refused.reason,
            "DSP request refused"
        );
        state
            .refusals
            .record(
                &member,
                &method,
                code_of(response.status()),
                &refused.reason,
            )
            .await;
    }
    response
}

/// The subject of a certificate, as text (`None`: not a readable certificate).
fn subject_of(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    Some(parsed.subject().to_string())
}
