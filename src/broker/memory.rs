//! The embedded broker: a single node, no Redis. Publications go straight to the
//! local hub, so the hub's subscriber table is the whole subscription state.

use std::sync::Arc;

use super::{BrokerError, Publication, PublishAck};
use crate::channel::Channel;
use crate::hub::Hub;

pub struct MemoryBroker {
    hub: Arc<Hub>,
}

impl MemoryBroker {
    pub fn new(hub: Arc<Hub>) -> MemoryBroker {
        MemoryBroker { hub }
    }

    /// Nothing to do: delivery goes through the hub, which already knows the subscriber.
    pub async fn subscribe(&self, _channel: &Channel) -> Result<(), BrokerError> {
        Ok(())
    }

    pub async fn unsubscribe(&self, _channel: &Channel) {}

    pub async fn publish(&self, publication: Publication) -> Result<PublishAck, BrokerError> {
        self.hub.deliver(&publication);
        Ok(PublishAck::default())
    }
}
