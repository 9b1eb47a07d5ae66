//! What a connection's tasks share about its end and its liveness.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::codes::CloseCode;
use crate::outbox::Outbox;

/// Why a connection ends. `code: None` means the peer is gone (or closed first), so
/// no close frame of ours is owed beyond the protocol's echo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseReason {
    pub code: Option<CloseCode>,
    /// For logs when the peer is gone.
    pub why: &'static str,
}

/// First writer wins: the first recorded reason is the one sent. Also carries the
/// connection's [`Liveness`], so the two live in one allocation: every idle
/// connection keeps them for its whole life (a `watch` channel here was 360 bytes).
#[derive(Clone)]
pub struct Closer {
    shared: Arc<Shared>,
}

struct Shared {
    reason: OnceLock<CloseReason>,
    changed: Notify,
    liveness: Liveness,
    /// The writer waits on its outbox alone, so a close wakes it there.
    writer: Outbox,
}

impl Closer {
    /// A closer for the connection whose writer drains `writer`.
    pub fn new(writer: Outbox) -> Closer {
        Closer {
            shared: Arc::new(Shared {
                reason: OnceLock::new(),
                changed: Notify::new(),
                liveness: Liveness::new(),
                writer,
            }),
        }
    }

    /// Closes with `code` (its close frame is sent).
    pub fn close(&self, code: CloseCode) {
        self.record(CloseReason {
            code: Some(code),
            why: code.reason(),
        });
    }

    /// The peer is gone or closed first: nothing to send.
    pub fn gone(&self, why: &'static str) {
        self.record(CloseReason { code: None, why });
    }

    fn record(&self, reason: CloseReason) {
        if self.shared.reason.set(reason).is_ok() {
            self.shared.changed.notify_waiters();
            self.shared.writer.wake();
        }
    }

    /// Why the connection ends, once someone decided it does.
    pub fn reason(&self) -> Option<CloseReason> {
        self.shared.reason.get().copied()
    }

    /// Waits until the connection is to end (at once if it already is).
    pub async fn closed(&self) -> CloseReason {
        loop {
            // Registered before the check, so a close between the two still wakes it.
            let notified = self.shared.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(reason) = self.reason() {
                return reason;
            }
            notified.await;
        }
    }

    /// When the client last showed it is alive.
    pub fn liveness(&self) -> &Liveness {
        &self.shared.liveness
    }
}

/// Milliseconds since the session started at which the client last sent anything.
pub struct Liveness {
    start: Instant,
    last_seen_ms: AtomicU64,
}

impl Liveness {
    pub fn new() -> Liveness {
        Liveness {
            start: Instant::now(),
            last_seen_ms: AtomicU64::new(0),
        }
    }

    pub fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_seen_ms.store(ms, Ordering::Relaxed);
    }

    pub fn seen_since(&self, at: Instant) -> bool {
        let at_ms = at.saturating_duration_since(self.start).as_millis() as u64;
        self.last_seen_ms.load(Ordering::Relaxed) >= at_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_reason_wins_and_wakes_every_waiter() {
        let (outbox, _rx) = crate::outbox::outbox(1024);
        let closer = Closer::new(outbox);
        let waiter = {
            let c = closer.clone();
            tokio::spawn(async move { c.closed().await })
        };
        tokio::task::yield_now().await;
        assert_eq!(closer.reason(), None);
        closer.close(CloseCode::SlowConsumer);
        closer.gone("later");
        let reason = waiter.await.expect("waiter");
        assert_eq!(reason.code, Some(CloseCode::SlowConsumer));
        // A waiter that comes after the close returns at once.
        assert_eq!(closer.closed().await, reason);
    }
}
