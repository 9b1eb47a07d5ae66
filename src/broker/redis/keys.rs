//! What shardcast stores in Redis per channel, and the Lua scripts that use it:
//! history (a stream and a small hash) and presence (a hash of members and a
//! sorted set of their expiry). Every key is in the channel's own slot (tagged
//! with [`slot_tag`]), so it lives on the shard that carries the channel's sharded
//! pub/sub and moves with it in a slot migration. The channel's name is length
//! prefixed, so that no channel's key can be another channel's: `x`'s
//! idempotency key `s` and `x:i`'s stream would otherwise both be `x:i:s`.

use std::sync::LazyLock;

use redis::Script;

use crate::channel::Channel;
use crate::slot::{key_slot, slot_tag};

/// Stores a publication and SPUBLISHes it in one atomic step (scripts/publish.lua).
pub static PUBLISH: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/publish.lua")));

/// Reads a channel's position and stored publications (scripts/read.lua).
pub static READ: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("scripts/read.lua")));

/// A client joins a presence channel (scripts/presence_join.lua).
pub static PRESENCE_JOIN: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/presence_join.lua")));

/// A client leaves (scripts/presence_leave.lua).
pub static PRESENCE_LEAVE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/presence_leave.lua")));

/// An instance refreshes its members; expired ones go (scripts/presence_refresh.lua).
pub static PRESENCE_REFRESH: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/presence_refresh.lua")));

/// Members or counts (scripts/presence_read.lua).
pub static PRESENCE_READ: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/presence_read.lua")));

/// The keys of a channel, all in its slot.
pub struct Keys {
    pub stream: String,
    pub meta: String,
    /// Presence: client → entry.
    pub members: String,
    /// Presence: client → expiry (ms).
    pub expiry: String,
    prefix: String,
}

impl Keys {
    pub fn of(channel: &Channel) -> Keys {
        let tag = slot_tag(key_slot(channel.as_str().as_bytes()));
        let name = channel.as_str();
        let prefix = format!("shardcast:{{{tag}}}:{}:{name}", name.len());
        Keys {
            stream: format!("{prefix}:s"),
            meta: format!("{prefix}:m"),
            members: format!("{prefix}:p"),
            expiry: format!("{prefix}:q"),
            prefix,
        }
    }

    pub fn idempotency(&self, key: &str) -> String {
        format!("{}:i:{key}", self.prefix)
    }

    /// A per-publish dedup key (no client key given).
    pub fn once(&self) -> String {
        format!("{}:r:{:016x}", self.prefix, rand::random::<u64>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_of_a_channel_is_in_the_channels_slot() {
        for name in ["chat:1", "}{", "{a}b", "room:{42}:x", "é"] {
            let ch = Channel::parse(name).unwrap();
            let slot = key_slot(name.as_bytes());
            let k = Keys::of(&ch);
            for key in [
                k.stream.clone(),
                k.meta.clone(),
                k.idempotency("x"),
                k.once(),
            ] {
                assert_eq!(key_slot(key.as_bytes()), slot, "{key}");
            }
        }
    }
}
