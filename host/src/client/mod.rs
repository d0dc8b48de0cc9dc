//! The agent's command line: verbs in the relay's own words (`send`, `inbox`, `claim`,
//! `complete`, ...) that talk to a running relay over HTTP as the agent whose token they hold,
//! and the Claude Code hooks built on them.
//!
//! Every verb is the same three steps: find who acts (the token's owner, or `--as` with the
//! operator token), make one request, render the answer for people or as JSON (`--json`). The
//! relay decides everything; this side only maps its answers to exit codes a script can branch on.

mod agents;
mod call;
mod claims;
mod hooks;
mod identity;
mod jobs;
mod messages;
mod relay;
mod reserve;
mod tasks;
pub mod view;
pub mod watch;
mod work;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::Value as Json;

pub use call::call_remote;
pub use relay::RelayClient;

/// The relay a verb talks to when neither `--url` nor `RELAY_URL` says otherwise.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8787";

/// The exit codes, as `--help` shows them.
pub const EXIT_CODES: &str = "Exit codes: 0 done, 1 error, 2 usage (bad option or argument, \
missing token), 3 conflict (already claimed, stale session, wrong state), 4 not found, \
5 nothing available (claim without an id, inbox --wait found nothing).";

/// How a verb ended, as its exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Done = 0,
    Error = 1,
    Usage = 2,
    Conflict = 3,
    NotFound = 4,
    Nothing = 5,
}

impl Exit {
    /// The error code `--json` prints for a failure the relay did not describe itself.
    fn code(self) -> &'static str {
        match self {
            Exit::Done => "done",
            Exit::Error => "error",
            Exit::Usage => "usage",
            Exit::Conflict => "conflict",
            Exit::NotFound => "not_found",
            Exit::Nothing => "nothing_available",
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit as u8)
    }
}

/// A verb that did not get done: what to tell the user, and the exit code.
#[derive(Debug, Clone)]
pub struct Failure {
    pub exit: Exit,
    pub message: String,
    /// The relay's error document, when the relay answered with one.
    pub body: Option<Json>,
}

impl Failure {
    pub fn new(exit: Exit, message: impl Into<String>) -> Self {
        Self {
            exit,
            message: message.into(),
            body: None,
        }
    }

    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(Exit::Usage, message)
    }
}

/// Where the relay is and which credentials to show it.
#[derive(Debug, Clone, Args)]
pub struct Connection {
    /// The relay's address.
    #[arg(long, env = "RELAY_URL", default_value = DEFAULT_URL)]
    pub url: String,
    /// The agent's token (or the operator's).
    #[arg(long, env = "RELAY_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print one JSON document instead of the view for people.
    #[arg(long)]
    pub json: bool,
}

/// The connection of a verb that acts as an agent.
#[derive(Debug, Clone, Args)]
pub struct Acting {
    #[command(flatten)]
    pub connection: Connection,
    /// Act as this agent; only the operator token may act for others.
    #[arg(long = "as", value_name = "AGENT")]
    pub agent: Option<String>,
}

/// The agent verbs and hooks, flattened into the binary's command list.
#[derive(Debug, Subcommand)]
pub enum Verb {
    /// Show whose token this is: the agent's card, or the operator.
    #[command(after_help = EXIT_CODES)]
    Whoami(agents::WhoamiArgs),
    /// List agents (id, kind, status, label, last seen).
    #[command(after_help = EXIT_CODES)]
    Agents(agents::AgentsArgs),
    /// Send a message to an agent or a group (`label:L`, `tag:T`, `cap:C`, `broadcast`).
    #[command(after_help = EXIT_CODES)]
    Send(messages::SendArgs),
    /// The messages for this agent, oldest first (nothing is marked read).
    #[command(after_help = EXIT_CODES)]
    Inbox(messages::InboxArgs),
    /// Mark messages read (one receipt per message for this agent).
    #[command(after_help = EXIT_CODES)]
    Read(messages::ReadArgs),
    /// Show a whole thread, in order.
    #[command(after_help = EXIT_CODES)]
    Thread(messages::ThreadArgs),
    /// Claim a job (take its lease); without an id, take the next open job in the inbox.
    #[command(after_help = EXIT_CODES)]
    Claim(claims::ClaimArgs),
    /// Take the next job and run a command on it, renewing the lease while it runs: completed
    /// with the command's output when it exits 0, released for another attempt otherwise.
    ///
    /// Example: `agent-relay work --lease 2m -- sh -c 'make test'`. `--loop` keeps taking jobs.
    #[command(after_help = EXIT_CODES)]
    Work(work::WorkArgs),
    /// Extend the lease of a message this agent holds.
    #[command(after_help = EXIT_CODES)]
    Renew(claims::RenewArgs),
    /// Give a claimed message back, so another agent may take it.
    #[command(after_help = EXIT_CODES)]
    Release(claims::ReleaseArgs),
    /// Finish a claimed message (it is never offered again), with an optional result.
    #[command(after_help = EXIT_CODES)]
    Complete(claims::CompleteArgs),
    /// Dead letters: jobs whose attempts ran out. The operator sees every one; an agent, the
    /// dead jobs of its own inbox.
    ///
    /// A job is dead-lettered when its last allowed claim (the relay's max-attempts) ends
    /// without completion. It is never offered again until the operator puts it back with
    /// `agent-relay retry ID`.
    #[command(after_help = EXIT_CODES)]
    Dead(claims::DeadArgs),
    /// Cancel a job this agent sent (the operator: any job): it is never offered again, its
    /// holder's renew or complete answers `cancelled`, and jobs waiting for it are dead-lettered.
    #[command(after_help = EXIT_CODES)]
    Cancel(claims::CancelArgs),
    /// Operator: put a dead letter back in the queue, open again with its attempts reset.
    #[command(after_help = EXIT_CODES)]
    Retry(claims::RetryArgs),
    /// List jobs with where each stands and who holds it (default: open and claimed).
    #[command(after_help = EXIT_CODES)]
    Jobs(jobs::JobsArgs),
    /// The relay on one screen: health, agents with the jobs they hold, job counts, approvals
    /// waiting for a human.
    #[command(after_help = EXIT_CODES)]
    Status(jobs::StatusArgs),
    /// List tasks raised by integrations (CI, error trackers, monitors), most recently changed
    /// first; jobs handed to agents (`send --claimable`) are listed by `jobs`.
    #[command(after_help = EXIT_CODES)]
    Tasks(tasks::TasksArgs),
    /// Resolve or dismiss a task.
    #[command(after_help = EXIT_CODES)]
    Task(tasks::TaskArgs),
    /// Reserve paths of this repository under a lease before editing them (others see the
    /// overlap; the guard refuses their commits touching them).
    #[command(after_help = EXIT_CODES)]
    Reserve(reserve::ReserveArgs),
    /// Release this agent's reservations of the repository (the given patterns, or all).
    #[command(after_help = EXIT_CODES)]
    Unreserve(reserve::UnreserveArgs),
    /// Full-text search over the messages this token may read, best first.
    #[command(after_help = EXIT_CODES)]
    Search(reserve::SearchArgs),
    /// The git pre-commit guard: refuse commits touching paths another agent holds.
    #[command(subcommand)]
    Guard(reserve::GuardCommand),
    /// Operator: add an agent and hand out its token, issue a new token, remove an agent.
    #[command(subcommand)]
    Agent(agents::AgentCommand),
    /// Claude Code hooks: unread messages as prompt context, and no stopping while they wait.
    #[command(subcommand)]
    Hook(hooks::HookCommand),
}

/// Runs one verb and turns how it ended into the exit code.
pub fn run(verb: Verb) -> ExitCode {
    let (json, result) = match &verb {
        Verb::Hook(command) => return hooks::run(command),
        Verb::Whoami(args) => (args.connection.json, agents::whoami(args)),
        Verb::Agents(args) => (args.connection.json, agents::list(args)),
        Verb::Send(args) => (args.acting.connection.json, messages::send(args)),
        Verb::Inbox(args) => (args.acting.connection.json, messages::inbox(args)),
        Verb::Read(args) => (args.acting.connection.json, messages::read(args)),
        Verb::Thread(args) => (args.connection.json, messages::thread(args)),
        Verb::Claim(args) => (args.acting.connection.json, claims::claim(args)),
        Verb::Work(args) => (args.acting.connection.json, work::work(args)),
        Verb::Renew(args) => (args.acting.connection.json, claims::renew(args)),
        Verb::Release(args) => (args.acting.connection.json, claims::release(args)),
        Verb::Complete(args) => (args.acting.connection.json, claims::complete(args)),
        Verb::Dead(args) => (args.acting.connection.json, claims::dead(args)),
        Verb::Cancel(args) => (args.connection.json, claims::cancel(args)),
        Verb::Retry(args) => (args.connection.json, claims::retry(args)),
        Verb::Jobs(args) => (args.connection.json, jobs::jobs(args)),
        Verb::Status(args) => (args.connection.json, jobs::status(args)),
        Verb::Tasks(args) => (args.connection.json, tasks::list(args)),
        Verb::Task(args) => (args.connection.json, tasks::change(args)),
        Verb::Reserve(args) => (args.acting.connection.json, reserve::reserve(args)),
        Verb::Unreserve(args) => (args.acting.connection.json, reserve::unreserve(args)),
        Verb::Search(args) => (args.connection.json, reserve::search(args)),
        Verb::Guard(command) => (command.json(), reserve::guard(command)),
        Verb::Agent(command) => (command.connection().json, agents::operate(command)),
    };
    match result {
        Ok(exit) => exit.into(),
        Err(failure) => {
            if json {
                let body = failure.body.clone().unwrap_or_else(|| {
                    serde_json::json!({"error": {"code": failure.exit.code(), "message": failure.message}})
                });
                crate::stdout::say!("{body}");
            }
            eprintln!("agent-relay: {}", view::one_line(&failure.message));
            failure.exit.into()
        }
    }
}

/// What a verb returns: how it ended, or why it did not get done.
pub type Outcome = Result<Exit, Failure>;

/// Prints `value` as JSON, or the view for people. The view's fields were escaped to one line
/// where they sit in a line of their own; the whole view is escaped once more here, newlines
/// kept, so no text the relay returned reaches the terminal as a control sequence.
fn emit(connection: &Connection, value: &Json, render: impl FnOnce(&Json) -> String) {
    if connection.json {
        crate::stdout::say!("{value}");
    } else {
        let text = render(value);
        if !text.is_empty() {
            crate::stdout::say!("{}", view::printable(text.trim_end_matches('\n')));
        }
    }
}

/// Parses a duration: `30s`, `10m`, `1h`, `2d`, `500ms`, or plain seconds.
///
/// # Errors
/// Text that is not a positive number with one of those units.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let scale = match unit.trim() {
        "ms" => 0.001,
        "" | "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        _ => return Err(format!("{text} is not a duration: use 30s, 10m or 1h")),
    };
    number
        .parse::<f64>()
        .ok()
        .filter(|n| n.is_finite() && *n >= 0.0)
        .and_then(|n| Duration::try_from_secs_f64(n * scale).ok())
        .ok_or_else(|| format!("{text} is not a duration: use 30s, 10m or 1h"))
}

/// The shortest lease the relay grants (guest/src/settings.rs, `MIN_LEASE_MS`).
pub const MIN_LEASE: Duration = Duration::from_millis(100);

/// The longest lease the relay grants unless its operator set `max-lease-ms` higher.
pub const DEFAULT_MAX_LEASE: Duration = Duration::from_secs(24 * 3600);

/// The most `max-lease-ms` may ever be set to (30 days): no relay grants a longer lease.
pub const LONGEST_MAX_LEASE: Duration = Duration::from_secs(30 * 24 * 3600);

/// What a lease may be, in the command line's words.
fn lease_bounds(max: &str) -> String {
    format!(
        "the lease must be between {} and {max}",
        view::duration(millis(MIN_LEASE))
    )
}

/// Parses a `--lease`: a duration (`30s`, `10m`, `1h`) the relay could grant. A lease under
/// 100ms, or longer than any relay grants (30d), is refused here, before any call; one within
/// those but beyond this relay's `max-lease-ms` is refused by the relay, in the same words
/// ([`lease_refused`]).
///
/// # Errors
/// Not a duration, or a lease no relay grants.
pub fn parse_lease(text: &str) -> Result<Duration, String> {
    let lease = parse_duration(text)?;
    if lease < MIN_LEASE || lease > LONGEST_MAX_LEASE {
        let max = view::duration(millis(DEFAULT_MAX_LEASE));
        return Err(format!(
            "{} ({max} is the relay's max-lease-ms unless its operator set it higher, up to {})",
            lease_bounds(&max),
            format_args!("{}d", LONGEST_MAX_LEASE.as_secs() / 86_400)
        ));
    }
    Ok(lease)
}

/// The relay's refusal of a lease it does not grant (`leaseMs 172800000 must be between 100
/// and 86400000`), said in durations as a usage error (exit 2); any other failure unchanged.
fn lease_refused(failure: Failure, asked: Option<Duration>) -> Failure {
    let Some(asked) = asked else {
        return failure;
    };
    let refused = failure.body.as_ref().is_some_and(|body| {
        body["error"]["code"] == "invalid"
            && body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("leaseMs "))
    });
    if !refused {
        return failure;
    }
    let message = failure
        .body
        .as_ref()
        .and_then(|b| b["error"]["message"].as_str());
    let max = message
        .and_then(|m| m.rsplit(' ').next())
        .and_then(|max| max.parse::<i64>().ok());
    let bounds = match max {
        Some(max) => lease_bounds(&view::duration(max)),
        None => message.unwrap_or_default().to_owned(),
    };
    Failure::usage(format!(
        "{bounds} (asked for {}; the relay's max-lease-ms sets the longest)",
        view::duration(millis(asked))
    ))
}

/// Parses a free JSON object given on the command line (`--payload`, `--result`).
fn parse_object(flag: &str, text: &str) -> Result<Json, Failure> {
    match serde_json::from_str::<Json>(text) {
        Ok(value @ Json::Object(_)) => Ok(value),
        Ok(_) => Err(Failure::usage(format!("{flag} must be a JSON object"))),
        Err(error) => Err(Failure::usage(format!("{flag} is not valid JSON: {error}"))),
    }
}

/// A duration in whole milliseconds, as the relay's `leaseMs` wants it.
fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_seconds_minutes_and_hours() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("1.5m"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
        assert!(parse_duration("10 minutes").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn leases_no_relay_grants_are_refused_before_any_call() {
        assert_eq!(parse_lease("100ms"), Ok(MIN_LEASE));
        assert_eq!(parse_lease("48h"), Ok(Duration::from_secs(172_800)));
        let short = parse_lease("50ms").expect_err("50ms is under the shortest lease");
        assert!(
            short.starts_with("the lease must be between 100ms and 24h"),
            "{short}"
        );
        assert!(parse_lease("31d").is_err());
    }
}
