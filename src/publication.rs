//! The domain types every layer shares: a publication as it travels between
//! instances, and what the broker answers when it accepted one.
//!
//! This module sits at the bottom of the crate (it imports only [`crate::channel`]):
//! the broker produces these, the hub fans them out, the protocol serializes them,
//! and none of those needs to know about the others to do so.

use std::sync::Arc;

use serde_json::value::RawValue;

use crate::channel::{Channel, UserId};

/// One publication as it travels between instances.
#[derive(Debug, Clone)]
pub struct Publication {
    pub channel: Channel,
    pub data: Box<RawValue>,
    /// The publishing user; `None` for server-side publishes (HTTP API).
    pub from: Option<UserId>,
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
            data,
            from,
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
