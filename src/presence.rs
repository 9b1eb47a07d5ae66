//! Presence bookkeeping on this instance: which local clients are members of
//! which presence channels, each with the entry the broker stores for it
//! (`{"client":..,"user":..,"info":..}`). The broker keeps the cluster-wide set; this
//! table is what the instance refreshes there (so that its clients do not expire)
//! and re-asserts after a failover that lost recent writes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::channel::{Channel, ClientId, UserId};
use crate::identity::Identity;

/// One member as stored and as sent in `presence`, `join` and `leave`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Member {
    pub client: String,
    pub user: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<Box<RawValue>>,
}

/// A member entry as JSON text, built once per membership.
pub fn entry(identity: &Identity) -> Arc<str> {
    #[derive(Serialize)]
    struct E<'a> {
        client: &'a ClientId,
        user: &'a UserId,
        #[serde(skip_serializing_if = "Option::is_none")]
        info: Option<&'a RawValue>,
    }
    let e = E {
        client: &identity.client,
        user: &identity.user,
        info: identity.info.as_deref(),
    };
    Arc::from(serde_json::to_string(&e).unwrap_or_default())
}

/// How many members and distinct users a channel has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Stats {
    pub clients: u64,
    pub users: u64,
}

/// What a presence query found.
#[derive(Debug, Clone)]
pub enum Found {
    Members(Vec<Member>),
    /// More than the configured maximum: only stats should be asked for.
    TooMany(u64),
}

/// A channel's local members: (client, entry).
pub type Members = Vec<(ClientId, Arc<str>)>;

/// The local members of every presence channel.
#[derive(Default)]
pub struct LocalPresence {
    channels: Mutex<HashMap<Channel, HashMap<ClientId, Arc<str>>>>,
}

impl LocalPresence {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Channel, HashMap<ClientId, Arc<str>>>> {
        self.channels.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a member; false if it was one already.
    pub fn add(&self, channel: &Channel, client: &ClientId, entry: Arc<str>) -> bool {
        self.lock()
            .entry(channel.clone())
            .or_default()
            .insert(client.clone(), entry)
            .is_none()
    }

    /// Forgets a member; returns its entry if it was one.
    pub fn remove(&self, channel: &Channel, client: &ClientId) -> Option<Arc<str>> {
        let mut map = self.lock();
        let members = map.get_mut(channel)?;
        let entry = members.remove(client);
        if members.is_empty() {
            map.remove(channel);
        }
        entry
    }

    /// Every channel with its local members, for a refresh.
    pub fn snapshot(&self) -> Vec<(Channel, Members)> {
        self.lock()
            .iter()
            .map(|(ch, m)| {
                (
                    ch.clone(),
                    m.iter().map(|(c, e)| (c.clone(), e.clone())).collect(),
                )
            })
            .collect()
    }

    /// Local members in total.
    pub fn len(&self) -> usize {
        self.lock().values().map(HashMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Counts distinct users among entries (anonymous clients each count as one).
pub fn stats<'a>(entries: impl Iterator<Item = &'a str>) -> Stats {
    let mut clients = 0u64;
    let mut users = std::collections::HashSet::new();
    let mut anonymous = 0u64;
    for e in entries {
        clients += 1;
        match serde_json::from_str::<Member>(e) {
            Ok(m) if !m.user.is_empty() => {
                users.insert(m.user);
            }
            _ => anonymous += 1,
        }
    }
    Stats {
        clients,
        users: users.len() as u64 + anonymous,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(user: &str, info: Option<&str>) -> Identity {
        Identity::new(
            UserId::parse(user).unwrap(),
            info.map(|i| Arc::from(RawValue::from_string(i.to_string()).unwrap())),
        )
    }

    #[test]
    fn entries_carry_client_user_and_info() {
        let id = identity("alice", Some(r#"{"name":"Alice"}"#));
        let e = entry(&id);
        let m: Member = serde_json::from_str(&e).unwrap();
        assert_eq!(
            (m.client.as_str(), m.user.as_str()),
            (id.client.as_str(), "alice")
        );
        assert_eq!(
            m.info.map(|i| i.get().to_string()).as_deref(),
            Some(r#"{"name":"Alice"}"#)
        );
        let bare = entry(&identity("bob", None));
        assert!(!bare.contains("info"), "{bare}");
    }

    #[test]
    fn the_local_table_adds_once_and_forgets_empty_channels() {
        let t = LocalPresence::default();
        let ch = Channel::parse("room:1").unwrap();
        let a = identity("alice", None);
        assert!(t.add(&ch, &a.client, entry(&a)));
        assert!(!t.add(&ch, &a.client, entry(&a)), "already a member");
        assert_eq!(t.len(), 1);
        assert!(t.remove(&ch, &a.client).is_some());
        assert!(t.remove(&ch, &a.client).is_none());
        assert!(t.snapshot().is_empty(), "the channel is forgotten");
    }

    #[test]
    fn stats_count_distinct_users() {
        let a1 = entry(&identity("alice", None));
        let a2 = entry(&identity("alice", None));
        let b = entry(&identity("bob", None));
        let s = stats([&*a1, &*a2, &*b].into_iter());
        assert_eq!(
            s,
            Stats {
                clients: 3,
                users: 2
            }
        );
    }
}
