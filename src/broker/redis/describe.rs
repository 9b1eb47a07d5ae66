//! The broker's view for operators (`GET /api/cluster`): the slot map as this
//! instance sees it, and which channels it holds on which Redis node.

use std::collections::BTreeMap;

use serde_json::json;

use super::Shared;
use super::topology::RedisAddr;
use crate::channel::Channel;

impl Shared {
    pub(super) fn describe(&self) -> serde_json::Value {
        let map = self.map();
        let st = self.lock();
        let nodes: BTreeMap<&RedisAddr, serde_json::Value> = st
            .nodes
            .iter()
            .map(|(addr, n)| {
                let mut channels: Vec<&str> = n.actual.iter().map(Channel::as_str).collect();
                channels.sort_unstable();
                (
                    addr,
                    json!({
                        "connected": n.connected,
                        "subscriptions": n.actual.len(),
                        "pending": n.pending_sub.len() + n.pending_unsub.len(),
                        "channels": channels,
                    }),
                )
            })
            .collect();
        json!({
            "broker": self.source.kind(),
            "tls": self.connector.is_tls(),
            "subscribe_from": format!("{:?}", self.policy).to_lowercase(),
            "slots_covered": map.as_ref().map_or(0, |m| m.covered()),
            "shards": map.as_ref().map(|m| &m.shards),
            "nodes": map.as_ref().map(|m| &m.nodes),
            "desired_channels": st.desired.len(),
            "subscriber_nodes": nodes,
        })
    }
}
