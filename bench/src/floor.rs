//! The floor: the smallest honest fan-out server speaking the subset of protocol
//! v1 that the load modes use (`subscribe` answered with `ok`, `publish`, and
//! `message` frames), so that every shardcast figure can be quoted beside what a
//! bare tokio + tungstenite server does on the same machine in the same run.
//!
//! Why it exists: absolute µs per delivery depend on the machine (kernel, loopback,
//! netfilter); the ratio to the floor carries across machines. It is "honest" in
//! that it does the work any correct server must: it parses every client frame as
//! JSON, keeps a channel map, serializes each message once and shares the bytes,
//! and has a writer task per connection that drains its queue before flushing (so
//! it batches under load exactly as shardcast does). It has no Redis, no auth, no
//! history, no limits, no keepalive and no metrics: everything shardcast adds is on
//! top of this.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

/// Subscribers of each channel: the queue of each subscribed connection.
type Channels = Arc<Mutex<HashMap<String, Vec<(u64, mpsc::UnboundedSender<Utf8Bytes>)>>>>;

#[derive(Deserialize)]
struct Frame<'a> {
    op: &'a str,
    #[serde(default)]
    channel: Option<String>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
    #[serde(default)]
    id: Option<u64>,
}

/// Serves until the process is killed. `threads`: tokio worker threads, to compare
/// with `shardcast --worker-threads`.
pub fn serve(listen: SocketAddr, threads: usize) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|e| format!("{listen}: {e}"))?;
        eprintln!("floor listening on {listen}");
        let channels: Channels = Arc::default();
        let mut next_id = 0u64;
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(s) => s,
                Err(_) => {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            };
            next_id += 1;
            tokio::spawn(connection(stream, next_id, channels.clone()));
        }
    })
}

async fn connection(stream: TcpStream, me: u64, channels: Channels) {
    let _ = stream.set_nodelay(true);
    let Ok(ws) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    let (mut sink, mut source) = ws.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Utf8Bytes>();
    let writer = tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            if sink.feed(Message::Text(first)).await.is_err() {
                return;
            }
            while let Ok(more) = rx.try_recv() {
                if sink.feed(Message::Text(more)).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
    });
    let mut subscribed: Vec<String> = Vec::new();
    while let Some(Ok(msg)) = source.next().await {
        let Message::Text(text) = msg else { continue };
        let Ok(frame) = serde_json::from_str::<Frame>(&text) else {
            continue;
        };
        let Some(channel) = frame.channel else {
            continue;
        };
        match frame.op {
            "subscribe" => {
                if let Ok(mut map) = channels.lock() {
                    map.entry(channel.clone())
                        .or_default()
                        .push((me, tx.clone()));
                }
                subscribed.push(channel);
            }
            "publish" => {
                let data = frame.data.map(|d| d.get()).unwrap_or("null");
                let channel_json = serde_json::to_string(&channel).unwrap_or_default();
                let out = Utf8Bytes::from(format!(
                    r#"{{"op":"message","channel":{channel_json},"data":{data}}}"#
                ));
                // An unbounded send never waits, so sending under the lock is short.
                if let Ok(map) = channels.lock()
                    && let Some(subs) = map.get(&channel)
                {
                    for (_, t) in subs {
                        let _ = t.send(out.clone());
                    }
                }
            }
            _ => continue,
        }
        if let Some(id) = frame.id {
            let _ = tx.send(Utf8Bytes::from(format!(r#"{{"op":"ok","id":{id}}}"#)));
        }
    }
    if let Ok(mut map) = channels.lock() {
        for c in subscribed {
            if let Some(v) = map.get_mut(&c) {
                v.retain(|(id, _)| *id != me);
                if v.is_empty() {
                    map.remove(&c);
                }
            }
        }
    }
    drop(tx);
    let _ = writer.await;
}
