//! [`Shardcast`]: a shardcast instance run as a real process against a cluster
//! (the binary under test), with the helpers a test needs: its URLs, a WebSocket
//! client, HTTP calls, a `/metrics` scrape and its own view of the cluster.
//!
//! Each instance listens on a free loopback port (`--listen 127.0.0.1:P` is passed
//! first, before the builder's arguments), logs at `warn` unless
//! `SHARDCAST_TEST_LOG` sets its `RUST_LOG`, and is killed when its [`Shardcast`]
//! is dropped. Starting waits up to 30 s and panics if the process exits first,
//! so a bad flag fails the test with the exit status instead of a timeout.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::client::Client;
use crate::http::{self, Response};
use crate::ports::free_port;
use crate::prometheus::Scrape;
use crate::wait;

/// How to run instances: the binary and the arguments every instance gets. Made
/// by [`Shardcast::on_cluster`] (or `on_redis`, `on_sentinels`, `with_args`);
/// start as many instances from one builder as the test needs, each with its own
/// extra arguments.
#[derive(Debug, Clone)]
pub struct ShardcastBuilder {
    binary: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    /// A command the binary runs under (e.g. `prlimit --nofile=64:64 --`).
    wrapper: Vec<String>,
}

impl ShardcastBuilder {
    /// Extra arguments for every instance.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Runs each instance under `command` (which must exec the binary it is given
    /// last, keeping the PID): `["prlimit", "--nofile=128:128", "--"]` for a low
    /// descriptor limit.
    pub fn wrapped_in(mut self, command: &[&str]) -> Self {
        self.wrapper = command.iter().map(|s| s.to_string()).collect();
        self
    }

    /// An environment variable for every instance (e.g. `SHARDCAST_API_KEYS`, or
    /// `RUST_LOG`, which overrides `SHARDCAST_TEST_LOG`).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Starts one instance on a free loopback port with `extra` arguments after
    /// the builder's; returns once `/readyz` answers 200 (connected to its broker).
    /// Panics if the binary cannot run, exits, or is not ready within 30 s.
    pub async fn start(&self, extra: &[&str]) -> Shardcast {
        self.start_until(extra, "/readyz").await
    }

    /// Starts one instance and returns once it serves HTTP (`/healthz` answers),
    /// ready or not: for tests of what an instance does while Redis is out of reach.
    /// Panics if the binary cannot run, exits, or does not answer within 30 s.
    pub async fn spawn(&self, extra: &[&str]) -> Shardcast {
        self.start_until(extra, "/healthz").await
    }

    async fn start_until(&self, extra: &[&str], probe: &str) -> Shardcast {
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        let mut cmd = match self.wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(&self.binary);
                c
            }
            None => Command::new(&self.binary),
        };
        let child = cmd
            .arg("--listen")
            .arg(addr.to_string())
            .args(&self.args)
            .args(extra)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env(
                "RUST_LOG",
                std::env::var("SHARDCAST_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.binary.display()));
        let child = std::sync::Mutex::new(child);
        let url = format!("http://{addr}{probe}");
        wait::eventually(
            &format!("shardcast at {addr} to answer {probe}"),
            Duration::from_secs(30),
            || async {
                let exited = child
                    .lock()
                    .map(|mut c| c.try_wait().ok().flatten())
                    .unwrap_or(None);
                if let Some(status) = exited {
                    panic!("shardcast at {addr} exited: {status}");
                }
                match http::get(&url).await.status {
                    200 => Ok(()),
                    s => Err(format!("{probe} answers {s}")),
                }
            },
        )
        .await;
        let child = child.into_inner().unwrap_or_else(|e| e.into_inner());
        Shardcast { addr, child }
    }
}

/// A running instance; dropping it kills the process (SIGKILL).
pub struct Shardcast {
    /// The address it listens on (`127.0.0.1:P`), for HTTP and WebSocket URLs.
    pub addr: SocketAddr,
    child: Child,
}

impl Shardcast {
    /// Instances of the binary at `binary` (e.g. `env!("CARGO_BIN_EXE_shardcast")`
    /// in shardcast's own tests, or `SHARDCAST_BIN`), pointed at `seeds` with the
    /// Redis Cluster broker.
    pub fn on_cluster(binary: impl Into<PathBuf>, seeds: &str) -> ShardcastBuilder {
        ShardcastBuilder {
            binary: binary.into(),
            args: vec![
                "--broker".into(),
                "redis-cluster".into(),
                "--redis-nodes".into(),
                seeds.into(),
            ],
            env: Vec::new(),
            wrapper: Vec::new(),
        }
    }

    /// Instances on one Redis server (`--broker redis --redis-url url`).
    pub fn on_redis(binary: impl Into<PathBuf>, url: &str) -> ShardcastBuilder {
        Self::with_args(binary, &["--broker", "redis", "--redis-url", url])
    }

    /// Instances on the primary the sentinels name (`--broker redis-sentinel`).
    pub fn on_sentinels(binary: impl Into<PathBuf>, sentinels: &str) -> ShardcastBuilder {
        Self::with_args(
            binary,
            &["--broker", "redis-sentinel", "--sentinels", sentinels],
        )
    }

    /// Instances of `binary` with only the given arguments (any broker).
    pub fn with_args(binary: impl Into<PathBuf>, args: &[&str]) -> ShardcastBuilder {
        ShardcastBuilder {
            binary: binary.into(),
            args: args.iter().map(|s| s.to_string()).collect(),
            env: Vec::new(),
            wrapper: Vec::new(),
        }
    }

    /// The process id: for signals of the test's own (`kill -STOP`, `kill -TERM`
    /// for a graceful shutdown) or reading `/proc/<pid>/`.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `ws://<addr>/ws<query>` (e.g. `"?user=alice"`).
    pub fn ws_url(&self, query: &str) -> String {
        format!("ws://{}/ws{query}", self.addr)
    }

    /// `http://<addr><path>` (e.g. `"/api/publish"`).
    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A [`Client`] connected as `user` with a self-asserted identity (`?user=`;
    /// the instance needs `--insecure`), past its `connected` frame. Panics if the
    /// instance refuses it.
    pub async fn client(&self, user: &str) -> Client {
        Client::connect(&self.ws_url(&format!("?user={user}"))).await
    }

    /// `GET <path>` on this instance (status 0 if the connection is refused).
    pub async fn get(&self, path: &str) -> Response {
        http::get(&self.http_url(path)).await
    }

    /// Any HTTP request on this instance, e.g. `POST /api/publish` with an
    /// `authorization` header and a JSON body (see [`http::request`]).
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Response {
        http::request(method, &self.http_url(path), headers, body).await
    }

    /// A `/metrics` scrape, parsed (see [`Scrape`]). Panics unless it answers 200
    /// (with `--metrics-listen`, metrics are not on the main listener).
    pub async fn metrics(&self) -> Scrape {
        let r = self.get("/metrics").await;
        assert_eq!(r.status, 200, "/metrics: {}", r.body);
        Scrape::parse(&r.body)
    }

    /// `GET /api/cluster` as JSON: the instance's own view of the Redis nodes and
    /// of the subscriptions it holds on each. Sends no key, so it works on an
    /// instance without API keys and with `--insecure`; panics unless it answers
    /// 200.
    pub async fn cluster_view(&self) -> serde_json::Value {
        let r = self.get("/api/cluster").await;
        assert_eq!(r.status, 200, "/api/cluster: {}", r.body);
        r.json()
    }

    /// Redis node address → channels this instance holds subscriptions for there
    /// (from [`cluster_view`](Self::cluster_view)): after a fault, wait until these
    /// match [`RedisCluster::owner_of`](crate::RedisCluster::owner_of) before judging
    /// delivery.
    pub async fn held(&self) -> std::collections::BTreeMap<String, Vec<String>> {
        let v = self.cluster_view().await;
        v["subscriber_nodes"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, n)| {
                        let chs = n["channels"]
                            .as_array()
                            .map(|a| {
                                a.iter()
                                    .filter_map(|c| c.as_str().map(String::from))
                                    .collect()
                            })
                            .unwrap_or_default();
                        (k.clone(), chs)
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// SIGKILLs the process (no cleanup, as a crash) and reaps it; its clients see
    /// their connections drop. Idempotent; dropping does the same.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Shardcast {
    fn drop(&mut self) {
        self.kill();
    }
}
