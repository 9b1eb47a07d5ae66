//! The report of a load run, as a table and as JSON.

use serde::Serialize;

use crate::cli::Cli;

#[derive(Serialize, Debug, Default, Clone)]
pub struct Report {
    pub mode: String,
    pub clients: usize,
    pub instances: usize,
    pub offered_rate: f64,
    pub seconds: f64,
    pub published: u64,
    pub expected_deliveries: u64,
    pub delivered: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub errors: u64,
    pub delivered_per_sec: f64,
    pub latency_ms_p50: f64,
    pub latency_ms_p90: f64,
    pub latency_ms_p99: f64,
    pub latency_ms_max: f64,
    pub server_cpu_seconds: f64,
    pub server_cpu_us_per_delivery: f64,
    pub server_peak_rss_mib: f64,
    pub bench_cpu_seconds: f64,
    /// Cores the tool itself used on average; near the core count it is the bottleneck.
    pub bench_cores_used: f64,
    pub bench_is_bottleneck: bool,
}

pub fn print_report(r: &Report) {
    println!("{:<28} {}", "mode", r.mode);
    println!(
        "{:<28} {} on {} instance(s)",
        "clients", r.clients, r.instances
    );
    println!(
        "{:<28} {:.0} msg/s for {:.1} s ({} published)",
        "offered", r.offered_rate, r.seconds, r.published
    );
    println!(
        "{:<28} {:.0} deliveries/s ({} of {})",
        "delivered", r.delivered_per_sec, r.delivered, r.expected_deliveries
    );
    println!(
        "{:<28} {} lost, {} duplicated, {} error frames",
        "correctness", r.lost, r.duplicated, r.errors
    );
    println!(
        "{:<28} p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}",
        "latency ms", r.latency_ms_p50, r.latency_ms_p90, r.latency_ms_p99, r.latency_ms_max
    );
    println!(
        "{:<28} {:.2} s = {:.2} µs per delivery; peak RSS {:.1} MiB",
        "server CPU", r.server_cpu_seconds, r.server_cpu_us_per_delivery, r.server_peak_rss_mib
    );
    println!(
        "{:<28} {:.2} s ({:.2} cores){}",
        "bench CPU",
        r.bench_cpu_seconds,
        r.bench_cores_used,
        if r.bench_is_bottleneck {
            "  <-- the load generator is the bottleneck"
        } else {
            ""
        }
    );
}

pub fn write_json(cli: &Cli, value: &impl Serialize) {
    if let Some(path) = &cli.json {
        match serde_json::to_string_pretty(value) {
            Ok(text) => {
                if let Err(e) = std::fs::write(path, text) {
                    eprintln!("cannot write {path}: {e}");
                }
            }
            Err(e) => eprintln!("cannot serialize report: {e}"),
        }
    }
}
