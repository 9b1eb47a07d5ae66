//! `saturate`: the offered rate steps up until p99 passes the limit or a delivery
//! is lost; then one more run at half of the last good rate, where the latency
//! target is stated (measured there, not read off the nearest step).

use crate::cli::{Cli, Load, Scenario};
use crate::load::run_load;
use crate::report::{Report, print_report, write_json};

pub struct Limits {
    /// Rate multiplier per step.
    pub factor: f64,
    pub p99_limit_ms: f64,
    pub max_rate: f64,
}

pub async fn run(cli: &Cli, scenario: Scenario, load: &Load, limits: Limits) -> Result<(), String> {
    let Limits {
        factor,
        p99_limit_ms,
        max_rate,
    } = limits;

    let mut steps = Vec::new();
    let mut rate = load.rate;
    let mut last_good: Option<Report> = None;
    while rate <= max_rate {
        let step = Load {
            rate,
            ..load.clone()
        };
        let r = run_load(cli, scenario, &step).await?;
        println!(
            "step {:>8.0} msg/s: {:>9.0} deliveries/s, p99 {:>7.2} ms, lost {}, server {:.2} µs/delivery, bench {:.2} cores",
            rate,
            r.delivered_per_sec,
            r.latency_ms_p99,
            r.lost,
            r.server_cpu_us_per_delivery,
            r.bench_cores_used
        );
        let good = r.lost == 0 && r.duplicated == 0 && r.latency_ms_p99 < p99_limit_ms;
        steps.push(r.clone());
        if !good {
            break;
        }
        last_good = Some(r);
        rate *= factor;
    }
    let mut half = None;
    match &last_good {
        Some(r) => {
            println!("--- last good step ---");
            print_report(r);
            // The latency target is stated at half of saturation: measure
            // exactly there rather than reading it off the nearest step.
            let step = Load {
                rate: r.offered_rate / 2.0,
                ..load.clone()
            };
            let h = run_load(cli, scenario, &step).await?;
            println!("--- half of the last good rate ---");
            print_report(&h);
            half = Some(h);
        }
        None => println!("no step met the limits"),
    }
    write_json(
        cli,
        &serde_json::json!({"last_good": last_good, "steps": steps, "half": half}),
    );
    Ok(())
}
