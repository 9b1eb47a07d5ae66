//! Presence and join/leave on one instance (embedded broker), with real clients:
//! who is here and how many, join and leave frames in order with messages, who may
//! ask, and the errors for bad requests. The cluster-wide behaviour (other
//! instances, crashes, slot moves, failover, thousands of members) is in
//! tests/cluster_presence.rs.

mod support;

use std::time::Duration;

use serde_json::json;
use shardcast_testkit::token;
use support::{Client, ConfigFile, TestServer, http, secure_config};

const SECRET: &str = "presence-secret";
const NAMESPACES: &str = r#"
[namespaces.room]
presence = true
join_leave = true
publish = "subscribers"
[namespaces.quiet]
presence = true
"#;

fn tok(user: &str, name: &str) -> String {
    token::connection(
        SECRET,
        user,
        Duration::from_secs(600),
        Some(json!({"name": name})),
        &[],
    )
}

/// A server with the namespaces above, tokens signed with [`SECRET`], and `extra`
/// flags; its WebSocket URL; the config file (removed when dropped).
async fn server(extra: &[&str]) -> (TestServer, String, ConfigFile) {
    let file = ConfigFile::new(NAMESPACES);
    let mut args = vec!["--config", file.path(), "--token-hmac-secret", SECRET];
    args.extend_from_slice(extra);
    let s = TestServer::start(secure_config(&args)).await;
    let url = format!("ws://{}/ws", s.addr);
    (s, url, file)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_lists_members_with_their_info_and_join_leave_reach_subscribers_in_order() {
    let (s, url, _file) = server(&["--api-key", "k"]).await;
    let mut alice = Client::with_token(&url, &tok("alice", "Alice")).await;
    alice.subscribe("room:1", 1).await;
    let me = alice.next_op("join").await;
    assert_eq!(
        me["client"].as_str(),
        Some(alice.client_id().as_str()),
        "a joiner sees its own join: {me}"
    );
    let mut bob = Client::with_token(&url, &tok("bob", "Bob")).await;
    bob.subscribe("room:1", 1).await;
    let join = alice.next_op("join").await;
    assert_eq!(
        join,
        json!({"op":"join","channel":"room:1","client":bob.client_id(),"user":"bob","info":{"name":"Bob"}})
    );
    // A message, then bob leaves: alice sees them in that order.
    assert_eq!(bob.publish("room:1", json!("bye"), 2).await["op"], "ok");
    let r = bob
        .request(json!({"op":"unsubscribe","channel":"room:1"}), 3)
        .await;
    assert_eq!(r["op"], "ok");
    let m = alice.next_op("message").await;
    assert_eq!(m["data"], "bye");
    let leave = alice.next_op("leave").await;
    assert_eq!(
        (leave["user"].as_str(), leave["client"].as_str()),
        (Some("bob"), Some(bob.client_id().as_str()))
    );

    // Presence and stats, over the socket and over HTTP.
    let mut alice2 = Client::with_token(&url, &tok("alice", "Alice")).await;
    alice2.subscribe("room:1", 1).await;
    let r = alice
        .request(json!({"op":"presence","channel":"room:1"}), 4)
        .await;
    let mut users: Vec<&str> = r["clients"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["user"].as_str())
        .collect();
    users.sort();
    assert_eq!(users, vec!["alice", "alice"], "{r}");
    assert!(r["clients"][0]["info"]["name"].is_string(), "{r}");
    let r = alice
        .request(json!({"op":"presence_stats","channel":"room:1"}), 5)
        .await;
    assert_eq!(
        (r["clients"].as_u64(), r["users"].as_u64()),
        (Some(2), Some(1)),
        "{r}"
    );
    let h = http::request(
        "GET",
        &s.http_url("/api/presence_stats?channel=room:1"),
        &[("x-api-key", "k")],
        None,
    )
    .await;
    assert_eq!(
        (h.status, h.json()["clients"].as_u64()),
        (200, Some(2)),
        "{}",
        h.body
    );
    let h = http::request(
        "GET",
        &s.http_url("/api/presence?channel=room:1"),
        &[("x-api-key", "k")],
        None,
    )
    .await;
    assert_eq!(
        h.json()["clients"].as_array().map(Vec::len),
        Some(2),
        "{}",
        h.body
    );
    assert_eq!(
        s.get("/api/presence?channel=room:1").await.status,
        401,
        "the API needs its key"
    );

    // A disconnect is a leave too.
    let alice2_id = alice2.client_id();
    drop(alice2);
    let leave = alice.next_op("leave").await;
    assert_eq!(leave["client"].as_str(), Some(alice2_id.as_str()));
    // Presence without join/leave: counted, but no join frames.
    alice.subscribe("quiet:1", 6).await;
    bob.subscribe("quiet:1", 7).await;
    let r = alice
        .request(json!({"op":"presence_stats","channel":"quiet:1"}), 8)
        .await;
    assert_eq!(r["clients"].as_u64(), Some(2), "{r}");
    alice.expect_silence(Duration::from_millis(300)).await;
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_subscribers_may_ask_and_bad_requests_get_error_frames() {
    let (s, url, _file) = server(&["--presence-max", "2"]).await;
    let mut c = Client::with_token(&url, &tok("carol", "Carol")).await;
    let cases = [
        (json!({"op":"presence","channel":"room:2"}), "forbidden"),
        (
            json!({"op":"presence_stats","channel":"room:2"}),
            "forbidden",
        ),
        (json!({"op":"presence"}), "bad_request"),
        (json!({"op":"presence","channel":"plain"}), "no_presence"),
        (json!({"op":"presence","channel":"a b"}), "bad_request"),
    ];
    for (i, (frame, code)) in cases.iter().enumerate() {
        let r = c.request(frame.clone(), i as u64).await;
        assert_eq!(
            (r["op"].as_str(), r["code"].as_str(), r["id"].as_u64()),
            (Some("error"), Some(*code), Some(i as u64)),
            "{frame} -> {r}"
        );
    }
    // Over the cap: the list is refused with the documented error, the stats answer.
    let mut others = Vec::new();
    for u in ["d", "e", "f"] {
        let mut o = Client::with_token(&url, &tok(u, u)).await;
        o.subscribe("room:2", 1).await;
        others.push(o);
    }
    c.subscribe("room:2", 10).await;
    let r = c
        .request(json!({"op":"presence","channel":"room:2"}), 11)
        .await;
    assert_eq!(r["code"], "too_many_members", "{r}");
    assert!(
        r["message"]
            .as_str()
            .is_some_and(|m| m.contains("presence_stats")),
        "{r}"
    );
    let r = c
        .request(json!({"op":"presence_stats","channel":"room:2"}), 12)
        .await;
    assert_eq!(r["clients"].as_u64(), Some(4), "{r}");
    s.shutdown().await;
}
