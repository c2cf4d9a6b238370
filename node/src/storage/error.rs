//! The storage's one error type, apart from the trait so that the parts of the storage
//! (durability, payload files, the engine) can name it without importing the trait's
//! module.

use std::path::PathBuf;

/// Storage failures. The node refuses the operation rather than go on without them.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    #[error("cannot open the database in {path}: {reason}")]
    Open { path: PathBuf, reason: String },
    #[error("cannot use the PostgreSQL database {place}: {reason}")]
    Database { place: String, reason: String },
    #[error("database error in tree {tree:?}: {reason}")]
    Engine { tree: String, reason: String },
    #[error("cannot flush the database to disk: {0}")]
    Flush(String),
    /// A flush or fsync failed earlier in this process: nothing is written any more.
    #[error(
        "the node's storage failed ({0}); writes are refused until the node is restarted \
         after the disk is checked"
    )]
    Failed(String),
}

impl StorageError {
    /// Whether this is the failed state (see [`super::durability`]), which refuses
    /// every write.
    pub fn is_failed(&self) -> bool {
        matches!(self, Self::Failed(_))
    }
}
