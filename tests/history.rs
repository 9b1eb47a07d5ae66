//! History, offsets and resume on the embedded broker (the cluster variants are in
//! tests/cluster.rs): real clients against a real server.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::{Client, TestServer, config};

async fn server(history: &str) -> TestServer {
    TestServer::start(config(&["--history", history])).await
}

/// Publishes `n` messages to `channel` and returns the last offset.
async fn publish_n(c: &mut Client, channel: &str, from: u64, n: u64) -> u64 {
    let mut last = 0;
    for i in from..from + n {
        let r = c.publish(channel, json!({"n": i}), 1_000_000 + i).await;
        assert_eq!(r["op"], "ok", "{r}");
        last = r["offset"].as_u64().expect("publish ok carries the offset");
    }
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_are_consecutive_and_the_subscribe_ok_carries_the_position() {
    let server = server("chat:1000:300s").await;
    let mut a = server.client("a").await;
    let ok = a.subscribe("chat:1", 1).await;
    assert_eq!(ok["offset"], 0);
    assert_eq!(
        ok["epoch"], "",
        "no epoch before the first publication: {ok}"
    );
    let r = a.publish("chat:1", json!({"n": 0}), 100).await;
    let epoch = r["epoch"]
        .as_str()
        .expect("the publish ok carries the epoch")
        .to_string();
    assert_eq!(epoch.len(), 16, "{r}");
    assert_eq!(r["offset"], 1);
    let last = publish_n(&mut a, "chat:1", 1, 4).await;
    assert_eq!(last, 5);
    for want in 1..=5u64 {
        let m = a.next_message().await;
        assert_eq!(
            (
                m["offset"].as_u64(),
                m["data"]["n"].as_u64(),
                m["epoch"].as_str()
            ),
            (Some(want), Some(want - 1), Some(epoch.as_str()))
        );
    }
    let mut b = server.client("b").await;
    let ok = b.subscribe("chat:1", 2).await;
    assert_eq!(ok["offset"], 5);
    assert_eq!(
        ok["epoch"].as_str(),
        Some(epoch.as_str()),
        "the channel's epoch: {ok}"
    );
    // Plain channels carry no offsets.
    let ok = a.subscribe("plain", 3).await;
    assert!(ok.get("offset").is_none(), "{ok}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnecting_with_since_replays_what_was_missed_then_continues_live() {
    let server = server("chat:1000:300s").await;
    let mut publisher = server.client("p").await;
    let mut sub = server.client("s").await;
    sub.subscribe("chat:room", 1).await;
    publish_n(&mut publisher, "chat:room", 0, 10).await;
    let mut last = None;
    for _ in 0..10 {
        let m = sub.next_message().await;
        last = m["offset"].as_u64();
    }
    let ok = server.client("probe").await.subscribe("chat:room", 9).await;
    let epoch = ok["epoch"].as_str().map(String::from);
    drop(sub);

    // 100 publications while the subscriber is away.
    publish_n(&mut publisher, "chat:room", 10, 100).await;
    let mut sub = server.client("s").await;
    let ok = sub
        .request(
            json!({"op":"subscribe","channel":"chat:room","since":{"offset":last,"epoch":epoch}}),
            2,
        )
        .await;
    assert_eq!(
        (ok["op"].as_str(), ok["recovered"].as_bool()),
        (Some("ok"), Some(true)),
        "{ok}"
    );
    assert_eq!(ok["offset"], 110);
    // Live publications racing the replay.
    let live = tokio::spawn(async move {
        publish_n(&mut publisher, "chat:room", 110, 20).await;
        publisher
    });
    for want in 11..=130u64 {
        let m = sub.next_message().await;
        assert_eq!(
            m["offset"].as_u64(),
            Some(want),
            "in order, no gap, no duplicate: {m}"
        );
        assert_eq!(
            m["epoch"].as_str(),
            epoch.as_deref(),
            "messages carry the epoch"
        );
        assert_eq!(m["data"]["n"].as_u64(), Some(want - 1));
    }
    live.await.unwrap();
    sub.expect_silence(Duration::from_millis(300)).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_is_refused_when_history_no_longer_reaches_or_the_epoch_changed() {
    let server = server("short:10:1s").await;
    let mut p = server.client("p").await;
    let mut s = server.client("s").await;
    let ok = s.subscribe("short:x", 1).await;
    assert_eq!(ok["offset"], 0);
    publish_n(&mut p, "short:x", 0, 30).await;
    let probe = server.client("probe").await.subscribe("short:x", 2).await;
    assert_eq!(probe["offset"], 30);
    let epoch = probe["epoch"].as_str().expect("epoch").to_string();
    let mut t = server.client("t").await;
    // Trimmed: only the last 10 are kept, so offset 5 cannot be resumed.
    let ok = t
        .request(
            json!({"op":"subscribe","channel":"short:x","since":{"offset":5,"epoch":epoch}}),
            3,
        )
        .await;
    assert_eq!(ok["recovered"], false, "{ok}");
    t.request(json!({"op":"unsubscribe","channel":"short:x"}), 4)
        .await;
    // Resumable from 20 (21..30 are kept).
    let ok = t
        .request(
            json!({"op":"subscribe","channel":"short:x","since":{"offset":20,"epoch":epoch}}),
            5,
        )
        .await;
    assert_eq!(ok["recovered"], true, "{ok}");
    for want in 21..=30u64 {
        assert_eq!(t.next_message().await["offset"].as_u64(), Some(want));
    }
    t.request(json!({"op":"unsubscribe","channel":"short:x"}), 6)
        .await;
    // Another epoch: not recovered.
    let ok = t
        .request(
            json!({"op":"subscribe","channel":"short:x","since":{"offset":29,"epoch":"beef"}}),
            7,
        )
        .await;
    assert_eq!(ok["recovered"], false, "{ok}");
    t.request(json!({"op":"unsubscribe","channel":"short:x"}), 8)
        .await;
    // Expired: after the TTL the history is gone and the next publish starts a new epoch.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let r = p.publish("short:x", json!("fresh"), 9).await;
    assert_eq!(r["offset"], 1, "offsets restart in the new epoch: {r}");
    assert_ne!(r["epoch"].as_str(), Some(epoch.as_str()));
    let ok = t
        .request(
            json!({"op":"subscribe","channel":"short:x","since":{"offset":30,"epoch":epoch}}),
            10,
        )
        .await;
    assert_eq!(ok["recovered"], false, "{ok}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_idempotent_publish_is_stored_and_delivered_once() {
    let server = server("orders:100:60s").await;
    let mut p = server.client("p").await;
    let mut s = server.client("s").await;
    s.subscribe("orders:1", 1).await;
    let mut offsets = Vec::new();
    for i in 0..3 {
        let r = p
            .request(
                json!({"op":"publish","channel":"orders:1","data":"pay","idempotency_key":"k-1"}),
                10 + i,
            )
            .await;
        assert_eq!(r["op"], "ok", "{r}");
        offsets.push(r["offset"].as_u64());
    }
    assert_eq!(offsets, vec![Some(1); 3], "the same offset every time");
    assert_eq!(s.next_message().await["offset"], 1);
    s.expect_silence(Duration::from_millis(300)).await;
    let r = server.get("/api/history?channel=orders:1&since=0").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["publications"].as_array().map(Vec::len), Some(1), "{v}");
    // Over HTTP too.
    let body = r#"{"channel":"orders:1","data":"ship","idempotency_key":"k-2"}"#;
    let a = server.post("/api/publish", body).await;
    let b = server.post("/api/publish", body).await;
    assert_eq!(a, b);
    assert_eq!(a.json()["offset"], 2, "{}", a.body);
    assert_eq!(s.next_message().await["data"], "ship");
    s.expect_silence(Duration::from_millis(300)).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_api_returns_stored_publications_and_refuses_bad_requests() {
    let server = server("chat:1000:300s").await;
    let mut p = server.client("p").await;
    publish_n(&mut p, "chat:api", 0, 12).await;
    let r = server
        .get("/api/history?channel=chat:api&since=5&limit=4")
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v: Value = r.json();
    let offsets: Vec<u64> = v["publications"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["offset"].as_u64())
        .collect();
    assert_eq!(offsets, vec![6, 7, 8, 9]);
    assert_eq!(v["offset"], 12);
    assert_eq!(v["publications"][0]["from"], "p");
    for (query, code) in [
        ("channel=plain&since=0", "no_history"),
        ("channel=chat:api&limit=0", "bad_request"),
        ("channel=chat:api&limit=100000", "bad_request"),
        ("channel=chat:api&since=-1", "bad_request"),
        ("channel=a%20b", "bad_request"),
        ("since=1", "bad_request"),
    ] {
        let r = server.get(&format!("/api/history?{query}")).await;
        assert_eq!(r.status, 400, "{query}: {}", r.body);
        assert_eq!(r.json()["error"]["code"], code, "{query}: {}", r.body);
    }
    // Over the socket: since on a plain channel, malformed positions, idempotency on plain.
    let mut c = server.client("c").await;
    for (frame, code) in [
        (
            json!({"op":"subscribe","channel":"plain","since":{"offset":1,"epoch":"x"}}),
            "no_history",
        ),
        (
            json!({"op":"subscribe","channel":"chat:a","since":{"offset":"1","epoch":"x"}}),
            "bad_request",
        ),
        (
            json!({"op":"subscribe","channel":"chat:a","since":{"offset":1}}),
            "bad_request",
        ),
        (
            json!({"op":"subscribe","channel":"chat:a","since":{"offset":1,"epoch":"no spaces"}}),
            "bad_request",
        ),
        (
            json!({"op":"publish","channel":"plain","data":1,"idempotency_key":"k"}),
            "no_history",
        ),
        (
            json!({"op":"publish","channel":"chat:a","data":1,"idempotency_key":""}),
            "bad_request",
        ),
    ] {
        let r = c.request(frame.clone(), 77).await;
        assert_eq!(
            (r["op"].as_str(), r["code"].as_str()),
            (Some("error"), Some(code)),
            "{frame} -> {r}"
        );
    }
    server.shutdown().await;
}
