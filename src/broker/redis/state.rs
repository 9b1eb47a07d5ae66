//! The Redis subscription state this instance owns, and how each report from a
//! subscriber connection changes it.
//!
//! `desired` is the set of channels local clients want; each Redis node's `actual`
//! set is what Redis confirmed on this instance's one subscriber connection to that
//! node. Every transition here only marks state (dirty channels, a full pass); the
//! reconciler ([`super::reconciler`]) is the only code that issues commands. The
//! methods are plain mutations so that they can be tested without Redis.

use std::collections::{HashMap, HashSet};

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::subscriber::SubscriberCmd;
use super::topology::RedisAddr;
use crate::channel::Channel;

/// This instance's view of one Redis node it subscribes on.
pub struct RedisNodeState {
    /// Commands for the node's subscriber connection.
    pub tx: mpsc::UnboundedSender<SubscriberCmd>,
    pub connected: bool,
    /// Confirmed by Redis.
    pub actual: HashSet<Channel>,
    pub pending_sub: HashSet<Channel>,
    pub pending_unsub: HashSet<Channel>,
}

impl RedisNodeState {
    pub fn new(tx: mpsc::UnboundedSender<SubscriberCmd>) -> RedisNodeState {
        RedisNodeState {
            tx,
            connected: false,
            actual: HashSet::new(),
            pending_sub: HashSet::new(),
            pending_unsub: HashSet::new(),
        }
    }

    /// Subscribed, or a subscribe is in flight.
    pub fn holds(&self, ch: &Channel) -> bool {
        self.actual.contains(ch) || self.pending_sub.contains(ch)
    }

    /// Nothing subscribed and nothing in flight: the connection may be closed.
    pub fn is_idle(&self) -> bool {
        self.actual.is_empty() && self.pending_sub.is_empty() && self.pending_unsub.is_empty()
    }
}

#[derive(Default)]
pub struct State {
    pub desired: HashSet<Channel>,
    /// Channels to look at in the next pass.
    pub dirty: HashSet<Channel>,
    /// The next pass must look at every channel (topology changed, connection lost, timer).
    pub full: bool,
    /// Channels that were live and got lost; their next SSUBSCRIBE counts as a resubscribe.
    pub lost: HashSet<Channel>,
    /// Resubscribed after a loss: once confirmed, the node is told (publications may
    /// have been missed).
    pub regained: HashSet<Channel>,
    pub nodes: HashMap<RedisAddr, RedisNodeState>,
    /// Callers of `subscribe` waiting for Redis to confirm.
    pub waiters: HashMap<Channel, Vec<oneshot::Sender<()>>>,
    /// Since when some channel is lost, and how many were regained since: the
    /// timeline reports "resubscribed N channels in T ms".
    pub loss_started: Option<Instant>,
    pub regained_since_loss: usize,
}

/// What a confirmation asks of the caller beyond the state change.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Confirmed {
    /// The channel had been lost and is live again.
    pub regained: bool,
    /// The reconciler must look at the channel again (it is no longer wanted).
    pub kick: bool,
    /// The last lost channel is back: how many came back, and how long it took.
    pub recovered: Option<(usize, std::time::Duration)>,
}

impl State {
    /// A caller wants `channel` and waits on `waiter` for its confirmation.
    pub fn want(&mut self, channel: &Channel, waiter: oneshot::Sender<()>) {
        self.desired.insert(channel.clone());
        self.waiters
            .entry(channel.clone())
            .or_default()
            .push(waiter);
        self.dirty.insert(channel.clone());
    }

    /// Nobody wants `channel` any more (unsubscribed, or its subscribe timed out).
    pub fn unwant(&mut self, channel: &Channel) {
        self.desired.remove(channel);
        self.waiters.remove(channel);
        self.lost.remove(channel);
        self.dirty.insert(channel.clone());
    }

    /// Wakes everyone waiting for `channel`.
    pub fn wake(&mut self, channel: &Channel) {
        for w in self.waiters.remove(channel).into_iter().flatten() {
            let _ = w.send(());
        }
    }

    /// The connection to `addr` is up; `stale` were queued for an earlier one.
    pub fn connected(&mut self, addr: &RedisAddr, stale: Vec<SubscriberCmd>) {
        if let Some(n) = self.nodes.get_mut(addr) {
            n.connected = true;
        }
        self.forget_commands(addr, stale);
        self.full = true;
    }

    /// Commands that never reached Redis: their channels are looked at again.
    pub fn forget_commands(&mut self, addr: &RedisAddr, stale: Vec<SubscriberCmd>) {
        let Some(n) = self.nodes.get_mut(addr) else {
            return;
        };
        for cmd in stale {
            for ch in cmd.into_channels() {
                n.pending_sub.remove(&ch);
                n.pending_unsub.remove(&ch);
                self.dirty.insert(ch);
            }
        }
    }

    /// The connection to `addr` is gone, and every subscription on it with it.
    /// Returns how many wanted channels were lost.
    pub fn lost_connection(&mut self, addr: &RedisAddr) -> usize {
        let before = self.lost.len();
        if let Some(n) = self.nodes.get_mut(addr) {
            n.connected = false;
            let gone: Vec<Channel> = n
                .actual
                .drain()
                .chain(n.pending_sub.drain())
                .chain(n.pending_unsub.drain())
                .collect();
            for ch in gone {
                if self.desired.contains(&ch) {
                    self.lost.insert(ch.clone());
                }
                self.dirty.insert(ch);
            }
        }
        self.full = true;
        self.note_loss(before);
        self.lost.len() - before
    }

    fn note_loss(&mut self, before: usize) {
        if before == 0 && !self.lost.is_empty() && self.loss_started.is_none() {
            self.loss_started = Some(Instant::now());
            self.regained_since_loss = 0;
        }
    }

    /// Redis confirmed `ch` on `addr`.
    pub fn confirmed(&mut self, addr: &RedisAddr, ch: &Channel) -> Confirmed {
        if let Some(n) = self.nodes.get_mut(addr) {
            n.pending_sub.remove(ch);
            n.actual.insert(ch.clone());
        }
        self.wake(ch);
        let regained = self.regained.remove(ch);
        self.regained_since_loss += usize::from(regained);
        let recovered = if regained && self.lost.is_empty() && self.regained.is_empty() {
            self.loss_started
                .take()
                .map(|t| (self.regained_since_loss, t.elapsed()))
        } else {
            None
        };
        // Unsubscribed while the SSUBSCRIBE was in flight: look again.
        let kick = !self.desired.contains(ch);
        if kick {
            self.dirty.insert(ch.clone());
        }
        Confirmed {
            regained,
            kick,
            recovered,
        }
    }

    /// Redis confirmed our SUNSUBSCRIBE of `ch` on `addr`. Returns whether the
    /// channel needs another look (it is wanted again).
    pub fn unsubscribed(&mut self, addr: &RedisAddr, ch: &Channel) -> bool {
        if let Some(n) = self.nodes.get_mut(addr) {
            n.pending_unsub.remove(ch);
            n.actual.remove(ch);
        }
        let wanted = self.desired.contains(ch);
        if wanted {
            self.dirty.insert(ch.clone());
        }
        wanted
    }

    /// Redis dropped `ch` on `addr` by itself: its slot moved (migration, failover).
    pub fn dropped_by_redis(&mut self, addr: &RedisAddr, ch: &Channel) {
        if let Some(n) = self.nodes.get_mut(addr) {
            n.actual.remove(ch);
            n.pending_sub.remove(ch);
        }
        let before = self.lost.len();
        if self.desired.contains(ch) {
            self.lost.insert(ch.clone());
        }
        self.dirty.insert(ch.clone());
        self.note_loss(before);
    }

    /// Redis refused a batch (MOVED/ASK after a topology change, or another error).
    pub fn refused(&mut self, addr: &RedisAddr, channels: Vec<Channel>) {
        if let Some(n) = self.nodes.get_mut(addr) {
            for ch in &channels {
                n.pending_sub.remove(ch);
                n.pending_unsub.remove(ch);
            }
        }
        self.dirty.extend(channels);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ch(s: &str) -> Channel {
        Channel::parse(s).unwrap()
    }

    fn with_node(addr: &str) -> State {
        let mut st = State::default();
        let (tx, _rx) = mpsc::unbounded_channel();
        st.nodes.insert(addr.to_string(), RedisNodeState::new(tx));
        st
    }

    #[test]
    fn a_lost_connection_marks_wanted_channels_lost_and_dirty() {
        let mut st = with_node("a:1");
        let (tx, _rx) = oneshot::channel();
        st.want(&ch("x"), tx);
        st.nodes.get_mut("a:1").unwrap().actual.insert(ch("x"));
        st.nodes.get_mut("a:1").unwrap().actual.insert(ch("gone"));
        st.dirty.clear();
        st.lost_connection(&"a:1".to_string());
        assert!(st.lost.contains(&ch("x")));
        assert!(
            !st.lost.contains(&ch("gone")),
            "unwanted: not a resubscribe"
        );
        assert!(st.dirty.contains(&ch("x")) && st.dirty.contains(&ch("gone")));
        assert!(st.full);
        assert!(st.nodes["a:1"].is_idle());
    }

    #[test]
    fn a_confirmation_wakes_waiters_and_reports_a_regained_channel() {
        let mut st = with_node("a:1");
        let (tx, mut rx) = oneshot::channel();
        st.want(&ch("x"), tx);
        st.regained.insert(ch("x"));
        let c = st.confirmed(&"a:1".to_string(), &ch("x"));
        assert_eq!((c.regained, c.kick), (true, false));
        assert!(rx.try_recv().is_ok());
        assert!(st.nodes["a:1"].actual.contains(&ch("x")));
        // Confirmed after it was unwanted: the reconciler must look again.
        st.unwant(&ch("x"));
        st.dirty.clear();
        assert!(st.confirmed(&"a:1".to_string(), &ch("x")).kick);
        assert!(st.dirty.contains(&ch("x")));
    }

    #[test]
    fn the_last_regained_channel_reports_how_many_came_back() {
        let mut st = with_node("a:1");
        for name in ["x", "y"] {
            let (tx, _rx) = oneshot::channel();
            st.want(&ch(name), tx);
            st.nodes.get_mut("a:1").unwrap().actual.insert(ch(name));
        }
        st.lost_connection(&"a:1".to_string());
        assert!(st.loss_started.is_some());
        for name in ["x", "y"] {
            st.lost.remove(&ch(name));
            st.regained.insert(ch(name));
        }
        assert_eq!(
            st.confirmed(&"a:1".to_string(), &ch("x")).recovered,
            None,
            "y is still out"
        );
        let (n, _) = st
            .confirmed(&"a:1".to_string(), &ch("y"))
            .recovered
            .expect("all back");
        assert_eq!(n, 2);
    }

    #[test]
    fn a_subscription_redis_dropped_is_lost_only_if_wanted() {
        let mut st = with_node("a:1");
        let (tx, _rx) = oneshot::channel();
        st.want(&ch("w"), tx);
        st.dropped_by_redis(&"a:1".to_string(), &ch("w"));
        st.dropped_by_redis(&"a:1".to_string(), &ch("u"));
        assert!(st.lost.contains(&ch("w")) && !st.lost.contains(&ch("u")));
    }
}
