//! Rotating the node's signing key.
//!
//! The membership credential binds the node's Ed25519 key, and peers check the node's
//! signatures against the key in the trust list, so a new key needs the authority:
//!
//! 1. [`prepare`] creates the new key beside the current one (`identity/signing.key.next`,
//!    owner-only). Its private half never leaves the node; the operator sends the
//!    public key to the authority.
//! 2. The authority issues a credential naming the new key (`liutong authority rekey`);
//!    its next trust list carries the new key.
//! 3. With the node stopped, [`install`] checks that credential (authority signature,
//!    participant, the prepared key, the node's certificate), keeps the old credential
//!    in `identity/key-history.json`, and puts the new key and credential in place.
//!
//! Old checkpoints stay verifiable: the key history holds every earlier credential, each
//! signed by the authority, and the node serves it (`Audit.GetVerifierKey`), so an
//! auditor checks a checkpoint signed by an earlier key against a key the authority
//! vouched for. At its next start the node logs the rotation ([`record_current_key`]).

use std::path::{Path, PathBuf};

use crate::audit::log::{AuditLog, Event, EventKind};
use crate::base::files;
use crate::config::NodeConfig;
use crate::identity::bundle::files as bundle_files;
use crate::identity::keys::{KeyError, PublicKey, SigningKey};
use crate::identity::membership::{IdentityMismatch, open_credential, parse_credential};
use crate::identity::{Envelope, ParticipantId};
use crate::storage::{Storage, StorageError};

/// The prepared next key, in `identity/`.
pub const NEXT_KEY: &str = "signing.key.next";
/// Earlier credentials (a JSON array of envelopes, oldest first), in `identity/`.
pub const KEY_HISTORY: &str = "key-history.json";
const TREE: &str = "keys";
const CURRENT: &[u8] = b"current";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RotationError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("cannot {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Refused(String),
}

/// Rotation through files does not apply to a key held in a token: the new key pair is
/// made in the token, and `[hsm] signing_key` names it once the authority has re-keyed
/// the member.
pub fn refuse_token(config: &NodeConfig) -> Result<(), RotationError> {
    match &config.hsm {
        None => Ok(()),
        Some(hsm) => Err(RotationError::Refused(format!(
            "the signing key is the key {:?} in token {:?} ([hsm] in node.toml), which \
             `liutong key rotate` does not manage: make a new Ed25519 key pair in the token, \
             have the authority re-key the member with its public key (`liutong authority \
             rekey`), then set [hsm] signing_key to its label and write the new credential \
             to identity/credential.json",
            hsm.signing_key, hsm.token
        ))),
    }
}

/// The prepared key, created on the first call and returned again on later ones.
pub fn prepare(identity_dir: &Path) -> Result<(PublicKey, bool), RotationError> {
    let path = identity_dir.join(NEXT_KEY);
    if path.exists() {
        return Ok((SigningKey::load(&path)?.public_key(), false));
    }
    let key = SigningKey::generate()?;
    key.save(&path)?;
    Ok((key.public_key(), true))
}

/// What [`install`] changed.
#[derive(Clone, Debug)]
pub struct Installed {
    pub previous: PublicKey,
    pub current: PublicKey,
    /// Earlier keys kept in the history, this rotation's included.
    pub history: usize,
}

/// Installs the prepared key with the authority's new credential (the node must be
/// stopped). Refuses, changing nothing, a credential the pinned authority did not sign,
/// or one for another participant, key or certificate.
pub fn install(config: &NodeConfig, credential: &Envelope) -> Result<Installed, RotationError> {
    refuse_token(config)?;
    crate::backup::ensure_stopped(&config.data_dir())
        .map_err(|e| RotationError::Refused(e.to_string()))?;
    let dir = config.identity_dir();
    let next_path = dir.join(NEXT_KEY);
    if !next_path.exists() {
        return Err(RotationError::Refused(format!(
            "no new key is prepared in {}; run `liutong key rotate` first and send its public \
             key to the authority",
            dir.display()
        )));
    }
    let next = SigningKey::load(&next_path)?;
    let membership = open_credential(credential, &config.authority.public_key).map_err(|e| {
        RotationError::Refused(format!(
            "the credential is not signed by the authority pinned in node.toml ({}): {e}",
            config.authority.name
        ))
    })?;
    let cert =
        crate::tls::TlsIdentity::load(&dir.join(bundle_files::CERT), &dir.join(bundle_files::KEY))
            .map_err(|e| RotationError::Refused(e.to_string()))?;
    membership
        .check_own(&config.node.participant, &next.public_key(), &cert.chain)
        .map_err(|e| match e {
            IdentityMismatch::SigningKey { .. } => RotationError::Refused(format!(
                "{e} (the key `liutong key rotate` prepared); ask the authority for a \
                 credential of the prepared key"
            )),
            e => RotationError::Refused(e.to_string()),
        })?;

    let credential_path = dir.join(bundle_files::CREDENTIAL);
    let bytes = std::fs::read(&credential_path).map_err(|source| RotationError::Io {
        what: "read",
        path: credential_path.clone(),
        source,
    })?;
    let (old_credential, old) =
        parse_credential(&bytes, &config.authority.public_key).map_err(|e| {
            RotationError::Refused(format!(
                "the current credential {} {e}",
                credential_path.display()
            ))
        })?;
    // Crash-safe order: history, then credential, then key. Running `install` again
    // after a crash finishes the job without recording a key twice.
    let mut history = read_history(&dir)?;
    if old.signing_key != membership.signing_key
        && !history.iter().any(|e| e.payload == old_credential.payload)
    {
        history.push(old_credential);
        write_file(
            &dir.join(KEY_HISTORY),
            &serde_json::to_vec_pretty(&history).expect("envelopes serialize"),
        )?;
    }
    write_file(&credential_path, credential.to_json().as_bytes())?;
    // Durable before `install` reports the new key in use.
    files::rename(&next_path, &dir.join(bundle_files::SIGNING_KEY)).map_err(|source| {
        RotationError::Io {
            what: "install",
            path: next_path.clone(),
            source,
        }
    })?;
    Ok(Installed {
        previous: old.signing_key,
        current: membership.signing_key,
        history: history.len(),
    })
}

/// The earlier credentials of `participant`, each checked against the authority key.
pub fn load_history(
    identity_dir: &Path,
    authority_key: &PublicKey,
    participant: &ParticipantId,
) -> Result<Vec<Envelope>, RotationError> {
    let history = read_history(identity_dir)?;
    for (i, envelope) in history.iter().enumerate() {
        let m = open_credential(envelope, authority_key).map_err(|e| {
            RotationError::Refused(format!(
                "{KEY_HISTORY}: credential {i} does not verify: {e}"
            ))
        })?;
        if &m.participant_id != participant {
            return Err(RotationError::Refused(format!(
                "{KEY_HISTORY}: credential {i} names participant {}",
                m.participant_id
            )));
        }
    }
    Ok(history)
}

/// Remembers the key the node signs with; when it differs from the one of the last
/// start, logs a `signing_key_rotated` event first.
pub async fn record_current_key(
    storage: &dyn Storage,
    audit: &AuditLog,
    key: &PublicKey,
    now: i64,
) -> Result<(), RotationError> {
    let stored = storage.get(TREE, CURRENT)?;
    if stored.as_deref() == Some(&key.0[..]) {
        return Ok(());
    }
    if let Some(old) = stored.and_then(|b| PublicKey::from_slice(&b).ok()) {
        let event = Event::new(
            EventKind::SigningKeyRotated,
            now,
            format!(
                "signing key rotated from {} to {}; checkpoints signed by the earlier key \
                 verify with the key history",
                old.key_id(),
                key.key_id()
            ),
        );
        audit
            .append(&event)
            .await
            .map_err(|e| RotationError::Refused(e.to_string()))?;
    }
    storage.put_durable(TREE, CURRENT, &key.0).await?;
    Ok(())
}

fn read_history(identity_dir: &Path) -> Result<Vec<Envelope>, RotationError> {
    let path = identity_dir.join(KEY_HISTORY);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| RotationError::Refused(format!("{} is unreadable: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(RotationError::Io {
            what: "read",
            path,
            source,
        }),
    }
}

fn write_file(path: &Path, contents: &[u8]) -> Result<(), RotationError> {
    files::write_private(path, contents).map_err(|source| RotationError::Io {
        what: "write",
        path: path.to_owned(),
        source,
    })
}
