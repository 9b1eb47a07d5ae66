//! Configuration: flags, each with a `SHARDCAST_*` environment equivalent, and an
//! optional TOML file (`--config`) for everything, namespaces included. Precedence:
//! flag, then environment, then the file, then the built-in default ([`file`]).

mod file;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

pub use file::ConfigError;

use crate::history::HistoryRule;
use crate::namespace::{Namespaces, PublishPolicy, SubscribePolicy};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BrokerKind {
    /// In-process broker: one instance, no Redis.
    Memory,
    /// Redis Cluster sharded pub/sub (SSUBSCRIBE/SPUBLISH), for many instances.
    RedisCluster,
    /// One Redis server (7+), for many instances: the same commands, one shard.
    Redis,
    /// A Redis primary found through Sentinel, followed through failovers.
    RedisSentinel,
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

/// A secret from the configuration (a token key, an API key): never printed, not
/// even by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl std::str::FromStr for Secret {
    type Err = String;

    fn from_str(s: &str) -> Result<Secret, String> {
        if s.is_empty() {
            return Err("a secret must not be empty".into());
        }
        Ok(Secret(s.to_string()))
    }
}

pub(crate) fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 25s, 500ms, 2m)"))
}

/// shardcast: WebSocket fan-out over Redis Cluster sharded pub/sub.
#[derive(Debug, Clone, Parser)]
#[command(name = "shardcast", version, about, long_about = None)]
pub struct Config {
    /// A TOML file with any of these settings (keys named like the flags, with `_`
    /// for `-`, at the top or in any table) and the namespaces
    /// (`[namespaces.<name>]`, `[default_namespace]`). Flags and environment win.
    #[arg(long, env = "SHARDCAST_CONFIG")]
    pub config: Option<PathBuf>,

    /// Address to listen on for WebSocket and HTTP.
    #[arg(long, env = "SHARDCAST_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    /// Connections the kernel queues for the listener before it accepts them (capped
    /// by net.core.somaxconn). The usual 128 overflows in a reconnect storm: the
    /// kernel drops SYNs and clients retry after 1, 3, 7 s
    #[arg(long, env = "SHARDCAST_LISTEN_BACKLOG", default_value_t = 4096)]
    pub listen_backlog: u32,

    /// Which broker connects this instance to the others.
    #[arg(long, env = "SHARDCAST_BROKER", value_enum, default_value = "memory")]
    pub broker: BrokerKind,

    /// Redis Cluster seed nodes, comma separated (redis://host:port,...); required
    /// with --broker redis-cluster.
    #[arg(long, env = "SHARDCAST_REDIS_NODES", value_delimiter = ',')]
    pub redis_nodes: Vec<String>,

    /// The Redis server, with `--broker redis`: `redis://[user:password@]host:port[/db]`
    /// (`rediss://` for TLS). With `--broker redis-sentinel`, only its credentials
    /// and database are used.
    #[arg(long, env = "SHARDCAST_REDIS_URL")]
    pub redis_url: Option<String>,

    /// Sentinels to ask for the primary, with `--broker redis-sentinel`
    /// (host:port, comma separated).
    #[arg(long, env = "SHARDCAST_SENTINELS", value_delimiter = ',')]
    pub sentinels: Vec<String>,

    /// The name of the primary the sentinels watch (`sentinel monitor <name> ...`).
    #[arg(long, env = "SHARDCAST_SENTINEL_MASTER", default_value = "mymaster")]
    pub sentinel_master: String,

    /// The ACL user for every Redis connection (URLs' own credentials win).
    #[arg(long, env = "SHARDCAST_REDIS_USERNAME")]
    pub redis_username: Option<String>,

    /// The password for every Redis connection (URLs' own credentials win).
    #[arg(long, env = "SHARDCAST_REDIS_PASSWORD", hide_env_values = true)]
    pub redis_password: Option<Secret>,

    /// A PEM file of the CAs that sign Redis's TLS certificate (`rediss://`);
    /// the system's roots when absent.
    #[arg(long, env = "SHARDCAST_REDIS_CA_CERT")]
    pub redis_ca_cert: Option<String>,

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
    /// publications for up to 300 s, with offsets and resume. Off elsewhere (or as
    /// the namespace's `history` in the configuration file says).
    #[arg(long, env = "SHARDCAST_HISTORY", value_delimiter = ',')]
    pub history: Vec<HistoryRule>,

    /// Who may publish from a client connection into channels of namespaces the
    /// configuration file does not list (`publish` of `[default_namespace]`).
    #[arg(long, env = "SHARDCAST_CLIENT_PUBLISH", value_enum)]
    pub client_publish: Option<PublishPolicy>,

    /// Who may subscribe to channels of namespaces the configuration file does not
    /// list (`subscribe` of `[default_namespace]`).
    #[arg(long, env = "SHARDCAST_CLIENT_SUBSCRIBE", value_enum)]
    pub client_subscribe: Option<SubscribePolicy>,

    /// How long a presence entry lives without a refresh (instances refresh theirs
    /// every third of this): the longest a crashed instance's clients stay listed.
    #[arg(long, env = "SHARDCAST_PRESENCE_TTL", value_parser = duration, default_value = "60s")]
    pub presence_ttl: Duration,

    /// Most members `presence` lists; a bigger channel answers `too_many_members`
    /// (ask `presence_stats` instead).
    #[arg(long, env = "SHARDCAST_PRESENCE_MAX", default_value_t = 1000)]
    pub presence_max: usize,

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

    /// This instance's name in the cluster-wide registry and the dashboard (and in
    /// its Redis client names); default: 8 random hex digits.
    #[arg(long, env = "SHARDCAST_INSTANCE_ID")]
    pub instance_id: Option<String>,

    /// How long an instance stays in the registry without a heartbeat (sent every
    /// second): a dead instance disappears from `/api/instances` within this.
    #[arg(long, env = "SHARDCAST_INSTANCE_TTL", value_parser = duration, default_value = "5s")]
    pub instance_ttl: Duration,

    /// Serve the files of this directory over HTTP (GET /<path>, `index.html` for
    /// `/`), after every other route: for a demo page on the same origin.
    #[arg(long, env = "SHARDCAST_STATIC_DIR")]
    pub static_dir: Option<PathBuf>,

    /// Log format; the filter comes from RUST_LOG (default: info).
    #[arg(long, env = "SHARDCAST_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    #[command(flatten)]
    pub auth: AuthConfig,

    #[command(flatten)]
    pub limits: Limits,

    #[command(flatten)]
    pub front: FrontDoor,

    /// The namespaces' options, from the file and the flags above (built by
    /// [`Config::from_args`]).
    #[arg(skip)]
    pub namespaces: Namespaces,
}

/// Who is who: connection tokens, API keys, origins.
#[derive(Debug, Clone, clap::Args)]
pub struct AuthConfig {
    /// Development mode: clients name themselves with `?user=<id>` (no token), and
    /// the HTTP API is open unless API keys are set. Logged as a warning at start,
    /// shown by /readyz and /metrics. Never in production.
    #[arg(long, env = "SHARDCAST_INSECURE")]
    pub insecure: bool,

    /// A secret for HS256/384/512 connection and subscription tokens (repeatable or
    /// comma separated: every listed secret is accepted, so a key can be rotated).
    #[arg(
        long,
        env = "SHARDCAST_TOKEN_HMAC_SECRET",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub token_hmac_secret: Vec<Secret>,

    /// A PEM file with a public key (RSA for RS256/384/512, EC P-256 for ES256,
    /// Ed25519 for EdDSA) that verifies tokens; repeatable.
    #[arg(long, env = "SHARDCAST_TOKEN_PUBLIC_KEY", value_delimiter = ',')]
    pub token_public_key: Vec<PathBuf>,

    /// A JWKS file (`{"keys":[...]}`) whose keys verify tokens; a token's `kid`
    /// picks the key.
    #[arg(long, env = "SHARDCAST_TOKEN_JWKS")]
    pub token_jwks: Option<PathBuf>,

    /// The algorithms accepted; default: those the configured keys can verify
    /// (HS256/384/512 for secrets, RS256/384/512, ES256, EdDSA for public keys).
    #[arg(long, env = "SHARDCAST_TOKEN_ALGORITHMS", value_delimiter = ',')]
    pub token_algorithms: Vec<String>,

    /// Required `aud` of connection tokens (when set).
    #[arg(long, env = "SHARDCAST_TOKEN_AUDIENCE")]
    pub token_audience: Option<String>,

    /// Required `iss` of connection tokens (when set).
    #[arg(long, env = "SHARDCAST_TOKEN_ISSUER")]
    pub token_issuer: Option<String>,

    /// Accept tokens with `sub: ""` as anonymous connections.
    #[arg(long, env = "SHARDCAST_ALLOW_ANONYMOUS")]
    pub allow_anonymous: bool,

    /// Also accept the connection token as `?token=` in the URL (it then shows in
    /// proxies' access logs; prefer the header or the `connect` frame).
    #[arg(long, env = "SHARDCAST_TOKEN_IN_QUERY")]
    pub token_in_query: bool,

    /// How long a connection without a token in its upgrade request has to send
    /// its `connect` frame before it is closed with 4010.
    #[arg(long, env = "SHARDCAST_CONNECT_TIMEOUT", value_parser = duration, default_value = "5s")]
    pub connect_timeout: Duration,

    /// How long after its token's `exp` a connection may stay without a `refresh`
    /// before it is closed with 4011 (subscription tokens: the subscription ends).
    #[arg(long, env = "SHARDCAST_TOKEN_EXPIRY_GRACE", value_parser = duration, default_value = "25s")]
    pub token_expiry_grace: Duration,

    /// A key for the HTTP API (`Authorization: apikey <key>` or `X-API-Key`);
    /// repeatable or comma separated.
    #[arg(
        long,
        env = "SHARDCAST_API_KEY",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub api_key: Vec<Secret>,

    /// A key for the operator's dashboard and `/api/instances` besides the API
    /// keys; repeatable.
    #[arg(
        long,
        env = "SHARDCAST_ADMIN_KEY",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub admin_key: Vec<Secret>,

    /// Origins a browser may connect from besides the server's own (exact, like
    /// `https://app.example.com`, or `https://*.example.com`); comma separated.
    /// Requests without an Origin header (not from a browser) are allowed.
    #[arg(long, env = "SHARDCAST_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,

    /// Serve /metrics on this address only (instead of the main listener).
    #[arg(long, env = "SHARDCAST_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
}

/// Abuse limits.
#[derive(Debug, Clone, clap::Args)]
pub struct Limits {
    /// Publishes per second one connection may send (a token bucket of as many);
    /// over it: `limit` errors, and a connection refused this many times in a row
    /// is closed with 4029. 0: unlimited.
    #[arg(long, env = "SHARDCAST_PUBLISH_RATE", default_value_t = 1000)]
    pub publish_rate: u32,

    /// Subscribes and unsubscribes per second one connection may send (as above).
    #[arg(long, env = "SHARDCAST_SUBSCRIBE_RATE", default_value_t = 200)]
    pub subscribe_rate: u32,

    /// Connections one user may hold on this instance; more are closed with 4012
    /// (refused with 429 when the token came with the upgrade). 0: unlimited.
    #[arg(
        long,
        env = "SHARDCAST_MAX_CONNECTIONS_PER_USER",
        default_value_t = 100
    )]
    pub max_connections_per_user: usize,

    /// WebSocket connections this instance holds at most; more get 503 before the
    /// upgrade. 0: bounded only by the open-file limit.
    #[arg(long, env = "SHARDCAST_MAX_CONNECTIONS", default_value_t = 0)]
    pub max_connections: usize,

    /// New WebSocket connections per second this instance accepts; more get 503
    /// before the upgrade. 0: unlimited.
    #[arg(long, env = "SHARDCAST_MAX_CONNECTS_PER_SECOND", default_value_t = 0)]
    pub max_connects_per_second: u32,
}

/// Bounds on every stage before a client is a working WebSocket session: how long
/// each may take and how many connections may be in them (docs/SECURITY.md).
#[derive(Debug, Clone, clap::Args)]
pub struct FrontDoor {
    /// A request's headers must be complete this long after its first byte (or
    /// after the connection was accepted); else the connection is closed.
    #[arg(long, env = "SHARDCAST_HEADER_TIMEOUT", value_parser = duration, default_value = "10s")]
    pub header_timeout: Duration,

    /// An `/api/*` request body must be complete this long after its headers;
    /// else 408 `timeout` and the connection is closed.
    #[arg(long, env = "SHARDCAST_BODY_TIMEOUT", value_parser = duration, default_value = "10s")]
    pub body_timeout: Duration,

    /// After the 101, the WebSocket must be handed over (the response written)
    /// within this; else the connection is dropped.
    #[arg(long, env = "SHARDCAST_UPGRADE_TIMEOUT", value_parser = duration, default_value = "10s")]
    pub upgrade_timeout: Duration,

    /// An HTTP keep-alive connection with no request in progress is closed after this.
    #[arg(long, env = "SHARDCAST_IDLE_TIMEOUT", value_parser = duration, default_value = "30s")]
    pub idle_timeout: Duration,

    /// Connections that are not (yet) WebSocket sessions — reading a request,
    /// answering one, idle between requests, upgrading — held at most; beyond,
    /// new connections get an immediate 503 and are closed.
    #[arg(
        long,
        env = "SHARDCAST_MAX_PENDING_CONNECTIONS",
        default_value_t = 1024
    )]
    pub max_pending_connections: usize,

    /// Request header bytes (names and values) at most: 431 above.
    #[arg(long, env = "SHARDCAST_MAX_HEADER_BYTES", default_value_t = 16384)]
    pub max_header_bytes: usize,

    /// Request headers at most: 431 above.
    #[arg(long, env = "SHARDCAST_MAX_HEADERS", default_value_t = 64)]
    pub max_headers: usize,

    /// Request target (path and query) bytes at most: 414 above.
    #[arg(long, env = "SHARDCAST_MAX_URL_BYTES", default_value_t = 4096)]
    pub max_url_bytes: usize,

    /// Nesting depth of a publication's `data` (arrays and objects) at most:
    /// `bad_request` above.
    #[arg(long, env = "SHARDCAST_MAX_DATA_DEPTH", default_value_t = 32)]
    pub max_data_depth: usize,
}

impl Config {
    /// Parses flags (the first item is the program name), the environment and the
    /// configuration file they name, and builds the namespaces.
    pub fn from_args<I, T>(args: I) -> Result<Config, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        file::load(args)
    }

    /// The defaults, as if started with no flags and no file (for tests and embedding).
    pub fn defaults() -> Config {
        match Config::from_args(["shardcast"]) {
            Ok(c) => c,
            Err(e) => panic!("the built-in defaults do not parse: {e}"),
        }
    }

    /// This instance's id (set by [`Config::from_args`]).
    pub fn instance(&self) -> &str {
        self.instance_id.as_deref().unwrap_or("unnamed")
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
    fn parses_durations_and_lists() {
        let c = Config::from_args([
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
        assert!(Config::from_args(["shardcast", "--pong-timeout", "soon"]).is_err());
    }

    #[test]
    fn secrets_do_not_show_in_debug_output() {
        let c = Config::from_args([
            "shardcast",
            "--token-hmac-secret",
            "hunter2",
            "--api-key",
            "k3y",
        ])
        .unwrap();
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("k3y"),
            "{shown}"
        );
        assert_eq!(c.auth.token_hmac_secret[0].expose(), "hunter2");
    }

    #[test]
    fn history_flags_become_namespace_options() {
        let c = Config::from_args([
            "shardcast",
            "--history",
            "chat:10:1s",
            "--client-publish",
            "subscribers",
        ])
        .unwrap();
        let chat = c
            .namespaces
            .options(&crate::channel::Channel::parse("chat:x").unwrap());
        assert_eq!(chat.history.as_ref().map(|r| r.max_len), Some(10));
        assert_eq!(
            chat.publish,
            PublishPolicy::Subscribers,
            "the default namespace's, plus history"
        );
    }
}
