//! Data products in storage: versioned, chunked (about 1 MiB a chunk) payloads with a
//! SHA-256 per chunk and for the whole, and their metadata.
//!
//! The payload of a version is one file among the storage's payload files
//! (`products/<product>/v<version>`, chunk `i` at offset `i × CHUNK_SIZE`); the records
//! are in the database. Publishing streams: chunks are written to an unfinished file as
//! they arrive; at the end the file is synced and renamed, and only then the product
//! record is written and flushed. A publish that fails part-way removes its file, and
//! files left by a crash (unfinished, or with no product record) are removed at start,
//! so nothing is ever stored half-done. Earlier versions are kept.
//!
//! (Nodes before payload files kept chunks in the database's `chunks` tree; those are
//! still read.)//!
//! The record types and offer IDs are here; the store (reads, and the clean-up at
//! open) is in `store`, a publish in progress in `upload`.

mod store;
mod upload;

use liutong_policy::Classification;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::schema::Profile;
use crate::base::error::{ErrorKind, ErrorKinded};
use crate::base::random::RandomError;
use crate::identity::ParticipantId;
use crate::storage::StorageError;

pub use store::{ChunkReader, ProductStore};
pub use upload::Upload;

/// Size of a chunk, in bytes.
pub const CHUNK_SIZE: usize = 1 << 20;

/// The payload format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Csv,
    Jsonl,
    Bytes,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "csv" => Ok(Self::Csv),
            "jsonl" => Ok(Self::Jsonl),
            "bytes" => Ok(Self::Bytes),
            other => Err(format!("unknown format {other:?}; use csv, jsonl or bytes")),
        }
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Csv => "csv",
            Self::Jsonl => "jsonl",
            Self::Bytes => "bytes",
        })
    }
}

/// One version of a data product.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProductVersion {
    /// Stable across versions, e.g. `prd-3f9a…`.
    pub product_id: String,
    pub version: u32,
    pub title: String,
    pub description: String,
    pub owner: ParticipantId,
    pub classification: Classification,
    pub format: Format,
    pub size: u64,
    /// SHA-256 of the whole payload, hex.
    pub sha256: String,
    pub chunk_size: u32,
    /// SHA-256 of every chunk, hex, in order.
    pub chunk_hashes: Vec<String>,
    /// Columns and quality figures (CSV and JSON Lines).
    pub profile: Option<Profile>,
    /// Products this one was derived from.
    #[serde(default)]
    pub derived_from: Vec<String>,
    /// The offer's policy, as ODRL JSON-LD; `None` when the product is not offered.
    pub policy_odrl: Option<serde_json::Value>,
    pub published_at: i64,
}

impl ProductVersion {
    /// The offer of this version (there is one per offered version).
    pub fn offer_id(&self) -> Option<String> {
        self.policy_odrl
            .as_ref()
            .map(|_| format!("{}/v{}", self.product_id, self.version))
    }

    /// The product's URN, the target of its policies.
    pub fn target(product_id: &str) -> String {
        format!("urn:liutong:product:{product_id}")
    }
}

/// SHA-256 over a payload's chunk hashes (each as its 32 bytes, in order), hex. With the
/// chunk size it fixes every chunk's bytes, so an agreement that names it fixes the
/// payload chunk by chunk: a consumer that checks each chunk as it arrives needs no
/// second pass over the whole payload. `None` if a hash is not 64 hex digits.
pub fn chunk_list_sha256(chunk_hashes: &[String]) -> Option<String> {
    let mut list = Sha256::new();
    for h in chunk_hashes {
        let mut raw = [0u8; 32];
        hex::decode_to_slice(h, &mut raw).ok()?;
        list.update(raw);
    }
    Some(hex::encode(list.finalize()))
}

/// Splits an offer ID into product ID and version.
pub fn parse_offer_id(offer_id: &str) -> Option<(&str, u32)> {
    let (product, version) = offer_id.rsplit_once("/v")?;
    Some((product, version.parse().ok()?))
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProductError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("product {0} does not exist")]
    NotFound(String),
    #[error("the {format} data does not parse: {reason}")]
    Profile { format: Format, reason: String },
    #[error("the stored product is damaged: {0}")]
    Damaged(String),
    #[error("cannot write or read the payload file: {0}")]
    Payload(#[from] std::io::Error),
    #[error("cannot make a product ID: {0}")]
    Random(#[from] RandomError),
}

impl ErrorKinded for ProductError {
    fn kind(&self) -> ErrorKind {
        match self {
            ProductError::NotFound(_) => ErrorKind::NotFound,
            ProductError::Profile { .. } => ErrorKind::InvalidArgument,
            ProductError::Damaged(_) => ErrorKind::DataLoss,
            ProductError::Storage(_) | ProductError::Payload(_) | ProductError::Random(_) => {
                ErrorKind::Internal
            }
        }
    }

    /// Data that does not parse is the publisher's `data` field at fault.
    fn message(&self) -> String {
        match self {
            ProductError::Profile { .. } => format!("data: {self}"),
            other => other.to_string(),
        }
    }

    fn inner(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ProductError::Storage(s) => Some(s),
            _ => None,
        }
    }
}

/// What the publisher says about a new product or version.
#[derive(Clone, Debug)]
pub struct NewVersion {
    /// `None` for a new product, `Some(id)` for a new version of it.
    pub product_id: Option<String>,
    pub title: String,
    pub description: String,
    pub owner: ParticipantId,
    pub classification: Classification,
    pub format: Format,
    pub derived_from: Vec<String>,
    pub policy_odrl: Option<serde_json::Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offer_ids_split() {
        assert_eq!(parse_offer_id("prd-ab/v12"), Some(("prd-ab", 12)));
        assert_eq!(parse_offer_id("prd-ab"), None);
    }
}
