//! The one Redis Cluster harness: Redis nodes in containers started through
//! testcontainers, and shardcast instances as real processes pointed at them.
//!
//! Containers use the host network and listen on free loopback ports, so that the
//! addresses the cluster announces are the ones the host (and shardcast) can reach,
//! and `docker pause` / kill act on a real Redis process. The image comes from
//! `SHARDCAST_TEST_REDIS_IMAGE` (default `redis:7.0`, the public image; `.ci/run`
//! provides an equivalent local image built offline). Cluster administration uses
//! the host's `redis-cli --cluster`, as an operator would.
//!
//! Every missing prerequisite (Docker, the image, redis-cli) fails the test loudly.

use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use redis::Value;
use testcontainers::core::WaitFor;
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};
use tokio::time::{Instant, sleep};

use super::Client;

pub fn redis_image() -> (String, String) {
    let image = std::env::var("SHARDCAST_TEST_REDIS_IMAGE").unwrap_or_else(|_| "redis:7.0".into());
    match image.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => (name.to_string(), tag.to_string()),
        _ => (image, "latest".to_string()),
    }
}

/// A run of `count` free loopback ports whose cluster-bus ports (+10000) are free too,
/// below the kernel's ephemeral range (32768 and up here): ports handed out by
/// `bind(0)` or taken by outgoing connections could be grabbed by the test's own
/// client sockets between this check and the Redis node binding them.
pub fn free_ports(count: u16) -> u16 {
    'search: for _ in 0..500 {
        let base = 11_000 + (rand::random::<u16>() % 11_000);
        for p in base..base + count {
            if TcpListener::bind(("127.0.0.1", p)).is_err()
                || TcpListener::bind(("127.0.0.1", p + 10_000)).is_err()
            {
                continue 'search;
            }
        }
        return base;
    }
    panic!("no run of {count} free port pairs found");
}

pub struct RedisNode {
    pub port: u16,
    container: Option<ContainerAsync<GenericImage>>,
}

pub struct RedisCluster {
    pub nodes: Vec<RedisNode>,
}

fn redis_cli(args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!("redis-cli is required on the host (apt-get install redis-tools): {e}")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "redis-cli {args:?} failed: {text}");
    text
}

pub fn conn(port: u16) -> redis::Connection {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).expect("client");
    client
        .get_connection_with_timeout(Duration::from_secs(2))
        .unwrap_or_else(|e| panic!("connect to redis 127.0.0.1:{port}: {e}"))
}

pub fn query(port: u16, cmd: &mut redis::Cmd) -> Value {
    cmd.query(&mut conn(port))
        .unwrap_or_else(|e| panic!("redis {port}: {e}"))
}

fn text(v: &Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::VerbatimString { text, .. } => text.clone(),
        other => format!("{other:?}"),
    }
}

async fn start_node() -> RedisNode {
    let port = free_ports(1);
    let (name, tag) = redis_image();
    let p = port.to_string();
    let container = GenericImage::new(name.clone(), tag.clone())
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
            "2000",
            "--save",
            "",
            "--appendonly",
            "no",
            // Replicas sync at once instead of after 5 s, so a replica can take over
            // as soon as the cluster is formed (a never-synced replica refuses to).
            "--repl-diskless-sync-delay",
            "0",
        ])
        .with_startup_timeout(Duration::from_secs(60))
        .start()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "cannot start Redis container {name}:{tag} (is Docker running and the image \
                 present? .ci/run builds it offline with cluster/images.sh): {e}"
            )
        });
    RedisNode {
        port,
        container: Some(container),
    }
}

impl RedisCluster {
    /// A cluster of `masters` primaries with `replicas` replicas each, fully formed:
    /// every node agrees on every primary and its replicas.
    pub async fn start(masters: usize, replicas: usize) -> RedisCluster {
        let total = masters * (1 + replicas);
        let mut nodes = Vec::new();
        for _ in 0..total {
            nodes.push(start_node().await);
        }
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let mut args = vec!["--cluster", "create"];
        args.extend(addrs.iter().map(String::as_str));
        let r = replicas.to_string();
        args.extend(["--cluster-replicas", &r, "--cluster-yes"]);
        redis_cli(&args);
        let cluster = RedisCluster { nodes };
        cluster.wait_formed(masters, replicas).await;
        cluster
    }

    pub fn seeds(&self) -> String {
        self.nodes
            .iter()
            .take(3)
            .map(|n| format!("redis://127.0.0.1:{}", n.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn live_ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| n.container.is_some())
            .map(|n| n.port)
            .collect()
    }

    /// `CLUSTER NODES` of one node, parsed: id -> (port, flags, master id, slots).
    pub fn cluster_nodes(port: u16) -> Vec<NodeLine> {
        let raw = text(&query(port, redis::cmd("CLUSTER").arg("NODES")));
        raw.lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                let addr = f.get(1)?.split('@').next()?;
                let port = addr.rsplit(':').next()?.parse().ok()?;
                Some(NodeLine {
                    id: f.first()?.to_string(),
                    port,
                    flags: f.get(2)?.to_string(),
                    master: f.get(3)?.to_string(),
                    slots: f.iter().skip(8).map(|s| s.to_string()).collect(),
                })
            })
            .collect()
    }

    /// Waits until every live node sees `masters` healthy primaries with `replicas` each.
    pub async fn wait_formed(&self, masters: usize, replicas: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ok = self.live_ports().iter().all(|&p| {
                let info = text(&query(p, redis::cmd("CLUSTER").arg("INFO")));
                if !info.contains("cluster_state:ok") {
                    return false;
                }
                let lines = Self::cluster_nodes(p);
                let prim: Vec<&NodeLine> = lines
                    .iter()
                    .filter(|l| {
                        l.flags.contains("master")
                            && !l.flags.contains("fail")
                            && !l.slots.is_empty()
                    })
                    .collect();
                prim.len() == masters
                    && prim.iter().all(|m| {
                        lines
                            .iter()
                            .filter(|l| l.master == m.id && !l.flags.contains("fail"))
                            .count()
                            >= replicas
                    })
            });
            let synced = self.live_ports().iter().all(|&p| {
                let info = text(&query(p, redis::cmd("INFO").arg("replication")));
                !info.contains("role:slave") || info.contains("master_link_status:up")
            });
            if ok && synced {
                return;
            }
            assert!(Instant::now() < deadline, "cluster did not form in 60 s");
            sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until all live nodes agree on slot ownership, no slot is open, and every
    /// slot is served by a reachable primary.
    pub async fn wait_agree(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let views: Vec<BTreeMap<u16, u16>> = self
                .live_ports()
                .iter()
                .map(|&p| self.slot_owners(p))
                .collect();
            let first = &views[0];
            let open = self.live_ports().iter().any(|&p| {
                Self::cluster_nodes(p)
                    .iter()
                    .any(|l| l.slots.iter().any(|s| s.starts_with('[')))
            });
            if !open && first.len() == 16384 && views.iter().all(|v| v == first) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "cluster nodes did not agree within 60 s"
            );
            sleep(Duration::from_millis(200)).await;
        }
    }

    /// slot -> port of the owning primary, as node `port` sees it.
    pub fn slot_owners(&self, port: u16) -> BTreeMap<u16, u16> {
        let mut owners = BTreeMap::new();
        for l in Self::cluster_nodes(port) {
            if !l.flags.contains("master") || l.flags.contains("fail") {
                continue;
            }
            for s in &l.slots {
                if s.starts_with('[') {
                    continue;
                }
                let (a, b) = match s.split_once('-') {
                    Some((a, b)) => (a.parse().unwrap_or(0), b.parse().unwrap_or(0)),
                    None => {
                        let v = s.parse().unwrap_or(0);
                        (v, v)
                    }
                };
                for slot in a..=b {
                    owners.insert(slot, l.port);
                }
            }
        }
        owners
    }

    pub fn owner_of(&self, channel: &str) -> u16 {
        let slot = shardcast::slot::key_slot(channel.as_bytes());
        self.try_owner_of(channel)
            .unwrap_or_else(|| panic!("slot {slot} unowned"))
    }

    /// The owner of a channel's slot, if some healthy primary serves it right now.
    pub fn try_owner_of(&self, channel: &str) -> Option<u16> {
        let slot = shardcast::slot::key_slot(channel.as_bytes());
        self.slot_owners(self.live_ports()[0]).get(&slot).copied()
    }

    /// After a primary was killed: waits until every live node sees all slots served
    /// and none of them by `dead` (i.e. a replica was promoted everywhere).
    pub async fn wait_replaced(&self, dead: u16) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let done = self.live_ports().iter().all(|&p| {
                let owners = self.slot_owners(p);
                owners.len() == 16384 && owners.values().all(|o| *o != dead)
            });
            if done {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "primary {dead} was not replaced within 60 s: {:#?}",
                self.live_ports()
                    .iter()
                    .map(|&p| (p, Self::cluster_nodes(p)))
                    .collect::<Vec<_>>()
            );
            sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn node_id(port: u16) -> String {
        text(&query(port, redis::cmd("CLUSTER").arg("MYID")))
    }

    pub fn primaries(&self) -> Vec<u16> {
        let mut v: Vec<u16> = self
            .slot_owners(self.live_ports()[0])
            .values()
            .copied()
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Moves one slot (and any keys in it) to the primary at `to`, the way
    /// `redis-cli --cluster reshard` does, step by step.
    pub async fn move_slot(&self, slot: u16, to: u16) {
        let from = *self.slot_owners(to).get(&slot).expect("slot owned");
        if from == to {
            return;
        }
        let (from_id, to_id) = (Self::node_id(from), Self::node_id(to));
        let s = slot.to_string();
        query(
            to,
            redis::cmd("CLUSTER")
                .arg("SETSLOT")
                .arg(&s)
                .arg("IMPORTING")
                .arg(&from_id),
        );
        query(
            from,
            redis::cmd("CLUSTER")
                .arg("SETSLOT")
                .arg(&s)
                .arg("MIGRATING")
                .arg(&to_id),
        );
        loop {
            let keys: Vec<String> = redis::cmd("CLUSTER")
                .arg("GETKEYSINSLOT")
                .arg(slot)
                .arg(100)
                .query(&mut conn(from))
                .expect("GETKEYSINSLOT");
            if keys.is_empty() {
                break;
            }
            let mut cmd = redis::cmd("MIGRATE");
            cmd.arg("127.0.0.1")
                .arg(to)
                .arg("")
                .arg(0)
                .arg(5000)
                .arg("KEYS");
            for k in &keys {
                cmd.arg(k);
            }
            query(from, &mut cmd);
        }
        for p in [to, from] {
            query(
                p,
                redis::cmd("CLUSTER")
                    .arg("SETSLOT")
                    .arg(&s)
                    .arg("NODE")
                    .arg(&to_id),
            );
        }
        for p in self.primaries() {
            if p != to && p != from {
                let _ = redis::cmd("CLUSTER")
                    .arg("SETSLOT")
                    .arg(&s)
                    .arg("NODE")
                    .arg(&to_id)
                    .query::<Value>(&mut conn(p));
            }
        }
    }

    /// Adds an empty primary (and `replicas` replicas) and rebalances slots onto it.
    pub async fn add_shard(&mut self, replicas: usize) -> u16 {
        let seed = format!("127.0.0.1:{}", self.live_ports()[0]);
        let primary = start_node().await;
        let p = format!("127.0.0.1:{}", primary.port);
        redis_cli(&["--cluster", "add-node", &p, &seed]);
        let pid = Self::node_id(primary.port);
        let port = primary.port;
        self.nodes.push(primary);
        self.wait_known(port).await;
        for _ in 0..replicas {
            let r = start_node().await;
            let rp = format!("127.0.0.1:{}", r.port);
            let rport = r.port;
            // Joined as an empty node first, then made a replica once it has learned
            // of its master by gossip: `add-node --cluster-slave` sends REPLICATE right
            // after MEET and fails with "Unknown node" when gossip is slower.
            redis_cli(&["--cluster", "add-node", &rp, &seed]);
            self.nodes.push(r);
            self.wait_known(rport).await;
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let replicate: redis::RedisResult<Value> = redis::cmd("CLUSTER")
                    .arg("REPLICATE")
                    .arg(&pid)
                    .query(&mut conn(rport));
                match replicate {
                    Ok(_) => break,
                    Err(e) => assert!(
                        Instant::now() < deadline,
                        "CLUSTER REPLICATE {pid} on {rport}: {e}"
                    ),
                }
                sleep(Duration::from_millis(100)).await;
            }
        }
        redis_cli(&[
            "--cluster",
            "rebalance",
            &seed,
            "--cluster-use-empty-masters",
            "--cluster-yes",
        ]);
        self.wait_agree().await;
        port
    }

    /// Moves every slot away from the primary at `port`, then removes it and its replicas.
    pub async fn remove_shard(&mut self, port: u16) {
        let others: Vec<u16> = self
            .primaries()
            .into_iter()
            .filter(|p| *p != port)
            .collect();
        let seed = format!("127.0.0.1:{}", others[0]);
        let id = Self::node_id(port);
        let weight = format!("{id}=0");
        redis_cli(&[
            "--cluster",
            "rebalance",
            &seed,
            "--cluster-weight",
            &weight,
            "--cluster-yes",
        ]);
        self.wait_agree().await;
        let replicas: Vec<u16> = Self::cluster_nodes(others[0])
            .into_iter()
            .filter(|l| l.master == id)
            .map(|l| l.port)
            .collect();
        for p in replicas.iter().chain(std::iter::once(&port)) {
            let nid = Self::node_id(*p);
            redis_cli(&["--cluster", "del-node", &seed, &nid]);
            self.kill(*p).await;
        }
        self.wait_agree().await;
    }

    async fn wait_known(&self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self
            .live_ports()
            .iter()
            .all(|&p| Self::cluster_nodes(p).iter().any(|l| l.port == port))
        {
            assert!(
                Instant::now() < deadline,
                "node {port} not known everywhere"
            );
            sleep(Duration::from_millis(200)).await;
        }
    }

    fn node(&self, port: u16) -> &RedisNode {
        self.nodes.iter().find(|n| n.port == port).expect("node")
    }

    /// SIGKILLs the node's container.
    pub async fn kill(&mut self, port: u16) {
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.port == port)
            .expect("node");
        if let Some(c) = node.container.take() {
            c.stop_with_timeout(Some(0)).await.expect("kill container");
            let _ = c.rm().await;
        }
    }

    pub async fn pause(&self, port: u16) {
        let c = self.node(port).container.as_ref().expect("live node");
        c.pause().await.expect("docker pause");
    }

    pub async fn unpause(&self, port: u16) {
        let c = self.node(port).container.as_ref().expect("live node");
        c.unpause().await.expect("docker unpause");
    }

    /// `PUBSUB SHARDNUMSUB` for `channels` on node `port`.
    pub fn shard_numsub(port: u16, channels: &[String]) -> HashMap<String, i64> {
        let mut cmd = redis::cmd("PUBSUB");
        cmd.arg("SHARDNUMSUB");
        for c in channels {
            cmd.arg(c);
        }
        let v: Vec<Value> = cmd.query(&mut conn(port)).expect("SHARDNUMSUB");
        v.chunks(2)
            .map(|c| {
                let n = match &c[1] {
                    Value::Int(i) => *i,
                    other => text(other).parse().unwrap_or(-1),
                };
                (text(&c[0]), n)
            })
            .collect()
    }

    /// Subscriber connections per client name on node `port`.
    pub fn subscriber_connections(port: u16) -> HashMap<String, usize> {
        let list = text(&query(port, redis::cmd("CLIENT").arg("LIST")));
        let mut counts = HashMap::new();
        for line in list.lines() {
            if let Some(name) = line
                .split_whitespace()
                .find_map(|f| f.strip_prefix("name="))
                .filter(|n| n.starts_with("shardcast-sub"))
            {
                *counts.entry(name.to_string()).or_insert(0) += 1;
            }
        }
        counts
    }
}

#[derive(Debug, Clone)]
pub struct NodeLine {
    pub id: String,
    pub port: u16,
    pub flags: String,
    pub master: String,
    pub slots: Vec<String>,
}

/// A shardcast process pointed at a cluster.
pub struct Instance {
    pub addr: SocketAddr,
    child: Child,
}

impl Instance {
    pub async fn start(seeds: &str, extra: &[&str]) -> Instance {
        let port = TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        let child = Command::new(env!("CARGO_BIN_EXE_shardcast"))
            .args([
                "--listen",
                &addr.to_string(),
                "--broker",
                "redis-cluster",
                "--redis-nodes",
                seeds,
            ])
            .args(extra)
            .env(
                "RUST_LOG",
                std::env::var("SHARDCAST_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn shardcast");
        let inst = Instance { addr, child };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok((200, _)) =
                tokio::time::timeout(Duration::from_secs(2), inst.get("/readyz")).await
            {
                return inst;
            }
            assert!(
                Instant::now() < deadline,
                "shardcast at {addr} never became ready"
            );
            sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        super::try_http("GET", &format!("http://{}{path}", self.addr), None).await
    }

    pub async fn cluster_view(&self) -> serde_json::Value {
        let (status, body) = self.get("/api/cluster").await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).expect("cluster json")
    }

    /// Node address -> channels this instance holds there.
    pub async fn held(&self) -> BTreeMap<String, Vec<String>> {
        let v = self.cluster_view().await;
        v["subscriber_nodes"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, n)| {
                        let chs = n["channels"]
                            .as_array()
                            .map(|a| {
                                a.iter()
                                    .filter_map(|c| c.as_str().map(String::from))
                                    .collect()
                            })
                            .unwrap_or_default();
                        (k.clone(), chs)
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    pub async fn client(&self, user: &str) -> Client {
        Client::connect(&format!("ws://{}/ws?user={user}", self.addr)).await
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Channels whose slots are owned by the primary at `port`, drawn from `prefix:0..`.
pub fn channels_on(cluster: &RedisCluster, port: u16, prefix: &str, n: usize) -> Vec<String> {
    let owners = cluster.slot_owners(port);
    (0..)
        .map(|i| format!("{prefix}:{i}"))
        .filter(|c| owners.get(&shardcast::slot::key_slot(c.as_bytes())) == Some(&port))
        .take(n)
        .collect()
}

/// Waits (up to 30 s) until every instance holds each of `channels` on exactly one
/// Redis node: the one that owns its slot now.
pub async fn wait_held_on_owners(
    cluster: &RedisCluster,
    instances: &[&Instance],
    channels: &[String],
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut wrong = Vec::new();
        for inst in instances {
            let held = inst.held().await;
            for ch in channels {
                let owner = match cluster.try_owner_of(ch) {
                    Some(p) => format!("127.0.0.1:{p}"),
                    None => "(unowned)".into(),
                };
                let on: Vec<&String> = held
                    .iter()
                    .filter(|(_, chs)| chs.contains(ch))
                    .map(|(n, _)| n)
                    .collect();
                if on != vec![&owner] {
                    wrong.push(format!("{} holds {ch} on {on:?}, owner {owner}", inst.addr));
                }
            }
        }
        if wrong.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "subscriptions not on their owners: {wrong:?}"
        );
        sleep(Duration::from_millis(200)).await;
    }
}
