//! The order service end to end: 3 shardcast instances on a Redis Cluster, a
//! browser-like subscriber on one instance, the service publishing through another,
//! and the primary that owns the order's channel killed in the middle. Every status
//! change the service acknowledged reaches the subscriber once, in order.
//!
//! Needs Docker and a Redis 7 image (`SHARDCAST_TEST_REDIS_IMAGE`, default
//! `redis:7.0`), and the shardcast binary (`SHARDCAST_BIN`, default the workspace's
//! `target/debug/shardcast`).

use std::path::PathBuf;
use std::time::Duration;

use orders_app::Shardcast as Target;
use shardcast_testkit::{Client, RedisCluster, Shardcast, http};

fn shardcast_bin() -> PathBuf {
    std::env::var_os("SHARDCAST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/debug/shardcast")
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_status_change_reaches_the_subscriber_once_in_order_through_a_failover() {
    let bin = shardcast_bin();
    assert!(
        bin.exists(),
        "shardcast binary not found at {} (set SHARDCAST_BIN)",
        bin.display()
    );
    let mut cluster = RedisCluster::builder()
        .primaries(3)
        .replicas_per_primary(1)
        .start()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let run = Shardcast::on_cluster(&bin, &cluster.seeds()).args([
        "--insecure",
        "--history",
        "orders:1000:600s",
    ]);
    let instances = [
        run.start(&[]).await,
        run.start(&[]).await,
        run.start(&[]).await,
    ];

    // The service publishes through instance 0.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let app = listener.local_addr().expect("addr");
    tokio::spawn(orders_app::serve(
        listener,
        Target {
            addr: instances[0].addr,
            api_key: None,
        },
    ));

    // A subscriber on instance 2 watches order 42.
    let mut watcher = Client::connect(&instances[2].ws_url("?user=watcher")).await;
    watcher.subscribe("orders:42", 1).await;

    // Status changes, each retried with the same change id until accepted.
    let post = |n: u64| async move {
        let body = format!(r#"{{"status":"step-{n}","change_id":"c{n}"}}"#);
        for _ in 0..100 {
            let r = http::post(&format!("http://{app}/orders/42/status"), &body).await;
            if r.status == 200 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("change {n} never accepted");
    };
    for n in 0..20 {
        post(n).await;
    }
    cluster
        .kill_primary_of("orders:42")
        .await
        .expect("fail over");
    for n in 20..40 {
        post(n).await;
    }

    let mut seen = Vec::new();
    while seen.len() < 40 {
        let m = watcher.next_message().await;
        seen.push(m["data"]["status"].as_str().unwrap_or("?").to_string());
    }
    let want: Vec<String> = (0..40).map(|n| format!("step-{n}")).collect();
    assert_eq!(seen, want, "every change once, in order");
    watcher.expect_silence(Duration::from_millis(500)).await;
}
