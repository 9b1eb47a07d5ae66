//! `--broker redis-sentinel`: real `redis-server` and `redis-sentinel` processes
//! (a primary, two replicas, three sentinels, a password). The primary is
//! SIGKILLed under load: history channels lose nothing, the instances follow the
//! sentinels to the new primary, and the time to resume is printed (recorded in
//! docs/CLUSTER-OPS.md). Subscriptions can be held on a replica.

mod support;

use std::time::Duration;

use serde_json::json;
use shardcast_testkit::{SentinelSetup, Shardcast};
use support::cluster::on_sentinels;
use support::eventually;
use support::faults::{judge, side_by_side};
use tokio::time::{Instant, sleep};

const PASSWORD: &str = "sentinel-test-pw";

async fn setup() -> SentinelSetup {
    SentinelSetup::start(2, 3, Some(PASSWORD))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Waits until `inst` sees `primary` as the primary and holds every one of
/// `channels` on `node`.
async fn wait_following(inst: &Shardcast, primary: &str, node: &str, channels: &[String]) {
    eventually(
        "the instance on the new primary",
        Duration::from_secs(30),
        || async {
            let v = inst.cluster_view().await;
            if v["shards"][0]["primary"] != primary {
                return Err(format!("primary {}", v["shards"][0]["primary"]));
            }
            let held = inst.held().await;
            let on = held.get(node).cloned().unwrap_or_default();
            let missing: Vec<&String> = channels.iter().filter(|c| !on.contains(c)).collect();
            if missing.is_empty() {
                Ok(())
            } else {
                Err(format!("not yet on {node}: {missing:?} (held: {held:?})"))
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_primary_under_load_loses_no_history_and_instances_follow_the_sentinels() {
    let mut redis = setup().await;
    let old = redis.primary.addr();
    let run = on_sentinels(
        &redis.sentinel_list(),
        &["--redis-password", PASSWORD, "--history", "h:100000:600s"],
    );
    let a = run.start(&[]).await;
    let b = run.start(&[]).await;
    assert_eq!(a.cluster_view().await["broker"], "redis-sentinel");
    let hist: Vec<String> = (0..6).map(|i| format!("h:sent:{i}")).collect();
    let plain: Vec<String> = (0..6).map(|i| format!("p:sent:{i}")).collect();
    let all = [hist.clone(), plain.clone()].concat();
    let load = side_by_side(&a, &b, &hist, &plain).await;
    wait_following(&b, &old, &old, &all).await;
    sleep(Duration::from_secs(1)).await;

    let killed = Instant::now();
    redis.primary.kill();
    let new = redis.wait_failover(&old).await.expect("failover");
    let promoted = killed.elapsed();
    wait_following(&b, &new, &new, &all).await;
    let resubscribed = killed.elapsed();
    sleep(Duration::from_secs(3)).await;
    let report = load.finish().await;
    let publishing = report
        .first_ack_after(killed + Duration::from_millis(50))
        .map(|t| t - killed);
    println!(
        "sentinel failover: {old} killed; sentinels agreed on {new} after {promoted:?}; \
         subscriptions on it after {resubscribed:?}; first publish acknowledged after {publishing:?}"
    );
    judge("sentinel failover", &report, killed + resubscribed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_can_be_held_on_a_replica_the_sentinels_name() {
    let redis = setup().await;
    let run = on_sentinels(
        &redis.sentinel_list(),
        &["--redis-password", PASSWORD, "--subscribe-from", "replica"],
    );
    let a = run.start(&[]).await;
    let b = run.start(&[]).await;
    let replicas: Vec<String> = redis.replicas.iter().map(|r| r.addr()).collect();
    let mut s = a.client("s").await;
    s.subscribe("ticker", 1).await;
    eventually(
        "the subscription on a replica",
        Duration::from_secs(20),
        || async {
            let held = a.held().await;
            match held
                .iter()
                .find(|(_, chs)| chs.iter().any(|c| c == "ticker"))
            {
                Some((node, _)) if replicas.contains(node) => Ok(()),
                other => Err(format!("held on {other:?}, replicas {replicas:?}")),
            }
        },
    )
    .await;
    let mut p = b.client("p").await;
    assert_eq!(p.publish("ticker", json!({"n": 1}), 1).await["op"], "ok");
    assert_eq!(s.next_message().await["data"]["n"], 1);
}
