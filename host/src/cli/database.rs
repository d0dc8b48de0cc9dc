//! The commands that work on the database file itself, as the operator (whoever can open the
//! file): `call` (one export), `migrate` (the schema) and `backup` (a consistent copy).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context as _;
use clap::Args;
use serde_json::Value as Json;

use agent_relay_core::bridge;
use agent_relay_core::embed::Relay;
use agent_relay_core::runtime::Clock;
use agent_relay_core::sqlite::SqliteOptions;

use super::{DbArgs, RunSettingArgs, db_path, existing_database, open, options};

#[derive(Debug, Args)]
pub(super) struct BackupArgs {
    /// The database to copy (it must exist).
    #[arg(long, env = "RELAY_DB", default_value = "agent-relay.db")]
    db: PathBuf,
    /// The file to write; refused when it already exists.
    #[arg(long)]
    out: PathBuf,
}

#[derive(Debug, Args)]
pub(super) struct MigrateArgs {
    #[command(flatten)]
    db: DbArgs,
    /// Only say which version the database is at and which steps an upgrade would run.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Debug, Args)]
pub(super) struct CallArgs {
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

pub(super) fn migrate(args: &MigrateArgs) -> anyhow::Result<ExitCode> {
    if args.dry_run {
        // A dry run changes nothing, so it creates nothing either.
        existing_database(&args.db.db)?;
        let none = RunSettingArgs::default();
        let mut status = Relay::inspect(&args.db.db, options(&args.db, &none, Clock::default())?)?;
        status["dryRun"] = Json::Bool(true);
        crate::stdout::say!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(ExitCode::SUCCESS);
    }
    let relay = open(&args.db, &RunSettingArgs::default(), Clock::default())?;
    let mut report = relay.schema_report().clone();
    if let Some(backup) = relay.backup() {
        report["backup"] = Json::String(backup.display().to_string());
    }
    crate::stdout::say!("{}", serde_json::to_string_pretty(&report)?);
    Ok(ExitCode::SUCCESS)
}

pub(super) fn call(args: CallArgs) -> anyhow::Result<ExitCode> {
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
    if args.list {
        // The list is the component's, not the database's: no database is opened for it.
        let runtime = super::component::runtime_without_store(args.db.component.as_deref())?;
        for export in runtime.exports().values() {
            let params: Vec<String> = export
                .params
                .iter()
                .filter(|(name, _)| name != "caller")
                .map(|(name, _)| bridge::camel_case(name))
                .collect();
            crate::stdout::say!(
                "{:<22} {:<21} {{{}}}",
                export.name,
                export.interface,
                params.join(", ")
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    existing_database(&args.db.db)?;
    let relay = open(&args.db, &args.run, Clock::default())?;
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
            crate::stdout::say!("{}", serde_json::to_string_pretty(&json)?);
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            crate::stdout::say!("{}", serde_json::to_string_pretty(&error.to_json())?);
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Copies the database with SQLite's online backup into a new owner-only file: created `0600`
/// (`O_CREAT|O_EXCL|O_NOFOLLOW`, missing folders `0700`) before SQLite writes into it, never
/// over an existing file nor through a symbolic link (docs/security.md).
pub(super) fn backup(args: &BackupArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        !super::is_postgres(&args.db),
        "`backup` copies a SQLite file; back up a PostgreSQL database with its own tools \
         (pg_dump, or the managed service's snapshots: docs/operations.md)"
    );
    existing_database(&args.db)?;
    let started = Instant::now();
    let source = agent_relay_core::sqlite::Sqlite::open(&args.db, SqliteOptions::default())?;
    source.backup_to(&args.out)?;
    let bytes = std::fs::metadata(&args.out).map_or(0, |m| m.len());
    tracing::info!(db = %db_path(&args.db).display(), out = %args.out.display(), bytes, elapsed = ?started.elapsed(), "backup written");
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
pub(super) struct CopyArgs {
    /// The relay to copy: a SQLite file or a `postgres://` URL.
    #[arg(long)]
    from: PathBuf,
    /// The new database: a SQLite file that does not exist yet, or a `postgres://` URL of a
    /// database without the relay's tables.
    #[arg(long)]
    to: PathBuf,
}

/// Copies a relay into a new database and prints each table's rows on both sides.
pub(super) fn copy(args: &CopyArgs) -> anyhow::Result<ExitCode> {
    let text = |path: &PathBuf| {
        path.to_str()
            .map(str::to_owned)
            .with_context(|| format!("{} is not UTF-8", path.display()))
    };
    let (from, to) = (text(&args.from)?, text(&args.to)?);
    super::existing_database_of(&args.from, "--from")?;
    let started = Instant::now();
    let options = agent_relay_core::embed::Options::default();
    let report = agent_relay_core::copy::copy(&from, &to, &options)?;
    crate::stdout::say!(
        "{:<28} {:>12} {:>12}",
        "table",
        "source rows",
        "copied rows"
    );
    for table in &report.tables {
        crate::stdout::say!(
            "{:<28} {:>12} {:>12}",
            table.table,
            table.source_rows,
            table.target_rows
        );
    }
    let rows: u64 = report.tables.iter().map(|t| t.target_rows).sum();
    tracing::info!(from = %report.from, to = %report.to, tables = report.tables.len(), rows, elapsed = ?started.elapsed(), "relay copied");
    Ok(ExitCode::SUCCESS)
}
