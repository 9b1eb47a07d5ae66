//! Following a Sentinel failover as it happens: one pub/sub connection per
//! sentinel, subscribed to `+switch-master`. When any sentinel announces a new
//! primary for our master, the topology is re-read at once (instead of at the
//! next periodic refresh), so the reconciler moves the subscriptions and the data
//! connection goes to the new primary. Every sentinel is watched so that losing
//! one does not delay the news; the announcements are idempotent hints.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;

use super::Shared;
use super::source::Source;

const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Starts a watcher per sentinel when the source is Sentinel; nothing otherwise.
pub fn watch(shared: &Arc<Shared>) {
    let Source::Sentinel { sentinels, master } = &shared.source else {
        return;
    };
    for (addr, login) in sentinels {
        tokio::spawn(run(
            shared.clone(),
            addr.clone(),
            shared.connector.with_login(login.clone()),
            master.clone(),
        ));
    }
}

/// `+switch-master <name> <old-ip> <old-port> <new-ip> <new-port>`: is it ours?
fn switches(payload: &str, master: &str) -> Option<String> {
    let mut parts = payload.split_whitespace();
    if parts.next()? != master {
        return None;
    }
    let (_, _, ip, port) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    Some(format!("{ip}:{port}"))
}

async fn run(
    shared: Arc<Shared>,
    addr: String,
    connector: super::connector::Connector,
    master: String,
) {
    let mut backoff = BACKOFF_MIN;
    loop {
        match connector.pubsub(&addr).await {
            Ok(mut pubsub) => match pubsub.subscribe("+switch-master").await {
                Ok(()) => {
                    backoff = BACKOFF_MIN;
                    // A switch may have happened while this watcher was away.
                    shared.hint_refresh();
                    shared.kick.notify_one();
                    let mut messages = pubsub.on_message();
                    loop {
                        tokio::select! {
                            msg = messages.next() => {
                                let Some(msg) = msg else { break };
                                let payload: String = msg.get_payload().unwrap_or_default();
                                if let Some(new) = switches(&payload, &master) {
                                    tracing::warn!(sentinel = %addr, primary = %new, "sentinel announced a failover");
                                    shared.timeline.record(
                                        "failover",
                                        format!("sentinel {addr}: {master} switched to {new}"),
                                    );
                                    shared.hint_refresh();
                                    shared.kick.notify_one();
                                }
                            }
                            _ = shared.closed() => return,
                        }
                    }
                    tracing::debug!(sentinel = %addr, "sentinel connection lost");
                }
                Err(e) => {
                    tracing::debug!(sentinel = %addr, error = %e, "sentinel subscribe failed")
                }
            },
            Err(e) => tracing::debug!(sentinel = %addr, error = %e, "sentinel unreachable"),
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shared.closed() => return,
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::switches;

    #[test]
    fn only_our_masters_switch_counts() {
        assert_eq!(
            switches("mymaster 10.0.0.1 6379 10.0.0.2 6380", "mymaster"),
            Some("10.0.0.2:6380".into())
        );
        assert_eq!(
            switches("other 10.0.0.1 6379 10.0.0.2 6380", "mymaster"),
            None
        );
        assert_eq!(switches("mymaster 10.0.0.1", "mymaster"), None);
        assert_eq!(switches("", "mymaster"), None);
    }
}
