//! RFC 6962 / RFC 9162 Merkle tree hashing, proof generation and proof verification.
//!
//! The audit log is an append-only list of entries; its Merkle tree hash (MTH) commits to
//! every entry in order. Two kinds of proof come out of it:
//!
//! - an **inclusion proof** shows that entry `index` is in the tree of `size` entries whose
//!   root a checkpoint signed;
//! - a **consistency proof** shows that the tree of `size2` entries extends the tree of
//!   `size1` entries, i.e. nothing logged before `size1` was changed or dropped.
//!
//! # Generation without recomputing from the leaves
//!
//! The log grows to millions of entries and a proof must come back in microseconds, so
//! nothing here rehashes leaves. Instead the log keeps, through the [`TreeStore`] trait,
//! the hash of every *perfect* subtree it has completed: level 0 holds the leaf hashes,
//! and level `k`, index `i` holds the root of leaves `[i·2^k, (i+1)·2^k)`. A perfect
//! subtree never changes once complete, so it can be written once and never touched
//! again (a good fit for sled: insert-only keys).
//!
//! The recursive definitions of RFC 9162 §2.1.3.1 (PATH) and §2.1.4.1 (PROOF/SUBPROOF)
//! ask for hashes of sub-ranges `D[a:b]`. Each such range starts at a multiple of a power
//! of two at least as large as itself, so it is either one perfect subtree or a *ragged
//! right edge* that splits into at most 64 perfect subtrees (one per set bit of its
//! length), folded from the right. A proof needs at most one ragged range, so generation
//! costs O(log n) store reads and O(log n) hashes for any `size` up to the current one.
//!
//! [`Appender`] keeps the right frontier of the tree (one hash per set bit of the size)
//! in memory and turns each new leaf into the few perfect-subtree nodes to store, so a
//! group commit can append many entries and write all their nodes in one batch.
//! [`MemoryTreeStore`] is the in-memory store used by tests and benches.
//!
//! # Verification
//!
//! [`verify_inclusion`] and [`verify_consistency`] follow RFC 9162 §2.1.3.2 and §2.1.4.2
//! and return a [`ProofError`] naming what did not hold. They take hashes as byte slices
//! because the values come off the wire: a leaf hash or proof element that is not 32
//! bytes is refused instead of being silently hashed. Two edge cases follow the
//! transparency-dev/merkle test vectors: a leaf hash that is not 32 bytes is rejected, and
//! any consistency proof with `size1 = 0` is rejected (every tree extends the empty tree,
//! so such a proof would prove nothing and is more likely a caller's mistake).

use std::convert::Infallible;

use sha2::{Digest, Sha256};

/// A SHA-256 output: a leaf hash, an interior node hash or a tree root.
pub type Hash = [u8; 32];

/// Domain-separation prefix of a leaf hash (RFC 6962 §2.1), so that a leaf can never be
/// passed off as an interior node.
const LEAF_PREFIX: u8 = 0x00;
/// Domain-separation prefix of an interior node hash.
const NODE_PREFIX: u8 = 0x01;

/// Length of every hash in this module.
pub const HASH_LEN: usize = 32;

/// The largest level a perfect subtree can have: a tree of `u64` leaves has at most 2^63
/// leaves under a perfect subtree, so levels run 0..=63.
pub const MAX_LEVEL: u8 = 63;

/// The root of the empty tree: SHA-256 of the empty string.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// The leaf hash of one log entry: SHA-256(0x00 ‖ entry).
pub fn leaf_hash(entry: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([LEAF_PREFIX]);
    h.update(entry);
    h.finalize().into()
}

/// The hash of an interior node: SHA-256(0x01 ‖ left ‖ right).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([NODE_PREFIX]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// Where the hashes of complete (perfect) subtrees live.
///
/// `get(level, index)` returns the root of leaves `[index·2^level, (index+1)·2^level)`,
/// or `None` if that subtree has not been stored (not complete yet, or the store is
/// behind). The node backs this with sled; tests use [`MemoryTreeStore`].
pub trait TreeStore {
    /// The store's own failure (an I/O error for sled; [`Infallible`] in memory).
    type Error: std::error::Error + Send + Sync + 'static;

    /// The stored hash of the perfect subtree at `level`, `index`, if any.
    fn get(&self, level: u8, index: u64) -> Result<Option<Hash>, Self::Error>;
}

/// One perfect-subtree hash that an append produced and the store must keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredNode {
    /// 0 for a leaf hash, `k` for the root of `2^k` leaves.
    pub level: u8,
    /// Position among the subtrees of this level, counted from the left.
    pub index: u64,
    /// The subtree's hash.
    pub hash: Hash,
}

/// Why a tree could not answer a request for a root or a proof.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TreeError<E: std::error::Error + 'static> {
    /// The backing store failed.
    #[error("the audit tree store failed: {0}")]
    Store(#[source] E),
    /// A perfect subtree the request needs is not in the store.
    #[error(
        "the audit tree store has no hash for level {level} index {index}; \
         the requested size is larger than what was stored, or the store is damaged"
    )]
    MissingNode {
        /// Level of the missing subtree.
        level: u8,
        /// Index of the missing subtree within its level.
        index: u64,
    },
    /// An inclusion proof was asked for an entry outside the tree.
    #[error("entry {index} is not in a tree of {size} entries; ask for an index below the size")]
    IndexOutOfRange {
        /// The requested entry.
        index: u64,
        /// The tree size it was asked against.
        size: u64,
    },
    /// A consistency proof was asked from a larger tree to a smaller one.
    #[error(
        "cannot prove consistency from size {size1} to the smaller size {size2}; \
         size1 must not exceed size2"
    )]
    SizesOutOfOrder {
        /// The older size.
        size1: u64,
        /// The newer size.
        size2: u64,
    },
    /// A consistency proof was asked from the empty tree.
    #[error(
        "a consistency proof from the empty tree proves nothing and verifiers reject it; \
         trust the first checkpoint on its signature instead"
    )]
    EmptyOldTree,
}

/// Fetch one perfect subtree, turning absence into an error: every node a request needs
/// must exist if the request's sizes are within what was stored.
fn perfect<S: TreeStore>(store: &S, level: u8, index: u64) -> Result<Hash, TreeError<S::Error>> {
    store
        .get(level, index)
        .map_err(TreeError::Store)?
        .ok_or(TreeError::MissingNode { level, index })
}

/// The Merkle tree hash of leaves `[start, end)`, where `start` is a multiple of a power
/// of two at least `end - start` (true of every range in the RFC 9162 recursions).
///
/// The range is split into perfect subtrees, largest first (one per set bit of its
/// length), and folded from the right, exactly as RFC 9162 §2.1.1 splits at the largest
/// power of two below the length.
fn range_hash<S: TreeStore>(store: &S, start: u64, end: u64) -> Result<Hash, TreeError<S::Error>> {
    let len = end - start;
    if len == 0 {
        return Ok(empty_root());
    }
    // Perfect subtrees from the right end: the lowest set bit of `len` is the rightmost.
    let mut acc: Option<Hash> = None;
    let mut right_end = end;
    let mut rest = len;
    while rest != 0 {
        let level = rest.trailing_zeros() as u8;
        let width = 1u64 << level;
        let sub_start = right_end - width;
        let h = perfect(store, level, sub_start >> level)?;
        acc = Some(match acc {
            None => h,
            Some(right) => node_hash(&h, &right),
        });
        right_end = sub_start;
        rest &= rest - 1;
    }
    // `len != 0` so the loop ran at least once and set `acc`.
    Ok(acc.unwrap_or_else(empty_root))
}

/// The largest power of two strictly below `n`, for `n >= 2` (RFC 9162's `k`).
fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1u64 << (63 - (n - 1).leading_zeros())
}

/// The root hash of the tree made of the first `size` entries.
pub fn root<S: TreeStore>(store: &S, size: u64) -> Result<Hash, TreeError<S::Error>> {
    range_hash(store, 0, size)
}

/// The inclusion proof (RFC 9162 §2.1.3.1 PATH) of entry `index` in the tree of `size`
/// entries, nearest sibling first.
pub fn inclusion_proof<S: TreeStore>(
    store: &S,
    index: u64,
    size: u64,
) -> Result<Vec<Hash>, TreeError<S::Error>> {
    if index >= size {
        return Err(TreeError::IndexOutOfRange { index, size });
    }
    // Walk down from the whole tree towards the leaf, collecting siblings; the RFC lists
    // them leaf-first, so reverse at the end. `(start, end)` is the current range and
    // `m` the absolute entry index.
    let mut path = Vec::with_capacity(64);
    let (mut start, mut end) = (0u64, size);
    while end - start > 1 {
        let k = split_point(end - start);
        let mid = start + k;
        if index < mid {
            path.push(range_hash(store, mid, end)?);
            end = mid;
        } else {
            path.push(perfect(
                store,
                k.trailing_zeros() as u8,
                start >> k.trailing_zeros(),
            )?);
            start = mid;
        }
    }
    path.reverse();
    Ok(path)
}

/// The consistency proof (RFC 9162 §2.1.4.1 PROOF) that the tree of `size2` entries
/// extends the tree of `size1` entries. Equal sizes give the empty proof; `size1 = 0` is
/// refused because verifiers refuse it (see the module doc).
pub fn consistency_proof<S: TreeStore>(
    store: &S,
    size1: u64,
    size2: u64,
) -> Result<Vec<Hash>, TreeError<S::Error>> {
    if size1 > size2 {
        return Err(TreeError::SizesOutOfOrder { size1, size2 });
    }
    if size1 == 0 {
        return Err(TreeError::EmptyOldTree);
    }
    // SUBPROOF(m, D[start:end], b), unrolled: `m` counts the old entries within the
    // current range, and `whole` is the RFC's `b` (true while the current range's left
    // edge is the old tree's own left edge, so its root is already known to the verifier).
    let mut proof = Vec::with_capacity(64);
    let (mut start, mut end) = (0u64, size2);
    let mut m = size1;
    let mut whole = true;
    loop {
        let n = end - start;
        if m == n {
            if !whole {
                // Only reached after descending into a left (perfect) half, so this is a
                // single stored subtree; range_hash handles it either way.
                proof.push(range_hash(store, start, end)?);
            }
            break;
        }
        let k = split_point(n);
        let mid = start + k;
        if m <= k {
            proof.push(range_hash(store, mid, end)?);
            end = mid;
        } else {
            proof.push(perfect(
                store,
                k.trailing_zeros() as u8,
                start >> k.trailing_zeros(),
            )?);
            start = mid;
            m -= k;
            whole = false;
        }
    }
    proof.reverse();
    Ok(proof)
}

/// The right frontier of a growing tree: enough to append leaves and compute the current
/// root without reading the store.
///
/// It holds one hash per set bit of the size, the largest subtree first, which is exactly
/// the list of perfect subtrees the tree's root folds together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appender {
    /// Number of leaves appended so far.
    size: u64,
    /// Roots of the perfect subtrees that make up the tree, left to right (largest first).
    frontier: Vec<Hash>,
}

impl Default for Appender {
    fn default() -> Self {
        Self::new()
    }
}

impl Appender {
    /// An appender for the empty tree.
    pub fn new() -> Self {
        Self {
            size: 0,
            frontier: Vec::new(),
        }
    }

    /// Rebuild the frontier of a tree of `size` entries from the store (at start-up).
    pub fn load<S: TreeStore>(store: &S, size: u64) -> Result<Self, TreeError<S::Error>> {
        let mut frontier = Vec::with_capacity(size.count_ones() as usize);
        let mut start = 0u64;
        for level in (0..=MAX_LEVEL).rev() {
            if size & (1u64 << level) != 0 {
                frontier.push(perfect(store, level, start >> level)?);
                start += 1u64 << level;
            }
        }
        Ok(Self { size, frontier })
    }

    /// Number of entries in the tree.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Append one leaf hash (see [`leaf_hash`]) and return the perfect-subtree nodes that
    /// became complete: the leaf itself plus one node per trailing 1-bit of the old size,
    /// at most 64 in all. The caller must store all of them before relying on the new size.
    ///
    /// # Panics
    ///
    /// If the tree already holds `u64::MAX` entries (unreachable in practice).
    pub fn append(&mut self, leaf: Hash) -> Vec<StoredNode> {
        let mut index = self.size;
        self.size = self
            .size
            .checked_add(1)
            .expect("an audit log cannot hold 2^64 entries");
        let mut nodes = Vec::with_capacity(index.trailing_ones() as usize + 1);
        let mut level = 0u8;
        let mut hash = leaf;
        nodes.push(StoredNode { level, index, hash });
        // Each trailing 1-bit of the old size is a complete left sibling on the frontier
        // (the smallest ones are last), which the new node now completes.
        while index & 1 == 1 {
            let left = self
                .frontier
                .pop()
                .expect("the frontier holds one subtree per set bit of the size");
            hash = node_hash(&left, &hash);
            level += 1;
            index >>= 1;
            nodes.push(StoredNode { level, index, hash });
        }
        self.frontier.push(hash);
        nodes
    }

    /// The root of the current tree.
    pub fn root(&self) -> Hash {
        let mut iter = self.frontier.iter().rev();
        match iter.next() {
            None => empty_root(),
            Some(last) => iter.fold(*last, |right, left| node_hash(left, &right)),
        }
    }
}

/// An in-memory [`TreeStore`] with its own [`Appender`], for tests and benches.
#[derive(Debug, Clone, Default)]
pub struct MemoryTreeStore {
    /// `levels[k][i]` is the perfect subtree at level `k`, index `i`.
    levels: Vec<Vec<Hash>>,
    appender: Appender,
}

impl MemoryTreeStore {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Append an entry (hashed with [`leaf_hash`]) and return its index.
    pub fn append_entry(&mut self, entry: &[u8]) -> u64 {
        self.append_leaf_hash(leaf_hash(entry))
    }

    /// Append a leaf hash and return its index.
    pub fn append_leaf_hash(&mut self, leaf: Hash) -> u64 {
        let index = self.appender.size();
        for node in self.appender.append(leaf) {
            let level = usize::from(node.level);
            if self.levels.len() <= level {
                self.levels.resize_with(level + 1, Vec::new);
            }
            // Nodes of one level complete strictly left to right, so each is the next.
            debug_assert_eq!(self.levels[level].len() as u64, node.index);
            self.levels[level].push(node.hash);
        }
        index
    }

    /// Number of entries.
    pub fn size(&self) -> u64 {
        self.appender.size()
    }

    /// The root of the whole current tree (no store reads).
    pub fn current_root(&self) -> Hash {
        self.appender.root()
    }
}

impl TreeStore for MemoryTreeStore {
    type Error = Infallible;

    fn get(&self, level: u8, index: u64) -> Result<Option<Hash>, Infallible> {
        Ok(self
            .levels
            .get(usize::from(level))
            .and_then(|l| usize::try_from(index).ok().and_then(|i| l.get(i)))
            .copied())
    }
}

/// Why a proof did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProofError {
    /// The leaf hash is not a SHA-256 output.
    #[error("the leaf hash is {0} bytes, not 32; pass the hash of the entry, not the entry")]
    LeafHashLength(usize),
    /// A proof element is not a SHA-256 output.
    #[error("proof element {position} is {len} bytes, not 32")]
    ProofElementLength {
        /// Zero-based position in the proof.
        position: usize,
        /// Its length.
        len: usize,
    },
    /// A root that must be hashed is not a SHA-256 output.
    #[error("the {which} root is {len} bytes, not 32")]
    RootLength {
        /// "old" or "new".
        which: &'static str,
        /// Its length.
        len: usize,
    },
    /// The entry index is not below the tree size.
    #[error("entry {index} cannot be in a tree of {size} entries")]
    IndexOutOfRange {
        /// The claimed entry index.
        index: u64,
        /// The claimed tree size.
        size: u64,
    },
    /// The old size exceeds the new size.
    #[error("the old size {size1} is larger than the new size {size2}; a log never shrinks")]
    SizesOutOfOrder {
        /// The old size.
        size1: u64,
        /// The new size.
        size2: u64,
    },
    /// A consistency proof from the empty tree was offered.
    #[error("a consistency proof from size 0 proves nothing and is refused")]
    EmptyOldTree,
    /// Equal sizes need an empty proof.
    #[error("the sizes are equal, so the proof must be empty, but it has {0} elements")]
    ProofNotEmpty(usize),
    /// Different sizes need a non-empty proof.
    #[error("the sizes differ, so the proof cannot be empty")]
    EmptyProof,
    /// The proof has more elements than the sizes call for.
    #[error("the proof has more elements than sizes call for (wrong size, or trailing data)")]
    ProofTooLong,
    /// The proof has fewer elements than the sizes call for.
    #[error("the proof has fewer elements than the sizes call for (wrong size, or truncated)")]
    ProofTooShort,
    /// The proof leads to a different root than the one given.
    #[error("the proof leads to a different {which} root than the one given")]
    RootMismatch {
        /// "tree", "old" or "new".
        which: &'static str,
    },
}

/// Check that `proof` shows the leaf with hash `leaf_hash` at `index` in the tree of
/// `size` entries whose root is `root` (RFC 9162 §2.1.3.2).
pub fn verify_inclusion<P: AsRef<[u8]>>(
    leaf_hash: &[u8],
    index: u64,
    size: u64,
    proof: &[P],
    root: &[u8],
) -> Result<(), ProofError> {
    let leaf: Hash = leaf_hash
        .try_into()
        .map_err(|_| ProofError::LeafHashLength(leaf_hash.len()))?;
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let proof = parse_proof(proof)?;
    let (mut fn_, mut sn) = (index, size - 1);
    let mut r = leaf;
    for p in &proof {
        if sn == 0 {
            return Err(ProofError::ProofTooLong);
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = node_hash(p, &r);
            if fn_ & 1 == 0 {
                // A right-edge node with no right sibling: climb until it is a right child.
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn != 0 {
        return Err(ProofError::ProofTooShort);
    }
    if r.as_slice() != root {
        return Err(ProofError::RootMismatch { which: "tree" });
    }
    Ok(())
}

/// Check that `proof` shows the tree of `size2` entries with root `root2` extends the
/// tree of `size1` entries with root `root1` (RFC 9162 §2.1.4.2).
///
/// Equal sizes need equal roots and an empty proof; `size1 = 0` is always refused.
pub fn verify_consistency<P: AsRef<[u8]>>(
    size1: u64,
    size2: u64,
    root1: &[u8],
    root2: &[u8],
    proof: &[P],
) -> Result<(), ProofError> {
    if size1 > size2 {
        return Err(ProofError::SizesOutOfOrder { size1, size2 });
    }
    if size1 == 0 {
        return Err(ProofError::EmptyOldTree);
    }
    if size1 == size2 {
        if !proof.is_empty() {
            return Err(ProofError::ProofNotEmpty(proof.len()));
        }
        if root1 != root2 {
            return Err(ProofError::RootMismatch { which: "new" });
        }
        return Ok(());
    }
    if proof.is_empty() {
        return Err(ProofError::EmptyProof);
    }
    let old: Hash = root1.try_into().map_err(|_| ProofError::RootLength {
        which: "old",
        len: root1.len(),
    })?;
    let mut path = parse_proof(proof)?;
    // Step 2: when the old tree is a perfect subtree its root is the first node of the path.
    if size1.is_power_of_two() {
        path.insert(0, old);
    }
    let (mut fn_, mut sn) = (size1 - 1, size2 - 1);
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    let mut fr = path[0];
    let mut sr = path[0];
    for c in &path[1..] {
        if sn == 0 {
            return Err(ProofError::ProofTooLong);
        }
        if fn_ & 1 == 1 || fn_ == sn {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn != 0 {
        return Err(ProofError::ProofTooShort);
    }
    if fr != old {
        return Err(ProofError::RootMismatch { which: "old" });
    }
    if sr.as_slice() != root2 {
        return Err(ProofError::RootMismatch { which: "new" });
    }
    Ok(())
}

/// Turn wire proof elements into hashes, refusing any that is not 32 bytes.
fn parse_proof<P: AsRef<[u8]>>(proof: &[P]) -> Result<Vec<Hash>, ProofError> {
    proof
        .iter()
        .enumerate()
        .map(|(position, p)| {
            let p = p.as_ref();
            Hash::try_from(p).map_err(|_| ProofError::ProofElementLength {
                position,
                len: p.len(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD as B64;
    use proptest::prelude::*;
    use std::path::{Path, PathBuf};

    /// The README's 8 entries (hex), in order.
    const README_ENTRIES: [&str; 8] = [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ];
    const README_ROOT_8: &str = "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328";

    fn readme_tree() -> MemoryTreeStore {
        let mut t = MemoryTreeStore::new();
        for e in README_ENTRIES {
            t.append_entry(&hex::decode(e).expect("README entries are hex"));
        }
        t
    }

    /// Straight from RFC 9162 §2.1.1, recomputing from the entries: the oracle.
    fn naive_root(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => empty_root(),
            1 => leaves[0],
            n => {
                let k = split_point(n as u64) as usize;
                node_hash(&naive_root(&leaves[..k]), &naive_root(&leaves[k..]))
            }
        }
    }

    fn testdata_dir() -> PathBuf {
        match std::env::var_os("LIUTONG_RFC6962_TESTDATA") {
            Some(dir) => PathBuf::from(dir),
            None => PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/rfc6962")),
        }
    }

    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct InclusionVector {
        leaf_idx: u64,
        tree_size: u64,
        root: String,
        leaf_hash: String,
        proof: Option<Vec<String>>,
        want_err: bool,
    }

    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct ConsistencyVector {
        size1: u64,
        size2: u64,
        root1: String,
        root2: String,
        proof: Option<Vec<String>>,
        want_err: bool,
    }

    fn b64(s: &str) -> Vec<u8> {
        B64.decode(s).expect("vector fields are standard base64")
    }

    fn json_files(dir: &Path, out: &mut Vec<PathBuf>) {
        let entries = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("cannot read test vectors in {}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                json_files(&path, out);
            } else if path.extension().is_some_and(|x| x == "json") {
                out.push(path);
            }
        }
    }

    fn vectors<T: serde::de::DeserializeOwned>(kind: &str) -> Vec<(PathBuf, T)> {
        let dir = testdata_dir().join(kind);
        assert!(
            dir.is_dir(),
            "RFC 6962 vectors not found at {} (they are part of the repository; \
             LIUTONG_RFC6962_TESTDATA overrides the path)",
            dir.display()
        );
        let mut files = Vec::new();
        json_files(&dir, &mut files);
        files.sort();
        files
            .into_iter()
            .map(|p| {
                let text = std::fs::read_to_string(&p).expect("readable vector");
                let v = serde_json::from_str(&text)
                    .unwrap_or_else(|e| panic!("{}: bad vector JSON: {e}", p.display()));
                (p, v)
            })
            .collect()
    }

    #[test]
    fn every_inclusion_vector() {
        let vs = vectors::<InclusionVector>("inclusion");
        // 98 files at the pinned commit; fewer means files went missing.
        assert!(vs.len() >= 98, "only {} inclusion vectors found", vs.len());
        let (mut ok, mut err) = (0, 0);
        for (path, v) in &vs {
            let proof: Vec<Vec<u8>> = v.proof.iter().flatten().map(|p| b64(p)).collect();
            let got = verify_inclusion(
                &b64(&v.leaf_hash),
                v.leaf_idx,
                v.tree_size,
                &proof,
                &b64(&v.root),
            );
            match (v.want_err, got) {
                (true, Err(_)) => err += 1,
                (false, Ok(())) => ok += 1,
                (want_err, got) => panic!("{}: want_err={want_err}, got {got:?}", path.display()),
            }
        }
        assert!(ok > 0 && err > 0, "vectors must exercise both outcomes");
    }

    #[test]
    fn every_consistency_vector() {
        let vs = vectors::<ConsistencyVector>("consistency");
        assert!(
            vs.len() >= 98,
            "only {} consistency vectors found",
            vs.len()
        );
        let (mut ok, mut err) = (0, 0);
        for (path, v) in &vs {
            let proof: Vec<Vec<u8>> = v.proof.iter().flatten().map(|p| b64(p)).collect();
            let got = verify_consistency(v.size1, v.size2, &b64(&v.root1), &b64(&v.root2), &proof);
            match (v.want_err, got) {
                (true, Err(_)) => err += 1,
                (false, Ok(())) => ok += 1,
                (want_err, got) => panic!("{}: want_err={want_err}, got {got:?}", path.display()),
            }
        }
        assert!(ok > 0 && err > 0, "vectors must exercise both outcomes");
    }

    #[test]
    fn readme_tree_root_and_generated_proofs() {
        let t = readme_tree();
        assert_eq!(hex::encode(t.current_root()), README_ROOT_8);
        assert_eq!(hex::encode(root(&t, 8).unwrap()), README_ROOT_8);
        let leaves: Vec<Hash> = README_ENTRIES
            .iter()
            .map(|e| leaf_hash(&hex::decode(e).unwrap()))
            .collect();
        assert_eq!(root(&t, 0).unwrap(), empty_root());
        for size in 1..=8u64 {
            let r = root(&t, size).unwrap();
            assert_eq!(r, naive_root(&leaves[..size as usize]), "root at {size}");
            for index in 0..size {
                let p = inclusion_proof(&t, index, size).unwrap();
                verify_inclusion(&leaves[index as usize], index, size, &p, &r)
                    .unwrap_or_else(|e| panic!("inclusion {index}/{size}: {e}"));
            }
            for size1 in 1..=size {
                let p = consistency_proof(&t, size1, size).unwrap();
                let r1 = root(&t, size1).unwrap();
                verify_consistency(size1, size, &r1, &r, &p)
                    .unwrap_or_else(|e| panic!("consistency {size1}->{size}: {e}"));
            }
        }
    }

    #[test]
    fn generated_proofs_equal_the_vectors_happy_paths() {
        let t = readme_tree();
        let mut compared = 0;
        for (path, v) in vectors::<InclusionVector>("inclusion") {
            // The numbered folders are built on the README's tree; `additional/` and
            // `single-entry/` are not.
            if v.want_err || v.tree_size > 8 || path.to_string_lossy().contains("single-entry") {
                continue;
            }
            let root_here = root(&t, v.tree_size).unwrap();
            if b64(&v.root) != root_here {
                continue;
            }
            let want: Vec<Vec<u8>> = v.proof.iter().flatten().map(|p| b64(p)).collect();
            let got = inclusion_proof(&t, v.leaf_idx, v.tree_size).unwrap();
            assert_eq!(got.iter().map(|h| h.to_vec()).collect::<Vec<_>>(), want);
            compared += 1;
        }
        for (_, v) in vectors::<ConsistencyVector>("consistency") {
            if v.want_err || v.size2 > 8 || v.size1 == 0 {
                continue;
            }
            if b64(&v.root2) != root(&t, v.size2).unwrap() {
                continue;
            }
            let want: Vec<Vec<u8>> = v.proof.iter().flatten().map(|p| b64(p)).collect();
            let got = consistency_proof(&t, v.size1, v.size2).unwrap();
            assert_eq!(got.iter().map(|h| h.to_vec()).collect::<Vec<_>>(), want);
            compared += 1;
        }
        // Inclusion 0..=4 and consistency 0..=4 happy paths.
        assert_eq!(
            compared, 10,
            "every numbered happy path is on the README tree"
        );
    }

    #[test]
    fn appender_reload_and_missing_nodes() {
        let t = readme_tree();
        for size in 0..=8 {
            let a = Appender::load(&t, size).unwrap();
            assert_eq!(a.root(), root(&t, size).unwrap());
        }
        assert!(matches!(
            root(&t, 9),
            Err(TreeError::MissingNode { level: 0, index: 8 })
        ));
        assert!(matches!(
            inclusion_proof(&t, 8, 8),
            Err(TreeError::IndexOutOfRange { .. })
        ));
        assert!(matches!(
            consistency_proof(&t, 0, 8),
            Err(TreeError::EmptyOldTree)
        ));
        assert!(matches!(
            consistency_proof(&t, 5, 4),
            Err(TreeError::SizesOutOfOrder { .. })
        ));
        assert!(consistency_proof(&t, 8, 8).unwrap().is_empty());
    }

    #[test]
    fn append_stores_at_most_log_n_plus_one_nodes() {
        let mut a = Appender::new();
        let mut total = 0;
        for i in 0..1024u64 {
            let nodes = a.append(leaf_hash(&i.to_be_bytes()));
            assert_eq!(nodes.len() as u32, i.trailing_ones() + 1);
            total += nodes.len();
        }
        // A perfect tree of 1024 leaves has 2047 nodes, each stored exactly once.
        assert_eq!(total, 2047);
    }

    fn flip(h: &mut Hash, bit: usize) {
        h[bit / 8 % HASH_LEN] ^= 1 << (bit % 8);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn random_trees_prove_and_detect_flips(
            n in 1usize..300,
            a in any::<u64>(),
            b in any::<u64>(),
            bit in 0usize..256,
        ) {
            let mut t = MemoryTreeStore::new();
            let leaves: Vec<Hash> = (0..n).map(|i| leaf_hash(&(i as u64 ^ a).to_le_bytes())).collect();
            for l in &leaves {
                t.append_leaf_hash(*l);
            }
            let size = 1 + a % n as u64;
            let index = b % size;
            let r = root(&t, size).unwrap();
            prop_assert_eq!(r, naive_root(&leaves[..size as usize]));

            let mut p = inclusion_proof(&t, index, size).unwrap();
            prop_assert!(verify_inclusion(&leaves[index as usize], index, size, &p, &r).is_ok());
            let mut bad_leaf = leaves[index as usize];
            flip(&mut bad_leaf, bit);
            prop_assert!(verify_inclusion(&bad_leaf, index, size, &p, &r).is_err());
            if !p.is_empty() {
                let at = bit % p.len();
                flip(&mut p[at], bit);
                prop_assert!(verify_inclusion(&leaves[index as usize], index, size, &p, &r).is_err());
            }

            let size1 = 1 + b % size;
            let r1 = root(&t, size1).unwrap();
            let mut c = consistency_proof(&t, size1, size).unwrap();
            prop_assert!(verify_consistency(size1, size, &r1, &r, &c).is_ok());
            let mut bad_root = r;
            flip(&mut bad_root, bit);
            prop_assert!(verify_consistency(size1, size, &r1, &bad_root, &c).is_err());
            if !c.is_empty() {
                let at = bit % c.len();
                flip(&mut c[at], bit);
                prop_assert!(verify_consistency(size1, size, &r1, &r, &c).is_err());
            }
        }
    }
}
