//! A connection's outbound queue, bounded in bytes.
//!
//! The hub pushes into it without ever waiting: a push that would pass the bound
//! marks the connection as a slow consumer instead, and the session closes it with
//! [`crate::protocol::close::SLOW_CONSUMER`]. One slow reader therefore never delays
//! the fan-out to anyone else, and its loss is counted rather than silent.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use bytes::Bytes;
use tokio::sync::{Notify, mpsc};

use crate::metrics::Metrics;

struct Shared {
    queued: AtomicUsize,
    limit: usize,
    overflowed: AtomicBool,
    overflow: Notify,
}

/// The producer side, held by the hub (one clone per subscribed channel) and the session.
#[derive(Clone)]
pub struct Outbox {
    tx: mpsc::UnboundedSender<Bytes>,
    shared: Arc<Shared>,
}

/// The consumer side, owned by the session's writer.
pub struct OutboxReceiver {
    rx: mpsc::UnboundedReceiver<Bytes>,
    shared: Arc<Shared>,
}

/// A queue holding at most `limit` bytes of frames.
pub fn outbox(limit: usize) -> (Outbox, OutboxReceiver) {
    let (tx, rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        queued: AtomicUsize::new(0),
        limit,
        overflowed: AtomicBool::new(false),
        overflow: Notify::new(),
    });
    (
        Outbox {
            tx,
            shared: shared.clone(),
        },
        OutboxReceiver { rx, shared },
    )
}

impl Outbox {
    /// Queues a frame. Returns false when it was not queued: the connection overflowed
    /// (now or earlier) or is gone. The first overflow is counted once per connection.
    pub fn push(&self, frame: Bytes, metrics: &Metrics) -> bool {
        let s = &self.shared;
        if s.overflowed.load(Ordering::Relaxed) {
            return false;
        }
        let len = frame.len();
        let before = s.queued.fetch_add(len, Ordering::AcqRel);
        if before + len > s.limit && before > 0 {
            s.queued.fetch_sub(len, Ordering::AcqRel);
            if !s.overflowed.swap(true, Ordering::AcqRel) {
                metrics.slow_consumer_disconnects.increment(1);
                s.overflow.notify_one();
            }
            return false;
        }
        if self.tx.send(frame).is_err() {
            s.queued.fetch_sub(len, Ordering::AcqRel);
            return false;
        }
        true
    }
}

impl OutboxReceiver {
    /// The next frame, or `None` once every producer is gone.
    pub async fn recv(&mut self) -> Option<Bytes> {
        self.rx.recv().await
    }

    /// A further frame if one is queued right now (for write batching).
    pub fn try_recv(&mut self) -> Option<Bytes> {
        self.rx.try_recv().ok()
    }

    /// Releases the bytes of frames handed to the socket.
    pub fn written(&self, bytes: usize) {
        self.shared.queued.fetch_sub(bytes, Ordering::AcqRel);
    }

    /// A handle that tells when the queue overflowed, usable while the receiver is
    /// borrowed for reading.
    pub fn overflow_signal(&self) -> OverflowSignal {
        OverflowSignal {
            shared: self.shared.clone(),
        }
    }
}

/// Completes [`OverflowSignal::overflowed`] once the queue has overflowed.
pub struct OverflowSignal {
    shared: Arc<Shared>,
}

impl OverflowSignal {
    /// Completes when the queue has overflowed.
    pub async fn overflowed(&self) {
        loop {
            let notified = self.shared.overflow.notified();
            if self.shared.overflowed.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }
}
