//! Where the Redis nodes are: the slot map, read from the cluster (`CLUSTER
//! SHARDS`, falling back to `CLUSTER SLOTS`), from one server, or from the
//! primary the sentinels name ([`super::source`]).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::Shared;
use super::connector::Connector;
use super::source::{self, Source};
use super::topology::{RedisAddr, SlotMap, parse_cluster_shards, parse_cluster_slots};
use crate::broker::BrokerError;

impl Shared {
    /// Reads the slot map and installs it. Returns whether it changed.
    pub(super) async fn refresh_topology(&self) -> Result<bool, BrokerError> {
        self.metrics.redis_topology_refreshes.increment(1);
        let read = self.read_topology().await;
        self.reachable.store(read.is_ok(), Ordering::Relaxed);
        self.metrics
            .redis_up
            .set(if read.is_ok() { 1.0 } else { 0.0 });
        let (map, via) = read.map_err(BrokerError::NoTopology)?;
        let map = Arc::new(map);
        let mut slot = self.topology.write().unwrap_or_else(|e| e.into_inner());
        let changed = slot.as_deref() != Some(&*map);
        if changed {
            tracing::info!(shards = map.shards.len(), via = %via, "Redis topology updated");
            match slot.as_deref() {
                Some(old) => {
                    for change in super::topology::diff(old, &map) {
                        self.timeline.record("topology", change);
                    }
                }
                None => self.timeline.record(
                    "topology",
                    format!("slot map read: {} shards", map.shards.len()),
                ),
            }
        }
        *slot = Some(map);
        Ok(changed)
    }

    /// The slot map, and which node (or sentinel) told.
    async fn read_topology(&self) -> Result<(SlotMap, RedisAddr), String> {
        match &self.source {
            Source::Cluster { seeds } => {
                // Known nodes first, seeds last.
                let mut candidates: Vec<RedisAddr> = self
                    .map()
                    .map(|m| m.addrs().into_iter().collect())
                    .unwrap_or_default();
                candidates.extend(seeds.iter().cloned());
                let mut last_err = String::from("no nodes to ask");
                for addr in candidates {
                    match fetch_shards(&self.connector, &addr).await {
                        Ok(map) if map.covered() > 0 => return Ok((map, addr)),
                        Ok(_) => last_err = format!("{addr}: no slots assigned"),
                        Err(e) => last_err = format!("{addr}: {e}"),
                    }
                }
                Err(last_err)
            }
            Source::Standalone { addr } => source::fetch_primary(&self.connector, addr)
                .await
                .map(|m| (m, addr.clone()))
                .map_err(|e| format!("{addr}: {e}")),
            Source::Sentinel { sentinels, master } => {
                let mut last_err = String::from("no sentinels to ask");
                for (sentinel, login) in sentinels {
                    let asked = self.connector.with_login(login.clone());
                    let primary = match source::sentinel_primary(&asked, sentinel, master).await {
                        Ok(p) => p,
                        Err(e) => {
                            last_err = format!("sentinel {sentinel}: {e}");
                            continue;
                        }
                    };
                    // The sentinel may name a replica still being promoted, or a
                    // primary that has just died (another sentinel may know better).
                    match source::fetch_primary(&self.connector, &primary).await {
                        Ok(m) => return Ok((m, sentinel.clone())),
                        Err(e) => {
                            last_err = format!("{primary} (named by sentinel {sentinel}): {e}")
                        }
                    }
                }
                Err(last_err)
            }
        }
    }
}

async fn fetch_shards(connector: &Connector, addr: &str) -> Result<SlotMap, String> {
    let mut conn = connector
        .connection(addr)
        .await
        .map_err(|e| e.to_string())?;
    let shards = redis::cmd("CLUSTER")
        .arg("SHARDS")
        .query_async::<redis::Value>(&mut conn)
        .await
        .ok()
        .and_then(|v| parse_cluster_shards(&v));
    Ok(match shards {
        Some((shards, health)) => SlotMap::with_health(shards, health),
        None => {
            let v = redis::cmd("CLUSTER")
                .arg("SLOTS")
                .query_async::<redis::Value>(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
            SlotMap::new(parse_cluster_slots(&v).ok_or("unreadable CLUSTER SLOTS reply")?)
        }
    })
}
