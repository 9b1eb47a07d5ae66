//! HTTP surface: the WebSocket endpoint ([`ws`]), the backend API ([`api`]),
//! health, readiness and metrics. Every error is a 4xx/5xx with a JSON body
//! ([`error`]).

mod admin;
mod api;
mod error;
pub mod guard;
pub mod ws;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use serde_json::json;
use tokio::sync::mpsc;
use warp::http::{HeaderMap, StatusCode};
use warp::reply::{Reply, Response};
use warp::{Filter, Rejection};

use crate::codes::ErrorCode;
use crate::metrics::Metrics;
use crate::node::Node;
use crate::shutdown::Shutdown;
use error::ApiError;
use ws::UpgradeSlot;

/// All routes of one instance.
pub fn routes(
    node: Arc<Node>,
    front: Arc<guard::FrontDoor>,
    shutdown: Shutdown,
    drain: mpsc::Sender<()>,
) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone + Send + Sync + 'static {
    let with_node = {
        let node = node.clone();
        warp::any().map(move || node.clone())
    };

    let claimed_in_query = warp::path!("ws")
        .and(warp::query::<HashMap<String, String>>())
        .map(|mut q: HashMap<String, String>| ws::Claimed {
            user: q.remove("user"),
            token: q.remove("token"),
        });
    let claimed_in_path = warp::path!("ws" / String)
        .and(warp::query::<HashMap<String, String>>())
        .map(|user: String, mut q: HashMap<String, String>| ws::Claimed {
            user: Some(user),
            token: q.remove("token"),
        });
    // Paths before methods everywhere: warp reports the most specific rejection, and a
    // method filter first would turn every unknown path into a 405.
    let ws = claimed_in_path
        .or(claimed_in_query)
        .unify()
        .and(warp::get())
        .and(warp::header::headers_cloned())
        .and(warp::ext::optional::<UpgradeSlot>())
        .and(with_node.clone())
        .and_then(
            move |claimed: ws::Claimed,
                  headers: HeaderMap,
                  slot: Option<UpgradeSlot>,
                  node: Arc<Node>| {
                let (shutdown, drain) = (shutdown.clone(), drain.clone());
                async move {
                    ws::upgrade(node, claimed, &headers, slot, shutdown, drain)
                        .map_err(warp::reject::custom)
                }
            },
        );

    let publish = warp::path!("api" / "publish")
        .and(warp::post())
        .and(key(node.clone(), Key::Api))
        .and(with_node.clone())
        // The body is buffered, so its size is bounded before it is read (413 above
        // the hard limit; between the soft and hard limit `publish` answers 413 too),
        // and it must arrive within --body-timeout.
        .and(guard::body(
            front.clone(),
            node.config().hard_frame_limit() as u64,
        ))
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
            let body = json!({ "ready": ready, "insecure": node.auth().insecure });
            warp::reply::with_status(warp::reply::json(&body), status).into_response()
        });

    // On its own listener when --metrics-listen is set (see server.rs).
    let metrics_here = node.config().auth.metrics_listen.is_none();
    let metrics = warp::path!("metrics")
        .and(warp::get())
        .and_then(move || async move {
            if metrics_here {
                Ok(metrics_response())
            } else {
                Err(warp::reject::not_found())
            }
        });

    let history = warp::path!("api" / "history")
        .and(warp::get())
        .and(key(node.clone(), Key::Api))
        .and(with_node.clone())
        .and(warp::query::<api::HistoryQuery>())
        .and_then(api::history);

    let presence = warp::path!("api" / "presence")
        .and(warp::get())
        .and(key(node.clone(), Key::Api))
        .and(with_node.clone())
        .and(warp::query::<api::ChannelQuery>())
        .and_then(api::presence);

    let presence_stats = warp::path!("api" / "presence_stats")
        .and(warp::get())
        .and(key(node.clone(), Key::Api))
        .and(with_node.clone())
        .and(warp::query::<api::ChannelQuery>())
        .and_then(api::presence_stats);

    let cluster = warp::path!("api" / "cluster")
        .and(warp::get())
        .and(key(node.clone(), Key::Admin))
        .and(with_node.clone())
        .map(|node: Arc<Node>| warp::reply::json(&node.describe()).into_response());

    let instances = warp::path!("api" / "instances")
        .and(warp::get())
        .and(key(node.clone(), Key::Admin))
        .and(with_node.clone())
        .and_then(admin::instances);

    let lookup = warp::path!("api" / "channel")
        .and(warp::get())
        .and(key(node.clone(), Key::Admin))
        .and(with_node.clone())
        .and(warp::query::<admin::LookupQuery>())
        .and_then(admin::lookup);

    let command = warp::path!("api" / String)
        .and_then(|name: String| async move {
            match name.as_str() {
                "disconnect" | "subscribe" | "unsubscribe" => Ok(name),
                _ => Err(warp::reject::not_found()),
            }
        })
        .and(warp::post())
        .and(key(node.clone(), Key::Api))
        .and(with_node)
        .and(guard::body(front, 64 * 1024))
        .and_then(api::command);

    // Grouped and boxed: one flat chain of `or`s makes a type too deep to compile.
    let api = publish
        .or(history)
        .unify()
        .or(command)
        .unify()
        .or(presence)
        .unify()
        .or(presence_stats)
        .unify()
        .boxed();
    let operator = healthz
        .or(readyz)
        .unify()
        .or(metrics)
        .unify()
        .or(cluster)
        .unify()
        .or(instances)
        .unify()
        .or(lookup)
        .unify()
        .or(admin::dashboard())
        .unify()
        .boxed();
    ws.or(api)
        .unify()
        .or(operator)
        .unify()
        .or(static_files(node.config().static_dir.clone()))
        .unify()
        .recover(recover)
        .unify()
}

/// The files of `--static-dir`, if set (after every other route).
fn static_files(
    dir: Option<std::path::PathBuf>,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let enabled = dir.is_some();
    let dir = dir.unwrap_or_default();
    warp::get()
        .and_then(move || async move {
            if enabled {
                Ok(())
            } else {
                Err(warp::reject::not_found())
            }
        })
        .untuple_one()
        .and(warp::fs::dir(dir))
        .map(|f: warp::fs::File| f.into_response())
}

/// `/metrics` as Prometheus text.
pub fn metrics_response() -> Response {
    warp::reply::with_header(
        Metrics::render(),
        "content-type",
        "text/plain; version=0.0.4",
    )
    .into_response()
}

/// Which key a route needs.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Key {
    /// An API key: the backend's `/api/*` routes.
    Api,
    /// An admin key or an API key: the dashboard's routes.
    Admin,
}

/// The key check of the `/api/*` routes (`Key::Api`) and of the admin routes
/// (`Key::Admin`): a 401 JSON error, counted by reason, without a valid key.
pub(crate) fn key(
    node: Arc<Node>,
    kind: Key,
) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    warp::header::optional::<String>("authorization")
        .and(warp::header::optional::<String>("x-api-key"))
        .and_then(
            move |authorization: Option<String>, x_api_key: Option<String>| {
                let node = node.clone();
                async move {
                    let key = crate::auth::apikey::presented(
                        authorization.as_deref(),
                        x_api_key.as_deref(),
                    );
                    let access = match kind {
                        Key::Api => node.auth().api(key.as_deref()),
                        Key::Admin => node.auth().admin(key.as_deref()),
                    };
                    match access {
                        crate::auth::ApiAccess::Granted => Ok(()),
                        crate::auth::ApiAccess::Refused(why) => {
                            match kind {
                                Key::Api => {
                                    node.metrics()
                                        .auth_failure(crate::metrics::AuthFailure::ApiKey);
                                    node.metrics().error(ErrorCode::Unauthorized);
                                }
                                Key::Admin => node
                                    .metrics()
                                    .auth_failure(crate::metrics::AuthFailure::AdminKey),
                            }
                            Err(warp::reject::custom(ApiError::new(
                                ErrorCode::Unauthorized,
                                why,
                            )))
                        }
                    }
                }
            },
        )
        .untuple_one()
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
