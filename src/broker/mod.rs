//! The broker: how publications reach every instance that has subscribers.
//!
//! The session and hub code talk to [`Broker`] only; which implementation runs is
//! a start-up choice (`--broker`). An enum rather than a trait object keeps calls
//! static and lets each implementation own its async state freely.
//!
//! Contract every implementation keeps:
//! * `subscribe` returns only once publications to the channel will reach
//!   [`crate::hub::Hub::deliver`] on this node: a publish made after it returns is
//!   delivered.
//! * `unsubscribe` never fails from the caller's view: the broker forgets the channel
//!   at once and repairs any leftover server-side subscription itself.
//! * `publish` returns `Ok` only once the publication was accepted; any other outcome
//!   is an error the caller reports. Nothing is dropped silently.

pub mod cluster;
pub mod memory;
mod resp;
mod streams;
mod subscriber;

use std::sync::Arc;

use serde_json::value::RawValue;
use thiserror::Error;

use crate::channel::{Channel, UserId};
use crate::config::{BrokerKind, Config};
use crate::history::{HistoryPage, Retention};
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;

/// One publication as it travels between instances.
#[derive(Debug, Clone)]
pub struct Publication {
    pub channel: Channel,
    pub data: Box<RawValue>,
    /// The publishing user; `None` for server-side publishes (HTTP API).
    pub from: Option<UserId>,
    /// Position in the channel's history, on history channels.
    pub offset: Option<u64>,
    /// The history epoch the offset belongs to.
    pub epoch: Option<Arc<str>>,
    /// Random id of a plain publication that crossed Redis (0: none), so that a
    /// publish Redis executed twice (a client-side retry after a timeout) is
    /// delivered once.
    pub uid: u64,
}

/// What the broker says once it accepted a publication.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishAck {
    pub offset: Option<u64>,
    pub epoch: Option<String>,
}

#[derive(Debug, Error)]
pub enum BrokerError {
    /// Temporarily unable to serve: no topology, Redis unreachable, timeouts.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    /// Redis refused the command for a reason a retry will not fix.
    #[error("broker refused the request: {0}")]
    Rejected(String),
    /// Configuration that cannot work (bad seed address, ...): reported at start-up.
    #[error("broker misconfigured: {0}")]
    Config(String),
}

pub enum Broker {
    Memory(memory::MemoryBroker),
    Cluster(cluster::ClusterBroker),
}

impl Broker {
    /// Starts the broker chosen by `config`, delivering into `hub`.
    pub async fn start(
        config: &Config,
        hub: Arc<Hub>,
        metrics: Metrics,
        shutdown: Shutdown,
    ) -> Result<Broker, BrokerError> {
        Ok(match config.broker {
            BrokerKind::Memory => Broker::Memory(memory::MemoryBroker::new(hub)),
            BrokerKind::RedisCluster => Broker::Cluster(
                cluster::ClusterBroker::start(config, hub, metrics, shutdown).await?,
            ),
        })
    }

    pub async fn subscribe(&self, channel: &Channel) -> Result<(), BrokerError> {
        match self {
            Broker::Memory(b) => b.subscribe(channel).await,
            Broker::Cluster(b) => b.subscribe(channel).await,
        }
    }

    pub async fn unsubscribe(&self, channel: &Channel) {
        match self {
            Broker::Memory(b) => b.unsubscribe(channel).await,
            Broker::Cluster(b) => b.unsubscribe(channel).await,
        }
    }

    /// Publishes. On a history channel (`retention` set) the publication is stored
    /// and gets its offset atomically with the fan-out; `idempotency_key` makes a
    /// retried publish stored (and delivered) once within the window.
    pub async fn publish(
        &self,
        publication: Publication,
        retention: Option<&Retention>,
        idempotency_key: Option<&str>,
    ) -> Result<PublishAck, BrokerError> {
        match self {
            Broker::Memory(b) => b.publish(publication, retention, idempotency_key).await,
            Broker::Cluster(b) => b.publish(publication, retention, idempotency_key).await,
        }
    }

    /// Publishes plain (non-history) publications, in order; one result each.
    pub async fn publish_plain_batch(
        &self,
        publications: Vec<Publication>,
    ) -> Vec<Result<PublishAck, BrokerError>> {
        match self {
            Broker::Memory(b) => {
                let mut out = Vec::with_capacity(publications.len());
                for p in publications {
                    out.push(b.publish(p, None, None).await);
                }
                out
            }
            Broker::Cluster(b) => b.publish_plain_batch(publications).await,
        }
    }

    /// A history channel's publications after offset `since` (none when `since` is
    /// `None`: only the current position), at most `limit`.
    pub async fn history(
        &self,
        channel: &Channel,
        retention: &Retention,
        since: Option<u64>,
        limit: usize,
    ) -> Result<HistoryPage, BrokerError> {
        match self {
            Broker::Memory(b) => Ok(b.history(channel, retention, since, limit)),
            Broker::Cluster(b) => b.history(channel, retention, since, limit).await,
        }
    }

    /// Whether the broker can serve requests now (`/readyz`).
    pub fn is_ready(&self) -> bool {
        match self {
            Broker::Memory(_) => true,
            Broker::Cluster(b) => b.is_ready(),
        }
    }

    /// The broker's view of the deployment, for `GET /api/cluster`.
    pub async fn describe(&self) -> serde_json::Value {
        match self {
            Broker::Memory(_) => serde_json::json!({ "broker": "memory" }),
            Broker::Cluster(b) => b.describe().await,
        }
    }
}
