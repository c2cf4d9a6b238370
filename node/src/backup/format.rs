//! The sealed file format: the first line, the framed records (`tag ‖ u32 length ‖
//! payload`), the parsing of each record's payload, and the seal's signed message.
//! Writers and readers hash every byte they pass, so the seal covers the whole file.

use std::io::{self, BufWriter, Read, Write};
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{BackupError, BackupFile, CONFIG_FILE, FILE_DIRS};

pub(super) const MAGIC: &[u8] = b"LIUTONG-BACKUP/1\n";

pub(super) const SEAL_CONTEXT: &[u8] = b"liutong-backup/v1\n";

/// No frame of a sound backup comes near this (chunks are about 1 MiB); a larger length
/// is damage, refused before anything is allocated for it.
pub(super) const MAX_FRAME: u32 = 256 * 1024 * 1024;

/// The seal record: tag, length, SHA-256, Ed25519 signature.
pub(super) const SEAL_RECORD: u64 = 1 + 4 + SEAL_LEN as u64;

pub(super) const SEAL_LEN: u32 = 32 + 64;

/// Payload files travel in pieces of this size.
pub(super) const PAYLOAD_PIECE: usize = 4 << 20;

pub(super) fn seal_message(digest: &[u8; 32]) -> Vec<u8> {
    let mut m = SEAL_CONTEXT.to_vec();
    m.extend_from_slice(digest);
    m
}

pub(super) enum Record {
    File(BackupFile),
    Tree(String),
    Entry(Vec<u8>, Vec<u8>),
    /// A piece of a payload file: name, offset, bytes.
    Payload(String, u64, Vec<u8>),
}

pub(super) fn parse_file(payload: &[u8]) -> Result<BackupFile, String> {
    let bad = || "a file record is malformed".to_owned();
    let name_len = u16::from_be_bytes(
        payload
            .get(..2)
            .ok_or_else(bad)?
            .try_into()
            .unwrap_or_default(),
    ) as usize;
    let name = payload.get(2..2 + name_len).ok_or_else(bad)?;
    let name = String::from_utf8(name.to_vec()).map_err(|_| bad())?;
    check_file_name(&name)?;
    let mode_bytes = payload.get(2 + name_len..6 + name_len).ok_or_else(bad)?;
    let mode = u32::from_be_bytes(mode_bytes.try_into().map_err(|_| bad())?);
    Ok(BackupFile {
        name,
        mode,
        contents: payload[6 + name_len..].to_vec(),
    })
}

/// Only `node.toml` and plain names inside `identity/` and `local/`: a backup never
/// writes outside the directory it is restored into.
pub(super) fn check_file_name(name: &str) -> Result<(), String> {
    if name == CONFIG_FILE {
        return Ok(());
    }
    let path = Path::new(name);
    let parts: Vec<Component> = path.components().collect();
    let ok = matches!(parts.as_slice(), [Component::Normal(dir), Component::Normal(_)]
        if FILE_DIRS.iter().any(|d| dir.to_str() == Some(d)));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "it names a file {name:?} outside {}/ and {}/",
            FILE_DIRS[0], FILE_DIRS[1]
        ))
    }
}

pub(super) fn parse_payload(payload: Vec<u8>) -> Result<(String, u64, Vec<u8>), String> {
    let bad = || "a payload record is malformed".to_owned();
    let name_len = u16::from_be_bytes(
        payload
            .get(..2)
            .ok_or_else(bad)?
            .try_into()
            .map_err(|_| bad())?,
    ) as usize;
    let name = payload.get(2..2 + name_len).ok_or_else(bad)?;
    let name = String::from_utf8(name.to_vec()).map_err(|_| bad())?;
    // Checked again by the payload store when written; refused here so that `verify`
    // reports it.
    crate::storage::blobs::Blobs::check_name(&name)
        .map_err(|_| format!("it names a payload {name:?} that is not a valid payload name"))?;
    let offset = u64::from_be_bytes(
        payload
            .get(2 + name_len..10 + name_len)
            .ok_or_else(bad)?
            .try_into()
            .map_err(|_| bad())?,
    );
    Ok((name, offset, payload[10 + name_len..].to_vec()))
}

pub(super) fn parse_entry(mut payload: Vec<u8>) -> Result<(Vec<u8>, Vec<u8>), String> {
    let bad = || "an entry record is malformed".to_owned();
    let key_len = u32::from_be_bytes(
        payload
            .get(..4)
            .ok_or_else(bad)?
            .try_into()
            .map_err(|_| bad())?,
    ) as usize;
    if payload.len() < 4 + key_len {
        return Err(bad());
    }
    let value = payload.split_off(4 + key_len);
    Ok((payload[4..].to_vec(), value))
}

pub(super) struct FrameWriter<W: Write> {
    pub(super) out: BufWriter<W>,
    pub(super) hash: Sha256,
}

impl<W: Write> FrameWriter<W> {
    pub(super) fn raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.hash.update(bytes);
        self.out.write_all(bytes)
    }

    pub(super) fn frame(&mut self, tag: u8, parts: &[&[u8]]) -> io::Result<()> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let len = u32::try_from(len)
            .ok()
            .filter(|l| *l <= MAX_FRAME)
            .ok_or_else(|| io::Error::other(format!("a record of {len} bytes is too large")))?;
        self.raw(&[tag])?;
        self.raw(&len.to_be_bytes())?;
        for p in parts {
            self.raw(p)?;
        }
        Ok(())
    }
}

pub(super) struct FrameReader<R: Read> {
    pub(super) input: R,
    pub(super) hash: Sha256,
    pub(super) path: PathBuf,
}

impl<R: Read> FrameReader<R> {
    pub(super) fn exact(&mut self, buf: &mut [u8]) -> Result<(), BackupError> {
        self.input.read_exact(buf).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                BackupError::Truncated {
                    path: self.path.clone(),
                    reason: "it ends in the middle of a record".into(),
                }
            } else {
                BackupError::Io {
                    what: "read",
                    path: self.path.clone(),
                    source: e,
                }
            }
        })?;
        self.hash.update(&*buf);
        Ok(())
    }

    pub(super) fn frame(&mut self) -> Result<(u8, Vec<u8>), BackupError> {
        let mut head = [0u8; 5];
        self.exact(&mut head)?;
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]);
        if len > MAX_FRAME {
            return Err(BackupError::Damaged {
                path: self.path.clone(),
                reason: format!("a record claims {len} bytes, more than any backup record"),
            });
        }
        let mut payload = vec![0u8; len as usize];
        self.exact(&mut payload)?;
        Ok((head[0], payload))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_stay_inside_the_directory() {
        assert!(check_file_name("node.toml").is_ok());
        assert!(check_file_name("identity/signing.key").is_ok());
        assert!(check_file_name("local/admin.crt").is_ok());
        for bad in [
            "../x",
            "identity/../../x",
            "/etc/passwd",
            "db/x",
            "identity/a/b",
            "identity",
        ] {
            assert!(check_file_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn entries_round_trip_through_frames() {
        let mut payload = 3u32.to_be_bytes().to_vec();
        payload.extend_from_slice(b"keyvalue");
        assert_eq!(
            parse_entry(payload).unwrap(),
            (b"key".to_vec(), b"value".to_vec())
        );
        assert!(parse_entry(vec![0, 0, 0, 9, 1]).is_err());
    }
}
