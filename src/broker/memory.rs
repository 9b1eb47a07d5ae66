//! The embedded broker: a single node, no Redis. Publications go straight to the
//! local hub, so the hub's subscriber table is the whole subscription state, and
//! history lives in [`MemoryHistory`] with the same semantics as the Redis streams.

use std::sync::Arc;

use super::{BrokerError, Publication, PublishAck};
use crate::channel::Channel;
use crate::history::{HistoryPage, MemoryHistory, Retention};
use crate::hub::Hub;

pub struct MemoryBroker {
    hub: Arc<Hub>,
    history: MemoryHistory,
}

impl MemoryBroker {
    pub fn new(hub: Arc<Hub>) -> MemoryBroker {
        MemoryBroker {
            hub,
            history: MemoryHistory::default(),
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
            self.hub.deliver(&publication);
            return Ok(PublishAck::default());
        };
        let (offset, epoch, _repeat) =
            self.history
                .append(publication, retention, idempotency_key, |p| {
                    self.hub.deliver(p)
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
