//! Pair sessions: one agent asks another to work together (docs/http-api.md §6).
//!
//! pending --accept (partner)--> active --end (either)--> ended
//! pending --decline (partner)--> declined;  pending --cancel (requester)--> cancelled
//!
//! Each change sends a `pair` message from `system` to the participant who did not act; while a
//! pair is active its participants message each other. All of a pair's messages share one thread.

use serde_json::{Value as Json, json};

use crate::agents;
use crate::auth::{self, Identity};
use crate::bindings::agent_relay::relay::pair_types::{
    CreatePairInput, Pair, PairAction, PairActionInput, PairMessageInput, PairQuery, PairStatus,
};
use crate::bindings::agent_relay::relay::store::Value;
use crate::bindings::agent_relay::relay::types::{
    Caller, JsonText, Message, RelayError, SendMessageInput, SentMessage,
};
use crate::db::{self, Row, Stored};
use crate::error::{conflict, forbidden, invalid, not_found};
use crate::input::{self, MAX_BODY, MAX_SHORT_TEXT};
use crate::{messages, params, stored_enum};

const DEFAULT_LIMIT: u32 = 100;

const PAIR_COLUMNS: &str =
    "id, requester_id, partner_id, status, topic, thread_id, legacy_id, created_at, updated_at";

stored_enum!(PairStatus {
    Pending => "pending",
    Active => "active",
    Declined => "declined",
    Cancelled => "cancelled",
    Ended => "ended",
});

stored_enum!(PairAction {
    Accept => "accept",
    Decline => "decline",
    Cancel => "cancel",
    End => "end",
});

fn pair_from_row(row: &Row) -> Result<Pair, RelayError> {
    Ok(Pair {
        id: row.int("id")?,
        requester_id: row.text("requester_id")?,
        partner_id: row.text("partner_id")?,
        status: row.case_or("status", PairStatus::Pending)?,
        topic: row.opt_text("topic")?,
        thread_id: row.opt_int("thread_id")?,
        legacy_id: row.opt_text("legacy_id")?,
        created_at: row.int("created_at")?,
        updated_at: row.int("updated_at")?,
    })
}

fn require(id: i64) -> Result<Pair, RelayError> {
    db::query_one(
        &format!("SELECT {PAIR_COLUMNS} FROM pair_sessions WHERE id = ?"),
        &params![id],
    )?
    .map(|row| pair_from_row(&row))
    .transpose()?
    .ok_or_else(|| not_found(format!("pair {id} does not exist")))
}

fn is_participant(pair: &Pair, agent_id: &str) -> bool {
    pair.requester_id == agent_id || pair.partner_id == agent_id
}

/// The participant who is not `agent_id`.
fn other<'a>(pair: &'a Pair, agent_id: &str) -> &'a str {
    if pair.requester_id == agent_id {
        &pair.partner_id
    } else {
        &pair.requester_id
    }
}

fn require_participant(pair: &Pair, agent_id: &str) -> Result<(), RelayError> {
    if is_participant(pair, agent_id) {
        Ok(())
    } else {
        Err(forbidden(format!(
            "agent {agent_id} is not a participant of pair {}",
            pair.id
        )))
    }
}

/// The payload every message of a pair carries, plus whatever the sender added.
fn pair_payload(pair: &Pair, event: &str, extra: serde_json::Map<String, Json>) -> JsonText {
    let mut payload = extra;
    payload.insert("pairId".to_owned(), json!(pair.id));
    payload.insert("pairEvent".to_owned(), json!(event));
    payload.insert("requesterId".to_owned(), json!(pair.requester_id));
    payload.insert("partnerId".to_owned(), json!(pair.partner_id));
    JsonText {
        json: Json::Object(payload).to_string(),
    }
}

/// Tells one participant about a change of the pair, from `system`, in the pair's thread.
fn notify(
    pair: &Pair,
    to: &str,
    event: &str,
    body: String,
    now: i64,
) -> Result<Message, RelayError> {
    let topic = pair
        .topic
        .as_deref()
        .map_or_else(String::new, |t| format!(": {t}"));
    let sent = messages::deliver(
        &Caller::Operator,
        SendMessageInput {
            from: agents::SYSTEM.to_owned(),
            to: to.to_owned(),
            kind: Some("pair".to_owned()),
            channel: None,
            subject: Some(format!("Pair {} {event}{topic}", pair.id)),
            body,
            reply_to: pair.thread_id,
            claimable: None,
            priority: None,
            after: None,
            run_at: None,
            delay_ms: None,
            idempotency_key: None,
            payload: Some(pair_payload(pair, event, serde_json::Map::new())),
            meta: None,
        },
        now,
    )?;
    Ok(sent.message)
}

pub fn create(caller: &Caller, input: &CreatePairInput, now: i64) -> Result<Pair, RelayError> {
    agents::acting(
        caller,
        &input.requester_id,
        input.instance_id.as_deref(),
        input.epoch,
    )?;
    input::id("partnerId", &input.partner_id)?;
    if input.partner_id == input.requester_id {
        return Err(invalid("an agent cannot pair with itself"));
    }
    if agents::is_builtin(&input.partner_id) || agents::is_builtin(&input.requester_id) {
        return Err(invalid("the built-in agents user and system do not pair"));
    }
    agents::require(&input.partner_id)?;
    if let Some(topic) = &input.topic {
        input::text("topic", topic, MAX_SHORT_TEXT)?;
    }
    let open = db::query_one(
        "SELECT id FROM pair_sessions
         WHERE status IN ('pending', 'active')
           AND ((requester_id = ?1 AND partner_id = ?2) OR (requester_id = ?2 AND partner_id = ?1))",
        &params![input.requester_id.as_str(), input.partner_id.as_str()],
    )?;
    if let Some(row) = open {
        return Err(conflict(format!(
            "{} and {} already have pair {} pending or active",
            input.requester_id,
            input.partner_id,
            row.int("id")?
        )));
    }
    let id = db::insert_returning_id(
        "INSERT INTO pair_sessions (requester_id, partner_id, status, topic, created_at, updated_at)
         VALUES (?, ?, 'pending', ?, ?, ?)",
        &params![
            input.requester_id.as_str(),
            input.partner_id.as_str(),
            input.topic.as_deref(),
            now,
            now
        ],
    )?;
    let pair = require(id)?;
    let request = notify(
        &pair,
        &pair.partner_id,
        "requested",
        format!(
            "{} asks {} to pair{}. Accept or decline pair {}.",
            pair.requester_id,
            pair.partner_id,
            pair.topic
                .as_deref()
                .map_or_else(String::new, |t| format!(" on {t}")),
            pair.id
        ),
        now,
    )?;
    db::execute(
        "UPDATE pair_sessions SET thread_id = ? WHERE id = ?",
        &params![request.thread_id, pair.id],
    )?;
    require(pair.id)
}

pub fn act(
    caller: &Caller,
    id: i64,
    input: &PairActionInput,
    now: i64,
) -> Result<Pair, RelayError> {
    agents::acting(
        caller,
        &input.agent_id,
        input.instance_id.as_deref(),
        input.epoch,
    )?;
    let pair = require(id)?;
    require_participant(&pair, &input.agent_id)?;
    let is_requester = pair.requester_id == input.agent_id;
    let (allowed, next, event) = match input.action {
        PairAction::Accept => (
            !is_requester && pair.status == PairStatus::Pending,
            PairStatus::Active,
            "accepted",
        ),
        PairAction::Decline => (
            !is_requester && pair.status == PairStatus::Pending,
            PairStatus::Declined,
            "declined",
        ),
        PairAction::Cancel => (
            is_requester && pair.status == PairStatus::Pending,
            PairStatus::Cancelled,
            "cancelled",
        ),
        PairAction::End => (
            pair.status == PairStatus::Active,
            PairStatus::Ended,
            "ended",
        ),
    };
    if !allowed {
        let role = if is_requester { "requester" } else { "partner" };
        return Err(conflict(format!(
            "pair {id} is {}; its {role} {} cannot {}",
            pair.status.name(),
            input.agent_id,
            input.action.name()
        )));
    }
    db::execute(
        "UPDATE pair_sessions SET status = ?2, updated_at = ?3 WHERE id = ?1",
        &params![id, next.name(), now],
    )?;
    let pair = require(id)?;
    notify(
        &pair,
        other(&pair, &input.agent_id),
        event,
        format!("{} {event} pair {}.", input.agent_id, pair.id),
        now,
    )?;
    Ok(pair)
}

/// A deleted agent leaves its pairs: pending ones are cancelled, active ones ended, and the other
/// participant (when still registered) is told.
pub fn leave_all(agent_id: &str, now: i64) -> Result<(), RelayError> {
    let open: Vec<Pair> = db::query(
        &format!(
            "SELECT {PAIR_COLUMNS} FROM pair_sessions
             WHERE status IN ('pending', 'active') AND (requester_id = ?1 OR partner_id = ?1)
             ORDER BY id"
        ),
        &params![agent_id],
    )?
    .iter()
    .map(pair_from_row)
    .collect::<Result<_, _>>()?;
    for pair in open {
        let (next, event) = match pair.status {
            PairStatus::Pending => (PairStatus::Cancelled, "cancelled"),
            _ => (PairStatus::Ended, "ended"),
        };
        db::execute(
            "UPDATE pair_sessions SET status = ?2, updated_at = ?3 WHERE id = ?1",
            &params![pair.id, next.name(), now],
        )?;
        let pair = require(pair.id)?;
        let partner = other(&pair, agent_id);
        if agents::load(partner)?.is_some() {
            notify(
                &pair,
                partner,
                event,
                format!("{agent_id} was deleted; pair {} is {event}.", pair.id),
                now,
            )?;
        }
    }
    Ok(())
}

pub fn send(
    caller: &Caller,
    id: i64,
    input: PairMessageInput,
    now: i64,
) -> Result<SentMessage, RelayError> {
    agents::acting(
        caller,
        &input.from,
        input.instance_id.as_deref(),
        input.epoch,
    )?;
    let pair = require(id)?;
    require_participant(&pair, &input.from)?;
    if pair.status != PairStatus::Active {
        return Err(conflict(format!(
            "pair {id} is {}; messages go only while it is active",
            pair.status.name()
        )));
    }
    input::text("body", &input.body, MAX_BODY)?;
    let extra = input::json_object("payload", input.payload.as_ref())?;
    messages::deliver(
        caller,
        SendMessageInput {
            to: other(&pair, &input.from).to_owned(),
            from: input.from,
            kind: Some("pair".to_owned()),
            channel: None,
            subject: Some(input.subject.unwrap_or_else(|| format!("Pair {id}"))),
            body: input.body,
            reply_to: pair.thread_id,
            claimable: None,
            priority: None,
            after: None,
            run_at: None,
            delay_ms: None,
            idempotency_key: None,
            payload: Some(pair_payload(&pair, "message", extra)),
            meta: None,
        },
        now,
    )
}

pub fn get(caller: &Caller, id: i64) -> Result<Pair, RelayError> {
    let identity = auth::identify(caller)?;
    let pair = require(id)?;
    if let Identity::Agent(agent_id) = &identity {
        require_participant(&pair, agent_id)?;
    }
    Ok(pair)
}

/// Pairs newest first; an agent sees only its own.
pub fn list(caller: &Caller, query: &PairQuery) -> Result<Vec<Pair>, RelayError> {
    let participant = match (auth::identify(caller)?, &query.agent_id) {
        (Identity::Operator, wanted) => wanted.clone(),
        (Identity::Agent(me), Some(wanted)) if *wanted != me => {
            return Err(forbidden(format!(
                "agent {me} may list only its own pairs, not {wanted}'s"
            )));
        }
        (Identity::Agent(me), _) => Some(me),
    };
    let mut sql = format!("SELECT {PAIR_COLUMNS} FROM pair_sessions WHERE 1 = 1");
    let mut values: Vec<Value> = Vec::new();
    if let Some(agent_id) = participant {
        sql.push_str(" AND (requester_id = ? OR partner_id = ?)");
        values.extend(params![agent_id.as_str(), agent_id.as_str()]);
    }
    if let Some(status) = query.status {
        sql.push_str(" AND status = ?");
        values.push(Value::from(status.name()));
    }
    // Only compared, as the other filters are: an odd value matches no pair.
    if let Some(legacy_id) = &query.legacy_id {
        sql.push_str(" AND legacy_id = ?");
        values.push(Value::from(legacy_id.as_str()));
    }
    if let Some(before) = query.before {
        sql.push_str(" AND id < ?");
        values.push(Value::from(before));
    }
    sql.push_str(" ORDER BY id DESC LIMIT ?");
    values.push(Value::from(db::page_limit(
        query.limit,
        DEFAULT_LIMIT,
        db::MAX_LIMIT,
    )?));
    db::query_page(&sql, &values)?
        .iter()
        .map(pair_from_row)
        .collect()
}
