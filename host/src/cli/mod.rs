//! The `agent-relay` command line: one file per command group. `serve` (serve.rs), the
//! database's own commands `call`, `migrate` and `backup` (database.rs), `component` and `wit`
//! (component.rs), `settings` (settings.rs), and the agent verbs over HTTP (`crate::client`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use serde_json::Value as Json;

use agent_relay_core::calls::CallOptions;
use agent_relay_core::embed::{Options, PostgresOptions, Relay};
use agent_relay_core::postgres;
use agent_relay_core::runtime::{Clock, Limits};
use agent_relay_core::sqlite::{SqliteOptions, Synchronous};

mod component;
mod database;
mod serve;
pub mod settings;

use component::{ComponentArgs, component};
use database::{BackupArgs, CallArgs, CopyArgs, MigrateArgs, backup, call, copy, migrate};
use serve::{ServeArgs, serve};

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
    ///
    /// The operator token comes from RELAY_OPERATOR_TOKEN (at least 32 characters; the same on
    /// every host sharing a PostgreSQL database), else from the file `<db>.operator-token`
    /// beside the database, generated owner-only on first start.
    #[command(after_help = SERVE_ENVIRONMENT)]
    Serve(ServeArgs),
    /// Invoke one exported function as the operator and print its JSON result.
    ///
    /// ARGS is a JSON object keyed by the function's parameter names in camelCase, e.g.
    /// `agent-relay call send-message '{"input":{"from":"user","to":"alice","body":"hi"}}'`.
    /// `agent-relay call --list` shows every function and its parameters.
    Call(CallArgs),
    /// Create or upgrade the database schema and print the versions and steps (with `--dry-run`
    /// nothing is created or changed).
    Migrate(MigrateArgs),
    /// Read and change the settings stored in the database (as the operator: whoever can open
    /// the file), each with the value in effect and its source.
    ///
    /// Stored settings hold for every run; `--setting KEY=VALUE` on `serve` or `call` applies to
    /// that run only and is never stored. Keys: stale-ttl-ms, default-lease-ms, max-lease-ms,
    /// max-attempts, retry-backoff-ms, page-bytes, webhook-secret:SOURCE (a secret: never
    /// printed), and fault-injection (one run only, never stored).
    #[command(after_help = crate::client::EXIT_CODES)]
    Settings(settings::SettingsArgs),
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
    /// Copy a relay into a new database: SQLite file to PostgreSQL, or back, or file to file.
    ///
    /// Every table, ids and their sequences included, read in one snapshot and written in one
    /// transaction; the target must be new (a file that does not exist, a database without the
    /// relay's tables) and the source at the current schema. A relay still serving the source
    /// goes on: what it writes after the snapshot is not in the copy, so stop it to move.
    ///
    /// `agent-relay copy --from agent-relay.db --to postgres://relay@db.internal/relay`
    Copy(CopyArgs),
    #[command(flatten)]
    Agent(crate::client::Verb),
}

#[derive(Debug, Args)]
struct DbArgs {
    /// The SQLite database file (only `serve` and `migrate` create a missing one; the other
    /// commands refuse it), or a PostgreSQL database as a URL,
    /// `postgres://USER[:PASSWORD]@HOST[:PORT]/DB[?sslmode=require]` (the database must exist;
    /// every relay host sharing it needs the same RELAY_OPERATOR_TOKEN).
    #[arg(long, env = "RELAY_DB", default_value = "agent-relay.db")]
    db: PathBuf,
    /// PostgreSQL only: connections in this host's pool (plus one that listens for the other
    /// hosts' writes).
    #[arg(long, env = "RELAY_DB_POOL", default_value_t = 8)]
    db_pool: u32,
    /// PostgreSQL only, for measurements: run write calls one after another on the write lane
    /// (as on SQLite) instead of side by side on the pool.
    #[arg(long, hide = true)]
    db_write_lane: bool,
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
    /// Mark each message read as soon as it is pushed to the session (by default a pushed
    /// message is marked read only when the agent answers, claims or completes it).
    #[arg(long)]
    mark_read: bool,
    /// Push at most this many messages a second; the rest are told in one summary.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    max_per_second: u32,
    /// Relay Claude Code's tool approvals to the human (`user`) through the relay and hand the
    /// verdict back (declares `claude/channel/permission`).
    #[arg(long)]
    permissions: bool,
    /// An approval nobody answers in this many seconds expires (the terminal still asks).
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    approval_timeout_secs: u64,
    /// With an agent's token, ask the relay `whoami` this often so it keeps the agent seen
    /// (tests shorten it).
    #[arg(long, hide = true, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    keepalive_secs: u64,
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
        Command::Settings(command) => settings::run(&command),
        Command::Watch(args) => crate::client::watch::run(&crate::client::watch::Watch {
            url: args.url,
            agent: args.agent,
            token: args.token,
            since: args.since,
        }),
        Command::Mcp(args) => mcp_stdio(&args),
        Command::Wit => {
            crate::stdout::say_raw!("{}", agent_relay_core::runtime::CONTRACT);
            Ok(ExitCode::SUCCESS)
        }
        Command::Component(args) => component(&args),
        Command::Backup(args) => backup(&args),
        Command::Copy(args) => copy(&args),
        Command::Agent(verb) => Ok(crate::client::run(verb)),
    };
    result.unwrap_or_else(|error| {
        eprintln!("agent-relay: {error:#}");
        if error.downcast_ref::<Usage>().is_some()
            || error
                .downcast_ref::<crate::mcp::stdio::TokenRefused>()
                .is_some()
        {
            crate::client::Exit::Usage.into()
        } else {
            ExitCode::FAILURE
        }
    })
}

/// What `serve --help` says about the environment, after the flags.
const SERVE_ENVIRONMENT: &str = "Environment: RELAY_OPERATOR_TOKEN sets the operator token \
(at least 32 characters, e.g. `openssl rand -hex 32`; then no token file is written); without \
it the token is read from, or generated into, `<db>.operator-token` beside the database \
(owner-only). RELAY_DB, RELAY_LISTEN, RELAY_DB_POOL and RELAY_SYNCHRONOUS stand for their flags.";

/// A command called the wrong way (a database that is not there, a missing token): exit code 2,
/// as the agent verbs' usage errors.
#[derive(Debug)]
pub(crate) struct Usage(pub String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

/// Refuses a SQLite database that is not there, or that this user may not read: every command
/// but `serve` and `migrate` works on a relay that exists, and creating an empty one where the
/// operator mistyped a path (or ran in another directory) would hide the mistake. A PostgreSQL
/// URL is the server's to check.
///
/// # Errors
/// No file at `path` (a [`Usage`] error), or one this user may not read.
fn existing_database(path: &Path) -> anyhow::Result<()> {
    existing_database_of(path, "--db or RELAY_DB")
}

/// As [`existing_database`], naming the flag that gives the database (`copy --from`).
fn existing_database_of(path: &Path, flag: &str) -> anyhow::Result<()> {
    if is_postgres(path) {
        return Ok(());
    }
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => Err(Usage(format!(
            "{} is a folder, not a database: give the relay's database file with {flag}",
            shown(path).display()
        ))
        .into()),
        Ok(_) => readable(path),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Err(Usage(format!(
            "there is no database at {}: give the relay's database with {flag} (only \
             `agent-relay serve` and `agent-relay migrate` create one)",
            shown(path).display()
        ))
        .into()),
        Err(error) => Err(unreachable_database(path, &error)),
    }
}

/// For `serve` and `migrate`, which create a missing database: a file this user may not read,
/// or a folder it may not enter, is named with the cause before SQLite answers with its own
/// "unable to open database file".
fn database_access(path: &Path) -> anyhow::Result<()> {
    if is_postgres(path) {
        return Ok(());
    }
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => readable(path),
        Ok(_) => existing_database(path),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(unreachable_database(path, &error)),
    }
}

/// Opens the file for reading once, to name the cause when this user may not.
fn readable(path: &Path) -> anyhow::Result<()> {
    match std::fs::File::open(path) {
        Ok(_) => Ok(()),
        Err(error) => Err(unreachable_database(path, &error)),
    }
}

fn unreachable_database(path: &Path, error: &std::io::Error) -> anyhow::Error {
    if error.kind() == std::io::ErrorKind::PermissionDenied {
        anyhow::anyhow!(
            "cannot open the database {}: permission denied (it belongs to another user, or its \
             folder is closed to this one): run the command as the user the relay runs as, \
             e.g. `sudo -u agent-relay agent-relay ...`",
            shown(path).display()
        )
    } else {
        anyhow::anyhow!(
            "cannot open the database {}: {error}",
            shown(path).display()
        )
    }
}

/// A path as the user should see it in an error: absolute, so a command run in the wrong
/// directory says where it looked.
fn shown(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
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
        postgres: PostgresOptions::default()
            .with_pool_size(args.db_pool)
            .with_concurrent_writes(!args.db_write_lane),
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
    database_access(&args.db)?;
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
        tracing::info!(db = %db_path(&args.db).display(), from = %report["fromVersion"], to = %report["toVersion"], "database schema upgraded");
    }
    Ok(relay)
}

fn mcp_stdio(args: &McpArgs) -> anyhow::Result<ExitCode> {
    if args
        .token
        .as_deref()
        .is_none_or(|token| token.trim().is_empty())
    {
        return Err(Usage(
            "set RELAY_TOKEN to the agent's token (agent-relay agent token ID makes one; in \
             .mcp.json: \"env\": {\"RELAY_TOKEN\": \"${RELAY_TOKEN}\"} passes the terminal's)"
                .to_owned(),
        )
        .into());
    }
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let options = crate::mcp::stdio::StdioOptions {
        url: args.url.clone(),
        token: args.token.clone(),
        channel: crate::mcp::channel::ChannelOptions {
            mark_read: args.mark_read,
            per_second: args.max_per_second,
            permissions: args.permissions,
            approval_timeout: std::time::Duration::from_secs(args.approval_timeout_secs),
        },
        keepalive: std::time::Duration::from_secs(args.keepalive_secs),
    };
    tokio.block_on(crate::mcp::stdio::serve(&options))?;
    Ok(ExitCode::SUCCESS)
}

/// How logs name the database: the SQLite file's full path, or the URL without its password.
fn db_path(path: &Path) -> PathBuf {
    if let Some(url) = path.to_str().filter(|db| postgres::is_url(db)) {
        return PathBuf::from(postgres::redact(url));
    }
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned())
}

/// Whether `--db` names a PostgreSQL database rather than a SQLite file.
fn is_postgres(path: &Path) -> bool {
    path.to_str().is_some_and(postgres::is_url)
}

/// `--synchronous`: the names the core's [`Synchronous`] takes, listed in `--help`.
fn synchronous() -> impl clap::builder::TypedValueParser<Value = Synchronous> {
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(Synchronous::NAMES)
        .try_map(|name: String| name.parse::<Synchronous>())
}
