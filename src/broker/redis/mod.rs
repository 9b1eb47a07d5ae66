//! The Redis broker: sharded pub/sub on a Redis Cluster, following the topology.
//!
//! Subscription state is owned here, not by redis-rs ([`state`]): a single
//! reconciler task ([`reconciler`]) plans ([`plan`]) and issues SSUBSCRIBE and
//! SUNSUBSCRIBE batches, one slot per batch (never CROSSSLOT), on one
//! [`subscriber`] connection per Redis node. Every disturbance (a subscribe request,
//! an unsolicited `sunsubscribe` after a slot migration, a MOVED, a lost connection,
//! a changed slot map, the periodic timer) only marks channels dirty and wakes the
//! reconciler, so there is one code path that subscribes, and it is the one the
//! tests exercise.
//!
//! The same broker serves one Redis server and a Sentinel-watched primary: to
//! everything above [`source`] they are a cluster of one shard that owns every
//! slot, found by another discovery ([`source`], [`sentinel`]) and reached by a
//! plain connection instead of the cluster client ([`conn`]).
//!
//! Plain publishes go through one pipelined connection per primary of our own
//! ([`pipe`]); history publishes and reads, presence and the registry through the
//! data connection ([`conn`], [`publisher`]); the slot map comes from [`discovery`].

mod conn;
mod connector;
mod describe;
mod discovery;
mod keys;
mod pipe;
mod plan;
mod presence;
mod publisher;
mod reconciler;
mod registry;
mod resp;
mod sentinel;
mod source;
mod state;
mod subscriber;
pub mod timeline;
pub mod topology;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::cluster_async::ClusterConnection;
use tokio::sync::{Notify, OnceCell, oneshot};

use super::{BrokerError, EventHandler};
use crate::channel::Channel;
use crate::config::{Config, SubscribeFrom};
use crate::history::{HistoryPage, Retention};
use crate::metrics::Metrics;
use crate::publication::{Publication, PublishAck};
use crate::shutdown::Shutdown;
use state::State;
use subscriber::SubscriberCmd;
use topology::{RedisAddr, SlotMap};

/// Longest wait for Redis to confirm a subscription before the client gets `unavailable`.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(5);

/// What the reconciler, the subscriber connections and the publishing calls share.
pub(crate) struct Shared {
    events: EventHandler,
    metrics: Metrics,
    /// `CLIENT SETNAME` of this instance's subscriber connections.
    client_name: String,
    /// `CLIENT SETNAME` of its publishing connections ([`pipe`]).
    publisher_name: String,
    policy: SubscribeFrom,
    /// Where the nodes come from: cluster seeds, one server, or sentinels.
    source: source::Source,
    /// Credentials and TLS of every connection.
    connector: connector::Connector,
    reconcile_interval: Duration,
    topology_interval: Duration,
    topology: RwLock<Option<Arc<SlotMap>>>,
    state: Mutex<State>,
    kick: Notify,
    /// A slot map refresh is due (a hint of change arrived).
    refresh: AtomicBool,
    /// The publishing connections, one per primary.
    pipes: pipe::Pipes,
    /// The data connection of a cluster.
    cluster: OnceCell<ClusterConnection>,
    /// The data connection of one server: the primary it goes to, and it.
    single: tokio::sync::Mutex<Option<(RedisAddr, MultiplexedConnection)>>,
    /// The last topology read succeeded (readiness).
    reachable: AtomicBool,
    /// What this instance saw happen, for operators.
    timeline: timeline::Timeline,
    shutdown: Shutdown,
}

pub struct RedisBroker {
    shared: Arc<Shared>,
}

impl RedisBroker {
    pub async fn start(
        config: &Config,
        events: EventHandler,
        metrics: Metrics,
        shutdown: Shutdown,
    ) -> Result<RedisBroker, BrokerError> {
        let (source, connector) = source::from_config(config)?;
        let shared = Arc::new(Shared {
            events,
            metrics,
            client_name: format!("shardcast-sub-{}", config.instance()),
            publisher_name: format!("shardcast-pub-{}", config.instance()),
            policy: config.subscribe_from,
            source,
            connector,
            reconcile_interval: config.reconcile_interval,
            topology_interval: config.topology_interval,
            topology: RwLock::new(None),
            state: Mutex::new(State::default()),
            kick: Notify::new(),
            refresh: AtomicBool::new(true),
            pipes: pipe::Pipes::default(),
            cluster: OnceCell::new(),
            single: tokio::sync::Mutex::new(None),
            reachable: AtomicBool::new(false),
            timeline: timeline::Timeline::default(),
            shutdown,
        });
        // A first attempt now, so that a healthy cluster is ready at once; an
        // unreachable one is not fatal: /readyz says so and the reconciler retries.
        if let Err(e) = shared.refresh_topology().await {
            tracing::warn!(error = %e, "no Redis topology yet; will retry");
        }
        sentinel::watch(&shared);
        tokio::spawn(reconciler::run(shared.clone()));
        Ok(RedisBroker { shared })
    }

    pub async fn subscribe(&self, channel: &Channel) -> Result<(), BrokerError> {
        let shared = &self.shared;
        if shared.map().is_none() {
            shared.refresh_topology().await?;
        }
        let (tx, rx) = oneshot::channel();
        shared.lock().want(channel, tx);
        shared.kick.notify_one();
        match tokio::time::timeout(SUBSCRIBE_TIMEOUT, rx).await {
            Ok(Ok(())) => Ok(()),
            _ => {
                shared.lock().unwant(channel);
                shared.kick.notify_one();
                Err(BrokerError::SubscribeTimeout(SUBSCRIBE_TIMEOUT))
            }
        }
    }

    pub async fn unsubscribe(&self, channel: &Channel) {
        self.shared.lock().unwant(channel);
        self.shared.kick.notify_one();
    }

    pub async fn publish(
        &self,
        p: Publication,
        retention: Option<&Retention>,
        idempotency_key: Option<&str>,
    ) -> Result<PublishAck, BrokerError> {
        self.shared.publish(p, retention, idempotency_key).await
    }

    pub async fn publish_plain_batch(
        &self,
        publications: Vec<Publication>,
    ) -> Vec<Result<PublishAck, BrokerError>> {
        self.shared.publish_plain_batch(publications).await
    }

    pub async fn history(
        &self,
        channel: &Channel,
        retention: &Retention,
        since: Option<u64>,
        limit: usize,
    ) -> Result<HistoryPage, BrokerError> {
        self.shared.history(channel, retention, since, limit).await
    }

    /// The slot map is known and the last attempt to read it reached Redis.
    pub fn is_ready(&self) -> bool {
        self.shared.reachable.load(Ordering::Relaxed)
            && self.shared.map().is_some_and(|m| m.covered() > 0)
    }

    /// `redis-cluster`, `redis` or `redis-sentinel`.
    pub fn kind(&self) -> &'static str {
        self.shared.source.kind()
    }

    pub(crate) fn shared(&self) -> &Shared {
        &self.shared
    }

    pub fn describe(&self) -> serde_json::Value {
        self.shared.describe()
    }

    pub fn owner_of(&self, channel: &Channel) -> Option<(String, Vec<String>)> {
        let map = self.shared.map()?;
        let shard = map.shard_of(crate::slot::key_slot(channel.as_str().as_bytes()))?;
        Some((shard.primary.clone(), shard.replicas.clone()))
    }

    /// The last `n` events this instance saw.
    pub fn timeline(&self, n: usize) -> Vec<timeline::Event> {
        self.shared.timeline.recent(n)
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Every critical section is a handful of set operations; a panic in one
        // would be a bug, and the state stays consistent enough to keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn map(&self) -> Option<Arc<SlotMap>> {
        self.topology
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    async fn closed(&self) {
        self.shutdown.clone().recv().await
    }

    fn hint_refresh(&self) {
        self.refresh.store(true, Ordering::Relaxed);
    }

    // --- reports from the subscriber connections ---

    fn on_connected(&self, addr: &RedisAddr, stale: Vec<SubscriberCmd>) {
        self.lock().connected(addr, stale);
        self.timeline
            .record("connection", format!("subscriber connection to {addr} up"));
        self.kick.notify_one();
    }

    fn on_connect_failed(&self, addr: &RedisAddr, stale: Vec<SubscriberCmd>) {
        self.lock().forget_commands(addr, stale);
        self.hint_refresh();
        self.kick.notify_one();
    }

    fn on_lost(&self, addr: &RedisAddr) {
        let lost = self.lock().lost_connection(addr);
        self.timeline.record(
            "connection",
            format!("subscriber connection to {addr} lost ({lost} channels to resubscribe)"),
        );
        self.hint_refresh();
        self.kick.notify_one();
    }

    fn on_confirmed(&self, addr: &RedisAddr, ch: &Channel) {
        let confirmed = self.lock().confirmed(addr, ch);
        if let Some((n, took)) = confirmed.recovered {
            self.timeline.record(
                "resubscribe",
                format!("resubscribed {n} channels in {} ms", took.as_millis()),
            );
        }
        if confirmed.regained {
            // Publications may have been missed while it was lost.
            self.events.resubscribed(ch);
        }
        if confirmed.kick {
            self.kick.notify_one();
        }
    }

    fn on_unsubscribed(&self, addr: &RedisAddr, ch: &Channel) {
        if self.lock().unsubscribed(addr, ch) {
            self.kick.notify_one();
        }
    }

    /// Redis dropped a subscription by itself: its slot moved (migration, failover).
    fn on_unsolicited_unsubscribe(&self, addr: &RedisAddr, ch: &Channel) {
        tracing::debug!(node = %addr, channel = %ch, "Redis dropped a subscription (slot moved); resubscribing");
        self.lock().dropped_by_redis(addr, ch);
        self.hint_refresh();
        self.kick.notify_one();
    }

    /// Redis refused a batch (MOVED/ASK after a topology change, or another error).
    fn on_refused(&self, addr: &RedisAddr, channels: Vec<Channel>, redirected: bool) {
        self.lock().refused(addr, channels);
        if redirected {
            self.hint_refresh();
        }
        self.kick.notify_one();
    }
}
