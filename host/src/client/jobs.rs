//! `jobs` (who holds what) and `status` (the relay on one screen), both over
//! `GET /v1/messages?state=…`: the operator sees every job, an agent the jobs it may read.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use clap::{Args, ValueEnum};
use serde_json::{Value as Json, json};

use super::relay::RelayClient;
use super::{Connection, Exit, Outcome, emit, view};

/// Where a job stands, as `GET /v1/messages?state=` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum JobState {
    /// Claimable now.
    Open,
    /// Held under a live lease.
    Claimed,
    /// Finished by its holder.
    Completed,
    /// Dead-lettered (the operator retries it with `agent-relay retry ID`).
    Dead,
    /// Not claimable before a time (sent with `--delay`/`--run-at`, or in its retry backoff).
    Scheduled,
}

impl JobState {
    const ALL: [JobState; 5] = [
        JobState::Open,
        JobState::Claimed,
        JobState::Completed,
        JobState::Dead,
        JobState::Scheduled,
    ];

    fn name(self) -> &'static str {
        match self {
            JobState::Open => "open",
            JobState::Claimed => "claimed",
            JobState::Completed => "completed",
            JobState::Dead => "dead",
            JobState::Scheduled => "scheduled",
        }
    }
}

#[derive(Debug, Args)]
pub struct JobsArgs {
    #[command(flatten)]
    pub connection: Connection,
    /// Only jobs in this state; without it, the live ones (open, scheduled and claimed).
    #[arg(long, value_enum)]
    pub state: Option<JobState>,
    /// Only jobs this agent holds (or completed).
    #[arg(long, value_name = "AGENT")]
    pub holder: Option<String>,
    /// Only jobs sent to this target, as written (`alice`, `label:backend`).
    #[arg(long, value_name = "TARGET")]
    pub to: Option<String>,
    /// Only jobs of this message kind.
    #[arg(long)]
    pub kind: Option<String>,
    /// Only jobs after this message id (the next page starts after the last id shown).
    #[arg(long, value_name = "ID")]
    pub since: Option<i64>,
    /// At most this many of each state (default 50, at most 500).
    #[arg(long)]
    pub limit: Option<u32>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub connection: Connection,
}

/// The jobs of one state (`GET /v1/messages?state=S&…`), one page.
fn page(
    relay: &RelayClient,
    state: JobState,
    filters: &[(&str, String)],
) -> Result<Vec<Json>, super::Failure> {
    let mut query = filters.to_vec();
    query.push(("state", state.name().to_owned()));
    let body = relay.get("/v1/messages", &query)?.body;
    Ok(body.as_array().cloned().unwrap_or_default())
}

pub fn jobs(args: &JobsArgs) -> Outcome {
    let relay = RelayClient::connect(&args.connection)?;
    let mut filters = Vec::new();
    for (key, value) in [
        ("holder", &args.holder),
        ("to", &args.to),
        ("kind", &args.kind),
    ] {
        if let Some(value) = value {
            filters.push((key, value.clone()));
        }
    }
    if let Some(since) = args.since {
        filters.push(("since", since.to_string()));
    }
    if let Some(limit) = args.limit {
        filters.push(("limit", limit.to_string()));
    }
    let states = match args.state {
        Some(state) => vec![state],
        None => vec![JobState::Open, JobState::Scheduled, JobState::Claimed],
    };
    let mut list = Vec::new();
    for state in &states {
        list.extend(page(&relay, *state, &filters)?);
    }
    list.sort_by_key(|job| job["id"].as_i64());
    let empty = match args.state {
        Some(state) => format!("no {} jobs", state.name()),
        None => "no open, scheduled or claimed jobs (`--state completed` or `--state dead` shows \
                 the others)"
            .to_owned(),
    };
    emit(&args.connection, &Json::Array(list), |list| {
        jobs_table(list.as_array().map_or(&[], Vec::as_slice), &empty)
    });
    Ok(Exit::Done)
}

/// Jobs as a table: id, where it stands, to, kind, attempts, age, subject.
fn jobs_table(list: &[Json], empty: &str) -> String {
    if list.is_empty() {
        return format!("{empty}\n");
    }
    let now = view::now_ms();
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|job| {
            vec![
                job["id"].as_i64().unwrap_or_default().to_string(),
                view::job_state(job, None, now),
                job["to"].as_str().unwrap_or("-").to_owned(),
                job["kind"].as_str().unwrap_or("-").to_owned(),
                job["attempts"].as_u64().unwrap_or_default().to_string(),
                view::age(job["createdAt"].as_i64().unwrap_or(now), now),
                view::headline(job, 50),
            ]
        })
        .collect();
    view::table(
        &["ID", "STATE", "TO", "KIND", "ATTEMPTS", "AGE", "SUBJECT"],
        &rows,
    )
}

/// Counts stop here: the screen says "500+" rather than paging through a long history.
const COUNT_LIMIT: u32 = 500;

pub fn status(args: &StatusArgs) -> Outcome {
    let relay = RelayClient::connect(&args.connection)?;
    let health = relay.get("/v1/health", &[]).map_or_else(
        |failure| json!({"status": "error", "checks": [], "unreachable": failure.message}),
        |answer| answer.body,
    );
    let agents = relay.get("/v1/agents", &[])?.body;
    let limit = [("limit", COUNT_LIMIT.to_string())];
    let mut counts = BTreeMap::new();
    let mut held = Vec::new();
    for state in JobState::ALL {
        let list = page(&relay, state, &limit)?;
        let full = list.len() >= COUNT_LIMIT as usize;
        counts.insert(state.name(), json!({"count": list.len(), "more": full}));
        if state == JobState::Claimed {
            held = list;
        }
    }
    let approvals = page(
        &relay,
        JobState::Open,
        &[("to", "user".to_owned()), ("kind", "approval".to_owned())],
    )?;
    let screen = json!({
        "health": health,
        "agents": agents,
        "jobs": counts,
        "held": held,
        "approvals": approvals,
    });
    emit(&args.connection, &screen, status_screen);
    Ok(Exit::Done)
}

/// The one screen: health, agents with the jobs they hold, job counts, approvals waiting.
fn status_screen(screen: &Json) -> String {
    let now = view::now_ms();
    let mut out = String::new();
    let health = &screen["health"];
    let _ = writeln!(
        out,
        "relay: {}",
        health["status"].as_str().unwrap_or("unknown")
    );
    if let Some(why) = health["unreachable"].as_str() {
        let _ = writeln!(out, "  health: {}", view::one_line(why));
    }
    for check in health["checks"].as_array().into_iter().flatten() {
        if check["status"].as_str() != Some("ok") {
            let _ = writeln!(
                out,
                "  {} {}: {}",
                check["status"].as_str().unwrap_or("?"),
                check["name"].as_str().unwrap_or("?"),
                view::one_line(check["detail"].as_str().unwrap_or(""))
            );
        }
    }

    let held = screen["held"].as_array().map_or(&[][..], Vec::as_slice);
    let mut holding: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for job in held {
        if let Some(holder) = job["claimedBy"].as_str() {
            let left = job["claimExpiresAt"]
                .as_i64()
                .map_or_else(String::new, |until| {
                    format!(" ({} left)", view::left(until - now))
                });
            holding
                .entry(holder)
                .or_default()
                .push(format!("#{}{left}", job["id"].as_i64().unwrap_or_default()));
        }
    }
    let agents = screen["agents"].as_array().map_or(&[][..], Vec::as_slice);
    let mut by_status: BTreeMap<&str, usize> = BTreeMap::new();
    for agent in agents {
        *by_status
            .entry(agent["status"].as_str().unwrap_or("unknown"))
            .or_default() += 1;
    }
    let summary: Vec<String> = by_status
        .iter()
        .map(|(status, n)| format!("{n} {status}"))
        .collect();
    let _ = writeln!(
        out,
        "\nagents: {}",
        if summary.is_empty() {
            "none (the operator adds one with `agent-relay agent add ID`)".to_owned()
        } else {
            summary.join(", ")
        }
    );
    let rows: Vec<Vec<String>> = agents
        .iter()
        .map(|agent| {
            let id = agent["id"].as_str().unwrap_or("-");
            vec![
                id.to_owned(),
                agent["kind"].as_str().unwrap_or("-").to_owned(),
                agent["status"].as_str().unwrap_or("-").to_owned(),
                format!(
                    "{} ago",
                    view::age(agent["lastSeen"].as_i64().unwrap_or(now), now)
                ),
                holding
                    .get(id)
                    .map_or_else(|| "-".to_owned(), |jobs| jobs.join(", ")),
            ]
        })
        .collect();
    if !rows.is_empty() {
        out.push_str(&view::table(
            &["ID", "KIND", "STATUS", "LAST SEEN", "HOLDS"],
            &rows,
        ));
    }

    let counts: Vec<String> = JobState::ALL
        .iter()
        .map(|state| {
            let count = &screen["jobs"][state.name()];
            let more = if count["more"].as_bool() == Some(true) {
                "+"
            } else {
                ""
            };
            format!(
                "{}{more} {}",
                count["count"].as_u64().unwrap_or_default(),
                state.name()
            )
        })
        .collect();
    let _ = writeln!(
        out,
        "\njobs: {} (`agent-relay jobs --state S` lists them)",
        counts.join(", ")
    );

    let approvals = screen["approvals"]
        .as_array()
        .map_or(&[][..], Vec::as_slice);
    if approvals.is_empty() {
        out.push_str("\napprovals waiting: none\n");
    } else {
        let _ = writeln!(out, "\napprovals waiting: {}", approvals.len());
        for approval in approvals {
            let from = view::one_line(approval["from"].as_str().unwrap_or("?"));
            let request = view::one_line(approval["payload"]["request_id"].as_str().unwrap_or("?"));
            let _ = writeln!(
                out,
                "  #{} {}\n    answer: agent-relay send {from} \"yes {request}\" --as user --reply-to {}  (or \"no {request}\")",
                approval["id"].as_i64().unwrap_or_default(),
                view::headline(approval, 60),
                approval["id"].as_i64().unwrap_or_default(),
            );
        }
    }
    out
}
