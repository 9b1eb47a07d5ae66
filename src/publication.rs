//! The domain types every layer shares: a publication as it travels between
//! instances, and what the broker answers when it accepted one.
//!
//! This module sits at the bottom of the crate (it imports only [`crate::channel`]):
//! the broker produces these, the hub fans them out, the protocol serializes them,
//! and none of those needs to know about the others to do so.

use std::sync::Arc;

use serde_json::value::RawValue;

use crate::channel::{Channel, UserId};

/// What a publication is for. Only `Message` comes from publishers; the others are
/// made by shardcast itself and travel the same way, so that they stay in order
/// with the channel's messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Kind {
    /// A publication for the channel's subscribers.
    #[default]
    Message,
    /// A command for the instances holding a personal channel's connections
    /// (`data` says which: disconnect, subscribe, unsubscribe).
    Control,
    /// A client joined the channel (`data`: the client's presence entry).
    Join,
    /// A client left the channel.
    Leave,
}

/// One publication as it travels between instances.
#[derive(Debug, Clone)]
pub struct Publication {
    pub channel: Channel,
    pub kind: Kind,
    pub data: Box<RawValue>,
    /// The publishing user; `None` for server-side publishes (HTTP API).
    pub from: Option<UserId>,
    /// The publisher's public `info` (from its connection token).
    pub info: Option<Arc<RawValue>>,
    /// Position in the channel's history, on history channels.
    pub offset: Option<u64>,
    /// The history epoch the offset belongs to.
    pub epoch: Option<Arc<str>>,
    /// Random id of a plain publication that crossed Redis (0: none), so that a
    /// publish Redis executed twice (a client-side retry after a timeout) is
    /// delivered once.
    pub uid: u64,
}

impl Publication {
    /// A new publication, not yet numbered or identified by a broker.
    pub fn new(channel: Channel, data: Box<RawValue>, from: Option<UserId>) -> Publication {
        Publication {
            channel,
            kind: Kind::Message,
            data,
            from,
            info: None,
            offset: None,
            epoch: None,
            uid: 0,
        }
    }
}

/// What the broker says once it accepted a publication.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishAck {
    pub offset: Option<u64>,
    pub epoch: Option<String>,
}
