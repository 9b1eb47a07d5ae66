//! The front door under abuse, from raw sockets against the real binary: requests
//! that never finish their headers, bodies that never arrive, idle keep-alive
//! connections, more half-open connections than `--max-pending-connections`, URLs
//! and headers over the limits, deeply nested `data`, and descriptor exhaustion
//! under a low `prlimit` — each bounded, counted by stage in `/metrics`, and
//! without harm to a client that was already subscribed.

mod support;

use std::time::Duration;

use serde_json::json;
use shardcast_testkit::{Client, Shardcast};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep};

fn server(args: &[&str]) -> shardcast_testkit::ShardcastBuilder {
    Shardcast::with_args(env!("CARGO_BIN_EXE_shardcast"), support::DEV).args(args.iter().copied())
}

async fn raw(inst: &Shardcast, bytes: &str) -> TcpStream {
    let mut s = TcpStream::connect(inst.addr).await.expect("connect");
    if !bytes.is_empty() {
        s.write_all(bytes.as_bytes()).await.expect("write");
    }
    s
}

/// Reads until the server closes; the bytes it sent and when it closed. Panics
/// if it is still open after `within`.
async fn until_closed(s: &mut TcpStream, within: Duration) -> (String, Duration) {
    let start = Instant::now();
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(start + within, s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                return (String::from_utf8_lossy(&got).into_owned(), start.elapsed());
            }
            Ok(Ok(n)) => got.extend_from_slice(&chunk[..n]),
            Err(_) => panic!(
                "still open after {within:?}; got: {}",
                String::from_utf8_lossy(&got)
            ),
        }
    }
}

/// Reads one HTTP response head and body (Content-Length) from a kept-alive connection.
async fn response(s: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let len = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                })
                .unwrap_or(0);
            if got.len() >= end + 4 + len {
                return text;
            }
        }
        let n = tokio::time::timeout(support::PATIENCE, s.read(&mut chunk))
            .await
            .expect("response in time")
            .expect("read");
        assert!(n > 0, "closed before a response: {text}");
        got.extend_from_slice(&chunk[..n]);
    }
}

/// A subscriber and a publisher on `inst`; checks one publication gets through.
struct Witness {
    sub: Client,
    publ: Client,
    n: u64,
}

impl Witness {
    async fn new(inst: &Shardcast) -> Witness {
        let mut sub = inst.client("witness").await;
        sub.subscribe("witness", 1).await;
        let publ = inst.client("witness-pub").await;
        Witness { sub, publ, n: 0 }
    }

    async fn still_receives(&mut self) {
        self.n += 1;
        let r = self
            .publ
            .publish("witness", json!({"n": self.n}), self.n)
            .await;
        assert_eq!(r["op"], "ok", "{r}");
        let m = self.sub.next_message().await;
        assert_eq!(m["data"]["n"], self.n, "{m}");
    }
}

async fn timeouts(inst: &Shardcast, stage: &str) -> f64 {
    inst.metrics()
        .await
        .value("shardcast_timeouts_total", &[("stage", stage)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_whose_headers_never_complete_are_closed_after_the_header_timeout() {
    let inst = server(&["--header-timeout", "1s"]).start(&[]).await;
    let mut witness = Witness::new(&inst).await;
    // 50 connections with half a request, 10 with nothing at all.
    let mut half = Vec::new();
    for _ in 0..50 {
        half.push(raw(&inst, "GET /ws?user=x HTTP/1.1\r\nHost: x\r\n").await);
    }
    for _ in 0..10 {
        half.push(raw(&inst, "").await);
    }
    witness.still_receives().await;
    for s in &mut half {
        let (_, took) = until_closed(s, Duration::from_secs(5)).await;
        assert!(took <= Duration::from_secs(5));
    }
    // A header trickled a byte at a time does not reset the clock.
    let mut slow = raw(&inst, "G").await;
    let started = Instant::now();
    let trickle = async {
        for b in "ET /healthz HTTP/1.1\r\nX: ".bytes() {
            if slow.write_all(&[b]).await.is_err() {
                break;
            }
            sleep(Duration::from_millis(200)).await;
        }
    };
    trickle.await;
    let (_, _) = until_closed(&mut slow, Duration::from_secs(5)).await;
    assert!(started.elapsed() < Duration::from_secs(7));
    witness.still_receives().await;
    assert!(timeouts(&inst, "headers").await >= 61.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_never_arrives_gets_408_and_the_connection_closes() {
    let inst = server(&["--body-timeout", "1s"]).start(&[]).await;
    let mut s = raw(
        &inst,
        "POST /api/publish HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{",
    )
    .await;
    let (text, took) = until_closed(&mut s, Duration::from_secs(5)).await;
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains(r#""code":"timeout""#), "{text}");
    assert!(took >= Duration::from_millis(900), "closed after {took:?}");
    assert_eq!(timeouts(&inst, "body").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let inst = server(&["--idle-timeout", "1s", "--header-timeout", "10s"])
        .start(&[])
        .await;
    let mut s = raw(&inst, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(response(&mut s).await.starts_with("HTTP/1.1 200"));
    // Keep-alive works within the limit.
    sleep(Duration::from_millis(400)).await;
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    assert!(response(&mut s).await.starts_with("HTTP/1.1 200"));
    let (_, took) = until_closed(&mut s, Duration::from_secs(5)).await;
    assert!(took >= Duration::from_millis(900), "closed after {took:?}");
    assert_eq!(timeouts(&inst, "idle").await, 1.0);
    assert_eq!(timeouts(&inst, "headers").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_max_pending_connections_new_ones_get_an_immediate_503() {
    let inst = server(&["--max-pending-connections", "8", "--header-timeout", "30s"])
        .start(&[])
        .await;
    let mut witness = Witness::new(&inst).await;
    let mut held = Vec::new();
    for _ in 0..8 {
        held.push(raw(&inst, "GET / HTTP/1.1\r\n").await);
    }
    sleep(Duration::from_millis(300)).await;
    let mut turned = raw(&inst, "").await;
    let (text, took) = until_closed(&mut turned, Duration::from_secs(2)).await;
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    assert!(text.contains(r#""code":"unavailable""#), "{text}");
    assert!(took < Duration::from_secs(1), "{took:?}");
    // WebSocket sessions are not pending connections: the witness is unaffected.
    witness.still_receives().await;
    drop(held);
    sleep(Duration::from_millis(300)).await;
    assert_eq!(inst.get("/healthz").await.status, 200);
    let m = inst.metrics().await;
    assert!(
        m.value(
            "shardcast_connections_refused_total",
            &[("reason", "pending")]
        ) >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urls_headers_and_nesting_over_the_limits_are_refused_with_json_errors() {
    let inst = server(&[]).start(&[]).await;
    let long = format!("/healthz?{}", "a".repeat(5000));
    let r = inst.get(&long).await;
    assert_eq!(r.status, 414, "{}", r.body);
    assert_eq!(r.json()["error"]["code"], "too_large");

    let many: Vec<(String, String)> = (0..100).map(|i| (format!("x-h{i}"), "v".into())).collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let r = inst.request("GET", "/healthz", &many, None).await;
    assert_eq!(r.status, 431, "{}", r.body);
    assert_eq!(r.json()["error"]["code"], "too_large");

    let big = "b".repeat(20_000);
    let r = inst
        .request("GET", "/healthz", &[("x-big", &big)], None)
        .await;
    assert_eq!(r.status, 431, "{}", r.body);

    // 5000 nested arrays in `data`: refused over the socket (with the request id)
    // and over HTTP; 32 levels are fine.
    let deep = "[".repeat(5000) + &"]".repeat(5000);
    let mut c = inst.client("deep").await;
    c.subscribe("nest", 1).await;
    c.send_raw(tokio_tungstenite::tungstenite::Message::Text(
        format!(r#"{{"op":"publish","channel":"nest","id":7,"data":{deep}}}"#).into(),
    ))
    .await;
    let e = c.next_op("error").await;
    assert_eq!(
        (e["id"].as_u64(), e["code"].as_str()),
        (Some(7), Some("bad_request")),
        "{e}"
    );
    let body = format!(r#"{{"channel":"nest","data":{deep}}}"#);
    let r = inst.request("POST", "/api/publish", &[], Some(&body)).await;
    assert_eq!(r.status, 400, "{}", r.body);
    let fine = "[".repeat(32) + &"]".repeat(32);
    let r = c
        .publish("nest", serde_json::from_str(&fine).expect("json"), 8)
        .await;
    assert_eq!(r["op"], "ok", "{r}");
    assert_eq!(c.next_message().await["data"].to_string(), fine);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_descriptors_subscribed_clients_keep_receiving_and_health_returns() {
    // A hard limit of 96 descriptors; connections that never send a request are
    // kept (header timeout 60 s) until the instance runs out.
    let inst = server(&[
        "--header-timeout",
        "60s",
        "--max-pending-connections",
        "10000",
    ])
    .wrapped_in(&["prlimit", "--nofile=96:96", "--"])
    .start(&[])
    .await;
    let mut witness = Witness::new(&inst).await;
    let mut flood = Vec::new();
    let mut turned_away = 0;
    for _ in 0..200 {
        match TcpStream::connect(inst.addr).await {
            Ok(s) => flood.push(s),
            Err(_) => turned_away += 1,
        }
    }
    sleep(Duration::from_millis(500)).await;
    // The flood's connections beyond the limit were accepted and closed at once.
    let mut closed = 0;
    for s in &mut flood {
        let mut b = [0u8; 256];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(20), s.read(&mut b)).await
            && (n == 0 || b.starts_with(b"HTTP/1.1 503"))
        {
            closed += 1;
        }
    }
    println!(
        "descriptors: {} connected, {closed} turned away by the server, {turned_away} refused by the kernel",
        flood.len()
    );
    assert!(closed > 0, "some connections were turned away");
    // Established clients keep receiving meanwhile.
    witness.still_receives().await;
    drop(flood);
    sleep(Duration::from_millis(500)).await;
    assert_eq!(inst.get("/healthz").await.status, 200);
    let m = inst.metrics().await;
    assert!(m.value("shardcast_accept_errors_total", &[]) >= 1.0);
    assert!(
        m.value(
            "shardcast_connections_refused_total",
            &[("reason", "descriptors")]
        ) >= 1.0
    );
    witness.still_receives().await;
}
