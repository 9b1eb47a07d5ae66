//! [`RedisSubscriber`]: this instance's one RESP3 subscriber connection to one
//! Redis node.
//!
//! The task connects (with capped, jittered backoff), sends the SSUBSCRIBE and
//! SUNSUBSCRIBE batches the reconciler hands it, and reads every frame: `smessage`
//! pushes go straight to the node's event handler (which never waits), subscription pushes and errors
//! are matched to the in-flight command they answer, and a `sunsubscribe` nobody
//! asked for (slot migrated, failover) is reported as such. It owns no subscription
//! state: it reports what Redis confirmed and the reconciler decides.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures_util::FutureExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::Shared;
use super::connector::Io;
use super::resp::{Frame, decode, encode};
use super::topology::RedisAddr;
use crate::broker::wire;
use crate::channel::Channel;

/// A batch for one Redis node; every channel of a batch hashes to the same slot.
#[derive(Debug, PartialEq, Eq)]
pub enum SubscriberCmd {
    Subscribe(Vec<Channel>),
    Unsubscribe(Vec<Channel>),
}

impl SubscriberCmd {
    pub fn into_channels(self) -> Vec<Channel> {
        match self {
            SubscriberCmd::Subscribe(c) | SubscriberCmd::Unsubscribe(c) => c,
        }
    }
}

/// How long Redis may take to answer anything before the connection is deemed dead.
const UNRESPONSIVE: Duration = Duration::from_secs(3);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const PING_EVERY: Duration = Duration::from_secs(1);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(3);

enum Kind {
    Subscribe,
    Unsubscribe,
    Ping,
}

struct Inflight {
    kind: Kind,
    channels: Vec<Channel>,
    remaining: usize,
    sent: Instant,
}

/// The connection task of one Redis node; ends when the reconciler drops its sender.
pub async fn run(
    inner: Arc<Shared>,
    addr: RedisAddr,
    mut rx: mpsc::UnboundedReceiver<SubscriberCmd>,
) {
    let mut backoff = BACKOFF_MIN;
    loop {
        match inner
            .connector
            .resp3(&addr, &inner.client_name, CONNECT_TIMEOUT)
            .await
        {
            Ok((stream, leftover)) => {
                backoff = BACKOFF_MIN;
                // Commands queued while disconnected were for a connection that no
                // longer exists; the reconciler re-issues what is still wanted.
                let mut stale = Vec::new();
                while let Ok(cmd) = rx.try_recv() {
                    stale.push(cmd);
                }
                inner.on_connected(&addr, stale);
                match session(&inner, &addr, stream, leftover, &mut rx).await {
                    Ended::Closed => return,
                    Ended::Lost(why) => {
                        tracing::warn!(node = %addr, reason = %why, "subscriber connection lost");
                        inner.on_lost(&addr);
                    }
                }
            }
            Err(e) => {
                tracing::debug!(node = %addr, error = %e, "subscriber connect failed");
                let mut stale = Vec::new();
                while let Ok(cmd) = rx.try_recv() {
                    stale.push(cmd);
                }
                inner.on_connect_failed(&addr, stale);
            }
        }
        if rx.is_closed() {
            return;
        }
        let jitter =
            Duration::from_millis(rand::random::<u64>() % (backoff.as_millis() as u64 / 2 + 1));
        tokio::select! {
            _ = tokio::time::sleep(backoff + jitter) => {}
            _ = inner.closed() => return,
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

enum Ended {
    Closed,
    Lost(String),
}

async fn session(
    inner: &Arc<Shared>,
    addr: &RedisAddr,
    stream: Box<dyn Io>,
    mut buf: BytesMut,
    rx: &mut mpsc::UnboundedReceiver<SubscriberCmd>,
) -> Ended {
    let (mut rd, mut wr) = tokio::io::split(stream);
    let mut inflight: VecDeque<Inflight> = VecDeque::new();
    let mut ping = tokio::time::interval(PING_EVERY);
    let mut out = Vec::with_capacity(4096);
    // When bytes last came from Redis. The connection is deemed dead only when the
    // front command has waited UNRESPONSIVE *and* Redis said nothing meanwhile: after
    // a burst of thousands of pipelined SSUBSCRIBEs (a reconnect, a connection storm)
    // on a busy machine, the last one is answered long after it was sent while Redis
    // keeps answering steadily, and that is progress. (Judging by the send time alone
    // declared such connections dead, and the resubscribe that followed was another
    // burst: seen with 50,000 clients connecting to 3 instances.) Redis answers a
    // connection's commands in order, so hearing from it means it is working on ours.
    let mut heard = Instant::now();
    loop {
        // Frames already buffered (e.g. after HELLO) are handled before waiting.
        loop {
            match decode(&mut buf) {
                Ok(Some(frame)) => on_frame(inner, addr, frame, &mut inflight),
                Ok(None) => break,
                Err(e) => return Ended::Lost(e.to_string()),
            }
        }
        tokio::select! {
            cmd = rx.recv() => {
                let Some(cmd) = cmd else { return Ended::Closed };
                out.clear();
                let (kind, verb, channels) = match cmd {
                    SubscriberCmd::Subscribe(c) => (Kind::Subscribe, &b"SSUBSCRIBE"[..], c),
                    SubscriberCmd::Unsubscribe(c) => (Kind::Unsubscribe, &b"SUNSUBSCRIBE"[..], c),
                };
                let mut args: Vec<&[u8]> = Vec::with_capacity(channels.len() + 1);
                args.push(verb);
                args.extend(channels.iter().map(|c| c.as_str().as_bytes()));
                encode(&mut out, &args);
                inflight.push_back(Inflight {
                    kind,
                    remaining: channels.len(),
                    channels,
                    sent: Instant::now(),
                });
                if let Err(e) = wr.write_all(&out).await {
                    return Ended::Lost(e.to_string());
                }
            }
            read = rd.read_buf(&mut buf) => match read {
                Ok(0) => return Ended::Lost("closed by Redis".into()),
                // One clock read per read, not per message.
                Ok(_) => heard = Instant::now(),
                Err(e) => return Ended::Lost(e.to_string()),
            },
            _ = ping.tick() => {
                // A task starved of CPU can see this tick before the read that has
                // been waiting: look at the socket before calling it dead.
                // (`read_buf` is cancel safe: polled once, it takes nothing
                // unless it returns.)
                match rd.read_buf(&mut buf).now_or_never() {
                    Some(Ok(0)) => return Ended::Lost("closed by Redis".into()),
                    Some(Ok(_)) => {
                        heard = Instant::now();
                        continue;
                    }
                    Some(Err(e)) => return Ended::Lost(e.to_string()),
                    None => {}
                }
                if let Some(oldest) = inflight.front()
                    && oldest.sent.max(heard).elapsed() > UNRESPONSIVE
                {
                    return Ended::Lost(format!("no answer within {UNRESPONSIVE:?}"));
                }
                if inflight.is_empty() {
                    out.clear();
                    encode(&mut out, &[b"PING"]);
                    inflight.push_back(Inflight { kind: Kind::Ping, channels: Vec::new(), remaining: 1, sent: Instant::now() });
                    if let Err(e) = wr.write_all(&out).await {
                        return Ended::Lost(e.to_string());
                    }
                }
            }
            _ = inner.closed() => return Ended::Closed,
        }
    }
}

fn on_frame(
    inner: &Arc<Shared>,
    addr: &RedisAddr,
    frame: Frame,
    inflight: &mut VecDeque<Inflight>,
) {
    match frame {
        Frame::Push(items) => {
            let kind = items.first().and_then(Frame::as_bytes).unwrap_or_default();
            let name = items.get(1).and_then(Frame::as_bytes).unwrap_or_default();
            match kind {
                b"smessage" => {
                    let payload = items.get(2).and_then(Frame::as_bytes).unwrap_or_default();
                    deliver(inner, name, payload);
                }
                b"ssubscribe" => {
                    let Some(front) = inflight.front_mut() else {
                        return;
                    };
                    if let Kind::Subscribe = front.kind
                        && let Some(ch) = front
                            .channels
                            .iter()
                            .find(|c| c.as_str().as_bytes() == name)
                    {
                        inner.on_confirmed(addr, ch);
                        front.remaining = front.remaining.saturating_sub(1);
                        if front.remaining == 0 {
                            inflight.pop_front();
                        }
                    }
                }
                b"sunsubscribe" => {
                    let solicited = match inflight.front_mut() {
                        Some(front) if matches!(front.kind, Kind::Unsubscribe) => {
                            match front
                                .channels
                                .iter()
                                .find(|c| c.as_str().as_bytes() == name)
                            {
                                Some(ch) => {
                                    inner.on_unsubscribed(addr, ch);
                                    front.remaining = front.remaining.saturating_sub(1);
                                    if front.remaining == 0 {
                                        inflight.pop_front();
                                    }
                                    true
                                }
                                None => false,
                            }
                        }
                        _ => false,
                    };
                    if !solicited && let Ok(ch) = std::str::from_utf8(name).map(Channel::parse) {
                        match ch {
                            Ok(ch) => inner.on_unsolicited_unsubscribe(addr, &ch),
                            Err(_) => tracing::warn!("sunsubscribe for an invalid channel name"),
                        }
                    }
                }
                _ => {}
            }
        }
        Frame::Error(e) => {
            let Some(front) = inflight.pop_front() else {
                tracing::warn!(node = %addr, error = %e, "unexpected error from Redis");
                return;
            };
            match front.kind {
                Kind::Subscribe | Kind::Unsubscribe => {
                    let redirected = e.starts_with("MOVED") || e.starts_with("ASK");
                    tracing::debug!(node = %addr, error = %e, "subscription command refused");
                    inner.on_refused(addr, front.channels, redirected);
                }
                Kind::Ping => {}
            }
        }
        Frame::Simple(_) | Frame::Bulk(_) => {
            if let Some(front) = inflight.front()
                && matches!(front.kind, Kind::Ping)
            {
                inflight.pop_front();
            }
        }
        _ => {}
    }
}

fn deliver(inner: &Arc<Shared>, channel: &[u8], payload: &[u8]) {
    let Ok(channel) = std::str::from_utf8(channel)
        .map_err(|_| ())
        .and_then(|c| Channel::parse(c).map_err(|_| ()))
    else {
        inner.metrics.redis_dropped.increment(1);
        return;
    };
    let Some(publication) = wire::decode(&channel, payload) else {
        // Someone else SPUBLISHed to our channel with a foreign format.
        inner.metrics.redis_dropped.increment(1);
        return;
    };
    inner.events.publication(&publication);
}
