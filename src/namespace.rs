//! Channel namespaces and their options: the part of a channel name before its
//! first `:` selects what the channel does (history, presence, join/leave) and who
//! may subscribe to it or publish into it from a client.
//!
//! Options come from the configuration file (`[namespaces.<name>]`, and
//! `[default_namespace]` for every namespace not listed) and from flags
//! (`--history`, `--client-publish`). The decisions themselves (may this client
//! subscribe here?) are pure functions of the options and the client's identity,
//! in [`crate::policy`].

use std::collections::HashMap;
use std::sync::Arc;

use serde::Deserialize;

use crate::channel::Channel;
use crate::history::{HistoryRule, Retention};

/// Who may subscribe to a namespace's channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum SubscribePolicy {
    /// Any connection with a user id (not anonymous).
    #[default]
    Authenticated,
    /// Any connection, anonymous ones too.
    Anonymous,
    /// Only with a subscription token for the channel (private channels).
    Token,
}

/// Who may publish into a namespace's channels from a client connection (the
/// backend publishes through the HTTP API whatever this says).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum PublishPolicy {
    /// Nobody: publications come from the backend.
    #[default]
    None,
    /// Connections subscribed to the channel.
    Subscribers,
    /// Any connection with a user id.
    Authenticated,
}

/// What one namespace's channels do.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct NamespaceOptions {
    /// Keep publications with offsets (resume with `since`).
    #[serde(default)]
    pub history: Option<Retention>,
    #[serde(default)]
    pub subscribe: SubscribePolicy,
    #[serde(default)]
    pub publish: PublishPolicy,
    /// Who is in a channel, cluster-wide.
    #[serde(default)]
    pub presence: bool,
    /// `join`/`leave` frames to the channel's subscribers.
    #[serde(default)]
    pub join_leave: bool,
    /// Largest `data` a client may publish here, in bytes (the frame limit applies too).
    #[serde(default)]
    pub max_publication_bytes: Option<usize>,
}

impl NamespaceOptions {
    pub fn check(&self, name: &str) -> Result<(), String> {
        if let Some(r) = &self.history {
            r.check()
                .map_err(|e| format!("namespace `{name}`: history: {e}"))?;
        }
        if self.join_leave && !self.presence {
            return Err(format!(
                "namespace `{name}`: join_leave needs presence = true (leaves of crashed instances come from presence expiry)"
            ));
        }
        Ok(())
    }
}

/// Every namespace's options.
#[derive(Debug, Clone, Default)]
pub struct Namespaces {
    named: Arc<HashMap<String, NamespaceOptions>>,
    default: Arc<NamespaceOptions>,
}

impl Namespaces {
    /// From the file's tables, with `--history` rules applied on top (a namespace a
    /// rule names but the file does not gets the default options plus history).
    pub fn new(
        mut named: HashMap<String, NamespaceOptions>,
        default: NamespaceOptions,
        history: &[HistoryRule],
    ) -> Result<Namespaces, String> {
        for rule in history {
            named
                .entry(rule.namespace.clone())
                .or_insert_with(|| default.clone())
                .history = Some(rule.retention.clone());
        }
        for (name, o) in &named {
            if name.is_empty() || name.contains(':') {
                return Err(format!(
                    "`{name}` is not a namespace name (no `:`, not empty)"
                ));
            }
            o.check(name)?;
        }
        default.check("default_namespace")?;
        Ok(Namespaces {
            named: Arc::new(named),
            default: Arc::new(default),
        })
    }

    pub fn options(&self, channel: &Channel) -> &NamespaceOptions {
        self.named.get(channel.namespace()).unwrap_or(&self.default)
    }

    pub fn retention(&self, channel: &Channel) -> Option<&Retention> {
        self.options(channel).history.as_ref()
    }

    /// Every named namespace (for the operator's view).
    pub fn named(&self) -> impl Iterator<Item = (&String, &NamespaceOptions)> {
        self.named.iter()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn history_rules_apply_on_top_of_the_file() {
        let mut named = HashMap::new();
        named.insert(
            "chat".to_string(),
            NamespaceOptions {
                presence: true,
                ..NamespaceOptions::default()
            },
        );
        let default = NamespaceOptions {
            publish: PublishPolicy::Subscribers,
            ..NamespaceOptions::default()
        };
        let rules = vec![
            "chat:10:1s".parse().unwrap(),
            "news:5:1m".parse::<HistoryRule>().unwrap(),
        ];
        let ns = Namespaces::new(named, default, &rules).unwrap();
        let chat = ns.options(&Channel::parse("chat:1").unwrap());
        assert!(chat.presence);
        assert_eq!(chat.history.as_ref().map(|r| r.max_len), Some(10));
        let news = ns.options(&Channel::parse("news").unwrap());
        assert_eq!(
            news.publish,
            PublishPolicy::Subscribers,
            "the default, plus history"
        );
        assert_eq!(
            news.history.as_ref().map(|r| r.ttl),
            Some(Duration::from_secs(60))
        );
        let other = ns.options(&Channel::parse("other:x").unwrap());
        assert!(other.history.is_none());
    }

    #[test]
    fn join_leave_without_presence_is_refused() {
        let mut named = HashMap::new();
        named.insert(
            "room".to_string(),
            NamespaceOptions {
                join_leave: true,
                ..NamespaceOptions::default()
            },
        );
        assert!(Namespaces::new(named, NamespaceOptions::default(), &[]).is_err());
    }
}
