//! The `agent-relay` command line: `serve`, `call`, `migrate`, `wit`, `component`, and the agent
//! verbs over HTTP (`crate::client`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use serde_json::Value as Json;

use crate::connections::{self, ConnectionLimits};
use crate::http::{self, App, HttpOptions};
use agent_relay_core::bindings::StoreError;
use agent_relay_core::bridge;
use agent_relay_core::calls::{CallOptions, Caller, Calls};
use agent_relay_core::embed::{self, Options, Relay};
use agent_relay_core::runtime::{COMPONENT, Clock, Limits, Runtime};
use agent_relay_core::sqlite::{SqliteOptions, Synchronous};
use agent_relay_core::store::{Access, Backend, Session};
use agent_relay_core::token;

#[derive(Debug, Parser)]
#[command(
    name = "agent-relay",
    version,
    about = "The relay through which coding agents, their humans, chat bridges and orchestrators \
             exchange messages and hand out work with leases.",
    long_about = None,
    after_help = crate::client::EXIT_CODES
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log level or filter (`error`, `warn`, `info`, `debug`, `trace`, or e.g.
    /// `agent_relay=debug,tower_http=warn`); else `RUST_LOG`, else `RELAY_LOG`, else `info`.
    #[arg(long, global = true, value_name = "FILTER")]
    log_level: Option<String>,
    /// `text` for people, `json` for log shippers (one JSON object a line).
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
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
    Migrate(MigrateArgs),
    /// Read and change the settings stored in the database (as the operator: whoever can open
    /// the file), each with the value in effect and its source.
    ///
    /// Stored settings hold for every run; `--setting KEY=VALUE` on `serve` or `call` applies to
    /// that run only and is never stored. Keys: stale-ttl-ms, default-lease-ms, max-lease-ms,
    /// max-attempts, page-bytes, webhook-secret:SOURCE (a secret: never printed), and
    /// fault-injection (one run only, never stored).
    #[command(after_help = crate::client::EXIT_CODES)]
    Settings(crate::settings::SettingsArgs),
    /// Print an agent's messages as they arrive, one JSON object a line, from a running relay.
    ///
    /// Follows `GET /v1/agents/AGENT/stream` and reconnects after a drop, resuming after the
    /// last message printed (`Last-Event-ID`), so nothing is lost or printed twice.
    Watch(WatchArgs),
    /// Serve the relay's MCP tools over stdio, for MCP clients that only spawn processes.
    ///
    /// Calls the running relay's `/mcp` over HTTP with the token, so every agent shares one
    /// server: `agent-relay mcp --url http://127.0.0.1:8787` with `RELAY_TOKEN` set.
    Mcp(McpArgs),
    /// Print the WIT contract the relay component implements.
    Wit,
    /// Write the relay component (.wasm) this binary embeds, for other hosts (this binary compiles
    /// it without its post-return functions, which instances that serve one call never need).
    ///
    /// `agent-relay component --out relay.wasm`; `--signatures` writes the exports' parameter and
    /// result types as JSON instead (what a host in another language needs for a JSON bridge).
    Component(ComponentArgs),
    /// Write a consistent copy of the database while the relay may be running (SQLite's online
    /// backup: every committed write, including what is still in the WAL), owner-only (0600).
    ///
    /// `agent-relay backup --db agent-relay.db --out backups/relay-$(date +%F).db`; restore by
    /// stopping the relay and putting the copy in the database's place (see docs/operations.md).
    Backup(BackupArgs),
    #[command(flatten)]
    Agent(crate::client::Verb),
}

#[derive(Debug, Args)]
struct BackupArgs {
    /// The database to copy (it must exist).
    #[arg(long, env = "RELAY_DB", default_value = "agent-relay.db")]
    db: PathBuf,
    /// The file to write; refused when it already exists.
    #[arg(long)]
    out: PathBuf,
}

#[derive(Debug, Args)]
struct ComponentArgs {
    /// Testing only: write (or describe) this build of the component instead of the embedded one.
    #[arg(long, value_name = "WASM", hide = true)]
    component: Option<PathBuf>,
    /// The file to write; standard output when absent.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Write the exports' signatures as JSON instead of the component.
    #[arg(long)]
    signatures: bool,
}

#[derive(Debug, Args)]
struct DbArgs {
    /// The SQLite database file (created when missing).
    #[arg(long, env = "RELAY_DB", default_value = "agent-relay.db")]
    db: PathBuf,
    /// PRAGMA synchronous: `full` keeps every acknowledged write across a crash or power loss.
    #[arg(long, env = "RELAY_SYNCHRONOUS", default_value = "full", value_parser = synchronous())]
    synchronous: Synchronous,
    /// Stop any single call after this many milliseconds.
    #[arg(long, default_value_t = 5000)]
    call_timeout_ms: u64,
    /// Linear memory one call's instance may use, in MiB.
    #[arg(long, default_value_t = 64)]
    memory_limit_mib: usize,
    /// Linear memory all calls in flight may hold together, in MiB: a read that would pass it
    /// waits for memory to be given back, a write is answered 503.
    #[arg(long, default_value_t = 256)]
    calls_memory_mib: usize,
    /// Cap the database at this many pages (PRAGMA max_page_count); writes beyond it get 507.
    #[arg(long)]
    max_db_pages: Option<u64>,
    /// Testing only: run this build of the component instead of the embedded one (the tests'
    /// build with the fault-injection exports).
    #[arg(long, value_name = "WASM", hide = true)]
    component: Option<PathBuf>,
}

/// Settings for one run (`serve`, `call`), never written to the database.
#[derive(Debug, Default, Args)]
struct RunSettingArgs {
    /// Use this relay setting for this run only, e.g. `--setting stale-ttl-ms=60000`
    /// (repeatable). Nothing is written: a later run without the flag uses the stored value or
    /// the default. To store a setting for every run: `agent-relay settings set KEY VALUE`.
    #[arg(long = "setting", value_name = "KEY=VALUE", value_parser = parse_setting)]
    settings: Vec<(String, String)>,
}

#[derive(Debug, Args)]
struct MigrateArgs {
    #[command(flatten)]
    db: DbArgs,
    /// Only say which version the database is at and which steps an upgrade would run.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Debug, Args)]
struct ServeArgs {
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

#[derive(Debug, Args)]
struct WatchArgs {
    /// The agent whose inbox to follow.
    agent: String,
    /// The relay's address.
    #[arg(long, env = "RELAY_URL", default_value = "http://127.0.0.1:8787")]
    url: String,
    /// The agent's token (or the operator's).
    #[arg(long, env = "RELAY_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Start after this message id (default: the whole inbox).
    #[arg(long)]
    since: Option<i64>,
}

#[derive(Debug, Args)]
struct McpArgs {
    /// The running relay's address.
    #[arg(long, env = "RELAY_URL", default_value = "http://127.0.0.1:8787")]
    url: String,
    /// The agent's token (or the operator's, to act as `user`).
    #[arg(long, env = "RELAY_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

#[derive(Debug, Args)]
struct CallArgs {
    #[command(flatten)]
    db: DbArgs,
    #[command(flatten)]
    run: RunSettingArgs,
    /// List the exported functions and their parameters instead of calling one.
    #[arg(long)]
    list: bool,
    /// The exported function, e.g. `send-message`.
    #[arg(required_unless_present = "list")]
    export: Option<String>,
    /// Its arguments as a JSON object (default `{}`).
    args: Option<String>,
    /// Call through the relay running at this address instead of opening the file (its writes
    /// then wake that relay's waiters), e.g. `--url http://127.0.0.1:8787`.
    #[arg(long, conflicts_with = "list")]
    url: Option<String>,
    /// With --url: the token to call with (the operator's, or an agent's).
    #[arg(long, env = "RELAY_TOKEN", hide_env_values = true, requires = "url")]
    token: Option<String>,
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
    init_logs(cli.log_level.as_deref(), cli.log_format);
    let result = match cli.command {
        Command::Serve(args) => serve(args),
        Command::Call(args) => call(args),
        Command::Migrate(args) => migrate(&args),
        Command::Settings(command) => crate::settings::run(&command),
        Command::Watch(args) => crate::client::watch::run(&crate::client::watch::Watch {
            url: args.url,
            agent: args.agent,
            token: args.token,
            since: args.since,
        }),
        Command::Mcp(args) => mcp_stdio(&args),
        Command::Wit => {
            print!("{}", agent_relay_core::runtime::CONTRACT);
            Ok(ExitCode::SUCCESS)
        }
        Command::Component(args) => component(&args),
        Command::Backup(args) => backup(&args),
        Command::Agent(verb) => Ok(crate::client::run(verb)),
    };
    result.unwrap_or_else(|error| {
        eprintln!("agent-relay: {error:#}");
        ExitCode::FAILURE
    })
}

/// Logs to standard error, filtered by `--log-level`, `RUST_LOG` or `RELAY_LOG` (first given wins).
fn init_logs(level: Option<&str>, format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let given = level
        .map(str::to_owned)
        .or_else(|| std::env::var("RUST_LOG").ok())
        .or_else(|| std::env::var("RELAY_LOG").ok())
        .filter(|text| !text.trim().is_empty())
        // rmcp logs three info lines for every MCP request: at most warn unless it is named.
        .map(|text| {
            if text.contains("rmcp") || matches!(text.trim(), "error" | "off") {
                text
            } else {
                format!("{text},rmcp=warn")
            }
        });
    let filter = match given.as_deref().map(EnvFilter::try_new) {
        Some(Ok(filter)) => filter,
        Some(Err(error)) => {
            eprintln!("agent-relay: ignoring the log filter ({error}); logging at info");
            EnvFilter::new("info,rmcp=warn")
        }
        None => EnvFilter::new("info,rmcp=warn"),
    };
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => logs.json().flatten_event(true).init(),
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
}

/// How the database and the component are opened.
fn options(args: &DbArgs, settings: &RunSettingArgs, clock: Clock) -> anyhow::Result<Options> {
    Ok(Options {
        limits: Limits::default()
            .with_memory_bytes(args.memory_limit_mib << 20)
            .with_calls_memory_bytes(args.calls_memory_mib << 20)
            .with_call_timeout(Duration::from_millis(args.call_timeout_ms)),
        sqlite: SqliteOptions {
            synchronous: args.synchronous,
            max_pages: args.max_db_pages,
            ..SqliteOptions::default()
        },
        settings: settings.settings.clone(),
        clock,
        calls: CallOptions::default(),
        component: args.component.as_deref().map(read_component).transpose()?,
    })
}

fn read_component(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading the component {}", path.display()))
}

fn open(args: &DbArgs, settings: &RunSettingArgs, clock: Clock) -> anyhow::Result<Relay> {
    open_with(args, options(args, settings, clock)?)
}

fn open_with(args: &DbArgs, options: Options) -> anyhow::Result<Relay> {
    let started = Instant::now();
    let relay = Relay::open(&args.db, options)?;
    tracing::debug!(elapsed = ?started.elapsed(), "relay opened");
    let report = relay.schema_report();
    let steps = report
        .get("steps")
        .and_then(Json::as_array)
        .map_or(0, Vec::len);
    if let Some(backup) = relay.backup() {
        tracing::info!(backup = %backup.display(), "the database as it was before the upgrade was backed up");
    }
    if steps > 0 {
        tracing::info!(db = %args.db.display(), from = %report["fromVersion"], to = %report["toVersion"], "database schema upgraded");
    }
    Ok(relay)
}

fn migrate(args: &MigrateArgs) -> anyhow::Result<ExitCode> {
    if args.dry_run {
        let none = RunSettingArgs::default();
        let mut status = Relay::inspect(&args.db.db, options(&args.db, &none, Clock::default())?)?;
        status["dryRun"] = Json::Bool(true);
        println!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(ExitCode::SUCCESS);
    }
    let relay = open(&args.db, &RunSettingArgs::default(), Clock::default())?;
    let mut report = relay.schema_report().clone();
    if let Some(backup) = relay.backup() {
        report["backup"] = Json::String(backup.display().to_string());
    }
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(ExitCode::SUCCESS)
}

fn call(args: CallArgs) -> anyhow::Result<ExitCode> {
    if let Some(url) = args.url {
        let parsed: Json = serde_json::from_str(args.args.as_deref().unwrap_or("{}"))
            .context("ARGS is not valid JSON")?;
        let connection = crate::client::Connection {
            url,
            token: args.token,
            json: true,
        };
        return crate::client::call_remote(&connection, &args.export.unwrap_or_default(), &parsed);
    }
    let relay = open(&args.db, &args.run, Clock::default())?;
    if args.list {
        for export in relay.exports() {
            let params: Vec<String> = export
                .params
                .iter()
                .filter(|(name, _)| name != "caller")
                .map(|(name, _)| bridge::camel_case(name))
                .collect();
            println!(
                "{:<22} {:<21} {{{}}}",
                export.name,
                export.interface,
                params.join(", ")
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let name = args.export.unwrap_or_default();
    if relay.runtime().export(&name).is_none() {
        anyhow::bail!("no exported function {name}; `agent-relay call --list` shows them");
    }
    let text = args.args.unwrap_or_else(|| "{}".to_owned());
    let parsed: Json = serde_json::from_str(&text).context("ARGS is not valid JSON")?;
    if !parsed.is_object() {
        anyhow::bail!("ARGS must be a JSON object keyed by parameter name");
    }
    match relay.call_json(&name, &parsed) {
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

/// Writes the relay component (the bytes this binary embeds) or its exports' signatures.
fn component(args: &ComponentArgs) -> anyhow::Result<ExitCode> {
    let component = match &args.component {
        Some(path) => read_component(path)?,
        None => COMPONENT.to_vec(),
    };
    let bytes = if args.signatures {
        // The signatures come from the component's own types, so a runtime is needed.
        let runtime = Runtime::with_component(
            Arc::new(NoStore),
            Clock::default(),
            Limits::default().with_instances(1),
            &component,
        )?;
        let mut text =
            serde_json::to_string_pretty(&embed::signatures(runtime.exports().values()))?;
        text.push('\n');
        text.into_bytes()
    } else {
        component
    };
    match &args.out {
        Some(path) => write_no_follow(path, &bytes)?,
        None => {
            if !args.signatures && std::io::IsTerminal::is_terminal(&std::io::stdout()) {
                anyhow::bail!("the component is binary; give --out PATH or redirect stdout");
            }
            std::io::Write::write_all(&mut std::io::stdout(), &bytes)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes `bytes` to `path` (created, or replaced when it is a file), never through a symbolic
/// link: a link at `path` is refused (`O_NOFOLLOW`), so a link planted in a shared folder cannot
/// aim the write at another file.
fn write_no_follow(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NOFOLLOW);
    let mut file = options.open(path).map_err(|error| {
        if path.symlink_metadata().is_ok_and(|m| m.is_symlink()) {
            anyhow::anyhow!(
                "{} is a symbolic link; give the path of a file (links are not followed)",
                path.display()
            )
        } else {
            anyhow::Error::new(error).context(format!("writing {}", path.display()))
        }
    })?;
    std::io::Write::write_all(&mut file, bytes)
        .with_context(|| format!("writing {}", path.display()))
}

/// Copies the database with SQLite's online backup into a new owner-only file: created `0600`
/// (`O_CREAT|O_EXCL|O_NOFOLLOW`, missing folders `0700`) before SQLite writes into it, never
/// over an existing file nor through a symbolic link (docs/security.md).
fn backup(args: &BackupArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        args.db.is_file(),
        "{} does not exist (give the relay's database with --db)",
        args.db.display()
    );
    let started = Instant::now();
    let source = agent_relay_core::sqlite::Sqlite::open(&args.db, SqliteOptions::default())?;
    source.backup_to(&args.out)?;
    let bytes = std::fs::metadata(&args.out).map_or(0, |m| m.len());
    tracing::info!(db = %db_path(&args.db).display(), out = %args.out.display(), bytes, elapsed = ?started.elapsed(), "backup written");
    Ok(ExitCode::SUCCESS)
}

/// A backend for runs that never call the component.
struct NoStore;

impl Backend for NoStore {
    fn begin(&self, _: Access) -> Result<Box<dyn Session>, StoreError> {
        Err(StoreError::Other("no database is open".to_owned()))
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let options = Options {
        calls: CallOptions {
            max_concurrent_calls: args.max_concurrent_calls.max(1),
            queue_timeout: Duration::from_millis(args.queue_timeout_ms),
            note_activity: true,
        },
        ..options(&args.db, &args.run, Clock::default())?
    };
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
    let options = HttpOptions {
        max_body_bytes: args.max_body_bytes,
        max_wait: Duration::from_secs(args.max_wait_secs),
        keep_alive: Duration::from_secs(args.keep_alive_secs.max(1)),
        test_clock: args.test_clock,
        connections: connection_limits(&args),
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

fn mcp_stdio(args: &McpArgs) -> anyhow::Result<ExitCode> {
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    tokio.block_on(crate::mcp::stdio::serve(&args.url, args.token.as_deref()))?;
    Ok(ExitCode::SUCCESS)
}

fn db_path(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned())
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

/// `--synchronous`: the names the core's [`Synchronous`] takes, listed in `--help`.
fn synchronous() -> impl clap::builder::TypedValueParser<Value = Synchronous> {
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(Synchronous::NAMES)
        .try_map(|name: String| name.parse::<Synchronous>())
}
