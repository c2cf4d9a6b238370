//! The signed-note format itself (C2SP signed-note): parsing and formatting a note,
//! checking its signatures against known keys, and the log's own signature over a
//! checkpoint.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use super::checkpoint::{Checkpoint, check_origin};
use super::error::NoteError;
use super::key::{NoteSigner, VerifierKey, check_key_name, compute_key_id};
use super::wire::{KeyId, KeyType, SIGNATURE_PREFIX, SignatureLine};

/// The most signature lines a note may carry.
pub const MAX_SIGNATURES: usize = 100;

/// A parsed signed note: the text and its signature lines, not yet verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedNote {
    /// The signed text, final newline included, separating blank line excluded.
    pub(super) text: String,
    pub(super) signatures: Vec<SignatureLine>,
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
    pub(super) fn unsigned(text: String) -> Self {
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
    key_pair: &(impl NoteSigner + ?Sized),
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
    key_pair: &(impl NoteSigner + ?Sized),
) -> Result<SignatureLine, NoteError> {
    check_key_name(name)?;
    let key_id = compute_key_id(name, KeyType::Ed25519, &key_pair.note_public_key());
    Ok(SignatureLine {
        name: name.to_owned(),
        key_id,
        signature: key_pair.note_sign(text.as_bytes())?.to_vec(),
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
