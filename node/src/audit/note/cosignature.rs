//! C2SP tlog-cosignatures (Ed25519 form, type 0x04): a witness's signature over
//! `cosignature/v1\ntime <t>\n` ‖ checkpoint body, made, checked and added to a note.

use super::error::NoteError;
use super::key::{
    MAX_TIMESTAMP, NoteSigner, VerifierKey, check_key_name, compute_key_id, cosignature_message,
};
use super::signed::SignedNote;
use super::wire::{ED25519_SIGNATURE_LEN, KeyType, SignatureLine};

/// A witness's tlog-cosignature line over a checkpoint body, stating time `timestamp`
/// (Unix seconds), signed as `name` with `key_pair` (type 0x04).
pub fn cosign(
    checkpoint_body: &str,
    name: &str,
    key_pair: &(impl NoteSigner + ?Sized),
    timestamp: u64,
) -> Result<SignatureLine, NoteError> {
    check_key_name(name)?;
    if timestamp > MAX_TIMESTAMP {
        return Err(NoteError::TimestampTooLarge(timestamp));
    }
    let key_id = compute_key_id(name, KeyType::CosignatureV1, &key_pair.note_public_key());
    let sig = key_pair.note_sign(cosignature_message(checkpoint_body, timestamp).as_bytes())?;
    let mut signature = Vec::with_capacity(8 + ED25519_SIGNATURE_LEN);
    signature.extend_from_slice(&timestamp.to_be_bytes());
    signature.extend_from_slice(sig.as_ref());
    Ok(SignatureLine {
        name: name.to_owned(),
        key_id,
        signature,
    })
}

/// Check one cosignature line over a checkpoint body against a cosigner key; returns the
/// time it states.
pub fn verify_cosignature(
    checkpoint_body: &str,
    line: &SignatureLine,
    key: &VerifierKey,
) -> Result<u64, NoteError> {
    if key.key_type != KeyType::CosignatureV1 {
        return Err(NoteError::WrongKeyType {
            name: key.name.clone(),
            expected: KeyType::CosignatureV1,
            actual: key.key_type,
        });
    }
    if line.name != key.name || line.key_id != key.key_id {
        return Err(NoteError::WrongKey {
            line_name: line.name.clone(),
            line_id: hex::encode(line.key_id),
            key_name: key.name.clone(),
            key_id: hex::encode(key.key_id),
        });
    }
    // A cosigner key's verify_line always returns the time.
    key.verify_line(checkpoint_body, line)
        .map(|t| t.unwrap_or_default())
}

/// Append cosignature lines to a signed checkpoint note, skipping any line already there
/// (a witness may answer twice for the same checkpoint).
pub fn add_cosignatures(
    note: &mut SignedNote,
    lines: impl IntoIterator<Item = SignatureLine>,
) -> Result<(), NoteError> {
    for line in lines {
        if !note.signatures.contains(&line) {
            note.add_signature(line)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::note::sign_checkpoint;
    use crate::audit::note::tests::{new_key_pair, sample_checkpoint};

    #[test]
    fn cosignature_round_trip_and_tampering() {
        let log_kp = new_key_pair();
        let witness_kp = new_key_pair();
        let log_key = VerifierKey::from_key_pair("log", KeyType::Ed25519, &log_kp).unwrap();
        let witness_key =
            VerifierKey::from_key_pair("witness.example", KeyType::CosignatureV1, &witness_kp)
                .unwrap();
        let cp = sample_checkpoint();
        let mut note = sign_checkpoint(&cp, "log", &log_kp).unwrap();
        let line = cosign(note.text(), "witness.example", &witness_kp, 1_700_000_000).unwrap();
        assert_eq!(line.signature.len(), 72);
        assert_eq!(line.signature[..8], 1_700_000_000u64.to_be_bytes());
        assert_eq!(
            verify_cosignature(note.text(), &line, &witness_key).unwrap(),
            1_700_000_000
        );

        add_cosignatures(&mut note, [line.clone(), line.clone()]).unwrap();
        assert_eq!(note.signatures().len(), 2, "duplicates are not added twice");
        let wire = note.to_string();
        let reparsed = SignedNote::parse(wire.as_bytes()).unwrap();
        let verified = reparsed
            .verify(&[log_key.clone(), witness_key.clone()])
            .unwrap();
        assert_eq!(verified.len(), 2);
        assert_eq!(verified[1].timestamp, Some(1_700_000_000));

        // Another body, another time, another key, the wrong key type: all refused.
        let mut other = cp.clone();
        other.size += 1;
        assert!(verify_cosignature(&other.to_text(), &line, &witness_key).is_err());
        let mut later = line.clone();
        later.signature[7] ^= 1;
        assert!(matches!(
            verify_cosignature(note.text(), &later, &witness_key),
            Err(NoteError::InvalidSignature { .. })
        ));
        let stranger =
            VerifierKey::from_key_pair("witness.example", KeyType::CosignatureV1, &new_key_pair())
                .unwrap();
        assert!(matches!(
            verify_cosignature(note.text(), &line, &stranger),
            Err(NoteError::WrongKey { .. })
        ));
        assert!(matches!(
            verify_cosignature(note.text(), &line, &log_key),
            Err(NoteError::WrongKeyType { .. })
        ));
        // A cosignature is not a plain note signature by the same key, nor vice versa.
        let plain_as_cosigner =
            VerifierKey::from_key_pair("witness.example", KeyType::Ed25519, &witness_kp).unwrap();
        assert!(reparsed.verify(&[plain_as_cosigner]).is_err());
        assert!(matches!(
            cosign(note.text(), "w", &witness_kp, u64::MAX),
            Err(NoteError::TimestampTooLarge(_))
        ));
    }
}
