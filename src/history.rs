//! History: per-channel offsets, epochs and bounded retention.
//!
//! History is switched on per namespace (`--history chat:1000:300s`: channels
//! `chat:*` keep up to 1000 publications for up to 300 s). Every publication on a
//! history channel gets the next offset of its channel (1, 2, 3, ...), and the
//! channel has an epoch, a random token that changes whenever its history is lost
//! (expired, or the store came back empty), so that a client never mistakes a reset
//! for continuity. This module holds the rules and the shared types; the stores are
//! the brokers' (in memory for the embedded broker, a stream in the channel's own
//! slot on Redis).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;

use crate::channel::Channel;
use crate::publication::Publication;

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

/// How long an idempotency key is remembered.
pub const IDEMPOTENCY_WINDOW: Duration = Duration::from_secs(300);

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
