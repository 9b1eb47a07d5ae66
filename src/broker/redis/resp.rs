//! A minimal RESP3 reader/writer for the subscriber and publisher connections.
//!
//! redis-rs's multiplexed connection pairs every reply-like push with the oldest
//! in-flight command, which misroutes the unsolicited `sunsubscribe` Redis sends on
//! slot migration and the one-push-per-channel replies of a multi-channel SSUBSCRIBE.
//! A subscriber connection needs exactly that distinction, so it reads frames itself.

use bytes::{Buf, BytesMut};

#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(bytes::Bytes),
    Null,
    /// Arrays, sets, maps (flattened) and pushes.
    Array(Vec<Frame>),
    Push(Vec<Frame>),
    Other,
}

impl Frame {
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Frame::Bulk(b) => Some(b),
            Frame::Simple(s) => Some(s.as_bytes()),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("malformed RESP from Redis: {0}")]
pub struct ParseError(&'static str);

/// Encodes a command as a RESP array of bulk strings.
pub fn encode(out: &mut Vec<u8>, args: &[&[u8]]) {
    use std::io::Write;
    // Writing to a Vec cannot fail; `write!` formats in place (no String per
    // header): the publisher encodes one command per publication.
    let _ = write!(out, "*{}\r\n", args.len());
    for a in args {
        let _ = write!(out, "${}\r\n", a.len());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// Takes one complete frame off the front of `buf`, if there is one.
pub fn decode(buf: &mut BytesMut) -> Result<Option<Frame>, ParseError> {
    let mut pos = 0;
    match parse(buf, &mut pos, 0)? {
        Some(frame) => {
            buf.advance(pos);
            Ok(Some(frame))
        }
        None => Ok(None),
    }
}

fn line<'a>(buf: &'a [u8], pos: &mut usize) -> Option<&'a [u8]> {
    let start = *pos;
    let rel = buf.get(start..)?.windows(2).position(|w| w == b"\r\n")?;
    *pos = start + rel + 2;
    Some(&buf[start..start + rel])
}

fn number(l: &[u8]) -> Result<i64, ParseError> {
    std::str::from_utf8(l)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(ParseError("bad length or integer"))
}

fn parse(buf: &[u8], pos: &mut usize, depth: usize) -> Result<Option<Frame>, ParseError> {
    if depth > 16 {
        return Err(ParseError("nesting too deep"));
    }
    let Some(&kind) = buf.get(*pos) else {
        return Ok(None);
    };
    *pos += 1;
    let Some(l) = line(buf, pos) else {
        return Ok(None);
    };
    let text = || String::from_utf8_lossy(l).into_owned();
    Ok(Some(match kind {
        b'+' => Frame::Simple(text()),
        b'-' => Frame::Error(text()),
        b':' => Frame::Int(number(l)?),
        b'_' => Frame::Null,
        b'#' | b',' | b'(' => Frame::Other,
        b'$' | b'=' | b'!' => {
            let n = number(l)?;
            if n < 0 {
                return Ok(Some(Frame::Null));
            }
            let n = n as usize;
            let Some(data) = buf.get(*pos..*pos + n) else {
                return Ok(None);
            };
            if buf.get(*pos + n..*pos + n + 2).is_none() {
                return Ok(None);
            }
            *pos += n + 2;
            let data = bytes::Bytes::copy_from_slice(data);
            if kind == b'!' {
                Frame::Error(String::from_utf8_lossy(&data).into_owned())
            } else {
                Frame::Bulk(data)
            }
        }
        b'*' | b'~' | b'>' | b'%' | b'|' => {
            let n = number(l)?;
            if n < 0 {
                return Ok(Some(Frame::Null));
            }
            let count = if kind == b'%' || kind == b'|' {
                n as usize * 2
            } else {
                n as usize
            };
            let mut items = Vec::with_capacity(count.min(1024));
            for _ in 0..count {
                match parse(buf, pos, depth + 1)? {
                    Some(f) => items.push(f),
                    None => return Ok(None),
                }
            }
            match kind {
                b'>' => Frame::Push(items),
                // An attribute precedes the real reply; return that one.
                b'|' => return parse(buf, pos, depth + 1),
                _ => Frame::Array(items),
            }
        }
        _ => return Err(ParseError("unknown type byte")),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(b: &mut BytesMut) -> Vec<Frame> {
        let mut out = Vec::new();
        loop {
            match decode(b) {
                Ok(Some(f)) => out.push(f),
                Ok(None) => return out,
                Err(e) => panic!("{e}"),
            }
        }
    }

    #[test]
    fn decodes_pushes_errors_and_partial_input() {
        let wire = b">3\r\n$8\r\nsmessage\r\n$2\r\nch\r\n$5\r\nhello\r\n-MOVED 1 h:1\r\n%1\r\n+a\r\n:1\r\n";
        // Cut anywhere, a prefix decodes to a prefix of the frames (never an error),
        // and the rest completes them exactly.
        let full = decode_all(&mut BytesMut::from(&wire[..]));
        assert_eq!(full.len(), 3);
        for cut in 0..wire.len() {
            let mut b = BytesMut::from(&wire[..cut]);
            let mut got = decode_all(&mut b);
            assert!(full.starts_with(&got), "cut {cut}: {got:?}");
            b.extend_from_slice(&wire[cut..]);
            got.extend(decode_all(&mut b));
            assert_eq!(got, full, "cut {cut}");
            assert!(b.is_empty(), "cut {cut}: {} bytes left", b.len());
        }
        let mut b = BytesMut::from(&wire[..]);
        assert_eq!(
            decode(&mut b).unwrap(),
            Some(Frame::Push(vec![
                Frame::Bulk("smessage".into()),
                Frame::Bulk("ch".into()),
                Frame::Bulk("hello".into())
            ]))
        );
        assert_eq!(
            decode(&mut b).unwrap(),
            Some(Frame::Error("MOVED 1 h:1".into()))
        );
        assert_eq!(
            decode(&mut b).unwrap(),
            Some(Frame::Array(vec![Frame::Simple("a".into()), Frame::Int(1)]))
        );
        assert_eq!(decode(&mut b).unwrap(), None);
        let mut partial = BytesMut::from(&b"$5\r\nhel"[..]);
        assert_eq!(decode(&mut partial).unwrap(), None);
        assert_eq!(partial.len(), 7, "nothing consumed from a partial frame");
    }
}
#[cfg(test)]
#[path = "resp_proptests.rs"]
mod proptests;
