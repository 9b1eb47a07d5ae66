//! `idle` mode: hold N idle WebSocket connections and report the servers' RSS per
//! connection.
//!
//! One process can hold only as many sockets as its `RLIMIT_NOFILE` allows (20,000
//! hard on the machines this was written on, and raising it needs a capability they
//! do not grant). So the tool can split the connections over `--procs` copies of
//! itself (the hidden `idle-worker` mode), and the connections are spread round-robin
//! over every `--url`, so 3 instances holding 16,667 each make 50,000. Source
//! addresses 127.0.0.2.. spread the ephemeral ports, which are per source address.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpSocket;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep};
use tokio_tungstenite::client_async_with_config;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// What each idle connection is besides open: authenticated with a token, and
/// subscribed to one of `rooms` channels `room:<i % rooms>` (0: none), to measure
/// the cost of a subscription (and of presence, where the namespace has it).
#[derive(Debug, Clone, Default)]
pub struct Opts {
    pub secret: Option<String>,
    pub rooms: usize,
}

impl Opts {
    /// The flags that give a worker process the same options.
    fn args(&self) -> Vec<String> {
        let mut a = Vec::new();
        if let Some(s) = &self.secret {
            a.extend(["--token-secret".to_string(), s.clone()]);
        }
        a
    }
}

/// How a held connection ended before the tool let go of it: the server's close
/// frame (code and reason), a read error, or the stream just ending.
type Ended = String;

/// Connections `first..first + count` of a run, held by this process.
pub struct Holding {
    /// Each connection: `Ok` if still open when told to stop, else how it ended
    /// (`None`: it never opened).
    tasks: Vec<JoinHandle<Result<(), Option<Ended>>>>,
    stop: tokio::sync::watch::Sender<bool>,
    pub connected: usize,
}

/// `IP_BIND_ADDRESS_NO_PORT`: binding to a source address picks the port at
/// connect, by the whole 4-tuple, instead of at bind among ports free for every
/// destination. Without it, 50,000 binds (with the previous run's connections
/// still in TIME_WAIT) scanned the port range in the kernel for tens of seconds
/// of system time, and the tool, starved, answered the servers' pings too late.
fn defer_port_choice(socket: &TcpSocket) {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: a valid socket descriptor, an int option, its size.
    let _ = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
}

/// Opens the connections and returns once every handshake finished or failed.
pub async fn open(
    urls: &[String],
    first: usize,
    count: usize,
    sources: u8,
    opts: &Opts,
) -> Result<Holding, String> {
    let mut addrs = Vec::new();
    for url in urls {
        let rest = url.strip_prefix("ws://").ok_or("idle needs ws:// urls")?;
        let host = rest.split('/').next().unwrap_or(rest);
        addrs.push(
            host.parse::<SocketAddr>()
                .map_err(|e| format!("{host}: {e}"))?,
        );
    }
    let gate = Arc::new(Semaphore::new(512));
    let stop = tokio::sync::watch::Sender::new(false);
    let (ok, done) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut tasks = Vec::with_capacity(count);
    for i in first..first + count {
        let (addr, url) = (
            addrs[i % addrs.len()],
            crate::cli::client_url(
                opts.secret.as_deref(),
                &urls[i % urls.len()],
                &format!("idle-{i}"),
            ),
        );
        let src = IpAddr::V4(Ipv4Addr::new(
            127,
            0,
            0,
            2 + (i % sources.max(1) as usize) as u8,
        ));
        let (gate, ok, done) = (gate.clone(), ok.clone(), done.clone());
        let mut stopped = stop.subscribe();
        let room = (opts.rooms > 0).then(|| format!("room:{}", i % opts.rooms));
        tasks.push(tokio::spawn(async move {
            // A refused handshake (e.g. a 503 from the server's cap on connections
            // in progress during the storm) is retried a few times after a pause,
            // as a client library would.
            let connect = || async {
                let _permit = gate.acquire().await.ok()?;
                let socket = TcpSocket::new_v4().ok()?;
                defer_port_choice(&socket);
                socket.bind(SocketAddr::new(src, 0)).ok()?;
                let stream = socket.connect(addr).await.ok()?;
                let _ = stream.set_nodelay(true);
                // Small buffers: the tool's own memory is not what is measured, but at
                // tungstenite's default 128 KiB read buffer 50,000 clients need 6 GiB.
                let config = WebSocketConfig::default()
                    .read_buffer_size(4096)
                    .write_buffer_size(0);
                client_async_with_config(url.as_str(), stream, Some(config))
                    .await
                    .ok()
                    .map(|(ws, _)| ws)
            };
            let mut ws = None;
            for attempt in 0..5u64 {
                ws = connect().await;
                if ws.is_some() {
                    break;
                }
                sleep(Duration::from_millis(200 * (attempt + 1))).await;
            }
            if let (Some(room), Some(w)) = (room, ws.as_mut()) {
                let frame = format!(r#"{{"op":"subscribe","channel":"{room}","id":1}}"#);
                if subscribe(w, frame).await.is_err() {
                    ws = None;
                }
            }
            done.fetch_add(1, Ordering::Relaxed);
            let Some(mut ws) = ws else { return Err(None) };
            ok.fetch_add(1, Ordering::Relaxed);
            // Keep reading so that pings are answered, until told to stop; how it
            // ended if the server closed the connection meanwhile. Woken only by the
            // socket or the stop signal: a read timeout per connection (as before)
            // is 100,000 wakeups a second across 50,000 connections, which starved
            // the tool enough during a storm that its pongs came too late and the
            // servers closed early connections with 4009.
            loop {
                let msg = tokio::select! {
                    _ = stopped.wait_for(|s| *s) => break,
                    msg = ws.next() => msg,
                };
                match msg {
                    Some(Ok(Message::Close(frame))) => {
                        return Err(Some(match frame {
                            Some(f) => {
                                format!("close {} {:?}", u16::from(f.code), f.reason.as_str())
                            }
                            None => "close without a code".into(),
                        }));
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(Some(format!("read error: {e}"))),
                    None => return Err(Some("stream ended".into())),
                }
            }
            Ok(())
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    while done.load(Ordering::Relaxed) < count && Instant::now() < deadline {
        sleep(Duration::from_millis(200)).await;
    }
    Ok(Holding {
        tasks,
        stop,
        connected: ok.load(Ordering::Relaxed),
    })
}

/// Connections still open when the tool let go, and how many ended each way before.
#[derive(Debug, Default)]
pub struct Released {
    pub held: usize,
    pub ended: BTreeMap<Ended, usize>,
}

impl Released {
    fn add(&mut self, other: Released) {
        self.held += other.held;
        for (why, n) in other.ended {
            *self.ended.entry(why).or_default() += n;
        }
    }
}

impl Holding {
    /// Stops holding; returns how many connections were still open, and how the
    /// others that had opened ended.
    pub async fn release(self) -> Released {
        self.stop.send_replace(true);
        let mut out = Released::default();
        for t in self.tasks {
            match t.await {
                Ok(Ok(())) => out.held += 1,
                Ok(Err(None)) => {}
                Ok(Err(Some(why))) => *out.ended.entry(why).or_default() += 1,
                Err(e) => *out.ended.entry(format!("task failed: {e}")).or_default() += 1,
            }
        }
        out
    }
}

/// The hidden `idle-worker` mode: open a share, say `connected N`, hold until a line
/// (or end of input) arrives on stdin, say `held N`.
pub async fn worker(
    urls: &[String],
    first: usize,
    count: usize,
    sources: u8,
    opts: &Opts,
) -> Result<(), String> {
    let holding = open(urls, first, count, sources, opts).await?;
    println!("connected {}", holding.connected);
    let mut line = String::new();
    let _ = BufReader::new(tokio::io::stdin())
        .read_line(&mut line)
        .await;
    let released = holding.release().await;
    for (why, n) in &released.ended {
        println!("ended {n} {why}");
    }
    println!("held {}", released.held);
    Ok(())
}

/// A share held by a child process.
struct Child {
    child: tokio::process::Child,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl Child {
    async fn spawn(
        urls: &[String],
        first: usize,
        count: usize,
        sources: u8,
        opts: &Opts,
    ) -> Result<Child, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut command = tokio::process::Command::new(exe);
        command.arg("--url").arg(urls.join(",")).args(opts.args());
        let mut child = command
            .arg("idle-worker")
            .args(["--rooms", &opts.rooms.to_string()])
            .args(["--first", &first.to_string(), "--count", &count.to_string()])
            .args(["--sources", &sources.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("spawn idle worker: {e}"))?;
        let stdout = child.stdout.take().ok_or("worker stdout")?;
        Ok(Child {
            child,
            lines: BufReader::new(stdout).lines(),
        })
    }

    /// The worker's next line (`None`: it ended).
    async fn next_line(&mut self) -> Result<Option<String>, String> {
        self.lines.next_line().await.map_err(|e| e.to_string())
    }

    /// The number after `word` on the worker's next line.
    async fn expect(&mut self, word: &str) -> Result<usize, String> {
        let line = self.next_line().await?;
        number_after(line.as_deref(), word)
    }

    /// Tells the worker to let go and reads what it says: `ended N why` lines,
    /// then `held N`.
    async fn release(mut self) -> Result<Released, String> {
        if let Some(mut stdin) = self.child.stdin.take() {
            let _ = stdin.write_all(b"stop\n").await;
        }
        let mut out = Released::default();
        loop {
            let line = self.next_line().await?;
            match line.as_deref().and_then(|l| l.strip_prefix("ended ")) {
                Some(rest) => {
                    let (n, why) = rest.split_once(' ').unwrap_or((rest, ""));
                    let n = number_after(Some(n), "")
                        .map_err(|_| format!("idle worker said {line:?}, expected ended N why"))?;
                    *out.ended.entry(why.to_string()).or_default() += n;
                }
                None => {
                    out.held = number_after(line.as_deref(), "held")?;
                    break;
                }
            }
        }
        let _ = self.child.wait().await;
        Ok(out)
    }
}

/// The number after `word` on a worker's `line`.
fn number_after(line: Option<&str>, word: &str) -> Result<usize, String> {
    line.and_then(|l| l.strip_prefix(word))
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| format!("idle worker said {line:?}, expected {word}"))
}

#[derive(Serialize)]
pub struct IdleReport {
    pub connections: usize,
    pub connected: usize,
    /// Still open when the tool let go: the servers dropped none meanwhile.
    pub held: usize,
    /// How the connections that opened but were not held to the end ended (the
    /// server's close code and reason, a read error), with how many each way.
    pub ended: BTreeMap<String, usize>,
    /// PIDs of the worker processes that held connections (empty: held by the tool itself).
    pub worker_pids: Vec<u32>,
    pub instances: usize,
    pub server_rss_before_mib: f64,
    pub server_rss_after_mib: f64,
    /// RSS growth of each server process, MiB.
    pub server_rss_growth_mib: Vec<f64>,
    pub server_kib_per_connection: f64,
    /// RSS of the process that holds the most connections (this one, or a worker).
    pub bench_rss_mib: f64,
}

pub struct Plan<'a> {
    pub urls: &'a [String],
    pub opts: Opts,
    pub pids: &'a [u32],
    pub connections: usize,
    pub hold: u64,
    pub sources: u8,
    pub procs: usize,
}

/// Who holds the connections: this process, or worker processes of the tool.
enum Holders {
    Here(Holding),
    /// Each worker with the number it said it connected.
    Workers(Vec<(Child, usize)>),
}

impl Holders {
    fn connected(&self) -> usize {
        match self {
            Holders::Here(h) => h.connected,
            Holders::Workers(w) => w.iter().map(|(_, n)| n).sum(),
        }
    }

    fn worker_pids(&self) -> Vec<u32> {
        match self {
            Holders::Here(_) => Vec::new(),
            Holders::Workers(w) => w.iter().filter_map(|(c, _)| c.child.id()).collect(),
        }
    }

    /// RSS of the largest holding process, KiB.
    fn largest_rss_kib(&self) -> u64 {
        match self {
            Holders::Here(_) => crate::meter::rss_kib("self"),
            Holders::Workers(w) => w
                .iter()
                .filter_map(|(c, _)| c.child.id())
                .map(|pid| crate::meter::rss_kib(&pid.to_string()))
                .max()
                .unwrap_or(0),
        }
    }

    /// Lets go; returns how many connections were still open, and how the rest ended.
    async fn release(self) -> Result<Released, String> {
        match self {
            Holders::Here(h) => Ok(h.release().await),
            Holders::Workers(w) => {
                let mut out = Released::default();
                for (c, _) in w {
                    out.add(c.release().await?);
                }
                Ok(out)
            }
        }
    }
}

pub async fn run(plan: Plan<'_>) -> Result<IdleReport, String> {
    let rss = |pid: &u32| crate::meter::rss_kib(&pid.to_string());
    let before: Vec<u64> = plan.pids.iter().map(rss).collect();
    let procs = plan.procs.max(1);
    let holders = if procs == 1 {
        Holders::Here(open(plan.urls, 0, plan.connections, plan.sources, &plan.opts).await?)
    } else {
        let share = plan.connections.div_ceil(procs);
        let mut workers = Vec::new();
        for p in 0..procs {
            let first = p * share;
            let count = share.min(plan.connections.saturating_sub(first));
            workers.push(Child::spawn(plan.urls, first, count, plan.sources, &plan.opts).await?);
        }
        let mut said = Vec::new();
        for mut c in workers {
            let n = c.expect("connected").await?;
            said.push((c, n));
        }
        Holders::Workers(said)
    };
    sleep(Duration::from_secs(plan.hold)).await;
    let after: Vec<u64> = plan.pids.iter().map(rss).collect();
    let bench_rss = holders.largest_rss_kib();
    let connected = holders.connected();
    let mut worker_pids = holders.worker_pids();
    worker_pids.sort_unstable();
    worker_pids.dedup();
    let released = holders.release().await?;
    Ok(report(
        &plan,
        &before,
        &after,
        connected,
        released,
        bench_rss,
        worker_pids,
    ))
}

fn report(
    plan: &Plan<'_>,
    before: &[u64],
    after: &[u64],
    connected: usize,
    released: Released,
    bench_rss: u64,
    worker_pids: Vec<u32>,
) -> IdleReport {
    let (b, a): (u64, u64) = (before.iter().sum(), after.iter().sum());
    IdleReport {
        connections: plan.connections,
        connected,
        held: released.held,
        ended: released.ended,
        worker_pids,
        instances: plan.urls.len(),
        server_rss_before_mib: b as f64 / 1024.0,
        server_rss_after_mib: a as f64 / 1024.0,
        server_rss_growth_mib: before
            .iter()
            .zip(after)
            .map(|(b, a)| a.saturating_sub(*b) as f64 / 1024.0)
            .collect(),
        server_kib_per_connection: a.saturating_sub(b) as f64 / connected.max(1) as f64,
        bench_rss_mib: bench_rss as f64 / 1024.0,
    }
}

pub fn print(r: &IdleReport) {
    println!(
        "{:<28} {} of {} ({} still open at the end)",
        "connections", r.connected, r.connections, r.held
    );
    for (why, n) in &r.ended {
        println!("{:<28} {n}: {why}", "ended during the hold");
    }
    println!(
        "{:<28} {} instance(s), {} tool process(es)",
        "spread over",
        r.instances,
        r.worker_pids.len().max(1)
    );
    println!(
        "{:<28} {:.1} MiB -> {:.1} MiB (growth per instance: {:?} MiB)",
        "server RSS", r.server_rss_before_mib, r.server_rss_after_mib, r.server_rss_growth_mib
    );
    println!(
        "{:<28} {:.2} KiB",
        "server per connection", r.server_kib_per_connection
    );
    println!(
        "{:<28} {:.1} MiB",
        "bench RSS (largest process)", r.bench_rss_mib
    );
}

/// Sends a subscribe and waits for its `ok` (other frames, e.g. `connected`, skipped).
async fn subscribe<S>(
    ws: &mut tokio_tungstenite::WebSocketStream<S>,
    frame: String,
) -> Result<(), String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    ws.send(Message::text(frame))
        .await
        .map_err(|e| e.to_string())?;
    loop {
        match tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) if t.contains(r#""id":1"#) => {
                return if t.contains(r#""op":"ok""#) {
                    Ok(())
                } else {
                    Err(t.to_string())
                };
            }
            Ok(Some(Ok(_))) => {}
            other => return Err(format!("no answer: {other:?}")),
        }
    }
}
