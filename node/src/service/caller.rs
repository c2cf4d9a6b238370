//! Who is calling: the peer authenticator and the callers it leaves on each request,
//! read by every service.

use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use tonic::{Request, Status};

use crate::authority::participant_from_certificate;
use crate::base::clock::now;
use crate::identity::{MemberRole, Membership};
use crate::local::LocalRole;
use crate::tls::auth::{Authenticate, ChainVerifier};
use crate::tls::certs;

/// A verified peer: its certificate chains to the data-space CA and the trust list
/// says it is a current member presenting its registered certificate.
#[derive(Clone, Debug)]
pub struct PeerCaller(pub Membership);

/// Authenticates peers: certificate chain, then membership in the trust list.
pub struct PeerAuthenticator {
    pub chain: ChainVerifier,
    pub trust: Arc<crate::trust::TrustStore>,
}

impl Authenticate for PeerAuthenticator {
    type Caller = PeerCaller;

    fn authenticate(&self, chain: &[CertificateDer<'static>]) -> Result<PeerCaller, Status> {
        self.chain.verify(chain).map_err(|reason| {
            Status::unauthenticated(format!("client certificate refused: {reason}"))
        })?;
        let participant = participant_from_certificate(&chain[0])?;
        let membership =
            self.trust
                .check_member(&participant, &certs::fingerprint(&chain[0]), now())?;
        Ok(PeerCaller(membership))
    }
}

/// The peer that [`PeerAuthenticator`] verified for this request.
pub(super) fn peer_caller<T>(request: &Request<T>) -> Result<&Membership, Status> {
    request
        .extensions()
        .get::<PeerCaller>()
        .map(|c| &c.0)
        .ok_or_else(|| Status::unauthenticated("the caller was not authenticated"))
}

/// The role of the local client certificate that authenticated this request.
pub(super) fn local_role<T>(request: &Request<T>) -> Result<LocalRole, Status> {
    request
        .extensions()
        .get::<LocalRole>()
        .copied()
        .ok_or_else(|| Status::unauthenticated("the caller was not authenticated"))
}

/// Refuses `member` with PERMISSION_DENIED unless it holds `role`, which `what` (e.g.
/// "requesting a contract") needs. Every peer entry point checks its caller with this
/// before it reads or writes anything for it.
pub(super) fn require_role(
    member: &Membership,
    role: MemberRole,
    what: &str,
) -> Result<(), Status> {
    member
        .require_role(role, what)
        .map_err(|e| Status::permission_denied(e.to_string()))
}

/// The peer of this request, which must hold `role` for `what` ([`require_role`]).
pub(super) fn peer_with_role<T>(
    request: &Request<T>,
    role: MemberRole,
    what: &str,
) -> Result<Membership, Status> {
    let caller = peer_caller(request)?;
    require_role(caller, role, what)?;
    Ok(caller.clone())
}
