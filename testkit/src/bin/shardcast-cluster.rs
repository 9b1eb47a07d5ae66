//! `shardcast-cluster`: local Redis Clusters of `redis-server` processes, and the
//! compose stack's cluster bootstrap, through the testkit's one implementation of
//! cluster administration. `cluster/*.sh` are thin wrappers around it.
//!
//! Seeds (`redis://127.0.0.1:P,...`) go to stdout, progress to stderr; the exit
//! status is 0 on success, 1 with an `ERROR:` line otherwise.
//!
//! Commands (`shardcast-cluster <command> --help` for the flags):
//! * `start`: start `--masters` primaries with `--replicas` replicas each on ports
//!   from `--base-port`, form the cluster, print the seeds (`cluster/start.sh`);
//! * `stop`: stop every node by its recorded PID and delete the directory
//!   (`cluster/stop.sh`);
//! * `add-shard`: a new primary and its replicas, slots rebalanced onto it
//!   (`cluster/add-shard.sh`);
//! * `remove-shard`: the shard of `--port` emptied, forgotten and stopped
//!   (`cluster/remove-shard.sh`);
//! * `migrate-slot`: one slot and its keys moved to `--to`
//!   (`cluster/migrate-slot.sh`);
//! * `create`: form (or check) a cluster of nodes that already run, by host name:
//!   the compose stack's `cluster-init` job.
//!
//! Every command returns once the nodes agree (the same check as the library's,
//! each wait bounded by 60 s). Local nodes need `redis-server` on `PATH`; build
//! with `cargo build -p shardcast-testkit --no-default-features --bin
//! shardcast-cluster` to leave Docker support out.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use shardcast_testkit::admin::{self, AdminError, view::Expect};
use shardcast_testkit::local::{LocalNodes, addr};

/// The command line: one subcommand.
#[derive(Parser)]
#[command(
    name = "shardcast-cluster",
    about = "Local Redis Clusters for shardcast"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// `--dir`, shared by the commands on local nodes.
#[derive(clap::Args, Clone)]
struct Dir {
    /// Where the nodes live (one directory per port).
    #[arg(long, default_value = "/tmp/shardcast-cluster")]
    dir: PathBuf,
}

/// What to do (each variant's doc is its `--help` text).
#[derive(Subcommand)]
enum Cmd {
    /// Start a cluster and wait until it is formed (idempotent: a healthy running
    /// cluster of the same shape only prints its seeds).
    Start {
        #[command(flatten)]
        dir: Dir,
        /// Number of primaries (at least 3).
        #[arg(long, default_value_t = 3)]
        masters: usize,
        /// Replicas per primary.
        #[arg(long, default_value_t = 1)]
        replicas: usize,
        /// The first node's port: nodes use consecutive ports from it (primaries
        /// first), their cluster buses the same ports + 10000.
        #[arg(long, default_value_t = 7000)]
        base_port: u16,
        /// The redis.conf every node includes.
        #[arg(long)]
        node_conf: PathBuf,
    },
    /// Stop every node of the cluster (by recorded PID) and delete its data.
    Stop {
        #[command(flatten)]
        dir: Dir,
    },
    /// Add a shard (a master plus replicas) and rebalance slots onto it.
    AddShard {
        #[command(flatten)]
        dir: Dir,
        /// The master's port (replicas use the next ports); default: after the highest.
        #[arg(long)]
        port: Option<u16>,
        /// Default: as given to `start`.
        #[arg(long)]
        replicas: Option<usize>,
        /// The redis.conf every new node includes.
        #[arg(long)]
        node_conf: PathBuf,
    },
    /// Move a shard's slots away, remove its nodes from the cluster and stop them.
    /// `--port` may name any node of the shard.
    RemoveShard {
        #[command(flatten)]
        dir: Dir,
        /// The port of the shard's primary or of one of its replicas.
        #[arg(long)]
        port: u16,
    },
    /// Move one slot (and its keys) to the primary on `--to`, and wait until every
    /// node agrees.
    MigrateSlot {
        #[command(flatten)]
        dir: Dir,
        /// The slot, 0..16383.
        #[arg(long)]
        slot: u16,
        /// The port of the primary that takes the slot.
        #[arg(long)]
        to: u16,
    },
    /// Form a cluster of running nodes (HOST:PORT, names resolved), or check an
    /// existing one; exits 0 once every node agrees. For the compose stack.
    Create {
        /// Replicas per primary: the first N / (1 + replicas) nodes become
        /// primaries.
        #[arg(long, default_value_t = 1)]
        replicas: usize,
        /// The nodes, HOST:PORT: a multiple of 1 + replicas, at least 3 × (1 + replicas).
        nodes: Vec<String>,
    },
}

/// A progress line on stderr.
fn log(msg: &str) {
    eprintln!("[shardcast-cluster] {msg}");
}

/// Runs the command; exit status 1 with the error on stderr if it fails.
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match run(Cli::parse().cmd).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log(&format!("ERROR: {e}"));
            ExitCode::FAILURE
        }
    }
}

/// `<dir>/cluster.env`: `REPLICAS=<n>` as given to `start`, the default of
/// `add-shard`.
fn replicas_file(nodes: &LocalNodes) -> PathBuf {
    nodes.dir.join("cluster.env")
}

/// Carries out one command; returns once the nodes agree.
async fn run(cmd: Cmd) -> Result<(), AdminError> {
    let started = std::time::Instant::now();
    match cmd {
        Cmd::Start {
            dir,
            masters,
            replicas,
            base_port,
            node_conf,
        } => {
            if masters < 3 {
                return Err(AdminError::Invalid("--masters must be at least 3".into()));
            }
            let nodes = LocalNodes {
                dir: dir.dir,
                node_conf,
            };
            std::fs::create_dir_all(&nodes.dir)
                .map_err(|e| AdminError::Invalid(format!("{}: {e}", nodes.dir.display())))?;
            let total = masters * (1 + replicas);
            let ports: Vec<u16> = (base_port..base_port + total as u16).collect();
            let addrs: Vec<String> = ports.iter().map(|p| addr(*p)).collect();
            let shape = Expect {
                nodes: Some(addrs.iter().cloned().collect()),
                primaries: Some(masters),
                replicas_per_primary: Some(replicas),
                ..Expect::default()
            };
            let live = nodes.live_ports();
            if !live.is_empty() {
                if live == ports && admin::check(&addrs, &shape).await.is_ok() {
                    log("cluster already running and healthy");
                    println!("{}", nodes.seeds());
                    return Ok(());
                }
                if live != ports {
                    return Err(AdminError::Invalid(format!(
                        "a different cluster runs in {} (ports {live:?}); stop it first",
                        nodes.dir.display()
                    )));
                }
                log("cluster is not healthy; recreating it");
            }
            for p in nodes.ports() {
                nodes.stop(p).await;
            }
            log(&format!(
                "starting {total} nodes on ports {base_port}..{}",
                base_port + total as u16 - 1
            ));
            for p in &ports {
                nodes.start(*p).await?;
            }
            std::fs::write(replicas_file(&nodes), format!("REPLICAS={replicas}\n"))
                .map_err(|e| AdminError::Invalid(e.to_string()))?;
            let (prim, reps) = addrs.split_at(masters);
            let reps: Vec<(String, usize)> = reps
                .iter()
                .enumerate()
                .map(|(i, a)| (a.clone(), i % masters))
                .collect();
            admin::create(prim, &reps).await?;
            log(&format!(
                "cluster ready in {:.1} s",
                started.elapsed().as_secs_f64()
            ));
            println!("{}", nodes.seeds());
        }
        Cmd::Stop { dir } => {
            let nodes = LocalNodes {
                dir: dir.dir,
                node_conf: PathBuf::new(),
            };
            for p in nodes.ports() {
                nodes.stop(p).await;
            }
            for f in ["redis-node.conf", "cluster.env", "seeds"] {
                let _ = std::fs::remove_file(nodes.dir.join(f));
            }
            let _ = std::fs::remove_dir(&nodes.dir);
        }
        Cmd::AddShard {
            dir,
            port,
            replicas,
            node_conf,
        } => {
            let nodes = LocalNodes {
                dir: dir.dir,
                node_conf,
            };
            let live: Vec<String> = nodes.live_ports().iter().map(|p| addr(*p)).collect();
            if live.is_empty() {
                return Err(AdminError::Invalid("no running cluster".into()));
            }
            admin::wait_settled(&live, &Expect::default(), "the cluster to be healthy").await?;
            let replicas = replicas.unwrap_or_else(|| {
                std::fs::read_to_string(replicas_file(&nodes))
                    .ok()
                    .and_then(|t| t.trim().strip_prefix("REPLICAS=")?.parse().ok())
                    .unwrap_or(1)
            });
            let port = port.unwrap_or_else(|| nodes.ports().last().copied().unwrap_or(7000) + 1);
            let seed = live[0].clone();
            let primary = addr(port);
            let v = admin::view(&seed).await?;
            if v.by_addr(&primary).is_none() {
                nodes.start(port).await?;
                admin::meet(&seed, &primary).await?;
            }
            let mut all = live.clone();
            all.push(primary.clone());
            admin::wait_known(&all, std::slice::from_ref(&primary)).await?;
            let pid = admin::node_id(&primary).await?;
            for r in 1..=replicas as u16 {
                let ra = addr(port + r);
                if admin::view(&seed).await?.by_addr(&ra).is_none() {
                    nodes.start(port + r).await?;
                    admin::meet(&seed, &ra).await?;
                }
                all.push(ra.clone());
                admin::wait_known(&all, std::slice::from_ref(&ra)).await?;
                admin::replicate(&ra, &pid).await?;
            }
            admin::wait_settled(&all, &Expect::default(), "every node to know the new shard")
                .await?;
            log(&format!("rebalancing slots onto {primary}"));
            admin::rebalance(&all, std::slice::from_ref(&primary)).await?;
            admin::wait_settled(&all, &Expect::default(), "the new slot layout").await?;
            log(&format!(
                "shard {port} added in {:.1} s",
                started.elapsed().as_secs_f64()
            ));
            println!("{}", nodes.seeds());
        }
        Cmd::RemoveShard { dir, port } => {
            let nodes = LocalNodes {
                dir: dir.dir,
                node_conf: PathBuf::new(),
            };
            if !nodes.alive(port) {
                log(&format!("node {port} is not running; nothing to remove"));
                nodes.stop(port).await;
                return Ok(());
            }
            let live: Vec<String> = nodes.live_ports().iter().map(|p| addr(*p)).collect();
            admin::wait_settled(&live, &Expect::default(), "the cluster to be healthy").await?;
            let v = admin::view(&addr(port)).await?;
            let me = v
                .myself()
                .cloned()
                .ok_or_else(|| AdminError::Invalid("the node does not list itself".into()))?;
            // The shard: the node's master (itself, if it is one) and its replicas.
            let master = match &me.master {
                Some(id) if !me.is_master() => v
                    .by_id(id)
                    .cloned()
                    .ok_or_else(|| AdminError::Invalid(format!("unknown master {id}")))?,
                _ => me.clone(),
            };
            let members: Vec<_> = std::iter::once(master.clone())
                .chain(v.replicas_of(&master.id).into_iter().cloned())
                .collect();
            let others: Vec<String> = live
                .iter()
                .filter(|a| !members.iter().any(|m| &m.addr == *a))
                .cloned()
                .collect();
            let Some(seed) = others.first().cloned() else {
                return Err(AdminError::Invalid(
                    "refusing to remove the last shard".into(),
                ));
            };
            log(&format!(
                "moving {} slots away from {}",
                master.slot_count(),
                master.addr
            ));
            admin::drain_master(&seed, &master.addr).await?;
            admin::wait_settled(&live, &Expect::default(), "the shard to be empty").await?;
            let ids: Vec<String> = members.iter().map(|m| m.id.clone()).collect();
            admin::forget(&others, &ids).await?;
            for m in &members {
                nodes.stop(m.port).await;
            }
            let dead = members.iter().map(|m| m.addr.clone()).collect();
            admin::wait_settled(
                &others,
                &Expect {
                    dead,
                    ..Expect::default()
                },
                "the remaining nodes to agree",
            )
            .await?;
            log(&format!(
                "shard removed in {:.1} s",
                started.elapsed().as_secs_f64()
            ));
            println!("{}", nodes.seeds());
        }
        Cmd::MigrateSlot { dir, slot, to } => {
            let nodes = LocalNodes {
                dir: dir.dir,
                node_conf: PathBuf::new(),
            };
            let live: Vec<String> = nodes.live_ports().iter().map(|p| addr(*p)).collect();
            let seed = live
                .first()
                .cloned()
                .ok_or_else(|| AdminError::Invalid("no running cluster".into()))?;
            admin::move_slot(&seed, slot, &addr(to)).await?;
            admin::wait_settled(&live, &Expect::default(), "the slot move").await?;
            log(&format!("slot {slot} moved to {to}"));
        }
        Cmd::Create { replicas, nodes } => {
            let mut addrs = Vec::new();
            for n in &nodes {
                let resolved = shardcast_testkit::wait::until(
                    &format!("{n} to resolve"),
                    admin::SETTLE,
                    std::time::Duration::from_millis(500),
                    || async {
                        tokio::net::lookup_host(n.as_str())
                            .await
                            .map_err(|e| e.to_string())?
                            .find(|a| a.is_ipv4())
                            .ok_or_else(|| format!("{n} has no IPv4 address"))
                    },
                )
                .await?;
                addrs.push(resolved.to_string());
            }
            for a in &addrs {
                shardcast_testkit::wait::until(
                    &format!("{a} to answer PING"),
                    admin::SETTLE,
                    std::time::Duration::from_millis(500),
                    || async {
                        admin::query::<String>(a, &redis::cmd("PING"))
                            .await
                            .map_err(|e| e.to_string())
                    },
                )
                .await?;
            }
            let masters = addrs.len() / (1 + replicas);
            if masters < 3 || addrs.len() % (1 + replicas) != 0 {
                return Err(AdminError::Invalid(format!(
                    "{} nodes cannot form 3 or more shards of 1 master + {replicas} replicas",
                    addrs.len()
                )));
            }
            let mut fresh = 0;
            for a in &addrs {
                let info: String = admin::query(a, redis::cmd("CLUSTER").arg("INFO")).await?;
                fresh += usize::from(info.contains("cluster_known_nodes:1\r"));
            }
            if fresh == addrs.len() {
                log(&format!(
                    "creating a cluster: {masters} masters, {replicas} replica(s) each"
                ));
                let (prim, reps) = addrs.split_at(masters);
                let reps: Vec<(String, usize)> = reps
                    .iter()
                    .enumerate()
                    .map(|(i, a)| (a.clone(), i % masters))
                    .collect();
                admin::create(prim, &reps).await?;
            } else if fresh > 0 {
                return Err(AdminError::Invalid(format!(
                    "{fresh} of {} nodes are not in a cluster but the others are; recreate the stack",
                    addrs.len()
                )));
            } else {
                log("the nodes already form a cluster; checking it");
                admin::wait_settled(
                    &addrs,
                    &Expect {
                        primaries: Some(masters),
                        replicas_per_primary: Some(replicas),
                        ..Expect::default()
                    },
                    "the cluster to agree",
                )
                .await?;
            }
            log("cluster ready");
        }
    }
    Ok(())
}
