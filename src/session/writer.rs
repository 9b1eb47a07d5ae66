//! A connection's writer: owns the socket's sending half, drains the [`Outbox`] in
//! batches (with adaptive write coalescing), sends keepalive pings, and performs
//! the close.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use std::future::poll_fn;
use std::pin::Pin;
use std::task::{Poll, ready};

use futures_util::stream::SplitSink;
use futures_util::{Sink as _, SinkExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, sleep_until, timeout};
use tokio_tungstenite::WebSocketStream;
use tungstenite::Message;
use tungstenite::protocol::CloseFrame;
use tungstenite::protocol::frame::Utf8Bytes;

use super::closer::Closer;
use crate::codes::CloseCode;
use crate::node::Node;
use crate::outbox::OutboxReceiver;

/// Frames written per flush at most; bounds the latency a big backlog adds to a ping.
const MAX_BATCH: usize = 64;
/// How long a close frame may take to leave before the socket is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

type Sink<S> = SplitSink<WebSocketStream<S>, Message>;

/// What woke the writer.
enum Step {
    /// A ping is due, or the pong deadline passed.
    Keepalive,
    /// Frames, or a wakeup without any (an overflow or a close: looked at first).
    Frames,
}

pub async fn write_loop<S: AsyncRead + AsyncWrite + Unpin>(
    mut sink: Sink<S>,
    mut rx: OutboxReceiver,
    closer: Closer,
    node: Arc<Node>,
) {
    let config = node.config();
    let mut next_ping = Instant::now() + config.ping_interval;
    // The first unanswered ping: (when sent, deadline for any sign of life).
    let mut awaiting: Option<(Instant, Instant)> = None;
    // Grows on the first burst only: an idle connection holds no batch buffer.
    let mut batch: Vec<Bytes> = Vec::new();
    // When frames were last written, for write coalescing.
    let mut last_write: Option<Instant> = None;

    // One keepalive timer, at the earlier of the next ping and the pong deadline.
    // It lives as long as the connection and is reset, not rebuilt: a `Sleep` made
    // per loop turn is a timer-wheel insert and remove per delivery, which at low
    // rates (one frame per wakeup) is a measurable share of the cost of a write;
    // and one timer instead of two is 120 bytes less per idle connection.
    let timer = sleep_until(next_ping);
    tokio::pin!(timer);

    let reason = loop {
        if let Some(reason) = closer.reason() {
            break reason;
        }
        if rx.overflowed() {
            closer.close(CloseCode::SlowConsumer);
            continue;
        }
        let step = tokio::select! {
            biased;
            _ = &mut timer => Step::Keepalive,
            _ = rx.recv_batch(&mut batch, MAX_BATCH) => Step::Frames,
        };
        match step {
            Step::Keepalive => {
                let now = Instant::now();
                if let Some((sent, due)) = awaiting
                    && due <= now
                {
                    awaiting = None;
                    if !closer.liveness().seen_since(sent) {
                        node.metrics().keepalive_timeouts.increment(1);
                        closer.close(CloseCode::KeepaliveTimeout);
                        continue;
                    }
                }
                let ping_due = next_ping <= now;
                if ping_due {
                    next_ping = now + config.ping_interval;
                    if awaiting.is_none() {
                        awaiting = Some((now, now + config.pong_timeout));
                    }
                }
                let wake = awaiting.map_or(next_ping, |(_, due)| due.min(next_ping));
                timer.as_mut().reset(wake);
                if ping_due {
                    let ping = Some(Message::Ping(Bytes::new()));
                    write_batch(&mut sink, &rx, &mut batch, ping, &closer).await;
                }
            }
            Step::Frames if batch.is_empty() => {}
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
                write_batch(&mut sink, &rx, &mut batch, None, &closer).await;
            }
        }
    };

    // Boxed: it runs once, at the end, and inline it would size every idle
    // connection's writer.
    let _ = Box::pin(timeout(CLOSE_GRACE, async {
        if let Some(code) = reason.code {
            // What was queued before the close (an error frame saying why, the
            // last answers) goes first; a slow consumer's backlog does not.
            if code != CloseCode::SlowConsumer {
                batch.clear();
                rx.drain_now(&mut batch, usize::MAX);
                for frame in batch.drain(..) {
                    let _ = sink.feed(Message::Text(text(frame))).await;
                }
            }
            let frame = CloseFrame {
                code: code.code().into(),
                reason: Utf8Bytes::from_static(code.reason()),
            };
            let _ = sink.send(Message::Close(Some(frame))).await;
        }
        let _ = sink.close().await;
    }))
    .await;
}

/// Writes `batch` (and an optional control frame) with one flush. Gives up, without
/// waiting for the socket, as soon as the connection is to be closed. Returns whether
/// everything was written.
async fn write_batch<S: AsyncRead + AsyncWrite + Unpin>(
    sink: &mut Sink<S>,
    rx: &OutboxReceiver,
    batch: &mut Vec<Bytes>,
    control: Option<Message>,
    closer: &Closer,
) -> bool {
    let bytes: usize = batch.iter().map(Bytes::len).sum();
    let mut control = control;
    let mut frames = batch.drain(..);
    // A hand-written poll rather than `feed(..).await` per frame: the writer's
    // state is what every idle connection keeps, and the nested `Feed` futures made
    // this step 480 bytes of it.
    let write = poll_fn(|cx| -> Poll<Result<(), tungstenite::Error>> {
        while control.is_some() || frames.len() > 0 {
            ready!(Pin::new(&mut *sink).poll_ready(cx))?;
            let message = match control.take() {
                Some(c) => c,
                None => match frames.next() {
                    Some(frame) => Message::Text(text(frame)),
                    None => break,
                },
            };
            Pin::new(&mut *sink).start_send(message)?;
        }
        Pin::new(&mut *sink).poll_flush(cx)
    });
    tokio::pin!(write);
    let ok = loop {
        tokio::select! {
            biased;
            r = &mut write => break match r {
                Ok(()) => true,
                Err(e) => {
                    tracing::debug!(error = %e, "websocket write error");
                    closer.gone("write error");
                    false
                }
            },
            // The socket is full; frames may keep coming (one wakeup), and an
            // overflow or a close ends the wait.
            _ = rx.woken() => {
                if rx.overflowed() {
                    closer.close(CloseCode::SlowConsumer);
                    break false;
                }
                if closer.reason().is_some() {
                    break false;
                }
            }
        }
    };
    rx.written(bytes);
    ok
}

/// A frame as a text message. Frames are JSON produced by serde_json, hence UTF-8;
/// the shared bytes go to the socket without a copy.
fn text(frame: Bytes) -> Utf8Bytes {
    Utf8Bytes::try_from(frame.clone())
        .unwrap_or_else(|_| Utf8Bytes::from(String::from_utf8_lossy(&frame).into_owned()))
}
