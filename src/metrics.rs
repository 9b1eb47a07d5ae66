//! Prometheus metrics through the `metrics` facade.
//!
//! The recorder is process-global (the facade's design), so handles are resolved
//! once into [`Metrics`] and the hot path only bumps atomics. Several servers in one
//! process (as in tests) share the figures.

use std::sync::OnceLock;

use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::codes::ErrorCode;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the Prometheus recorder once per process and returns its handle.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder was installed first (an embedding
            // application); then our figures go to theirs and /metrics shows ours empty.
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics may be empty");
            }
            handle
        })
        .clone()
}

/// Handles to every metric shardcast records.
#[derive(Clone)]
pub struct Metrics {
    pub connections: Gauge,
    pub connections_total: Counter,
    pub subscriptions: Gauge,
    pub channels: Gauge,
    pub messages_in: Counter,
    pub messages_out: Counter,
    pub bytes_out: Counter,
    pub slow_consumer_disconnects: Counter,
    pub keepalive_timeouts: Counter,
    pub undeliverable: Counter,
    errors: [Counter; ErrorCode::ALL.len()],
    pub broker_publish_errors: Counter,
    pub redis_resubscribes: Counter,
    pub redis_topology_refreshes: Counter,
    pub redis_drift_repaired: Counter,
    pub redis_dropped: Counter,
    pub redis_latency: Histogram,
    pub history_gap_fills: Counter,
    pub history_lost: Counter,
    pub history_duplicates_dropped: Counter,
    pub history_unreplicated: Counter,
    pub duplicates_dropped: Counter,
    /// 1 when the instance runs with `--insecure`.
    pub insecure: Gauge,
    /// Duration of one presence refresh of every local member.
    pub presence_refresh: Histogram,
}

impl Metrics {
    pub fn new() -> Metrics {
        install();
        let errors =
            ErrorCode::ALL.map(|c| counter!("shardcast_errors_total", "code" => c.as_str()));
        Metrics {
            connections: gauge!("shardcast_connections"),
            connections_total: counter!("shardcast_connections_total"),
            subscriptions: gauge!("shardcast_subscriptions"),
            channels: gauge!("shardcast_channels"),
            messages_in: counter!("shardcast_messages_in_total"),
            messages_out: counter!("shardcast_messages_out_total"),
            bytes_out: counter!("shardcast_bytes_out_total"),
            slow_consumer_disconnects: counter!("shardcast_slow_consumer_disconnects_total"),
            keepalive_timeouts: counter!("shardcast_keepalive_timeouts_total"),
            undeliverable: counter!("shardcast_undeliverable_total"),
            errors,
            broker_publish_errors: counter!("shardcast_broker_publish_errors_total"),
            redis_resubscribes: counter!("shardcast_redis_resubscribes_total"),
            redis_topology_refreshes: counter!("shardcast_redis_topology_refreshes_total"),
            redis_drift_repaired: counter!("shardcast_redis_drift_repaired_total"),
            redis_dropped: counter!("shardcast_redis_dropped_total"),
            redis_latency: histogram!("shardcast_redis_roundtrip_seconds"),
            history_gap_fills: counter!("shardcast_history_gap_fills_total"),
            history_lost: counter!("shardcast_history_lost_total"),
            history_duplicates_dropped: counter!("shardcast_history_duplicates_dropped_total"),
            history_unreplicated: counter!("shardcast_history_unreplicated_total"),
            duplicates_dropped: counter!("shardcast_duplicates_dropped_total"),
            insecure: gauge!("shardcast_insecure_mode"),
            presence_refresh: histogram!("shardcast_presence_refresh_seconds"),
        }
    }

    pub fn error(&self, code: ErrorCode) {
        self.errors[code.index()].increment(1);
    }

    /// A token, API key or identity refused, by reason.
    pub fn auth_failure(&self, reason: &'static str) {
        counter!("shardcast_auth_failures_total", "reason" => reason).increment(1);
    }

    /// A request refused by a rate limit, by kind (`publish`, `subscribe`).
    pub fn rate_limited(&self, kind: &'static str) {
        counter!("shardcast_rate_limited_total", "kind" => kind).increment(1);
    }

    /// A connection refused or closed by a limit, by reason (`max_connections`,
    /// `connect_rate`, `per_user`, `origin`, `abuse`).
    pub fn connection_refused(&self, reason: &'static str) {
        counter!("shardcast_connections_refused_total", "reason" => reason).increment(1);
    }

    /// Subscriptions per Redis node, labelled by node address.
    pub fn redis_node_subscriptions(node: &str, n: usize) {
        gauge!("shardcast_redis_node_subscriptions", "node" => node.to_string()).set(n as f64);
    }

    /// Prometheus text exposition of everything recorded in this process.
    pub fn render() -> String {
        install().render()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
