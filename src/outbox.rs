//! A connection's outbound queue, bounded in bytes.
//!
//! The hub pushes into it without ever waiting: a push that would pass the bound
//! marks the connection as a slow consumer instead, and the session closes it with
//! [`crate::protocol::close::SLOW_CONSUMER`]. One slow reader therefore never delays
//! the fan-out to anyone else, and its loss is counted rather than silent.
//!
//! A plain `VecDeque` behind a mutex rather than a channel: an idle connection's
//! queue then holds no allocation at all (a channel preallocates a block of slots),
//! and the writer takes a whole batch under one lock.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::Notify;

use crate::metrics::Metrics;

struct Shared {
    queue: Mutex<VecDeque<Bytes>>,
    ready: Notify,
    queued: AtomicUsize,
    limit: usize,
    overflowed: AtomicBool,
    overflow: Notify,
}

impl Shared {
    fn queue(&self) -> std::sync::MutexGuard<'_, VecDeque<Bytes>> {
        // Pushes and pops cannot leave the deque inconsistent.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The producer side, held by the hub (one clone per subscribed channel) and the session.
#[derive(Clone)]
pub struct Outbox {
    shared: Arc<Shared>,
}

/// The consumer side, owned by the session's writer.
pub struct OutboxReceiver {
    shared: Arc<Shared>,
}

/// A queue holding at most `limit` bytes of frames.
pub fn outbox(limit: usize) -> (Outbox, OutboxReceiver) {
    let shared = Arc::new(Shared {
        queue: Mutex::new(VecDeque::new()),
        ready: Notify::new(),
        queued: AtomicUsize::new(0),
        limit,
        overflowed: AtomicBool::new(false),
        overflow: Notify::new(),
    });
    (
        Outbox {
            shared: shared.clone(),
        },
        OutboxReceiver { shared },
    )
}

impl Outbox {
    /// Queues a frame. Returns false when it was not queued because the connection
    /// overflowed (now or earlier). The first overflow is counted once per connection.
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
                metrics.slow_consumer();
                s.overflow.notify_one();
            }
            return false;
        }
        let was_empty = {
            let mut q = s.queue();
            q.push_back(frame);
            q.len() == 1
        };
        if was_empty {
            // A stored permit covers a writer that is not waiting yet.
            s.ready.notify_one();
        }
        true
    }
}

impl OutboxReceiver {
    /// Waits for frames and moves up to `max` of them into `batch`.
    pub async fn recv_batch(&mut self, batch: &mut Vec<Bytes>, max: usize) {
        loop {
            {
                let mut q = self.shared.queue();
                if !q.is_empty() {
                    let n = q.len().min(max);
                    batch.extend(q.drain(..n));
                    if q.is_empty() && q.capacity() > 64 {
                        // A burst is over: give its memory back.
                        q.shrink_to(8);
                    }
                    return;
                }
            }
            self.shared.ready.notified().await;
        }
    }

    /// Moves up to `max` frames queued right now into `batch`, without waiting.
    pub fn drain_now(&mut self, batch: &mut Vec<Bytes>, max: usize) {
        let mut q = self.shared.queue();
        let n = q.len().min(max);
        batch.extend(q.drain(..n));
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
