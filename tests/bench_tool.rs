//! The benchmark tool measures what it claims: run against a real server, its
//! report must account for every publication and every delivery.

mod support;

use std::process::Command;

use support::TestServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_broadcast_report_accounts_for_every_delivery() {
    let server = TestServer::memory().await;
    let json = std::env::temp_dir().join(format!("shardcast-bench-{}.json", std::process::id()));
    let url = format!("ws://{}/ws", server.addr);
    let args: Vec<String> = [
        "--url",
        url.as_str(),
        "--server-pid",
        &std::process::id().to_string(),
        "--json",
        json.to_str().expect("utf-8 temp path"),
        "broadcast",
        "--clients",
        "20",
        "--rate",
        "200",
        "--duration",
        "1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_shardcast-bench"))
            .args(args)
            .output()
    })
    .await
    .expect("join")
    .expect("run shardcast-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("deliveries/s"), "human table: {stdout}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("json report")).expect("json");
    let published = report["published"].as_u64().expect("published");
    assert!(published >= 150, "about 200 msg/s for 1 s: {report}");
    assert_eq!(
        report["expected_deliveries"].as_u64(),
        Some(published * 20),
        "{report}"
    );
    assert_eq!(
        report["delivered"], report["expected_deliveries"],
        "{report}"
    );
    assert_eq!(
        (report["lost"].as_u64(), report["duplicated"].as_u64()),
        (Some(0), Some(0))
    );
    assert!(
        report["latency_ms_p99"].as_f64().is_some_and(|v| v > 0.0),
        "{report}"
    );
    assert!(
        report["server_cpu_seconds"]
            .as_f64()
            .is_some_and(|v| v > 0.0),
        "{report}"
    );
    let _ = std::fs::remove_file(&json);
    server.shutdown().await;
}
