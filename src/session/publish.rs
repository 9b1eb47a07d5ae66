//! A connection's publish pipeline: publishes in order, batching whatever queued
//! up while the previous batch was in flight, and answers each (ok or error) in
//! order. A publisher is thus not limited to one broker round trip per message.

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::identity::Identity;
use crate::node::{Node, PublishRequest};
use crate::outbox::Outbox;
use crate::protocol::ServerFrame;

use super::refusal;

/// Publishes queued per connection at most; more make the reader wait.
pub const PUBLISH_QUEUE: usize = 1024;
/// Publishes sent to the broker as one batch at most.
const PUBLISH_BATCH: usize = 256;

/// One queued publish and the id to answer it with.
pub type Job = (Option<u64>, PublishRequest);

pub async fn publish_loop(
    node: Arc<Node>,
    identity: Identity,
    outbox: Outbox,
    mut rx: mpsc::Receiver<Job>,
) {
    let metrics = node.metrics();
    let mut jobs = Vec::new();
    while rx.recv_many(&mut jobs, PUBLISH_BATCH).await > 0 {
        let (ids, requests): (Vec<Option<u64>>, Vec<PublishRequest>) = jobs.drain(..).unzip();
        let results = node.publish_batch(&identity, requests).await;
        for (id, result) in ids.into_iter().zip(results) {
            let frame = match result {
                Ok(ack) => match id {
                    Some(id) => ServerFrame::Ok {
                        id,
                        offset: ack.offset,
                        epoch: ack.epoch.as_deref(),
                        recovered: None,
                        expires_in: None,
                    }
                    .to_bytes(),
                    None => continue,
                },
                Err(e) => {
                    let e = refusal(id, &e);
                    metrics.error(e.code);
                    e.to_frame()
                }
            };
            outbox.push(frame, metrics);
        }
    }
}
