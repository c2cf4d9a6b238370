//! Witnessing a peer's log: the pure decision of whether to cosign its checkpoint.
//!
//! Peers witness each other so that no node can show one history to some peers and
//! another history to others (a split view), or quietly rewrite its past. A log sends its
//! new signed checkpoint with a consistency proof from the size this witness last
//! cosigned; the witness answers with a C2SP tlog-cosignature line (see [`super::note`]).
//!
//! The rules, in the order [`Witness::witness`] applies them:
//!
//! 1. The note must be well formed and signed by one of the log's configured keys
//!    (configured per origin; an unknown origin is refused).
//! 2. A checkpoint of the same size as the one last cosigned but with another root is a
//!    fork: both signed checkpoints come back in [`WitnessError::Conflict`] as evidence.
//! 3. A smaller size is refused: a witness never goes back.
//! 4. `old_size` (the size the log believes this witness last cosigned, as in the C2SP
//!    tlog-witness protocol) must match, or the log is told the right size to prove from.
//! 5. A larger size needs a valid consistency proof from the last cosigned checkpoint.
//!    A proof that fails is also a [`WitnessError::Conflict`]: the log signed both
//!    checkpoints, so it must be able to prove one extends the other; if it cannot, it
//!    forked, and the two signed checkpoints are what an auditor needs to ask it.
//!
//! The first checkpoint seen from a log is accepted on its signature alone (there is
//! nothing to be consistent with yet).
//!
//! State is a plain [`WitnessState`] (serde), one entry per origin holding the last
//! cosigned size, root and signed note. The caller stores it atomically, and must store
//! it *before* sending the cosignature: a witness that cosigned and then forgot could be
//! led to cosign a fork after a restart. On any error the state is unchanged.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::merkle::{self, Hash};
use super::note::{self, KeyType, NoteError, NoteSigner, SignatureLine, VerifierKey};

/// The witness's answer: one `— <witness name> base64(key_id ‖ time ‖ signature)` line.
pub type CosignatureLine = SignatureLine;

/// Everything a witness remembers: per log origin, the latest checkpoint it cosigned.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WitnessState {
    /// Keyed by checkpoint origin.
    pub logs: BTreeMap<String, WitnessedCheckpoint>,
}

/// The latest checkpoint a witness cosigned for one log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WitnessedCheckpoint {
    /// Tree size.
    pub size: u64,
    /// Root hash at that size.
    #[serde(with = "hash_base64")]
    pub root: Hash,
    /// The log's signed note, kept whole so it can serve as evidence if the log later
    /// signs a checkpoint that contradicts it.
    pub note: String,
}

/// Why two signed checkpoints cannot both be true.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ConflictKind {
    /// Same size, different roots: self-evident from the two notes alone.
    SameSizeDifferentRoot,
    /// The log could not prove that the larger tree extends the smaller one.
    InconsistentProof {
        /// What the verifier said.
        reason: String,
    },
}

/// What a witness keeps and reports when a log contradicts itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// The log's origin.
    pub origin: String,
    /// Why the two checkpoints conflict.
    pub kind: ConflictKind,
    /// The signed note this witness had cosigned before.
    pub cosigned_note: String,
    /// The signed note the log offered now.
    pub offered_note: String,
    /// The consistency proof offered with it.
    #[serde(with = "hashes_base64")]
    pub consistency_proof: Vec<Hash>,
}

/// Why the witness did not cosign.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WitnessError {
    /// The note is malformed, its checkpoint is malformed, or its log signature is bad.
    #[error("the checkpoint note is not acceptable: {0}")]
    Note(#[from] NoteError),
    /// No keys are configured for this origin.
    #[error(
        "no log with origin {origin:?} is configured to be witnessed here; add its verifier key first"
    )]
    UnknownLog {
        /// The checkpoint's origin.
        origin: String,
    },
    /// A configured log key is not a plain Ed25519 note key.
    #[error("the key {name:?} configured for log {origin:?} is not an Ed25519 (type 0x01) log key")]
    NotALogKey {
        /// The origin it was configured for.
        origin: String,
        /// The key name.
        name: String,
    },
    /// The checkpoint is smaller than the one already cosigned.
    #[error(
        "log {origin:?} offered size {offered}, but this witness already cosigned size {cosigned}; a witness never goes back"
    )]
    GoingBack {
        /// The log's origin.
        origin: String,
        /// Size already cosigned.
        cosigned: u64,
        /// Size offered.
        offered: u64,
    },
    /// The proof starts from a size other than the one last cosigned.
    #[error(
        "log {origin:?} proves from size {claimed}, but this witness last cosigned size {cosigned}; resend with a proof from size {cosigned}"
    )]
    OldSizeMismatch {
        /// The log's origin.
        origin: String,
        /// The old size the request named.
        claimed: u64,
        /// The size this witness last cosigned (0 if never).
        cosigned: u64,
    },
    /// A proof was sent where none can exist (first checkpoint, same size, or from 0).
    #[error("a consistency proof of {len} hashes was sent where it must be empty")]
    UnexpectedProof {
        /// Its length.
        len: usize,
    },
    /// The log signed two checkpoints that cannot both be true. Store the evidence and
    /// raise an alert.
    #[error("log {} signed conflicting checkpoints ({:?}); evidence attached", .0.origin, .0.kind)]
    Conflict(Box<Evidence>),
}

/// A witness: its own cosigning key, the logs it watches and their keys, and its state.
///
/// `K` is any [`NoteSigner`]: a ring key pair, the node's signing key (which may be in a
/// token), a reference to either or an `Arc`.
pub struct Witness<K> {
    /// The witness's key name, e.g. `liutong.example/91110000600037341L/witness`.
    name: String,
    key_pair: K,
    /// Per origin, the log's verifier keys (type 0x01). More than one allows rotation.
    logs: BTreeMap<String, Vec<VerifierKey>>,
    state: WitnessState,
}

impl<K: NoteSigner> Witness<K> {
    /// A witness named `name`, signing with `key_pair`, watching `logs` (origin → the
    /// log's verifier keys), starting from the stored `state`.
    pub fn new(
        name: &str,
        key_pair: K,
        logs: impl IntoIterator<Item = (String, Vec<VerifierKey>)>,
        state: WitnessState,
    ) -> Result<Self, WitnessError> {
        // Validates the name early, so witness() cannot fail on it later.
        VerifierKey::from_key_pair(name, KeyType::CosignatureV1, &key_pair)?;
        let logs: BTreeMap<_, _> = logs.into_iter().collect();
        for (origin, keys) in &logs {
            if let Some(k) = keys.iter().find(|k| k.key_type() != KeyType::Ed25519) {
                return Err(WitnessError::NotALogKey {
                    origin: origin.clone(),
                    name: k.name().to_owned(),
                });
            }
        }
        Ok(Self {
            name: name.to_owned(),
            key_pair,
            logs,
            state,
        })
    }

    /// The key that checks this witness's cosignatures (type 0x04), to give to peers.
    pub fn verifier_key(&self) -> VerifierKey {
        // `new` already built this key from the same name and key pair.
        VerifierKey::from_key_pair(&self.name, KeyType::CosignatureV1, &self.key_pair)
            .expect("the witness name was validated in Witness::new")
    }

    /// The current state, to store after every successful [`Witness::witness`].
    pub fn state(&self) -> &WitnessState {
        &self.state
    }

    /// Decide whether to cosign `checkpoint_note`, proven consistent from `old_size`
    /// (the size this witness last cosigned for the log, 0 the first time) by
    /// `consistency_proof`; `now` is the time to state, in Unix seconds.
    ///
    /// On success the state holds the new checkpoint: persist it, then send the line.
    pub fn witness(
        &mut self,
        checkpoint_note: &[u8],
        old_size: u64,
        consistency_proof: &[Hash],
        now: u64,
    ) -> Result<CosignatureLine, WitnessError> {
        let parsed = note::SignedNote::parse(checkpoint_note)?;
        let checkpoint = note::Checkpoint::parse(parsed.text())?;
        let origin = checkpoint.origin.clone();
        let keys = self
            .logs
            .get(&origin)
            .ok_or_else(|| WitnessError::UnknownLog {
                origin: origin.clone(),
            })?;
        let (checkpoint, signed) = note::open_checkpoint(checkpoint_note, keys)?;
        let offered_note = signed.to_string();

        let conflict = |known: &WitnessedCheckpoint, kind| {
            WitnessError::Conflict(Box::new(Evidence {
                origin: origin.clone(),
                kind,
                cosigned_note: known.note.clone(),
                offered_note: offered_note.clone(),
                consistency_proof: consistency_proof.to_vec(),
            }))
        };

        match self.state.logs.get(&origin) {
            None => {
                if old_size != 0 {
                    return Err(WitnessError::OldSizeMismatch {
                        origin,
                        claimed: old_size,
                        cosigned: 0,
                    });
                }
                if !consistency_proof.is_empty() {
                    return Err(WitnessError::UnexpectedProof {
                        len: consistency_proof.len(),
                    });
                }
            }
            Some(known) => {
                // A fork at the same size is evidence whatever else the request says.
                if checkpoint.size == known.size && checkpoint.root != known.root {
                    return Err(conflict(known, ConflictKind::SameSizeDifferentRoot));
                }
                if checkpoint.size < known.size {
                    return Err(WitnessError::GoingBack {
                        origin,
                        cosigned: known.size,
                        offered: checkpoint.size,
                    });
                }
                if old_size != known.size {
                    return Err(WitnessError::OldSizeMismatch {
                        origin,
                        claimed: old_size,
                        cosigned: known.size,
                    });
                }
                if checkpoint.size == known.size || known.size == 0 {
                    // Same checkpoint again (cosign afresh), or growth from the empty
                    // tree, which every tree extends: no proof can exist.
                    if !consistency_proof.is_empty() {
                        return Err(WitnessError::UnexpectedProof {
                            len: consistency_proof.len(),
                        });
                    }
                } else if let Err(e) = merkle::verify_consistency(
                    known.size,
                    checkpoint.size,
                    &known.root,
                    &checkpoint.root,
                    consistency_proof,
                ) {
                    return Err(conflict(
                        known,
                        ConflictKind::InconsistentProof {
                            reason: e.to_string(),
                        },
                    ));
                }
            }
        }

        let line = note::cosign(signed.text(), &self.name, &self.key_pair, now)?;
        let unchanged = self
            .state
            .logs
            .get(&origin)
            .is_some_and(|k| k.size == checkpoint.size);
        if !unchanged {
            self.state.logs.insert(
                origin,
                WitnessedCheckpoint {
                    size: checkpoint.size,
                    root: checkpoint.root,
                    note: offered_note,
                },
            );
        }
        Ok(line)
    }
}

/// Hashes as standard base64 strings in stored state, readable in JSON.
mod hash_base64 {
    use super::Hash;
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD as B64;
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    pub fn serialize<S: Serializer>(h: &Hash, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&B64.encode(h))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Hash, D::Error> {
        let text = String::deserialize(d)?;
        decode(&text).map_err(D::Error::custom)
    }

    pub fn decode(text: &str) -> Result<Hash, String> {
        B64.decode(text)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| format!("{text:?} is not a base64 SHA-256 hash"))
    }
}

/// A list of hashes as base64 strings.
mod hashes_base64 {
    use super::Hash;
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD as B64;
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _, ser::SerializeSeq};

    pub fn serialize<S: Serializer>(hs: &[Hash], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(hs.len()))?;
        for h in hs {
            seq.serialize_element(&B64.encode(h))?;
        }
        seq.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Hash>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|t| super::hash_base64::decode(t).map_err(D::Error::custom))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use ring::rand::SystemRandom;
    use ring::signature::Ed25519KeyPair;

    fn new_key_pair() -> Ed25519KeyPair {
        key_pair_twice().0
    }

    /// Two handles on one key (ring key pairs are not Clone): a log that forks signs
    /// both branches with the same key.
    fn key_pair_twice() -> (Ed25519KeyPair, Ed25519KeyPair) {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        (
            Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap(),
            Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap(),
        )
    }

    fn base64_of(h: &Hash) -> String {
        base64::engine::general_purpose::STANDARD.encode(h)
    }

    const ORIGIN: &str = "liutong.example/91110000600037341L";
    const WITNESS: &str = "liutong.example/91330100MA27XL0E2B/witness";
    const NOW: u64 = 1_760_000_000;

    /// A log: its tree, its key and its name.
    struct Log {
        tree: merkle::MemoryTreeStore,
        key_pair: Ed25519KeyPair,
    }

    impl Log {
        fn new(key_pair: Ed25519KeyPair) -> Self {
            Self {
                tree: merkle::MemoryTreeStore::new(),
                key_pair,
            }
        }

        fn grow_to(&mut self, size: u64, salt: &str) {
            while self.tree.size() < size {
                let n = self.tree.size();
                self.tree
                    .append_entry(format!("{salt} event {n}").as_bytes());
            }
        }

        fn checkpoint(&self, size: u64) -> String {
            let cp = note::Checkpoint {
                origin: ORIGIN.to_owned(),
                size,
                root: merkle::root(&self.tree, size).unwrap(),
            };
            note::sign_checkpoint(&cp, ORIGIN, &self.key_pair)
                .unwrap()
                .to_string()
        }

        fn proof(&self, from: u64, to: u64) -> Vec<Hash> {
            if from == 0 {
                return Vec::new();
            }
            merkle::consistency_proof(&self.tree, from, to).unwrap()
        }

        fn key(&self) -> VerifierKey {
            VerifierKey::from_key_pair(ORIGIN, KeyType::Ed25519, &self.key_pair).unwrap()
        }
    }

    fn witness_for(log: &Log) -> Witness<Ed25519KeyPair> {
        Witness::new(
            WITNESS,
            new_key_pair(),
            [(ORIGIN.to_owned(), vec![log.key()])],
            WitnessState::default(),
        )
        .unwrap()
    }

    #[test]
    fn cosigns_growth_and_checks_the_cosignature() {
        let mut log = Log::new(new_key_pair());
        log.grow_to(20, "a");
        let mut w = witness_for(&log);
        let wkey = w.verifier_key();

        let first = log.checkpoint(3);
        let line = w.witness(first.as_bytes(), 0, &[], NOW).unwrap();
        let body = note::SignedNote::parse(first.as_bytes()).unwrap();
        assert_eq!(
            note::verify_cosignature(body.text(), &line, &wkey).unwrap(),
            NOW
        );
        assert_eq!(w.state().logs[ORIGIN].size, 3);

        for (from, to) in [(3, 4), (4, 8), (8, 8), (8, 20)] {
            let cp = log.checkpoint(to);
            w.witness(cp.as_bytes(), from, &log.proof(from, to), NOW + to)
                .unwrap_or_else(|e| panic!("{from}->{to}: {e}"));
            assert_eq!(w.state().logs[ORIGIN].size, to);
            assert_eq!(w.state().logs[ORIGIN].note, cp);
        }

        // The cosignature joins the log's note and both verify.
        let last = log.checkpoint(20);
        let line = w.witness(last.as_bytes(), 20, &[], NOW + 99).unwrap();
        let mut signed = note::SignedNote::parse(last.as_bytes()).unwrap();
        note::add_cosignatures(&mut signed, [line]).unwrap();
        let verified = note::SignedNote::parse(signed.to_string().as_bytes())
            .unwrap()
            .verify(&[log.key(), wkey])
            .unwrap();
        assert_eq!(verified.len(), 2);
    }

    #[test]
    fn state_survives_a_serde_round_trip() {
        let mut log = Log::new(new_key_pair());
        log.grow_to(9, "a");
        let mut w = witness_for(&log);
        w.witness(log.checkpoint(5).as_bytes(), 0, &[], NOW)
            .unwrap();
        let stored = serde_json::to_string(w.state()).unwrap();
        assert!(stored.contains(&base64_of(&w.state().logs[ORIGIN].root)));
        let restored: WitnessState = serde_json::from_str(&stored).unwrap();
        assert_eq!(&restored, w.state());

        let mut again = Witness::new(
            WITNESS,
            new_key_pair(),
            [(ORIGIN.to_owned(), vec![log.key()])],
            restored,
        )
        .unwrap();
        // The restored witness still refuses to go back and still proves from 5.
        assert!(matches!(
            again.witness(log.checkpoint(4).as_bytes(), 5, &[], NOW),
            Err(WitnessError::GoingBack {
                cosigned: 5,
                offered: 4,
                ..
            })
        ));
        again
            .witness(log.checkpoint(9).as_bytes(), 5, &log.proof(5, 9), NOW)
            .unwrap();
    }

    #[test]
    fn refuses_going_back_stale_old_size_and_stray_proofs() {
        let mut log = Log::new(new_key_pair());
        log.grow_to(10, "a");
        let mut w = witness_for(&log);
        assert!(matches!(
            w.witness(log.checkpoint(6).as_bytes(), 2, &[], NOW),
            Err(WitnessError::OldSizeMismatch {
                claimed: 2,
                cosigned: 0,
                ..
            })
        ));
        assert!(matches!(
            w.witness(log.checkpoint(6).as_bytes(), 0, &log.proof(2, 6), NOW),
            Err(WitnessError::UnexpectedProof { .. })
        ));
        w.witness(log.checkpoint(6).as_bytes(), 0, &[], NOW)
            .unwrap();
        let before = w.state().clone();

        assert!(matches!(
            w.witness(log.checkpoint(5).as_bytes(), 6, &[], NOW),
            Err(WitnessError::GoingBack { .. })
        ));
        assert!(matches!(
            w.witness(log.checkpoint(10).as_bytes(), 4, &log.proof(4, 10), NOW),
            Err(WitnessError::OldSizeMismatch {
                claimed: 4,
                cosigned: 6,
                ..
            })
        ));
        assert!(matches!(
            w.witness(log.checkpoint(6).as_bytes(), 6, &log.proof(5, 6), NOW),
            Err(WitnessError::UnexpectedProof { .. })
        ));
        assert_eq!(w.state(), &before, "errors leave the state alone");
    }

    #[test]
    fn refuses_unknown_logs_and_bad_signatures() {
        let mut log = Log::new(new_key_pair());
        log.grow_to(4, "a");
        let mut w = witness_for(&log);

        let impostor = Log {
            tree: log.tree.clone(),
            key_pair: new_key_pair(),
        };
        assert!(matches!(
            w.witness(impostor.checkpoint(4).as_bytes(), 0, &[], NOW),
            Err(WitnessError::Note(NoteError::NoKnownSignature { .. }))
        ));
        let tampered = log.checkpoint(4).replacen("\n4\n", "\n3\n", 1);
        assert!(matches!(
            w.witness(tampered.as_bytes(), 0, &[], NOW),
            Err(WitnessError::Note(NoteError::InvalidSignature { .. }))
        ));
        let elsewhere = log.checkpoint(4).replace(ORIGIN, "other.example/log");
        assert!(matches!(
            w.witness(elsewhere.as_bytes(), 0, &[], NOW),
            Err(WitnessError::UnknownLog { .. })
        ));
        assert!(matches!(
            w.witness(b"not a note", 0, &[], NOW),
            Err(WitnessError::Note(_))
        ));
        assert!(w.state().logs.is_empty());

        // A cosigner key is not accepted as a log key.
        let cosigner =
            VerifierKey::from_key_pair(ORIGIN, KeyType::CosignatureV1, &log.key_pair).unwrap();
        assert!(matches!(
            Witness::new(
                WITNESS,
                new_key_pair(),
                [(ORIGIN.to_owned(), vec![cosigner])],
                WitnessState::default()
            ),
            Err(WitnessError::NotALogKey { .. })
        ));
    }

    #[test]
    fn a_fork_at_the_same_size_yields_both_checkpoints_as_evidence() {
        let (key_pair, same_key) = key_pair_twice();
        let mut honest = Log::new(key_pair);
        honest.grow_to(8, "a");
        let mut fork = Log::new(same_key);
        fork.grow_to(8, "b");

        let mut w = witness_for(&honest);
        let seen = honest.checkpoint(8);
        w.witness(seen.as_bytes(), 0, &[], NOW).unwrap();
        let before = w.state().clone();

        let forked = fork.checkpoint(8);
        let Err(WitnessError::Conflict(evidence)) = w.witness(forked.as_bytes(), 8, &[], NOW)
        else {
            panic!("a fork was not reported as a conflict");
        };
        assert_eq!(evidence.kind, ConflictKind::SameSizeDifferentRoot);
        assert_eq!(evidence.cosigned_note, seen);
        assert_eq!(evidence.offered_note, forked);
        // Both pieces of evidence carry the log's valid signature.
        for n in [&evidence.cosigned_note, &evidence.offered_note] {
            note::open_checkpoint(n.as_bytes(), &[honest.key()]).unwrap();
        }
        // Evidence is storable.
        let json = serde_json::to_string(&*evidence).unwrap();
        assert_eq!(serde_json::from_str::<Evidence>(&json).unwrap(), *evidence);
        // Even a request with a wrong old size reports the fork.
        assert!(matches!(
            w.witness(forked.as_bytes(), 3, &[], NOW),
            Err(WitnessError::Conflict(_))
        ));
        assert_eq!(w.state(), &before);
    }

    #[test]
    fn a_fork_that_grew_fails_its_consistency_proof() {
        let (key_pair, same_key) = key_pair_twice();
        let mut honest = Log::new(key_pair);
        honest.grow_to(5, "a");
        let mut fork = Log::new(same_key);
        fork.grow_to(12, "b");

        let mut w = witness_for(&honest);
        w.witness(honest.checkpoint(5).as_bytes(), 0, &[], NOW)
            .unwrap();
        let Err(WitnessError::Conflict(evidence)) =
            w.witness(fork.checkpoint(12).as_bytes(), 5, &fork.proof(5, 12), NOW)
        else {
            panic!("an inconsistent proof was not reported as a conflict");
        };
        assert!(matches!(
            evidence.kind,
            ConflictKind::InconsistentProof { .. }
        ));
        assert_eq!(evidence.consistency_proof, fork.proof(5, 12));
        assert_eq!(w.state().logs[ORIGIN].size, 5);
    }
}
