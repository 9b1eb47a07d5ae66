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

use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;

use crate::publication::Publication;

/// How much of a channel's history is kept.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    /// Publications kept at most (1–1000000).
    pub max_len: usize,
    /// How long a publication is kept; a channel without publications for this
    /// long loses its history (a new epoch starts).
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
}

impl Retention {
    pub fn check(&self) -> Result<(), String> {
        if self.max_len == 0 || self.max_len > 1_000_000 {
            return Err(format!("max_len must be 1-1000000, not {}", self.max_len));
        }
        if self.ttl.is_zero() {
            return Err("ttl must not be zero".into());
        }
        Ok(())
    }
}

/// `--history NAMESPACE:MAX_LEN:TTL`: history for one namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryRule {
    pub namespace: String,
    pub retention: Retention,
}

#[derive(Debug, Error, PartialEq, Eq)]
#[error("invalid --history `{0}`: expected NAMESPACE:MAX_LEN:TTL, e.g. chat:1000:300s")]
pub struct RetentionError(String);

impl std::str::FromStr for HistoryRule {
    type Err = RetentionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || RetentionError(s.to_string());
        let mut parts = s.rsplitn(3, ':');
        let ttl = parts.next().ok_or_else(err)?;
        let max_len = parts.next().ok_or_else(err)?;
        let namespace = parts.next().ok_or_else(err)?;
        let retention = Retention {
            max_len: max_len.parse().map_err(|_| err())?,
            ttl: humantime::parse_duration(ttl).map_err(|_| err())?,
        };
        if namespace.is_empty() || namespace.contains(':') || retention.check().is_err() {
            return Err(err());
        }
        Ok(HistoryRule {
            namespace: namespace.to_string(),
            retention,
        })
    }
}

/// Largest page `GET /api/history` and one recovery read return.
pub const MAX_PAGE: usize = 10_000;

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
        let r: HistoryRule = "chat:1000:300s".parse().unwrap();
        assert_eq!(
            (r.namespace.as_str(), r.retention.max_len, r.retention.ttl),
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
            assert!(bad.parse::<HistoryRule>().is_err(), "{bad}");
        }
    }
}
