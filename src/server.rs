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
use crate::http::{self, ws::UpgradeSlot};
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

    let routes = http::routes(node.clone(), shutdown.clone(), drain_tx);
    let graceful = GracefulShutdown::new();
    let mut signal = std::pin::pin!(signal);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::error!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            },
            _ = &mut signal => break,
        };
        let _ = stream.set_nodelay(true);
        let warp_service = warp::service(routes.clone());
        let service =
            hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                UpgradeSlot::attach(&mut req);
                warp_service.clone().call(req)
            });
        let conn = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection error");
            }
        });
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
