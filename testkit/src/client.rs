//! A WebSocket client for shardcast's protocol, for tests: every method waits with
//! a deadline ([`PATIENCE`]) and panics with what it got instead, so a test fails
//! with the reason rather than hanging.
//!
//! Frames are `serde_json::Value`s, so a test reads fields the way shardcast's
//! protocol documents them (`frame["op"]`, `frame["data"]`, `frame["offset"]`).

use std::collections::VecDeque;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

/// How long a client waits for something that should happen promptly (the
/// WebSocket handshake, the `connected` frame, a request's answer, the next frame
/// in [`Client::recv`]) before it panics: 10 s, long enough for a loaded CI
/// machine, short enough for a test to fail rather than hang.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// What arrived, from [`Client::next_event`].
#[derive(Debug)]
pub enum Received {
    /// A text frame, parsed as JSON.
    Frame(Value),
    /// The connection closed, with the close code if there was a close frame.
    Closed(Option<u16>),
}

/// One WebSocket connection to a shardcast instance, speaking its JSON protocol.
/// Get one from [`Shardcast::client`](crate::Shardcast::client) or the
/// constructors here; every wait is bounded by [`PATIENCE`] or the given duration,
/// and a method that cannot do what it says panics with what it got instead.
pub struct Client {
    /// The underlying stream, for tests that need raw frames or to drop the TCP
    /// connection (frames already buffered by [`Client::request`] are not in it).
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// Frames read while looking for something else (e.g. a request's answer).
    pending: VecDeque<Value>,
    /// The server's `connected` frame (client id, user, token expiry).
    pub connected: Option<Value>,
}

impl Client {
    /// Connects to `url` (`ws://host:port/ws?...`), authenticated by the URL
    /// (`?user=` with `--insecure`, or `?token=`), and waits for `connected`.
    /// Panics if the connection is refused or the first frame is not `connected`
    /// within [`PATIENCE`]; use [`Client::try_connect`] to test a refusal.
    pub async fn connect(url: &str) -> Client {
        Client::connect_request(url, &[]).await
    }

    /// Connects with extra request headers (e.g. `Authorization: Bearer <token>`)
    /// and waits for `connected`.
    pub async fn connect_request(url: &str, headers: &[(&str, &str)]) -> Client {
        let mut c = match Client::try_connect(url, headers).await {
            Ok(c) => c,
            Err(e) => panic!("connect {url}: {e}"),
        };
        c.await_connected().await;
        c
    }

    /// Connects with a token in the `Authorization` header.
    pub async fn with_token(url: &str, token: &str) -> Client {
        Client::connect_request(url, &[("authorization", &format!("Bearer {token}"))]).await
    }

    /// Connects and sends `{"op":"connect","token":..}` as the first frame (the
    /// browser's way); returns the client and the server's answer.
    pub async fn connect_with_frame(url: &str, token: &str, id: u64) -> (Client, Value) {
        let mut c = Client::try_connect(url, &[])
            .await
            .unwrap_or_else(|e| panic!("connect {url}: {e}"));
        let answer = c.request(json!({"op":"connect","token":token}), id).await;
        if answer["op"] == "connected" {
            c.connected = Some(answer.clone());
        }
        (c, answer)
    }

    /// Reads the `connected` frame the server sends first.
    async fn await_connected(&mut self) {
        match self.next_event(PATIENCE).await {
            Some(Received::Frame(f)) if f["op"] == "connected" => self.connected = Some(f),
            other => panic!("expected the `connected` frame first, got {other:?}"),
        }
    }

    /// The connection's client id (from `connected`).
    pub fn client_id(&self) -> String {
        self.connected
            .as_ref()
            .and_then(|c| c["client"].as_str())
            .unwrap_or_default()
            .to_string()
    }

    /// Opens the WebSocket only (no frame awaited), or says why not (an HTTP
    /// refusal names its status and body).
    pub async fn try_connect(url: &str, headers: &[(&str, &str)]) -> Result<Client, String> {
        let mut req = url.into_client_request().map_err(|e| e.to_string())?;
        for (k, v) in headers {
            let name: tokio_tungstenite::tungstenite::http::HeaderName =
                k.parse().map_err(|e| format!("header {k}: {e}"))?;
            req.headers_mut()
                .insert(name, v.parse().map_err(|e| format!("header {k}: {e}"))?);
        }
        let (ws, _) = tokio::time::timeout(PATIENCE, connect_async(req))
            .await
            .map_err(|_| "connect timed out".to_string())?
            .map_err(|e| match e {
                tokio_tungstenite::tungstenite::Error::Http(r) => format!(
                    "HTTP {} {}",
                    r.status().as_u16(),
                    r.body()
                        .as_ref()
                        .map(|b| String::from_utf8_lossy(b).into_owned())
                        .unwrap_or_default()
                ),
                other => other.to_string(),
            })?;
        Ok(Client {
            ws,
            pending: VecDeque::new(),
            connected: None,
        })
    }

    /// Sends `v` as a text frame, without waiting for an answer (see
    /// [`Client::request`] for that). Panics if the connection is gone.
    pub async fn send(&mut self, v: Value) {
        self.ws
            .send(Message::text(v.to_string()))
            .await
            .expect("send frame");
    }

    /// Sends any WebSocket message (binary, ping, close, invalid JSON text) as
    /// is: for tests of how the server treats what a well-behaved client never
    /// sends. Panics if the connection is gone.
    pub async fn send_raw(&mut self, m: Message) {
        self.ws.send(m).await.expect("send raw frame");
    }

    /// The next text frame or the close, skipping pings and pongs; `None` if nothing
    /// arrived within `wait`. The building block that does not panic on a close or a
    /// timeout (it does panic on a text frame that is not JSON).
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
                None | Some(Err(_)) => return Some(Received::Closed(None)),
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

    /// The next text frame; panics on close or after [`PATIENCE`].
    pub async fn recv(&mut self) -> Value {
        match self.next_event(PATIENCE).await {
            Some(Received::Frame(v)) => v,
            other => panic!("expected a frame, got {other:?}"),
        }
    }

    /// Asserts nothing arrives within `wait` (no frame, no close): e.g. that an
    /// unsubscribed channel delivers nothing, or that nothing was delivered twice.
    pub async fn expect_silence(&mut self, wait: Duration) {
        if let Some(e) = self.next_event(wait).await {
            panic!("expected silence, got {e:?}");
        }
    }

    /// Reads until the connection closes, dropping frames; returns the close code
    /// (`None` for a close without a frame or a dropped connection). Panics if it
    /// is still open after `wait`.
    pub async fn expect_close(&mut self, wait: Duration) -> Option<u16> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_event(left).await {
                Some(Received::Closed(code)) => return code,
                Some(Received::Frame(_)) => continue,
                None => panic!("connection did not close within {wait:?}"),
            }
        }
    }

    /// Sends a request with `id` and returns the answer with that id; frames read
    /// meanwhile (messages, other answers) are kept for later reads. The answer is
    /// returned whatever it is (`ok` or `error`): check `answer["op"]`. Panics if no
    /// answer arrives within [`PATIENCE`] of each frame.
    pub async fn request(&mut self, mut v: Value, id: u64) -> Value {
        v["id"] = json!(id);
        self.send(v).await;
        let mut skipped = Vec::new();
        loop {
            let f = match self.next_event(PATIENCE).await {
                Some(Received::Frame(v)) => v,
                other => panic!("expected the answer to request {id}, got {other:?}"),
            };
            if f["id"] == json!(id) && f["op"] != "message" {
                self.pending.extend(skipped);
                return f;
            }
            skipped.push(f);
        }
    }

    /// Subscribes; panics unless the answer is `ok`. Returns the `ok`.
    pub async fn subscribe(&mut self, channel: &str, id: u64) -> Value {
        let r = self
            .request(json!({"op":"subscribe","channel":channel}), id)
            .await;
        assert_eq!(r["op"], "ok", "subscribe {channel}: {r}");
        r
    }

    /// Subscribes to each channel (ids from `first_id` on); panics unless every
    /// answer is `ok`.
    pub async fn subscribe_all(&mut self, channels: &[String], first_id: u64) {
        for (i, ch) in channels.iter().enumerate() {
            self.subscribe(ch, first_id + i as u64).await;
        }
    }

    /// Publishes `data` on `channel` from this connection (the instance must allow
    /// client publishes, e.g. `--client-publish authenticated`); returns the answer,
    /// `ok` (with the offset on a history channel) or `error` with its code.
    pub async fn publish(&mut self, channel: &str, data: Value, id: u64) -> Value {
        self.request(json!({"op":"publish","channel":channel,"data":data}), id)
            .await
    }

    /// The next frame whose `op` is `op` (others are dropped); panics on close or
    /// timeout.
    pub async fn next_op(&mut self, op: &str) -> Value {
        loop {
            let f = self.recv().await;
            if f["op"] == op {
                return f;
            }
        }
    }

    /// The next `message` frame (other frames are dropped); panics on close or if
    /// no frame arrives within [`PATIENCE`].
    pub async fn next_message(&mut self) -> Value {
        loop {
            let f = self.recv().await;
            if f["op"] == "message" {
                return f;
            }
        }
    }
}
