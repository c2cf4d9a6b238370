//! The one runner of the node's background work. Every loop (trust-list refresh,
//! recovery, usage duties, checkpoints, the storage watch) is spawned here with the
//! node's [`Shutdown`] and ends by itself when it fires; [`Workers::join`] waits for
//! all of them.

use std::future::Future;

use tokio::task::JoinHandle;

use crate::base::shutdown::Shutdown;

/// The node's background tasks, by name.
pub struct Workers {
    shutdown: Shutdown,
    tasks: Vec<(&'static str, JoinHandle<()>)>,
}

impl Workers {
    pub fn new(shutdown: Shutdown) -> Self {
        Self {
            shutdown,
            tasks: Vec::new(),
        }
    }

    /// Runs `work` in the background; it is handed the shutdown signal and must return
    /// once the signal fires.
    pub fn spawn<F>(&mut self, name: &'static str, work: impl FnOnce(Shutdown) -> F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let task = tokio::spawn(work(self.shutdown.clone()));
        self.tasks.push((name, task));
    }

    /// Waits for every worker to end (after the shutdown signal fired). A worker that
    /// panicked is reported by name.
    pub async fn join(self) {
        for (name, task) in self.tasks {
            if let Err(e) = task.await
                && e.is_panic()
            {
                tracing::error!(worker = name, "a background task panicked: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::shutdown;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn every_worker_ends_when_the_signal_fires() {
        let (sender, signal) = shutdown::channel();
        let mut workers = Workers::new(signal);
        let ended = Arc::new(AtomicU32::new(0));
        for name in ["a", "b", "c"] {
            let ended = ended.clone();
            workers.spawn(name, |mut shutdown| async move {
                while shutdown.sleep(Duration::from_millis(5)).await {}
                ended.fetch_add(1, Ordering::SeqCst);
            });
        }
        sender.fire();
        workers.join().await;
        assert_eq!(ended.load(Ordering::SeqCst), 3);
    }
}
