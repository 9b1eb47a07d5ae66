//! History channels on a real Redis Cluster: offsets, resume, and zero loss through
//! slot migration and failover, side by side with plain channels that show the
//! loss history closes.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::json;
use support::cluster::{Instance, RedisCluster, channels_on, wait_held_on_owners};
use support::load::{Load, Report};
use tokio::time::{Instant, sleep};

const HISTORY: &[&str] = &["--history", "h:100000:600s"];

/// One subscriber on `sub` to both sets; one publisher per set on `publ`.
async fn side_by_side(publ: &Instance, sub: &Instance, hist: &[String], plain: &[String]) -> Load {
    let mut load = Load::new();
    load.subscriber(sub.addr, "s", &[hist, plain].concat())
        .await;
    load.publisher(publ.addr, "ph", hist.to_vec(), Duration::from_millis(4))
        .await;
    load.publisher(publ.addr, "pp", plain.to_vec(), Duration::from_millis(4))
        .await;
    load
}

/// History channels: nothing lost, repeated, reordered or skipped. Plain channels:
/// no repeats or disorder; their loss is printed, to show the difference.
fn judge(what: &str, report: &Report, min_history: usize) {
    let h = report.outcome(|_, c| c.starts_with("h:"), None);
    let p = report.outcome(|_, c| c.starts_with("p:"), None);
    println!("{what}: history {h:?}\n{what}: plain {p:?}");
    assert!(h.expected > min_history, "{h:?}");
    assert_eq!(
        (h.lost, h.duplicated, h.out_of_order, h.offset_gaps),
        (0, 0, 0, 0),
        "history channels: {h:?}"
    );
    assert_eq!(
        (p.duplicated, p.out_of_order),
        (0, 0),
        "plain channels: {p:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_channels_lose_nothing_through_slot_migration_plain_ones_do() {
    let cluster = RedisCluster::start(3, 1).await;
    let seeds = cluster.seeds();
    let a = Instance::start(&seeds, HISTORY).await;
    let b = Instance::start(&seeds, HISTORY).await;
    let prim = cluster.primaries();
    let hist = channels_on(&cluster, prim[0], "h:mig", 6);
    let plain = channels_on(&cluster, prim[0], "p:mig", 6);
    let load = side_by_side(&a, &b, &hist, &plain).await;
    sleep(Duration::from_secs(1)).await;
    let slots: BTreeSet<u16> = hist
        .iter()
        .chain(&plain)
        .map(|c| shardcast::slot::key_slot(c.as_bytes()))
        .collect();
    for s in slots {
        cluster.move_slot(s, prim[1]).await;
    }
    cluster.wait_agree().await;
    wait_held_on_owners(&cluster, &[&b], &[hist.clone(), plain.clone()].concat()).await;
    sleep(Duration::from_secs(2)).await;
    let report = load.finish().await;
    judge("slot migration", &report, 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_channels_lose_nothing_through_failover_plain_ones_do() {
    let mut cluster = RedisCluster::start(3, 1).await;
    let seeds = cluster.seeds();
    let a = Instance::start(&seeds, HISTORY).await;
    let b = Instance::start(&seeds, HISTORY).await;
    let victim = cluster.primaries()[1];
    let hist = channels_on(&cluster, victim, "h:fo", 6);
    let plain = channels_on(&cluster, victim, "p:fo", 6);
    let load = side_by_side(&a, &b, &hist, &plain).await;
    sleep(Duration::from_secs(1)).await;
    let killed = Instant::now();
    cluster.kill(victim).await;
    cluster.wait_replaced(victim).await;
    wait_held_on_owners(&cluster, &[&b], &[hist.clone(), plain.clone()].concat()).await;
    let resubscribed = killed.elapsed();
    sleep(Duration::from_secs(2)).await;
    let report = load.finish().await;
    println!("failover: resubscribed after {resubscribed:?}");
    judge("failover", &report, 150);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_stay_gapless_with_concurrent_publishers_on_several_instances() {
    let cluster = RedisCluster::start(3, 0).await;
    let seeds = cluster.seeds();
    let instances = [
        Instance::start(&seeds, HISTORY).await,
        Instance::start(&seeds, HISTORY).await,
        Instance::start(&seeds, HISTORY).await,
    ];
    let channels = vec!["h:shared".to_string()];
    let addrs: Vec<_> = instances.iter().map(|i| i.addr).collect();
    let report = Load::all_to_all(
        &addrs,
        &channels,
        1,
        Duration::from_millis(3),
        Duration::from_secs(3),
    )
    .await;
    let o = report.outcome(|_, _| true, None);
    println!("concurrent publishers: {o:?}");
    assert_eq!((o.lost, o.duplicated, o.offset_gaps), (0, 0, 0), "{o:?}");
    // Every subscriber saw offsets 1..=N, N being the number of acknowledged publishes.
    let acked: usize = report.acked.values().map(Vec::len).sum();
    for (sub, got) in &report.received {
        let offsets: Vec<u64> = got.iter().filter_map(|d| d.offset).collect();
        assert_eq!(offsets, (1..=acked as u64).collect::<Vec<_>>(), "{sub}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_after_reconnect_and_idempotent_publish_on_the_cluster() {
    let cluster = RedisCluster::start(3, 1).await;
    let seeds = cluster.seeds();
    let a = Instance::start(&seeds, HISTORY).await;
    let b = Instance::start(&seeds, HISTORY).await;
    let mut p = a.client("p").await;
    let mut s = b.client("s").await;
    let ok = s.subscribe("h:{room}:1", 1).await;
    assert_eq!(ok["offset"], 0);
    for i in 0..10 {
        assert_eq!(p.publish("h:{room}:1", json!(i), 100 + i).await["op"], "ok");
    }
    let mut last = 0;
    for _ in 0..10 {
        last = s.next_message().await["offset"].as_u64().unwrap();
    }
    let epoch = b.client("probe").await.subscribe("h:{room}:1", 2).await["epoch"]
        .as_str()
        .unwrap()
        .to_string();
    drop(s);
    for i in 10..110 {
        assert_eq!(p.publish("h:{room}:1", json!(i), 100 + i).await["op"], "ok");
    }
    // Reconnect to the other instance, resume from the last offset seen, while
    // publications keep coming: the replay and the live ones meet without a gap or
    // a repeat.
    let mut s = a.client("s").await;
    let live = tokio::spawn(async move {
        for i in 110..150u64 {
            assert_eq!(p.publish("h:{room}:1", json!(i), 100 + i).await["op"], "ok");
        }
        p
    });
    let ok = s
        .request(
            json!({"op":"subscribe","channel":"h:{room}:1","since":{"offset":last,"epoch":epoch}}),
            3,
        )
        .await;
    assert_eq!(ok["recovered"].as_bool(), Some(true), "{ok}");
    let mut p = live.await.unwrap();
    for want in 11..=150u64 {
        let m = s.next_message().await;
        assert_eq!(
            (m["offset"].as_u64(), m["data"].as_u64()),
            (Some(want), Some(want - 1)),
            "{m}"
        );
        assert_eq!(
            m["epoch"].as_str(),
            Some(epoch.as_str()),
            "messages carry the epoch"
        );
    }
    // Idempotent publish retried through both instances: stored once.
    let mut q = b.client("q").await;
    let frame =
        json!({"op":"publish","channel":"h:{room}:1","data":"once","idempotency_key":"abc"});
    let r1 = p.request(frame.clone(), 500).await;
    let r2 = q.request(frame, 501).await;
    assert_eq!(
        (r1["offset"].as_u64(), r2["offset"].as_u64()),
        (Some(151), Some(151)),
        "{r1} {r2}"
    );
    assert_eq!(s.next_message().await["data"], "once");
    s.expect_silence(Duration::from_millis(500)).await;
    let (status, body) = a
        .get("/api/history?channel=h:%7Broom%7D:1&since=145&limit=100")
        .await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["publications"].as_array().map(Vec::len), Some(6), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trimmed_expired_or_foreign_epoch_history_is_not_recovered_on_the_cluster() {
    let cluster = RedisCluster::start(3, 0).await;
    let inst = Instance::start(&cluster.seeds(), &["--history", "t:10:2s"]).await;
    let mut p = inst.client("p").await;
    let mut last = serde_json::Value::Null;
    for i in 0..30u64 {
        last = p.publish("t:x", json!(i), i).await;
        assert_eq!(last["op"], "ok", "{last}");
    }
    assert_eq!(last["offset"], 30);
    let epoch = last["epoch"].as_str().expect("epoch").to_string();
    let resume = |offset: u64, epoch: &str| json!({"op":"subscribe","channel":"t:x","since":{"offset":offset,"epoch":epoch}});
    let mut s = inst.client("s").await;
    // Only the last 10 are kept: 5 is out of reach, 20 is not.
    let ok = s.request(resume(5, &epoch), 1).await;
    assert_eq!(ok["recovered"], false, "{ok}");
    s.request(json!({"op":"unsubscribe","channel":"t:x"}), 2)
        .await;
    let ok = s.request(resume(20, &epoch), 3).await;
    assert_eq!(ok["recovered"], true, "{ok}");
    for want in 21..=30u64 {
        assert_eq!(s.next_message().await["offset"].as_u64(), Some(want));
    }
    s.request(json!({"op":"unsubscribe","channel":"t:x"}), 4)
        .await;
    let ok = s.request(resume(29, "0123abcd"), 5).await;
    assert_eq!(ok["recovered"], false, "another epoch: {ok}");
    s.request(json!({"op":"unsubscribe","channel":"t:x"}), 6)
        .await;
    // After the TTL the keys expire in Redis: a new epoch from offset 1.
    sleep(Duration::from_millis(2500)).await;
    let r = p.publish("t:x", json!("fresh"), 100).await;
    assert_eq!(r["offset"], 1, "{r}");
    assert_ne!(r["epoch"].as_str(), Some(epoch.as_str()));
    let ok = s.request(resume(30, &epoch), 7).await;
    assert_eq!(ok["recovered"], false, "expired: {ok}");
}
