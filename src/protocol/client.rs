//! Client frames: what a client may send, parsed and validated.
//!
//! Parsing is two-step on purpose: the frame is first read as an envelope of raw,
//! borrowed fields, so that the request `id` can be recovered even when another field
//! is malformed, and every error frame can name the request it answers.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

use super::object::{ObjectError, from_object};
use crate::channel::{Channel, NameError};
use crate::codes::ErrorCode;

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
    /// Authenticate with a connection token (first frame, when the upgrade carried none).
    Connect {
        token: String,
    },
    /// A fresh connection token before the current one expires.
    Refresh {
        token: String,
    },
    Subscribe {
        channel: Channel,
        since: Option<Since>,
        /// A subscription token (private channels).
        token: Option<String>,
    },
    /// A fresh subscription token for a channel subscribed with one.
    SubRefresh {
        channel: Channel,
        token: String,
    },
    Unsubscribe {
        channel: Channel,
    },
    Publish {
        channel: Channel,
        data: Box<RawValue>,
        idempotency_key: Option<String>,
    },
    /// Who is in a channel.
    Presence {
        channel: Channel,
    },
    /// How many clients and users are in a channel.
    PresenceStats {
        channel: Channel,
    },
    /// A history channel's stored publications after `since`.
    History {
        channel: Channel,
        since: u64,
        limit: usize,
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
    #[serde(borrow, default, deserialize_with = "present")]
    token: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    limit: Option<&'a RawValue>,
}

/// Longest idempotency key accepted.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 128;
/// Longest token accepted (a JWT with generous claims).
pub const MAX_TOKEN_BYTES: usize = 8192;
/// Largest `limit` of a history request.
pub const MAX_HISTORY_LIMIT: usize = 1000;

/// Parses one text frame.
pub fn parse_client_frame(text: &str) -> Result<ClientFrame, FrameError> {
    let env: Envelope<'_> = from_object(text.as_bytes()).map_err(|e| match e {
        ObjectError::NotAnObject => FrameError::new(
            None,
            ErrorCode::BadRequest,
            "a frame must be one JSON object",
        ),
        ObjectError::Json(e) => {
            let id = recover_id(text);
            FrameError::new(id, ErrorCode::BadRequest, format!("invalid frame: {e}"))
        }
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
    let token = |required: bool| -> Result<Option<String>, FrameError> {
        let Some(raw) = env.token else {
            return if required {
                Err(bad(format!("missing field `token` for op `{op}`")))
            } else {
                Ok(None)
            };
        };
        let t: String = serde_json::from_str(raw.get())
            .map_err(|_| bad("field `token` must be a string".into()))?;
        if t.is_empty() || t.len() > MAX_TOKEN_BYTES {
            return Err(bad(format!(
                "field `token` must be 1-{MAX_TOKEN_BYTES} bytes"
            )));
        }
        Ok(Some(t))
    };
    let request = match op {
        "connect" => Request::Connect {
            token: token(true)?.unwrap_or_default(),
        },
        "refresh" => Request::Refresh {
            token: token(true)?.unwrap_or_default(),
        },
        "subscribe" => {
            let since = match env.since {
                None => None,
                Some(raw) => Some(parse_since(raw, &bad)?),
            };
            Request::Subscribe {
                channel: channel()?,
                since,
                token: token(false)?,
            }
        }
        "sub_refresh" => Request::SubRefresh {
            channel: channel()?,
            token: token(true)?.unwrap_or_default(),
        },
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
                    check_idempotency_key(&key).map_err(bad)?;
                    Some(key)
                }
            };
            Request::Publish {
                channel,
                data: data.to_owned(),
                idempotency_key,
            }
        }
        "presence" => Request::Presence {
            channel: channel()?,
        },
        "presence_stats" => Request::PresenceStats {
            channel: channel()?,
        },
        "history" => {
            let since = match env.since {
                None => 0,
                Some(raw) => serde_json::from_str::<u64>(raw.get()).map_err(|_| {
                    bad("field `since` of `history` must be an offset (unsigned integer)".into())
                })?,
            };
            let limit = match env.limit {
                None => 100,
                Some(raw) => serde_json::from_str::<usize>(raw.get())
                    .ok()
                    .filter(|l| (1..=MAX_HISTORY_LIMIT).contains(l))
                    .ok_or_else(|| bad(format!("field `limit` must be 1-{MAX_HISTORY_LIMIT}")))?,
            };
            Request::History {
                channel: channel()?,
                since,
                limit,
            }
        }
        "ping" => Request::Ping,
        other => {
            return Err(bad(format!(
                "unknown op `{}`; expected connect, refresh, subscribe, sub_refresh, unsubscribe, publish, presence, presence_stats, history or ping",
                truncate(other, 64)
            )));
        }
    };
    Ok(ClientFrame { id, request })
}

fn parse_since(raw: &RawValue, bad: &impl Fn(String) -> FrameError) -> Result<Since, FrameError> {
    let since = from_object::<Since>(raw.get().as_bytes()).map_err(|e| {
        bad(format!(
            "field `since` must be {{\"offset\":<u64>,\"epoch\":<string>}}: {e}"
        ))
    })?;
    check_epoch(&since.epoch).map_err(bad)?;
    Ok(since)
}

/// An epoch as the server sends them: up to 64 ASCII letters and digits.
pub fn check_epoch(epoch: &str) -> Result<(), String> {
    if epoch.len() > 64 || !epoch.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(
            "`since.epoch` must be the epoch the server sent (up to 64 letters and digits)".into(),
        );
    }
    Ok(())
}

/// An idempotency key: 1-128 bytes.
pub fn check_idempotency_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_BYTES {
        return Err(format!(
            "field `idempotency_key` must be 1-{MAX_IDEMPOTENCY_KEY_BYTES} bytes"
        ));
    }
    Ok(())
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
        assert!(matches!(
            f.request,
            Request::Subscribe {
                since: None,
                token: None,
                ..
            }
        ));
        let f = parse_client_frame(
            r#"{"op":"subscribe","channel":"a","since":{"offset":3,"epoch":"e"},"token":"t"}"#,
        )
        .unwrap();
        assert!(matches!(
            f.request,
            Request::Subscribe {
                since: Some(Since { offset: 3, .. }),
                token: Some(_),
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
        assert!(matches!(
            parse_client_frame(r#"{"op":"connect","token":"x.y.z","id":1}"#)
                .unwrap()
                .request,
            Request::Connect { .. }
        ));
        assert!(matches!(
            parse_client_frame(r#"{"op":"refresh","token":"x.y.z"}"#)
                .unwrap()
                .request,
            Request::Refresh { .. }
        ));
        assert!(matches!(
            parse_client_frame(r#"{"op":"sub_refresh","channel":"p","token":"t"}"#)
                .unwrap()
                .request,
            Request::SubRefresh { .. }
        ));
        assert!(matches!(
            parse_client_frame(r#"{"op":"presence","channel":"p"}"#)
                .unwrap()
                .request,
            Request::Presence { .. }
        ));
        assert!(matches!(
            parse_client_frame(r#"{"op":"presence_stats","channel":"p"}"#)
                .unwrap()
                .request,
            Request::PresenceStats { .. }
        ));
        assert!(matches!(
            parse_client_frame(r#"{"op":"history","channel":"h","since":4,"limit":2}"#)
                .unwrap()
                .request,
            Request::History {
                since: 4,
                limit: 2,
                ..
            }
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
        let e = err(r#"{"op":"connect","id":13}"#);
        assert!(e.message.contains("token"), "{}", e.message);
        let e = err(r#"{"op":"history","channel":"h","limit":0,"id":14}"#);
        assert_eq!(e.id, Some(14));
    }

    #[test]
    fn refuses_non_objects_and_bad_ids() {
        assert_eq!(err("[1,2]").id, None);
        assert_eq!(err("nope").code, ErrorCode::BadRequest);
        assert_eq!(err(r#"{"op":"ping","id":-1}"#).id, None);
        assert_eq!(err(r#"{"id":3}"#).id, Some(3));
    }
}
#[cfg(test)]
#[path = "client_proptests.rs"]
mod proptests;
