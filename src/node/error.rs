//! Why the node refused or failed a request. Session and HTTP map these to an
//! `error` frame or a status with [`NodeError::code`]; the broker's error stays
//! attached as the source.

use thiserror::Error;

use crate::broker::BrokerError;
use crate::channel::Channel;
use crate::codes::ErrorCode;

#[derive(Debug, Error)]
pub enum NodeError {
    /// `since` on a channel that keeps no history.
    #[error("channel `{0}` keeps no history; subscribe without `since`")]
    SinceWithoutHistory(Channel),
    /// `idempotency_key` on a channel that keeps no history.
    #[error("`idempotency_key` needs a history channel; `{0}` keeps none")]
    IdempotencyWithoutHistory(Channel),
    /// A history read of a channel that keeps none.
    #[error("channel `{0}` keeps no history")]
    NoHistory(Channel),
    /// A presence request on a namespace without presence.
    #[error("namespace `{0}` keeps no presence")]
    NoPresence(String),
    /// Too many members to list.
    #[error(
        "`{channel}` has {members} members, more than --presence-max {max}: ask presence_stats"
    )]
    TooManyMembers {
        channel: Channel,
        members: u64,
        max: usize,
    },
    /// The broker could not do it now (Redis down, no topology, timeouts).
    #[error("broker unavailable: {0}")]
    Broker(#[from] BrokerError),
    /// A bug: the broker answered fewer results than it was given requests.
    #[error("internal error: {0}")]
    Internal(&'static str),
}

impl NodeError {
    pub fn code(&self) -> ErrorCode {
        match self {
            NodeError::SinceWithoutHistory(_)
            | NodeError::IdempotencyWithoutHistory(_)
            | NodeError::NoHistory(_) => ErrorCode::NoHistory,
            NodeError::NoPresence(_) => ErrorCode::NoPresence,
            NodeError::TooManyMembers { .. } => ErrorCode::TooManyMembers,
            NodeError::Broker(_) => ErrorCode::Unavailable,
            NodeError::Internal(_) => ErrorCode::Internal,
        }
    }
}
