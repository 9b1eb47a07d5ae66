//! Property tests for the RESP3 reader: arbitrary bytes, round trips, every split
//! point, and lengths announced far beyond the input.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use proptest::prelude::*;

use super::*;

/// The system allocator, noting the largest single request made by a thread while
/// that thread is measuring (see [`largest_allocation`]). Only the measuring thread
/// pays for more than a thread-local read.
struct Measuring;

thread_local! {
    static MEASURING: Cell<bool> = const { Cell::new(false) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    if MEASURING.with(Cell::get) {
        LARGEST.with(|l| l.set(l.get().max(size)));
    }
}

// SAFETY: every call is forwarded to `System` unchanged.
unsafe impl GlobalAlloc for Measuring {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Measuring = Measuring;

/// Runs `f`, returning its result, the largest single allocation it made and how
/// long it took.
fn largest_allocation<T>(f: impl FnOnce() -> T) -> (T, usize, Duration) {
    LARGEST.with(|l| l.set(0));
    MEASURING.with(|m| m.set(true));
    let start = Instant::now();
    let out = f();
    let took = start.elapsed();
    MEASURING.with(|m| m.set(false));
    (out, LARGEST.with(Cell::get), took)
}

/// A fixed number of cases, and no regression files written into the tree.
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::with_cases(cases)
    }
}

/// Writes `frame` the way Redis would (RESP3), so that it reads back as itself.
fn write(out: &mut Vec<u8>, frame: &Frame) {
    match frame {
        Frame::Simple(s) => out.extend_from_slice(format!("+{s}\r\n").as_bytes()),
        Frame::Error(s) => out.extend_from_slice(format!("-{s}\r\n").as_bytes()),
        Frame::Int(i) => out.extend_from_slice(format!(":{i}\r\n").as_bytes()),
        Frame::Bulk(b) => {
            out.extend_from_slice(format!("${}\r\n", b.len()).as_bytes());
            out.extend_from_slice(b);
            out.extend_from_slice(b"\r\n");
        }
        Frame::Null => out.extend_from_slice(b"_\r\n"),
        Frame::Array(items) | Frame::Push(items) => {
            let kind = if matches!(frame, Frame::Push(_)) {
                '>'
            } else {
                '*'
            };
            out.extend_from_slice(format!("{kind}{}\r\n", items.len()).as_bytes());
            for item in items {
                write(out, item);
            }
        }
        Frame::Other => out.extend_from_slice(b"#t\r\n"),
    }
}

/// A line of text as Simple and Error frames carry it (no CR or LF).
fn line_text() -> impl Strategy<Value = String> {
    "[^\r\n]{0,24}"
}

/// Frame trees at most 5 deep (the reader's own limit is 16).
fn frame() -> impl Strategy<Value = Frame> {
    let leaf = prop_oneof![
        line_text().prop_map(Frame::Simple),
        line_text().prop_map(Frame::Error),
        any::<i64>().prop_map(Frame::Int),
        proptest::collection::vec(any::<u8>(), 0..48).prop_map(|b| Frame::Bulk(b.into())),
        Just(Frame::Null),
        Just(Frame::Other),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Frame::Array),
            proptest::collection::vec(inner, 0..6).prop_map(Frame::Push),
        ]
    })
}

/// Bytes that look like RESP: type bytes, numbers (huge, negative, not numbers),
/// CRLFs and data, in any order.
fn resp_ish() -> impl Strategy<Value = Vec<u8>> {
    let token = prop_oneof![
        proptest::sample::select(b"+-:_#,($=!*~>%|".to_vec()).prop_map(|b| vec![b]),
        Just(b"\r\n".to_vec()),
        Just(b"\r".to_vec()),
        Just(b"\n".to_vec()),
        any::<i64>().prop_map(|n| n.to_string().into_bytes()),
        (0u64..8).prop_map(|n| n.to_string().into_bytes()),
        proptest::sample::select(vec![
            "9999999999",
            "2147483647",
            "9223372036854775807",
            "9223372036854775808",
            "-9223372036854775808",
            "18446744073709551615",
            "4611686018427387904",
            "-1",
            "-0",
            "+5",
            "1e3",
            "",
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
        proptest::collection::vec(any::<u8>(), 0..8),
    ];
    proptest::collection::vec(token, 0..24).prop_map(|t| t.concat())
}

/// Decodes and checks the invariants that hold for any input: no panic, a frame
/// consumes at least one byte and only bytes that were there, and anything else
/// (incomplete, error) consumes nothing. Returns the result and the bytes used.
fn decode_checked(input: &[u8]) -> Result<(Result<Option<Frame>, String>, usize), TestCaseError> {
    let mut buf = BytesMut::from(input);
    let out = decode(&mut buf).map_err(|e| e.to_string());
    prop_assert!(buf.len() <= input.len());
    let used = input.len() - buf.len();
    prop_assert_eq!(&input[used..], &buf[..], "what is left is the input's tail");
    match &out {
        Ok(Some(_)) => prop_assert!(used > 0, "a frame from no bytes"),
        Ok(None) | Err(_) => prop_assert_eq!(used, 0, "consumed {} bytes without a frame", used),
    }
    Ok((out, used))
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn arbitrary_bytes_never_panic_or_overconsume(input in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode_checked(&input)?;
    }

    #[test]
    fn resp_like_bytes_never_panic_or_overconsume(input in resp_ish()) {
        let start = Instant::now();
        let _ = decode_checked(&input)?;
        let took = start.elapsed();
        prop_assert!(took < Duration::from_secs(1), "decode took {:?} on {:?}", took, String::from_utf8_lossy(&input));
    }

    #[test]
    fn a_decoded_frame_decodes_the_same_from_its_bytes_alone(input in resp_ish()) {
        // Whatever a frame was read from, the bytes it used are enough on their own,
        // and the same frame comes out: the reader never looked past them.
        let (out, used) = decode_checked(&input)?;
        if let Ok(Some(frame)) = out {
            let (again, used_again) = decode_checked(&input[..used])?;
            prop_assert_eq!(again, Ok(Some(frame)));
            prop_assert_eq!(used_again, used);
        }
    }

    #[test]
    fn an_encoded_command_decodes_back_to_its_arguments(
        args in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..8),
        trailing in proptest::collection::vec(any::<u8>(), 0..16),
    ) {
        let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
        let mut wire = Vec::new();
        encode(&mut wire, &refs);
        let expected = Frame::Array(args.iter().map(|a| Frame::Bulk(a.clone().into())).collect());
        let mut buf = BytesMut::from(&wire[..]);
        buf.extend_from_slice(&trailing);
        prop_assert_eq!(decode(&mut buf).map_err(|e| e.to_string()), Ok(Some(expected)));
        prop_assert_eq!(&buf[..], &trailing[..], "exactly the encoding was consumed");
    }

    #[test]
    fn a_written_frame_decodes_back_to_itself(f in frame()) {
        let mut wire = Vec::new();
        write(&mut wire, &f);
        let mut buf = BytesMut::from(&wire[..]);
        prop_assert_eq!(decode(&mut buf).map_err(|e| e.to_string()), Ok(Some(f)));
        prop_assert!(buf.is_empty(), "{} bytes left", buf.len());
    }

    #[test]
    fn a_split_encoding_is_incomplete_until_its_last_byte(
        f in frame(),
        args in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..16), 1..4),
    ) {
        let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
        let mut command = Vec::new();
        encode(&mut command, &refs);
        let command_frame = Frame::Array(args.iter().map(|a| Frame::Bulk(a.clone().into())).collect());
        let mut written = Vec::new();
        write(&mut written, &f);
        for (wire, expected) in [(command, command_frame), (written, f)] {
            // Every prefix alone: incomplete, nothing consumed.
            for cut in 0..wire.len() {
                let mut buf = BytesMut::from(&wire[..cut]);
                prop_assert_eq!(
                    decode(&mut buf).map_err(|e| e.to_string()),
                    Ok(None),
                    "prefix of {} bytes of {:?}", cut, String::from_utf8_lossy(&wire)
                );
                prop_assert_eq!(buf.len(), cut, "a prefix consumed bytes");
            }
            // Byte by byte into one buffer, as a socket might deliver it.
            let mut buf = BytesMut::new();
            for (i, &b) in wire.iter().enumerate() {
                buf.extend_from_slice(&[b]);
                let got = decode(&mut buf).map_err(|e| e.to_string());
                if i + 1 < wire.len() {
                    prop_assert_eq!(got, Ok(None), "after {} bytes", i + 1);
                } else {
                    prop_assert_eq!(got, Ok(Some(expected.clone())));
                    prop_assert!(buf.is_empty());
                }
            }
        }
    }

    #[test]
    fn announced_lengths_beyond_the_input_are_not_allocated(
        kind in proptest::sample::select(b"$=!*~>%|".to_vec()),
        n in prop_oneof![
            Just(9_999_999_999u64),
            Just(2_147_483_647),
            Just(i64::MAX as u64),
            Just(i64::MAX as u64 / 2),
            1u64 << 20..i64::MAX as u64,
        ],
        depth in 1usize..16,
        tail in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        // `depth` nested headers announcing `n` each, then a little of anything.
        let mut input = Vec::new();
        for _ in 0..depth {
            input.extend_from_slice(format!("{}{n}\r\n", kind as char).as_bytes());
        }
        input.extend_from_slice(&tail);
        let (out, largest, took) = largest_allocation(|| {
            let mut buf = BytesMut::from(&input[..]);
            let out = decode(&mut buf).map_err(|e| e.to_string());
            (out, buf.len())
        });
        let (result, left) = out;
        prop_assert!(took < Duration::from_secs(1), "decode took {:?}", took);
        prop_assert!(
            largest <= 1 << 20,
            "decode made a {} byte allocation for {} bytes of input announcing {}",
            largest, input.len(), n
        );
        // Nothing that announces more than it holds can be complete.
        if n as usize > input.len() {
            prop_assert!(
                !matches!(result, Ok(Some(_))),
                "a frame from {:?}: {:?}", String::from_utf8_lossy(&input), result
            );
            prop_assert_eq!(left, input.len());
        }
    }
}

#[test]
fn huge_announced_lengths_return_at_once_without_allocating_them() {
    let cases: &[&[u8]] = &[
        b"$9999999999\r\n",
        b"$9999999999\r\nabc",
        b"$9223372036854775807\r\nabc",
        b"*2147483647\r\n",
        b"*2147483647\r\n:1\r\n:2\r\n",
        b"%9223372036854775807\r\n+a\r\n",
        b"~2147483647\r\n>2147483647\r\n*2147483647\r\n",
        b"|2147483647\r\n",
        b"!9999999999\r\n",
        b"=9999999999\r\n",
    ];
    for &input in cases {
        let (out, largest, took) = largest_allocation(|| {
            let mut buf = BytesMut::from(input);
            let out = decode(&mut buf).map_err(|e| e.to_string());
            (out, buf.len())
        });
        let shown = String::from_utf8_lossy(input);
        assert!(took < Duration::from_secs(1), "{shown:?}: took {took:?}");
        assert!(largest <= 1 << 20, "{shown:?}: a {largest} byte allocation");
        assert!(matches!(out.0, Ok(None) | Err(_)), "{shown:?}: {:?}", out.0);
        assert_eq!(out.1, input.len(), "{shown:?}: bytes consumed");
    }
}

#[test]
fn the_allocation_probe_sees_a_large_allocation() {
    // The probe itself works: without it the test above proves nothing.
    let (v, largest, _) = largest_allocation(|| Vec::<u8>::with_capacity(4 << 20));
    assert!(v.capacity() >= 4 << 20);
    assert!(largest >= 4 << 20, "saw {largest}");
}
