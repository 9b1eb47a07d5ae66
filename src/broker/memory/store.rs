//! The embedded broker's history store: per channel a bounded queue of
//! publications with offsets, an epoch and the last publish time, and the
//! idempotency keys, with the same semantics as the Redis streams (see
//! docs/ARCHITECTURE.md, "History and recovery"). Lost on restart.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::time::Instant;

use crate::channel::Channel;
use crate::history::{HistoryPage, IDEMPOTENCY_WINDOW, Retention, new_epoch};
use crate::publication::Publication;

struct Stored {
    at: Instant,
    publication: Publication,
}

struct ChannelHistory {
    epoch: String,
    top: u64,
    entries: VecDeque<Stored>,
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
        ch.entries.push_back(Stored {
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
