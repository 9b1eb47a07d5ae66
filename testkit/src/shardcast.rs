//! [`Shardcast`]: a shardcast instance run as a real process against a cluster
//! (the binary under test), with the helpers a test needs: its URLs, a WebSocket
//! client, HTTP calls, a `/metrics` scrape and its own view of the cluster.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::client::Client;
use crate::http::{self, Response};
use crate::ports::free_port;
use crate::prometheus::Scrape;
use crate::wait;

/// How to run instances: the binary and the arguments every instance gets.
#[derive(Debug, Clone)]
pub struct ShardcastBuilder {
    binary: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
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

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Starts one instance on a free loopback port with `extra` arguments after
    /// the builder's; returns once `/readyz` answers 200.
    pub async fn start(&self, extra: &[&str]) -> Shardcast {
        self.start_until(extra, "/readyz").await
    }

    /// Starts one instance and returns once it serves HTTP (`/healthz` answers),
    /// ready or not: for tests of what an instance does while Redis is out of reach.
    pub async fn spawn(&self, extra: &[&str]) -> Shardcast {
        self.start_until(extra, "/healthz").await
    }

    async fn start_until(&self, extra: &[&str], probe: &str) -> Shardcast {
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        let child = Command::new(&self.binary)
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

/// A running instance; dropping it kills the process.
pub struct Shardcast {
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
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `ws://<addr>/ws<query>` (e.g. `"?user=alice"`).
    pub fn ws_url(&self, query: &str) -> String {
        format!("ws://{}/ws{query}", self.addr)
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A client with a self-asserted identity (`?user=`; needs `--insecure`).
    pub async fn client(&self, user: &str) -> Client {
        Client::connect(&self.ws_url(&format!("?user={user}"))).await
    }

    pub async fn get(&self, path: &str) -> Response {
        http::get(&self.http_url(path)).await
    }

    pub async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Response {
        http::request(method, &self.http_url(path), headers, body).await
    }

    /// A `/metrics` scrape.
    pub async fn metrics(&self) -> Scrape {
        let r = self.get("/metrics").await;
        assert_eq!(r.status, 200, "/metrics: {}", r.body);
        Scrape::parse(&r.body)
    }

    /// `GET /api/cluster`.
    pub async fn cluster_view(&self) -> serde_json::Value {
        let r = self.get("/api/cluster").await;
        assert_eq!(r.status, 200, "/api/cluster: {}", r.body);
        r.json()
    }

    /// Redis node address → channels this instance holds there.
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

    /// SIGKILLs the process (no cleanup, as a crash).
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
