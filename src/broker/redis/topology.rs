//! The Redis Cluster slot map as this instance sees it, read from `CLUSTER SHARDS`
//! (Redis 7) or, failing that, `CLUSTER SLOTS`.

use std::collections::BTreeSet;

use redis::Value;
use serde::Serialize;

use crate::config::SubscribeFrom;
use crate::slot::SLOTS;

/// `host:port` of a Redis node, as the cluster announces it (the only "node" in this
/// module: a shardcast instance is an instance).
pub type RedisAddr = String;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Shard {
    /// Inclusive slot ranges.
    pub slots: Vec<(u16, u16)>,
    pub primary: RedisAddr,
    pub replicas: Vec<RedisAddr>,
}

/// A node as the cluster reports it, failed ones included (for operators).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct NodeHealth {
    pub addr: RedisAddr,
    /// `primary` or `replica`.
    pub role: String,
    /// `online`, `loading`, `failed`, ... (`CLUSTER SHARDS`); `unknown` from `CLUSTER SLOTS`.
    pub health: String,
}

/// Which shard serves each slot.
#[derive(Debug, Clone, Serialize)]
pub struct SlotMap {
    pub shards: Vec<Shard>,
    /// Every node reported, with its health; not part of the map's identity.
    pub nodes: Vec<NodeHealth>,
    #[serde(skip)]
    owner: Vec<Option<u16>>,
}

impl SlotMap {
    pub fn with_health(shards: Vec<Shard>, nodes: Vec<NodeHealth>) -> SlotMap {
        SlotMap {
            nodes,
            ..SlotMap::new(shards)
        }
    }

    pub fn new(shards: Vec<Shard>) -> SlotMap {
        let mut owner = vec![None; SLOTS as usize];
        for (i, shard) in shards.iter().enumerate() {
            for &(a, b) in &shard.slots {
                for s in a..=b.min(SLOTS - 1) {
                    owner[s as usize] = Some(i as u16);
                }
            }
        }
        SlotMap {
            shards,
            nodes: Vec::new(),
            owner,
        }
    }

    /// The primary serving `slot`.
    pub fn owner(&self, slot: u16) -> Option<&RedisAddr> {
        self.shard_of(slot).map(|s| &s.primary)
    }

    pub fn shard_of(&self, slot: u16) -> Option<&Shard> {
        let i = (*self.owner.get(slot as usize)?)?;
        self.shards.get(i as usize)
    }

    /// The node this instance subscribes on for `slot`, by policy. Replicas are
    /// chosen by slot so that channels of one slot share a node (and a batch).
    pub fn subscriber_node(&self, slot: u16, policy: SubscribeFrom) -> Option<&RedisAddr> {
        let shard = self.shard_of(slot)?;
        let n = shard.replicas.len();
        Some(match policy {
            SubscribeFrom::Primary => &shard.primary,
            SubscribeFrom::Replica if n > 0 => &shard.replicas[slot as usize % n],
            SubscribeFrom::Replica => &shard.primary,
            SubscribeFrom::Any => match slot as usize % (n + 1) {
                0 => &shard.primary,
                i => &shard.replicas[i - 1],
            },
        })
    }

    /// Every node address in the map.
    pub fn addrs(&self) -> BTreeSet<RedisAddr> {
        self.shards
            .iter()
            .flat_map(|s| std::iter::once(&s.primary).chain(&s.replicas))
            .cloned()
            .collect()
    }

    /// Slots served by some shard.
    pub fn covered(&self) -> usize {
        self.owner.iter().filter(|o| o.is_some()).count()
    }
}

impl PartialEq for SlotMap {
    fn eq(&self, other: &Self) -> bool {
        self.shards == other.shards
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        _ => None,
    }
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        other => text(other)?.parse().ok(),
    }
}

/// Key/value pairs of a RESP3 map or a RESP2 flat array.
fn pairs(v: &Value) -> Vec<(String, &Value)> {
    match v {
        Value::Map(kv) => kv.iter().filter_map(|(k, v)| Some((text(k)?, v))).collect(),
        Value::Array(a) => a
            .chunks(2)
            .filter_map(|c| Some((text(c.first()?)?, c.get(1)?)))
            .collect(),
        _ => Vec::new(),
    }
}

fn get<'a>(kv: &'a [(String, &'a Value)], key: &str) -> Option<&'a Value> {
    kv.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
}

/// Parses a `CLUSTER SHARDS` reply. Failed nodes are left out of the shards (and
/// listed in the health report), and a shard whose primary failed serves nothing
/// until the cluster promotes a replica.
pub fn parse_cluster_shards(v: &Value) -> Option<(Vec<Shard>, Vec<NodeHealth>)> {
    let Value::Array(shards) = v else { return None };
    let mut out = Vec::new();
    let mut health = Vec::new();
    for shard in shards {
        let kv = pairs(shard);
        let Some(Value::Array(slots)) = get(&kv, "slots") else {
            return None;
        };
        let slots: Vec<(u16, u16)> = slots
            .chunks(2)
            .filter_map(|c| Some((int(c.first()?)? as u16, int(c.get(1)?)? as u16)))
            .collect();
        let Some(Value::Array(nodes)) = get(&kv, "nodes") else {
            return None;
        };
        let mut primary = None;
        let mut replicas = Vec::new();
        for node in nodes {
            let nkv = pairs(node);
            let field = |k: &str| get(&nkv, k).and_then(text);
            let host = field("endpoint")
                .filter(|e| !e.is_empty() && e != "?")
                .or_else(|| field("ip"))?;
            let Some(port) = get(&nkv, "port").and_then(int) else {
                continue;
            };
            let addr = format!("{host}:{port}");
            let h = field("health").unwrap_or_else(|| "unknown".into());
            health.push(NodeHealth {
                addr: addr.clone(),
                role: if field("role").as_deref() == Some("master") {
                    "primary"
                } else {
                    "replica"
                }
                .into(),
                health: h.clone(),
            });
            // Redis 7.0 reports a freshly synced replica as `loading` while its
            // replication offset is 0, so only nodes known to be failed are left out.
            if h.starts_with("fail") {
                continue;
            }
            match field("role").as_deref() {
                Some("master") => primary = Some(addr),
                _ => replicas.push(addr),
            }
        }
        if let Some(primary) = primary
            && !slots.is_empty()
        {
            replicas.sort();
            out.push(Shard {
                slots,
                primary,
                replicas,
            });
        }
    }
    health.sort_by(|a, b| a.addr.cmp(&b.addr));
    Some((out, health))
}

/// Parses a `CLUSTER SLOTS` reply (the fallback for servers without SHARDS).
pub fn parse_cluster_slots(v: &Value) -> Option<Vec<Shard>> {
    let Value::Array(ranges) = v else { return None };
    let mut out: Vec<Shard> = Vec::new();
    for range in ranges {
        let Value::Array(r) = range else { return None };
        let (a, b) = (int(r.first()?)? as u16, int(r.get(1)?)? as u16);
        let addr = |n: &Value| -> Option<RedisAddr> {
            let Value::Array(n) = n else { return None };
            Some(format!("{}:{}", text(n.first()?)?, int(n.get(1)?)?))
        };
        let primary = addr(r.get(2)?)?;
        let mut replicas: Vec<RedisAddr> = r.iter().skip(3).filter_map(addr).collect();
        replicas.sort();
        match out.iter_mut().find(|s| s.primary == primary) {
            Some(s) => s.slots.push((a, b)),
            None => out.push(Shard {
                slots: vec![(a, b)],
                primary,
                replicas,
            }),
        }
    }
    Some(out)
}

/// What changed between two slot maps, for the operators' timeline: slots that
/// moved (grouped by old and new owner), promotions, nodes added and removed.
pub fn diff(old: &SlotMap, new: &SlotMap) -> Vec<String> {
    let mut out = Vec::new();
    let mut moved: std::collections::BTreeMap<(String, String), usize> = Default::default();
    for slot in 0..SLOTS {
        if let (Some(a), Some(b)) = (old.owner(slot), new.owner(slot))
            && a != b
        {
            *moved.entry((a.clone(), b.clone())).or_default() += 1;
        }
    }
    let old_replicas: BTreeSet<&RedisAddr> = old.shards.iter().flat_map(|s| &s.replicas).collect();
    let old_primaries: BTreeSet<&RedisAddr> = old.shards.iter().map(|s| &s.primary).collect();
    for s in &new.shards {
        if old_replicas.contains(&s.primary) && !old_primaries.contains(&s.primary) {
            out.push(format!("failover: {} promoted to primary", s.primary));
        }
    }
    for ((a, b), n) in moved {
        out.push(format!("slots moved: {n} from {a} to {b}"));
    }
    let (before, after) = (old.addrs(), new.addrs());
    for a in after.difference(&before) {
        out.push(format!("node added: {a}"));
    }
    for a in before.difference(&after) {
        out.push(format!("node removed: {a}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn parses_cluster_shards_and_picks_nodes_by_policy() {
        let node = |ip: &str, port: i64, role: &str, health: &str| {
            Value::Map(vec![
                (bulk("id"), bulk("x")),
                (bulk("port"), Value::Int(port)),
                (bulk("ip"), bulk(ip)),
                (bulk("endpoint"), bulk(ip)),
                (bulk("role"), bulk(role)),
                (bulk("health"), bulk(health)),
            ])
        };
        let reply = Value::Array(vec![Value::Map(vec![
            (
                bulk("slots"),
                Value::Array(vec![
                    Value::Int(0),
                    Value::Int(99),
                    Value::Int(200),
                    Value::Int(300),
                ]),
            ),
            (
                bulk("nodes"),
                Value::Array(vec![
                    node("10.0.0.1", 7000, "master", "online"),
                    node("10.0.0.2", 7001, "replica", "online"),
                    node("10.0.0.3", 7002, "replica", "failed"),
                ]),
            ),
        ])]);
        let (shards, health) = parse_cluster_shards(&reply).unwrap();
        assert_eq!(health.len(), 3, "the failed replica is reported");
        assert_eq!(health[2].health, "failed");
        assert_eq!(
            shards,
            vec![Shard {
                slots: vec![(0, 99), (200, 300)],
                primary: "10.0.0.1:7000".into(),
                replicas: vec!["10.0.0.2:7001".into()],
            }]
        );
        let map = SlotMap::new(shards);
        assert_eq!(map.covered(), 100 + 101);
        assert!(map.shard_of(150).is_none());
        assert_eq!(
            map.subscriber_node(5, SubscribeFrom::Primary)
                .map(String::as_str),
            Some("10.0.0.1:7000")
        );
        assert_eq!(
            map.subscriber_node(5, SubscribeFrom::Replica)
                .map(String::as_str),
            Some("10.0.0.2:7001")
        );
    }

    #[test]
    fn diff_names_moves_promotions_and_nodes() {
        let shard = |p: &str, r: &[&str], range: (u16, u16)| Shard {
            slots: vec![range],
            primary: p.into(),
            replicas: r.iter().map(|x| x.to_string()).collect(),
        };
        let old = SlotMap::new(vec![
            shard("a:1", &["a:2"], (0, 8191)),
            shard("b:1", &[], (8192, 16383)),
        ]);
        let new = SlotMap::new(vec![
            shard("a:2", &[], (0, 8000)),
            shard("b:1", &[], (8001, 16383)),
            shard("c:1", &[], (20000, 20000)),
        ]);
        let d = diff(&old, &new);
        assert!(
            d.contains(&"failover: a:2 promoted to primary".to_string()),
            "{d:?}"
        );
        assert!(
            d.contains(&"slots moved: 191 from a:1 to b:1".to_string()),
            "{d:?}"
        );
        assert!(
            d.contains(&"slots moved: 8001 from a:1 to a:2".to_string()),
            "{d:?}"
        );
        assert!(d.contains(&"node removed: a:1".to_string()), "{d:?}");
        assert!(d.contains(&"node added: c:1".to_string()), "{d:?}");
        assert!(diff(&old, &old).is_empty());
    }
}
