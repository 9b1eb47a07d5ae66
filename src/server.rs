//! `server::run`: the one entry point, used by `main` and by the tests alike.
//!
//! Connections are accepted here and served by hyper with warp's routes as the
//! service. Doing the accept loop ourselves (rather than `warp::serve`) is what lets
//! the `/ws` route perform the WebSocket upgrade with its own buffer sizes
//! ([`crate::http::ws`]).

use std::future::Future;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::graceful::GracefulShutdown;
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tower_service::Service;
use warp::Filter;

use crate::config::Config;
use crate::http::guard::FrontDoor;
use crate::http::{self, ws::UpgradeSlot};
use crate::metrics::{Metrics, Refusal};
use crate::node::{Node, StartError};
use crate::shutdown;

#[derive(Debug, Error)]
pub enum ServerError {
    #[error(transparent)]
    Start(#[from] StartError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// The listener for `addr`, with room for `backlog` connections not yet accepted
/// (`TcpListener::bind` gives 128, which a reconnect storm overflows: the kernel
/// then drops SYNs and the clients' retries come 1, 3, 7 s later).
pub fn listen(addr: std::net::SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = match addr {
        std::net::SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        std::net::SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// Serves on `listener` until `signal` completes, then closes every client with
/// 1012 (service restart) and waits up to `config.drain_timeout` for them to go.
pub async fn run(
    listener: TcpListener,
    config: Config,
    signal: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let (trigger, shutdown) = shutdown::channel();
    let drain_timeout = config.drain_timeout;
    let metrics_listen = config.auth.metrics_listen;
    let node = Node::start(config, shutdown.clone()).await?;
    if node.auth().insecure {
        tracing::warn!(
            "--insecure: clients name themselves (?user=) and the HTTP API is open unless \
             API keys are set; development only"
        );
    }
    if let Some(addr) = metrics_listen {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Listen { addr, source })?;
        let mut down = shutdown.clone();
        let route = warp::path!("metrics")
            .and(warp::get())
            .map(http::metrics_response);
        tokio::spawn(async move {
            let server = warp::serve(route)
                .incoming(listener)
                .graceful(async move { down.recv().await })
                .run();
            server.await;
        });
        tracing::info!(%addr, "metrics on their own listener");
    }
    let (drain_tx, mut drain_rx) = mpsc::channel::<()>(1);

    let front = FrontDoor::new(node.config().front.clone(), node.metrics().clone());
    let routes = http::routes(node.clone(), front.clone(), shutdown.clone(), drain_tx);
    let graceful = GracefulShutdown::new();
    let mut accept = Acceptor::new(node.metrics().clone());
    let mut signal = std::pin::pin!(signal);
    loop {
        let stream = tokio::select! {
            accepted = accept.next(&listener) => match accepted {
                Some(stream) => stream,
                None => continue,
            },
            _ = &mut signal => break,
        };
        let Some(permit) = front.admit() else {
            FrontDoor::turn_away(&stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (stream, activity) = FrontDoor::track(stream);
        let warp_service = warp::service(routes.clone());
        let (front_here, requests) = (front.clone(), activity.clone());
        let service =
            hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                let refused = front_here.refuse(&req);
                let in_request = requests.request();
                UpgradeSlot::attach(&mut req);
                let mut warp_service = warp_service.clone();
                let activity = requests.clone();
                async move {
                    let _in_request = in_request;
                    let response = match refused {
                        Some(response) => Ok(response),
                        None => warp_service.call(req).await,
                    };
                    if let Ok(r) = &response
                        && r.status() == hyper::StatusCode::SWITCHING_PROTOCOLS
                    {
                        activity.upgrading();
                    }
                    response
                }
            });
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .max_buf_size(front.hyper_buffer_limit())
            .max_headers(front.limits().max_headers.saturating_mul(2).max(100));
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        let front = front.clone();
        tokio::spawn(async move { front.serve(conn, activity, permit).await });
    }
    drop(listener);

    tracing::info!("shutting down: closing connections with 1012");
    trigger.trigger();
    drop(routes);
    // Every session holds a drain sender; the channel closes once all are gone.
    let drained = tokio::time::timeout(drain_timeout, async {
        let _ = graceful.shutdown().await;
        while drain_rx.recv().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(timeout = ?drain_timeout, "drain timed out; dropping remaining connections");
    }
    drop(node);
    Ok(())
}

/// The accept loop's error handling. Out of descriptors (`EMFILE`/`ENFILE`), the
/// pending connection would stay in the backlog and the loop would spin on it: a
/// descriptor kept in reserve is given up for a moment to accept that connection
/// and turn it away (a 503 if it takes it), and taken back. Established clients
/// are not affected: their sockets are open already.
struct Acceptor {
    reserve: Option<std::fs::File>,
    metrics: Metrics,
    /// When an accept error was last logged, and how many since.
    logged: Option<(tokio::time::Instant, u64)>,
}

impl Acceptor {
    fn new(metrics: Metrics) -> Acceptor {
        Acceptor {
            reserve: std::fs::File::open("/dev/null").ok(),
            metrics,
            logged: None,
        }
    }

    async fn next(&mut self, listener: &TcpListener) -> Option<tokio::net::TcpStream> {
        let e = match listener.accept().await {
            Ok((stream, _)) => return Some(stream),
            Err(e) => e,
        };
        self.metrics.accept_errors.increment(1);
        self.log(&e);
        let exhausted = matches!(e.raw_os_error(), Some(EMFILE | ENFILE));
        if exhausted && self.reserve.take().is_some() {
            if let Ok(Ok((stream, _))) =
                tokio::time::timeout(Duration::from_millis(10), listener.accept()).await
            {
                self.metrics.connection_refused(Refusal::Descriptors);
                FrontDoor::turn_away(&stream);
            }
            self.reserve = std::fs::File::open("/dev/null").ok();
        } else {
            // Nothing to free (or another error): do not spin.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    /// The first error at once, then at most one line per 10 s with a count.
    fn log(&mut self, e: &std::io::Error) {
        let now = tokio::time::Instant::now();
        match &mut self.logged {
            Some((at, n)) if now.duration_since(*at) < Duration::from_secs(10) => *n += 1,
            other => {
                let since = other.map_or(0, |(_, n)| n);
                tracing::error!(error = %e, repeated = since, "accept failed");
                *other = Some((now, 0));
            }
        }
    }
}

/// Linux's "too many open files" (process, system).
const EMFILE: i32 = 24;
const ENFILE: i32 = 23;

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::listen;

    /// 1000 clients connect at once to a listener with the default backlog that
    /// accepts none of them (as when the accept loop is busy): every handshake
    /// completes in the kernel's queue. With the usual backlog of 128, only 129
    /// did; the rest were dropped and retried until the queue had room.
    #[tokio::test]
    async fn the_listener_queues_a_connect_storm_it_has_not_accepted_yet() {
        let backlog = crate::config::Config::from_args(["shardcast"])
            .expect("default config")
            .listen_backlog;
        let listener = listen("127.0.0.1:0".parse().expect("addr"), backlog).expect("listen");
        let addr = listener.local_addr().expect("addr");
        let attempts = (0..1000).map(|_| {
            tokio::time::timeout(
                Duration::from_secs(10),
                tokio::net::TcpStream::connect(addr),
            )
        });
        let results = futures_util::future::join_all(attempts).await;
        let connected = results.iter().filter(|r| matches!(r, Ok(Ok(_)))).count();
        assert_eq!(connected, 1000, "connected before any accept");
        drop(listener);
    }
}
