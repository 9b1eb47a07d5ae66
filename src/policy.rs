//! Who may do what on a channel: pure decisions from the namespace's options, the
//! connection's user and what it presents. The session asks before it acts; the
//! backend's HTTP API is not subject to these rules.

use crate::channel::{Channel, UserId};
use crate::codes::ErrorCode;
use crate::namespace::{NamespaceOptions, PublishPolicy, SubscribePolicy};

/// Why a request was refused: the code and the message for the error frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: ErrorCode,
    pub message: String,
}

fn forbidden(message: String) -> Refusal {
    Refusal {
        code: ErrorCode::Forbidden,
        message,
    }
}

/// Whether `user` may subscribe to `channel`. `with_token`: the request carried a
/// subscription token already verified for this user and channel.
pub fn may_subscribe(
    user: &UserId,
    channel: &Channel,
    options: &NamespaceOptions,
    with_token: bool,
) -> Result<(), Refusal> {
    if let Some(owner) = channel.personal_owner() {
        return if !user.is_anonymous() && owner == user.as_str() {
            Ok(())
        } else {
            Err(forbidden(format!(
                "`{channel}` is another user's personal channel"
            )))
        };
    }
    if with_token {
        return Ok(());
    }
    match options.subscribe {
        SubscribePolicy::Anonymous => Ok(()),
        SubscribePolicy::Authenticated if !user.is_anonymous() => Ok(()),
        SubscribePolicy::Authenticated => Err(Refusal {
            code: ErrorCode::Forbidden,
            message: format!(
                "`{channel}` is for authenticated users; anonymous connections may not subscribe"
            ),
        }),
        SubscribePolicy::Token => Err(Refusal {
            code: ErrorCode::Forbidden,
            message: format!("`{channel}` is private: subscribe with a subscription `token`"),
        }),
    }
}

/// Whether `user` may publish `data_len` bytes into `channel` from its connection.
pub fn may_publish(
    user: &UserId,
    channel: &Channel,
    options: &NamespaceOptions,
    subscribed: bool,
    data_len: usize,
) -> Result<(), Refusal> {
    match options.publish {
        PublishPolicy::None => {
            return Err(forbidden(format!(
                "clients may not publish into `{channel}`; the backend publishes there (POST /api/publish)"
            )));
        }
        PublishPolicy::Subscribers if !subscribed => {
            return Err(forbidden(format!(
                "only subscribers of `{channel}` may publish into it"
            )));
        }
        PublishPolicy::Authenticated if user.is_anonymous() => {
            return Err(forbidden(format!(
                "anonymous connections may not publish into `{channel}`"
            )));
        }
        _ => {}
    }
    if let Some(max) = options.max_publication_bytes
        && data_len > max
    {
        return Err(Refusal {
            code: ErrorCode::TooLarge,
            message: format!("`data` is {data_len} bytes; `{channel}` takes at most {max}"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ch(s: &str) -> Channel {
        Channel::parse(s).unwrap()
    }

    fn user(s: &str) -> UserId {
        UserId::parse(s).unwrap()
    }

    #[test]
    fn personal_channels_belong_to_their_user_only() {
        let o = NamespaceOptions {
            subscribe: SubscribePolicy::Anonymous,
            ..NamespaceOptions::default()
        };
        assert!(may_subscribe(&user("alice"), &ch("user:alice"), &o, false).is_ok());
        assert_eq!(
            may_subscribe(&user("mallory"), &ch("user:alice"), &o, true).map_err(|r| r.code),
            Err(ErrorCode::Forbidden),
            "not even with a token"
        );
        assert!(may_subscribe(&UserId::anonymous(), &ch("user:"), &o, false).is_err());
    }

    #[test]
    fn subscribe_policies() {
        let mut o = NamespaceOptions::default();
        let anon = UserId::anonymous();
        assert!(may_subscribe(&user("a"), &ch("room:1"), &o, false).is_ok());
        assert!(may_subscribe(&anon, &ch("room:1"), &o, false).is_err());
        o.subscribe = SubscribePolicy::Anonymous;
        assert!(may_subscribe(&anon, &ch("room:1"), &o, false).is_ok());
        o.subscribe = SubscribePolicy::Token;
        assert!(may_subscribe(&user("a"), &ch("room:1"), &o, false).is_err());
        assert!(may_subscribe(&user("a"), &ch("room:1"), &o, true).is_ok());
    }

    #[test]
    fn publish_policies_and_size() {
        let mut o = NamespaceOptions::default();
        assert!(
            may_publish(&user("a"), &ch("n"), &o, true, 1).is_err(),
            "none by default"
        );
        o.publish = PublishPolicy::Subscribers;
        assert!(may_publish(&user("a"), &ch("n"), &o, false, 1).is_err());
        assert!(may_publish(&user("a"), &ch("n"), &o, true, 1).is_ok());
        o.publish = PublishPolicy::Authenticated;
        assert!(may_publish(&UserId::anonymous(), &ch("n"), &o, true, 1).is_err());
        assert!(may_publish(&user("a"), &ch("n"), &o, false, 1).is_ok());
        o.max_publication_bytes = Some(10);
        assert_eq!(
            may_publish(&user("a"), &ch("n"), &o, false, 11).map_err(|r| r.code),
            Err(ErrorCode::TooLarge)
        );
    }
}
