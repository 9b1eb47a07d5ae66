//! What the session does with each client request: subscribe, unsubscribe,
//! publish, presence and history, after the per-connection rate limits and the
//! channel policy allow it. The reader ([`super::reader`]) hands it one parsed
//! frame at a time; an `Err` becomes the error frame answering that request's id.

use serde_json::json;
use tokio::sync::mpsc;

use super::reader::{ChannelState, Session};
use super::{publish, refusal};
use crate::auth::token::now_secs;
use crate::channel::Channel;
use crate::codes::{CloseCode, ErrorCode};
use crate::limits::Verdict;
use crate::node::{Ack, PublishRequest};
use crate::policy;
use crate::protocol::{ClientFrame, FrameError, HistoryAnswer, Request, ServerFrame, answer};

impl Session {
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

    pub(super) async fn handle(&mut self, frame: ClientFrame) -> Result<(), FrameError> {
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
                self.join(channel, since.as_ref(), ack, ChannelState { token_expires })
                    .await
                    .map_err(|e| refusal(id, &e))?;
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
