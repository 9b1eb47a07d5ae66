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

use shardcast_testkit::ws_frame;
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

/// (fin, opcode, header length, payload length) of the frame at the start of
/// `buf`, or `None` while its header is incomplete.
fn header(buf: &[u8]) -> Option<(bool, u8, usize, usize)> {
    let h = ws_frame::header(buf)?;
    Some((h.fin, h.opcode, h.len, usize::try_from(h.payload_len).ok()?))
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
        self.stream
            .write_all(&ws_frame::client_frame(opcode, payload))
            .await
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
