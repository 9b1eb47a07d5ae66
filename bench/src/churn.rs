//! `churn`: clients subscribing and unsubscribing channels of a pool at a fixed
//! aggregate rate. Reports subscribe→ok latency, the rate sustained, server CPU per
//! operation and, given the Redis nodes, the SSUBSCRIBE/SUNSUBSCRIBE commands Redis
//! executed per operation (from `INFO commandstats`) and the Redis CPU per operation
//! (`INFO cpu`: what presence and join/leave cost Redis, with a namespace that has them).

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::cli::{ChurnArgs, Cli};
use crate::load::{Ws, connect};
use crate::meter::Meter;
use crate::report::write_json;

#[derive(Serialize, Debug, Default)]
pub struct ChurnReport {
    pub clients: usize,
    pub pool: usize,
    pub offered_ops_per_sec: f64,
    pub ops: u64,
    pub ops_per_sec: f64,
    pub errors: u64,
    pub subscribe_ms_p50: f64,
    pub subscribe_ms_p99: f64,
    pub subscribe_ms_max: f64,
    pub unsubscribe_ms_p50: f64,
    pub unsubscribe_ms_p99: f64,
    pub server_cpu_seconds: f64,
    pub server_cpu_us_per_op: f64,
    /// SSUBSCRIBE + SUNSUBSCRIBE commands Redis executed per operation (None: no --redis).
    pub redis_commands_per_op: Option<f64>,
    pub redis_ssubscribe_calls: u64,
    pub redis_sunsubscribe_calls: u64,
    /// Redis CPU (user + sys, every node given) per operation, µs.
    pub redis_cpu_us_per_op: Option<f64>,
    pub bench_cpu_seconds: f64,
}

/// What the Redis nodes report, summed.
#[derive(Debug, Clone, Copy, Default)]
struct RedisStats {
    ssubscribe: u64,
    sunsubscribe: u64,
    cpu_seconds: f64,
}

/// Calls of SSUBSCRIBE and SUNSUBSCRIBE and CPU seconds, summed over `nodes`.
async fn redis_stats(nodes: &[String]) -> Result<RedisStats, String> {
    let mut st = RedisStats::default();
    for n in nodes {
        let text: String =
            shardcast_testkit::admin::query(n, redis::cmd("INFO").arg("commandstats").arg("cpu"))
                .await
                .map_err(|e| e.to_string())?;
        for line in text.lines() {
            let calls = |l: &str| {
                l.split([':', ','])
                    .find_map(|f| f.strip_prefix("calls="))
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .unwrap_or(0)
            };
            let seconds = |l: &str| {
                l.split(':')
                    .nth(1)
                    .and_then(|v| v.trim().parse::<f64>().ok())
                    .unwrap_or(0.0)
            };
            if line.starts_with("cmdstat_ssubscribe:") {
                st.ssubscribe += calls(line);
            } else if line.starts_with("cmdstat_sunsubscribe:") {
                st.sunsubscribe += calls(line);
            } else if line.starts_with("used_cpu_sys:") || line.starts_with("used_cpu_user:") {
                st.cpu_seconds += seconds(line);
            }
        }
    }
    Ok(st)
}

/// One request and its answer's wait.
async fn roundtrip(ws: &mut Ws, frame: String, id: u64) -> Result<Duration, String> {
    let started = Instant::now();
    ws.send(Message::text(frame))
        .await
        .map_err(|e| e.to_string())?;
    let want = format!("\"id\":{id}");
    loop {
        match tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
            Ok(Some(Ok(Message::Text(t))))
                if t.contains(&want) && !t.contains("\"op\":\"message\"") =>
            {
                return if t.contains("\"op\":\"ok\"") {
                    Ok(started.elapsed())
                } else {
                    Err(t.to_string())
                };
            }
            Ok(Some(Ok(_))) => {}
            other => return Err(format!("no answer: {other:?}")),
        }
    }
}

struct ClientResult {
    sub: Histogram<u64>,
    unsub: Histogram<u64>,
    ops: u64,
    errors: u64,
}

pub async fn run(cli: &Cli, a: &ChurnArgs) -> Result<(), String> {
    let gate = Arc::new(Semaphore::new(256));
    let mut sockets = Vec::new();
    for i in 0..a.clients {
        let url = cli.client_url(&cli.url[i % cli.url.len()], &format!("churn-{i}"));
        let gate = gate.clone();
        sockets.push(tokio::spawn(async move {
            let _p = gate.acquire_owned().await.map_err(|e| e.to_string())?;
            connect(&url).await
        }));
    }
    let mut clients = Vec::new();
    for s in sockets {
        clients.push(s.await.map_err(|e| e.to_string())??);
    }
    let redis_before = if a.redis.is_empty() {
        None
    } else {
        Some(redis_stats(&a.redis).await?)
    };
    let meter = Meter::start(&cli.server_pid);
    let per_client = a.rate / a.clients.max(1) as f64;
    let duration = Duration::from_secs(a.duration);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (i, mut ws) in clients.into_iter().enumerate() {
        let pool = a.pool.max(1);
        tasks.push(tokio::spawn(async move {
            let mut r = ClientResult {
                sub: Histogram::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?,
                unsub: Histogram::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?,
                ops: 0,
                errors: 0,
            };
            let every = Duration::from_secs_f64(1.0 / per_client.max(1e-3));
            // Spread the clients' first operations over one period.
            let mut next = Instant::now() + every.mul_f64((i % 97) as f64 / 97.0);
            let mut rng = i as u64 * 2_654_435_761 + 1;
            let mut id = 0u64;
            while started.elapsed() < duration {
                tokio::time::sleep_until(next).await;
                next += every;
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let ch = format!("churn:{}", rng % pool as u64);
                id += 1;
                let sub = format!(r#"{{"op":"subscribe","channel":"{ch}","id":{id}}}"#);
                match roundtrip(&mut ws, sub, id).await {
                    Ok(d) => {
                        let _ = r.sub.record(d.as_micros().max(1) as u64);
                        r.ops += 1;
                    }
                    Err(_) => {
                        r.errors += 1;
                        continue;
                    }
                }
                tokio::time::sleep_until(next).await;
                next += every;
                id += 1;
                let unsub = format!(r#"{{"op":"unsubscribe","channel":"{ch}","id":{id}}}"#);
                match roundtrip(&mut ws, unsub, id).await {
                    Ok(d) => {
                        let _ = r.unsub.record(d.as_micros().max(1) as u64);
                        r.ops += 1;
                    }
                    Err(_) => r.errors += 1,
                }
            }
            let _ = ws.close(None).await;
            Ok::<ClientResult, String>(r)
        }));
    }
    let mut sub = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?;
    let mut unsub = sub.clone();
    let (mut ops, mut errors) = (0u64, 0u64);
    for t in tasks {
        let r = t.await.map_err(|e| e.to_string())??;
        sub.add(&r.sub).map_err(|e| e.to_string())?;
        unsub.add(&r.unsub).map_err(|e| e.to_string())?;
        ops += r.ops;
        errors += r.errors;
    }
    let secs = started.elapsed().as_secs_f64();
    let (cpu, own, _, _) = meter.finish();
    // Redis applies the last unsubscribes a moment after their `ok`.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (mut ss, mut su, mut per_op, mut redis_cpu) = (0, 0, None, None);
    if let Some(before) = redis_before {
        let after = redis_stats(&a.redis).await?;
        ss = after.ssubscribe.saturating_sub(before.ssubscribe);
        su = after.sunsubscribe.saturating_sub(before.sunsubscribe);
        per_op = Some((ss + su) as f64 / ops.max(1) as f64);
        redis_cpu = Some((after.cpu_seconds - before.cpu_seconds) * 1e6 / ops.max(1) as f64);
    }
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let r = ChurnReport {
        clients: a.clients,
        pool: a.pool,
        offered_ops_per_sec: a.rate,
        ops,
        ops_per_sec: ops as f64 / secs,
        errors,
        subscribe_ms_p50: ms(&sub, 0.5),
        subscribe_ms_p99: ms(&sub, 0.99),
        subscribe_ms_max: sub.max() as f64 / 1000.0,
        unsubscribe_ms_p50: ms(&unsub, 0.5),
        unsubscribe_ms_p99: ms(&unsub, 0.99),
        server_cpu_seconds: cpu,
        server_cpu_us_per_op: if ops > 0 { cpu * 1e6 / ops as f64 } else { 0.0 },
        redis_commands_per_op: per_op,
        redis_ssubscribe_calls: ss,
        redis_sunsubscribe_calls: su,
        redis_cpu_us_per_op: redis_cpu,
        bench_cpu_seconds: own,
    };
    println!(
        "{:<28} {} on a pool of {} channels",
        "clients", r.clients, r.pool
    );
    println!(
        "{:<28} {:.0} ops/s offered, {:.0} sustained ({} ops, {} errors)",
        "churn", r.offered_ops_per_sec, r.ops_per_sec, r.ops, r.errors
    );
    println!(
        "{:<28} p50 {:.2}  p99 {:.2}  max {:.2}",
        "subscribe -> ok ms", r.subscribe_ms_p50, r.subscribe_ms_p99, r.subscribe_ms_max
    );
    println!(
        "{:<28} p50 {:.2}  p99 {:.2}",
        "unsubscribe -> ok ms", r.unsubscribe_ms_p50, r.unsubscribe_ms_p99
    );
    println!(
        "{:<28} {:.2} s = {:.2} µs per op",
        "server CPU", r.server_cpu_seconds, r.server_cpu_us_per_op
    );
    if let Some(p) = r.redis_commands_per_op {
        println!(
            "{:<28} {:.3} per op ({} SSUBSCRIBE, {} SUNSUBSCRIBE)",
            "Redis commands", p, r.redis_ssubscribe_calls, r.redis_sunsubscribe_calls
        );
    }
    if let Some(c) = r.redis_cpu_us_per_op {
        println!("{:<28} {:.2} µs per op", "Redis CPU", c);
    }
    write_json(cli, &r);
    Ok(())
}
