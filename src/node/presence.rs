//! The node's presence: a member joins when it subscribes to a channel whose
//! namespace keeps presence and leaves when it unsubscribes (the local record in
//! [`crate::presence`], the cluster-wide one in the broker); the queries; and the
//! refresh: every third of `--presence-ttl`, this instance's members are written
//! again with a new expiry (one pipelined batch, a round trip per Redis node), and
//! members whose instance stopped refreshing are removed with their leaves.

use std::sync::Weak;

use super::{Node, NodeError};
use crate::broker::PresenceBatch;
use crate::channel::{Channel, ClientId};
use crate::identity::Identity;
use crate::namespace::NamespaceOptions;
use crate::presence::{Found, Member, Stats};
use crate::shutdown::Shutdown;

impl Node {
    /// Adds `member` to `channel`'s presence, when its namespace keeps presence. A
    /// broker failure leaves the local record: the next refresh writes it again.
    pub(super) async fn join_presence(&self, member: &Identity, channel: &Channel) {
        let options = self.options(channel);
        if !options.presence {
            return;
        }
        let entry = crate::presence::entry(member);
        if !self.presence.add(channel, &member.client, entry.clone()) {
            return;
        }
        let ttl = self.config.presence_ttl;
        if let Err(e) = self
            .broker
            .presence_join(channel, &member.client, &entry, ttl, options.join_leave)
            .await
        {
            tracing::warn!(%channel, error = %e, "presence join failed; the next refresh retries");
        }
    }

    pub(super) async fn leave_presence(&self, client: &ClientId, channel: &Channel) {
        let Some(entry) = self.presence.remove(channel, client) else {
            return;
        };
        let join_leave = self.options(channel).join_leave;
        if let Err(e) = self
            .broker
            .presence_leave(channel, client, &entry, join_leave)
            .await
        {
            // The entry expires by itself within --presence-ttl, with its leave.
            tracing::warn!(%channel, error = %e, "presence leave failed; the entry will expire");
        }
    }

    fn presence_namespace(&self, channel: &Channel) -> Result<&NamespaceOptions, NodeError> {
        let options = self.options(channel);
        if options.presence {
            Ok(options)
        } else {
            Err(NodeError::NoPresence(channel.namespace().to_string()))
        }
    }

    /// Who is in `channel`, cluster-wide (at most `--presence-max`).
    pub async fn presence(&self, channel: &Channel) -> Result<Vec<Member>, NodeError> {
        let options = self.presence_namespace(channel)?;
        let max = self.config.presence_max;
        match self
            .broker
            .presence(channel, options.join_leave, max)
            .await?
        {
            Found::Members(m) => Ok(m),
            Found::TooMany(members) => Err(NodeError::TooManyMembers {
                channel: channel.clone(),
                members,
                max,
            }),
        }
    }

    /// How many clients and users are in `channel`, cluster-wide.
    pub async fn presence_stats(&self, channel: &Channel) -> Result<Stats, NodeError> {
        let options = self.presence_namespace(channel)?;
        Ok(self
            .broker
            .presence_stats(channel, options.join_leave)
            .await?)
    }
}

pub async fn refresh(node: Weak<Node>, mut shutdown: Shutdown) {
    let every = match node.upgrade() {
        Some(n) => n.config.presence_ttl / 3,
        None => return,
    };
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.recv() => return,
        }
        let Some(node) = node.upgrade() else { return };
        let batch: Vec<PresenceBatch> = node
            .presence
            .snapshot()
            .into_iter()
            .map(|(channel, members)| PresenceBatch {
                join_leave: node.options(&channel).join_leave,
                channel,
                members,
            })
            .collect();
        if batch.is_empty() {
            continue;
        }
        let started = tokio::time::Instant::now();
        match node
            .broker
            .presence_refresh(&batch, node.config.presence_ttl)
            .await
        {
            Ok(()) => {
                tracing::debug!(channels = batch.len(), took = ?started.elapsed(), "presence refreshed");
                node.metrics
                    .presence_refresh
                    .record(started.elapsed().as_secs_f64())
            }
            Err(e) => tracing::warn!(error = %e, channels = batch.len(), "presence refresh failed"),
        }
    }
}
