//! The data connection: publishing, history, presence and registry commands.
//!
//! On a cluster it is redis-rs's cluster connection (routed by slot, following
//! MOVED/ASK). On one server or behind Sentinel it is one multiplexed connection
//! to the current primary, cached until it fails or the primary changes: redis-rs
//! does not follow a Sentinel failover on a multiplexed connection, so the slot
//! map (which [`super::source`] keeps current) says where the primary is and a
//! failed connection is dropped so that the next command connects afresh.
//!
//! Either way a failed command hints a slot-map refresh: an instance that only
//! publishes has no subscriber connection to notice a failover, and its map
//! decides where WAIT goes and whether a history publish waits for a replica at
//! all (a stale map that still lists the promoted replica made every history
//! publish wait out its replication timeout, stalling the shard's connection).

use futures_util::FutureExt;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{Cmd, Pipeline, RedisError, RedisFuture, RedisResult, Value};

use super::Shared;
use super::topology::RedisAddr;
use crate::broker::BrokerError;

/// A connection for one or a few commands; cheap to get and to clone.
pub(super) enum DataConn<'s> {
    Cluster {
        conn: ClusterConnection,
        shared: &'s Shared,
    },
    Single {
        conn: MultiplexedConnection,
        addr: RedisAddr,
        shared: &'s Shared,
    },
}

impl DataConn<'_> {
    /// Runs `cmd` on the primary that owns `slot` (WAIT, PUBSUB SHARDNUMSUB: commands
    /// with no key to route by).
    pub(super) async fn on_primary(&mut self, slot: u16, cmd: Cmd) -> RedisResult<Value> {
        match self {
            DataConn::Cluster { conn, .. } => {
                let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(
                    Route::new(slot, SlotAddr::Master),
                ));
                let r = conn.route_command(cmd, route).await;
                self.check(r)
            }
            DataConn::Single { .. } => cmd.query_async(self).await,
        }
    }

    /// After a dead socket, a timeout, or `READONLY` (the primary was demoted)
    /// the topology is re-read, and a single-server connection is dropped.
    fn check<T>(&self, result: RedisResult<T>) -> RedisResult<T> {
        if let Err(e) = &result
            && connection_failed(e)
        {
            match self {
                DataConn::Single { addr, shared, .. } => shared.single_failed(addr),
                DataConn::Cluster { shared, .. } => shared.topology_suspect(),
            }
        }
        result
    }
}

fn connection_failed(e: &RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_unrecoverable_error()
        || e.code() == Some("READONLY")
}

impl ConnectionLike for DataConn<'_> {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        async move {
            let r = match self {
                DataConn::Cluster { conn, .. } => conn.req_packed_command(cmd).await,
                DataConn::Single { conn, .. } => conn.req_packed_command(cmd).await,
            };
            self.check(r)
        }
        .boxed()
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        async move {
            let r = match self {
                DataConn::Cluster { conn, .. } => {
                    conn.req_packed_commands(cmd, offset, count).await
                }
                DataConn::Single { conn, .. } => conn.req_packed_commands(cmd, offset, count).await,
            };
            self.check(r)
        }
        .boxed()
    }

    fn get_db(&self) -> i64 {
        match self {
            DataConn::Cluster { conn, .. } => conn.get_db(),
            DataConn::Single { conn, .. } => conn.get_db(),
        }
    }
}

impl Shared {
    /// The data connection, created on first use (and, for one server, again after
    /// a failure or a failover).
    pub(super) async fn data(&self) -> Result<DataConn<'_>, BrokerError> {
        if self.source.is_cluster() {
            let conn = self.cluster_conn().await?;
            return Ok(DataConn::Cluster { conn, shared: self });
        }
        let primary = self
            .map()
            .and_then(|m| m.shards.first().map(|s| s.primary.clone()))
            .ok_or_else(|| BrokerError::NoTopology("the primary is not known yet".into()))?;
        let mut cached = self.single.lock().await;
        if let Some((addr, conn)) = cached.as_ref()
            && *addr == primary
        {
            return Ok(DataConn::Single {
                conn: conn.clone(),
                addr: addr.clone(),
                shared: self,
            });
        }
        let conn = self
            .connector
            .connection(&primary)
            .await
            .map_err(BrokerError::redis("cannot reach the Redis primary"))?;
        *cached = Some((primary.clone(), conn.clone()));
        Ok(DataConn::Single {
            conn,
            addr: primary,
            shared: self,
        })
    }

    async fn cluster_conn(&self) -> Result<ClusterConnection, BrokerError> {
        self.cluster
            .get_or_try_init(|| async {
                let seeds = match &self.source {
                    super::source::Source::Cluster { seeds } => seeds.clone(),
                    _ => Vec::new(),
                };
                self.connector
                    .cluster_connection(&seeds)
                    .await
                    .map_err(BrokerError::redis("cannot reach the cluster"))
            })
            .await
            .cloned()
    }

    fn single_failed(&self, addr: &RedisAddr) {
        if let Ok(mut cached) = self.single.try_lock()
            && cached.as_ref().is_some_and(|(a, _)| a == addr)
        {
            *cached = None;
        }
        self.topology_suspect();
    }

    /// Something the slot map predicted did not hold (a command failed, or no
    /// replica acknowledged a write): re-read the topology soon.
    pub(super) fn topology_suspect(&self) {
        self.hint_refresh();
        self.kick.notify_one();
    }
}
