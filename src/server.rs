//! `server::run`: the one entry point, used by `main` and by the tests alike.

use std::future::Future;
use std::time::Duration;

use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::broker::BrokerError;
use crate::config::Config;
use crate::http;
use crate::node::Node;
use crate::shutdown;

#[derive(Debug, Error)]
pub enum ServerError {
    #[error(transparent)]
    Broker(#[from] BrokerError),
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
    let node = Node::start(config, shutdown.clone()).await?;
    let (drain_tx, mut drain_rx) = mpsc::channel::<()>(1);

    let routes = http::routes(node.clone(), shutdown.clone(), drain_tx);
    let mut stop_accepting = shutdown.clone();
    let server = tokio::spawn(
        warp::serve(routes)
            .incoming(listener)
            .graceful(async move { stop_accepting.recv().await })
            .run(),
    );

    signal.await;
    tracing::info!("shutting down: closing connections with 1012");
    trigger.trigger();

    // Every session holds a drain sender; the channel closes once all are gone
    // (the routes' own sender goes with the server task).
    let drained = tokio::time::timeout(drain_timeout, async {
        let _ = server.await;
        while drain_rx.recv().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(timeout = ?drain_timeout, "drain timed out; dropping remaining connections");
    }
    // Give the broker's background tasks a moment to notice the shutdown.
    tokio::time::sleep(Duration::from_millis(10)).await;
    drop(node);
    Ok(())
}
