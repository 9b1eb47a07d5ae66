//! The backend's HTTP API: `POST /api/publish` and `GET /api/history`.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;
use warp::Rejection;
use warp::reply::{Reply, Response};

use super::error::ApiError;
use crate::channel::Channel;
use crate::codes::ErrorCode;
use crate::history::MAX_PAGE;
use crate::node::Node;
use crate::node::sessions::Command;
use crate::protocol::{HistoryAnswer, from_object};
use crate::protocol::{check_depth, check_idempotency_key};

/// A refusal, counted by code.
fn reject(node: &Node, e: ApiError) -> Rejection {
    node.metrics().error(e.code);
    warp::reject::custom(e)
}

fn channel(node: &Node, name: &str) -> Result<Channel, Rejection> {
    Channel::parse(name).map_err(|e| {
        reject(
            node,
            ApiError::new(ErrorCode::BadRequest, format!("invalid channel name: {e}")),
        )
    })
}

#[derive(Deserialize)]
struct PublishBody {
    channel: String,
    data: Box<RawValue>,
    #[serde(default)]
    idempotency_key: Option<String>,
}

pub async fn publish(node: Arc<Node>, body: bytes::Bytes) -> Result<Response, Rejection> {
    let max = node.config().max_frame_bytes;
    if body.len() > max {
        return Err(reject(
            &node,
            ApiError::new(
                ErrorCode::TooLarge,
                format!("body is {} bytes; the limit is {max}", body.len()),
            ),
        ));
    }
    let parsed: PublishBody = from_object(&body).map_err(|e| {
        reject(
            &node,
            ApiError::new(
                ErrorCode::BadRequest,
                format!("body must be {{\"channel\":<string>,\"data\":<json>}}: {e}"),
            ),
        )
    })?;
    let channel = channel(&node, &parsed.channel)?;
    if let Some(key) = &parsed.idempotency_key {
        check_idempotency_key(key)
            .map_err(|m| reject(&node, ApiError::new(ErrorCode::BadRequest, m)))?;
    }
    check_depth(parsed.data.get(), node.config().front.max_data_depth)
        .map_err(|m| reject(&node, ApiError::new(ErrorCode::BadRequest, m)))?;
    let ack = node
        .publish(
            channel,
            parsed.data,
            None,
            parsed.idempotency_key.as_deref(),
        )
        .await
        .map_err(|e| reject(&node, (&e).into()))?;
    let mut body = json!({ "ok": true });
    if let Some(offset) = ack.offset {
        body["offset"] = json!(offset);
    }
    if let Some(epoch) = ack.epoch {
        body["epoch"] = json!(epoch);
    }
    Ok(warp::reply::json(&body).into_response())
}

#[derive(Deserialize)]
struct CommandBody {
    user: crate::channel::UserId,
    #[serde(default)]
    channel: Option<Channel>,
}

/// `POST /api/disconnect {"user"}`, `/api/subscribe` and `/api/unsubscribe
/// {"user","channel"}`: a command to every connection of the user, on every
/// instance (a control publication on the user's personal channel).
pub async fn command(
    name: String,
    node: Arc<Node>,
    body: bytes::Bytes,
) -> Result<Response, Rejection> {
    let parsed: CommandBody = from_object(&body).map_err(|e| {
        reject(
            &node,
            ApiError::new(
                ErrorCode::BadRequest,
                format!("body must be {{\"user\":<id>}} (and \"channel\" to subscribe or unsubscribe): {e}"),
            ),
        )
    })?;
    let cmd = match (name.as_str(), parsed.channel) {
        ("disconnect", _) => Command::Disconnect,
        ("subscribe", Some(channel)) => Command::Subscribe { channel },
        ("unsubscribe", Some(channel)) => Command::Unsubscribe { channel },
        _ => {
            return Err(reject(
                &node,
                ApiError::new(ErrorCode::BadRequest, format!("`{name}` needs a `channel`")),
            ));
        }
    };
    node.command(&parsed.user, &cmd)
        .await
        .map_err(|e| reject(&node, (&e).into()))?;
    Ok(warp::reply::json(&json!({ "ok": true })).into_response())
}

#[derive(Deserialize)]
pub struct ChannelQuery {
    channel: String,
}

/// `GET /api/presence?channel=C`: the channel's members, cluster-wide.
pub async fn presence(node: Arc<Node>, q: ChannelQuery) -> Result<Response, Rejection> {
    let channel = channel(&node, &q.channel)?;
    let members = node
        .presence(&channel)
        .await
        .map_err(|e| reject(&node, (&e).into()))?;
    Ok(warp::reply::json(&json!({ "channel": channel, "clients": members })).into_response())
}

/// `GET /api/presence_stats?channel=C`: how many clients and users.
pub async fn presence_stats(node: Arc<Node>, q: ChannelQuery) -> Result<Response, Rejection> {
    let channel = channel(&node, &q.channel)?;
    let stats = node
        .presence_stats(&channel)
        .await
        .map_err(|e| reject(&node, (&e).into()))?;
    Ok(warp::reply::json(
        &json!({ "channel": channel, "clients": stats.clients, "users": stats.users }),
    )
    .into_response())
}

#[derive(Deserialize)]
pub struct HistoryQuery {
    channel: String,
    since: Option<u64>,
    limit: Option<usize>,
}

/// `GET /api/history?channel=C&since=N&limit=L`: publications after offset N.
pub async fn history(node: Arc<Node>, q: HistoryQuery) -> Result<Response, Rejection> {
    let channel = channel(&node, &q.channel)?;
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_PAGE {
        return Err(reject(
            &node,
            ApiError::new(
                ErrorCode::BadRequest,
                format!("`limit` must be 1-{MAX_PAGE}"),
            ),
        ));
    }
    let page = node
        .history(&channel, q.since.unwrap_or(0), limit)
        .await
        .map_err(|e| reject(&node, (&e).into()))?;
    let body = HistoryAnswer::new(None, None, channel.as_str(), &page).to_bytes();
    let mut response = Response::new(body.into());
    response.headers_mut().insert(
        warp::http::header::CONTENT_TYPE,
        warp::http::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}
