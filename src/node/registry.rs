//! This instance in the cluster-wide registry: every second it writes a report of
//! itself (counts, rates, its Redis subscriber connections, the topology events it
//! saw) through the broker, for `/api/instances` and the dashboard. A dead
//! instance's report expires within `--instance-ttl`.

use std::sync::{Mutex, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::Node;
use crate::metrics::TallySnapshot;
use crate::shutdown::Shutdown;

/// Heartbeat period.
const EVERY: Duration = Duration::from_secs(1);
/// Timeline events carried per report.
const EVENTS: usize = 50;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The latest report, and what the rates are computed from.
#[derive(Default)]
pub struct Registry {
    last: Mutex<Option<(Instant, TallySnapshot, Value)>>,
}

impl Registry {
    /// The last report written (this instance's own view).
    pub fn own(&self) -> Option<Value> {
        self.last
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|(_, _, v)| v.clone())
    }
}

impl Node {
    /// This instance's report now; rates against the previous one.
    fn report(&self, started_ms: u64) -> Value {
        let now = Instant::now();
        let tally = self.metrics.snapshot();
        let mut last = self.registry.last.lock().unwrap_or_else(|e| e.into_inner());
        let (rate_in, rate_out) = match last.as_ref() {
            Some((at, prev, _)) => {
                let dt = now.duration_since(*at).as_secs_f64().max(1e-3);
                (
                    (tally.messages_in - prev.messages_in) as f64 / dt,
                    (tally.messages_out - prev.messages_out) as f64 / dt,
                )
            }
            None => (0.0, 0.0),
        };
        let broker = self.broker.describe();
        let redis_nodes: serde_json::Map<String, Value> = broker["subscriber_nodes"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(addr, n)| {
                        (
                            addr.clone(),
                            json!({ "connected": n["connected"], "channels": n["subscriptions"] }),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let report = json!({
            "id": self.config.instance(),
            "version": env!("CARGO_PKG_VERSION"),
            "address": self.config.listen.to_string(),
            "broker": broker["broker"],
            "insecure": self.auth.insecure,
            "started_at_ms": started_ms,
            "reported_at_ms": now_ms(),
            "uptime_s": (now_ms().saturating_sub(started_ms)) / 1000,
            "connections": tally.connections,
            "users": self.connections.users(),
            "subscriptions": tally.subscriptions,
            "channels": tally.channels,
            "messages_in_per_sec": (rate_in * 10.0).round() / 10.0,
            "messages_out_per_sec": (rate_out * 10.0).round() / 10.0,
            "messages_in_total": tally.messages_in,
            "messages_out_total": tally.messages_out,
            "slow_consumer_disconnects": tally.slow_consumers,
            "redis_subscriber_connections": redis_nodes.len(),
            "redis_nodes": redis_nodes,
            "events": self.broker.timeline(EVENTS),
        });
        *last = Some((now, tally, report.clone()));
        report
    }

    /// Every live instance's report: from the registry on Redis, or this one alone.
    pub async fn instances(&self) -> Result<Vec<Value>, super::NodeError> {
        match self.broker.instances().await? {
            Some(reports) => {
                let mut out: Vec<Value> = reports
                    .iter()
                    .filter_map(|r| serde_json::from_str(r).ok())
                    .collect();
                out.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
                Ok(out)
            }
            None => Ok(self.registry.own().into_iter().collect()),
        }
    }
}

pub async fn heartbeat(node: Weak<Node>, mut shutdown: Shutdown) {
    let started_ms = now_ms();
    let mut tick = tokio::time::interval(EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.recv() => break,
        }
        let Some(node) = node.upgrade() else { return };
        let report = node.report(started_ms).to_string();
        if let Err(e) = node
            .broker
            .announce(node.config.instance(), &report, node.config.instance_ttl)
            .await
        {
            tracing::debug!(error = %e, "instance heartbeat failed");
        }
    }
    if let Some(node) = node.upgrade() {
        let _ = node.broker.forget_instance(node.config.instance()).await;
    }
}
