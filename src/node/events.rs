//! The node's side of the broker interface: publications go to the hub's fan-out,
//! and a gap the hub finds (an offset jump, a resubscribe after a loss) goes to the
//! gap filler. Holds the hub and the filler's queue, not the node, so that the
//! broker (owned by the node) does not keep the node alive.

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::broker::BrokerEventHandler;
use crate::channel::Channel;
use crate::hub::{GapRequest, Hub};
use crate::publication::Publication;

pub struct Events {
    pub hub: Arc<Hub>,
    pub gaps: mpsc::UnboundedSender<GapRequest>,
}

impl BrokerEventHandler for Events {
    fn publication(&self, publication: &Publication) {
        if let Some(gap) = self.hub.deliver(publication) {
            let _ = self.gaps.send(gap);
        }
    }

    fn resubscribed(&self, channel: &Channel) {
        if let Some(gap) = self.hub.check_gap(channel) {
            let _ = self.gaps.send(gap);
        }
    }
}
