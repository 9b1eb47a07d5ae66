//! The benchmark tool measures what it claims: run against a real server, its
//! report must account for every publication and every delivery, and agree with
//! the server's own counters. Those counters are process-wide and every test here
//! runs a server in this process, so the tests run one at a time (as
//! `cluster/test.sh` runs the suite).

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use shardcast_testkit::{Scrape, http};
use tokio::sync::oneshot;

/// A shardcast server in this process (embedded broker, self-asserted users).
struct Server {
    addr: std::net::SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn start() -> Server {
        Server::start_with(&["--insecure"]).await
    }

    /// A server with `auth` (`--insecure`, or token keys) and client publishing on,
    /// rate limits off.
    async fn start_with(auth: &[&str]) -> Server {
        let mut args = vec![
            "shardcast",
            "--client-publish",
            "authenticated",
            "--publish-rate",
            "0",
            "--subscribe-rate",
            "0",
        ];
        args.extend_from_slice(auth);
        let config = shardcast::config::Config::from_args(args).expect("config");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            shardcast::server::run(listener, config, async {
                let _ = stopped.await;
            })
            .await
            .expect("server");
        });
        Server {
            addr,
            stop: Some(stop),
            task,
        }
    }

    fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    async fn metrics(&self) -> Scrape {
        let r = http::get(&format!("http://{}/metrics", self.addr)).await;
        assert_eq!(r.status, 200);
        Scrape::parse(&r.body)
    }

    async fn shutdown(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("stopped")
            .expect("server task");
    }
}

/// The difference of a counter between two scrapes.
fn delta(after: &Scrape, before: &Scrape, name: &str) -> u64 {
    (after.value(name, &[]) - before.value(name, &[])) as u64
}

/// Runs shardcast-bench with `args` and returns its stdout and JSON report.
async fn bench(args: &[&str]) -> (String, serde_json::Value) {
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    let json = std::env::temp_dir().join(format!(
        "shardcast-bench-{}-{}.json",
        std::process::id(),
        RUNS.fetch_add(1, Ordering::Relaxed)
    ));
    let mut all: Vec<String> = vec![
        "--json".into(),
        json.to_str().expect("utf-8 temp path").into(),
    ];
    all.extend(args.iter().map(|s| s.to_string()));
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_shardcast-bench"))
            .args(all)
            .output()
    })
    .await
    .expect("join")
    .expect("run shardcast-bench");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("json report")).expect("json");
    let _ = std::fs::remove_file(&json);
    (stdout, report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_broadcast_report_accounts_for_every_delivery() {
    let server = Server::start().await;
    let pid = std::process::id().to_string();
    let before = server.metrics().await;
    let (stdout, report) = bench(&[
        "--url",
        &server.url(),
        "--server-pid",
        &pid,
        "broadcast",
        "--clients",
        "20",
        "--rate",
        "200",
        "--duration",
        "1",
    ])
    .await;
    let after = server.metrics().await;
    assert!(stdout.contains("deliveries/s"), "human table: {stdout}");
    let published = report["published"].as_u64().expect("published");
    assert!(published >= 150, "about 200 msg/s for 1 s: {report}");
    assert_eq!(
        delta(&after, &before, "shardcast_messages_in_total"),
        published,
        "the server saw every publish"
    );
    assert_eq!(
        report["expected_deliveries"].as_u64(),
        Some(published * 20),
        "{report}"
    );
    assert_eq!(
        report["delivered"], report["expected_deliveries"],
        "{report}"
    );
    assert_eq!(
        delta(&after, &before, "shardcast_messages_out_total"),
        published * 20,
        "the server queued exactly what the tool counted"
    );
    assert_eq!(
        (report["lost"].as_u64(), report["duplicated"].as_u64()),
        (Some(0), Some(0))
    );
    // Every frame was read as a publication (the tool reads stamps by position).
    assert_eq!(report["errors"].as_u64(), Some(0), "{report}");
    assert!(
        report["latency_ms_p99"].as_f64().is_some_and(|v| v > 0.0),
        "{report}"
    );
    assert!(
        report["server_cpu_seconds"]
            .as_f64()
            .is_some_and(|v| v > 0.0),
        "{report}"
    );
    server.shutdown().await;
}

/// `idle --procs` splits the connections over worker processes (one process may hold
/// only RLIMIT_NOFILE sockets): every connection must be opened, held to the end and
/// seen by the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_idle_spreads_connections_over_worker_processes() {
    let server = Server::start().await;
    let pid = std::process::id().to_string();
    let before = server.metrics().await;
    let (stdout, report) = bench(&[
        "--url",
        &server.url(),
        "--server-pid",
        &pid,
        "idle",
        "--connections",
        "30",
        "--hold",
        "1",
        "--procs",
        "3",
    ])
    .await;
    let after = server.metrics().await;
    assert!(
        stdout.contains("server per connection"),
        "human table: {stdout}"
    );
    assert_eq!(report["connected"], 30, "{report}");
    assert_eq!(report["held"], 30, "{report}");
    assert_eq!(
        delta(&after, &before, "shardcast_connections_total"),
        30,
        "the server accepted exactly the tool's connections"
    );
    let workers = report["worker_pids"].as_array().map(Vec::len);
    assert_eq!(
        workers,
        Some(3),
        "three distinct worker processes held them: {report}"
    );
    server.shutdown().await;
}

/// `idle` says how the connections it did not hold to the end ended: here the
/// server shuts down during the hold and closes each with 1012.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_idle_reports_how_the_server_closed_connections_during_the_hold() {
    let server = Server::start().await;
    let pid = std::process::id().to_string();
    let url = server.url();
    let run = tokio::spawn(async move {
        bench(&[
            "--url",
            &url,
            "--server-pid",
            &pid,
            "idle",
            "--connections",
            "20",
            "--hold",
            "5",
        ])
        .await
    });
    shardcast_testkit::eventually(
        "20 idle connections open",
        Duration::from_secs(30),
        || async {
            match server.metrics().await.value("shardcast_connections", &[]) as u64 {
                20 => Ok(()),
                n => Err(format!("{n} open")),
            }
        },
    )
    .await;
    server.shutdown().await;
    let (stdout, report) = run.await.expect("bench task");
    assert_eq!(report["connected"], 20, "{report}");
    assert_eq!(report["held"], 0, "{report}");
    assert_eq!(
        report["ended"],
        serde_json::json!({"close 1012 \"server restarting\"": 20}),
        "{report}"
    );
    assert!(
        stdout.contains("ended during the hold        20: close 1012"),
        "human table: {stdout}"
    );
}

/// `saturate` steps the rate up and ends with a run at half of the last good rate; a
/// p99 limit no healthy run reaches keeps the steps going up to `--max-rate`, so the
/// shape of the report is known in advance while every count is still checked
/// against the server's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_saturate_ends_with_a_run_at_half_the_last_good_rate() {
    let server = Server::start().await;
    let before = server.metrics().await;
    let (stdout, report) = bench(&[
        "--url",
        &server.url(),
        "saturate",
        "--clients",
        "10",
        "--rate",
        "100",
        "--duration",
        "1",
        "--factor",
        "2",
        "--max-rate",
        "200",
        "--p99-limit-ms",
        "60000",
    ])
    .await;
    let after = server.metrics().await;
    assert!(stdout.contains("half of the last good rate"), "{stdout}");
    let steps = report["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 2, "{report}");
    let mut delivered = 0;
    for step in steps.iter().chain([&report["half"]]) {
        assert_eq!(step["lost"].as_u64(), Some(0), "{step}");
        assert_eq!(step["errors"].as_u64(), Some(0), "{step}");
        assert_eq!(step["delivered"], step["expected_deliveries"], "{step}");
        delivered += step["delivered"].as_u64().expect("delivered");
    }
    assert_eq!(
        delta(&after, &before, "shardcast_messages_out_total"),
        delivered,
        "the tool's deliveries are the server's"
    );
    assert_eq!(report["last_good"]["offered_rate"].as_f64(), Some(200.0));
    assert_eq!(report["half"]["offered_rate"].as_f64(), Some(100.0));
    server.shutdown().await;
}

/// `rooms` puts 3 members per room on different instances and accounts for every
/// delivery; `storm` reconnects every client and counts each resubscription.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_rooms_and_storm_account_for_every_client() {
    let server = Server::start().await;
    let url = server.url();
    let before = server.metrics().await;
    let (_, rooms) = bench(&[
        "--url",
        &url,
        "rooms",
        "--clients",
        "9",
        "--rate",
        "60",
        "--duration",
        "1",
    ])
    .await;
    let mid = server.metrics().await;
    assert_eq!(rooms["clients"].as_u64(), Some(9), "{rooms}");
    let published = rooms["published"].as_u64().expect("published");
    assert!(published >= 30, "{rooms}");
    assert_eq!(
        delta(&mid, &before, "shardcast_messages_in_total"),
        published
    );
    assert_eq!(
        rooms["expected_deliveries"].as_u64(),
        Some(published * 3),
        "each publication reaches its room's 3 members: {rooms}"
    );
    assert_eq!(rooms["delivered"], rooms["expected_deliveries"], "{rooms}");
    assert_eq!(
        delta(&mid, &before, "shardcast_messages_out_total"),
        published * 3
    );
    assert_eq!(rooms["errors"].as_u64(), Some(0), "{rooms}");
    let (_, storm) = bench(&["--url", &url, "storm", "--clients", "20", "--channels", "5"]).await;
    let after = server.metrics().await;
    assert_eq!(storm["resubscribed"].as_u64(), Some(20), "{storm}");
    assert_eq!(
        delta(&after, &mid, "shardcast_connections_total"),
        40,
        "20 clients connected twice"
    );
    server.shutdown().await;
}

/// A load report that accounts for every delivery: at least `min` published, each
/// delivered `fanout` times, none lost, duplicated or malformed.
fn assert_complete(r: &serde_json::Value, fanout: u64, min: u64) {
    let published = r["published"].as_u64().expect("published");
    assert!(published >= min, "{r}");
    assert_eq!(
        r["expected_deliveries"].as_u64(),
        Some(published * fanout),
        "{r}"
    );
    assert_eq!(r["delivered"].as_u64(), Some(published * fanout), "{r}");
    assert_eq!(
        (
            r["lost"].as_u64(),
            r["duplicated"].as_u64(),
            r["errors"].as_u64()
        ),
        (Some(0), Some(0), Some(0)),
        "{r}"
    );
}

/// The floor (the reference server every figure is quoted beside) speaks the
/// protocol subset the load modes use: a broadcast against it accounts for every
/// delivery, and so does a rooms run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_floor_reference_server_delivers_every_message_of_a_broadcast_and_of_rooms() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let listen = format!("127.0.0.1:{port}");
    let mut floor = Command::new(env!("CARGO_BIN_EXE_shardcast-bench"))
        .args(["floor", "--listen", &listen, "--worker-threads", "1"])
        .spawn()
        .expect("start the floor");
    let mut up = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(&listen).await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "the floor did not listen on {listen}");
    let url = format!("ws://{listen}/ws");
    let pid = floor.id().to_string();
    let (_, r) = bench(&[
        "--url",
        &url,
        "--server-pid",
        &pid,
        "broadcast",
        "--clients",
        "20",
        "--rate",
        "100",
        "--duration",
        "2",
    ])
    .await;
    assert_complete(&r, 20, 150);
    assert!(
        r["server_cpu_seconds"].as_f64().expect("cpu") > 0.0,
        "the floor's CPU is metered: {r}"
    );
    let (_, r) = bench(&[
        "--url",
        &url,
        "rooms",
        "--clients",
        "30",
        "--rate",
        "200",
        "--duration",
        "2",
    ])
    .await;
    assert_complete(&r, 3, 300);
    let _ = floor.kill();
    let _ = floor.wait();
}

/// With `--token-secret` every client of the tool connects with a signed token (the
/// server refuses `?user=` without `--insecure`), and the report still accounts for
/// every delivery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_clients_authenticate_with_tokens_when_given_the_secret() {
    let secret = "bench-tool-test-secret-0123456789abcdef";
    let server = Server::start_with(&["--token-hmac-secret", secret, "--token-in-query"]).await;
    let before = server.metrics().await;
    let (_, r) = bench(&[
        "--url",
        &server.url(),
        "--token-secret",
        secret,
        "broadcast",
        "--clients",
        "10",
        "--rate",
        "50",
        "--duration",
        "1",
    ])
    .await;
    assert_complete(&r, 10, 40);
    let after = server.metrics().await;
    // 10 subscribers and the publisher, each verified.
    assert_eq!(delta(&after, &before, "shardcast_connections_total"), 11);
    server.shutdown().await;
}
