//! The payload shardcast puts on the wire with `SPUBLISH` (and stores in history
//! streams): one JSON object per publication, defined here and nowhere else.
//!
//! ```text
//! plain:   {"d":<data>,"f":"<user>","i":<info>,"k":"<kind>","u":<id>}
//! history: {"o":<offset>,"e":"<epoch>","d":<data>,"f":"<user>","i":<info>}
//! ```
//!
//! `f` is omitted for server publishes, `i` when the publisher has no `info`, `k`
//! for ordinary messages (`c` control, `j` join, `l` leave: made by shardcast
//! itself, never stored). `u` is a random odd 64-bit id per plain
//! publication so that a receiving hub can drop a repeat. A history payload is
//! assembled by the publish script (`redis/scripts/publish.lua`), because only the
//! shard knows the offset and epoch when it runs: the script prepends
//! `{"o":<offset>,"e":"<epoch>",` to the [`stored_tail`] built here. Readers accept
//! the fields in any order.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::channel::{Channel, UserId};
use crate::publication::{Kind, Publication};

#[derive(Serialize)]
struct Out<'a> {
    d: &'a RawValue,
    #[serde(skip_serializing_if = "Option::is_none")]
    f: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    i: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    k: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    u: Option<u64>,
}

#[derive(Deserialize)]
struct In<'a> {
    #[serde(borrow)]
    d: &'a RawValue,
    #[serde(default)]
    f: Option<&'a str>,
    #[serde(default, borrow)]
    i: Option<&'a RawValue>,
    #[serde(default)]
    k: Option<&'a str>,
    #[serde(default)]
    o: Option<u64>,
    #[serde(default)]
    e: Option<&'a str>,
    #[serde(default)]
    u: Option<u64>,
}

fn kind_tag(k: Kind) -> Option<&'static str> {
    match k {
        Kind::Message => None,
        Kind::Control => Some("c"),
        Kind::Join => Some("j"),
        Kind::Leave => Some("l"),
    }
}

fn out(p: &Publication, u: Option<u64>) -> Out<'_> {
    Out {
        d: &p.data,
        f: p.from.as_ref().map(UserId::as_str),
        i: p.info.as_deref(),
        k: kind_tag(p.kind),
        u,
    }
}

/// A fresh publication id: random, never 0 (which means "no id").
pub fn new_uid() -> u64 {
    rand::random::<u64>() | 1
}

/// The payload of a plain publication with id `uid`.
pub fn plain(p: &Publication, uid: u64) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(&out(p, Some(uid)))
}

/// A history payload without its opening `{` and the `o`/`e` fields, which the
/// publish script prepends: `"d":<data>,"f":"<user>"}`.
pub fn stored_tail(p: &Publication) -> Result<String, serde_json::Error> {
    let mut s = serde_json::to_string(&out(p, None))?;
    s.remove(0);
    Ok(s)
}

/// Reads a published or stored payload; `None` for anything shardcast did not write.
pub fn decode(channel: &Channel, payload: &[u8]) -> Option<Publication> {
    let wire: In<'_> = serde_json::from_slice(payload).ok()?;
    let from = match wire.f {
        Some("") => Some(UserId::anonymous()),
        Some(f) => Some(UserId::parse(f).ok()?),
        None => None,
    };
    let kind = match wire.k {
        None => Kind::Message,
        Some("c") => Kind::Control,
        Some("j") => Kind::Join,
        Some("l") => Kind::Leave,
        Some(_) => return None,
    };
    Some(Publication {
        channel: channel.clone(),
        kind,
        data: wire.d.to_owned(),
        from,
        info: wire.i.map(|i| Arc::from(i.to_owned())),
        offset: wire.o,
        epoch: wire.e.map(Arc::from),
        uid: wire.u.unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publication(from: Option<&str>) -> Publication {
        Publication::new(
            Channel::parse("c").unwrap(),
            RawValue::from_string(r#"{"x":[1, 2]}"#.into()).unwrap(),
            from.map(|f| UserId::parse(f).unwrap()),
        )
    }

    #[test]
    fn plain_round_trips_with_its_id() {
        let p = publication(Some("alice"));
        let bytes = plain(&p, 7).unwrap();
        assert_eq!(
            std::str::from_utf8(&bytes).unwrap(),
            r#"{"d":{"x":[1, 2]},"f":"alice","u":7}"#
        );
        let back = decode(&p.channel, &bytes).unwrap();
        assert_eq!(back.data.get(), p.data.get());
        assert_eq!(back.from, p.from);
        assert_eq!((back.uid, back.offset), (7, None));
    }

    #[test]
    fn the_scripts_prefix_and_the_tail_make_a_history_payload() {
        let p = publication(None);
        let tail = stored_tail(&p).unwrap();
        assert_eq!(tail, r#""d":{"x":[1, 2]}}"#);
        // What publish.lua builds: '{"o":' .. offset .. ',"e":"' .. epoch .. '",' .. tail
        let payload = format!(r#"{{"o":{},"e":"{}",{}"#, 12, "beef", tail);
        let back = decode(&p.channel, payload.as_bytes()).unwrap();
        assert_eq!(
            (back.offset, back.epoch.as_deref(), back.from),
            (Some(12), Some("beef"), None)
        );
    }

    #[test]
    fn info_and_kind_round_trip() {
        let mut p = publication(Some("bob"));
        p.info = Some(Arc::from(
            RawValue::from_string(r#"{"n":"Bob"}"#.into()).unwrap(),
        ));
        p.kind = Kind::Leave;
        let back = decode(&p.channel, &plain(&p, 3).unwrap()).unwrap();
        assert_eq!(
            (back.kind, back.info.as_deref().map(RawValue::get)),
            (Kind::Leave, Some(r#"{"n":"Bob"}"#))
        );
        let tail = stored_tail(&p).unwrap();
        assert!(tail.contains(r#""i":{"n":"Bob"}"#), "{tail}");
    }

    #[test]
    fn foreign_payloads_are_not_publications() {
        let ch = Channel::parse("c").unwrap();
        assert!(decode(&ch, b"hello").is_none());
        assert!(decode(&ch, br#"{"x":1}"#).is_none());
        assert!(decode(&ch, br#"{"d":1,"f":"has space"}"#).is_none());
        assert!(
            decode(&ch, br#"{"d":1,"k":"x"}"#).is_none(),
            "an unknown kind"
        );
        assert!(new_uid() != 0);
    }
}
