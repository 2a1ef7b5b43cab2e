//! `meshguard-rls --limits limits.yaml [--listen 127.0.0.1:8083] [--redis URL | --memory]`

use meshguard_rls::{parse_limits, Limiter, Rls};
use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;

const USAGE: &str = "\
usage: meshguard-rls --limits FILE [--listen ADDR] [--redis URL | --memory]

Envoy's rate-limit service (envoy.service.ratelimit.v3.RateLimitService) over limitador.

  --limits FILE   limits in limitador-server's YAML format (required)
  --listen ADDR   gRPC address to bind (default 127.0.0.1:8083)
  --redis URL     counters in Redis, shared by every instance (default redis://127.0.0.1:6379)
  --memory        counters in this process only, instead of Redis

Redis must accept connections within 5 s of the start. While it is down, checks
answer UNAVAILABLE (Envoy's failure_mode_deny decides); they count again once it is back.

Exit codes: 0 after SIGTERM/SIGINT, 1 on a bad limits file or an unreachable Redis, 2 on bad usage.";

/// How long a starting service waits for Redis to accept connections.
const REDIS_STARTUP_WAIT: Duration = Duration::from_secs(5);

/// How long open connections get to finish after SIGTERM/SIGINT.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

#[derive(Debug)]
struct Args {
    listen: SocketAddr,
    limits: String,
    redis: Option<String>,
    memory: bool,
}

enum ArgsError {
    Help,
    Usage(String),
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, ArgsError> {
    let mut listen = None;
    let mut limits = None;
    let mut redis = None;
    let mut memory = false;
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => {
                (flag.to_string(), Some(value.to_string()))
            }
            _ => (arg, None),
        };
        let mut value = |name: &str| {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| ArgsError::Usage(format!("{name} needs a value")))
        };
        match flag.as_str() {
            "-h" | "--help" => return Err(ArgsError::Help),
            "--listen" => {
                let v = value("--listen")?;
                listen = Some(v.parse::<SocketAddr>().map_err(|e| {
                    ArgsError::Usage(format!("--listen {v:?}: {e} (want IP:PORT)"))
                })?);
            }
            "--limits" => limits = Some(value("--limits")?),
            "--redis" => redis = Some(value("--redis")?),
            "--memory" if inline.is_none() => memory = true,
            other => return Err(ArgsError::Usage(format!("unknown argument {other:?}"))),
        }
    }
    if memory && redis.is_some() {
        return Err(ArgsError::Usage(
            "--memory and --redis exclude each other".to_string(),
        ));
    }
    let limits = limits.ok_or_else(|| ArgsError::Usage("--limits is required".to_string()))?;
    Ok(Args {
        listen: listen.unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8083))),
        limits,
        redis,
        memory,
    })
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(ArgsError::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(ArgsError::Usage(message)) => {
            eprintln!("meshguard-rls: {message} (see --help)");
            return ExitCode::from(2);
        }
    };
    let text = match std::fs::read_to_string(&args.limits) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("meshguard-rls: reading {}: {e}", args.limits);
            return ExitCode::FAILURE;
        }
    };
    let limits = match parse_limits(&text) {
        Ok(limits) => limits,
        Err(e) => {
            eprintln!("meshguard-rls: {}: {e}", args.limits);
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("meshguard-rls: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args, limits)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("meshguard-rls: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args, limits: Vec<limitador::limit::Limit>) -> Result<(), String> {
    let count = limits.len();
    let (limiter, storage) = if args.memory {
        (Limiter::in_memory(limits), "memory")
    } else {
        let url = args
            .redis
            .unwrap_or_else(|| "redis://127.0.0.1:6379".to_string());
        (
            Limiter::redis(&url, limits, REDIS_STARTUP_WAIT).await?,
            "redis",
        )
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("binding {}: {e}", args.listen))?;
    let local = listener
        .local_addr()
        .map_err(|e| format!("binding {}: {e}", args.listen))?;
    eprintln!(
        "meshguard-rls: {count} limit(s) from {}, counters in {storage}",
        args.limits
    );
    println!("meshguard-rls listening on {local}");
    let _ = std::io::stdout().flush();

    let (signalled, grace) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        let name = shutdown_signal().await;
        eprintln!("meshguard-rls: {name}, shutting down");
        let _ = signalled.send(());
    };
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let server = Server::builder().serve_with_incoming_shutdown(
        Rls::new(limiter).into_server(),
        incoming,
        shutdown,
    );
    tokio::select! {
        served = server => served.map_err(|e| format!("serving: {e}")),
        _ = async {
            let _ = grace.await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => {
            eprintln!("meshguard-rls: connections still open after {SHUTDOWN_GRACE:?}, exiting");
            Ok(())
        }
    }
}

/// Waits for SIGTERM or SIGINT and names it.
async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => "SIGTERM",
                Ok(()) = tokio::signal::ctrl_c() => "SIGINT",
            }
        }
        Err(e) => {
            eprintln!("meshguard-rls: cannot watch SIGTERM ({e}); SIGINT still stops it");
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
            "SIGINT"
        }
    }
}
