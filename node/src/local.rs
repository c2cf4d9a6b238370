//! The local administration channel: how the `liutong` command and local applications
//! reach their own node.
//!
//! `liutong init` creates a local client CA in `<data dir>/local/` and issues it a
//! server certificate for the node's `admin_listen` address and one client certificate
//! per role. The role is named in the certificate (`urn:liutong:local-role:<role>`), so
//! handing an application `app.crt`/`app.key` gives it exactly the `app` role. The
//! directory is owner-only; the keys are 0600.

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use tonic::Status;

use crate::base::clock;
use crate::config::NodeConfig;
use crate::tls::auth::{Authenticate, ChainVerifier};
use crate::tls::certs::{
    self, CertError, CertificateAuthority, LOCAL_NODE_SAN_URI, LOCAL_ROLE_SAN_PREFIX, LeafSpec,
};
use crate::tls::{self, ExpectedServer, TlsError, TlsIdentity};

/// A role on the local API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LocalRole {
    /// Configuration, publishing, approvals.
    Admin,
    /// Local applications reading received data through usage control.
    App,
    /// Read-only access to the audit log.
    Auditor,
}

impl LocalRole {
    pub const ALL: [LocalRole; 3] = [LocalRole::Admin, LocalRole::App, LocalRole::Auditor];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::App => "app",
            Self::Auditor => "auditor",
        }
    }

    /// Refuses the call unless the caller has one of `allowed`.
    pub fn require(self, allowed: &[LocalRole], what: &str) -> Result<(), Status> {
        if allowed.contains(&self) {
            Ok(())
        } else {
            let names: Vec<_> = allowed.iter().map(|r| r.as_str()).collect();
            Err(Status::permission_denied(format!(
                "{what} needs the local role {}; this client certificate has the role {}",
                names.join(" or "),
                self.as_str()
            )))
        }
    }
}

impl FromStr for LocalRole {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "admin" => Ok(Self::Admin),
            "app" => Ok(Self::App),
            "auditor" => Ok(Self::Auditor),
            other => Err(format!(
                "unknown local role {other:?}; use admin, app or auditor"
            )),
        }
    }
}

impl fmt::Display for LocalRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Creates the local client CA, the admin server certificate and one client
/// certificate per role in `local_dir`.
pub fn create_local_pki(local_dir: &Path) -> Result<(), CertError> {
    crate::base::files::create_private_dir(local_dir).map_err(|source| CertError::Write {
        path: local_dir.to_owned(),
        source,
    })?;
    let ca = CertificateAuthority::create("Liutong local client CA", 10)?;
    ca.save(&local_dir.join("ca.crt"), &local_dir.join("ca.key"))?;
    let now = clock::now_utc();
    let spec = |cn: &str, uri: String| LeafSpec {
        common_name: cn.to_owned(),
        san_uris: vec![uri],
        not_before: now - time::Duration::minutes(5),
        not_after: now + time::Duration::days(365 * 10),
    };
    ca.issue(&spec(
        "Liutong local node API",
        LOCAL_NODE_SAN_URI.to_owned(),
    ))?
    .save(&local_dir.join("server.crt"), &local_dir.join("server.key"))?;
    for role in LocalRole::ALL {
        ca.issue(&spec(
            &format!("Liutong local {role}"),
            format!("{LOCAL_ROLE_SAN_PREFIX}{role}"),
        ))?
        .save(
            &local_dir.join(format!("{role}.crt")),
            &local_dir.join(format!("{role}.key")),
        )?;
    }
    Ok(())
}

/// Authenticates local clients by their role certificate.
pub struct LocalAuthenticator {
    chain: ChainVerifier,
}

impl LocalAuthenticator {
    pub fn new(config: &NodeConfig) -> Result<Self, TlsError> {
        let roots = tls::load_roots(&config.local_dir().join("ca.crt"))?;
        Ok(Self {
            chain: ChainVerifier::new(roots, "this node's local client CA")?,
        })
    }
}

impl Authenticate for LocalAuthenticator {
    type Caller = LocalRole;

    fn authenticate(&self, chain: &[CertificateDer<'static>]) -> Result<LocalRole, Status> {
        self.chain.verify(chain).map_err(|reason| {
            Status::unauthenticated(format!("local client certificate refused: {reason}"))
        })?;
        let uris = certs::san_uris(&chain[0]).map_err(Status::unauthenticated)?;
        uris.iter()
            .find_map(|u| u.strip_prefix(LOCAL_ROLE_SAN_PREFIX))
            .ok_or_else(|| Status::unauthenticated("the client certificate names no local role"))?
            .parse()
            .map_err(Status::unauthenticated)
    }
}

/// A channel to the node's local API with the client certificate of `role`, paced to
/// the node's per-caller rate ([`Limits::client_pace`](crate::config::Limits::client_pace)).
pub async fn connect(
    config: &NodeConfig,
    role: LocalRole,
) -> Result<tonic::transport::Channel, TlsError> {
    let dir = config.local_dir();
    let identity = TlsIdentity::load(
        &dir.join(format!("{role}.crt")),
        &dir.join(format!("{role}.key")),
    )?;
    let roots = tls::load_roots(&dir.join("ca.crt"))?;
    let client = tls::client_config(
        Some(&identity),
        roots,
        ExpectedServer::Uri(LOCAL_NODE_SAN_URI.to_owned()),
    )?;
    tls::connect_paced(
        &config.node.admin_listen.to_string(),
        client,
        config.limits.client_pace(),
    )
    .await
}

/// Server TLS configuration of the local API.
pub fn server_config(config: &NodeConfig) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let dir = config.local_dir();
    let identity = TlsIdentity::load(&dir.join("server.crt"), &dir.join("server.key"))?;
    let roots = tls::load_roots(&dir.join("ca.crt"))?;
    tls::server_config(&identity, &roots)
}

/// The web console as the local API sees it: where it is and its pending sign-in links.
pub struct ConsoleDoor {
    /// The console's base URL (`https://127.0.0.1:7704`).
    pub url: String,
    pub links: Arc<SignInLinks>,
}

/// One-time sign-in links to the web console, minted through the local API (so only a
/// holder of a local role certificate can mint one) and redeemed by the console.
///
/// A link carries 256 random bits; only their SHA-256 is kept, in memory: a restarted
/// node forgets its unused links, which is what a one-time link should do. At most
/// [`SignInLinks::MAX_PENDING`] links wait at once; the oldest gives way.
pub struct SignInLinks {
    pending: std::sync::Mutex<Vec<PendingLink>>,
    lifetime: std::time::Duration,
}

struct PendingLink {
    digest: [u8; 32],
    role: LocalRole,
    expires: std::time::Instant,
}

impl SignInLinks {
    /// How many unused links may wait at once.
    pub const MAX_PENDING: usize = 32;

    pub fn new(lifetime: std::time::Duration) -> Self {
        Self {
            pending: std::sync::Mutex::new(Vec::new()),
            lifetime,
        }
    }

    /// How long a minted link may wait before it is used.
    pub fn lifetime(&self) -> std::time::Duration {
        self.lifetime
    }

    /// A new link's secret (base64url, unpadded) for `role`.
    pub fn mint(&self, role: LocalRole) -> Result<String, crate::base::random::RandomError> {
        use base64::Engine as _;
        let secret = crate::base::random::random_bytes::<32>()?;
        let now = std::time::Instant::now();
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.retain(|link| link.expires > now);
        if pending.len() >= Self::MAX_PENDING {
            pending.remove(0);
        }
        pending.push(PendingLink {
            digest: digest(&secret),
            role,
            expires: now + self.lifetime,
        });
        Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret))
    }

    /// The role of the link whose secret is `token`, once: the link is gone afterwards.
    /// `None` for a link that is unknown, used or expired.
    pub fn redeem(&self, token: &str) -> Option<LocalRole> {
        use base64::Engine as _;
        let secret: [u8; 32] = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token.as_bytes())
            .ok()?
            .try_into()
            .ok()?;
        let wanted = digest(&secret);
        let now = std::time::Instant::now();
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        // Digests of secrets are compared: equal prefixes say nothing of the secret.
        let at = pending.iter().position(|link| link.digest == wanted)?;
        let link = pending.remove(at);
        (link.expires > now).then_some(link.role)
    }
}

fn digest(secret: &[u8; 32]) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(secret).into()
}

#[cfg(test)]
mod sign_in_tests {
    use super::*;

    #[test]
    fn a_link_signs_in_once_with_its_role() {
        let links = SignInLinks::new(std::time::Duration::from_secs(60));
        let token = links.mint(LocalRole::Auditor).unwrap();
        assert_eq!(links.redeem(&token), Some(LocalRole::Auditor));
        assert_eq!(links.redeem(&token), None, "a second use is refused");
        assert_eq!(links.redeem("not-a-link"), None);
    }

    #[test]
    fn an_expired_link_is_refused() {
        let links = SignInLinks::new(std::time::Duration::ZERO);
        let token = links.mint(LocalRole::Admin).unwrap();
        assert_eq!(links.redeem(&token), None);
    }

    #[test]
    fn pending_links_are_bounded() {
        let links = SignInLinks::new(std::time::Duration::from_secs(60));
        let first = links.mint(LocalRole::Admin).unwrap();
        for _ in 0..SignInLinks::MAX_PENDING {
            links.mint(LocalRole::Auditor).unwrap();
        }
        assert_eq!(links.redeem(&first), None, "the oldest link gave way");
    }
}
