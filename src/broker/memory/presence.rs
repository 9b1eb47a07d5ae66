//! The embedded broker's presence: one process, so the members are simply a table,
//! and join/leave go straight to the node's event handler.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use serde_json::value::RawValue;

use crate::broker::EventHandler;
use crate::channel::{Channel, ClientId};
use crate::presence::{Found, Member, Stats, stats};
use crate::publication::{Kind, Publication};

#[derive(Default)]
pub struct MemoryPresence {
    channels: Mutex<HashMap<Channel, BTreeMap<ClientId, Arc<str>>>>,
}

fn event(events: &EventHandler, channel: &Channel, kind: Kind, entry: &str) {
    if let Ok(data) = RawValue::from_string(entry.to_string()) {
        let mut p = Publication::new(channel.clone(), data, None);
        p.kind = kind;
        events.publication(&p);
    }
}

impl MemoryPresence {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Channel, BTreeMap<ClientId, Arc<str>>>> {
        self.channels.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn join(
        &self,
        events: &EventHandler,
        channel: &Channel,
        client: &ClientId,
        entry: &str,
        join_leave: bool,
    ) {
        // Under the table's lock, so that joins and leaves leave in order.
        let mut map = self.lock();
        let new = map
            .entry(channel.clone())
            .or_default()
            .insert(client.clone(), Arc::from(entry))
            .is_none();
        if new && join_leave {
            event(events, channel, Kind::Join, entry);
        }
    }

    pub fn leave(
        &self,
        events: &EventHandler,
        channel: &Channel,
        client: &ClientId,
        join_leave: bool,
    ) {
        let mut map = self.lock();
        let Some(members) = map.get_mut(channel) else {
            return;
        };
        let entry = members.remove(client);
        if members.is_empty() {
            map.remove(channel);
        }
        if let (Some(e), true) = (entry, join_leave) {
            event(events, channel, Kind::Leave, &e);
        }
    }

    pub fn members(&self, channel: &Channel, max: usize) -> Found {
        let map = self.lock();
        let Some(members) = map.get(channel) else {
            return Found::Members(Vec::new());
        };
        if members.len() > max {
            return Found::TooMany(members.len() as u64);
        }
        Found::Members(
            members
                .values()
                .filter_map(|e| serde_json::from_str::<Member>(e).ok())
                .collect(),
        )
    }

    pub fn stats(&self, channel: &Channel) -> Stats {
        let map = self.lock();
        map.get(channel)
            .map(|m| stats(m.values().map(|e| &**e)))
            .unwrap_or(Stats {
                clients: 0,
                users: 0,
            })
    }
}
