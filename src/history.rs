//! History: per-channel offsets, epochs and bounded retention.
//!
//! History is switched on per namespace (`--history chat:1000:300s`: channels
//! `chat:*` keep up to 1000 publications for up to 300 s). Every publication on a
//! history channel gets the next offset of its channel (1, 2, 3, ...), and the
//! channel has an epoch, a random token that changes whenever its history is lost
//! (expired, or the store came back empty), so that a client never mistakes a reset
//! for continuity. The embedded broker keeps history here, in memory; the Redis
//! Cluster broker keeps it in a stream in the channel's own slot.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use thiserror::Error;
use tokio::time::Instant;

use crate::broker::Publication;
use crate::channel::Channel;

/// Retention for one namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retention {
    pub namespace: String,
    pub max_len: usize,
    pub ttl: Duration,
}

#[derive(Debug, Error, PartialEq, Eq)]
#[error("invalid --history `{0}`: expected NAMESPACE:MAX_LEN:TTL, e.g. chat:1000:300s")]
pub struct RetentionError(String);

impl std::str::FromStr for Retention {
    type Err = RetentionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || RetentionError(s.to_string());
        let mut parts = s.rsplitn(3, ':');
        let ttl = parts.next().ok_or_else(err)?;
        let max_len = parts.next().ok_or_else(err)?;
        let namespace = parts.next().ok_or_else(err)?;
        let ttl = humantime::parse_duration(ttl).map_err(|_| err())?;
        let max_len: usize = max_len.parse().map_err(|_| err())?;
        if namespace.is_empty()
            || namespace.contains(':')
            || max_len == 0
            || max_len > 1_000_000
            || ttl.is_zero()
        {
            return Err(err());
        }
        Ok(Retention {
            namespace: namespace.to_string(),
            max_len,
            ttl,
        })
    }
}

/// Largest page `GET /api/history` and one recovery read return.
pub const MAX_PAGE: usize = 10_000;

/// Which channels keep history.
#[derive(Debug, Clone, Default)]
pub struct HistoryPolicy {
    rules: Arc<HashMap<String, Retention>>,
}

impl HistoryPolicy {
    pub fn new(rules: &[Retention]) -> HistoryPolicy {
        HistoryPolicy {
            rules: Arc::new(
                rules
                    .iter()
                    .map(|r| (r.namespace.clone(), r.clone()))
                    .collect(),
            ),
        }
    }

    pub fn retention(&self, channel: &Channel) -> Option<&Retention> {
        self.rules.get(channel.namespace())
    }
}

/// A fresh epoch token.
pub fn new_epoch() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// A slice of a channel's history.
#[derive(Debug, Clone, Default)]
pub struct HistoryPage {
    /// The channel's current epoch (empty if the channel has no history yet).
    pub epoch: String,
    /// The last offset assigned (0 if none).
    pub top: u64,
    /// Publications after the requested offset, oldest first, with offsets.
    pub publications: Vec<Publication>,
    /// Whether `publications` starts right after the requested offset, i.e. the
    /// history still reaches back that far.
    pub complete: bool,
}

struct Entry {
    at: Instant,
    publication: Publication,
}

struct ChannelHistory {
    epoch: String,
    top: u64,
    entries: VecDeque<Entry>,
    last_publish: Instant,
}

/// What an idempotency key stored: (offset, epoch, when).
type Remembered = (u64, String, Instant);

/// The embedded broker's history: the same semantics as the Redis streams.
#[derive(Default)]
pub struct MemoryHistory {
    channels: Mutex<HashMap<Channel, ChannelHistory>>,
    idempotency: Mutex<HashMap<(Channel, String), Remembered>>,
}

/// How long an idempotency key is remembered.
pub const IDEMPOTENCY_WINDOW: Duration = Duration::from_secs(300);

impl MemoryHistory {
    /// Appends a publication and returns it with its offset, plus the epoch, or the
    /// earlier result when `idempotency_key` was seen within the window (then
    /// `None` is returned for the publication: nothing to deliver). `deliver` runs
    /// under the lock so that deliveries leave in offset order.
    pub fn append(
        &self,
        mut p: Publication,
        retention: &Retention,
        idempotency_key: Option<&str>,
        deliver: impl FnOnce(&Publication),
    ) -> (u64, String, bool) {
        let now = Instant::now();
        // Held throughout, so that two publishes with one key cannot both be stored.
        let mut idem = self.idempotency.lock().unwrap_or_else(|e| e.into_inner());
        let key = idempotency_key.map(|k| (p.channel.clone(), k.to_string()));
        if let Some(key) = &key {
            idem.retain(|_, (_, _, at)| now.duration_since(*at) < IDEMPOTENCY_WINDOW);
            if let Some((offset, epoch, _)) = idem.get(key) {
                return (*offset, epoch.clone(), true);
            }
        }
        let mut map = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        let ch = map
            .entry(p.channel.clone())
            .or_insert_with(|| ChannelHistory {
                epoch: new_epoch(),
                top: 0,
                entries: VecDeque::new(),
                last_publish: now,
            });
        if now.duration_since(ch.last_publish) >= retention.ttl {
            // Everything expired: like an expired Redis key, the history is gone.
            *ch = ChannelHistory {
                epoch: new_epoch(),
                top: 0,
                entries: VecDeque::new(),
                last_publish: now,
            };
        }
        ch.top += 1;
        ch.last_publish = now;
        p.offset = Some(ch.top);
        p.epoch = Some(Arc::from(ch.epoch.as_str()));
        deliver(&p);
        ch.entries.push_back(Entry {
            at: now,
            publication: p,
        });
        while ch.entries.len() > retention.max_len {
            ch.entries.pop_front();
        }
        let (offset, epoch) = (ch.top, ch.epoch.clone());
        drop(map);
        if let Some(key) = key {
            idem.insert(key, (offset, epoch.clone(), now));
        }
        (offset, epoch, false)
    }

    /// Publications after offset `since`, at most `limit`.
    pub fn read(
        &self,
        channel: &Channel,
        retention: &Retention,
        since: u64,
        limit: usize,
    ) -> HistoryPage {
        let now = Instant::now();
        let map = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        let Some(ch) = map.get(channel) else {
            return HistoryPage {
                complete: since == 0,
                ..Default::default()
            };
        };
        if now.duration_since(ch.last_publish) >= retention.ttl {
            return HistoryPage {
                complete: since == 0,
                ..Default::default()
            };
        }
        let live = ch
            .entries
            .iter()
            .filter(|e| now.duration_since(e.at) < retention.ttl);
        let publications: Vec<Publication> = live
            .clone()
            .filter(|e| e.publication.offset.unwrap_or(0) > since)
            .take(limit)
            .map(|e| e.publication.clone())
            .collect();
        let first = live.clone().next().and_then(|e| e.publication.offset);
        let complete = since >= ch.top || first.is_some_and(|f| f <= since + 1);
        HistoryPage {
            epoch: ch.epoch.clone(),
            top: ch.top,
            publications,
            complete,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_retention() {
        let r: Retention = "chat:1000:300s".parse().unwrap();
        assert_eq!(
            (r.namespace.as_str(), r.max_len, r.ttl),
            ("chat", 1000, Duration::from_secs(300))
        );
        for bad in [
            "chat",
            "chat:10",
            ":10:1s",
            "chat:0:1s",
            "chat:x:1s",
            "chat:10:soon",
            "a:b:10:1s",
        ] {
            assert!(bad.parse::<Retention>().is_err(), "{bad}");
        }
    }
}
