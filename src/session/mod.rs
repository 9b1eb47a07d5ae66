//! One WebSocket connection.
//!
//! Up to three tasks per connection. The reader ([`reader`]) authenticates the
//! connection when the upgrade did not ([`connect`]), then parses client frames and
//! performs requests (which may wait on the broker); the [`writer`] owns the
//! socket's sending half, drains the [`Outbox`] in batches, sends keepalive pings
//! and performs the close; the [`publish`] pipeline, started on the first publish,
//! sends the connection's publishes in order. They share one [`Closer`]: whoever
//! decides the connection ends (client gone, slow consumer, keepalive timeout, an
//! expired token, a command from the API, shutdown, an oversized frame) records
//! why, and all stop.

mod closer;
mod connect;
mod publish;
mod reader;
mod requests;
mod writer;

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;

use crate::auth::token::{ConnectClaims, now_secs};
use crate::channel::Channel;
use crate::codes::CloseCode;
use crate::identity::Identity;
use crate::limits::Bucket;
use crate::node::{Ack, Node, NodeError};
use crate::outbox::outbox;
use crate::protocol::{FrameError, ServerFrame};
use crate::shutdown::Shutdown;
use closer::Closer;
use reader::Session;

/// Who the connection is, as far as the upgrade request said.
pub enum Start {
    /// Authenticated by the upgrade request (`Authorization: Bearer`, `?token=`,
    /// or a self-asserted `?user=` in development mode).
    Ready(Authenticated),
    /// Not yet: the first frame must be `connect` with a token.
    AwaitConnect,
}

/// An authenticated connection's identity and what its token asked for.
pub struct Authenticated {
    pub identity: Identity,
    /// Unix seconds; `None` for identities without a token (development mode).
    pub expires_at: Option<u64>,
    /// Server-side subscriptions to make at connect (the token's `channels`).
    pub channels: Vec<Channel>,
}

impl Authenticated {
    pub fn from_claims(claims: ConnectClaims) -> Authenticated {
        let mut identity = Identity::new(claims.user, claims.info);
        identity.meta = claims.meta;
        Authenticated {
            identity,
            expires_at: Some(claims.expires_at),
            channels: claims.channels,
        }
    }
}

/// The `error` frame answering request `id` that the node refused with `e`.
fn refusal(id: Option<u64>, e: &NodeError) -> FrameError {
    FrameError::new(id, e.code(), e.to_string())
}

/// Serves one upgraded connection until it ends. `_drain` is dropped when the
/// session is fully finished, which is what a draining server waits for.
///
/// Not an `async fn`, for memory: the future this returns is what every idle
/// connection keeps for its whole life, and an `async fn` would store its
/// arguments (the 328-byte stream before it is split, the identity before it
/// moves into the session) beside everything made from them. Splitting the
/// stream and starting the writer here, and authenticating in a boxed future that
/// ends before the read loop starts, leaves only the session and its read loop in
/// the long-lived state (see the optimisation log in docs/BENCHMARKS.md).
pub fn serve<S>(
    ws: WebSocketStream<S>,
    node: Arc<Node>,
    start: Start,
    mut shutdown: Shutdown,
    drain: mpsc::Sender<()>,
) -> impl Future<Output = ()> + Send + 'static
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    node.metrics().connection_opened();
    let id = node.next_session_id();
    let (outbox, outbox_rx) = outbox(node.config().outbound_queue_bytes);
    let (sink, mut stream) = ws.split();
    let closer = Closer::new(outbox.clone());
    let writer = tokio::spawn(writer::write_loop(
        sink,
        outbox_rx,
        closer.clone(),
        node.clone(),
    ));
    let start = Box::new(start);
    async move {
        if let Some(mut session) = Box::pin(open(
            *start,
            id,
            &mut stream,
            &node,
            &outbox,
            &closer,
            &mut shutdown,
        ))
        .await
        {
            session.read_loop(&mut stream, shutdown).await;
            Box::pin(session.end()).await;
        }
        drop(outbox);
        if let Err(e) = writer.await {
            tracing::error!(error = %e, "session writer panicked");
        }
        node.metrics().connection_closed();
        drop(drain);
    }
}

/// Authenticates the connection (when the upgrade did not), admits its user, and
/// sets the session up: `None` when the connection is to end (the closer says why;
/// a session that was registered has been ended).
#[allow(clippy::too_many_arguments)]
async fn open<S>(
    start: Start,
    id: crate::hub::SessionId,
    stream: &mut futures_util::stream::SplitStream<WebSocketStream<S>>,
    node: &Arc<Node>,
    outbox: &crate::outbox::Outbox,
    closer: &Closer,
    shutdown: &mut Shutdown,
) -> Option<Session>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let metrics = node.metrics();
    let (auth, connect_id) = match start {
        Start::Ready(a) => (a, None),
        Start::AwaitConnect => {
            connect::await_connect(stream, node, outbox, closer, shutdown).await?
        }
    };
    let user = auth.identity.user.clone();
    if node.connections().open(&user).is_err() {
        metrics.connection_refused(crate::metrics::Refusal::PerUser);
        metrics.error(crate::codes::ErrorCode::Limit);
        let e = FrameError::new(
            connect_id,
            crate::codes::ErrorCode::Limit,
            "this user has too many connections on this instance (--max-connections-per-user)",
        );
        outbox.push(e.to_frame(), metrics);
        closer.close(CloseCode::TooManyConnections);
        return None;
    }
    let inbox = node.register_session(&user, id);
    let config = node.config();
    // Sent once the personal channel is live (in `setup`): a client that sees
    // `connected` can be reached on it. (A channel of its token that cannot be
    // subscribed still closes it with 1013 afterwards.)
    let connected = ServerFrame::Connected {
        id: connect_id,
        client: &auth.identity.client,
        user: &user,
        expires_in: auth.expires_at.map(|at| at.saturating_sub(now_secs())),
        ping_interval: config.ping_interval.as_secs(),
        pong_timeout: config.pong_timeout.as_secs(),
    }
    .to_bytes();
    let limits = &config.limits;
    let mut session = Session {
        id,
        personal: Channel::personal(&user),
        identity: auth.identity,
        expires_at: auth.expires_at,
        outbox: outbox.clone(),
        channels: HashMap::new(),
        node: node.clone(),
        closer: closer.clone(),
        publisher: None,
        publish_bucket: Bucket::new(limits.publish_rate),
        request_bucket: Bucket::new(limits.subscribe_rate),
        inbox,
    };
    if session.setup(connected, auth.channels).await {
        Some(session)
    } else {
        session.end().await;
        None
    }
}

impl Session {
    /// Leaves every channel before the writer finishes (so no delivery targets a
    /// dead queue) and gives the user's connection slot back.
    async fn end(mut self) {
        self.leave_all().await;
        self.node.unregister_session(&self.identity.user, self.id);
        self.node.connections().close(&self.identity.user);
    }

    /// The personal channel, then `connected`, then the token's server-side
    /// subscriptions; false when the connection could not be set up (closed with
    /// 1013: before `connected` if the personal channel failed, after it if a
    /// channel of the token did).
    async fn setup(&mut self, connected: bytes::Bytes, channels: Vec<Channel>) -> bool {
        if let Some(personal) = self.personal.clone()
            && let Err(e) = self
                .node
                .subscribe(
                    self.id,
                    &self.identity,
                    &self.outbox,
                    &personal,
                    None,
                    Ack::Silent,
                )
                .await
        {
            tracing::warn!(error = %e, "cannot subscribe the personal channel; closing");
            self.closer.close(CloseCode::TryAgainLater);
            return false;
        }
        self.outbox.push(connected, self.node.metrics());
        for channel in channels {
            if let Err(e) = self.subscribe_server_side(channel.clone()).await {
                tracing::warn!(error = %e, %channel, "cannot subscribe a channel of the token; closing");
                self.closer.close(CloseCode::TryAgainLater);
                return false;
            }
        }
        true
    }
}

/// The close code a read error deserves, or `None` when the peer is simply gone
/// (reset, EOF, I/O error) and there is nobody to tell.
///
/// tungstenite reports a broken frame as an error and leaves answering to us;
/// RFC 6455 wants the connection failed with 1002 / 1007 / 1009, so a client
/// library can tell its own bug from a server going away.
fn read_error_close(e: &tungstenite::Error) -> Option<CloseCode> {
    match e {
        tungstenite::Error::Capacity(_) => Some(CloseCode::MessageTooBig),
        tungstenite::Error::Utf8(_) => Some(CloseCode::InvalidPayload),
        tungstenite::Error::Protocol(p) => match p {
            tungstenite::error::ProtocolError::ResetWithoutClosingHandshake
            | tungstenite::error::ProtocolError::ReceivedAfterClosing
            | tungstenite::error::ProtocolError::SendAfterClosing => None,
            _ => Some(CloseCode::ProtocolError),
        },
        _ => None,
    }
}
