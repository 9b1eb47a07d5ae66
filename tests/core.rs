//! The single-node service with the embedded broker, driven by real WebSocket clients.

mod support;

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use support::{Client, PATIENCE, Received, Scrape, TestServer, config, eventually};
use tokio_tungstenite::tungstenite::Message;

const QUIET: Duration = Duration::from_millis(300);

/// Waits until the server's connection gauge reads `n` (a close has been processed).
async fn wait_connections(server: &TestServer, n: f64) {
    eventually("the connection count", PATIENCE, || async {
        let v = server.metrics().await.value("shardcast_connections", &[]);
        if v == n {
            Ok(())
        } else {
            Err(format!("{v} connections, waiting for {n}"))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_reaches_every_subscriber_and_unsubscribe_stops_delivery() {
    let server = TestServer::memory().await;
    let mut a = server.client("a").await;
    let mut b = server.client("b").await;
    let mut c = server.client("c").await;
    for (i, cl) in [&mut a, &mut b, &mut c].into_iter().enumerate() {
        cl.subscribe("room:1", i as u64 + 1).await;
    }
    let ack = a.publish("room:1", json!({"n":1}), 10).await;
    assert_eq!(ack, json!({"op":"ok","id":10}));
    for cl in [&mut a, &mut b, &mut c] {
        let m = cl.next_message().await;
        assert_eq!(
            m,
            json!({"op":"message","channel":"room:1","data":{"n":1},"from":"a"})
        );
    }
    let r = b
        .request(json!({"op":"unsubscribe","channel":"room:1"}), 11)
        .await;
    assert_eq!(r, json!({"op":"ok","id":11}));
    a.publish("room:1", json!(2), 12).await;
    assert_eq!(a.next_message().await["data"], 2);
    assert_eq!(c.next_message().await["data"], 2);
    b.expect_silence(QUIET).await;
    // Unsubscribing again is an error, not a silent success.
    let r = b
        .request(json!({"op":"unsubscribe","channel":"room:1"}), 13)
        .await;
    assert_eq!(r["code"], "not_subscribed");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_after_the_subscribe_ok_is_always_delivered() {
    let server = TestServer::memory().await;
    let mut publisher = server.client("pub").await;
    let mut sub = server.client("sub").await;
    for i in 0..200u64 {
        let ch = format!("fresh:{i}");
        sub.subscribe(&ch, i).await;
        let ack = publisher.publish(&ch, json!(i), 10_000 + i).await;
        assert_eq!(ack["op"], "ok");
        let m = sub.next_message().await;
        assert_eq!(
            (m["channel"].as_str(), &m["data"]),
            (Some(ch.as_str()), &json!(i))
        );
        let r = sub
            .request(json!({"op":"unsubscribe","channel":ch}), 50_000 + i)
            .await;
        assert_eq!(r["op"], "ok");
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn personal_channel_reaches_every_connection_of_the_user() {
    let server = TestServer::memory().await;
    let mut alice1 = server.client("alice").await;
    let mut alice2 = server.client("alice").await;
    let mut alice3 = Client::connect(&format!("ws://{}/ws/alice", server.addr)).await;
    let mut bob = server.client("bob").await;
    let ack = bob.publish("user:alice", json!("hi"), 1).await;
    assert_eq!(ack["op"], "ok");
    for cl in [&mut alice1, &mut alice2, &mut alice3] {
        let m = cl.next_message().await;
        assert_eq!(
            m,
            json!({"op":"message","channel":"user:alice","data":"hi","from":"bob"})
        );
    }
    bob.expect_silence(QUIET).await;
    // One connection leaving does not take the others' subscription with it.
    let before = server.metrics().await.value("shardcast_connections", &[]);
    drop(alice1);
    wait_connections(&server, before - 1.0).await;
    bob.publish("user:alice", json!("again"), 2).await;
    assert_eq!(alice2.next_message().await["data"], "again");
    assert_eq!(alice3.next_message().await["data"], "again");
    // Subscribing to one's own personal channel again changes nothing: still exactly
    // one copy of each message.
    let r = alice2
        .request(json!({"op":"subscribe","channel":"user:alice"}), 3)
        .await;
    assert_eq!(r, json!({"op":"ok","id":3}));
    bob.publish("user:alice", json!("once"), 4).await;
    assert_eq!(alice2.next_message().await["data"], "once");
    alice2.expect_silence(QUIET).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_users_personal_channel_is_forbidden() {
    let server = TestServer::memory().await;
    let mut mallory = server.client("mallory").await;
    let r = mallory
        .request(json!({"op":"subscribe","channel":"user:alice"}), 7)
        .await;
    assert_eq!(r["op"], "error");
    assert_eq!(r["code"], "forbidden");
    let r = mallory
        .request(json!({"op":"unsubscribe","channel":"user:mallory"}), 8)
        .await;
    assert_eq!(r["code"], "forbidden");
    let r = mallory.request(json!({"op":"ping"}), 9).await;
    assert_eq!(r, json!({"op":"pong","id":9}));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_user_id_a_development_connection_is_anonymous() {
    let server = TestServer::start(config(&["--client-subscribe", "anonymous"])).await;
    let mut anon = Client::connect(&format!("ws://{}/ws", server.addr)).await;
    let connected = anon.connected.clone().expect("connected");
    assert_eq!(connected["user"], "", "{connected}");
    assert_eq!(
        connected["client"].as_str().map(str::len),
        Some(16),
        "{connected}"
    );
    anon.subscribe("lobby", 1).await;
    // The anonymous user has no personal channel, and may not claim one.
    let r = anon
        .request(json!({"op":"subscribe","channel":"user:"}), 2)
        .await;
    assert_eq!(r["code"], "forbidden", "{r}");
    let r = anon.publish("lobby", json!(1), 3).await;
    assert_eq!(
        r["code"], "forbidden",
        "anonymous connections may not publish here: {r}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_is_closed_by_the_pong_timeout_and_a_live_one_is_not() {
    let server = TestServer::start(config(&[
        "--ping-interval",
        "200ms",
        "--pong-timeout",
        "300ms",
    ]))
    .await;
    let before = server.metrics().await;
    let mut silent = support::SilentClient::connect(server.addr, "/ws?user=silent").await;
    let mut live = server.client("live").await;
    // `live` keeps reading in its own task the whole time (tungstenite answers pings
    // while it reads); `silent` does not touch its socket at all, so it never answers.
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let reader = tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = &mut stopped => return live,
                ev = live.next_event(Duration::from_millis(50)) => {
                    assert!(ev.is_none(), "the live client got {ev:?}");
                }
            }
        }
    });
    let (opcodes, code) = silent.read_until_close(PATIENCE).await;
    assert!(opcodes.contains(&9), "pings were sent: {opcodes:?}");
    assert_eq!(code, Some(4009));
    let _ = stop.send(());
    let mut live = reader.await.expect("live reader");
    let r = live.request(json!({"op":"ping"}), 1).await;
    assert_eq!(r["op"], "pong");
    let after = server.metrics().await;
    let delta = after.value("shardcast_keepalive_timeouts_total", &[])
        - before.value("shardcast_keepalive_timeouts_total", &[]);
    assert_eq!(delta, 1.0, "exactly the silent client timed out");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_is_cut_off_while_the_others_receive_everything() {
    let server = TestServer::start(config(&["--outbound-queue-bytes", "65536"])).await;
    let before = server.metrics().await;
    let subscriptions = before.value("shardcast_subscriptions", &[]);
    // A client with a tiny receive buffer that never reads.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(server.addr).await.unwrap();
    let (mut slow, _) = tokio_tungstenite::client_async(server.ws_url("slow"), stream)
        .await
        .unwrap();
    slow.send_frame(r#"{"op":"subscribe","channel":"firehose","id":1}"#)
        .await;

    let mut fast1 = server.client("fast1").await;
    let mut fast2 = server.client("fast2").await;
    fast1.subscribe("firehose", 1).await;
    fast2.subscribe("firehose", 1).await;
    // The slow client's subscribe is done once the server counts its two
    // subscriptions (personal + firehose) beside the fast ones' four: it never reads,
    // so its `ok` cannot be waited for.
    eventually("the slow client's subscription", PATIENCE, || async {
        let now = server.metrics().await.value("shardcast_subscriptions", &[]);
        if now == subscriptions + 6.0 {
            Ok(())
        } else {
            Err(format!("{now} subscriptions"))
        }
    })
    .await;

    let total = 10_000u64;
    let payload = "x".repeat(1000);
    let mut publisher = server.client("publisher").await;
    // The fast readers report progress; the publisher stays at most 16 messages
    // (16 KB, well under their 64 KiB queue) ahead of the slower of them, so only the
    // client that does not read at all can overflow.
    let progress: Vec<_> = (0..2)
        .map(|_| std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0)))
        .collect();
    let readers: Vec<_> = [fast1, fast2]
        .into_iter()
        .zip(progress.clone())
        .map(|(mut c, seen)| {
            tokio::spawn(async move {
                for n in 0..total {
                    let m = c.next_message().await;
                    assert_eq!(m["data"]["n"], json!(n), "in order, nothing missing");
                    seen.store(n + 1, std::sync::atomic::Ordering::Relaxed);
                }
                c
            })
        })
        .collect();
    for n in 0..total {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while progress
            .iter()
            .map(|p| p.load(std::sync::atomic::Ordering::Relaxed))
            .min()
            .unwrap_or(0)
            + 16
            < n
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "fast readers stalled at {n}"
            );
            tokio::task::yield_now().await;
        }
        publisher
            .send(json!({"op":"publish","channel":"firehose","data":{"n":n,"pad":payload}}))
            .await;
    }
    for r in readers {
        r.await.expect("fast reader");
    }
    // Now read the slow client: it must have been closed (4008 if the close frame made
    // it through its full socket, otherwise a dropped connection).
    let mut got = 0u64;
    let code = loop {
        match tokio::time::timeout(PATIENCE, slow.next()).await {
            Ok(Some(Ok(Message::Text(_)))) => got += 1,
            Ok(Some(Ok(Message::Close(f)))) => break f.map(|f| u16::from(f.code)),
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(_))) | Ok(None) => break None,
            Err(_) => panic!("slow consumer was not disconnected"),
        }
    };
    assert!(
        got < total,
        "the slow client cannot have received everything"
    );
    assert!(matches!(code, Some(4008) | None), "close code {code:?}");
    let after = server.metrics().await;
    let delta = after.value("shardcast_slow_consumer_disconnects_total", &[])
        - before.value("shardcast_slow_consumer_disconnects_total", &[]);
    assert_eq!(delta, 1.0, "exactly the slow client was cut off");
    server.shutdown().await;
}

trait SendFrame {
    async fn send_frame(&mut self, text: &str);
}

impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin> SendFrame
    for tokio_tungstenite::WebSocketStream<S>
{
    async fn send_frame(&mut self, text: &str) {
        use futures_util::SinkExt;
        self.send(Message::text(text.to_string())).await.unwrap();
    }
}

/// Sends a raw text frame and returns the error frame it provokes.
async fn refused(c: &mut Client, text: &str) -> Value {
    c.send_raw(Message::text(text.to_string())).await;
    let f = c.recv().await;
    assert_eq!(f["op"], "error", "{text} -> {f}");
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_an_error_frame_and_the_connection_stays_usable() {
    let server = TestServer::start(config(&[
        "--max-frame-bytes",
        "1024",
        "--max-channels-per-connection",
        "3",
    ]))
    .await;
    let before = server.metrics().await;
    let mut c = server.client("u").await;
    let cases: &[(&str, Option<u64>, &str)] = &[
        ("not json", None, "bad_request"),
        ("[1,2,3]", None, "bad_request"),
        (r#"{"op":"dance","id":1}"#, Some(1), "bad_request"),
        (r#"{"id":2}"#, Some(2), "bad_request"),
        (r#"{"op":"subscribe","id":3}"#, Some(3), "bad_request"),
        (
            r#"{"op":"subscribe","channel":7,"id":4}"#,
            Some(4),
            "bad_request",
        ),
        (
            r#"{"op":"publish","channel":"a","id":5}"#,
            Some(5),
            "bad_request",
        ),
        (r#"{"op":5,"id":6}"#, Some(6), "bad_request"),
        (r#"{"op":"ping","id":"x"}"#, None, "bad_request"),
        (
            r#"{"op":"subscribe","channel":"","id":8}"#,
            Some(8),
            "bad_request",
        ),
        (
            r#"{"op":"subscribe","channel":"a b","id":9}"#,
            Some(9),
            "bad_request",
        ),
        (
            r#"{"op":"subscribe","channel":"a\u0001","id":10}"#,
            Some(10),
            "bad_request",
        ),
        (
            r#"{"op":"subscribe","channel":"a","since":{"offset":-1},"id":11}"#,
            Some(11),
            "bad_request",
        ),
        (
            r#"{"op":"subscribe","channel":"a","since":{"offset":1,"epoch":"e"},"id":12}"#,
            Some(12),
            "no_history",
        ),
    ];
    for (text, id, code) in cases {
        let f = refused(&mut c, text).await;
        assert_eq!(f["code"], *code, "{text} -> {f}");
        assert_eq!(f.get("id").and_then(Value::as_u64), *id, "{text} -> {f}");
        assert!(f["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let long = "c".repeat(256);
    let f = refused(
        &mut c,
        &format!(r#"{{"op":"subscribe","channel":"{long}","id":13}}"#),
    )
    .await;
    assert_eq!(
        (f["code"].as_str(), f["id"].as_u64()),
        (Some("bad_request"), Some(13))
    );

    // Binary frames are refused with an error frame.
    c.send_raw(Message::binary(vec![1u8, 2, 3])).await;
    let f = c.recv().await;
    assert_eq!(
        (f["op"].as_str(), f["code"].as_str()),
        (Some("error"), Some("bad_request"))
    );

    // Over --max-frame-bytes: too_large, id kept.
    let big = format!(
        r#"{{"op":"publish","channel":"a","id":14,"data":"{}"}}"#,
        "x".repeat(2000)
    );
    let f = refused(&mut c, &big).await;
    assert_eq!(
        (f["code"].as_str(), f["id"].as_u64()),
        (Some("too_large"), Some(14))
    );

    // Channel limit.
    for (i, ch) in ["l1", "l2", "l3"].iter().enumerate() {
        c.subscribe(ch, 20 + i as u64).await;
    }
    let r = c
        .request(json!({"op":"subscribe","channel":"l4"}), 30)
        .await;
    assert_eq!(r["code"], "limit");

    // Still usable after all of that.
    let r = c.request(json!({"op":"ping"}), 31).await;
    assert_eq!(r, json!({"op":"pong","id":31}));
    let r = c.publish("l1", json!("still here"), 32).await;
    assert_eq!(r["op"], "ok");
    assert_eq!(c.next_message().await["data"], "still here");

    // Far over the limit (4x): the connection closes with 1009.
    let huge = format!(
        r#"{{"op":"publish","channel":"a","data":"{}"}}"#,
        "x".repeat(8000)
    );
    c.send_raw(Message::text(huge)).await;
    assert_eq!(c.expect_close(PATIENCE).await, Some(1009));

    // Every refusal above was counted by its code: 13 of the table, the long name
    // and the binary frame are bad_request; one too_large, one limit, one close.
    let after = server.metrics().await;
    let delta = |code: &str| {
        after.value("shardcast_errors_total", &[("code", code)])
            - before.value("shardcast_errors_total", &[("code", code)])
    };
    assert_eq!(delta("bad_request"), 15.0);
    assert_eq!(delta("no_history"), 1.0);
    assert_eq!(
        delta("too_large"),
        2.0,
        "the error frame and the 1009 close"
    );
    assert_eq!(delta("limit"), 1.0);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_api_publishes_as_the_server_and_reports_errors_as_json() {
    let server = TestServer::start(config(&["--max-frame-bytes", "1024"])).await;
    let before = server.metrics().await;
    let mut c = server.client("u").await;
    c.subscribe("news", 1).await;

    let r = server
        .post(
            "/api/publish",
            r#"{"channel":"news","data":{"headline":"x"}}"#,
        )
        .await;
    assert_eq!((r.status, r.body.as_str()), (200, r#"{"ok":true}"#));
    let m = c.next_message().await;
    assert_eq!(
        m,
        json!({"op":"message","channel":"news","data":{"headline":"x"}})
    );

    let bad: &[(&str, &str, u16, &str, &str)] = &[
        ("POST", "/api/publish", 400, "not json", "bad_request"),
        (
            "POST",
            "/api/publish",
            400,
            r#"{"channel":"news"}"#,
            "bad_request",
        ),
        (
            "POST",
            "/api/publish",
            400,
            r#"{"channel":"a b","data":1}"#,
            "bad_request",
        ),
        (
            "POST",
            "/api/publish",
            400,
            r#"{"channel":5,"data":1}"#,
            "bad_request",
        ),
        // serde alone would read these positionally as {"channel":..,"data":..}
        // and {"user":..}: the bodies must be objects.
        ("POST", "/api/publish", 400, r#"["news",1]"#, "bad_request"),
        (
            "POST",
            "/api/disconnect",
            400,
            r#"["alice"]"#,
            "bad_request",
        ),
        ("GET", "/nope", 404, "", "not_found"),
        ("GET", "/api/publish", 405, "", "method_not_allowed"),
        ("GET", "/ws", 400, "", "bad_request"),
    ];
    for (method, path, want, body, code) in bad {
        let r = support::http::request(method, &server.http_url(path), &[], Some(body)).await;
        assert_eq!(r.status, *want, "{method} {path} {body} -> {}", r.body);
        let v = r.json();
        assert_eq!(v["error"]["code"], *code, "{method} {path}: {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{v}"
        );
    }
    let big = format!(r#"{{"channel":"news","data":"{}"}}"#, "x".repeat(2000));
    let r = server.post("/api/publish", &big).await;
    assert_eq!(
        (r.status, r.json()["error"]["code"].as_str()),
        (413, Some("too_large"))
    );
    let r = server.get("/ws?user=a%20b").await;
    assert_eq!(
        (r.status, r.json()["error"]["code"].as_str()),
        (400, Some("bad_request"))
    );

    let r = server.get("/healthz").await;
    assert_eq!((r.status, r.body.as_str()), (200, r#"{"status":"ok"}"#));
    let r = server.get("/readyz").await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, r#"{"insecure":true,"ready":true}"#)
    );
    let r = server.get("/metrics").await;
    assert_eq!(r.status, 200);
    let after = Scrape::parse(&r.body);
    for name in [
        "shardcast_connections",
        "shardcast_connections_total",
        "shardcast_subscriptions",
        "shardcast_channels",
        "shardcast_messages_in_total",
        "shardcast_messages_out_total",
        "shardcast_bytes_out_total",
        "shardcast_slow_consumer_disconnects_total",
        "shardcast_errors_total",
    ] {
        assert!(after.has(name), "{name} missing from /metrics:\n{}", r.body);
    }
    let delta = |name: &str| after.value(name, &[]) - before.value(name, &[]);
    assert_eq!(delta("shardcast_messages_in_total"), 1.0, "one publish");
    assert_eq!(delta("shardcast_messages_out_total"), 1.0, "one delivery");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_every_client_with_1012() {
    let server = TestServer::memory().await;
    let mut clients = Vec::new();
    for i in 0..5 {
        let mut c = server.client(&format!("u{i}")).await;
        c.subscribe("room", i).await;
        clients.push(c);
    }
    let addr = server.addr;
    server.shutdown().await;
    for c in &mut clients {
        match c.next_event(PATIENCE).await {
            Some(Received::Closed(code)) => assert_eq!(code, Some(1012)),
            other => panic!("expected close 1012, got {other:?}"),
        }
    }
    // And it no longer accepts connections.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_a_connection_still_waiting_for_its_connect_frame_with_1012() {
    let server = TestServer::start(support::secure_config(&[
        "--token-hmac-secret",
        "shutdown-test-secret-0123456789abcdef",
        "--connect-timeout",
        "60s",
    ]))
    .await;
    let url = format!("ws://{}/ws", server.addr);
    let mut waiting = Client::try_connect(&url, &[])
        .await
        .expect("the upgrade is accepted; the connect frame is awaited");
    server.shutdown().await;
    match waiting.next_event(PATIENCE).await {
        Some(Received::Closed(code)) => assert_eq!(code, Some(1012)),
        other => panic!("expected close 1012, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_coalescing_delivers_every_message_in_order() {
    let server = TestServer::start(config(&["--write-coalesce", "20ms"])).await;
    let mut s = server.client("s").await;
    let mut p = server.client("p").await;
    s.subscribe("burst", 1).await;
    for n in 0..200u64 {
        p.send(json!({"op":"publish","channel":"burst","data":n}))
            .await;
    }
    for n in 0..200u64 {
        assert_eq!(s.next_message().await["data"].as_u64(), Some(n));
    }
    s.expect_silence(QUIET).await;
    server.shutdown().await;
}

/// The soft limit of a process's open files, and its hard limit, from /proc.
fn open_file_limits(pid: u32) -> Option<(String, String)> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let mut f = line.trim_start_matches("Max open files").split_whitespace();
    Some((f.next()?.to_string(), f.next()?.to_string()))
}

/// Every client is a file descriptor: started with a soft limit of 256 (as with a
/// default of 1024, far below what an instance serves), the binary raises it to the
/// hard limit.
#[test]
fn the_binary_raises_its_open_file_limit_to_the_hard_limit() {
    let (_, hard) = open_file_limits(std::process::id()).expect("own limits");
    assert_ne!(hard, "256", "the test needs a hard limit above 256");
    let mut child = std::process::Command::new("prlimit")
        .arg("--nofile=256:")
        .arg(env!("CARGO_BIN_EXE_shardcast"))
        .args(["--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("prlimit (util-linux) must be installed for this test");
    // prlimit sets 256 and then execs the server in the same process: until the exec,
    // the process is a copy of this one, with this one's limits.
    let server = std::fs::canonicalize(env!("CARGO_BIN_EXE_shardcast")).expect("binary path");
    let pid = child.id();
    let deadline = std::time::Instant::now() + PATIENCE;
    let mut seen = None;
    while std::time::Instant::now() < deadline {
        let running = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
        if running.as_deref() == Some(server.as_path()) {
            seen = open_file_limits(pid);
            if seen.as_ref().is_some_and(|(soft, _)| *soft == hard) {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        seen,
        Some((hard.clone(), hard)),
        "soft limit not raised to the hard one"
    );
}
