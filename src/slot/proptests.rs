//! Property tests for hash slots, against an independent transcription of Redis's
//! `keyHashSlot` (cluster.c) and a bitwise CRC16-XMODEM.

use proptest::prelude::*;

use super::*;

/// A fixed number of cases, and no regression files written into the tree.
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::with_cases(cases)
    }
}

/// CRC16-XMODEM (poly 0x1021, init 0, no reflection), bit by bit.
fn crc16_xmodem(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in data {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// Redis's `keyHashSlot`, loop for loop.
fn redis_key_hash_slot(key: &[u8]) -> u16 {
    let keylen = key.len();
    let mut s = 0;
    while s < keylen && key[s] != b'{' {
        s += 1;
    }
    if s == keylen {
        return crc16_xmodem(key) & 0x3FFF;
    }
    let mut e = s + 1;
    while e < keylen && key[e] != b'}' {
        e += 1;
    }
    if e == keylen || e == s + 1 {
        return crc16_xmodem(key) & 0x3FFF;
    }
    crc16_xmodem(&key[s + 1..e]) & 0x3FFF
}

/// The bytes Redis hashes, by the same loops.
fn redis_hashed_part(key: &[u8]) -> &[u8] {
    let Some(s) = key.iter().position(|&b| b == b'{') else {
        return key;
    };
    match key[s + 1..].iter().position(|&b| b == b'}') {
        Some(len) if len > 0 => &key[s + 1..s + 1 + len],
        _ => key,
    }
}

/// Bytes with many braces, so that the tag rule's branches are all reached.
fn braces_heavy() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(
        prop_oneof![
            3 => Just(b'{'),
            3 => Just(b'}'),
            2 => Just(b'a'),
            1 => any::<u8>(),
        ],
        0..24,
    )
}

fn any_key() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..64),
        braces_heavy(),
        any::<String>().prop_map(String::into_bytes),
    ]
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn key_slot_is_always_below_16384(key in any_key()) {
        prop_assert!(key_slot(&key) < SLOTS);
    }

    #[test]
    fn key_slot_matches_redis_key_hash_slot(key in any_key()) {
        prop_assert_eq!(key_slot(&key), redis_key_hash_slot(&key));
    }

    #[test]
    fn hash_tag_follows_the_first_open_and_next_close_brace_rule(key in any_key()) {
        let tag = hash_tag(&key);
        prop_assert_eq!(tag, redis_hashed_part(&key));
        // What is hashed is either the whole key or a non-empty, brace-free-on-the-
        // right part that sits right after the key's first `{`.
        if tag.len() != key.len() {
            let open = key.iter().position(|&b| b == b'{').expect("a tag needs a `{`");
            prop_assert!(!tag.is_empty());
            prop_assert!(!tag.contains(&b'}'), "tag {:?}", tag);
            prop_assert_eq!(&key[open + 1..open + 1 + tag.len()], tag);
            prop_assert_eq!(key[open + 1 + tag.len()], b'}');
        }
    }

    #[test]
    fn keys_with_the_same_tag_share_a_slot(
        tag in proptest::collection::vec(any::<u8>().prop_filter("no `}`", |b| *b != b'}'), 1..16),
        prefix_a in proptest::collection::vec(any::<u8>().prop_filter("no `{`", |b| *b != b'{'), 0..16),
        prefix_b in proptest::collection::vec(any::<u8>().prop_filter("no `{`", |b| *b != b'{'), 0..16),
        suffix_a in proptest::collection::vec(any::<u8>(), 0..16),
        suffix_b in proptest::collection::vec(any::<u8>(), 0..16),
    ) {
        let key = |prefix: &[u8], suffix: &[u8]| {
            let mut k = prefix.to_vec();
            k.push(b'{');
            k.extend_from_slice(&tag);
            k.push(b'}');
            k.extend_from_slice(suffix);
            k
        };
        let a = key(&prefix_a, &suffix_a);
        let b = key(&prefix_b, &suffix_b);
        prop_assert_eq!(hash_tag(&a), &tag[..]);
        prop_assert_eq!(hash_tag(&b), &tag[..]);
        prop_assert_eq!(key_slot(&a), key_slot(&b));
        prop_assert_eq!(key_slot(&a), key_slot(&tag));
    }

    #[test]
    fn an_empty_first_tag_hashes_the_whole_key(
        prefix in proptest::collection::vec(any::<u8>().prop_filter("no `{`", |b| *b != b'{'), 0..16),
        suffix in proptest::collection::vec(any::<u8>(), 0..16),
    ) {
        let mut key = prefix;
        key.extend_from_slice(b"{}");
        key.extend_from_slice(&suffix);
        prop_assert_eq!(hash_tag(&key), &key[..]);
        prop_assert_eq!(key_slot(&key), crc16_xmodem(&key) % SLOTS);
    }
}

#[test]
fn the_reference_crc_matches_the_specification_vector() {
    assert_eq!(crc16_xmodem(b"123456789"), 0x31C3);
    assert_eq!(redis_key_hash_slot(b"foo"), 12182);
}

#[test]
fn slot_tag_hashes_to_its_slot_for_every_slot() {
    for slot in 0..SLOTS {
        let tag = slot_tag(slot);
        assert!(!tag.is_empty(), "slot {slot}: empty tag");
        assert!(
            !tag.contains(['{', '}']),
            "slot {slot}: tag {tag:?} has a brace, so it cannot be used inside `{{...}}`"
        );
        assert_eq!(key_slot(tag.as_bytes()), slot, "slot {slot}: tag {tag:?}");
        assert_eq!(
            redis_key_hash_slot(format!("p:{{{tag}}}:}}{{").as_bytes()),
            slot,
            "slot {slot}: tag {tag:?} inside a key"
        );
    }
}
