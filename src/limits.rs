//! Abuse limits: a token bucket per connection and kind of request, and the
//! instance's connection counters (per user, in total, new ones per second).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use crate::channel::UserId;

/// A token bucket refilled at `rate` per second, holding at most `rate` tokens.
/// Consecutive refusals are counted: a client that keeps pushing is abusive.
#[derive(Debug)]
pub struct Bucket {
    rate: f64,
    tokens: f64,
    at: Instant,
    refused_in_a_row: u32,
}

/// What the bucket says about one request.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// Over the rate: refuse this request.
    Refused,
    /// Refused again and again (`rate` times in a row, at least 10): close.
    Abusive,
}

impl Bucket {
    /// `rate` 0: unlimited.
    pub fn new(rate: u32) -> Bucket {
        Bucket {
            rate: f64::from(rate),
            tokens: f64::from(rate),
            at: Instant::now(),
            refused_in_a_row: 0,
        }
    }

    pub fn take(&mut self) -> Verdict {
        self.take_at(Instant::now())
    }

    fn take_at(&mut self, now: Instant) -> Verdict {
        if self.rate == 0.0 {
            return Verdict::Allowed;
        }
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.refused_in_a_row = 0;
            return Verdict::Allowed;
        }
        self.refused_in_a_row += 1;
        if self.refused_in_a_row >= (self.rate as u32).max(10) {
            Verdict::Abusive
        } else {
            Verdict::Refused
        }
    }
}

/// Why a new connection is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `--max-connections` reached.
    Instance,
    /// `--max-connects-per-second` reached.
    Rate,
    /// `--max-connections-per-user` reached.
    User,
}

impl Refused {
    /// The metric label of this refusal.
    pub fn refusal(self) -> crate::metrics::Refusal {
        match self {
            Refused::Instance => crate::metrics::Refusal::MaxConnections,
            Refused::Rate => crate::metrics::Refusal::ConnectRate,
            Refused::User => crate::metrics::Refusal::PerUser,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Refused::Instance => "max_connections",
            Refused::Rate => "connect_rate",
            Refused::User => "per_user",
        }
    }
}

#[derive(Default)]
struct Counts {
    total: usize,
    per_user: HashMap<UserId, usize>,
    second: u64,
    this_second: u32,
}

/// The instance's connection counters.
pub struct Connections {
    max_total: usize,
    max_per_user: usize,
    max_per_second: u32,
    started: Instant,
    counts: Mutex<Counts>,
}

impl Connections {
    pub fn new(max_total: usize, max_per_user: usize, max_per_second: u32) -> Connections {
        Connections {
            max_total,
            max_per_user,
            max_per_second,
            started: Instant::now(),
            counts: Mutex::default(),
        }
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Before an upgrade: whether the instance takes one more connection now.
    pub fn admit(&self) -> Result<(), Refused> {
        let mut c = self.counts();
        if self.max_total > 0 && c.total >= self.max_total {
            return Err(Refused::Instance);
        }
        if self.max_per_second > 0 {
            let second = self.started.elapsed().as_secs();
            if c.second != second {
                c.second = second;
                c.this_second = 0;
            }
            if c.this_second >= self.max_per_second {
                return Err(Refused::Rate);
            }
            c.this_second += 1;
        }
        Ok(())
    }

    /// Whether `user` may open one more connection (checked before the upgrade
    /// when the identity is known then; the session registers it anyway).
    pub fn user_has_room(&self, user: &UserId) -> bool {
        self.max_per_user == 0
            || user.is_anonymous()
            || self.counts().per_user.get(user).copied().unwrap_or(0) < self.max_per_user
    }

    /// Registers a session of `user`; refused when the user is at the limit.
    pub fn open(&self, user: &UserId) -> Result<(), Refused> {
        let mut c = self.counts();
        if !user.is_anonymous() {
            let n = c.per_user.entry(user.clone()).or_insert(0);
            if self.max_per_user > 0 && *n >= self.max_per_user {
                if *n == 0 {
                    c.per_user.remove(user);
                }
                return Err(Refused::User);
            }
            *n += 1;
        }
        c.total += 1;
        Ok(())
    }

    pub fn close(&self, user: &UserId) {
        let mut c = self.counts();
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.per_user.get_mut(user) {
            *n -= 1;
            if *n == 0 {
                c.per_user.remove(user);
            }
        }
    }

    pub fn total(&self) -> usize {
        self.counts().total
    }

    /// Distinct users with a connection here (anonymous ones not counted).
    pub fn users(&self) -> usize {
        self.counts().per_user.len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_bucket_refills_at_its_rate_and_flags_abuse() {
        let t0 = Instant::now();
        let mut b = Bucket::new(10);
        b.at = t0;
        for _ in 0..10 {
            assert_eq!(b.take_at(t0), Verdict::Allowed);
        }
        assert_eq!(b.take_at(t0), Verdict::Refused);
        assert_eq!(
            b.take_at(t0 + Duration::from_millis(100)),
            Verdict::Allowed,
            "one token per 100 ms"
        );
        let mut last = Verdict::Allowed;
        for _ in 0..10 {
            last = b.take_at(t0 + Duration::from_millis(100));
        }
        assert_eq!(last, Verdict::Abusive);
        assert_eq!(Bucket::new(0).take(), Verdict::Allowed, "0 is unlimited");
    }

    #[test]
    fn connection_counts_per_user_and_in_total() {
        let c = Connections::new(3, 2, 0);
        let a = UserId::parse("a").unwrap();
        let b = UserId::parse("b").unwrap();
        assert!(c.open(&a).is_ok() && c.open(&a).is_ok());
        assert_eq!(c.open(&a), Err(Refused::User));
        assert!(!c.user_has_room(&a));
        assert!(c.open(&b).is_ok());
        assert_eq!(c.admit(), Err(Refused::Instance));
        c.close(&a);
        assert!(c.user_has_room(&a));
        assert!(c.admit().is_ok());
        assert_eq!(c.total(), 2);
    }

    #[test]
    fn new_connections_per_second_are_bounded() {
        let c = Connections::new(0, 0, 2);
        assert!(c.admit().is_ok() && c.admit().is_ok());
        assert_eq!(c.admit(), Err(Refused::Rate));
    }
}
