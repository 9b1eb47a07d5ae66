//! The testkit's own guarantees, on real containers: each operation returns with a
//! cluster whose nodes agree on the slot map (the check is `wait_settled`, run
//! again here independently of the operation), and a failure is a clear error.

use std::time::Duration;

use shardcast_testkit::admin;
use shardcast_testkit::{ClusterError, RedisCluster, key_slot};

async fn agrees(cluster: &RedisCluster) {
    cluster
        .wait_settled()
        .await
        .unwrap_or_else(|e| panic!("the cluster does not agree: {e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_leaves_a_cluster_that_agrees_on_the_slot_map() {
    let mut cluster = RedisCluster::builder()
        .primaries(3)
        .replicas_per_primary(1)
        .start()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    agrees(&cluster).await;
    let primaries = cluster.primaries().await.expect("primaries");
    assert_eq!(primaries.len(), 3);
    for p in &primaries {
        assert_eq!(
            cluster.replicas_of(*p).await.expect("replicas").len(),
            1,
            "{p}"
        );
    }

    // migrate_slot moves the slot and its keys.
    let key = "{testkit}:k";
    let slot = key_slot(key);
    let from = cluster.owner_of(slot).await.expect("owner");
    let to = *primaries
        .iter()
        .find(|p| **p != from)
        .expect("another primary");
    let _: () = admin::query(
        &format!("127.0.0.1:{from}"),
        redis::cmd("SET").arg(key).arg("v"),
    )
    .await
    .expect("SET");
    cluster.migrate_slot(slot, to).await.expect("migrate");
    assert_eq!(cluster.owner_of(slot).await.expect("owner"), to);
    let v: Option<String> = admin::query(&format!("127.0.0.1:{to}"), redis::cmd("GET").arg(key))
        .await
        .expect("GET on the new owner");
    assert_eq!(v.as_deref(), Some("v"), "the key moved with its slot");
    agrees(&cluster).await;

    // failover: a replica takes over gracefully.
    let replica = cluster.replicas_of(to).await.expect("replicas")[0];
    cluster.failover(replica).await.expect("failover");
    assert_eq!(cluster.owner_of(slot).await.expect("owner"), replica);
    agrees(&cluster).await;

    // pause / unpause a primary (shorter than the node timeout: no failover).
    let paused = cluster.primaries().await.expect("primaries")[0];
    cluster.pause(paused).await.expect("pause");
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.unpause(paused).await.expect("unpause");
    agrees(&cluster).await;

    // kill_primary_of: returns once a replica serves the slot everywhere.
    let killed = cluster.kill_primary_of(slot).await.expect("kill");
    assert_eq!(killed, replica);
    let now = cluster.owner_of(slot).await.expect("owner");
    assert_ne!(now, killed);
    agrees(&cluster).await;

    // add_shard / remove_shard.
    let added = cluster.add_shard().await.expect("add a shard");
    assert_eq!(cluster.primaries().await.expect("primaries").len(), 4);
    assert_eq!(cluster.replicas_of(added).await.expect("replicas").len(), 1);
    let view = cluster.view().await.expect("view");
    let served = view
        .owners()
        .values()
        .filter(|o| o.ends_with(&format!(":{added}")))
        .count();
    assert!(
        served >= 4000,
        "the new shard got its share: {served} slots"
    );
    agrees(&cluster).await;
    cluster.remove_shard(added).await.expect("remove the shard");
    assert_eq!(cluster.primaries().await.expect("primaries").len(), 3);
    let view = cluster.view().await.expect("view");
    assert!(
        view.lines.iter().all(|l| l.port != added),
        "the removed node is forgotten"
    );
    agrees(&cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_image_is_a_clear_error_not_a_hang() {
    let started = std::time::Instant::now();
    let r = RedisCluster::builder()
        .image("shardcast-testkit/no-such-image:never")
        .start()
        .await;
    match r {
        Err(ClusterError::Container { image, reason }) => {
            assert_eq!(image, "shardcast-testkit/no-such-image:never");
            assert!(!reason.is_empty());
        }
        Err(other) => panic!("another error: {other}"),
        Ok(_) => panic!("a cluster from an image that does not exist"),
    }
    println!("missing image refused after {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fewer_than_three_primaries_are_refused() {
    let r = RedisCluster::builder().primaries(2).start().await;
    assert!(matches!(r, Err(ClusterError::Usage(_))), "{:?}", r.err());
}

/// The connection pool outlives nodes: a node restarted on the same port (as a new
/// cluster reusing an earlier one's ports is) must be reached on a fresh
/// connection, not reported as a broken pipe. Needs `redis-server` on PATH.
#[tokio::test]
async fn a_node_restarted_on_the_same_port_is_reached_on_a_fresh_connection() {
    let port = shardcast_testkit::ports::free_port();
    let addr = format!("127.0.0.1:{port}");
    // Killed when dropped, so a failing assertion leaves no server behind.
    struct Node(std::process::Child);
    impl Drop for Node {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let start = || {
        Node(
            std::process::Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("redis-server must be on PATH (apt-get install -y redis-server)"),
        )
    };
    let ping = || async { admin::query::<String>(&addr, &redis::cmd("PING")).await };
    let first = start();
    shardcast_testkit::eventually(
        "the first node to answer",
        Duration::from_secs(10),
        || async { ping().await.map_err(|e| e.to_string()) },
    )
    .await;
    drop(first);
    let _second = start();
    // Until the new node listens, connecting is refused; once it does, the pooled
    // connection (to the dead node) must not be what answers.
    shardcast_testkit::eventually(
        "the second node to listen",
        Duration::from_secs(10),
        || async {
            tokio::net::TcpStream::connect(&addr)
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        },
    )
    .await;
    assert_eq!(
        ping()
            .await
            .expect("a fresh connection to the restarted node"),
        "PONG"
    );
}
