//! Who a connection is: its user (from a verified token, or self-asserted in
//! development mode), its cluster-unique client id, and the token's public `info`.

use std::sync::Arc;

use serde_json::value::RawValue;

use crate::channel::{ClientId, UserId};

#[derive(Debug, Clone)]
pub struct Identity {
    /// The anonymous user when the token said `sub: ""`.
    pub user: UserId,
    pub client: ClientId,
    /// Public JSON attached to this client's publications, presence and join/leave.
    pub info: Option<Arc<RawValue>>,
    /// Server-only data from the token.
    pub meta: Option<Arc<RawValue>>,
}

impl Identity {
    pub fn new(user: UserId, info: Option<Arc<RawValue>>) -> Identity {
        Identity {
            user,
            client: ClientId::new(),
            info,
            meta: None,
        }
    }
}
