//! The gap filler: reads the history ranges the hub found missing and hands them
//! back, one request at a time, in order.

use std::sync::Weak;
use std::time::Duration;

use tokio::sync::mpsc;

use super::Node;
use crate::history::MAX_PAGE;
use crate::hub::GapRequest;
use crate::shutdown::Shutdown;

/// Reads per request before the gap is given up (and counted as lost).
const ATTEMPTS: u32 = 5;

pub async fn fill_gaps(
    node: Weak<Node>,
    mut requests: mpsc::UnboundedReceiver<GapRequest>,
    mut shutdown: Shutdown,
) {
    loop {
        let req = tokio::select! {
            r = requests.recv() => match r { Some(r) => r, None => return },
            _ = shutdown.recv() => return,
        };
        let Some(node) = node.upgrade() else { return };
        let Some(retention) = node.config.namespaces.retention(&req.channel).cloned() else {
            node.hub.fill(&req.channel, Vec::new());
            continue;
        };
        let mut found = Vec::new();
        for attempt in 0..ATTEMPTS {
            match node
                .broker
                .history(&req.channel, &retention, Some(req.after), MAX_PAGE)
                .await
            {
                Ok(page) => {
                    found = page.publications;
                    break;
                }
                Err(e) => {
                    tracing::warn!(channel = %req.channel, error = %e, attempt, "gap fill read failed");
                    tokio::time::sleep(Duration::from_millis(200 * (u64::from(attempt) + 1))).await;
                }
            }
        }
        node.hub.fill(&req.channel, found);
    }
}
