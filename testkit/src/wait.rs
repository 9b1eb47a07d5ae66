//! Waiting for something to become true, with a deadline: the one poll loop.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// `what` did not happen within the deadline; `last` is the last reason it gave.
/// Displays as `timed out after 60s waiting for <what>: <last>`.
#[derive(Debug, thiserror::Error)]
#[error("timed out after {after:?} waiting for {what}: {last}")]
pub struct Timeout {
    /// What was awaited, as the caller named it.
    pub what: String,
    /// The deadline that passed.
    pub after: Duration,
    /// The last `Err` the check returned: why it was not there yet.
    pub last: String,
}

/// Calls `check` every `every` until it returns `Ok(value)`, or fails with the last
/// `Err(reason)` once `within` has passed. `check` runs at least once, and the
/// failing verdict comes from a try that ended at or after the deadline. Give reasons
/// that say what was seen ("3 of 4 subscribed"), since the last one becomes the
/// failure message.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use std::time::Duration;
/// use shardcast_testkit::wait;
///
/// let mut tries = 0;
/// let n = wait::until("the third try", Duration::from_secs(5), Duration::from_millis(1), || {
///     tries += 1;
///     let t = tries;
///     async move { if t >= 3 { Ok(t) } else { Err(format!("try {t}")) } }
/// })
/// .await
/// .expect("within 5 s");
/// assert_eq!(n, 3);
/// # }
/// ```
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
