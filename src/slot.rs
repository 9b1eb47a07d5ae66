//! Redis Cluster hash slots: CRC16-XMODEM of the key, or of its hash tag, mod 16384.

/// Number of hash slots in a Redis Cluster.
pub const SLOTS: u16 = 16384;

/// The part of `key` Redis hashes: the content of the first `{...}` when the first
/// `{` is followed later by a `}` and the content between them is not empty;
/// otherwise the whole key (Redis's `keyHashSlot` rule, byte for byte).
pub fn hash_tag(key: &[u8]) -> &[u8] {
    if let Some(open) = key.iter().position(|&b| b == b'{')
        && let Some(len) = key[open + 1..].iter().position(|&b| b == b'}')
        && len > 0
    {
        return &key[open + 1..open + 1 + len];
    }
    key
}

/// The slot a key (a channel, a stream key) belongs to.
pub fn key_slot(key: &[u8]) -> u16 {
    crc16::State::<crc16::XMODEM>::calculate(hash_tag(key)) % SLOTS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_redis_reference_vectors() {
        // Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(
            crc16::State::<crc16::XMODEM>::calculate(b"123456789"),
            0x31C3
        );
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b"hello"), 866);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b""), 0);
    }

    #[test]
    fn follows_the_hash_tag_rule() {
        assert_eq!(hash_tag(b"{}"), b"{}");
        assert_eq!(hash_tag(b"a{}b"), b"a{}b");
        assert_eq!(hash_tag(b"{{a}}"), b"{a");
        assert_eq!(hash_tag(b"a{b"), b"a{b");
        assert_eq!(hash_tag(b"}{"), b"}{");
        assert_eq!(hash_tag(b"x{a}{b}"), b"a");
        assert_eq!(hash_tag(b"{}{a}"), b"{}{a}");
        assert_eq!(hash_tag("é{ü}".as_bytes()), "ü".as_bytes());
    }
}

/// A short hash tag for every slot: `slot_tag(s)` hashes to slot `s`. Keys named
/// `prefix:{<slot_tag(slot(channel))>}:...` live in the channel's own slot for every
/// legal channel name, also names like `}{` whose own text cannot serve as a tag.
pub fn slot_tag(slot: u16) -> &'static str {
    static TAGS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let tags = TAGS.get_or_init(|| {
        let mut tags = vec![String::new(); SLOTS as usize];
        let mut missing = SLOTS as usize;
        let mut n: u64 = 0;
        while missing > 0 {
            let candidate = format!("{n:x}");
            let s = key_slot(candidate.as_bytes()) as usize;
            if tags[s].is_empty() {
                tags[s] = candidate;
                missing -= 1;
            }
            n += 1;
        }
        tags
    });
    &tags[(slot % SLOTS) as usize]
}

#[cfg(test)]
mod tag_tests {
    use super::*;

    #[test]
    fn every_slot_has_a_tag_that_hashes_to_it() {
        for slot in 0..SLOTS {
            let key = format!("shardcast:{{{}}}:x", slot_tag(slot));
            assert_eq!(key_slot(key.as_bytes()), slot);
        }
    }
}
#[cfg(test)]
#[path = "slot/proptests.rs"]
mod proptests;
