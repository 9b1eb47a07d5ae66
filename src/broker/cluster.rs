//! Redis Cluster broker: sharded pub/sub, following the topology.
//!
//! State is owned here, not by redis-rs: `desired` is the set of channels local
//! clients want; each node's `actual` set is what Redis confirmed on this instance's
//! one subscriber connection to that node. A single reconciler task compares the two
//! against the slot map and issues SSUBSCRIBE/SUNSUBSCRIBE batches, one slot per
//! batch (never CROSSSLOT). Every disturbance (a subscribe request, an unsolicited
//! `sunsubscribe` after a slot migration, a MOVED, a lost connection, a changed slot
//! map, the periodic timer) only marks channels dirty and wakes the reconciler, so
//! there is one code path that subscribes, and it is the one the tests exercise.
//!
//! Publishing goes through redis-rs's cluster connection (SPUBLISH, routed by the
//! channel's slot, following MOVED/ASK).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use redis::cluster_async::ClusterConnection;
use serde::Serialize;
use serde_json::json;
use tokio::sync::{Notify, OnceCell, mpsc, oneshot};
use tokio::time::Instant;

use super::streams;
use super::subscriber::{self, NodeCmd};
use super::{BrokerError, Publication, PublishAck};
use crate::channel::Channel;
use crate::config::{Config, SubscribeFrom};
use crate::history::{HistoryPage, IDEMPOTENCY_WINDOW, Retention, new_epoch};
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::slot::key_slot;
use crate::topology::{NodeAddr, SlotMap, parse_cluster_shards, parse_cluster_slots};
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};

/// Longest wait for Redis to confirm a subscription before the client gets `unavailable`.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Most channels in one SSUBSCRIBE/SUNSUBSCRIBE.
const BATCH: usize = 256;
/// Topology refreshes are at least this far apart, however many hints arrive.
const MIN_REFRESH_GAP: Duration = Duration::from_millis(100);
/// Retry delay while some wanted channel cannot be placed (no owner, node down).
const RETRY: Duration = Duration::from_millis(250);
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a per-publish dedup key lives (covers client-library resends).
const RESEND_WINDOW: Duration = Duration::from_secs(10);
/// How long a history publish waits for a replica to confirm it.
const REPLICA_WAIT: Duration = Duration::from_millis(500);

struct NodeState {
    tx: mpsc::UnboundedSender<NodeCmd>,
    connected: bool,
    actual: HashSet<Channel>,
    pending_sub: HashSet<Channel>,
    pending_unsub: HashSet<Channel>,
}

impl NodeState {
    fn holds(&self, ch: &Channel) -> bool {
        self.actual.contains(ch) || self.pending_sub.contains(ch)
    }

    /// Nothing subscribed and nothing in flight: the connection may be closed.
    fn is_idle(&self) -> bool {
        self.actual.is_empty() && self.pending_sub.is_empty() && self.pending_unsub.is_empty()
    }
}

#[derive(Default)]
struct State {
    desired: HashSet<Channel>,
    dirty: HashSet<Channel>,
    /// Next pass must look at every channel (topology changed, connection lost, timer).
    full: bool,
    /// Channels that were live and got lost; their next SSUBSCRIBE counts as a resubscribe.
    lost: HashSet<Channel>,
    /// Resubscribed after a loss: once confirmed, the hub checks history for a gap.
    regained: HashSet<Channel>,
    nodes: HashMap<NodeAddr, NodeState>,
    waiters: HashMap<Channel, Vec<oneshot::Sender<()>>>,
}

pub struct Inner {
    pub(super) hub: Arc<Hub>,
    pub(super) metrics: Metrics,
    pub(super) client_name: String,
    policy: SubscribeFrom,
    seeds: Vec<NodeAddr>,
    seed_urls: Vec<String>,
    reconcile_interval: Duration,
    topology_interval: Duration,
    topology: RwLock<Option<Arc<SlotMap>>>,
    state: Mutex<State>,
    kick: Notify,
    refresh: AtomicBool,
    publisher: OnceCell<ClusterConnection>,
    shutdown: Shutdown,
}

pub struct ClusterBroker {
    inner: Arc<Inner>,
}

/// `redis://host:port` (or `host:port`) to `host:port`.
fn seed_addr(url: &str) -> Result<NodeAddr, BrokerError> {
    let rest = url
        .strip_prefix("redis://")
        .or_else(|| (!url.contains("://")).then_some(url))
        .ok_or_else(|| {
            BrokerError::Config(format!("unsupported seed `{url}` (use redis://host:port)"))
        })?;
    let hostport = rest
        .rsplit('@')
        .next()
        .unwrap_or(rest)
        .trim_end_matches('/');
    if hostport.is_empty() || !hostport.contains(':') {
        return Err(BrokerError::Config(format!("seed `{url}` needs host:port")));
    }
    Ok(hostport.to_string())
}

impl ClusterBroker {
    pub async fn start(
        config: &Config,
        hub: Arc<Hub>,
        metrics: Metrics,
        shutdown: Shutdown,
    ) -> Result<ClusterBroker, BrokerError> {
        if config.redis_nodes.is_empty() {
            return Err(BrokerError::Config(
                "--broker redis-cluster needs --redis-nodes redis://host:port,...".into(),
            ));
        }
        let seeds = config
            .redis_nodes
            .iter()
            .map(|u| seed_addr(u.trim()))
            .collect::<Result<Vec<_>, _>>()?;
        let inner = Arc::new(Inner {
            hub,
            metrics,
            client_name: format!("shardcast-sub-{:08x}", rand::random::<u32>()),
            policy: config.subscribe_from,
            seed_urls: seeds.iter().map(|s| format!("redis://{s}")).collect(),
            seeds,
            reconcile_interval: config.reconcile_interval,
            topology_interval: config.topology_interval,
            topology: RwLock::new(None),
            state: Mutex::new(State::default()),
            kick: Notify::new(),
            refresh: AtomicBool::new(true),
            publisher: OnceCell::new(),
            shutdown,
        });
        // A first attempt now, so that a healthy cluster is ready at once; an
        // unreachable one is not fatal: /readyz says so and the reconciler retries.
        if let Err(e) = inner.refresh_topology().await {
            tracing::warn!(error = %e, "no cluster topology yet; will retry");
        }
        tokio::spawn(reconciler(inner.clone()));
        Ok(ClusterBroker { inner })
    }

    pub async fn subscribe(&self, channel: &Channel) -> Result<(), BrokerError> {
        let inner = &self.inner;
        if inner.map().is_none() && inner.refresh_topology().await.is_err() {
            return Err(BrokerError::Unavailable("no cluster topology known".into()));
        }
        let (tx, rx) = oneshot::channel();
        {
            let mut st = inner.lock();
            st.desired.insert(channel.clone());
            st.waiters.entry(channel.clone()).or_default().push(tx);
            st.dirty.insert(channel.clone());
        }
        inner.kick.notify_one();
        match tokio::time::timeout(SUBSCRIBE_TIMEOUT, rx).await {
            Ok(Ok(())) => Ok(()),
            _ => {
                let mut st = inner.lock();
                st.desired.remove(channel);
                st.waiters.remove(channel);
                st.dirty.insert(channel.clone());
                drop(st);
                inner.kick.notify_one();
                Err(BrokerError::Unavailable(format!(
                    "Redis did not confirm the subscription within {SUBSCRIBE_TIMEOUT:?}"
                )))
            }
        }
    }

    pub async fn unsubscribe(&self, channel: &Channel) {
        let mut st = self.inner.lock();
        st.desired.remove(channel);
        st.lost.remove(channel);
        st.dirty.insert(channel.clone());
        drop(st);
        self.inner.kick.notify_one();
    }

    pub async fn publish(
        &self,
        p: Publication,
        retention: Option<&Retention>,
        idempotency_key: Option<&str>,
    ) -> Result<PublishAck, BrokerError> {
        let mut conn = self.inner.publisher().await?;
        let started = Instant::now();
        let result = match retention {
            None => match plain_payload(&p) {
                Ok(payload) => self.spublish(&mut conn, &p.channel, &payload).await,
                Err(e) => Err(e),
            },
            Some(r) => self.publish_stored(&mut conn, &p, r, idempotency_key).await,
        };
        self.inner
            .metrics
            .redis_latency
            .record(started.elapsed().as_secs_f64());
        result
    }

    /// SPUBLISHes one prepared payload through the redirect-following path.
    async fn spublish(
        &self,
        conn: &mut ClusterConnection,
        channel: &Channel,
        payload: &[u8],
    ) -> Result<PublishAck, BrokerError> {
        redis::cmd("SPUBLISH")
            .arg(channel.as_str())
            .arg(payload)
            .query_async::<i64>(conn)
            .await
            .map(|_| PublishAck::default())
            .map_err(|e| BrokerError::Unavailable(format!("SPUBLISH failed: {e}")))
    }

    /// Plain publications as one pipeline: one round trip for a burst from one
    /// connection. A command Redis refused (e.g. MOVED while a slot moves) is
    /// retried alone, in order, through the redirect-following path; a retry sends
    /// the same payload (same id), so a repeat Redis did run is dropped by the hubs.
    pub async fn publish_plain_batch(
        &self,
        publications: Vec<Publication>,
    ) -> Vec<Result<PublishAck, BrokerError>> {
        let payloads: Vec<Result<Vec<u8>, BrokerError>> =
            publications.iter().map(plain_payload).collect();
        let mut conn = match self.inner.publisher().await {
            Ok(c) => c,
            Err(e) => {
                return publications
                    .iter()
                    .map(|_| Err(BrokerError::Unavailable(e.to_string())))
                    .collect();
            }
        };
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        let mut sent = Vec::new();
        for (i, (p, payload)) in publications.iter().zip(&payloads).enumerate() {
            if let Ok(payload) = payload {
                pipe.cmd("SPUBLISH").arg(p.channel.as_str()).arg(payload);
                sent.push(i);
            }
        }
        let started = Instant::now();
        let replies: Result<Vec<redis::Value>, _> = pipe.query_async(&mut conn).await;
        self.inner
            .metrics
            .redis_latency
            .record(started.elapsed().as_secs_f64());
        // Per publication: Some(true) accepted, Some(false) refused or unknown.
        let mut accepted = vec![false; publications.len()];
        if let Ok(values) = &replies
            && values.len() == sent.len()
        {
            for (i, v) in sent.iter().zip(values) {
                accepted[*i] = !matches!(v, redis::Value::ServerError(_));
            }
        }
        let mut out = Vec::with_capacity(publications.len());
        for ((p, payload), ok) in publications.iter().zip(payloads).zip(accepted) {
            out.push(match payload {
                Err(e) => Err(e),
                Ok(_) if ok => Ok(PublishAck::default()),
                Ok(payload) => self.spublish(&mut conn, &p.channel, &payload).await,
            });
        }
        out
    }

    /// Appends to the channel's stream and SPUBLISHes in one script on the slot's
    /// primary, then waits (briefly) for a replica to have it, so that an
    /// acknowledged publication survives a failover.
    async fn publish_stored(
        &self,
        conn: &mut ClusterConnection,
        p: &Publication,
        retention: &Retention,
        idempotency_key: Option<&str>,
    ) -> Result<PublishAck, BrokerError> {
        let keys = streams::Keys::of(&p.channel);
        let mut inv = streams::PUBLISH.key(&keys.stream);
        inv.key(&keys.meta);
        let window = match idempotency_key {
            Some(k) => {
                inv.key(keys.idempotency(k));
                IDEMPOTENCY_WINDOW
            }
            None => {
                inv.key(keys.once());
                RESEND_WINDOW
            }
        };
        inv.arg(p.channel.as_str())
            .arg(p.data.get())
            .arg(streams::from_fragment(p.from.as_ref()))
            .arg(retention.max_len)
            .arg(retention.ttl.as_millis() as u64)
            .arg(new_epoch())
            .arg(window.as_millis() as u64);
        let (offset, epoch, _repeated): (u64, String, i64) = inv
            .invoke_async(conn)
            .await
            .map_err(|e| BrokerError::Unavailable(format!("history publish failed: {e}")))?;
        let slot = key_slot(p.channel.as_str().as_bytes());
        let has_replica = self
            .inner
            .map()
            .and_then(|m| m.shard_of(slot).map(|s| !s.replicas.is_empty()))
            .unwrap_or(false);
        if has_replica {
            let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(Route::new(
                slot,
                SlotAddr::Master,
            )));
            let mut wait = redis::cmd("WAIT");
            wait.arg(1).arg(REPLICA_WAIT.as_millis() as u64);
            match conn.route_command(wait, route).await {
                Ok(redis::Value::Int(n)) if n >= 1 => {}
                // Stored and published already: failing the publish now would only
                // invite a retry that stores it twice. Counted instead.
                Ok(_) | Err(_) => self.inner.metrics.history_unreplicated.increment(1),
            }
        }
        Ok(PublishAck {
            offset: Some(offset),
            epoch: Some(epoch),
        })
    }

    pub async fn history(
        &self,
        channel: &Channel,
        retention: &Retention,
        since: Option<u64>,
        limit: usize,
    ) -> Result<HistoryPage, BrokerError> {
        let mut conn = self.inner.publisher().await?;
        let keys = streams::Keys::of(channel);
        let (epoch, top, payloads): (String, u64, Vec<Vec<u8>>) = streams::READ
            .key(&keys.stream)
            .key(&keys.meta)
            .arg(since.map(|s| s.to_string()).unwrap_or_default())
            .arg(limit.max(1))
            .arg(retention.ttl.as_millis() as u64)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| BrokerError::Unavailable(format!("history read failed: {e}")))?;
        let publications: Vec<Publication> = payloads
            .iter()
            .filter_map(|p| streams::decode(channel, p))
            .collect();
        let complete = match since {
            None => true,
            Some(s) => s >= top || publications.first().and_then(|p| p.offset) == Some(s + 1),
        };
        Ok(HistoryPage {
            epoch,
            top,
            publications,
            complete,
        })
    }

    pub fn is_ready(&self) -> bool {
        self.inner.map().is_some_and(|m| m.covered() > 0)
    }

    pub async fn describe(&self) -> serde_json::Value {
        let map = self.inner.map();
        let st = self.inner.lock();
        let nodes: BTreeMap<&NodeAddr, serde_json::Value> = st
            .nodes
            .iter()
            .map(|(addr, n)| {
                let mut channels: Vec<&str> = n.actual.iter().map(Channel::as_str).collect();
                channels.sort_unstable();
                (
                    addr,
                    json!({
                        "connected": n.connected,
                        "subscriptions": n.actual.len(),
                        "pending": n.pending_sub.len() + n.pending_unsub.len(),
                        "channels": channels,
                    }),
                )
            })
            .collect();
        json!({
            "broker": "redis-cluster",
            "subscribe_from": format!("{:?}", self.inner.policy).to_lowercase(),
            "slots_covered": map.as_ref().map_or(0, |m| m.covered()),
            "shards": map.as_ref().map(|m| &m.shards),
            "desired_channels": st.desired.len(),
            "subscriber_nodes": nodes,
        })
    }
}

impl Inner {
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

    pub(super) async fn closed(&self) {
        self.shutdown.clone().recv().await
    }

    async fn publisher(&self) -> Result<ClusterConnection, BrokerError> {
        self.publisher
            .get_or_try_init(|| async {
                let client = redis::cluster::ClusterClientBuilder::new(self.seed_urls.clone())
                    .connection_timeout(REDIS_TIMEOUT)
                    .response_timeout(REDIS_TIMEOUT)
                    .retries(3)
                    .build()
                    .map_err(|e| BrokerError::Config(e.to_string()))?;
                client
                    .get_async_connection()
                    .await
                    .map_err(|e| BrokerError::Unavailable(format!("cannot reach the cluster: {e}")))
            })
            .await
            .cloned()
    }

    /// Reads the slot map from the first node that answers: known nodes first, seeds last.
    async fn refresh_topology(&self) -> Result<bool, BrokerError> {
        self.metrics.redis_topology_refreshes.increment(1);
        let mut candidates: Vec<NodeAddr> = self
            .map()
            .map(|m| m.nodes().into_iter().collect())
            .unwrap_or_default();
        candidates.extend(self.seeds.iter().cloned());
        let mut last_err = String::from("no nodes to ask");
        for addr in candidates {
            match fetch_shards(&addr).await {
                Ok(map) if map.covered() > 0 => {
                    let map = Arc::new(map);
                    let mut slot = self.topology.write().unwrap_or_else(|e| e.into_inner());
                    let changed = slot.as_deref() != Some(&*map);
                    if changed {
                        tracing::info!(shards = map.shards.len(), via = %addr, "cluster topology updated");
                    }
                    *slot = Some(map);
                    return Ok(changed);
                }
                Ok(_) => last_err = format!("{addr}: no slots assigned"),
                Err(e) => last_err = format!("{addr}: {e}"),
            }
        }
        Err(BrokerError::Unavailable(last_err))
    }

    // --- reports from the subscriber connections ---

    pub(super) fn on_connected(&self, addr: &NodeAddr, stale: Vec<NodeCmd>) {
        let mut st = self.lock();
        if let Some(n) = st.nodes.get_mut(addr) {
            n.connected = true;
        }
        drop(st);
        self.forget_commands(addr, stale);
        self.mark_full();
    }

    pub(super) fn on_connect_failed(&self, addr: &NodeAddr, stale: Vec<NodeCmd>) {
        self.forget_commands(addr, stale);
        self.refresh.store(true, Ordering::Relaxed);
        self.kick.notify_one();
    }

    fn forget_commands(&self, addr: &NodeAddr, stale: Vec<NodeCmd>) {
        let mut st = self.lock();
        let st = &mut *st;
        let Some(n) = st.nodes.get_mut(addr) else {
            return;
        };
        for cmd in stale {
            let (NodeCmd::Subscribe(chs) | NodeCmd::Unsubscribe(chs)) = cmd;
            for ch in chs {
                n.pending_sub.remove(&ch);
                n.pending_unsub.remove(&ch);
                st.dirty.insert(ch);
            }
        }
    }

    pub(super) fn on_lost(&self, addr: &NodeAddr) {
        let mut st = self.lock();
        let st = &mut *st;
        if let Some(n) = st.nodes.get_mut(addr) {
            n.connected = false;
            let gone: Vec<Channel> = n
                .actual
                .drain()
                .chain(n.pending_sub.drain())
                .chain(n.pending_unsub.drain())
                .collect();
            for ch in gone {
                if st.desired.contains(&ch) {
                    st.lost.insert(ch.clone());
                }
                st.dirty.insert(ch);
            }
        }
        st.full = true;
        self.refresh.store(true, Ordering::Relaxed);
        self.kick.notify_one();
    }

    pub(super) fn on_confirmed(&self, addr: &NodeAddr, ch: &Channel) {
        let mut st = self.lock();
        if let Some(n) = st.nodes.get_mut(addr) {
            n.pending_sub.remove(ch);
            n.actual.insert(ch.clone());
        }
        if let Some(waiters) = st.waiters.remove(ch) {
            for w in waiters {
                let _ = w.send(());
            }
        }
        if st.regained.remove(ch) {
            // Publications may have been missed while it was lost.
            self.hub.check_gap(ch);
        }
        if !st.desired.contains(ch) {
            // Unsubscribed while the SSUBSCRIBE was in flight.
            st.dirty.insert(ch.clone());
            drop(st);
            self.kick.notify_one();
        }
    }

    pub(super) fn on_unsubscribed(&self, addr: &NodeAddr, ch: &Channel) {
        let mut st = self.lock();
        if let Some(n) = st.nodes.get_mut(addr) {
            n.pending_unsub.remove(ch);
            n.actual.remove(ch);
        }
        if st.desired.contains(ch) {
            st.dirty.insert(ch.clone());
            drop(st);
            self.kick.notify_one();
        }
    }

    /// Redis dropped a subscription by itself: its slot moved (migration, failover).
    pub(super) fn on_unsolicited_unsubscribe(&self, addr: &NodeAddr, ch: &Channel) {
        tracing::info!(node = %addr, channel = %ch, "Redis dropped a subscription (slot moved); resubscribing");
        let mut st = self.lock();
        if let Some(n) = st.nodes.get_mut(addr) {
            n.actual.remove(ch);
            n.pending_sub.remove(ch);
        }
        if st.desired.contains(ch) {
            st.lost.insert(ch.clone());
        }
        st.dirty.insert(ch.clone());
        drop(st);
        self.refresh.store(true, Ordering::Relaxed);
        self.kick.notify_one();
    }

    /// Redis refused a batch (MOVED/ASK after a topology change, or another error).
    pub(super) fn on_refused(&self, addr: &NodeAddr, channels: Vec<Channel>, redirected: bool) {
        let mut st = self.lock();
        let st = &mut *st;
        if let Some(n) = st.nodes.get_mut(addr) {
            for ch in &channels {
                n.pending_sub.remove(ch);
                n.pending_unsub.remove(ch);
            }
        }
        st.dirty.extend(channels);
        if redirected {
            self.refresh.store(true, Ordering::Relaxed);
        }
        self.kick.notify_one();
    }

    fn mark_full(&self) {
        self.lock().full = true;
        self.kick.notify_one();
    }
}

/// The SPUBLISH payload of a plain publication: data, sender and a random id that
/// lets the receiving hubs drop a repeat (redis-rs resends a command after a timeout).
fn plain_payload(p: &Publication) -> Result<Vec<u8>, BrokerError> {
    #[derive(Serialize)]
    struct Wire<'a> {
        d: &'a serde_json::value::RawValue,
        #[serde(skip_serializing_if = "Option::is_none")]
        f: Option<&'a str>,
        u: u64,
    }
    serde_json::to_vec(&Wire {
        d: &p.data,
        f: p.from.as_ref().map(|u| u.as_str()),
        // Never 0, which means "no id".
        u: rand::random::<u64>() | 1,
    })
    .map_err(|e| BrokerError::Rejected(e.to_string()))
}

async fn fetch_shards(addr: &str) -> Result<SlotMap, String> {
    let client = redis::Client::open(format!("redis://{addr}")).map_err(|e| e.to_string())?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(REDIS_TIMEOUT))
        .set_response_timeout(Some(REDIS_TIMEOUT));
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(|e| e.to_string())?;
    let shards = redis::cmd("CLUSTER")
        .arg("SHARDS")
        .query_async::<redis::Value>(&mut conn)
        .await
        .ok()
        .and_then(|v| parse_cluster_shards(&v));
    let shards = match shards {
        Some(s) => s,
        None => {
            let v = redis::cmd("CLUSTER")
                .arg("SLOTS")
                .query_async::<redis::Value>(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
            parse_cluster_slots(&v).ok_or("unreadable CLUSTER SLOTS reply")?
        }
    };
    Ok(SlotMap::new(shards))
}

/// The one task that changes Redis subscriptions.
async fn reconciler(inner: Arc<Inner>) {
    let mut shutdown = inner.shutdown.clone();
    let mut next_reconcile = Instant::now() + inner.reconcile_interval;
    let mut next_topology = Instant::now() + inner.topology_interval;
    let mut last_refresh = Instant::now() - MIN_REFRESH_GAP;
    let mut retry_at: Option<Instant> = None;
    loop {
        let wake = retry_at
            .unwrap_or(next_reconcile)
            .min(next_reconcile)
            .min(next_topology);
        let mut periodic = false;
        tokio::select! {
            _ = inner.kick.notified() => {}
            _ = tokio::time::sleep_until(wake) => {
                let now = Instant::now();
                if now >= next_reconcile {
                    periodic = true;
                    next_reconcile = now + inner.reconcile_interval;
                    inner.lock().full = true;
                }
                if now >= next_topology || retry_at.is_some_and(|r| now >= r) {
                    next_topology = now + inner.topology_interval;
                    inner.refresh.store(true, Ordering::Relaxed);
                }
                retry_at = None;
            }
            _ = shutdown.recv() => break,
        }
        if inner.refresh.load(Ordering::Relaxed) {
            let since = last_refresh.elapsed();
            if since < MIN_REFRESH_GAP {
                tokio::time::sleep(MIN_REFRESH_GAP - since).await;
            }
            last_refresh = Instant::now();
            inner.refresh.store(false, Ordering::Relaxed);
            match inner.refresh_topology().await {
                Ok(true) => inner.lock().full = true,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "topology refresh failed");
                    retry_at = Some(Instant::now() + RETRY);
                }
            }
        }
        if pass(&inner, periodic) {
            retry_at =
                Some(retry_at.map_or(Instant::now() + RETRY, |r| r.min(Instant::now() + RETRY)));
        }
    }
    // Dropping the node senders ends the subscriber tasks.
    inner.lock().nodes.clear();
}

/// One reconciliation pass. Returns true when some wanted channel could not be
/// placed now (no owner known, node not connected) and a retry is due.
fn pass(inner: &Arc<Inner>, periodic: bool) -> bool {
    let Some(map) = inner.map() else {
        return true;
    };
    let mut st = inner.lock();
    let st = &mut *st;
    // Channels with a known reason to change (a client came or went, a slot moved).
    // A periodic full pass also does their work; only changes to the others are
    // drift, i.e. Redis and our table disagreed without us being told.
    let mut expected: HashSet<Channel> = HashSet::new();
    let candidates: Vec<Channel> = if std::mem::take(&mut st.full) {
        expected = std::mem::take(&mut st.dirty);
        let mut all: HashSet<Channel> = st.desired.clone();
        for n in st.nodes.values() {
            all.extend(n.actual.iter().cloned());
            all.extend(n.pending_sub.iter().cloned());
        }
        all.into_iter().collect()
    } else {
        st.dirty.drain().collect()
    };

    // node -> slot -> channels
    let mut subs: HashMap<NodeAddr, BTreeMap<u16, Vec<Channel>>> = HashMap::new();
    let mut unsubs: HashMap<NodeAddr, BTreeMap<u16, Vec<Channel>>> = HashMap::new();
    let mut unplaced = false;
    for ch in candidates {
        let slot = key_slot(ch.as_str().as_bytes());
        let target = if st.desired.contains(&ch) {
            match map.subscriber_node(slot, inner.policy) {
                Some(t) => Some(t.clone()),
                None => {
                    unplaced = true;
                    st.dirty.insert(ch.clone());
                    None
                }
            }
        } else {
            None
        };
        for (addr, n) in &st.nodes {
            if Some(addr) != target.as_ref()
                && n.holds(&ch)
                && !n.pending_unsub.contains(&ch)
                && n.connected
            {
                unsubs
                    .entry(addr.clone())
                    .or_default()
                    .entry(slot)
                    .or_default()
                    .push(ch.clone());
            }
        }
        if let Some(t) = target {
            let node = st.nodes.entry(t.clone()).or_insert_with(|| {
                let (tx, rx) = mpsc::unbounded_channel();
                tokio::spawn(subscriber::run(inner.clone(), t.clone(), rx));
                NodeState {
                    tx,
                    connected: false,
                    actual: HashSet::new(),
                    pending_sub: HashSet::new(),
                    pending_unsub: HashSet::new(),
                }
            });
            if node.pending_unsub.contains(&ch) {
                // Re-wanted while its SUNSUBSCRIBE is in flight: resubscribed once
                // Redis confirms the unsubscribe (on_unsubscribed marks it dirty).
                continue;
            }
            if node.actual.contains(&ch) {
                // Already live (re-wanted before its SUNSUBSCRIBE went out): whoever
                // waits for it can go ahead.
                if let Some(waiters) = st.waiters.remove(&ch) {
                    for w in waiters {
                        let _ = w.send(());
                    }
                }
                continue;
            }
            if node.pending_sub.contains(&ch) {
                continue;
            }
            if !node.connected {
                // Sent once the connection is up (on_connected triggers a full pass).
                unplaced = true;
                continue;
            }
            subs.entry(t).or_default().entry(slot).or_default().push(ch);
        }
    }

    let mut drift = 0u64;
    let mut resubscribed = 0u64;
    for (addr, slots) in subs {
        let Some(node) = st.nodes.get_mut(&addr) else {
            continue;
        };
        for (_, chs) in slots {
            for batch in chs.chunks(BATCH) {
                for ch in batch {
                    drift += u64::from(periodic && !expected.contains(ch));
                    node.pending_sub.insert(ch.clone());
                    if st.lost.remove(ch) {
                        resubscribed += 1;
                        st.regained.insert(ch.clone());
                    }
                }
                let _ = node.tx.send(NodeCmd::Subscribe(batch.to_vec()));
            }
        }
    }
    for (addr, slots) in unsubs {
        let Some(node) = st.nodes.get_mut(&addr) else {
            continue;
        };
        for (_, chs) in slots {
            for batch in chs.chunks(BATCH) {
                for ch in batch {
                    drift += u64::from(periodic && !expected.contains(ch));
                    node.pending_unsub.insert(ch.clone());
                }
                let _ = node.tx.send(NodeCmd::Unsubscribe(batch.to_vec()));
            }
        }
    }
    inner.metrics.redis_resubscribes.increment(resubscribed);
    if periodic && drift > 0 {
        tracing::warn!(changes = drift, "reconciliation repaired drift");
        inner.metrics.redis_drift_repaired.increment(drift);
    }

    // Close connections to nodes this instance no longer uses. Only a node with
    // nothing subscribed or in flight can go, and finding out whether it is still
    // needed walks every wanted channel: skipped unless there is such a node, since
    // during a connection storm a pass runs for every few subscribes.
    if st.nodes.values().any(NodeState::is_idle) {
        let needed: HashSet<NodeAddr> = st
            .desired
            .iter()
            .filter_map(|c| {
                map.subscriber_node(key_slot(c.as_str().as_bytes()), inner.policy)
                    .cloned()
            })
            .collect();
        st.nodes
            .retain(|addr, n| needed.contains(addr) || !n.is_idle());
    }
    for (addr, n) in &st.nodes {
        Metrics::redis_node_subscriptions(addr, n.actual.len());
    }
    unplaced
}
