//! Publishing and history reads: plain SPUBLISHes on the publishing connections
//! ([`super::pipe`], routed by the channel's slot), with the data connection
//! ([`super::conn`], following MOVED/ASK) for what they could not take; the history
//! scripts and the replication wait after a stored publish on the data connection.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::Shared;
use super::conn::DataConn;
use super::keys::{self, Keys};
use super::pipe::{Batch, Pipes};
use super::resp::{self, Frame};
use super::topology::RedisAddr;
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
        self: &Arc<Self>,
        p: Publication,
        retention: Option<&Retention>,
        idempotency_key: Option<&str>,
    ) -> Result<PublishAck, BrokerError> {
        let Some(r) = retention else {
            let mut answers = self.publish_plain_batch(vec![p]).await;
            return answers
                .pop()
                .expect("publish_plain_batch answers every publication");
        };
        let mut conn = self.data().await?;
        let started = Instant::now();
        let result = self.publish_stored(&mut conn, &p, r, idempotency_key).await;
        self.metrics
            .redis_latency
            .record(started.elapsed().as_secs_f64());
        result
    }

    /// Plain publications, each batch of one primary's in one write on that
    /// primary's publishing connection ([`super::pipe`]): one round trip for a burst
    /// from one client connection. A command Redis refused (e.g. MOVED while a slot
    /// moves), or one the connection lost, is retried alone, in order, through the
    /// data connection, which follows redirects; a retry sends the same payload
    /// (same id), so a repeat Redis did run is dropped by the hubs.
    pub(super) async fn publish_plain_batch(
        self: &Arc<Self>,
        publications: Vec<Publication>,
    ) -> Vec<Result<PublishAck, BrokerError>> {
        let payloads: Vec<Result<Vec<u8>, serde_json::Error>> = publications
            .iter()
            .map(|p| wire::plain(p, wire::new_uid()))
            .collect();
        let mut accepted = vec![false; publications.len()];
        let started = Instant::now();
        let mut waits = Vec::new();
        if let Some(map) = self.map() {
            // One batch per primary; a handful of primaries, so a list.
            let mut batches: Vec<(&RedisAddr, Vec<u8>, Vec<usize>)> = Vec::new();
            for (i, (p, payload)) in publications.iter().zip(&payloads).enumerate() {
                let (Ok(payload), Some(addr)) =
                    (payload, map.owner(key_slot(p.channel.as_str().as_bytes())))
                else {
                    continue;
                };
                let at = match batches.iter().position(|(a, ..)| *a == addr) {
                    Some(at) => at,
                    None => {
                        batches.push((addr, Vec::new(), Vec::new()));
                        batches.len() - 1
                    }
                };
                let (_, commands, sent) = &mut batches[at];
                resp::encode(
                    commands,
                    &[b"SPUBLISH", p.channel.as_str().as_bytes(), payload],
                );
                sent.push(i);
            }
            for (addr, commands, sent) in batches {
                let (reply, answered) = oneshot::channel();
                let batch = Batch {
                    commands,
                    count: sent.len(),
                    reply,
                };
                if Pipes::send(self, addr, batch).is_ok() {
                    waits.push((sent, answered));
                }
            }
        }
        for (sent, answered) in waits {
            // A dropped batch (the connection failed) leaves its commands unaccepted.
            let Ok(replies) = answered.await else {
                continue;
            };
            for (i, reply) in sent.into_iter().zip(replies) {
                match reply {
                    Frame::Error(e) => {
                        tracing::debug!(error = %e, "SPUBLISH refused; retrying through the data connection");
                        self.topology_suspect();
                    }
                    _ => accepted[i] = true,
                }
            }
        }
        self.metrics
            .redis_latency
            .record(started.elapsed().as_secs_f64());
        let mut conn = None;
        let mut out = Vec::with_capacity(publications.len());
        for ((p, payload), ok) in publications.iter().zip(payloads).zip(accepted) {
            out.push(match payload {
                Err(e) => Err(encode_error(e)),
                Ok(_) if ok => Ok(PublishAck::default()),
                Ok(payload) => {
                    self.metrics.redis_publish_retries.increment(1);
                    let conn = match &mut conn {
                        Some(c) => c,
                        None => conn.insert(self.data().await.map_err(Arc::new)),
                    };
                    match conn {
                        Ok(conn) => spublish(conn, &p.channel, &payload).await,
                        Err(e) => Err(BrokerError::Batch(e.clone())),
                    }
                }
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
    ///
    /// The primary comes from our slot map, on a connection made for the call (an
    /// operator's lookup, not a hot path): the command has no key, so redis-rs's
    /// cluster connection would route it by its own slot map, and that map is
    /// refreshed only by a MOVED, which plain publishes no longer meet there (they
    /// go through [`super::pipe`]). Right after a slot moved it asked the old owner,
    /// which answers 0.
    pub(crate) async fn shard_numsub(&self, channel: &Channel) -> Result<i64, BrokerError> {
        let slot = key_slot(channel.as_str().as_bytes());
        let owner = self
            .map()
            .and_then(|m| m.owner(slot).cloned())
            .ok_or_else(|| BrokerError::NoTopology(format!("no known owner of slot {slot}")))?;
        let mut conn = self
            .connector
            .connection(&owner)
            .await
            .map_err(BrokerError::redis("cannot reach the slot's primary"))?;
        let v: redis::Value = redis::cmd("PUBSUB")
            .arg("SHARDNUMSUB")
            .arg(channel.as_str())
            .query_async(&mut conn)
            .await
            .map_err(BrokerError::redis("SHARDNUMSUB failed"))?;
        let pair: Vec<redis::Value> = redis::from_redis_value(v).unwrap_or_default();
        Ok(pair
            .get(1)
            .and_then(|n| redis::from_redis_value::<i64>(n.clone()).ok())
            .unwrap_or(0))
    }
}
