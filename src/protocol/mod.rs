//! Client protocol v1: JSON text frames (docs/PROTOCOL.md). [`client`] parses what
//! clients send; [`server`] encodes what the server sends.

mod client;
mod depth;
mod object;
mod server;

pub use crate::codes::ErrorCode;
pub use client::{
    ClientFrame, FrameError, MAX_HISTORY_LIMIT, MAX_IDEMPOTENCY_KEY_BYTES, MAX_TOKEN_BYTES,
    Request, Since, check_epoch, check_idempotency_key, parse_client_frame,
};
pub use depth::check_depth;
pub use object::{ObjectError, from_object};
pub use server::{HistoryAnswer, HistoryEntry, ServerFrame, answer, message_frame};
