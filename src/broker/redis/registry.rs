//! The instance registry on Redis: every instance writes its report (one JSON
//! document) under `shardcast:{registry}:instance:<id>` with a TTL, and its expiry
//! into the index `shardcast:{registry}:instances` (a sorted set), every second.
//! All keys share the `{registry}` hash tag: one slot, one shard, one round trip
//! per heartbeat. A dead instance's key expires and its index entry is dropped by
//! the next heartbeat or read, so it disappears within the TTL.

use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;

use super::Shared;
use crate::broker::BrokerError;

const INDEX: &str = "shardcast:{registry}:instances";
const PREFIX: &str = "shardcast:{registry}:instance:";

static ANNOUNCE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/registry_announce.lua")));
static LIST: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/registry_list.lua")));

impl Shared {
    pub(crate) async fn announce(
        &self,
        id: &str,
        report: &str,
        ttl: Duration,
    ) -> Result<(), BrokerError> {
        let _: i64 = ANNOUNCE
            .key(format!("{PREFIX}{id}"))
            .key(INDEX)
            .arg(id)
            .arg(report)
            .arg(ttl.as_millis() as u64)
            .invoke_async(&mut self.data().await?)
            .await
            .map_err(BrokerError::redis("instance heartbeat failed"))?;
        Ok(())
    }

    pub(crate) async fn instances(&self) -> Result<Vec<String>, BrokerError> {
        LIST.key(INDEX)
            .arg(PREFIX)
            .invoke_async(&mut self.data().await?)
            .await
            .map_err(BrokerError::redis("instance list failed"))
    }

    /// Removes this instance at shutdown (it would expire anyway).
    pub(crate) async fn forget_instance(&self, id: &str) -> Result<(), BrokerError> {
        let mut conn = self.data().await?;
        let mut pipe = redis::pipe();
        pipe.cmd("DEL").arg(format!("{PREFIX}{id}")).ignore();
        pipe.cmd("ZREM").arg(INDEX).arg(id).ignore();
        pipe.query_async::<()>(&mut conn)
            .await
            .map_err(BrokerError::redis("instance removal failed"))
    }
}
