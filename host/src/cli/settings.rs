//! `agent-relay settings`: the settings stored in the database, with operator authority (whoever
//! can open the file is the operator). Which keys exist, their defaults and their checks are the
//! component's (`settings-queries`, `settings-commands`); this only calls it and prints.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::{Value as Json, json};

use crate::client::Exit;
use agent_relay_core::embed::{Options, Relay};

/// `agent-relay settings [--db PATH] [--json] COMMAND`; the options may also follow the command.
#[derive(Debug, Args)]
pub struct SettingsArgs {
    #[command(subcommand)]
    command: SettingsCommand,
    #[command(flatten)]
    output: Output,
}

#[derive(Debug, Subcommand)]
pub enum SettingsCommand {
    /// Every setting with the value in effect and where it comes from (stored or default).
    List,
    /// One setting.
    Get(KeyArgs),
    /// Store a setting for every later run (one-run settings such as fault-injection are
    /// refused).
    Set(SetArgs),
    /// Remove a stored setting: its default applies again.
    Unset(KeyArgs),
}

#[derive(Debug, Args)]
pub struct Output {
    /// The relay's SQLite database file (it must exist: `agent-relay serve` or `migrate` creates
    /// it), or a PostgreSQL database as a URL.
    #[arg(
        long,
        global = true,
        env = "RELAY_DB",
        default_value = "agent-relay.db"
    )]
    db: std::path::PathBuf,
    /// Print JSON (for scripts) instead of one line per setting.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct KeyArgs {
    /// The setting, e.g. `stale-ttl-ms` or `webhook-secret:ci`.
    key: String,
}

#[derive(Debug, Args)]
pub struct SetArgs {
    /// The setting, e.g. `stale-ttl-ms` or `webhook-secret:ci`.
    key: String,
    /// Its value.
    value: String,
}

/// Runs one `settings` command against the database.
///
/// # Errors
/// The database cannot be opened.
pub fn run(args: &SettingsArgs) -> anyhow::Result<ExitCode> {
    let (command, output) = (&args.command, &args.output);
    super::existing_database(&output.db)?;
    let relay = Relay::open(&output.db, Options::default())?;
    let answer = match command {
        SettingsCommand::List => relay.call_json("list-relay-settings", &json!({})),
        SettingsCommand::Get(args) => {
            relay.call_json("get-relay-setting", &json!({"key": args.key}))
        }
        SettingsCommand::Set(args) => relay.call_json(
            "set-relay-setting",
            &json!({"key": args.key, "value": args.value}),
        ),
        SettingsCommand::Unset(args) => {
            relay.call_json("unset-relay-setting", &json!({"key": args.key}))
        }
    };
    match answer {
        Ok(answer) => {
            if output.json {
                crate::stdout::say!("{}", serde_json::to_string_pretty(&answer)?);
            } else {
                let settings = match answer {
                    Json::Array(settings) => settings,
                    one => vec![one],
                };
                for setting in &settings {
                    crate::stdout::say!("{}", line(setting));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            if output.json {
                crate::stdout::say!("{}", serde_json::to_string_pretty(&error.to_json())?);
            } else {
                eprintln!("agent-relay: {}", error.message);
            }
            let exit = match error.status {
                400 => Exit::Usage,
                404 => Exit::NotFound,
                _ => Exit::Error,
            };
            Ok(exit.into())
        }
    }
}

/// `KEY  VALUE  SOURCE`, and what the operator should know about it.
fn line(setting: &Json) -> String {
    let text = |field: &str| setting[field].as_str().unwrap_or("");
    let value = if setting["secret"] == true {
        if text("origin") == "default" {
            "(not set)".to_owned()
        } else {
            "(set)".to_owned()
        }
    } else {
        text("value").to_owned()
    };
    let mut line = format!("{:<28} {:<12} {}", text("key"), value, text("origin"));
    if setting["oneRun"] == true {
        line.push_str("  (one run only: --setting)");
    }
    if let Some(why) = setting["ignored"].as_str() {
        line.push_str(&format!("  (ignored: {why})"));
    }
    line
}
