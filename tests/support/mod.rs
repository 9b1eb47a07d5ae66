//! Shared test harness: real servers on 127.0.0.1:0 and real WebSocket clients.
#![allow(dead_code)]

pub mod cluster;
pub mod load;

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use shardcast::config::Config;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

/// How long a test waits for something that should happen promptly.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// A shardcast server running in this process.
pub struct TestServer {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestServer {
    pub async fn start(config: Config) -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            shardcast::server::run(listener, config, async {
                let _ = stopped.await;
            })
            .await
            .expect("server failed");
        });
        TestServer {
            addr,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub async fn memory() -> TestServer {
        TestServer::start(Config::defaults()).await
    }

    pub fn ws_url(&self, user: &str) -> String {
        format!("ws://{}/ws?user={user}", self.addr)
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn client(&self, user: &str) -> Client {
        Client::connect(&self.ws_url(user)).await
    }

    /// Signals shutdown and waits for `run` to return.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("server did not stop in time")
                .expect("server task panicked");
        }
    }
}

/// A real WebSocket client.
pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// Frames read while looking for something else (e.g. a request's answer).
    pending: std::collections::VecDeque<Value>,
}

#[derive(Debug)]
pub enum Received {
    Frame(Value),
    Closed(Option<u16>),
}

impl Client {
    pub async fn connect(url: &str) -> Client {
        let (ws, _) = tokio::time::timeout(PATIENCE, connect_async(url))
            .await
            .expect("connect timed out")
            .unwrap_or_else(|e| panic!("connect {url}: {e}"));
        Client {
            ws,
            pending: Default::default(),
        }
    }

    pub async fn send(&mut self, v: Value) {
        self.ws
            .send(Message::text(v.to_string()))
            .await
            .expect("send frame");
    }

    pub async fn send_raw(&mut self, m: Message) {
        self.ws.send(m).await.expect("send raw frame");
    }

    /// The next text frame or the close, skipping pings/pongs.
    pub async fn next_event(&mut self, wait: Duration) -> Option<Received> {
        if let Some(v) = self.pending.pop_front() {
            return Some(Received::Frame(v));
        }
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let next = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()?;
            match next {
                None => return Some(Received::Closed(None)),
                Some(Err(_)) => return Some(Received::Closed(None)),
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(&t)
                        .unwrap_or_else(|e| panic!("server sent invalid JSON {t}: {e}"));
                    return Some(Received::Frame(v));
                }
                Some(Ok(Message::Close(frame))) => {
                    return Some(Received::Closed(frame.map(|f: CloseFrame| f.code.into())));
                }
                Some(Ok(_)) => continue,
            }
        }
    }

    /// The next text frame; panics on close or timeout.
    pub async fn recv(&mut self) -> Value {
        match self.next_event(PATIENCE).await {
            Some(Received::Frame(v)) => v,
            other => panic!("expected a frame, got {other:?}"),
        }
    }

    /// Asserts nothing arrives within `wait`.
    pub async fn expect_silence(&mut self, wait: Duration) {
        if let Some(e) = self.next_event(wait).await {
            panic!("expected silence, got {e:?}");
        }
    }

    /// Reads until the connection closes; returns the close code.
    pub async fn expect_close(&mut self, wait: Duration) -> Option<u16> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match self
                .next_event(deadline.saturating_duration_since(tokio::time::Instant::now()))
                .await
            {
                Some(Received::Closed(code)) => return code,
                Some(Received::Frame(_)) => continue,
                None => panic!("connection did not close within {wait:?}"),
            }
        }
    }

    /// Sends a request with `id` and returns the answer with that id.
    pub async fn request(&mut self, mut v: Value, id: u64) -> Value {
        v["id"] = json!(id);
        self.send(v).await;
        let mut skipped = Vec::new();
        loop {
            let f = match self.next_event(PATIENCE).await {
                Some(Received::Frame(v)) => v,
                other => panic!("expected the answer to request {id}, got {other:?}"),
            };
            if f["id"] == json!(id) {
                self.pending.extend(skipped);
                return f;
            }
            skipped.push(f);
        }
    }

    pub async fn subscribe(&mut self, channel: &str, id: u64) -> Value {
        let r = self
            .request(json!({"op":"subscribe","channel":channel}), id)
            .await;
        assert_eq!(r["op"], "ok", "subscribe {channel}: {r}");
        r
    }

    pub async fn publish(&mut self, channel: &str, data: Value, id: u64) -> Value {
        self.request(json!({"op":"publish","channel":channel,"data":data}), id)
            .await
    }

    /// The next `message` frame (answers to requests are dropped).
    pub async fn next_message(&mut self) -> Value {
        loop {
            let f = self.recv().await;
            if f["op"] == "message" {
                return f;
            }
        }
    }
}

/// A `Config` with the defaults and the given overrides applied as flags.
pub fn config(args: &[&str]) -> Config {
    use clap::Parser;
    let mut argv = vec!["shardcast"];
    argv.extend_from_slice(args);
    Config::try_parse_from(argv).expect("test config")
}

/// HTTP helper (plain, tiny; no client crate needed for a few requests).
pub async fn http(method: &str, url: &str, body: Option<&str>) -> (u16, String) {
    try_http(method, url, body).await
}

/// Like [`http`], but a refused connection is status 0 instead of a panic.
pub async fn try_http(method: &str, url: &str, body: Option<&str>) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").expect("http url");
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let Ok(mut stream) = TcpStream::connect(host).await else {
        return (0, String::new());
    };
    let body = body.unwrap_or("");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(req.as_bytes()).await.expect("write http");
    let mut buf = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut buf))
        .await
        .expect("http timed out")
        .expect("read http");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad http response: {text}"));
    let body = match text.find("\r\n\r\n") {
        Some(i) => decode_chunked_if_needed(&text[..i], &text[i + 4..]),
        None => String::new(),
    };
    (status, body)
}

fn decode_chunked_if_needed(head: &str, body: &str) -> String {
    if !head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return body.to_string();
    }
    let mut out = String::new();
    let mut rest = body;
    while let Some(i) = rest.find("\r\n") {
        let size = usize::from_str_radix(rest[..i].trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.push_str(&rest[i + 2..i + 2 + size]);
        rest = &rest[i + 2 + size + 2..];
    }
    out
}

/// A WebSocket client on a bare TCP socket that never answers anything: the socket
/// is only read when the test asks, so pings go unanswered, as with a frozen peer.
pub struct SilentClient {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl SilentClient {
    pub async fn connect(addr: SocketAddr, path: &str) -> SilentClient {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(req.as_bytes()).await.expect("handshake");
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = tokio::time::timeout(PATIENCE, stream.read(&mut chunk))
                .await
                .expect("handshake timed out")
                .expect("handshake read");
            assert!(n > 0, "server closed during handshake");
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        assert!(head.starts_with("HTTP/1.1 101"), "upgrade refused: {head}");
        buf.drain(..end);
        SilentClient { stream, buf }
    }

    /// Reads every frame the server sent; returns the opcodes seen and the close code.
    pub async fn read_until_close(&mut self, wait: Duration) -> (Vec<u8>, Option<u16>) {
        use tokio::io::AsyncReadExt;
        let deadline = tokio::time::Instant::now() + wait;
        let mut opcodes = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            while let Some((opcode, payload, used)) = parse_frame(&self.buf) {
                self.buf.drain(..used);
                opcodes.push(opcode);
                if opcode == 8 {
                    let code =
                        (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
                    return (opcodes, code);
                }
            }
            let n = match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Ok(Ok(n)) => n,
                Ok(Err(_)) => 0,
                Err(_) => panic!("no close within {wait:?}; frames seen: {opcodes:?}"),
            };
            if n == 0 {
                return (opcodes, None);
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// One unmasked server frame: (opcode, payload, bytes used).
fn parse_frame(b: &[u8]) -> Option<(u8, Vec<u8>, usize)> {
    if b.len() < 2 {
        return None;
    }
    let opcode = b[0] & 0x0f;
    let (len, start) = match b[1] & 0x7f {
        126 => (u16::from_be_bytes([*b.get(2)?, *b.get(3)?]) as usize, 4),
        127 => (
            u64::from_be_bytes(b.get(2..10)?.try_into().ok()?) as usize,
            10,
        ),
        n => (n as usize, 2),
    };
    let payload = b.get(start..start + len)?.to_vec();
    Some((opcode, payload, start + len))
}
