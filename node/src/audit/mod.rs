//! The tamper-evident audit log.
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
//! Those three do no I/O, keep no time and spawn no tasks: callers pass `now`, the store
//! and the keys, so every rule can be tested without a node. Around them:
//!
//! - [`log`]: the log in the node's storage: group commit (durable before acknowledged,
//!   fail closed), proofs, the stored checkpoint.
//! - [`event`]: the typed, versioned events the log records.
//! - [`names`]: log origins and witness key names derived from participant IDs.
//! - [`witnessing`]: this node as a witness of other members' logs: the [`witness`]
//!   decision with its state and evidence in storage, alerts on conflicts.
//! - [`search`]: finding the entries about a product, an agreement or a participant.
//! - [`tally`]: entries and policy decisions per day, at a cost bounded for any size.
//! - [`auditor`]: the auditor's offline checks: keys from authority-signed credentials,
//!   signatures, cosignatures, and what a check reports; the client that fetches a log
//!   over `liutong.v1.Audit`, recomputes the whole tree and names the first bad entry is
//!   [`crate::audit_client`], in the edges layer.
//! - [`bundle`]: evidence bundles from several nodes, checked offline.
//!
//! A log's key is its node's signing key (origin `liutong.<participant>/audit`, type
//! 0x01); the same key cosigns as `liutong.<participant>/witness` (type 0x04). Both are
//! named by the membership credential the authority signed, so auditors and witnesses
//! need nothing but the authority's key.

pub mod auditor;
pub mod bundle;
pub mod event;
pub mod log;
pub mod merkle;
pub mod names;
pub mod note;
pub mod search;
pub mod tally;
pub mod witness;
pub mod witnessing;
