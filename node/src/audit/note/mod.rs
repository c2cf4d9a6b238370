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
//! (witness cosignatures), `signed` (the signed-note format itself), `wire` (the
//! type bytes, sizes and signature lines they share) and `error`; this one only
//! declares them and names what the rest of the node uses.

mod checkpoint;
mod cosignature;
mod error;
mod key;
mod signed;
mod wire;

pub use checkpoint::Checkpoint;
pub use cosignature::{add_cosignatures, cosign, verify_cosignature};
pub use error::NoteError;
pub use key::{NoteSigner, VerifierKey};
pub use signed::{
    MAX_SIGNATURES, SignedNote, VerifiedSignature, open_checkpoint, sign_checkpoint, sign_text,
};
pub use wire::{KeyId, KeyType, SignatureLine, TYPE_COSIGNATURE_V1, TYPE_ED25519};

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD as B64;
    use ring::rand::SystemRandom;
    use ring::signature::Ed25519KeyPair;

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
