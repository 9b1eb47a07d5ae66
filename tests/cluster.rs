//! shardcast on a real Redis Cluster (containers through testcontainers), with real
//! shardcast processes and real WebSocket clients. Every delivery carries a
//! (publisher, sequence) pair and outcomes are asserted exactly; where plain pub/sub
//! cannot promise zero loss (a slot moving, a primary dying) the loss is measured
//! and printed, and what must hold afterwards is asserted.

mod support;

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use support::cluster::{Instance, RedisCluster, channels_on, wait_held_on_owners};
use support::load::Load;
use tokio::time::{Instant, sleep};

const SETTLE: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slot_of_every_channel_matches_cluster_keyslot() {
    let cluster = RedisCluster::start(3, 0).await;
    let port = cluster.live_ports()[0];
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
    let mut conn = support::cluster::conn(port);
    let mut pipe = redis::pipe();
    for n in &names {
        pipe.cmd("CLUSTER").arg("KEYSLOT").arg(n);
    }
    let slots: Vec<u16> = pipe.query(&mut conn).expect("KEYSLOT pipeline");
    for (n, want) in names.iter().zip(slots) {
        assert_eq!(
            shardcast::slot::key_slot(n.as_bytes()),
            want,
            "slot of {n:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_instance_fanout_delivers_every_message_exactly_once_in_order() {
    let cluster = RedisCluster::start(3, 1).await;
    let seeds = cluster.seeds();
    let instances = [
        Instance::start(&seeds, &[]).await,
        Instance::start(&seeds, &["--subscribe-from", "replica"]).await,
        Instance::start(&seeds, &["--subscribe-from", "any"]).await,
    ];
    let channels: Vec<String> = vec!["fan:{a}".into(), "fan:{b}".into(), "fan:{c}".into()];
    let addrs: Vec<_> = instances.iter().map(|i| i.addr).collect();
    let report = Load::all_to_all(
        &addrs,
        &channels,
        2,
        Duration::from_millis(5),
        Duration::from_secs(3),
    )
    .await;
    let o = report.outcome(|_, _| true, None);
    println!("fan-out: {o:?}");
    assert!(o.expected > 6 * 100, "enough traffic: {o:?}");
    assert_eq!((o.lost, o.duplicated, o.out_of_order), (0, 0, 0), "{o:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_subscribe_only_to_what_their_clients_need_once_per_channel() {
    let cluster = RedisCluster::start(3, 1).await;
    let seeds = cluster.seeds();
    let a = Instance::start(&seeds, &[]).await;
    let b = Instance::start(&seeds, &[]).await;
    let idle = Instance::start(&seeds, &[]).await;
    let channels: Vec<String> = (0..1000).map(|i| format!("interest:{i}")).collect();
    let slots: BTreeSet<u16> = channels
        .iter()
        .map(|c| shardcast::slot::key_slot(c.as_bytes()))
        .collect();
    assert!(slots.len() > 900, "channels spread over the slots");

    // Instance a: 8 clients x 125 channels. Instance b: 2 clients on the first 100
    // (the same channels twice: still one Redis subscription per instance).
    let mut clients = Vec::new();
    for (k, chunk) in channels.chunks(125).enumerate() {
        let mut c = a.client(&format!("a{k}")).await;
        for (i, ch) in chunk.iter().enumerate() {
            c.subscribe(ch, i as u64).await;
        }
        clients.push(c);
    }
    for k in 0..2 {
        let mut c = b.client(&format!("b{k}")).await;
        for (i, ch) in channels[..100].iter().enumerate() {
            c.subscribe(ch, i as u64).await;
        }
        clients.push(c);
    }

    // Each channel is subscribed on its owner: once (a) or twice (a and b).
    let mut by_owner: HashMap<u16, Vec<String>> = HashMap::new();
    for ch in &channels {
        by_owner
            .entry(cluster.owner_of(ch))
            .or_default()
            .push(ch.clone());
    }
    let want = |ch: &str| {
        if channels[..100].iter().any(|c| c == ch) {
            2
        } else {
            1
        }
    };
    for (owner, chs) in &by_owner {
        let counts = RedisCluster::shard_numsub(*owner, chs);
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
        for (name, n) in RedisCluster::subscriber_connections(port) {
            assert_eq!(n, 1, "{name} has {n} subscriber connections to {port}");
        }
    }
    let primaries = cluster.primaries();
    for p in &primaries {
        assert_eq!(
            RedisCluster::subscriber_connections(*p).len(),
            2,
            "a and b on primary {p}"
        );
    }

    // Everyone leaves: every count returns to 0.
    drop(clients);
    let deadline = Instant::now() + SETTLE;
    loop {
        let left: i64 = by_owner
            .iter()
            .map(|(owner, chs)| {
                RedisCluster::shard_numsub(*owner, chs)
                    .values()
                    .sum::<i64>()
            })
            .sum();
        if left == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{left} subscriptions remain after clients left"
        );
        sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(a.cluster_view().await["desired_channels"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slot_migration_under_load_moves_subscriptions_to_the_new_owner() {
    let cluster = RedisCluster::start(3, 1).await;
    let seeds = cluster.seeds();
    let instances = [
        Instance::start(&seeds, &[]).await,
        Instance::start(&seeds, &[]).await,
        Instance::start(&seeds, &[]).await,
    ];
    let primaries = cluster.primaries();
    let from = primaries[0];
    let to = primaries[1];
    let busy = channels_on(&cluster, from, "busy", 12);
    let mut load = Load::new();
    for (i, inst) in instances.iter().enumerate().skip(1) {
        load.subscriber(inst.addr, &format!("s{i}"), &busy).await;
    }
    load.publisher(
        instances[0].addr,
        "p0",
        busy.clone(),
        Duration::from_millis(5),
    )
    .await;
    load.publisher(
        instances[1].addr,
        "p1",
        busy.clone(),
        Duration::from_millis(5),
    )
    .await;
    sleep(Duration::from_secs(1)).await;

    let moved_at = Instant::now();
    let slots: BTreeSet<u16> = busy
        .iter()
        .map(|c| shardcast::slot::key_slot(c.as_bytes()))
        .collect();
    for s in &slots {
        cluster.move_slot(*s, to).await;
    }
    cluster.wait_agree().await;
    for ch in &busy {
        assert_eq!(cluster.owner_of(ch), to);
    }
    wait_held_on_owners(&cluster, &[&instances[1], &instances[2]], &busy).await;
    let settled = Instant::now();
    println!(
        "migration: subscriptions on the new owner {:?} after the first SETSLOT",
        settled - moved_at
    );
    let counts = RedisCluster::shard_numsub(to, &busy);
    assert!(
        busy.iter().all(|c| counts[c] == 2),
        "2 instances subscribed on the new owner: {counts:?}"
    );
    let counts = RedisCluster::shard_numsub(from, &busy);
    assert!(
        busy.iter().all(|c| counts[c] == 0),
        "nothing left on the old owner: {counts:?}"
    );
    sleep(Duration::from_secs(2)).await;
    let report = load.finish().await;
    let o = report.outcome(|_, _| true, Some(settled));
    println!("slot migration (plain channels): {o:?}");
    assert!(o.expected > 500, "{o:?}");
    assert_eq!(
        (o.duplicated, o.out_of_order, o.lost_after),
        (0, 0, 0),
        "{o:?}"
    );
    let (_, metrics) = instances[1].get("/metrics").await;
    assert!(
        metrics.contains("shardcast_redis_resubscribes_total"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_under_load_resubscribes_on_the_promoted_replica() {
    let mut cluster = RedisCluster::start(3, 1).await;
    let seeds = cluster.seeds();
    let instances = [
        Instance::start(&seeds, &[]).await,
        Instance::start(&seeds, &[]).await,
    ];
    let victim = cluster.primaries()[2];
    let doomed = channels_on(&cluster, victim, "fo", 8);
    let safe = channels_on(&cluster, cluster.primaries()[0], "safe", 4);
    let mut load = Load::new();
    load.subscriber(
        instances[1].addr,
        "s1",
        &[doomed.clone(), safe.clone()].concat(),
    )
    .await;
    load.publisher(
        instances[0].addr,
        "pd",
        doomed.clone(),
        Duration::from_millis(5),
    )
    .await;
    load.publisher(
        instances[0].addr,
        "ps",
        safe.clone(),
        Duration::from_millis(5),
    )
    .await;
    sleep(Duration::from_secs(1)).await;

    let killed_at = Instant::now();
    cluster.kill(victim).await;
    cluster.wait_replaced(victim).await;
    cluster.wait_agree().await;
    wait_held_on_owners(&cluster, &[&instances[1]], &doomed).await;
    let settled = Instant::now();
    sleep(Duration::from_secs(2)).await;
    let report = load.finish().await;
    let resumed = report
        .acked
        .get("pd")
        .and_then(|a| {
            a.iter()
                .find(|a| a.at > killed_at + Duration::from_millis(500))
        })
        .map(|a| a.at - killed_at);
    let o = report.outcome(|_, ch| doomed.contains(&ch.to_string()), Some(settled));
    println!(
        "failover: promoted and resubscribed after {:?}; publishes resumed after {resumed:?}; {o:?}",
        settled - killed_at
    );
    assert_eq!(
        (o.duplicated, o.out_of_order, o.lost_after),
        (0, 0, 0),
        "{o:?}"
    );
    assert!(o.delivered > 0);
    let safe_o = report.outcome(|_, ch| safe.contains(&ch.to_string()), None);
    println!("failover, channels on other shards: {safe_o:?}");
    assert_eq!(
        (safe_o.lost, safe_o.duplicated),
        (0, 0),
        "other shards unaffected: {safe_o:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_out_and_in_under_load_keeps_every_channel_on_its_owner() {
    let mut cluster = RedisCluster::start(3, 1).await;
    let seeds = cluster.seeds();
    let instances = [
        Instance::start(&seeds, &[]).await,
        Instance::start(&seeds, &[]).await,
    ];
    let chans: Vec<String> = (0..40).map(|i| format!("scale:{i}")).collect();
    let mut load = Load::new();
    load.subscriber(instances[1].addr, "s1", &chans).await;
    load.subscriber(instances[0].addr, "s0", &chans).await;
    load.publisher(
        instances[0].addr,
        "p0",
        chans.clone(),
        Duration::from_millis(5),
    )
    .await;
    sleep(Duration::from_secs(1)).await;

    let new_primary = cluster.add_shard(1).await;
    assert_eq!(cluster.primaries().len(), 4);
    assert!(
        chans.iter().any(|c| cluster.owner_of(c) == new_primary),
        "some channel moved to the new shard"
    );
    wait_held_on_owners(&cluster, &[&instances[0], &instances[1]], &chans).await;
    let out_settled = Instant::now();
    sleep(Duration::from_secs(1)).await;

    cluster.remove_shard(new_primary).await;
    assert_eq!(cluster.primaries().len(), 3);
    wait_held_on_owners(&cluster, &[&instances[0], &instances[1]], &chans).await;
    let in_settled = Instant::now();
    sleep(Duration::from_secs(2)).await;
    let report = load.finish().await;
    let o = report.outcome(|_, _| true, Some(in_settled));
    println!(
        "scale out+in: out settled at {:?}, in at {:?}; {o:?}",
        out_settled - report_start(&report),
        in_settled - report_start(&report)
    );
    assert_eq!(
        (o.duplicated, o.out_of_order, o.lost_after),
        (0, 0, 0),
        "{o:?}"
    );
    // And no instance still holds a connection to the removed node.
    for inst in &instances {
        let held = inst.held().await;
        assert!(
            !held.contains_key(&format!("127.0.0.1:{new_primary}")),
            "{held:?}"
        );
    }
}

fn report_start(r: &support::load::Report) -> Instant {
    r.acked
        .values()
        .flatten()
        .map(|a| a.at)
        .min()
        .unwrap_or_else(Instant::now)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_node_stalls_only_its_own_shard_and_recovers_after_unpause() {
    let cluster = RedisCluster::start(3, 1).await;
    let seeds = cluster.seeds();
    let instances = [
        Instance::start(&seeds, &[]).await,
        Instance::start(&seeds, &[]).await,
    ];
    let prim = cluster.primaries();
    let stalled = channels_on(&cluster, prim[0], "pz", 4);
    let flowing = channels_on(&cluster, prim[1], "fl", 4);
    let mut load = Load::new();
    load.subscriber(
        instances[1].addr,
        "s1",
        &[stalled.clone(), flowing.clone()].concat(),
    )
    .await;
    load.publisher(
        instances[0].addr,
        "pst",
        stalled.clone(),
        Duration::from_millis(10),
    )
    .await;
    load.publisher(
        instances[0].addr,
        "pfl",
        flowing.clone(),
        Duration::from_millis(10),
    )
    .await;
    sleep(Duration::from_secs(1)).await;

    cluster.pause(prim[0]).await;
    let paused_at = Instant::now();
    sleep(Duration::from_secs(3)).await;
    cluster.unpause(prim[0]).await;
    let unpaused_at = Instant::now();
    cluster.wait_agree().await;
    wait_held_on_owners(&cluster, &[&instances[1]], &stalled).await;
    let settled = Instant::now();
    sleep(Duration::from_secs(2)).await;
    let report = load.finish().await;

    let during = report
        .received
        .values()
        .flatten()
        .filter(|d| flowing.contains(&d.channel) && d.at > paused_at && d.at < unpaused_at)
        .count();
    println!("pause: {during} deliveries on other shards while paused");
    assert!(
        during > 50,
        "other shards kept flowing during the pause ({during})"
    );
    let o = report.outcome(|_, ch| flowing.contains(&ch.to_string()), None);
    assert_eq!(
        (o.lost, o.duplicated, o.out_of_order),
        (0, 0, 0),
        "flowing shard: {o:?}"
    );
    let o = report.outcome(|_, ch| stalled.contains(&ch.to_string()), Some(settled));
    println!(
        "pause: stalled shard {o:?}, settled {:?} after unpause",
        settled - unpaused_at
    );
    assert_eq!(
        (o.duplicated, o.out_of_order, o.lost_after),
        (0, 0, 0),
        "{o:?}"
    );
    assert!(o.delivered > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_topology_and_publish_errors_are_reported() {
    // No cluster at all: the instance starts, is not ready, and refuses clearly.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let seeds = format!("redis://127.0.0.1:{port}");
    let bin = env!("CARGO_BIN_EXE_shardcast");
    let listen = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut child = std::process::Command::new(bin)
        .args([
            "--listen",
            &listen.to_string(),
            "--broker",
            "redis-cluster",
            "--redis-nodes",
            &seeds,
        ])
        .spawn()
        .expect("spawn");
    let url = format!("http://{listen}");
    let mut status = 0;
    for _ in 0..100 {
        status = support::try_http("GET", &format!("{url}/readyz"), None)
            .await
            .0;
        if status != 0 {
            break;
        }
        sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 503, "not ready without topology");
    let (status, body) = support::try_http(
        "POST",
        &format!("{url}/api/publish"),
        Some(r#"{"channel":"x","data":1}"#),
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("unavailable"), "{body}");
    let mut c = support::Client::connect(&format!("ws://{listen}/ws?user=u")).await;
    assert_eq!(
        c.expect_close(Duration::from_secs(15)).await,
        Some(1013),
        "no broker: try again later"
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resubscribing_right_after_unsubscribing_is_confirmed_and_delivers() {
    let cluster = RedisCluster::start(3, 0).await;
    let seeds = cluster.seeds();
    let a = Instance::start(&seeds, &[]).await;
    let b = Instance::start(&seeds, &[]).await;
    let mut sub = a.client("sub").await;
    let mut publisher = b.client("pub").await;
    for round in 0..20u64 {
        sub.subscribe("flap", round * 2).await;
        let r = sub
            .request(
                serde_json::json!({"op":"unsubscribe","channel":"flap"}),
                round * 2 + 1,
            )
            .await;
        assert_eq!(r["op"], "ok", "{r}");
    }
    let started = Instant::now();
    sub.subscribe("flap", 100).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "confirmed without waiting out the timeout"
    );
    let r = publisher
        .publish("flap", serde_json::json!("after flapping"), 1)
        .await;
    assert_eq!(r["op"], "ok");
    assert_eq!(sub.next_message().await["data"], "after flapping");
    let numsub = RedisCluster::shard_numsub(cluster.owner_of("flap"), &["flap".to_string()]);
    assert_eq!(numsub["flap"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_failover_moves_subscriptions_to_the_promoted_replica() {
    let cluster = RedisCluster::start(3, 1).await;
    let seeds = cluster.seeds();
    let a = Instance::start(&seeds, &[]).await;
    let b = Instance::start(&seeds, &[]).await;
    let old = cluster.primaries()[0];
    let chans = channels_on(&cluster, old, "gf", 10);
    let mut s = a.client("s").await;
    let mut p = b.client("p").await;
    for (i, ch) in chans.iter().enumerate() {
        s.subscribe(ch, i as u64).await;
    }
    let old_id = RedisCluster::node_id(old);
    let replica = RedisCluster::cluster_nodes(old)
        .into_iter()
        .find(|l| l.master == old_id)
        .map(|l| l.port)
        .expect("the primary has a replica");
    // The operator's planned switch-over: the replica takes over without data loss,
    // and Redis drops the old primary's shard-channel subscribers.
    support::cluster::query(replica, redis::cmd("CLUSTER").arg("FAILOVER"));
    let deadline = Instant::now() + SETTLE;
    while chans
        .iter()
        .any(|c| cluster.try_owner_of(c) != Some(replica))
    {
        assert!(
            Instant::now() < deadline,
            "replica {replica} was not promoted"
        );
        sleep(Duration::from_millis(100)).await;
    }
    cluster.wait_agree().await;
    wait_held_on_owners(&cluster, &[&a], &chans).await;
    for (i, ch) in chans.iter().enumerate() {
        let r = p.publish(ch, serde_json::json!(i), 100 + i as u64).await;
        assert_eq!(r["op"], "ok", "{r}");
        let m = s.next_message().await;
        assert_eq!(
            (m["channel"].as_str(), m["data"].as_u64()),
            (Some(ch.as_str()), Some(i as u64))
        );
    }
    let counts = RedisCluster::shard_numsub(replica, &chans);
    assert!(
        chans.iter().all(|c| counts[c] == 1),
        "subscribed on the new primary: {counts:?}"
    );
}
