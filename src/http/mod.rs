//! HTTP surface: the WebSocket endpoint ([`ws`]), the backend API ([`api`]),
//! health, readiness and metrics. Every error is a 4xx/5xx with a JSON body
//! ([`error`]).

mod api;
mod error;
pub mod ws;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use serde_json::json;
use tokio::sync::mpsc;
use warp::http::{HeaderMap, StatusCode};
use warp::reply::{Reply, Response};
use warp::{Filter, Rejection};

use crate::channel::UserId;
use crate::codes::ErrorCode;
use crate::metrics::Metrics;
use crate::node::Node;
use crate::shutdown::Shutdown;
use error::ApiError;
use ws::UpgradeSlot;

/// All routes of one instance.
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
                        ErrorCode::BadRequest,
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
                    ws::upgrade(node, user, &headers, slot, shutdown, drain)
                        .map_err(warp::reject::custom)
                }
            },
        );

    let publish = warp::path!("api" / "publish")
        .and(warp::post())
        .and(with_node.clone())
        // The body is buffered, so its size is bounded before it is read (413 above
        // the hard limit; between the soft and hard limit `publish` answers 413 too).
        .and(warp::body::content_length_limit(
            node.config().hard_frame_limit() as u64,
        ))
        .and(warp::body::bytes())
        .and_then(api::publish);

    let healthz = warp::path!("healthz")
        .and(warp::get())
        .map(|| warp::reply::json(&json!({"status": "ok"})).into_response());

    let readyz = warp::path!("readyz")
        .and(warp::get())
        .and(with_node.clone())
        .map(|node: Arc<Node>| {
            let ready = node.is_ready();
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

    let history = warp::path!("api" / "history")
        .and(warp::get())
        .and(with_node.clone())
        .and(warp::query::<api::HistoryQuery>())
        .and_then(api::history);

    let cluster = warp::path!("api" / "cluster")
        .and(warp::get())
        .and(with_node)
        .map(|node: Arc<Node>| warp::reply::json(&node.describe()).into_response());

    ws.or(publish)
        .unify()
        .or(healthz)
        .unify()
        .or(readyz)
        .unify()
        .or(metrics)
        .unify()
        .or(history)
        .unify()
        .or(cluster)
        .unify()
        .recover(recover)
        .unify()
}

/// Turns every rejection into a JSON error body.
async fn recover(rejection: Rejection) -> Result<Response, Infallible> {
    let err = if let Some(e) = rejection.find::<ApiError>() {
        ApiError {
            status: e.status,
            code: e.code,
            message: e.message.clone(),
        }
    } else if rejection.is_not_found() {
        ApiError::new(ErrorCode::NotFound, "no such route")
    } else if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        ApiError::new(
            ErrorCode::MethodNotAllowed,
            "method not allowed on this route",
        )
    } else if rejection.find::<warp::reject::PayloadTooLarge>().is_some() {
        ApiError::new(ErrorCode::TooLarge, "body too large")
    } else if rejection.find::<warp::reject::LengthRequired>().is_some() {
        ApiError::new(
            ErrorCode::LengthRequired,
            "a Content-Length header is required",
        )
    } else if let Some(e) = rejection.find::<warp::reject::InvalidQuery>() {
        ApiError::new(ErrorCode::BadRequest, e.to_string())
    } else if rejection.find::<warp::reject::MissingHeader>().is_some()
        || rejection.find::<warp::reject::InvalidHeader>().is_some()
    {
        ApiError::new(
            ErrorCode::BadRequest,
            "expected a WebSocket upgrade request",
        )
    } else {
        ApiError::new(ErrorCode::BadRequest, format!("{rejection:?}"))
    };
    Ok(err.into_response())
}
