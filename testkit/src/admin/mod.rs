//! Redis Cluster administration, the one implementation: forming a cluster, adding
//! and removing shards, moving slots with their keys, graceful failover, and the
//! agreement check every operation waits on. Used by [`crate::RedisCluster`]
//! (containers), by the `shardcast-cluster` CLI behind `cluster/*.sh` (local
//! `redis-server` processes), and by the compose stack's init job.
//!
//! Everything speaks the cluster commands directly (`CLUSTER MEET`, `ADDSLOTSRANGE`,
//! `SETSLOT`, `MIGRATE`, `FORGET`, ...) over redis-rs, so nothing here needs
//! `redis-cli` or a shell.
//!
//! Use it directly for a cluster that is not a [`crate::RedisCluster`] (nodes you
//! started yourself), or for one-off commands on a node ([`query`]). Nodes are
//! named by `ip:port` strings. Each command has a 5 s response timeout (2 s to
//! connect), and each wait ([`wait_settled`], [`wait_known`], [`replicate`],
//! [`failover`], [`wait_replaced`]) gives up after [`SETTLE`] with an
//! [`AdminError::Timeout`] naming what it waited for and the last reason.

pub mod view;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::OnceLock;
use std::time::Duration;

use crate::wait::{self, Timeout};
use redis::aio::MultiplexedConnection;
use view::{Expect, NodeLine, SLOTS, View, agreement, parse_cluster_nodes};

/// How long each settling wait may take (60 s) before it fails with
/// [`AdminError::Timeout`] and the last reason it saw. Generous on purpose: a
/// slow, shared CI machine must not turn a late agreement into a failure.
pub const SETTLE: Duration = Duration::from_secs(60);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// Why an administration step failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// A command on one node failed: connection refused or timed out (2 s to
    /// connect, 5 s per command), or Redis answered with an error.
    #[error("Redis node {addr}: {source}")]
    Redis {
        /// The node's `ip:port`.
        addr: String,
        /// What redis-rs reported.
        #[source]
        source: redis::RedisError,
    },
    /// A wait gave up after its deadline ([`SETTLE`] for the cluster waits); the
    /// message names what was awaited and the last reason it was not there yet.
    #[error(transparent)]
    Timeout(#[from] Timeout),
    /// The request itself cannot be carried out (not a master, no owner, a bad
    /// address, a port in use, `redis-server` missing, ...).
    #[error("{0}")]
    Invalid(String),
}

type Result<T> = std::result::Result<T, AdminError>;

fn redis_err(addr: &str) -> impl FnOnce(redis::RedisError) -> AdminError + '_ {
    move |source| AdminError::Redis {
        addr: addr.to_string(),
        source,
    }
}

/// A new connection to one node (`ip:port`), not pooled: 2 s to connect, 5 s per
/// command. For a test that wants a connection of its own (e.g. to subscribe);
/// for single commands [`query`] reuses pooled connections.
pub async fn connect(addr: &str) -> Result<MultiplexedConnection> {
    let client = redis::Client::open(format!("redis://{addr}")).map_err(redis_err(addr))?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(COMMAND_TIMEOUT));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(redis_err(addr))
}

/// Connections by node address, reused across commands: moving thousands of slots
/// one command at a time over fresh connections would open tens of thousands of
/// sockets. A connection that failed is dropped and made again on the next use.
fn pool() -> &'static std::sync::Mutex<HashMap<String, MultiplexedConnection>> {
    static POOL: OnceLock<std::sync::Mutex<HashMap<String, MultiplexedConnection>>> =
        OnceLock::new();
    POOL.get_or_init(Default::default)
}

async fn pooled(addr: &str) -> Result<MultiplexedConnection> {
    let cached = pool()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(addr)
        .cloned();
    match cached {
        Some(c) => Ok(c),
        None => {
            let c = connect(addr).await?;
            pool()
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(addr.to_string(), c.clone());
            Ok(c)
        }
    }
}

/// Runs one command on one node (`ip:port`) over a pooled connection and converts
/// the reply: `admin::query::<String>("127.0.0.1:7000", &redis::cmd("PING"))`. No
/// redirects are followed (the node answers `MOVED` for a slot it does not own).
///
/// A connection that failed is dropped from the pool. When the pooled connection
/// turns out to be dead (broken pipe, reset, closed), the command is sent once more
/// on a fresh one: the pool outlives clusters, and a node started on a port that an
/// earlier, removed node used would otherwise fail its first command on the old
/// node's dead connection (seen in CI as "Redis node ...: broken pipe" while a new
/// cluster was being formed). A timeout is not retried: the command may have run.
pub async fn query<T: redis::FromRedisValue>(addr: &str, cmd: &redis::Cmd) -> Result<T> {
    let mut conn = pooled(addr).await?;
    let mut r = cmd.query_async(&mut conn).await;
    if r.as_ref()
        .is_err_and(|e| e.is_io_error() || e.is_connection_dropped())
    {
        drop_pooled(addr);
        let mut fresh = pooled(addr).await?;
        r = cmd.query_async(&mut fresh).await;
    }
    if r.as_ref().is_err_and(dead) {
        drop_pooled(addr);
    }
    r.map_err(redis_err(addr))
}

/// An error after which a connection is not reused.
fn dead(e: &redis::RedisError) -> bool {
    e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_unrecoverable_error()
}

fn drop_pooled(addr: &str) {
    pool()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(addr);
}

fn cluster(sub: &str) -> redis::Cmd {
    let mut c = redis::cmd("CLUSTER");
    c.arg(sub);
    c
}

/// `CLUSTER NODES` of one node, parsed: what that node believes now (no waiting).
pub async fn view(addr: &str) -> Result<View> {
    let text: String = query(addr, &cluster("NODES")).await?;
    Ok(View {
        lines: parse_cluster_nodes(&text),
    })
}

/// The node's own id (`CLUSTER MYID`), as other nodes' views list it.
pub async fn node_id(addr: &str) -> Result<String> {
    query(addr, &cluster("MYID")).await
}

/// One look, no waiting: whether every node of `addrs` says `cluster_state:ok`,
/// their views agree and meet `expect` (see [`agreement`]), and every replica
/// among them has its replication link up. `Ok` holds the first node's view;
/// `Err` the first reason found not to be settled.
pub async fn check(addrs: &[String], expect: &Expect) -> std::result::Result<View, String> {
    let mut views = Vec::with_capacity(addrs.len());
    for a in addrs {
        let info: String = query(a, &cluster("INFO"))
            .await
            .map_err(|e| e.to_string())?;
        if !info.contains("cluster_state:ok") {
            return Err(format!("{a}: cluster_state is not ok"));
        }
        views.push((a.clone(), view(a).await.map_err(|e| e.to_string())?));
    }
    agreement(&views, expect)?;
    for a in addrs {
        let repl: String = query(a, redis::cmd("INFO").arg("replication"))
            .await
            .map_err(|e| e.to_string())?;
        if repl.contains("role:slave") && !repl.contains("master_link_status:up") {
            return Err(format!("replica {a} has not synced with its master yet"));
        }
    }
    Ok(views.swap_remove(0).1)
}

/// Waits until [`check`] passes, polling every 200 ms: the settle wait every
/// operation ends with. `what` names the wait in the timeout's message.
///
/// Errors: [`AdminError::Timeout`] after [`SETTLE`], with the last reason.
pub async fn wait_settled(addrs: &[String], expect: &Expect, what: &str) -> Result<View> {
    Ok(
        wait::until(what, SETTLE, Duration::from_millis(200), || async {
            check(addrs, expect).await
        })
        .await?,
    )
}

/// Inclusive slot ranges for `n` masters, as `redis-cli --cluster create` splits
/// them (the first `16384 % n` get one more). `n = 0` counts as 1.
pub fn split_slots(n: usize) -> Vec<(u16, u16)> {
    let n = n.max(1) as u32;
    let per = u32::from(SLOTS) / n;
    let extra = u32::from(SLOTS) % n;
    let mut start = 0u32;
    (0..n)
        .map(|i| {
            let len = per + u32::from(i < extra);
            let range = (start as u16, (start + len - 1) as u16);
            start += len;
            range
        })
        .collect()
}

/// Forms a cluster of fresh nodes (started with `cluster-enabled yes`, knowing no
/// other node): `primaries` share the slots evenly and each entry of `replicas`
/// (address, index into `primaries`) replicates its primary.
///
/// Settled on return: every node agrees, the cluster has exactly these nodes and
/// `primaries.len()` masters (each with `replicas.len() / primaries.len()`
/// replicas when that divides evenly), and every replica has synced.
///
/// Errors: [`AdminError::Invalid`] for no primary or a replica naming a primary
/// that does not exist; [`AdminError::Redis`] if a node refuses (e.g. it already
/// holds slots); [`AdminError::Timeout`] if a wait exceeds [`SETTLE`].
pub async fn create(primaries: &[String], replicas: &[(String, usize)]) -> Result<View> {
    if primaries.is_empty() {
        return Err(AdminError::Invalid("a cluster needs a primary".into()));
    }
    let all: Vec<String> = primaries
        .iter()
        .cloned()
        .chain(replicas.iter().map(|(a, _)| a.clone()))
        .collect();
    for (i, a) in all.iter().enumerate() {
        // Distinct epochs up front, as redis-cli does, so that no two nodes collide.
        let _: () = query(a, cluster("SET-CONFIG-EPOCH").arg(i + 1)).await?;
    }
    for (a, (lo, hi)) in primaries.iter().zip(split_slots(primaries.len())) {
        let _: () = query(a, cluster("ADDSLOTSRANGE").arg(lo).arg(hi)).await?;
    }
    for a in &all[1..] {
        meet(&all[0], a).await?;
    }
    wait_known(&all, &all).await?;
    let mut ids = Vec::new();
    for p in primaries {
        ids.push(node_id(p).await?);
    }
    for (r, i) in replicas {
        let id = ids.get(*i).ok_or_else(|| {
            AdminError::Invalid(format!(
                "replica {r} names primary #{i}, which does not exist"
            ))
        })?;
        replicate(r, id).await?;
    }
    let per = replicas.len() / primaries.len();
    let even = replicas.len() % primaries.len() == 0;
    let expect = Expect {
        nodes: Some(all.iter().cloned().collect()),
        primaries: Some(primaries.len()),
        replicas_per_primary: even.then_some(per),
        ..Expect::default()
    };
    wait_settled(&all, &expect, "the new cluster to agree").await
}

/// `CLUSTER MEET` from `from` to `to`: introduces `to` to the cluster `from`
/// belongs to. `to` must be `ip:port` (resolve host names first). Returns at once;
/// [`wait_known`] waits for the handshake to finish.
pub async fn meet(from: &str, to: &str) -> Result<()> {
    let (host, port) = to
        .rsplit_once(':')
        .ok_or_else(|| AdminError::Invalid(format!("`{to}` is not ip:port")))?;
    let _: () = query(from, cluster("MEET").arg(host).arg(port)).await?;
    Ok(())
}

/// Waits until every node of `observers` lists every node of `targets`, handshake
/// done, polling every 100 ms. Errors: [`AdminError::Timeout`] after [`SETTLE`].
pub async fn wait_known(observers: &[String], targets: &[String]) -> Result<()> {
    let mut ids = Vec::new();
    for t in targets {
        ids.push(node_id(t).await?);
    }
    wait::until(
        "every node to know every other",
        SETTLE,
        Duration::from_millis(100),
        || async {
            for o in observers {
                let v = view(o).await.map_err(|e| e.to_string())?;
                for id in &ids {
                    match v.by_id(id) {
                        Some(l) if !l.has_flag("handshake") => {}
                        _ => return Err(format!("{o} does not know {id} yet")),
                    }
                }
            }
            Ok(())
        },
    )
    .await?;
    Ok(())
}

/// Makes `replica` a replica of the master `master_id` (`CLUSTER REPLICATE`),
/// retrying every 100 ms until it knows that master by gossip (`REPLICATE` right
/// after `MEET` fails with "Unknown node"). Returns once the command was accepted,
/// before the replica has synced ([`wait_settled`] waits for that).
///
/// Errors: [`AdminError::Timeout`] after [`SETTLE`], with Redis's last refusal.
pub async fn replicate(replica: &str, master_id: &str) -> Result<()> {
    wait::until(
        "a replica to accept its master",
        SETTLE,
        Duration::from_millis(100),
        || async {
            query::<()>(replica, cluster("REPLICATE").arg(master_id))
                .await
                .map_err(|e| e.to_string())
        },
    )
    .await?;
    Ok(())
}

/// The healthy masters that serve slots, as `seed` sees them now (their lines of
/// `CLUSTER NODES`: address, id, slots).
pub async fn primaries(seed: &str) -> Result<Vec<NodeLine>> {
    Ok(view(seed).await?.primaries().into_iter().cloned().collect())
}

/// Moves slots between masters: the masters' ids are read once, so that moving
/// thousands of slots costs only the commands each move needs. For a test that
/// reshards by hand many slots at once; [`move_slot`], [`rebalance`] and
/// [`drain_master`] use it. It does not wait for agreement: call
/// [`wait_settled`] when done.
pub struct SlotMover {
    /// (address, id) of every master serving slots, and of the empty ones to fill.
    masters: Vec<(String, String)>,
    /// slot → current owner's address.
    owners: BTreeMap<u16, String>,
}

impl SlotMover {
    /// Reads the masters serving slots (and `extra`, empty masters to fill, by
    /// address) and who owns each slot, as `seed` sees them.
    pub async fn new(seed: &str, extra: &[String]) -> Result<SlotMover> {
        let v = view(seed).await?;
        let mut masters: Vec<(String, String)> = v
            .primaries()
            .iter()
            .map(|l| (l.addr.clone(), l.id.clone()))
            .collect();
        for e in extra {
            if !masters.iter().any(|(a, _)| a == e) {
                masters.push((e.clone(), node_id(e).await?));
            }
        }
        Ok(SlotMover {
            masters,
            owners: v.owners(),
        })
    }

    fn id(&self, addr: &str) -> Result<&str> {
        self.masters
            .iter()
            .find(|(a, _)| a == addr)
            .map(|(_, id)| id.as_str())
            .ok_or_else(|| AdminError::Invalid(format!("{addr} is not a master")))
    }

    /// Moves `slot` and its keys to the master at `to`, the way `redis-cli --cluster
    /// reshard` does: IMPORTING on the target, MIGRATING on the source, MIGRATE the
    /// keys in batches of 100, then SETSLOT NODE on both and on every other master.
    /// A no-op if `to` owns it already. Returns when the two masters have switched
    /// over; the others learn it by the `SETSLOT` sent to them or by gossip.
    ///
    /// Errors: [`AdminError::Invalid`] if the slot has no owner or `to` is not one
    /// of the masters read by [`SlotMover::new`]; [`AdminError::Redis`] if a
    /// command fails (5 s each).
    pub async fn move_slot(&mut self, slot: u16, to: &str) -> Result<()> {
        let from = self
            .owners
            .get(&slot)
            .ok_or_else(|| AdminError::Invalid(format!("slot {slot} has no owner")))?
            .clone();
        if from == to {
            return Ok(());
        }
        let (from_id, to_id) = (self.id(&from)?.to_string(), self.id(to)?.to_string());
        let _: () = query(
            to,
            cluster("SETSLOT").arg(slot).arg("IMPORTING").arg(&from_id),
        )
        .await?;
        let _: () = query(
            &from,
            cluster("SETSLOT").arg(slot).arg("MIGRATING").arg(&to_id),
        )
        .await?;
        let (to_host, to_port) = to
            .rsplit_once(':')
            .ok_or_else(|| AdminError::Invalid(format!("`{to}` is not ip:port")))?;
        loop {
            let keys: Vec<String> =
                query(&from, cluster("GETKEYSINSLOT").arg(slot).arg(100)).await?;
            if keys.is_empty() {
                break;
            }
            let mut migrate = redis::cmd("MIGRATE");
            migrate
                .arg(to_host)
                .arg(to_port)
                .arg("")
                .arg(0)
                .arg(5000)
                .arg("KEYS");
            for k in &keys {
                migrate.arg(k);
            }
            let _: () = query(&from, &migrate).await?;
        }
        for a in [to, from.as_str()] {
            let _: () = query(a, cluster("SETSLOT").arg(slot).arg("NODE").arg(&to_id)).await?;
        }
        for (a, _) in &self.masters {
            if a != to && *a != from {
                // Best effort: gossip carries the change to a master that misses it.
                let _ = query::<()>(a, cluster("SETSLOT").arg(slot).arg("NODE").arg(&to_id)).await;
            }
        }
        self.owners.insert(slot, to.to_string());
        Ok(())
    }

    /// The slots each master serves (the empty ones included).
    fn slots_by_master(&self) -> BTreeMap<String, Vec<u16>> {
        let mut out: BTreeMap<String, Vec<u16>> = self
            .masters
            .iter()
            .map(|(a, _)| (a.clone(), Vec::new()))
            .collect();
        for (slot, owner) in &self.owners {
            out.entry(owner.clone()).or_default().push(*slot);
        }
        out
    }
}

/// Moves `slot` and its keys to the master at `to` (see [`SlotMover::move_slot`]),
/// reading the cluster from `seed` first. Does not wait for every node to agree:
/// follow it with [`wait_settled`].
pub async fn move_slot(seed: &str, slot: u16, to: &str) -> Result<()> {
    SlotMover::new(seed, &[]).await?.move_slot(slot, to).await
}

/// Pure planning, no Redis: the slot moves (slot, destination master) that leave
/// every master of `masters` (address → the slots it serves now; empty masters to
/// fill have an empty list) with an even share, taking surplus slots from the
/// largest first. Masters in `drain` end with none. Empty if every master is to be
/// drained.
pub fn plan_rebalance(
    masters: &BTreeMap<String, Vec<u16>>,
    drain: &BTreeSet<String>,
) -> Vec<(u16, String)> {
    let keep: Vec<&String> = masters.keys().filter(|m| !drain.contains(*m)).collect();
    if keep.is_empty() {
        return Vec::new();
    }
    let n = keep.len();
    let per = usize::from(SLOTS) / n;
    let extra = usize::from(SLOTS) % n;
    // Targets: the masters holding most now get the extra slot.
    let mut order: Vec<&String> = keep.clone();
    order.sort_by_key(|m| std::cmp::Reverse(masters[*m].len()));
    let target: BTreeMap<&String, usize> = order
        .iter()
        .enumerate()
        .map(|(i, m)| (*m, per + usize::from(i < extra)))
        .collect();
    let mut surplus: Vec<u16> = Vec::new();
    for (m, slots) in masters {
        let want = target.get(m).copied().unwrap_or(0);
        if slots.len() > want {
            let mut s = slots.clone();
            s.sort_unstable();
            surplus.extend(s[want..].iter().copied());
        }
    }
    let mut moves = Vec::new();
    for m in &keep {
        let have = masters[*m].len();
        let want = target[m];
        for _ in have..want {
            if let Some(slot) = surplus.pop() {
                moves.push((slot, (*m).clone()));
            }
        }
    }
    moves
}

/// Spreads the slots evenly over every master, the `empty` ones (addresses of
/// masters with no slot yet, e.g. a new shard) included, moving them one at a time
/// with their keys. `all[0]` is the seed the cluster is read from (an empty `all`
/// is [`AdminError::Invalid`]). Does not wait for agreement: follow it with
/// [`wait_settled`].
pub async fn rebalance(all: &[String], empty: &[String]) -> Result<()> {
    let seed = all
        .first()
        .ok_or_else(|| AdminError::Invalid("rebalance needs at least one node".into()))?;
    let mut mover = SlotMover::new(seed, empty).await?;
    for (slot, to) in plan_rebalance(&mover.slots_by_master(), &BTreeSet::new()) {
        mover.move_slot(slot, &to).await?;
    }
    Ok(())
}

/// Moves every slot of the master at `addr`, with its keys, evenly to the other
/// masters, reading the cluster from `seed`: the first step of removing a shard.
/// Does not wait for agreement: follow it with [`wait_settled`].
pub async fn drain_master(seed: &str, addr: &str) -> Result<()> {
    let mut mover = SlotMover::new(seed, &[]).await?;
    let drain = BTreeSet::from([addr.to_string()]);
    for (slot, to) in plan_rebalance(&mover.slots_by_master(), &drain) {
        mover.move_slot(slot, &to).await?;
    }
    Ok(())
}

/// Makes every node of `remaining` forget the nodes `gone` (by id, `CLUSTER
/// FORGET`); a node that does not know one any more is fine. The removed nodes
/// must hold no slots and be stopped afterwards; Redis's 60 s ban keeps gossip from
/// re-adding them meanwhile.
pub async fn forget(remaining: &[String], gone: &[String]) -> Result<()> {
    for a in remaining {
        for id in gone {
            let r: Result<()> = query(a, cluster("FORGET").arg(id)).await;
            if let Err(e) = r
                && !e.to_string().contains("Unknown node")
            {
                return Err(e);
            }
        }
    }
    Ok(())
}

/// Graceful failover: the replica at `replica` takes over from its master with no
/// data loss (`CLUSTER FAILOVER`). Returns when every node of `all` sees it as a
/// master serving slots (polling every 100 ms).
///
/// Errors: [`AdminError::Redis`] if the node refuses (e.g. it is not a replica);
/// [`AdminError::Timeout`] after [`SETTLE`].
pub async fn failover(all: &[String], replica: &str) -> Result<()> {
    let _: () = query(replica, &cluster("FAILOVER")).await?;
    let id = node_id(replica).await?;
    wait::until(
        "the replica to be promoted everywhere",
        SETTLE,
        Duration::from_millis(100),
        || async {
            for a in all {
                let v = view(a).await.map_err(|e| e.to_string())?;
                match v.by_id(&id) {
                    Some(l) if l.is_master() && !l.slots.is_empty() => {}
                    _ => return Err(format!("{a} does not see {replica} as a master yet")),
                }
            }
            Ok(())
        },
    )
    .await?;
    Ok(())
}

/// After a master died: waits until every node of `live` sees all 16384 slots
/// served by healthy masters and none by `dead` (a replica was promoted and every
/// node knows it), polling every 100 ms.
///
/// Errors: [`AdminError::Timeout`] after [`SETTLE`] (e.g. the master had no
/// replica to promote).
pub async fn wait_replaced(live: &[String], dead: &str) -> Result<()> {
    wait::until(
        "a replica to replace the dead master",
        SETTLE,
        Duration::from_millis(100),
        || async {
            for a in live {
                let owners = view(a).await.map_err(|e| e.to_string())?.owners();
                if owners.len() != usize::from(SLOTS) {
                    return Err(format!("{a} sees {} slots served", owners.len()));
                }
                if owners.values().any(|o| o == dead) {
                    return Err(format!("{a} still routes slots to {dead}"));
                }
            }
            Ok(())
        },
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_split_like_redis_cli() {
        assert_eq!(
            split_slots(3),
            vec![(0, 5461), (5462, 10922), (10923, 16383)]
        );
        assert_eq!(split_slots(1), vec![(0, 16383)]);
    }

    #[test]
    fn rebalancing_fills_an_empty_master_and_drains_another() {
        let mut m: BTreeMap<String, Vec<u16>> = BTreeMap::new();
        m.insert("a".into(), (0..8192).collect());
        m.insert("b".into(), (8192..16384).collect());
        m.insert("c".into(), vec![]);
        let moves = plan_rebalance(&m, &BTreeSet::new());
        let to_c = moves.iter().filter(|(_, t)| t == "c").count();
        assert_eq!(to_c, 5461);
        assert!(moves.iter().all(|(_, t)| t == "c"));
        let drained = plan_rebalance(&m, &BTreeSet::from(["a".to_string()]));
        assert_eq!(drained.len(), 8192);
        assert!(drained.iter().all(|(s, _)| *s < 8192));
        let to_b = drained.iter().filter(|(_, t)| t == "b").count();
        let to_c = drained.iter().filter(|(_, t)| t == "c").count();
        assert_eq!((to_b, to_c), (0, 8192));
    }
}
