//! The checkpoint body (C2SP tlog-checkpoint): origin, tree size and root hash, parsed
//! and formatted as exact inverses (extension lines are refused).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use super::error::NoteError;
use super::key::COSIGNATURE_HEADER;
use crate::audit::merkle::Hash;

/// The body of a C2SP tlog checkpoint: which log, how many entries, which root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's identity, e.g. `liutong.example/91110000600037341L`.
    pub origin: String,
    /// Number of entries in the tree.
    pub size: u64,
    /// Root hash of the tree at `size`.
    pub root: Hash,
}

impl Checkpoint {
    /// Parse a checkpoint body (the note text, final newline included).
    pub fn parse(text: &str) -> Result<Self, NoteError> {
        let body = text.strip_suffix('\n').ok_or(NoteError::BadCheckpoint(
            "the body does not end with a newline",
        ))?;
        let mut lines = body.split('\n');
        let (Some(origin), Some(size), Some(root)) = (lines.next(), lines.next(), lines.next())
        else {
            return Err(NoteError::BadCheckpoint(
                "the body needs three lines: origin, tree size, root hash",
            ));
        };
        if lines.next().is_some() {
            return Err(NoteError::BadCheckpoint(
                "extension lines after the root hash are not accepted by Liutong",
            ));
        }
        check_origin(origin)?;
        let size = parse_size(size)?;
        let root = B64
            .decode(root)
            .map_err(|_| NoteError::BadCheckpoint("the root hash is not standard padded base64"))?;
        let root: Hash = root
            .try_into()
            .map_err(|_| NoteError::BadCheckpoint("the root hash is not 32 bytes"))?;
        Ok(Self {
            origin: origin.to_owned(),
            size,
            root,
        })
    }

    /// The body text: `origin\nsize\nbase64(root)\n`.
    pub fn to_text(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            B64.encode(self.root)
        )
    }
}

pub(super) fn check_origin(origin: &str) -> Result<(), NoteError> {
    if origin.is_empty() {
        return Err(NoteError::BadCheckpoint("the origin line is empty"));
    }
    if origin == COSIGNATURE_HEADER {
        return Err(NoteError::BadCheckpoint(
            "the origin `cosignature/v1` is reserved (it would make a checkpoint look like a cosignature message)",
        ));
    }
    if origin.chars().any(char::is_control) {
        return Err(NoteError::BadCheckpoint(
            "the origin holds a control character",
        ));
    }
    Ok(())
}

/// ASCII decimal, no sign, no leading zeros except `0` itself.
pub(super) fn parse_size(s: &str) -> Result<u64, NoteError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(NoteError::BadCheckpoint(
            "the tree size is not a decimal number",
        ));
    }
    if s.len() > 1 && s.starts_with('0') {
        return Err(NoteError::BadCheckpoint("the tree size has a leading zero"));
    }
    s.parse()
        .map_err(|_| NoteError::BadCheckpoint("the tree size does not fit in 64 bits"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_checkpoints_are_rejected() {
        let root = B64.encode([7u8; 32]);
        for bad in [
            format!("origin\n12\n{root}"),
            format!("\n12\n{root}\n"),
            format!("origin\n012\n{root}\n"),
            format!("origin\n+12\n{root}\n"),
            format!("origin\n\n{root}\n"),
            format!("origin\n18446744073709551616\n{root}\n"),
            "origin\n12\nAAAA\n".to_owned(),
            "origin\n12\nnot base64\n".to_owned(),
            format!("origin\n12\n{root}\nextension\n"),
            "origin\n12\n".to_owned(),
            format!("cosignature/v1\n12\n{root}\n"),
        ] {
            assert!(Checkpoint::parse(&bad).is_err(), "accepted {bad:?}");
        }
        let ok = Checkpoint::parse(&format!("origin\n0\n{root}\n")).unwrap();
        assert_eq!(ok.size, 0);
        assert_eq!(
            Checkpoint::parse(&format!("o\n18446744073709551615\n{root}\n"))
                .unwrap()
                .size,
            u64::MAX
        );
    }
}
