//! What a connection's tasks share about its end and its liveness.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::watch;
use tokio::time::Instant;

use crate::codes::CloseCode;

/// Why a connection ends. `code: None` means the peer is gone (or closed first), so
/// no close frame of ours is owed beyond the protocol's echo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseReason {
    pub code: Option<CloseCode>,
    /// For logs when the peer is gone.
    pub why: &'static str,
}

/// First writer wins: the first recorded reason is the one sent.
#[derive(Clone)]
pub struct Closer {
    tx: Arc<watch::Sender<Option<CloseReason>>>,
}

impl Closer {
    pub fn new() -> (Closer, watch::Receiver<Option<CloseReason>>) {
        let (tx, rx) = watch::channel(None);
        (Closer { tx: Arc::new(tx) }, rx)
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
        self.tx.send_if_modified(|cur| {
            if cur.is_some() {
                return false;
            }
            *cur = Some(reason);
            true
        });
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
