//! Server frames: everything the server sends, serialized once. `message`, `join`
//! and `leave` frames are built by [`message_frame`], once per publication per
//! instance, and the same bytes go to every local subscriber.

use serde::Serialize;
use serde_json::value::RawValue;

use super::client::FrameError;
use crate::channel::{ClientId, UserId};
use crate::codes::ErrorCode;
use crate::publication::{Kind, Publication};

/// Frames the server sends, other than publications.
#[derive(Debug, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ServerFrame<'a> {
    Ok {
        id: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        offset: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        epoch: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        recovered: Option<bool>,
        /// Seconds until the (refreshed) token expires.
        #[serde(skip_serializing_if = "Option::is_none")]
        expires_in: Option<u64>,
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
    /// The connection is authenticated: the first frame of every connection (the
    /// answer to `connect` when the client sent one).
    Connected {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        client: &'a ClientId,
        user: &'a UserId,
        #[serde(skip_serializing_if = "Option::is_none")]
        expires_in: Option<u64>,
        /// Seconds between the server's pings, and to answer one.
        ping_interval: u64,
        pong_timeout: u64,
    },
    /// A server-side subscription started (token `channels`, `POST /api/subscribe`).
    Subscribed {
        channel: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        offset: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        epoch: Option<&'a str>,
    },
    /// The server ended a subscription (`POST /api/unsubscribe`, an expired
    /// subscription token).
    Unsubscribed {
        channel: &'a str,
        /// Why, when it is something the client can act on (`token_expired`).
        #[serde(skip_serializing_if = "Option::is_none")]
        code: Option<ErrorCode>,
        reason: &'a str,
    },
}

impl ServerFrame<'_> {
    pub fn ok(id: u64) -> ServerFrame<'static> {
        ServerFrame::Ok {
            id,
            offset: None,
            epoch: None,
            recovered: None,
            expires_in: None,
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

/// An answer carrying a JSON body built elsewhere (`presence`, `history`):
/// `{"op":<op>,"id":<id>,<fields of body>}`.
pub fn answer(op: &str, id: Option<u64>, body: serde_json::Value) -> bytes::Bytes {
    let mut v = serde_json::json!({ "op": op });
    if let Some(id) = id {
        v["id"] = id.into();
    }
    if let (Some(out), serde_json::Value::Object(fields)) = (v.as_object_mut(), body) {
        out.extend(fields);
    }
    bytes::Bytes::from(serde_json::to_vec(&v).unwrap_or_default())
}

/// A page of history as a client (`history` op) or the HTTP API receives it.
///
/// Typed rather than built as a `serde_json::Value`: `data` and `info` pass through
/// byte for byte (keys keep their order, numbers their digits) and are never
/// re-parsed, so no nesting limit or conversion can fail on the way out.
#[derive(Serialize)]
pub struct HistoryAnswer<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub op: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    pub channel: &'a str,
    pub epoch: &'a str,
    pub offset: u64,
    pub complete: bool,
    pub publications: Vec<HistoryEntry<'a>>,
}

/// One publication of a [`HistoryAnswer`].
#[derive(Serialize)]
pub struct HistoryEntry<'a> {
    pub offset: Option<u64>,
    pub data: &'a RawValue,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub info: Option<&'a RawValue>,
}

impl<'a> HistoryAnswer<'a> {
    /// The answer to `history` request `id` over a socket (`op` set), or the HTTP
    /// body (`id` `None`, no `op`).
    pub fn new(
        op: Option<&'static str>,
        id: Option<u64>,
        channel: &'a str,
        page: &'a crate::history::HistoryPage,
    ) -> HistoryAnswer<'a> {
        HistoryAnswer {
            op,
            id,
            channel,
            epoch: &page.epoch,
            offset: page.top,
            complete: page.complete,
            publications: page
                .publications
                .iter()
                .map(|p| HistoryEntry {
                    offset: p.offset,
                    data: &p.data,
                    from: p.from.as_ref().map(|u| u.as_str()),
                    info: p.info.as_deref(),
                })
                .collect(),
        }
    }

    pub fn to_bytes(&self) -> bytes::Bytes {
        // Serializing borrowed strings, numbers and raw JSON cannot fail.
        bytes::Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }
}

/// Serializes a `message` frame (or, for join/leave publications, a `join` or
/// `leave` frame). Called once per publication per instance.
pub fn message_frame(p: &Publication) -> bytes::Bytes {
    #[derive(Serialize)]
    struct Message<'a> {
        op: &'static str,
        channel: &'a str,
        data: &'a RawValue,
        #[serde(skip_serializing_if = "Option::is_none")]
        from: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        info: Option<&'a RawValue>,
        #[serde(skip_serializing_if = "Option::is_none")]
        offset: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        epoch: Option<&'a str>,
    }
    let op = match p.kind {
        Kind::Join => "join",
        Kind::Leave => "leave",
        _ => "message",
    };
    if op != "message" {
        // {"op":"join","channel":..,"client":..,"user":..,"info":..}: the entry's
        // fields (an object the server built) after op and channel.
        let head = serde_json::json!({ "op": op, "channel": p.channel.as_str() }).to_string();
        let entry = p.data.get().trim();
        if let (Some(head), Some(fields)) = (head.strip_suffix('}'), entry.strip_prefix('{')) {
            let sep = if fields.trim_start().starts_with('}') {
                ""
            } else {
                ","
            };
            return bytes::Bytes::from(format!("{head}{sep}{fields}"));
        }
    }
    let m = Message {
        op,
        channel: p.channel.as_str(),
        data: &p.data,
        from: p.from.as_ref().map(|u| u.as_str()),
        info: p.info.as_deref(),
        offset: p.offset,
        epoch: p.epoch.as_deref(),
    };
    bytes::Bytes::from(serde_json::to_vec(&m).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::channel::Channel;

    #[test]
    fn message_frame_carries_raw_data_and_info() {
        let mut p = Publication::new(
            Channel::parse("c").unwrap(),
            RawValue::from_string("{\"x\":[1,2]}".into()).unwrap(),
            UserId::parse("u").ok(),
        );
        let f = message_frame(&p);
        assert_eq!(
            std::str::from_utf8(&f).unwrap(),
            r#"{"op":"message","channel":"c","data":{"x":[1,2]},"from":"u"}"#
        );
        p.info = Some(Arc::from(
            RawValue::from_string(r#"{"n":1}"#.into()).unwrap(),
        ));
        let f = message_frame(&p);
        assert!(
            std::str::from_utf8(&f)
                .unwrap()
                .ends_with(r#""from":"u","info":{"n":1}}"#)
        );
    }

    #[test]
    fn history_answers_pass_data_through_verbatim_at_any_depth() {
        // Key order, a number beyond 64 bits and 200 levels of nesting (more than
        // serde_json::Value may hold) all come back exactly as published.
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        let data = [
            r#"{"z":1,"a":123456789012345678901234567890}"#,
            deep.as_str(),
        ];
        let mut page = crate::history::HistoryPage {
            epoch: "e1".into(),
            top: 2,
            publications: Vec::new(),
            complete: true,
        };
        for (i, d) in data.iter().enumerate() {
            let mut p = Publication::new(
                Channel::parse("h").unwrap(),
                RawValue::from_string((*d).to_string()).unwrap(),
                UserId::parse("u").ok(),
            );
            p.offset = Some(i as u64 + 1);
            page.publications.push(p);
        }
        let socket = HistoryAnswer::new(Some("history"), Some(7), "h", &page).to_bytes();
        let text = std::str::from_utf8(&socket).unwrap();
        assert!(
            text.starts_with(r#"{"op":"history","id":7,"channel":"h","epoch":"e1","offset":2,"complete":true,"publications":[{"offset":1,"data":{"z":1,"a":123456789012345678901234567890},"from":"u"},{"offset":2,"data":[[[["#),
            "{}",
            &text[..200.min(text.len())]
        );
        assert!(text.contains(&deep));
        let http = HistoryAnswer::new(None, None, "h", &page).to_bytes();
        assert!(
            std::str::from_utf8(&http)
                .unwrap()
                .starts_with(r#"{"channel":"h","#)
        );
    }

    #[test]
    fn join_and_leave_frames_carry_the_entry_at_the_top() {
        let mut p = Publication::new(
            Channel::parse("room:1").unwrap(),
            RawValue::from_string(r#"{"client":"c","user":"u","info":{"n":1}}"#.into()).unwrap(),
            None,
        );
        p.kind = Kind::Join;
        let f = message_frame(&p);
        let v: serde_json::Value = serde_json::from_slice(&f).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"op":"join","channel":"room:1","client":"c","user":"u","info":{"n":1}})
        );
    }

    #[test]
    fn answers_merge_the_body() {
        let a = answer("presence", Some(3), serde_json::json!({"clients": []}));
        assert_eq!(
            std::str::from_utf8(&a).unwrap(),
            r#"{"clients":[],"id":3,"op":"presence"}"#
        );
    }
}
