//! [`RedisCluster`]: a Redis Cluster in Docker containers (testcontainers), ready
//! when every node agrees on the slot map, with the faults and operations an
//! integration test needs, each returning once the cluster has settled.
//!
//! Containers use the host network and listen on free loopback ports below the
//! ephemeral range, so the addresses the cluster announces are the ones the host
//! (and the application under test) can reach, and `docker pause` / kill act on a
//! real Redis process. A consequence: a network partition of one node cannot be
//! made with the container network, so `partition` is not offered (pause a node
//! to make it unresponsive instead).
//!
//! # Settled, timeouts and errors
//!
//! "Settled" is what [`RedisCluster::wait_settled`] checks, on every live node:
//! `CLUSTER INFO` says `cluster_state:ok`; every node's `CLUSTER NODES` lists the
//! same nodes with the same roles, masters and slot ranges (killed and removed
//! nodes aside); no node is flagged `fail`, `fail?`, `handshake` or `noaddr`, or
//! lacks a link; no slot is open (migrating or importing); all 16384 slots are
//! served by healthy primaries; and every replica's link to its primary is up.
//!
//! Each wait inside an operation is bounded by [`admin::SETTLE`] (60 s) and each
//! Redis command by 5 s (2 s to connect); starting a container is bounded by 60 s.
//! A wait that runs out fails with [`ClusterError::Admin`] holding an
//! [`AdminError::Timeout`], whose message names what was awaited and the last
//! reason it was not there yet, e.g. `timed out after 60s waiting for the cluster
//! to settle: 127.0.0.1:14001 sees 127.0.0.1:14003 as master,fail?`. Docker
//! failures are [`ClusterError::Container`]; misuse (an unknown or dead port, a
//! replica where a primary is needed) is [`ClusterError::Usage`].

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use testcontainers::core::WaitFor;
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};

use crate::admin::{self, AdminError, view::Expect, view::View};
use crate::ports::free_cluster_ports;

/// The image used when [`RedisClusterBuilder::image`] is not called:
/// `SHARDCAST_TEST_REDIS_IMAGE` when set, else the public `redis:7.0` (pulled by
/// Docker if it is not present locally). Any image whose entrypoint runs the
/// `redis-server ...` command it is given works (the official image does;
/// shardcast's `cluster/images.sh` builds an offline stand-in tagged `redis:7.0`).
pub fn default_image() -> String {
    std::env::var("SHARDCAST_TEST_REDIS_IMAGE").unwrap_or_else(|_| "redis:7.0".into())
}

/// Why a [`RedisCluster`] operation failed. Every variant's message says what
/// went wrong in words a test failure can show as is (`unwrap_or_else(|e|
/// panic!("{e}"))`).
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// Docker could not start, pause, unpause or stop a container: the daemon is
    /// not running or does not answer within the startup timeout (60 s), or the
    /// image is neither present locally nor pullable. Returned instead of hanging.
    #[error(
        "cannot start a Redis container from {image} (is Docker running, and is the image present or pullable?): {reason}"
    )]
    Container {
        /// The image the cluster was built with (`name:tag`).
        image: String,
        /// What Docker (or testcontainers) said, or `no answer from Docker within 60s`.
        reason: String,
    },
    /// A cluster command failed or a wait timed out (see [`AdminError`]); a
    /// timeout names what was awaited and the last reason it was not there yet.
    #[error(transparent)]
    Admin(#[from] AdminError),
    /// The call cannot be carried out as asked: fewer than 3 primaries, no live
    /// node on that port, a replica where a primary is needed, the last shard.
    #[error("{0}")]
    Usage(String),
}

type Result<T> = std::result::Result<T, ClusterError>;

/// Which slot an operation is about: a slot number, or the slot of a channel (or
/// key) name. Operations taking `impl Into<Target>` accept a `u16`, a `&str` or a
/// `&String`, so `cluster.owner_of("orders:42")` and `cluster.owner_of(1234)` both
/// work.
#[derive(Debug, Clone)]
pub enum Target {
    /// A hash slot, `0..16384`.
    Slot(u16),
    /// A channel or key name; its slot is [`key_slot`] of it (hash tags honoured).
    Channel(String),
}

impl From<u16> for Target {
    fn from(s: u16) -> Target {
        Target::Slot(s)
    }
}

impl From<&str> for Target {
    fn from(c: &str) -> Target {
        Target::Channel(c.to_string())
    }
}

impl From<&String> for Target {
    fn from(c: &String) -> Target {
        Target::Channel(c.clone())
    }
}

/// The hash slot of a key or channel (CRC16 of its hash tag, mod 16384), as
/// Redis computes it: `{user1}.a` and `{user1}.b` share a slot. Use it to pick
/// channels that live on the same shard, or to tell which primary a fault hits.
pub fn key_slot(key: &str) -> u16 {
    let k = key.as_bytes();
    let tagged = k.iter().position(|&b| b == b'{').and_then(|open| {
        let len = k[open + 1..].iter().position(|&b| b == b'}')?;
        (len > 0).then(|| &k[open + 1..open + 1 + len])
    });
    crc16_xmodem(tagged.unwrap_or(k)) % admin::view::SLOTS
}

fn crc16_xmodem(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in data {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// Builder for [`RedisCluster`], from [`RedisCluster::builder`]: the shape of the
/// cluster, its failure-detection timeout and the image; [`start`](Self::start)
/// runs it.
#[derive(Debug, Clone)]
pub struct RedisClusterBuilder {
    primaries: usize,
    replicas: usize,
    node_timeout: Duration,
    image: String,
    startup_timeout: Duration,
}

impl RedisClusterBuilder {
    /// Number of primaries (shards) the slots are split over, evenly. Default 3,
    /// the minimum: fewer cannot elect a replacement for a dead primary, and
    /// [`start`](Self::start) refuses them with [`ClusterError::Usage`].
    pub fn primaries(mut self, n: usize) -> Self {
        self.primaries = n;
        self
    }

    /// Replicas each primary gets (also those of shards added later by
    /// [`RedisCluster::add_shard`]). Default 1. With 0, no failover is possible:
    /// [`RedisCluster::kill_primary_of`] then fails after 60 s.
    pub fn replicas_per_primary(mut self, n: usize) -> Self {
        self.replicas = n;
        self
    }

    /// `cluster-node-timeout`: how long a silent node takes to be declared failed
    /// (and, for a primary, replaced). Default 2 s.
    pub fn node_timeout(mut self, t: Duration) -> Self {
        self.node_timeout = t;
        self
    }

    /// `name:tag` of a Redis 7 image whose entrypoint runs the given `redis-server`
    /// command (the official image does).
    pub fn image(mut self, image: impl Into<String>) -> Self {
        self.image = image.into();
        self
    }

    /// Starts `primaries × (1 + replicas)` containers, one at a time, and forms the
    /// cluster: the primaries share the slots evenly and each replica follows its
    /// primary.
    ///
    /// Settled on return: every node knows every other, `CLUSTER NODES` agrees on
    /// every node, the cluster has exactly the requested primaries, each with the
    /// requested replicas, and every replica has synced (so it can take over at
    /// once).
    ///
    /// Errors: [`ClusterError::Usage`] for fewer than 3 primaries;
    /// [`ClusterError::Container`] when Docker does not run, does not answer within
    /// 60 s, or the image is missing and cannot be pulled; [`ClusterError::Admin`]
    /// when forming the cluster fails or a wait exceeds 60 s. Containers started
    /// before an error are removed.
    pub async fn start(self) -> Result<RedisCluster> {
        if self.primaries < 3 {
            return Err(ClusterError::Usage(
                "a Redis Cluster needs at least 3 primaries to elect replacements".into(),
            ));
        }
        let mut cluster = RedisCluster {
            nodes: Vec::new(),
            dead: BTreeSet::new(),
            config: self,
        };
        let total = cluster.config.primaries * (1 + cluster.config.replicas);
        for _ in 0..total {
            let node = cluster.start_node().await?;
            cluster.nodes.push(node);
        }
        let addrs: Vec<String> = cluster.nodes.iter().map(|n| n.addr()).collect();
        let (prim, reps) = addrs.split_at(cluster.config.primaries);
        let replicas: Vec<(String, usize)> = reps
            .iter()
            .enumerate()
            .map(|(i, a)| (a.clone(), i % cluster.config.primaries))
            .collect();
        admin::create(prim, &replicas).await?;
        Ok(cluster)
    }
}

/// One Redis node in a container (an entry of [`RedisCluster::nodes`]), alive or
/// killed.
pub struct RedisNode {
    /// The node's port on 127.0.0.1 (its cluster bus is on `port + 10000`).
    pub port: u16,
    container: Option<ContainerAsync<GenericImage>>,
}

impl RedisNode {
    /// `127.0.0.1:<port>`, the address the cluster announces for this node.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Whether the container still runs (false once killed or removed; a paused
    /// node counts as alive).
    pub fn is_alive(&self) -> bool {
        self.container.is_some()
    }
}

/// A running Redis Cluster in Docker containers, from [`RedisCluster::builder`].
/// Dropping it removes the containers (set `TESTCONTAINERS_COMMAND=keep` to keep
/// them for a post-mortem).
///
/// Operations that change the cluster return once it has settled again (see
/// [the module docs](self) for what that means and the timeouts).
pub struct RedisCluster {
    /// Every node started, in order (primaries first, then replicas, then the
    /// nodes of added shards), killed ones included (see [`RedisNode::is_alive`]).
    /// Roles change with failovers: ask [`primaries`](Self::primaries) and
    /// [`replicas_of`](Self::replicas_of) for the current ones.
    pub nodes: Vec<RedisNode>,
    dead: BTreeSet<String>,
    config: RedisClusterBuilder,
}

impl RedisCluster {
    /// A builder with the defaults: 3 primaries with 1 replica each, a 2 s node
    /// timeout, and the image from `SHARDCAST_TEST_REDIS_IMAGE` or else `redis:7.0`
    /// (see [`default_image`]).
    pub fn builder() -> RedisClusterBuilder {
        RedisClusterBuilder {
            primaries: 3,
            replicas: 1,
            node_timeout: Duration::from_secs(2),
            image: default_image(),
            startup_timeout: Duration::from_secs(60),
        }
    }

    async fn start_node(&self) -> Result<RedisNode> {
        let port = free_cluster_ports(1);
        let image = self.config.image.clone();
        let (name, tag) = match image.rsplit_once(':') {
            Some((n, t)) if !t.contains('/') => (n.to_string(), t.to_string()),
            _ => (image.clone(), "latest".to_string()),
        };
        let p = port.to_string();
        let timeout = self.config.node_timeout.as_millis().to_string();
        let start = GenericImage::new(name, tag)
            .with_wait_for(WaitFor::message_on_stdout("Ready to accept connections"))
            .with_network("host")
            .with_cmd([
                "redis-server",
                "--port",
                &p,
                "--bind",
                "127.0.0.1",
                "--protected-mode",
                "no",
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                &format!("/tmp/nodes-{port}.conf"),
                "--cluster-node-timeout",
                &timeout,
                "--cluster-require-full-coverage",
                "no",
                "--cluster-replica-validity-factor",
                "0",
                // An emptied primary stays a primary (see cluster/redis-node.conf).
                "--cluster-allow-replica-migration",
                "no",
                "--save",
                "",
                "--appendonly",
                "no",
                // Replicas sync at once instead of after 5 s, so a replica can take
                // over as soon as the cluster is formed (a never-synced one refuses).
                "--repl-diskless-sync-delay",
                "0",
            ])
            .with_startup_timeout(self.config.startup_timeout)
            .start();
        // testcontainers waits on Docker without a bound of its own when the daemon
        // hangs; a clear error beats a hung test.
        let container = match tokio::time::timeout(self.config.startup_timeout, start).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                return Err(ClusterError::Container {
                    image,
                    reason: e.to_string(),
                });
            }
            Err(_) => {
                return Err(ClusterError::Container {
                    image,
                    reason: format!(
                        "no answer from Docker within {:?}",
                        self.config.startup_timeout
                    ),
                });
            }
        };
        Ok(RedisNode {
            port,
            container: Some(container),
        })
    }

    /// `redis://127.0.0.1:P,...` of up to three live nodes: the seed list to give
    /// the application under test (shardcast's `--redis-nodes`, a cluster
    /// client's initial nodes). Any node leads a cluster client to all the others.
    pub fn seeds(&self) -> String {
        self.live_addrs()
            .iter()
            .take(3)
            .map(|a| format!("redis://{a}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `127.0.0.1:<port>` of every node not killed or removed (paused ones
    /// included), in start order.
    pub fn live_addrs(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|n| n.is_alive())
            .map(RedisNode::addr)
            .collect()
    }

    /// Ports of every node not killed or removed (paused ones included), in start
    /// order.
    pub fn live_ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| n.is_alive())
            .map(|n| n.port)
            .collect()
    }

    fn seed(&self) -> Result<String> {
        self.live_addrs()
            .into_iter()
            .next()
            .ok_or_else(|| ClusterError::Usage("no live node".into()))
    }

    fn node(&self, port: u16) -> Result<&RedisNode> {
        self.nodes
            .iter()
            .find(|n| n.port == port && n.is_alive())
            .ok_or_else(|| ClusterError::Usage(format!("no live node on port {port}")))
    }

    fn expect(&self) -> Expect {
        Expect {
            dead: self.dead.clone(),
            ..Expect::default()
        }
    }

    /// Waits until the live nodes agree: the same view everywhere, no open slot,
    /// every slot served by a healthy primary, no node flagged failing, replicas
    /// synced (the full list is in [the module docs](self)). Polls every 200 ms.
    ///
    /// Call it after [`kill`](Self::kill), or after [`unpause`](Self::unpause)
    /// (not while a node is paused: a paused node is still counted and cannot
    /// answer, so the wait would time out), or in a test's own assertions. The
    /// operations that change the cluster already end with it.
    ///
    /// Returns the first live node's view. Errors: [`ClusterError::Admin`] with a
    /// timeout after 60 s, naming the last disagreement seen.
    pub async fn wait_settled(&self) -> Result<View> {
        Ok(
            admin::wait_settled(&self.live_addrs(), &self.expect(), "the cluster to settle")
                .await?,
        )
    }

    /// `CLUSTER NODES` of the first live node, parsed: for assertions on roles,
    /// flags and slot ranges ([`View::owners`], [`View::primaries`], ...). Not
    /// waited on: it may show a cluster still in motion.
    pub async fn view(&self) -> Result<View> {
        Ok(admin::view(&self.seed()?).await?)
    }

    /// Ports of the healthy primaries serving slots, ascending, as the first live
    /// node sees them now: after a failover, the promoted replica is among them.
    pub async fn primaries(&self) -> Result<Vec<u16>> {
        let mut v: Vec<u16> = self
            .view()
            .await?
            .primaries()
            .iter()
            .map(|l| l.port)
            .collect();
        v.sort_unstable();
        Ok(v)
    }

    /// Ports of the healthy replicas of the node at `port` (a primary), as the
    /// first live node sees them: the candidates a [`failover`](Self::failover)
    /// can promote. [`ClusterError::Usage`] if no node listens on `port`.
    pub async fn replicas_of(&self, port: u16) -> Result<Vec<u16>> {
        let v = self.view().await?;
        let id = v
            .lines
            .iter()
            .find(|l| l.port == port)
            .map(|l| l.id.clone())
            .ok_or_else(|| ClusterError::Usage(format!("no node on port {port}")))?;
        Ok(v.replicas_of(&id).iter().map(|l| l.port).collect())
    }

    /// The port of the primary serving `target` (a slot, or a channel's slot) now,
    /// as the first live node sees it. [`ClusterError::Usage`] if no healthy
    /// primary serves that slot at the moment.
    pub async fn owner_of(&self, target: impl Into<Target>) -> Result<u16> {
        let slot = match target.into() {
            Target::Slot(s) => s,
            Target::Channel(c) => key_slot(&c),
        };
        let owners = self.view().await?.owners();
        let owner = owners
            .get(&slot)
            .ok_or_else(|| ClusterError::Usage(format!("slot {slot} has no owner")))?;
        Ok(self.port_of(owner))
    }

    fn port_of(&self, addr: &str) -> u16 {
        addr.rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0)
    }

    /// The first `n` channel names `prefix:0`, `prefix:1`, ... whose slots the
    /// primary at `port` serves now: traffic that a fault on that primary hits
    /// (or, on another primary, traffic that it must leave alone). Pass the port
    /// of a primary that serves slots: for any other port it is
    /// [`ClusterError::Usage`].
    pub async fn channels_on(&self, port: u16, prefix: &str, n: usize) -> Result<Vec<String>> {
        let owners = self.view().await?.owners();
        let me = format!("127.0.0.1:{port}");
        if n > 0 && !owners.values().any(|o| *o == me) {
            return Err(ClusterError::Usage(format!(
                "{me} serves no slots: no channel lives there"
            )));
        }
        Ok((0..)
            .map(|i| format!("{prefix}:{i}"))
            .filter(|c| owners.get(&key_slot(c)) == Some(&me))
            .take(n)
            .collect())
    }

    /// SIGKILLs the node's container (a crash: no shutdown, no goodbye to the
    /// other nodes) and removes it; the node counts as dead from then on, and its
    /// lines are ignored by [`wait_settled`](Self::wait_settled).
    ///
    /// Settled on return: nothing; it does not wait for the cluster to notice.
    /// Call [`wait_settled`](Self::wait_settled) to wait for the failure to be
    /// detected (after the node timeout) and, for a primary, for a replica to take
    /// over; or use [`kill_primary_of`](Self::kill_primary_of), which does both.
    /// Killing a node already dead is a no-op.
    ///
    /// Errors: [`ClusterError::Usage`] if no node was started on `port`;
    /// [`ClusterError::Container`] if Docker fails to stop it.
    pub async fn kill(&mut self, port: u16) -> Result<()> {
        let addr = format!("127.0.0.1:{port}");
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.port == port)
            .ok_or_else(|| ClusterError::Usage(format!("no node on port {port}")))?;
        if let Some(c) = node.container.take() {
            c.stop_with_timeout(Some(0))
                .await
                .map_err(|e| ClusterError::Container {
                    image: self.config.image.clone(),
                    reason: format!("kill: {e}"),
                })?;
            let _ = c.rm().await;
        }
        self.dead.insert(addr);
        Ok(())
    }

    /// SIGKILLs the primary serving `target` (a slot, or a channel's slot) and
    /// waits for the cluster to replace it: the fault most worth testing, since
    /// everything the application had on that shard must move to the promoted
    /// replica. Returns the killed port.
    ///
    /// Settled on return: every live node sees all 16384 slots served and none by
    /// the killed node (a replica was promoted and every node knows it), and then
    /// the cluster is settled as [`wait_settled`](Self::wait_settled) means it.
    /// Expect this to take about the node timeout (2 s by default) plus the
    /// election, a few seconds in all. Your application may still be reconnecting:
    /// wait for that in the test.
    ///
    /// Errors: [`ClusterError::Usage`] if no primary serves the slot;
    /// [`ClusterError::Admin`] with a timeout if no replica took over within 60 s
    /// (e.g. `replicas_per_primary(0)`) or the cluster did not settle within 60 s
    /// more.
    pub async fn kill_primary_of(&mut self, target: impl Into<Target>) -> Result<u16> {
        let port = self.owner_of(target).await?;
        self.kill(port).await?;
        admin::wait_replaced(&self.live_addrs(), &format!("127.0.0.1:{port}")).await?;
        self.wait_settled().await?;
        Ok(port)
    }

    /// `docker pause`: the node's process is frozen, its sockets stay open and
    /// nothing answers. That is how a partitioned or stalled node looks from the
    /// other side (clients time out instead of being refused).
    ///
    /// Settled on return: nothing; the pause is in effect. Paused for less than
    /// the node timeout, the cluster carries on as is; for longer, the other
    /// nodes flag it failing and, for a primary, promote one of its replicas.
    /// [`wait_settled`](Self::wait_settled) cannot succeed while a node is paused
    /// (it is still counted and does not answer): [`unpause`](Self::unpause)
    /// first.
    ///
    /// Errors: [`ClusterError::Usage`] if no live node is on `port`;
    /// [`ClusterError::Container`] if Docker refuses (e.g. already paused).
    pub async fn pause(&self, port: u16) -> Result<()> {
        let c = self.container(port)?;
        c.pause()
            .await
            .map_err(|e| self.docker(format!("pause: {e}")))
    }

    /// `docker unpause`: the node paused by [`pause`](Self::pause) runs again. A
    /// primary that was replaced meanwhile rejoins as a replica of its successor.
    ///
    /// Settled on return: nothing; call [`wait_settled`](Self::wait_settled) to
    /// wait until the node is back in agreement (and synced, if now a replica).
    ///
    /// Errors: [`ClusterError::Usage`] if no live node is on `port`;
    /// [`ClusterError::Container`] if Docker refuses (e.g. not paused).
    pub async fn unpause(&self, port: u16) -> Result<()> {
        let c = self.container(port)?;
        c.unpause()
            .await
            .map_err(|e| self.docker(format!("unpause: {e}")))
    }

    fn container(&self, port: u16) -> Result<&ContainerAsync<GenericImage>> {
        self.node(port)?
            .container
            .as_ref()
            .ok_or_else(|| ClusterError::Usage(format!("node {port} is dead")))
    }

    fn docker(&self, reason: String) -> ClusterError {
        ClusterError::Container {
            image: self.config.image.clone(),
            reason,
        }
    }

    /// Graceful failover: the replica at `replica` takes over from its primary
    /// with no data loss (`CLUSTER FAILOVER`, the way an operator moves a primary
    /// for maintenance); its old primary becomes its replica.
    ///
    /// Settled on return: every live node sees `replica` as a primary serving
    /// slots, and then the cluster is settled as
    /// [`wait_settled`](Self::wait_settled) means it.
    ///
    /// Errors: [`ClusterError::Usage`] if no live node is on `replica`;
    /// [`ClusterError::Admin`] if the node refuses (it is not a replica) or either
    /// wait exceeds 60 s.
    pub async fn failover(&self, replica: u16) -> Result<()> {
        let addr = self.node(replica)?.addr();
        admin::failover(&self.live_addrs(), &addr).await?;
        self.wait_settled().await?;
        Ok(())
    }

    /// Moves `slot` with its keys to the primary at `to`, the way `redis-cli
    /// --cluster reshard` does (IMPORTING / MIGRATING, `MIGRATE` in batches of
    /// 100 keys, `SETSLOT NODE`): clients see `ASK` and then `MOVED` redirects, and
    /// sharded pub/sub subscribers of the slot's channels are unsubscribed by
    /// Redis. A no-op if `to` already owns it. Use
    /// [`key_slot`] or [`owner_of`](Self::owner_of) to pick the slot.
    ///
    /// Settled on return: the slot and its keys are on `to` and the cluster is
    /// settled as [`wait_settled`](Self::wait_settled) means it (no open slot).
    ///
    /// Errors: [`ClusterError::Usage`] if no live node is on `to`;
    /// [`ClusterError::Admin`] if `to` is not a primary, a command fails (5 s
    /// each) or the cluster does not settle within 60 s.
    pub async fn migrate_slot(&self, slot: u16, to: u16) -> Result<()> {
        admin::move_slot(&self.seed()?, slot, &self.node(to)?.addr()).await?;
        self.wait_settled().await?;
        Ok(())
    }

    /// Scale out: starts a new primary with the builder's number of replicas, joins
    /// them to the cluster and moves an even share of the slots (with their keys)
    /// onto the new primary, one slot at a time. Returns the new primary's port.
    ///
    /// Settled on return: the new nodes are known everywhere and synced, every
    /// primary holds `16384 / primaries` slots (±1), and the cluster is settled as
    /// [`wait_settled`](Self::wait_settled) means it. Moving thousands of slots
    /// takes a while (tens of seconds on a small machine).
    ///
    /// Errors: [`ClusterError::Container`] if a container cannot start;
    /// [`ClusterError::Admin`] if a command fails or a wait exceeds 60 s.
    pub async fn add_shard(&mut self) -> Result<u16> {
        let seed = self.seed()?;
        let primary = self.start_node().await?;
        let paddr = primary.addr();
        let port = primary.port;
        self.nodes.push(primary);
        admin::meet(&seed, &paddr).await?;
        admin::wait_known(&self.live_addrs(), std::slice::from_ref(&paddr)).await?;
        let pid = admin::node_id(&paddr).await?;
        for _ in 0..self.config.replicas {
            let r = self.start_node().await?;
            let raddr = r.addr();
            self.nodes.push(r);
            admin::meet(&seed, &raddr).await?;
            admin::wait_known(&self.live_addrs(), std::slice::from_ref(&raddr)).await?;
            admin::replicate(&raddr, &pid).await?;
        }
        admin::wait_settled(&self.live_addrs(), &self.expect(), "the new shard to join").await?;
        admin::rebalance(&self.live_addrs(), &[paddr]).await?;
        self.wait_settled().await?;
        Ok(port)
    }

    /// Scale in: moves every slot (with its keys) away from the primary at `port`,
    /// spread evenly over the other primaries, then has every other node `CLUSTER
    /// FORGET` it and its replicas, and kills their containers.
    ///
    /// Settled on return: the remaining nodes no longer list the shard's nodes and
    /// are settled as [`wait_settled`](Self::wait_settled) means it.
    ///
    /// Errors: [`ClusterError::Usage`] if no live node is on `port`, it is not a
    /// primary (unlike the CLI's `remove-shard`, a replica's port is refused), or it
    /// is the last shard; [`ClusterError::Admin`] if a command fails or a wait
    /// exceeds 60 s.
    pub async fn remove_shard(&mut self, port: u16) -> Result<()> {
        let addr = self.node(port)?.addr();
        let v = self.view().await?;
        let me = v
            .by_addr(&addr)
            .cloned()
            .ok_or_else(|| ClusterError::Usage(format!("{addr} is not in the cluster")))?;
        if !me.is_master() {
            return Err(ClusterError::Usage(format!("{addr} is not a primary")));
        }
        let members: Vec<(u16, String)> = std::iter::once(&me)
            .chain(v.replicas_of(&me.id))
            .map(|l| (l.port, l.id.clone()))
            .collect();
        let others: Vec<String> = self
            .live_addrs()
            .into_iter()
            .filter(|a| !members.iter().any(|(p, _)| a.ends_with(&format!(":{p}"))))
            .collect();
        let seed = others
            .first()
            .cloned()
            .ok_or_else(|| ClusterError::Usage("the last shard cannot be removed".into()))?;
        admin::drain_master(&seed, &addr).await?;
        admin::wait_settled(&self.live_addrs(), &self.expect(), "the shard to empty").await?;
        let ids: Vec<String> = members.iter().map(|(_, id)| id.clone()).collect();
        admin::forget(&others, &ids).await?;
        for (p, _) in &members {
            self.kill(*p).await?;
        }
        self.wait_settled().await?;
        Ok(())
    }

    /// `PUBSUB SHARDNUMSUB` for `channels` on the node at `port`: how many sharded
    /// pub/sub subscriptions that node holds per channel. With one subscriber
    /// connection per application instance, this tells whether the application
    /// (re)subscribed on the right node after a fault. Channels the node does not
    /// report are absent from the map.
    ///
    /// Errors: [`ClusterError::Usage`] if no live node is on `port`;
    /// [`ClusterError::Admin`] if the command fails.
    pub async fn shard_numsub(
        &self,
        port: u16,
        channels: &[String],
    ) -> Result<HashMap<String, i64>> {
        let mut cmd = redis::cmd("PUBSUB");
        cmd.arg("SHARDNUMSUB");
        for c in channels {
            cmd.arg(c);
        }
        let v: Vec<redis::Value> = admin::query(&self.node(port)?.addr(), &cmd).await?;
        Ok(v.chunks(2)
            .filter_map(|c| {
                let name: String = redis::from_redis_value(c.first()?.clone()).ok()?;
                let n: i64 = redis::from_redis_value(c.get(1)?.clone()).ok()?;
                Some((name, n))
            })
            .collect())
    }

    /// Client connections on the node at `port` per client name (`CLIENT
    /// SETNAME`) starting with `prefix`, from `CLIENT LIST`: for checking that an
    /// application holds the connections it should (and leaks none) on a node.
    ///
    /// Errors: [`ClusterError::Usage`] if no live node is on `port`;
    /// [`ClusterError::Admin`] if the command fails.
    pub async fn clients_named(&self, port: u16, prefix: &str) -> Result<HashMap<String, usize>> {
        let list: String =
            admin::query(&self.node(port)?.addr(), redis::cmd("CLIENT").arg("LIST")).await?;
        let mut counts = HashMap::new();
        for line in list.lines() {
            if let Some(name) = line
                .split_whitespace()
                .find_map(|f| f.strip_prefix("name="))
                .filter(|n| n.starts_with(prefix))
            {
                *counts.entry(name.to_string()).or_insert(0) += 1;
            }
        }
        Ok(counts)
    }

    /// Closes (`CLIENT KILL ID`) every client connection on the node at `port` whose
    /// name starts with `prefix`, as a network fault or a `CLIENT KILL` by an
    /// operator would; returns how many it closed. (Redis 7.0 has no `CLIENT KILL`
    /// filter by name, so the ids come from `CLIENT LIST`.)
    ///
    /// Errors: as for [`RedisCluster::clients_named`].
    pub async fn kill_clients_named(&self, port: u16, prefix: &str) -> Result<usize> {
        let addr = self.node(port)?.addr();
        let list: String = admin::query(&addr, redis::cmd("CLIENT").arg("LIST")).await?;
        let mut killed = 0;
        for line in list.lines() {
            let field = |key: &str| {
                line.split_whitespace()
                    .find_map(|f| f.strip_prefix(key))
                    .map(str::to_string)
            };
            let (Some(id), Some(name)) = (field("id="), field("name=")) else {
                continue;
            };
            if name.starts_with(prefix) {
                let n: i64 =
                    admin::query(&addr, redis::cmd("CLIENT").arg("KILL").arg("ID").arg(&id))
                        .await?;
                killed += n as usize;
            }
        }
        Ok(killed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_slot_matches_redis_vectors() {
        assert_eq!(key_slot("foo"), 12182);
        assert_eq!(key_slot("{user1000}.following"), key_slot("user1000"));
        assert_eq!(key_slot("a{}b"), crc16_xmodem(b"a{}b") % 16384);
    }
}
