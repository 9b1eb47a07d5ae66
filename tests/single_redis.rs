//! `--broker redis`: instances sharing one real `redis-server` (a password, AOF,
//! TLS where the test says): fan-out, history resume, presence and the registry
//! across instances with one subscriber connection each; zero loss for history
//! channels through a Redis crash and restart (plain channels' loss printed);
//! what an instance does while Redis is down (publishes `unavailable`, subscribes
//! pending, `/readyz` 503, the metrics) and that everything returns with it.

mod support;

use std::time::Duration;

use serde_json::json;
use shardcast_testkit::RedisServer;
use shardcast_testkit::server::TlsFiles;
use support::cluster::on_redis;
use support::faults::{judge, side_by_side};
use support::{Client, ConfigFile, eventually};
use tokio::time::{Instant, sleep};

const PASSWORD: &str = "single-redis-pw";
const NAMESPACES: &str = r#"
[namespaces.room]
presence = true
join_leave = true
"#;

async fn redis(builder: shardcast_testkit::server::RedisServerBuilder) -> RedisServer {
    builder.start().await.unwrap_or_else(|e| panic!("{e}"))
}

/// How many subscriber connections of shardcast instances Redis sees.
async fn subscriber_connections(redis: &RedisServer) -> usize {
    let list: String = redis
        .query(redis::cmd("CLIENT").arg("LIST"))
        .await
        .expect("CLIENT LIST");
    list.lines()
        .filter(|l| l.contains("name=shardcast-sub-"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_on_one_redis_share_fan_out_history_presence_and_the_registry() {
    let redis = redis(RedisServer::builder().password(PASSWORD)).await;
    let file = ConfigFile::new(NAMESPACES);
    // The password from the flag; the URL has none.
    let url = format!("redis://{}/0", redis.addr());
    let run = on_redis(
        &url,
        &[
            "--redis-password",
            PASSWORD,
            "--config",
            file.path(),
            "--history",
            "h:1000:600s",
        ],
    );
    let a = run.start(&[]).await;
    let b = run.start(&[]).await;
    let view = a.cluster_view().await;
    assert_eq!(view["broker"], "redis", "{view}");
    assert_eq!(
        view["shards"][0]["primary"],
        redis.addr().as_str(),
        "{view}"
    );

    // Fan-out across instances, on several channels.
    let mut alice = a.client("alice").await;
    let mut bob = b.client("bob").await;
    for (i, ch) in ["news", "sports", "weather"].iter().enumerate() {
        alice.subscribe(ch, i as u64 + 1).await;
    }
    for (i, ch) in ["news", "sports", "weather"].iter().enumerate() {
        let r = bob.publish(ch, json!({"n": i}), 10 + i as u64).await;
        assert_eq!(r["op"], "ok", "{r}");
        let m = alice.next_message().await;
        assert_eq!(
            (m["channel"].as_str(), m["data"]["n"].as_u64()),
            (Some(*ch), Some(i as u64)),
            "{m}"
        );
    }

    // History: five publications from b; a client on a resumes after the second.
    let mut epoch = None;
    for n in 1..=5u64 {
        let r = bob.publish("h:log", json!({"n": n}), 20 + n).await;
        assert_eq!(r["offset"].as_u64(), Some(n), "{r}");
        epoch = r["epoch"].as_str().map(String::from);
    }
    let mut carol = a.client("carol").await;
    let ok = carol
        .request(
            json!({"op":"subscribe","channel":"h:log","since":{"offset":2,"epoch":epoch}}),
            1,
        )
        .await;
    assert_eq!(
        (ok["op"].as_str(), ok["recovered"].as_bool()),
        (Some("ok"), Some(true)),
        "{ok}"
    );
    for want in 3..=5u64 {
        let m = carol.next_message().await;
        assert_eq!(
            (m["offset"].as_u64(), m["data"]["n"].as_u64()),
            (Some(want), Some(want)),
            "{m}"
        );
    }

    // Presence: members and joins seen from both instances.
    alice.subscribe("room:1", 30).await;
    bob.subscribe("room:1", 30).await;
    let join = alice.next_op("join").await;
    let join = if join["user"] == "alice" {
        alice.next_op("join").await
    } else {
        join
    };
    assert_eq!(join["user"], "bob", "{join}");
    let r = bob
        .request(json!({"op":"presence","channel":"room:1"}), 31)
        .await;
    let mut users: Vec<&str> = r["clients"]
        .as_array()
        .map(|a| a.iter().filter_map(|m| m["user"].as_str()).collect())
        .unwrap_or_default();
    users.sort_unstable();
    assert_eq!(users, vec!["alice", "bob"], "{r}");

    // The registry lists both instances.
    let r = a.get("/api/instances").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.json()["instances"].as_array().map(Vec::len),
        Some(2),
        "{}",
        r.body
    );

    // One subscriber connection per instance, however many channels.
    assert_eq!(subscriber_connections(&redis).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_channels_lose_nothing_through_a_redis_crash_and_restart() {
    // appendfsync always: what Redis acknowledged is on disk before the crash.
    let mut redis = redis(RedisServer::builder().aof()).await;
    let run = on_redis(&redis.url(), &["--history", "h:100000:600s"]);
    let a = run.start(&[]).await;
    let b = run.start(&[]).await;
    let hist: Vec<String> = (0..6).map(|i| format!("h:restart:{i}")).collect();
    let plain: Vec<String> = (0..6).map(|i| format!("p:restart:{i}")).collect();
    let load = side_by_side(&a, &b, &hist, &plain).await;
    sleep(Duration::from_secs(1)).await;
    let crashed = Instant::now();
    redis.kill();
    sleep(Duration::from_secs(1)).await;
    redis.restart().await.expect("restart");
    // Until the instances are back: their subscriptions, then traffic.
    for inst in [&a, &b] {
        eventually(
            "the instance ready again",
            Duration::from_secs(30),
            || async {
                match inst.get("/readyz").await.status {
                    200 => Ok(()),
                    s => Err(format!("/readyz {s}")),
                }
            },
        )
        .await;
    }
    let back = crashed.elapsed();
    sleep(Duration::from_secs(3)).await;
    let report = load.finish().await;
    println!("redis restart: instances ready {back:?} after the crash");
    judge("redis restart", &report, crashed + back);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_redis_is_down_publishes_fail_unavailable_readyz_is_503_and_everything_returns() {
    let mut redis = redis(RedisServer::builder()).await;
    let run = on_redis(&redis.url(), &[]);
    let a = run.start(&[]).await;
    let mut sub = a.client("sub").await;
    sub.subscribe("live", 1).await;
    let mut publ = a.client("pub").await;
    assert_eq!(publ.publish("live", json!({"n": 0}), 1).await["op"], "ok");
    assert_eq!(sub.next_message().await["data"]["n"], 0);
    let before = a.metrics().await;

    redis.kill();
    eventually(
        "/readyz 503 with Redis down",
        Duration::from_secs(15),
        || async {
            match a.get("/readyz").await.status {
                503 => Ok(()),
                s => Err(format!("/readyz {s}")),
            }
        },
    )
    .await;
    let r = publ.publish("live", json!({"n": 1}), 2).await;
    assert_eq!(
        (r["op"].as_str(), r["code"].as_str()),
        (Some("error"), Some("unavailable")),
        "{r}"
    );
    let http = a
        .request(
            "POST",
            "/api/publish",
            &[],
            Some(r#"{"channel":"live","data":{"n":2}}"#),
        )
        .await;
    assert_eq!(http.status, 503, "{}", http.body);
    assert_eq!(http.json()["error"]["code"], "unavailable", "{}", http.body);
    let down = a.metrics().await;
    assert_eq!(down.get("shardcast_redis_up", &[]), Some(0.0));
    assert!(
        down.value("shardcast_broker_publish_errors_total", &[])
            - before.value("shardcast_broker_publish_errors_total", &[])
            >= 2.0,
        "publish failures counted"
    );
    assert!(
        down.value("shardcast_errors_total", &[("code", "unavailable")])
            - before.value("shardcast_errors_total", &[("code", "unavailable")])
            >= 1.0,
        "unavailable answers counted"
    );

    // A connection and a subscribe made while Redis is down wait (`connected` comes
    // once the personal channel is subscribed); Redis returns within the wait.
    let (joined, restarted) = tokio::join!(
        async {
            let mut late = a.client("late").await;
            let ok = late.subscribe("later", 1).await;
            (late, ok)
        },
        async {
            sleep(Duration::from_secs(1)).await;
            redis.restart().await
        }
    );
    let (mut late, ok) = joined;
    restarted.expect("restart");
    assert_eq!(ok["op"], "ok", "{ok}");
    eventually(
        "/readyz 200 with Redis back",
        Duration::from_secs(15),
        || async {
            match a.get("/readyz").await.status {
                200 => Ok(()),
                s => Err(format!("/readyz {s}")),
            }
        },
    )
    .await;
    // The subscription from before the outage is live again, the late one too.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = publ.publish("live", json!({"n": 3}), 3).await;
        if r["op"] == "ok" {
            break;
        }
        assert!(Instant::now() < deadline, "publishing never recovered: {r}");
        sleep(Duration::from_millis(200)).await;
    }
    let m = sub.next_message().await;
    assert_eq!(m["data"]["n"], 3, "{m}");
    assert_eq!(publ.publish("later", json!({"n": 4}), 4).await["op"], "ok");
    assert_eq!(late.next_message().await["data"]["n"], 4);
    assert_eq!(a.metrics().await.get("shardcast_redis_up", &[]), Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_keeps_the_instance_unready_and_clients_are_told_to_try_later() {
    let redis = redis(RedisServer::builder().password(PASSWORD)).await;
    let url = format!("redis://:not-the-password@{}/0", redis.addr());
    let a = on_redis(&url, &[]).spawn(&[]).await;
    sleep(Duration::from_secs(1)).await;
    let r = a.get("/readyz").await;
    assert_eq!(r.status, 503, "{}", r.body);
    // The session cannot be set up (its personal channel): no `connected`, but
    // 1013, try again later.
    let mut c = Client::try_connect(&a.ws_url("?user=c"), &[])
        .await
        .expect("the upgrade itself is accepted");
    assert_eq!(c.expect_close(Duration::from_secs(10)).await, Some(1013));
    assert_eq!(subscriber_connections(&redis).await, 0);
}

fn tls_files() -> TlsFiles {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls");
    TlsFiles {
        cert: dir.join("server.crt"),
        key: dir.join("server.key"),
        ca: dir.join("ca.crt"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_the_operators_ca_carries_everything_and_an_unknown_ca_is_refused() {
    let files = tls_files();
    let redis = redis(RedisServer::builder().tls(files.clone()).password(PASSWORD)).await;
    assert!(redis.url().starts_with("rediss://"));
    let ca = files.ca.to_string_lossy().to_string();
    let run = on_redis(
        &redis.url(),
        &["--redis-ca-cert", &ca, "--history", "h:100:60s"],
    );
    let a = run.start(&[]).await;
    let b = run.start(&[]).await;
    assert_eq!(a.cluster_view().await["tls"], true);
    let mut s = a.client("s").await;
    s.subscribe("h:tls", 1).await;
    s.subscribe("plain", 2).await;
    let mut p = b.client("p").await;
    assert_eq!(p.publish("h:tls", json!({"n": 1}), 1).await["offset"], 1);
    assert_eq!(p.publish("plain", json!({"n": 2}), 2).await["op"], "ok");
    let m = s.next_message().await;
    assert_eq!(
        (m["channel"].as_str(), m["offset"].as_u64()),
        (Some("h:tls"), Some(1)),
        "{m}"
    );
    assert_eq!(s.next_message().await["data"]["n"], 2);
    // The plain publish went over b's publishing connection, through TLS too, not
    // through the data connection it falls back to.
    assert_eq!(
        b.metrics()
            .await
            .get("shardcast_redis_publish_retries_total", &[]),
        Some(0.0)
    );

    // A certificate from a CA the instance was not told to trust: never ready.
    let other = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tls/other-ca.crt")
        .to_string_lossy()
        .to_string();
    let wrong = on_redis(&redis.url(), &["--redis-ca-cert", &other])
        .spawn(&[])
        .await;
    sleep(Duration::from_secs(1)).await;
    assert_eq!(wrong.get("/readyz").await.status, 503);
}
