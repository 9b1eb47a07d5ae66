//! The operator scripts in cluster/ do what README promises: a local cluster on
//! loopback, scaled out and in while a shardcast instance serves clients, and the
//! compose stack behind nginx. Both need the host tools `.ci/run` installs
//! (redis-server, docker.io, docker-compose, curl) and fail loudly without them.
//! The scripts run the testkit's `shardcast-cluster` CLI; this test builds it (debug)
//! and points them at it.

mod support;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::json;
use shardcast_testkit::ports::{free_cluster_ports, free_port};
use shardcast_testkit::{Shardcast, admin};
use support::{Client, eventually};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The testkit's CLI, built once per test process.
fn cluster_cli() -> &'static PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .current_dir(repo())
            .args([
                "build",
                "-q",
                "-p",
                "shardcast-testkit",
                "--no-default-features",
                "--bin",
                "shardcast-cluster",
            ])
            .status()
            .expect("run cargo build for shardcast-cluster");
        assert!(status.success(), "building shardcast-cluster failed");
        repo().join("target/debug/shardcast-cluster")
    })
}

/// Runs a script; panics with its output if it fails. Returns stdout.
fn script(name: &str, args: &[&str], env: &[(&str, String)]) -> String {
    let out = Command::new("bash")
        .arg(repo().join("cluster").join(name))
        .args(args)
        .env("SHARDCAST_CLUSTER_BIN", cluster_cli())
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run cluster/{name}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "cluster/{name} {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Masters serving slots, as the node at `port` sees it.
async fn masters(port: u16) -> usize {
    admin::primaries(&format!("127.0.0.1:{port}"))
        .await
        .expect("CLUSTER NODES")
        .len()
}

/// Sends `n` publications through `p` and expects each at `s`, in order.
async fn roundtrip(p: &mut Client, s: &mut Client, channels: &[String], round: u64) {
    for (i, ch) in channels.iter().enumerate() {
        let id = round * 1000 + i as u64;
        let r = p.publish(ch, json!(id), id).await;
        assert_eq!(r["op"], "ok", "{r}");
        let m = s.next_message().await;
        assert_eq!(
            (m["channel"].as_str(), m["data"].as_u64()),
            (Some(ch.as_str()), Some(id))
        );
    }
}

struct StopCluster(String);

impl Drop for StopCluster {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(repo().join("cluster/stop.sh"))
            .args(["--dir", &self.0])
            .env("SHARDCAST_CLUSTER_BIN", cluster_cli())
            .output();
    }
}

/// Whether `view` shows this instance holding something on the node at `port`.
fn holds_on(view: &serde_json::Value, port: u16) -> bool {
    view["subscriber_nodes"]
        .as_object()
        .is_some_and(|m| m.contains_key(&format!("127.0.0.1:{port}")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_cluster_scripts_scale_out_and_in_while_shardcast_serves() {
    // Room for 8 nodes (3+3, then a shard of 1+1) and their bus ports.
    let base = free_cluster_ports(8);
    let dir = std::env::temp_dir().join(format!("shardcast-ops-{}", std::process::id()));
    let dir = dir.to_string_lossy().into_owned();
    let _stop = StopCluster(dir.clone());
    let seeds = script(
        "start.sh",
        &["--base-port", &base.to_string(), "--dir", &dir],
        &[],
    );
    let seeds = seeds.trim().to_string();
    assert_eq!(
        seeds.split(',').count(),
        6,
        "3 primaries + 3 replicas: {seeds}"
    );
    assert_eq!(masters(base).await, 3);

    let inst = Shardcast::on_cluster(env!("CARGO_BIN_EXE_shardcast"), &seeds)
        .args(support::DEV.iter().copied())
        // The scripts run while the test's clients are not read (keepalive is not
        // what this test is about).
        .start(&["--topology-interval", "1s", "--ping-interval", "600s"])
        .await;
    let mut s = inst.client("s").await;
    let mut p = inst.client("p").await;
    let channels: Vec<String> = (0..30).map(|i| format!("ops:{i}")).collect();
    s.subscribe_all(&channels, 0).await;
    roundtrip(&mut p, &mut s, &channels, 1).await;

    let new_port = base + 6;
    script(
        "add-shard.sh",
        &[
            "--dir",
            &dir,
            "--port",
            &new_port.to_string(),
            "--replicas",
            "1",
        ],
        &[],
    );
    assert_eq!(masters(base).await, 4, "a fourth primary serves slots");
    eventually(
        "a subscription on the new shard",
        Duration::from_secs(30),
        || async {
            if holds_on(&inst.cluster_view().await, new_port) {
                Ok(())
            } else {
                Err("none yet".into())
            }
        },
    )
    .await;
    roundtrip(&mut p, &mut s, &channels, 2).await;

    script(
        "remove-shard.sh",
        &["--dir", &dir, "--port", &new_port.to_string()],
        &[],
    );
    assert_eq!(masters(base).await, 3);
    eventually(
        "no subscription left on the removed shard",
        Duration::from_secs(30),
        || async {
            if holds_on(&inst.cluster_view().await, new_port) {
                Err("still there".into())
            } else {
                Ok(())
            }
        },
    )
    .await;
    roundtrip(&mut p, &mut s, &channels, 3).await;
}

struct ComposeDown(Vec<(&'static str, String)>);

impl Drop for ComposeDown {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(repo().join("cluster/compose-down.sh"))
            .envs(self.0.iter().map(|(k, v)| (*k, v.as_str())))
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_stack_serves_websockets_through_nginx_on_a_six_node_cluster() {
    let port = free_port();
    let env = vec![
        (
            "COMPOSE_PROJECT_NAME",
            format!("sctest{}", std::process::id()),
        ),
        ("SHARDCAST_HTTP_PORT", port.to_string()),
    ];
    let _down = ComposeDown(env.clone());
    let url = script("compose-up.sh", &[env!("CARGO_BIN_EXE_shardcast")], &env);
    assert_eq!(url.trim(), format!("http://127.0.0.1:{port}"));

    // Six clients through nginx (least_conn) land on the three instances; every one
    // gets every message, and each instance holds the channel once in Redis.
    let ws = format!("ws://127.0.0.1:{port}/ws");
    let mut subs = Vec::new();
    for i in 0..6 {
        let mut c = Client::connect(&format!("{ws}?user=s{i}")).await;
        c.subscribe("compose:room", 1).await;
        subs.push(c);
    }
    let mut p = Client::connect(&format!("{ws}?user=p")).await;
    for n in 0..20u64 {
        assert_eq!(
            p.publish("compose:room", json!(n), 100 + n).await["op"],
            "ok"
        );
    }
    for c in &mut subs {
        for n in 0..20u64 {
            assert_eq!(c.next_message().await["data"].as_u64(), Some(n));
        }
    }
    let r = support::http::get(&format!("http://127.0.0.1:{port}/api/cluster")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["broker"], "redis-cluster");
    let shards = v["shards"].as_array().map(Vec::len);
    assert_eq!(shards, Some(3), "{v}");
    assert!(
        v["shards"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["replicas"].as_array().map(Vec::len) == Some(1)),
        "3 primaries with a replica each: {v}"
    );
    // SHARDNUMSUB on the channel's owner, asked inside the compose network.
    let owner = v["shards"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| {
            let slot = shardcast_testkit::key_slot("compose:room");
            s["slots"].as_array().is_some_and(|r| {
                r.iter().any(|pair| {
                    let (a, b) = (pair[0].as_u64().unwrap_or(1), pair[1].as_u64().unwrap_or(0));
                    (a..=b).contains(&u64::from(slot))
                })
            })
        })
        .and_then(|s| s["primary"].as_str())
        .expect("an owner of the channel's slot")
        .to_string();
    let (host, rport) = owner.rsplit_once(':').expect("ip:port");
    let out = Command::new("docker-compose")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .current_dir(repo())
        .args([
            "-f",
            "docker-compose.cluster.yml",
            "exec",
            "-T",
            "redis-1",
            "redis-cli",
            "-h",
            host,
            "-p",
            rport,
        ])
        .args(["PUBSUB", "SHARDNUMSUB", "compose:room"])
        .output()
        .expect("docker-compose exec");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        text.lines().map(str::trim).collect::<Vec<_>>(),
        vec!["compose:room", "3"],
        "three instances subscribed once each: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
