//! The node's one shutdown signal. The runtime holds the [`ShutdownSender`]; every
//! server and background loop holds a [`Shutdown`] and stops when it fires.

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;

/// Fires once, for every holder at the same time.
pub struct ShutdownSender(watch::Sender<bool>);

/// The receiving side of the shutdown signal; cheap to clone.
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<bool>);

/// A new signal, not yet fired.
pub fn channel() -> (ShutdownSender, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (ShutdownSender(tx), Shutdown(rx))
}

impl ShutdownSender {
    /// Fires the signal; every [`Shutdown::fired`] returns.
    pub fn fire(&self) {
        let _ = self.0.send(true);
    }
}

impl Shutdown {
    /// Returns once the signal has fired (at once if it already has). A dropped sender
    /// counts as fired.
    pub async fn fired(&mut self) {
        let _ = self.0.wait_for(|s| *s).await;
    }

    /// Sleeps for `period`; `false` when the signal fired first.
    pub async fn sleep(&mut self, period: Duration) -> bool {
        tokio::select! {
            () = tokio::time::sleep(period) => true,
            () = self.fired() => false,
        }
    }

    /// Runs `work` to its end; `None` when the signal fired first (the work is dropped
    /// where it stands: every step it takes is durable before it goes on).
    pub async fn unless_fired<T>(&mut self, work: impl Future<Output = T>) -> Option<T> {
        tokio::select! {
            out = work => Some(out),
            () = self.fired() => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_holder_sees_the_signal_and_pending_work_is_dropped() {
        let (sender, shutdown) = channel();
        let mut a = shutdown.clone();
        let mut b = shutdown;
        let waiting =
            tokio::spawn(async move { b.unless_fired(std::future::pending::<()>()).await });
        assert!(a.sleep(Duration::from_millis(1)).await, "not fired yet");
        sender.fire();
        assert_eq!(waiting.await.unwrap(), None);
        assert!(!a.sleep(Duration::from_secs(3600)).await);
    }

    #[tokio::test]
    async fn a_dropped_sender_counts_as_fired() {
        let (sender, mut shutdown) = channel();
        drop(sender);
        shutdown.fired().await;
    }
}
