//! What this instance saw happen to the cluster, most recent last, for operators:
//! topology changes, subscriber connections lost and restored, resubscriptions
//! and how long they took. A bounded ring: old events fall off.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// Events kept.
const KEEP: usize = 200;

#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// Increasing per instance, to merge timelines without repeats.
    pub seq: u64,
    /// Unix milliseconds.
    pub at_ms: u64,
    pub kind: &'static str,
    pub detail: String,
}

#[derive(Default)]
pub struct Timeline {
    events: Mutex<(u64, VecDeque<Event>)>,
}

impl Timeline {
    pub fn record(&self, kind: &'static str, detail: String) {
        let at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let mut g = self.events.lock().unwrap_or_else(|e| e.into_inner());
        g.0 += 1;
        let seq = g.0;
        g.1.push_back(Event {
            seq,
            at_ms,
            kind,
            detail,
        });
        while g.1.len() > KEEP {
            g.1.pop_front();
        }
    }

    /// The last `n` events, oldest first.
    pub fn recent(&self, n: usize) -> Vec<Event> {
        let g = self.events.lock().unwrap_or_else(|e| e.into_inner());
        let skip = g.1.len().saturating_sub(n);
        g.1.iter().skip(skip).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_latest_in_order() {
        let t = Timeline::default();
        for i in 0..(KEEP + 5) {
            t.record("x", i.to_string());
        }
        let r = t.recent(3);
        assert_eq!(
            r.iter().map(|e| e.detail.as_str()).collect::<Vec<_>>(),
            vec!["202", "203", "204"]
        );
        assert!(r.windows(2).all(|w| w[0].seq < w[1].seq));
        assert_eq!(t.recent(1000).len(), KEEP);
    }
}
