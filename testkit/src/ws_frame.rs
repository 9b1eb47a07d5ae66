//! RFC 6455 frames on raw bytes: a reader for server frames and a writer for client
//! frames, including deliberately malformed ones. For tests that must see or send
//! exactly what is on the wire (pings, close codes, bad frames), and for load
//! generators that parse frames in place.

/// The header of one frame, as [`header`] reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// FIN: the last frame of a message.
    pub fin: bool,
    /// The three reserved bits (RSV1..3), as the top bits of the first byte.
    pub rsv: u8,
    /// The opcode ([`TEXT`], [`CLOSE`], ...).
    pub opcode: u8,
    /// Whether a masking key follows the length (client frames must have one).
    pub masked: bool,
    /// Bytes of header, masking key included.
    pub len: usize,
    /// Payload bytes the header announces.
    pub payload_len: u64,
}

/// Opcode of a continuation frame (the rest of a fragmented message).
pub const CONTINUATION: u8 = 0x0;
/// Opcode of a text frame (UTF-8; shardcast's JSON frames).
pub const TEXT: u8 = 0x1;
/// Opcode of a binary frame.
pub const BINARY: u8 = 0x2;
/// Opcode of a close frame (payload: a 2-byte code, then a reason).
pub const CLOSE: u8 = 0x8;
/// Opcode of a ping.
pub const PING: u8 = 0x9;
/// Opcode of a pong.
pub const PONG: u8 = 0xA;

/// The header at the start of `buf`, or `None` while it is incomplete.
pub fn header(buf: &[u8]) -> Option<Header> {
    let (b0, b1) = (*buf.first()?, *buf.get(1)?);
    let masked = b1 & 0x80 != 0;
    let (payload_len, mut len) = match b1 & 0x7f {
        126 => (
            u64::from(u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?])),
            4,
        ),
        127 => {
            let b: [u8; 8] = buf.get(2..10)?.try_into().ok()?;
            (u64::from_be_bytes(b), 10)
        }
        n => (u64::from(n), 2),
    };
    if masked {
        len += 4;
        buf.get(len - 1)?;
    }
    Some(Header {
        fin: b0 & 0x80 != 0,
        rsv: b0 & 0x70,
        opcode: b0 & 0x0f,
        masked,
        len,
        payload_len,
    })
}

/// One complete unmasked frame at the start of `buf`: its header, its payload and
/// the bytes it used. `None` while incomplete (or masked, which a server never sends).
pub fn parse(buf: &[u8]) -> Option<(Header, &[u8], usize)> {
    let h = header(buf)?;
    if h.masked {
        return None;
    }
    let end = h.len.checked_add(usize::try_from(h.payload_len).ok()?)?;
    let payload = buf.get(h.len..end)?;
    Some((h, payload, end))
}

/// The close code of a close frame's payload, if it has one.
pub fn close_code(payload: &[u8]) -> Option<u16> {
    (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]))
}

/// A client frame to send, valid by default (FIN, masked with a zero key). Change
/// a field to make it malformed (clear `fin` for a fragment, set `rsv`, drop the
/// mask, claim a length), then write [`to_bytes`](FrameBuilder::to_bytes) to a raw
/// socket after the handshake.
#[derive(Debug, Clone)]
pub struct FrameBuilder {
    /// FIN bit (default set).
    pub fin: bool,
    /// Reserved bits, as the top bits of the first byte (`0x40` is RSV1); default 0.
    pub rsv: u8,
    /// The opcode (low four bits are sent).
    pub opcode: u8,
    /// `None` sends it unmasked, which a server must refuse.
    pub mask: Option<[u8; 4]>,
    /// Announce this payload length instead of the real one.
    pub claimed_len: Option<u64>,
    /// The payload, masked on the way out.
    pub payload: Vec<u8>,
}

impl FrameBuilder {
    /// A valid frame with `opcode` and `payload`.
    pub fn new(opcode: u8, payload: impl Into<Vec<u8>>) -> FrameBuilder {
        FrameBuilder {
            fin: true,
            rsv: 0,
            opcode,
            mask: Some([0; 4]),
            claimed_len: None,
            payload: payload.into(),
        }
    }

    /// A valid text frame holding `s`.
    pub fn text(s: &str) -> FrameBuilder {
        FrameBuilder::new(TEXT, s.as_bytes())
    }

    /// The frame's bytes, exactly as the fields say (invalid ones included).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.payload.len() + 14);
        out.push(u8::from(self.fin) << 7 | (self.rsv & 0x70) | (self.opcode & 0x0f));
        let mask_bit = if self.mask.is_some() { 0x80 } else { 0 };
        let len = self.claimed_len.unwrap_or(self.payload.len() as u64);
        match len {
            n if n < 126 => out.push(mask_bit | n as u8),
            n if n <= u64::from(u16::MAX) => {
                out.push(mask_bit | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(mask_bit | 127);
                out.extend_from_slice(&n.to_be_bytes());
            }
        }
        match self.mask {
            Some(key) => {
                out.extend_from_slice(&key);
                out.extend(self.payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
            }
            None => out.extend_from_slice(&self.payload),
        }
        out
    }
}

/// A valid client frame (masked with a zero key, which RFC 6455 permits).
pub fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    FrameBuilder::new(opcode, payload).to_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_lengths_follow_rfc6455() {
        let h = header(&[0x81, 5]).unwrap();
        assert_eq!((h.fin, h.opcode, h.len, h.payload_len), (true, 1, 2, 5));
        assert_eq!(header(&[0x81, 126, 1, 0]).unwrap().payload_len, 256);
        let h = header(&[0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0]).unwrap();
        assert_eq!((h.len, h.payload_len), (10, 65536));
        assert_eq!(header(&[0x09, 0x80]), None, "masking key incomplete");
        assert_eq!(header(&[0x81, 126, 1]), None, "incomplete");
    }

    #[test]
    fn a_built_frame_reads_back() {
        let mut f = FrameBuilder::text("hello");
        f.mask = None;
        let bytes = f.to_bytes();
        let (h, payload, used) = parse(&bytes).unwrap();
        assert_eq!(
            (h.opcode, payload, used),
            (TEXT, &b"hello"[..], bytes.len())
        );
        let masked = FrameBuilder::new(CLOSE, 1000u16.to_be_bytes()).to_bytes();
        let h = header(&masked).unwrap();
        assert!(h.masked && h.len == 6);
        let mut big = FrameBuilder::text("x");
        big.claimed_len = Some(1 << 63);
        assert_eq!(header(&big.to_bytes()).unwrap().payload_len, 1 << 63);
        assert!(parse(&big.to_bytes()).is_none(), "never complete");
        assert_eq!(close_code(&[0x0f, 0xa0]), Some(4000));
    }
}
