//! The foundations every other part of the node stands on, importing nothing of the
//! node: the one clock, random identifiers, bounded values from outside the node and the
//! escaping of their text, private and atomic files, date formatting, the software
//! version, the one shutdown signal and the boxed future used by object-safe async
//! traits. (The pause points of crash tests, [`crate::pause`], belong to this layer too.)

use std::future::Future;
use std::pin::Pin;

pub mod bounded;
pub mod clock;
pub mod error;
pub mod files;
pub mod format;
pub mod random;
pub mod shutdown;

/// The software version reported by `Describe`, `Status`, telemetry and backups.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// A boxed future, so traits with async methods stay usable as `Arc<dyn Trait>`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
