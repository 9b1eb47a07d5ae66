//! The node: one shardcast instance's core, tying its hub (local fan-out) to its
//! broker (the rest of the deployment). Sessions and the HTTP API call the node;
//! the broker calls back only through [`events::Events`].
//!
//! Invariant: while at least one local connection is subscribed to a channel, the
//! broker holds exactly one subscription for it; when the last one leaves, the
//! broker subscription ends. Transitions for one channel are serialized by the
//! channel's [`gate`], so a leave and a join racing each other cannot leave the
//! broker unsubscribed while a connection waits for messages.

mod error;
mod events;
mod gaps;
mod gate;
mod presence;
mod registry;
pub mod sessions;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::value::RawValue;
use thiserror::Error;
use tokio::sync::mpsc;

pub use error::NodeError;

use crate::auth::{Auth, AuthError};
use crate::broker::{Broker, BrokerError};
use crate::channel::{Channel, ClientId, UserId};
use crate::config::Config;
use crate::history::{HistoryPage, MAX_PAGE, Retention};
use crate::hub::{Hub, SessionId};
use crate::identity::Identity;
use crate::limits::Connections;
use crate::metrics::Metrics;
use crate::namespace::NamespaceOptions;
use crate::outbox::Outbox;
use crate::presence::LocalPresence;
use crate::protocol::{ServerFrame, Since, message_frame};
use crate::publication::{Kind, Publication, PublishAck};
use crate::shutdown::Shutdown;
use gate::Gates;
use sessions::{Command, Sessions};

/// Why an instance could not start.
#[derive(Debug, Error)]
pub enum StartError {
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error(transparent)]
    Auth(#[from] AuthError),
}

pub struct Node {
    config: Config,
    hub: Arc<Hub>,
    gates: Gates,
    broker: Broker,
    metrics: Metrics,
    auth: Auth,
    connections: Connections,
    sessions: Arc<Sessions>,
    presence: LocalPresence,
    registry: registry::Registry,
    next_session: AtomicU64,
}

/// How a subscribe is answered, once the broker subscription is live (and on
/// history channels, before any message of the subscriber).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ack {
    /// Nothing (a request without `id`, the personal channel).
    Silent,
    /// `ok` to request `id`.
    Ok(u64),
    /// A `subscribed` frame (a server-side subscription).
    Subscribed,
}

/// One publish request of a connection.
pub struct PublishRequest {
    pub channel: Channel,
    pub data: Box<RawValue>,
    pub idempotency_key: Option<String>,
}

impl Node {
    pub async fn start(config: Config, shutdown: Shutdown) -> Result<Arc<Node>, StartError> {
        let metrics = Metrics::new();
        let auth = Auth::from_config(&config.auth)?;
        metrics.insecure.set(if auth.insecure { 1.0 } else { 0.0 });
        let hub = Arc::new(Hub::new(metrics.clone()));
        let sessions = Arc::new(Sessions::default());
        let (gap_tx, gap_rx) = mpsc::unbounded_channel();
        let events = Arc::new(events::Events {
            hub: hub.clone(),
            sessions: sessions.clone(),
            gaps: gap_tx,
            metrics: metrics.clone(),
        });
        let broker = Broker::start(&config, events, metrics.clone(), shutdown.clone()).await?;
        let limits = &config.limits;
        let connections = Connections::new(
            limits.max_connections,
            limits.max_connections_per_user,
            limits.max_connects_per_second,
        );
        let node = Arc::new(Node {
            config,
            hub,
            gates: Gates::new(),
            broker,
            metrics,
            auth,
            connections,
            sessions,
            presence: LocalPresence::default(),
            registry: registry::Registry::default(),
            next_session: AtomicU64::new(1),
        });
        tokio::spawn(registry::heartbeat(Arc::downgrade(&node), shutdown.clone()));
        tokio::spawn(gaps::fill_gaps(
            Arc::downgrade(&node),
            gap_rx,
            shutdown.clone(),
        ));
        tokio::spawn(presence::refresh(Arc::downgrade(&node), shutdown));
        Ok(node)
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn auth(&self) -> &Auth {
        &self.auth
    }

    pub fn connections(&self) -> &Connections {
        &self.connections
    }

    /// The command inbox of a new session of `user` (commands come from the API).
    pub fn register_session(&self, user: &UserId, session: SessionId) -> Arc<sessions::Inbox> {
        self.sessions.register(user, session)
    }

    pub fn unregister_session(&self, user: &UserId, session: SessionId) {
        self.sessions.unregister(user, session);
    }

    /// The options of `channel`'s namespace.
    pub fn options(&self, channel: &Channel) -> &NamespaceOptions {
        self.config.namespaces.options(channel)
    }

    pub fn next_session_id(&self) -> SessionId {
        self.next_session.fetch_add(1, Ordering::Relaxed)
    }

    /// Whether the broker can serve requests now (`/readyz`).
    pub fn is_ready(&self) -> bool {
        self.broker.is_ready()
    }

    /// The broker's view of the deployment (`/api/cluster`).
    pub fn describe(&self) -> serde_json::Value {
        self.broker.describe()
    }

    fn retention(&self, channel: &Channel) -> Option<&Retention> {
        self.config.namespaces.retention(channel)
    }

    /// Subscribes a local connection (and, in a presence namespace, adds `member`
    /// to the channel's presence) and queues its `ok` (as `ack` says) once the
    /// broker subscription is live. On history channels
    /// the `ok` carries the position, and with `since` the missed publications
    /// follow it, then live ones, without gap or duplicate. The `ok` is queued here,
    /// not by the caller, because it must precede the replay.
    pub async fn subscribe(
        &self,
        session: SessionId,
        member: &Identity,
        outbox: &Outbox,
        channel: &Channel,
        since: Option<&Since>,
        ack: Ack,
    ) -> Result<(), NodeError> {
        let retention = self.retention(channel).cloned();
        if since.is_some() && retention.is_none() {
            return Err(NodeError::SinceWithoutHistory(channel.clone()));
        }
        let history = retention.is_some();
        self.hub
            .add(channel, session, outbox.clone(), history, history);
        let gate = self.gates.get(channel);
        let live = {
            let mut live = gate.lock().await;
            if *live {
                Ok(())
            } else {
                let r = self.broker.subscribe(channel).await;
                *live = r.is_ok();
                r
            }
        };
        self.gates.put(channel, gate);
        if let Err(e) = live {
            self.hub.remove(channel, session);
            return Err(e.into());
        }
        // In presence before the `ok`: whoever asks after it sees this client.
        self.join_presence(member, channel).await;
        let Some(retention) = retention else {
            if let Some(frame) = ack_frame(ack, channel, None) {
                outbox.push(frame, &self.metrics);
            }
            return Ok(());
        };

        let page = match self
            .broker
            .history(channel, &retention, since.map(|s| s.offset), MAX_PAGE)
            .await
        {
            Ok(p) => p,
            Err(e) => {
                // The broker subscription stays for the others; this one leaves.
                self.unsubscribe(session, &member.client, channel).await;
                return Err(e.into());
            }
        };
        let (recovered, replay) = match since {
            None => (None, Vec::new()),
            Some(s) => {
                if self.recovers(s, &page) {
                    (Some(true), page.publications)
                } else {
                    (Some(false), Vec::new())
                }
            }
        };
        let mut frames = Vec::with_capacity(replay.len() + 1);
        frames.extend(ack_frame(
            ack,
            channel,
            Some((page.top, &page.epoch, recovered)),
        ));
        frames.extend(replay.iter().map(message_frame));
        self.hub
            .release(channel, session, frames, page.top, &page.epoch);
        Ok(())
    }

    /// Whether a resume from `since` can be served from `page` (docs/PROTOCOL.md,
    /// "Resume"): same epoch, the history still reaches back, and the replay fits.
    fn recovers(&self, since: &Since, page: &HistoryPage) -> bool {
        let same_epoch = since.epoch == page.epoch || (since.offset == 0 && since.epoch.is_empty());
        let missed = page.top.saturating_sub(since.offset) as usize;
        let whole = page.complete && page.publications.len() == missed && since.offset <= page.top;
        // A replay that would fill the connection's queue would only get it closed
        // as a slow consumer; such a client reloads instead.
        let bytes: usize = page
            .publications
            .iter()
            .map(|p| p.data.get().len() + 64)
            .sum();
        let fits = bytes <= self.config.outbound_queue_bytes / 2;
        same_epoch && whole && fits
    }

    /// Unsubscribes a local connection (and takes its client out of the channel's
    /// presence); the last one out ends the broker subscription.
    pub async fn unsubscribe(&self, session: SessionId, client: &ClientId, channel: &Channel) {
        self.unsubscribe_channel(session, channel).await;
        self.leave_presence(client, channel).await;
    }

    async fn unsubscribe_channel(&self, session: SessionId, channel: &Channel) {
        if !self.hub.remove(channel, session) {
            return;
        }
        let gate = self.gates.get(channel);
        {
            let mut live = gate.lock().await;
            // Someone may have joined while we waited for the gate.
            if *live && !self.hub.is_wanted(channel) {
                self.broker.unsubscribe(channel).await;
                *live = false;
            }
        }
        self.gates.put(channel, gate);
    }

    /// Publishes through the broker; `from` is `None` for server-side publishes.
    pub async fn publish(
        &self,
        channel: Channel,
        data: Box<RawValue>,
        from: Option<&Identity>,
        idempotency_key: Option<&str>,
    ) -> Result<PublishAck, NodeError> {
        let retention = self.retention(&channel);
        if idempotency_key.is_some() && retention.is_none() {
            return Err(NodeError::IdempotencyWithoutHistory(channel));
        }
        self.metrics.messages_in(1);
        self.broker
            .publish(publication(channel, data, from), retention, idempotency_key)
            .await
            .map_err(|e| {
                self.metrics.broker_publish_errors.increment(1);
                e.into()
            })
    }

    /// Publishes a connection's queued requests, in order, as one broker round trip
    /// where the broker allows it (plain channels on Redis go out as one pipeline).
    /// Results come back in request order.
    pub async fn publish_batch(
        &self,
        from: &Identity,
        requests: Vec<PublishRequest>,
    ) -> Vec<Result<PublishAck, NodeError>> {
        if requests.len() == 1
            || requests
                .iter()
                .any(|r| self.retention(&r.channel).is_some())
        {
            // History publishes are scripts with a replication wait: one at a time.
            let mut out = Vec::with_capacity(requests.len());
            for r in requests {
                out.push(
                    self.publish(r.channel, r.data, Some(from), r.idempotency_key.as_deref())
                        .await,
                );
            }
            return out;
        }
        let mut out: Vec<Option<Result<PublishAck, NodeError>>> =
            Vec::with_capacity(requests.len());
        let mut batch = Vec::with_capacity(requests.len());
        for r in requests {
            if r.idempotency_key.is_some() {
                out.push(Some(Err(NodeError::IdempotencyWithoutHistory(r.channel))));
                continue;
            }
            out.push(None);
            batch.push(publication(r.channel, r.data, Some(from)));
        }
        self.metrics.messages_in(batch.len() as u64);
        let mut results = self.broker.publish_plain_batch(batch).await.into_iter();
        out.into_iter()
            .map(|slot| match slot {
                Some(r) => r,
                None => match results.next() {
                    Some(Ok(ack)) => Ok(ack),
                    Some(Err(e)) => {
                        self.metrics.broker_publish_errors.increment(1);
                        Err(e.into())
                    }
                    None => Err(NodeError::Internal("publish result missing")),
                },
            })
            .collect()
    }

    /// Sends `cmd` to every connection of `user`, on every instance: a control
    /// publication on the user's personal channel.
    pub async fn command(&self, user: &UserId, cmd: &Command) -> Result<(), NodeError> {
        let Some(channel) = Channel::personal(user) else {
            return Err(NodeError::Internal(
                "the anonymous user has no connections to command",
            ));
        };
        let data = serde_json::value::to_raw_value(cmd)
            .map_err(|_| NodeError::Internal("command encoding"))?;
        let mut p = Publication::new(channel, data, None);
        p.kind = Kind::Control;
        self.broker.publish(p, None, None).await?;
        Ok(())
    }

    /// Everything this instance can tell about one channel (the dashboard's
    /// lookup): its slot and owner, who holds it, local subscribers, history
    /// position, presence counts.
    pub async fn lookup(&self, channel: &Channel) -> serde_json::Value {
        let slot = crate::slot::key_slot(channel.as_str().as_bytes());
        let mut v = serde_json::json!({
            "channel": channel,
            "namespace": channel.namespace(),
            "slot": slot,
            "local_subscribers": self.hub.count(channel),
            "instance": self.config.instance(),
        });
        if let Some((owner, replicas)) = self.broker.owner_of(channel) {
            v["owner"] = owner.into();
            v["replicas"] = replicas.into();
        }
        match self.broker.holders(channel).await {
            Ok(Some(n)) => v["instances_holding"] = n.into(),
            Ok(None) => v["instances_holding"] = i64::from(self.hub.count(channel) > 0).into(),
            Err(e) => v["instances_holding_error"] = e.to_string().into(),
        }
        if let Some(retention) = self.retention(channel) {
            match self.broker.history(channel, retention, None, 0).await {
                Ok(page) => {
                    v["history"] = serde_json::json!({ "offset": page.top, "epoch": page.epoch })
                }
                Err(e) => v["history"] = serde_json::json!({ "error": e.to_string() }),
            }
        }
        if self.options(channel).presence {
            match self.presence_stats(channel).await {
                Ok(s) => {
                    v["presence"] = serde_json::json!({ "clients": s.clients, "users": s.users })
                }
                Err(e) => v["presence"] = serde_json::json!({ "error": e.to_string() }),
            }
        }
        v
    }

    /// A history channel's publications after `since`, at most `limit`.
    pub async fn history(
        &self,
        channel: &Channel,
        since: u64,
        limit: usize,
    ) -> Result<HistoryPage, NodeError> {
        let retention = self
            .retention(channel)
            .ok_or_else(|| NodeError::NoHistory(channel.clone()))?;
        Ok(self
            .broker
            .history(channel, retention, Some(since), limit)
            .await?)
    }
}

/// A publication from `from` (a client connection) or the server (`None`).
fn publication(channel: Channel, data: Box<RawValue>, from: Option<&Identity>) -> Publication {
    let mut p = Publication::new(channel, data, from.map(|i| i.user.clone()));
    p.info = from.and_then(|i| i.info.clone());
    p
}

/// The answer to a subscribe: `position` is (offset, epoch, recovered) on history channels.
fn ack_frame(
    ack: Ack,
    channel: &Channel,
    position: Option<(u64, &str, Option<bool>)>,
) -> Option<bytes::Bytes> {
    let frame = match ack {
        Ack::Silent => return None,
        Ack::Ok(id) => ServerFrame::Ok {
            id,
            offset: position.map(|p| p.0),
            epoch: position.map(|p| p.1),
            recovered: position.and_then(|p| p.2),
            expires_in: None,
        },
        Ack::Subscribed => ServerFrame::Subscribed {
            channel: channel.as_str(),
            offset: position.map(|p| p.0),
            epoch: position.map(|p| p.1),
        },
    };
    Some(frame.to_bytes())
}
