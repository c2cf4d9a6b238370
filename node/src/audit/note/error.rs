//! What can be wrong with a note, a checkpoint, a key or a signature: one error type for
//! every part of the note format.

use super::wire::KeyType;

/// Everything that can be wrong with a note, a checkpoint, a key or a signature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NoteError {
    /// The note is not UTF-8.
    #[error("the signed note is not valid UTF-8")]
    NotUtf8,
    /// The note holds a control character other than newline.
    #[error(
        "the signed note holds control character {byte:#04x} at byte {position}; only newline is allowed"
    )]
    ControlCharacter {
        /// The offending byte.
        byte: u8,
        /// Its offset in the note.
        position: usize,
    },
    /// No blank line separates the text from the signatures.
    #[error("the signed note has no blank line between its text and its signature lines")]
    MissingBlankLine,
    /// The note does not end with a newline.
    #[error("the signed note does not end with a newline")]
    MissingFinalNewline,
    /// The note has no signature line.
    #[error("the signed note has no signature lines after the blank line")]
    NoSignatures,
    /// The note has more signature lines than allowed.
    #[error("the signed note has {count} signature lines; at most {max} are accepted")]
    TooManySignatures {
        /// Lines found.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A signature line does not start with an em dash and a space.
    #[error("signature line {line} does not start with an em dash (U+2014) and a space: {text:?}")]
    NoEmDash {
        /// One-based line number within the signature block.
        line: usize,
        /// The line as found.
        text: String,
    },
    /// A signature line is not `— <name> <base64>`.
    #[error("signature line {line} is not `— <key name> <base64 signature>`")]
    MalformedSignatureLine {
        /// One-based line number within the signature block.
        line: usize,
    },
    /// A signature is not valid standard base64.
    #[error("signature line {line} does not hold standard padded base64")]
    SignatureBase64 {
        /// One-based line number within the signature block.
        line: usize,
    },
    /// A signature is too short to hold a key ID and a signature.
    #[error(
        "signature line {line} decodes to {len} bytes; a key ID and a signature need at least 5"
    )]
    SignatureTooShort {
        /// One-based line number within the signature block.
        line: usize,
        /// Decoded length.
        len: usize,
    },
    /// A key name breaks the spec's rules.
    #[error("key name {name:?} is not allowed: {reason}")]
    BadKeyName {
        /// The name.
        name: String,
        /// What rule it breaks.
        reason: &'static str,
    },
    /// A verifier key string is malformed.
    #[error("verifier key {key:?} is malformed: {reason}; expected name+hex8+base64(type‖key)")]
    BadVerifierKey {
        /// The key string.
        key: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A verifier key names a signature type this node does not support.
    #[error(
        "verifier key type {0:#04x} is not supported; use 0x01 (Ed25519) or 0x04 (cosignature/v1)"
    )]
    UnsupportedKeyType(u8),
    /// A verifier key's ID does not match its name and public key.
    #[error(
        "verifier key for {name:?} claims key ID {claimed} but its name and key give {computed}"
    )]
    KeyIdMismatch {
        /// The key name.
        name: String,
        /// The ID written in the key.
        claimed: String,
        /// The ID computed from name, type and key.
        computed: String,
    },
    /// A known key's signature did not verify.
    #[error(
        "the signature of known key {name:?} ({key_id}) does not verify: the note was altered or signed by another key"
    )]
    InvalidSignature {
        /// The key name.
        name: String,
        /// The key ID in hex.
        key_id: String,
    },
    /// A cosignature is not 8 + 64 bytes.
    #[error(
        "the cosignature of {name:?} is {len} bytes after the key ID; it must be 72 (time and signature)"
    )]
    CosignatureLength {
        /// The cosigner name.
        name: String,
        /// Length after the key ID.
        len: usize,
    },
    /// A cosignature time is beyond 2^63 - 1.
    #[error("cosignature time {0} exceeds 2^63 - 1")]
    TimestampTooLarge(u64),
    /// The key could not sign (a key in a token that cannot be reached).
    #[error("the note could not be signed: {0}")]
    Signing(String),
    /// No signature from a known key was found.
    #[error(
        "no signature line is from a known key (known: {known}); check the configured verifier keys"
    )]
    NoKnownSignature {
        /// The known key names, comma-separated.
        known: String,
    },
    /// A checkpoint body is malformed.
    #[error("malformed checkpoint: {0}")]
    BadCheckpoint(&'static str),
    /// A signature line's key is not the one given.
    #[error(
        "the signature line is from {line_name:?} ({line_id}), not from key {key_name:?} ({key_id})"
    )]
    WrongKey {
        /// Name on the line.
        line_name: String,
        /// Key ID on the line, hex.
        line_id: String,
        /// Name of the key given.
        key_name: String,
        /// Key ID of the key given, hex.
        key_id: String,
    },
    /// A key of the wrong type was used.
    #[error("key {name:?} is a {actual:?} key, but a {expected:?} key is needed here")]
    WrongKeyType {
        /// The key name.
        name: String,
        /// The type needed.
        expected: KeyType,
        /// The type it has.
        actual: KeyType,
    },
}
