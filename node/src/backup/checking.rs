//! Checking a backup before anything is touched: the whole file against its seal,
//! then every record, the summary, the audit log size the header announces, and the
//! seal's signature against the node's own authority-signed credential.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use sha2::{Digest, Sha256};

use super::format::{
    FrameReader, MAGIC, MAX_FRAME, Record, SEAL_LEN, SEAL_RECORD, parse_entry, parse_file,
    parse_payload, seal_message,
};
use super::{BackupError, BackupHeader, BackupSummary, CONFIG_FILE, VerifiedBackup};
use crate::audit::log as audit_log;
use crate::config::{self, NodeConfig};
use crate::identity::Membership;
use crate::identity::membership::parse_credential;

/// Reads the whole file and checks it: frames, summary, hash, and the seal's signature
/// against the key that the backed-up credential names (the credential itself against
/// the authority key in the backed-up node.toml).
pub fn verify(path: &Path) -> Result<VerifiedBackup, BackupError> {
    read_backup(path, &mut |_| Ok(()))
}

/// Checks the whole file against its seal ([`check_sealed_bytes`]), then reads every
/// frame, handing files, trees and entries to `visit`, and checks them.
pub(super) fn read_backup(
    path: &Path,
    visit: &mut dyn FnMut(Record) -> Result<(), BackupError>,
) -> Result<VerifiedBackup, BackupError> {
    check_sealed_bytes(path)?;
    read_records(path, visit)
}

/// Before any record is read: a file that ends in a seal record is hashed whole
/// against it, so a changed byte anywhere is damage (a changed length field would
/// otherwise send the reader past the end, as if the file were cut). A file that does
/// not end in a seal is walked record by record: cut short, it runs out (truncated);
/// with its seal record changed, the record after the summary is not a seal (damaged).
pub(super) fn check_sealed_bytes(path: &Path) -> Result<(), BackupError> {
    let io = |source| BackupError::Io {
        what: "read",
        path: path.to_owned(),
        source,
    };
    let damaged = |reason: String| BackupError::Damaged {
        path: path.to_owned(),
        reason,
    };
    let truncated = |reason: &str| BackupError::Truncated {
        path: path.to_owned(),
        reason: reason.to_owned(),
    };
    let mut file = File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    if len >= MAGIC.len() as u64 + SEAL_RECORD {
        let mut seal = [0u8; SEAL_RECORD as usize];
        file.seek(SeekFrom::Start(len - SEAL_RECORD))
            .and_then(|_| file.read_exact(&mut seal))
            .map_err(io)?;
        if seal[0] == b'S' && seal[1..5] == SEAL_LEN.to_be_bytes() {
            let mut hash = Sha256::new();
            file.rewind().map_err(io)?;
            io::copy(&mut (&mut file).take(len - SEAL_RECORD), &mut hash).map_err(io)?;
            let digest: [u8; 32] = hash.finalize().into();
            return if seal[5..37] == digest {
                Ok(())
            } else {
                Err(damaged(
                    "its SHA-256 does not match the one sealed in it (bytes were changed)".into(),
                ))
            };
        }
    }
    // No seal at the end.
    let mut start = vec![0u8; MAGIC.len().min(len as usize)];
    file.rewind()
        .and_then(|_| file.read_exact(&mut start))
        .map_err(io)?;
    if start != MAGIC {
        return Err(if !start.is_empty() && MAGIC.starts_with(&start) {
            truncated("it ends inside its first line")
        } else {
            BackupError::NotABackup(path.to_owned())
        });
    }
    let mut input = BufReader::with_capacity(1 << 16, file);
    let mut at = MAGIC.len() as u64;
    let mut after_summary = false;
    loop {
        let left = len - at;
        if left == 0 {
            return Err(truncated("it ends after a whole record"));
        }
        if left < 5 {
            return Err(truncated("it ends in the middle of a record"));
        }
        let mut head = [0u8; 5];
        input.read_exact(&mut head).map_err(io)?;
        let (tag, size) = (
            head[0],
            u32::from_be_bytes([head[1], head[2], head[3], head[4]]),
        );
        if after_summary && (tag != b'S' || size != SEAL_LEN) {
            return Err(damaged(
                "the record after the summary is not a sound seal (bytes were changed)".into(),
            ));
        }
        if !b"HFTKPZS".contains(&tag) || size > MAX_FRAME {
            return Err(damaged(format!(
                "a record has type {tag:#04x} and {size} bytes, which no backup record has (bytes \
                 were changed)"
            )));
        }
        if u64::from(size) > left - 5 {
            return Err(truncated("it ends in the middle of a record"));
        }
        if tag == b'S' {
            // Not at the end, or the check above would have found it there.
            return Err(damaged("bytes follow the seal".into()));
        }
        input.seek_relative(i64::from(size)).map_err(io)?;
        at += 5 + u64::from(size);
        after_summary = tag == b'Z';
    }
}

/// Reads every frame, handing files, trees and entries to `visit`, and checks the
/// whole file. `visit` sees records before the seal is checked: [`restore`] runs a full
/// [`verify`] first.
pub(super) fn read_records(
    path: &Path,
    visit: &mut dyn FnMut(Record) -> Result<(), BackupError>,
) -> Result<VerifiedBackup, BackupError> {
    let file = File::open(path).map_err(|source| BackupError::Io {
        what: "open",
        path: path.to_owned(),
        source,
    })?;
    let bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut r = FrameReader {
        input: BufReader::with_capacity(1 << 20, file),
        hash: Sha256::new(),
        path: path.to_owned(),
    };
    let mut magic = vec![0u8; MAGIC.len()];
    match r.exact(&mut magic) {
        Ok(()) if magic == MAGIC => {}
        _ => return Err(BackupError::NotABackup(path.to_owned())),
    }
    let damaged = |reason: String| BackupError::Damaged {
        path: path.to_owned(),
        reason,
    };
    let mut header = None::<BackupHeader>;
    let mut counted = BackupSummary::default();
    let mut summary = None::<BackupSummary>;
    let mut config_text = None::<String>;
    let mut credential = None::<Vec<u8>>;
    let credential_file = format!(
        "{}/{}",
        config::IDENTITY_DIR,
        crate::identity::bundle::files::CREDENTIAL
    );
    let mut tree = String::new();
    // The audit log's committed size in the copy (none stored: an empty log).
    let mut audit_log_size = 0u64;
    loop {
        let before_frame = r.hash.clone();
        let (tag, payload) = r.frame()?;
        match tag {
            b'H' if header.is_none() => {
                header = Some(
                    serde_json::from_slice(&payload)
                        .map_err(|e| damaged(format!("the header is unreadable: {e}")))?,
                );
            }
            _ if header.is_none() => {
                return Err(damaged("the first record is not the header".into()));
            }
            b'F' if summary.is_none() => {
                let f = parse_file(&payload).map_err(&damaged)?;
                if f.name == CONFIG_FILE {
                    config_text = Some(String::from_utf8_lossy(&f.contents).into_owned());
                } else if f.name == credential_file {
                    credential = Some(f.contents.clone());
                }
                counted.files += 1;
                visit(Record::File(f))?;
            }
            b'T' if summary.is_none() => {
                let name = String::from_utf8(payload)
                    .map_err(|_| damaged("a tree name is not text".into()))?;
                counted.trees += 1;
                tree.clone_from(&name);
                visit(Record::Tree(name))?;
            }
            b'K' if summary.is_none() && counted.trees > 0 => {
                let (k, v) = parse_entry(payload).map_err(&damaged)?;
                if let Some(size) = audit_log::committed_size_record(&tree, &k, &v) {
                    audit_log_size = size.map_err(|e| damaged(e.to_string()))?;
                }
                counted.entries += 1;
                visit(Record::Entry(k, v))?;
            }
            b'P' if summary.is_none() => {
                let (name, offset, bytes) = parse_payload(payload).map_err(&damaged)?;
                if offset == 0 {
                    counted.payloads += 1;
                }
                counted.payload_bytes += bytes.len() as u64;
                visit(Record::Payload(name, offset, bytes))?;
            }
            b'Z' if summary.is_none() => {
                let s: BackupSummary = serde_json::from_slice(&payload)
                    .map_err(|e| damaged(format!("the summary is unreadable: {e}")))?;
                if s != counted {
                    return Err(damaged(format!(
                        "the summary announces {} files, {} trees, {} entries and {} payload \
                         bytes, but the file holds {} files, {} trees, {} entries and {} payload \
                         bytes",
                        s.files,
                        s.trees,
                        s.entries,
                        s.payload_bytes,
                        counted.files,
                        counted.trees,
                        counted.entries,
                        counted.payload_bytes
                    )));
                }
                summary = Some(s);
            }
            b'S' if summary.is_some() => {
                if payload.len() != 32 + 64 {
                    return Err(damaged("the seal has the wrong length".into()));
                }
                let digest: [u8; 32] = before_frame.finalize().into();
                if payload[..32] != digest {
                    return Err(damaged(
                        "its SHA-256 does not match the one sealed in it (bytes were changed)"
                            .into(),
                    ));
                }
                let mut rest = [0u8; 1];
                if r.input
                    .read(&mut rest)
                    .map_err(|e| damaged(e.to_string()))?
                    != 0
                {
                    return Err(damaged("bytes follow the seal".into()));
                }
                let header = header.expect("checked above");
                let membership = seal_signer(config_text, credential).map_err(&damaged)?;
                if membership.participant_id.to_string() != header.participant {
                    return Err(damaged(format!(
                        "the header names participant {}, the credential {}",
                        header.participant, membership.participant_id
                    )));
                }
                if !membership
                    .signing_key
                    .verify(&seal_message(&digest), &payload[32..])
                {
                    return Err(damaged(
                        "the seal's signature is not by the key of the node's credential".into(),
                    ));
                }
                // A header that counts fewer entries than the copy holds comes from
                // versions that read the size before a flushing group was counted;
                // one that counts more announces entries the copy lacks.
                if header.audit_log_size > audit_log_size {
                    return Err(damaged(format!(
                        "its header announces an audit log of {} entries, but the copied \
                         log holds {audit_log_size}",
                        header.audit_log_size
                    )));
                }
                return Ok(VerifiedBackup {
                    header,
                    summary: summary.expect("checked above"),
                    name: membership.name,
                    bytes,
                });
            }
            other => {
                return Err(damaged(format!(
                    "unexpected record {:?} at this place",
                    other as char
                )));
            }
        }
    }
}

/// The membership whose key must have sealed the backup: the backed-up credential,
/// opened with the authority key that the backed-up node.toml pins.
pub(super) fn seal_signer(
    config: Option<String>,
    credential: Option<Vec<u8>>,
) -> Result<Membership, String> {
    let config = config.ok_or("it holds no node.toml")?;
    let config: NodeConfig =
        toml::from_str(&config).map_err(|e| format!("its node.toml is unreadable: {e}"))?;
    let credential = credential.ok_or_else(|| {
        format!(
            "it holds no {}/{}",
            crate::config::IDENTITY_DIR,
            crate::identity::bundle::files::CREDENTIAL
        )
    })?;
    parse_credential(&credential, &config.authority.public_key)
        .map(|(_, membership)| membership)
        .map_err(|e| format!("its credential {e}"))
}

#[cfg(test)]
mod tests {
    use std::fs;

    use crate::identity::SigningKey;
    use crate::storage::{SledStorage, Storage};

    use super::*;
    use crate::backup::BackupFile;
    use crate::backup::creating::{node_files, write_backup};
    use crate::backup::format::{MAGIC, SEAL_RECORD};

    /// A node directory made as `liutong` makes the development one (authority-signed
    /// credential, keys, node.toml): its files, config and signing key.
    fn dev_node(root: &Path) -> (NodeConfig, Vec<BackupFile>, SigningKey) {
        let (config_path, _) = crate::setup::ensure_dev_setup(root).unwrap();
        let config = NodeConfig::load(&config_path).unwrap();
        let key = SigningKey::load(
            &config
                .identity_dir()
                .join(crate::identity::bundle::files::SIGNING_KEY),
        )
        .unwrap();
        let files = node_files(&config).unwrap();
        (config, files, key)
    }

    /// A signed backup whose header announces more audit entries than the copy holds is
    /// refused; a sound one of the same node verifies.
    #[test]
    fn a_header_announcing_entries_the_copy_lacks_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let (config, files, key) = dev_node(root.path());
        let db = SledStorage::temporary().unwrap();
        db.put("audit", b"m/size", &3u64.to_be_bytes()).unwrap();
        let sound = root.path().join("sound.backup");
        let mut header = BackupHeader::describe(&config.node.participant, db.as_ref()).unwrap();
        assert_eq!(header.audit_log_size, 3);
        write_backup(
            File::create(&sound).unwrap(),
            &header,
            &files,
            &db,
            &key,
            || {},
        )
        .unwrap();
        assert_eq!(verify(&sound).unwrap().header.audit_log_size, 3);

        header.audit_log_size = 4;
        let overstated = root.path().join("overstated.backup");
        write_backup(
            File::create(&overstated).unwrap(),
            &header,
            &files,
            &db,
            &key,
            || {},
        )
        .unwrap();
        let err = verify(&overstated).unwrap_err();
        assert!(matches!(err, BackupError::Damaged { .. }), "{err}");
        assert!(
            err.to_string()
                .contains("announces an audit log of 4 entries, but the copied log holds 3"),
            "{err}"
        );
    }

    /// A sound, signed backup of a development node with a few database entries and
    /// a payload: its bytes, and where each record starts (tag, offset, length).
    fn sound_backup(root: &Path) -> (Vec<u8>, Vec<(u8, usize, usize)>) {
        let (config, files, key) = dev_node(root);
        let db = SledStorage::temporary().unwrap();
        db.put("audit", b"m/size", &0u64.to_be_bytes()).unwrap();
        for i in 0..5u8 {
            db.put("catalog", &[b'k', i], &[i; 40]).unwrap();
        }
        let mut writer = db.blobs().writer("p1", false).unwrap();
        writer.write_at(0, b"payload bytes").unwrap();
        writer.sync().unwrap();
        let header = BackupHeader::describe(&config.node.participant, db.as_ref()).unwrap();
        let mut bytes = Vec::new();
        write_backup(&mut bytes, &header, &files, &db, &key, || {}).unwrap();
        let mut records = Vec::new();
        let mut at = MAGIC.len();
        while at < bytes.len() {
            let len = u32::from_be_bytes(bytes[at + 1..at + 5].try_into().unwrap()) as usize;
            records.push((bytes[at], at, len));
            at += 5 + len;
        }
        assert_eq!(records.last().map(|r| r.0), Some(b'S'));
        (bytes, records)
    }

    /// Whatever byte is flipped (a record's type or length, its contents, the first
    /// line, the seal's hash or signature), the file is refused as damaged; cut short
    /// anywhere, as truncated. (Positions are sampled: every record's head and the
    /// seal in full, the contents at a stride.) (A flipped length was reported as truncated: the reader
    /// ran past the end before it reached the seal.)
    #[test]
    fn any_flipped_byte_is_damage_and_any_cut_is_truncation() {
        let root = tempfile::tempdir().unwrap();
        let (sound, records) = sound_backup(root.path());
        let path = root.path().join("checked.backup");
        fs::write(&path, &sound).unwrap();
        let verified = verify(&path).expect("the sound file verifies");
        assert_eq!(verified.summary.payloads, 1);
        assert!(verified.summary.entries >= 6);

        // Every byte of the first line, of each record's type and length, of the
        // seal, and of each record's first and last bytes; every 11th byte besides.
        let mut positions: Vec<usize> = (0..MAGIC.len()).collect();
        for &(_, at, len) in &records {
            positions.extend(at..at + 5 + len.min(8));
            positions.extend((at + 5 + len).saturating_sub(8)..at + 5 + len);
        }
        positions.extend((sound.len() - SEAL_RECORD as usize)..sound.len());
        positions.extend((0..sound.len()).step_by(11));
        positions.sort_unstable();
        positions.dedup();
        for i in positions {
            for bit in [0x01, 0x80] {
                let mut flipped = sound.clone();
                flipped[i] ^= bit;
                fs::write(&path, &flipped).unwrap();
                match verify(&path) {
                    Err(BackupError::Damaged { .. }) => {}
                    other => panic!("byte {i} ^ {bit:#04x} of {}: {other:?}", sound.len()),
                }
            }
        }
        // Every cut near a record's start (the first line included) and in the seal;
        // every 7th besides.
        let mut cuts: Vec<usize> = (1..sound.len()).step_by(7).collect();
        cuts.extend(1..MAGIC.len());
        for &(_, at, _) in &records {
            cuts.extend(at.saturating_sub(6)..at + 6);
        }
        cuts.extend(sound.len() - SEAL_RECORD as usize..sound.len());
        cuts.retain(|c| (1..sound.len()).contains(c));
        cuts.sort_unstable();
        cuts.dedup();
        for cut in cuts {
            fs::write(&path, &sound[..cut]).unwrap();
            match verify(&path) {
                Err(BackupError::Truncated { .. }) => {}
                other => panic!("cut to {cut} of {} bytes: {other:?}", sound.len()),
            }
        }
        fs::write(&path, b"").unwrap();
        assert!(matches!(verify(&path), Err(BackupError::NotABackup(_))));
    }
}
