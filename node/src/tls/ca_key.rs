//! The key of a certificate authority: an ECDSA P-256 key pair in memory (`ca.key`), or
//! one held in a PKCS#11 token, which signs each certificate inside the token.

use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256, PublicKeyData, SignatureAlgorithm, SigningKey};

use crate::hsm::{HsmError, KeyKind, TokenKey, TokenSpec};

/// A CA's signing key.
pub enum CaKey {
    Memory(KeyPair),
    Token(TokenKey),
}

impl CaKey {
    /// The ECDSA P-256 key labelled `label` in the token `spec` names.
    pub fn open_token(spec: &TokenSpec, label: &str) -> Result<Self, HsmError> {
        Ok(Self::Token(TokenKey::open(spec, label, KeyKind::P256)?))
    }

    /// The key as PEM, for a key in memory; `None` for a key in a token.
    pub fn to_pem(&self) -> Option<String> {
        match self {
            Self::Memory(pair) => Some(pair.serialize_pem()),
            Self::Token(_) => None,
        }
    }
}

impl PublicKeyData for CaKey {
    fn der_bytes(&self) -> &[u8] {
        match self {
            Self::Memory(pair) => pair.der_bytes(),
            // The uncompressed point, as rcgen expects for ECDSA.
            Self::Token(key) => key.public_key(),
        }
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        match self {
            Self::Memory(pair) => pair.algorithm(),
            Self::Token(_) => &PKCS_ECDSA_P256_SHA256,
        }
    }
}

impl SigningKey for CaKey {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        match self {
            Self::Memory(pair) => pair.sign(msg),
            Self::Token(key) => key.sign_p256_sha256(msg).map_err(|e| {
                // rcgen's error carries no text: say here what failed.
                tracing::error!(error = %e, "the CA key in the token could not sign");
                rcgen::Error::RemoteKeyError
            }),
        }
    }
}
