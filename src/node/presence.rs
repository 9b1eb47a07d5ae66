//! The presence refresh: every third of `--presence-ttl`, this instance's members
//! are written again with a new expiry (one pipelined batch, a round trip per
//! Redis node), and members whose instance stopped refreshing are removed with
//! their leaves.

use std::sync::Weak;

use super::Node;
use crate::broker::PresenceBatch;
use crate::shutdown::Shutdown;

pub async fn refresh(node: Weak<Node>, mut shutdown: Shutdown) {
    let every = match node.upgrade() {
        Some(n) => n.config.presence_ttl / 3,
        None => return,
    };
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.recv() => return,
        }
        let Some(node) = node.upgrade() else { return };
        let batch: Vec<PresenceBatch> = node
            .presence
            .snapshot()
            .into_iter()
            .map(|(channel, members)| PresenceBatch {
                join_leave: node.options(&channel).join_leave,
                channel,
                members,
            })
            .collect();
        if batch.is_empty() {
            continue;
        }
        let started = tokio::time::Instant::now();
        match node
            .broker
            .presence_refresh(&batch, node.config.presence_ttl)
            .await
        {
            Ok(()) => {
                tracing::debug!(channels = batch.len(), took = ?started.elapsed(), "presence refreshed");
                node.metrics
                    .presence_refresh
                    .record(started.elapsed().as_secs_f64())
            }
            Err(e) => tracing::warn!(error = %e, channels = batch.len(), "presence refresh failed"),
        }
    }
}
