//! [`Pipes`]: this instance's publishing connections, one pipelined RESP3
//! connection per primary, carrying the plain (no history) SPUBLISHes.
//!
//! Why not redis-rs's cluster connection, which the rest of the data path uses:
//! a command there crosses two tasks each way (the cluster client's, then the node
//! connection's), and in small rooms, where every message is a Redis round trip,
//! those wakeups cost more than the command (BENCHMARKS.md, optimisation log
//! entry 24). Here a caller hands its whole batch for one primary to that
//! connection's task in one message; the task writes every batch queued since its
//! last turn in one write (the publishes of many client connections coalesce) and
//! answers a batch once all of its replies are in: one hop each way.
//!
//! Nothing is lost when a connection fails: a batch it did not answer is dropped,
//! its caller sees that, and retries the commands through the data connection
//! ([`super::conn`], which follows MOVED and ASK). The retry carries the same
//! publication id, so a copy that Redis did deliver is dropped by the hubs.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use futures_util::FutureExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, MissedTickBehavior};

use super::Shared;
use super::connector::Io;
use super::resp::{Frame, decode};
use super::topology::RedisAddr;

/// How long Redis may leave a command unanswered, saying nothing at all, before
/// the connection is deemed dead (as for the subscriber connections).
const UNRESPONSIVE: Duration = Duration::from_secs(3);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the task looks at its liveness, and counts idle time.
const TICK: Duration = Duration::from_secs(1);
/// A connection with nothing to do for this many ticks closes (a primary that was
/// replaced in a failover is no longer published to); the next publish reopens it.
const IDLE_TICKS: u32 = 60;
/// After a failed connect, publishes to that node skip the pipe for this long
/// (they go through the data connection) instead of each trying to connect.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// Batches taken off the queue per turn at most.
const BATCHES_PER_TURN: usize = 64;

/// RESP-encoded commands for one primary and where their replies go, in order.
pub(super) struct Batch {
    pub commands: Vec<u8>,
    pub count: usize,
    pub reply: oneshot::Sender<Vec<Frame>>,
}

enum Entry {
    Open {
        id: u64,
        tx: mpsc::UnboundedSender<Batch>,
    },
    /// The last connect failed; until then, no pipe.
    Down(Instant),
}

#[derive(Default)]
pub(super) struct Pipes {
    by_addr: Mutex<HashMap<RedisAddr, Entry>>,
    next_id: std::sync::atomic::AtomicU64,
}

impl Pipes {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<RedisAddr, Entry>> {
        // Every critical section is a map lookup or insert; nothing can be left
        // half done by a panic.
        self.by_addr.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `batch` on the connection to `addr`, opening it on first use. Gives
    /// the batch back when there is no connection to use: its last connect failed
    /// within [`RETRY_AFTER`], or it is closing.
    pub(super) fn send(shared: &Arc<Shared>, addr: &RedisAddr, batch: Batch) -> Result<(), Batch> {
        let pipes = &shared.pipes;
        let mut map = pipes.lock();
        let tx = match map.get(addr) {
            Some(Entry::Open { tx, .. }) => tx.clone(),
            Some(Entry::Down(until)) if Instant::now() < *until => return Err(batch),
            _ => {
                let (tx, rx) = mpsc::unbounded_channel();
                let id = pipes
                    .next_id
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                map.insert(addr.clone(), Entry::Open { id, tx: tx.clone() });
                tokio::spawn(run(shared.clone(), addr.clone(), id, rx));
                tx
            }
        };
        drop(map);
        tx.send(batch).map_err(|e| e.0)
    }

    /// The connection `id` to `addr` ended; `failed` when it could not connect.
    fn ended(&self, addr: &RedisAddr, id: u64, failed: bool) {
        let mut map = self.lock();
        if matches!(map.get(addr), Some(Entry::Open { id: current, .. }) if *current == id) {
            if failed {
                map.insert(addr.clone(), Entry::Down(Instant::now() + RETRY_AFTER));
            } else {
                map.remove(addr);
            }
        }
    }
}

/// A batch written and waiting for its replies.
struct Waiting {
    reply: oneshot::Sender<Vec<Frame>>,
    count: usize,
    frames: Vec<Frame>,
    sent: Instant,
}

async fn run(
    shared: Arc<Shared>,
    addr: RedisAddr,
    id: u64,
    mut rx: mpsc::UnboundedReceiver<Batch>,
) {
    let name = &shared.publisher_name;
    let (failed, why) = match shared.connector.resp3(&addr, name, CONNECT_TIMEOUT).await {
        Ok((stream, buf)) => match serve(&shared, stream, buf, &mut rx).await {
            Ok(()) => (false, None),
            Err(why) => (false, Some(why)),
        },
        Err(why) => (true, Some(why)),
    };
    if let Some(why) = why {
        tracing::warn!(node = %addr, reason = %why, "publishing connection lost; publishes go through the data connection meanwhile");
        shared.topology_suspect();
    }
    // Off the map first, then the queue goes: a batch sent in between is dropped
    // with it, and its caller retries it elsewhere.
    shared.pipes.ended(&addr, id, failed);
    drop(rx);
}

/// Writes batches and hands out replies until the connection fails (`Err`), idles
/// out, or the broker shuts down (`Ok`). Batches in flight when it returns are
/// dropped: their callers retry them.
async fn serve(
    shared: &Shared,
    mut stream: Box<dyn Io>,
    mut buf: BytesMut,
    rx: &mut mpsc::UnboundedReceiver<Batch>,
) -> Result<(), String> {
    let mut waiting: VecDeque<Waiting> = VecDeque::new();
    let mut batches = Vec::with_capacity(BATCHES_PER_TURN);
    let mut out = Vec::new();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut idle_ticks = 0;
    // When bytes last came from Redis (see the subscriber's liveness rule).
    let mut heard = Instant::now();
    let closed = shared.closed();
    tokio::pin!(closed);
    loop {
        while let Some(frame) = decode(&mut buf).map_err(|e| e.to_string())? {
            if let Frame::Push(_) = frame {
                continue; // Nothing subscribes on this connection; ignore.
            }
            let Some(front) = waiting.front_mut() else {
                return Err("a reply nobody asked for".into());
            };
            front.frames.push(frame);
            if front.frames.len() == front.count
                && let Some(done) = waiting.pop_front()
            {
                // The caller may have given up (its task ended); nothing to do.
                let _ = done.reply.send(done.frames);
            }
        }
        tokio::select! {
            n = rx.recv_many(&mut batches, BATCHES_PER_TURN) => {
                if n == 0 {
                    return Ok(());
                }
                idle_ticks = 0;
                let sent = Instant::now();
                let write = if batches.len() == 1 {
                    stream.write_all(&batches[0].commands).await
                } else {
                    out.clear();
                    for b in &batches {
                        out.extend_from_slice(&b.commands);
                    }
                    stream.write_all(&out).await
                };
                for b in batches.drain(..) {
                    waiting.push_back(Waiting {
                        reply: b.reply,
                        frames: Vec::with_capacity(b.count),
                        count: b.count,
                        sent,
                    });
                }
                write.map_err(|e| e.to_string())?;
            }
            read = stream.read_buf(&mut buf) => match read {
                Ok(0) => return Err("closed by Redis".into()),
                Ok(_) => heard = Instant::now(),
                Err(e) => return Err(e.to_string()),
            },
            _ = tick.tick() => {
                // Look at the socket before calling it dead: a task starved of CPU
                // can see this tick before a read that has been waiting.
                match stream.read_buf(&mut buf).now_or_never() {
                    Some(Ok(0)) => return Err("closed by Redis".into()),
                    Some(Ok(_)) => {
                        heard = Instant::now();
                        continue;
                    }
                    Some(Err(e)) => return Err(e.to_string()),
                    None => {}
                }
                match waiting.front() {
                    Some(oldest) if oldest.sent.max(heard).elapsed() > UNRESPONSIVE => {
                        return Err(format!("no answer within {UNRESPONSIVE:?}"));
                    }
                    Some(_) => {}
                    None => {
                        idle_ticks += 1;
                        if idle_ticks >= IDLE_TICKS {
                            return Ok(());
                        }
                    }
                }
            }
            _ = &mut closed => return Ok(()),
        }
    }
}
