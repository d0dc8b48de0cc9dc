//! Channels: the records of chat bridges, their bindings, route resolution and inbound events.
//!
//! A channel is the shadow of a channel agent (docs/http-api.md §3): registering the agent upserts the record,
//! and the agent's `meta.target` is its default binding. A binding sends a channel's events to a
//! target; route resolution prefers the conversation's own bindings over the channel's defaults.
//! An inbound event becomes one `channel.event` message per route, sent as the channel agent, so
//! replies and polling work exactly as for any agent.

use serde_json::{Map, Value as Json};
use sha2::{Digest, Sha256};

use crate::bindings::agent_relay::relay::channel_types::{
    BindingInput, BindingMode, ChannelBinding, ChannelDirection, ChannelRoute, ChannelSummary,
    Delivery, InboundEvent, InboundResult, PageQuery, RouteQuery, RouteSource, RouteTarget,
    RouteTargetType,
};
use crate::bindings::agent_relay::relay::store::Value;
use crate::bindings::agent_relay::relay::types::{
    AgentCard, AgentKind, AgentStatus, Caller, Deleted, JsonText, RegisterAgentInput,
    RegisteredAgent, RelayError, SendMessageInput,
};
use crate::db::{self, Row, Stored};
use crate::error::{conflict, invalid, not_found};
use crate::input::{self, MAX_BODY, MAX_SHORT_TEXT};
use crate::messages::{self, Target};
use crate::{agents, auth, params, stored_enum};

const CHANNEL_SELECT: &str = "SELECT c.id, c.provider, c.account_id, c.display_name, c.agent_id, \
     c.transport, c.direction, c.topic_channels, c.capabilities, c.meta, \
     a.status AS agent_status, a.ready AS agent_ready, a.tags AS agent_tags, \
     a.last_seen AS agent_last_seen \
     FROM channels c JOIN agents a ON a.id = c.agent_id";

const BINDING_COLUMNS: &str = "id, channel_id, conversation_key, conversation_id, target_type, \
     target_id, mode, priority, created_at, updated_at";

/// Highest priority first, then the most recently changed, then the most recently inserted
/// (`rowid`: SQLite's own; on PostgreSQL an identity column of that name, docs/architecture.md).
const BINDING_ORDER: &str = "ORDER BY priority DESC, updated_at DESC, rowid DESC";

stored_enum!(RouteTargetType {
    Agent => "agent",
    Label => "label",
    Tag => "tag",
    Capability => "capability",
    Broadcast => "broadcast",
    Orchestrator => "orchestrator",
});

stored_enum!(BindingMode {
    Exclusive => "exclusive",
    Claimable => "claimable",
    Broadcast => "broadcast",
});

stored_enum!(ChannelDirection {
    Inbound => "inbound",
    Outbound => "outbound",
    Bidirectional => "bidirectional",
});

/// docs/http-api.md §3: an agent target is exclusive, broadcast is broadcast, any other group is claimable.
fn default_mode(kind: RouteTargetType) -> BindingMode {
    match kind {
        RouteTargetType::Agent => BindingMode::Exclusive,
        RouteTargetType::Broadcast => BindingMode::Broadcast,
        _ => BindingMode::Claimable,
    }
}

/// A route target as the target string a message is sent to.
pub fn target_string(target: &RouteTarget) -> String {
    let id = target.id.as_deref().unwrap_or_default();
    match target.type_ {
        RouteTargetType::Agent => id.to_owned(),
        RouteTargetType::Label => format!("label:{id}"),
        RouteTargetType::Tag => format!("tag:{id}"),
        RouteTargetType::Capability => format!("cap:{id}"),
        RouteTargetType::Broadcast => "broadcast".to_owned(),
        RouteTargetType::Orchestrator => format!("orchestrator:{id}"),
    }
}

/// A target string (`label:x`, `broadcast`, an agent id) as a route target.
fn route_target(target: &Target) -> RouteTarget {
    let (kind, id) = match target {
        Target::Agent(id) => (RouteTargetType::Agent, Some(id)),
        Target::Label(id) => (RouteTargetType::Label, Some(id)),
        Target::Tag(id) => (RouteTargetType::Tag, Some(id)),
        Target::Capability(id) => (RouteTargetType::Capability, Some(id)),
        Target::Broadcast => (RouteTargetType::Broadcast, None),
        Target::Orchestrator(id) => (RouteTargetType::Orchestrator, Some(id)),
    };
    RouteTarget {
        type_: kind,
        id: id.cloned(),
    }
}

/// Checks a caller's route target; returns the id as stored (empty for broadcast).
fn checked_target(target: &RouteTarget) -> Result<String, RelayError> {
    let kind = target.type_.name();
    match (target.type_, target.id.as_deref()) {
        (RouteTargetType::Broadcast, None | Some("")) => Ok(String::new()),
        (RouteTargetType::Broadcast, Some(id)) => Err(invalid(format!(
            "a broadcast target takes no id (got {id}); send {{\"type\": \"broadcast\"}}"
        ))),
        (_, None) => Err(invalid(format!(
            "a {kind} target needs an id: {{\"type\": \"{kind}\", \"id\": \"...\"}}"
        ))),
        (_, Some(id)) => Ok(input::id("target.id", id)?.to_owned()),
    }
}

/// A stable binding id for (channel, conversation, target), safe in a URL path.
fn binding_id(channel_id: &str, conversation_key: &str, kind: &str, target_id: &str) -> String {
    let mut hasher = Sha256::new();
    for part in [channel_id, conversation_key, kind, target_id] {
        hasher.update(part.as_bytes());
        hasher.update([0u8]);
    }
    let digest = hex::encode(hasher.finalize());
    format!("bnd_{}", &digest[..24])
}

fn binding_from_row(row: &Row) -> Result<ChannelBinding, RelayError> {
    let stored = row.text("target_type")?;
    let kind = RouteTargetType::from_name(&stored).ok_or_else(|| {
        RelayError::Internal(format!("stored binding has unknown target type {stored}"))
    })?;
    let target_id = row.text("target_id")?;
    Ok(ChannelBinding {
        id: row.text("id")?,
        channel_id: row.text("channel_id")?,
        conversation_id: row.opt_text("conversation_id")?,
        target: RouteTarget {
            type_: kind,
            id: (kind != RouteTargetType::Broadcast).then_some(target_id),
        },
        mode: row.case_or("mode", BindingMode::Exclusive)?,
        priority: row.int("priority")?,
        created_at: row.int("created_at")?,
        updated_at: row.int("updated_at")?,
    })
}

fn bindings_where(condition: &str, values: &[Value]) -> Result<Vec<ChannelBinding>, RelayError> {
    db::query(
        &format!(
            "SELECT {BINDING_COLUMNS} FROM channel_bindings WHERE {condition} {BINDING_ORDER}"
        ),
        values,
    )?
    .iter()
    .map(binding_from_row)
    .collect()
}

/// The channel's default bindings (no conversation), in route order.
fn default_bindings(channel_id: &str) -> Result<Vec<ChannelBinding>, RelayError> {
    bindings_where(
        "channel_id = ? AND conversation_key = ''",
        &params![channel_id],
    )
}

fn summary_from_row(row: &Row) -> Result<ChannelSummary, RelayError> {
    let id = row.text("id")?;
    let binding = default_bindings(&id)?.into_iter().next();
    Ok(ChannelSummary {
        name: row.text("display_name")?,
        type_: row.text("provider")?,
        transport: row.text("transport")?,
        agent_id: row.text("agent_id")?,
        account_id: row.text("account_id")?,
        status: row.case_or("agent_status", AgentStatus::Online)?,
        ready: row.flag("agent_ready")?,
        direction: row
            .opt_text("direction")?
            .as_deref()
            .and_then(ChannelDirection::from_name)
            .unwrap_or(ChannelDirection::Bidirectional),
        target: binding.as_ref().map(|b| target_string(&b.target)),
        binding,
        topic_channels: row.string_list("topic_channels")?,
        capabilities: row.string_list("capabilities")?,
        tags: row.string_list("agent_tags")?,
        last_seen: row.int("agent_last_seen")?,
        meta: input::json_text(row.opt_text("meta")?),
        id,
    })
}

/// The channel with this id, if recorded.
fn load(id: &str) -> Result<Option<ChannelSummary>, RelayError> {
    db::query_one(&format!("{CHANNEL_SELECT} WHERE c.id = ?"), &params![id])?
        .map(|row| summary_from_row(&row))
        .transpose()
}

/// The channel with this id, or 404.
fn require(id: &str) -> Result<ChannelSummary, RelayError> {
    input::id("channelId", id)?;
    load(id)?.ok_or_else(|| {
        not_found(format!(
            "channel {id} does not exist; register a channel agent with that id first"
        ))
    })
}

/// The default `limit` of the lists of channels and bindings.
const DEFAULT_LIMIT: u32 = 100;

/// A page of channels, ready ones first, then by name and id.
pub fn list(caller: &Caller, query: &PageQuery) -> Result<Vec<ChannelSummary>, RelayError> {
    auth::identify(caller)?;
    let limit = db::page_limit(query.limit, DEFAULT_LIMIT, db::MAX_LIMIT)?;
    let mut sql = CHANNEL_SELECT.to_owned();
    let mut values = Vec::new();
    if let Some(after) = &query.after {
        let after = Value::from(after.as_str());
        db::require_cursor(
            "after",
            "SELECT 1 AS found FROM channels WHERE id = ?",
            &after,
        )?;
        // The list's order as one row value: ready (descending), name, id.
        sql.push_str(if db::is_postgres() {
            " WHERE (-a.ready, lower(c.display_name), c.id) > \
               (SELECT -a2.ready, lower(c2.display_name), c2.id \
                FROM channels c2 JOIN agents a2 ON a2.id = c2.agent_id WHERE c2.id = ?)"
        } else {
            " WHERE (-a.ready, c.display_name COLLATE NOCASE, c.id) > \
               (SELECT -a2.ready, c2.display_name, c2.id \
                FROM channels c2 JOIN agents a2 ON a2.id = c2.agent_id WHERE c2.id = ?)"
        });
        values.push(after);
    }
    // Names without regard to ASCII case: SQLite's NOCASE; on PostgreSQL `lower` of a "C"
    // collated column, which folds ASCII letters only, as NOCASE does.
    sql.push_str(if db::is_postgres() {
        " ORDER BY a.ready DESC, lower(c.display_name), c.id LIMIT ?"
    } else {
        " ORDER BY a.ready DESC, c.display_name COLLATE NOCASE, c.id LIMIT ?"
    });
    values.push(Value::from(limit));
    db::query_page(&sql, &values)?
        .iter()
        .map(summary_from_row)
        .collect()
}

pub fn get(caller: &Caller, id: &str) -> Result<ChannelSummary, RelayError> {
    auth::identify(caller)?;
    require(id)
}

/// A page of a channel's bindings in route order.
pub fn list_bindings(
    caller: &Caller,
    channel_id: &str,
    query: &PageQuery,
) -> Result<Vec<ChannelBinding>, RelayError> {
    auth::identify(caller)?;
    require(channel_id)?;
    let limit = db::page_limit(query.limit, DEFAULT_LIMIT, db::MAX_LIMIT)?;
    let mut sql = format!("SELECT {BINDING_COLUMNS} FROM channel_bindings WHERE channel_id = ?");
    let mut values = vec![Value::from(channel_id)];
    if let Some(after) = &query.after {
        let after = Value::from(after.as_str());
        db::require_cursor(
            "after",
            "SELECT 1 AS found FROM channel_bindings WHERE id = ?",
            &after,
        )?;
        // BINDING_ORDER as one row value (every column descending).
        sql.push_str(
            " AND (priority, updated_at, rowid) < \
               (SELECT priority, updated_at, rowid FROM channel_bindings WHERE id = ?)",
        );
        values.push(after);
    }
    sql.push_str(&format!(" {BINDING_ORDER} LIMIT ?"));
    values.push(Value::from(limit));
    db::query_page(&sql, &values)?
        .iter()
        .map(binding_from_row)
        .collect()
}

/// A page of every binding of every channel (0.6.0's `listChannelBindings()` without a
/// channel): by channel, then in each channel's route order.
pub fn list_all_bindings(
    caller: &Caller,
    query: &PageQuery,
) -> Result<Vec<ChannelBinding>, RelayError> {
    auth::require_operator(caller)?;
    let limit = db::page_limit(query.limit, DEFAULT_LIMIT, db::MAX_LIMIT)?;
    let mut sql = format!("SELECT {BINDING_COLUMNS} FROM channel_bindings");
    let mut values = Vec::new();
    if let Some(after) = &query.after {
        let after = Value::from(after.as_str());
        db::require_cursor(
            "after",
            "SELECT 1 AS found FROM channel_bindings WHERE id = ?",
            &after,
        )?;
        // The order as one row value: channel ascending, then BINDING_ORDER (descending).
        sql.push_str(
            " WHERE (channel_id, -priority, -updated_at, -rowid) > \
               (SELECT channel_id, -priority, -updated_at, -rowid \
                FROM channel_bindings WHERE id = ?)",
        );
        values.push(after);
    }
    sql.push_str(" ORDER BY channel_id, priority DESC, updated_at DESC, rowid DESC LIMIT ?");
    values.push(Value::from(limit));
    db::query_page(&sql, &values)?
        .iter()
        .map(binding_from_row)
        .collect()
}

/// docs/http-api.md §3: the exact conversation's bindings if it has any, else the channel's defaults.
fn routes(
    channel_id: &str,
    conversation_id: Option<&str>,
) -> Result<(RouteSource, Vec<ChannelBinding>), RelayError> {
    if let Some(conversation) = conversation_id {
        let own = bindings_where(
            "channel_id = ? AND conversation_key = ?",
            &params![channel_id, conversation],
        )?;
        if !own.is_empty() {
            return Ok((RouteSource::Conversation, own));
        }
    }
    let defaults = default_bindings(channel_id)?;
    let source = if defaults.is_empty() {
        RouteSource::None
    } else {
        RouteSource::Default
    };
    Ok((source, defaults))
}

fn conversation(value: Option<&String>) -> Result<Option<&str>, RelayError> {
    value.map(|c| input::id("conversationId", c)).transpose()
}

pub fn resolve_route(
    caller: &Caller,
    channel_id: &str,
    query: &RouteQuery,
) -> Result<ChannelRoute, RelayError> {
    auth::identify(caller)?;
    require(channel_id)?;
    let conversation_id = conversation(query.conversation_id.as_ref())?;
    let (source, bindings) = routes(channel_id, conversation_id)?;
    Ok(ChannelRoute {
        channel_id: channel_id.to_owned(),
        conversation_id: conversation_id.map(str::to_owned),
        source,
        bindings,
    })
}

/// What writing a binding does when one with the same conversation and target exists.
enum OnExisting {
    /// An operator's upsert: take the new mode and priority.
    Update,
    /// A default from `meta.target`: leave what the operator may have tuned.
    Keep,
}

/// Writes the binding for (channel, conversation, target) and returns it as stored.
fn write_binding(
    channel_id: &str,
    conversation_id: Option<&str>,
    target: &RouteTarget,
    mode: BindingMode,
    priority: i64,
    on_existing: &OnExisting,
    now: i64,
) -> Result<ChannelBinding, RelayError> {
    let kind = target.type_.name();
    let target_id = checked_target(target)?;
    let key = conversation_id.unwrap_or_default();
    let update = match on_existing {
        OnExisting::Update => "DO UPDATE SET mode = ?7, priority = ?8, updated_at = ?9",
        OnExisting::Keep => "DO NOTHING",
    };
    db::execute(
        &format!(
            "INSERT INTO channel_bindings (id, channel_id, conversation_key, conversation_id,
                 target_type, target_id, mode, priority, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9)
             ON CONFLICT(channel_id, conversation_key, target_type, target_id) {update}"
        ),
        &params![
            binding_id(channel_id, key, kind, &target_id),
            channel_id,
            key,
            conversation_id,
            kind,
            target_id.as_str(),
            mode.name(),
            priority,
            now,
        ],
    )?;
    bindings_where(
        "channel_id = ? AND conversation_key = ? AND target_type = ? AND target_id = ?",
        &params![channel_id, key, kind, target_id.as_str()],
    )?
    .into_iter()
    .next()
    .ok_or_else(|| RelayError::Internal("binding vanished after it was written".to_owned()))
}

pub fn upsert_binding(
    caller: &Caller,
    channel_id: &str,
    input: &BindingInput,
    now: i64,
) -> Result<ChannelBinding, RelayError> {
    auth::require_operator(caller)?;
    require(channel_id)?;
    let conversation_id = conversation(input.conversation_id.as_ref())?;
    write_binding(
        channel_id,
        conversation_id,
        &input.target,
        // 0.6.0: an explicit upsert without a mode is exclusive, whatever the target.
        input.mode.unwrap_or(BindingMode::Exclusive),
        input.priority.unwrap_or(0),
        &OnExisting::Update,
        now,
    )
}

pub fn delete_binding(
    caller: &Caller,
    channel_id: &str,
    binding_id: &str,
) -> Result<Deleted, RelayError> {
    auth::require_operator(caller)?;
    require(channel_id)?;
    input::id("bindingId", binding_id)?;
    let removed = db::execute(
        "DELETE FROM channel_bindings WHERE id = ? AND channel_id = ?",
        &params![binding_id, channel_id],
    )?;
    if removed.rows_changed == 0 {
        return Err(not_found(format!(
            "channel {channel_id} has no binding {binding_id}"
        )));
    }
    Ok(Deleted {
        id: binding_id.to_owned(),
    })
}

/// docs/http-api.md §3: one `channel.event` message per route, sent as the channel agent; an event without a
/// route is refused rather than dropped.
pub fn route_inbound(
    caller: &Caller,
    channel_id: &str,
    event: InboundEvent,
    now: i64,
) -> Result<InboundResult, RelayError> {
    let channel = require(channel_id)?;
    auth::act_as(caller, &channel.agent_id)?;
    let conversation_id = conversation(event.conversation_id.as_ref())?.map(str::to_owned);
    input::text("body", &event.body, MAX_BODY)?;
    if let Some(subject) = &event.subject {
        input::text("subject", subject, MAX_SHORT_TEXT)?;
    }
    if let Some(key) = &event.idempotency_key {
        input::id("idempotencyKey", key)?;
    }
    let mut payload = input::json_object("payload", event.payload.as_ref())?;
    let meta = input::json_object("meta", event.meta.as_ref())?;

    let (_, bindings) = routes(channel_id, conversation_id.as_deref())?;
    if bindings.is_empty() {
        return Err(conflict(format!(
            "channel {channel_id} has no route for conversation {}: add a binding for it or a \
             default binding (PUT /v1/channels/{channel_id}/bindings)",
            conversation_id.as_deref().unwrap_or("(none)")
        )));
    }
    payload.insert("channelId".to_owned(), Json::from(channel_id));
    if let Some(conversation) = &conversation_id {
        payload.insert(
            "conversationId".to_owned(),
            Json::from(conversation.as_str()),
        );
    }

    let mut deliveries = Vec::with_capacity(bindings.len());
    for binding in bindings {
        let mut payload = payload.clone();
        payload.insert("bindingId".to_owned(), Json::from(binding.id.as_str()));
        let sent = messages::deliver(
            caller,
            SendMessageInput {
                from: channel.agent_id.clone(),
                to: target_string(&binding.target),
                kind: Some("channel.event".to_owned()),
                channel: Some(channel_id.to_owned()),
                subject: event.subject.clone(),
                body: event.body.clone(),
                reply_to: None,
                claimable: Some(binding.mode == BindingMode::Claimable),
                priority: None,
                after: None,
                run_at: None,
                delay_ms: None,
                // One message per route: each route's replay key is its own.
                idempotency_key: event
                    .idempotency_key
                    .as_ref()
                    .map(|key| format!("{key}#{}", binding.id)),
                payload: Some(JsonText {
                    json: input::to_json_text(&payload),
                }),
                meta: Some(JsonText {
                    json: input::to_json_text(&meta),
                }),
            },
            now,
        )
        .map_err(|e| route_error(&binding, e))?;
        deliveries.push(Delivery {
            binding,
            message: sent.message,
            created: sent.created,
            recipients: sent.recipients,
        });
    }
    Ok(InboundResult {
        channel_id: channel_id.to_owned(),
        conversation_id,
        deliveries,
    })
}

/// A route whose target is gone: say which binding to fix.
fn route_error(binding: &ChannelBinding, error: RelayError) -> RelayError {
    match error {
        RelayError::NotFound(m) => conflict(format!(
            "binding {} routes to {}, which cannot receive: {m}; fix or delete the binding",
            binding.id,
            target_string(&binding.target)
        )),
        other => other,
    }
}

fn meta_str<'a>(meta: &'a Map<String, Json>, key: &str) -> Option<&'a str> {
    meta.get(key)
        .and_then(Json::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// Registers an agent (`agents::register`); a channel agent's registration also upserts its
/// channel record (docs/http-api.md §3), so the record is the agent's shadow.
pub fn register_agent(
    caller: &Caller,
    input: RegisterAgentInput,
    now: i64,
) -> Result<RegisteredAgent, RelayError> {
    let registered = agents::register(caller, input, now)?;
    if registered.agent.kind == AgentKind::Channel {
        record_channel_agent(&registered.agent, now)?;
    }
    Ok(registered)
}

/// Upserts the channel record of a channel agent that was just registered, and its default
/// binding from `meta.target` (docs/http-api.md §3).
///
/// # Errors
/// `invalid` for a malformed `meta.target`, `conflict` when another channel holds the same
/// provider and account.
fn record_channel_agent(agent: &AgentCard, now: i64) -> Result<(), RelayError> {
    let record = channel_of(agent)?;
    refuse_account_clash(&agent.id, &record)?;
    let old_target = load(&agent.id)?
        .and_then(|c| serde_json::from_str::<Map<String, Json>>(&c.meta.json).ok())
        .and_then(|old| meta_str(&old, "target").and_then(|t| Target::parse(t).ok()))
        .map(|t| route_target(&t));
    store_channel(agent, &record, now)?;
    replace_default_binding(&agent.id, old_target, record.target, now)
}

/// A channel record as its agent's card describes it.
struct ChannelRecord {
    provider: String,
    account: String,
    display_name: String,
    transport: String,
    direction: ChannelDirection,
    topic_channels: Vec<String>,
    /// The default binding, from `meta.target`.
    target: Option<RouteTarget>,
}

/// Parse: the record from the card's id, tags and meta (the provider from meta or a
/// `channel:PROVIDER` tag, the account from the canonical id), `meta.target` checked before any
/// channel is read.
fn channel_of(agent: &AgentCard) -> Result<ChannelRecord, RelayError> {
    let meta: Map<String, Json> = serde_json::from_str(&agent.meta.json).unwrap_or_default();
    let provider = agents::channel_provider(&agent.tags, &meta);
    let account = agent
        .id
        .strip_prefix(&format!("{provider}:"))
        .unwrap_or(&agent.id)
        .to_owned();
    let target = meta_str(&meta, "target")
        .map(|text| {
            Target::parse(text)
                .map_err(|e| invalid(format!("meta.target: {}", error_text(&e))))
                .map(|t| route_target(&t))
        })
        .transpose()?;
    let topic_channels: Vec<String> = meta
        .get("topicChannels")
        .and_then(Json::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(Json::as_str)
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    Ok(ChannelRecord {
        display_name: meta_str(&meta, "displayName")
            .unwrap_or(&agent.name)
            .to_owned(),
        transport: meta_str(&meta, "transport").unwrap_or(&provider).to_owned(),
        direction: meta_str(&meta, "direction")
            .and_then(ChannelDirection::from_name)
            .unwrap_or(ChannelDirection::Bidirectional),
        provider,
        account,
        topic_channels,
        target,
    })
}

/// One channel per provider and account: inbound traffic is routed by them.
fn refuse_account_clash(id: &str, record: &ChannelRecord) -> Result<(), RelayError> {
    let clash = db::query_one(
        "SELECT id FROM channels WHERE provider = ? AND account_id = ? AND id != ?",
        &params![record.provider.as_str(), record.account.as_str(), id],
    )?;
    match clash {
        Some(row) => Err(conflict(format!(
            "channel {} already uses provider {} and account {}",
            row.text("id")?,
            record.provider,
            record.account
        ))),
        None => Ok(()),
    }
}

/// Apply: the record is the agent's shadow, rewritten whole at each registration.
fn store_channel(agent: &AgentCard, record: &ChannelRecord, now: i64) -> Result<(), RelayError> {
    db::execute(
        "INSERT INTO channels (id, provider, account_id, display_name, agent_id, transport,
             direction, topic_channels, capabilities, meta, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?1, ?5, ?6, ?7, ?8, ?9, ?10, ?10)
         ON CONFLICT(id) DO UPDATE SET
             provider = ?2, account_id = ?3, display_name = ?4, agent_id = ?1, transport = ?5,
             direction = ?6, topic_channels = ?7, capabilities = ?8, meta = ?9, updated_at = ?10",
        &params![
            agent.id.as_str(),
            record.provider.as_str(),
            record.account.as_str(),
            record.display_name.as_str(),
            record.transport.as_str(),
            record.direction.name(),
            db::to_json_list(&record.topic_channels),
            db::to_json_list(&agent.capabilities),
            agent.meta.json.as_str(),
            now,
        ],
    )?;
    Ok(())
}

/// `meta.target` is the default binding: a changed target replaces the one it set before, and a
/// binding already there for the new target is kept as it is.
fn replace_default_binding(
    channel_id: &str,
    old: Option<RouteTarget>,
    new: Option<RouteTarget>,
    now: i64,
) -> Result<(), RelayError> {
    if let Some(old) = old.filter(|old| !new.as_ref().is_some_and(|new| same(old, new))) {
        db::execute(
            "DELETE FROM channel_bindings
             WHERE channel_id = ? AND conversation_key = '' AND target_type = ? AND target_id = ?",
            &params![channel_id, old.type_.name(), old.id.unwrap_or_default()],
        )?;
    }
    if let Some(target) = new {
        write_binding(
            channel_id,
            None,
            &target,
            default_mode(target.type_),
            0,
            &OnExisting::Keep,
            now,
        )?;
    }
    Ok(())
}

fn same(a: &RouteTarget, b: &RouteTarget) -> bool {
    a.type_ == b.type_ && a.id == b.id
}

fn error_text(error: &RelayError) -> String {
    match error {
        RelayError::Invalid(m) | RelayError::TooLarge(m) => m.clone(),
        other => format!("{other:?}"),
    }
}
