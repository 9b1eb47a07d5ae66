//! `storm`: every client dropped at once, then reconnected and resubscribed.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::cli::Cli;
use crate::load::{Ws, connect, request};
use crate::meter::Meter;
use crate::report::write_json;

#[derive(Serialize)]
struct StormReport {
    clients: usize,
    channels: usize,
    resubscribed: usize,
    all_resubscribed_ms: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// Server CPU (the `--server-pid` processes) per reconnect: handshake, identity
    /// (token verification with `--token-secret`), session setup and subscribe.
    server_cpu_us_per_connect: f64,
}

pub async fn storm(cli: &Cli, clients: usize, channels: usize) -> Result<(), String> {
    let urls = cli.url.clone();
    let secret = cli.token_secret.clone();
    let subscribe_all = |round: u32| {
        let urls = urls.clone();
        let secret = secret.clone();
        async move {
            let gate = Arc::new(Semaphore::new(1024));
            let started = Instant::now();
            let mut tasks = Vec::new();
            for i in 0..clients {
                let url = crate::cli::client_url(
                    secret.as_deref(),
                    &urls[i % urls.len()],
                    &format!("storm-{i}"),
                );
                let gate = gate.clone();
                tasks.push(tokio::spawn(async move {
                    let _permit = gate.acquire_owned().await.map_err(|e| e.to_string())?;
                    let mut ws = connect(&url).await?;
                    let ch = format!("storm:{}", i % channels.max(1));
                    request(
                        &mut ws,
                        serde_json::json!({"op":"subscribe","channel":ch}),
                        round as u64,
                    )
                    .await?;
                    Ok::<(Ws, Duration), String>((ws, started.elapsed()))
                }));
            }
            let mut out = Vec::new();
            for t in tasks {
                if let Ok(Ok(v)) = t.await {
                    out.push(v);
                }
            }
            (out, started.elapsed())
        }
    };
    let (first, _) = subscribe_all(1).await;
    let connected = first.len();
    drop(first); // every client drops at once
    // The servers' work for the disconnects is not the reconnects' cost.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let meter = Meter::start(&cli.server_pid);
    let (second, total) = subscribe_all(2).await;
    let (cpu, _, _, _) = meter.finish();
    let mut times: Vec<f64> = second
        .iter()
        .map(|(_, d)| d.as_secs_f64() * 1000.0)
        .collect();
    times.sort_by(|a, b| a.total_cmp(b));
    let q = |p: f64| {
        times
            .get(((times.len() as f64 * p) as usize).min(times.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0.0)
    };
    let r = StormReport {
        clients,
        channels,
        resubscribed: second.len(),
        all_resubscribed_ms: total.as_secs_f64() * 1000.0,
        p50_ms: q(0.5),
        p99_ms: q(0.99),
        server_cpu_us_per_connect: cpu * 1e6 / second.len().max(1) as f64,
    };
    println!(
        "{:<28} {} (first connect: {connected})",
        "clients", r.clients
    );
    println!(
        "{:<28} {} of {} in {:.0} ms",
        "resubscribed", r.resubscribed, r.clients, r.all_resubscribed_ms
    );
    println!(
        "{:<28} p50 {:.0} ms  p99 {:.0} ms",
        "per client", r.p50_ms, r.p99_ms
    );
    println!(
        "{:<28} {:.1} µs per connect + subscribe",
        "server CPU", r.server_cpu_us_per_connect
    );
    write_json(cli, &r);
    Ok(())
}
