//! The data-space authority: the operator that admits members, issues their
//! certificates and membership credentials, revokes them, and signs the trust list.
//!
//! Its directory holds:
//! - `ca.crt`, `ca.key` — the data-space CA (ECDSA P-256) that signs TLS certificates;
//! - `signing.key` — the Ed25519 key that signs credentials and trust lists;
//! - `server.crt`, `server.key` — the certificate of its trust-list server;
//! - `authority.json` — members, revocations and the trust-list sequence.
//!
//! Changes (`admit`, `revoke`) take an exclusive lock on `.lock`, write
//! `authority.json` atomically and bump the sequence; `serve` re-reads the state for
//! every request, so a revocation reaches nodes at their next refresh, with no restart.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tonic::{Request, Response, Status};

use crate::base::clock;
use crate::base::files;
use crate::identity::bundle::{BundleManifest, files as bundle_files};
use crate::identity::membership::MEMBERSHIP_PAYLOAD_TYPE;
use crate::identity::{
    Envelope, KeyError, MemberRole, Membership, ParticipantId, ParticipantKind, PublicKey,
    RegionCode, SigningKey,
};
use crate::tls::auth::{AuthLayer, Authenticate, ChainVerifier};
use crate::tls::certs::{self, AUTHORITY_SAN_URI, CertError, CertificateAuthority, LeafSpec};
use crate::tls::{self, TlsError, TlsIdentity};
use crate::trust::{Revocation, TRUST_LIST_PAYLOAD_TYPE, TrustList};
use liutong_proto::v1::authority_server::{Authority as AuthorityRpc, AuthorityServer};
use liutong_proto::v1::{GetTrustListRequest, GetTrustListResponse};

/// How long a signed trust list stays valid (X-Road: 10 minutes).
pub const DEFAULT_TRUST_LIST_VALIDITY: Duration = Duration::from_secs(600);
/// Default validity of a membership and its certificate.
pub const DEFAULT_MEMBERSHIP_DAYS: i64 = 365;

const STATE_FILE: &str = "authority.json";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthorityError {
    #[error("{0} already holds an authority; choose another directory or remove it deliberately")]
    AlreadyExists(PathBuf),
    #[error("{0} holds no authority (no authority.json); run `liutong authority init` first")]
    Missing(PathBuf),
    #[error("cannot use the authority directory {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is damaged: {reason}")]
    State { path: PathBuf, reason: String },
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Cert(#[from] CertError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(
        "participant {0} is already a member; pass --renew to issue it a new certificate and \
         credential (the old certificate stops working)"
    )]
    AlreadyMember(ParticipantId),
    #[error(
        "participant {participant} was revoked at {revoked_at} ({reason}); a revoked \
         participant cannot be admitted again under the same ID"
    )]
    Revoked {
        participant: ParticipantId,
        reason: String,
        revoked_at: String,
    },
    #[error("participant {0} is not a member")]
    NotMember(ParticipantId),
    #[error("{0}")]
    Invalid(String),
    #[error("the output directory {0} exists and is not empty; choose a new one")]
    OutputExists(PathBuf),
    #[error("serving the trust list failed: {0}")]
    Serve(String),
}

/// The authority's persistent state.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct State {
    name: String,
    /// Bumped on every change to members or revocations.
    sequence: u64,
    members: Vec<Membership>,
    revocations: Vec<Revocation>,
}

/// What the operator supplies to admit a member.
#[derive(Clone, Debug)]
pub struct Admission {
    pub participant: ParticipantId,
    pub name: String,
    pub kind: ParticipantKind,
    pub sector: String,
    pub region: RegionCode,
    pub roles: Vec<MemberRole>,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    /// Replace an existing membership (new keys and certificate).
    pub renew: bool,
}

/// An admitted member's keys, certificate and signed credential, to hand over to the
/// member's IT staff. It contains private keys: transfer it as a secret.
pub struct AdmissionBundle {
    pub membership: Membership,
    pub credential: Envelope,
    pub certificate: certs::IssuedCertificate,
    pub signing_key: SigningKey,
    pub ca_pem: String,
    pub authority_name: String,
    pub authority_key: PublicKey,
}

impl std::fmt::Debug for AdmissionBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // No key material in debug output.
        f.debug_struct("AdmissionBundle")
            .field("membership", &self.membership)
            .finish_non_exhaustive()
    }
}

/// An authority opened from its directory.
pub struct Authority {
    dir: PathBuf,
    ca: CertificateAuthority,
    signing: SigningKey,
    state: State,
}

impl Authority {
    /// Creates a new authority in `dir` (which must not hold one).
    pub fn init(dir: &Path, name: &str) -> Result<Self, AuthorityError> {
        if name.trim().is_empty() {
            return Err(AuthorityError::Invalid(
                "the authority needs a --name".into(),
            ));
        }
        if dir.join(STATE_FILE).exists() {
            return Err(AuthorityError::AlreadyExists(dir.to_owned()));
        }
        files::create_private_dir(dir).map_err(|source| AuthorityError::Io {
            path: dir.to_owned(),
            source,
        })?;
        let ca = CertificateAuthority::create(&format!("{name} (data-space CA)"), 10)?;
        ca.save(&dir.join("ca.crt"), &dir.join("ca.key"))?;
        let signing = SigningKey::generate()?;
        signing.save(&dir.join("signing.key"))?;
        let now = clock::now_utc();
        let server = ca.issue(&LeafSpec {
            common_name: format!("{name} trust-list server"),
            san_uris: vec![AUTHORITY_SAN_URI.to_owned()],
            not_before: now - time::Duration::minutes(5),
            not_after: now + time::Duration::days(365 * 10),
        })?;
        server.save(&dir.join("server.crt"), &dir.join("server.key"))?;
        let authority = Self {
            dir: dir.to_owned(),
            ca,
            signing,
            state: State {
                name: name.to_owned(),
                sequence: 1,
                ..State::default()
            },
        };
        // Written last: its presence marks a complete authority directory.
        authority.save_state()?;
        Ok(authority)
    }

    /// Opens the authority in `dir`.
    pub fn open(dir: &Path) -> Result<Self, AuthorityError> {
        let state_path = dir.join(STATE_FILE);
        if !state_path.exists() {
            return Err(AuthorityError::Missing(dir.to_owned()));
        }
        let state = read_state(&state_path)?;
        let ca = CertificateAuthority::load(&dir.join("ca.crt"), &dir.join("ca.key"))?;
        let signing = SigningKey::load(&dir.join("signing.key"))?;
        Ok(Self {
            dir: dir.to_owned(),
            ca,
            signing,
            state,
        })
    }

    pub fn name(&self) -> &str {
        &self.state.name
    }

    pub fn public_key(&self) -> PublicKey {
        self.signing.public_key()
    }

    pub fn members(&self) -> &[Membership] {
        &self.state.members
    }

    pub fn revocations(&self) -> &[Revocation] {
        &self.state.revocations
    }

    pub fn sequence(&self) -> u64 {
        self.state.sequence
    }

    /// Admits a member: new keys, a TLS certificate naming `urn:uscc:<id>`, and a signed
    /// membership credential. The state is saved before the bundle is returned.
    pub fn admit(&mut self, admission: Admission) -> Result<AdmissionBundle, AuthorityError> {
        let _lock = self.lock()?;
        // Another process may have changed the state since this one opened it.
        self.state = read_state(&self.dir.join(STATE_FILE))?;
        let id = &admission.participant;
        if let Some(r) = self
            .state
            .revocations
            .iter()
            .find(|r| &r.participant_id == id)
        {
            return Err(AuthorityError::Revoked {
                participant: id.clone(),
                reason: r.reason.clone(),
                revoked_at: crate::base::format::format_unix(r.revoked_at),
            });
        }
        let existing = self
            .state
            .members
            .iter()
            .position(|m| &m.participant_id == id);
        if existing.is_some() && !admission.renew {
            return Err(AuthorityError::AlreadyMember(id.clone()));
        }
        if admission.name.trim().is_empty() {
            return Err(AuthorityError::Invalid("the member needs a --name".into()));
        }
        if admission.sector.trim().is_empty() {
            return Err(AuthorityError::Invalid(
                "the member needs a --sector".into(),
            ));
        }
        if admission.roles.is_empty() {
            return Err(AuthorityError::Invalid(
                "the member needs at least one role in --roles (provider, consumer, auditor)"
                    .into(),
            ));
        }
        if admission.not_after <= admission.not_before {
            return Err(AuthorityError::Invalid(
                "the membership must end after it starts".into(),
            ));
        }
        let certificate = self.ca.issue(&LeafSpec {
            common_name: format!("{} ({})", admission.name, id),
            san_uris: vec![id.san_uri()],
            not_before: admission.not_before,
            not_after: admission.not_after,
        })?;
        let signing_key = SigningKey::generate()?;
        let mut roles = admission.roles.clone();
        roles.sort();
        roles.dedup();
        let membership = Membership {
            participant_id: id.clone(),
            name: admission.name.clone(),
            kind: admission.kind,
            sector: admission.sector.clone(),
            region: admission.region.clone(),
            roles,
            valid_from: admission.not_before.unix_timestamp(),
            valid_until: admission.not_after.unix_timestamp(),
            signing_key: signing_key.public_key(),
            certificate_sha256: certs::fingerprint(&certificate.cert_der),
            authority: self.state.name.clone(),
        };
        let credential = Envelope::sign_json(MEMBERSHIP_PAYLOAD_TYPE, &membership, &self.signing);
        match existing {
            Some(i) => self.state.members[i] = membership.clone(),
            None => self.state.members.push(membership.clone()),
        }
        self.state.sequence += 1;
        self.save_state()?;
        Ok(AdmissionBundle {
            membership,
            credential,
            certificate,
            signing_key,
            ca_pem: self.ca.cert_pem().to_owned(),
            authority_name: self.state.name.clone(),
            authority_key: self.signing.public_key(),
        })
    }

    /// Revokes a member. Nodes refuse it from their next trust-list refresh on.
    pub fn revoke(
        &mut self,
        participant: &ParticipantId,
        reason: &str,
        now: i64,
    ) -> Result<Revocation, AuthorityError> {
        if reason.trim().is_empty() {
            return Err(AuthorityError::Invalid(
                "say why in --reason; members and auditors will read it".into(),
            ));
        }
        let _lock = self.lock()?;
        self.state = read_state(&self.dir.join(STATE_FILE))?;
        let index = self
            .state
            .members
            .iter()
            .position(|m| &m.participant_id == participant)
            .ok_or_else(|| AuthorityError::NotMember(participant.clone()))?;
        let member = self.state.members.remove(index);
        let revocation = Revocation {
            participant_id: participant.clone(),
            reason: reason.trim().to_owned(),
            revoked_at: now,
            certificate_sha256: member.certificate_sha256,
        };
        self.state.revocations.push(revocation.clone());
        self.state.sequence += 1;
        self.save_state()?;
        Ok(revocation)
    }

    /// Issues a member a credential naming a new signing key that its node prepared
    /// (`liutong key rotate`), keeping every other attribute and its certificate. The
    /// next trust list carries the new key.
    pub fn rekey(
        &mut self,
        participant: &ParticipantId,
        signing_key: PublicKey,
    ) -> Result<Envelope, AuthorityError> {
        let _lock = self.lock()?;
        self.state = read_state(&self.dir.join(STATE_FILE))?;
        let member = self
            .state
            .members
            .iter_mut()
            .find(|m| &m.participant_id == participant)
            .ok_or_else(|| AuthorityError::NotMember(participant.clone()))?;
        if member.signing_key == signing_key {
            return Err(AuthorityError::Invalid(format!(
                "{participant} already signs with this key; send the key that `liutong key \
                 rotate` printed on the member's node"
            )));
        }
        member.signing_key = signing_key;
        let credential = Envelope::sign_json(MEMBERSHIP_PAYLOAD_TYPE, &*member, &self.signing);
        self.state.sequence += 1;
        self.save_state()?;
        Ok(credential)
    }

    /// Signs the current trust list, valid from `now` for `validity`.
    pub fn trust_list(&self, now: i64, validity: Duration) -> Envelope {
        let list = TrustList {
            authority: self.state.name.clone(),
            sequence: self.state.sequence,
            issued_at: now,
            expires_at: now + validity.as_secs() as i64,
            members: self.state.members.clone(),
            revocations: self.state.revocations.clone(),
        };
        Envelope::sign_json(TRUST_LIST_PAYLOAD_TYPE, &list, &self.signing)
    }

    /// Re-reads the state written by other processes (`admit`, `revoke`).
    fn reload(&mut self) -> Result<(), AuthorityError> {
        self.state = read_state(&self.dir.join(STATE_FILE))?;
        Ok(())
    }

    fn lock(&self) -> Result<std::fs::File, AuthorityError> {
        let path = self.dir.join(".lock");
        let io = |source| AuthorityError::Io {
            path: path.clone(),
            source,
        };
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io)?;
        file.lock().map_err(io)?;
        Ok(file)
    }

    fn save_state(&self) -> Result<(), AuthorityError> {
        let path = self.dir.join(STATE_FILE);
        // Plain data always serializes.
        let json = serde_json::to_vec_pretty(&self.state).expect("state serializes");
        files::write_private(&path, &json).map_err(|source| AuthorityError::Io { path, source })
    }
}

fn read_state(path: &Path) -> Result<State, AuthorityError> {
    let bytes = std::fs::read(path).map_err(|source| AuthorityError::Io {
        path: path.to_owned(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|e| AuthorityError::State {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

impl AdmissionBundle {
    /// Writes the bundle into `out` (created owner-only; must be new or empty).
    pub fn write(&self, out: &Path) -> Result<(), AuthorityError> {
        if out.exists()
            && std::fs::read_dir(out)
                .map(|mut d| d.next().is_some())
                .unwrap_or(true)
        {
            return Err(AuthorityError::OutputExists(out.to_owned()));
        }
        files::create_private_dir(out).map_err(|source| AuthorityError::Io {
            path: out.to_owned(),
            source,
        })?;
        let io = |path: PathBuf| move |source| AuthorityError::Io { path, source };
        let manifest = BundleManifest {
            participant_id: self.membership.participant_id.clone(),
            name: self.membership.name.clone(),
            authority_name: self.authority_name.clone(),
            authority_key: self.authority_key,
        };
        let p = out.join(bundle_files::MANIFEST);
        files::write_public(
            &p,
            &serde_json::to_vec_pretty(&manifest).expect("manifest serializes"),
        )
        .map_err(io(p.clone()))?;
        let p = out.join(bundle_files::CA);
        files::write_public(&p, self.ca_pem.as_bytes()).map_err(io(p.clone()))?;
        self.certificate
            .save(&out.join(bundle_files::CERT), &out.join(bundle_files::KEY))?;
        self.signing_key
            .save(&out.join(bundle_files::SIGNING_KEY))?;
        let p = out.join(bundle_files::CREDENTIAL);
        files::write_public(&p, self.credential.to_json().as_bytes()).map_err(io(p.clone()))?;
        Ok(())
    }
}

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
    let incoming = tls::incoming(listener, server_config);
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
        let envelope = authority.trust_list(now, self.validity);
        Ok(Response::new(GetTrustListResponse {
            trust_list: Some(envelope.into()),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(id: &str) -> Admission {
        let now = OffsetDateTime::now_utc();
        Admission {
            participant: ParticipantId::parse(id).unwrap(),
            name: "Hangzhou Transport Bureau".into(),
            kind: ParticipantKind::Government,
            sector: "transport".into(),
            region: RegionCode::parse("330100").unwrap(),
            roles: vec![MemberRole::Provider, MemberRole::Consumer],
            not_before: now,
            not_after: now + time::Duration::days(30),
            renew: false,
        }
    }

    #[test]
    fn admits_writes_bundle_and_revokes() {
        let dir = tempfile::tempdir().unwrap();
        let adir = dir.path().join("authority");
        let mut a = Authority::init(&adir, "Zhejiang Data Space").unwrap();
        assert!(matches!(
            Authority::init(&adir, "again"),
            Err(AuthorityError::AlreadyExists(_))
        ));
        let bundle = a.admit(admission("91110000600037341L")).unwrap();
        assert_eq!(a.sequence(), 2);
        let out = dir.path().join("bundle");
        bundle.write(&out).unwrap();
        for f in bundle_files::ALL {
            assert!(out.join(f).exists(), "{f} missing");
        }
        files::check_private(&out.join(bundle_files::KEY)).unwrap();
        files::check_private(&out.join(bundle_files::SIGNING_KEY)).unwrap();
        assert!(matches!(
            bundle.write(&out),
            Err(AuthorityError::OutputExists(_))
        ));

        // The credential is signed by the authority and matches the certificate.
        let cred: Membership = bundle
            .credential
            .open_json(MEMBERSHIP_PAYLOAD_TYPE, &a.public_key())
            .unwrap();
        assert_eq!(
            cred.certificate_sha256,
            certs::fingerprint(&bundle.certificate.cert_der)
        );

        assert!(matches!(
            a.admit(admission("91110000600037341L")),
            Err(AuthorityError::AlreadyMember(_))
        ));
        let id = ParticipantId::parse("91110000600037341L").unwrap();
        a.revoke(&id, "left the data space", 1).unwrap();
        assert!(a.members().is_empty());
        assert!(matches!(
            a.admit(admission("91110000600037341L")),
            Err(AuthorityError::Revoked { .. })
        ));

        // Another process opening the directory sees the same state.
        let again = Authority::open(&adir).unwrap();
        assert_eq!(again.sequence(), 3);
        assert_eq!(again.revocations().len(), 1);
        let list: TrustList = again
            .trust_list(100, Duration::from_secs(600))
            .open_json(TRUST_LIST_PAYLOAD_TYPE, &again.public_key())
            .unwrap();
        assert_eq!((list.sequence, list.expires_at), (3, 700));
    }

    #[test]
    fn refuses_incomplete_admissions() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = Authority::init(dir.path(), "DS").unwrap();
        let mut no_roles = admission("91110000600037341L");
        no_roles.roles.clear();
        assert!(
            a.admit(no_roles)
                .unwrap_err()
                .to_string()
                .contains("--roles")
        );
        assert!(matches!(
            Authority::open(&dir.path().join("nothing")),
            Err(AuthorityError::Missing(_))
        ));
    }
}
