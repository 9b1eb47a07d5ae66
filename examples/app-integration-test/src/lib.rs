//! A small order service: `POST /orders/<id>/status` records a status change and
//! publishes it to the history channel `orders:<id>` through shardcast's HTTP API,
//! with an idempotency key so that a retried request is delivered once. Browsers
//! subscribe to `orders:<id>` on shardcast and see every change, in order.
//!
//! What a user of shardcast-testkit would copy: `tests/end_to_end.rs` runs this
//! service against 3 shardcast instances on a Redis Cluster and kills the primary
//! that owns the order's channel while statuses are being published.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde::Deserialize;
use serde_json::json;
use warp::Filter;
use warp::http::StatusCode;

/// Where the service publishes: a shardcast instance's HTTP address and API key.
#[derive(Clone, Debug)]
pub struct Shardcast {
    pub addr: SocketAddr,
    pub api_key: Option<String>,
}

#[derive(Deserialize)]
struct StatusChange {
    status: String,
    /// Unique per change (the client's request id): retries publish once.
    change_id: String,
}

/// Publishes `data` on `channel` through `POST /api/publish`; returns the status
/// and the body.
pub async fn publish(
    sc: &Shardcast,
    channel: &str,
    data: serde_json::Value,
    idempotency_key: &str,
) -> Result<(u16, String), String> {
    let body =
        json!({"channel": channel, "data": data, "idempotency_key": idempotency_key}).to_string();
    let stream = tokio::net::TcpStream::connect(sc.addr)
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let mut req = hyper::Request::post("/api/publish")
        .header("host", sc.addr.to_string())
        .header("content-type", "application/json");
    if let Some(key) = &sc.api_key {
        req = req.header("authorization", format!("apikey {key}"));
    }
    let req = req
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let text = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&text).into_owned()))
}

/// The service's routes.
pub fn routes(
    sc: Shardcast,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Infallible> + Clone {
    let sc = Arc::new(sc);
    warp::path!("orders" / String / "status")
        .and(warp::post())
        .and(warp::body::json())
        .and_then(move |order: String, change: StatusChange| {
            let sc = sc.clone();
            async move {
                let channel = format!("orders:{order}");
                let data = json!({"order": order, "status": change.status});
                let reply = match publish(&sc, &channel, data, &change.change_id).await {
                    Ok((200, body)) => warp::reply::with_status(body, StatusCode::OK),
                    // shardcast could not take it (e.g. its Redis primary is failing
                    // over): the caller retries with the same change_id.
                    Ok((_, body)) => {
                        warp::reply::with_status(body, StatusCode::SERVICE_UNAVAILABLE)
                    }
                    Err(e) => warp::reply::with_status(e, StatusCode::BAD_GATEWAY),
                };
                Ok::<_, Infallible>(warp::reply::Reply::into_response(reply))
            }
        })
        .recover(|_| async {
            Ok::<_, Infallible>(warp::reply::Reply::into_response(warp::reply::with_status(
                "bad request",
                StatusCode::BAD_REQUEST,
            )))
        })
        .unify()
}

/// Serves the routes on `listener` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, sc: Shardcast) {
    warp::serve(routes(sc)).incoming(listener).run().await;
}
