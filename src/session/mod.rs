//! One WebSocket connection.
//!
//! Up to three tasks per connection. The reader (this module) parses client frames
//! and performs requests (which may wait on the broker); the [`writer`] owns the
//! socket's sending half, drains the [`Outbox`] in batches, sends keepalive pings
//! and performs the close; the [`publish`] pipeline, started on the first publish,
//! sends the connection's publishes in order. They share one [`Closer`]: whoever
//! decides the connection ends (client gone, slow consumer, keepalive timeout,
//! shutdown, oversized frame) records why, and all stop.

mod closer;
mod publish;
mod writer;

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::SplitStream;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::WebSocketStream;
use tungstenite::Message;

use crate::channel::{Channel, UserId};
use crate::codes::{CloseCode, ErrorCode};
use crate::hub::SessionId;
use crate::node::{Node, NodeError, PublishRequest};
use crate::outbox::{Outbox, outbox};
use crate::protocol::{ClientFrame, FrameError, Request, ServerFrame, parse_client_frame};
use crate::shutdown::Shutdown;
use closer::{CloseReason, Closer, Liveness};

/// The `error` frame answering request `id` that the node refused with `e`.
fn refusal(id: Option<u64>, e: &NodeError) -> FrameError {
    FrameError::new(id, e.code(), e.to_string())
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
    let metrics = node.metrics().clone();
    metrics.connections.increment(1.0);
    metrics.connections_total.increment(1);
    let id = node.next_session_id();
    let (outbox, outbox_rx) = outbox(node.config().outbound_queue_bytes);
    let (sink, stream) = ws.split();
    let (closer, close_rx) = Closer::new();
    let liveness = Arc::new(Liveness::new());

    let personal = Channel::personal(&user);
    // Requests are boxed: their futures (broker round trips) are large and rare, and
    // inlined they would make every idle connection's task that much bigger.
    if let Err(e) = Box::pin(node.subscribe(id, &outbox, &personal, None, None)).await {
        tracing::warn!(user = %user, error = %e, "cannot subscribe personal channel; closing");
        closer.close(CloseCode::TryAgainLater);
    }

    let wl = writer::write_loop(
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
    publisher: Option<mpsc::Sender<publish::Job>>,
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
                        self.closer.gone("client gone");
                        return;
                    }
                    Some(Err(e)) => {
                        if is_too_big(&e) {
                            self.node.metrics().error(ErrorCode::TooLarge);
                            self.closer.close(CloseCode::MessageTooBig);
                        } else {
                            tracing::debug!(error = %e, "websocket read error");
                            self.closer.gone("read error");
                        }
                        return;
                    }
                    Some(Ok(msg)) => {
                        liveness.touch();
                        if msg.is_close() {
                            self.closer.gone("client closed");
                            return;
                        }
                        self.on_message(msg).await;
                    }
                },
                _ = close_rx.changed() => return,
                _ = shutdown.recv() => {
                    self.closer.close(CloseCode::ServiceRestart);
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
        if text.len() > self.node.config().max_frame_bytes {
            let id = parse_client_frame(text).ok().and_then(|f| f.id);
            self.refuse(FrameError::new(
                id,
                ErrorCode::TooLarge,
                format!(
                    "frame is {} bytes; the limit is {}",
                    text.len(),
                    self.node.config().max_frame_bytes
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
        self.outbox.push(frame, self.node.metrics());
    }

    fn refuse(&self, error: FrameError) {
        self.node.metrics().error(error.code);
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
                let max = self.node.config().max_channels_per_connection;
                if self.channels.len() >= max {
                    return Err(err(
                        ErrorCode::Limit,
                        format!("at most {max} channels per connection"),
                    ));
                }
                self.node
                    .subscribe(self.id, &self.outbox, &channel, since.as_ref(), id)
                    .await
                    .map_err(|e| refusal(id, &e))?;
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
                    let (tx, rx) = mpsc::channel(publish::PUBLISH_QUEUE);
                    tokio::spawn(publish::publish_loop(
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
