//! Messages: send (with idempotency and threads), read, threads, the inbox and read receipts.
//!
//! A message's `to` is a target string (docs/http-api.md §2). Who it reaches is decided when an agent reads its
//! inbox: an agent's inbox holds every message addressed to one of the targets reaching it.

use crate::agents::{self, Party};
use crate::auth::{self, Identity};
use crate::bindings::agent_relay::relay::store::Value;
use crate::bindings::agent_relay::relay::types::{
    AgentCard, AgentKind, Caller, ClaimInput, JobState, JsonText, Message, MessageQuery, PollQuery,
    RelayError, SendMessageInput, SentMessage, ThreadQuery,
};
use crate::db::{self, Row};
use crate::error::{conflict, forbidden, invalid, not_found};
use crate::input::{self, MAX_BODY, MAX_SHORT_TEXT};
use crate::params;

const DEFAULT_LIMIT: u32 = 50;
const DEFAULT_THREAD_LIMIT: u32 = 100;

/// A message's columns, its readers (`read_by`, a JSON array in the order they read it) and
/// the jobs it waits for that are not completed (`blocked_by`, a JSON array in id order).
macro_rules! message_select {
    ($read_by:literal, $blocked_by:literal) => {
        concat!(
            "SELECT m.id, m.from_agent, m.to_target, m.kind, m.channel, m.subject, m.body, \
             m.thread_id, m.reply_to, m.claimable, m.priority, m.claimed_by, m.claimed_at, \
             m.claim_expires_at, m.attempts, m.completed_by, m.completed_at, m.result, \
             m.dead_lettered_at, m.cancelled_at, m.cancelled_by, m.cancel_reason, m.not_before, \
             m.idempotency_key, m.payload, m.meta, m.created_at, ",
            $read_by,
            " AS read_by, ",
            $blocked_by,
            " AS blocked_by FROM messages m"
        )
    };
}

const MESSAGE_SELECT_SQLITE: &str = message_select!(
    "(SELECT json_group_array(agent_id) FROM \
       (SELECT agent_id FROM message_reads WHERE message_id = m.id ORDER BY read_at, agent_id))",
    "(SELECT json_group_array(depends_on) FROM \
       (SELECT d.depends_on FROM job_dependencies d JOIN messages p ON p.id = d.depends_on \
        WHERE d.message_id = m.id AND p.completed_at IS NULL ORDER BY d.depends_on))"
);
const MESSAGE_SELECT_POSTGRES: &str = message_select!(
    "(SELECT CAST(COALESCE(json_agg(agent_id ORDER BY read_at, agent_id), '[]') AS TEXT) \
       FROM message_reads WHERE message_id = m.id)",
    "(SELECT CAST(COALESCE(json_agg(d.depends_on ORDER BY d.depends_on), '[]') AS TEXT) \
       FROM job_dependencies d JOIN messages p ON p.id = d.depends_on \
       WHERE d.message_id = m.id AND p.completed_at IS NULL)"
);

/// The condition over `messages m` that no job it waits for is left uncompleted.
const NOT_BLOCKED: &str = "NOT EXISTS (SELECT 1 FROM job_dependencies d \
     JOIN messages p ON p.id = d.depends_on WHERE d.message_id = m.id AND p.completed_at IS NULL)";

fn message_select() -> &'static str {
    if db::is_postgres() {
        MESSAGE_SELECT_POSTGRES
    } else {
        MESSAGE_SELECT_SQLITE
    }
}

/// One page of the messages `filter` selects (a condition over `messages m`), oldest first, at
/// most `limit` and within the page budget. The page's ids are chosen first and its rows loaded
/// by id after: choosing whole rows, SQLite may sort every matching row in memory, bodies and
/// all (`USE TEMP B-TREE FOR ORDER BY` over the target index's IN list), which for a page of
/// 200 messages of 250 KiB took ~60 MiB per call before the page budget could cut it.
fn message_page(
    filter: &str,
    mut values: Vec<Value>,
    limit: i64,
    by_priority: bool,
) -> Result<Vec<Message>, RelayError> {
    let order = if by_priority {
        "m.priority DESC, m.id"
    } else {
        "m.id"
    };
    let sql = format!(
        "{} WHERE m.id IN \
         (SELECT m.id FROM messages m WHERE {filter} ORDER BY {order} LIMIT ?) ORDER BY {order}",
        message_select()
    );
    values.push(Value::from(limit));
    db::query_page(&sql, &values)?
        .iter()
        .map(message_from_row)
        .collect()
}

/// A parsed target string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Agent(String),
    Label(String),
    Tag(String),
    Capability(String),
    Broadcast,
    Orchestrator(String),
}

impl Target {
    pub fn parse(text: &str) -> Result<Target, RelayError> {
        input::id("to", text)?;
        let group = |prefix: &str, make: fn(String) -> Target| {
            text.strip_prefix(prefix).map(|rest| {
                if rest.is_empty() {
                    Err(invalid(format!(
                        "target {text} names no {}",
                        prefix.trim_end_matches(':')
                    )))
                } else {
                    Ok(make(rest.to_owned()))
                }
            })
        };
        if text == "broadcast" {
            return Ok(Target::Broadcast);
        }
        group("label:", Target::Label)
            .or_else(|| group("tag:", Target::Tag))
            .or_else(|| group("cap:", Target::Capability))
            .or_else(|| group("orchestrator:", Target::Orchestrator))
            .unwrap_or_else(|| Ok(Target::Agent(text.to_owned())))
    }

    pub fn is_group(&self) -> bool {
        !matches!(self, Target::Agent(_))
    }

    /// Whether this target reaches the agent's inbox, group membership included. An offline
    /// agent that polls still sees its groups' messages; the delivery set leaves it out.
    pub fn reaches(&self, agent: &AgentCard) -> Result<bool, RelayError> {
        match self {
            Target::Agent(id) => Ok(*id == agent.id),
            _ if !agents::joins_groups(agent) => Ok(false),
            _ => self.matches_group(agent),
        }
    }

    fn matches_group(&self, agent: &AgentCard) -> Result<bool, RelayError> {
        Ok(match self {
            Target::Agent(_) => false,
            Target::Label(label) => agent.label.as_deref() == Some(label.as_str()),
            Target::Tag(tag) => agent.tags.contains(tag),
            Target::Capability(cap) => agent.capabilities.contains(cap),
            Target::Broadcast => true,
            // Only the orchestrator's registered agent, never one that claims the id in its meta.
            Target::Orchestrator(id) => {
                agents::orchestrator_agent(id)?.as_deref() == Some(agent.id.as_str())
            }
        })
    }
}

/// The delivery set of a target right now: agents that are online (or busy), not built-in, not
/// channels, and match it. Only ids, kinds and statuses are read, found through the label index
/// or the tags and capabilities in SQL: a broadcast over many agents with large cards loads none
/// of them.
pub fn delivery_set(target: &Target) -> Result<Vec<String>, RelayError> {
    let members = match target {
        Target::Agent(id) => agents::parties(&[id.as_str()])?,
        Target::Label(label) => agents::parties_where("label = ?", &params![label.as_str()])?,
        Target::Tag(tag) => agents::parties_where(agents::has_tag(), &params![tag.as_str()])?,
        Target::Capability(cap) => {
            agents::parties_where(agents::has_capability(), &params![cap.as_str()])?
        }
        Target::Broadcast => agents::parties_where("1 = 1", &[])?,
        // Only the orchestrator's registered agent.
        Target::Orchestrator(id) => match agents::orchestrator_agent(id)? {
            Some(agent_id) => agents::parties(&[agent_id.as_str()])?,
            None => Vec::new(),
        },
    };
    Ok(members
        .into_iter()
        .filter(Party::receives)
        .map(|party| party.id)
        .collect())
}

fn message_from_row(row: &Row) -> Result<Message, RelayError> {
    let id = row.int("id")?;
    Ok(Message {
        id,
        from: row.text("from_agent")?,
        to: row.text("to_target")?,
        kind: row.text("kind")?,
        channel: row.opt_text("channel")?,
        subject: row.opt_text("subject")?,
        body: row.text("body")?,
        thread_id: row.opt_int("thread_id")?.unwrap_or(id),
        reply_to: row.opt_int("reply_to")?,
        claimable: row.flag("claimable")?,
        priority: row.int("priority")?,
        claimed_by: row.opt_text("claimed_by")?,
        claimed_at: row.opt_int("claimed_at")?,
        claim_expires_at: row.opt_int("claim_expires_at")?,
        attempts: u32::try_from(row.int("attempts")?).unwrap_or(0),
        completed_by: row.opt_text("completed_by")?,
        completed_at: row.opt_int("completed_at")?,
        result: input::json_text(row.opt_text("result")?),
        dead_lettered_at: row.opt_int("dead_lettered_at")?,
        cancelled_at: row.opt_int("cancelled_at")?,
        cancelled_by: row.opt_text("cancelled_by")?,
        cancel_reason: row.opt_text("cancel_reason")?,
        blocked_by: row
            .opt_text("blocked_by")?
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or_default(),
        not_before: row.opt_int("not_before")?,
        idempotency_key: row.opt_text("idempotency_key")?,
        payload: input::json_text(row.opt_text("payload")?),
        meta: input::json_text(row.opt_text("meta")?),
        read_by: row.string_list("read_by")?,
        created_at: row.int("created_at")?,
    })
}

/// The condition over `messages m` (and its values) selecting what `identity` may read one by
/// one: everything for the operator; for an agent what it sent or what was sent to a target
/// reaching it, after its history floor.
pub fn readable_by(identity: &Identity) -> Result<(String, Vec<Value>), RelayError> {
    let mut filter = "1 = 1".to_owned();
    let mut values: Vec<Value> = Vec::new();
    if let Identity::Agent(id) = identity {
        let targets = agents::targets_reaching(&agents::require(id)?)?;
        let placeholders = vec!["?"; targets.len()].join(", ");
        filter.push_str(&format!(
            " AND (m.from_agent = ? OR m.to_target IN ({placeholders})) AND m.id > ?"
        ));
        values.push(Value::from(id.as_str()));
        values.extend(targets.into_iter().map(Value::from));
        values.push(Value::from(agents::history_floor(id)?));
    }
    Ok((filter, values))
}

/// The messages with these ids, in the order given, as many as the page budget holds.
pub fn page_of(ids: &[i64]) -> Result<Vec<Message>, RelayError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let placeholders = vec!["?"; ids.len()].join(", ");
    let order: String = (0..ids.len())
        .map(|i| format!(" WHEN ? THEN {i}"))
        .collect();
    let mut values: Vec<Value> = ids.iter().copied().map(Value::from).collect();
    values.extend(ids.iter().copied().map(Value::from));
    db::query_page(
        &format!(
            "{} WHERE m.id IN ({placeholders}) ORDER BY CASE m.id{order} END",
            message_select()
        ),
        &values,
    )?
    .iter()
    .map(message_from_row)
    .collect()
}

/// The message with this id, or 404.
pub fn load(id: i64) -> Result<Message, RelayError> {
    db::query_one(
        &format!("{} WHERE m.id = ?", message_select()),
        &params![id],
    )?
    .map(|row| message_from_row(&row))
    .transpose()?
    .ok_or_else(|| not_found(format!("message {id} does not exist")))
}

fn is_channel(party: &Party) -> bool {
    party.kind == AgentKind::Channel
}

/// The kind a claimable message sent without one gets (docs/http-api.md §2): a job. 0.6.0 named
/// it `task`, which is also the kind of an integration task's message (`tasks.rs`); `task` stays
/// accepted on input and readable in old rows (docs/differences-from-0.6.md).
pub const JOB: &str = "job";

/// The claimable kind 0.6.0 gave jobs, still accepted as one.
pub const TASK: &str = "task";

/// docs/http-api.md §2: claimable messages are jobs; anything to or from a channel is a channel
/// event.
fn infer_kind(input: &SendMessageInput, sender: &Party, direct_target: Option<&Party>) -> String {
    if input.claimable == Some(true) {
        return JOB.to_owned();
    }
    let to_channel = direct_target.is_some_and(is_channel);
    if is_channel(sender) || to_channel {
        "channel.event"
    } else {
        "chat"
    }
    .to_owned()
}

/// The sender and, for a direct target, the target agent, read in one query.
fn load_parties(from: &str, target: &Target) -> Result<(Option<Party>, Option<Party>), RelayError> {
    let direct = match target {
        Target::Agent(id) => Some(id.as_str()),
        _ => None,
    };
    let found = agents::parties(
        &[Some(from), direct]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>(),
    )?;
    let pick = |id: &str| found.iter().find(|a| a.id == id).cloned();
    Ok((pick(from), direct.and_then(pick)))
}

/// A tool approval an agent's session asks a human for (docs/channels.md): claimable, so one
/// human answers it; only the operator and `user`-kind agents may (`claims.rs`).
pub const APPROVAL: &str = "approval";

/// docs/http-api.md §2: stored claimable only when asked and the kind or the target allows it.
fn stored_claimable(requested: bool, kind: &str, target: &Target) -> bool {
    requested
        && (matches!(kind, JOB | TASK | "system" | "channel.event" | APPROVAL) || target.is_group())
}

/// Kinds that mean "the relay says so" (docs/security.md): a dead letter's notice, a pair's
/// news, a channel's traffic, a spawn request. The relay's own routes give them; a sender on the
/// messages route does not (`refuse_relay_kind`).
const RELAY_KINDS: [&str; 4] = ["system", "pair", "channel.event", "spawn"];

/// Who chose a message's kind and its thread: its sender on the messages route, or a domain of
/// the relay that composed and authorised the message itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Sender,
    Relay,
}

/// A message as its sender sends it (`POST /v1/messages`, the `send_message` tool): the
/// relay's own kinds are refused, and a `replyTo` must be a message the sender may read.
///
/// It writes the message alone, so its wake key is its target: only the waiters reading that
/// target (the inboxes it reaches) look again. A send with an idempotency key names none (it
/// may also clear the key of an older message to another target), so it wakes every waiter.
pub fn send(caller: &Caller, input: SendMessageInput, now: i64) -> Result<SentMessage, RelayError> {
    let keyed = input.idempotency_key.is_none();
    let sent = post(caller, input, now, Route::Sender)?;
    if keyed {
        db::concerns(&sent.message.to);
    }
    Ok(sent)
}

/// A message a domain of the relay composed (a pair's news and messages, a task's message, a
/// dead letter's notice, a channel event, a spawn request), its kind and thread decided and
/// authorised by that domain's own route.
pub fn deliver(
    caller: &Caller,
    input: SendMessageInput,
    now: i64,
) -> Result<SentMessage, RelayError> {
    post(caller, input, now, Route::Relay)
}

/// The send itself, for either route: parse, authorise, then store the message (or replay the
/// earlier one with its idempotency key) and answer it as stored.
fn post(
    caller: &Caller,
    input: SendMessageInput,
    now: i64,
    route: Route,
) -> Result<SentMessage, RelayError> {
    let parsed = parse_message(&input)?;
    let sending = authorise_send(caller, &input, &parsed, route)?;
    if let Some(key) = &input.idempotency_key
        && let Some(replayed) = replay(&input.from, key)?
    {
        return Ok(replayed);
    }
    let row = compose(&input, parsed, &sending, route, now)?;
    let id = store_message(&input, &row, now)?;
    let recipients = recipients(&row.target, sending.direct_target)?;
    Ok(SentMessage {
        message: sent_message(id, input, row, now),
        created: true,
        recipients,
    })
}

/// A message's fields as sent, checked: its target parsed, its kind if one was named, payload
/// and meta as the text to store.
struct Parsed {
    target: Target,
    kind: Option<String>,
    payload: String,
    meta: String,
}

/// Parse: every field is checked before the store is asked anything, so a bad request is
/// refused for what it says, whoever sends it.
fn parse_message(input: &SendMessageInput) -> Result<Parsed, RelayError> {
    input::id("from", &input.from)?;
    let target = Target::parse(&input.to)?;
    input::text("body", &input.body, MAX_BODY)?;
    if let Some(subject) = &input.subject {
        input::text("subject", subject, MAX_SHORT_TEXT)?;
    }
    if let Some(channel) = &input.channel {
        input::id("channel", channel)?;
    }
    if let Some(key) = &input.idempotency_key {
        input::id("idempotencyKey", key)?;
    }
    let payload = input::json_object("payload", input.payload.as_ref())?;
    let meta = input::json_object("meta", input.meta.as_ref())?;
    let kind = match &input.kind {
        Some(kind) => Some(input::id("kind", kind)?.to_owned()),
        None => None,
    };
    Ok(Parsed {
        target,
        kind,
        payload: input::to_json_text(&payload),
        meta: input::to_json_text(&meta),
    })
}

/// Who sends, as what kind, and the target agent of a direct message.
struct Sending {
    identity: Identity,
    kind: String,
    direct_target: Option<Party>,
}

/// Authorise: a send acts as its `from` (the agent itself, or the operator for any agent); the
/// sender and the target must exist (read in one query); a kind not named is inferred from the
/// parties, and on the messages route it is none of the relay's own.
fn authorise_send(
    caller: &Caller,
    input: &SendMessageInput,
    parsed: &Parsed,
    route: Route,
) -> Result<Sending, RelayError> {
    let identity = auth::act_as(caller, &input.from)?;
    let (sender, direct_target) = load_parties(&input.from, &parsed.target)?;
    let sender = sender
        .ok_or_else(|| not_found(format!("sender {} is not a registered agent", input.from)))?;
    check_target_exists(&parsed.target, direct_target.as_ref())?;
    let kind = match &parsed.kind {
        Some(kind) => kind.clone(),
        None => infer_kind(input, &sender, direct_target.as_ref()),
    };
    if route == Route::Sender {
        refuse_relay_kind(&identity, &kind, &sender, direct_target.as_ref())?;
    }
    Ok(Sending {
        identity,
        kind,
        direct_target,
    })
}

/// A new message's row, beyond the request's own fields: what the send decided.
struct NewMessage {
    target: Target,
    kind: String,
    thread_id: Option<i64>,
    claimable: bool,
    priority: i64,
    /// A job's `runAt`/`delayMs`, when in the future.
    not_before: Option<i64>,
    payload: String,
    meta: String,
}

/// The rest of the row, decided after any replay: a spawn request is refused while its
/// orchestrator drains (a request sent before the drain began was answered as a replay), a
/// reply joins its parent's thread, and `claimable` is stored only where the kind or the target
/// allows it.
fn compose(
    input: &SendMessageInput,
    parsed: Parsed,
    sending: &Sending,
    route: Route,
    now: i64,
) -> Result<NewMessage, RelayError> {
    if sending.kind == "spawn" {
        refuse_spawn_while_draining(&parsed.target)?;
    }
    let thread_id = input
        .reply_to
        .map(|parent| thread_of_parent(&sending.identity, &input.from, parent, route))
        .transpose()?;
    let requested = input.claimable.unwrap_or(false);
    let priority = input
        .priority
        .map(|p| priority("priority", p))
        .transpose()?;
    let claimable = stored_claimable(requested, &sending.kind, &parsed.target);
    let not_before = not_before(input, claimable, now)?;
    Ok(NewMessage {
        priority: priority.unwrap_or(0),
        claimable,
        not_before,
        target: parsed.target,
        kind: sending.kind.clone(),
        thread_id,
        payload: parsed.payload,
        meta: parsed.meta,
    })
}

/// Apply: the message is written; a new conversation is its own thread. Returns its id.
fn store_message(input: &SendMessageInput, row: &NewMessage, now: i64) -> Result<i64, RelayError> {
    let id = db::insert_returning_id(
        "INSERT INTO messages (from_agent, to_target, kind, channel, subject, body, thread_id,
             reply_to, claimable, priority, not_before, idempotency_key, payload, meta,
             created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        &[
            Value::from(input.from.as_str()),
            Value::from(input.to.as_str()),
            Value::from(row.kind.as_str()),
            Value::from(input.channel.as_deref()),
            Value::from(input.subject.as_deref()),
            Value::from(input.body.as_str()),
            Value::from(row.thread_id),
            Value::from(input.reply_to),
            Value::from(row.claimable),
            Value::from(row.priority),
            Value::from(row.not_before),
            Value::from(input.idempotency_key.as_deref()),
            Value::from(row.payload.as_str()),
            Value::from(row.meta.as_str()),
            Value::from(now),
        ],
    )?;
    if row.thread_id.is_none() {
        db::execute(
            "UPDATE messages SET thread_id = id WHERE id = ? AND thread_id IS NULL",
            &params![id],
        )?;
    }
    Ok(id)
}

/// Who a new message reaches: a direct message lands in its target's inbox whatever the target
/// is (a channel agent's bridge polls it too), so the target is who will see it; a group target
/// reaches its delivery set.
fn recipients(target: &Target, direct_target: Option<Party>) -> Result<Vec<String>, RelayError> {
    Ok(match target {
        Target::Agent(_) => direct_target.map(|party| party.id).into_iter().collect(),
        group => delivery_set(group)?,
    })
}

/// Answer: the message as stored, from the values just written (a new message is unclaimed and
/// unread): the same record `load` would read back.
fn sent_message(id: i64, input: SendMessageInput, row: NewMessage, now: i64) -> Message {
    Message {
        id,
        from: input.from,
        to: input.to,
        kind: row.kind,
        channel: input.channel,
        subject: input.subject,
        body: input.body,
        thread_id: row.thread_id.unwrap_or(id),
        reply_to: input.reply_to,
        claimable: row.claimable,
        priority: row.priority,
        claimed_by: None,
        claimed_at: None,
        claim_expires_at: None,
        attempts: 0,
        completed_by: None,
        completed_at: None,
        result: JsonText {
            json: "{}".to_owned(),
        },
        dead_lettered_at: None,
        cancelled_at: None,
        cancelled_by: None,
        cancel_reason: None,
        // A job that waits for others is read back after they are recorded (dependencies.rs).
        blocked_by: Vec::new(),
        not_before: row.not_before,
        idempotency_key: input.idempotency_key,
        payload: JsonText { json: row.payload },
        meta: JsonText { json: row.meta },
        read_by: Vec::new(),
        created_at: now,
    }
}

/// A sender on the messages route sends no kind of the relay's own (`RELAY_KINDS`). A spawn
/// request comes only through the spawn route, which checks the orchestrator's providers and
/// its draining, whoever asks; the other three are refused to agents (the operator may send
/// them), except `channel.event` on a channel's own traffic, the kind the relay gives it anyway.
fn refuse_relay_kind(
    identity: &Identity,
    kind: &str,
    sender: &Party,
    direct_target: Option<&Party>,
) -> Result<(), RelayError> {
    const MAY: &str = "a message may be chat, job (task, as 0.6.0 named it) or a kind of the \
         sender's own (system, pair, channel.event and spawn come only from the relay)";
    if kind == "spawn" {
        return Err(forbidden(format!(
            "kind spawn is the relay's own: spawn requests go through \
             POST /v1/orchestrators/{{id}}/spawn (request-spawn), which checks the orchestrator's \
             providers and whether it is draining; {MAY}"
        )));
    }
    let Identity::Agent(agent) = identity else {
        return Ok(());
    };
    let channel_traffic =
        kind == "channel.event" && (is_channel(sender) || direct_target.is_some_and(is_channel));
    if RELAY_KINDS.contains(&kind) && !channel_traffic {
        return Err(forbidden(format!(
            "kind {kind} is the relay's own and agent {agent} may not send it; {MAY}"
        )));
    }
    Ok(())
}

/// The earlier message of this sender with this idempotency key, answered as it was stored
/// (with the recipients of its own target). A key belongs to one agent of an id: a message from
/// before the id was re-created (at or below its history floor) is not this agent's to replay,
/// and its key is released so the new message can take it.
fn replay(from: &str, key: &str) -> Result<Option<SentMessage>, RelayError> {
    let Some(row) = db::query_one(
        "SELECT id FROM messages WHERE from_agent = ? AND idempotency_key = ?",
        &params![from, key],
    )?
    else {
        return Ok(None);
    };
    let id = row.int("id")?;
    if id <= agents::history_floor(from)? {
        db::execute(
            "UPDATE messages SET idempotency_key = NULL WHERE id = ?",
            &params![id],
        )?;
        return Ok(None);
    }
    let message = load(id)?;
    let recipients = recipients_of(&message.to)?;
    Ok(Some(SentMessage {
        message,
        created: false,
        recipients,
    }))
}

/// Who a stored message's target reaches now, as a send answers it: a direct target while it is
/// registered, else the target's delivery set.
fn recipients_of(to: &str) -> Result<Vec<String>, RelayError> {
    Ok(match Target::parse(to) {
        Ok(Target::Agent(id)) => agents::parties(&[id.as_str()])?
            .into_iter()
            .map(|party| party.id)
            .collect(),
        Ok(target) => delivery_set(&target)?,
        Err(_) => Vec::new(),
    })
}

/// The thread a reply joins. On the messages route the parent must be a message the caller may
/// read; one it may not is refused exactly as a missing one, so the answer tells nothing of
/// which ids exist.
fn thread_of_parent(
    identity: &Identity,
    from: &str,
    parent: i64,
    route: Route,
) -> Result<i64, RelayError> {
    let unreadable = || {
        not_found(format!(
            "replyTo {parent}: there is no message {parent} that {from} may read"
        ))
    };
    let message = match load(parent) {
        Ok(message) => message,
        Err(RelayError::NotFound(_)) => return Err(unreadable()),
        Err(other) => return Err(other),
    };
    if route == Route::Sender && !visible_to(identity, &message)? {
        return Err(unreadable());
    }
    Ok(message.thread_id)
}

/// A direct target must be a registered agent, an orchestrator target a registered orchestrator.
fn check_target_exists(target: &Target, direct: Option<&Party>) -> Result<(), RelayError> {
    match target {
        Target::Agent(id) if direct.is_none() => {
            return Err(not_found(format!("target agent {id} is not registered")));
        }
        Target::Orchestrator(id) if agents::orchestrator_agent(id)?.is_none() => {
            return Err(not_found(format!("orchestrator {id} is not registered")));
        }
        _ => {}
    }
    Ok(())
}

/// A draining orchestrator finishes what it runs and takes no new spawn requests (0.6.0 took it
/// out of delivery; here the request is refused, so the sender knows).
fn refuse_spawn_while_draining(target: &Target) -> Result<(), RelayError> {
    let Target::Orchestrator(id) = target else {
        return Ok(());
    };
    let draining = db::query_one(
        "SELECT 1 AS draining FROM orchestrators WHERE id = ? AND status = 'draining'",
        &params![id.as_str()],
    )?;
    if draining.is_some() {
        return Err(conflict(format!(
            "orchestrator {id} is draining; it takes no new spawn requests"
        )));
    }
    Ok(())
}

/// Whether the identity may see the message: the operator, its sender, or an agent it reaches.
pub fn visible_to(identity: &Identity, message: &Message) -> Result<bool, RelayError> {
    let id = match identity {
        Identity::Operator => return Ok(true),
        Identity::Agent(id) => id,
    };
    // A message from before the agent's id was re-created belongs to the id's past.
    if message.id <= agents::history_floor(id)? {
        return Ok(false);
    }
    if *id == message.from {
        return Ok(true);
    }
    let agent = agents::require(id)?;
    match Target::parse(&message.to) {
        Ok(target) => target.reaches(&agent),
        Err(_) => Ok(false),
    }
}

pub fn get(caller: &Caller, id: i64) -> Result<Message, RelayError> {
    let identity = auth::identify(caller)?;
    let message = load(id)?;
    if !visible_to(&identity, &message)? {
        return Err(forbidden(format!(
            "message {id} is neither from nor to the calling agent"
        )));
    }
    Ok(message)
}

/// A page of a thread, oldest first: every message for the operator, else each message the
/// agent may read alone (`visible_to`): those it sent or is reached by (the same targets as its
/// inbox), never one from before its id was re-created. A thread that exists but holds nothing
/// the agent may read is 403, as a single read of one of its messages is.
pub fn thread(
    caller: &Caller,
    thread_id: i64,
    query: &ThreadQuery,
) -> Result<Vec<Message>, RelayError> {
    let identity = auth::identify(caller)?;
    let limit = db::page_limit(query.limit, DEFAULT_THREAD_LIMIT, db::MAX_LIMIT)?;
    let mut visible = "m.thread_id = ?".to_owned();
    let mut values = vec![Value::from(thread_id)];
    if let Identity::Agent(id) = &identity {
        let targets = agents::targets_reaching(&agents::require(id)?)?;
        let placeholders = vec!["?"; targets.len()].join(", ");
        visible.push_str(&format!(
            " AND (m.from_agent = ? OR m.to_target IN ({placeholders})) AND m.id > ?"
        ));
        values.push(Value::from(id.as_str()));
        values.extend(targets.into_iter().map(Value::from));
        values.push(Value::from(agents::history_floor(id)?));
    }
    let mut filter = visible.clone();
    let mut page_values = values.clone();
    if let Some(since) = query.since {
        filter.push_str(" AND m.id > ?");
        page_values.push(Value::from(since));
    }
    let page = message_page(&filter, page_values, limit, false)?;
    if !page.is_empty() {
        return Ok(page);
    }
    if db::query_one(
        "SELECT 1 AS found FROM messages WHERE thread_id = ? LIMIT 1",
        &params![thread_id],
    )?
    .is_none()
    {
        return Err(not_found(format!("thread {thread_id} does not exist")));
    }
    if let Identity::Agent(id) = &identity
        && db::query_one(
            &format!("SELECT 1 AS found FROM messages m WHERE {visible} LIMIT 1"),
            &values,
        )?
        .is_none()
    {
        return Err(forbidden(format!(
            "thread {thread_id} holds no message that agent {id} may read: none is from or to \
             it since it was registered"
        )));
    }
    Ok(page)
}

/// The inbox: messages whose target reaches the agent, oldest first. It peeks: nothing is marked
/// read. Claimable messages held by another agent under a live lease, and jobs completed by
/// anyone else, are left out.
pub fn inbox(
    caller: &Caller,
    agent_id: &str,
    query: &PollQuery,
    now: i64,
) -> Result<Vec<Message>, RelayError> {
    input::id("agentId", agent_id)?;
    auth::act_as(caller, agent_id)?;
    let agent = agents::require(agent_id)?;
    let limit = db::page_limit(query.limit, DEFAULT_LIMIT, db::MAX_LIMIT)?;
    let targets = agents::targets_reaching(&agent)?;
    // The answer depends on the messages to these targets: their wake keys.
    targets.iter().for_each(|target| db::concerns(target));
    let placeholders = vec!["?"; targets.len()].join(", ");
    let mut filter = format!(
        "m.to_target IN ({placeholders})
           AND (m.to_target = ? OR m.from_agent != ?)
           AND NOT (m.claimable = 1 AND m.claimed_by IS NOT NULL AND m.claimed_by != ?
                    AND m.claim_expires_at > ?)
           AND NOT (m.completed_at IS NOT NULL AND m.completed_by IS DISTINCT FROM ?)
           AND m.id > (SELECT history_from FROM agents WHERE id = ?)"
    );
    let mut values: Vec<Value> = targets.into_iter().map(Value::from).collect();
    values.extend(params![
        agent_id, agent_id, agent_id, now, agent_id, agent_id
    ]);
    if let Some(state) = query.state {
        filter_state(&mut filter, &mut values, state, now);
    }
    if let Some(since) = query.since {
        filter.push_str(" AND m.id > ?");
        values.push(Value::from(since));
    }
    if query.unread == Some(true) {
        filter.push_str(" AND NOT EXISTS (SELECT 1 FROM message_reads r WHERE r.message_id = m.id AND r.agent_id = ?)");
        values.push(Value::from(agent_id));
    }
    if let Some(kind) = &query.kind {
        filter.push_str(" AND m.kind = ?");
        values.push(Value::from(kind.as_str()));
    }
    if let Some(channel) = &query.channel {
        filter.push_str(" AND m.channel = ?");
        values.push(Value::from(channel.as_str()));
    }
    if let Some(thread_id) = query.thread_id {
        filter.push_str(" AND m.thread_id = ?");
        values.push(Value::from(thread_id));
    }
    filter_priority(&mut filter, &mut values, query.min_priority)?;
    message_page(&filter, values, limit, query.by_priority == Some(true))
}

/// Whether the message's target reaches the agent (its recipients: whoever the target reaches,
/// group membership included; its sender only when the target reaches it too).
pub fn addressed_to(message: &Message, agent: &AgentCard) -> Result<bool, RelayError> {
    match Target::parse(&message.to) {
        Ok(target) => target.reaches(agent),
        Err(_) => Ok(false),
    }
}

/// Loads a message on behalf of an acting agent, refusing agents it does not reach and messages
/// from before the agent's id was re-created.
pub fn load_for(agent: &AgentCard, id: i64) -> Result<Message, RelayError> {
    let message = load(id)?;
    if id <= agents::history_floor(&agent.id)? {
        return Err(forbidden(format!(
            "message {id} is from before agent {} was registered again; only the operator may \
             give it the id's history (keepHistory)",
            agent.id
        )));
    }
    if !addressed_to(&message, agent)? && message.from != agent.id {
        return Err(forbidden(format!(
            "message {id} is not addressed to agent {}",
            agent.id
        )));
    }
    Ok(message)
}

pub fn mark_read(
    caller: &Caller,
    id: i64,
    input: &ClaimInput,
    now: i64,
) -> Result<Message, RelayError> {
    let (_, agent) = agents::acting(
        caller,
        &input.agent_id,
        input.instance_id.as_deref(),
        input.epoch,
    )?;
    load_for(&agent, id)?;
    record_read(id, &agent.id, now)?;
    load(id)
}

/// Notes that the agent has read the message (once: reading again keeps the first time).
pub fn record_read(id: i64, agent_id: &str, now: i64) -> Result<(), RelayError> {
    db::execute(
        "INSERT INTO message_reads (message_id, agent_id, read_at) VALUES (?, ?, ?)
         ON CONFLICT DO NOTHING",
        &params![id, agent_id, now],
    )?;
    Ok(())
}

/// The furthest ahead a job may be scheduled (`runAt`, `delayMs`): a year.
pub const MAX_SCHEDULE_MS: i64 = 365 * 86_400_000;

/// When a new job may first be claimed: its `runAt` (a past time is due now) or `delayMs` from
/// now, not both; `None` when at once. Only a job (a message stored claimable) is scheduled.
fn not_before(
    input: &SendMessageInput,
    claimable: bool,
    now: i64,
) -> Result<Option<i64>, RelayError> {
    let at = match (input.run_at, input.delay_ms) {
        (None, None) => return Ok(None),
        (Some(_), Some(_)) => {
            return Err(invalid(
                "runAt and delayMs both given: a job waits for one of them",
            ));
        }
        (Some(at), None) => {
            if at < 0 || at > now.saturating_add(MAX_SCHEDULE_MS) {
                return Err(invalid(format!(
                    "runAt {at} must be a time (epoch ms) at most a year from now ({now})"
                )));
            }
            at
        }
        (None, Some(delay)) => {
            if !(0..=MAX_SCHEDULE_MS).contains(&delay) {
                return Err(invalid(format!(
                    "delayMs {delay} must be between 0 and {MAX_SCHEDULE_MS} (a year)"
                )));
            }
            now + delay
        }
    };
    if !claimable {
        return Err(invalid(
            "runAt/delayMs: only a job (claimable: true, of a kind or to a target that allows it) \
             waits for a time",
        ));
    }
    Ok((at > now).then_some(at))
}

/// The highest priority a job may have (docs/http-api.md §2, "Priorities").
pub const MAX_PRIORITY: i64 = 1000;

/// A priority as given in `field`: 0 to `MAX_PRIORITY`, or a 400 naming the field.
fn priority(field: &str, value: i64) -> Result<i64, RelayError> {
    if (0..=MAX_PRIORITY).contains(&value) {
        Ok(value)
    } else {
        Err(invalid(format!(
            "{field} {value} must be between 0 and {MAX_PRIORITY}"
        )))
    }
}

/// Narrows a message filter to the messages of at least `min` priority (the inbox's and the
/// list's `minPriority`).
fn filter_priority(
    filter: &mut String,
    values: &mut Vec<Value>,
    min: Option<i64>,
) -> Result<(), RelayError> {
    if let Some(min) = min {
        filter.push_str(" AND m.priority >= ?");
        values.push(Value::from(priority("minPriority", min)?));
    }
    Ok(())
}

/// Narrows a message filter to the jobs in one state at `now` (the inbox's and the list's).
fn filter_state(filter: &mut String, values: &mut Vec<Value>, state: JobState, now: i64) {
    let (condition, params) = job_state_condition(state, now);
    filter.push_str(" AND ");
    filter.push_str(&condition);
    values.extend(params);
}

/// The condition over `messages m` that selects the jobs in one state at `now`, and its
/// parameters: the one definition of the states, for the filters and the counts (`stats`).
pub fn job_state_condition(state: JobState, now: i64) -> (String, Vec<Value>) {
    const JOB: &str = "m.claimable = 1 AND m.completed_at IS NULL \
         AND m.dead_lettered_at IS NULL AND m.cancelled_at IS NULL";
    match state {
        JobState::Open => (
            format!(
                "({JOB} AND (m.claimed_by IS NULL OR m.claim_expires_at <= ?) AND {NOT_BLOCKED} \
                 AND (m.not_before IS NULL OR m.not_before <= ?))"
            ),
            vec![Value::from(now), Value::from(now)],
        ),
        JobState::Scheduled => (
            format!(
                "({JOB} AND (m.claimed_by IS NULL OR m.claim_expires_at <= ?) AND {NOT_BLOCKED} \
                 AND m.not_before > ?)"
            ),
            vec![Value::from(now), Value::from(now)],
        ),
        JobState::Blocked => (format!("({JOB} AND NOT {NOT_BLOCKED})"), Vec::new()),
        JobState::Cancelled => ("(m.cancelled_at IS NOT NULL)".to_owned(), Vec::new()),
        JobState::Claimed => (
            format!("({JOB} AND m.claimed_by IS NOT NULL AND m.claim_expires_at > ?)"),
            vec![Value::from(now)],
        ),
        JobState::Completed => ("(m.completed_at IS NOT NULL)".to_owned(), Vec::new()),
        JobState::Dead => (
            "(m.dead_lettered_at IS NOT NULL AND m.completed_at IS NULL)".to_owned(),
            Vec::new(),
        ),
    }
}

/// Messages across inboxes, oldest first (docs/http-api.md §2, "The list of jobs"): all of them
/// for the operator; for an agent, only those it may read one by one (`visible_to`: sent by it
/// or to a target reaching it, none from before its id was re-created). Filtered by dead
/// letters, job state, holder (the live holder or the one who completed it), target and kind;
/// a page like the inbox's (at most `limit`, fewer when the page budget is reached).
pub fn list(caller: &Caller, query: &MessageQuery, now: i64) -> Result<Vec<Message>, RelayError> {
    let identity = auth::identify(caller)?;
    let holder = query
        .holder
        .as_deref()
        .map(|holder| input::id("holder", holder))
        .transpose()?;
    query.to.as_deref().map(Target::parse).transpose()?;
    let kind = query
        .kind
        .as_deref()
        .map(|kind| input::id("kind", kind))
        .transpose()?;
    let limit = db::page_limit(query.limit, DEFAULT_LIMIT, db::MAX_LIMIT)?;
    let (mut filter, mut values) = readable_by(&identity)?;
    if let Some(state) = query.state {
        filter_state(&mut filter, &mut values, state, now);
    }
    if let Some(holder) = holder {
        filter.push_str(
            " AND ((m.claimed_by = ? AND m.claim_expires_at > ? AND m.completed_at IS NULL)
                   OR m.completed_by = ?)",
        );
        values.extend(params![holder, now, holder]);
    }
    if let Some(to) = &query.to {
        filter.push_str(" AND m.to_target = ?");
        values.push(Value::from(to.as_str()));
    }
    if let Some(kind) = kind {
        filter.push_str(" AND m.kind = ?");
        values.push(Value::from(kind));
    }
    match query.dead_lettered {
        Some(true) => {
            filter.push_str(" AND m.dead_lettered_at IS NOT NULL AND m.completed_at IS NULL")
        }
        Some(false) => {
            filter.push_str(" AND NOT (m.dead_lettered_at IS NOT NULL AND m.completed_at IS NULL)");
        }
        None => {}
    }
    if let Some(since) = query.since {
        filter.push_str(" AND m.id > ?");
        values.push(Value::from(since));
    }
    filter_priority(&mut filter, &mut values, query.min_priority)?;
    message_page(&filter, values, limit, query.by_priority == Some(true))
}

/// A job claim-next may take, as found, with the claims it has had.
pub struct Job {
    pub id: i64,
    pub attempts: u32,
}

/// The condition over `messages m` (and its values) selecting the jobs claim-next may give the
/// agent, whatever the time: claimable, not completed, dead-lettered or cancelled, waiting for
/// no open job, in its inbox (not its own to a group) and after its history floor, matching the
/// filters.
fn jobs_for(
    agent: &AgentCard,
    kind: Option<&str>,
    channel: Option<&str>,
) -> Result<(String, Vec<Value>), RelayError> {
    let targets = agents::targets_reaching(agent)?;
    let placeholders = vec!["?"; targets.len()].join(", ");
    let mut filter = format!(
        "m.to_target IN ({placeholders})
           AND m.claimable = 1 AND m.completed_at IS NULL AND m.dead_lettered_at IS NULL
           AND m.cancelled_at IS NULL AND {NOT_BLOCKED}
           AND (m.to_target = ? OR m.from_agent != ?)
           AND m.id > ?"
    );
    let mut values: Vec<Value> = targets.into_iter().map(Value::from).collect();
    // Nothing sent before a re-created id was registered (unless it keeps the history).
    let floor = agents::history_floor(&agent.id)?;
    values.extend(params![agent.id.as_str(), agent.id.as_str(), floor]);
    if let Some(kind) = kind {
        filter.push_str(" AND m.kind = ?");
        values.push(Value::from(kind));
    }
    if let Some(channel) = channel {
        filter.push_str(" AND m.channel = ?");
        values.push(Value::from(channel));
    }
    Ok((filter, values))
}

/// The jobs in the agent's inbox that nobody holds and that are due, highest priority first,
/// then oldest (`jobs_for`, unclaimed or with an expired lease, and not before their time).
pub fn available_jobs(
    agent: &AgentCard,
    kind: Option<&str>,
    channel: Option<&str>,
    now: i64,
    limit: u32,
) -> Result<Vec<Job>, RelayError> {
    let (filter, mut values) = jobs_for(agent, kind, channel)?;
    let mut sql = format!(
        "SELECT m.id, m.attempts FROM messages m WHERE {filter}
           AND (m.claimed_by IS NULL OR m.claim_expires_at <= ?)
           AND (m.not_before IS NULL OR m.not_before <= ?)
         ORDER BY m.priority DESC, m.id LIMIT ?"
    );
    values.extend(params![now, now, i64::from(limit)]);
    if db::is_postgres() {
        // claim-next's transaction is READ COMMITTED there: each worker locks what it takes and
        // skips the jobs other running calls hold instead of fighting for them (a lost race
        // would cost a serialization failure and a re-run of the whole call); a row claimed
        // since the snapshot is re-checked when locked and left out. SQLite has one writer.
        sql.push_str(" FOR UPDATE OF m SKIP LOCKED");
    }
    db::query(&sql, &values)?
        .iter()
        .map(|row| {
            Ok(Job {
                id: row.int("id")?,
                attempts: u32::try_from(row.int("attempts")?).unwrap_or(u32::MAX),
            })
        })
        .collect()
}

/// When the first job claim-next could give the agent but not yet becomes due (`jobs_for`
/// with a `not_before` still ahead: scheduled, backing off, or held under a lease, whose
/// `not_before` is when it comes back if the lease runs out). `None` when there is none.
pub fn next_due(
    agent: &AgentCard,
    kind: Option<&str>,
    channel: Option<&str>,
    now: i64,
) -> Result<Option<i64>, RelayError> {
    let (filter, mut values) = jobs_for(agent, kind, channel)?;
    values.push(Value::from(now));
    let row = db::query_one(
        &format!(
            "SELECT MIN(m.not_before) AS due FROM messages m WHERE {filter} AND m.not_before > ?"
        ),
        &values,
    )?;
    Ok(row.map(|row| row.opt_int("due")).transpose()?.flatten())
}
