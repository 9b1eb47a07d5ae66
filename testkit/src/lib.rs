//! shardcast-testkit: a Redis Cluster in Docker containers for integration tests,
//! with fault injection, and the helpers to test an application built on
//! shardcast end to end: shardcast instances as processes, a WebSocket client,
//! token minting, `/metrics` scrapes and a delivery recorder that counts what was
//! lost, duplicated or reordered through a fault.
//!
//! Needs a Docker daemon and a Redis 7 image for [`RedisCluster`]
//! (`SHARDCAST_TEST_REDIS_IMAGE`, default `redis:7.0`), and the shardcast binary
//! for [`Shardcast`]. The README (`testkit/README.md`) is the guide; this is the
//! reference. The whole story in one test (the README's example; in a test file,
//! put `#[tokio::test(flavor = "multi_thread")]` on it):
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use shardcast_testkit::{Load, RedisCluster, Shardcast};
//!
//! async fn nothing_acknowledged_is_lost_when_a_primary_dies()
//! -> Result<(), Box<dyn std::error::Error>> {
//!     // A Redis Cluster: 3 primaries with a replica each, settled on return.
//!     let mut cluster = RedisCluster::builder()
//!         .primaries(3)
//!         .replicas_per_primary(1)
//!         .start()
//!         .await?;
//!
//!     // Two shardcast instances on it. `orders:*` are history channels, which
//!     // shardcast delivers without loss through a failover.
//!     let bin = std::env::var("SHARDCAST_BIN").unwrap_or_else(|_| "target/debug/shardcast".into());
//!     let run = Shardcast::on_cluster(&bin, &cluster.seeds()).args([
//!         "--insecure", // `?user=<name>` identifies a client
//!         "--client-publish", "authenticated", // clients may publish
//!         "--history", "orders:100000:600s",
//!     ]);
//!     let a = run.start(&[]).await; // returns once /readyz answers 200
//!     let b = run.start(&[]).await;
//!
//!     // A client on each: what bob publishes on b reaches alice on a.
//!     let mut alice = a.client("alice").await;
//!     alice.subscribe("orders:42", 1).await;
//!     let mut bob = b.client("bob").await;
//!     let ack = bob.publish("orders:42", serde_json::json!({"status": "paid"}), 1).await;
//!     assert_eq!(ack["op"], "ok", "{ack}");
//!     assert_eq!(alice.next_message().await["data"]["status"], "paid");
//!
//!     // Recorded traffic on channels of the primary about to die.
//!     let victim = cluster.owner_of("orders:42").await?;
//!     let channels = cluster.channels_on(victim, "orders", 4).await?;
//!     let mut load = Load::new();
//!     load.subscriber(&a.ws_url("?user=sub"), "sub", &channels).await;
//!     load.publisher(&b.ws_url("?user=pub"), "pub", channels.clone(), Duration::from_millis(5))
//!         .await;
//!     tokio::time::sleep(Duration::from_secs(1)).await;
//!
//!     // Kill it: returns once a replica serves its slots on every node.
//!     let killed_at = tokio::time::Instant::now();
//!     assert_eq!(cluster.kill_primary_of("orders:42").await?, victim);
//!     tokio::time::sleep(Duration::from_secs(3)).await; // traffic after the failover
//!
//!     // Every acknowledged publication arrived once, in order, offsets gapless.
//!     let o = load.finish().await.outcome(|_| true, Some(killed_at));
//!     assert!(o.expected_after > 100, "traffic after the kill: {o:?}");
//!     assert_eq!((o.lost, o.duplicated, o.out_of_order, o.offset_gaps), (0, 0, 0, 0), "{o:?}");
//!     Ok(())
//! }
//! ```
//!
//! Modules:
//! * [`admin`]: cluster administration over the cluster commands (form, add and
//!   remove shards, move slots, fail over, wait until every node agrees). The same
//!   code runs containers ([`RedisCluster`]), local `redis-server` processes (the
//!   `shardcast-cluster` CLI) and the compose stack's init job.
//! * [`containers`] (feature `containers`, on by default): [`RedisCluster`], nodes
//!   in Docker through testcontainers, and its fault operations.
//! * [`local`]: a cluster of local `redis-server` processes, recorded in a
//!   directory (what the `shardcast-cluster` CLI runs).
//! * [`server`]: one `redis-server` (replica, password, AOF, TLS) and
//!   `redis-sentinel` processes, for `--broker redis` and `--broker redis-sentinel`.
//! * [`shardcast`]: [`Shardcast`], instances of the shardcast binary as processes.
//! * [`client`]: [`Client`], a WebSocket client for shardcast's protocol.
//! * [`delivery`]: sequence-numbered load and its accounting (lost, duplicated,
//!   out of order, offset gaps, before and after an event).
//! * [`token`]: connection and subscription tokens for the instances under test.
//! * [`ws_frame`], [`http`], [`prometheus`], [`wait`], [`ports`]: wire-level and
//!   polling helpers.
//!
//! Without the `containers` feature (`--no-default-features`) the crate has no
//! Docker dependency; the `shardcast-cluster` binary is built that way by
//! shardcast's `cluster/*.sh` scripts.

#![warn(missing_docs)]
// The docs link to `RedisCluster`, which only exists with the default feature.
#![cfg_attr(not(feature = "containers"), allow(rustdoc::broken_intra_doc_links))]

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
