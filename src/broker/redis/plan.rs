//! Reconciliation planning: what to send to which Redis node so that every wanted
//! channel is subscribed exactly once, on the node the slot map chooses, and nothing
//! else is. A pure function of the subscription [`State`] and the [`SlotMap`]; the
//! reconciler applies the [`Plan`]. This is the correctness core of the Redis
//! broker, unit-tested below for each topology event.

use std::collections::{BTreeMap, HashSet};

use super::state::State;
use super::topology::{RedisAddr, SlotMap};
use crate::channel::Channel;
use crate::config::SubscribeFrom;
use crate::slot::key_slot;

/// Most channels in one SSUBSCRIBE/SUNSUBSCRIBE.
pub const BATCH: usize = 256;

/// One command for one Redis node: channels of a single slot (never CROSSSLOT),
/// at most [`BATCH`] of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub node: RedisAddr,
    pub slot: u16,
    pub channels: Vec<Channel>,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub subscribe: Vec<Batch>,
    pub unsubscribe: Vec<Batch>,
    /// Nodes a wanted channel maps to that have no connection yet: open one.
    pub connect: Vec<RedisAddr>,
    /// Wanted channels already live on their node (re-wanted before their
    /// SUNSUBSCRIBE went out): whoever waits for them may go ahead.
    pub ready: Vec<Channel>,
    /// Wanted channels whose slot has no owner in the map: looked at again later.
    pub unowned: Vec<Channel>,
    /// Some wanted channel could not be placed now (no owner, node not connected).
    pub retry: bool,
    /// Periodic pass only: changes to channels nobody had marked dirty, i.e. Redis
    /// and our table disagreed without us being told.
    pub drift: u64,
    /// Connected-or-not nodes that hold nothing and that no wanted channel maps to.
    pub close: Vec<RedisAddr>,
}

/// Plans one pass. A full pass (`state.full`) looks at every channel wanted or held;
/// otherwise only at the dirty ones. `periodic`: the reconcile timer asked for it,
/// so changes to channels nobody marked dirty count as drift.
pub fn plan(state: &State, map: &SlotMap, policy: SubscribeFrom, periodic: bool) -> Plan {
    let mut plan = Plan::default();
    let candidates: Vec<&Channel> = if state.full {
        let mut all: HashSet<&Channel> = state.desired.iter().collect();
        for n in state.nodes.values() {
            all.extend(n.actual.iter());
            all.extend(n.pending_sub.iter());
        }
        all.into_iter().collect()
    } else {
        state.dirty.iter().collect()
    };
    // Channels with a known reason to change. A periodic full pass also does their
    // work; only changes to the others are drift.
    let expected = |ch: &Channel| !periodic || !state.full || state.dirty.contains(ch);

    // node -> slot -> channels, in a stable order
    let mut subs: BTreeMap<&RedisAddr, BTreeMap<u16, Vec<Channel>>> = BTreeMap::new();
    let mut unsubs: BTreeMap<&RedisAddr, BTreeMap<u16, Vec<Channel>>> = BTreeMap::new();
    let mut connect: HashSet<&RedisAddr> = HashSet::new();
    for ch in candidates {
        let slot = key_slot(ch.as_str().as_bytes());
        let target = if state.desired.contains(ch) {
            match map.subscriber_node(slot, policy) {
                Some(t) => Some(t),
                None => {
                    plan.retry = true;
                    plan.unowned.push(ch.clone());
                    None
                }
            }
        } else {
            None
        };
        for (addr, n) in &state.nodes {
            if Some(addr) != target && n.connected && n.holds(ch) && !n.pending_unsub.contains(ch) {
                plan.drift += u64::from(!expected(ch));
                unsubs
                    .entry(addr)
                    .or_default()
                    .entry(slot)
                    .or_default()
                    .push(ch.clone());
            }
        }
        let Some(t) = target else { continue };
        let Some(node) = state.nodes.get(t) else {
            // Sent once the connection is up (connecting triggers a full pass).
            connect.insert(t);
            plan.retry = true;
            continue;
        };
        if node.pending_unsub.contains(ch) || node.pending_sub.contains(ch) {
            // In flight either way; a re-wanted channel is resubscribed once Redis
            // confirms the unsubscribe (that marks it dirty).
            continue;
        }
        if node.actual.contains(ch) {
            if state.waiters.contains_key(ch) {
                plan.ready.push(ch.clone());
            }
            continue;
        }
        if !node.connected {
            plan.retry = true;
            continue;
        }
        plan.drift += u64::from(!expected(ch));
        subs.entry(t)
            .or_default()
            .entry(slot)
            .or_default()
            .push(ch.clone());
    }

    for (to, list) in [(&mut plan.subscribe, subs), (&mut plan.unsubscribe, unsubs)] {
        for (node, slots) in list {
            for (slot, mut chs) in slots {
                chs.sort_unstable();
                for chunk in chs.chunks(BATCH) {
                    to.push(Batch {
                        node: node.clone(),
                        slot,
                        channels: chunk.to_vec(),
                    });
                }
            }
        }
    }
    plan.connect = connect.into_iter().cloned().collect();
    plan.connect.sort_unstable();

    // A node can go only when it holds nothing, has nothing in flight and gets
    // nothing now; finding out whether a wanted channel still maps to it walks
    // every wanted channel, so that walk runs only when such a node exists (during
    // a connection storm a pass runs every few subscribes).
    let idle: Vec<&RedisAddr> = state
        .nodes
        .iter()
        .filter(|(addr, n)| n.is_idle() && !plan.subscribe.iter().any(|b| &b.node == *addr))
        .map(|(addr, _)| addr)
        .collect();
    if !idle.is_empty() {
        let needed: HashSet<&RedisAddr> = state
            .desired
            .iter()
            .filter_map(|c| map.subscriber_node(key_slot(c.as_str().as_bytes()), policy))
            .collect();
        plan.close = idle
            .into_iter()
            .filter(|a| !needed.contains(a))
            .cloned()
            .collect();
        plan.close.sort_unstable();
    }
    plan
}

#[cfg(test)]
mod tests {
    use tokio::sync::{mpsc, oneshot};

    use std::collections::HashMap;

    use super::super::state::RedisNodeState;
    use super::super::topology::Shard;
    use super::*;

    fn ch(s: &str) -> Channel {
        Channel::parse(s).unwrap()
    }

    impl Plan {
        fn is_empty(&self) -> bool {
            *self == Plan::default()
        }
    }

    /// Per node, the number of channels a list of batches carries.
    fn count_by_node(batches: &[Batch]) -> HashMap<&RedisAddr, usize> {
        let mut out = HashMap::new();
        for b in batches {
            *out.entry(&b.node).or_default() += b.channels.len();
        }
        out
    }

    /// Shards by primary address, each owning a slot range, with replicas.
    fn map(shards: &[(&str, (u16, u16), &[&str])]) -> SlotMap {
        SlotMap::new(
            shards
                .iter()
                .map(|(p, range, replicas)| Shard {
                    slots: vec![*range],
                    primary: p.to_string(),
                    replicas: replicas.iter().map(|r| r.to_string()).collect(),
                })
                .collect(),
        )
    }

    fn three() -> SlotMap {
        map(&[
            ("a:1", (0, 5460), &["a:2"]),
            ("b:1", (5461, 10922), &["b:2"]),
            ("c:1", (10923, 16383), &["c:2"]),
        ])
    }

    fn node<'a>(st: &'a mut State, addr: &str, connected: bool) -> &'a mut RedisNodeState {
        let (tx, _rx) = mpsc::unbounded_channel();
        let n = st
            .nodes
            .entry(addr.to_string())
            .or_insert_with(|| RedisNodeState::new(tx));
        n.connected = connected;
        n
    }

    fn want(st: &mut State, name: &str) {
        let (tx, _rx) = oneshot::channel();
        st.want(&ch(name), tx);
    }

    /// A channel name whose slot falls in `lo..=hi`.
    fn channel_in(lo: u16, hi: u16, prefix: &str, skip: usize) -> String {
        (0..)
            .map(|i| format!("{prefix}{i}"))
            .filter(|c| (lo..=hi).contains(&key_slot(c.as_bytes())))
            .nth(skip)
            .unwrap()
    }

    #[test]
    fn a_wanted_channel_is_subscribed_on_its_primary() {
        let mut st = State::default();
        for a in ["a:1", "b:1", "c:1"] {
            node(&mut st, a, true);
        }
        let x = channel_in(0, 5460, "x", 0);
        want(&mut st, &x);
        let p = plan(&st, &three(), SubscribeFrom::Primary, false);
        assert_eq!(
            p.subscribe,
            vec![Batch {
                node: "a:1".into(),
                slot: key_slot(x.as_bytes()),
                channels: vec![ch(&x)]
            }]
        );
        assert!(p.unsubscribe.is_empty() && p.connect.is_empty() && !p.retry);
    }

    #[test]
    fn nothing_to_do_when_in_sync() {
        let mut st = State::default();
        let x = channel_in(0, 5460, "x", 0);
        want(&mut st, &x);
        st.waiters.clear();
        node(&mut st, "a:1", true).actual.insert(ch(&x));
        st.dirty.clear();
        let p = plan(&st, &three(), SubscribeFrom::Primary, false);
        assert!(p.is_empty(), "{p:?}");
        // A periodic full pass over the same state finds no drift either.
        st.full = true;
        let p = plan(&st, &three(), SubscribeFrom::Primary, true);
        assert!(p.is_empty(), "{p:?}");
    }

    #[test]
    fn migration_moves_the_channel_to_the_new_owner() {
        let mut st = State::default();
        let x = channel_in(0, 5460, "m", 0);
        want(&mut st, &x);
        node(&mut st, "a:1", true).actual.insert(ch(&x));
        node(&mut st, "b:1", true);
        // The slot of x moved from a:1 to b:1.
        let slot = key_slot(x.as_bytes());
        let moved = map(&[
            ("a:1", (0, slot - 1), &[]),
            ("b:1", (slot, slot), &[]),
            ("a:1", (slot + 1, 16383), &[]),
        ]);
        st.full = true;
        let p = plan(&st, &moved, SubscribeFrom::Primary, false);
        assert_eq!(
            count_by_node(&p.subscribe).get(&"b:1".to_string()),
            Some(&1)
        );
        assert_eq!(
            count_by_node(&p.unsubscribe).get(&"a:1".to_string()),
            Some(&1)
        );
        assert!(
            p.close.is_empty(),
            "a:1 still holds x until the unsubscribe"
        );
    }

    #[test]
    fn failover_resubscribes_on_the_promoted_replica() {
        let mut st = State::default();
        let x = channel_in(0, 5460, "f", 0);
        want(&mut st, &x);
        node(&mut st, "a:1", true).actual.insert(ch(&x));
        st.lost_connection(&"a:1".to_string());
        // a:2 was promoted; a:1 failed and is out of the map.
        let promoted = map(&[
            ("a:2", (0, 5460), &[]),
            ("b:1", (5461, 10922), &["b:2"]),
            ("c:1", (10923, 16383), &["c:2"]),
        ]);
        let p = plan(&st, &promoted, SubscribeFrom::Primary, false);
        assert_eq!(p.connect, vec!["a:2".to_string()], "{p:?}");
        assert!(p.retry, "sent once the connection is up");
        assert!(p.unsubscribe.is_empty(), "nothing is left on the dead node");
        assert_eq!(p.close, vec!["a:1".to_string()]);
        // Once connected, the channel goes to the new primary.
        node(&mut st, "a:2", true);
        st.nodes.remove("a:1");
        let p = plan(&st, &promoted, SubscribeFrom::Primary, false);
        assert_eq!(
            count_by_node(&p.subscribe).get(&"a:2".to_string()),
            Some(&1)
        );
    }

    #[test]
    fn a_removed_node_is_emptied_and_closed() {
        let mut st = State::default();
        let x = channel_in(0, 5460, "r", 0);
        want(&mut st, &x);
        // d:1 held x; its shard was removed and slot 0-5460 belongs to a:1 now.
        node(&mut st, "d:1", true).actual.insert(ch(&x));
        node(&mut st, "a:1", true);
        st.full = true;
        let p = plan(&st, &three(), SubscribeFrom::Primary, false);
        assert_eq!(
            count_by_node(&p.subscribe),
            HashMap::from([(&"a:1".to_string(), 1)])
        );
        assert_eq!(
            count_by_node(&p.unsubscribe),
            HashMap::from([(&"d:1".to_string(), 1)])
        );
        // After the unsubscribe is confirmed, d:1 holds nothing and is closed.
        let d = st.nodes.get_mut("d:1").unwrap();
        d.actual.clear();
        st.nodes.get_mut("a:1").unwrap().actual.insert(ch(&x));
        let p = plan(&st, &three(), SubscribeFrom::Primary, false);
        assert_eq!(p.close, vec!["d:1".to_string()]);
        assert!(p.subscribe.is_empty() && p.unsubscribe.is_empty());
    }

    #[test]
    fn an_added_node_gets_a_connection_and_its_slots_channels() {
        let mut st = State::default();
        for a in ["a:1", "b:1", "c:1"] {
            node(&mut st, a, true);
        }
        let x = channel_in(0, 100, "n", 0);
        want(&mut st, &x);
        st.waiters.clear();
        st.nodes.get_mut("a:1").unwrap().actual.insert(ch(&x));
        st.dirty.clear();
        // A fourth shard e:1 took slots 0-100.
        let grown = map(&[
            ("e:1", (0, 100), &[]),
            ("a:1", (101, 5460), &["a:2"]),
            ("b:1", (5461, 10922), &["b:2"]),
            ("c:1", (10923, 16383), &["c:2"]),
        ]);
        st.full = true;
        let p = plan(&st, &grown, SubscribeFrom::Primary, false);
        assert_eq!(p.connect, vec!["e:1".to_string()]);
        assert_eq!(
            count_by_node(&p.unsubscribe),
            HashMap::from([(&"a:1".to_string(), 1)])
        );
        assert!(p.subscribe.is_empty(), "not before e:1 is connected");
    }

    #[test]
    fn the_policy_chooses_a_replica_or_the_primary() {
        let mut st = State::default();
        for a in ["a:1", "a:2"] {
            node(&mut st, a, true);
        }
        let x = channel_in(0, 5460, "p", 0);
        want(&mut st, &x);
        let one = map(&[("a:1", (0, 16383), &["a:2"])]);
        let by = |policy| {
            let p = plan(&st, &one, policy, false);
            p.subscribe
                .iter()
                .map(|b| b.node.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(by(SubscribeFrom::Primary), vec!["a:1".to_string()]);
        assert_eq!(by(SubscribeFrom::Replica), vec!["a:2".to_string()]);
        let slot = key_slot(x.as_bytes()) as usize;
        let any = if slot % 2 == 0 { "a:1" } else { "a:2" };
        assert_eq!(by(SubscribeFrom::Any), vec![any.to_string()]);
        // No replica: `replica` falls back to the primary.
        let lone = map(&[("a:1", (0, 16383), &[])]);
        let p = plan(&st, &lone, SubscribeFrom::Replica, false);
        assert_eq!(p.subscribe[0].node, "a:1");
    }

    #[test]
    fn batches_hold_one_slot_and_at_most_256_channels() {
        let mut st = State::default();
        node(&mut st, "a:1", true);
        // 600 channels in one slot (one hash tag) and 3 in other slots.
        for i in 0..600 {
            want(&mut st, &format!("room:{{t}}:{i}"));
        }
        for i in 0..3 {
            want(&mut st, &format!("solo:{i}"));
        }
        let one = map(&[("a:1", (0, 16383), &[])]);
        let p = plan(&st, &one, SubscribeFrom::Primary, false);
        let tagged = key_slot(b"t");
        let sizes: Vec<usize> = p
            .subscribe
            .iter()
            .filter(|b| b.slot == tagged)
            .map(|b| b.channels.len())
            .collect();
        assert_eq!(sizes, vec![256, 256, 88]);
        for b in &p.subscribe {
            assert!(b.channels.len() <= BATCH);
            assert!(
                b.channels
                    .iter()
                    .all(|c| key_slot(c.as_str().as_bytes()) == b.slot),
                "never CROSSSLOT"
            );
        }
        assert_eq!(
            p.subscribe.iter().map(|b| b.channels.len()).sum::<usize>(),
            603
        );
    }

    #[test]
    fn an_unowned_slot_is_retried_and_kept_dirty() {
        let mut st = State::default();
        node(&mut st, "a:1", true);
        let x = channel_in(6000, 7000, "u", 0);
        want(&mut st, &x);
        let partial = map(&[("a:1", (0, 5460), &[])]);
        let p = plan(&st, &partial, SubscribeFrom::Primary, false);
        assert!(p.retry);
        assert_eq!(p.unowned, vec![ch(&x)]);
        assert!(p.subscribe.is_empty());
    }

    #[test]
    fn a_periodic_pass_counts_unexplained_changes_as_drift() {
        let mut st = State::default();
        let x = channel_in(0, 5460, "d", 0);
        let y = channel_in(0, 5460, "d", 1);
        want(&mut st, &x);
        want(&mut st, &y);
        st.waiters.clear();
        // x is marked dirty (a client came); y silently went missing in Redis.
        node(&mut st, "a:1", true);
        st.dirty.remove(&ch(&y));
        st.full = true;
        let p = plan(&st, &three(), SubscribeFrom::Primary, true);
        assert_eq!(p.drift, 1, "{p:?}");
        assert_eq!(
            count_by_node(&p.subscribe).get(&"a:1".to_string()),
            Some(&2)
        );
    }

    #[test]
    fn a_rewanted_live_channel_releases_its_waiters_without_a_command() {
        let mut st = State::default();
        let x = channel_in(0, 5460, "w", 0);
        node(&mut st, "a:1", true).actual.insert(ch(&x));
        want(&mut st, &x);
        let p = plan(&st, &three(), SubscribeFrom::Primary, false);
        assert_eq!(p.ready, vec![ch(&x)]);
        assert!(p.subscribe.is_empty());
    }
}
