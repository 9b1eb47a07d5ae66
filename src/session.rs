//! One WebSocket connection.
//!
//! Two tasks per connection. The reader parses client frames and performs requests
//! (which may wait on the broker); the writer owns the socket's sending half, drains
//! the [`Outbox`] in batches, sends keepalive pings and performs the close. They share
//! one [`Closer`]: whoever decides the connection ends (client gone, slow consumer,
//! keepalive timeout, shutdown, oversized frame) records why, and both stop.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, sleep_until, timeout};
use tokio_tungstenite::WebSocketStream;
use tungstenite::Message;
use tungstenite::protocol::CloseFrame;
use tungstenite::protocol::frame::Utf8Bytes;
use tungstenite::protocol::frame::coding::CloseCode;

use crate::channel::{Channel, UserId};
use crate::hub::SessionId;
use crate::node::{Node, PublishRequest};
use crate::outbox::{Outbox, OutboxReceiver, OverflowSignal, outbox};
use crate::protocol::{
    ClientFrame, ErrorCode, FrameError, Request, ServerFrame, close, parse_client_frame,
};
use crate::shutdown::Shutdown;

/// Frames written per flush at most; bounds the latency a big backlog adds to a ping.
const MAX_BATCH: usize = 64;
/// How long a close frame may take to leave before the socket is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Why a connection ends. `code: None` means the peer is gone (or closed first), so
/// no close frame of ours is owed beyond the protocol's echo.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CloseReason {
    code: Option<u16>,
    reason: &'static str,
}

/// First writer wins: the first recorded reason is the one sent.
#[derive(Clone)]
struct Closer {
    tx: Arc<watch::Sender<Option<CloseReason>>>,
}

impl Closer {
    fn new() -> (Closer, watch::Receiver<Option<CloseReason>>) {
        let (tx, rx) = watch::channel(None);
        (Closer { tx: Arc::new(tx) }, rx)
    }

    fn close(&self, code: Option<u16>, reason: &'static str) {
        self.tx.send_if_modified(|cur| {
            if cur.is_some() {
                return false;
            }
            *cur = Some(CloseReason { code, reason });
            true
        });
    }
}

/// Milliseconds since the session started at which the client last sent anything.
struct Liveness {
    start: Instant,
    last_seen_ms: AtomicU64,
}

impl Liveness {
    fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_seen_ms.store(ms, Ordering::Relaxed);
    }

    fn seen_since(&self, at: Instant) -> bool {
        let at_ms = at.saturating_duration_since(self.start).as_millis() as u64;
        self.last_seen_ms.load(Ordering::Relaxed) >= at_ms
    }
}

/// Serves one upgraded connection until it ends. `_drain` is dropped when the
/// session is fully finished, which is what a draining server waits for.
pub async fn serve<S>(
    ws: WebSocketStream<S>,
    node: Arc<Node>,
    user: UserId,
    shutdown: Shutdown,
    _drain: mpsc::Sender<()>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let metrics = node.metrics.clone();
    metrics.connections.increment(1.0);
    metrics.connections_total.increment(1);
    let id = node.next_session_id();
    let (outbox, outbox_rx) = outbox(node.config.outbound_queue_bytes);
    let (sink, stream) = ws.split();
    let (closer, close_rx) = Closer::new();
    let liveness = Arc::new(Liveness {
        start: Instant::now(),
        last_seen_ms: AtomicU64::new(0),
    });

    let personal = Channel::personal(&user);
    // Requests are boxed: their futures (broker round trips) are large and rare, and
    // inlined they would make every idle connection's task that much bigger.
    if let Err(e) = Box::pin(node.subscribe(id, &outbox, &personal, None, None)).await {
        tracing::warn!(user = %user, error = %e.message, "cannot subscribe personal channel; closing");
        closer.close(Some(close::TRY_AGAIN_LATER), "broker unavailable");
    }

    let wl = write_loop(
        sink,
        outbox_rx,
        closer.clone(),
        close_rx.clone(),
        liveness.clone(),
        node.clone(),
    );
    let writer = tokio::spawn(wl);

    let mut session = Session {
        id,
        user,
        personal,
        outbox,
        channels: HashSet::new(),
        node: node.clone(),
        closer: closer.clone(),
        publisher: None,
    };
    session
        .read_loop(stream, close_rx, shutdown, &liveness)
        .await;

    // Leave every channel before the writer finishes, so no delivery targets a dead queue.
    let channels: Vec<Channel> = session.channels.drain().collect();
    for channel in channels.iter().chain(std::iter::once(&session.personal)) {
        Box::pin(node.unsubscribe(id, channel)).await;
    }
    drop(session);
    if let Err(e) = writer.await {
        tracing::error!(error = %e, "session writer panicked");
    }
    metrics.connections.decrement(1.0);
}

struct Session {
    id: SessionId,
    user: UserId,
    personal: Channel,
    outbox: Outbox,
    /// Channels joined by request (the personal channel is not counted).
    channels: HashSet<Channel>,
    node: Arc<Node>,
    closer: Closer,
    /// This connection's publish pipeline, started on its first publish.
    publisher: Option<mpsc::Sender<(Option<u64>, PublishRequest)>>,
}

/// Publishes queued per connection at most; more make the reader wait.
const PUBLISH_QUEUE: usize = 1024;
/// Publishes sent to the broker as one batch at most.
const PUBLISH_BATCH: usize = 256;

/// Publishes a connection's requests in order, batching whatever queued up while
/// the previous batch was in flight, and answers each (ok or error) in order. A
/// publisher is thus not limited to one broker round trip per message.
async fn publish_loop(
    node: Arc<Node>,
    user: UserId,
    outbox: Outbox,
    mut rx: mpsc::Receiver<(Option<u64>, PublishRequest)>,
) {
    let mut jobs = Vec::new();
    while rx.recv_many(&mut jobs, PUBLISH_BATCH).await > 0 {
        let (ids, requests): (Vec<Option<u64>>, Vec<PublishRequest>) = jobs.drain(..).unzip();
        let results = node.publish_batch(&user, requests).await;
        for (id, result) in ids.into_iter().zip(results) {
            let frame = match result {
                Ok(ack) => match id {
                    Some(id) => ServerFrame::Ok {
                        id,
                        offset: ack.offset,
                        epoch: ack.epoch.as_deref(),
                        recovered: None,
                    }
                    .to_bytes(),
                    None => continue,
                },
                Err(e) => {
                    node.metrics.error(e.code);
                    FrameError { id, ..e }.to_frame()
                }
            };
            outbox.push(frame, &node.metrics);
        }
    }
}

impl Session {
    async fn read_loop<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        mut stream: SplitStream<WebSocketStream<S>>,
        mut close_rx: watch::Receiver<Option<CloseReason>>,
        mut shutdown: Shutdown,
        liveness: &Liveness,
    ) {
        if close_rx.borrow().is_some() {
            return;
        }
        loop {
            tokio::select! {
                next = stream.next() => match next {
                    None => {
                        self.closer.close(None, "client gone");
                        return;
                    }
                    Some(Err(e)) => {
                        if is_too_big(&e) {
                            self.node.metrics.error(ErrorCode::TooLarge);
                            self.closer.close(Some(close::MESSAGE_TOO_BIG), "frame too large");
                        } else {
                            tracing::debug!(error = %e, "websocket read error");
                            self.closer.close(None, "read error");
                        }
                        return;
                    }
                    Some(Ok(msg)) => {
                        liveness.touch();
                        if msg.is_close() {
                            self.closer.close(None, "client closed");
                            return;
                        }
                        self.on_message(msg).await;
                    }
                },
                _ = close_rx.changed() => return,
                _ = shutdown.recv() => {
                    self.closer.close(Some(close::SERVICE_RESTART), "server restarting");
                    return;
                }
            }
        }
    }

    async fn on_message(&mut self, msg: Message) {
        let text = match &msg {
            Message::Text(t) => t.as_str(),
            Message::Binary(_) => {
                self.refuse(FrameError::new(
                    None,
                    ErrorCode::BadRequest,
                    "binary frames are not supported; send JSON text frames",
                ));
                return;
            }
            _ => return,
        };
        if text.len() > self.node.config.max_frame_bytes {
            let id = parse_client_frame(text).ok().and_then(|f| f.id);
            self.refuse(FrameError::new(
                id,
                ErrorCode::TooLarge,
                format!(
                    "frame is {} bytes; the limit is {}",
                    text.len(),
                    self.node.config.max_frame_bytes
                ),
            ));
            return;
        }
        match parse_client_frame(text) {
            Ok(frame) => {
                let id = frame.id;
                if let Err(e) = Box::pin(self.handle(frame)).await {
                    self.refuse(FrameError { id, ..e });
                }
            }
            Err(e) => self.refuse(e),
        }
    }

    fn send(&self, frame: Bytes) {
        self.outbox.push(frame, &self.node.metrics);
    }

    fn refuse(&self, error: FrameError) {
        self.node.metrics.error(error.code);
        self.send(error.to_frame());
    }

    fn ack(&self, id: Option<u64>) {
        if let Some(id) = id {
            self.send(ServerFrame::ok(id).to_bytes());
        }
    }

    async fn handle(&mut self, frame: ClientFrame) -> Result<(), FrameError> {
        let id = frame.id;
        let err = |code, message: String| FrameError::new(id, code, message);
        match frame.request {
            Request::Ping => {
                self.send(ServerFrame::Pong { id }.to_bytes());
            }
            Request::Subscribe { channel, since } => {
                if let Some(owner) = channel.personal_owner()
                    && owner != self.user.as_str()
                {
                    return Err(err(
                        ErrorCode::Forbidden,
                        format!("`{channel}` is another user's personal channel"),
                    ));
                }
                if channel == self.personal || self.channels.contains(&channel) {
                    if since.is_some() {
                        return Err(err(
                            ErrorCode::BadRequest,
                            format!(
                                "already subscribed to `{channel}`; unsubscribe before resuming with `since`"
                            ),
                        ));
                    }
                    self.ack(id);
                    return Ok(());
                }
                let max = self.node.config.max_channels_per_connection;
                if self.channels.len() >= max {
                    return Err(err(
                        ErrorCode::Limit,
                        format!("at most {max} channels per connection"),
                    ));
                }
                self.node
                    .subscribe(self.id, &self.outbox, &channel, since.as_ref(), id)
                    .await?;
                self.channels.insert(channel);
            }
            Request::Unsubscribe { channel } => {
                if channel == self.personal {
                    return Err(err(
                        ErrorCode::Forbidden,
                        "a connection stays subscribed to its personal channel".into(),
                    ));
                }
                if !self.channels.remove(&channel) {
                    return Err(err(
                        ErrorCode::NotSubscribed,
                        format!("not subscribed to `{channel}`"),
                    ));
                }
                self.node.unsubscribe(self.id, &channel).await;
                self.ack(id);
            }
            Request::Publish {
                channel,
                data,
                idempotency_key,
            } => {
                let tx = self.publisher.get_or_insert_with(|| {
                    let (tx, rx) = mpsc::channel(PUBLISH_QUEUE);
                    tokio::spawn(publish_loop(
                        self.node.clone(),
                        self.user.clone(),
                        self.outbox.clone(),
                        rx,
                    ));
                    tx
                });
                let request = PublishRequest {
                    channel,
                    data,
                    idempotency_key,
                };
                // A full queue makes this wait, which stops reading this client:
                // backpressure instead of unbounded memory.
                if tx.send((id, request)).await.is_err() {
                    return Err(err(ErrorCode::Internal, "publisher stopped".into()));
                }
            }
        }
        Ok(())
    }
}

fn is_too_big(e: &tungstenite::Error) -> bool {
    matches!(e, tungstenite::Error::Capacity(_))
}

type Sink<S> = SplitSink<WebSocketStream<S>, Message>;

/// What woke the writer.
enum Step {
    Recheck,
    Overflow,
    PongDeadline,
    Ping,
    Frames,
}

async fn write_loop<S: AsyncRead + AsyncWrite + Unpin>(
    mut sink: Sink<S>,
    mut rx: OutboxReceiver,
    closer: Closer,
    mut close_rx: watch::Receiver<Option<CloseReason>>,
    liveness: Arc<Liveness>,
    node: Arc<Node>,
) {
    let config = &node.config;
    let mut next_ping = Instant::now() + config.ping_interval;
    // The first unanswered ping: (when sent, deadline for any sign of life).
    let mut awaiting: Option<(Instant, Instant)> = None;
    // Grows on the first burst only: an idle connection holds no batch buffer.
    let mut batch: Vec<Bytes> = Vec::new();
    let overflow = rx.overflow_signal();
    // When frames were last written, for write coalescing.
    let mut last_write: Option<Instant> = None;

    let reason = loop {
        if let Some(reason) = close_rx.borrow_and_update().clone() {
            break reason;
        }
        let deadline = awaiting.map(|(_, d)| d);
        let step = tokio::select! {
            biased;
            _ = close_rx.changed() => Step::Recheck,
            _ = overflow.overflowed() => Step::Overflow,
            _ = sleep_until(deadline.unwrap_or(next_ping)), if deadline.is_some() => Step::PongDeadline,
            _ = sleep_until(next_ping) => Step::Ping,
            _ = rx.recv_batch(&mut batch, MAX_BATCH) => Step::Frames,
        };
        match step {
            Step::Recheck => {}
            Step::Overflow => closer.close(Some(close::SLOW_CONSUMER), "slow consumer"),
            Step::PongDeadline => {
                if let Some((sent, _)) = awaiting.take()
                    && !liveness.seen_since(sent)
                {
                    node.metrics.keepalive_timeouts.increment(1);
                    closer.close(Some(close::KEEPALIVE_TIMEOUT), "keepalive timeout");
                }
            }
            Step::Ping => {
                let now = Instant::now();
                next_ping = now + config.ping_interval;
                if awaiting.is_none() {
                    awaiting = Some((now, now + config.pong_timeout));
                }
                let ping = Some(Message::Ping(Bytes::new()));
                write_batch(
                    &mut sink,
                    &rx,
                    &overflow,
                    &mut batch,
                    ping,
                    &closer,
                    &mut close_rx,
                )
                .await;
            }
            Step::Frames => {
                // Adaptive coalescing, in the spirit of Nagle's rule: a connection
                // that wrote less than `write_coalesce` ago gathers frames until that
                // much time has passed, so under load it writes at most once per
                // window, in larger batches (fewer syscalls, fewer wakeups on both
                // ends); a connection that was quiet writes at once, so at low rates
                // nothing waits.
                let window = config.write_coalesce;
                if let Some(last) = last_write
                    && batch.len() < MAX_BATCH
                    && last.elapsed() < window
                {
                    sleep_until(last + window).await;
                    let room = MAX_BATCH - batch.len();
                    rx.drain_now(&mut batch, room);
                }
                last_write = Some(Instant::now());
                write_batch(
                    &mut sink,
                    &rx,
                    &overflow,
                    &mut batch,
                    None,
                    &closer,
                    &mut close_rx,
                )
                .await;
            }
        }
    };

    let _ = timeout(CLOSE_GRACE, async {
        if let Some(code) = reason.code {
            let frame = CloseFrame {
                code: CloseCode::from(code),
                reason: Utf8Bytes::from_static(reason.reason),
            };
            let _ = sink.send(Message::Close(Some(frame))).await;
        }
        let _ = sink.close().await;
    })
    .await;
}

/// Writes `batch` (and an optional control frame) with one flush. Gives up, without
/// waiting for the socket, as soon as the connection is to be closed. Returns whether
/// everything was written.
async fn write_batch<S: AsyncRead + AsyncWrite + Unpin>(
    sink: &mut Sink<S>,
    rx: &OutboxReceiver,
    overflow: &OverflowSignal,
    batch: &mut Vec<Bytes>,
    control: Option<Message>,
    closer: &Closer,
    close_rx: &mut watch::Receiver<Option<CloseReason>>,
) -> bool {
    let bytes: usize = batch.iter().map(Bytes::len).sum();
    let write = async {
        if let Some(control) = control {
            sink.feed(control).await?;
        }
        for frame in batch.drain(..) {
            // Frames are JSON produced by serde_json, hence UTF-8; the shared bytes
            // go to the socket without a copy.
            let text = Utf8Bytes::try_from(frame.clone())
                .unwrap_or_else(|_| Utf8Bytes::from(String::from_utf8_lossy(&frame).into_owned()));
            sink.feed(Message::Text(text)).await?;
        }
        sink.flush().await
    };
    let ok = tokio::select! {
        biased;
        r = write => match r {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!(error = %e, "websocket write error");
                closer.close(None, "write error");
                false
            }
        },
        _ = overflow.overflowed() => {
            closer.close(Some(close::SLOW_CONSUMER), "slow consumer");
            false
        }
        _ = close_rx.changed() => false,
    };
    rx.written(bytes);
    ok
}
