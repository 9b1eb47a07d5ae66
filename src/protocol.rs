//! Client protocol v1: JSON text frames (see docs/PROTOCOL.md).
//!
//! Parsing is two-step on purpose: the frame is first read as an envelope of raw,
//! borrowed fields, so that the request `id` can be recovered even when another field
//! is malformed, and every error frame can name the request it answers.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

use crate::channel::{Channel, NameError};
pub use crate::codes::ErrorCode;
use crate::publication::Publication;

/// A resume position: the last offset the client saw and the epoch it belonged to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Since {
    pub offset: u64,
    pub epoch: String,
}

/// One request from a client.
#[derive(Debug)]
pub enum Request {
    Subscribe {
        channel: Channel,
        since: Option<Since>,
    },
    Unsubscribe {
        channel: Channel,
    },
    Publish {
        channel: Channel,
        data: Box<RawValue>,
        idempotency_key: Option<String>,
    },
    Ping,
}

/// A parsed client frame: the request and the id to answer with.
#[derive(Debug)]
pub struct ClientFrame {
    pub id: Option<u64>,
    pub request: Request,
}

/// Why a frame was refused, with the id to put in the error frame when one was readable.
#[derive(Debug, PartialEq, Eq)]
pub struct FrameError {
    pub id: Option<u64>,
    pub code: ErrorCode,
    pub message: String,
}

impl FrameError {
    pub fn new(id: Option<u64>, code: ErrorCode, message: impl Into<String>) -> Self {
        FrameError {
            id,
            code,
            message: message.into(),
        }
    }
}

/// Always `Some`, so that an explicit JSON `null` is told apart from a missing field.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, default, deserialize_with = "present")]
    id: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    op: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    channel: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    data: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    since: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    idempotency_key: Option<&'a RawValue>,
}

/// Longest idempotency key accepted.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 128;

/// Parses one text frame.
pub fn parse_client_frame(text: &str) -> Result<ClientFrame, FrameError> {
    // serde would happily read a struct from a JSON array, positionally.
    if !text.trim_start().starts_with('{') {
        return Err(FrameError::new(
            None,
            ErrorCode::BadRequest,
            "a frame must be one JSON object",
        ));
    }
    let env: Envelope<'_> = serde_json::from_str(text).map_err(|e| {
        let id = recover_id(text);
        FrameError::new(id, ErrorCode::BadRequest, format!("invalid frame: {e}"))
    })?;
    let id = match env.id {
        None => None,
        Some(raw) => Some(serde_json::from_str::<u64>(raw.get()).map_err(|_| {
            FrameError::new(
                None,
                ErrorCode::BadRequest,
                "field `id` must be an unsigned integer",
            )
        })?),
    };
    let bad = |message: String| FrameError::new(id, ErrorCode::BadRequest, message);
    let op: &str = match env.op {
        None => return Err(bad("missing field `op`".into())),
        Some(raw) => serde_json::from_str::<&str>(raw.get())
            .map_err(|_| bad("field `op` must be a string without escapes".into()))?,
    };
    let channel = || -> Result<Channel, FrameError> {
        let raw = env
            .channel
            .ok_or_else(|| bad(format!("missing field `channel` for op `{op}`")))?;
        let s: String = serde_json::from_str(raw.get())
            .map_err(|_| bad("field `channel` must be a string".into()))?;
        Channel::parse(&s).map_err(|e: NameError| bad(format!("invalid channel name: {e}")))
    };
    let request = match op {
        "subscribe" => {
            let since = match env.since {
                None => None,
                Some(raw) => {
                    let since = serde_json::from_str::<Since>(raw.get()).map_err(|e| {
                        bad(format!(
                            "field `since` must be {{\"offset\":<u64>,\"epoch\":<string>}}: {e}"
                        ))
                    })?;
                    if since.epoch.len() > 64
                        || !since.epoch.chars().all(|c| c.is_ascii_alphanumeric())
                    {
                        return Err(bad("`since.epoch` must be the epoch the server sent (up to 64 letters and digits)".into()));
                    }
                    Some(since)
                }
            };
            Request::Subscribe {
                channel: channel()?,
                since,
            }
        }
        "unsubscribe" => Request::Unsubscribe {
            channel: channel()?,
        },
        "publish" => {
            let channel = channel()?;
            let data = env
                .data
                .ok_or_else(|| bad("missing field `data` for op `publish`".into()))?;
            let idempotency_key = match env.idempotency_key {
                None => None,
                Some(raw) => {
                    let key: String = serde_json::from_str(raw.get())
                        .map_err(|_| bad("field `idempotency_key` must be a string".into()))?;
                    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_BYTES {
                        return Err(bad(format!(
                            "field `idempotency_key` must be 1-{MAX_IDEMPOTENCY_KEY_BYTES} bytes"
                        )));
                    }
                    Some(key)
                }
            };
            Request::Publish {
                channel,
                data: data.to_owned(),
                idempotency_key,
            }
        }
        "ping" => Request::Ping,
        other => {
            return Err(bad(format!(
                "unknown op `{}`; expected subscribe, unsubscribe, publish or ping",
                truncate(other, 64)
            )));
        }
    };
    Ok(ClientFrame { id, request })
}

/// Best effort: the id of a frame that failed to parse as a whole (e.g. duplicate keys).
fn recover_id(text: &str) -> Option<u64> {
    #[derive(Deserialize)]
    struct IdOnly {
        id: u64,
    }
    serde_json::from_str::<IdOnly>(text).ok().map(|v| v.id)
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Frames the server sends. `Message` frames are built by [`message_frame`] instead,
/// once per node, and shared.
#[derive(Debug, Serialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum ServerFrame<'a> {
    Ok {
        id: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        offset: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        epoch: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        recovered: Option<bool>,
    },
    Error {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        code: ErrorCode,
        message: &'a str,
    },
    Pong {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
    },
}

impl ServerFrame<'_> {
    pub fn ok(id: u64) -> ServerFrame<'static> {
        ServerFrame::Ok {
            id,
            offset: None,
            epoch: None,
            recovered: None,
        }
    }

    pub fn to_bytes(&self) -> bytes::Bytes {
        // Serializing these plain structs cannot fail.
        bytes::Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }
}

impl FrameError {
    pub fn to_frame(&self) -> bytes::Bytes {
        ServerFrame::Error {
            id: self.id,
            code: self.code,
            message: &self.message,
        }
        .to_bytes()
    }
}

/// Serializes a `message` frame. Called once per publication per node.
pub fn message_frame(p: &Publication) -> bytes::Bytes {
    #[derive(Serialize)]
    struct Message<'a> {
        op: &'static str,
        channel: &'a str,
        data: &'a RawValue,
        #[serde(skip_serializing_if = "Option::is_none")]
        from: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        offset: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        epoch: Option<&'a str>,
    }
    let m = Message {
        op: "message",
        channel: p.channel.as_str(),
        data: &p.data,
        from: p.from.as_ref().map(|u| u.as_str()),
        offset: p.offset,
        epoch: p.epoch.as_deref(),
    };
    bytes::Bytes::from(serde_json::to_vec(&m).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> FrameError {
        parse_client_frame(text).expect_err("should be refused")
    }

    #[test]
    fn parses_every_op() {
        let f = parse_client_frame(r#"{"op":"subscribe","channel":"a","id":7}"#).unwrap();
        assert_eq!(f.id, Some(7));
        assert!(matches!(f.request, Request::Subscribe { since: None, .. }));
        let f = parse_client_frame(
            r#"{"op":"subscribe","channel":"a","since":{"offset":3,"epoch":"e"}}"#,
        )
        .unwrap();
        assert!(matches!(
            f.request,
            Request::Subscribe {
                since: Some(Since { offset: 3, .. }),
                ..
            }
        ));
        let f = parse_client_frame(r#"{"op":"publish","channel":"a","data":null}"#).unwrap();
        match f.request {
            Request::Publish { data, .. } => assert_eq!(data.get(), "null"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse_client_frame(r#"{"op":"ping"}"#).unwrap().request,
            Request::Ping
        ));
        assert!(matches!(
            parse_client_frame(r#"{"op":"unsubscribe","channel":"a"}"#)
                .unwrap()
                .request,
            Request::Unsubscribe { .. }
        ));
    }

    #[test]
    fn keeps_the_id_when_another_field_is_wrong() {
        let e = err(r#"{"op":"subscribe","channel":5,"id":9}"#);
        assert_eq!((e.id, e.code), (Some(9), ErrorCode::BadRequest));
        let e = err(r#"{"op":"publish","channel":"a","id":10}"#);
        assert_eq!(e.id, Some(10));
        assert!(e.message.contains("data"), "{}", e.message);
        let e = err(r#"{"op":"dance","id":11}"#);
        assert_eq!(e.id, Some(11));
        let e = err(r#"{"op":"subscribe","channel":"a b","id":12}"#);
        assert_eq!(e.id, Some(12));
    }

    #[test]
    fn refuses_non_objects_and_bad_ids() {
        assert_eq!(err("[1,2]").id, None);
        assert_eq!(err("nope").code, ErrorCode::BadRequest);
        assert_eq!(err(r#"{"op":"ping","id":-1}"#).id, None);
        assert_eq!(err(r#"{"id":3}"#).id, Some(3));
    }

    #[test]
    fn message_frame_carries_raw_data() {
        let p = Publication::new(
            Channel::parse("c").unwrap(),
            RawValue::from_string("{\"x\":[1,2]}".into()).unwrap(),
            crate::channel::UserId::parse("u").ok(),
        );
        let f = message_frame(&p);
        assert_eq!(
            std::str::from_utf8(&f).unwrap(),
            r#"{"op":"message","channel":"c","data":{"x":[1,2]},"from":"u"}"#
        );
    }
}
