//! The sessions of this instance by user, so that a command for a user (from
//! `POST /api/disconnect`, `/api/subscribe`, `/api/unsubscribe`, on any instance)
//! reaches every one of its connections here. Commands travel between instances
//! as control publications on the user's personal channel, which every instance
//! holding a connection of that user subscribes anyway.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::channel::{Channel, UserId};
use crate::hub::SessionId;

/// A command for every connection of a user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Command {
    /// Close with 4501.
    Disconnect,
    /// Add a server-side subscription.
    Subscribe { channel: Channel },
    /// Remove a subscription.
    Unsubscribe { channel: Channel },
}

/// One session's command inbox. Empty until a command arrives (no allocation for
/// an idle connection).
#[derive(Default)]
pub struct Inbox {
    queue: Mutex<VecDeque<Command>>,
    pub ready: Notify,
}

impl Inbox {
    fn push(&self, cmd: Command) {
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(cmd);
        self.ready.notify_one();
    }

    /// The commands received so far.
    pub fn take(&self) -> Vec<Command> {
        self.queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
            .collect()
    }
}

const SHARDS: usize = 64;

type ByUser = HashMap<UserId, Vec<(SessionId, Arc<Inbox>)>>;
type Shard = Mutex<ByUser>;

pub struct Sessions {
    shards: Box<[Shard]>,
    hasher: RandomState,
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions {
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
            hasher: RandomState::new(),
        }
    }
}

impl Sessions {
    fn shard(&self, user: &UserId) -> std::sync::MutexGuard<'_, ByUser> {
        self.shards[self.hasher.hash_one(user) as usize % SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    pub fn register(&self, user: &UserId, session: SessionId) -> Arc<Inbox> {
        let inbox = Arc::new(Inbox::default());
        let mut map = self.shard(user);
        let list = map.entry(user.clone()).or_default();
        // Most users have one connection per instance: room for exactly one, not
        // the four a first push would make (48 bytes per connection).
        if list.is_empty() {
            list.reserve_exact(1);
        }
        list.push((session, inbox.clone()));
        inbox
    }

    pub fn unregister(&self, user: &UserId, session: SessionId) {
        let mut map = self.shard(user);
        if let Some(list) = map.get_mut(user) {
            list.retain(|(s, _)| *s != session);
            if list.is_empty() {
                map.remove(user);
            }
        }
    }

    /// Hands `cmd` to every session of `user` here; returns how many.
    pub fn deliver(&self, user: &UserId, cmd: &Command) -> usize {
        let map = self.shard(user);
        let Some(list) = map.get(user) else {
            return 0;
        };
        for (_, inbox) in list {
            inbox.push(cmd.clone());
        }
        list.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_reach_every_session_of_the_user_only() {
        let s = Sessions::default();
        let alice = UserId::parse("alice").unwrap();
        let bob = UserId::parse("bob").unwrap();
        let a1 = s.register(&alice, 1);
        let a2 = s.register(&alice, 2);
        let b = s.register(&bob, 3);
        assert_eq!(s.deliver(&alice, &Command::Disconnect), 2);
        assert_eq!(a1.take(), vec![Command::Disconnect]);
        assert_eq!(a2.take(), vec![Command::Disconnect]);
        assert!(b.take().is_empty());
        s.unregister(&alice, 1);
        assert_eq!(s.deliver(&alice, &Command::Disconnect), 1);
        let json = serde_json::to_string(&Command::Subscribe {
            channel: Channel::parse("c").unwrap(),
        })
        .unwrap();
        assert_eq!(json, r#"{"cmd":"subscribe","channel":"c"}"#);
    }
}
