//! Ed25519 signing keys (ring). A node's key signs its envelopes; the authority's key
//! signs credentials and trust lists.
//!
//! The private key is a PKCS#8 document in a PEM file that only the owner may read.
//! Loading refuses a key file that group or others can read, as ssh does, because a
//! leaked node key lets anyone sign agreements in the node's name.

use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ring::rand::SystemRandom;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::base::files;

const PEM_LABEL: &str = "PRIVATE KEY";

/// Errors loading, storing or using a key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    #[error("cannot read key file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write key file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "key file {path} can be read by other users (mode {mode:o}); run `chmod 600 {path}` \
         and check who may have copied it"
    )]
    Permissions { path: PathBuf, mode: u32 },
    #[error("key file {path} is not an Ed25519 PKCS#8 PEM key: {reason}")]
    Format { path: PathBuf, reason: String },
    #[error("could not generate a key: the system random generator failed")]
    Generate,
    #[error("public key is not a 32-byte Ed25519 key: {0}")]
    PublicKey(String),
}

/// An Ed25519 key pair that signs.
pub struct SigningKey {
    pair: Ed25519KeyPair,
    /// Kept to write the key back to disk; ring does not export it again.
    pkcs8: Vec<u8>,
}

impl SigningKey {
    /// Generates a new key from the system's random source.
    pub fn generate() -> Result<Self, KeyError> {
        let rng = SystemRandom::new();
        let doc = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| KeyError::Generate)?;
        Self::from_pkcs8(doc.as_ref()).map_err(|_| KeyError::Generate)
    }

    pub fn from_pkcs8(der: &[u8]) -> Result<Self, ring::error::KeyRejected> {
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)?;
        Ok(Self {
            pair,
            pkcs8: der.to_vec(),
        })
    }

    /// Loads a key written by [`SigningKey::save`], refusing one that others can read.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        files::check_private(path).map_err(|e| match e {
            files::PrivateFileError::Read(source) => KeyError::Read {
                path: path.to_owned(),
                source,
            },
            files::PrivateFileError::Mode(mode) => KeyError::Permissions {
                path: path.to_owned(),
                mode,
            },
        })?;
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
            path: path.to_owned(),
            source,
        })?;
        let format = |reason: String| KeyError::Format {
            path: path.to_owned(),
            reason,
        };
        let der = pem_decode(&text, PEM_LABEL).map_err(format)?;
        Self::from_pkcs8(&der).map_err(|e| format(e.to_string()))
    }

    /// Writes the key as PEM, readable by the owner only, atomically.
    pub fn save(&self, path: &Path) -> Result<(), KeyError> {
        files::write_private(path, pem_encode(PEM_LABEL, &self.pkcs8).as_bytes()).map_err(
            |source| KeyError::Write {
                path: path.to_owned(),
                source,
            },
        )
    }

    pub fn public_key(&self) -> PublicKey {
        let mut key = [0u8; 32];
        key.copy_from_slice(self.pair.public_key().as_ref());
        PublicKey(key)
    }

    /// The ring key pair, for formats that sign on their own terms (C2SP notes).
    pub fn key_pair(&self) -> &Ed25519KeyPair {
        &self.pair
    }

    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        let mut sig = [0u8; 64];
        sig.copy_from_slice(self.pair.sign(message).as_ref());
        sig
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({})", self.public_key().key_id())
    }
}

/// An Ed25519 public key; serialized as base64.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(pub [u8; 32]);

impl PublicKey {
    pub fn from_slice(bytes: &[u8]) -> Result<Self, KeyError> {
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|_| KeyError::PublicKey(format!("{} bytes", bytes.len())))?;
        Ok(Self(key))
    }

    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        let bytes = B64
            .decode(text.trim())
            .map_err(|e| KeyError::PublicKey(format!("not base64: {e}")))?;
        Self::from_slice(&bytes)
    }

    pub fn to_base64(&self) -> String {
        B64.encode(self.0)
    }

    /// The key ID used in envelope signatures: `ed25519:` + hex of the first 8 bytes of
    /// SHA-256(public key).
    pub fn key_id(&self) -> String {
        let digest = Sha256::digest(self.0);
        format!("ed25519:{}", hex::encode(&digest[..8]))
    }

    /// Checks an Ed25519 signature.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        UnparsedPublicKey::new(&ED25519, &self.0)
            .verify(message, signature)
            .is_ok()
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.key_id())
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64())
    }
}

impl Serialize for PublicKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_base64())
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::from_base64(&text).map_err(serde::de::Error::custom)
    }
}

/// Encodes DER as PEM with the given label.
pub fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = B64.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        // Base64 output is ASCII, so every chunk is valid UTF-8.
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Decodes the first PEM block with the given label.
pub fn pem_decode(text: &str, label: &str) -> Result<Vec<u8>, String> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text
        .find(&begin)
        .ok_or_else(|| format!("no \"{begin}\" line"))?
        + begin.len();
    let stop = text[start..]
        .find(&end)
        .ok_or_else(|| format!("no \"{end}\" line"))?
        + start;
    let body: String = text[start..stop].split_whitespace().collect();
    B64.decode(body).map_err(|e| format!("bad base64: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_and_verifies() {
        let key = SigningKey::generate().unwrap();
        let sig = key.sign(b"hello");
        assert!(key.public_key().verify(b"hello", &sig));
        assert!(!key.public_key().verify(b"hellO", &sig));
        let other = SigningKey::generate().unwrap();
        assert!(!other.public_key().verify(b"hello", &sig));
    }

    #[test]
    fn saves_owner_only_and_loads_back() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signing.key");
        let key = SigningKey::generate().unwrap();
        key.save(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let loaded = SigningKey::load(&path).unwrap();
        assert_eq!(loaded.public_key(), key.public_key());
    }

    #[test]
    fn refuses_a_key_others_can_read() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signing.key");
        SigningKey::generate().unwrap().save(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = SigningKey::load(&path).unwrap_err();
        assert!(
            matches!(err, KeyError::Permissions { mode: 0o644, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }

    #[test]
    fn refuses_a_damaged_key_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signing.key");
        files::write_private(
            &path,
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let err = SigningKey::load(&path).unwrap_err();
        assert!(matches!(err, KeyError::Format { .. }), "{err}");
    }

    #[test]
    fn public_key_round_trips_base64() {
        let key = SigningKey::generate().unwrap().public_key();
        assert_eq!(PublicKey::from_base64(&key.to_base64()).unwrap(), key);
        assert!(PublicKey::from_base64("AAAA").is_err());
        assert!(key.key_id().starts_with("ed25519:") && key.key_id().len() == 8 + 16);
    }
}
