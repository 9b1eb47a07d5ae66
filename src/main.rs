//! The `shardcast` binary: parse flags, set up logging, run the server until a
//! signal. `shardcast token ...` mints a token instead (for development, tests and
//! the README).

use clap::Parser;
use shardcast::auth::token::{mint_hs256, mint_pem, now_secs};
use shardcast::config::{Config, LogFormat};
use tracing_subscriber::EnvFilter;

/// jemalloc rather than glibc malloc: at 50,000 idle connections it held each in
/// 0.9x the memory, with no more CPU per delivery on the low-rate path (log entry 22
/// of docs/BENCHMARKS.md). Only the binary sets it, behind the default `jemalloc`
/// feature: the library leaves the choice to whoever embeds it.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read once at its start (the `_RJEM_MALLOC_CONF` environment
/// variable still overrides them). A connect storm leaves memory behind: every
/// handshake in flight holds hyper's 8 KiB read buffer until its upgrade, and
/// jemalloc keeps the freed pages, by default returning them only as later
/// allocations come through. A background thread returns them after a second
/// instead, so an instance's resident memory follows the connections it holds
/// (log entry 23: 6.78 -> 6.24 KiB per idle connection at 50,000; no measurable
/// change in CPU per delivery at low rate).
#[cfg(feature = "jemalloc")]
#[allow(non_upper_case_globals)]
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static malloc_conf: &[u8; 60] =
    b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

fn main() -> std::process::ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == "token") {
        return token(args);
    }
    let config = Config::from_args(args).unwrap_or_else(|e| e.exit());
    // Every client is a socket, and a soft open-file limit of 1024 (a common default)
    // would cap an instance near a thousand clients: raise it to the hard limit, the
    // most an unprivileged process may. Reported once logging is up.
    let open_files = rlimit::increase_nofile_limit(u64::MAX);
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(n) = config.worker_threads {
        runtime.worker_threads(n.max(1));
    }
    match runtime.build() {
        Ok(rt) => rt.block_on(serve(config, open_files)),
        Err(e) => {
            eprintln!("shardcast: cannot start the runtime: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config, open_files: std::io::Result<u64>) -> std::process::ExitCode {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match config.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
    match open_files {
        Ok(limit) => tracing::info!(limit, "open-file limit (one per client, plus a few)"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }

    let listener = match shardcast::server::listen(config.listen, config.listen_backlog) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(addr = %config.listen, error = %e, "cannot listen");
            return std::process::ExitCode::FAILURE;
        }
    };
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    tracing::info!(%addr, broker = ?config.broker, "shardcast listening");

    match shardcast::server::run(listener, config, signal()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "shardcast failed");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `shardcast token`: a connection token (or, with `--channel`, a subscription
/// token) signed with the configured HMAC secret or a PEM private key.
#[derive(Parser)]
#[command(
    name = "shardcast token",
    about = "Mint a connection or subscription token"
)]
struct TokenArgs {
    /// The user (`sub`); "" for an anonymous connection.
    #[arg(long)]
    user: String,
    /// Lifetime (`exp` = now + this).
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    ttl: std::time::Duration,
    /// Server-side subscriptions at connect (`channels`), comma separated.
    #[arg(long, value_delimiter = ',')]
    channels: Vec<String>,
    /// Public JSON attached to the client's publications and presence (`info`).
    #[arg(long)]
    info: Option<String>,
    /// Mint a subscription token for this channel instead.
    #[arg(long)]
    channel: Option<String>,
    /// Sign with this PEM private key (RSA, EC P-256 or Ed25519) instead of a secret.
    #[arg(long)]
    private_key: Option<std::path::PathBuf>,
    /// The algorithm for `--private-key`.
    #[arg(long, default_value = "RS256")]
    algorithm: String,
    /// The configuration file to take the secret, audience and issuer from.
    #[arg(long, env = "SHARDCAST_CONFIG")]
    config: Option<std::path::PathBuf>,
    /// The HMAC secret (default: the first configured one).
    #[arg(
        long,
        env = "SHARDCAST_TOKEN_HMAC_SECRET",
        value_delimiter = ',',
        hide_env_values = true
    )]
    token_hmac_secret: Vec<String>,
}

fn token(args: Vec<std::ffi::OsString>) -> std::process::ExitCode {
    let mut argv = args;
    argv.remove(1);
    let t = TokenArgs::parse_from(argv);
    let mut file_args = vec!["shardcast".to_string()];
    if let Some(c) = &t.config {
        file_args.push("--config".into());
        file_args.push(c.display().to_string());
    }
    let config = Config::from_args(file_args).unwrap_or_else(|e| e.exit());
    let mut claims = serde_json::json!({
        "sub": t.user,
        "iat": now_secs(),
        "exp": now_secs() + t.ttl.as_secs(),
    });
    if let Some(aud) = &config.auth.token_audience {
        claims["aud"] = aud.clone().into();
    }
    if let Some(iss) = &config.auth.token_issuer {
        claims["iss"] = iss.clone().into();
    }
    if let Some(channel) = &t.channel {
        claims["channel"] = channel.clone().into();
    } else if !t.channels.is_empty() {
        claims["channels"] = t.channels.clone().into();
    }
    if let Some(info) = &t.info {
        match serde_json::from_str::<serde_json::Value>(info) {
            Ok(v) => claims["info"] = v,
            Err(e) => {
                eprintln!("shardcast token: --info is not JSON: {e}");
                return std::process::ExitCode::FAILURE;
            }
        }
    }
    let minted = match &t.private_key {
        Some(path) => {
            let alg = match t.algorithm.parse() {
                Ok(a) => a,
                Err(_) => {
                    eprintln!("shardcast token: unknown algorithm {}", t.algorithm);
                    return std::process::ExitCode::FAILURE;
                }
            };
            std::fs::read(path)
                .map_err(|e| e.to_string())
                .and_then(|pem| mint_pem(&pem, alg, &claims).map_err(|e| e.to_string()))
        }
        None => {
            let secret = t.token_hmac_secret.first().cloned().or_else(|| {
                config
                    .auth
                    .token_hmac_secret
                    .first()
                    .map(|s| s.expose().to_string())
            });
            match secret {
                Some(s) => mint_hs256(&s, &claims).map_err(|e| e.to_string()),
                None => Err("no secret: pass --token-hmac-secret (or SHARDCAST_TOKEN_HMAC_SECRET, or a --config file with one), or --private-key".into()),
            }
        }
    };
    match minted {
        Ok(token) => {
            println!("{token}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("shardcast token: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// SIGINT or SIGTERM.
async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
