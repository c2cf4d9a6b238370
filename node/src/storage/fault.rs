//! An injected fsync failure, for tests of the fail-closed path on a real node.
//!
//! A node started with `LIUTONG_FAIL_FSYNC_IF=<path>` in its environment makes every
//! storage fsync (the database log, sled's blob files, payload files, their
//! directories) fail with `EIO` while a file exists at `<path>`. A test starts the node,
//! sees writes acknowledged, creates the file, and watches the node refuse writes and
//! report its storage failed. A trigger file rather than a count of fsyncs, because
//! how many fsyncs a node makes before the test's write depends on its background work.
//! Without the variable every fsync runs unchanged (one comparison against a value read
//! once). Only debug builds, which the tests run, read the variable: a release build's
//! fsyncs never fail on purpose.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// The environment variable that names the trigger file.
pub const FAIL_FSYNC_IF: &str = "LIUTONG_FAIL_FSYNC_IF";

/// Asked before every storage fsync, with the path being synced; an error is reported
/// as that fsync's failure, and the fsync is not made.
pub type Fault = Arc<dyn Fn(&Path) -> io::Result<()> + Send + Sync>;

/// The fault the environment asks for, if any.
pub fn from_env() -> Option<Fault> {
    if !cfg!(debug_assertions) {
        return None;
    }
    static TRIGGER: OnceLock<Option<PathBuf>> = OnceLock::new();
    let trigger = TRIGGER
        .get_or_init(|| {
            std::env::var_os(FAIL_FSYNC_IF)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
        .clone()?;
    Some(Arc::new(move |_synced: &Path| {
        if trigger.exists() {
            Err(io::Error::from_raw_os_error(libc::EIO))
        } else {
            Ok(())
        }
    }))
}
