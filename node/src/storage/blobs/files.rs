//! Payload files: the bytes of data products and of received copies, as plain files in a
//! `payloads/` directory beside the database, while their records stay in the database.
//!
//! Why not in sled: sled 0.34 copies a large value several times and keeps values over
//! about 128 KiB in files of its own that it never fsyncs, so a 1 MiB chunk was both
//! slow and not durable against a power cut. Here a writer says when its bytes are on
//! disk ([`FileBlobWriter::sync`]), and the caller writes the record that counts them only
//! after that, so a record never points at bytes that could be lost.
//!
//! Large sequential writes use `O_DIRECT` where the file system allows it: the bytes go
//! from an aligned buffer to the disk without being copied into the page cache, which
//! on the project's machine costs more CPU than hashing them. Reads use the page cache.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::storage::durability::Durability;
use crate::storage::fault;

/// Alignment of `O_DIRECT` offsets, lengths and buffers (the largest common block size).
const ALIGN: usize = 4096;

/// The payload files of one database.
pub struct FileBlobs {
    root: PathBuf,
    /// The fsyncs, shared with the database: a failed one refuses every later write.
    durability: Arc<Durability>,
    /// Keeps a temporary directory alive as long as the store (tests).
    _temporary: Option<tempfile::TempDir>,
}

impl FileBlobs {
    /// Opens (or creates) the payload directory `root`, readable by the owner only.
    pub fn open(root: &Path) -> io::Result<Self> {
        Self::open_with(root, Durability::new(fault::from_env()))
    }

    /// [`open`](Self::open), with the fsyncs of `durability`.
    pub fn open_with(root: &Path, durability: Arc<Durability>) -> io::Result<Self> {
        crate::base::files::create_private_dir(root)?;
        Ok(Self {
            root: root.to_owned(),
            durability,
            _temporary: None,
        })
    }

    /// A store in a temporary directory, removed when the store is dropped.
    pub fn temporary() -> io::Result<Self> {
        Self::temporary_with(Durability::new(None))
    }

    pub(crate) fn temporary_with(durability: Arc<Durability>) -> io::Result<Self> {
        let dir = tempfile::tempdir()?;
        Ok(Self {
            root: dir.path().to_owned(),
            durability,
            _temporary: Some(dir),
        })
    }

    /// The fsyncs of this store (shared with its database).
    pub(crate) fn durability(&self) -> &Arc<Durability> {
        &self.durability
    }

    /// Where payload `name` lives. Names are `/`-separated segments of letters, digits,
    /// `-`, `_` and `.` (not starting with a dot), so a name taken from a peer's message
    /// can never leave the directory.
    pub fn path(&self, name: &str) -> io::Result<PathBuf> {
        Self::check_name(name)?;
        Ok(self.root.join(name))
    }

    /// Checks that `name` is a valid payload name (see [`path`](Self::path)).
    pub fn check_name(name: &str) -> io::Result<()> {
        let valid = !name.is_empty()
            && name.split('/').all(|s| {
                !s.is_empty()
                    && !s.starts_with('.')
                    && s.len() <= 128
                    && s.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            });
        if !valid {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{name:?} is not a valid payload name"),
            ));
        }
        Ok(())
    }

    /// Opens payload `name` for writing, creating it (and its directory) if needed and
    /// keeping what it holds. `direct`: write through `O_DIRECT` where possible.
    pub fn writer(&self, name: &str, direct: bool) -> io::Result<FileBlobWriter> {
        self.durability.check().map_err(io::Error::other)?;
        let path = self.path(name)?;
        let dir = path.parent().expect("payload paths have a directory");
        self.create_dirs(dir)?;
        let open = |flags: i32| {
            OpenOptions::new()
                .write(true)
                .read(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .custom_flags(flags)
                .open(&path)
        };
        let buffered = open(0)?;
        // The file's entry in its directory is made durable once, here, not at every
        // sync: only creating the file changes it.
        self.sync_dir(dir)?;
        // Some file systems (tmpfs before Linux 6.6, some FUSE) refuse O_DIRECT: fall
        // back to buffered writes there.
        let direct = if direct {
            open(libc::O_DIRECT).ok()
        } else {
            None
        };
        Ok(FileBlobWriter {
            buffered,
            direct,
            aligned: Vec::new(),
            path,
            durability: self.durability.clone(),
        })
    }

    /// Creates `dir` and its missing parents inside the payload directory, and makes
    /// each new directory's entry durable (an fsync of every parent that got one, up
    /// to the payload directory), so no payload file is left in a directory that a
    /// power cut could take away.
    fn create_dirs(&self, dir: &Path) -> io::Result<()> {
        let mut missing = Vec::new();
        let mut at = dir;
        while at != self.root && !at.is_dir() {
            missing.push(at);
            match at.parent() {
                Some(parent) => at = parent,
                None => break,
            }
        }
        for new in missing.iter().rev() {
            match fs::create_dir(new) {
                Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
                _ => {}
            }
        }
        for new in &missing {
            self.sync_dir(new.parent().expect("a created directory has a parent"))?;
        }
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.durability.sync_dir(dir).map_err(io::Error::other)
    }

    /// Reads up to `max` bytes of payload `name` from `offset` (fewer at its end);
    /// `None` if there is no such payload.
    pub fn read_at(&self, name: &str, offset: u64, max: usize) -> io::Result<Option<Vec<u8>>> {
        let file = match File::open(self.path(name)?) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        // The file is this call's own, so its cursor is too. `File` reads into the
        // vector's spare capacity without zeroing it first.
        let mut buf = Vec::with_capacity(max);
        let mut file = file;
        file.seek(io::SeekFrom::Start(offset))?;
        file.take(max as u64).read_to_end(&mut buf)?;
        Ok(Some(buf))
    }

    /// The length of payload `name`; `None` if there is no such payload.
    pub fn len(&self, name: &str) -> io::Result<Option<u64>> {
        match fs::metadata(self.path(name)?) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Renames payload `from` to `to` atomically and makes the rename durable.
    pub fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        self.durability.check().map_err(io::Error::other)?;
        let (from, to) = (self.path(from)?, self.path(to)?);
        let (from_dir, to_dir) = (
            from.parent().expect("payload paths have a directory"),
            to.parent().expect("payload paths have a directory"),
        );
        self.create_dirs(to_dir)?;
        fs::rename(&from, &to)?;
        self.sync_dir(to_dir)?;
        if from_dir != to_dir {
            self.sync_dir(from_dir)?;
        }
        Ok(())
    }

    /// Removes payload `name` and makes the removal durable (a deletion that a power
    /// cut could undo must not be reported done); a missing payload is not an error.
    pub fn remove(&self, name: &str) -> io::Result<()> {
        self.durability.check().map_err(io::Error::other)?;
        let path = self.path(name)?;
        match fs::remove_file(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
            Ok(()) => self.sync_dir(path.parent().expect("payload paths have a directory")),
        }
    }

    /// Every payload's name, sorted (files in nested directories as `a/b/c`). Entries
    /// whose names are not valid payload names (e.g. editor leftovers) are skipped.
    pub fn all(&self) -> io::Result<Vec<String>> {
        fn walk(dir: &Path, prefix: &str, out: &mut Vec<String>) -> io::Result<()> {
            let entries = match fs::read_dir(dir) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(e),
            };
            for entry in entries {
                let entry = entry?;
                let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                    continue;
                };
                let full = if prefix.is_empty() {
                    name
                } else {
                    format!("{prefix}/{name}")
                };
                let kind = entry.file_type()?;
                if kind.is_dir() {
                    walk(&entry.path(), &full, out)?;
                } else if kind.is_file() {
                    out.push(full);
                }
            }
            Ok(())
        }
        let mut out = Vec::new();
        walk(&self.root, "", &mut out)?;
        out.retain(|n| self.path(n).is_ok());
        out.sort();
        Ok(out)
    }

    /// The names of the entries directly in directory `dir` (e.g. `products/prd-1`).
    pub fn list(&self, dir: &str) -> io::Result<Vec<String>> {
        let entries = match fs::read_dir(self.path(dir)?) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry?;
            if let Some(name) = entry.file_name().to_str() {
                names.push(name.to_owned());
            }
        }
        names.sort();
        Ok(names)
    }
}

/// Writes one payload at given offsets. Nothing written is durable before [`sync`].
///
/// [`sync`]: FileBlobWriter::sync
pub struct FileBlobWriter {
    buffered: File,
    /// The same file opened with `O_DIRECT`, when the file system allows it.
    direct: Option<File>,
    /// An aligned copy of the bytes for `O_DIRECT` (its start is found inside the
    /// vector, so no unsafe allocation is needed).
    aligned: Vec<u8>,
    path: PathBuf,
    /// The store's fsyncs: a failed one refuses every later write.
    durability: Arc<Durability>,
}

impl FileBlobWriter {
    /// Writes `data` at `offset`. An aligned offset goes through `O_DIRECT`, padded with
    /// zeros to a whole block: call [`set_len`](Self::set_len) with the payload's size
    /// after the last write.
    pub fn write_at(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.durability.check().map_err(io::Error::other)?;
        match &self.direct {
            Some(_) if offset.is_multiple_of(ALIGN as u64) => {
                self.staging(data.len()).copy_from_slice(data);
                self.write_staged_at(offset, data.len())
            }
            _ => self.buffered.write_all_at(data, offset),
        }
    }

    /// The writer's own buffer of `len` bytes (aligned for `O_DIRECT`, kept between
    /// writes), for the caller to fill and then write with
    /// [`write_staged_at`](Self::write_staged_at): bytes made in place there (sealed,
    /// say) reach the disk without another copy. What it held before is unspecified.
    pub fn staging(&mut self, len: usize) -> &mut [u8] {
        let padded = len.div_ceil(ALIGN) * ALIGN;
        if self.aligned.len() < padded + ALIGN {
            self.aligned = vec![0u8; padded + ALIGN];
        }
        let start = self.aligned.as_ptr().align_offset(ALIGN);
        &mut self.aligned[start..start + len]
    }

    /// Writes the first `len` bytes of the [`staging`](Self::staging) buffer at
    /// `offset`, as [`write_at`](Self::write_at) would write them.
    pub fn write_staged_at(&mut self, offset: u64, len: usize) -> io::Result<()> {
        self.durability.check().map_err(io::Error::other)?;
        let padded = len.div_ceil(ALIGN) * ALIGN;
        let start = self.aligned.as_ptr().align_offset(ALIGN);
        if self.aligned.len() < start + padded {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "write_staged_at: more bytes than the staging buffer was asked for",
            ));
        }
        match &self.direct {
            Some(direct) if offset.is_multiple_of(ALIGN as u64) => {
                let buf = &mut self.aligned[start..start + padded];
                buf[len..].fill(0);
                direct.write_all_at(buf, offset)
            }
            _ => self
                .buffered
                .write_all_at(&self.aligned[start..start + len], offset),
        }
    }

    /// Sets the payload's length (cuts the padding of the last direct write).
    pub fn set_len(&self, len: u64) -> io::Result<()> {
        self.buffered.set_len(len)
    }

    /// Makes everything written so far durable: the bytes and the length. (The file's
    /// entry in its directory was made durable when the writer opened it.)
    pub fn sync(&self) -> io::Result<()> {
        self.durability
            .sync_all(&self.buffered, &self.path)
            .map_err(io::Error::other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_at_offsets_direct_and_buffered_read_back() {
        let blobs = FileBlobs::temporary().unwrap();
        let one: Vec<u8> = (0..(ALIGN * 3 + 17)).map(|i| (i % 251) as u8).collect();
        let mut w = blobs.writer("copies/agr-1", true).unwrap();
        w.write_at(0, &one).unwrap();
        // An unaligned offset takes the buffered path.
        w.write_at(one.len() as u64, b"tail").unwrap();
        w.set_len(one.len() as u64 + 4).unwrap();
        w.sync().unwrap();
        let back = blobs.read_at("copies/agr-1", 0, 1 << 20).unwrap().unwrap();
        assert_eq!(&back[..one.len()], &one[..]);
        assert_eq!(&back[one.len()..], b"tail");
        assert_eq!(
            blobs.read_at("copies/agr-1", ALIGN as u64, 5).unwrap(),
            Some(one[ALIGN..ALIGN + 5].to_vec())
        );
        assert_eq!(blobs.read_at("copies/none", 0, 5).unwrap(), None);

        blobs.rename("copies/agr-1", "copies/agr-2").unwrap();
        assert_eq!(blobs.list("copies").unwrap(), vec!["agr-2".to_owned()]);
        blobs.remove("copies/agr-2").unwrap();
        blobs.remove("copies/agr-2").unwrap();
        assert!(blobs.list("copies").unwrap().is_empty());
    }

    #[test]
    fn bytes_made_in_the_staging_buffer_are_written_as_given() {
        let blobs = FileBlobs::temporary().unwrap();
        let mut w = blobs.writer("copies/agr-3", true).unwrap();
        let first: Vec<u8> = (0..(ALIGN * 2 + 100)).map(|i| (i % 241) as u8).collect();
        // Made in place (here: each byte turned), then written: at an aligned offset
        // (direct, padded) and at an unaligned one (buffered), from the same buffer.
        let staged = w.staging(first.len());
        staged.copy_from_slice(&first);
        staged.iter_mut().for_each(|b| *b = !*b);
        w.write_staged_at(0, first.len()).unwrap();
        w.staging(3).copy_from_slice(b"end");
        w.write_staged_at(first.len() as u64, 3).unwrap();
        w.set_len(first.len() as u64 + 3).unwrap();
        w.sync().unwrap();
        let back = blobs.read_at("copies/agr-3", 0, 1 << 20).unwrap().unwrap();
        let turned: Vec<u8> = first.iter().map(|b| !b).collect();
        assert_eq!(&back[..first.len()], &turned[..]);
        assert_eq!(&back[first.len()..], b"end");
        // More than the buffer was asked for is refused, not read past it.
        let mut fresh = blobs.writer("copies/agr-4", true).unwrap();
        let err = fresh.write_staged_at(0, 10).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn names_from_peers_cannot_leave_the_directory() {
        let blobs = FileBlobs::temporary().unwrap();
        for bad in [
            "",
            "../x",
            "copies/../../x",
            "/etc/passwd",
            "a//b",
            ".hidden",
            "a b",
        ] {
            let err = blobs.writer(bad, false).err().expect(bad);
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{bad}");
        }
        assert!(blobs.path("products/prd-1a/v2").is_ok());
    }

    #[test]
    fn every_new_directory_of_a_payload_is_made_durable() {
        let synced = Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = synced.clone();
        let fault: fault::Fault = Arc::new(move |path: &Path| {
            record.lock().unwrap().push(path.to_owned());
            Ok(())
        });
        let blobs = FileBlobs::temporary_with(Durability::new(Some(fault))).unwrap();
        let root = blobs.root.clone();
        blobs.writer("a/b/c/x", false).unwrap().sync().unwrap();
        let synced = std::mem::take(&mut *synced.lock().unwrap());
        // The entry of each new directory lives in its parent; the file's in `a/b/c`.
        for dir in [
            &root,
            &root.join("a"),
            &root.join("a/b"),
            &root.join("a/b/c"),
        ] {
            assert!(synced.contains(dir), "{dir:?} not synced: {synced:?}");
        }
        assert!(synced.contains(&root.join("a/b/c/x")));
    }
}
