//! This node's local subscribers, per channel.
//!
//! The hub is the only place that knows which local connections want a channel. It
//! never talks to the broker itself: [`crate::node::Node`] consults it to decide when
//! the node's single broker subscription for a channel must start or stop (first
//! local subscriber in, last one out), and the broker hands every publication to
//! [`Hub::deliver`], which serializes it once and queues the same bytes to every
//! local subscriber without waiting on any of them.
//!
//! On history channels the hub also keeps the sequence gapless and duplicate-free
//! for its subscribers: it remembers the last offset it delivered, drops what it
//! already delivered, and when an offset jumps it holds newer publications back and
//! asks for the missing range (a [`GapRequest`]) before delivering anything newer.
//! A subscriber resuming with `since` is held in a buffer while its replay is read,
//! then released with the replay and the buffered live publications in order.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::broker::Publication;
use crate::channel::Channel;
use crate::metrics::Metrics;
use crate::outbox::Outbox;
use crate::protocol::message_frame;

/// Identifies one connection on this node.
pub type SessionId = u64;

/// Serializes broker subscribe/unsubscribe calls for one channel; the flag says
/// whether the broker subscription is live.
pub type Gate = Arc<tokio::sync::Mutex<bool>>;

/// Frames held for a subscriber while its replay is read: (offset, epoch, frame).
type Held = Arc<Mutex<Vec<(u64, Option<Arc<str>>, Bytes)>>>;

struct Subscriber {
    session: SessionId,
    outbox: Outbox,
    recovering: Option<Held>,
    /// History channels: offsets up to this one, in this epoch, reached the
    /// subscriber through its `ok` position or replay; a later delivery of one of
    /// them is a repeat. Another epoch starts from scratch.
    floor: u64,
    floor_epoch: Option<Arc<str>>,
}

/// Delivery state of a history channel on this node.
#[derive(Default)]
struct Sequence {
    last: Option<u64>,
    epoch: Option<Arc<str>>,
    filling: bool,
    held: Vec<Publication>,
}

/// Ids of the latest plain publications of a channel, to drop a repeat. Allocated
/// on the first publication that carries an id (never on the embedded broker).
#[derive(Default)]
struct Recent {
    ids: Vec<u64>,
    next: usize,
}

/// How many recent publication ids a channel remembers.
const RECENT: usize = 32;

impl Recent {
    /// Records `uid`; false if it was seen among the latest ones.
    fn first_time(&mut self, uid: u64) -> bool {
        if self.ids.contains(&uid) {
            return false;
        }
        if self.ids.len() < RECENT {
            self.ids.push(uid);
        } else {
            self.ids[self.next] = uid;
            self.next = (self.next + 1) % RECENT;
        }
        true
    }
}

struct Entry {
    subscribers: Vec<Subscriber>,
    gate: Gate,
    sequence: Option<Mutex<Sequence>>,
    recent: Mutex<Recent>,
}

/// Ask the node to read `channel`'s history after `after` and hand it to [`Hub::fill`].
#[derive(Debug, Clone)]
pub struct GapRequest {
    pub channel: Channel,
    pub after: u64,
}

#[derive(Default)]
pub struct Hub {
    channels: RwLock<HashMap<Channel, Entry>>,
    metrics: Metrics,
    gaps: OnceLock<mpsc::UnboundedSender<GapRequest>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Critical sections are plain pushes and assignments; a poisoned lock still
    // holds consistent data.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Hub {
    pub fn new(metrics: Metrics) -> Hub {
        Hub {
            channels: RwLock::default(),
            metrics,
            gaps: OnceLock::new(),
        }
    }

    /// Where gap-fill requests go (set once by the node).
    pub fn set_gap_sink(&self, tx: mpsc::UnboundedSender<GapRequest>) {
        let _ = self.gaps.set(tx);
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<Channel, Entry>> {
        // Every mutation is a single push/remove, so a poisoned lock is still usable.
        self.channels.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<Channel, Entry>> {
        self.channels.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a local subscriber and returns the channel's gate, under which the caller
    /// makes sure the broker subscription is live. `history`: the channel keeps
    /// offsets. `recovering`: hold its deliveries until [`Hub::release`].
    pub fn add(
        &self,
        channel: &Channel,
        session: SessionId,
        outbox: Outbox,
        history: bool,
        recovering: bool,
    ) -> Gate {
        let mut map = self.write();
        let entry = map.entry(channel.clone()).or_insert_with(|| {
            self.metrics.channels.increment(1.0);
            Entry {
                subscribers: Vec::new(),
                gate: Gate::default(),
                sequence: history.then(Mutex::default),
                recent: Mutex::default(),
            }
        });
        if !entry.subscribers.iter().any(|s| s.session == session) {
            entry.subscribers.push(Subscriber {
                session,
                outbox,
                recovering: recovering.then(Held::default),
                floor: 0,
                floor_epoch: None,
            });
            self.metrics.subscriptions.increment(1.0);
        }
        entry.gate.clone()
    }

    /// Ends a subscriber's recovery: queues `frames` (its `ok` and replay), then the
    /// publications that arrived meanwhile with an offset above `after`, in order.
    pub fn release(
        &self,
        channel: &Channel,
        session: SessionId,
        frames: Vec<Bytes>,
        after: u64,
        epoch: &str,
    ) {
        let mut map = self.write();
        let Some(entry) = map.get_mut(channel) else {
            return;
        };
        if let Some(seq) = &entry.sequence {
            let mut seq = lock(seq);
            if seq.last.is_none() {
                seq.last = Some(after);
            }
        }
        let Some(sub) = entry.subscribers.iter_mut().find(|s| s.session == session) else {
            return;
        };
        let held = sub.recovering.take();
        sub.floor = after;
        sub.floor_epoch = Some(Arc::from(epoch));
        for frame in frames {
            sub.outbox.push(frame, &self.metrics);
        }
        if let Some(held) = held {
            for (offset, epoch_of, frame) in lock(&held).drain(..) {
                let same_epoch = epoch_of.as_deref().is_none_or(|e| e == epoch);
                if offset > after || !same_epoch {
                    sub.outbox.push(frame, &self.metrics);
                }
            }
        }
    }

    /// Removes a local subscriber. Returns the gate when the channel has no local
    /// subscriber left, so that the caller can end the broker subscription.
    pub fn remove(&self, channel: &Channel, session: SessionId) -> Option<Gate> {
        let mut map = self.write();
        let entry = map.get_mut(channel)?;
        let before = entry.subscribers.len();
        entry.subscribers.retain(|s| s.session != session);
        if entry.subscribers.len() < before {
            self.metrics.subscriptions.decrement(1.0);
        }
        entry.subscribers.is_empty().then(|| entry.gate.clone())
    }

    /// Whether anyone local still wants the channel (checked under the gate).
    pub fn is_wanted(&self, channel: &Channel) -> bool {
        self.read()
            .get(channel)
            .is_some_and(|e| !e.subscribers.is_empty())
    }

    /// Drops the channel's entry if it is still empty and still guarded by `gate`
    /// (a newer entry with its own gate may have replaced it).
    pub fn forget_if_empty(&self, channel: &Channel, gate: &Gate) {
        let mut map = self.write();
        if let Some(entry) = map.get(channel)
            && entry.subscribers.is_empty()
            && Arc::ptr_eq(&entry.gate, gate)
        {
            map.remove(channel);
            self.metrics.channels.decrement(1.0);
        }
    }

    /// Fans a publication out to every local subscriber of its channel. Never waits:
    /// a subscriber whose queue is full is marked slow and skipped (and disconnected).
    pub fn deliver(&self, publication: &Publication) {
        let map = self.read();
        let Some(entry) = map.get(&publication.channel) else {
            // Arrives after the last local subscriber left; normal, but counted.
            self.metrics.undeliverable.increment(1);
            return;
        };
        let (Some(seq), Some(offset)) = (&entry.sequence, publication.offset) else {
            if publication.uid != 0 && !lock(&entry.recent).first_time(publication.uid) {
                self.metrics.duplicates_dropped.increment(1);
                return;
            }
            self.fan_out(entry, publication);
            return;
        };
        let mut seq = lock(seq);
        if seq.epoch.is_some() && seq.epoch != publication.epoch {
            // The history was reset: earlier offsets mean nothing any more.
            tracing::info!(channel = %publication.channel, "history epoch changed");
            *seq = Sequence::default();
        }
        seq.epoch = publication.epoch.clone();
        if seq.filling {
            seq.held.push(publication.clone());
            return;
        }
        match seq.last {
            Some(last) if offset <= last => {
                self.metrics.history_duplicates_dropped.increment(1);
                return;
            }
            Some(last) if offset > last + 1 => {
                seq.filling = true;
                seq.held.push(publication.clone());
                self.request_fill(&publication.channel, last);
                return;
            }
            _ => {}
        }
        seq.last = Some(offset);
        self.fan_out(entry, publication);
    }

    /// After a resubscribe: publications may have been missed; read what the
    /// history has after the last offset delivered here.
    pub fn check_gap(&self, channel: &Channel) {
        let map = self.read();
        let Some(seq) = map.get(channel).and_then(|e| e.sequence.as_ref()) else {
            return;
        };
        let mut seq = lock(seq);
        if let (Some(last), false) = (seq.last, seq.filling) {
            seq.filling = true;
            self.request_fill(channel, last);
        }
    }

    fn request_fill(&self, channel: &Channel, after: u64) {
        self.metrics.history_gap_fills.increment(1);
        if let Some(tx) = self.gaps.get() {
            let _ = tx.send(GapRequest {
                channel: channel.clone(),
                after,
            });
        }
    }

    /// Delivers a gap's publications (read from history), then what was held back,
    /// in offset order. Offsets the history no longer has are counted as lost.
    pub fn fill(&self, channel: &Channel, mut publications: Vec<Publication>) {
        let map = self.read();
        let Some(entry) = map.get(channel) else {
            return;
        };
        let Some(seq) = &entry.sequence else { return };
        let mut seq = lock(seq);
        let held = std::mem::take(&mut seq.held);
        publications.retain(|p| seq.epoch.is_none() || p.epoch == seq.epoch);
        publications.extend(held);
        publications.sort_by_key(|p| p.offset.unwrap_or(0));
        for p in &publications {
            let offset = p.offset.unwrap_or(0);
            if let Some(last) = seq.last {
                if offset <= last {
                    continue;
                }
                if offset > last + 1 {
                    self.metrics.history_lost.increment(offset - last - 1);
                }
            }
            seq.last = Some(offset);
            self.fan_out(entry, p);
        }
        seq.filling = false;
    }

    fn fan_out(&self, entry: &Entry, publication: &Publication) {
        let frame = message_frame(publication);
        let mut queued = 0usize;
        let offset = publication.offset.unwrap_or(0);
        for sub in &entry.subscribers {
            if offset != 0 && offset <= sub.floor && sub.floor_epoch == publication.epoch {
                continue;
            }
            match &sub.recovering {
                Some(held) => lock(held).push((offset, publication.epoch.clone(), frame.clone())),
                None => {
                    if sub.outbox.push(frame.clone(), &self.metrics) {
                        queued += 1;
                    }
                }
            }
        }
        self.metrics.messages_out.increment(queued as u64);
        self.metrics
            .bytes_out
            .increment((queued * frame.len()) as u64);
    }
}
