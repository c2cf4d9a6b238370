//! The note's wire vocabulary, shared by every part of it: signature types and their
//! type bytes, key IDs, Ed25519 sizes, and one signature line as it is written.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

/// Signature type byte of a plain Ed25519 note signature (signed-note).
pub const TYPE_ED25519: u8 = 0x01;

/// Signature type byte of an Ed25519 timestamped cosignature (tlog-cosignature).
pub const TYPE_COSIGNATURE_V1: u8 = 0x04;

/// What starts every signature line: EM DASH (U+2014) and a space.
pub(in crate::audit) const SIGNATURE_PREFIX: &str = "\u{2014} ";

pub(in crate::audit) const ED25519_SIGNATURE_LEN: usize = 64;

pub(in crate::audit) const ED25519_PUBLIC_KEY_LEN: usize = 32;

/// The 4-byte key ID that opens every signature.
pub type KeyId = [u8; 4];

/// Which kind of signature a key makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KeyType {
    /// Ed25519 over the note text: how a log signs its own checkpoints.
    Ed25519,
    /// Ed25519 tlog-cosignature v1: how a witness cosigns another log's checkpoint.
    CosignatureV1,
}

impl KeyType {
    /// The type byte used in key IDs and verifier keys.
    pub fn type_byte(self) -> u8 {
        match self {
            KeyType::Ed25519 => TYPE_ED25519,
            KeyType::CosignatureV1 => TYPE_COSIGNATURE_V1,
        }
    }

    pub(super) fn from_type_byte(b: u8) -> Option<Self> {
        match b {
            TYPE_ED25519 => Some(KeyType::Ed25519),
            TYPE_COSIGNATURE_V1 => Some(KeyType::CosignatureV1),
            _ => None,
        }
    }
}

/// One signature line: `— <name> base64(key_id ‖ signature)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureLine {
    /// The key name.
    pub name: String,
    /// The key ID.
    pub key_id: KeyId,
    /// What follows the key ID: an Ed25519 signature, or time ‖ signature for a cosignature.
    pub signature: Vec<u8>,
}

impl fmt::Display for SignatureLine {
    /// The full line, final newline included.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut raw = Vec::with_capacity(4 + self.signature.len());
        raw.extend_from_slice(&self.key_id);
        raw.extend_from_slice(&self.signature);
        writeln!(f, "{SIGNATURE_PREFIX}{} {}", self.name, B64.encode(raw))
    }
}
