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
//!
//! One [`Notify`] wakes the writer for everything it must react to: frames, an
//! overflow, and (through [`Outbox::wake`], called by the session's closer) the
//! end of the connection. A writer waiting on one thing instead of three registers
//! one waiter per wakeup, which at low rates (one frame per wakeup) is a
//! measurable share of the cost of a delivery.

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
                s.ready.notify_one();
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

impl Outbox {
    /// Wakes the writer without a frame (the connection is to end: it looks why).
    pub fn wake(&self) {
        self.shared.ready.notify_one();
    }
}

impl OutboxReceiver {
    /// Moves up to `max` queued frames into `batch`, waiting for one wakeup first
    /// when there are none: `batch` may then stay empty (the wakeup was an overflow,
    /// a close, or a frame already taken by [`OutboxReceiver::drain_now`]), and the
    /// caller looks again.
    pub async fn recv_batch(&mut self, batch: &mut Vec<Bytes>, max: usize) {
        if self.take(batch, max) || self.overflowed() {
            return;
        }
        self.woken().await;
        self.take(batch, max);
    }

    fn take(&mut self, batch: &mut Vec<Bytes>, max: usize) -> bool {
        let mut q = self.shared.queue();
        if q.is_empty() {
            return false;
        }
        let n = q.len().min(max);
        batch.extend(q.drain(..n));
        if q.is_empty() && q.capacity() > 64 {
            // A burst is over: give its memory back.
            q.shrink_to(8);
        }
        true
    }

    /// Completes on the next wakeup: a frame queued into an empty queue, an
    /// overflow, or [`Outbox::wake`].
    pub async fn woken(&self) {
        self.shared.ready.notified().await;
    }

    /// Whether a push found the queue over its bound (the connection is a slow
    /// consumer).
    pub fn overflowed(&self) -> bool {
        self.shared.overflowed.load(Ordering::Acquire)
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_wakeup_covers_frames_an_overflow_and_a_close() {
        let metrics = Metrics::new();
        let (tx, mut rx) = outbox(10);
        let mut batch = Vec::new();
        // A close (no frame) wakes a waiting writer with an empty batch.
        tx.wake();
        rx.recv_batch(&mut batch, 64).await;
        assert!(batch.is_empty());
        // Frames come in order.
        assert!(tx.push(Bytes::from_static(b"abcd"), &metrics));
        assert!(tx.push(Bytes::from_static(b"efgh"), &metrics));
        rx.recv_batch(&mut batch, 64).await;
        assert_eq!(
            batch,
            vec![Bytes::from_static(b"abcd"), Bytes::from_static(b"efgh")]
        );
        // Past the bound: refused, flagged, and the writer is woken.
        assert!(!tx.push(Bytes::from_static(b"ijkl"), &metrics));
        assert!(rx.overflowed());
        batch.clear();
        rx.recv_batch(&mut batch, 64).await;
        assert!(batch.is_empty());
    }
}
