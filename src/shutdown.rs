//! The shutdown signal (as in tokio's mini-redis): one sender in the server, a
//! [`Shutdown`] in every long-lived task, so that no task polls an ad-hoc flag.

use tokio::sync::watch;

/// Listens for the server's shutdown signal. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Shutdown {
    rx: watch::Receiver<bool>,
}

/// Fires the signal; dropping it fires it too, so a dying server never leaves tasks behind.
#[derive(Debug)]
pub struct ShutdownTrigger {
    tx: watch::Sender<bool>,
}

/// A new signal pair.
pub fn channel() -> (ShutdownTrigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (ShutdownTrigger { tx }, Shutdown { rx })
}

impl ShutdownTrigger {
    pub fn trigger(&self) {
        let _ = self.tx.send(true);
    }
}

impl Drop for ShutdownTrigger {
    fn drop(&mut self) {
        let _ = self.tx.send(true);
    }
}

impl Shutdown {
    pub fn is_shutdown(&self) -> bool {
        *self.rx.borrow()
    }

    /// Completes once shutdown has been signalled (at once if it already was).
    pub async fn recv(&mut self) {
        // An error means the trigger is gone, which also means shut down.
        let _ = self.rx.wait_for(|down| *down).await;
    }
}
