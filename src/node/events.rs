//! The node's side of the broker interface: publications go to the hub's fan-out,
//! and a gap the hub finds (an offset jump, a resubscribe after a loss) goes to the
//! gap filler. Holds the hub and the filler's queue, not the node, so that the
//! broker (owned by the node) does not keep the node alive.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::sessions::{Command, Sessions};
use crate::broker::BrokerEventHandler;
use crate::channel::{Channel, UserId};
use crate::hub::{GapRequest, Hub};
use crate::metrics::Metrics;
use crate::publication::{Kind, Publication};

pub struct Events {
    pub hub: Arc<Hub>,
    pub sessions: Arc<Sessions>,
    pub gaps: mpsc::UnboundedSender<GapRequest>,
    pub metrics: Metrics,
}

impl BrokerEventHandler for Events {
    fn publication(&self, publication: &Publication) {
        if publication.kind == Kind::Control {
            // Commands travel on personal channels only; anything else is foreign.
            let target = publication
                .channel
                .personal_owner()
                .and_then(|u| UserId::parse(u).ok());
            match (
                target,
                serde_json::from_str::<Command>(publication.data.get()),
            ) {
                (Some(user), Ok(cmd)) => {
                    self.sessions.deliver(&user, &cmd);
                }
                _ => self.metrics.redis_dropped.increment(1),
            }
            return;
        }
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
