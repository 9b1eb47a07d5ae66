//! Waiting for something to become true, with a deadline: the one poll loop.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// `what` did not happen within the deadline; `last` is the last reason it gave.
#[derive(Debug, thiserror::Error)]
#[error("timed out after {after:?} waiting for {what}: {last}")]
pub struct Timeout {
    pub what: String,
    pub after: Duration,
    pub last: String,
}

/// Calls `check` every `every` until it returns `Ok(value)`, or fails with the last
/// `Err(reason)` once `within` has passed.
pub async fn until<T, F, Fut>(
    what: &str,
    within: Duration,
    every: Duration,
    mut check: F,
) -> Result<T, Timeout>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    loop {
        let last = match check().await {
            Ok(v) => return Ok(v),
            Err(reason) => reason,
        };
        if start.elapsed() >= within {
            return Err(Timeout {
                what: what.to_string(),
                after: within,
                last,
            });
        }
        tokio::time::sleep(every).await;
    }
}

/// [`until`] polling every 100 ms, panicking with the reason on timeout: for tests.
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    match until(what, within, Duration::from_millis(100), check).await {
        Ok(v) => v,
        Err(e) => panic!("{e}"),
    }
}
