//! One `redis-server` (optionally a replica, with a password, AOF or TLS) and
//! `redis-sentinel` processes, for tests of shardcast's `--broker redis` and
//! `--broker redis-sentinel`. Each runs in the foreground as a child of the test,
//! in its own directory, on a port below the ephemeral range; it is stopped by
//! its PID (SIGKILL for a crash, SIGTERM for a clean stop) and when dropped.
//!
//! Needs `redis-server` (and `redis-sentinel` for [`Sentinel`]) on `PATH`; no
//! Docker. Errors are `String`s that say what failed (a missing binary names the
//! package to install; a server that exits quotes its log).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::ports::free_cluster_ports;
use crate::wait;

/// Files of a TLS setup: the server's certificate and key, and the CA that signed it.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The server's certificate (PEM), `tls-cert-file`.
    pub cert: PathBuf,
    /// The server's private key (PEM), `tls-key-file`.
    pub key: PathBuf,
    /// The CA certificate (PEM) the client must trust, `tls-ca-cert-file`.
    pub ca: PathBuf,
}

/// How to run a `redis-server`, from [`RedisServer::builder`]; by default plain
/// TCP, no password, no persistence, a primary.
#[derive(Debug, Clone, Default)]
pub struct RedisServerBuilder {
    password: Option<String>,
    aof: bool,
    replica_of: Option<u16>,
    tls: Option<TlsFiles>,
}

impl RedisServerBuilder {
    /// `requirepass` (and `masterauth`, so that replicas of it can sync).
    pub fn password(mut self, password: &str) -> Self {
        self.password = Some(password.to_string());
        self
    }

    /// `appendonly yes` with `appendfsync always`: every write on disk before it is
    /// answered, so a restart loses nothing acknowledged.
    pub fn aof(mut self) -> Self {
        self.aof = true;
        self
    }

    /// A replica of the server on `port` (on loopback).
    pub fn replica_of(mut self, port: u16) -> Self {
        self.replica_of = Some(port);
        self
    }

    /// TLS only (`port 0`, `tls-port`), clients not asked for certificates.
    pub fn tls(mut self, files: TlsFiles) -> Self {
        self.tls = Some(files);
        self
    }

    /// Writes the configuration into a fresh temporary directory and starts the
    /// server on a free loopback port below the ephemeral range; returns once it
    /// answers PING (for TLS: accepts TCP), within 10 s. A replica is returned
    /// before it has synced: call [`RedisServer::wait_synced`].
    ///
    /// Errors: `redis-server` missing, a file that cannot be written, the server
    /// exiting (its log is quoted) or not answering in time.
    pub async fn start(self) -> Result<RedisServer, String> {
        let port = free_cluster_ports(1);
        let dir = std::env::temp_dir().join(format!(
            "shardcast-redis-{port}-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut conf = format!(
            "bind 127.0.0.1\nprotected-mode no\ndir {}\nsave \"\"\nlogfile {}\n",
            dir.display(),
            dir.join("redis.log").display()
        );
        match &self.tls {
            Some(t) => conf.push_str(&format!(
                "port 0\ntls-port {port}\ntls-cert-file {}\ntls-key-file {}\ntls-ca-cert-file {}\ntls-auth-clients no\ntls-replication yes\n",
                t.cert.display(),
                t.key.display(),
                t.ca.display()
            )),
            None => conf.push_str(&format!("port {port}\n")),
        }
        if let Some(p) = &self.password {
            conf.push_str(&format!("requirepass {p}\nmasterauth {p}\n"));
        }
        if self.aof {
            conf.push_str("appendonly yes\nappendfsync always\n");
        }
        if let Some(primary) = self.replica_of {
            conf.push_str(&format!("replicaof 127.0.0.1 {primary}\n"));
        }
        let conf_path = dir.join("redis.conf");
        std::fs::write(&conf_path, conf).map_err(|e| format!("{}: {e}", conf_path.display()))?;
        let mut server = RedisServer {
            port,
            dir,
            conf: conf_path,
            password: self.password,
            tls: self.tls.is_some(),
            child: None,
        };
        server.restart().await?;
        Ok(server)
    }
}

/// A running (or stopped) `redis-server`, a child process of the test. Dropping
/// it SIGKILLs the process and deletes its directory (data included).
pub struct RedisServer {
    /// The port on 127.0.0.1 (the TLS port with [`RedisServerBuilder::tls`]); it
    /// stays the same across [`restart`](Self::restart)s.
    pub port: u16,
    dir: PathBuf,
    conf: PathBuf,
    password: Option<String>,
    tls: bool,
    child: Option<Child>,
}

impl RedisServer {
    /// A builder for a plain server (see [`RedisServerBuilder`]).
    pub fn builder() -> RedisServerBuilder {
        RedisServerBuilder::default()
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `redis[s]://[:password@]127.0.0.1:port/0`: the URL to give the application
    /// (shardcast's `--redis-url`).
    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        match &self.password {
            Some(p) => format!("{scheme}://:{p}@{}/0", self.addr()),
            None => format!("{scheme}://{}/0", self.addr()),
        }
    }

    /// The process id while it runs; `None` after [`kill`](Self::kill) or
    /// [`stop`](Self::stop).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Starts the server again after [`kill`](Self::kill) or [`stop`](Self::stop),
    /// on the same port with the same configuration (and its data, when AOF is
    /// on), and waits until it answers PING (10 s). A no-op while it runs.
    pub async fn restart(&mut self) -> Result<(), String> {
        if self.child.is_some() {
            return Ok(());
        }
        let child = Command::new("redis-server")
            .arg(&self.conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| {
                format!("cannot run redis-server (apt-get install -y redis-server): {e}")
            })?;
        self.child = Some(child);
        self.wait_ping().await
    }

    async fn wait_ping(&mut self) -> Result<(), String> {
        let log = self.dir.join("redis.log");
        for _ in 0..200 {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                self.child = None;
                return Err(format!(
                    "redis-server exited ({status}); its log {}:\n{}",
                    log.display(),
                    std::fs::read_to_string(&log).unwrap_or_default()
                ));
            }
            if self.ping().await.is_ok() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(format!(
            "redis-server on {} did not answer PING; see {}",
            self.port,
            log.display()
        ))
    }

    /// PING over a plain connection (the process is up and accepts connections;
    /// with TLS, that the port accepts TCP).
    pub async fn ping(&self) -> Result<(), String> {
        if self.tls {
            return tokio::net::TcpStream::connect(self.addr())
                .await
                .map(|_| ())
                .map_err(|e| e.to_string());
        }
        self.query::<String>(&redis::cmd("PING")).await.map(|_| ())
    }

    /// One command on a short-lived connection (not for TLS servers).
    pub async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, String> {
        let client = redis::Client::open(self.url()).map_err(|e| e.to_string())?;
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)));
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| e.to_string())?;
        cmd.query_async(&mut conn).await.map_err(|e| e.to_string())
    }

    /// SIGKILL: a crash (nothing flushed that was not already). Returns once the
    /// process is reaped; clients see their connections reset.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            eprintln!("killed redis-server {} (pid {})", self.port, c.id());
        }
    }

    /// SIGTERM, and waits for the process to exit (SIGKILL after 10 s).
    pub async fn stop(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        signal(c.id(), "TERM");
        for _ in 0..100 {
            if matches!(c.try_wait(), Ok(Some(_))) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = c.kill();
        let _ = c.wait();
    }

    /// Waits until this replica reports its link to the primary up
    /// (`master_link_status:up`), polling every 100 ms; an error after 30 s.
    pub async fn wait_synced(&self) -> Result<(), String> {
        wait::until(
            &format!("replica {} to sync", self.port),
            Duration::from_secs(30),
            Duration::from_millis(100),
            || async {
                let info: String = self.query(redis::cmd("INFO").arg("replication")).await?;
                if info.contains("master_link_status:up") {
                    Ok(())
                } else {
                    Err("link down".to_string())
                }
            },
        )
        .await
        .map_err(|e| e.to_string())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

/// The master name every [`Sentinel`] here watches: shardcast's
/// `--sentinel-master` (or its default) must name it.
pub const MASTER: &str = "mymaster";

/// A `redis-sentinel` watching [`MASTER`], with short timeouts: a primary is down
/// after 1 s without an answer, failover within 10 s. Dropping it kills the
/// process and deletes its directory.
pub struct Sentinel {
    /// The sentinel's port on 127.0.0.1.
    pub port: u16,
    dir: PathBuf,
    child: Child,
}

impl Sentinel {
    /// Watches the primary on `primary_port` (with its `password`, if any), needing
    /// `quorum` sentinels to agree that it is down. Returns once this sentinel
    /// names the primary (within 20 s); an error if `redis-sentinel` is missing or
    /// it does not.
    pub async fn start(
        primary_port: u16,
        quorum: usize,
        password: Option<&str>,
    ) -> Result<Sentinel, String> {
        let port = free_cluster_ports(1);
        let dir = std::env::temp_dir().join(format!(
            "shardcast-sentinel-{port}-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut conf = format!(
            "port {port}\nbind 127.0.0.1\nprotected-mode no\ndir {}\nlogfile {}\n\
             sentinel monitor {MASTER} 127.0.0.1 {primary_port} {quorum}\n\
             sentinel down-after-milliseconds {MASTER} 1000\n\
             sentinel failover-timeout {MASTER} 10000\n\
             sentinel parallel-syncs {MASTER} 1\n",
            dir.display(),
            dir.join("sentinel.log").display()
        );
        if let Some(p) = password {
            conf.push_str(&format!("sentinel auth-pass {MASTER} {p}\n"));
        }
        // Sentinel rewrites its file: it must be writable and its own.
        let conf_path = dir.join("sentinel.conf");
        std::fs::write(&conf_path, conf).map_err(|e| format!("{}: {e}", conf_path.display()))?;
        let child = Command::new("redis-sentinel")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| {
                format!("cannot run redis-sentinel (apt-get install -y redis-sentinel): {e}")
            })?;
        let s = Sentinel { port, dir, child };
        wait::until(
            &format!("sentinel {port} to see the primary"),
            Duration::from_secs(20),
            Duration::from_millis(100),
            || async { s.primary().await.map(|_| ()) },
        )
        .await
        .map_err(|e| e.to_string())?;
        Ok(s)
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The primary's address as this sentinel says (`SENTINEL
    /// get-master-addr-by-name`), `ip:port`.
    pub async fn primary(&self) -> Result<String, String> {
        let client =
            redis::Client::open(format!("redis://{}", self.addr())).map_err(|e| e.to_string())?;
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| e.to_string())?;
        let addr: Option<(String, String)> = redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg(MASTER)
            .query_async(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        addr.map(|(h, p)| format!("{h}:{p}"))
            .ok_or_else(|| "no master".to_string())
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A primary, `replicas` replicas and `sentinels` sentinels (quorum: a majority):
/// the setup for shardcast's `--broker redis-sentinel`.
pub struct SentinelSetup {
    /// The primary it started with (after a failover, no longer the primary:
    /// ask [`SentinelSetup::wait_failover`] or [`Sentinel::primary`]).
    pub primary: RedisServer,
    /// Its replicas, synced when [`SentinelSetup::start`] returned.
    pub replicas: Vec<RedisServer>,
    /// The sentinels watching [`MASTER`].
    pub sentinels: Vec<Sentinel>,
}

impl SentinelSetup {
    /// Starts the primary (with `password`, if any), `replicas` replicas (each
    /// synced before the next) and `sentinels` sentinels. Errors as
    /// [`RedisServerBuilder::start`] and [`Sentinel::start`].
    pub async fn start(
        replicas: usize,
        sentinels: usize,
        password: Option<&str>,
    ) -> Result<SentinelSetup, String> {
        let mut builder = RedisServer::builder();
        if let Some(p) = password {
            builder = builder.password(p);
        }
        let primary = builder.clone().start().await?;
        let mut reps = Vec::new();
        for _ in 0..replicas {
            let r = builder.clone().replica_of(primary.port).start().await?;
            r.wait_synced().await?;
            reps.push(r);
        }
        let mut sents = Vec::new();
        for _ in 0..sentinels {
            sents.push(Sentinel::start(primary.port, sentinels / 2 + 1, password).await?);
        }
        Ok(SentinelSetup {
            primary,
            replicas: reps,
            sentinels: sents,
        })
    }

    /// `host:port,...` of the sentinels, for `--sentinels`.
    pub fn sentinel_list(&self) -> String {
        self.sentinels
            .iter()
            .map(Sentinel::addr)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Waits until every sentinel names the same primary, other than `old`
    /// (`ip:port`), and returns it: after killing the primary, the failover is
    /// done. An error after 60 s, with what the sentinels named last.
    pub async fn wait_failover(&self, old: &str) -> Result<String, String> {
        wait::until(
            "the sentinels to promote a replica",
            Duration::from_secs(60),
            Duration::from_millis(100),
            || async {
                let mut seen = Vec::new();
                for s in &self.sentinels {
                    seen.push(s.primary().await?);
                }
                match seen.first() {
                    Some(p) if p != old && seen.iter().all(|x| x == p) => Ok(p.clone()),
                    _ => Err(format!("sentinels name {seen:?}")),
                }
            },
        )
        .await
        .map_err(|e| e.to_string())
    }
}
