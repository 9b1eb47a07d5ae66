//! The tests' harness: shardcast's own pieces on top of shardcast-testkit (which
//! holds everything a user's tests could use too: the cluster, clients, load
//! accounting, metric scrapes, polling).
#![allow(dead_code, unused_imports)]

pub mod cluster;
pub mod faults;

use std::net::SocketAddr;
use std::time::Duration;

use shardcast::config::Config;
pub use shardcast_testkit::http::{self, Response};
pub use shardcast_testkit::{Client, PATIENCE, Received, Scrape, eventually, ws_frame};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A shardcast server running in this process (the embedded broker unless the
/// config says otherwise). Its metrics are the process's: compare before and after.
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
        TestServer::start(config(&[])).await
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

    pub async fn get(&self, path: &str) -> Response {
        http::get(&self.http_url(path)).await
    }

    pub async fn post(&self, path: &str, body: &str) -> Response {
        http::post(&self.http_url(path), body).await
    }

    /// A POST with an API key; panics unless it is answered 200.
    pub async fn post_as(&self, path: &str, body: &str, api_key: &str) -> Response {
        let key = format!("apikey {api_key}");
        let r = http::request(
            "POST",
            &self.http_url(path),
            &[("authorization", &key)],
            Some(body),
        )
        .await;
        assert_eq!(r.status, 200, "POST {path} {body}: {}", r.body);
        r
    }

    /// A `/metrics` scrape (process-wide figures).
    pub async fn metrics(&self) -> Scrape {
        let r = self.get("/metrics").await;
        assert_eq!(r.status, 200, "{}", r.body);
        Scrape::parse(&r.body)
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

/// The flags most tests run with: self-asserted users (`?user=`), and clients
/// may publish into any channel of a namespace the test does not configure.
pub const DEV: &[&str] = &[
    "--insecure",
    "--client-publish",
    "authenticated",
    "--publish-rate",
    "0",
    "--subscribe-rate",
    "0",
];

/// A `Config` with [`DEV`] and the given overrides applied as flags.
pub fn config(args: &[&str]) -> Config {
    let mut argv = vec!["shardcast"];
    argv.extend_from_slice(DEV);
    argv.extend_from_slice(args);
    Config::from_args(argv).expect("test config")
}

/// A `Config` with only the given flags: production defaults (no `--insecure`).
pub fn secure_config(args: &[&str]) -> Config {
    let mut argv = vec!["shardcast"];
    argv.extend_from_slice(args);
    Config::from_args(argv).expect("test config")
}

/// A configuration file with `text`, removed when dropped.
pub struct ConfigFile(pub std::path::PathBuf);

impl ConfigFile {
    pub fn new(text: &str) -> ConfigFile {
        let path = std::env::temp_dir().join(format!(
            "shardcast-test-{:016x}.toml",
            rand::random::<u64>()
        ));
        std::fs::write(&path, text).expect("write the config file");
        ConfigFile(path)
    }

    pub fn path(&self) -> &str {
        self.0.to_str().expect("a UTF-8 temp path")
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
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

    /// Writes raw bytes (a frame, a malformed one, half of one) to the socket.
    pub async fn send(&mut self, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt;
        self.stream
            .write_all(bytes)
            .await
            .expect("write to the socket");
    }

    /// Reads every frame the server sent; returns the opcodes seen and the close code.
    pub async fn read_until_close(&mut self, wait: Duration) -> (Vec<u8>, Option<u16>) {
        use tokio::io::AsyncReadExt;
        let deadline = tokio::time::Instant::now() + wait;
        let mut opcodes = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            while let Some((h, payload, used)) = ws_frame::parse(&self.buf) {
                let code = ws_frame::close_code(payload);
                self.buf.drain(..used);
                opcodes.push(h.opcode);
                if h.opcode == ws_frame::CLOSE {
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
