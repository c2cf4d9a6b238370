//! Verifier keys in the `name+hash+key` form: the key types, key IDs and names, and the
//! check of one signature line against a key.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use sha2::{Digest, Sha256};

use super::error::NoteError;
use super::wire::{ED25519_PUBLIC_KEY_LEN, ED25519_SIGNATURE_LEN, KeyId, KeyType, SignatureLine};
use crate::identity::SigningKey;

/// An Ed25519 key that signs notes: a ring key pair in memory, or the node's
/// [`SigningKey`], which may be held in a token and so may fail to sign.
pub trait NoteSigner {
    /// The raw 32-byte public key.
    fn note_public_key(&self) -> [u8; ED25519_PUBLIC_KEY_LEN];
    /// An Ed25519 signature over `message`.
    fn note_sign(&self, message: &[u8]) -> Result<[u8; ED25519_SIGNATURE_LEN], NoteError>;
}

impl NoteSigner for Ed25519KeyPair {
    fn note_public_key(&self) -> [u8; ED25519_PUBLIC_KEY_LEN] {
        let mut pk = [0u8; ED25519_PUBLIC_KEY_LEN];
        // ring's Ed25519 public keys are always 32 bytes.
        pk.copy_from_slice(self.public_key().as_ref());
        pk
    }

    fn note_sign(&self, message: &[u8]) -> Result<[u8; ED25519_SIGNATURE_LEN], NoteError> {
        let mut sig = [0u8; ED25519_SIGNATURE_LEN];
        sig.copy_from_slice(self.sign(message).as_ref());
        Ok(sig)
    }
}

impl NoteSigner for SigningKey {
    fn note_public_key(&self) -> [u8; ED25519_PUBLIC_KEY_LEN] {
        self.public_key().0
    }

    fn note_sign(&self, message: &[u8]) -> Result<[u8; ED25519_SIGNATURE_LEN], NoteError> {
        self.sign(message)
            .map_err(|e| NoteError::Signing(e.to_string()))
    }
}

impl<T: NoteSigner + ?Sized> NoteSigner for &T {
    fn note_public_key(&self) -> [u8; ED25519_PUBLIC_KEY_LEN] {
        (**self).note_public_key()
    }

    fn note_sign(&self, message: &[u8]) -> Result<[u8; ED25519_SIGNATURE_LEN], NoteError> {
        (**self).note_sign(message)
    }
}

impl<T: NoteSigner + ?Sized> NoteSigner for std::sync::Arc<T> {
    fn note_public_key(&self) -> [u8; ED25519_PUBLIC_KEY_LEN] {
        (**self).note_public_key()
    }

    fn note_sign(&self, message: &[u8]) -> Result<[u8; ED25519_SIGNATURE_LEN], NoteError> {
        (**self).note_sign(message)
    }
}

/// The first line of every Ed25519 cosignature message (domain separation).
pub(super) const COSIGNATURE_HEADER: &str = "cosignature/v1";

/// Cosignature timestamps must fit in a signed 64-bit integer (tlog-cosignature).
pub(super) const MAX_TIMESTAMP: u64 = i64::MAX as u64;

/// `cosignature/v1\ntime <t>\n` ‖ checkpoint body.
pub(super) fn cosignature_message(body: &str, timestamp: u64) -> String {
    format!("{COSIGNATURE_HEADER}\ntime {timestamp}\n{body}")
}

/// Key names: non-empty, no Unicode space, no `+`, no control character.
pub(super) fn check_key_name(name: &str) -> Result<(), NoteError> {
    let reason = if name.is_empty() {
        "it is empty"
    } else if name.chars().any(char::is_whitespace) {
        "it holds a space"
    } else if name.contains('+') {
        "it holds a plus sign"
    } else if name.chars().any(char::is_control) {
        "it holds a control character"
    } else {
        return Ok(());
    };
    Err(NoteError::BadKeyName {
        name: name.to_owned(),
        reason,
    })
}

/// SHA-256(name ‖ 0x0A ‖ type ‖ public key)[:4].
pub(super) fn compute_key_id(name: &str, key_type: KeyType, public_key: &[u8]) -> KeyId {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([b'\n', key_type.type_byte()]);
    h.update(public_key);
    let digest = h.finalize();
    [digest[0], digest[1], digest[2], digest[3]]
}

/// A public key that can check signature lines, written `name+hex(key_id)+base64(type ‖ key)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifierKey {
    pub(super) name: String,
    pub(super) key_type: KeyType,
    pub(super) key_id: KeyId,
    pub(super) public_key: [u8; ED25519_PUBLIC_KEY_LEN],
}

impl VerifierKey {
    /// A verifier key from its parts; the key ID is computed.
    pub fn new(
        name: &str,
        key_type: KeyType,
        public_key: [u8; ED25519_PUBLIC_KEY_LEN],
    ) -> Result<Self, NoteError> {
        check_key_name(name)?;
        Ok(Self {
            name: name.to_owned(),
            key_type,
            key_id: compute_key_id(name, key_type, &public_key),
            public_key,
        })
    }

    /// The verifier key matching a signing key pair.
    pub fn from_key_pair(
        name: &str,
        key_type: KeyType,
        key_pair: &(impl NoteSigner + ?Sized),
    ) -> Result<Self, NoteError> {
        Self::new(name, key_type, key_pair.note_public_key())
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The kind of signature it checks.
    pub fn key_type(&self) -> KeyType {
        self.key_type
    }

    /// The 4-byte key ID.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// The raw 32-byte Ed25519 public key.
    pub fn public_key(&self) -> &[u8; ED25519_PUBLIC_KEY_LEN] {
        &self.public_key
    }

    /// Check one line made by this key over `text`. Returns the cosignature time for a
    /// cosigner key.
    pub(super) fn verify_line(
        &self,
        text: &str,
        line: &SignatureLine,
    ) -> Result<Option<u64>, NoteError> {
        let invalid = || NoteError::InvalidSignature {
            name: self.name.clone(),
            key_id: hex::encode(self.key_id),
        };
        let public_key = UnparsedPublicKey::new(&ED25519, &self.public_key);
        match self.key_type {
            KeyType::Ed25519 => {
                if line.signature.len() != ED25519_SIGNATURE_LEN {
                    return Err(invalid());
                }
                public_key
                    .verify(text.as_bytes(), &line.signature)
                    .map_err(|_| invalid())?;
                Ok(None)
            }
            KeyType::CosignatureV1 => {
                let Some((time, sig)) = line.signature.split_first_chunk::<8>() else {
                    return Err(NoteError::CosignatureLength {
                        name: self.name.clone(),
                        len: line.signature.len(),
                    });
                };
                if sig.len() != ED25519_SIGNATURE_LEN {
                    return Err(NoteError::CosignatureLength {
                        name: self.name.clone(),
                        len: line.signature.len(),
                    });
                }
                let timestamp = u64::from_be_bytes(*time);
                if timestamp > MAX_TIMESTAMP {
                    return Err(NoteError::TimestampTooLarge(timestamp));
                }
                public_key
                    .verify(cosignature_message(text, timestamp).as_bytes(), sig)
                    .map_err(|_| invalid())?;
                Ok(Some(timestamp))
            }
        }
    }
}

impl fmt::Display for VerifierKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut raw = Vec::with_capacity(1 + ED25519_PUBLIC_KEY_LEN);
        raw.push(self.key_type.type_byte());
        raw.extend_from_slice(&self.public_key);
        write!(
            f,
            "{}+{}+{}",
            self.name,
            hex::encode(self.key_id),
            B64.encode(raw)
        )
    }
}

impl FromStr for VerifierKey {
    type Err = NoteError;

    fn from_str(key: &str) -> Result<Self, NoteError> {
        let bad = |reason| NoteError::BadVerifierKey {
            key: key.to_owned(),
            reason,
        };
        // The name has no '+', and neither has the hex ID; the base64 may hold '+'.
        let mut parts = key.splitn(3, '+');
        let (Some(name), Some(id_hex), Some(material)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("it does not have three `+`-separated parts"));
        };
        check_key_name(name)?;
        if id_hex.len() != 8 {
            return Err(bad("the key ID is not 8 hex digits"));
        }
        let claimed: KeyId = hex::decode(id_hex)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| bad("the key ID is not 8 hex digits"))?;
        let raw = B64
            .decode(material)
            .map_err(|_| bad("the key material is not standard padded base64"))?;
        let (&type_byte, public_key) = raw
            .split_first()
            .ok_or_else(|| bad("the key material is empty"))?;
        let key_type =
            KeyType::from_type_byte(type_byte).ok_or(NoteError::UnsupportedKeyType(type_byte))?;
        let public_key: [u8; ED25519_PUBLIC_KEY_LEN] = public_key
            .try_into()
            .map_err(|_| bad("the Ed25519 public key is not 32 bytes"))?;
        let parsed = Self::new(name, key_type, public_key)?;
        if parsed.key_id != claimed {
            return Err(NoteError::KeyIdMismatch {
                name: name.to_owned(),
                claimed: hex::encode(claimed),
                computed: hex::encode(parsed.key_id),
            });
        }
        Ok(parsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::note::tests::PETER_VKEY;

    #[test]
    fn verifier_key_parsing() {
        let key: VerifierKey = PETER_VKEY.parse().unwrap();
        assert_eq!(key.name(), "PeterNeumann");
        for bad in [
            "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", // wrong ID
            "PeterNeumann+c74f20a+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  // short ID
            "PeterNeumann+c74f20a3",                                              // no key
            "+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",             // no name
            "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10T",  // bad base64
            "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==",
            "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", // type 0x65
        ] {
            assert!(bad.parse::<VerifierKey>().is_err(), "accepted {bad}");
        }
        // Same name and key with type 0x04 is a different key ID.
        let cosigner =
            VerifierKey::new("PeterNeumann", KeyType::CosignatureV1, *key.public_key()).unwrap();
        assert_ne!(cosigner.key_id(), key.key_id());
        assert_eq!(
            cosigner.to_string().parse::<VerifierKey>().unwrap(),
            cosigner
        );
    }
}
