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
