//! shardcast-bench: drives shardcast instances over real WebSockets and reports
//! throughput, latency, loss, duplicates, server CPU per delivery and memory.
//!
//! Every payload carries the publisher's wall-clock timestamp (µs) and a per-channel
//! sequence number; subscribers record latency in HDR histograms and a bitmap of
//! the sequence numbers they saw. Server figures come from /proc of the PIDs given
//! with --server-pid; the tool reports its own CPU so that it is visible when the
//! load generator, not the server, is the bottleneck.
//!
//! Modules: [`cli`] (modes), [`load`] (one load step), [`meter`] (/proc), [`report`],
//! [`saturate`], [`storm`], [`churn`], [`idle`], [`wire`] (in-place frame reading),
//! [`floor`] (the reference server every figure is quoted beside).

mod churn;
mod cli;
mod floor;
mod idle;
mod load;
mod meter;
mod report;
mod saturate;
mod storm;
mod wire;

use clap::Parser;

use cli::{Cli, Mode, Scenario};
use report::{print_report, write_json};

async fn run(cli: Cli) -> Result<(), String> {
    match cli.mode.clone() {
        Mode::Broadcast(load) => {
            let r = load::run_load(&cli, Scenario::Broadcast, &load).await?;
            print_report(&r);
            write_json(&cli, &r);
        }
        Mode::Rooms(load) => {
            let r = load::run_load(&cli, Scenario::Rooms, &load).await?;
            print_report(&r);
            write_json(&cli, &r);
        }
        Mode::Saturate {
            scenario,
            load,
            factor,
            p99_limit_ms,
            max_rate,
        } => {
            saturate::run(
                &cli,
                scenario,
                &load,
                saturate::Limits {
                    factor,
                    p99_limit_ms,
                    max_rate,
                },
            )
            .await?
        }
        Mode::Idle {
            connections,
            hold,
            sources,
            procs,
            rooms,
        } => {
            let r = idle::run(idle::Plan {
                urls: &cli.url,
                opts: idle::Opts {
                    secret: cli.token_secret.clone(),
                    rooms,
                },
                pids: &cli.server_pid,
                connections,
                hold,
                sources,
                procs,
            })
            .await?;
            idle::print(&r);
            write_json(&cli, &r);
        }
        Mode::IdleWorker {
            first,
            count,
            sources,
            rooms,
        } => {
            let opts = idle::Opts {
                secret: cli.token_secret.clone(),
                rooms,
            };
            idle::worker(&cli.url, first, count, sources, &opts).await?
        }
        Mode::Storm { clients, channels } => storm::storm(&cli, clients, channels).await?,
        Mode::Churn(args) => churn::run(&cli, &args).await?,
        Mode::Floor { .. } => return Err("the floor runs on its own runtime".into()),
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // Each client is a socket; use as many as this process may (its hard limit).
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let result = match cli.mode {
        Mode::Floor {
            listen,
            worker_threads,
        } => floor::serve(listen, worker_threads),
        _ => tokio::runtime::Runtime::new()
            .map_err(|e| e.to_string())
            .and_then(|rt| rt.block_on(run(cli))),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shardcast-bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
