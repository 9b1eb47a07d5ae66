//! Redis tests' pieces: the Redis Cluster (or one server, or Sentinel) and
//! instances of the binary under test, from shardcast-testkit, and the checks on
//! where an instance holds its subscriptions.

use std::time::Duration;

pub use shardcast_testkit::containers::{RedisCluster, key_slot};
pub use shardcast_testkit::delivery::{Load, Outcome, Report};
pub use shardcast_testkit::{Shardcast, ShardcastBuilder};

/// A 3×`replicas` cluster; a failure (Docker down, image missing) fails the test
/// with the reason.
pub async fn cluster(replicas: usize) -> RedisCluster {
    RedisCluster::builder()
        .replicas_per_primary(replicas)
        .start()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Instances of the binary under test on `cluster`, with [`super::DEV`] and `args` each.
pub fn instances(cluster: &RedisCluster, args: &[&str]) -> ShardcastBuilder {
    Shardcast::on_cluster(env!("CARGO_BIN_EXE_shardcast"), &cluster.seeds())
        .args(super::DEV.iter().copied())
        .args(args.iter().copied())
}

/// Instances on one Redis server at `url`, with [`super::DEV`] and `args` each.
pub fn on_redis(url: &str, args: &[&str]) -> ShardcastBuilder {
    Shardcast::on_redis(env!("CARGO_BIN_EXE_shardcast"), url)
        .args(super::DEV.iter().copied())
        .args(args.iter().copied())
}

/// Instances on the primary `sentinels` name, with [`super::DEV`] and `args` each.
pub fn on_sentinels(sentinels: &str, args: &[&str]) -> ShardcastBuilder {
    Shardcast::on_sentinels(env!("CARGO_BIN_EXE_shardcast"), sentinels)
        .args(super::DEV.iter().copied())
        .args(args.iter().copied())
}

/// `ws://…/ws?user=<name>` of an instance.
pub fn user_url(inst: &Shardcast, name: &str) -> String {
    inst.ws_url(&format!("?user={name}"))
}

/// Waits (up to 30 s) until every instance holds each of `channels` on exactly one
/// Redis node: the one that owns its slot now.
pub async fn wait_held_on_owners(
    cluster: &RedisCluster,
    instances: &[&Shardcast],
    channels: &[String],
) {
    super::eventually(
        "subscriptions on the slots' owners",
        Duration::from_secs(30),
        || async {
            let owners = cluster.view().await.map_err(|e| e.to_string())?.owners();
            let mut wrong = Vec::new();
            for inst in instances {
                let held = inst.held().await;
                for ch in channels {
                    let owner = owners
                        .get(&key_slot(ch))
                        .cloned()
                        .unwrap_or_else(|| "(unowned)".into());
                    let on: Vec<&String> = held
                        .iter()
                        .filter(|(_, chs)| chs.contains(ch))
                        .map(|(n, _)| n)
                        .collect();
                    if on != vec![&owner] {
                        wrong.push(format!("{} holds {ch} on {on:?}, owner {owner}", inst.addr));
                    }
                }
            }
            if wrong.is_empty() {
                Ok(())
            } else {
                Err(wrong.join("; "))
            }
        },
    )
    .await;
}

/// `SHARDNUMSUB` of `channels` on the node at `port`, read from Redis itself.
pub async fn numsub(
    cluster: &RedisCluster,
    port: u16,
    channels: &[String],
) -> std::collections::HashMap<String, i64> {
    cluster
        .shard_numsub(port, channels)
        .await
        .unwrap_or_else(|e| panic!("SHARDNUMSUB on {port}: {e}"))
}

/// Traffic on every instance: `subs` subscribers (`s<i>.<j>`) to all `channels` and
/// `pubs` publishers (`p<i>.<j>`) cycling through them every `every`.
pub async fn load_on_each(
    insts: &[Shardcast],
    subs: usize,
    pubs: usize,
    channels: &[String],
    every: Duration,
) -> Load {
    let mut load = Load::new();
    for (i, inst) in insts.iter().enumerate() {
        for j in 0..subs {
            let name = format!("s{i}.{j}");
            load.subscriber(&user_url(inst, &name), &name, channels)
                .await;
        }
    }
    for (i, inst) in insts.iter().enumerate() {
        for j in 0..pubs {
            let name = format!("p{i}.{j}");
            load.publisher(&user_url(inst, &name), &name, channels.to_vec(), every)
                .await;
        }
    }
    load
}

/// Every acknowledged publication reached every subscriber once, in order; nothing
/// malformed arrived and no publish failed.
pub fn assert_clean(what: &str, o: &Outcome) {
    println!("{what}: {o:?}");
    assert_eq!(
        (
            o.lost,
            o.duplicated,
            o.out_of_order,
            o.malformed,
            o.failed_publishes
        ),
        (0, 0, 0, 0, 0),
        "{what}: {o:?}"
    );
}
