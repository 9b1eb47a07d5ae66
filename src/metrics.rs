//! Prometheus metrics through the `metrics` facade.
//!
//! The recorder is process-global (the facade's design), so handles are resolved
//! once into [`Metrics`] and the hot path only bumps atomics. Several servers in one
//! process (as in tests) share the figures.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

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

/// The few figures the instance reports about itself (the registry, the
/// dashboard): readable here, unlike the facade's write-only handles.
#[derive(Default, Debug)]
pub struct Tally {
    pub connections: AtomicI64,
    pub subscriptions: AtomicI64,
    pub channels: AtomicI64,
    pub messages_in: AtomicU64,
    pub messages_out: AtomicU64,
    pub slow_consumers: AtomicU64,
}

/// A reading of [`Tally`].
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct TallySnapshot {
    pub connections: i64,
    pub subscriptions: i64,
    pub channels: i64,
    pub messages_in: u64,
    pub messages_out: u64,
    pub slow_consumers: u64,
}

/// Handles to every metric shardcast records.
#[derive(Clone)]
pub struct Metrics {
    pub tally: Arc<Tally>,
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
    /// 1 while the last topology read reached Redis, 0 while it cannot.
    pub redis_up: Gauge,
    /// Connections not (yet) WebSocket sessions.
    pub pending_connections: Gauge,
    /// `accept` failures (out of descriptors and the like).
    pub accept_errors: Counter,
    pub history_gap_fills: Counter,
    pub history_lost: Counter,
    pub history_duplicates_dropped: Counter,
    pub history_unreplicated: Counter,
    pub duplicates_dropped: Counter,
    /// Plain publishes the publishing connections could not take (refused,
    /// connection lost, no connection), retried through the data connection.
    pub redis_publish_retries: Counter,
    /// 1 when the instance runs with `--insecure`.
    pub insecure: Gauge,
    /// Duration of one presence refresh of every local member.
    pub presence_refresh: Histogram,
}

impl Metrics {
    pub fn new() -> Metrics {
        install();
        Self::register_labelled();
        let errors =
            ErrorCode::ALL.map(|c| counter!("shardcast_errors_total", "code" => c.as_str()));
        Metrics {
            tally: Arc::new(Tally::default()),
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
            redis_up: gauge!("shardcast_redis_up"),
            pending_connections: gauge!("shardcast_pending_connections"),
            accept_errors: counter!("shardcast_accept_errors_total"),
            history_gap_fills: counter!("shardcast_history_gap_fills_total"),
            history_lost: counter!("shardcast_history_lost_total"),
            history_duplicates_dropped: counter!("shardcast_history_duplicates_dropped_total"),
            history_unreplicated: counter!("shardcast_history_unreplicated_total"),
            duplicates_dropped: counter!("shardcast_duplicates_dropped_total"),
            redis_publish_retries: counter!("shardcast_redis_publish_retries_total"),
            insecure: gauge!("shardcast_insecure_mode"),
            presence_refresh: histogram!("shardcast_presence_refresh_seconds"),
        }
    }

    pub fn connection_opened(&self) {
        self.connections.increment(1.0);
        self.connections_total.increment(1);
        self.tally.connections.fetch_add(1, Ordering::Relaxed);
    }

    pub fn connection_closed(&self) {
        self.connections.decrement(1.0);
        self.tally.connections.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn subscription(&self, delta: i64) {
        self.subscriptions.increment(delta as f64);
        self.tally.subscriptions.fetch_add(delta, Ordering::Relaxed);
    }

    pub fn channel(&self, delta: i64) {
        self.channels.increment(delta as f64);
        self.tally.channels.fetch_add(delta, Ordering::Relaxed);
    }

    pub fn messages_in(&self, n: u64) {
        self.messages_in.increment(n);
        self.tally.messages_in.fetch_add(n, Ordering::Relaxed);
    }

    pub fn messages_out(&self, n: u64, bytes: u64) {
        self.messages_out.increment(n);
        self.bytes_out.increment(bytes);
        self.tally.messages_out.fetch_add(n, Ordering::Relaxed);
    }

    pub fn slow_consumer(&self) {
        self.slow_consumer_disconnects.increment(1);
        self.tally.slow_consumers.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> TallySnapshot {
        let t = &self.tally;
        TallySnapshot {
            connections: t.connections.load(Ordering::Relaxed),
            subscriptions: t.subscriptions.load(Ordering::Relaxed),
            channels: t.channels.load(Ordering::Relaxed),
            messages_in: t.messages_in.load(Ordering::Relaxed),
            messages_out: t.messages_out.load(Ordering::Relaxed),
            slow_consumers: t.slow_consumers.load(Ordering::Relaxed),
        }
    }

    pub fn error(&self, code: ErrorCode) {
        self.errors[code.index()].increment(1);
    }

    /// A token, API key or identity refused, by reason.
    pub fn auth_failure(&self, reason: AuthFailure) {
        counter!("shardcast_auth_failures_total", "reason" => reason.as_str()).increment(1);
    }

    /// A request refused by a rate limit, by kind.
    pub fn rate_limited(&self, kind: RateLimited) {
        counter!("shardcast_rate_limited_total", "kind" => kind.as_str()).increment(1);
    }

    /// A connection refused or closed by a limit, by reason.
    pub fn connection_refused(&self, reason: Refusal) {
        counter!("shardcast_connections_refused_total", "reason" => reason.as_str()).increment(1);
    }

    /// A connection closed because a stage took too long.
    pub fn timeout(&self, stage: Stage) {
        counter!("shardcast_timeouts_total", "stage" => stage.as_str()).increment(1);
    }

    /// Every labelled counter at zero, so that dashboards and alerts see each
    /// series from the start rather than after its first event.
    fn register_labelled() {
        for r in AuthFailure::ALL {
            counter!("shardcast_auth_failures_total", "reason" => r.as_str()).increment(0);
        }
        for k in RateLimited::ALL {
            counter!("shardcast_rate_limited_total", "kind" => k.as_str()).increment(0);
        }
        for s in Stage::ALL {
            counter!("shardcast_timeouts_total", "stage" => s.as_str()).increment(0);
        }
        for r in Refusal::ALL {
            counter!("shardcast_connections_refused_total", "reason" => r.as_str()).increment(0);
        }
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

/// Declares a label enum: its variants, their label values, and `ALL`.
macro_rules! labels {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $label:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name {
            $($(#[$vdoc])* $variant),+
        }

        impl $name {
            pub const ALL: &[$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $label),+
                }
            }
        }
    };
}

labels! {
    /// Why a credential was refused (`shardcast_auth_failures_total{reason}`).
    AuthFailure {
        /// `?token=` without `--token-in-query`.
        TokenInQuery => "token_in_query",
        /// A connection token that does not verify.
        ConnectToken => "connect_token",
        /// `?user=` without `--insecure`.
        SelfAsserted => "self_asserted",
        /// A wrong or missing `/api/*` key.
        ApiKey => "api_key",
        /// A wrong or missing admin key.
        AdminKey => "admin_key",
        /// No `connect` frame in time.
        ConnectTimeout => "connect_timeout",
        /// A connection token expired without a refresh.
        TokenExpired => "token_expired",
        /// A refresh token for another user.
        RefreshOtherUser => "refresh_other_user",
        /// A refresh token that does not verify.
        RefreshToken => "refresh_token",
        /// A subscription token that does not verify or does not match.
        SubscriptionToken => "subscription_token",
    }
}

labels! {
    /// What a rate limit refused (`shardcast_rate_limited_total{kind}`).
    RateLimited {
        Publish => "publish",
        Subscribe => "subscribe",
    }
}

labels! {
    /// Why a connection was refused or closed by a limit
    /// (`shardcast_connections_refused_total{reason}`).
    Refusal {
        /// `--max-connections` reached.
        MaxConnections => "max_connections",
        /// `--max-connects-per-second` reached.
        ConnectRate => "connect_rate",
        /// `--max-connections-per-user` reached.
        PerUser => "per_user",
        /// An `Origin` not allowed.
        Origin => "origin",
        /// Closed for pushing past its rate limit (4029).
        Abuse => "abuse",
        /// `--max-pending-connections` reached.
        Pending => "pending",
        /// Out of file descriptors.
        Descriptors => "descriptors",
    }
}

labels! {
    /// The stage a connection timed out in (`shardcast_timeouts_total{stage}`).
    Stage {
        /// Request headers not complete within `--header-timeout`.
        Headers => "headers",
        /// An `/api/*` body not complete within `--body-timeout`.
        Body => "body",
        /// The WebSocket not handed over within `--upgrade-timeout` of the 101.
        Upgrade => "upgrade",
        /// A keep-alive connection idle for `--idle-timeout`.
        Idle => "idle",
        /// No `connect` frame within `--connect-timeout`.
        Connect => "connect",
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
