//! The reader of an authenticated connection: client requests one at a time
//! (each carried out by [`super::requests`]),
//! commands from the API, and the expiry of the connection's and its
//! subscriptions' tokens.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::SplitStream;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::time::{Sleep, sleep};
use tokio_tungstenite::WebSocketStream;
use tungstenite::Message;

use super::closer::Closer;
use super::{publish, read_error_close};
use crate::auth::token::{now_secs, until};
use crate::channel::Channel;
use crate::codes::{CloseCode, ErrorCode};
use crate::hub::SessionId;
use crate::identity::Identity;
use crate::limits::Bucket;
use crate::node::sessions::{Command, Inbox};
use crate::node::{Ack, Node};
use crate::outbox::Outbox;
use crate::protocol::{FrameError, ServerFrame, Since, parse_client_frame};
use crate::shutdown::Shutdown;

/// What the session knows about one of its subscriptions.
#[derive(Debug, Clone, Copy, Default)]
pub struct ChannelState {
    /// Unix seconds at which the subscription token expires, if it came with one.
    pub token_expires: Option<u64>,
}

impl ChannelState {
    /// A server-side subscription (token `channels`, the API): no token of its own.
    pub fn server() -> ChannelState {
        ChannelState::default()
    }
}

pub struct Session {
    pub id: SessionId,
    pub identity: Identity,
    pub personal: Option<Channel>,
    /// Unix seconds at which the connection token expires.
    pub expires_at: Option<u64>,
    pub outbox: Outbox,
    /// Channels joined (the personal channel is not counted).
    pub channels: HashMap<Channel, ChannelState>,
    pub node: Arc<Node>,
    pub closer: Closer,
    /// This connection's publish pipeline, started on its first publish.
    pub publisher: Option<mpsc::Sender<publish::Job>>,
    pub publish_bucket: Bucket,
    /// Subscribe, unsubscribe and reads.
    pub request_bucket: Bucket,
    pub inbox: Arc<Inbox>,
}

impl Session {
    pub async fn read_loop<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        stream: &mut SplitStream<WebSocketStream<S>>,
        mut shutdown: Shutdown,
    ) {
        let closer = self.closer.clone();
        if closer.reason().is_some() {
            return;
        }
        let inbox = self.inbox.clone();
        // The expiry timer is armed only while a token can expire, and re-armed only
        // when the due time changes: a timer made per loop turn is a timer-wheel
        // insert and remove per client frame. Boxed, so a connection without a
        // token keeps no timer in its (long-lived) state.
        let mut expiry: Option<(u64, Pin<Box<Sleep>>)> = None;
        loop {
            match (self.next_expiry_at(), &mut expiry) {
                (None, armed) => *armed = None,
                (Some(due), Some((at, _))) if *at == due => {}
                (Some(due), armed) => *armed = Some((due, Box::pin(sleep(until(due))))),
            }
            let expired = async {
                match &mut expiry {
                    Some((_, timer)) => timer.as_mut().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                next = stream.next() => match next {
                    None => {
                        self.closer.gone("client gone");
                        return;
                    }
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "websocket read error");
                        match read_error_close(&e) {
                            Some(code) => {
                                if code == CloseCode::MessageTooBig {
                                    self.node.metrics().error(ErrorCode::TooLarge);
                                }
                                self.closer.close(code);
                            }
                            None => self.closer.gone("read error"),
                        }
                        return;
                    }
                    Some(Ok(msg)) => {
                        closer.liveness().touch();
                        if msg.is_close() {
                            self.closer.gone("client closed");
                            return;
                        }
                        self.on_message(msg).await;
                    }
                },
                _ = inbox.ready.notified() => {
                    for cmd in inbox.take() {
                        Box::pin(self.on_command(cmd)).await;
                    }
                }
                _ = expired => {
                    expiry = None;
                    Box::pin(self.on_expiry()).await;
                }
                _ = closer.closed() => return,
                _ = shutdown.recv() => {
                    self.closer.close(CloseCode::ServiceRestart);
                    return;
                }
            }
            if closer.reason().is_some() {
                return;
            }
        }
    }

    /// When (Unix seconds) the next token, the connection's or a subscription's,
    /// runs out of its grace.
    fn next_expiry_at(&self) -> Option<u64> {
        let grace = self.node.config().auth.token_expiry_grace.as_secs();
        self.expires_at
            .into_iter()
            .chain(self.channels.values().filter_map(|c| c.token_expires))
            .min()
            .map(|at| at.saturating_add(grace))
    }

    async fn on_expiry(&mut self) {
        let grace = self.node.config().auth.token_expiry_grace.as_secs();
        let now = now_secs();
        let expired = |at: u64| at.saturating_add(grace) <= now;
        if self.expires_at.is_some_and(expired) {
            self.node
                .metrics()
                .auth_failure(crate::metrics::AuthFailure::TokenExpired);
            self.closer.close(CloseCode::TokenExpired);
            return;
        }
        let ended: Vec<Channel> = self
            .channels
            .iter()
            .filter(|(_, s)| s.token_expires.is_some_and(expired))
            .map(|(c, _)| c.clone())
            .collect();
        for channel in ended {
            self.channels.remove(&channel);
            self.node
                .unsubscribe(self.id, &self.identity.client, &channel)
                .await;
            self.send(
                ServerFrame::Unsubscribed {
                    channel: channel.as_str(),
                    code: Some(ErrorCode::TokenExpired),
                    reason: "the subscription token expired",
                }
                .to_bytes(),
            );
        }
    }

    /// Subscribes `channel` on the server's behalf (a channel of the connection
    /// token, or `POST /api/subscribe`): answered with `subscribed`, and not the
    /// client's to unsubscribe. A channel already held, or the personal one, is
    /// left as it is.
    pub(super) async fn subscribe_server_side(
        &mut self,
        channel: Channel,
    ) -> Result<(), crate::node::NodeError> {
        if self.channels.contains_key(&channel) || Some(&channel) == self.personal.as_ref() {
            return Ok(());
        }
        self.join(channel, None, Ack::Subscribed, ChannelState::server())
            .await
    }

    /// Joins `channel` through the node (answered as `ack` says) and holds it with
    /// `state`: the one path for the client's subscribes and the server's.
    pub(super) async fn join(
        &mut self,
        channel: Channel,
        since: Option<&Since>,
        ack: Ack,
        state: ChannelState,
    ) -> Result<(), crate::node::NodeError> {
        self.node
            .subscribe(self.id, &self.identity, &self.outbox, &channel, since, ack)
            .await?;
        self.channels.insert(channel, state);
        Ok(())
    }

    async fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Disconnect => self.closer.close(CloseCode::Disconnected),
            Command::Subscribe { channel } => {
                if let Err(e) = self.subscribe_server_side(channel.clone()).await {
                    tracing::warn!(%channel, error = %e, "server-side subscribe failed");
                }
            }
            Command::Unsubscribe { channel } => {
                if self.channels.remove(&channel).is_some() {
                    self.node
                        .unsubscribe(self.id, &self.identity.client, &channel)
                        .await;
                    self.send(
                        ServerFrame::Unsubscribed {
                            channel: channel.as_str(),
                            code: None,
                            reason: "unsubscribed by the server",
                        }
                        .to_bytes(),
                    );
                }
            }
        }
    }

    /// Leaves every channel (the connection is ending).
    pub async fn leave_all(&mut self) {
        let channels: Vec<Channel> = self.channels.drain().map(|(c, _)| c).collect();
        for channel in channels.iter().chain(self.personal.iter()) {
            Box::pin(
                self.node
                    .unsubscribe(self.id, &self.identity.client, channel),
            )
            .await;
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
        let max = self.node.config().max_frame_bytes;
        if text.len() > max {
            let id = parse_client_frame(text).ok().and_then(|f| f.id);
            self.refuse(FrameError::new(
                id,
                ErrorCode::TooLarge,
                format!("frame is {} bytes; the limit is {max}", text.len()),
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

    pub(super) fn send(&self, frame: Bytes) {
        self.outbox.push(frame, self.node.metrics());
    }

    pub(super) fn refuse(&self, error: FrameError) {
        self.node.metrics().error(error.code);
        self.send(error.to_frame());
    }

    pub(super) fn ack(&self, id: Option<u64>) {
        if let Some(id) = id {
            self.send(ServerFrame::ok(id).to_bytes());
        }
    }
}
