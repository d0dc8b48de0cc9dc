//! The `agent-relay` command line: `serve`, `call`, `migrate`, `wit`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use serde_json::Value as Json;
use wasmtime::component::Val;

use crate::bridge::{self, Inputs};
use crate::http::{self, App, HttpOptions};
use crate::runtime::{Clock, Limits, Runtime};
use crate::sqlite::{self, Sqlite, SqliteOptions, Synchronous};
use crate::token;

#[derive(Debug, Parser)]
#[command(
    name = "agent-relay",
    version,
    about = "The relay through which coding agents, their humans, chat bridges and orchestrators \
             exchange messages and hand out work with leases.",
    long_about = None
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the relay's HTTP API (creates or upgrades the database first).
    Serve(ServeArgs),
    /// Invoke one exported function as the operator and print its JSON result.
    ///
    /// ARGS is a JSON object keyed by the function's parameter names in camelCase, e.g.
    /// `agent-relay call send-message '{"input":{"from":"user","to":"alice","body":"hi"}}'`.
    /// `agent-relay call --list` shows every function and its parameters.
    Call(CallArgs),
    /// Create or upgrade the database schema and print the versions and steps.
    Migrate(DbArgs),
    /// Print the WIT contract the relay component implements.
    Wit,
}

#[derive(Debug, Args)]
struct DbArgs {
    /// The SQLite database file (created when missing).
    #[arg(long, env = "RELAY_DB", default_value = "agent-relay.db")]
    db: PathBuf,
    /// PRAGMA synchronous: `full` keeps every acknowledged write across a crash or power loss.
    #[arg(long, value_enum, env = "RELAY_SYNCHRONOUS", default_value = "full")]
    synchronous: Synchronous,
    /// Set a relay setting before starting, e.g. `--setting stale-ttl-ms=60000` (repeatable).
    #[arg(long = "setting", value_name = "KEY=VALUE", value_parser = parse_setting)]
    settings: Vec<(String, String)>,
    /// Stop any single call after this many milliseconds.
    #[arg(long, default_value_t = 5000)]
    call_timeout_ms: u64,
    /// Linear memory one call's instance may use, in MiB.
    #[arg(long, default_value_t = 64)]
    memory_limit_mib: usize,
    /// Cap the database at this many pages (PRAGMA max_page_count); writes beyond it get 507.
    #[arg(long)]
    max_db_pages: Option<u64>,
}

#[derive(Debug, Args)]
struct ServeArgs {
    #[command(flatten)]
    db: DbArgs,
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
    /// Testing only: expose `POST /v1/test/clock {"advanceMs": N}` (operator) to move time.
    #[arg(long)]
    test_clock: bool,
}

#[derive(Debug, Args)]
struct CallArgs {
    #[command(flatten)]
    db: DbArgs,
    /// List the exported functions and their parameters instead of calling one.
    #[arg(long)]
    list: bool,
    /// The exported function, e.g. `send-message`.
    #[arg(required_unless_present = "list")]
    export: Option<String>,
    /// Its arguments as a JSON object (default `{}`).
    args: Option<String>,
}

fn parse_setting(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("expected KEY=VALUE, got {text}"))
}

/// Runs the command line.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RELAY_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = match cli.command {
        Command::Serve(args) => serve(args),
        Command::Call(args) => call(args),
        Command::Migrate(args) => migrate(&args),
        Command::Wit => {
            print!("{}", crate::runtime::CONTRACT);
            Ok(ExitCode::SUCCESS)
        }
    };
    result.unwrap_or_else(|error| {
        eprintln!("agent-relay: {error:#}");
        ExitCode::FAILURE
    })
}

fn operator() -> Val {
    Val::Variant("operator".to_owned(), None)
}

/// Opens the database, compiles the component and brings the schema up to date.
fn open(args: &DbArgs, clock: Clock) -> anyhow::Result<Runtime> {
    let options = SqliteOptions {
        synchronous: args.synchronous,
        max_pages: args.max_db_pages,
        ..SqliteOptions::default()
    };
    let backend = Sqlite::open(&args.db, options)?;
    for (key, value) in &args.settings {
        sqlite::write_setting(&backend, key, value)?;
    }
    let started = Instant::now();
    let limits = Limits {
        memory_bytes: args.memory_limit_mib << 20,
        call_timeout: Duration::from_millis(args.call_timeout_ms),
        ..Limits::default()
    };
    let runtime = Runtime::new(Arc::new(backend), clock, limits)?;
    tracing::debug!(elapsed = ?started.elapsed(), "relay component compiled");
    let report = run_migrate(&runtime)?;
    let steps = report
        .get("steps")
        .and_then(Json::as_array)
        .map_or(0, Vec::len);
    if steps > 0 {
        tracing::info!(db = %args.db.display(), from = %report["fromVersion"], to = %report["toVersion"], "database schema upgraded");
    }
    Ok(runtime)
}

fn run_migrate(runtime: &Runtime) -> anyhow::Result<Json> {
    let export = runtime
        .export("migrate")
        .context("the component has no migrate export")?;
    let value = runtime
        .call(export, &[operator()])
        .map_err(|f| anyhow::anyhow!("{f}"))?;
    bridge::outcome(&value).map_err(|e| anyhow::anyhow!("{}", e.message))
}

fn migrate(args: &DbArgs) -> anyhow::Result<ExitCode> {
    let runtime = open(args, Clock::default())?;
    // `open` applied any pending steps; a second run reports the version it found.
    let report = run_migrate(&runtime)?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(ExitCode::SUCCESS)
}

fn call(args: CallArgs) -> anyhow::Result<ExitCode> {
    let runtime = open(&args.db, Clock::default())?;
    if args.list {
        for export in runtime.exports().values() {
            let params: Vec<String> = export
                .params
                .iter()
                .filter(|(name, _)| name != "caller")
                .map(|(name, _)| bridge::camel_case(name))
                .collect();
            println!(
                "{:<22} {:<18} {{{}}}",
                export.name,
                export.interface,
                params.join(", ")
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let name = args.export.unwrap_or_default();
    let export = runtime.export(&name).with_context(|| {
        format!("no exported function {name}; `agent-relay call --list` shows them")
    })?;
    let text = args.args.unwrap_or_else(|| "{}".to_owned());
    let parsed: Json = serde_json::from_str(&text).context("ARGS is not valid JSON")?;
    let Json::Object(named) = parsed else {
        anyhow::bail!("ARGS must be a JSON object keyed by parameter name");
    };
    let inputs = Inputs {
        caller: Some(operator()),
        named: Some(&named),
        ..Inputs::default()
    };
    let args = match bridge::arguments(export, &inputs) {
        Ok(args) => args,
        Err(error) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&bridge::ErrorReply::invalid(error.0).to_json())?
            );
            return Ok(ExitCode::FAILURE);
        }
    };
    let value = runtime
        .call(export, &args)
        .map_err(|f| anyhow::anyhow!(http::failure_reply(&name, &f).message))?;
    match bridge::outcome(&value) {
        Ok(json) => {
            println!("{}", serde_json::to_string_pretty(&json)?);
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            println!("{}", serde_json::to_string_pretty(&error.to_json())?);
            Ok(ExitCode::FAILURE)
        }
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let runtime = open(&args.db, Clock::default())?;
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
    let options = HttpOptions {
        max_body_bytes: args.max_body_bytes,
        max_concurrent_calls: args.max_concurrent_calls.max(1),
        queue_timeout: Duration::from_millis(args.queue_timeout_ms),
        test_clock: args.test_clock,
    };
    let app = App::new(runtime, token::OperatorToken::new(&operator_token), options);
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    tokio.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("listening on {}", args.listen))?;
        tracing::info!(db = %db_path(&args.db.db).display(), listen = %listener.local_addr()?, "agent-relay serving");
        tokio::spawn(reaper(Arc::clone(&app), Duration::from_secs(args.reap_interval_secs.max(1))));
        http::serve_on(app, listener, shutdown()).await
    })?;
    Ok(ExitCode::SUCCESS)
}

fn db_path(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned())
}

async fn shutdown() {
    let _ = tokio::signal::ctrl_c().await;
    tracing::info!("shutting down");
}

/// Runs the reaper export on a timer, logging what it changed.
async fn reaper(app: Arc<App>, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        match app.invoke("reap", vec![operator()]).await {
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
            Err(error) => tracing::warn!(message = %error.message, "reaper failed"),
        }
    }
}
