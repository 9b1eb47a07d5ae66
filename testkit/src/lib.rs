//! shardcast-testkit: a Redis Cluster in containers for integration tests, with
//! fault injection, and helpers to test applications built on shardcast.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use shardcast_testkit::{RedisCluster, Shardcast};
//!
//! let mut cluster = RedisCluster::builder()
//!     .primaries(3)
//!     .replicas_per_primary(1)
//!     .start()
//!     .await?;
//! let instances = Shardcast::on_cluster("/usr/local/bin/shardcast", &cluster.seeds())
//!     .args(["--insecure"]);
//! let a = instances.start(&[]).await;
//! let mut alice = a.client("alice").await;
//! alice.subscribe("room:1", 1).await;
//! cluster.kill_primary_of("room:1").await?; // returns once a replica took over
//! # Ok(()) }
//! ```
//!
//! Modules:
//! * [`admin`]: cluster administration over the cluster commands (form, add and
//!   remove shards, move slots, fail over, wait until every node agrees). The same
//!   code runs containers ([`RedisCluster`]), local `redis-server` processes (the
//!   `shardcast-cluster` CLI) and the compose stack's init job.
//! * [`RedisCluster`] (feature `containers`, on by default): nodes in Docker.
//! * [`server`]: one `redis-server` (replica, password, AOF, TLS) and
//!   `redis-sentinel` processes, for `--broker redis` and `--broker redis-sentinel`.
//! * [`Shardcast`]: instances of the shardcast binary as processes.
//! * [`Client`]: a WebSocket client for shardcast's protocol.
//! * [`delivery`]: sequence-numbered load and its accounting (lost, duplicated,
//!   out of order, offset gaps, before and after an event).
//! * [`token`]: connection and subscription tokens for the instances under test.
//! * [`ws_frame`], [`http`], [`prometheus`], [`wait`], [`ports`]: wire-level and
//!   polling helpers.

pub mod admin;
pub mod client;
#[cfg(feature = "containers")]
pub mod containers;
pub mod delivery;
pub mod http;
pub mod local;
pub mod ports;
pub mod prometheus;
pub mod server;
pub mod shardcast;
pub mod token;
pub mod wait;
pub mod ws_frame;

pub use client::{Client, PATIENCE, Received};
#[cfg(feature = "containers")]
pub use containers::{ClusterError, RedisCluster, RedisClusterBuilder, Target, key_slot};
pub use delivery::{Load, Outcome, Report};
pub use prometheus::Scrape;
pub use server::{RedisServer, Sentinel, SentinelSetup};
pub use shardcast::{Shardcast, ShardcastBuilder};
pub use wait::eventually;
