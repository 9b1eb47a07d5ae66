//! The broker: how publications reach every instance that has subscribers.
//!
//! The node talks to [`Broker`] only; which implementation runs is a start-up choice
//! (`--broker`). An enum rather than a trait object keeps calls static and lets each
//! implementation own its async state freely. The broker talks back to the node
//! only through the [`BrokerEventHandler`] the node hands it at start (the model is
//! centrifuge's interface of the same name): it never sees the hub or a session.
//!
//! Contract every implementation keeps:
//! * `subscribe` returns only once publications to the channel will reach the event
//!   handler: a publish made after it returns is delivered.
//! * `unsubscribe` never fails from the caller's view: the broker forgets the channel
//!   at once and repairs any leftover server-side subscription itself.
//! * `publish` returns `Ok` only once the publication was accepted; any other outcome
//!   is an error the caller reports. Nothing is dropped silently.

pub mod memory;
pub mod redis;
pub mod wire;

use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;

use crate::channel::{Channel, ClientId};
use crate::config::{BrokerKind, Config};
use crate::history::{HistoryPage, Retention};
use crate::metrics::Metrics;
use crate::presence::{Found, Stats};
use crate::publication::{Publication, PublishAck};
use crate::shutdown::Shutdown;

/// One presence channel's local members, for a refresh.
#[derive(Debug, Clone)]
pub struct PresenceBatch {
    pub channel: Channel,
    /// (client, entry JSON).
    pub members: crate::presence::Members,
    pub join_leave: bool,
}

/// What the broker tells the node. Called from the broker's own tasks: an
/// implementation must not block (the hub's fan-out never waits).
pub trait BrokerEventHandler: Send + Sync + 'static {
    /// A publication arrived for a channel this instance subscribed.
    fn publication(&self, publication: &Publication);
    /// The subscription of `channel` was lost (slot moved, connection lost) and is
    /// live again: publications may have been missed meanwhile.
    fn resubscribed(&self, channel: &Channel);
}

/// The handler as the brokers hold it.
pub type EventHandler = Arc<dyn BrokerEventHandler>;

#[derive(Debug, Error)]
pub enum BrokerError {
    /// No slot map (or primary) known, and none could be read.
    #[error("Redis topology unknown: {0}")]
    NoTopology(String),
    /// Redis did not confirm a subscription in time.
    #[error("Redis did not confirm the subscription within {0:?}")]
    SubscribeTimeout(Duration),
    /// A Redis command failed (unreachable, timed out, refused).
    #[error("{context}: {source}")]
    Redis {
        context: &'static str,
        #[source]
        source: ::redis::RedisError,
    },
    /// A payload could not be encoded (a bug: the data was valid JSON on entry).
    #[error("cannot encode the publication: {0}")]
    Encode(#[source] serde_json::Error),
    /// One failure that failed every publication of a batch.
    #[error(transparent)]
    Batch(Arc<BrokerError>),
    /// Configuration that cannot work (bad seed address, ...): reported at start-up.
    #[error("broker misconfigured: {0}")]
    Config(String),
}

impl BrokerError {
    pub(crate) fn redis(context: &'static str) -> impl FnOnce(::redis::RedisError) -> BrokerError {
        move |source| BrokerError::Redis { context, source }
    }
}

pub enum Broker {
    Memory(memory::MemoryBroker),
    Redis(redis::RedisBroker),
}

impl Broker {
    /// Starts the broker chosen by `config`, reporting to `events`.
    pub async fn start(
        config: &Config,
        events: EventHandler,
        metrics: Metrics,
        shutdown: Shutdown,
    ) -> Result<Broker, BrokerError> {
        Ok(match config.broker {
            BrokerKind::Memory => Broker::Memory(memory::MemoryBroker::new(events)),
            BrokerKind::RedisCluster | BrokerKind::Redis | BrokerKind::RedisSentinel => {
                Broker::Redis(redis::RedisBroker::start(config, events, metrics, shutdown).await?)
            }
        })
    }

    pub async fn subscribe(&self, channel: &Channel) -> Result<(), BrokerError> {
        match self {
            Broker::Memory(b) => b.subscribe(channel).await,
            Broker::Redis(b) => b.subscribe(channel).await,
        }
    }

    pub async fn unsubscribe(&self, channel: &Channel) {
        match self {
            Broker::Memory(b) => b.unsubscribe(channel).await,
            Broker::Redis(b) => b.unsubscribe(channel).await,
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
            Broker::Redis(b) => b.publish(publication, retention, idempotency_key).await,
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
            Broker::Redis(b) => b.publish_plain_batch(publications).await,
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
            Broker::Redis(b) => b.history(channel, retention, since, limit).await,
        }
    }

    /// `client` joins `channel` with `entry`; a `join` goes to the channel's
    /// subscribers everywhere when `join_leave`. The entry expires after `ttl`
    /// unless refreshed.
    pub async fn presence_join(
        &self,
        channel: &Channel,
        client: &ClientId,
        entry: &str,
        ttl: Duration,
        join_leave: bool,
    ) -> Result<(), BrokerError> {
        match self {
            Broker::Memory(b) => {
                b.presence
                    .join(&b.events, channel, client, entry, join_leave);
                Ok(())
            }
            Broker::Redis(b) => {
                b.shared()
                    .presence_join(channel, client, entry, ttl, join_leave)
                    .await
            }
        }
    }

    pub async fn presence_leave(
        &self,
        channel: &Channel,
        client: &ClientId,
        entry: &str,
        join_leave: bool,
    ) -> Result<(), BrokerError> {
        match self {
            Broker::Memory(b) => {
                b.presence.leave(&b.events, channel, client, join_leave);
                Ok(())
            }
            Broker::Redis(b) => {
                b.shared()
                    .presence_leave(channel, client, entry, join_leave)
                    .await
            }
        }
    }

    /// Re-asserts this instance's members and pushes their expiry; removes expired
    /// members (with their leaves).
    pub async fn presence_refresh(
        &self,
        batch: &[PresenceBatch],
        ttl: Duration,
    ) -> Result<(), BrokerError> {
        match self {
            Broker::Memory(_) => Ok(()),
            Broker::Redis(b) => b.shared().presence_refresh(batch, ttl).await,
        }
    }

    /// The members of `channel`, up to `max` (more: [`Found::TooMany`]).
    pub async fn presence(
        &self,
        channel: &Channel,
        join_leave: bool,
        max: usize,
    ) -> Result<Found, BrokerError> {
        match self {
            Broker::Memory(b) => Ok(b.presence.members(channel, max)),
            Broker::Redis(b) => b.shared().presence(channel, join_leave, max).await,
        }
    }

    pub async fn presence_stats(
        &self,
        channel: &Channel,
        join_leave: bool,
    ) -> Result<Stats, BrokerError> {
        match self {
            Broker::Memory(b) => Ok(b.presence.stats(channel)),
            Broker::Redis(b) => b.shared().presence_stats(channel, join_leave).await,
        }
    }

    /// Writes this instance's report for the cluster-wide registry (TTL `ttl`).
    /// The embedded broker has no other instances to tell.
    pub async fn announce(&self, id: &str, report: &str, ttl: Duration) -> Result<(), BrokerError> {
        match self {
            Broker::Memory(_) => Ok(()),
            Broker::Redis(b) => b.shared().announce(id, report, ttl).await,
        }
    }

    /// Every live instance's report (`None`: the embedded broker keeps no registry).
    pub async fn instances(&self) -> Result<Option<Vec<String>>, BrokerError> {
        match self {
            Broker::Memory(_) => Ok(None),
            Broker::Redis(b) => b.shared().instances().await.map(Some),
        }
    }

    pub async fn forget_instance(&self, id: &str) -> Result<(), BrokerError> {
        match self {
            Broker::Memory(_) => Ok(()),
            Broker::Redis(b) => b.shared().forget_instance(id).await,
        }
    }

    /// How many instances hold a subscription of `channel` (the embedded broker:
    /// this one, if it has local subscribers, which the caller knows).
    pub async fn holders(&self, channel: &Channel) -> Result<Option<i64>, BrokerError> {
        match self {
            Broker::Memory(_) => Ok(None),
            Broker::Redis(b) => b.shared().shard_numsub(channel).await.map(Some),
        }
    }

    /// The Redis node that owns `channel`'s slot, and its replicas, as this instance sees it.
    pub fn owner_of(&self, channel: &Channel) -> Option<(String, Vec<String>)> {
        match self {
            Broker::Memory(_) => None,
            Broker::Redis(b) => b.owner_of(channel),
        }
    }

    /// The last `n` topology events this instance saw (none on the embedded broker).
    pub fn timeline(&self, n: usize) -> Vec<redis::timeline::Event> {
        match self {
            Broker::Memory(_) => Vec::new(),
            Broker::Redis(b) => b.timeline(n),
        }
    }

    /// Whether the broker can serve requests now (`/readyz`).
    pub fn is_ready(&self) -> bool {
        match self {
            Broker::Memory(_) => true,
            Broker::Redis(b) => b.is_ready(),
        }
    }

    /// The broker's view of the deployment, for `GET /api/cluster`.
    pub fn describe(&self) -> serde_json::Value {
        match self {
            Broker::Memory(_) => serde_json::json!({ "broker": "memory" }),
            Broker::Redis(b) => b.describe(),
        }
    }
}
