//! Publishing and history reads through the data connection ([`super::conn`]):
//! SPUBLISH (on a cluster, routed by the channel's slot, following MOVED/ASK), the
//! history scripts, and the replication wait after a stored publish.

use std::time::Duration;

use tokio::time::Instant;

use super::Shared;
use super::conn::DataConn;
use super::keys::{self, Keys};
use crate::broker::{BrokerError, wire};
use crate::channel::Channel;
use crate::history::{HistoryPage, IDEMPOTENCY_WINDOW, Retention, new_epoch};
use crate::publication::{Publication, PublishAck};
use crate::slot::key_slot;

/// How long a per-publish dedup key lives (covers client-library resends).
const RESEND_WINDOW: Duration = Duration::from_secs(10);
/// How long a history publish waits for a replica to confirm it.
const REPLICA_WAIT: Duration = Duration::from_millis(500);

fn encode_error(e: serde_json::Error) -> BrokerError {
    BrokerError::Encode(e)
}

impl Shared {
    pub(super) async fn publish(
        &self,
        p: Publication,
        retention: Option<&Retention>,
        idempotency_key: Option<&str>,
    ) -> Result<PublishAck, BrokerError> {
        let mut conn = self.data().await?;
        let started = Instant::now();
        let result = match retention {
            None => match wire::plain(&p, wire::new_uid()) {
                Ok(payload) => spublish(&mut conn, &p.channel, &payload).await,
                Err(e) => Err(encode_error(e)),
            },
            Some(r) => self.publish_stored(&mut conn, &p, r, idempotency_key).await,
        };
        self.metrics
            .redis_latency
            .record(started.elapsed().as_secs_f64());
        result
    }

    /// Plain publications as one pipeline: one round trip for a burst from one
    /// connection. A command Redis refused (e.g. MOVED while a slot moves) is
    /// retried alone, in order, through the redirect-following path; a retry sends
    /// the same payload (same id), so a repeat Redis did run is dropped by the hubs.
    pub(super) async fn publish_plain_batch(
        &self,
        publications: Vec<Publication>,
    ) -> Vec<Result<PublishAck, BrokerError>> {
        let payloads: Vec<Result<Vec<u8>, serde_json::Error>> = publications
            .iter()
            .map(|p| wire::plain(p, wire::new_uid()))
            .collect();
        let mut conn = match self.data().await {
            Ok(c) => c,
            Err(e) => {
                let e = std::sync::Arc::new(e);
                return publications
                    .iter()
                    .map(|_| Err(BrokerError::Batch(e.clone())))
                    .collect();
            }
        };
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        let mut sent = Vec::new();
        for (i, (p, payload)) in publications.iter().zip(&payloads).enumerate() {
            if let Ok(payload) = payload {
                pipe.cmd("SPUBLISH").arg(p.channel.as_str()).arg(payload);
                sent.push(i);
            }
        }
        let started = Instant::now();
        let replies: Result<Vec<redis::Value>, _> = pipe.query_async(&mut conn).await;
        self.metrics
            .redis_latency
            .record(started.elapsed().as_secs_f64());
        let mut accepted = vec![false; publications.len()];
        if let Ok(values) = &replies
            && values.len() == sent.len()
        {
            for (i, v) in sent.iter().zip(values) {
                accepted[*i] = !matches!(v, redis::Value::ServerError(_));
            }
        }
        let mut out = Vec::with_capacity(publications.len());
        for ((p, payload), ok) in publications.iter().zip(payloads).zip(accepted) {
            out.push(match payload {
                Err(e) => Err(encode_error(e)),
                Ok(_) if ok => Ok(PublishAck::default()),
                Ok(payload) => spublish(&mut conn, &p.channel, &payload).await,
            });
        }
        out
    }

    /// Appends to the channel's stream and SPUBLISHes in one script on the slot's
    /// primary, then waits (briefly) for a replica to have it, so that an
    /// acknowledged publication survives a failover.
    async fn publish_stored(
        &self,
        conn: &mut DataConn<'_>,
        p: &Publication,
        retention: &Retention,
        idempotency_key: Option<&str>,
    ) -> Result<PublishAck, BrokerError> {
        let k = Keys::of(&p.channel);
        let mut inv = keys::PUBLISH.key(&k.stream);
        inv.key(&k.meta);
        let window = match idempotency_key {
            Some(key) => {
                inv.key(k.idempotency(key));
                IDEMPOTENCY_WINDOW
            }
            None => {
                inv.key(k.once());
                RESEND_WINDOW
            }
        };
        inv.arg(p.channel.as_str())
            .arg(wire::stored_tail(p).map_err(encode_error)?)
            .arg(retention.max_len)
            .arg(retention.ttl.as_millis() as u64)
            .arg(new_epoch())
            .arg(window.as_millis() as u64);
        let (offset, epoch, _repeated): (u64, String, i64) = inv
            .invoke_async(conn)
            .await
            .map_err(BrokerError::redis("history publish failed"))?;
        let slot = key_slot(p.channel.as_str().as_bytes());
        let has_replica = self
            .map()
            .and_then(|m| m.shard_of(slot).map(|s| !s.replicas.is_empty()))
            .unwrap_or(false);
        if has_replica {
            let mut wait = redis::cmd("WAIT");
            wait.arg(1).arg(REPLICA_WAIT.as_millis() as u64);
            match conn.on_primary(slot, wait).await {
                Ok(redis::Value::Int(n)) if n >= 1 => {}
                // Stored and published already: failing the publish now would only
                // invite a retry that stores it twice. Counted instead, and the map
                // re-read: the replica it lists may be gone (promoted in a failover
                // this instance has not heard of), and every WAIT until the map is
                // current would stall this shard's connection for REPLICA_WAIT.
                Ok(_) | Err(_) => {
                    self.metrics.history_unreplicated.increment(1);
                    self.topology_suspect();
                }
            }
        }
        Ok(PublishAck {
            offset: Some(offset),
            epoch: Some(epoch),
        })
    }

    pub(super) async fn history(
        &self,
        channel: &Channel,
        retention: &Retention,
        since: Option<u64>,
        limit: usize,
    ) -> Result<HistoryPage, BrokerError> {
        let mut conn = self.data().await?;
        let k = Keys::of(channel);
        let (epoch, top, payloads): (String, u64, Vec<Vec<u8>>) = keys::READ
            .key(&k.stream)
            .key(&k.meta)
            .arg(since.map(|s| s.to_string()).unwrap_or_default())
            .arg(limit.max(1))
            .arg(retention.ttl.as_millis() as u64)
            .invoke_async(&mut conn)
            .await
            .map_err(BrokerError::redis("history read failed"))?;
        let publications: Vec<Publication> = payloads
            .iter()
            .filter_map(|p| wire::decode(channel, p))
            .collect();
        let complete = match since {
            None => true,
            Some(s) => s >= top || publications.first().and_then(|p| p.offset) == Some(s + 1),
        };
        Ok(HistoryPage {
            epoch,
            top,
            publications,
            complete,
        })
    }
}

/// SPUBLISHes one prepared payload through the redirect-following path.
async fn spublish(
    conn: &mut DataConn<'_>,
    channel: &Channel,
    payload: &[u8],
) -> Result<PublishAck, BrokerError> {
    redis::cmd("SPUBLISH")
        .arg(channel.as_str())
        .arg(payload)
        .query_async::<i64>(conn)
        .await
        .map(|_| PublishAck::default())
        .map_err(BrokerError::redis("SPUBLISH failed"))
}

impl Shared {
    /// `PUBSUB SHARDNUMSUB` of `channel` on its slot's primary: how many
    /// subscriber connections (instances) hold it there.
    pub(crate) async fn shard_numsub(&self, channel: &Channel) -> Result<i64, BrokerError> {
        let mut conn = self.data().await?;
        let slot = key_slot(channel.as_str().as_bytes());
        let mut cmd = redis::cmd("PUBSUB");
        cmd.arg("SHARDNUMSUB").arg(channel.as_str());
        let v = conn
            .on_primary(slot, cmd)
            .await
            .map_err(BrokerError::redis("SHARDNUMSUB failed"))?;
        let pair: Vec<redis::Value> = redis::from_redis_value(v).unwrap_or_default();
        Ok(pair
            .get(1)
            .and_then(|n| redis::from_redis_value::<i64>(n.clone()).ok())
            .unwrap_or(0))
    }
}
