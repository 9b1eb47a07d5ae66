//! Presence and join/leave across 3 instances on a real Redis Cluster: members and
//! stats seen from every instance, joins and leaves delivered everywhere, an
//! instance killed with SIGKILL whose clients leave within the TTL (with leaves),
//! presence intact through a slot migration and a primary failover, and 5000
//! members.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};
use shardcast_testkit::{Client, Shardcast, key_slot, token};
use support::cluster::cluster;
use support::{ConfigFile, PATIENCE};

const SECRET: &str = "presence-cluster-secret";
const NAMESPACES: &str = r#"
[namespaces.room]
presence = true
join_leave = true
publish = "subscribers"
[namespaces.crowd]
presence = true
"#;
/// Short, so that a crashed instance's clients expire within the test.
const TTL: &str = "3s";

fn tok(user: &str) -> String {
    token::connection(
        SECRET,
        user,
        Duration::from_secs(600),
        Some(json!({"name": user})),
        &[],
    )
}

fn run(
    cluster: &shardcast_testkit::RedisCluster,
    file: &ConfigFile,
) -> shardcast_testkit::ShardcastBuilder {
    Shardcast::on_cluster(env!("CARGO_BIN_EXE_shardcast"), &cluster.seeds()).args([
        "--config",
        file.path(),
        "--token-hmac-secret",
        SECRET,
        "--presence-ttl",
        TTL,
    ])
}

/// The users `c` sees in `channel`, sorted.
async fn users_in(c: &mut Client, channel: &str, id: u64) -> Vec<String> {
    let r = c
        .request(json!({"op":"presence","channel":channel}), id)
        .await;
    assert_eq!(r["op"], "presence", "{r}");
    let mut u: Vec<String> = r["clients"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["user"].as_str().map(String::from))
        .collect();
    u.sort();
    u
}

/// Reads until `c` has seen the `op` frames of every user in `users`.
async fn expect_events(c: &mut Client, op: &str, users: &[&str]) -> Vec<Value> {
    let mut want: BTreeSet<&str> = users.iter().copied().collect();
    let mut got = Vec::new();
    while !want.is_empty() {
        let f = c.next_op(op).await;
        if let Some(u) = f["user"].as_str() {
            want.remove(u);
        }
        got.push(f);
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_joins_and_leaves_are_seen_from_every_instance_and_a_killed_instance_leaves_within_the_ttl()
 {
    let cluster = cluster(1).await;
    let file = ConfigFile::new(NAMESPACES);
    let builder = run(&cluster, &file);
    let mut insts = vec![
        builder.start(&[]).await,
        builder.start(&[]).await,
        builder.start(&[]).await,
    ];
    let mut a = Client::with_token(&insts[0].ws_url(""), &tok("alice")).await;
    a.subscribe("room:1", 1).await;
    let mut b = Client::with_token(&insts[1].ws_url(""), &tok("bob")).await;
    b.subscribe("room:1", 1).await;
    let mut c = Client::with_token(&insts[2].ws_url(""), &tok("carol")).await;
    c.subscribe("room:1", 1).await;
    // Joins reach the subscribers on every instance, with the token's info.
    let joins = expect_events(&mut a, "join", &["alice", "bob", "carol"]).await;
    assert!(
        joins.iter().all(|j| j["info"]["name"] == j["user"]),
        "{joins:?}"
    );
    expect_events(&mut b, "join", &["bob", "carol"]).await;
    expect_events(&mut c, "join", &["carol"]).await;
    for (i, cl) in [&mut a, &mut b, &mut c].into_iter().enumerate() {
        assert_eq!(
            users_in(cl, "room:1", 10 + i as u64).await,
            vec!["alice", "bob", "carol"]
        );
        let r = cl
            .request(
                json!({"op":"presence_stats","channel":"room:1"}),
                20 + i as u64,
            )
            .await;
        assert_eq!(
            (r["clients"].as_u64(), r["users"].as_u64()),
            (Some(3), Some(3)),
            "{r}"
        );
    }
    // Carol's instance dies without cleanup: she leaves presence within the TTL
    // (refreshed every TTL/3) and alice and bob get her leave.
    let killed = tokio::time::Instant::now();
    insts[2].kill();
    drop(c);
    let leave_a = expect_events(&mut a, "leave", &["carol"]).await;
    let took = killed.elapsed();
    expect_events(&mut b, "leave", &["carol"]).await;
    println!("presence: a killed instance's client left after {took:?} (TTL {TTL})");
    assert!(leave_a.iter().all(|l| l["user"] == "carol"));
    assert_eq!(users_in(&mut a, "room:1", 30).await, vec!["alice", "bob"]);
    insts.pop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_stays_intact_through_a_slot_migration_and_a_primary_failover() {
    let mut cluster = cluster(1).await;
    let file = ConfigFile::new(NAMESPACES);
    let builder = run(&cluster, &file);
    let insts = [
        builder.start(&[]).await,
        builder.start(&[]).await,
        builder.start(&[]).await,
    ];
    let prim = cluster.primaries().await.expect("primaries");
    let channel = cluster
        .channels_on(prim[0], "room", 1)
        .await
        .expect("channel")[0]
        .clone();
    let mut clients = Vec::new();
    for (i, user) in ["u0", "u1", "u2"].iter().enumerate() {
        let mut cl = Client::with_token(&insts[i].ws_url(""), &tok(user)).await;
        cl.subscribe(&channel, 1).await;
        clients.push(cl);
    }
    let all = vec!["u0".to_string(), "u1".into(), "u2".into()];
    assert_eq!(users_in(&mut clients[0], &channel, 2).await, all);

    cluster
        .migrate_slot(key_slot(&channel), prim[1])
        .await
        .expect("migrate");
    assert_eq!(cluster.owner_of(&channel).await.expect("owner"), prim[1]);
    assert_eq!(
        users_in(&mut clients[1], &channel, 3).await,
        all,
        "the keys moved with the slot"
    );

    cluster.kill_primary_of(&channel).await.expect("failover");
    // Whatever the promoted replica lacked, the instances' refresh writes again
    // (every TTL/3): asked until it is whole, within a generous deadline.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut id = 4;
    loop {
        id += 1;
        let seen = users_in(&mut clients[2], &channel, id).await;
        if seen == all {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "presence after the failover: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_members_are_counted_exactly_and_their_list_is_refused_above_the_cap() {
    let cluster = cluster(0).await;
    let file = ConfigFile::new(NAMESPACES);
    let builder = run(&cluster, &file);
    let insts = [
        builder.start(&[]).await,
        builder.start(&[]).await,
        builder.start(&[]).await,
    ];
    // 2500 users with two connections each, spread over the instances.
    let mut tasks = Vec::new();
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(64));
    for i in 0..5000usize {
        let url = insts[i % 3].ws_url("");
        let t = tok(&format!("user{}", i / 2));
        let gate = gate.clone();
        tasks.push(tokio::spawn(async move {
            let _p = gate.acquire_owned().await.expect("permit");
            let mut c = Client::with_token(&url, &t).await;
            c.subscribe("crowd:big", 1).await;
            c
        }));
    }
    let mut clients = Vec::new();
    for t in tasks {
        clients.push(t.await.expect("member"));
    }
    let r = clients[0]
        .request(json!({"op":"presence_stats","channel":"crowd:big"}), 2)
        .await;
    assert_eq!(
        (r["clients"].as_u64(), r["users"].as_u64()),
        (Some(5000), Some(2500)),
        "{r}"
    );
    let r = clients[1]
        .request(json!({"op":"presence","channel":"crowd:big"}), 3)
        .await;
    assert_eq!(r["code"], "too_many_members", "{r}");
    // A refresh later, still exact (the refresh re-asserts, it does not duplicate).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let r = clients[2]
        .request(json!({"op":"presence_stats","channel":"crowd:big"}), 4)
        .await;
    assert_eq!(
        (r["clients"].as_u64(), r["users"].as_u64()),
        (Some(5000), Some(2500)),
        "{r}"
    );
}
