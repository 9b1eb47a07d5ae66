//! One load step: subscribers connected and subscribed first, then publishers at
//! the offered rate; every delivery's latency and sequence number recorded.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async_with_config};

use crate::cli::{Cli, Load, Scenario};
use crate::meter::{Meter, now_us};
use crate::report::Report;
use crate::wire;

pub type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// The publisher's stamp `(t, s)` in a message frame, read by position rather than
/// by a full JSON parse: the frame is `{"op":"message","channel":..,"data":{"t":..,"s":..,..`
/// because the server passes `data` through byte for byte and the tool wrote it in
/// that order. Anything else is counted as an error frame. (A full parse was a third
/// of the tool's CPU, which it takes from the servers it measures.)
pub fn stamp(frame: &[u8]) -> Option<(u64, u64)> {
    fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
        hay.windows(needle.len()).position(|w| w == needle)
    }
    fn number(b: &[u8]) -> Option<(u64, usize)> {
        let digits = b.iter().take_while(|c| c.is_ascii_digit()).count();
        let value = b[..digits].iter().try_fold(0u64, |n, d| {
            n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        })?;
        (digits > 0).then_some((value, digits))
    }
    let rest = frame.strip_prefix(br#"{"op":"message","#)?;
    let at = find(rest, br#""data":{"t":"#)? + 12;
    let (t, n) = number(rest.get(at..)?)?;
    let rest = rest.get(at + n..)?.strip_prefix(br#","s":"#)?;
    let (s, _) = number(rest)?;
    Some((t, s))
}

/// A publish frame, written by hand so that `data` keeps the order `t`, `s`, `pad`
/// that [`stamp`] reads (a `serde_json::Value` map would sort the keys).
pub fn publish_frame(channel: usize, sent_us: u64, seq: u64, pad: &str) -> String {
    format!(
        r#"{{"op":"publish","channel":"bench:{channel}","data":{{"t":{sent_us},"s":{seq},"pad":"{pad}"}}}}"#
    )
}

/// What one subscriber saw.
struct Seen {
    hist: Histogram<u64>,
    bits: Vec<u64>,
    unique: u64,
    duplicated: u64,
    errors: u64,
}

impl Seen {
    fn new() -> Seen {
        Seen {
            hist: Histogram::new_with_bounds(1, 120_000_000, 3).expect("histogram bounds"),
            bits: Vec::new(),
            unique: 0,
            duplicated: 0,
            errors: 0,
        }
    }

    /// `now_us`: when the frame was read (one clock read serves every frame of a read).
    fn record(&mut self, seq: u64, sent_us: u64, now_us: u64) {
        let (w, b) = ((seq / 64) as usize, seq % 64);
        if self.bits.len() <= w {
            self.bits.resize(w + 1, 0);
        }
        if self.bits[w] & (1 << b) != 0 {
            self.duplicated += 1;
            return;
        }
        self.bits[w] |= 1 << b;
        self.unique += 1;
        let _ = self.hist.record(now_us.saturating_sub(sent_us).max(1));
    }
}

pub async fn connect(url: &str) -> Result<Ws, String> {
    // Nagle off, as a latency-sensitive client would have it.
    connect_async_with_config(url, None, true)
        .await
        .map(|(ws, _)| ws)
        .map_err(|e| format!("{url}: {e}"))
}

pub async fn request(ws: &mut Ws, frame: serde_json::Value, id: u64) -> Result<(), String> {
    let mut f = frame;
    f["id"] = serde_json::json!(id);
    ws.send(Message::text(f.to_string()))
        .await
        .map_err(|e| e.to_string())?;
    loop {
        match tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                let v: serde_json::Value = serde_json::from_str(&t).map_err(|e| e.to_string())?;
                if v["id"] == serde_json::json!(id) {
                    return if v["op"] == "ok" {
                        Ok(())
                    } else {
                        Err(t.to_string())
                    };
                }
            }
            Ok(Some(Ok(_))) => {}
            other => return Err(format!("no answer: {other:?}")),
        }
    }
}

/// Runs one load step: subscribers connected and subscribed first, then publishing.
pub async fn run_load(cli: &Cli, scenario: Scenario, load: &Load) -> Result<Report, String> {
    let urls = &cli.url;
    let n = urls.len();
    let (channels, members): (usize, Vec<(usize, usize)>) = match scenario {
        // (channel, instance) per client
        Scenario::Broadcast => (1, (0..load.clients).map(|i| (0, i % n)).collect()),
        Scenario::Rooms => {
            let rooms = (load.clients / 3).max(1);
            (
                rooms,
                (0..rooms * 3)
                    .map(|i| (i / 3, (i / 3 + i % 3) % n))
                    .collect(),
            )
        }
    };
    let gate = Arc::new(Semaphore::new(256));
    let mut subs = Vec::new();
    for (ch, inst) in &members {
        let url = cli.client_url(&urls[*inst], &format!("bench-{}", subs.len()));
        let gate = gate.clone();
        let ch = *ch;
        subs.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await.map_err(|e| e.to_string())?;
            let mut ws = connect(&url).await?;
            request(
                &mut ws,
                serde_json::json!({"op":"subscribe","channel":format!("bench:{ch}")}),
                1,
            )
            .await?;
            Ok::<Ws, String>(ws)
        }));
    }
    let mut sockets = Vec::new();
    for s in subs {
        sockets.push(s.await.map_err(|e| e.to_string())??);
    }
    // Readers wait on the socket alone while publishing runs (a timer per read costs
    // the tool CPU it takes from the servers); once told to stop they read on until
    // the socket has been quiet for a second, so late deliveries are still counted.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut readers = Vec::new();
    for ws in sockets {
        let mut stopped = stopped.clone();
        let MaybeTlsStream::Plain(tcp) = ws.into_inner() else {
            return Err("the tool speaks ws:// only".into());
        };
        readers.push(tokio::spawn(async move {
            let mut rd = wire::Reader::new(tcp);
            let mut seen = Seen::new();
            'read: loop {
                let now = now_us();
                while let Some(frame) = rd.next_frame() {
                    let ping = match frame {
                        wire::Frame::Text(t) => {
                            match stamp(t) {
                                Some((sent, seq)) => seen.record(seq, sent, now),
                                None => seen.errors += 1,
                            }
                            None
                        }
                        wire::Frame::Ping(p) => Some(p.to_vec()),
                        wire::Frame::Close => break 'read,
                        wire::Frame::Other => None,
                    };
                    if let Some(p) = ping {
                        if rd.pong(p).await.is_err() {
                            break 'read;
                        }
                    }
                }
                let filled = if *stopped.borrow() {
                    match tokio::time::timeout(Duration::from_secs(1), rd.fill()).await {
                        Ok(r) => r,
                        Err(_) => break,
                    }
                } else {
                    tokio::select! {
                        r = rd.fill() => r,
                        // Err: the run was abandoned; nobody will read the result.
                        changed = stopped.changed() => match changed {
                            Ok(()) => continue,
                            Err(_) => break,
                        },
                    }
                };
                if !matches!(filled, Ok(true)) {
                    break;
                }
            }
            rd.close().await;
            seen
        }));
    }

    // Publishers: one connection per instance, the rate split between them.
    let counters: Arc<Vec<AtomicU64>> =
        Arc::new((0..channels).map(|_| AtomicU64::new(0)).collect());
    let publishers = match scenario {
        Scenario::Broadcast => 1,
        Scenario::Rooms => n,
    };
    let meter = Meter::start(&cli.server_pid);
    let started = Instant::now();
    let mut pubs = Vec::new();
    for p in 0..publishers {
        let url = cli.client_url(&urls[p % n], &format!("bench-pub-{p}"));
        let counters = counters.clone();
        let rate = load.rate / publishers as f64;
        let duration = Duration::from_secs(load.duration);
        let pad = "x".repeat(load.payload);
        pubs.push(tokio::spawn(async move {
            let mut ws = connect(&url).await?;
            let mut tick = tokio::time::interval(Duration::from_millis(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let begin = Instant::now();
            let mut sent = 0u64;
            let mut rng = p as u64 * 7919 + 1;
            while begin.elapsed() < duration {
                tick.tick().await;
                let due = (begin.elapsed().as_secs_f64() * rate) as u64;
                while sent < due {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    let ch = (rng % counters.len() as u64) as usize;
                    let s = counters[ch].fetch_add(1, Ordering::Relaxed);
                    let frame = publish_frame(ch, now_us(), s, &pad);
                    ws.feed(Message::text(frame))
                        .await
                        .map_err(|e| e.to_string())?;
                    sent += 1;
                }
                ws.flush().await.map_err(|e| e.to_string())?;
            }
            // Drain answers (errors only; publishes carry no id).
            let _ = tokio::time::timeout(Duration::from_millis(200), ws.close(None)).await;
            Ok::<u64, String>(sent)
        }));
    }
    let mut published = 0;
    for p in pubs {
        published += p.await.map_err(|e| e.to_string())??;
    }
    let publish_secs = started.elapsed().as_secs_f64();
    let _ = stop.send(true);
    let mut hist =
        Histogram::<u64>::new_with_bounds(1, 120_000_000, 3).map_err(|e| e.to_string())?;
    let (mut delivered, mut duplicated, mut errors, mut expected) = (0u64, 0u64, 0u64, 0u64);
    for (r, (ch, _)) in readers.into_iter().zip(&members) {
        let seen = r.await.map_err(|e| e.to_string())?;
        hist.add(&seen.hist).map_err(|e| e.to_string())?;
        delivered += seen.unique;
        duplicated += seen.duplicated;
        errors += seen.errors;
        expected += counters[*ch].load(Ordering::Relaxed);
    }
    let (cpu, own, wall, peak) = meter.finish();
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1) as f64;
    Ok(Report {
        mode: format!("{scenario:?}").to_lowercase(),
        clients: members.len(),
        instances: n,
        offered_rate: load.rate,
        seconds: publish_secs,
        published,
        expected_deliveries: expected,
        delivered,
        lost: expected.saturating_sub(delivered),
        duplicated,
        errors,
        delivered_per_sec: delivered as f64 / publish_secs,
        latency_ms_p50: ms(0.5),
        latency_ms_p90: ms(0.9),
        latency_ms_p99: ms(0.99),
        latency_ms_max: hist.max() as f64 / 1000.0,
        server_cpu_seconds: cpu,
        server_cpu_us_per_delivery: if delivered > 0 {
            cpu * 1e6 / delivered as f64
        } else {
            0.0
        },
        server_peak_rss_mib: peak as f64 / 1024.0,
        bench_cpu_seconds: own,
        bench_cores_used: own / wall,
        bench_is_bottleneck: own / wall > 0.8 * cores,
    })
}

#[cfg(test)]
mod tests {
    use super::{publish_frame, stamp};
    #[test]
    fn stamp_reads_the_publishers_fields_and_refuses_anything_else() {
        let f = br#"{"op":"message","channel":"bench:0","data":{"t":1700000000123456,"s":42,"pad":"xx"},"from":"p"}"#;
        assert_eq!(stamp(f), Some((1_700_000_000_123_456, 42)));
        let published: serde_json::Value =
            serde_json::from_str(&publish_frame(3, 17, 5, "xx")).expect("valid JSON");
        assert_eq!(published["data"]["s"], 5);
        assert_eq!(stamp(br#"{"op":"error","code":"x"}"#), None);
        assert_eq!(
            stamp(br#"{"op":"message","channel":"a","data":{"s":1,"t":2}}"#),
            None
        );
        assert_eq!(
            stamp(br#"{"op":"message","channel":"a","data":{"t":,"s":1}}"#),
            None
        );
    }
}
