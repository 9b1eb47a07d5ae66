//! The operator's view: `GET /dashboard` (a static page embedded in the binary,
//! no external assets), and the admin API it polls: `/api/instances` (every live
//! instance, from the cluster-wide registry), `/api/cluster` (this instance's
//! slot map and subscriber connections) and `/api/channel?name=` (one channel
//! looked up). The page holds no data; every API call needs an admin key or an
//! API key (`Authorization: apikey <key>` or `X-API-Key`).

use std::sync::Arc;

use serde::Deserialize;
use serde_json::json;
use warp::reply::{Reply, Response};
use warp::{Filter, Rejection};

use super::error::ApiError;
use crate::channel::Channel;
use crate::codes::ErrorCode;
use crate::node::Node;

const INDEX: &str = include_str!("dashboard/index.html");
const APP: &str = include_str!("dashboard/app.js");
const STYLE: &str = include_str!("dashboard/style.css");

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut r = warp::reply::with_header(body, "content-type", content_type).into_response();
    r.headers_mut().insert(
        "cache-control",
        warp::http::HeaderValue::from_static("no-cache"),
    );
    r
}

/// `/dashboard`, `/dashboard/app.js`, `/dashboard/style.css`.
pub fn dashboard() -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let index = warp::path!("dashboard").map(|| asset(INDEX, "text/html; charset=utf-8"));
    let app =
        warp::path!("dashboard" / "app.js").map(|| asset(APP, "text/javascript; charset=utf-8"));
    let style =
        warp::path!("dashboard" / "style.css").map(|| asset(STYLE, "text/css; charset=utf-8"));
    index.or(app).unify().or(style).unify().and(warp::get())
}

pub async fn instances(node: Arc<Node>) -> Result<Response, Rejection> {
    let list = node
        .instances()
        .await
        .map_err(|e| warp::reject::custom(ApiError::from(&e)))?;
    Ok(
        warp::reply::json(&json!({ "instances": list, "answered_by": node.config().instance() }))
            .into_response(),
    )
}

#[derive(Deserialize)]
pub struct LookupQuery {
    name: String,
}

pub async fn lookup(node: Arc<Node>, q: LookupQuery) -> Result<Response, Rejection> {
    let channel = Channel::parse(&q.name).map_err(|e| {
        warp::reject::custom(ApiError::new(
            ErrorCode::BadRequest,
            format!("invalid channel name: {e}"),
        ))
    })?;
    Ok(warp::reply::json(&node.lookup(&channel).await).into_response())
}
