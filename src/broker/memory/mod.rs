//! The embedded broker: a single instance, no Redis. Publications go straight to
//! the node's event handler, so the hub's subscriber table is the whole subscription
//! state, and history lives in [`store::MemoryHistory`] with the same semantics as
//! the Redis streams.

mod presence;
mod store;

use super::{BrokerError, EventHandler};
use crate::channel::Channel;
use crate::history::{HistoryPage, Retention};
use crate::publication::{Publication, PublishAck};

use presence::MemoryPresence;
use store::MemoryHistory;

pub struct MemoryBroker {
    pub(super) events: EventHandler,
    history: MemoryHistory,
    pub(super) presence: MemoryPresence,
}

impl MemoryBroker {
    pub fn new(events: EventHandler) -> MemoryBroker {
        MemoryBroker {
            events,
            history: MemoryHistory::default(),
            presence: MemoryPresence::default(),
        }
    }

    /// Nothing to do: delivery goes through the hub, which already knows the subscriber.
    pub async fn subscribe(&self, _channel: &Channel) -> Result<(), BrokerError> {
        Ok(())
    }

    pub async fn unsubscribe(&self, _channel: &Channel) {}

    pub async fn publish(
        &self,
        publication: Publication,
        retention: Option<&Retention>,
        idempotency_key: Option<&str>,
    ) -> Result<PublishAck, BrokerError> {
        let Some(retention) = retention else {
            self.events.publication(&publication);
            return Ok(PublishAck::default());
        };
        // Delivered under the history's lock, so that deliveries leave in offset order.
        let (offset, epoch, _repeat) =
            self.history
                .append(publication, retention, idempotency_key, |p| {
                    self.events.publication(p)
                });
        Ok(PublishAck {
            offset: Some(offset),
            epoch: Some(epoch),
        })
    }

    pub fn history(
        &self,
        channel: &Channel,
        retention: &Retention,
        since: Option<u64>,
        limit: usize,
    ) -> HistoryPage {
        match since {
            Some(since) => self.history.read(channel, retention, since, limit),
            None => {
                let mut page = self.history.read(channel, retention, u64::MAX, 0);
                page.complete = true;
                page
            }
        }
    }
}
