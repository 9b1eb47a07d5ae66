//! HTTP surface: the WebSocket endpoint, the publish API, health, readiness, metrics.
//! Every error is a 4xx/5xx with a JSON body `{"error":{"code":..,"message":..}}`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use warp::http::header::{
    CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION, UPGRADE,
};
use warp::http::{HeaderMap, HeaderValue, StatusCode};
use warp::reply::{Reply, Response};
use warp::{Filter, Rejection};

use crate::channel::{Channel, UserId};
use crate::history::MAX_PAGE;
use crate::metrics::Metrics;
use crate::node::Node;
use crate::protocol::{ErrorCode, MAX_IDEMPOTENCY_KEY_BYTES};
use crate::session;
use crate::shutdown::Shutdown;

/// hyper's upgrade handle for this request, moved here by [`crate::server`] so that
/// the `/ws` route (a warp filter) can take it: warp's own `ws()` filter does not let
/// us size tungstenite's buffers, which dominate the memory of an idle connection.
#[derive(Clone)]
pub struct UpgradeSlot(Arc<std::sync::Mutex<Option<hyper::upgrade::OnUpgrade>>>);

impl UpgradeSlot {
    pub fn new(on_upgrade: hyper::upgrade::OnUpgrade) -> UpgradeSlot {
        UpgradeSlot(Arc::new(std::sync::Mutex::new(Some(on_upgrade))))
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

/// Small buffers: tungstenite's defaults (128 KiB to read, 128 KiB to write) cost
/// ~140 KiB per idle connection. Reads grow as a frame needs; writes are batched by
/// the session and flushed once per batch.
fn websocket_config(node: &Node) -> tungstenite::protocol::WebSocketConfig {
    let hard = node.config.hard_frame_limit();
    tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(16 * 1024)
        .max_write_buffer_size(node.config.outbound_queue_bytes.max(hard) * 2)
        .max_message_size(Some(hard))
        .max_frame_size(Some(hard))
}

/// Bytes read from a client socket at a time (client frames are small requests).
const READ_BUFFER_BYTES: usize = 1024;

/// An API error, carried through warp's rejection system to [`recover`].
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl warp::reject::Reject for ApiError {}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    fn from_code(code: ErrorCode, message: impl Into<String>) -> ApiError {
        let status = match code {
            ErrorCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Limit => StatusCode::TOO_MANY_REQUESTS,
            _ => StatusCode::BAD_REQUEST,
        };
        ApiError::new(status, code.as_str(), message)
    }

    fn into_response(self) -> Response {
        let body = json!({ "error": { "code": self.code, "message": self.message } });
        warp::reply::with_status(warp::reply::json(&body), self.status).into_response()
    }
}

/// All routes of one node.
pub fn routes(
    node: Arc<Node>,
    shutdown: Shutdown,
    drain: mpsc::Sender<()>,
) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone + Send + Sync + 'static {
    let with_node = {
        let node = node.clone();
        warp::any().map(move || node.clone())
    };

    let user_from_query = warp::path!("ws")
        .and(warp::query::<HashMap<String, String>>())
        .map(|q: HashMap<String, String>| q.get("user").cloned());
    let user_from_path = warp::path!("ws" / String).map(Some);
    // Paths before methods everywhere: warp reports the most specific rejection, and a
    // method filter first would turn every unknown path into a 405.
    let ws = user_from_path
        .or(user_from_query)
        .unify()
        .and(warp::get())
        .and_then(|user: Option<String>| async move {
            match user {
                None => Ok(UserId::anonymous()),
                Some(u) => UserId::parse(&u).map_err(|e| {
                    warp::reject::custom(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "bad_request",
                        format!("invalid user id: {e}"),
                    ))
                }),
            }
        })
        .and(warp::header::headers_cloned())
        .and(warp::ext::optional::<UpgradeSlot>())
        .and(with_node.clone())
        .and_then(
            move |user: UserId, headers: HeaderMap, slot: Option<UpgradeSlot>, node: Arc<Node>| {
                let (shutdown, drain) = (shutdown.clone(), drain.clone());
                async move {
                    let key = websocket_key(&headers).ok_or_else(|| {
                        warp::reject::custom(ApiError::new(
                            StatusCode::BAD_REQUEST,
                            "bad_request",
                            "expected a WebSocket upgrade request (Upgrade: websocket, \
                             Sec-WebSocket-Version: 13, Sec-WebSocket-Key)",
                        ))
                    })?;
                    let on_upgrade = slot.and_then(|s| s.take()).ok_or_else(|| {
                        warp::reject::custom(ApiError::new(
                            StatusCode::BAD_REQUEST,
                            "bad_request",
                            "this connection cannot be upgraded",
                        ))
                    })?;
                    tokio::spawn(async move {
                        match on_upgrade.await {
                            Ok(upgraded) => {
                                let config = websocket_config(&node);
                                let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                                    hyper_util::rt::TokioIo::new(upgraded),
                                    tungstenite::protocol::Role::Server,
                                    Some(config),
                                )
                                .await;
                                session::serve(ws, node, user, shutdown, drain).await;
                            }
                            Err(e) => tracing::debug!(error = %e, "websocket upgrade failed"),
                        }
                    });
                    let mut res = Response::default();
                    *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
                    let h = res.headers_mut();
                    h.insert(CONNECTION, HeaderValue::from_static("upgrade"));
                    h.insert(UPGRADE, HeaderValue::from_static("websocket"));
                    if let Ok(v) = HeaderValue::from_str(
                        &tungstenite::handshake::derive_accept_key(key.as_bytes()),
                    ) {
                        h.insert(SEC_WEBSOCKET_ACCEPT, v);
                    }
                    Ok::<Response, Rejection>(res)
                }
            },
        );

    let publish = warp::path!("api" / "publish")
        .and(warp::post())
        .and(with_node.clone())
        // The body is buffered, so its size is bounded before it is read (413 above
        // the hard limit; between the soft and hard limit `publish` answers 413 too).
        .and(warp::body::content_length_limit(
            node.config.hard_frame_limit() as u64,
        ))
        .and(warp::body::bytes())
        .and_then(publish);

    let healthz = warp::path!("healthz")
        .and(warp::get())
        .map(|| warp::reply::json(&json!({"status": "ok"})).into_response());

    let readyz = warp::path!("readyz")
        .and(warp::get())
        .and(with_node.clone())
        .map(|node: Arc<Node>| {
            let ready = node.broker.is_ready();
            let status = if ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            warp::reply::with_status(warp::reply::json(&json!({ "ready": ready })), status)
                .into_response()
        });

    let metrics = warp::path!("metrics").and(warp::get()).map(|| {
        warp::reply::with_header(
            Metrics::render(),
            "content-type",
            "text/plain; version=0.0.4",
        )
        .into_response()
    });

    let history_route = warp::path!("api" / "history")
        .and(warp::get())
        .and(with_node.clone())
        .and(warp::query::<HistoryQuery>())
        .and_then(history);

    let cluster = warp::path!("api" / "cluster")
        .and(warp::get())
        .and(with_node)
        .then(|node: Arc<Node>| async move {
            warp::reply::json(&node.broker.describe().await).into_response()
        });

    ws.or(publish)
        .unify()
        .or(healthz)
        .unify()
        .or(readyz)
        .unify()
        .or(metrics)
        .unify()
        .or(history_route)
        .unify()
        .or(cluster)
        .unify()
        .recover(recover)
        .unify()
}

#[derive(Deserialize)]
struct PublishBody {
    channel: String,
    data: Box<RawValue>,
    #[serde(default)]
    idempotency_key: Option<String>,
}

async fn publish(node: Arc<Node>, body: bytes::Bytes) -> Result<Response, Rejection> {
    let reject = |code: ErrorCode, message: String| {
        node.metrics.error(code);
        warp::reject::custom(ApiError::from_code(code, message))
    };
    if body.len() > node.config.max_frame_bytes {
        return Err(reject(
            ErrorCode::TooLarge,
            format!(
                "body is {} bytes; the limit is {}",
                body.len(),
                node.config.max_frame_bytes
            ),
        ));
    }
    let parsed: PublishBody = serde_json::from_slice(&body).map_err(|e| {
        reject(
            ErrorCode::BadRequest,
            format!("body must be {{\"channel\":<string>,\"data\":<json>}}: {e}"),
        )
    })?;
    let channel = Channel::parse(&parsed.channel)
        .map_err(|e| reject(ErrorCode::BadRequest, format!("invalid channel name: {e}")))?;
    if let Some(key) = &parsed.idempotency_key
        && (key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_BYTES)
    {
        return Err(reject(
            ErrorCode::BadRequest,
            format!("`idempotency_key` must be 1-{MAX_IDEMPOTENCY_KEY_BYTES} bytes"),
        ));
    }
    match node
        .publish(
            channel,
            parsed.data,
            None,
            parsed.idempotency_key.as_deref(),
        )
        .await
    {
        Ok(ack) => {
            let mut body = json!({ "ok": true });
            if let Some(offset) = ack.offset {
                body["offset"] = json!(offset);
            }
            if let Some(epoch) = ack.epoch {
                body["epoch"] = json!(epoch);
            }
            Ok(warp::reply::json(&body).into_response())
        }
        Err(e) => Err(reject(e.code, e.message)),
    }
}

#[derive(Deserialize)]
struct HistoryQuery {
    channel: String,
    since: Option<u64>,
    limit: Option<usize>,
}

/// `GET /api/history?channel=C&since=N&limit=L`: publications after offset N.
async fn history(node: Arc<Node>, q: HistoryQuery) -> Result<Response, Rejection> {
    let reject = |code: ErrorCode, message: String| {
        node.metrics.error(code);
        warp::reject::custom(ApiError::from_code(code, message))
    };
    let channel = Channel::parse(&q.channel)
        .map_err(|e| reject(ErrorCode::BadRequest, format!("invalid channel name: {e}")))?;
    let Some(retention) = node.history.retention(&channel).cloned() else {
        return Err(reject(
            ErrorCode::NoHistory,
            format!("channel `{channel}` keeps no history"),
        ));
    };
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_PAGE {
        return Err(reject(
            ErrorCode::BadRequest,
            format!("`limit` must be 1-{MAX_PAGE}"),
        ));
    }
    let page = node
        .broker
        .history(&channel, &retention, Some(q.since.unwrap_or(0)), limit)
        .await
        .map_err(|e| reject(ErrorCode::Unavailable, e.to_string()))?;
    let publications: Vec<serde_json::Value> = page
        .publications
        .iter()
        .map(|p| {
            let mut v = json!({ "offset": p.offset, "data": p.data });
            if let Some(from) = &p.from {
                v["from"] = json!(from.as_str());
            }
            v
        })
        .collect();
    Ok(warp::reply::json(&json!({
        "channel": channel.as_str(),
        "epoch": page.epoch,
        "offset": page.top,
        "complete": page.complete,
        "publications": publications,
    }))
    .into_response())
}

/// Turns every rejection into a JSON error body.
async fn recover(rejection: Rejection) -> Result<Response, Infallible> {
    let err = if let Some(e) = rejection.find::<ApiError>() {
        ApiError::new(e.status, e.code, e.message.clone())
    } else if rejection.is_not_found() {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
    } else if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "method not allowed on this route",
        )
    } else if rejection.find::<warp::reject::PayloadTooLarge>().is_some() {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", "body too large")
    } else if rejection.find::<warp::reject::LengthRequired>().is_some() {
        ApiError::new(
            StatusCode::LENGTH_REQUIRED,
            "length_required",
            "a Content-Length header is required",
        )
    } else if let Some(e) = rejection.find::<warp::reject::InvalidQuery>() {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.to_string())
    } else if rejection.find::<warp::reject::MissingHeader>().is_some()
        || rejection.find::<warp::reject::InvalidHeader>().is_some()
    {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "expected a WebSocket upgrade request",
        )
    } else {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("{rejection:?}"),
        )
    };
    Ok(err.into_response())
}
