//! Validated names. A [`Channel`] or [`UserId`] is checked once, when it enters the
//! process (a client frame, an HTTP body, a Redis message), and is trusted afterwards.

use std::fmt;
use std::sync::Arc;

use thiserror::Error;

/// Longest channel name, in bytes (Redis accepts more; clients and logs should not).
pub const MAX_CHANNEL_BYTES: usize = 255;
/// Prefix of personal channels: `user:<id>` reaches every connection of user `<id>`.
pub const PERSONAL_PREFIX: &str = "user:";
/// Longest user id, so that `user:<id>` is always a legal channel.
pub const MAX_USER_ID_BYTES: usize = MAX_CHANNEL_BYTES - PERSONAL_PREFIX.len();

#[derive(Debug, Error, PartialEq, Eq)]
pub enum NameError {
    #[error("must not be empty")]
    Empty,
    #[error("is {len} bytes long; the limit is {max}")]
    TooLong { len: usize, max: usize },
    #[error("contains whitespace or a control character at byte {0}")]
    BadChar(usize),
}

fn check_name(s: &str, max: usize) -> Result<(), NameError> {
    if s.is_empty() {
        return Err(NameError::Empty);
    }
    if s.len() > max {
        return Err(NameError::TooLong { len: s.len(), max });
    }
    if let Some((i, _)) = s
        .char_indices()
        .find(|(_, c)| c.is_whitespace() || c.is_control())
    {
        return Err(NameError::BadChar(i));
    }
    Ok(())
}

/// A channel name: 1-255 bytes of UTF-8 without whitespace or control characters.
///
/// Cloning is cheap (a reference count), because the same name is held by the hub,
/// the broker's subscription table and every session subscribed to it.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Channel(Arc<str>);

impl Channel {
    pub fn parse(s: &str) -> Result<Channel, NameError> {
        check_name(s, MAX_CHANNEL_BYTES)?;
        Ok(Channel(Arc::from(s)))
    }

    /// The personal channel of `user` (none for the anonymous user).
    pub fn personal(user: &UserId) -> Option<Channel> {
        (!user.is_anonymous())
            .then(|| Channel(Arc::from(format!("{PERSONAL_PREFIX}{}", user.as_str()))))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The namespace: the part before the first `:`, or the whole name.
    /// History settings are chosen per namespace.
    pub fn namespace(&self) -> &str {
        self.0.split(':').next().unwrap_or(&self.0)
    }

    /// `Some(owner)` when this is a personal channel `user:<owner>`.
    pub fn personal_owner(&self) -> Option<&str> {
        self.0.strip_prefix(PERSONAL_PREFIX)
    }
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Channel({:?})", &*self.0)
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A user id: what `from` carries and what names a personal channel. The empty id
/// is the anonymous user (a connection token with `sub: ""`, where anonymous
/// connections are allowed): it has no personal channel.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct UserId(Arc<str>);

impl UserId {
    pub fn parse(s: &str) -> Result<UserId, NameError> {
        check_name(s, MAX_USER_ID_BYTES)?;
        Ok(UserId(Arc::from(s)))
    }

    /// The anonymous user.
    pub fn anonymous() -> UserId {
        UserId(Arc::from(""))
    }

    pub fn is_anonymous(&self) -> bool {
        self.0.is_empty()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One connection's id, unique across the cluster with overwhelming probability
/// (64 random bits): what presence and join/leave name a client by.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(Arc<str>);

impl ClientId {
    pub fn new() -> ClientId {
        ClientId(Arc::from(format!("{:016x}", rand::random::<u64>())))
    }

    /// A client id read back from Redis or the wire (16 lowercase hex digits).
    pub fn parse(s: &str) -> Option<ClientId> {
        (s.len() == 16 && s.bytes().all(|b| b.is_ascii_hexdigit())).then(|| ClientId(Arc::from(s)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for ClientId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClientId({})", &*self.0)
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UserId({:?})", &*self.0)
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_unicode_and_punctuation() {
        assert!(Channel::parse("room:42").is_ok());
        assert!(Channel::parse("{tag}.é✓").is_ok());
        assert_eq!(
            Channel::parse(&"a".repeat(255)).map(|c| c.as_str().len()),
            Ok(255)
        );
    }

    #[test]
    fn rejects_empty_long_whitespace_control() {
        assert_eq!(Channel::parse(""), Err(NameError::Empty));
        assert_eq!(
            Channel::parse(&"a".repeat(256)),
            Err(NameError::TooLong { len: 256, max: 255 })
        );
        assert_eq!(Channel::parse("a b"), Err(NameError::BadChar(1)));
        assert_eq!(Channel::parse("a\u{0}"), Err(NameError::BadChar(1)));
        assert_eq!(Channel::parse("a\u{a0}"), Err(NameError::BadChar(1)));
    }

    #[test]
    fn namespace_and_personal_owner() {
        let c = Channel::parse("chat:room:1").unwrap();
        assert_eq!(c.namespace(), "chat");
        assert_eq!(Channel::parse("plain").unwrap().namespace(), "plain");
        let me = UserId::parse("alice").unwrap();
        assert_eq!(
            Channel::personal(&me).unwrap().personal_owner(),
            Some("alice")
        );
        assert!(Channel::personal(&UserId::anonymous()).is_none());
        assert!(
            UserId::parse("").is_err(),
            "the anonymous user is never parsed"
        );
        let c = ClientId::new();
        assert_eq!(ClientId::parse(c.as_str()), Some(c));
        assert_eq!(ClientId::parse("nothex!!nothex!!"), None);
        assert!(UserId::parse(&"u".repeat(MAX_USER_ID_BYTES + 1)).is_err());
    }
}

macro_rules! serialize_as_str {
    ($($t:ty),*) => {$(
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
    )*};
}

serialize_as_str!(Channel, UserId, ClientId);

impl<'de> serde::Deserialize<'de> for Channel {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Channel, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Channel::parse(&s)
            .map_err(|e| serde::de::Error::custom(format!("invalid channel name: {e}")))
    }
}

impl<'de> serde::Deserialize<'de> for UserId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<UserId, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        UserId::parse(&s).map_err(|e| serde::de::Error::custom(format!("invalid user id: {e}")))
    }
}
