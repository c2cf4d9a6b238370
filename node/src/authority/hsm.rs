//! The authority's keys in a PKCS#11 token: `hsm.toml` in the authority directory names
//! the token and the labels of its two keys, and records their public keys so that a
//! label later naming another key is refused rather than used. It holds no PIN.
//!
//! ```toml
//! module = "/usr/lib/softhsm/libsofthsm2.so"
//! token = "authority"
//! ca_key = "authority-ca"            # ECDSA P-256: signs TLS certificates
//! signing_key = "authority-signing"  # Ed25519: signs credentials and trust lists
//! pin_env = "LIUTONG_HSM_PIN"        # or pin_file = "/run/secrets/hsm-pin"
//! ca_public_key = "04…"              # written by `authority init`
//! signing_public_key = "…"           # base64, written by `authority init`
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::AuthorityError;
use crate::base::files;
use crate::hsm::{PinSource, TokenSpec};
use crate::identity::{PublicKey, SigningKey};
use crate::tls::ca_key::CaKey;

/// The file in the authority directory that puts its keys in a token.
pub const HSM_FILE: &str = "hsm.toml";

/// Where the authority's keys are: a token, the labels of its keys, the PIN's source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthorityToken {
    pub token: TokenSpec,
    /// Label of the ECDSA P-256 CA key pair.
    pub ca_key: String,
    /// Label of the Ed25519 key pair that signs credentials and trust lists.
    pub signing_key: String,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct HsmFile {
    module: PathBuf,
    token: String,
    ca_key: String,
    signing_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pin_env: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pin_file: Option<PathBuf>,
    /// Hex of the CA key's uncompressed point.
    ca_public_key: String,
    signing_public_key: PublicKey,
}

/// The two keys, opened in the token.
pub(super) struct TokenKeys {
    pub(super) ca: CaKey,
    pub(super) signing: SigningKey,
}

impl AuthorityToken {
    /// Opens both keys (logging in to the token), before anything is written.
    pub(super) fn open(&self) -> Result<TokenKeys, AuthorityError> {
        let ca = CaKey::open_token(&self.token, &self.ca_key)?;
        let signing = SigningKey::open_token(&self.token, &self.signing_key)?;
        Ok(TokenKeys { ca, signing })
    }

    /// Writes `hsm.toml` into `dir`, recording the keys' public keys (the CA's as its
    /// uncompressed point).
    pub(super) fn save(
        &self,
        dir: &Path,
        ca_public: &[u8],
        signing_public: PublicKey,
    ) -> Result<(), AuthorityError> {
        let (pin_env, pin_file) = match &self.token.pin {
            PinSource::Env(v) => (Some(v.clone()), None),
            PinSource::File(p) => (None, Some(p.clone())),
        };
        let file = HsmFile {
            module: self.token.module.clone(),
            token: self.token.token.clone(),
            ca_key: self.ca_key.clone(),
            signing_key: self.signing_key.clone(),
            pin_env,
            pin_file,
            ca_public_key: hex::encode(ca_public),
            signing_public_key: signing_public,
        };
        let text = format!(
            "# The authority's keys are in this PKCS#11 token; its PIN is read from \
             pin_env or pin_file, never from here.\n{}",
            toml::to_string(&file).expect("plain data serializes")
        );
        let path = dir.join(HSM_FILE);
        files::write_private(&path, text.as_bytes())
            .map_err(|source| AuthorityError::Io { path, source })
    }

    /// Opens the keys `dir/hsm.toml` names, if the file exists, and checks they are the
    /// keys recorded at `init`.
    pub(super) fn load(dir: &Path) -> Result<Option<TokenKeys>, AuthorityError> {
        let path = dir.join(HSM_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(AuthorityError::Io { path, source }),
        };
        let state = |reason: String| AuthorityError::State {
            path: path.clone(),
            reason,
        };
        let file: HsmFile = toml::from_str(&text).map_err(|e| state(e.to_string()))?;
        let pin = PinSource::from_pair(file.pin_env.as_deref(), file.pin_file.as_deref(), HSM_FILE)
            .map_err(state)?;
        let token = AuthorityToken {
            token: TokenSpec {
                module: file.module,
                token: file.token,
                pin,
            },
            ca_key: file.ca_key,
            signing_key: file.signing_key,
        };
        let keys = token.open()?;
        let ca_public = {
            use rcgen::PublicKeyData as _;
            hex::encode(keys.ca.der_bytes())
        };
        let changed = |label: &str, held: String, recorded: String| {
            AuthorityError::Invalid(format!(
                "the key {label:?} in token {:?} is {held}, but {} records {recorded} for it: \
                 the label names another key than the one this authority was created with; \
                 correct the label in {}",
                token.token.token,
                path.display(),
                path.display()
            ))
        };
        if ca_public != file.ca_public_key {
            return Err(changed(&token.ca_key, ca_public, file.ca_public_key));
        }
        if keys.signing.public_key() != file.signing_public_key {
            return Err(changed(
                &token.signing_key,
                keys.signing.public_key().to_string(),
                file.signing_public_key.to_string(),
            ));
        }
        Ok(Some(keys))
    }
}
