//! Authentication by the first frame: browsers cannot set headers on a WebSocket,
//! so their token comes as `{"op":"connect","token":..,"id":N}` within
//! `--connect-timeout`. Until it is verified only `ping` is answered; every other
//! request gets `unauthorized`.

use futures_util::StreamExt;
use futures_util::stream::SplitStream;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::sleep;
use tokio_tungstenite::WebSocketStream;
use tungstenite::Message;

use super::closer::Closer;
use super::{Authenticated, read_error_close};
use crate::codes::{CloseCode, ErrorCode};
use crate::node::Node;
use crate::outbox::Outbox;
use crate::protocol::{FrameError, Request, ServerFrame, parse_client_frame};
use crate::shutdown::Shutdown;

/// Waits for a valid `connect`; returns the identity and the request's id, or
/// `None` when the connection is to end (the closer says why).
pub async fn await_connect<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut SplitStream<WebSocketStream<S>>,
    node: &Node,
    outbox: &Outbox,
    closer: &Closer,
    shutdown: &mut Shutdown,
) -> Option<(Authenticated, Option<u64>)> {
    let metrics = node.metrics();
    let deadline = sleep(node.config().auth.connect_timeout);
    tokio::pin!(deadline);
    let refuse = |e: FrameError| {
        metrics.error(e.code);
        outbox.push(e.to_frame(), metrics);
    };
    loop {
        let msg = tokio::select! {
            m = stream.next() => m,
            _ = &mut deadline => {
                metrics.auth_failure(crate::metrics::AuthFailure::ConnectTimeout);
                metrics.timeout(crate::metrics::Stage::Connect);
                closer.close(CloseCode::ConnectTimeout);
                return None;
            }
            _ = closer.closed() => return None,
            // Shutting down: 1012 like every session, not a silent wait for the
            // connect timeout.
            _ = shutdown.recv() => {
                closer.close(CloseCode::ServiceRestart);
                return None;
            }
        };
        let text = match msg {
            None => {
                closer.gone("client gone");
                return None;
            }
            Some(Err(e)) => {
                match read_error_close(&e) {
                    Some(code) => closer.close(code),
                    None => closer.gone("read error"),
                }
                return None;
            }
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Close(_))) => {
                closer.gone("client closed");
                return None;
            }
            Some(Ok(_)) => {
                closer.liveness().touch();
                continue;
            }
        };
        closer.liveness().touch();
        if text.len() > node.config().max_frame_bytes {
            refuse(FrameError::new(
                None,
                ErrorCode::TooLarge,
                "frame too large",
            ));
            continue;
        }
        let frame = match parse_client_frame(&text) {
            Ok(f) => f,
            Err(e) => {
                refuse(e);
                continue;
            }
        };
        let token = match frame.request {
            Request::Connect { token } => token,
            Request::Ping => {
                outbox.push(ServerFrame::Pong { id: frame.id }.to_bytes(), metrics);
                continue;
            }
            _ => {
                refuse(FrameError::new(
                    frame.id,
                    ErrorCode::Unauthorized,
                    "not authenticated: send {\"op\":\"connect\",\"token\":...} first",
                ));
                continue;
            }
        };
        let Some(verifier) = &node.auth().verifier else {
            refuse(FrameError::new(
                frame.id,
                ErrorCode::NotConfigured,
                "this server has no token keys (--token-hmac-secret, --token-public-key, --token-jwks)",
            ));
            closer.close(CloseCode::Unauthorized);
            return None;
        };
        match verifier.connect(&token) {
            Ok(claims) => return Some((Authenticated::from_claims(claims), frame.id)),
            Err(e) => {
                metrics.auth_failure(crate::metrics::AuthFailure::ConnectToken);
                refuse(FrameError::new(frame.id, e.code(), e.to_string()));
                closer.close(if e.code() == ErrorCode::TokenExpired {
                    CloseCode::TokenExpired
                } else {
                    CloseCode::Unauthorized
                });
                return None;
            }
        }
    }
}
