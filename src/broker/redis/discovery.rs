//! Where the Redis nodes are: seed addresses from the configuration and the slot
//! map read from the cluster (`CLUSTER SHARDS`, falling back to `CLUSTER SLOTS`).

use std::sync::Arc;
use std::time::Duration;

use super::Shared;
use super::topology::{RedisAddr, SlotMap, parse_cluster_shards, parse_cluster_slots};
use crate::broker::BrokerError;

/// Connect and response timeout of every short-lived discovery connection.
pub const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

/// `redis://host:port` (or `host:port`) to `host:port`.
pub fn seed_addr(url: &str) -> Result<RedisAddr, BrokerError> {
    let rest = url
        .strip_prefix("redis://")
        .or_else(|| (!url.contains("://")).then_some(url))
        .ok_or_else(|| {
            BrokerError::Config(format!("unsupported seed `{url}` (use redis://host:port)"))
        })?;
    let hostport = rest
        .rsplit('@')
        .next()
        .unwrap_or(rest)
        .trim_end_matches('/');
    if hostport.is_empty() || !hostport.contains(':') {
        return Err(BrokerError::Config(format!("seed `{url}` needs host:port")));
    }
    Ok(hostport.to_string())
}

impl Shared {
    /// Reads the slot map from the first node that answers: known nodes first,
    /// seeds last. Returns whether the map changed.
    pub(super) async fn refresh_topology(&self) -> Result<bool, BrokerError> {
        self.metrics.redis_topology_refreshes.increment(1);
        let mut candidates: Vec<RedisAddr> = self
            .map()
            .map(|m| m.addrs().into_iter().collect())
            .unwrap_or_default();
        candidates.extend(self.seeds.iter().cloned());
        let mut last_err = String::from("no nodes to ask");
        for addr in candidates {
            match fetch_shards(&addr).await {
                Ok(map) if map.covered() > 0 => {
                    let map = Arc::new(map);
                    let mut slot = self.topology.write().unwrap_or_else(|e| e.into_inner());
                    let changed = slot.as_deref() != Some(&*map);
                    if changed {
                        tracing::info!(shards = map.shards.len(), via = %addr, "cluster topology updated");
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
                    return Ok(changed);
                }
                Ok(_) => last_err = format!("{addr}: no slots assigned"),
                Err(e) => last_err = format!("{addr}: {e}"),
            }
        }
        Err(BrokerError::NoTopology(last_err))
    }
}

async fn fetch_shards(addr: &str) -> Result<SlotMap, String> {
    let client = redis::Client::open(format!("redis://{addr}")).map_err(|e| e.to_string())?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(REDIS_TIMEOUT))
        .set_response_timeout(Some(REDIS_TIMEOUT));
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&config)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_are_host_port_with_or_without_scheme() {
        assert_eq!(seed_addr("redis://10.0.0.1:7000").unwrap(), "10.0.0.1:7000");
        assert_eq!(seed_addr("h:1").unwrap(), "h:1");
        assert_eq!(seed_addr("redis://user:pw@h:1/").unwrap(), "h:1");
        assert!(seed_addr("rediss://h:1").is_err());
        assert!(seed_addr("redis://h").is_err());
    }
}
