//! History channels on a real Redis Cluster: offsets, resume, and zero loss through
//! slot migration and failover, side by side with plain channels, whose loss is
//! printed (plain pub/sub makes no promise there).

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::json;
use shardcast_testkit::Shardcast;
use support::cluster::{cluster, instances, key_slot, load_on_each, wait_held_on_owners};
use support::faults::{judge, side_by_side};
use tokio::time::{Instant, sleep};

const HISTORY: &[&str] = &["--history", "h:100000:600s"];
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_channels_lose_nothing_through_slot_migration() {
    let cluster = cluster(1).await;
    let run = instances(&cluster, HISTORY);
    let a = run.start(&[]).await;
    let b = run.start(&[]).await;
    let prim = cluster.primaries().await.expect("primaries");
    let hist = cluster
        .channels_on(prim[0], "h:mig", 6)
        .await
        .expect("channels");
    let plain = cluster
        .channels_on(prim[0], "p:mig", 6)
        .await
        .expect("channels");
    let load = side_by_side(&a, &b, &hist, &plain).await;
    sleep(Duration::from_secs(1)).await;
    let moved = Instant::now();
    let slots: BTreeSet<u16> = hist.iter().chain(&plain).map(|c| key_slot(c)).collect();
    for s in slots {
        cluster.migrate_slot(s, prim[1]).await.expect("migrate");
    }
    wait_held_on_owners(&cluster, &[&b], &[hist.clone(), plain.clone()].concat()).await;
    sleep(Duration::from_secs(2)).await;
    judge("slot migration", &load.finish().await, moved);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_channels_lose_nothing_through_failover() {
    let mut cluster = cluster(1).await;
    let run = instances(&cluster, HISTORY);
    let a = run.start(&[]).await;
    let b = run.start(&[]).await;
    let victim = cluster.primaries().await.expect("primaries")[1];
    let hist = cluster
        .channels_on(victim, "h:fo", 6)
        .await
        .expect("channels");
    let plain = cluster
        .channels_on(victim, "p:fo", 6)
        .await
        .expect("channels");
    // Not part of the load: tells when `a` publishes to the shard again.
    let probe = cluster
        .channels_on(victim, "h:probe", 1)
        .await
        .expect("channels");
    let load = side_by_side(&a, &b, &hist, &plain).await;
    sleep(Duration::from_secs(1)).await;
    let killed = Instant::now();
    cluster.kill_primary_of(&hist[0]).await.expect("failover");
    wait_held_on_owners(&cluster, &[&b], &[hist.clone(), plain.clone()].concat()).await;
    let resubscribed = killed.elapsed();
    // The publishers are on `a`, whose own route to the new primary recovers on
    // its own schedule (redis-rs refreshes its slots after its requests to the dead
    // node fail): the traffic judged "after the event" starts once a history
    // publish through `a` to the failed-over shard is answered again, not at a
    // fixed time after `b` resubscribed (which made the 200-publication check
    // fail whenever `a` recovered later than `b`).
    shardcast_testkit::eventually(
        "a history publish through `a` answered again",
        Duration::from_secs(30),
        || publish_over_http(&a, &probe[0]),
    )
    .await;
    let recovered = killed.elapsed();
    sleep(Duration::from_secs(2)).await;
    let report = load.finish().await;
    println!(
        "failover: resubscribed after {resubscribed:?}, publishing through `a` again after {recovered:?}"
    );
    judge("failover", &report, killed + recovered);
}

/// One `POST /api/publish` to `channel` through `inst`: `Err` unless answered 200.
async fn publish_over_http(inst: &Shardcast, channel: &str) -> Result<(), String> {
    let body = format!(r#"{{"channel":"{channel}","data":1}}"#);
    let json = [("content-type", "application/json")];
    let r = inst
        .request("POST", "/api/publish", &json, Some(&body))
        .await;
    match r.status {
        200 => Ok(()),
        s => Err(format!("{s} {}", r.body)),
    }
}

/// History publishes through `inst`, one at a time: whether all `n` were
/// acknowledged and each was confirmed by a replica (WAIT answered in time).
async fn publish_replicated(inst: &Shardcast, channel: &str, n: usize) -> Result<(), String> {
    const UNREPLICATED: &str = "shardcast_history_unreplicated_total";
    let before = inst.metrics().await.get(UNREPLICATED, &[]).unwrap_or(0.0);
    for i in 0..n {
        publish_over_http(inst, channel)
            .await
            .map_err(|e| format!("publish {i}: {e}"))?;
    }
    let after = inst.metrics().await.get(UNREPLICATED, &[]).unwrap_or(0.0);
    if after > before {
        return Err(format!(
            "{} of {n} history publishes waited for a replica in vain",
            after - before
        ));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_that_only_publishes_stops_waiting_for_a_replica_promoted_in_a_failover() {
    let mut cluster = cluster(1).await;
    // No periodic refresh and no subscriptions: only what publishing itself
    // tells the instance can bring its slot map up to date.
    let a = instances(&cluster, HISTORY)
        .start(&["--topology-interval", "600s"])
        .await;
    let victim = cluster.primaries().await.expect("primaries")[1];
    let channel = cluster
        .channels_on(victim, "h:solo", 1)
        .await
        .expect("channels")
        .remove(0);
    publish_replicated(&a, &channel, 5)
        .await
        .expect("before the failover, a replica confirms each publish");
    cluster.kill_primary_of(&channel).await.expect("failover");
    // The shard has no replica left: once the instance has noticed, a history
    // publish is answered without waiting for one. Before, its map kept listing
    // the promoted replica and each publish waited out WAIT's timeout, holding up
    // every command behind it on that shard's connection.
    shardcast_testkit::eventually(
        "history publishes that no longer wait for the promoted replica",
        Duration::from_secs(15),
        || publish_replicated(&a, &channel, 10),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_stay_gapless_with_concurrent_publishers_on_several_instances() {
    let cluster = cluster(0).await;
    let run = instances(&cluster, HISTORY);
    let insts = [
        run.start(&[]).await,
        run.start(&[]).await,
        run.start(&[]).await,
    ];
    let channels = vec!["h:shared".to_string()];
    let load = load_on_each(&insts, 1, 1, &channels, Duration::from_millis(3)).await;
    sleep(Duration::from_secs(3)).await;
    let report = load.finish().await;
    let o = report.outcome(|_| true, None);
    println!("concurrent publishers: {o:?}");
    let acked: usize = report.published.values().map(|p| p.acked.len()).sum();
    assert!(acked >= 300, "three publishers for 3 s: {acked}");
    assert_eq!(
        (o.lost, o.duplicated, o.offset_gaps, o.missing_offsets),
        (0, 0, 0, 0),
        "{o:?}"
    );
    // Every subscriber saw offsets 1..=N, N being the number of acknowledged publishes.
    for (sub, got) in &report.received {
        let offsets: Vec<u64> = got.deliveries.iter().filter_map(|d| d.offset).collect();
        assert_eq!(offsets, (1..=acked as u64).collect::<Vec<_>>(), "{sub}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_after_reconnect_and_idempotent_publish_on_the_cluster() {
    let cluster = cluster(1).await;
    let run = instances(&cluster, HISTORY);
    let a = run.start(&[]).await;
    let b = run.start(&[]).await;
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
    let r = a
        .get("/api/history?channel=h:%7Broom%7D:1&since=145&limit=100")
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.json()["publications"].as_array().map(Vec::len),
        Some(6),
        "{}",
        r.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trimmed_expired_or_foreign_epoch_history_is_not_recovered_on_the_cluster() {
    let cluster = cluster(0).await;
    let inst = instances(&cluster, &["--history", "t:10:2s"])
        .start(&[])
        .await;
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
