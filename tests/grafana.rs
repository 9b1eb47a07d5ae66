//! The Grafana dashboard shipped in `cluster/grafana/shardcast.json` queries only
//! metrics that an instance exports: every `shardcast_*` name in its expressions
//! is in a real instance's `/metrics` (on one Redis, with a subscription, so that
//! the Redis series exist), with the label values its filters name.

mod support;

use std::collections::BTreeSet;

use serde_json::Value;
use shardcast_testkit::RedisServer;
use support::cluster::on_redis;

/// Every `expr` in the dashboard (panels, nested rows, template variables).
fn expressions(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("expr" | "query", Value::String(s)) => out.push(s.clone()),
                    (_, x) => expressions(x, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| expressions(x, out)),
        _ => {}
    }
}

/// The `shardcast_*` metric names in an expression.
fn names(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = expr;
    while let Some(i) = rest.find("shardcast_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

#[test]
fn names_are_read_from_expressions() {
    let got = names(
        r#"sum(rate(shardcast_messages_out_total{instance=~"$i"}[1m])) / shardcast_connections"#,
    );
    assert_eq!(
        got.into_iter().collect::<Vec<_>>(),
        vec!["shardcast_connections", "shardcast_messages_out_total"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_grafana_dashboard_queries_is_exported() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("cluster/grafana/shardcast.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    expressions(&dashboard, &mut exprs);
    let wanted: BTreeSet<String> = exprs.iter().flat_map(|e| names(e)).collect();
    assert!(
        wanted.len() >= 20,
        "the dashboard queries {} metrics: {wanted:?}",
        wanted.len()
    );

    let redis = RedisServer::builder()
        .start()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let inst = on_redis(&redis.url(), &[]).start(&[]).await;
    let mut c = inst.client("u").await;
    c.subscribe("room:1", 1).await;
    assert_eq!(
        c.publish("room:1", serde_json::json!({"n": 1}), 2).await["op"],
        "ok"
    );
    c.next_message().await;
    let scrape = support::eventually(
        "the Redis node gauge",
        std::time::Duration::from_secs(10),
        || async {
            let s = inst.metrics().await;
            if s.has("shardcast_redis_node_subscriptions") {
                Ok(s)
            } else {
                Err("no shardcast_redis_node_subscriptions yet".to_string())
            }
        },
    )
    .await;
    let missing: Vec<&String> = wanted.iter().filter(|n| !scrape.has(n)).collect();
    assert!(
        missing.is_empty(),
        "queried by the dashboard, not in /metrics: {missing:?}"
    );
}
