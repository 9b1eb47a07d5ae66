//! The node: one shardcast instance's hub and broker, and the rules that tie them.
//!
//! Invariant: while at least one local connection is subscribed to a channel, the
//! broker holds exactly one subscription for it; when the last one leaves, the
//! broker subscription ends. Transitions for one channel are serialized by the hub's
//! per-channel gate, so a leave and a join racing each other cannot leave the broker
//! unsubscribed while a connection waits for messages.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::value::RawValue;

use crate::broker::{Broker, BrokerError, Publication, PublishAck};
use crate::channel::{Channel, UserId};
use crate::config::Config;
use crate::hub::{Hub, SessionId};
use crate::metrics::Metrics;
use crate::outbox::Outbox;
use crate::shutdown::Shutdown;

pub struct Node {
    pub config: Config,
    pub hub: Arc<Hub>,
    pub broker: Broker,
    pub metrics: Metrics,
    next_session: AtomicU64,
}

impl Node {
    pub async fn start(config: Config, shutdown: Shutdown) -> Result<Arc<Node>, BrokerError> {
        let metrics = Metrics::new();
        let hub = Arc::new(Hub::new(metrics.clone()));
        let broker = Broker::start(&config, hub.clone(), metrics.clone(), shutdown).await?;
        Ok(Arc::new(Node {
            config,
            hub,
            broker,
            metrics,
            next_session: AtomicU64::new(1),
        }))
    }

    pub fn next_session_id(&self) -> SessionId {
        self.next_session.fetch_add(1, Ordering::Relaxed)
    }

    /// Subscribes a local connection. Returns once the broker subscription is live.
    pub async fn subscribe(
        &self,
        session: SessionId,
        outbox: &Outbox,
        channel: &Channel,
    ) -> Result<(), BrokerError> {
        let gate = self.hub.add(channel, session, outbox.clone());
        let mut live = gate.lock().await;
        if !*live {
            if let Err(e) = self.broker.subscribe(channel).await {
                drop(live);
                // Undo the join; the entry may now be empty and must not linger.
                if let Some(gate) = self.hub.remove(channel, session) {
                    self.hub.forget_if_empty(channel, &gate);
                }
                return Err(e);
            }
            *live = true;
        }
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
    ) -> Result<PublishAck, BrokerError> {
        self.metrics.messages_in.increment(1);
        let result = self
            .broker
            .publish(Publication {
                channel,
                data,
                from,
                offset: None,
            })
            .await;
        if result.is_err() {
            self.metrics.broker_publish_errors.increment(1);
        }
        result
    }
}
