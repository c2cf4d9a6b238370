//! Received copies at rest: each chunk sealed with AES-256-GCM, so the bytes on the
//! consumer's disk are not the product's and reading the file directly reveals
//! nothing; only a permitted (counted) read and the node's own usage-control work
//! open them.
//!
//! Keys: one node copy key (32 random bytes, made once, kept in the database, whose
//! directory and files are the node owner's only) and, per copy, a data key derived
//! from it with HKDF-SHA256 and the copy's own random copy ID as salt. No two copies
//! share a data key, and the copy ID is all a copy record keeps.
//!
//! Layout of a sealed payload file: chunk `i`'s ciphertext at `i × chunk_size` (the
//! same offsets as the plain bytes, so large copies keep streaming through aligned
//! writes), and its 12-byte nonce and 16-byte tag in a tail that starts at the payload
//! size rounded up to 4 KiB, at `tail + i × 28`. Every seal takes a fresh random 96-bit
//! nonce (a chunk fetched again after a crash is sealed anew, never with the nonce it
//! had), and a copy is sealed in far fewer than 2^32 seals, so a nonce does not repeat
//! under a data key. The associated data binds the copy ID, the agreement, the chunk's
//! index and the chunk count: a chunk moved to another place or another copy fails to
//! open.

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, Tag, UnboundKey};
use ring::hkdf;
use serde::{Deserialize, Serialize};

use crate::storage::Storage;

use super::Manifest;
use super::error::TransferError;

/// Consumer side: the node copy key, under [`NODE_KEY`].
const KEYS: &str = "copy_keys";
const NODE_KEY: &[u8] = b"node";

/// The length of a chunk's entry in the tail: its nonce and its tag.
pub(super) const ENTRY_LEN: usize = NONCE_LEN + 16;

/// Where the tail starts: the payload size rounded up to this, so the padding of an
/// aligned write of the last chunk never reaches it.
const TAIL_ALIGN: u64 = 4096;

/// Context of every data key and every chunk's associated data: a key or a chunk made
/// for something else never opens here.
const CONTEXT: &[u8] = b"liutong received copy v1";

/// What a sealed copy's record keeps about its sealing: the copy ID (hex of 32 random
/// bytes), the salt of its data key and part of every chunk's associated data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopySeal {
    pub copy_id: String,
}

impl CopySeal {
    /// A new copy's sealing, with a fresh copy ID.
    pub(super) fn fresh() -> Result<Self, TransferError> {
        let id = crate::base::random::random_bytes::<32>()
            .map_err(|e| TransferError::Unavailable(format!("cannot make a copy ID: {e}")))?;
        Ok(Self {
            copy_id: hex::encode(id),
        })
    }
}

/// The cipher of one sealed copy.
pub(crate) struct CopyCipher {
    key: LessSafeKey,
    copy_id: Vec<u8>,
    agreement_id: String,
    chunks: u32,
    /// Where the tail starts in the payload file.
    tail: u64,
}

/// The node copy key; made (and stored) on first use when `create`.
fn node_key(storage: &dyn Storage, create: bool) -> Result<Vec<u8>, TransferError> {
    let key = if create {
        crate::storage::node_secret(storage, KEYS, NODE_KEY).map_err(|e| match e {
            crate::storage::SecretError::Storage(e) => TransferError::Storage(e),
            crate::storage::SecretError::Random(e) => {
                TransferError::Unavailable(format!("cannot make the copy key: {e}"))
            }
        })?
    } else {
        storage.get(KEYS, NODE_KEY)?.filter(|k| k.len() == 32)
    };
    key.ok_or_else(|| {
        TransferError::DataLoss(
            "this node's copy key is missing or damaged, so its received copies cannot be \
                 opened; restore the node's database from a backup"
                .into(),
        )
    })
}

/// The key that seals new copies, made now if this node has none yet. It is stored
/// before the first copy record that needs it, and made durable with it.
pub(super) fn ensure_node_key(storage: &dyn Storage) -> Result<(), TransferError> {
    node_key(storage, true).map(|_| ())
}

impl CopyCipher {
    /// The cipher of the copy under `agreement_id` sealed as `seal`, with `manifest`'s
    /// chunks.
    pub(crate) fn new(
        storage: &dyn Storage,
        agreement_id: &str,
        seal: &CopySeal,
        manifest: &Manifest,
    ) -> Result<Self, TransferError> {
        let damaged = || {
            TransferError::DataLoss(format!(
                "the copy record of agreement {agreement_id} names no valid copy ID"
            ))
        };
        let copy_id = hex::decode(&seal.copy_id).map_err(|_| damaged())?;
        if copy_id.len() != 32 {
            return Err(damaged());
        }
        let node_key = node_key(storage, false)?;
        let info = [CONTEXT, agreement_id.as_bytes()];
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &copy_id).extract(&node_key);
        let okm = prk
            .expand(&info, &AES_256_GCM)
            .map_err(|_| TransferError::Unavailable("cannot derive the copy's key".into()))?;
        let key = LessSafeKey::new(UnboundKey::from(okm));
        Ok(Self {
            key,
            copy_id,
            agreement_id: agreement_id.to_owned(),
            chunks: manifest.chunk_hashes.len() as u32,
            tail: manifest.size.div_ceil(TAIL_ALIGN) * TAIL_ALIGN,
        })
    }

    /// Where chunk `index`'s nonce and tag lie in the payload file.
    pub(super) fn entry_offset(&self, index: u32) -> u64 {
        self.tail + index as u64 * ENTRY_LEN as u64
    }

    fn aad(&self, index: u32) -> Vec<u8> {
        let mut aad = Vec::with_capacity(CONTEXT.len() + 32 + self.agreement_id.len() + 9);
        aad.extend_from_slice(CONTEXT);
        aad.extend_from_slice(&self.copy_id);
        aad.extend_from_slice(self.agreement_id.as_bytes());
        aad.push(0);
        aad.extend_from_slice(&index.to_be_bytes());
        aad.extend_from_slice(&self.chunks.to_be_bytes());
        aad
    }

    /// Seals chunk `index` in place under a fresh random nonce; returns its tail entry.
    pub(super) fn seal(&self, index: u32, data: &mut [u8]) -> std::io::Result<[u8; ENTRY_LEN]> {
        let nonce = crate::base::random::random_bytes::<NONCE_LEN>()
            .map_err(|e| std::io::Error::other(format!("cannot make a nonce: {e}")))?;
        let tag = self
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(self.aad(index)),
                data,
            )
            .map_err(|_| std::io::Error::other("the chunk cannot be sealed"))?;
        let mut entry = [0u8; ENTRY_LEN];
        entry[..NONCE_LEN].copy_from_slice(&nonce);
        entry[NONCE_LEN..].copy_from_slice(tag.as_ref());
        Ok(entry)
    }

    /// Opens chunk `index` in place, given its tail entry. Fails (without giving any
    /// bytes) when the chunk, its entry, or its place was altered.
    pub(super) fn open(
        &self,
        index: u32,
        data: &mut Vec<u8>,
        entry: &[u8],
    ) -> Result<(), TransferError> {
        let altered = || {
            TransferError::DataLoss(format!(
                "chunk {index} of the copy of agreement {} fails its integrity check; the copy \
                 was altered on disk and none of that chunk is given out",
                self.agreement_id
            ))
        };
        if entry.len() != ENTRY_LEN {
            return Err(altered());
        }
        let nonce = Nonce::try_assume_unique_for_key(&entry[..NONCE_LEN]).map_err(|_| altered())?;
        let tag: [u8; 16] = entry[NONCE_LEN..].try_into().map_err(|_| altered())?;
        let plain_len = self
            .key
            .open_in_place_separate_tag(
                nonce,
                Aad::from(self.aad(index)),
                Tag::from(tag),
                data,
                0..,
            )
            .map_err(|_| altered())?
            .len();
        data.truncate(plain_len);
        Ok(())
    }
}
