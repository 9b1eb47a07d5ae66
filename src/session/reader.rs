//! The reader of an authenticated connection: client requests one at a time,
//! commands from the API, and the expiry of the connection's and its
//! subscriptions' tokens.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::SplitStream;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::time::{Sleep, sleep};
use tokio_tungstenite::WebSocketStream;
use tungstenite::Message;

use super::closer::Closer;
use super::{publish, read_error_close, refusal};
use crate::auth::token::{now_secs, until};
use crate::channel::Channel;
use crate::codes::{CloseCode, ErrorCode};
use crate::hub::SessionId;
use crate::identity::Identity;
use crate::limits::{Bucket, Verdict};
use crate::node::sessions::{Command, Inbox};
use crate::node::{Ack, Node, PublishRequest};
use crate::outbox::Outbox;
use crate::policy;
use crate::protocol::{
    ClientFrame, FrameError, HistoryAnswer, Request, ServerFrame, answer, parse_client_frame,
};
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
        self.node
            .subscribe(
                self.id,
                &self.identity,
                &self.outbox,
                &channel,
                None,
                Ack::Subscribed,
            )
            .await?;
        self.channels.insert(channel, ChannelState::server());
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

    /// Takes a token from `bucket`; over the rate it refuses the request, and a
    /// client that keeps pushing is closed.
    fn within_rate(&mut self, publish: bool, id: Option<u64>) -> Result<(), FrameError> {
        let (bucket, kind) = if publish {
            (
                &mut self.publish_bucket,
                crate::metrics::RateLimited::Publish,
            )
        } else {
            (
                &mut self.request_bucket,
                crate::metrics::RateLimited::Subscribe,
            )
        };
        match bucket.take() {
            Verdict::Allowed => Ok(()),
            verdict => {
                self.node.metrics().rate_limited(kind);
                if verdict == Verdict::Abusive {
                    self.node
                        .metrics()
                        .connection_refused(crate::metrics::Refusal::Abuse);
                    self.closer.close(CloseCode::RateLimited);
                }
                Err(FrameError::new(
                    id,
                    ErrorCode::Limit,
                    format!("too many {} requests; slow down", kind.as_str()),
                ))
            }
        }
    }

    /// Presence is for the channel's subscribers (and the backend's API).
    fn may_ask_presence(&self, channel: &Channel, id: Option<u64>) -> Result<(), FrameError> {
        if !self.node.options(channel).presence {
            return Err(FrameError::new(
                id,
                ErrorCode::NoPresence,
                format!("namespace `{}` keeps no presence", channel.namespace()),
            ));
        }
        if self.channels.contains_key(channel) {
            Ok(())
        } else {
            Err(FrameError::new(
                id,
                ErrorCode::Forbidden,
                format!("only subscribers of `{channel}` may ask who is in it"),
            ))
        }
    }

    async fn handle(&mut self, frame: ClientFrame) -> Result<(), FrameError> {
        let id = frame.id;
        let err = |code, message: String| FrameError::new(id, code, message);
        let refused = |r: policy::Refusal| FrameError::new(id, r.code, r.message);
        match frame.request {
            Request::Ping => {
                self.send(ServerFrame::Pong { id }.to_bytes());
            }
            Request::Connect { .. } => {
                return Err(err(ErrorCode::BadRequest, "already connected".into()));
            }
            Request::Refresh { token } => {
                let Some(verifier) = &self.node.auth().verifier else {
                    return Err(err(
                        ErrorCode::NotConfigured,
                        "this server has no token keys".into(),
                    ));
                };
                match verifier.connect(&token) {
                    Ok(claims) if claims.user == self.identity.user => {
                        self.expires_at = Some(claims.expires_at);
                        if let Some(id) = id {
                            self.send(
                                ServerFrame::Ok {
                                    id,
                                    offset: None,
                                    epoch: None,
                                    recovered: None,
                                    expires_in: Some(claims.expires_at.saturating_sub(now_secs())),
                                }
                                .to_bytes(),
                            );
                        }
                    }
                    Ok(_) => {
                        self.node
                            .metrics()
                            .auth_failure(crate::metrics::AuthFailure::RefreshOtherUser);
                        let e = err(
                            ErrorCode::Unauthorized,
                            "a refreshed token must keep the same `sub`".into(),
                        );
                        self.refuse(e);
                        self.closer.close(CloseCode::Unauthorized);
                    }
                    Err(e) => {
                        self.node
                            .metrics()
                            .auth_failure(crate::metrics::AuthFailure::RefreshToken);
                        return Err(err(e.code(), e.to_string()));
                    }
                }
            }
            Request::Subscribe {
                channel,
                since,
                token,
            } => {
                self.within_rate(false, id)?;
                if Some(&channel) == self.personal.as_ref() || self.channels.contains_key(&channel)
                {
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
                let token_expires = match &token {
                    None => None,
                    Some(t) => {
                        let Some(verifier) = &self.node.auth().verifier else {
                            return Err(err(
                                ErrorCode::NotConfigured,
                                "this server has no token keys".into(),
                            ));
                        };
                        let claims = verifier
                            .subscription(t, &self.identity.user, &channel)
                            .map_err(|e| {
                                self.node
                                    .metrics()
                                    .auth_failure(crate::metrics::AuthFailure::SubscriptionToken);
                                err(e.code(), format!("subscription token: {e}"))
                            })?;
                        Some(claims.expires_at)
                    }
                };
                policy::may_subscribe(
                    &self.identity.user,
                    &channel,
                    self.node.options(&channel),
                    token.is_some(),
                )
                .map_err(refused)?;
                let max = self.node.config().max_channels_per_connection;
                if self.channels.len() >= max {
                    return Err(err(
                        ErrorCode::Limit,
                        format!("at most {max} channels per connection"),
                    ));
                }
                let ack = id.map_or(Ack::Silent, Ack::Ok);
                self.node
                    .subscribe(
                        self.id,
                        &self.identity,
                        &self.outbox,
                        &channel,
                        since.as_ref(),
                        ack,
                    )
                    .await
                    .map_err(|e| refusal(id, &e))?;
                self.channels
                    .insert(channel, ChannelState { token_expires });
            }
            Request::SubRefresh { channel, token } => {
                self.within_rate(false, id)?;
                let Some(state) = self.channels.get(&channel).copied() else {
                    return Err(err(
                        ErrorCode::NotSubscribed,
                        format!("not subscribed to `{channel}`"),
                    ));
                };
                if state.token_expires.is_none() {
                    return Err(err(
                        ErrorCode::BadRequest,
                        format!("`{channel}` was not subscribed with a token"),
                    ));
                }
                let Some(verifier) = &self.node.auth().verifier else {
                    return Err(err(
                        ErrorCode::NotConfigured,
                        "this server has no token keys".into(),
                    ));
                };
                let claims = verifier
                    .subscription(&token, &self.identity.user, &channel)
                    .map_err(|e| err(e.code(), format!("subscription token: {e}")))?;
                if let Some(s) = self.channels.get_mut(&channel) {
                    s.token_expires = Some(claims.expires_at);
                }
                self.ack(id);
            }
            Request::Unsubscribe { channel } => {
                self.within_rate(false, id)?;
                if Some(&channel) == self.personal.as_ref() {
                    return Err(err(
                        ErrorCode::Forbidden,
                        "a connection stays subscribed to its personal channel".into(),
                    ));
                }
                if self.channels.remove(&channel).is_none() {
                    return Err(err(
                        ErrorCode::NotSubscribed,
                        format!("not subscribed to `{channel}`"),
                    ));
                }
                self.node
                    .unsubscribe(self.id, &self.identity.client, &channel)
                    .await;
                self.ack(id);
            }
            Request::Publish {
                channel,
                data,
                idempotency_key,
            } => {
                self.within_rate(true, id)?;
                crate::protocol::check_depth(data.get(), self.node.config().front.max_data_depth)
                    .map_err(|m| FrameError::new(id, ErrorCode::BadRequest, m))?;
                let subscribed = self.channels.contains_key(&channel)
                    || Some(&channel) == self.personal.as_ref();
                policy::may_publish(
                    &self.identity.user,
                    &channel,
                    self.node.options(&channel),
                    subscribed,
                    data.get().len(),
                )
                .map_err(refused)?;
                let tx = self.publisher.get_or_insert_with(|| {
                    let (tx, rx) = mpsc::channel(publish::PUBLISH_QUEUE);
                    tokio::spawn(publish::publish_loop(
                        self.node.clone(),
                        self.identity.clone(),
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
            Request::Presence { channel } => {
                self.within_rate(false, id)?;
                self.may_ask_presence(&channel, id)?;
                let members = self
                    .node
                    .presence(&channel)
                    .await
                    .map_err(|e| refusal(id, &e))?;
                self.send(answer(
                    "presence",
                    id,
                    json!({ "channel": channel, "clients": members }),
                ));
            }
            Request::PresenceStats { channel } => {
                self.within_rate(false, id)?;
                self.may_ask_presence(&channel, id)?;
                let stats = self
                    .node
                    .presence_stats(&channel)
                    .await
                    .map_err(|e| refusal(id, &e))?;
                self.send(answer(
                    "presence_stats",
                    id,
                    json!({ "channel": channel, "clients": stats.clients, "users": stats.users }),
                ));
            }
            Request::History {
                channel,
                since,
                limit,
            } => {
                self.within_rate(false, id)?;
                if !self.channels.contains_key(&channel) {
                    policy::may_subscribe(
                        &self.identity.user,
                        &channel,
                        self.node.options(&channel),
                        false,
                    )
                    .map_err(refused)?;
                }
                let page = self
                    .node
                    .history(&channel, since, limit)
                    .await
                    .map_err(|e| refusal(id, &e))?;
                self.send(
                    HistoryAnswer::new(Some("history"), id, channel.as_str(), &page).to_bytes(),
                );
            }
        }
        Ok(())
    }
}
