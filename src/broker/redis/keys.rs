//! History in Redis: the keys of a history channel and the Lua scripts that use
//! them. One stream and one small hash per channel, both in the channel's own slot
//! (tagged with [`slot_tag`]), so they live on the shard that carries the channel's
//! sharded pub/sub and move with it in a slot migration.

use std::sync::LazyLock;

use redis::Script;

use crate::channel::Channel;
use crate::slot::{key_slot, slot_tag};

/// Stores a publication and SPUBLISHes it in one atomic step (scripts/publish.lua).
pub static PUBLISH: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/publish.lua")));

/// Reads a channel's position and stored publications (scripts/read.lua).
pub static READ: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("scripts/read.lua")));

/// The stream, meta and idempotency keys of a channel, all in its slot.
pub struct Keys {
    pub stream: String,
    pub meta: String,
    prefix: String,
}

impl Keys {
    pub fn of(channel: &Channel) -> Keys {
        let tag = slot_tag(key_slot(channel.as_str().as_bytes()));
        let prefix = format!("shardcast:{{{tag}}}:{}", channel.as_str());
        Keys {
            stream: format!("{prefix}:s"),
            meta: format!("{prefix}:m"),
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
