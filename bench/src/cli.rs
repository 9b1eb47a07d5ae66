//! The command line: modes and their parameters.

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "shardcast-bench",
    about = "Load generator and meter for shardcast"
)]
pub struct Cli {
    /// WebSocket endpoints of the instances, comma separated; clients are spread round-robin.
    #[arg(long, value_delimiter = ',', default_value = "ws://127.0.0.1:8080/ws")]
    pub url: Vec<String>,
    /// PIDs of the server processes to meter (CPU, RSS), comma separated.
    #[arg(long, value_delimiter = ',')]
    pub server_pid: Vec<u32>,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<String>,
    /// Authenticate every client with an HS256 connection token signed with this
    /// secret, sent as `?token=` (start the servers with `--token-hmac-secret` and
    /// `--token-in-query`). Without it clients connect as `?user=` (servers in
    /// `--insecure` mode).
    #[arg(long)]
    pub token_secret: Option<String>,
    #[command(subcommand)]
    pub mode: Mode,
}

#[derive(Subcommand, Debug, Clone)]
pub enum Mode {
    /// C clients on one channel, one publisher at rate R for T seconds.
    Broadcast(Load),
    /// C clients in C/3 rooms of 3 members on different instances; publishers to random rooms at aggregate rate R.
    Rooms(Load),
    /// Broadcast or rooms with R stepping up until p99 passes the limit or a delivery is
    /// lost; then one more run at half of the last good rate.
    Saturate {
        #[arg(long, value_enum, default_value = "broadcast")]
        scenario: Scenario,
        #[command(flatten)]
        load: Load,
        /// Rate multiplier per step.
        #[arg(long, default_value_t = 1.25)]
        factor: f64,
        /// Stop when p99 latency passes this (ms).
        #[arg(long, default_value_t = 100.0)]
        p99_limit_ms: f64,
        /// Highest rate tried.
        #[arg(long, default_value_t = 100_000.0)]
        max_rate: f64,
    },
    /// Open N idle connections and report server RSS per connection.
    Idle {
        #[arg(long, default_value_t = 10_000)]
        connections: usize,
        /// Seconds to hold them open once all are connected.
        #[arg(long, default_value_t = 10)]
        hold: u64,
        /// Source addresses 127.0.0.2.. to spread connections over (ports per address are limited).
        #[arg(long, default_value_t = 4)]
        sources: u8,
        /// Tool processes to hold them (each is limited by its RLIMIT_NOFILE).
        #[arg(long, default_value_t = 1)]
        procs: usize,
        /// Subscribe each connection to one of this many channels `room:N` (0: none).
        #[arg(long, default_value_t = 0)]
        rooms: usize,
    },
    /// One share of `idle --procs`, run by the tool itself.
    #[command(hide = true)]
    IdleWorker {
        #[arg(long)]
        first: usize,
        #[arg(long)]
        count: usize,
        #[arg(long, default_value_t = 4)]
        sources: u8,
        #[arg(long, default_value_t = 0)]
        rooms: usize,
    },
    /// Drop K subscribed clients at once, reconnect them, time until all are resubscribed.
    Storm {
        #[arg(long, default_value_t = 1000)]
        clients: usize,
        #[arg(long, default_value_t = 100)]
        channels: usize,
    },
    /// Subscribe churn: N clients each subscribing to a random channel of a pool and
    /// unsubscribing it again, at an aggregate rate of operations per second.
    Churn(ChurnArgs),
    /// Run the reference server (the floor) instead of a load: see `floor.rs`.
    Floor {
        #[arg(long, default_value = "127.0.0.1:8095")]
        listen: std::net::SocketAddr,
        /// Tokio worker threads (compare with shardcast's --worker-threads).
        #[arg(long, default_value_t = 2)]
        worker_threads: usize,
    },
}

#[derive(clap::Args, Debug, Clone)]
pub struct ChurnArgs {
    #[arg(long, default_value_t = 200)]
    pub clients: usize,
    /// Channels the clients pick from.
    #[arg(long, default_value_t = 1000)]
    pub pool: usize,
    /// Subscribe and unsubscribe operations per second, all clients together.
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Seconds of churn.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Redis nodes (host:port, comma separated) whose SSUBSCRIBE/SUNSUBSCRIBE counts
    /// (INFO commandstats) are reported per operation.
    #[arg(long, value_delimiter = ',')]
    pub redis: Vec<String>,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq)]
pub enum Scenario {
    Broadcast,
    Rooms,
}

#[derive(clap::Args, Debug, Clone)]
pub struct Load {
    /// Subscribing clients.
    #[arg(long, default_value_t = 300)]
    pub clients: usize,
    /// Published messages per second (aggregate).
    #[arg(long, default_value_t = 50.0)]
    pub rate: f64,
    /// Seconds of publishing.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Padding bytes per payload.
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
}

impl Cli {
    /// The URL a client of `user` opens on `base`: `?token=` when `--token-secret`
    /// is given, else `?user=`.
    pub fn client_url(&self, base: &str, user: &str) -> String {
        client_url(self.token_secret.as_deref(), base, user)
    }
}

/// See [`Cli::client_url`]; for tasks that hold only the secret.
pub fn client_url(secret: Option<&str>, base: &str, user: &str) -> String {
    match secret {
        Some(s) => {
            let token = shardcast_testkit::token::connection(
                s,
                user,
                std::time::Duration::from_secs(24 * 3600),
                None,
                &[],
            );
            format!("{base}?token={token}")
        }
        None => format!("{base}?user={user}"),
    }
}
