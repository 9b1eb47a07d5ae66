//! The per-channel gate: first local subscriber in subscribes the broker, last one
//! out unsubscribes it, and a join racing a leave serializes on the gate, so a
//! waiting subscriber cannot be left without a broker subscription.
//!
//! A gate is an async mutex around a `live` flag (the broker subscription is held).
//! It stays in the table while live or while someone holds it, and goes once
//! neither is true. The table is sharded like the hub's.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex};

use crate::channel::Channel;

/// One channel's gate; the flag says whether the broker subscription is live.
pub type Gate = Arc<tokio::sync::Mutex<bool>>;

const SHARDS: usize = 64;

pub struct Gates {
    shards: Box<[Mutex<HashMap<Channel, Gate>>]>,
    hasher: RandomState,
}

impl Gates {
    pub fn new() -> Gates {
        Gates {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
        }
    }

    fn shard(&self, channel: &Channel) -> std::sync::MutexGuard<'_, HashMap<Channel, Gate>> {
        self.shards[self.hasher.hash_one(channel) as usize % SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// The channel's gate (a new, not-live one if it had none).
    pub fn get(&self, channel: &Channel) -> Gate {
        self.shard(channel)
            .entry(channel.clone())
            .or_default()
            .clone()
    }

    /// Gives `gate` back (its guard must be dropped): the table forgets it when
    /// nobody else holds it and the broker subscription is not live.
    pub fn put(&self, channel: &Channel, gate: Gate) {
        let mut map = self.shard(channel);
        let idle = Arc::strong_count(&gate) == 2 && gate.try_lock().is_ok_and(|live| !*live);
        if idle && map.get(channel).is_some_and(|g| Arc::ptr_eq(g, &gate)) {
            map.remove(channel);
        }
    }

    /// Channels with a gate (live or in use).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Default for Gates {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_gate_is_forgotten_once_neither_live_nor_held() {
        let gates = Gates::new();
        let ch = Channel::parse("g").unwrap();
        let g = gates.get(&ch);
        *g.lock().await = true;
        gates.put(&ch, g);
        assert_eq!(gates.len(), 1, "live: kept");
        let g = gates.get(&ch);
        let other = gates.get(&ch);
        *g.lock().await = false;
        gates.put(&ch, g);
        assert_eq!(gates.len(), 1, "still held by another caller");
        gates.put(&ch, other);
        assert!(gates.is_empty());
    }
}
