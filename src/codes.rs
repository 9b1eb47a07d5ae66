//! The catalogue of codes a client may branch on: error codes (in `error` frames and
//! HTTP error bodies) and WebSocket close codes. Nothing else in the crate invents
//! a code; docs/PROTOCOL.md lists the same table.

use serde::{Deserialize, Serialize};

/// Error codes a client may branch on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Malformed frame: invalid JSON, unknown op, missing or mistyped field, bad name.
    BadRequest,
    /// A frame or body over the configured size limit.
    TooLarge,
    /// Not allowed, e.g. another user's personal channel.
    Forbidden,
    /// A per-connection limit was reached (channels per connection).
    Limit,
    /// The broker could not take the request (Redis down, no topology). Retry later.
    Unavailable,
    /// Unsubscribe from a channel the connection is not subscribed to.
    NotSubscribed,
    /// `since` on a channel without history, or a malformed position.
    NoHistory,
    /// No valid identity: a token that is missing, malformed, badly signed, of a
    /// refused algorithm, for another audience or issuer, or without `sub`.
    Unauthorized,
    /// The token (connection or subscription) expired: fetch a new one.
    TokenExpired,
    /// The server has no way to authenticate anyone: neither keys nor `--insecure`.
    NotConfigured,
    /// A presence request for a channel whose namespace keeps no presence.
    NoPresence,
    /// The channel has more members than `--presence-max`: ask `presence_stats`.
    TooManyMembers,
    /// A bug on our side; logged.
    Internal,
    /// HTTP only: no such route.
    NotFound,
    /// HTTP only: the route exists, the method does not.
    MethodNotAllowed,
    /// HTTP only: a body without `Content-Length`.
    LengthRequired,
    /// HTTP only: the request was not completed in time (its body did not arrive).
    Timeout,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::Limit => "limit",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::NotSubscribed => "not_subscribed",
            ErrorCode::NoHistory => "no_history",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::TokenExpired => "token_expired",
            ErrorCode::NotConfigured => "not_configured",
            ErrorCode::NoPresence => "no_presence",
            ErrorCode::TooManyMembers => "too_many_members",
            ErrorCode::Internal => "internal",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::LengthRequired => "length_required",
            ErrorCode::Timeout => "timeout",
        }
    }

    pub const ALL: [ErrorCode; 17] = [
        ErrorCode::BadRequest,
        ErrorCode::TooLarge,
        ErrorCode::Forbidden,
        ErrorCode::Limit,
        ErrorCode::Unavailable,
        ErrorCode::NotSubscribed,
        ErrorCode::NoHistory,
        ErrorCode::Unauthorized,
        ErrorCode::TokenExpired,
        ErrorCode::NotConfigured,
        ErrorCode::NoPresence,
        ErrorCode::TooManyMembers,
        ErrorCode::Internal,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::LengthRequired,
        ErrorCode::Timeout,
    ];

    /// Position in [`ErrorCode::ALL`] (for per-code counters).
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Why the server closes a WebSocket: the close code and its reason text.
///
/// Codes 4000–4499 mean "reconnect" (with backoff; after 4011 with a fresh token);
/// codes 4500–4999 mean "do not reconnect": what caused them will not go away by
/// itself. Clients branch on the range (docs/PROTOCOL.md, "Close codes").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseCode {
    /// The client broke RFC 6455 framing: reserved bits, an unknown opcode, a
    /// fragmented or oversized control frame, an unmasked frame, a stray
    /// continuation.
    ProtocolError,
    /// A text frame that is not UTF-8.
    InvalidPayload,
    /// Frame over the hard size limit.
    MessageTooBig,
    /// Unexpected server error.
    Internal,
    /// Server shutting down or restarting: reconnect, possibly to another instance.
    ServiceRestart,
    /// The broker is unavailable, the connection could not be set up: retry later.
    TryAgainLater,
    /// The client did not read fast enough; its outbound queue overflowed.
    SlowConsumer,
    /// No pong (or any frame) within the pong timeout after a ping.
    KeepaliveTimeout,
    /// No valid `connect` frame within `--connect-timeout`.
    ConnectTimeout,
    /// The connection token expired and no valid `refresh` came within the grace.
    TokenExpired,
    /// This user already has `--max-connections-per-user` connections here.
    TooManyConnections,
    /// The client kept sending over its rate limit.
    RateLimited,
    /// The token is not valid and a refresh cannot fix it (bad signature,
    /// algorithm, audience, issuer, missing `sub`, another `sub` on refresh).
    Unauthorized,
    /// The backend disconnected this user (`POST /api/disconnect`).
    Disconnected,
}

impl CloseCode {
    pub fn code(self) -> u16 {
        match self {
            CloseCode::ProtocolError => 1002,
            CloseCode::InvalidPayload => 1007,
            CloseCode::MessageTooBig => 1009,
            CloseCode::Internal => 1011,
            CloseCode::ServiceRestart => 1012,
            CloseCode::TryAgainLater => 1013,
            CloseCode::SlowConsumer => 4008,
            CloseCode::KeepaliveTimeout => 4009,
            CloseCode::ConnectTimeout => 4010,
            CloseCode::TokenExpired => 4011,
            CloseCode::TooManyConnections => 4012,
            CloseCode::RateLimited => 4029,
            CloseCode::Unauthorized => 4500,
            CloseCode::Disconnected => 4501,
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            CloseCode::ProtocolError => "websocket protocol error",
            CloseCode::InvalidPayload => "text frame is not utf-8",
            CloseCode::MessageTooBig => "frame too large",
            CloseCode::Internal => "internal error",
            CloseCode::ServiceRestart => "server restarting",
            CloseCode::TryAgainLater => "broker unavailable",
            CloseCode::SlowConsumer => "slow consumer",
            CloseCode::KeepaliveTimeout => "keepalive timeout",
            CloseCode::ConnectTimeout => "no connect frame in time",
            CloseCode::TokenExpired => "token expired",
            CloseCode::TooManyConnections => "too many connections for this user",
            CloseCode::RateLimited => "rate limit exceeded",
            CloseCode::Unauthorized => "unauthorized",
            CloseCode::Disconnected => "disconnected by the server",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_codes_fall_in_their_reconnect_ranges() {
        use CloseCode::*;
        for c in [
            SlowConsumer,
            KeepaliveTimeout,
            ConnectTimeout,
            TokenExpired,
            TooManyConnections,
            RateLimited,
        ] {
            assert!((4000..4500).contains(&c.code()), "{c:?} reconnects");
        }
        for c in [Unauthorized, Disconnected] {
            assert!((4500..5000).contains(&c.code()), "{c:?} does not");
        }
    }

    #[test]
    fn error_code_indexes_match_the_catalogue() {
        for (i, c) in ErrorCode::ALL.iter().enumerate() {
            assert_eq!(c.index(), i);
            let json = serde_json::to_string(c).unwrap();
            assert_eq!(json, format!("\"{}\"", c.as_str()));
        }
    }
}
