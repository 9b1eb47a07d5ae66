//! The front door: every stage before a client is a working WebSocket session is
//! bounded in time and in count, so that connections that send half a request (or
//! nothing) cannot hold descriptors and memory.
//!
//! * **Count**: [`FrontDoor::admit`] hands out a [`Pending`] permit per accepted
//!   connection, held until the connection is upgraded or closed; at
//!   `--max-pending-connections` a new one gets an immediate 503 instead.
//! * **Time**: each connection's bytes pass through [`Tracked`], which notes when a
//!   request began arriving; [`Activity`] knows whether a request is being served.
//!   The connection task ([`FrontDoor::serve`]) closes a connection whose headers
//!   take longer than `--header-timeout` or that sits idle between requests longer
//!   than `--idle-timeout`. Bodies (`--body-timeout`, [`body`]) and the hand-over
//!   after a 101 (`--upgrade-timeout`, in [`super::ws`]) are bounded where they are
//!   read. Each timeout is counted by stage (`shardcast_timeouts_total`).
//! * **Size**: [`FrontDoor::refuse`] answers 414/431 with a JSON body for URLs and
//!   headers over the limits, before any route runs; hyper's own buffer limit (a
//!   multiple of ours) is the backstop for heads too large to parse at all.
//!
//! hyper has a header-read timeout of its own, but it restarts for every request
//! and also covers keep-alive idling with the same value; owning the clock here
//! gives each stage its own limit and its own counter.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;
use warp::Filter;
use warp::http::StatusCode;
use warp::reply::Response;

use super::error::ApiError;
use crate::codes::ErrorCode;
use crate::config::FrontDoor as Limits;
use crate::metrics::{Metrics, Refusal, Stage};

/// "No request is arriving" in [`Activity::head_started`].
const NONE: u64 = u64::MAX;
/// The longest the connection task sleeps between looks at the clock.
const TICK: Duration = Duration::from_secs(1);

/// What the connection task needs to know about one connection's progress. Times
/// are milliseconds since the connection was accepted.
pub struct Activity {
    accepted: Instant,
    /// When the first byte of the request now arriving came ([`NONE`]: none is).
    head_started: AtomicU64,
    /// Requests being served (the route's future has not finished).
    in_request: AtomicUsize,
    /// Requests served so far.
    served: AtomicU64,
    /// When the last request finished.
    idle_since: AtomicU64,
    /// The last response was a 101: the socket is being handed over.
    upgrading: std::sync::atomic::AtomicBool,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            accepted: Instant::now(),
            head_started: AtomicU64::new(NONE),
            in_request: AtomicUsize::new(0),
            served: AtomicU64::new(0),
            idle_since: AtomicU64::new(0),
            upgrading: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The route answered 101: from now the upgrade stage's limit applies.
    pub fn upgrading(&self) {
        self.upgrading.store(true, Ordering::Relaxed);
    }

    fn now(&self) -> u64 {
        self.accepted.elapsed().as_millis() as u64
    }

    fn bytes_arrived(&self) {
        if self.in_request.load(Ordering::Relaxed) == 0
            && self.head_started.load(Ordering::Relaxed) == NONE
        {
            self.head_started.store(self.now(), Ordering::Relaxed);
        }
    }

    /// A request's head was parsed and its route runs; the guard marks its end.
    pub fn request(self: &Arc<Self>) -> InRequest {
        self.in_request.fetch_add(1, Ordering::Relaxed);
        self.served.fetch_add(1, Ordering::Relaxed);
        self.head_started.store(NONE, Ordering::Relaxed);
        InRequest(self.clone())
    }

    /// The stage the connection is in (none while a request is served), since
    /// when (ms), and its limit.
    fn stage(&self, limits: &Limits) -> Option<(Stage, u64, Duration)> {
        if self.in_request.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let head = self.head_started.load(Ordering::Relaxed);
        Some(if self.upgrading.load(Ordering::Relaxed) {
            (
                Stage::Upgrade,
                self.idle_since.load(Ordering::Relaxed),
                limits.upgrade_timeout,
            )
        } else if head != NONE {
            (Stage::Headers, head, limits.header_timeout)
        } else if self.served.load(Ordering::Relaxed) == 0 {
            // Accepted and silent.
            (Stage::Headers, 0, limits.header_timeout)
        } else {
            (
                Stage::Idle,
                self.idle_since.load(Ordering::Relaxed),
                limits.idle_timeout,
            )
        })
    }

    /// The stage that has run out of time at `now` (ms), if any.
    fn overdue_at(&self, now: u64, limits: &Limits) -> Option<Stage> {
        let (stage, since, limit) = self.stage(limits)?;
        (Duration::from_millis(now.saturating_sub(since)) >= limit).then_some(stage)
    }

    /// How long the connection task may sleep before a stage could run out.
    fn next_check(&self, limits: &Limits) -> Duration {
        let Some((_, since, limit)) = self.stage(limits) else {
            return TICK;
        };
        let elapsed = Duration::from_millis(self.now().saturating_sub(since));
        limit
            .saturating_sub(elapsed)
            .clamp(Duration::from_millis(10), TICK)
    }
}

/// A request in progress; dropping it marks the connection idle.
pub struct InRequest(Arc<Activity>);

impl Drop for InRequest {
    fn drop(&mut self) {
        let a = &self.0;
        a.idle_since.store(a.now(), Ordering::Relaxed);
        a.in_request.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A connection's socket, noting when bytes arrive. After an upgrade it carries
/// the WebSocket; the notes are then unused (two relaxed atomic loads per read).
pub struct Tracked<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Tracked<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.bytes_arrived();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tracked<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The pre-session bounds of one instance.
pub struct FrontDoor {
    limits: Limits,
    pending: AtomicUsize,
    metrics: Metrics,
}

/// One connection's place among the pending ones; released when dropped.
pub struct Pending(Arc<FrontDoor>);

impl Drop for Pending {
    fn drop(&mut self) {
        self.0.pending.fetch_sub(1, Ordering::Relaxed);
        self.0.metrics.pending_connections.decrement(1.0);
    }
}

/// The answer to a connection turned away before anything was read from it.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: 85\r\n\r\n{\"error\":{\"code\":\"unavailable\",\"message\":\"too many connections in progress; retry\"}}\n";

impl FrontDoor {
    pub fn new(limits: Limits, metrics: Metrics) -> Arc<FrontDoor> {
        Arc::new(FrontDoor {
            limits,
            pending: AtomicUsize::new(0),
            metrics,
        })
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// A permit for a new connection, or `None` at the cap (counted).
    pub fn admit(self: &Arc<Self>) -> Option<Pending> {
        let was = self.pending.fetch_add(1, Ordering::Relaxed);
        if was >= self.limits.max_pending_connections {
            self.pending.fetch_sub(1, Ordering::Relaxed);
            self.metrics.connection_refused(Refusal::Pending);
            return None;
        }
        self.metrics.pending_connections.increment(1.0);
        Some(Pending(self.clone()))
    }

    /// Turns a connection away: a 503 if the socket takes it at once, then closed.
    pub fn turn_away(stream: &tokio::net::TcpStream) {
        let _ = stream.try_write(BUSY);
    }

    /// Wraps a socket so that its progress can be watched.
    pub fn track<T>(stream: T) -> (Tracked<T>, Arc<Activity>) {
        let activity = Arc::new(Activity::new());
        (
            Tracked {
                inner: stream,
                activity: activity.clone(),
            },
            activity,
        )
    }

    /// Runs a connection until it ends, is upgraded, or a stage runs out of time
    /// (then it is dropped: closed, without harming others).
    pub async fn serve<C, E>(&self, conn: C, activity: Arc<Activity>, _permit: Pending)
    where
        C: Future<Output = Result<(), E>>,
        E: std::fmt::Display,
    {
        let mut conn = std::pin::pin!(conn);
        loop {
            let wait = activity.next_check(&self.limits);
            tokio::select! {
                done = &mut conn => {
                    if let Err(e) = done {
                        tracing::debug!(error = %e, "connection error");
                    }
                    return;
                }
                _ = tokio::time::sleep(wait) => {
                    if let Some(stage) = activity.overdue_at(activity.now(), &self.limits) {
                        self.metrics.timeout(stage);
                        tracing::debug!(stage = stage.as_str(), "connection timed out");
                        return;
                    }
                }
            }
        }
    }

    /// A 414 or 431 for a request over the URL or header limits.
    pub fn refuse<B>(&self, req: &hyper::Request<B>) -> Option<Response> {
        let l = &self.limits;
        let url = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
        if url > l.max_url_bytes {
            return Some(self.too_large(
                StatusCode::URI_TOO_LONG,
                format!("the URL is {url} bytes; the limit is {}", l.max_url_bytes),
            ));
        }
        let headers = req.headers();
        if headers.len() > l.max_headers {
            return Some(self.too_large(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                format!("{} headers; the limit is {}", headers.len(), l.max_headers),
            ));
        }
        let bytes: usize = headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len())
            .sum();
        if bytes > l.max_header_bytes {
            return Some(self.too_large(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                format!(
                    "{bytes} bytes of headers; the limit is {}",
                    l.max_header_bytes
                ),
            ));
        }
        None
    }

    fn too_large(&self, status: StatusCode, message: String) -> Response {
        self.metrics.error(ErrorCode::TooLarge);
        ApiError {
            status,
            code: ErrorCode::TooLarge,
            message,
        }
        .into_response()
    }

    /// hyper's own limit on a request head's buffer: a backstop well above ours,
    /// for heads too large to parse (hyper answers those with a bare 431).
    pub fn hyper_buffer_limit(&self) -> usize {
        (self.limits.max_header_bytes + self.limits.max_url_bytes)
            .saturating_mul(2)
            .max(8192)
    }
}

/// A request body of at most `limit` bytes that must arrive within the body
/// timeout: 413 `too_large` above the limit, 408 `timeout` when late (the
/// connection then closes: hyper does not reuse one whose body was not read).
pub fn body(
    front: Arc<FrontDoor>,
    limit: u64,
) -> impl Filter<Extract = (Bytes,), Error = warp::Rejection> + Clone {
    warp::body::content_length_limit(limit)
        .and(warp::body::stream())
        .and_then(move |stream| {
            let front = front.clone();
            async move {
                read_body(&front, stream, limit)
                    .await
                    .map_err(warp::reject::custom)
            }
        })
}

async fn read_body<S, B>(front: &FrontDoor, mut stream: S, limit: u64) -> Result<Bytes, ApiError>
where
    S: futures_util::Stream<Item = Result<B, warp::Error>> + Unpin,
    B: Buf,
{
    let timeout = front.limits.body_timeout;
    let read = async {
        let mut out = BytesMut::new();
        while let Some(chunk) = stream.next().await {
            let mut chunk = chunk.map_err(|e| {
                ApiError::new(ErrorCode::BadRequest, format!("reading the body: {e}"))
            })?;
            if (out.len() + chunk.remaining()) as u64 > limit {
                return Err(ApiError::new(
                    ErrorCode::TooLarge,
                    format!("the body is over {limit} bytes"),
                ));
            }
            while chunk.has_remaining() {
                let part = chunk.chunk();
                out.extend_from_slice(part);
                let n = part.len();
                chunk.advance(n);
            }
        }
        Ok(out.freeze())
    };
    match tokio::time::timeout(timeout, read).await {
        Ok(r) => r,
        Err(_) => {
            front.metrics.timeout(Stage::Body);
            Err(ApiError::new(
                ErrorCode::Timeout,
                format!("the request body did not arrive within {timeout:?}"),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::BUSY;

    #[test]
    fn the_busy_answer_announces_its_own_length() {
        let text = std::str::from_utf8(BUSY).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let announced: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(announced, body.len());
        assert!(serde_json::from_str::<serde_json::Value>(body).is_ok());
    }

    use super::*;

    fn limits() -> Limits {
        crate::config::Config::defaults().front
    }

    fn state(a: &Activity, now: u64, l: &Limits) -> Option<Stage> {
        a.overdue_at(now, l)
    }

    #[test]
    fn a_silent_connection_times_out_in_the_header_stage() {
        let l = limits();
        let a = Activity::new();
        assert_eq!(state(&a, 9_999, &l), None);
        assert_eq!(state(&a, 10_000, &l), Some(Stage::Headers));
    }

    #[test]
    fn headers_are_timed_from_their_first_byte_and_idling_from_the_last_response() {
        let l = limits();
        let a = Arc::new(Activity::new());
        // A request, served at once, at t≈0.
        drop(a.request());
        let idle_from = a.idle_since.load(Ordering::Relaxed);
        assert_eq!(state(&a, idle_from + 29_999, &l), None);
        assert_eq!(state(&a, idle_from + 30_000, &l), Some(Stage::Idle));
        // Bytes of a next request at t=5000: the header clock runs from there.
        a.head_started.store(5_000, Ordering::Relaxed);
        assert_eq!(state(&a, 14_999, &l), None);
        assert_eq!(state(&a, 15_000, &l), Some(Stage::Headers));
    }

    #[test]
    fn after_a_101_the_upgrade_limit_applies() {
        let l = limits();
        let a = Arc::new(Activity::new());
        let r = a.request();
        a.upgrading();
        drop(r);
        let from = a.idle_since.load(Ordering::Relaxed);
        assert_eq!(state(&a, from + 9_999, &l), None);
        assert_eq!(state(&a, from + 10_000, &l), Some(Stage::Upgrade));
    }

    #[test]
    fn a_request_in_progress_never_times_out_here() {
        let l = limits();
        let a = Arc::new(Activity::new());
        let r = a.request();
        assert_eq!(state(&a, 1_000_000, &l), None);
        drop(r);
    }
}
