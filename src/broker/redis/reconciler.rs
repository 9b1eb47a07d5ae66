//! The one task that changes Redis subscriptions: it wakes on a kick (a subscribe,
//! a report from a subscriber connection) or a timer, refreshes the slot map when
//! asked, plans a pass ([`super::plan`]) and applies it.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::Shared;
use super::plan::{Plan, plan};
use super::state::{RedisNodeState, State};
use super::subscriber::{self, SubscriberCmd};
use crate::metrics::Metrics;

/// Topology refreshes are at least this far apart, however many hints arrive.
const MIN_REFRESH_GAP: Duration = Duration::from_millis(100);
/// Retry delay while some wanted channel cannot be placed (no owner, node down).
pub const RETRY: Duration = Duration::from_millis(250);

pub async fn run(shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.clone();
    let mut next_reconcile = Instant::now() + shared.reconcile_interval;
    let mut next_topology = Instant::now() + shared.topology_interval;
    let mut last_refresh = Instant::now() - MIN_REFRESH_GAP;
    let mut retry_at: Option<Instant> = None;
    // Refreshes fail every RETRY while Redis is away: said once, not each time.
    let mut failing = false;
    loop {
        let wake = retry_at
            .unwrap_or(next_reconcile)
            .min(next_reconcile)
            .min(next_topology);
        let mut periodic = false;
        tokio::select! {
            _ = shared.kick.notified() => {}
            _ = tokio::time::sleep_until(wake) => {
                let now = Instant::now();
                if now >= next_reconcile {
                    periodic = true;
                    next_reconcile = now + shared.reconcile_interval;
                    shared.lock().full = true;
                }
                if now >= next_topology || retry_at.is_some_and(|r| now >= r) {
                    next_topology = now + shared.topology_interval;
                    shared.refresh.store(true, Ordering::Relaxed);
                }
                retry_at = None;
            }
            _ = shutdown.recv() => break,
        }
        if shared.refresh.load(Ordering::Relaxed) {
            let since = last_refresh.elapsed();
            if since < MIN_REFRESH_GAP {
                tokio::time::sleep(MIN_REFRESH_GAP - since).await;
            }
            last_refresh = Instant::now();
            shared.refresh.store(false, Ordering::Relaxed);
            let refreshed = shared.refresh_topology().await;
            match &refreshed {
                Ok(_) if failing => tracing::info!("Redis reachable again"),
                Err(e) if !failing => {
                    tracing::warn!(error = %e, "topology refresh failed; retrying every {RETRY:?}")
                }
                Err(e) => tracing::debug!(error = %e, "topology refresh failed"),
                Ok(_) => {}
            }
            failing = refreshed.is_err();
            match refreshed {
                Ok(true) => shared.lock().full = true,
                Ok(false) => {}
                Err(_) => retry_at = Some(Instant::now() + RETRY),
            }
        }
        if pass(&shared, periodic) {
            let soon = Instant::now() + RETRY;
            retry_at = Some(retry_at.map_or(soon, |r| r.min(soon)));
        }
    }
    // Dropping the command senders ends the subscriber connections.
    shared.lock().nodes.clear();
}

/// One reconciliation pass. Returns true when a retry is due.
fn pass(shared: &Arc<Shared>, periodic: bool) -> bool {
    let Some(map) = shared.map() else {
        return true;
    };
    let mut st = shared.lock();
    let plan = plan(&st, &map, shared.policy, periodic);
    let retry = plan.retry;
    apply(shared, &mut st, plan, periodic);
    for (addr, n) in &st.nodes {
        Metrics::redis_node_subscriptions(addr, n.actual.len());
    }
    retry
}

/// Carries a plan out: opens connections, sends the batches (marking what is in
/// flight), wakes whoever waits for a channel already live, closes unused nodes.
fn apply(shared: &Arc<Shared>, st: &mut State, plan: Plan, periodic: bool) {
    st.full = false;
    st.dirty = plan.unowned.into_iter().collect();
    for addr in plan.connect {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(subscriber::run(shared.clone(), addr.clone(), rx));
        st.nodes.insert(addr, RedisNodeState::new(tx));
    }
    for ch in &plan.ready {
        st.wake(ch);
    }
    let mut resubscribed = 0u64;
    for batch in plan.subscribe {
        let Some(node) = st.nodes.get_mut(&batch.node) else {
            continue;
        };
        for ch in &batch.channels {
            node.pending_sub.insert(ch.clone());
            if st.lost.remove(ch) {
                resubscribed += 1;
                st.regained.insert(ch.clone());
            }
        }
        let _ = node.tx.send(SubscriberCmd::Subscribe(batch.channels));
    }
    for batch in plan.unsubscribe {
        let Some(node) = st.nodes.get_mut(&batch.node) else {
            continue;
        };
        node.pending_unsub.extend(batch.channels.iter().cloned());
        let _ = node.tx.send(SubscriberCmd::Unsubscribe(batch.channels));
    }
    for addr in plan.close {
        st.nodes.remove(&addr);
    }
    shared.metrics.redis_resubscribes.increment(resubscribed);
    if periodic && plan.drift > 0 {
        tracing::warn!(changes = plan.drift, "reconciliation repaired drift");
        shared.metrics.redis_drift_repaired.increment(plan.drift);
    }
}
