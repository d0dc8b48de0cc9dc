//! The relay's counts (docs/http-api.md §7, "Stats"): agents by status, messages read or not,
//! jobs by state, each counted by the database in one statement (never by listing), for the
//! operator and the gauges of `GET /metrics`.
//!
//! The jobs' states are the ones `GET /v1/messages?state=` selects (`messages::
//! job_state_condition`), so a count and a listing never disagree. Counting scans the messages
//! once; the server asks at most about once a second, however often it is scraped.

use crate::auth;
use crate::bindings::agent_relay::relay::stats_types::{
    AgentCounts, JobCounts, MessageCounts, RelayStats,
};
use crate::bindings::agent_relay::relay::store::Value;
use crate::bindings::agent_relay::relay::types::{AgentStatus, Caller, JobState, RelayError};
use crate::db::{self, Row};
use crate::messages;

pub fn stats(caller: &Caller, now: i64) -> Result<RelayStats, RelayError> {
    auth::require_operator(caller)?;
    Ok(RelayStats {
        generated_at: now,
        agents: agents()?,
        messages: messages()?,
        jobs: jobs(now)?,
    })
}

/// The agents by status, in one pass over the agents (the status and last-seen index).
fn agents() -> Result<AgentCounts, RelayError> {
    let rows = db::query(
        "SELECT status, COUNT(*) AS n FROM agents GROUP BY status",
        &[],
    )?;
    let mut counts = AgentCounts {
        online: 0,
        busy: 0,
        offline: 0,
    };
    for row in rows {
        let n = row.int("n")?;
        match row.case_or("status", AgentStatus::Online)? {
            AgentStatus::Online => counts.online += n,
            AgentStatus::Busy => counts.busy += n,
            AgentStatus::Offline => counts.offline += n,
        }
    }
    Ok(counts)
}

/// The messages that are not jobs, read by someone or by no one yet.
fn messages() -> Result<MessageCounts, RelayError> {
    let row = one(
        "SELECT COUNT(*) AS total, \
         COUNT(CASE WHEN EXISTS (SELECT 1 FROM message_reads r WHERE r.message_id = m.id) \
               THEN 1 END) AS n_read \
         FROM messages m WHERE m.claimable = 0",
        &[],
    )?;
    let read = row.int("n_read")?;
    Ok(MessageCounts {
        unread: row.int("total")? - read,
        read,
    })
}

/// The jobs in each state at `now`, in one pass over the messages.
fn jobs(now: i64) -> Result<JobCounts, RelayError> {
    let states = [
        ("open", JobState::Open),
        ("claimed", JobState::Claimed),
        ("completed", JobState::Completed),
        ("dead", JobState::Dead),
        ("cancelled", JobState::Cancelled),
        ("blocked", JobState::Blocked),
        ("scheduled", JobState::Scheduled),
    ];
    let mut columns = Vec::new();
    let mut values = Vec::new();
    for (name, state) in states {
        let (condition, params) = messages::job_state_condition(state, now);
        columns.push(format!(
            "COUNT(CASE WHEN {condition} THEN 1 END) AS n_{name}"
        ));
        values.extend(params);
    }
    let row = one(
        &format!(
            "SELECT {} FROM messages m WHERE m.claimable = 1",
            columns.join(", ")
        ),
        &values,
    )?;
    Ok(JobCounts {
        open: row.int("n_open")?,
        claimed: row.int("n_claimed")?,
        completed: row.int("n_completed")?,
        dead: row.int("n_dead")?,
        cancelled: row.int("n_cancelled")?,
        blocked: row.int("n_blocked")?,
        scheduled: row.int("n_scheduled")?,
    })
}

fn one(sql: &str, values: &[Value]) -> Result<Row, RelayError> {
    db::query_one(sql, values)?
        .ok_or_else(|| RelayError::Internal("a count answered no row".to_owned()))
}
