//! The activity feed: what operators (humans, dashboards) did, for others to follow (docs/http-api.md §7).
//!
//! Recording and reading both need the operator token: the feed is the operators' own log. Lists
//! come newest first (ids grow as events are recorded) and page backwards with `before`, the last
//! id of the previous page, so a page never shifts when new events arrive.

use crate::auth;
use crate::bindings::agent_relay::relay::activity_types::{
    ActivityEvent, ActivityInput, ActivityQuery,
};
use crate::bindings::agent_relay::relay::store::Value;
use crate::bindings::agent_relay::relay::types::{Caller, RelayError};
use crate::db::{self, Row};
use crate::error::{invalid, not_found};
use crate::input::{self, MAX_SHORT_TEXT};
use crate::params;

const DEFAULT_LIMIT: u32 = 50;

const ACTIVITY_COLUMNS: &str = "id, operator_id, action, subject, data, created_at";

fn event_from_row(row: &Row) -> Result<ActivityEvent, RelayError> {
    Ok(ActivityEvent {
        id: row.int("id")?,
        operator_id: row.text("operator_id")?,
        action: row.text("action")?,
        subject: row.opt_text("subject")?,
        data: input::json_text(row.opt_text("data")?),
        created_at: row.int("created_at")?,
    })
}

pub fn record(
    caller: &Caller,
    input: &ActivityInput,
    now: i64,
) -> Result<ActivityEvent, RelayError> {
    auth::require_operator(caller)?;
    input::id("operatorId", &input.operator_id)?;
    input::id("action", &input.action)?;
    if let Some(subject) = &input.subject {
        input::text("subject", subject, MAX_SHORT_TEXT)?;
    }
    let data = input::json_object("data", input.data.as_ref())?;
    let id = db::insert_returning_id(
        "INSERT INTO activity_events (operator_id, action, subject, data, created_at)
         VALUES (?, ?, ?, ?, ?)",
        &params![
            input.operator_id.as_str(),
            input.action.as_str(),
            input.subject.as_deref(),
            input::to_json_text(&data),
            now
        ],
    )?;
    db::query_one(
        &format!("SELECT {ACTIVITY_COLUMNS} FROM activity_events WHERE id = ?"),
        &params![id],
    )?
    .map(|row| event_from_row(&row))
    .transpose()?
    .ok_or_else(|| not_found("the recorded activity event vanished"))
}

/// An event the relay records of its own accord (a reservation taken or released): `actor` is
/// the agent that acted, in the feed's `operatorId`.
pub fn note(
    actor: &str,
    action: &str,
    subject: &str,
    data: &serde_json::Map<String, serde_json::Value>,
    now: i64,
) -> Result<(), RelayError> {
    db::insert_returning_id(
        "INSERT INTO activity_events (operator_id, action, subject, data, created_at)
         VALUES (?, ?, ?, ?, ?)",
        &params![actor, action, subject, input::to_json_text(data), now],
    )?;
    Ok(())
}

pub fn list(caller: &Caller, query: &ActivityQuery) -> Result<Vec<ActivityEvent>, RelayError> {
    auth::require_operator(caller)?;
    let limit = db::page_limit(query.limit, DEFAULT_LIMIT, db::MAX_LIMIT)?;
    if let (Some(since), Some(until)) = (query.since, query.until)
        && since > until
    {
        return Err(invalid(format!(
            "since ({since}) must not be after until ({until})"
        )));
    }
    let mut sql = format!("SELECT {ACTIVITY_COLUMNS} FROM activity_events WHERE 1 = 1");
    let mut values: Vec<Value> = Vec::new();
    if let Some(operator_id) = &query.operator_id {
        sql.push_str(" AND operator_id = ?");
        values.push(Value::from(operator_id.as_str()));
    }
    if let Some(since) = query.since {
        sql.push_str(" AND created_at >= ?");
        values.push(Value::from(since));
    }
    if let Some(until) = query.until {
        sql.push_str(" AND created_at <= ?");
        values.push(Value::from(until));
    }
    if let Some(before) = query.before {
        sql.push_str(" AND id < ?");
        values.push(Value::from(before));
    }
    sql.push_str(" ORDER BY id DESC LIMIT ?");
    values.push(Value::from(limit));
    db::query_page(&sql, &values)?
        .iter()
        .map(event_from_row)
        .collect()
}
