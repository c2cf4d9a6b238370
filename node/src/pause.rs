//! Named pause points, for crash tests.
//!
//! A node started with `LIUTONG_PAUSE_AT=<name>` in its environment stops at the point
//! called `<name>` the first time it gets there: it prints `liutong: paused at <name>`
//! on standard error and the task that reached the point waits forever, so a test can
//! `kill -9` the process at exactly that step and check what a restart recovers. Without
//! the variable every point is a no-op (one comparison against a value read once).
//!
//! Only debug builds, which the tests run, read the variable: a release build never
//! pauses, whatever its environment says.
//!
//! Points are named `<concern>.<side>.<step>`, for example
//! `negotiation.consumer.verified`; each is documented where it is placed.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

/// The environment variable that names the point to pause at.
pub const PAUSE_AT: &str = "LIUTONG_PAUSE_AT";

fn wanted() -> Option<&'static str> {
    if !cfg!(debug_assertions) {
        return None;
    }
    static WANTED: OnceLock<Option<String>> = OnceLock::new();
    WANTED
        .get_or_init(|| std::env::var(PAUSE_AT).ok().filter(|v| !v.is_empty()))
        .as_deref()
}

/// Whether this call is the one that pauses: the point is the wanted one and no task
/// has paused there before.
fn reached(name: &str) -> bool {
    static PAUSED: AtomicBool = AtomicBool::new(false);
    wanted() == Some(name) && !PAUSED.swap(true, Ordering::SeqCst)
}

/// Pauses the calling task forever at point `name` if the environment asks for it.
pub async fn at(name: &str) {
    if reached(name) {
        eprintln!("liutong: paused at {name}");
        std::future::pending::<()>().await;
    }
}

/// [`at`] for blocking code: the calling thread sleeps forever.
pub fn at_blocking(name: &str) {
    if reached(name) {
        eprintln!("liutong: paused at {name}");
        loop {
            std::thread::park();
        }
    }
}
