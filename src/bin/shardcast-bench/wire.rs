//! A minimal WebSocket reader for the tool's subscribers, used once the handshake
//! and the subscribe exchange are done with tungstenite.
//!
//! Why: at a few thousand messages per second to hundreds of sockets, the load
//! generator shares the machine's two cores with the servers and Redis, so every
//! microsecond it spends per frame is taken from the system it measures. tungstenite
//! allocates a message per frame and copies it out of its buffer; here frames are
//! parsed in place in one reusable buffer per socket, several per `read` when they
//! queue up. Server frames are never masked (RFC 6455 §5.1), so the parse is short.
//! Pings are answered so that the server's keepalive stays satisfied.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One complete frame in the buffer.
pub enum Frame<'a> {
    Text(&'a [u8]),
    Ping(&'a [u8]),
    Close,
    /// Binary, pong, or a fragment: the tool never expects one.
    Other,
}

/// Header of the frame at the start of `buf`: (fin, opcode, header length, payload
/// length), or `None` while the header is incomplete.
fn header(buf: &[u8]) -> Option<(bool, u8, usize, usize)> {
    let (b0, b1) = (*buf.first()?, *buf.get(1)?);
    let masked = b1 & 0x80 != 0;
    let (len, mut at) = match b1 & 0x7f {
        126 => (u16::from_be_bytes([*buf.get(2)?, *buf.get(3)?]) as usize, 4),
        127 => {
            let b: [u8; 8] = buf.get(2..10)?.try_into().ok()?;
            (u64::from_be_bytes(b) as usize, 10)
        }
        n => (n as usize, 2),
    };
    if masked {
        at += 4; // a server must not mask; the payload is then unreadable here
    }
    Some((b0 & 0x80 != 0, b0 & 0x0f, at, len))
}

pub struct Reader {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Parsed up to here.
    pos: usize,
    /// Filled up to here.
    end: usize,
}

impl Reader {
    pub fn new(stream: TcpStream) -> Reader {
        Reader {
            stream,
            buf: vec![0; 16 * 1024],
            pos: 0,
            end: 0,
        }
    }

    /// Reads more bytes from the socket; `Ok(false)` at end of stream.
    pub async fn fill(&mut self) -> std::io::Result<bool> {
        if self.pos > 0 {
            self.buf.copy_within(self.pos..self.end, 0);
            self.end -= self.pos;
            self.pos = 0;
        }
        if self.end == self.buf.len() {
            // A frame larger than the buffer: grow to fit it.
            let need = header(&self.buf[..self.end])
                .map(|(_, _, h, n)| h + n)
                .unwrap_or(0);
            self.buf.resize(need.max(self.buf.len() * 2), 0);
        }
        let n = self.stream.read(&mut self.buf[self.end..]).await?;
        self.end += n;
        Ok(n > 0)
    }

    /// The next complete frame already in the buffer, if any.
    pub fn next_frame(&mut self) -> Option<Frame<'_>> {
        let avail = &self.buf[self.pos..self.end];
        let (fin, opcode, h, n) = header(avail)?;
        if avail.len() < h + n {
            return None;
        }
        let payload = &self.buf[self.pos + h..self.pos + h + n];
        self.pos += h + n;
        Some(match (fin, opcode) {
            (true, 0x1) => Frame::Text(payload),
            (true, 0x9) => Frame::Ping(payload),
            (_, 0x8) => Frame::Close,
            _ => Frame::Other,
        })
    }

    /// Sends a client frame (masked with a zero key, which RFC 6455 permits).
    pub async fn send(&mut self, opcode: u8, payload: &[u8]) -> std::io::Result<()> {
        let mut frame = Vec::with_capacity(payload.len() + 14);
        frame.push(0x80 | opcode);
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n <= u16::MAX as usize => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(&[0; 4]);
        frame.extend_from_slice(payload);
        self.stream.write_all(&frame).await
    }

    /// Answers a ping with a pong carrying the same payload.
    pub async fn pong(&mut self, payload: Vec<u8>) -> std::io::Result<()> {
        self.send(0xA, &payload).await
    }

    /// Sends a normal close (1000) and stops.
    pub async fn close(mut self) {
        let _ = self.send(0x8, &1000u16.to_be_bytes()).await;
        let _ = self.stream.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::header;

    #[test]
    fn header_lengths_follow_rfc6455() {
        assert_eq!(header(&[0x81, 5]), Some((true, 1, 2, 5)));
        assert_eq!(header(&[0x81, 126, 1, 0]), Some((true, 1, 4, 256)));
        assert_eq!(
            header(&[0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0]),
            Some((true, 1, 10, 65536))
        );
        assert_eq!(header(&[0x09, 0x80]), Some((false, 9, 6, 0)));
        assert_eq!(header(&[0x81, 126, 1]), None, "incomplete");
    }
}
