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

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use testcontainers::core::WaitFor;
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};

use crate::admin::{self, AdminError, view::Expect, view::View};
use crate::ports::free_cluster_ports;

/// The image used when none is given: `SHARDCAST_TEST_REDIS_IMAGE`, else the
/// public `redis:7.0`.
pub fn default_image() -> String {
    std::env::var("SHARDCAST_TEST_REDIS_IMAGE").unwrap_or_else(|_| "redis:7.0".into())
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(
        "cannot start a Redis container from {image} (is Docker running, and is the image present or pullable?): {reason}"
    )]
    Container { image: String, reason: String },
    #[error(transparent)]
    Admin(#[from] AdminError),
    #[error("{0}")]
    Usage(String),
}

type Result<T> = std::result::Result<T, ClusterError>;

/// What to kill: the primary serving a slot, or a channel's (or key's) slot.
#[derive(Debug, Clone)]
pub enum Target {
    Slot(u16),
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

/// The hash slot of a key or channel (CRC16 of its hash tag, mod 16384).
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

/// Builder for [`RedisCluster`].
#[derive(Debug, Clone)]
pub struct RedisClusterBuilder {
    primaries: usize,
    replicas: usize,
    node_timeout: Duration,
    image: String,
    startup_timeout: Duration,
}

impl RedisClusterBuilder {
    pub fn primaries(mut self, n: usize) -> Self {
        self.primaries = n;
        self
    }

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

    /// Starts the containers and forms the cluster; returns once every node agrees
    /// on the slot map and every replica has synced.
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

/// One Redis node in a container.
pub struct RedisNode {
    pub port: u16,
    container: Option<ContainerAsync<GenericImage>>,
}

impl RedisNode {
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn is_alive(&self) -> bool {
        self.container.is_some()
    }
}

/// A running Redis Cluster. Dropping it removes the containers.
pub struct RedisCluster {
    pub nodes: Vec<RedisNode>,
    dead: BTreeSet<String>,
    config: RedisClusterBuilder,
}

impl RedisCluster {
    /// 3 primaries with 1 replica each, the image from `SHARDCAST_TEST_REDIS_IMAGE`
    /// or `redis:7.0`.
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

    /// `redis://127.0.0.1:P,...` of up to three live nodes: seeds for a client.
    pub fn seeds(&self) -> String {
        self.live_addrs()
            .iter()
            .take(3)
            .map(|a| format!("redis://{a}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn live_addrs(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|n| n.is_alive())
            .map(RedisNode::addr)
            .collect()
    }

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

    /// Waits until every live node agrees on the slot map (no open slot, every slot
    /// served by a live primary, replicas synced).
    pub async fn wait_settled(&self) -> Result<View> {
        Ok(
            admin::wait_settled(&self.live_addrs(), &self.expect(), "the cluster to settle")
                .await?,
        )
    }

    /// The current view of the first live node.
    pub async fn view(&self) -> Result<View> {
        Ok(admin::view(&self.seed()?).await?)
    }

    /// Ports of the primaries serving slots, ascending.
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

    /// Ports of the live replicas of the primary at `port`.
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

    /// The port of the primary serving `target` now.
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

    /// Channels named `prefix:0`, `prefix:1`, ... whose slots the primary at `port` serves.
    pub async fn channels_on(&self, port: u16, prefix: &str, n: usize) -> Result<Vec<String>> {
        let owners = self.view().await?.owners();
        let me = format!("127.0.0.1:{port}");
        Ok((0..)
            .map(|i| format!("{prefix}:{i}"))
            .filter(|c| owners.get(&key_slot(c)) == Some(&me))
            .take(n)
            .collect())
    }

    /// SIGKILLs the node's container. Does not wait for anything.
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

    /// Kills the primary serving `target` and returns once a replica took over
    /// everywhere and the live nodes agree. Returns the killed port.
    pub async fn kill_primary_of(&mut self, target: impl Into<Target>) -> Result<u16> {
        let port = self.owner_of(target).await?;
        self.kill(port).await?;
        admin::wait_replaced(&self.live_addrs(), &format!("127.0.0.1:{port}")).await?;
        self.wait_settled().await?;
        Ok(port)
    }

    /// `docker pause`: the node stops answering (its sockets stay open).
    pub async fn pause(&self, port: u16) -> Result<()> {
        let c = self.container(port)?;
        c.pause()
            .await
            .map_err(|e| self.docker(format!("pause: {e}")))
    }

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
    /// (`CLUSTER FAILOVER`); returns once every node sees it serving slots.
    pub async fn failover(&self, replica: u16) -> Result<()> {
        let addr = self.node(replica)?.addr();
        admin::failover(&self.live_addrs(), &addr).await?;
        self.wait_settled().await?;
        Ok(())
    }

    /// Moves `slot` with its keys to the primary at `to`; returns once settled.
    pub async fn migrate_slot(&self, slot: u16, to: u16) -> Result<()> {
        admin::move_slot(&self.seed()?, slot, &self.node(to)?.addr()).await?;
        self.wait_settled().await?;
        Ok(())
    }

    /// Adds a primary with the builder's number of replicas and rebalances slots
    /// onto it; returns the new primary's port once settled.
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

    /// Moves every slot away from the primary at `port`, then removes it and its
    /// replicas from the cluster and stops them; returns once settled.
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

    /// `PUBSUB SHARDNUMSUB` for `channels` on the node at `port`.
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

    /// Client connections per client name starting with `prefix` on the node at `port`.
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
