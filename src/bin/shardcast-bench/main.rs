//! shardcast-bench: drives shardcast instances over real WebSockets and reports
//! throughput, latency, loss, duplicates, server CPU per delivery and memory.
//!
//! Every payload carries the publisher's wall-clock timestamp (µs) and a per-channel
//! sequence number; subscribers record latency in HDR histograms and a bitmap of
//! the sequence numbers they saw. Server figures come from /proc of the PIDs given
//! with --server-pid; the tool reports its own CPU so that it is visible when the
//! load generator, not the server, is the bottleneck.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand, ValueEnum};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::time::{Instant, sleep};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async_with_config};

mod idle;
mod wire;

type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

#[derive(Parser, Debug)]
#[command(
    name = "shardcast-bench",
    about = "Load generator and meter for shardcast"
)]
struct Cli {
    /// WebSocket endpoints of the instances, comma separated; clients are spread round-robin.
    #[arg(long, value_delimiter = ',', default_value = "ws://127.0.0.1:8080/ws")]
    url: Vec<String>,
    /// PIDs of the server processes to meter (CPU, RSS), comma separated.
    #[arg(long, value_delimiter = ',')]
    server_pid: Vec<u32>,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    json: Option<String>,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand, Debug, Clone)]
enum Mode {
    /// C clients on one channel, one publisher at rate R for T seconds.
    Broadcast(Load),
    /// C clients in C/3 rooms of 3 members on different instances; publishers to random rooms at aggregate rate R.
    Rooms(Load),
    /// Broadcast or rooms with R stepping up until p99 passes the limit or a delivery is
    /// lost; then one more run at half of the last good rate.
    Saturate {
        #[arg(long, value_enum, default_value = "broadcast")]
        scenario: Scenario,
        #[command(flatten)]
        load: Load,
        /// Rate multiplier per step.
        #[arg(long, default_value_t = 1.25)]
        factor: f64,
        /// Stop when p99 latency passes this (ms).
        #[arg(long, default_value_t = 100.0)]
        p99_limit_ms: f64,
        /// Highest rate tried.
        #[arg(long, default_value_t = 100_000.0)]
        max_rate: f64,
    },
    /// Open N idle connections and report server RSS per connection.
    Idle {
        #[arg(long, default_value_t = 10_000)]
        connections: usize,
        /// Seconds to hold them open once all are connected.
        #[arg(long, default_value_t = 10)]
        hold: u64,
        /// Source addresses 127.0.0.2.. to spread connections over (ports per address are limited).
        #[arg(long, default_value_t = 4)]
        sources: u8,
        /// Tool processes to hold them (each is limited by its RLIMIT_NOFILE).
        #[arg(long, default_value_t = 1)]
        procs: usize,
    },
    /// One share of `idle --procs`, run by the tool itself.
    #[command(hide = true)]
    IdleWorker {
        #[arg(long)]
        first: usize,
        #[arg(long)]
        count: usize,
        #[arg(long, default_value_t = 4)]
        sources: u8,
    },
    /// Drop K subscribed clients at once, reconnect them, time until all are resubscribed.
    Storm {
        #[arg(long, default_value_t = 1000)]
        clients: usize,
        #[arg(long, default_value_t = 100)]
        channels: usize,
    },
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq)]
enum Scenario {
    Broadcast,
    Rooms,
}

#[derive(clap::Args, Debug, Clone)]
struct Load {
    /// Subscribing clients.
    #[arg(long, default_value_t = 300)]
    clients: usize,
    /// Published messages per second (aggregate).
    #[arg(long, default_value_t = 50.0)]
    rate: f64,
    /// Seconds of publishing.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Padding bytes per payload.
    #[arg(long, default_value_t = 64)]
    payload: usize,
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// utime + stime of a process, in seconds (/proc reports clock ticks of 1/100 s).
fn cpu_seconds(pid: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn rss_kib(pid: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// CPU and peak RSS of the server processes and of this tool over a run.
struct Meter {
    pids: Vec<String>,
    cpu0: f64,
    own0: f64,
    started: Instant,
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Meter {
    fn start(pids: &[u32]) -> Meter {
        let pids: Vec<String> = pids.iter().map(|p| p.to_string()).collect();
        let peak = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (p2, s2, pids2) = (peak.clone(), stop.clone(), pids.clone());
        tokio::spawn(async move {
            while !s2.load(Ordering::Relaxed) {
                let rss: u64 = pids2.iter().map(|p| rss_kib(p)).sum();
                p2.fetch_max(rss, Ordering::Relaxed);
                sleep(Duration::from_millis(100)).await;
            }
        });
        Meter {
            cpu0: pids.iter().map(|p| cpu_seconds(p)).sum(),
            own0: cpu_seconds("self"),
            pids,
            started: Instant::now(),
            peak,
            stop,
        }
    }

    fn finish(&self) -> (f64, f64, f64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        let cpu: f64 = self.pids.iter().map(|p| cpu_seconds(p)).sum::<f64>() - self.cpu0;
        let own = cpu_seconds("self") - self.own0;
        (
            cpu,
            own,
            self.started.elapsed().as_secs_f64(),
            self.peak.load(Ordering::Relaxed),
        )
    }
}

#[derive(Serialize, Debug, Default, Clone)]
struct Report {
    mode: String,
    clients: usize,
    instances: usize,
    offered_rate: f64,
    seconds: f64,
    published: u64,
    expected_deliveries: u64,
    delivered: u64,
    lost: u64,
    duplicated: u64,
    errors: u64,
    delivered_per_sec: f64,
    latency_ms_p50: f64,
    latency_ms_p90: f64,
    latency_ms_p99: f64,
    latency_ms_max: f64,
    server_cpu_seconds: f64,
    server_cpu_us_per_delivery: f64,
    server_peak_rss_mib: f64,
    bench_cpu_seconds: f64,
    /// Cores the tool itself used on average; near the core count it is the bottleneck.
    bench_cores_used: f64,
    bench_is_bottleneck: bool,
}

/// The publisher's stamp `(t, s)` in a message frame, read by position rather than
/// by a full JSON parse: the frame is `{"op":"message","channel":..,"data":{"t":..,"s":..,..`
/// because the server passes `data` through byte for byte and the tool wrote it in
/// that order. Anything else is counted as an error frame. (A full parse was a third
/// of the tool's CPU, which it takes from the servers it measures.)
fn stamp(frame: &[u8]) -> Option<(u64, u64)> {
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
fn publish_frame(channel: usize, sent_us: u64, seq: u64, pad: &str) -> String {
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

async fn connect(url: &str) -> Result<Ws, String> {
    // Nagle off, as a latency-sensitive client would have it.
    connect_async_with_config(url, None, true)
        .await
        .map(|(ws, _)| ws)
        .map_err(|e| format!("{url}: {e}"))
}

async fn request(ws: &mut Ws, frame: serde_json::Value, id: u64) -> Result<(), String> {
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
async fn run_load(cli: &Cli, scenario: Scenario, load: &Load) -> Result<Report, String> {
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
        let url = format!("{}?user=bench-{}", urls[*inst], subs.len());
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
        let url = format!("{}?user=bench-pub-{p}", urls[p % n]);
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

fn print_report(r: &Report) {
    println!("{:<28} {}", "mode", r.mode);
    println!(
        "{:<28} {} on {} instance(s)",
        "clients", r.clients, r.instances
    );
    println!(
        "{:<28} {:.0} msg/s for {:.1} s ({} published)",
        "offered", r.offered_rate, r.seconds, r.published
    );
    println!(
        "{:<28} {:.0} deliveries/s ({} of {})",
        "delivered", r.delivered_per_sec, r.delivered, r.expected_deliveries
    );
    println!(
        "{:<28} {} lost, {} duplicated, {} error frames",
        "correctness", r.lost, r.duplicated, r.errors
    );
    println!(
        "{:<28} p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}",
        "latency ms", r.latency_ms_p50, r.latency_ms_p90, r.latency_ms_p99, r.latency_ms_max
    );
    println!(
        "{:<28} {:.2} s = {:.2} µs per delivery; peak RSS {:.1} MiB",
        "server CPU", r.server_cpu_seconds, r.server_cpu_us_per_delivery, r.server_peak_rss_mib
    );
    println!(
        "{:<28} {:.2} s ({:.2} cores){}",
        "bench CPU",
        r.bench_cpu_seconds,
        r.bench_cores_used,
        if r.bench_is_bottleneck {
            "  <-- the load generator is the bottleneck"
        } else {
            ""
        }
    );
}

fn write_json(cli: &Cli, value: &impl Serialize) {
    if let Some(path) = &cli.json {
        match serde_json::to_string_pretty(value) {
            Ok(text) => {
                if let Err(e) = std::fs::write(path, text) {
                    eprintln!("cannot write {path}: {e}");
                }
            }
            Err(e) => eprintln!("cannot serialize report: {e}"),
        }
    }
}

#[derive(Serialize)]
struct StormReport {
    clients: usize,
    channels: usize,
    resubscribed: usize,
    all_resubscribed_ms: f64,
    p50_ms: f64,
    p99_ms: f64,
}

async fn storm(cli: &Cli, clients: usize, channels: usize) -> Result<(), String> {
    let urls = cli.url.clone();
    let subscribe_all = |round: u32| {
        let urls = urls.clone();
        async move {
            let gate = Arc::new(Semaphore::new(1024));
            let started = Instant::now();
            let mut tasks = Vec::new();
            for i in 0..clients {
                let url = format!("{}?user=storm-{i}", urls[i % urls.len()]);
                let gate = gate.clone();
                tasks.push(tokio::spawn(async move {
                    let _permit = gate.acquire_owned().await.map_err(|e| e.to_string())?;
                    let mut ws = connect(&url).await?;
                    let ch = format!("storm:{}", i % channels.max(1));
                    request(
                        &mut ws,
                        serde_json::json!({"op":"subscribe","channel":ch}),
                        round as u64,
                    )
                    .await?;
                    Ok::<(Ws, Duration), String>((ws, started.elapsed()))
                }));
            }
            let mut out = Vec::new();
            for t in tasks {
                if let Ok(Ok(v)) = t.await {
                    out.push(v);
                }
            }
            (out, started.elapsed())
        }
    };
    let (first, _) = subscribe_all(1).await;
    let connected = first.len();
    drop(first); // every client drops at once
    let (second, total) = subscribe_all(2).await;
    let mut times: Vec<f64> = second
        .iter()
        .map(|(_, d)| d.as_secs_f64() * 1000.0)
        .collect();
    times.sort_by(|a, b| a.total_cmp(b));
    let q = |p: f64| {
        times
            .get(((times.len() as f64 * p) as usize).min(times.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0.0)
    };
    let r = StormReport {
        clients,
        channels,
        resubscribed: second.len(),
        all_resubscribed_ms: total.as_secs_f64() * 1000.0,
        p50_ms: q(0.5),
        p99_ms: q(0.99),
    };
    println!(
        "{:<28} {} (first connect: {connected})",
        "clients", r.clients
    );
    println!(
        "{:<28} {} of {} in {:.0} ms",
        "resubscribed", r.resubscribed, r.clients, r.all_resubscribed_ms
    );
    println!(
        "{:<28} p50 {:.0} ms  p99 {:.0} ms",
        "per client", r.p50_ms, r.p99_ms
    );
    write_json(cli, &r);
    Ok(())
}

async fn run(cli: Cli) -> Result<(), String> {
    match cli.mode.clone() {
        Mode::Broadcast(load) => {
            let r = run_load(&cli, Scenario::Broadcast, &load).await?;
            print_report(&r);
            write_json(&cli, &r);
        }
        Mode::Rooms(load) => {
            let r = run_load(&cli, Scenario::Rooms, &load).await?;
            print_report(&r);
            write_json(&cli, &r);
        }
        Mode::Saturate {
            scenario,
            load,
            factor,
            p99_limit_ms,
            max_rate,
        } => {
            let mut steps = Vec::new();
            let mut rate = load.rate;
            let mut last_good: Option<Report> = None;
            while rate <= max_rate {
                let step = Load {
                    rate,
                    ..load.clone()
                };
                let r = run_load(&cli, scenario, &step).await?;
                println!(
                    "step {:>8.0} msg/s: {:>9.0} deliveries/s, p99 {:>7.2} ms, lost {}, server {:.2} µs/delivery, bench {:.2} cores",
                    rate,
                    r.delivered_per_sec,
                    r.latency_ms_p99,
                    r.lost,
                    r.server_cpu_us_per_delivery,
                    r.bench_cores_used
                );
                let good = r.lost == 0 && r.duplicated == 0 && r.latency_ms_p99 < p99_limit_ms;
                steps.push(r.clone());
                if !good {
                    break;
                }
                last_good = Some(r);
                rate *= factor;
            }
            let mut half = None;
            match &last_good {
                Some(r) => {
                    println!("--- last good step ---");
                    print_report(r);
                    // The latency target is stated at half of saturation: measure
                    // exactly there rather than reading it off the nearest step.
                    let step = Load {
                        rate: r.offered_rate / 2.0,
                        ..load.clone()
                    };
                    let h = run_load(&cli, scenario, &step).await?;
                    println!("--- half of the last good rate ---");
                    print_report(&h);
                    half = Some(h);
                }
                None => println!("no step met the limits"),
            }
            write_json(
                &cli,
                &serde_json::json!({"last_good": last_good, "steps": steps, "half": half}),
            );
        }
        Mode::Idle {
            connections,
            hold,
            sources,
            procs,
        } => {
            let r = idle::run(idle::Plan {
                urls: &cli.url,
                pids: &cli.server_pid,
                connections,
                hold,
                sources,
                procs,
            })
            .await?;
            idle::print(&r);
            write_json(&cli, &r);
        }
        Mode::IdleWorker {
            first,
            count,
            sources,
        } => idle::worker(&cli.url, first, count, sources).await?,
        Mode::Storm { clients, channels } => storm(&cli, clients, channels).await?,
    }
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // Each client is a socket; use as many as this process may (its hard limit).
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    match run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shardcast-bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
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
