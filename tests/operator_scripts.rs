//! The operator scripts in cluster/ do what README promises: a local cluster on
//! loopback, scaled out and in while a shardcast instance serves clients, and the
//! compose stack behind nginx. Both need the host tools `.ci/run` installs
//! (redis-server, redis-tools, docker.io, docker-compose, curl) and fail loudly
//! without them.

mod support;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;
use support::Client;
use support::cluster::{Instance, free_ports};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs a script; panics with its output if it fails. Returns stdout.
fn script(name: &str, args: &[&str], env: &[(&str, String)]) -> String {
    let out = Command::new("bash")
        .arg(repo().join("cluster").join(name))
        .args(args)
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

fn masters(port: u16) -> usize {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string(), "cluster", "nodes"])
        .output()
        .expect("redis-cli is required (apt-get install redis-tools)");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("master") && !l.contains("fail") && l.split_whitespace().count() > 8)
        .count()
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
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_cluster_scripts_scale_out_and_in_while_shardcast_serves() {
    // Room for 8 nodes (3+3, then a shard of 1+1) and their bus ports.
    let base = free_ports(8);
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
    assert_eq!(masters(base), 3);

    let inst = Instance::start(&seeds, &["--topology-interval", "1s"]).await;
    let mut s = inst.client("s").await;
    let mut p = inst.client("p").await;
    let channels: Vec<String> = (0..30).map(|i| format!("ops:{i}")).collect();
    for (i, ch) in channels.iter().enumerate() {
        s.subscribe(ch, i as u64).await;
    }
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
    assert_eq!(masters(base), 4, "a fourth primary serves slots");
    let expect = |view: &serde_json::Value| {
        view["subscriber_nodes"]
            .as_object()
            .is_some_and(|m| m.contains_key(&format!("127.0.0.1:{new_port}")))
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !expect(&inst.cluster_view().await) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no subscription moved to the new shard"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    roundtrip(&mut p, &mut s, &channels, 2).await;

    script(
        "remove-shard.sh",
        &["--dir", &dir, "--port", &new_port.to_string()],
        &[],
    );
    assert_eq!(masters(base), 3);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while expect(&inst.cluster_view().await) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "subscriptions stayed on the removed shard"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
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
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
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

    // Six clients through nginx land on the three instances; every one gets every message.
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
    let (status, body) =
        support::http("GET", &format!("http://127.0.0.1:{port}/api/cluster"), None).await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
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
}
