//! Several agents in one repository: `reserve` and `unreserve` (file reservations), `search`
//! (messages), and the commit guard (`guard install`, `guard check`), which asks the relay
//! whether a commit touches paths another agent holds (README, "Several agents in one
//! repository"). The relay decides what overlaps; this side finds the project and the paths.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use clap::{ArgAction, Args, Subcommand};
use serde_json::{Value as Json, json};

use super::relay::RelayClient;
use super::{Acting, Connection, Exit, Failure, Outcome, emit, millis, parse_duration, view};

/// The relay's limit on the paths one check may ask about.
const PATHS_PER_CHECK: usize = 10_000;

/// The name an existing `pre-commit` hook is kept under once the guard is chained before it.
const CHAINED_HOOK: &str = "pre-commit.before-agent-relay";

/// The line that marks a hook as the guard's.
const GUARD_MARK: &str = "# agent-relay guard";

#[derive(Debug, Args)]
pub struct ProjectArg {
    /// The repository's key on the relay: RELAY_PROJECT, else the `origin` remote's URL, else
    /// the name of the repository's top-level folder.
    #[arg(long, env = "RELAY_PROJECT")]
    pub project: Option<String>,
}

#[derive(Debug, Args)]
pub struct ReserveArgs {
    #[command(flatten)]
    pub acting: Acting,
    #[command(flatten)]
    pub project: ProjectArg,
    /// Paths or gitignore-style globs, relative to the repository's top level (`src/auth/**`).
    #[arg(required = true, value_name = "PATHS")]
    pub paths: Vec<String>,
    /// How long the reservation lasts (`30m`, `2h`; 1s to 7d).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "30m")]
    pub ttl: Duration,
    /// Shared: others may reserve the same paths (they are told of each other).
    #[arg(long)]
    pub shared: bool,
    /// Why: shown to the agents who find the paths taken.
    #[arg(long)]
    pub reason: Option<String>,
    /// Reserve even over other agents' exclusive reservations (recorded).
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct UnreserveArgs {
    #[command(flatten)]
    pub acting: Acting,
    #[command(flatten)]
    pub project: ProjectArg,
    /// The patterns as reserved; without them, every reservation of this agent in the project.
    #[arg(value_name = "PATHS")]
    pub paths: Vec<String>,
}

#[derive(Debug, Args)]
pub struct SearchArgs {
    #[command(flatten)]
    pub connection: Connection,
    /// Words (all must occur), "a phrase", prefix*, -word, a OR b.
    #[arg(required = true, value_name = "QUERY")]
    pub query: Vec<String>,
    /// At most this many hits (default 20, at most 100).
    #[arg(long)]
    pub limit: Option<u32>,
    /// Skip this many of the best hits (the next page).
    #[arg(long)]
    pub offset: Option<u32>,
}

#[derive(Debug, Subcommand)]
pub enum GuardCommand {
    /// Install the git pre-commit hook in this repository. An existing hook is kept and still
    /// run first (it is moved to `pre-commit.before-agent-relay`); nothing is overwritten.
    Install(GuardInstallArgs),
    /// Ask the relay whether paths overlap another agent's exclusive reservation; exit 3 (and
    /// name the holders) when they do.
    Check(GuardCheckArgs),
}

impl GuardCommand {
    pub fn json(&self) -> bool {
        match self {
            GuardCommand::Install(_) => false,
            GuardCommand::Check(args) => args.connection.json,
        }
    }
}

#[derive(Debug, Args)]
pub struct GuardInstallArgs {
    /// What the hook does when the relay cannot be asked: allow with a warning (true, the
    /// default) or refuse the commit (false).
    #[arg(long, value_name = "BOOL", default_value_t = true, action = ArgAction::Set)]
    pub allow_offline: bool,
}

#[derive(Debug, Args)]
pub struct GuardCheckArgs {
    #[command(flatten)]
    pub connection: Connection,
    #[command(flatten)]
    pub project: ProjectArg,
    /// Check the paths staged for the next commit.
    #[arg(long, conflicts_with = "paths")]
    pub staged: bool,
    /// Paths relative to the repository's top level.
    #[arg(value_name = "PATHS", required_unless_present = "staged")]
    pub paths: Vec<String>,
    /// When the relay cannot be asked (down, or no token): allow with a warning (true, the
    /// default) or refuse (false).
    #[arg(long, value_name = "BOOL", default_value_t = true, action = ArgAction::Set)]
    pub allow_offline: bool,
}

/// Runs `git ARGS` in the current folder; its standard output.
fn git(args: &[&str]) -> Result<String, Failure> {
    let output = Command::new("git")
        .args(args)
        .output()
        .map_err(|error| Failure::new(Exit::Error, format!("cannot run git: {error}")))?;
    if !output.status.success() {
        return Err(Failure::new(
            Exit::Error,
            format!(
                "git {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The project key: `--project` / RELAY_PROJECT, else the origin URL, else the top-level
/// folder's name.
fn project(arg: &ProjectArg) -> Result<String, Failure> {
    if let Some(project) = arg.project.as_deref().filter(|p| !p.trim().is_empty()) {
        return Ok(project.to_owned());
    }
    if let Ok(url) = git(&["config", "--get", "remote.origin.url"]) {
        let url = url.trim();
        if !url.is_empty() {
            return Ok(url.to_owned());
        }
    }
    let top = git(&["rev-parse", "--show-toplevel"]).map_err(|_| {
        Failure::usage(
            "not in a git repository: set RELAY_PROJECT (or --project) to name the project",
        )
    })?;
    Path::new(top.trim())
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .ok_or_else(|| Failure::usage("the repository has no folder name: set RELAY_PROJECT"))
}

/// One conflict, for people.
fn conflict_line(conflict: &Json, now: i64) -> String {
    let reason = conflict["reason"]
        .as_str()
        .map_or_else(String::new, |r| format!(" ({r})"));
    let expires = conflict["expiresAt"].as_i64().unwrap_or(0);
    format!(
        "{} is held by {}{reason} ({}{}, {} left, reservation {})",
        conflict["path"].as_str().unwrap_or(""),
        conflict["agentId"].as_str().unwrap_or(""),
        conflict["held"].as_str().unwrap_or(""),
        if conflict["exclusive"] == true {
            ""
        } else {
            ", shared"
        },
        view::left(expires - now),
        conflict["reservationId"],
    )
}

pub fn reserve(args: &ReserveArgs) -> Outcome {
    let relay = RelayClient::connect(&args.acting.connection)?;
    let agent = relay.agent(&args.acting)?;
    let mut body = json!({
        "agentId": agent,
        "project": project(&args.project)?,
        "paths": args.paths,
        "exclusive": !args.shared,
        "ttlMs": millis(args.ttl),
        "force": args.force,
    });
    if let Some(reason) = &args.reason {
        body["reason"] = json!(reason);
    }
    let answered = relay.post("/v1/reservations", &body);
    let now = view::now_ms();
    match answered {
        Ok(answer) => {
            emit(&args.acting.connection, &answer.body, |answer| {
                let reservation = &answer["reservation"];
                let mut out = format!(
                    "reserved {} in {} as reservation {}, {}\n",
                    args.paths.join(" "),
                    reservation["project"].as_str().unwrap_or(""),
                    reservation["id"],
                    view::left(reservation["expiresAt"].as_i64().unwrap_or(0) - now),
                );
                for conflict in answer["conflicts"].as_array().into_iter().flatten() {
                    out.push_str(&format!("also: {}\n", conflict_line(conflict, now)));
                }
                out
            });
            Ok(Exit::Done)
        }
        Err(failure) if failure.exit == Exit::Conflict && failure.body.is_some() => {
            let answer = failure.body.clone().unwrap_or_default();
            let lines: Vec<String> = answer["conflicts"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| conflict_line(c, now))
                .collect();
            Err(Failure {
                exit: Exit::Conflict,
                message: format!(
                    "not reserved: {} (--force to take them anyway)",
                    lines.join("; ")
                ),
                body: Some(answer),
            })
        }
        Err(failure) => Err(failure),
    }
}

pub fn unreserve(args: &UnreserveArgs) -> Outcome {
    let relay = RelayClient::connect(&args.acting.connection)?;
    let agent = relay.agent(&args.acting)?;
    let mut body = json!({"agentId": agent, "project": project(&args.project)?});
    if !args.paths.is_empty() {
        body["paths"] = json!(args.paths);
    }
    let answer = relay.post("/v1/reservations/release", &body)?;
    emit(&args.acting.connection, &answer.body, |list| {
        let released: Vec<String> = list
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| format!("released reservation {}", r["id"]))
            .collect();
        if released.is_empty() {
            "no reservation to release".to_owned()
        } else {
            released.join("\n")
        }
    });
    Ok(Exit::Done)
}

pub fn search(args: &SearchArgs) -> Outcome {
    let relay = RelayClient::connect(&args.connection)?;
    let mut query = vec![("q", args.query.join(" "))];
    if let Some(limit) = args.limit {
        query.push(("limit", limit.to_string()));
    }
    if let Some(offset) = args.offset {
        query.push(("offset", offset.to_string()));
    }
    let answer = relay.get("/v1/messages/search", &query)?;
    let now = view::now_ms();
    emit(&args.connection, &answer.body, |hits| {
        let rows: Vec<Vec<String>> = hits
            .as_array()
            .into_iter()
            .flatten()
            .map(|hit| {
                let message = &hit["message"];
                vec![
                    message["id"].to_string(),
                    message["from"].as_str().unwrap_or("").to_owned(),
                    message["to"].as_str().unwrap_or("").to_owned(),
                    view::age(message["createdAt"].as_i64().unwrap_or(0), now),
                    hit["snippet"].as_str().unwrap_or("").to_owned(),
                ]
            })
            .collect();
        if rows.is_empty() {
            "nothing found".to_owned()
        } else {
            view::table(&["ID", "FROM", "TO", "AGE", "SNIPPET"], &rows)
        }
    });
    Ok(Exit::Done)
}

pub fn guard(command: &GuardCommand) -> Outcome {
    match command {
        GuardCommand::Install(args) => install(args),
        GuardCommand::Check(args) => check(args),
    }
}

/// The hook: the chained one first (when there is one), then the check.
fn hook_script(binary: &Path, allow_offline: bool) -> String {
    let binary = binary.display().to_string().replace('\'', "'\\''");
    format!(
        "#!/bin/sh\n\
         {GUARD_MARK}: refuses a commit touching paths another agent holds\n\
         # (agent-relay guard install; the relay: RELAY_URL, RELAY_TOKEN, RELAY_PROJECT).\n\
         hooks=$(dirname \"$0\")\n\
         if [ -x \"$hooks/{CHAINED_HOOK}\" ]; then\n\
         \x20   \"$hooks/{CHAINED_HOOK}\" \"$@\" || exit $?\n\
         fi\n\
         exec '{binary}' guard check --staged --allow-offline {allow_offline}\n"
    )
}

fn install(args: &GuardInstallArgs) -> Outcome {
    let hooks = PathBuf::from(
        git(&["rev-parse", "--path-format=absolute", "--git-path", "hooks"])
            .map_err(|_| Failure::usage("not in a git repository"))?
            .trim(),
    );
    std::fs::create_dir_all(&hooks)
        .map_err(|e| Failure::new(Exit::Error, format!("creating {}: {e}", hooks.display())))?;
    let hook = hooks.join("pre-commit");
    let chained = hooks.join(CHAINED_HOOK);
    let existing = std::fs::read(&hook).ok();
    if existing
        .as_ref()
        .is_some_and(|text| String::from_utf8_lossy(text).contains(GUARD_MARK))
    {
        crate::stdout::say!("the guard is already installed in {}", hook.display());
        return Ok(Exit::Done);
    }
    if existing.is_some() {
        if chained.symlink_metadata().is_ok() {
            return Err(Failure::new(
                Exit::Conflict,
                format!(
                    "{} and {} both exist: nothing was changed; merge them by hand",
                    hook.display(),
                    chained.display()
                ),
            ));
        }
        std::fs::rename(&hook, &chained)
            .map_err(|e| Failure::new(Exit::Error, format!("keeping {}: {e}", hook.display())))?;
    }
    let binary = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("agent-relay"));
    write_executable(&hook, &hook_script(&binary, args.allow_offline))?;
    crate::stdout::say!(
        "installed the guard in {}{}",
        hook.display(),
        if existing.is_some() {
            format!(" (the existing hook runs first, as {CHAINED_HOOK})")
        } else {
            String::new()
        }
    );
    Ok(Exit::Done)
}

fn write_executable(path: &Path, text: &str) -> Result<(), Failure> {
    use std::io::Write as _;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o755);
    options
        .open(path)
        .and_then(|mut file| file.write_all(text.as_bytes()))
        .map_err(|e| Failure::new(Exit::Error, format!("writing {}: {e}", path.display())))
}

/// The paths of the next commit: added, changed, deleted, and both sides of a rename.
fn staged_paths() -> Result<Vec<String>, Failure> {
    let listed = git(&["diff", "--cached", "--name-only", "--no-renames", "-z"])?;
    Ok(listed
        .split('\0')
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect())
}

/// The relay could not be asked: allowed with a warning, or refused.
fn offline(allow: bool, why: &str) -> Outcome {
    if allow {
        eprintln!("agent-relay guard: {why}; the commit is allowed without a check");
        Ok(Exit::Done)
    } else {
        Err(Failure::new(
            Exit::Error,
            format!("{why}; the commit is refused (--allow-offline false)"),
        ))
    }
}

fn check(args: &GuardCheckArgs) -> Outcome {
    let paths = if args.staged {
        staged_paths()?
    } else {
        args.paths.clone()
    };
    if paths.is_empty() {
        return Ok(Exit::Done);
    }
    let project = project(&args.project)?;
    let relay = match RelayClient::connect(&args.connection) {
        Ok(relay) => relay,
        Err(_) => return offline(args.allow_offline, "no RELAY_TOKEN to ask the relay with"),
    };
    let mut conflicts = Vec::new();
    let mut blocked = false;
    for chunk in paths.chunks(PATHS_PER_CHECK) {
        let body = json!({"project": project, "paths": chunk});
        match relay.post("/v1/reservations/check", &body) {
            Ok(answer) => {
                blocked |= answer.body["blocked"] == true;
                conflicts.extend(
                    answer.body["conflicts"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default(),
                );
            }
            Err(failure) if failure.body.is_none() => {
                return offline(args.allow_offline, &failure.message);
            }
            Err(failure) => return Err(failure),
        }
    }
    let answer = json!({"project": project, "blocked": blocked, "conflicts": conflicts});
    let now = view::now_ms();
    if !blocked {
        emit(&args.connection, &answer, |_| String::new());
        return Ok(Exit::Done);
    }
    let lines: Vec<String> = conflicts
        .iter()
        .filter(|c| c["exclusive"] == true)
        .map(|c| conflict_line(c, now))
        .collect();
    Err(Failure {
        exit: Exit::Conflict,
        message: format!(
            "another agent holds paths of this commit: {} (wait, ask the holder, or commit other paths)",
            lines.join("; ")
        ),
        body: Some(answer),
    })
}
