//! Local `redis-server` processes (no Docker) for the `shardcast-cluster` CLI behind
//! `cluster/*.sh`. Each node lives in `<dir>/<port>/` with its config, PID file,
//! log and `nodes.conf`; every stop is by the recorded PID, checked against the
//! process's command line.
//!
//! Needs `redis-server` on `PATH` (`apt-get install -y redis-server`); no Docker.
//! The nodes outlive the process that started them (they daemonize): they are
//! stopped by [`LocalNodes::stop`], not by dropping anything.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::admin::{self, AdminError};
use crate::wait;

/// The nodes of one local cluster, as recorded in its directory: this holds no
/// process handle, so a later command (another run of the CLI) finds the same
/// nodes again from `dir`.
pub struct LocalNodes {
    /// The cluster's directory: one `<port>/` subdirectory per node.
    pub dir: PathBuf,
    /// A redis.conf every node includes (cluster mode, timeouts).
    pub node_conf: PathBuf,
}

/// `127.0.0.1:<port>`: a local node's address, as administration functions take
/// it.
pub fn addr(port: u16) -> String {
    format!("127.0.0.1:{port}")
}

impl LocalNodes {
    fn node_dir(&self, port: u16) -> PathBuf {
        self.dir.join(port.to_string())
    }

    fn pid(&self, port: u16) -> Option<u32> {
        let text = std::fs::read_to_string(self.node_dir(port).join("redis.pid")).ok()?;
        text.trim().parse().ok()
    }

    /// Whether the recorded PID is alive and is this port's redis-server.
    pub fn alive(&self, port: u16) -> bool {
        self.pid(port).is_some_and(|pid| is_node(pid, port))
    }

    /// Ports with a node directory, ascending.
    pub fn ports(&self) -> Vec<u16> {
        let mut out: Vec<u16> = std::fs::read_dir(&self.dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        out.sort_unstable();
        out
    }

    /// Ports whose recorded node is running, ascending.
    pub fn live_ports(&self) -> Vec<u16> {
        self.ports()
            .into_iter()
            .filter(|p| self.alive(*p))
            .collect()
    }

    /// Starts one node (a no-op if it runs) in a fresh `<dir>/<port>/` with a
    /// `redis.conf` that includes a copy of `node_conf`, and waits until it answers
    /// PING.
    ///
    /// Errors: [`AdminError::Invalid`] if `port` or its bus port (`port + 10000`)
    /// is taken by another process, a file cannot be written, or `redis-server` is
    /// missing or fails to start (its log is named); [`AdminError::Timeout`] if it
    /// does not answer PING within 20 s.
    pub async fn start(&self, port: u16) -> Result<(), AdminError> {
        if !self.alive(port) {
            for p in [port, port + 10_000] {
                if std::net::TcpListener::bind(("127.0.0.1", p)).is_err() {
                    return Err(AdminError::Invalid(format!(
                        "port {p} is in use by a process not managed in {}",
                        self.dir.display()
                    )));
                }
            }
            let d = self.node_dir(port);
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir_all(&d).map_err(|e| io(&d, e))?;
            // A copy in the cluster's directory, so that a node can be restarted by
            // hand (`redis-server <dir>/<port>/redis.conf`) whatever happens to the
            // checkout.
            let shared = self.dir.join("redis-node.conf");
            std::fs::copy(&self.node_conf, &shared).map_err(|e| io(&self.node_conf, e))?;
            let conf = d.join("redis.conf");
            let text = format!(
                "include {}\nport {port}\ndir {}\npidfile {}\nlogfile {}\ndaemonize yes\n",
                shared.display(),
                d.display(),
                d.join("redis.pid").display(),
                d.join("redis.log").display(),
            );
            std::fs::write(&conf, text).map_err(|e| io(&conf, e))?;
            let status = Command::new("redis-server")
                .arg(&conf)
                .stdin(Stdio::null())
                .status()
                .map_err(|e| {
                    AdminError::Invalid(format!(
                        "cannot run redis-server (apt-get install -y redis-server): {e}"
                    ))
                })?;
            if !status.success() {
                return Err(AdminError::Invalid(format!(
                    "redis-server {} failed; see {}",
                    conf.display(),
                    d.join("redis.log").display()
                )));
            }
        }
        let a = addr(port);
        wait::until(
            &format!("node {port} to answer PING"),
            Duration::from_secs(20),
            Duration::from_millis(100),
            || async {
                admin::query::<String>(&a, &redis::cmd("PING"))
                    .await
                    .map_err(|e| e.to_string())
            },
        )
        .await?;
        Ok(())
    }

    /// SIGTERM by recorded PID (SIGKILL after 5 s), then deletes the node's directory.
    pub async fn stop(&self, port: u16) {
        if let Some(pid) = self.pid(port).filter(|p| is_node(*p, port)) {
            signal(pid, "TERM");
            for _ in 0..50 {
                if !is_node(pid, port) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            if is_node(pid, port) {
                signal(pid, "KILL");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            eprintln!("stopped node {port} (pid {pid})");
        }
        let _ = std::fs::remove_dir_all(self.node_dir(port));
    }

    /// `redis://127.0.0.1:P,...` of every live node; also written to `<dir>/seeds`.
    pub fn seeds(&self) -> String {
        let seeds = self
            .live_ports()
            .iter()
            .map(|p| format!("redis://{}", addr(*p)))
            .collect::<Vec<_>>()
            .join(",");
        let _ = std::fs::write(self.dir.join("seeds"), format!("{seeds}\n"));
        seeds
    }
}

fn io(path: &Path, e: std::io::Error) -> AdminError {
    AdminError::Invalid(format!("{}: {e}", path.display()))
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

/// Whether `pid` runs a redis-server listening on `port` (guards against PID reuse).
fn is_node(pid: u32, port: u16) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
        let cmd = String::from_utf8_lossy(&c).replace('\0', " ");
        let needle = format!(":{port}");
        cmd.contains("redis-server")
            && cmd
                .match_indices(&needle)
                .any(|(i, _)| !cmd[i + needle.len()..].starts_with(|c: char| c.is_ascii_digit()))
    })
}
