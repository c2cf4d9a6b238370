//! Payloads: the bytes of data products and of received copies, kept apart from the
//! records that count them. Where they live depends on the engine: files beside a sled
//! database ([`files`]), or rows of at most 1 MiB in the PostgreSQL database that holds
//! the rest of the node ([`rows`]). Callers see names, offsets and bytes only.
//!
//! Names are `/`-separated segments of letters, digits, `-`, `_` and `.` (not starting
//! with a dot, at most 128 bytes each), so a name taken from a peer's message can never
//! leave the payload store (see [`Blobs::check_name`]).

pub mod files;
pub mod rows;

use std::io;
use std::path::Path;
use std::sync::Arc;

use super::durability::Durability;

pub use files::{FileBlobWriter, FileBlobs};
pub use rows::{RowBlobWriter, RowBlobs};

/// The payloads of one node.
pub enum Blobs {
    /// Files in `payloads/` beside a sled database.
    Files(FileBlobs),
    /// Rows of a PostgreSQL database.
    Rows(RowBlobs),
}

impl Blobs {
    /// Opens (or creates) the payload directory `root` (the sled engine's payloads).
    pub fn open(root: &Path) -> io::Result<Self> {
        FileBlobs::open(root).map(Self::Files)
    }

    pub(crate) fn open_with(root: &Path, durability: Arc<Durability>) -> io::Result<Self> {
        FileBlobs::open_with(root, durability).map(Self::Files)
    }

    /// Payload files in a temporary directory, removed when the store is dropped.
    pub fn temporary() -> io::Result<Self> {
        FileBlobs::temporary().map(Self::Files)
    }

    /// Checks that `name` is a valid payload name (see the module documentation).
    pub fn check_name(name: &str) -> io::Result<()> {
        FileBlobs::check_name(name)
    }

    /// The failed state shared with the database (see [`super::durability`]).
    pub(crate) fn durability(&self) -> &Arc<Durability> {
        match self {
            Self::Files(f) => f.durability(),
            Self::Rows(r) => r.durability(),
        }
    }

    /// Opens payload `name` for writing, creating it if needed and keeping what it
    /// holds. `direct`: large sequential writes, which the file store sends past the page
    /// cache where it can.
    pub fn writer(&self, name: &str, direct: bool) -> io::Result<BlobWriter> {
        match self {
            Self::Files(f) => f.writer(name, direct).map(BlobWriter::File),
            Self::Rows(r) => r.writer(name).map(BlobWriter::Rows),
        }
    }

    /// Reads up to `max` bytes of payload `name` from `offset` (fewer at its end);
    /// `None` if there is no such payload.
    pub fn read_at(&self, name: &str, offset: u64, max: usize) -> io::Result<Option<Vec<u8>>> {
        match self {
            Self::Files(f) => f.read_at(name, offset, max),
            Self::Rows(r) => r.read_at(name, offset, max),
        }
    }

    /// The length of payload `name`; `None` if there is no such payload.
    pub fn len(&self, name: &str) -> io::Result<Option<u64>> {
        match self {
            Self::Files(f) => f.len(name),
            Self::Rows(r) => r.len(name),
        }
    }

    /// Renames payload `from` to `to` (replacing `to`) atomically and durably.
    pub fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        match self {
            Self::Files(f) => f.rename(from, to),
            Self::Rows(r) => r.rename(from, to),
        }
    }

    /// Removes payload `name` durably; a missing payload is not an error.
    pub fn remove(&self, name: &str) -> io::Result<()> {
        match self {
            Self::Files(f) => f.remove(name),
            Self::Rows(r) => r.remove(name),
        }
    }

    /// Where payload `name`'s file is, for tests that damage a payload on purpose; the
    /// row store has no files and answers `Unsupported`.
    pub fn path(&self, name: &str) -> io::Result<std::path::PathBuf> {
        match self {
            Self::Files(f) => f.path(name),
            Self::Rows(_) => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "payloads in PostgreSQL have no files",
            )),
        }
    }

    /// An unnamed scratch file (gone when it is closed, also after a crash) for bytes
    /// on their way to payload `beside`: in the payload's directory for the file store,
    /// in the system's temporary directory for the row store.
    pub fn scratch_file(&self, beside: &str) -> io::Result<std::fs::File> {
        match self {
            Self::Files(f) => {
                let path = f.path(beside)?;
                tempfile::tempfile_in(path.parent().expect("payload paths have a directory"))
            }
            Self::Rows(_) => {
                Self::check_name(beside)?;
                tempfile::tempfile()
            }
        }
    }

    /// Every payload's name, sorted.
    pub fn all(&self) -> io::Result<Vec<String>> {
        match self {
            Self::Files(f) => f.all(),
            Self::Rows(r) => r.all(),
        }
    }

    /// The names of the entries directly under `dir` (payloads and deeper levels, e.g.
    /// `products/prd-1` lists `v1`), sorted.
    pub fn list(&self, dir: &str) -> io::Result<Vec<String>> {
        match self {
            Self::Files(f) => f.list(dir),
            Self::Rows(r) => r.list(dir),
        }
    }
}

/// Writes one payload at given offsets. Nothing written is durable before
/// [`sync`](Self::sync) returns.
pub enum BlobWriter {
    File(FileBlobWriter),
    Rows(RowBlobWriter),
}

impl BlobWriter {
    /// Writes `data` at `offset`. Call [`set_len`](Self::set_len) with the payload's size
    /// after the last write (the file store pads direct writes to a whole block).
    pub fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        match self {
            Self::File(w) => w.write_at(offset, data),
            Self::Rows(w) => w.write_at(offset, data),
        }
    }

    /// The writer's own buffer of `len` bytes, kept between writes (aligned for
    /// `O_DIRECT` in the file store), to fill in place and then write with
    /// [`write_staged_at`](Self::write_staged_at) without another copy. What it held
    /// before is unspecified.
    pub fn staging(&mut self, len: usize) -> &mut [u8] {
        match self {
            Self::File(w) => w.staging(len),
            Self::Rows(w) => w.staging(len),
        }
    }

    /// Writes the first `len` bytes of the [`staging`](Self::staging) buffer at
    /// `offset`, as [`write_at`](Self::write_at) writes bytes.
    pub fn write_staged_at(&mut self, offset: u64, len: usize) -> io::Result<()> {
        match self {
            Self::File(w) => w.write_staged_at(offset, len),
            Self::Rows(w) => w.write_staged_at(offset, len),
        }
    }

    /// Sets the payload's length.
    pub fn set_len(&self, len: u64) -> io::Result<()> {
        match self {
            Self::File(w) => w.set_len(len),
            Self::Rows(w) => w.set_len(len),
        }
    }

    /// Makes everything written so far durable.
    pub fn sync(&self) -> io::Result<()> {
        match self {
            Self::File(w) => w.sync(),
            Self::Rows(w) => w.sync(),
        }
    }
}
