//! The node: one shardcast instance's hub and broker, and the rules that tie them.
//!
//! Invariant: while at least one local connection is subscribed to a channel, the
//! broker holds exactly one subscription for it; when the last one leaves, the
//! broker subscription ends. Transitions for one channel are serialized by the hub's
//! per-channel gate, so a leave and a join racing each other cannot leave the broker
//! unsubscribed while a connection waits for messages.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::value::RawValue;
use tokio::sync::mpsc;

use crate::broker::{Broker, BrokerError, Publication, PublishAck};
use crate::channel::{Channel, UserId};
use crate::config::Config;
use crate::history::{HistoryPolicy, MAX_PAGE};
use crate::hub::{GapRequest, Hub, SessionId};
use crate::metrics::Metrics;
use crate::outbox::Outbox;
use crate::protocol::{ErrorCode, FrameError, ServerFrame, Since, message_frame};
use crate::shutdown::Shutdown;

pub struct Node {
    pub config: Config,
    pub hub: Arc<Hub>,
    pub broker: Broker,
    pub metrics: Metrics,
    pub history: HistoryPolicy,
    next_session: AtomicU64,
}

impl Node {
    pub async fn start(config: Config, shutdown: Shutdown) -> Result<Arc<Node>, BrokerError> {
        let metrics = Metrics::new();
        let hub = Arc::new(Hub::new(metrics.clone()));
        let broker = Broker::start(&config, hub.clone(), metrics.clone(), shutdown.clone()).await?;
        let (gap_tx, gap_rx) = mpsc::unbounded_channel();
        hub.set_gap_sink(gap_tx);
        let node = Arc::new(Node {
            history: HistoryPolicy::new(&config.history),
            config,
            hub,
            broker,
            metrics,
            next_session: AtomicU64::new(1),
        });
        tokio::spawn(fill_gaps(Arc::downgrade(&node), gap_rx, shutdown));
        Ok(node)
    }

    pub fn next_session_id(&self) -> SessionId {
        self.next_session.fetch_add(1, Ordering::Relaxed)
    }

    /// Subscribes a local connection and queues its `ok` (when `id` is set) once the
    /// broker subscription is live. On history channels the `ok` carries the
    /// position, and with `since` the missed publications follow it, then live ones,
    /// without gap or duplicate.
    pub async fn subscribe(
        &self,
        session: SessionId,
        outbox: &Outbox,
        channel: &Channel,
        since: Option<&Since>,
        id: Option<u64>,
    ) -> Result<(), FrameError> {
        let unavailable =
            |e: BrokerError| FrameError::new(id, ErrorCode::Unavailable, e.to_string());
        let retention = self.history.retention(channel).cloned();
        if since.is_some() && retention.is_none() {
            return Err(FrameError::new(
                id,
                ErrorCode::NoHistory,
                format!("channel `{channel}` keeps no history; subscribe without `since`"),
            ));
        }
        let history = retention.is_some();
        let gate = self
            .hub
            .add(channel, session, outbox.clone(), history, history);
        let live = {
            let mut live = gate.lock().await;
            if !*live {
                let r = self.broker.subscribe(channel).await;
                *live = r.is_ok();
                r
            } else {
                Ok(())
            }
        };
        let leave = |e| {
            if let Some(gate) = self.hub.remove(channel, session) {
                self.hub.forget_if_empty(channel, &gate);
            }
            e
        };
        live.map_err(unavailable).map_err(leave)?;
        let Some(retention) = retention else {
            if let Some(id) = id {
                outbox.push(ServerFrame::ok(id).to_bytes(), &self.metrics);
            }
            return Ok(());
        };

        let page = self
            .broker
            .history(channel, &retention, since.map(|s| s.offset), MAX_PAGE)
            .await
            .map_err(unavailable);
        let page = match page {
            Ok(p) => p,
            Err(e) => {
                // The broker subscription stays for the others; this one leaves.
                self.unsubscribe(session, channel).await;
                return Err(e);
            }
        };
        let (recovered, replay) = match since {
            None => (None, Vec::new()),
            Some(s) => {
                let same_epoch = s.epoch == page.epoch || (s.offset == 0 && s.epoch.is_empty());
                let missed = page.top.saturating_sub(s.offset) as usize;
                let whole =
                    page.complete && page.publications.len() == missed && s.offset <= page.top;
                // A replay that would fill the connection's queue would only get it
                // closed as a slow consumer; such a client reloads instead.
                let bytes: usize = page
                    .publications
                    .iter()
                    .map(|p| p.data.get().len() + 64)
                    .sum();
                let fits = bytes <= self.config.outbound_queue_bytes / 2;
                if same_epoch && whole && fits {
                    (Some(true), page.publications)
                } else {
                    (Some(false), Vec::new())
                }
            }
        };
        let mut frames = Vec::with_capacity(replay.len() + 1);
        if let Some(id) = id {
            frames.push(
                ServerFrame::Ok {
                    id,
                    offset: Some(page.top),
                    epoch: Some(&page.epoch),
                    recovered,
                }
                .to_bytes(),
            );
        }
        for p in &replay {
            frames.push(message_frame(p));
        }
        self.hub
            .release(channel, session, frames, page.top, &page.epoch);
        Ok(())
    }

    /// Unsubscribes a local connection; the last one out ends the broker subscription.
    pub async fn unsubscribe(&self, session: SessionId, channel: &Channel) {
        let Some(gate) = self.hub.remove(channel, session) else {
            return;
        };
        let mut live = gate.lock().await;
        // Someone may have joined while we waited for the gate.
        if *live && !self.hub.is_wanted(channel) {
            self.broker.unsubscribe(channel).await;
            *live = false;
        }
        drop(live);
        self.hub.forget_if_empty(channel, &gate);
    }

    /// Publishes through the broker; `from` is `None` for server-side publishes.
    pub async fn publish(
        &self,
        channel: Channel,
        data: Box<RawValue>,
        from: Option<UserId>,
        idempotency_key: Option<&str>,
    ) -> Result<PublishAck, FrameError> {
        let retention = self.history.retention(&channel);
        if idempotency_key.is_some() && retention.is_none() {
            return Err(idempotency_without_history(&channel));
        }
        self.metrics.messages_in.increment(1);
        let publication = Publication {
            channel,
            data,
            from,
            offset: None,
            epoch: None,
            uid: 0,
        };
        self.broker
            .publish(publication, retention, idempotency_key)
            .await
            .map_err(|e| {
                self.metrics.broker_publish_errors.increment(1);
                FrameError::new(None, ErrorCode::Unavailable, e.to_string())
            })
    }
}

/// The refusal of an idempotency key on a channel that keeps no history.
fn idempotency_without_history(channel: &Channel) -> FrameError {
    FrameError::new(
        None,
        ErrorCode::NoHistory,
        format!("`idempotency_key` needs a history channel; `{channel}` keeps none"),
    )
}

/// One publish request of a connection.
pub struct PublishRequest {
    pub channel: Channel,
    pub data: Box<RawValue>,
    pub idempotency_key: Option<String>,
}

impl Node {
    /// Publishes a connection's queued requests, in order, as one broker round trip
    /// where the broker allows it (plain channels on Redis go out as one pipeline).
    /// Results come back in request order.
    pub async fn publish_batch(
        &self,
        from: &UserId,
        requests: Vec<PublishRequest>,
    ) -> Vec<Result<PublishAck, FrameError>> {
        if requests.len() == 1
            || requests
                .iter()
                .any(|r| self.history.retention(&r.channel).is_some())
        {
            // History publishes are scripts with a replication wait: one at a time.
            let mut out = Vec::with_capacity(requests.len());
            for r in requests {
                out.push(
                    self.publish(
                        r.channel,
                        r.data,
                        Some(from.clone()),
                        r.idempotency_key.as_deref(),
                    )
                    .await,
                );
            }
            return out;
        }
        let mut out: Vec<Option<Result<PublishAck, FrameError>>> =
            Vec::with_capacity(requests.len());
        let mut batch = Vec::with_capacity(requests.len());
        for r in requests {
            if r.idempotency_key.is_some() {
                out.push(Some(Err(idempotency_without_history(&r.channel))));
                continue;
            }
            out.push(None);
            batch.push(Publication {
                channel: r.channel,
                data: r.data,
                from: Some(from.clone()),
                offset: None,
                epoch: None,
                uid: 0,
            });
        }
        self.metrics.messages_in.increment(batch.len() as u64);
        let mut results = self.broker.publish_plain_batch(batch).await.into_iter();
        out.into_iter()
            .map(|slot| match slot {
                Some(r) => r,
                None => match results.next() {
                    Some(Ok(ack)) => Ok(ack),
                    Some(Err(e)) => {
                        self.metrics.broker_publish_errors.increment(1);
                        Err(FrameError::new(None, ErrorCode::Unavailable, e.to_string()))
                    }
                    None => Err(FrameError::new(
                        None,
                        ErrorCode::Internal,
                        "publish result missing",
                    )),
                },
            })
            .collect()
    }
}

/// Reads the history ranges the hub found missing and hands them back, in order.
async fn fill_gaps(
    node: std::sync::Weak<Node>,
    mut requests: mpsc::UnboundedReceiver<GapRequest>,
    mut shutdown: Shutdown,
) {
    loop {
        let req = tokio::select! {
            r = requests.recv() => match r { Some(r) => r, None => return },
            _ = shutdown.recv() => return,
        };
        let Some(node) = node.upgrade() else { return };
        let Some(retention) = node.history.retention(&req.channel).cloned() else {
            node.hub.fill(&req.channel, Vec::new());
            continue;
        };
        let mut found = Vec::new();
        for attempt in 0..5u32 {
            match node
                .broker
                .history(&req.channel, &retention, Some(req.after), MAX_PAGE)
                .await
            {
                Ok(page) => {
                    found = page.publications;
                    break;
                }
                Err(e) => {
                    tracing::warn!(channel = %req.channel, error = %e, attempt, "gap fill read failed");
                    tokio::time::sleep(Duration::from_millis(200 * (attempt as u64 + 1))).await;
                }
            }
        }
        node.hub.fill(&req.channel, found);
    }
}
