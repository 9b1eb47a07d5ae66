//! This node's local subscribers, per channel.
//!
//! The hub is the only place that knows which local connections want a channel. It
//! never talks to the broker itself: [`crate::node::Node`] consults it to decide when
//! the node's single broker subscription for a channel must start or stop (first
//! local subscriber in, last one out), and the broker hands every publication to
//! [`Hub::deliver`], which serializes it once and queues the same bytes to every
//! local subscriber without waiting on any of them.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

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

struct Entry {
    subscribers: Vec<(SessionId, Outbox)>,
    gate: Gate,
}

#[derive(Default)]
pub struct Hub {
    channels: RwLock<HashMap<Channel, Entry>>,
    metrics: Metrics,
}

impl Hub {
    pub fn new(metrics: Metrics) -> Hub {
        Hub {
            channels: RwLock::default(),
            metrics,
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<Channel, Entry>> {
        // A panic while holding the lock cannot leave the map half-updated (every
        // mutation is a single push/remove), so a poisoned lock is still usable.
        self.channels.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<Channel, Entry>> {
        self.channels.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a local subscriber (it receives publications from now on) and returns the
    /// channel's gate, under which the caller makes sure the broker subscription is live.
    pub fn add(&self, channel: &Channel, session: SessionId, outbox: Outbox) -> Gate {
        let mut map = self.write();
        let entry = map.entry(channel.clone()).or_insert_with(|| {
            self.metrics.channels.increment(1.0);
            Entry {
                subscribers: Vec::new(),
                gate: Gate::default(),
            }
        });
        if !entry.subscribers.iter().any(|(id, _)| *id == session) {
            entry.subscribers.push((session, outbox));
            self.metrics.subscriptions.increment(1.0);
        }
        entry.gate.clone()
    }

    /// Removes a local subscriber. Returns the gate when the channel has no local
    /// subscriber left, so that the caller can end the broker subscription.
    pub fn remove(&self, channel: &Channel, session: SessionId) -> Option<Gate> {
        let mut map = self.write();
        let entry = map.get_mut(channel)?;
        let before = entry.subscribers.len();
        entry.subscribers.retain(|(id, _)| *id != session);
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
    /// Returns the number of subscribers the frame was queued to.
    pub fn deliver(&self, publication: &Publication) -> usize {
        let map = self.read();
        let Some(entry) = map.get(&publication.channel) else {
            // Arrives after the last local subscriber left; normal, but counted.
            self.metrics.undeliverable.increment(1);
            return 0;
        };
        let frame = message_frame(
            &publication.channel,
            &publication.data,
            publication.from.as_ref().map(|u| u.as_str()),
            publication.offset,
        );
        let mut queued = 0;
        for (_, outbox) in &entry.subscribers {
            if outbox.push(frame.clone(), &self.metrics) {
                queued += 1;
            }
        }
        self.metrics.messages_out.increment(queued as u64);
        self.metrics
            .bytes_out
            .increment((queued * frame.len()) as u64);
        queued
    }

    /// Every channel with at least one local subscriber.
    pub fn channels(&self) -> Vec<Channel> {
        self.read()
            .iter()
            .filter(|(_, e)| !e.subscribers.is_empty())
            .map(|(c, _)| c.clone())
            .collect()
    }

    /// Local subscriber count of a channel.
    pub fn subscriber_count(&self, channel: &Channel) -> usize {
        self.read().get(channel).map_or(0, |e| e.subscribers.len())
    }
}
