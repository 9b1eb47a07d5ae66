//! Presence on Redis: members of a channel in a hash and their expiry in a sorted
//! set, both in the channel's slot; join, leave, refresh and reads are Lua
//! scripts (`scripts/presence_*.lua`), so that a membership change and its
//! join/leave publication are one atomic step on the channel's shard.

use std::time::Duration;

use serde_json::value::RawValue;

use super::Shared;
use super::keys::{self, Keys};
use crate::broker::{BrokerError, PresenceBatch, wire};
use crate::channel::{Channel, ClientId};
use crate::presence::{Found, Member, Stats};
use crate::publication::{Kind, Publication};

/// The wire payload of a join or leave of `entry` on `channel`.
fn event(channel: &Channel, kind: Kind, entry: &str) -> Result<Vec<u8>, BrokerError> {
    let data = RawValue::from_string(entry.to_string()).map_err(BrokerError::Encode)?;
    let mut p = Publication::new(channel.clone(), data, None);
    p.kind = kind;
    wire::plain(&p, wire::new_uid()).map_err(BrokerError::Encode)
}

impl Shared {
    async fn conn(&self) -> Result<super::conn::DataConn<'_>, BrokerError> {
        self.data().await
    }

    pub(crate) async fn presence_join(
        &self,
        channel: &Channel,
        client: &ClientId,
        entry: &str,
        ttl: Duration,
        join_leave: bool,
    ) -> Result<(), BrokerError> {
        let k = Keys::of(channel);
        let join = if join_leave {
            event(channel, Kind::Join, entry)?
        } else {
            Vec::new()
        };
        let _: i64 = keys::PRESENCE_JOIN
            .key(&k.members)
            .key(&k.expiry)
            .arg(client.as_str())
            .arg(entry)
            .arg(ttl.as_millis() as u64)
            .arg(channel.as_str())
            .arg(join)
            .invoke_async(&mut self.conn().await?)
            .await
            .map_err(BrokerError::redis("presence join failed"))?;
        Ok(())
    }

    pub(crate) async fn presence_leave(
        &self,
        channel: &Channel,
        client: &ClientId,
        entry: &str,
        join_leave: bool,
    ) -> Result<(), BrokerError> {
        let k = Keys::of(channel);
        let leave = if join_leave {
            event(channel, Kind::Leave, entry)?
        } else {
            Vec::new()
        };
        let _: i64 = keys::PRESENCE_LEAVE
            .key(&k.members)
            .key(&k.expiry)
            .arg(client.as_str())
            .arg(channel.as_str())
            .arg(leave)
            .invoke_async(&mut self.conn().await?)
            .await
            .map_err(BrokerError::redis("presence leave failed"))?;
        Ok(())
    }

    /// Every channel's refresh in one pipeline: redis-rs sends one batch per
    /// Redis node, so the cost is a round trip per node, not per client or channel.
    pub(crate) async fn presence_refresh(
        &self,
        batch: &[PresenceBatch],
        ttl: Duration,
    ) -> Result<(), BrokerError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn().await?;
        let invocation = |b: &PresenceBatch| {
            let k = Keys::of(&b.channel);
            let mut cmd = redis::cmd("EVALSHA");
            cmd.arg(keys::PRESENCE_REFRESH.get_hash())
                .arg(2)
                .arg(&k.members)
                .arg(&k.expiry)
                .arg(ttl.as_millis() as u64)
                .arg(b.channel.as_str())
                .arg(if b.join_leave { "1" } else { "0" });
            for (client, entry) in &b.members {
                cmd.arg(client.as_str()).arg(&**entry);
            }
            cmd
        };
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for b in batch {
            pipe.add_command(invocation(b));
        }
        let replies: Result<Vec<redis::Value>, _> = pipe.query_async(&mut conn).await;
        let failed: Vec<&PresenceBatch> = match &replies {
            Ok(values) if values.len() == batch.len() => batch
                .iter()
                .zip(values)
                .filter(|(_, v)| matches!(v, redis::Value::ServerError(_)))
                .map(|(b, _)| b)
                .collect(),
            _ => batch.iter().collect(),
        };
        // A node that did not have the script yet (NOSCRIPT), a slot that moved
        // meanwhile: once more, one at a time, through the loading path.
        for b in failed {
            let k = Keys::of(&b.channel);
            let mut inv = keys::PRESENCE_REFRESH.key(&k.members);
            inv.key(&k.expiry)
                .arg(ttl.as_millis() as u64)
                .arg(b.channel.as_str())
                .arg(if b.join_leave { "1" } else { "0" });
            for (client, entry) in &b.members {
                inv.arg(client.as_str()).arg(&**entry);
            }
            let _: i64 = inv
                .invoke_async(&mut conn)
                .await
                .map_err(BrokerError::redis("presence refresh failed"))?;
        }
        Ok(())
    }

    async fn presence_read(
        &self,
        channel: &Channel,
        join_leave: bool,
        stats: bool,
        max: usize,
    ) -> Result<(u64, u64, Vec<String>), BrokerError> {
        let k = Keys::of(channel);
        keys::PRESENCE_READ
            .key(&k.members)
            .key(&k.expiry)
            .arg(channel.as_str())
            .arg(if join_leave { "1" } else { "0" })
            .arg(if stats { "stats" } else { "list" })
            .arg(max)
            .invoke_async(&mut self.conn().await?)
            .await
            .map_err(BrokerError::redis("presence read failed"))
    }

    pub(crate) async fn presence(
        &self,
        channel: &Channel,
        join_leave: bool,
        max: usize,
    ) -> Result<Found, BrokerError> {
        let (n, _, entries) = self.presence_read(channel, join_leave, false, max).await?;
        if n > max as u64 {
            return Ok(Found::TooMany(n));
        }
        Ok(Found::Members(
            entries
                .iter()
                .filter_map(|e| serde_json::from_str::<Member>(e).ok())
                .collect(),
        ))
    }

    pub(crate) async fn presence_stats(
        &self,
        channel: &Channel,
        join_leave: bool,
    ) -> Result<Stats, BrokerError> {
        let (clients, users, _) = self.presence_read(channel, join_leave, true, 0).await?;
        Ok(Stats { clients, users })
    }
}
