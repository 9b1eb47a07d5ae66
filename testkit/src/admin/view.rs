//! One node's view of the cluster (`CLUSTER NODES`), and whether a set of views
//! agree: the check every operation waits on before it returns.

use std::collections::{BTreeMap, BTreeSet};

/// Number of hash slots in a Redis Cluster (slots are `0..SLOTS`).
pub const SLOTS: u16 = 16384;

/// One line of `CLUSTER NODES`: one node as the observing node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeLine {
    /// The node's 40-character id.
    pub id: String,
    /// `ip:port` as announced (bus port dropped).
    pub addr: String,
    /// The port of `addr`.
    pub port: u16,
    /// The flags as listed: `myself`, `master`, `slave`, `fail?`, `fail`,
    /// `handshake`, `noaddr`, `nofailover`, ...
    pub flags: Vec<String>,
    /// The master's id for a replica.
    pub master: Option<String>,
    /// Whether the observer's cluster-bus link to this node is up (`connected`).
    pub connected: bool,
    /// Inclusive slot ranges served.
    pub slots: Vec<(u16, u16)>,
    /// Slots being migrated or imported (`[slot->-id]`, `[slot-<-id]`).
    pub open_slots: Vec<String>,
}

impl NodeLine {
    /// Whether the flags include `f` exactly (`"master"`, `"fail?"`, ...).
    pub fn has_flag(&self, f: &str) -> bool {
        self.flags.iter().any(|x| x == f)
    }

    /// Flagged `master` (with or without slots, healthy or not).
    pub fn is_master(&self) -> bool {
        self.has_flag("master")
    }

    /// The observing node's own line (flag `myself`).
    pub fn is_myself(&self) -> bool {
        self.has_flag("myself")
    }

    /// Flagged as failing (`fail` or `fail?`), handshaking or without address.
    pub fn is_unhealthy(&self) -> bool {
        self.flags
            .iter()
            .any(|f| matches!(f.as_str(), "fail" | "fail?" | "handshake" | "noaddr"))
    }

    /// Number of slots in [`slots`](Self::slots).
    pub fn slot_count(&self) -> usize {
        self.slots.iter().map(|(a, b)| usize::from(b - a) + 1).sum()
    }
}

/// Parses a `CLUSTER NODES` reply, one [`NodeLine`] per well-formed line
/// (malformed lines are skipped).
pub fn parse_cluster_nodes(text: &str) -> Vec<NodeLine> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 8 {
                return None;
            }
            let addr = f[1].split('@').next()?.to_string();
            let port = addr.rsplit(':').next()?.parse().ok()?;
            let mut slots = Vec::new();
            let mut open_slots = Vec::new();
            for s in &f[8..] {
                if s.starts_with('[') {
                    open_slots.push(s.to_string());
                    continue;
                }
                let range = match s.split_once('-') {
                    Some((a, b)) => (a.parse().ok()?, b.parse().ok()?),
                    None => {
                        let v = s.parse().ok()?;
                        (v, v)
                    }
                };
                slots.push(range);
            }
            Some(NodeLine {
                id: f[0].to_string(),
                addr,
                port,
                flags: f[2].split(',').map(str::to_string).collect(),
                master: (f[3] != "-").then(|| f[3].to_string()),
                connected: f[7] == "connected",
                slots,
                open_slots,
            })
        })
        .collect()
}

/// One node's view of the cluster: its `CLUSTER NODES`, parsed. From
/// [`crate::admin::view`](fn@crate::admin::view) or
/// [`RedisCluster::view`](crate::RedisCluster::view), for assertions on roles,
/// flags and slot ownership.
#[derive(Debug, Clone)]
pub struct View {
    /// Every node the observer knows, itself included, in the reply's order.
    pub lines: Vec<NodeLine>,
}

impl View {
    /// The observer's own line.
    pub fn myself(&self) -> Option<&NodeLine> {
        self.lines.iter().find(|l| l.is_myself())
    }

    /// The line of the node with id `id`.
    pub fn by_id(&self, id: &str) -> Option<&NodeLine> {
        self.lines.iter().find(|l| l.id == id)
    }

    /// The line of the node announced as `addr` (`ip:port`).
    pub fn by_addr(&self, addr: &str) -> Option<&NodeLine> {
        self.lines.iter().find(|l| l.addr == addr)
    }

    /// Healthy masters that serve slots.
    pub fn primaries(&self) -> Vec<&NodeLine> {
        self.lines
            .iter()
            .filter(|l| l.is_master() && !l.is_unhealthy() && !l.slots.is_empty())
            .collect()
    }

    /// Healthy replicas of the master `id`.
    pub fn replicas_of(&self, id: &str) -> Vec<&NodeLine> {
        self.lines
            .iter()
            .filter(|l| l.master.as_deref() == Some(id) && !l.is_master() && !l.is_unhealthy())
            .collect()
    }

    /// slot → address of the healthy master serving it. Slots missing from the
    /// map are unserved (e.g. their master failed and no replica took over yet).
    pub fn owners(&self) -> BTreeMap<u16, String> {
        let mut out = BTreeMap::new();
        for l in self.primaries() {
            for &(a, b) in &l.slots {
                for s in a..=b {
                    out.insert(s, l.addr.clone());
                }
            }
        }
        out
    }

    /// The view without `myself` markers, of the nodes not in `ignore`, sorted: two
    /// nodes agree when these are equal.
    fn canonical(&self, ignore: &BTreeSet<String>) -> Vec<String> {
        let mut v: Vec<String> = self
            .lines
            .iter()
            .filter(|l| !ignore.contains(&l.addr))
            .map(|l| {
                let role = if l.is_master() { "master" } else { "replica" };
                format!(
                    "{} {} {role} {} {:?}",
                    l.addr,
                    l.id,
                    l.master.as_deref().unwrap_or("-"),
                    l.slots
                )
            })
            .collect();
        v.sort();
        v
    }
}

/// What a set of views must show to count as settled, besides agreeing (see
/// [`agreement`]). `Expect::default()` asks for agreement only.
#[derive(Debug, Clone, Default)]
pub struct Expect {
    /// Exactly these node addresses (besides `dead`), when given.
    pub nodes: Option<BTreeSet<String>>,
    /// Nodes known to be gone (killed, removed): their lines are ignored.
    pub dead: BTreeSet<String>,
    /// Number of slot-serving masters, when given.
    pub primaries: Option<usize>,
    /// Replicas each of those masters has, when given.
    pub replicas_per_primary: Option<usize>,
}

/// Whether `views` (one per live node, with that node's address) agree and meet
/// `expect`; the reason they do not otherwise. Agreeing means: no node (outside
/// `expect.dead`) is flagged `fail`, `fail?`, `handshake` or `noaddr`, or seen
/// without a link; no slot is open; every view lists the same nodes with the same
/// roles, masters and slot ranges; and all [`SLOTS`] slots are served.
pub fn agreement(views: &[(String, View)], expect: &Expect) -> Result<(), String> {
    let Some((first_addr, first)) = views.first() else {
        return Err("no nodes".into());
    };
    let reference = first.canonical(&expect.dead);
    for (addr, view) in views {
        for l in &view.lines {
            if expect.dead.contains(&l.addr) {
                continue;
            }
            if l.is_unhealthy() {
                return Err(format!("{addr} sees {} as {}", l.addr, l.flags.join(",")));
            }
            if !l.connected && !l.is_myself() {
                return Err(format!("{addr} has no link to {}", l.addr));
            }
            if !l.open_slots.is_empty() {
                return Err(format!(
                    "{addr} sees open slots {:?} on {}",
                    l.open_slots, l.addr
                ));
            }
        }
        if view.canonical(&expect.dead) != reference {
            return Err(format!("{addr} and {first_addr} disagree"));
        }
    }
    let owners = first.owners();
    if owners.len() != usize::from(SLOTS) {
        return Err(format!("only {} of {SLOTS} slots are served", owners.len()));
    }
    if let Some(nodes) = &expect.nodes {
        let seen: BTreeSet<String> = first
            .lines
            .iter()
            .filter(|l| !expect.dead.contains(&l.addr))
            .map(|l| l.addr.clone())
            .collect();
        if &seen != nodes {
            return Err(format!(
                "the cluster has nodes {seen:?}, expected {nodes:?}"
            ));
        }
    }
    let primaries = first.primaries();
    if let Some(n) = expect.primaries
        && primaries.len() != n
    {
        return Err(format!(
            "{} masters serve slots, expected {n}",
            primaries.len()
        ));
    }
    if let Some(r) = expect.replicas_per_primary {
        for p in &primaries {
            let have = first.replicas_of(&p.id).len();
            if have != r {
                return Err(format!(
                    "master {} has {have} replicas, expected {r}",
                    p.addr
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODES: &str = "\
a1 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-8191
b1 127.0.0.1:7001@17001 master - 0 0 2 connected 8192-16383
a2 127.0.0.1:7002@17002 slave a1 0 0 1 connected
b2 127.0.0.1:7003@17003 slave b1 0 0 2 connected
";

    fn view(text: &str) -> View {
        View {
            lines: parse_cluster_nodes(text),
        }
    }

    #[test]
    fn parses_lines_and_finds_owners() {
        let v = view(NODES);
        assert_eq!(v.lines.len(), 4);
        assert_eq!(v.myself().map(|l| l.port), Some(7000));
        assert_eq!(
            v.owners().get(&9000).map(String::as_str),
            Some("127.0.0.1:7001")
        );
        assert_eq!(v.replicas_of("a1").len(), 1);
    }

    #[test]
    fn agreement_needs_equal_views_covered_slots_and_the_shape() {
        let other = NODES.replace("myself,master - 0 0 1", "master - 0 0 1");
        let other = other.replace(
            "b1 127.0.0.1:7001@17001 master",
            "b1 127.0.0.1:7001@17001 myself,master",
        );
        let views = vec![
            ("a".to_string(), view(NODES)),
            ("b".to_string(), view(&other)),
        ];
        let shape = Expect {
            primaries: Some(2),
            replicas_per_primary: Some(1),
            ..Expect::default()
        };
        assert_eq!(agreement(&views, &shape), Ok(()));
        let wrong = Expect {
            replicas_per_primary: Some(2),
            ..shape.clone()
        };
        assert!(agreement(&views, &wrong).is_err());
        let moved = other.replace("8192-16383", "8193-16383");
        let views2 = vec![
            ("a".to_string(), view(NODES)),
            ("b".to_string(), view(&moved)),
        ];
        assert!(agreement(&views2, &shape).unwrap_err().contains("disagree"));
        let open = NODES.replace("0-8191", "0-8191 [8191->-b1]");
        assert!(
            agreement(&[("a".into(), view(&open))], &Expect::default())
                .unwrap_err()
                .contains("open slots")
        );
    }

    #[test]
    fn a_dead_node_is_ignored_once_declared() {
        let failed = "\
a1 127.0.0.1:7000@17000 master,fail - 0 0 1 disconnected
b1 127.0.0.1:7001@17001 master - 0 0 2 connected 8192-16383
a2 127.0.0.1:7002@17002 myself,master - 0 0 3 connected 0-8191
b2 127.0.0.1:7003@17003 slave b1 0 0 2 connected
";
        let v = vec![("x".to_string(), view(failed))];
        assert!(
            agreement(&v, &Expect::default())
                .unwrap_err()
                .contains("fail")
        );
        let dead = Expect {
            dead: BTreeSet::from(["127.0.0.1:7000".to_string()]),
            primaries: Some(2),
            ..Expect::default()
        };
        assert_eq!(agreement(&v, &dead), Ok(()));
    }
}
