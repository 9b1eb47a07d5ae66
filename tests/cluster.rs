//! shardcast on a real Redis Cluster (containers through shardcast-testkit), with
//! real shardcast processes and real WebSocket clients. Every delivery carries a
//! (publisher, sequence) pair and outcomes are asserted exactly; where plain pub/sub
//! cannot promise zero loss (a slot moving, a primary dying) the loss is printed, and
//! what must hold afterwards is asserted on traffic published afterwards.

mod support;

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use serde_json::json;
use support::cluster::{
    Load, Report, assert_clean, cluster, instances, key_slot, load_on_each, numsub, user_url,
    wait_held_on_owners,
};
use support::{PATIENCE, eventually};
use tokio::time::{Instant, sleep};

/// Acknowledged publications a disruption test needs after the event, at least,
/// for "nothing lost afterwards" to mean something (publishers run every 5-10 ms).
const MIN_AFTER: usize = 100;

/// Lets traffic run for `d` (the load tasks publish and deliver meanwhile).
async fn run_for(d: Duration) {
    sleep(d).await;
}

fn judge_all(_: &str) -> bool {
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slot_of_every_channel_matches_cluster_keyslot() {
    let cluster = cluster(0).await;
    let mut names: Vec<String> = [
        "{}",
        "{{a}}",
        "a{b",
        "}{",
        "{a}}",
        "a{}b{c}",
        "{ü}x",
        "é",
        "{user:1}:feed",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let pieces = ["{", "}", "a", "b", "{}", "ü", "x:", "{u1}", "}{", "7"];
    let mut seed = 0x2545_f491_u64;
    while names.len() < 5000 {
        let mut s = String::new();
        for _ in 0..(1 + seed % 6) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            s.push_str(pieces[(seed % pieces.len() as u64) as usize]);
        }
        names.push(s);
    }
    let addr = cluster.live_addrs()[0].clone();
    let mut conn = shardcast_testkit::admin::connect(&addr)
        .await
        .expect("connect");
    let mut pipe = redis::pipe();
    for n in &names {
        pipe.cmd("CLUSTER").arg("KEYSLOT").arg(n);
    }
    let slots: Vec<u16> = pipe.query_async(&mut conn).await.expect("KEYSLOT pipeline");
    for (n, want) in names.iter().zip(slots) {
        assert_eq!(
            shardcast::slot::key_slot(n.as_bytes()),
            want,
            "slot of {n:?}"
        );
        assert_eq!(key_slot(n), want, "the testkit's slot of {n:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_instance_fanout_delivers_every_message_exactly_once_in_order() {
    let cluster = cluster(1).await;
    let run = instances(&cluster, &[]);
    let insts = [
        run.start(&[]).await,
        run.start(&["--subscribe-from", "replica"]).await,
        run.start(&["--subscribe-from", "any"]).await,
    ];
    let channels: Vec<String> = vec!["fan:{a}".into(), "fan:{b}".into(), "fan:{c}".into()];
    let load = load_on_each(&insts, 2, 1, &channels, Duration::from_millis(5)).await;
    run_for(Duration::from_secs(3)).await;
    let o = load.finish().await.outcome(judge_all, None);
    assert!(o.expected > 6 * 100, "enough traffic: {o:?}");
    assert_clean("fan-out", &o);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_publishing_connections_lose_and_repeat_nothing_and_come_back() {
    let cluster = cluster(0).await;
    let run = instances(&cluster, &[]);
    let insts = [run.start(&[]).await, run.start(&[]).await];
    let primaries = cluster.primaries().await.expect("primaries");
    let mut channels = Vec::new();
    for p in &primaries {
        channels.extend(cluster.channels_on(*p, "pipe", 2).await.expect("channels"));
    }
    let load = load_on_each(&insts, 1, 3, &channels, Duration::from_millis(5)).await;
    run_for(Duration::from_secs(1)).await;
    // One publishing connection per instance to each primary, however many of its
    // clients publish.
    for p in &primaries {
        let conns = cluster
            .clients_named(*p, "shardcast-pub")
            .await
            .expect("CLIENT LIST");
        assert_eq!(conns.len(), 2, "both instances publish to {p}: {conns:?}");
        assert!(conns.values().all(|n| *n == 1), "{p}: {conns:?}");
    }
    // Cut them three times while publishes are in flight.
    for _ in 0..3 {
        for p in &primaries {
            let killed = cluster
                .kill_clients_named(*p, "shardcast-pub")
                .await
                .expect("CLIENT KILL");
            assert!(killed >= 1, "no publishing connection to {p} to kill");
        }
        run_for(Duration::from_millis(300)).await;
    }
    let cut = Instant::now();
    run_for(Duration::from_secs(1)).await;
    eventually(
        "the publishing connections to be back",
        Duration::from_secs(10),
        || async {
            for p in &primaries {
                let conns = cluster
                    .clients_named(*p, "shardcast-pub")
                    .await
                    .map_err(|e| e.to_string())?;
                if conns.len() != 2 {
                    return Err(format!("{p}: {conns:?}"));
                }
            }
            Ok(())
        },
    )
    .await;
    let mut retried = 0.0;
    for inst in &insts {
        retried += inst
            .metrics()
            .await
            .get("shardcast_redis_publish_retries_total", &[])
            .unwrap_or(0.0);
    }
    println!("publishes retried through the data connection: {retried}");
    let report = load.finish().await;
    let after = report
        .published
        .values()
        .flat_map(|p| &p.acked)
        .filter(|a| a.at > cut)
        .count();
    assert!(after >= MIN_AFTER, "only {after} publishes after the cuts");
    assert_clean(
        "publishing connections cut",
        &report.outcome(judge_all, None),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_subscribe_only_to_what_their_clients_need_once_per_channel() {
    let cluster = cluster(1).await;
    let run = instances(&cluster, &[]);
    let a = run.start(&[]).await;
    let b = run.start(&[]).await;
    let idle = run.start(&[]).await;
    let channels: Vec<String> = (0..1000).map(|i| format!("interest:{i}")).collect();
    let slots: BTreeSet<u16> = channels.iter().map(|c| key_slot(c)).collect();
    assert!(slots.len() > 900, "channels spread over the slots");

    // Instance a: 8 clients x 125 channels. Instance b: 2 clients on the first 100
    // (the same channels twice: still one Redis subscription per instance).
    let mut clients = Vec::new();
    for (k, chunk) in channels.chunks(125).enumerate() {
        let mut c = a.client(&format!("a{k}")).await;
        c.subscribe_all(chunk, 0).await;
        clients.push(c);
    }
    for k in 0..2 {
        let mut c = b.client(&format!("b{k}")).await;
        c.subscribe_all(&channels[..100], 0).await;
        clients.push(c);
    }

    // Each channel is subscribed on its owner: once (a) or twice (a and b).
    let mut by_owner: HashMap<u16, Vec<String>> = HashMap::new();
    for ch in &channels {
        let owner = cluster.owner_of(ch).await.expect("owner");
        by_owner.entry(owner).or_default().push(ch.clone());
    }
    let want = |ch: &str| {
        if channels[..100].iter().any(|c| c == ch) {
            2
        } else {
            1
        }
    };
    for (owner, chs) in &by_owner {
        let counts = numsub(&cluster, *owner, chs).await;
        for ch in chs {
            assert_eq!(
                counts.get(ch).copied(),
                Some(want(ch)),
                "SHARDNUMSUB {ch} on {owner}"
            );
        }
    }
    // The idle instance holds nothing.
    let view = idle.cluster_view().await;
    assert_eq!(view["desired_channels"], 0, "{view}");
    // One subscriber connection per node per instance, however many channels.
    for port in cluster.live_ports() {
        let conns = cluster
            .clients_named(port, "shardcast-sub")
            .await
            .expect("CLIENT LIST");
        for (name, n) in conns {
            assert_eq!(n, 1, "{name} has {n} subscriber connections to {port}");
        }
    }
    for p in cluster.primaries().await.expect("primaries") {
        let conns = cluster
            .clients_named(p, "shardcast-sub")
            .await
            .expect("CLIENT LIST");
        assert_eq!(conns.len(), 2, "a and b on primary {p}: {conns:?}");
    }

    // Everyone leaves: every count returns to 0.
    drop(clients);
    eventually(
        "every subscription to end",
        Duration::from_secs(30),
        || async {
            let mut left = 0;
            for (owner, chs) in &by_owner {
                left += numsub(&cluster, *owner, chs).await.values().sum::<i64>();
            }
            if left == 0 {
                Ok(())
            } else {
                Err(format!("{left} subscriptions remain"))
            }
        },
    )
    .await;
    assert_eq!(a.cluster_view().await["desired_channels"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slot_migration_under_load_moves_subscriptions_to_the_new_owner() {
    let cluster = cluster(1).await;
    let run = instances(&cluster, &[]);
    let insts = [
        run.start(&[]).await,
        run.start(&[]).await,
        run.start(&[]).await,
    ];
    let primaries = cluster.primaries().await.expect("primaries");
    let (from, to) = (primaries[0], primaries[1]);
    let busy = cluster
        .channels_on(from, "busy", 12)
        .await
        .expect("channels");
    let mut load = Load::new();
    for (i, inst) in insts.iter().enumerate().skip(1) {
        let name = format!("s{i}");
        load.subscriber(&user_url(inst, &name), &name, &busy).await;
    }
    for (i, inst) in insts.iter().enumerate().take(2) {
        let name = format!("p{i}");
        load.publisher(
            &user_url(inst, &name),
            &name,
            busy.clone(),
            Duration::from_millis(5),
        )
        .await;
    }
    run_for(Duration::from_secs(1)).await;

    let moved_at = Instant::now();
    let slots: BTreeSet<u16> = busy.iter().map(|c| key_slot(c)).collect();
    for s in &slots {
        cluster.migrate_slot(*s, to).await.expect("migrate slot");
    }
    for ch in &busy {
        assert_eq!(cluster.owner_of(ch).await.expect("owner"), to);
    }
    wait_held_on_owners(&cluster, &[&insts[1], &insts[2]], &busy).await;
    let settled = Instant::now();
    println!(
        "migration: subscriptions on the new owner {:?} after the first SETSLOT",
        settled - moved_at
    );
    let counts = numsub(&cluster, to, &busy).await;
    assert!(
        busy.iter().all(|c| counts[c] == 2),
        "2 instances subscribed on the new owner: {counts:?}"
    );
    let counts = numsub(&cluster, from, &busy).await;
    assert!(
        busy.iter().all(|c| counts[c] == 0),
        "nothing left on the old owner: {counts:?}"
    );
    let resubscribes = insts[1]
        .metrics()
        .await
        .value("shardcast_redis_resubscribes_total", &[]);
    run_for(Duration::from_secs(2)).await;
    let report = load.finish().await;
    let o = report.outcome(judge_all, Some(settled));
    println!("slot migration (plain channels): {o:?}");
    assert!(
        o.expected_after >= MIN_AFTER,
        "traffic after the move: {o:?}"
    );
    assert_eq!(o.delivered_after, o.expected_after, "{o:?}");
    assert_eq!(
        (o.duplicated, o.out_of_order, o.lost_after, o.malformed),
        (0, 0, 0, 0),
        "{o:?}"
    );
    assert!(
        resubscribes >= busy.len() as f64,
        "instance 1 resubscribed every moved channel: {resubscribes}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_under_load_resubscribes_on_the_promoted_replica() {
    let mut cluster = cluster(1).await;
    let run = instances(&cluster, &[]);
    let insts = [run.start(&[]).await, run.start(&[]).await];
    let primaries = cluster.primaries().await.expect("primaries");
    let victim = primaries[2];
    let doomed = cluster
        .channels_on(victim, "fo", 8)
        .await
        .expect("channels");
    let safe = cluster
        .channels_on(primaries[0], "safe", 4)
        .await
        .expect("channels");
    let promoted = cluster.replicas_of(victim).await.expect("replicas")[0];
    let mut load = Load::new();
    load.subscriber(
        &user_url(&insts[1], "s1"),
        "s1",
        &[doomed.clone(), safe.clone()].concat(),
    )
    .await;
    load.publisher(
        &user_url(&insts[0], "pd"),
        "pd",
        doomed.clone(),
        Duration::from_millis(5),
    )
    .await;
    load.publisher(
        &user_url(&insts[0], "ps"),
        "ps",
        safe.clone(),
        Duration::from_millis(5),
    )
    .await;
    run_for(Duration::from_secs(1)).await;

    let killed_at = Instant::now();
    let killed = cluster
        .kill_primary_of(&doomed[0])
        .await
        .expect("kill and fail over");
    assert_eq!(killed, victim);
    for ch in &doomed {
        assert_eq!(
            cluster.owner_of(ch).await.expect("owner"),
            promoted,
            "{ch} moved to the promoted replica"
        );
    }
    wait_held_on_owners(&cluster, &[&insts[1]], &doomed).await;
    let settled = Instant::now();
    // In Redis itself: the promoted replica carries the instance's subscriptions.
    let counts = numsub(&cluster, promoted, &doomed).await;
    assert!(
        doomed.iter().all(|c| counts[c] == 1),
        "SHARDNUMSUB on the promoted replica: {counts:?}"
    );
    run_for(Duration::from_secs(2)).await;
    let report = load.finish().await;
    let resumed = report
        .first_ack_after(killed_at + Duration::from_millis(500))
        .map(|t| t - killed_at);
    let o = report.outcome(|ch| doomed.iter().any(|d| d == ch), Some(settled));
    println!(
        "failover: promoted and resubscribed after {:?}; publishes resumed after {resumed:?}; {o:?}",
        settled - killed_at
    );
    assert!(
        o.expected_after >= MIN_AFTER,
        "publishing resumed after the failover: {o:?}"
    );
    assert_eq!(
        o.delivered_after, o.expected_after,
        "deliveries resumed: {o:?}"
    );
    assert_eq!(
        (o.duplicated, o.out_of_order, o.lost_after, o.malformed),
        (0, 0, 0, 0),
        "{o:?}"
    );
    let safe_o = report.outcome(|ch| safe.iter().any(|s| s == ch), None);
    println!("failover, channels on other shards: {safe_o:?}");
    assert!(safe_o.expected > MIN_AFTER, "{safe_o:?}");
    assert_eq!(
        (safe_o.lost, safe_o.duplicated),
        (0, 0),
        "other shards unaffected: {safe_o:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_out_and_in_under_load_keeps_every_channel_on_its_owner() {
    let mut cluster = cluster(1).await;
    let run = instances(&cluster, &[]);
    let insts = [run.start(&[]).await, run.start(&[]).await];
    let chans: Vec<String> = (0..40).map(|i| format!("scale:{i}")).collect();
    let mut load = Load::new();
    load.subscriber(&user_url(&insts[1], "s1"), "s1", &chans)
        .await;
    load.subscriber(&user_url(&insts[0], "s0"), "s0", &chans)
        .await;
    load.publisher(
        &user_url(&insts[0], "p0"),
        "p0",
        chans.clone(),
        Duration::from_millis(5),
    )
    .await;
    run_for(Duration::from_secs(1)).await;

    let new_primary = cluster.add_shard().await.expect("add a shard");
    assert_eq!(cluster.primaries().await.expect("primaries").len(), 4);
    let mut on_new = 0;
    for c in &chans {
        on_new += usize::from(cluster.owner_of(c).await.expect("owner") == new_primary);
    }
    assert!(on_new > 0, "some channel moved to the new shard");
    wait_held_on_owners(&cluster, &[&insts[0], &insts[1]], &chans).await;
    let out_settled = Instant::now();
    run_for(Duration::from_secs(2)).await;
    let removing = Instant::now();
    cluster
        .remove_shard(new_primary)
        .await
        .expect("remove the shard");
    assert_eq!(cluster.primaries().await.expect("primaries").len(), 3);
    wait_held_on_owners(&cluster, &[&insts[0], &insts[1]], &chans).await;
    let in_settled = Instant::now();
    run_for(Duration::from_secs(2)).await;
    let report = load.finish().await;
    // The steady window on 4 shards: everything published there arrived.
    let steady = report.acked_between(judge_all, out_settled, removing);
    let o = report.outcome(judge_all, Some(in_settled));
    let window = steady_outcome(&report, out_settled, removing);
    println!("scale out+in: {steady} acked while on 4 shards ({window:?}); after scale-in {o:?}");
    assert!(steady >= MIN_AFTER, "traffic while on 4 shards: {steady}");
    assert_eq!(window, (0, 0), "lost and duplicated while on 4 shards");
    assert!(
        o.expected_after >= MIN_AFTER,
        "traffic after the scale-in: {o:?}"
    );
    assert_eq!(
        (o.duplicated, o.out_of_order, o.lost_after, o.malformed),
        (0, 0, 0, 0),
        "{o:?}"
    );
    // And no instance still holds a connection to the removed node.
    for inst in &insts {
        let held = inst.held().await;
        assert!(
            !held.contains_key(&format!("127.0.0.1:{new_primary}")),
            "{held:?}"
        );
    }
}

/// (lost, duplicated) among publications acknowledged in `[from, to)`.
fn steady_outcome(report: &Report, from: Instant, to: Instant) -> (usize, usize) {
    let mut lost = 0;
    let mut dup = 0;
    for inbox in report.received.values() {
        for (publisher, p) in &report.published {
            for a in p.acked.iter().filter(|a| a.at >= from && a.at < to) {
                let n = inbox
                    .deliveries
                    .iter()
                    .filter(|d| {
                        &d.publisher == publisher && d.channel == a.channel && d.seq == a.seq
                    })
                    .count();
                lost += usize::from(n == 0);
                dup += n.saturating_sub(1);
            }
        }
    }
    (lost, dup)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_primary_stalls_only_its_own_shard_and_recovers_without_failover() {
    // One scenario, asserted: a pause shorter than the node timeout, so no failover
    // (the paused primary is still the primary after); shardcast's subscriber
    // connection declares it dead after 3 s of silence and reconnects after.
    let cluster = shardcast_testkit::RedisCluster::builder()
        .node_timeout(Duration::from_secs(15))
        .start()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let run = instances(&cluster, &[]);
    let insts = [run.start(&[]).await, run.start(&[]).await];
    let prim = cluster.primaries().await.expect("primaries");
    let stalled = cluster
        .channels_on(prim[0], "pz", 4)
        .await
        .expect("channels");
    let flowing = cluster
        .channels_on(prim[1], "fl", 4)
        .await
        .expect("channels");
    let mut load = Load::new();
    load.subscriber(
        &user_url(&insts[1], "s1"),
        "s1",
        &[stalled.clone(), flowing.clone()].concat(),
    )
    .await;
    load.publisher(
        &user_url(&insts[0], "pst"),
        "pst",
        stalled.clone(),
        Duration::from_millis(10),
    )
    .await;
    load.publisher(
        &user_url(&insts[0], "pfl"),
        "pfl",
        flowing.clone(),
        Duration::from_millis(10),
    )
    .await;
    run_for(Duration::from_secs(1)).await;

    cluster.pause(prim[0]).await.expect("pause");
    let paused_at = Instant::now();
    run_for(Duration::from_secs(5)).await;
    cluster.unpause(prim[0]).await.expect("unpause");
    let unpaused_at = Instant::now();
    cluster.wait_settled().await.expect("settled");
    assert_eq!(
        cluster.primaries().await.expect("primaries"),
        prim,
        "no failover happened"
    );
    wait_held_on_owners(&cluster, &[&insts[1]], &stalled).await;
    let settled = Instant::now();
    run_for(Duration::from_secs(2)).await;
    let report = load.finish().await;

    let is_flowing = |ch: &str| flowing.iter().any(|f| f == ch);
    let during = report.acked_between(is_flowing, paused_at, unpaused_at);
    let o = report.outcome(is_flowing, None);
    println!("pause: {during} publications acknowledged on the other shard while paused; {o:?}");
    assert!(
        during >= 10,
        "the other shard kept accepting publications: {during}"
    );
    assert_eq!(
        (o.lost, o.duplicated, o.out_of_order),
        (0, 0, 0),
        "flowing shard, pause included: {o:?}"
    );
    let o = report.outcome(|ch| stalled.iter().any(|s| s == ch), Some(settled));
    println!(
        "pause: stalled shard {o:?}, settled {:?} after unpause",
        settled - unpaused_at
    );
    assert!(
        o.expected_after >= MIN_AFTER / 2,
        "the stalled shard took publications again: {o:?}"
    );
    assert_eq!(
        (o.duplicated, o.out_of_order, o.lost_after),
        (0, 0, 0),
        "{o:?}"
    );
}

/// Kills a child process when dropped, so a failed assert leaks nothing.
struct Reaper(std::process::Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_reachable_cluster_an_instance_is_not_ready_and_refuses_clearly() {
    let port = shardcast_testkit::ports::free_port();
    let listen = format!("127.0.0.1:{}", shardcast_testkit::ports::free_port());
    let _child = Reaper(
        std::process::Command::new(env!("CARGO_BIN_EXE_shardcast"))
            .args([
                "--listen",
                &listen,
                "--broker",
                "redis-cluster",
                "--redis-nodes",
                &format!("redis://127.0.0.1:{port}"),
                "--insecure",
                "--client-publish",
                "authenticated",
            ])
            .env("RUST_LOG", "error")
            .spawn()
            .expect("spawn"),
    );
    let url = format!("http://{listen}");
    let status = eventually("the instance to listen", PATIENCE, || async {
        match support::http::get(&format!("{url}/readyz")).await.status {
            0 => Err("not listening yet".to_string()),
            s => Ok(s),
        }
    })
    .await;
    assert_eq!(status, 503, "not ready without topology");
    let r = support::http::post(&format!("{url}/api/publish"), r#"{"channel":"x","data":1}"#).await;
    assert_eq!(
        (r.status, r.json()["error"]["code"].as_str()),
        (503, Some("unavailable")),
        "{}",
        r.body
    );
    // The upgrade succeeds, but the session cannot be set up (its personal channel
    // needs the broker): no `connected`, a 1013 close.
    let mut c = support::Client::try_connect(&format!("ws://{listen}/ws?user=u"), &[])
        .await
        .expect("the upgrade is accepted");
    assert_eq!(
        c.expect_close(Duration::from_secs(15)).await,
        Some(1013),
        "no broker: try again later"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resubscribing_right_after_unsubscribing_is_confirmed_and_delivers() {
    let cluster = cluster(0).await;
    let run = instances(&cluster, &[]);
    let a = run.start(&[]).await;
    let b = run.start(&[]).await;
    let mut sub = a.client("sub").await;
    let mut publisher = b.client("pub").await;
    for round in 0..20u64 {
        sub.subscribe("flap", round * 2).await;
        let r = sub
            .request(json!({"op":"unsubscribe","channel":"flap"}), round * 2 + 1)
            .await;
        assert_eq!(r["op"], "ok", "{r}");
    }
    sub.subscribe("flap", 100).await;
    let r = publisher.publish("flap", json!("after flapping"), 1).await;
    assert_eq!(r["op"], "ok");
    assert_eq!(sub.next_message().await["data"], "after flapping");
    let owner = cluster.owner_of("flap").await.expect("owner");
    assert_eq!(
        numsub(&cluster, owner, &["flap".to_string()]).await["flap"],
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_failover_moves_subscriptions_to_the_promoted_replica() {
    let cluster = cluster(1).await;
    let run = instances(&cluster, &[]);
    let a = run.start(&[]).await;
    let b = run.start(&[]).await;
    let old = cluster.primaries().await.expect("primaries")[0];
    let chans = cluster.channels_on(old, "gf", 10).await.expect("channels");
    let mut s = a.client("s").await;
    let mut p = b.client("p").await;
    s.subscribe_all(&chans, 0).await;
    let replica = cluster.replicas_of(old).await.expect("replicas")[0];
    // The operator's planned switch-over: the replica takes over without data loss,
    // and Redis drops the old primary's shard-channel subscribers.
    cluster.failover(replica).await.expect("failover");
    for ch in &chans {
        assert_eq!(cluster.owner_of(ch).await.expect("owner"), replica);
    }
    wait_held_on_owners(&cluster, &[&a], &chans).await;
    for (i, ch) in chans.iter().enumerate() {
        let r = p.publish(ch, json!(i), 100 + i as u64).await;
        assert_eq!(r["op"], "ok", "{r}");
        let m = s.next_message().await;
        assert_eq!(
            (m["channel"].as_str(), m["data"].as_u64()),
            (Some(ch.as_str()), Some(i as u64))
        );
    }
    let counts = numsub(&cluster, replica, &chans).await;
    assert!(
        chans.iter().all(|c| counts[c] == 1),
        "subscribed on the new primary: {counts:?}"
    );
}
