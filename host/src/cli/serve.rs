//! `agent-relay serve`: the HTTP server over the database, its reaper timer and its shutdown on
//! SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use serde_json::Value as Json;

use crate::connections::{self, ConnectionLimits};
use crate::http::{self, App, HttpOptions};
use agent_relay_core::bridge;
use agent_relay_core::calls::{CallOptions, Caller, Calls};
use agent_relay_core::embed::Options;
use agent_relay_core::runtime::Clock;
use agent_relay_core::token;

use super::{DbArgs, RunSettingArgs, db_path, is_postgres, open_with, options};

#[derive(Debug, Args)]
pub(super) struct ServeArgs {
    #[command(flatten)]
    db: DbArgs,
    #[command(flatten)]
    run: RunSettingArgs,
    /// Address to listen on. Keep it on loopback unless a TLS proxy is in front.
    #[arg(long, env = "RELAY_LISTEN", default_value = "127.0.0.1:8787")]
    listen: SocketAddr,
    /// Run the reaper (stale agents offline, expired claims released) this often, in seconds.
    #[arg(long, default_value_t = 30)]
    reap_interval_secs: u64,
    /// Largest request body accepted, in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    max_body_bytes: usize,
    /// Calls running at once; further requests wait, then get 503.
    #[arg(long, default_value_t = 32)]
    max_concurrent_calls: usize,
    /// How long a request waits for a free call slot before it is answered 503, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    queue_timeout_ms: u64,
    /// The longest a long-poll (`inbox?wait=SECONDS`) may be held, in seconds.
    #[arg(long, default_value_t = 300)]
    max_wait_secs: u64,
    /// How often an idle event stream sends a keep-alive comment, in seconds.
    #[arg(long, default_value_t = 15)]
    keep_alive_secs: u64,
    /// Messages a reader of the operator stream (`GET /v1/stream`) may fall behind by; past
    /// it the stream sends `event: reload` and ends, so a slow reader never grows the server.
    #[arg(long, default_value_t = 1000)]
    operator_stream_backlog: usize,
    /// Also serve `GET /metrics` on this address, open (no token), for a Prometheus that
    /// scrapes without the operator token; keep it on loopback or a private network.
    #[arg(long, env = "RELAY_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// Testing only: expose `POST /v1/test/clock {"advanceMs": N}` (operator) to move time.
    #[arg(long)]
    test_clock: bool,
    /// A request head must be complete this long after its first byte, in milliseconds (slow
    /// senders are closed).
    #[arg(long, default_value_t = 10_000)]
    header_timeout_ms: u64,
    /// A connection with no request in flight is closed after this long, in milliseconds (held
    /// long-polls and event streams are not idle).
    #[arg(long, default_value_t = 60_000)]
    idle_timeout_ms: u64,
    /// On SIGTERM or SIGINT, how long open requests get to finish, in milliseconds (held
    /// long-polls answer at once and event streams end; then the process exits 0).
    #[arg(long, default_value_t = 10_000)]
    shutdown_grace_ms: u64,
    /// While requests wait, how often to look for commits by other processes (another `serve`,
    /// `agent-relay call`) on the same database, in milliseconds.
    #[arg(long, default_value_t = 200)]
    other_writers_ms: u64,
    /// Open connections one peer address may hold; beyond it a new one is answered 503.
    #[arg(long, default_value_t = 512)]
    max_connections_per_peer: usize,
    /// Open connections in total (cut to the open files limit, less some for the database);
    /// beyond it a new one is answered 503.
    #[arg(long, default_value_t = 4096)]
    max_connections: usize,
    /// A `Host` name `/mcp` accepts besides loopback, e.g. `relay.example.com` or
    /// `relay.example.com:8787` (repeatable); others are refused against DNS rebinding.
    #[arg(long = "mcp-allowed-host", value_name = "HOST")]
    mcp_allowed_hosts: Vec<String>,
}

pub(super) fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    // A short RELAY_OPERATOR_TOKEN is refused before the database is opened (or created).
    token::check_environment()?;
    let options = Options {
        calls: CallOptions {
            max_concurrent_calls: args.max_concurrent_calls.max(1),
            queue_timeout: Duration::from_millis(args.queue_timeout_ms),
            note_activity: true,
        },
        ..options(&args.db, &args.run, Clock::default())?
    };
    // Every host sharing a PostgreSQL database must accept the same operator token: one from
    // the environment, never one generated beside a file (docs/operations.md).
    if is_postgres(&args.db.db) && !token::from_environment() {
        anyhow::bail!(
            "a relay on PostgreSQL takes its operator token from RELAY_OPERATOR_TOKEN, the same on \
             every host sharing {}; set it (e.g. `export RELAY_OPERATOR_TOKEN=$(openssl rand -hex 32)`) \
             and start again",
            db_path(&args.db.db).display()
        );
    }
    let calls = Arc::clone(open_with(&args.db, options)?.calls());
    let (operator_token, source) = token::load_or_create(&args.db.db)?;
    match &source {
        token::Source::Environment => {
            tracing::info!("operator token taken from RELAY_OPERATOR_TOKEN")
        }
        token::Source::File(path) => tracing::info!(file = %path.display(), "operator token read"),
        token::Source::Generated(path) => {
            tracing::info!(file = %path.display(), "operator token generated (owner-only file)");
        }
    }
    if !args.listen.ip().is_loopback() {
        tracing::warn!(listen = %args.listen, "serving beyond loopback: tokens travel in clear text unless a TLS proxy is in front");
    }
    let limits = connection_limits(&args);
    let options = HttpOptions {
        max_body_bytes: args.max_body_bytes,
        max_wait: Duration::from_secs(args.max_wait_secs),
        keep_alive: Duration::from_secs(args.keep_alive_secs.max(1)),
        operator_stream_backlog: args.operator_stream_backlog,
        test_clock: args.test_clock,
        connections: limits,
        mcp_allowed_hosts: args.mcp_allowed_hosts,
    };
    // Calls run on blocking threads, at most `max_concurrent_calls` at once; a pool no larger
    // keeps a burst of woken waiters from starting a thread each.
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(calls.options().max_concurrent_calls + 4)
        .build()?;
    let reaping = reaper(
        Arc::clone(&calls),
        Duration::from_secs(args.reap_interval_secs.max(1)),
    );
    let app = App::new(
        Arc::clone(&calls),
        token::OperatorToken::new(&operator_token),
        options,
    );
    tokio.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("listening on {}", args.listen))?;
        tracing::info!(db = %db_path(&args.db.db).display(), listen = %listener.local_addr()?, "agent-relay serving");
        tokio::spawn(reaping?);
        if let Some(address) = args.metrics_listen {
            let metrics = tokio::net::TcpListener::bind(address)
                .await
                .with_context(|| format!("listening for metrics on {address}"))?;
            tracing::info!(metrics = %metrics.local_addr()?, "metrics served without a token");
            // Ends with the runtime, after the main server has shut down.
            tokio::spawn(connections::serve(
                metrics,
                http::metrics_router(Arc::clone(&app)),
                limits,
                std::future::pending(),
            ));
        }
        tokio::spawn(
            Arc::clone(&calls).watch_other_writers(Duration::from_millis(
                args.other_writers_ms.max(10),
            )),
        );
        http::serve_on(app, listener, shutdown(Arc::clone(&calls))).await
    })?;
    drop(tokio);
    // The write lane commits what it still holds when the last handle goes; then the file closes.
    drop(calls);
    tracing::info!("agent-relay stopped");
    Ok(ExitCode::SUCCESS)
}

/// Descriptors kept for the database, the component cache and the logs, beyond connections.
const RESERVED_FILES: u64 = 64;

/// The connection limits from the flags, the total cut to what the open files limit allows (it
/// is raised to the hard limit first).
fn connection_limits(args: &ServeArgs) -> ConnectionLimits {
    let mut total = args.max_connections.max(1);
    if let Some(files) = connections::raise_open_files_limit() {
        let room = usize::try_from(files.saturating_sub(RESERVED_FILES).max(1)).unwrap_or(total);
        if room < total {
            tracing::warn!(
                open_files = files,
                max_connections = room,
                "the open files limit allows fewer connections than --max-connections"
            );
            total = room;
        }
    }
    ConnectionLimits {
        header_timeout: Duration::from_millis(args.header_timeout_ms.max(1)),
        idle_timeout: Duration::from_millis(args.idle_timeout_ms.max(1)),
        max_per_peer: args.max_connections_per_peer.max(1),
        max_total: total,
        shutdown_grace: Duration::from_millis(args.shutdown_grace_ms),
    }
}

/// Completes on SIGINT or SIGTERM (what systemd, Docker and Kubernetes send), after telling the
/// runner to close: held requests answer, streams end, and the connections can finish.
async fn shutdown(calls: Arc<Calls>) {
    let signal = wait_for_stop().await;
    tracing::info!(
        signal,
        "shutting down: no new connections; open requests finish"
    );
    calls.close();
}

#[cfg(unix)]
async fn wait_for_stop() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        let _ = tokio::signal::ctrl_c().await;
        return "SIGINT";
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

#[cfg(not(unix))]
async fn wait_for_stop() -> &'static str {
    let _ = tokio::signal::ctrl_c().await;
    "ctrl-c"
}

/// The reaper: runs the `reap` export on a timer, logging what it changed. It goes through the
/// runner's one reaper entry (`calls/reaper.rs`), as `POST /v1/reap` does: the calls agents made
/// are recorded first, and a round whose recording failed does not run.
///
/// # Errors
/// The component has no `reap` export.
fn reaper(
    calls: Arc<Calls>,
    every: Duration,
) -> anyhow::Result<impl std::future::Future<Output = ()>> {
    let export = calls
        .runtime()
        .export("reap")
        .context("the relay component has no reap export")?
        .clone();
    Ok(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            reap(&calls, &export).await;
        }
    })
}

async fn reap(calls: &Arc<Calls>, export: &agent_relay_core::runtime::Export) {
    let answer = calls.run(export, vec![Caller::Operator.to_val()]).await;
    match answer.and_then(|value| bridge::outcome(&value)) {
        Ok(report) => {
            let offline = report
                .get("offlineAgents")
                .and_then(Json::as_array)
                .map_or(0, Vec::len);
            let released = report
                .get("releasedClaims")
                .and_then(Json::as_u64)
                .unwrap_or(0);
            if offline > 0 || released > 0 {
                tracing::info!(%report, "reaper");
            }
        }
        Err(error) => {
            tracing::warn!(message = %error.message, "reaper round failed; no agent was taken offline by it");
        }
    }
}
