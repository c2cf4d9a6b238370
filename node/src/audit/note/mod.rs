//! C2SP signed notes, tlog checkpoints and Ed25519 tlog-cosignatures.
//!
//! A checkpoint is the log's signed statement "my tree of `size` entries has root
//! `root`". It travels as a C2SP signed note (<https://c2sp.org/signed-note>):
//!
//! ```text
//! liutong.example/node-a        <- origin
//! 1234                          <- tree size, decimal
//! 3q2+7w...=                    <- base64 root hash
//!                               <- blank line
//! — liutong.example/node-a AbCd...  <- one line per signature
//! — witness.example/node-b EfGh...
//! ```
//!
//! - [`Checkpoint`] parses and formats the body (C2SP tlog-checkpoint).
//! - [`SignedNote`] parses and formats the whole note and checks its signatures against
//!   [`VerifierKey`]s, following the spec: lines from unknown keys are ignored, a line
//!   from a known key must verify, and at least one known key must have signed.
//! - [`sign_checkpoint`] makes the log's own Ed25519 signature (type 0x01).
//! - [`cosign`] and [`verify_cosignature`] make and check a witness's C2SP
//!   tlog-cosignature (<https://c2sp.org/tlog-cosignature>, Ed25519 form, type 0x04):
//!   a signature over `cosignature/v1\ntime <t>\n` ‖ checkpoint body, carried as
//!   `key_id ‖ 8-byte big-endian t ‖ signature`. [`add_cosignatures`] appends them.
//!
//! Decisions (where the specs leave a choice):
//! - Checkpoint **extension lines are rejected**. The spec makes them optional and does
//!   not recommend them (monitors cannot audit them); Liutong's logs never write them, and
//!   refusing them keeps parse and format exact inverses, so two checkpoints are the same
//!   statement exactly when their bodies are byte-equal.
//! - An origin of `cosignature/v1` is rejected, so a note signature over a checkpoint body
//!   can never be mistaken for a cosignature message even if a node used one Ed25519 key
//!   for both roles.
//! - A note may carry at most [`MAX_SIGNATURES`] signature lines (the spec asks verifiers
//!   to set a limit of at least 16; Go's sumdb/note uses 100).
//! - A known key whose signature fails rejects the whole note (the spec's SHOULD).
//!
//! The files: `checkpoint` (the body), `key` (verifier keys), `cosignature`
//! (witness cosignatures); this one holds the signed-note format itself.

mod checkpoint;
mod cosignature;
mod key;

pub use checkpoint::Checkpoint;
pub use cosignature::{add_cosignatures, cosign, verify_cosignature};
pub use key::{KeyId, KeyType, VerifierKey};

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ring::signature::Ed25519KeyPair;

use checkpoint::check_origin;
use key::{check_key_name, compute_key_id, ed25519_public_key};

/// The most signature lines a note may carry.
pub const MAX_SIGNATURES: usize = 100;

/// Signature type byte of a plain Ed25519 note signature (signed-note).
pub const TYPE_ED25519: u8 = 0x01;

/// Signature type byte of an Ed25519 timestamped cosignature (tlog-cosignature).
pub const TYPE_COSIGNATURE_V1: u8 = 0x04;

/// What starts every signature line: EM DASH (U+2014) and a space.
pub(super) const SIGNATURE_PREFIX: &str = "\u{2014} ";

pub(super) const ED25519_SIGNATURE_LEN: usize = 64;

pub(super) const ED25519_PUBLIC_KEY_LEN: usize = 32;

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

/// A parsed signed note: the text and its signature lines, not yet verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedNote {
    /// The signed text, final newline included, separating blank line excluded.
    text: String,
    signatures: Vec<SignatureLine>,
}

/// A signature that [`SignedNote::verify`] checked against a known key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedSignature {
    /// The key name.
    pub name: String,
    /// The key ID.
    pub key_id: KeyId,
    /// The kind of signature.
    pub key_type: KeyType,
    /// For a cosignature, the time the cosigner stated (Unix seconds).
    pub timestamp: Option<u64>,
}

impl SignedNote {
    /// Parse the structure of a signed note. No signature is checked: call
    /// [`SignedNote::verify`] before trusting the text.
    pub fn parse(note: &[u8]) -> Result<Self, NoteError> {
        let note = std::str::from_utf8(note).map_err(|_| NoteError::NotUtf8)?;
        if let Some((position, byte)) = note
            .bytes()
            .enumerate()
            .find(|&(_, b)| b < 0x20 && b != b'\n')
        {
            return Err(NoteError::ControlCharacter { byte, position });
        }
        if !note.ends_with('\n') {
            return Err(NoteError::MissingFinalNewline);
        }
        // The text may hold empty lines; the last one separates it from the signatures.
        let split = note.rfind("\n\n").ok_or(NoteError::MissingBlankLine)?;
        let (text, block) = (&note[..=split], &note[split + 2..]);
        if block.is_empty() {
            return Err(NoteError::NoSignatures);
        }
        // `block` ends with '\n' (checked above), so the last split piece is empty.
        let lines: Vec<&str> = block[..block.len() - 1].split('\n').collect();
        if lines.len() > MAX_SIGNATURES {
            return Err(NoteError::TooManySignatures {
                count: lines.len(),
                max: MAX_SIGNATURES,
            });
        }
        let signatures = lines
            .iter()
            .enumerate()
            .map(|(i, l)| parse_signature_line(i + 1, l))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            text: text.to_owned(),
            signatures,
        })
    }

    /// A note with `text` (which must end with a newline) and no signatures yet.
    fn unsigned(text: String) -> Self {
        Self {
            text,
            signatures: Vec::new(),
        }
    }

    /// The signed text (not yet trustworthy unless [`SignedNote::verify`] succeeded).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The signature lines, in order.
    pub fn signatures(&self) -> &[SignatureLine] {
        &self.signatures
    }

    /// Append a signature line (e.g. a cosignature). Fails past [`MAX_SIGNATURES`].
    pub fn add_signature(&mut self, line: SignatureLine) -> Result<(), NoteError> {
        check_key_name(&line.name)?;
        if self.signatures.len() >= MAX_SIGNATURES {
            return Err(NoteError::TooManySignatures {
                count: self.signatures.len() + 1,
                max: MAX_SIGNATURES,
            });
        }
        self.signatures.push(line);
        Ok(())
    }

    /// Check the signatures against `keys`: lines from unknown keys (name and key ID not
    /// both matching a known key) are ignored, every line from a known key must verify,
    /// and at least one must. Returns the verified signatures.
    pub fn verify(&self, keys: &[VerifierKey]) -> Result<Vec<VerifiedSignature>, NoteError> {
        let mut verified = Vec::new();
        for line in &self.signatures {
            for key in keys
                .iter()
                .filter(|k| k.name == line.name && k.key_id == line.key_id)
            {
                let timestamp = key.verify_line(&self.text, line)?;
                verified.push(VerifiedSignature {
                    name: key.name.clone(),
                    key_id: key.key_id,
                    key_type: key.key_type,
                    timestamp,
                });
            }
        }
        if verified.is_empty() {
            return Err(NoteError::NoKnownSignature {
                known: keys
                    .iter()
                    .map(|k| k.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        Ok(verified)
    }
}

impl fmt::Display for SignedNote {
    /// The note as sent on the wire: text, blank line, signature lines.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)?;
        f.write_str("\n")?;
        for line in &self.signatures {
            write!(f, "{line}")?;
        }
        Ok(())
    }
}

pub(super) fn parse_signature_line(line: usize, text: &str) -> Result<SignatureLine, NoteError> {
    let rest = text
        .strip_prefix(SIGNATURE_PREFIX)
        .ok_or_else(|| NoteError::NoEmDash {
            line,
            text: text.to_owned(),
        })?;
    let (name, sig) = rest
        .split_once(' ')
        .ok_or(NoteError::MalformedSignatureLine { line })?;
    check_key_name(name)?;
    let raw = B64
        .decode(sig)
        .map_err(|_| NoteError::SignatureBase64 { line })?;
    if raw.len() < 5 {
        return Err(NoteError::SignatureTooShort {
            line,
            len: raw.len(),
        });
    }
    let mut key_id = [0u8; 4];
    key_id.copy_from_slice(&raw[..4]);
    Ok(SignatureLine {
        name: name.to_owned(),
        key_id,
        signature: raw[4..].to_vec(),
    })
}

/// The log's signed note for `checkpoint`, signed as `name` with `key_pair` (type 0x01).
pub fn sign_checkpoint(
    checkpoint: &Checkpoint,
    name: &str,
    key_pair: &Ed25519KeyPair,
) -> Result<SignedNote, NoteError> {
    check_origin(&checkpoint.origin)?;
    let mut note = SignedNote::unsigned(checkpoint.to_text());
    let line = sign_text(note.text(), name, key_pair)?;
    note.add_signature(line)?;
    Ok(note)
}

/// A plain Ed25519 note signature line (type 0x01) over `text`.
pub fn sign_text(
    text: &str,
    name: &str,
    key_pair: &Ed25519KeyPair,
) -> Result<SignatureLine, NoteError> {
    check_key_name(name)?;
    let key_id = compute_key_id(name, KeyType::Ed25519, &ed25519_public_key(key_pair));
    Ok(SignatureLine {
        name: name.to_owned(),
        key_id,
        signature: key_pair.sign(text.as_bytes()).as_ref().to_vec(),
    })
}

/// Verify a signed checkpoint note against the log's keys and return the checkpoint.
///
/// Only [`KeyType::Ed25519`] keys count as the log's: a cosigner's key among `log_keys`
/// is ignored, so a witness's cosignature can never stand in for the log's signature.
pub fn open_checkpoint(
    note: &[u8],
    log_keys: &[VerifierKey],
) -> Result<(Checkpoint, SignedNote), NoteError> {
    let note = SignedNote::parse(note)?;
    let keys: Vec<VerifierKey> = log_keys
        .iter()
        .filter(|k| k.key_type == KeyType::Ed25519)
        .cloned()
        .collect();
    note.verify(&keys)?;
    let checkpoint = Checkpoint::parse(note.text())?;
    Ok((checkpoint, note))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;

    use crate::audit::merkle::Hash;

    // golang.org/x/mod/sumdb/note package documentation: a key pair and a note it signed.
    const PETER_SKEY_SEED_B64: &str = "AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";

    pub(super) const PETER_VKEY: &str =
        "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";

    const PETER_NOTE: &str = "If you think cryptography is the answer to your problem,\n\
         then you don't know what your problem is.\n\
         \n\
         \u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";

    // The C2SP signed-note example.
    const SPEC_VKEY: &str = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k";

    const SPEC_NOTE: &str = "This is an example message.\n\n\u{2014} example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n";

    // A real checkpoint of a public CT log with the log's Ed25519 signature (0x01), an
    // RFC 6962 signature of type 0x05 (unknown here, must be ignored) and witness
    // cosignatures (0x04), among them remora.n621.de's.
    const REAL_LOG_VKEY: &str = "arche2025h1.staging.ct.transparency.dev+ba2f06c0+AU0vHmlGCS/PdN8b2OaGmKprLI8HKM+dJ472xgFYh15f";

    const REAL_WITNESS_VKEY: &str =
        "remora.n621.de+da77ade7+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2";

    const REAL_CHECKPOINT: &str = "arche2025h1.staging.ct.transparency.dev
1432088532
U7WM79jrzyhGZ5/GUBTpM7NzwdyfFx61t3RovgcC4Ro=

— arche2025h1.staging.ct.transparency.dev zTM8sQAAAZ5W0WdjBAMARjBEAiBjW5IQf9pvsYLfQFX6hoGREPMHbdQ3urbllzalApkptQIgIpwtEroeW2BXaHAI4kJXFbon5Ch9MNL5zRNZ55lvGt0=
— arche2025h1.staging.ct.transparency.dev ui8GwCF1+kWqZrxGdhj4aX3gcw7XUlXQQabg/27lefwhUkzbC3NygNI75MdhL1bfTW9g8Ei59RA23oHP7Ry1k3ZFWwQ=
— transparency.dev/DEV:witness-little-garden 2AQqhwAAAABqEiEgzgFIqqhbUoDwjMWE6UP8nd8/KYTzwZ2rhIgcqoXHAwVkjZr4AscylP3v7sEodkRAErumC2q44vdgJY096st5BQ==
— witness1.smartit.nu/witness1 pIyCDwAAAABqEiEghIp82KWebrw7/oHQwlTAm3g2RKS4+eebl8eO0WH+/iEcxZ75W3u5hNI7TOQtmJbqmNWVuE0tgh0XwzdZsDsUAQ==
— remora.n621.de 2net5wAAAABqEiEgPlfF3V06o0Y+fHM+J5J9s27wgxxcOVSpZ/2g/KSiXCg9DEZI+aVCIobWX9sXTynk5XeU/zZ0WBxtqB0DrAWfBw==
— witness.stagemole.eu Z/euoAAAAABqEiEgw0i+7g2ENfDAWHmtRzCfKTHSDwYDJA2NmKeGi9Y8FtEyOUvVr+AJmIY/2TUFucgKi7lI7cUiOvKFYe/TmN9DAg==
";

    fn peter_key_pair() -> Ed25519KeyPair {
        let raw = B64.decode(PETER_SKEY_SEED_B64).unwrap();
        assert_eq!(raw[0], TYPE_ED25519);
        Ed25519KeyPair::from_seed_unchecked(&raw[1..]).unwrap()
    }

    pub(super) fn new_key_pair() -> Ed25519KeyPair {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap()
    }

    pub(super) fn sample_checkpoint() -> Checkpoint {
        Checkpoint {
            origin: "liutong.example/91110000600037341L".to_owned(),
            size: 1234,
            root: crate_leaf(b"root"),
        }
    }

    fn crate_leaf(b: &[u8]) -> Hash {
        super::super::merkle::leaf_hash(b)
    }

    #[test]
    fn go_sumdb_note_known_answer() {
        let key: VerifierKey = PETER_VKEY.parse().unwrap();
        assert_eq!(key.to_string(), PETER_VKEY);
        assert_eq!(hex::encode(key.key_id()), "c74f20a3");
        let note = SignedNote::parse(PETER_NOTE.as_bytes()).unwrap();
        let verified = note.verify(std::slice::from_ref(&key)).unwrap();
        assert_eq!(verified.len(), 1);
        assert_eq!(verified[0].name, "PeterNeumann");
        assert_eq!(note.to_string(), PETER_NOTE);
        // Ed25519 is deterministic: signing the same text with the same key gives the
        // published line, byte for byte.
        let kp = peter_key_pair();
        assert_eq!(
            VerifierKey::from_key_pair("PeterNeumann", KeyType::Ed25519, &kp).unwrap(),
            key
        );
        let line = sign_text(note.text(), "PeterNeumann", &kp).unwrap();
        assert_eq!(&line, &note.signatures()[0]);
    }

    #[test]
    fn c2sp_spec_example_verifies() {
        let key: VerifierKey = SPEC_VKEY.parse().unwrap();
        let note = SignedNote::parse(SPEC_NOTE.as_bytes()).unwrap();
        assert_eq!(note.text(), "This is an example message.\n");
        note.verify(&[key]).unwrap();
    }

    #[test]
    fn real_checkpoint_with_cosignatures_known_answer() {
        let log: VerifierKey = REAL_LOG_VKEY.parse().unwrap();
        let witness: VerifierKey = REAL_WITNESS_VKEY.parse().unwrap();
        assert_eq!(witness.key_type(), KeyType::CosignatureV1);
        assert_eq!(witness.to_string(), REAL_WITNESS_VKEY);

        let (cp, note) =
            open_checkpoint(REAL_CHECKPOINT.as_bytes(), std::slice::from_ref(&log)).unwrap();
        assert_eq!(cp.origin, "arche2025h1.staging.ct.transparency.dev");
        assert_eq!(cp.size, 1_432_088_532);
        assert_eq!(cp.to_text(), note.text());
        assert_eq!(note.to_string(), REAL_CHECKPOINT);

        let verified = note.verify(&[log.clone(), witness.clone()]).unwrap();
        assert_eq!(verified.len(), 2);
        let cosig = verified
            .iter()
            .find(|v| v.key_type == KeyType::CosignatureV1)
            .unwrap();
        let line = note
            .signatures()
            .iter()
            .find(|l| l.name == "remora.n621.de")
            .unwrap();
        let t = verify_cosignature(note.text(), line, &witness).unwrap();
        assert_eq!(cosig.timestamp, Some(t));
        assert_eq!(t, 0x6a12_2120);

        // The cosigner's key alone is not the log's: open_checkpoint refuses it.
        assert!(matches!(
            open_checkpoint(REAL_CHECKPOINT.as_bytes(), std::slice::from_ref(&witness)),
            Err(NoteError::NoKnownSignature { .. })
        ));
        // Changing the size breaks both the log signature and the cosignature.
        let tampered = REAL_CHECKPOINT.replace("1432088532", "1432088533");
        assert!(matches!(
            open_checkpoint(tampered.as_bytes(), &[log]),
            Err(NoteError::InvalidSignature { .. })
        ));
        assert!(verify_cosignature(&tampered[..cp.to_text().len()], line, &witness).is_err());
    }

    #[test]
    fn sign_open_round_trip() {
        let kp = new_key_pair();
        let name = "liutong.example/91110000600037341L";
        let key = VerifierKey::from_key_pair(name, KeyType::Ed25519, &kp).unwrap();
        let reparsed: VerifierKey = key.to_string().parse().unwrap();
        assert_eq!(reparsed, key);

        let cp = sample_checkpoint();
        let note = sign_checkpoint(&cp, name, &kp).unwrap();
        let wire = note.to_string();
        let (opened, again) = open_checkpoint(wire.as_bytes(), std::slice::from_ref(&key)).unwrap();
        assert_eq!(opened, cp);
        assert_eq!(again, note);
        assert_eq!(Checkpoint::parse(&cp.to_text()).unwrap(), cp);
    }

    #[test]
    fn tampering_is_rejected() {
        let kp = new_key_pair();
        let name = "liutong.example/a";
        let key = VerifierKey::from_key_pair(name, KeyType::Ed25519, &kp).unwrap();
        let cp = Checkpoint {
            origin: name.to_owned(),
            ..sample_checkpoint()
        };
        let wire = sign_checkpoint(&cp, name, &kp).unwrap().to_string();
        let keys = std::slice::from_ref(&key);

        let changed_size = wire.replace("\n1234\n", "\n1235\n");
        let mut other_root = cp.clone();
        other_root.root[0] ^= 1;
        let changed_root = wire.replace(&cp.to_text(), &other_root.to_text());
        let changed_origin = wire.replacen("liutong.example/a\n", "liutong.example/b\n", 1);
        for (what, bad) in [
            ("size", changed_size),
            ("root", changed_root),
            ("origin", changed_origin),
        ] {
            assert_ne!(bad, wire, "{what} replacement did nothing");
            assert!(
                matches!(
                    open_checkpoint(bad.as_bytes(), keys),
                    Err(NoteError::InvalidSignature { .. })
                ),
                "changed {what} accepted"
            );
        }

        // Another key under the same name: its ID differs, so the line is "unknown".
        let other = VerifierKey::from_key_pair(name, KeyType::Ed25519, &new_key_pair()).unwrap();
        assert!(matches!(
            open_checkpoint(wire.as_bytes(), &[other]),
            Err(NoteError::NoKnownSignature { .. })
        ));
        // A known name and ID with a forged signature is an error, not ignored.
        let mut note = SignedNote::parse(wire.as_bytes()).unwrap();
        note.signatures[0].signature[10] ^= 0x40;
        assert!(matches!(
            note.verify(keys),
            Err(NoteError::InvalidSignature { .. })
        ));
    }

    #[test]
    fn unknown_signers_are_ignored_but_one_known_is_required() {
        let kp = new_key_pair();
        let key = VerifierKey::from_key_pair("log", KeyType::Ed25519, &kp).unwrap();
        let cp = sample_checkpoint();
        let mut note = sign_checkpoint(&cp, "log", &kp).unwrap();
        note.add_signature(SignatureLine {
            name: "stranger.example".to_owned(),
            key_id: [1, 2, 3, 4],
            signature: vec![0; 64],
        })
        .unwrap();
        let reparsed = SignedNote::parse(note.to_string().as_bytes()).unwrap();
        assert_eq!(
            reparsed.verify(std::slice::from_ref(&key)).unwrap().len(),
            1
        );
        assert!(matches!(
            reparsed.verify(&[]),
            Err(NoteError::NoKnownSignature { .. })
        ));
    }

    #[test]
    fn malformed_notes_are_rejected_with_the_reason() {
        let line = "\u{2014} log AAAAAAAA\n";
        type Expect = fn(&NoteError) -> bool;
        let cases: Vec<(Vec<u8>, Expect)> = vec![
            (b"a\n\xff\n\n".to_vec(), |e| matches!(e, NoteError::NotUtf8)),
            (format!("a\tb\n\n{line}").into_bytes(), |e| {
                matches!(e, NoteError::ControlCharacter { byte: 9, .. })
            }),
            (format!("text\n{line}").into_bytes(), |e| {
                matches!(e, NoteError::MissingBlankLine)
            }),
            (b"text\n\n".to_vec(), |e| {
                matches!(e, NoteError::NoSignatures)
            }),
            (format!("text\n\n{}", line.trim_end()).into_bytes(), |e| {
                matches!(e, NoteError::MissingFinalNewline)
            }),
            (b"text\n\n- log AAAAAAAA\n".to_vec(), |e| {
                matches!(e, NoteError::NoEmDash { line: 1, .. })
            }),
            ("text\n\n\u{2014} logAAAAAAAA\n".as_bytes().to_vec(), |e| {
                matches!(e, NoteError::MalformedSignatureLine { .. })
            }),
            ("text\n\n\u{2014} log !!!!\n".as_bytes().to_vec(), |e| {
                matches!(e, NoteError::SignatureBase64 { .. })
            }),
            ("text\n\n\u{2014} log AAAA\n".as_bytes().to_vec(), |e| {
                matches!(e, NoteError::SignatureTooShort { len: 3, .. })
            }),
            ("text\n\n\u{2014} a+b AAAAAAAA\n".as_bytes().to_vec(), |e| {
                matches!(e, NoteError::BadKeyName { .. })
            }),
            (
                format!("text\n\n{}", line.repeat(MAX_SIGNATURES + 1)).into_bytes(),
                |e| matches!(e, NoteError::TooManySignatures { .. }),
            ),
        ];
        for (note, expected) in cases {
            let err = SignedNote::parse(&note).expect_err(&String::from_utf8_lossy(&note));
            assert!(
                expected(&err),
                "{:?}: got {err:?}",
                String::from_utf8_lossy(&note)
            );
        }
        // The limit itself is accepted.
        let at_limit = format!("text\n\n{}", line.repeat(MAX_SIGNATURES));
        assert_eq!(
            SignedNote::parse(at_limit.as_bytes())
                .unwrap()
                .signatures()
                .len(),
            MAX_SIGNATURES
        );
        // The text may hold empty lines; the last one separates.
        let n = SignedNote::parse(format!("a\n\nb\n\n{line}").as_bytes()).unwrap();
        assert_eq!(n.text(), "a\n\nb\n");
    }
}
