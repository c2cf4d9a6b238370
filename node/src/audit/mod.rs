//! The tamper-evident audit log: the pure cryptographic core.
//!
//! Every event of the node (a publish, a negotiation step, an agreement, a transfer, a
//! use, a revocation) becomes an entry of an append-only Merkle log hashed as RFC 6962 /
//! RFC 9162 specify. Signed checkpoints commit to the whole log; peers witness each
//! other's checkpoints, so a node cannot later rewrite or fork its history without
//! another node holding the proof.
//!
//! # The map
//!
//! - [`merkle`]: leaf and node hashing, the [`merkle::TreeStore`] seam for the hashes of
//!   complete subtrees, the [`merkle::Appender`] that turns a new entry into the nodes to
//!   store, generation of roots and inclusion / consistency proofs for any past size in
//!   O(log n) store reads, and their verification (RFC 9162 §2.1.3–2.1.4).
//! - [`note`]: C2SP signed notes and tlog checkpoints (origin, size, root) signed with
//!   Ed25519, verifier keys in the `name+hash+key` form, and C2SP tlog-cosignatures that
//!   witnesses add to a checkpoint.
//! - [`witness`]: what a node does when a peer asks it to witness a checkpoint: check the
//!   log's signature, never go back, check the consistency proof from the last size it
//!   cosigned, keep both checkpoints as evidence when two cannot both be true, and answer
//!   with a cosignature. Its state is a plain serde value the caller stores.
//!
//! Nothing here does I/O, keeps time or spawns tasks: callers pass `now`, the store and
//! the keys, so every rule can be tested without a node.
//!
//! # How the node uses it (built later, elsewhere in the node crate)
//!
//! - Entries are stored append-only in sled, keyed by index, each at most 65,535 bytes.
//!   Appends are grouped: a group commit hashes its entries with [`merkle::leaf_hash`],
//!   feeds them to the [`merkle::Appender`], writes the entries and every returned
//!   [`merkle::StoredNode`] in one sled batch, and acknowledges nothing until
//!   `flush_async` has completed. At start-up the appender is rebuilt with
//!   [`merkle::Appender::load`] from the durable size.
//! - After a commit the node signs a checkpoint for the new size with
//!   [`note::sign_checkpoint`], sends it with a consistency proof
//!   ([`merkle::consistency_proof`]) to each peer from the size that peer last cosigned,
//!   and adds the returned cosignature lines with [`note::add_cosignatures`].
//! - Receipts and agreements carry the checkpoint at which each side logged them;
//!   auditors get inclusion proofs from [`merkle::inclusion_proof`].
//! - As a witness, the node keeps a [`witness::WitnessState`] in sled, replaces it
//!   atomically after each successful [`witness::Witness::witness`] call, and stores the
//!   evidence of any [`witness::WitnessError::Conflict`] and raises an alert.

pub mod auditor;
pub mod bundle;
pub mod cosigning;
pub mod log;
pub mod merkle;
pub mod note;
pub mod search;
pub mod witness;
pub mod witnessing;
