//! Identity and permissions against a real server (embedded broker) with real
//! clients: connection tokens in the header and in the first frame, refusals of
//! every kind of bad token, refresh and expiry, private channels, namespace
//! publish rules, API keys, origins, rate and connection limits. The cluster-wide
//! API commands are in tests/cluster_auth.rs.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use shardcast_testkit::token;
use support::{Client, PATIENCE, Received, TestServer, http, secure_config};

const SECRET: &str = "test-secret-1";

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/keys/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// A server that verifies tokens signed with [`SECRET`], with `args` on top.
async fn server(args: &[&str]) -> TestServer {
    let mut all = vec!["--token-hmac-secret", SECRET, "--api-key", "api-key-1"];
    all.extend_from_slice(args);
    TestServer::start(secure_config(&all)).await
}

fn tok(user: &str) -> String {
    token::connection(SECRET, user, Duration::from_secs(600), None, &[])
}

/// The status and error code of a refused upgrade.
async fn refused_upgrade(url: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let e = Client::try_connect(url, headers)
        .await
        .err()
        .expect("the upgrade is refused");
    let status: u16 = e
        .strip_prefix("HTTP ")
        .and_then(|r| r.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP refusal: {e}"));
    let body = e.split_once(' ').map(|x| x.1).unwrap_or("");
    let body = body.split_once(' ').map(|x| x.1).unwrap_or("");
    let code = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(String::from))
        .unwrap_or_default();
    (status, code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_token_or_a_connect_frame_authenticates_and_nothing_else_does() {
    let s = server(&[]).await;
    let url = format!("ws://{}/ws", s.addr);
    // The header.
    let c = Client::with_token(&url, &tok("alice")).await;
    let connected = c.connected.clone().unwrap();
    assert_eq!(connected["user"], "alice");
    assert!(
        connected["expires_in"].as_u64().is_some_and(|s| s > 500),
        "{connected}"
    );
    // The first frame.
    let (_c, answer) = Client::connect_with_frame(&url, &tok("bob"), 7).await;
    assert_eq!(
        (
            answer["op"].as_str(),
            answer["id"].as_u64(),
            answer["user"].as_str()
        ),
        (Some("connected"), Some(7), Some("bob"))
    );
    // The impersonation of the seed: a stranger naming himself alice.
    assert_eq!(
        refused_upgrade(&format!("{url}?user=alice"), &[]).await,
        (401, "unauthorized".into())
    );
    assert_eq!(
        refused_upgrade(&format!("ws://{}/ws/alice", s.addr), &[]).await,
        (401, "unauthorized".into())
    );
    // A token in the URL, without --token-in-query.
    assert_eq!(
        refused_upgrade(&format!("{url}?token={}", tok("alice")), &[]).await,
        (400, "bad_request".into())
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_bad_token_is_refused_in_the_header_and_in_the_connect_frame() {
    let s = server(&["--token-audience", "rt", "--token-issuer", "backend"]).await;
    let url = format!("ws://{}/ws", s.addr);
    let now = token::now();
    let base = |sub: &str| json!({"sub": sub, "exp": now + 600, "aud": "rt", "iss": "backend"});
    let with = |mut v: Value, k: &str, x: Value| {
        v[k] = x;
        v
    };
    let without = |mut v: Value, k: &str| {
        v.as_object_mut().unwrap().remove(k);
        v
    };
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let none = format!(
        "{}.{}.",
        b64.encode(br#"{"alg":"none","typ":"JWT"}"#),
        b64.encode(base("alice").to_string())
    );
    let rsa_pem = std::fs::read_to_string(fixture("rsa.pub")).unwrap();
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "forged signature",
            token::sign("another-secret", &base("alice")),
            "unauthorized",
        ),
        ("alg none", none, "unauthorized"),
        (
            "HS256 signed with a public key",
            token::sign(&rsa_pem, &base("alice")),
            "unauthorized",
        ),
        (
            "expired",
            token::sign(SECRET, &with(base("alice"), "exp", json!(now - 60))),
            "token_expired",
        ),
        (
            "not yet valid",
            token::sign(SECRET, &with(base("alice"), "nbf", json!(now + 300))),
            "unauthorized",
        ),
        (
            "wrong audience",
            token::sign(SECRET, &with(base("alice"), "aud", json!("other"))),
            "unauthorized",
        ),
        (
            "wrong issuer",
            token::sign(SECRET, &with(base("alice"), "iss", json!("evil"))),
            "unauthorized",
        ),
        (
            "no sub",
            token::sign(SECRET, &without(base("alice"), "sub")),
            "unauthorized",
        ),
        (
            "anonymous, not allowed",
            token::sign(SECRET, &base("")),
            "unauthorized",
        ),
        ("garbage", "not.a.token".to_string(), "unauthorized"),
    ];
    let before = s.metrics().await.value(
        "shardcast_auth_failures_total",
        &[("reason", "connect_token")],
    );
    for (what, t, code) in &cases {
        let (status, got) =
            refused_upgrade(&url, &[("authorization", &format!("Bearer {t}"))]).await;
        assert_eq!((status, got.as_str()), (401, *code), "{what} in the header");
        let (mut c, answer) = Client::connect_with_frame(&url, t, 1).await;
        assert_eq!(
            (answer["op"].as_str(), answer["code"].as_str()),
            (Some("error"), Some(*code)),
            "{what}: {answer}"
        );
        let close = c.expect_close(PATIENCE).await;
        let want = if *code == "token_expired" { 4011 } else { 4500 };
        assert_eq!(close, Some(want), "{what}: closed");
    }
    let after = s.metrics().await.value(
        "shardcast_auth_failures_total",
        &[("reason", "connect_token")],
    );
    assert_eq!(
        after - before,
        2.0 * cases.len() as f64,
        "each refusal counted"
    );
    // And the good one passes.
    let good = token::sign(SECRET, &base("alice"));
    assert_eq!(
        Client::with_token(&url, &good).await.connected.unwrap()["user"],
        "alice"
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_keys_verify_rs_es_and_eddsa_tokens_and_a_rotated_secret_while_listed() {
    let keys = format!(
        "{},{},{}",
        fixture("rsa.pub"),
        fixture("ec.pub"),
        fixture("ed.pub")
    );
    let s = TestServer::start(secure_config(&[
        "--token-public-key",
        &keys,
        "--token-hmac-secret",
        "new,old",
    ]))
    .await;
    let url = format!("ws://{}/ws", s.addr);
    let claims = json!({"sub": "carol", "exp": token::now() + 600});
    for (key, alg) in [
        ("rsa.key", "RS256"),
        ("ec.key", "ES256"),
        ("ed.key", "EdDSA"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_shardcast"))
            .args([
                "token",
                "--user",
                "carol",
                "--private-key",
                &fixture(key),
                "--algorithm",
                alg,
            ])
            .output()
            .expect("shardcast token");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let t = String::from_utf8(out.stdout).unwrap().trim().to_string();
        let c = Client::with_token(&url, &t).await;
        assert_eq!(c.connected.unwrap()["user"], "carol", "{alg}");
    }
    assert!(
        Client::with_token(&url, &token::sign("old", &claims))
            .await
            .connected
            .is_some(),
        "the old secret, still listed"
    );
    s.shutdown().await;
    let s = TestServer::start(secure_config(&["--token-hmac-secret", "new"])).await;
    let url = format!("ws://{}/ws", s.addr);
    let (status, _) = refused_upgrade(
        &url,
        &[(
            "authorization",
            &format!("Bearer {}", token::sign("old", &claims)),
        )],
    )
    .await;
    assert_eq!(status, 401, "the old secret, once removed");
    assert!(
        Client::with_token(&url, &token::sign("new", &claims))
            .await
            .connected
            .is_some()
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_keeps_the_connection_another_sub_is_refused_and_no_refresh_closes_after_the_grace()
{
    let s = server(&["--token-expiry-grace", "1s"]).await;
    let url = format!("ws://{}/ws", s.addr);
    let short = |user: &str| token::connection(SECRET, user, Duration::from_secs(2), None, &[]);
    // Refreshed before expiry: still open well after the first token's exp + grace.
    let mut a = Client::with_token(&url, &short("alice")).await;
    let r = a
        .request(json!({"op":"refresh","token": tok("alice")}), 1)
        .await;
    assert_eq!(r["op"], "ok", "{r}");
    assert!(r["expires_in"].as_u64().is_some_and(|s| s > 500), "{r}");
    // Without a refresh: closed with 4011 once exp (2 s) + grace (1 s) passed.
    let mut b = Client::with_token(&url, &short("bob")).await;
    assert_eq!(b.expect_close(Duration::from_secs(15)).await, Some(4011));
    let r = a.request(json!({"op":"ping"}), 2).await;
    assert_eq!(
        r["op"], "pong",
        "the refreshed connection outlived the first token"
    );
    // Another user's token: refused, and the connection closed.
    let r = a
        .request(json!({"op":"refresh","token": tok("mallory")}), 3)
        .await;
    assert_eq!(r["code"], "unauthorized", "{r}");
    assert_eq!(a.expect_close(PATIENCE).await, Some(4500));
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_connect_frame_in_time_the_connection_closes_with_4010() {
    let s = server(&["--connect-timeout", "500ms"]).await;
    let mut c = Client::try_connect(&format!("ws://{}/ws", s.addr), &[])
        .await
        .unwrap();
    let r = c.request(json!({"op":"subscribe","channel":"x"}), 1).await;
    assert_eq!(
        r["code"], "unauthorized",
        "nothing but connect before connect: {r}"
    );
    let r = c.request(json!({"op":"ping"}), 2).await;
    assert_eq!(r["op"], "pong", "ping is answered");
    assert_eq!(c.expect_close(PATIENCE).await, Some(4010));
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_channels_need_a_subscription_token_of_this_user_for_this_channel() {
    let dir = std::env::temp_dir().join(format!("shardcast-auth-{}.toml", std::process::id()));
    std::fs::write(
        &dir,
        "[namespaces.private]\nsubscribe = \"token\"\n[namespaces.chat]\npublish = \"subscribers\"\n",
    )
    .unwrap();
    let s = server(&[
        "--config",
        dir.to_str().unwrap(),
        "--token-expiry-grace",
        "1s",
    ])
    .await;
    let url = format!("ws://{}/ws", s.addr);
    let mut a = Client::with_token(&url, &tok("alice")).await;
    let r = a
        .request(json!({"op":"subscribe","channel":"private:1"}), 1)
        .await;
    assert_eq!(r["code"], "forbidden", "no token: {r}");
    let bobs = token::subscription(SECRET, "bob", "private:1", Duration::from_secs(600));
    let r = a
        .request(
            json!({"op":"subscribe","channel":"private:1","token":bobs}),
            2,
        )
        .await;
    assert_eq!(r["code"], "unauthorized", "another user's token: {r}");
    let other = token::subscription(SECRET, "alice", "private:2", Duration::from_secs(600));
    let r = a
        .request(
            json!({"op":"subscribe","channel":"private:1","token":other}),
            3,
        )
        .await;
    assert_eq!(r["code"], "unauthorized", "another channel's token: {r}");
    let forged = token::subscription(
        "not-the-secret",
        "alice",
        "private:1",
        Duration::from_secs(600),
    );
    let r = a
        .request(
            json!({"op":"subscribe","channel":"private:1","token":forged}),
            4,
        )
        .await;
    assert_eq!(r["code"], "unauthorized", "a forged token: {r}");
    // A short valid one: subscribed, refreshed once, then left to expire.
    let short = token::subscription(SECRET, "alice", "private:1", Duration::from_secs(2));
    let r = a
        .request(
            json!({"op":"subscribe","channel":"private:1","token":short}),
            5,
        )
        .await;
    assert_eq!(r["op"], "ok", "{r}");
    s.post_as(
        "/api/publish",
        r#"{"channel":"private:1","data":"secret"}"#,
        "api-key-1",
    )
    .await;
    assert_eq!(a.next_message().await["data"], "secret");
    let renewed = token::subscription(SECRET, "alice", "private:1", Duration::from_secs(3));
    let r = a
        .request(
            json!({"op":"sub_refresh","channel":"private:1","token":renewed}),
            6,
        )
        .await;
    assert_eq!(r["op"], "ok", "{r}");
    let ended = loop {
        match a.next_event(Duration::from_secs(15)).await {
            Some(Received::Frame(f)) if f["op"] == "unsubscribed" => break f,
            Some(Received::Frame(_)) => continue,
            other => panic!("expected the subscription to end, got {other:?}"),
        }
    };
    assert_eq!(
        (ended["channel"].as_str(), ended["code"].as_str()),
        (Some("private:1"), Some("token_expired"))
    );
    s.post_as(
        "/api/publish",
        r#"{"channel":"private:1","data":"after"}"#,
        "api-key-1",
    )
    .await;
    a.expect_silence(Duration::from_millis(300)).await;
    // Client publishing: chat allows subscribers; the default namespace nobody.
    let r = a.publish("chat:1", json!(1), 7).await;
    assert_eq!(r["code"], "forbidden", "not subscribed: {r}");
    a.subscribe("chat:1", 8).await;
    assert_eq!(a.publish("chat:1", json!(2), 9).await["op"], "ok");
    let r = a.publish("news", json!(3), 10).await;
    assert_eq!(
        r["code"], "forbidden",
        "publishing is the backend's by default: {r}"
    );
    let _ = std::fs::remove_file(dir);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_needs_a_key_and_health_stays_open() {
    let s = server(&[]).await;
    let body = r#"{"channel":"news","data":1}"#;
    let publish = |headers: Vec<(&'static str, String)>| {
        let url = s.http_url("/api/publish");
        async move {
            let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            http::request("POST", &url, &h, Some(body)).await
        }
    };
    let r = publish(vec![]).await;
    assert_eq!(
        (r.status, r.json()["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    let r = publish(vec![("authorization", "apikey wrong".into())]).await;
    assert_eq!(r.status, 401);
    let r = publish(vec![("authorization", "apikey api-key-1".into())]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = publish(vec![("x-api-key", "api-key-1".into())]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    for path in ["/api/history?channel=x", "/api/cluster"] {
        assert_eq!(s.get(path).await.status, 401, "{path}");
    }
    assert_eq!(s.get("/healthz").await.status, 200);
    let r = s.get("/readyz").await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, r#"{"insecure":false,"ready":true}"#)
    );
    assert_eq!(
        s.metrics().await.get("shardcast_insecure_mode", &[]),
        Some(0.0)
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_keys_or_insecure_the_websocket_endpoint_explains_how_to_configure() {
    let s = TestServer::start(secure_config(&[])).await;
    let e = Client::try_connect(&format!("ws://{}/ws", s.addr), &[])
        .await
        .err()
        .expect("refused");
    assert!(e.starts_with("HTTP 503"), "{e}");
    assert!(
        e.contains("not_configured")
            && e.contains("--token-hmac-secret")
            && e.contains("--insecure"),
        "{e}"
    );
    let r = s.post("/api/publish", r#"{"channel":"x","data":1}"#).await;
    assert_eq!(r.status, 401, "and the API is closed: {}", r.body);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsers_from_other_origins_are_refused_unless_allowed() {
    let s = server(&[
        "--allowed-origins",
        "https://app.example.com,https://*.example.org",
    ])
    .await;
    let url = format!("ws://{}/ws", s.addr);
    let bearer = format!("Bearer {}", tok("alice"));
    let own = format!("http://{}", s.addr);
    for (origin, ok) in [
        ("https://evil.example.com", false),
        ("https://app.example.com", true),
        ("https://x.example.org", true),
        ("https://example.org", false),
        (own.as_str(), true),
    ] {
        let r = Client::try_connect(&url, &[("authorization", &bearer), ("origin", origin)]).await;
        match (r, ok) {
            (Ok(_), true) => {}
            (Err(e), false) => assert!(e.starts_with("HTTP 403"), "{origin}: {e}"),
            (r, _) => panic!("{origin}: {:?}", r.err()),
        }
    }
    assert!(
        Client::try_connect(&url, &[("authorization", &bearer)])
            .await
            .is_ok(),
        "no Origin: not a browser"
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_refuse_then_close_and_connection_limits_refuse_before_the_upgrade() {
    let s = server(&[
        "--publish-rate",
        "5",
        "--subscribe-rate",
        "5",
        "--max-connections-per-user",
        "2",
        "--client-publish",
        "authenticated",
    ])
    .await;
    let url = format!("ws://{}/ws", s.addr);
    let before = s.metrics().await;
    let mut a = Client::with_token(&url, &tok("alice")).await;
    let mut answers = Vec::new();
    for i in 0..8 {
        answers.push(
            a.publish("room", json!(i), i).await["op"]
                .as_str()
                .unwrap_or("?")
                .to_string(),
        );
    }
    let limited = answers.iter().filter(|a| *a == "error").count();
    assert!(
        limited >= 2,
        "over 5/s some publishes are refused: {answers:?}"
    );
    // Pushing on: closed as abusive.
    for i in 0..30u64 {
        a.send(json!({"op":"subscribe","channel":format!("c{i}"),"id":100 + i}))
            .await;
    }
    assert_eq!(a.expect_close(PATIENCE).await, Some(4029));
    let after = s.metrics().await;
    assert!(
        after.value("shardcast_rate_limited_total", &[("kind", "publish")])
            > before.value("shardcast_rate_limited_total", &[("kind", "publish")])
    );
    assert_eq!(
        after.value(
            "shardcast_connections_refused_total",
            &[("reason", "abuse")]
        ) - before.value(
            "shardcast_connections_refused_total",
            &[("reason", "abuse")]
        ),
        1.0
    );
    // Per user: the third connection of bob is refused before the upgrade (header
    // token) or closed with 4012 (connect frame).
    let _b1 = Client::with_token(&url, &tok("bob")).await;
    let _b2 = Client::with_token(&url, &tok("bob")).await;
    let (status, code) = refused_upgrade(
        &url,
        &[("authorization", &format!("Bearer {}", tok("bob")))],
    )
    .await;
    assert_eq!((status, code.as_str()), (429, "limit"));
    let (mut b3, answer) = Client::connect_with_frame(&url, &tok("bob"), 1).await;
    assert_eq!(
        (answer["op"].as_str(), answer["code"].as_str()),
        (Some("error"), Some("limit")),
        "{answer}"
    );
    assert_eq!(b3.expect_close(PATIENCE).await, Some(4012));
    s.shutdown().await;

    let s = server(&["--max-connections", "2"]).await;
    let url = format!("ws://{}/ws", s.addr);
    let _c1 = Client::with_token(&url, &tok("c1")).await;
    let _c2 = Client::with_token(&url, &tok("c2")).await;
    let (status, code) =
        refused_upgrade(&url, &[("authorization", &format!("Bearer {}", tok("c3")))]).await;
    assert_eq!(
        (status, code.as_str()),
        (503, "unavailable"),
        "max connections"
    );
    s.shutdown().await;

    let s = server(&["--max-connects-per-second", "3"]).await;
    let url = format!("ws://{}/ws", s.addr);
    let mut refused = 0;
    let mut keep = Vec::new();
    for i in 0..10 {
        match Client::try_connect(
            &url,
            &[(
                "authorization",
                &format!("Bearer {}", tok(&format!("r{i}"))),
            )],
        )
        .await
        {
            Ok(c) => keep.push(c),
            Err(e) => {
                assert!(e.starts_with("HTTP 503"), "{e}");
                refused += 1;
            }
        }
    }
    assert!(
        refused >= 4,
        "at most 3 per second (plus a second boundary): {refused} refused of 10"
    );
    assert!(
        s.metrics().await.value(
            "shardcast_connections_refused_total",
            &[("reason", "connect_rate")]
        ) >= refused as f64
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_from_the_token_rides_on_publications_and_tokens_never_reach_the_logs() {
    // A real process with debug logging, so that every log line can be read.
    let port = shardcast_testkit::ports::free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_shardcast"))
        .args([
            "--listen",
            &listen,
            "--token-hmac-secret",
            SECRET,
            "--client-publish",
            "subscribers",
        ])
        .env("RUST_LOG", "debug")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    support::eventually("the server to listen", PATIENCE, || async {
        match http::get(&format!("http://{listen}/healthz")).await.status {
            200 => Ok(()),
            s => Err(format!("{s}")),
        }
    })
    .await;
    let url = format!("ws://{listen}/ws");
    let t = token::connection(
        SECRET,
        "alice",
        Duration::from_secs(600),
        Some(json!({"name":"Alice"})),
        &[],
    );
    let mut a = Client::with_token(&url, &t).await;
    a.subscribe("room", 1).await;
    assert_eq!(a.publish("room", json!("hi"), 2).await["op"], "ok");
    let m = a.next_message().await;
    assert_eq!(m["info"], json!({"name":"Alice"}), "{m}");
    let bad = token::sign("wrong", &json!({"sub":"x","exp": token::now() + 60}));
    let _ = Client::try_connect(&url, &[("authorization", &format!("Bearer {bad}"))]).await;
    let (_c, _) = Client::connect_with_frame(&url, &bad, 1).await;
    drop(a);
    let _ = child.kill();
    let out = child.wait_with_output().expect("logs");
    let logs = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        logs.contains("shardcast listening"),
        "the logs were captured: {logs}"
    );
    for secret in [t.as_str(), bad.as_str(), SECRET] {
        let sig = secret.rsplit('.').next().unwrap_or(secret);
        assert!(
            !logs.contains(sig),
            "a token or secret in the logs:\n{logs}"
        );
    }
}
