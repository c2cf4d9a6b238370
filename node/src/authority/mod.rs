//! The data-space authority: the operator that admits members, issues their
//! certificates and membership credentials, revokes them, and signs the trust list.
//!
//! Its directory holds:
//! - `ca.crt`, `ca.key` — the data-space CA (ECDSA P-256) that signs TLS certificates;
//! - `signing.key` — the Ed25519 key that signs credentials and trust lists;
//! - or, instead of both key files, `hsm.toml` — the PKCS#11 token that holds both keys
//!   (`liutong authority init --hsm-…`), which then sign inside the token;
//! - `server.crt`, `server.key` — the certificate of its trust-list server;
//! - `authority.json` — members, revocations, the trust-list sequence, and which host
//!   names members may have certified.
//!
//! Changes (`admit`, `revoke`) take an exclusive lock on `.lock`, write
//! `authority.json` atomically and bump the sequence; `serve` re-reads the state for
//! every request, so a revocation reaches nodes at their next refresh, with no restart.
//!
//! The code is in four parts: `members` (admitting, revoking and re-keying members,
//! the admission bundle), the store of `authority.json` (`store`), `service` (the
//! trust-list server), and the errors of all three (`error`).

mod error;
mod hsm;
mod members;
mod names;
mod service;
mod store;

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::base::clock;
use crate::base::files;
use crate::identity::{Envelope, Membership, PublicKey, SigningKey};
use crate::tls::ca_key::CaKey;
use crate::tls::certs::{AUTHORITY_SAN_URI, CertificateAuthority, LeafSpec};
use crate::trust::{Revocation, TRUST_LIST_PAYLOAD_TYPE, TrustList};
use store::{STATE_FILE, State, read_state, write_state};

pub use error::AuthorityError;
pub use hsm::{AuthorityToken, HSM_FILE};
pub use members::{Admission, AdmissionBundle};
pub use names::NameRules;
pub use service::{RunningAuthority, participant_from_certificate, serve};

/// How long a signed trust list stays valid (X-Road: 10 minutes).
pub const DEFAULT_TRUST_LIST_VALIDITY: Duration = Duration::from_secs(600);
/// Default validity of a membership and its certificate.
pub const DEFAULT_MEMBERSHIP_DAYS: i64 = 365;

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
        Self::init_with(dir, name, None)
    }

    /// Creates a new authority in `dir` whose CA and signing keys are, with `token`, the
    /// keys in a PKCS#11 token (nothing of them is written to the directory), or else
    /// new keys in `ca.key` and `signing.key`.
    pub fn init_with(
        dir: &Path,
        name: &str,
        token: Option<&AuthorityToken>,
    ) -> Result<Self, AuthorityError> {
        if name.trim().is_empty() {
            return Err(AuthorityError::Invalid(
                "the authority needs a --name".into(),
            ));
        }
        if dir.join(STATE_FILE).exists() {
            return Err(AuthorityError::AlreadyExists(dir.to_owned()));
        }
        // The token is opened before the directory is made, so a wrong module, PIN or
        // label leaves nothing behind.
        let (ca_key, signing) = match token {
            Some(t) => {
                let keys = t.open()?;
                (keys.ca, keys.signing)
            }
            None => (
                CaKey::Memory(
                    rcgen::KeyPair::generate().map_err(crate::tls::certs::CertError::from)?,
                ),
                SigningKey::generate()?,
            ),
        };
        files::create_private_dir(dir).map_err(|source| AuthorityError::Io {
            path: dir.to_owned(),
            source,
        })?;
        let ca =
            CertificateAuthority::create_with_key(&format!("{name} (data-space CA)"), 10, ca_key)?;
        ca.save(&dir.join("ca.crt"), &dir.join("ca.key"))?;
        match token {
            Some(t) => t.save(dir, ca.public_key(), signing.public_key())?,
            None => signing.save(&dir.join("signing.key"))?,
        }
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
        let (ca, signing) = match AuthorityToken::load(dir)? {
            Some(keys) => (
                CertificateAuthority::load_with_key(&dir.join("ca.crt"), keys.ca)?,
                keys.signing,
            ),
            None => (
                CertificateAuthority::load(&dir.join("ca.crt"), &dir.join("ca.key"))?,
                SigningKey::load(&dir.join("signing.key"))?,
            ),
        };
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

    /// Signs the current trust list, valid from `now` for `validity`.
    pub fn trust_list(&self, now: i64, validity: Duration) -> Result<Envelope, AuthorityError> {
        let list = TrustList {
            authority: self.state.name.clone(),
            sequence: self.state.sequence,
            issued_at: now,
            expires_at: now + validity.as_secs() as i64,
            members: self.state.members.clone(),
            revocations: self.state.revocations.clone(),
        };
        Ok(Envelope::sign_json(
            TRUST_LIST_PAYLOAD_TYPE,
            &list,
            &self.signing,
        )?)
    }

    /// Re-reads the state written by other processes (`admit`, `revoke`).
    fn reload(&mut self) -> Result<(), AuthorityError> {
        self.state = read_state(&self.dir.join(STATE_FILE))?;
        Ok(())
    }

    /// Takes the exclusive lock of the authority directory, held until dropped.
    fn lock(&self) -> Result<std::fs::File, AuthorityError> {
        store::lock(&self.dir)
    }

    fn save_state(&self) -> Result<(), AuthorityError> {
        write_state(&self.dir.join(STATE_FILE), &self.state)
    }
}
