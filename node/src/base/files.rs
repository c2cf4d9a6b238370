//! Files the node and the authority keep beside the database: keys, certificates,
//! configuration, the authority's state. Writes are atomic (temporary file, fsync,
//! rename, fsync of the directory), so a crash leaves the old or the new file, never half.
//! Directories are created durably too: a new directory's entry is fsynced in its
//! parent, or a power cut could take it and every file in it away.

use std::fs::{self, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Why a private file was not accepted.
#[derive(Debug)]
pub enum PrivateFileError {
    Read(io::Error),
    /// The file's permission bits let group or others read it.
    Mode(u32),
}

/// Writes a file readable and writable by the owner only (0600), atomically.
pub fn write_private(path: &Path, contents: &[u8]) -> io::Result<()> {
    write_atomic(path, contents, 0o600)
}

/// Writes a file readable by everyone (0644), atomically.
pub fn write_public(path: &Path, contents: &[u8]) -> io::Result<()> {
    write_atomic(path, contents, 0o644)
}

fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let tmp = dir.join(format!(".{}.tmp", name.to_string_lossy()));
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        // `mode` applies only when the file is created; an old temporary may remain.
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.write_all(contents)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    sync_dir(dir)
}

/// Creates a directory (and its parents) that only the owner may enter (0700), and
/// makes every directory it created durable (an fsync of each one's parent).
pub fn create_private_dir(path: &Path) -> io::Result<()> {
    let mut missing = Vec::new();
    let mut at = Some(path).filter(|p| !p.as_os_str().is_empty());
    while let Some(dir) = at {
        if dir.is_dir() {
            break;
        }
        missing.push(dir);
        at = dir.parent().filter(|p| !p.as_os_str().is_empty());
    }
    fs::create_dir_all(path)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o700))?;
    for dir in missing {
        sync_dir(
            dir.parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new(".")),
        )?;
    }
    Ok(())
}

/// Renames `from` to `to` and makes the rename durable (an fsync of the directories
/// involved), so what the new name stands for is not undone by a power cut.
pub fn rename(from: &Path, to: &Path) -> io::Result<()> {
    fs::rename(from, to)?;
    let dir_of = |p: &Path| {
        p.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_owned()
    };
    let (from_dir, to_dir) = (dir_of(from), dir_of(to));
    sync_dir(&to_dir)?;
    if from_dir != to_dir {
        sync_dir(&from_dir)?;
    }
    Ok(())
}

/// Makes the names in directory `dir` durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// Makes every file and directory this process creates from now on owner-only (umask
/// 077). sled and the payload store create files and directories themselves; only the
/// umask reaches all of them.
pub fn owner_only_from_now_on() {
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
}

/// Removes every group and other permission from `dir` and everything under it (symbolic
/// links are not followed), so directories end up 0700 and files 0600. Returns the paths
/// it changed.
pub fn make_owner_only(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut changed = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(path) = pending.pop() {
        let meta = fs::symlink_metadata(&path)?;
        if meta.file_type().is_symlink() {
            continue;
        }
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode & !0o077))?;
            changed.push(path.clone());
        }
        if meta.is_dir() {
            for entry in fs::read_dir(&path)? {
                pending.push(entry?.path());
            }
        }
    }
    Ok(changed)
}

/// Checks that a file exists and that neither group nor others can read or write it.
pub fn check_private(path: &Path) -> Result<(), PrivateFileError> {
    let meta = fs::metadata(path).map_err(PrivateFileError::Read)?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(PrivateFileError::Mode(mode));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_only_tree_removes_group_and_other_bits() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("db/payloads");
        fs::create_dir_all(&sub).unwrap();
        fs::write(sub.join("v1"), b"x").unwrap();
        fs::set_permissions(dir.path().join("db"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(&sub, fs::Permissions::from_mode(0o750)).unwrap();
        fs::set_permissions(sub.join("v1"), fs::Permissions::from_mode(0o644)).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", dir.path().join("link")).unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).unwrap();

        let mut changed = make_owner_only(dir.path()).unwrap();
        changed.sort();
        assert_eq!(
            changed,
            vec![dir.path().join("db"), sub.clone(), sub.join("v1")]
        );
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.path().join("db")), 0o700);
        assert_eq!(mode(&sub), 0o700);
        assert_eq!(mode(&sub.join("v1")), 0o600);
        assert!(make_owner_only(dir.path()).unwrap().is_empty());
    }

    #[test]
    fn atomic_private_write_replaces_and_sets_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("secret");
        write_private(&p, b"one").unwrap();
        write_private(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert!(check_private(&p).is_ok());
        fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).unwrap();
        assert!(matches!(
            check_private(&p),
            Err(PrivateFileError::Mode(0o640))
        ));
    }
}
