//! Configuration: every flag has a `SHARDCAST_*` environment equivalent.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::history::Retention;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BrokerKind {
    /// In-process broker: one node, no Redis.
    Memory,
    /// Redis Cluster sharded pub/sub (SSUBSCRIBE/SPUBLISH), for many instances.
    RedisCluster,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SubscribeFrom {
    /// Subscribe on the primary that owns the slot.
    Primary,
    /// Subscribe on a replica of the owning shard (falls back to the primary).
    Replica,
    /// Spread subscriptions over the primary and replicas of the owning shard.
    Any,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 25s, 500ms, 2m)"))
}

/// shardcast: WebSocket fan-out over Redis Cluster sharded pub/sub.
#[derive(Debug, Clone, Parser)]
#[command(name = "shardcast", version, about, long_about = None)]
pub struct Config {
    /// Address to listen on for WebSocket and HTTP.
    #[arg(long, env = "SHARDCAST_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    /// Which broker connects this instance to the others.
    #[arg(long, env = "SHARDCAST_BROKER", value_enum, default_value = "memory")]
    pub broker: BrokerKind,

    /// Redis Cluster seed nodes, comma separated (redis://host:port,...); required
    /// with --broker redis-cluster.
    #[arg(long, env = "SHARDCAST_REDIS_NODES", value_delimiter = ',')]
    pub redis_nodes: Vec<String>,

    /// Which node of a shard carries this instance's SSUBSCRIBEs.
    #[arg(
        long,
        env = "SHARDCAST_SUBSCRIBE_FROM",
        value_enum,
        default_value = "primary"
    )]
    pub subscribe_from: SubscribeFrom,

    /// How often desired and actual Redis subscriptions are compared and repaired.
    #[arg(long, env = "SHARDCAST_RECONCILE_INTERVAL", value_parser = duration, default_value = "30s")]
    pub reconcile_interval: Duration,

    /// How often the cluster slot map is refreshed even without a hint of change.
    #[arg(long, env = "SHARDCAST_TOPOLOGY_INTERVAL", value_parser = duration, default_value = "10s")]
    pub topology_interval: Duration,

    /// Interval between WebSocket pings sent to each client.
    #[arg(long, env = "SHARDCAST_PING_INTERVAL", value_parser = duration, default_value = "25s")]
    pub ping_interval: Duration,

    /// Time a client has to answer a ping (any frame counts) before it is closed with 4009.
    #[arg(long, env = "SHARDCAST_PONG_TIMEOUT", value_parser = duration, default_value = "10s")]
    pub pong_timeout: Duration,

    /// Largest client frame (and HTTP publish body) in bytes. Larger frames get a
    /// `too_large` error; frames over 4x this close the connection with 1009.
    #[arg(long, env = "SHARDCAST_MAX_FRAME_BYTES", default_value_t = 65536)]
    pub max_frame_bytes: usize,

    /// Most channels one connection may subscribe to (its personal channel not counted).
    #[arg(
        long,
        env = "SHARDCAST_MAX_CHANNELS_PER_CONNECTION",
        default_value_t = 128
    )]
    pub max_channels_per_connection: usize,

    /// Bytes that may wait in one connection's outbound queue before it is closed as a
    /// slow consumer (4008).
    #[arg(long, env = "SHARDCAST_OUTBOUND_QUEUE_BYTES", default_value_t = 1 << 20)]
    pub outbound_queue_bytes: usize,

    /// Longest wait for connections to close on shutdown.
    #[arg(long, env = "SHARDCAST_DRAIN_TIMEOUT", value_parser = duration, default_value = "5s")]
    pub drain_timeout: Duration,

    /// History per channel namespace, NAMESPACE:MAX_LEN:TTL (repeatable or comma
    /// separated), e.g. `chat:1000:300s`: channels `chat:*` keep their last 1000
    /// publications for up to 300 s, with offsets and resume. Off elsewhere.
    #[arg(long, env = "SHARDCAST_HISTORY", value_delimiter = ',')]
    pub history: Vec<Retention>,

    /// Adaptive write coalescing: a connection that wrote less than this long ago
    /// gathers frames until this much time has passed since that write, so under
    /// load it writes at most once per window (fewer syscalls and wakeups on both
    /// ends); a connection that was quiet writes at once. 0 writes every batch at once.
    #[arg(long, env = "SHARDCAST_WRITE_COALESCE", value_parser = duration, default_value = "2ms")]
    pub write_coalesce: Duration,

    /// Runtime worker threads (default: one per core). Fewer can help when several
    /// instances share a small machine.
    #[arg(long, env = "SHARDCAST_WORKER_THREADS")]
    pub worker_threads: Option<usize>,

    /// Log format; the filter comes from RUST_LOG (default: info).
    #[arg(long, env = "SHARDCAST_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

impl Config {
    /// The defaults, as if started with no flags and no environment (for tests and embedding).
    pub fn defaults() -> Config {
        Config {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            broker: BrokerKind::Memory,
            redis_nodes: Vec::new(),
            subscribe_from: SubscribeFrom::Primary,
            reconcile_interval: Duration::from_secs(30),
            topology_interval: Duration::from_secs(10),
            ping_interval: Duration::from_secs(25),
            pong_timeout: Duration::from_secs(10),
            max_frame_bytes: 65536,
            max_channels_per_connection: 128,
            outbound_queue_bytes: 1 << 20,
            drain_timeout: Duration::from_secs(5),
            history: Vec::new(),
            worker_threads: None,
            write_coalesce: Duration::from_millis(2),
            log_format: LogFormat::Text,
        }
    }

    /// Frames above this close the connection (1009) instead of getting an error frame.
    pub fn hard_frame_limit(&self) -> usize {
        self.max_frame_bytes.saturating_mul(4)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_flag_defaults() {
        let parsed = Config::try_parse_from(["shardcast"]).unwrap();
        let d = Config::defaults();
        assert_eq!(format!("{parsed:?}"), format!("{d:?}"));
    }

    #[test]
    fn parses_durations_and_lists() {
        let c = Config::try_parse_from([
            "shardcast",
            "--ping-interval",
            "500ms",
            "--broker",
            "redis-cluster",
            "--redis-nodes",
            "redis://a:1,redis://b:2",
        ])
        .unwrap();
        assert_eq!(c.ping_interval, Duration::from_millis(500));
        assert_eq!(c.redis_nodes.len(), 2);
        assert!(Config::try_parse_from(["shardcast", "--pong-timeout", "soon"]).is_err());
    }
}
