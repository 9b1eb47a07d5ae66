//! The WebSocket upgrade, in one place: the server hands each request's hyper
//! upgrade handle over ([`UpgradeSlot::attach`]); the `/ws` route checks the
//! handshake, answers 101 and, once hyper gives up the socket, wraps it in a
//! tungstenite stream with small buffers and runs the session.
//!
//! warp's own `ws()` cannot be configured and keeps tungstenite's default 128 KiB
//! read buffer per connection; doing the upgrade here is what keeps an idle
//! connection near 6 KiB (docs/BENCHMARKS.md).

use std::sync::Arc;

use tokio::sync::mpsc;
use warp::http::header::{
    CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION, UPGRADE,
};
use warp::http::{HeaderMap, HeaderValue, StatusCode};
use warp::reply::Response;

use super::error::ApiError;
use crate::channel::UserId;
use crate::codes::ErrorCode;
use crate::identity::Identity;
use crate::node::Node;
use crate::session::{self, Authenticated, Start};
use crate::shutdown::Shutdown;

/// What the upgrade request says about identity: `/ws/<user>` or `?user=`
/// (development mode only) and `?token=` (with `--token-in-query` only).
#[derive(Debug, Default)]
pub struct Claimed {
    pub user: Option<String>,
    pub token: Option<String>,
}

/// hyper's upgrade handle for one request, made extractable by warp filters.
#[derive(Clone)]
pub struct UpgradeSlot(Arc<std::sync::Mutex<Option<hyper::upgrade::OnUpgrade>>>);

impl UpgradeSlot {
    /// Moves the request's upgrade handle (if any) into a slot the `/ws` route can take.
    pub fn attach<B>(req: &mut hyper::Request<B>) {
        if let Some(on_upgrade) = req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>() {
            req.extensions_mut()
                .insert(UpgradeSlot(Arc::new(std::sync::Mutex::new(Some(
                    on_upgrade,
                )))));
        }
    }

    fn take(&self) -> Option<hyper::upgrade::OnUpgrade> {
        self.0.lock().ok()?.take()
    }
}

/// The `Sec-WebSocket-Key` of a valid upgrade request (RFC 6455 4.2.1).
fn websocket_key(headers: &HeaderMap) -> Option<String> {
    let has = |name, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    if !has(CONNECTION, "upgrade") || !has(UPGRADE, "websocket") {
        return None;
    }
    if headers
        .get(SEC_WEBSOCKET_VERSION)
        .and_then(|v| v.to_str().ok())
        != Some("13")
    {
        return None;
    }
    headers
        .get(SEC_WEBSOCKET_KEY)
        .and_then(|v| v.to_str().ok())
        .filter(|k| !k.is_empty())
        .map(str::to_string)
}

/// Bytes read from a client socket at a time. Client frames are small requests, and
/// tungstenite allocates this much per connection up front: 512 rather than 1024
/// took an idle connection from 5.97 to 5.48 KiB at 50,000 (log entry 23 of
/// docs/BENCHMARKS.md). The cost: a frame over 512 bytes takes a read per 512.
const READ_BUFFER_BYTES: usize = 512;

/// Small buffers: tungstenite's defaults (128 KiB to read, 128 KiB to write) cost
/// ~140 KiB per idle connection. Reads grow as a frame needs; writes are batched by
/// the session and flushed once per batch.
fn websocket_config(node: &Node) -> tungstenite::protocol::WebSocketConfig {
    let config = node.config();
    let hard = config.hard_frame_limit();
    tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(16 * 1024)
        .max_write_buffer_size(config.outbound_queue_bytes.max(hard) * 2)
        .max_message_size(Some(hard))
        .max_frame_size(Some(hard))
}

/// Who the upgrade request is from, or why it is refused (before the upgrade).
fn authenticate(node: &Node, claimed: Claimed, headers: &HeaderMap) -> Result<Start, ApiError> {
    let auth = node.auth();
    let metrics = node.metrics();
    if !auth.can_authenticate() {
        return Err(ApiError::new(
            ErrorCode::NotConfigured,
            "this server cannot authenticate clients: configure token keys (--token-hmac-secret, \
             --token-public-key or --token-jwks), or run with --insecure for development",
        ));
    }
    let bearer = headers
        .get(warp::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| token.trim().to_string())
        });
    let token = match (bearer, claimed.token) {
        (Some(t), _) => Some(t),
        (None, Some(t)) if auth.token_in_query => Some(t),
        (None, Some(_)) => {
            metrics.auth_failure(crate::metrics::AuthFailure::TokenInQuery);
            return Err(ApiError::new(
                ErrorCode::BadRequest,
                "a token in the URL is not accepted here (it would show in access logs): send it as \
                 `Authorization: Bearer`, or in the first frame {\"op\":\"connect\",\"token\":...}",
            ));
        }
        (None, None) => None,
    };
    if let Some(token) = token {
        let Some(verifier) = &auth.verifier else {
            return Err(ApiError::new(
                ErrorCode::NotConfigured,
                "this server has no token keys",
            ));
        };
        let claims = verifier.connect(&token).map_err(|e| {
            metrics.auth_failure(crate::metrics::AuthFailure::ConnectToken);
            ApiError::new(e.code(), e.to_string())
        })?;
        return Ok(Start::Ready(Authenticated::from_claims(claims)));
    }
    match claimed.user {
        Some(u) if auth.insecure => {
            let user = UserId::parse(&u).map_err(|e| {
                ApiError::new(ErrorCode::BadRequest, format!("invalid user id: {e}"))
            })?;
            Ok(Start::Ready(Authenticated {
                identity: Identity::new(user, None),
                expires_at: None,
                channels: Vec::new(),
            }))
        }
        Some(_) => {
            metrics.auth_failure(crate::metrics::AuthFailure::SelfAsserted);
            Err(ApiError::new(
                ErrorCode::Unauthorized,
                "a self-asserted user id (?user=) needs --insecure (development only); authenticate with a token",
            ))
        }
        // Development mode without keys: an anonymous connection.
        None if auth.verifier.is_none() => Ok(Start::Ready(Authenticated {
            identity: Identity::new(UserId::anonymous(), None),
            expires_at: None,
            channels: Vec::new(),
        })),
        None => Ok(Start::AwaitConnect),
    }
}

/// Answers an upgrade request: checks the handshake, the origin, the limits and
/// the identity, then 101, then the session on the upgraded socket.
pub fn upgrade(
    node: Arc<Node>,
    claimed: Claimed,
    headers: &HeaderMap,
    slot: Option<UpgradeSlot>,
    shutdown: Shutdown,
    drain: mpsc::Sender<()>,
) -> Result<Response, ApiError> {
    let key = websocket_key(headers).ok_or_else(|| {
        ApiError::new(
            ErrorCode::BadRequest,
            "expected a WebSocket upgrade request (Upgrade: websocket, \
             Sec-WebSocket-Version: 13, Sec-WebSocket-Key)",
        )
    })?;
    let origin = headers
        .get(warp::http::header::ORIGIN)
        .and_then(|v| v.to_str().ok());
    let host = headers
        .get(warp::http::header::HOST)
        .and_then(|v| v.to_str().ok());
    if !node.auth().origins.allows(origin, host) {
        node.metrics()
            .connection_refused(crate::metrics::Refusal::Origin);
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            format!(
                "origin `{}` is not allowed (--allowed-origins)",
                origin.unwrap_or_default()
            ),
        ));
    }
    let start = authenticate(&node, claimed, headers)?;
    if let Start::Ready(a) = &start
        && !node.connections().user_has_room(&a.identity.user)
    {
        node.metrics()
            .connection_refused(crate::metrics::Refusal::PerUser);
        return Err(ApiError::new(
            ErrorCode::Limit,
            "this user has too many connections on this instance (--max-connections-per-user)",
        ));
    }
    if let Err(r) = node.connections().admit() {
        node.metrics().connection_refused(r.refusal());
        return Err(ApiError::new(
            ErrorCode::Unavailable,
            format!("connection refused: {} reached", r.as_str()),
        ));
    }
    let on_upgrade = slot.and_then(|s| s.take()).ok_or_else(|| {
        ApiError::new(ErrorCode::BadRequest, "this connection cannot be upgraded")
    })?;
    let upgrade_timeout = node.config().front.upgrade_timeout;
    let task = async move {
        // hyper hands the socket over once the 101 is written. The connection task
        // closes (and counts) a connection whose 101 is not taken in time
        // (guard.rs); this is only the backstop for this task.
        let upgraded = match tokio::time::timeout(upgrade_timeout, on_upgrade).await {
            Ok(u) => u,
            Err(_) => return,
        };
        match upgraded {
            Ok(upgraded) => {
                let config = websocket_config(&node);
                let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                    hyper_util::rt::TokioIo::new(upgraded),
                    tungstenite::protocol::Role::Server,
                    Some(config),
                )
                .await;
                // Its own task: this one (the upgrade, its timeout and what it
                // captured) ends here and frees its memory, instead of living on,
                // thousands of bytes per connection, beside the session it awaits.
                tokio::spawn(session::serve(ws, node, start, shutdown, drain));
            }
            Err(e) => tracing::debug!(error = %e, "websocket upgrade failed"),
        }
    };
    tokio::spawn(task);
    let mut res = Response::default();
    *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = res.headers_mut();
    h.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(v) = HeaderValue::from_str(&tungstenite::handshake::derive_accept_key(key.as_bytes()))
    {
        h.insert(SEC_WEBSOCKET_ACCEPT, v);
    }
    Ok(res)
}
