//! This instance's local fan-out table: which local connections want each channel.
//!
//! The hub never talks to the broker. The broker's publications reach
//! [`Hub::deliver`] (through the node's event handler), which serializes each one
//! once and queues the same bytes to every local subscriber without waiting on any
//! of them. Whether the instance holds a broker subscription for a channel is the
//! node's business (its per-channel gate); the hub only says who is here.
//!
//! On history channels the hub keeps the sequence gapless and duplicate-free for its
//! subscribers ([`sequence`]): when an offset jumps it holds newer publications back
//! and returns a [`GapRequest`] for the node to read the missing range, then
//! [`Hub::fill`] delivers in order. A subscriber resuming with `since` is held in a
//! buffer while its replay is read, then released with the replay and the buffered
//! live publications in order.
//!
//! The table is sharded (64 locks, as in centrifuge's hub): a subscribe or
//! unsubscribe locks one shard for writing while deliveries to channels of the
//! other shards go on.

mod recent;
mod sequence;
mod subscribers;

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;

use crate::channel::Channel;
use crate::metrics::Metrics;
use crate::outbox::Outbox;
use crate::protocol::message_frame;
use crate::publication::Publication;
use recent::Recent;
use sequence::{Sequence, Step};
use subscribers::Subscribers;

/// Identifies one connection on this instance.
pub type SessionId = u64;

/// Number of independently locked parts of the table.
const SHARDS: usize = 64;

/// Frames held for a subscriber while its replay is read: (offset, epoch, frame).
type Held = Arc<Mutex<Vec<(u64, Option<Arc<str>>, Bytes)>>>;

/// One local connection subscribed to a channel.
struct LocalSubscriber {
    outbox: Outbox,
    recovering: Option<Held>,
    /// History channels: offsets up to this one, in this epoch, reached the
    /// subscriber through its `ok` position or replay; a later delivery of one of
    /// them is a repeat. Another epoch starts from scratch.
    floor: u64,
    floor_epoch: Option<Arc<str>>,
}

/// A channel with local subscribers.
struct ChannelEntry {
    subscribers: Subscribers<LocalSubscriber>,
    /// Boxed: most channels keep no history, and a table of thousands of
    /// personal channels should not carry its space inline.
    sequence: Option<Box<Mutex<Sequence>>>,
    recent: Mutex<Recent>,
}

/// Ask the node to read `channel`'s history after `after` and hand it to [`Hub::fill`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GapRequest {
    pub channel: Channel,
    pub after: u64,
}

type Shard = RwLock<HashMap<Channel, ChannelEntry>>;

pub struct Hub {
    shards: Box<[Shard]>,
    hasher: RandomState,
    metrics: Metrics,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Critical sections are plain pushes and assignments; a poisoned lock still
    // holds consistent data.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Hub {
    pub fn new(metrics: Metrics) -> Hub {
        Hub {
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
            hasher: RandomState::new(),
            metrics,
        }
    }

    fn shard(&self, channel: &Channel) -> &Shard {
        &self.shards[self.hasher.hash_one(channel) as usize % SHARDS]
    }

    fn read(
        &self,
        channel: &Channel,
    ) -> std::sync::RwLockReadGuard<'_, HashMap<Channel, ChannelEntry>> {
        // Every mutation is a single insert/remove, so a poisoned lock is still usable.
        self.shard(channel)
            .read()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn write(
        &self,
        channel: &Channel,
    ) -> std::sync::RwLockWriteGuard<'_, HashMap<Channel, ChannelEntry>> {
        self.shard(channel)
            .write()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a local subscriber. `history`: the channel keeps offsets.
    /// `recovering`: hold its deliveries until [`Hub::release`].
    pub fn add(
        &self,
        channel: &Channel,
        session: SessionId,
        outbox: Outbox,
        history: bool,
        recovering: bool,
    ) {
        let mut map = self.write(channel);
        let entry = map.entry(channel.clone()).or_insert_with(|| {
            self.metrics.channel(1);
            ChannelEntry {
                subscribers: Subscribers::default(),
                sequence: history.then(Box::default),
                recent: Mutex::default(),
            }
        });
        let added = entry.subscribers.add(
            session,
            LocalSubscriber {
                outbox,
                recovering: recovering.then(Held::default),
                floor: 0,
                floor_epoch: None,
            },
        );
        if added {
            self.metrics.subscription(1);
        }
    }

    /// Ends a subscriber's recovery: queues `frames` (its `ok` and replay), then the
    /// publications that arrived meanwhile with an offset above `after`, in order.
    /// The replay (up to 10,000 frames) is queued outside the table's lock.
    pub fn release(
        &self,
        channel: &Channel,
        session: SessionId,
        frames: Vec<Bytes>,
        after: u64,
        epoch: &str,
    ) {
        let outbox = {
            let mut map = self.write(channel);
            let Some(entry) = map.get_mut(channel) else {
                return;
            };
            if let Some(seq) = &entry.sequence {
                lock(seq).start_at(after);
            }
            let Some(sub) = entry.subscribers.get_mut(session) else {
                return;
            };
            // From here fan-out skips offsets up to `after` for this subscriber,
            // while the rest keeps going into its buffer.
            sub.floor = after;
            sub.floor_epoch = Some(Arc::from(epoch));
            sub.outbox.clone()
        };
        for frame in frames {
            outbox.push(frame, &self.metrics);
        }
        let mut map = self.write(channel);
        let Some(sub) = map
            .get_mut(channel)
            .and_then(|e| e.subscribers.get_mut(session))
        else {
            return;
        };
        if let Some(held) = sub.recovering.take() {
            for (offset, epoch_of, frame) in lock(&held).drain(..) {
                // Join/leave frames carry no offset: they always pass.
                let same_epoch = epoch_of.as_deref().is_none_or(|e| e == epoch);
                if offset == 0 || offset > after || !same_epoch {
                    sub.outbox.push(frame, &self.metrics);
                }
            }
        }
    }

    /// Removes a local subscriber. Returns true when the channel has no local
    /// subscriber left (its entry is gone), so that the caller can end the broker
    /// subscription.
    pub fn remove(&self, channel: &Channel, session: SessionId) -> bool {
        let mut map = self.write(channel);
        let Some(entry) = map.get_mut(channel) else {
            return false;
        };
        if entry.subscribers.remove(session).is_none() {
            return false;
        }
        self.metrics.subscription(-1);
        if !entry.subscribers.is_empty() {
            return false;
        }
        map.remove(channel);
        self.metrics.channel(-1);
        true
    }

    /// Local subscribers of the channel.
    pub fn count(&self, channel: &Channel) -> usize {
        self.read(channel)
            .get(channel)
            .map_or(0, |e| e.subscribers.len())
    }

    /// Whether anyone local wants the channel.
    pub fn is_wanted(&self, channel: &Channel) -> bool {
        self.read(channel).contains_key(channel)
    }

    /// Fans a publication out to every local subscriber of its channel. Never waits:
    /// a subscriber whose queue is full is marked slow and skipped (and disconnected).
    /// Returns the history read needed when an offset jumped.
    pub fn deliver(&self, publication: &Publication) -> Option<GapRequest> {
        let map = self.read(&publication.channel);
        let Some(entry) = map.get(&publication.channel) else {
            // Arrives after the last local subscriber left; normal, but counted.
            self.metrics.undeliverable.increment(1);
            return None;
        };
        let (Some(seq), Some(offset)) = (&entry.sequence, publication.offset) else {
            if publication.uid != 0 && !lock(&entry.recent).first_time(publication.uid) {
                self.metrics.duplicates_dropped.increment(1);
                return None;
            }
            self.fan_out(entry, publication);
            return None;
        };
        match lock(seq).arrive(publication, offset) {
            Step::Deliver => self.fan_out(entry, publication),
            Step::Repeat => self.metrics.history_duplicates_dropped.increment(1),
            Step::Held => {}
            Step::Gap { after } => return Some(self.gap(&publication.channel, after)),
        }
        None
    }

    /// After a resubscribe: publications may have been missed; returns the read of
    /// what the history has after the last offset delivered here.
    pub fn check_gap(&self, channel: &Channel) -> Option<GapRequest> {
        let map = self.read(channel);
        let seq = map.get(channel)?.sequence.as_ref()?;
        let after = lock(seq).resubscribed()?;
        Some(self.gap(channel, after))
    }

    fn gap(&self, channel: &Channel, after: u64) -> GapRequest {
        self.metrics.history_gap_fills.increment(1);
        GapRequest {
            channel: channel.clone(),
            after,
        }
    }

    /// Delivers a gap's publications (read from history), then what was held back,
    /// in offset order. Offsets the history no longer has are counted as lost.
    pub fn fill(&self, channel: &Channel, publications: Vec<Publication>) {
        let map = self.read(channel);
        let Some(entry) = map.get(channel) else {
            return;
        };
        let Some(seq) = &entry.sequence else { return };
        let mut seq = lock(seq);
        let filled = seq.fill(publications);
        self.metrics.history_lost.increment(filled.lost);
        for p in &filled.deliver {
            self.fan_out(entry, p);
        }
    }

    fn fan_out(&self, entry: &ChannelEntry, publication: &Publication) {
        let frame = message_frame(publication);
        let mut queued = 0usize;
        let offset = publication.offset.unwrap_or(0);
        entry.subscribers.for_each(|sub| {
            if offset != 0 && offset <= sub.floor && sub.floor_epoch == publication.epoch {
                return;
            }
            match &sub.recovering {
                Some(held) => lock(held).push((offset, publication.epoch.clone(), frame.clone())),
                None => {
                    if sub.outbox.push(frame.clone(), &self.metrics) {
                        queued += 1;
                    }
                }
            }
        });
        self.metrics
            .messages_out(queued as u64, (queued * frame.len()) as u64);
    }
}
