//! Tasks: integration events turned into claimable work (docs/http-api.md §5).
//!
//! An event creates a task and sends its claimable `task` message from `system`. Events with the
//! same `(source, dedupeKey)` are one task: while it is open or claimed they only count; once it is
//! resolved or dismissed the next one reopens it with a new message. Claims on the task's current
//! message are mirrored onto the task (see `claims.rs`). Every change is a task event.

use serde_json::{Map, Value as Json, json};

use crate::auth::{self, Identity};
use crate::bindings::agent_relay::relay::store::Value;
use crate::bindings::agent_relay::relay::task_types::{
    IngestedEvent, IntegrationEventInput, Task, TaskEvent, TaskEventKind, TaskEventQuery,
    TaskQuery, TaskSeverity, TaskStatus, TaskStatusInput,
};
use crate::bindings::agent_relay::relay::types::{Caller, Message, RelayError, SendMessageInput};
use crate::db::{self, Row, Stored};
use crate::error::{conflict, forbidden, invalid, not_found};
use crate::input::{self, MAX_BODY, MAX_SHORT_TEXT};
use crate::messages::{self, Target};
use crate::{agents, params, stored_enum, webhooks};

const DEFAULT_LIMIT: u32 = 100;
const DEFAULT_SEVERITY: TaskSeverity = TaskSeverity::Warning;
const DEFAULT_TARGET: &str = "broadcast";

const TASK_COLUMNS: &str = "id, source, title, body, severity, status, dedupe_key, external_url, \
     target, channel, claimed_by, claim_expires_at, occurrences, message_id, created_at, updated_at";

stored_enum!(TaskSeverity {
    Info => "info",
    Warning => "warning",
    Error => "error",
    Critical => "critical",
});

stored_enum!(TaskStatus {
    Open => "open",
    Claimed => "claimed",
    Resolved => "resolved",
    Dismissed => "dismissed",
});

stored_enum!(TaskEventKind {
    Created => "created",
    Updated => "updated",
    Claimed => "claimed",
    Released => "released",
    Resolved => "resolved",
    Dismissed => "dismissed",
    Reopened => "reopened",
});

fn task_from_row(row: &Row) -> Result<Task, RelayError> {
    Ok(Task {
        id: row.int("id")?,
        source: row.text("source")?,
        title: row.text("title")?,
        body: row.opt_text("body")?,
        severity: row.case_or("severity", DEFAULT_SEVERITY)?,
        status: row.case_or("status", TaskStatus::Open)?,
        dedupe_key: row.opt_text("dedupe_key")?,
        external_url: row.opt_text("external_url")?,
        target: row.text("target")?,
        channel: row.opt_text("channel")?,
        claimed_by: row.opt_text("claimed_by")?,
        claim_expires_at: row.opt_int("claim_expires_at")?,
        occurrences: row.int("occurrences")?,
        message_id: row.int("message_id")?,
        created_at: row.int("created_at")?,
        updated_at: row.int("updated_at")?,
    })
}

fn load(id: i64) -> Result<Option<Task>, RelayError> {
    db::query_one(
        &format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?"),
        &params![id],
    )?
    .map(|row| task_from_row(&row))
    .transpose()
}

/// Any agent or the operator may read a task.
pub fn get(caller: &Caller, id: i64) -> Result<Task, RelayError> {
    auth::identify(caller)?;
    require(id)
}

fn require(id: i64) -> Result<Task, RelayError> {
    load(id)?.ok_or_else(|| not_found(format!("task {id} does not exist")))
}

/// Appends one event to a task's history.
fn record(
    task_id: i64,
    kind: TaskEventKind,
    actor: &str,
    data: &Json,
    now: i64,
) -> Result<(), RelayError> {
    db::execute(
        "INSERT INTO task_events (task_id, kind, actor, data, created_at) VALUES (?, ?, ?, ?, ?)",
        &params![task_id, kind.name(), actor, data.to_string(), now],
    )?;
    Ok(())
}

/// An event's fields, checked.
struct Event {
    title: String,
    body: Option<String>,
    severity: TaskSeverity,
    dedupe_key: Option<String>,
    external_url: Option<String>,
    target: String,
    channel: Option<String>,
}

/// Parse: every field of the event is checked before any task is read, so a bad event is refused
/// for what it says; a missing severity is `warning` and a missing target `broadcast`.
fn parse_event(input: IntegrationEventInput) -> Result<Event, RelayError> {
    let title = input.title.trim();
    if title.is_empty() {
        return Err(invalid("title must not be empty"));
    }
    input::text("title", title, MAX_SHORT_TEXT)?;
    if let Some(body) = &input.body {
        input::text("body", body, MAX_BODY)?;
    }
    let severity = match input.severity.as_deref() {
        None => DEFAULT_SEVERITY,
        Some(text) => TaskSeverity::from_name(text).ok_or_else(|| {
            invalid(format!(
                "severity {text:?} must be one of info, warning, error, critical"
            ))
        })?,
    };
    if let Some(key) = &input.dedupe_key {
        input::id("dedupeKey", key)?;
    }
    if let Some(url) = &input.external_url {
        input::text("externalUrl", url, MAX_SHORT_TEXT)?;
    }
    let target = input.target.unwrap_or_else(|| DEFAULT_TARGET.to_owned());
    input::id("target", &target)?;
    Target::parse(&target)?;
    if let Some(channel) = &input.channel {
        input::id("channel", channel)?;
    }
    Ok(Event {
        title: title.to_owned(),
        body: input.body,
        severity,
        dedupe_key: input.dedupe_key,
        external_url: input.external_url,
        target,
        channel: input.channel,
    })
}

/// An integration event from `source`: a new task, one more occurrence of an open one with the
/// same dedupe key, or a resolved or dismissed one reopened.
pub fn ingest(
    caller: &Caller,
    source: &str,
    input: IntegrationEventInput,
    signature: Option<&str>,
    raw_body: Option<&str>,
    now: i64,
) -> Result<IngestedEvent, RelayError> {
    // Who sends comes first: a signed source's signature is its credential, checked before the
    // event it signs is read.
    input::id("source", source)?;
    webhooks::authenticate(caller, source, signature, raw_body)?;
    let event = parse_event(input)?;
    let actor = format!("integration:{source}");
    match same_task(source, event.dedupe_key.as_deref())? {
        None => create(source, &event, &actor, now),
        Some(task) if matches!(task.status, TaskStatus::Open | TaskStatus::Claimed) => {
            count_again(&task, &event, &actor, now)
        }
        Some(task) => reopen(&task, &event, &actor, now),
    }
}

/// The task this event is another occurrence of: events with the same source and dedupe key are
/// one task (docs/http-api.md §5); an event without a key is always a new one.
fn same_task(source: &str, dedupe_key: Option<&str>) -> Result<Option<Task>, RelayError> {
    let Some(key) = dedupe_key else {
        return Ok(None);
    };
    db::query_one(
        &format!("SELECT {TASK_COLUMNS} FROM tasks WHERE source = ? AND dedupe_key = ?"),
        &params![source, key],
    )?
    .map(|row| task_from_row(&row))
    .transpose()
}

/// A first event makes an open task and sends its claimable message.
fn create(source: &str, event: &Event, actor: &str, now: i64) -> Result<IngestedEvent, RelayError> {
    let id = db::insert_returning_id(
        "INSERT INTO tasks (source, title, body, severity, status, dedupe_key, external_url,
             target, channel, occurrences, created_at, updated_at)
         VALUES (?, ?, ?, ?, 'open', ?, ?, ?, ?, 1, ?, ?)",
        &params![
            source,
            event.title.as_str(),
            event.body.as_deref(),
            event.severity.name(),
            event.dedupe_key.as_deref(),
            event.external_url.as_deref(),
            event.target.as_str(),
            event.channel.as_deref(),
            now,
            now
        ],
    )?;
    let message = send_task_message(id, now)?;
    record(
        id,
        TaskEventKind::Created,
        actor,
        &json!({"severity": event.severity.name(), "target": event.target,
                "messageId": message.id}),
        now,
    )?;
    Ok(IngestedEvent {
        task: require(id)?,
        created: true,
        reopened: false,
        message: Some(message),
    })
}

/// An event for a task still open or claimed only counts: the task takes its title, severity
/// (and body and URL, when sent) and keeps its target, channel, claim and message.
fn count_again(
    task: &Task,
    event: &Event,
    actor: &str,
    now: i64,
) -> Result<IngestedEvent, RelayError> {
    db::execute(
        "UPDATE tasks SET title = ?2, body = COALESCE(?3, body), severity = ?4,
             external_url = COALESCE(?5, external_url), occurrences = occurrences + 1,
             updated_at = ?6
         WHERE id = ?1",
        &params![
            task.id,
            event.title.as_str(),
            event.body.as_deref(),
            event.severity.name(),
            event.external_url.as_deref(),
            now
        ],
    )?;
    record(
        task.id,
        TaskEventKind::Updated,
        actor,
        &json!({"occurrences": task.occurrences + 1,
                "severity": event.severity.name()}),
        now,
    )?;
    Ok(IngestedEvent {
        task: require(task.id)?,
        created: false,
        reopened: false,
        message: None,
    })
}

/// An event for a resolved or dismissed task reopens it as the event describes it, with a new
/// claimable message.
fn reopen(task: &Task, event: &Event, actor: &str, now: i64) -> Result<IngestedEvent, RelayError> {
    db::execute(
        "UPDATE tasks SET title = ?2, body = ?3, severity = ?4, external_url = ?5,
             target = ?6, channel = ?7, status = 'open', claimed_by = NULL,
             claim_expires_at = NULL, occurrences = occurrences + 1, updated_at = ?8
         WHERE id = ?1",
        &params![
            task.id,
            event.title.as_str(),
            event.body.as_deref(),
            event.severity.name(),
            event.external_url.as_deref(),
            event.target.as_str(),
            event.channel.as_deref(),
            now
        ],
    )?;
    let message = send_task_message(task.id, now)?;
    record(
        task.id,
        TaskEventKind::Reopened,
        actor,
        &json!({"from": task.status.name(), "occurrences": task.occurrences + 1,
                "messageId": message.id}),
        now,
    )?;
    Ok(IngestedEvent {
        task: require(task.id)?,
        created: false,
        reopened: true,
        message: Some(message),
    })
}

/// Sends the task's claimable message from `system` and makes it the task's current message.
fn send_task_message(task_id: i64, now: i64) -> Result<Message, RelayError> {
    let task = require(task_id)?;
    let severity = task.severity.name();
    let mut body = task.title.clone();
    if let Some(text) = task.body.as_deref().filter(|b| !b.trim().is_empty()) {
        body.push_str("\n\n");
        body.push_str(text);
    }
    body.push_str(&format!(
        "\n\nTask #{} from {} ({severity})",
        task.id, task.source
    ));
    if let Some(url) = &task.external_url {
        body.push_str(&format!("\n{url}"));
    }
    let payload = json!({
        "taskId": task.id,
        "source": task.source,
        "title": task.title,
        "status": task.status.name(),
        "severity": severity,
        "dedupeKey": task.dedupe_key,
        "externalUrl": task.external_url,
    });
    let sent = messages::deliver(
        &Caller::Operator,
        SendMessageInput {
            from: agents::SYSTEM.to_owned(),
            to: task.target.clone(),
            kind: Some(messages::TASK.to_owned()),
            channel: task.channel.clone(),
            subject: Some(format!("[{severity}] {}", task.title)),
            body,
            reply_to: None,
            claimable: Some(true),
            priority: None,
            after: None,
            run_at: None,
            delay_ms: None,
            idempotency_key: None,
            payload: Some(crate::bindings::agent_relay::relay::types::JsonText {
                json: payload.to_string(),
            }),
            meta: None,
        },
        now,
    )?;
    db::execute(
        "UPDATE tasks SET message_id = ? WHERE id = ?",
        &params![sent.message.id, task.id],
    )?;
    Ok(sent.message)
}

pub fn list(caller: &Caller, query: &TaskQuery) -> Result<Vec<Task>, RelayError> {
    auth::identify(caller)?;
    let limit = db::page_limit(query.limit, DEFAULT_LIMIT, db::MAX_LIMIT)?;
    let mut sql = format!("SELECT {TASK_COLUMNS} FROM tasks WHERE 1 = 1");
    let mut values: Vec<Value> = Vec::new();
    if let Some(status) = query.status {
        sql.push_str(" AND status = ?");
        values.push(Value::from(status.name()));
    }
    if let Some(severity) = query.severity {
        sql.push_str(" AND severity = ?");
        values.push(Value::from(severity.name()));
    }
    if let Some(source) = &query.source {
        sql.push_str(" AND source = ?");
        values.push(Value::from(source.as_str()));
    }
    if let Some(after) = query.after {
        let after = Value::from(after);
        db::require_cursor("after", "SELECT 1 AS found FROM tasks WHERE id = ?", &after)?;
        sql.push_str(" AND (updated_at, id) < (SELECT updated_at, id FROM tasks WHERE id = ?)");
        values.push(after);
    }
    sql.push_str(" ORDER BY updated_at DESC, id DESC LIMIT ?");
    values.push(Value::from(limit));
    db::query_page(&sql, &values)?
        .iter()
        .map(task_from_row)
        .collect()
}

/// A page of a task's history, oldest first.
pub fn events(
    caller: &Caller,
    task_id: i64,
    query: &TaskEventQuery,
) -> Result<Vec<TaskEvent>, RelayError> {
    auth::identify(caller)?;
    require(task_id)?;
    let limit = db::page_limit(query.limit, DEFAULT_LIMIT, db::MAX_LIMIT)?;
    db::query_page(
        "SELECT id, task_id, kind, actor, data, created_at FROM task_events
         WHERE task_id = ? AND id > ? ORDER BY id LIMIT ?",
        &params![task_id, query.since.unwrap_or(0), limit],
    )?
    .iter()
    .map(|row| {
        Ok(TaskEvent {
            id: row.int("id")?,
            task_id: row.int("task_id")?,
            kind: row.case_or("kind", TaskEventKind::Created)?,
            actor: row.text("actor")?,
            data: input::json_text(row.opt_text("data")?),
            created_at: row.int("created_at")?,
        })
    })
    .collect()
}

/// Resolves, dismisses or reopens a task. Open and claimed tasks may be resolved or dismissed;
/// resolved and dismissed ones may be reopened (with a new task message); nothing else.
pub fn set_status(
    caller: &Caller,
    task_id: i64,
    input: &TaskStatusInput,
    now: i64,
) -> Result<Task, RelayError> {
    let identity = auth::identify(caller)?;
    if let Some(note) = &input.note {
        input::text("note", note, MAX_SHORT_TEXT)?;
    }
    let task = require(task_id)?;
    let actor = authorise_change(&identity, &task, input.status, now)?;
    let from = task.status;
    let (kind, legal) = match input.status {
        TaskStatus::Claimed => {
            return Err(invalid(format!(
                "a task is claimed by claiming its message {}",
                task.message_id
            )));
        }
        TaskStatus::Resolved => (
            TaskEventKind::Resolved,
            matches!(from, TaskStatus::Open | TaskStatus::Claimed),
        ),
        TaskStatus::Dismissed => (
            TaskEventKind::Dismissed,
            matches!(from, TaskStatus::Open | TaskStatus::Claimed),
        ),
        TaskStatus::Open => (
            TaskEventKind::Reopened,
            matches!(from, TaskStatus::Resolved | TaskStatus::Dismissed),
        ),
    };
    if !legal {
        return Err(conflict(format!(
            "task {task_id} is {}; it cannot become {}",
            from.name(),
            input.status.name()
        )));
    }
    let mut data = Map::new();
    data.insert("from".to_owned(), json!(from.name()));
    if let Some(note) = &input.note {
        data.insert("note".to_owned(), json!(note));
    }
    if input.status == TaskStatus::Open {
        db::execute(
            "UPDATE tasks SET status = 'open', claimed_by = NULL, claim_expires_at = NULL,
                 updated_at = ?2 WHERE id = ?1",
            &params![task_id, now],
        )?;
        let message = send_task_message(task_id, now)?;
        data.insert("messageId".to_owned(), json!(message.id));
    } else {
        db::execute(
            "UPDATE tasks SET status = ?2, claim_expires_at = NULL, updated_at = ?3 WHERE id = ?1",
            &params![task_id, input.status.name(), now],
        )?;
        settle_message(task.message_id, &actor, input.status, now)?;
    }
    record(task_id, kind, &actor, &Json::Object(data), now)?;
    require(task_id)
}

/// Who may change a task's status (docs/security.md): the operator always; an agent only while
/// it holds the task's live claim, and never to reopen it. An open task is taken by claiming its
/// message first, so no agent can settle work it does not hold. Returns the actor recorded.
fn authorise_change(
    identity: &Identity,
    task: &Task,
    to: TaskStatus,
    now: i64,
) -> Result<String, RelayError> {
    let agent = match identity {
        Identity::Operator => return Ok("operator".to_owned()),
        Identity::Agent(agent) => agent,
    };
    let live_holder = match (task.status, &task.claimed_by, task.claim_expires_at) {
        (TaskStatus::Claimed, Some(holder), Some(expires)) if expires > now => Some(holder),
        _ => None,
    };
    let refusal = match live_holder {
        _ if to == TaskStatus::Open => format!(
            "only the operator may reopen task {}; agent {agent} may not",
            task.id
        ),
        Some(holder) if holder == agent => return Ok(agent.clone()),
        Some(holder) => format!(
            "task {} is claimed by {holder}; only {holder} or the operator may change it",
            task.id
        ),
        None if matches!(task.status, TaskStatus::Resolved | TaskStatus::Dismissed) => format!(
            "task {} is {}; only the operator may change it",
            task.id,
            task.status.name()
        ),
        None => format!(
            "task {} is held by no agent; only the operator may change it (an agent claims its \
             message {} first, then changes it as its holder)",
            task.id, task.message_id
        ),
    };
    Err(forbidden(refusal))
}

/// A resolved or dismissed task's current message is completed with it (its claim ends), so it
/// is never claimable again; its payload says the task's new status.
fn settle_message(
    message_id: i64,
    actor: &str,
    status: TaskStatus,
    now: i64,
) -> Result<(), RelayError> {
    db::execute(
        "UPDATE messages SET completed_by = ?2, completed_at = ?3,
             claimed_by = NULL, claimed_at = NULL, claim_expires_at = NULL
         WHERE id = ?1 AND completed_at IS NULL",
        &params![message_id, actor, now],
    )?;
    follow_status(message_id, status)
}

/// The task message's payload `status` follows its task (a payload that is no JSON object is
/// left as it is). SQLite sets it with `json_set`; on PostgreSQL the guest edits the payload
/// itself (its `jsonb_set` would reorder and respace the stored object).
fn follow_status(message_id: i64, status: TaskStatus) -> Result<(), RelayError> {
    if !db::is_postgres() {
        db::execute(
            "UPDATE messages SET payload = json_set(payload, '$.status', ?2)
             WHERE id = ?1 AND json_valid(payload)",
            &params![message_id, status.name()],
        )?;
        return Ok(());
    }
    let Some(row) = db::query_one(
        "SELECT payload FROM messages WHERE id = ?",
        &params![message_id],
    )?
    else {
        return Ok(());
    };
    let Ok(Json::Object(mut payload)) = serde_json::from_str::<Json>(&row.text("payload")?) else {
        return Ok(());
    };
    payload.insert("status".to_owned(), json!(status.name()));
    db::execute(
        "UPDATE messages SET payload = ?2 WHERE id = ?1",
        &params![message_id, input::to_json_text(&payload)],
    )?;
    Ok(())
}

/// Completing a task's current message resolves the task (an open or claimed one).
pub fn on_message_completed(message: &Message, holder: &str, now: i64) -> Result<(), RelayError> {
    let Some(task) = task_of(message)? else {
        return Ok(());
    };
    if !matches!(task.status, TaskStatus::Open | TaskStatus::Claimed) {
        return Ok(());
    }
    db::execute(
        "UPDATE tasks SET status = 'resolved', claim_expires_at = NULL, updated_at = ?2
         WHERE id = ?1",
        &params![task.id, now],
    )?;
    follow_status(message.id, TaskStatus::Resolved)?;
    let result: Json = serde_json::from_str(&message.result.json).unwrap_or_else(|_| json!({}));
    record(
        task.id,
        TaskEventKind::Resolved,
        holder,
        &json!({"from": task.status.name(), "messageId": message.id, "result": result}),
        now,
    )
}

/// A dead-lettered (or cancelled: `why`) task message no longer holds its task: a claimed task
/// is open again.
pub fn on_dead_lettered(message: &Message, why: &str, now: i64) -> Result<(), RelayError> {
    let Some(task) = task_of(message)? else {
        return Ok(());
    };
    if task.status != TaskStatus::Claimed {
        return Ok(());
    }
    db::execute(
        "UPDATE tasks SET status = 'open', claimed_by = NULL, claim_expires_at = NULL,
             updated_at = ?2 WHERE id = ?1",
        &params![task.id, now],
    )?;
    follow_status(message.id, TaskStatus::Open)?;
    record(
        task.id,
        TaskEventKind::Released,
        agents::SYSTEM,
        &json!({"reason": why, "messageId": message.id,
                "claimedBy": task.claimed_by}),
        now,
    )
}

/// Whether the message names a task: then claiming, completing or releasing it may rewrite its
/// payload's `status`, and whoever answers it reads it again.
pub fn names_task(message: &Message) -> bool {
    serde_json::from_str::<Map<String, Json>>(&message.payload.json)
        .is_ok_and(|payload| payload.contains_key("taskId"))
}

/// The task a message stands for: the one whose current message it is.
fn task_of(message: &Message) -> Result<Option<Task>, RelayError> {
    let payload: Map<String, Json> =
        serde_json::from_str(&message.payload.json).unwrap_or_default();
    let Some(task_id) = payload.get("taskId").and_then(Json::as_i64) else {
        return Ok(None);
    };
    Ok(load(task_id)?.filter(|task| task.message_id == message.id))
}

/// Claiming a task's message claims the task (an open one, or one whose claim has changed hands).
pub fn on_message_claimed(message: &Message, now: i64) -> Result<(), RelayError> {
    let Some(task) = task_of(message)? else {
        return Ok(());
    };
    let (Some(holder), Some(expires)) = (&message.claimed_by, message.claim_expires_at) else {
        return Ok(());
    };
    let changes_hands = match task.status {
        TaskStatus::Open => true,
        TaskStatus::Claimed => task.claimed_by.as_deref() != Some(holder.as_str()),
        TaskStatus::Resolved | TaskStatus::Dismissed => return Ok(()),
    };
    db::execute(
        "UPDATE tasks SET status = 'claimed', claimed_by = ?2, claim_expires_at = ?3,
             updated_at = ?4 WHERE id = ?1",
        &params![task.id, holder.as_str(), expires, now],
    )?;
    if changes_hands {
        follow_status(message.id, TaskStatus::Claimed)?;
        record(
            task.id,
            TaskEventKind::Claimed,
            holder,
            &json!({"messageId": message.id, "claimExpiresAt": expires}),
            now,
        )?;
    }
    Ok(())
}

/// Renewing the message's lease renews the task's.
pub fn on_claim_renewed(message: &Message, now: i64) -> Result<(), RelayError> {
    let Some(task) = task_of(message)? else {
        return Ok(());
    };
    db::execute(
        "UPDATE tasks SET claim_expires_at = ?3, updated_at = ?4
         WHERE id = ?1 AND status = 'claimed' AND claimed_by = ?2",
        &params![
            task.id,
            message.claimed_by.as_deref(),
            message.claim_expires_at,
            now
        ],
    )?;
    Ok(())
}

/// Releasing the message's claim puts a claimed task back to open.
pub fn on_claim_released(message: &Message, agent_id: &str, now: i64) -> Result<(), RelayError> {
    let Some(task) = task_of(message)? else {
        return Ok(());
    };
    let released = db::execute(
        "UPDATE tasks SET status = 'open', claimed_by = NULL, claim_expires_at = NULL,
             updated_at = ?3
         WHERE id = ?1 AND status = 'claimed' AND claimed_by = ?2",
        &params![task.id, agent_id, now],
    )?;
    if released.rows_changed > 0 {
        follow_status(message.id, TaskStatus::Open)?;
        record(
            task.id,
            TaskEventKind::Released,
            agent_id,
            &json!({"messageId": message.id}),
            now,
        )?;
    }
    Ok(())
}

/// A deleted agent's claimed tasks are open again.
pub fn release_held_by(agent_id: &str, now: i64) -> Result<(), RelayError> {
    let held = db::query(
        "SELECT id, message_id FROM tasks WHERE status = 'claimed' AND claimed_by = ?",
        &params![agent_id],
    )?;
    for row in &held {
        let id = row.int("id")?;
        db::execute(
            "UPDATE tasks SET status = 'open', claimed_by = NULL, claim_expires_at = NULL,
                 updated_at = ?2 WHERE id = ?1",
            &params![id, now],
        )?;
        follow_status(row.int("message_id")?, TaskStatus::Open)?;
        record(
            id,
            TaskEventKind::Released,
            agents::SYSTEM,
            &json!({"reason": "agent deleted", "claimedBy": agent_id}),
            now,
        )?;
    }
    Ok(())
}

/// The reaper's part: claimed tasks whose lease has run out are open again.
pub fn release_expired(now: i64) -> Result<u32, RelayError> {
    let expired = db::query(
        "SELECT id, claimed_by, message_id FROM tasks
         WHERE status = 'claimed' AND claim_expires_at <= ?",
        &params![now],
    )?;
    for row in &expired {
        let id = row.int("id")?;
        db::execute(
            "UPDATE tasks SET status = 'open', claimed_by = NULL, claim_expires_at = NULL,
                 updated_at = ?2 WHERE id = ?1",
            &params![id, now],
        )?;
        follow_status(row.int("message_id")?, TaskStatus::Open)?;
        record(
            id,
            TaskEventKind::Released,
            agents::SYSTEM,
            &json!({"reason": "lease expired", "claimedBy": row.opt_text("claimed_by")?}),
            now,
        )?;
    }
    Ok(u32::try_from(expired.len()).unwrap_or(u32::MAX))
}
